"""Image preprocessing shared by the CLIs, the datasets and the dashboard.

`load_image` is the single gate through which user images enter the engine, so it has to cope
with whatever people upload: alpha channels, grayscale, 16-bit PNGs, CMYK JPEGs, phone photos
whose orientation lives in EXIF, and files that are not images at all. Every failure becomes an
`ImageError` with a readable message rather than a PIL traceback or warning.

`random_hflip_batch` augments an already collated batch on the main process from an explicit
generator, which keeps training reproducible from the seed whatever the number of workers.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import threading
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from PIL import Image, ImageOps

from crm_core.data.errors import ImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "SPATIAL_KEYS",
    "ImageError",
    "image_to_tensor",
    "load_image",
    "pil_to_rgb",
    "random_hflip_batch",
    "resize_rgb",
    "to_uint8_image",
]

logger = logging.getLogger(__name__)

# Refuse anything above 50 megapixels. It is below PIL's own decompression-bomb threshold
# (~89 MP warns, ~179 MP raises), and `load_image` additionally turns PIL's warning into an
# error inside its own scope, so a user never sees PIL's raw warning or traceback.
DEFAULT_MAX_PIXELS = 50_000_000

# Batch entries that are images or per-pixel maps and must be flipped together.
SPATIAL_KEYS = ("image", "mask", "trimap", "parts", "class_mask", "superpixels")

ImageSource = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]
Size = Union[int, tuple[int, int], None]


def _too_large(width: int, height: int, max_pixels: int) -> ImageError:
    return ImageError(
        f"image is {width}x{height} = {width * height / 1e6:.1f} megapixels, above the limit of "
        f"{max_pixels / 1e6:.0f} megapixels; downscale it first"
    )


# Errors PIL's decoders raise on malformed data (fuzzing finds all of these, not just OSError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError, KeyError)

# `warnings.catch_warnings` swaps process-wide state; serialising our (header-only, fast)
# Image.open calls keeps concurrent dashboard requests from restoring each other's filters.
_OPEN_LOCK = threading.Lock()


def _open(source: Union[str, os.PathLike, bytes], max_pixels: int) -> Image.Image:
    """Open and fully decode a file or an encoded byte string, mapping every failure to ImageError."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise ImageError(f"{name}: no such file")
    fp = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            # PIL *warns* between its two bomb thresholds (and the check runs inside Image.open);
            # turn that warning into an exception here so it surfaces as ImageError, not a warning.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name}: image is too large to load safely ({exc})") from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (or a format PIL cannot read)") from None
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{name}: corrupt or unreadable image ({exc})") from None
    with im:
        if im.width * im.height > max_pixels:  # header only: checked before decoding anything
            raise _too_large(im.width, im.height, max_pixels)
        try:
            im.load()
            return _exif_transpose(im)  # while the file is open: some formats read EXIF lazily
        except _DECODE_ERRORS as exc:
            raise ImageError(f"{name}: corrupt or truncated image ({exc})") from None


def _exif_transpose(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (phone photos store rotation there); always a new image.

    Broken EXIF must not make an otherwise fine photo unusable, so it is logged and ignored.
    """
    try:
        return ImageOps.exif_transpose(im)
    except _DECODE_ERRORS as exc:
        logger.warning("ignoring unreadable EXIF orientation: %s", exc)
        return im.copy()


def _from_array(arr: np.ndarray) -> Image.Image:
    """HxW / HxWx{1,3,4} arrays (uint8, uint16, bool or float [0, 1]) -> PIL image."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ImageError(f"expected an (H, W), (H, W, 3) or (H, W, 4) array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ImageError(f"image array is empty: shape {arr.shape}")
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        arr = (arr.astype(np.float32) / 257.0).round().astype(np.uint8)  # 65535 -> 255
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ImageError("image array contains NaN or infinite values")
        arr = (np.clip(arr, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise ImageError(f"unsupported image array dtype {arr.dtype} (use uint8, uint16 or float in [0, 1])")
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[arr.ndim if arr.ndim == 2 else arr.shape[2]]
    return Image.fromarray(np.ascontiguousarray(arr), mode=mode)


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """16-bit ("I;16*"), 32-bit ("I") and float ("F") grayscale -> 8-bit "L".

    Integer modes are read as 16-bit data (PNG's only deep grayscale), i.e. divided by 257;
    float data is taken as [0, 1] when its maximum is at most 1, else as [0, 255].
    """
    arr = np.asarray(im)
    if im.mode == "F":
        arr = arr.astype(np.float64)
        if np.nanmax(arr, initial=0.0) <= 1.0:
            arr = arr * 255.0
        arr = np.nan_to_num(arr)
    else:
        arr = arr.astype(np.float64) / 257.0
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), mode="L")


def pil_to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> "RGB": transparency composited on white, deep grayscale scaled to 8 bit."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        im = _high_depth_to_l(im)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        im.mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return im


def _hw(size: Union[int, tuple[int, int]]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"image size must be positive, got {size}")
    return h, w


def resize_rgb(im: Image.Image, size: Size) -> Image.Image:
    """Bilinear resize to `size` (int -> square; (H, W); None -> unchanged).

    Datasets and `load_image` share it so a picture looks the same to the model at training
    time and in the dashboard. Square resizing ignores aspect ratio, as the datasets do.
    """
    if size is None:
        return im
    h, w = _hw(size)
    if im.size == (w, h):
        return im
    return im.resize((w, h), Image.BILINEAR)


def load_image(
    source: ImageSource,
    image_size: Size,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> torch.Tensor:
    """Load an image from a path, encoded bytes, a PIL image or an array into the model's format.

    Args:
        source: file path, encoded bytes, PIL image, or array (HxW, HxWx3, HxWx4; uint8,
            uint16, bool or float in [0, 1]).
        image_size: int for a square output, (H, W), or None to keep the size.
        max_pixels: refuse images larger than this (decompression bombs, accidental giant scans).

    Returns:
        float32 (3, H, W) in [0, 1].

    Raises:
        ImageError: missing, non-image, corrupt, truncated or oversized input.
        ValueError: a non-positive `image_size` (a caller bug, not a bad image).
    """
    if image_size is not None:
        _hw(image_size)
    if isinstance(source, np.ndarray):
        if source.ndim >= 2 and source.shape[0] * source.shape[1] > max_pixels:
            raise _too_large(source.shape[1], source.shape[0], max_pixels)
        im = _from_array(source)
    elif isinstance(source, Image.Image):
        if source.width * source.height > max_pixels:
            raise _too_large(source.width, source.height, max_pixels)
        im = source
    elif isinstance(source, (str, os.PathLike, bytes)):
        im = _open(source, max_pixels)
    else:
        raise ImageError(f"cannot load an image from a {type(source).__name__}")

    try:
        im = _exif_transpose(im)
        im = pil_to_rgb(im)
        im = resize_rgb(im, image_size)
        arr = np.asarray(im, dtype=np.uint8)  # (H,W,3)
    except _DECODE_ERRORS as exc:
        raise ImageError(f"cannot convert image to RGB: {exc}") from None
    return image_to_tensor(arr)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (3, H, W) in [0, 1], the one conversion every path shares.

    Done in numpy on purpose: the arrays are tiny, and torch would hand them to its intra-op
    thread pool, which on a busy 2-core machine made dataset loading ~4x slower.
    """
    chw = np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))  # (H,W,3) -> (3,H,W)
    return torch.from_numpy(chw.astype(np.float32) / np.float32(255.0))


def to_uint8_image(image: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
    """Any image the code passes around -> contiguous uint8 (H, W, 3), the inverse of `image_to_tensor`.

    The one conversion for display, saving, SLIC and superpixel cache keys:

    * torch tensors are channels first, (3, H, W), (1, H, W) or (H, W); numpy arrays channels
      last, (H, W, 3), (H, W, 1) or (H, W), or (3, H, W) when the last axis is not a channel axis.
      One channel is repeated into three.
    * uint8 pixels are kept; float pixels are clipped to [0, 1], scaled by 255 and rounded (half to
      even) in the input's own precision (float32 stays float32), so ``k / 255`` maps back to ``k``.
    """
    channels_first = isinstance(image, torch.Tensor)
    arr = image.detach().cpu().numpy() if channels_first else np.asarray(image)
    if arr.ndim == 2:
        arr = arr[None] if channels_first else arr[:, :, None]
    if arr.ndim == 3 and not channels_first and arr.shape[-1] not in (1, 3) and arr.shape[0] in (1, 3):
        channels_first = True  # a (3, H, W) array
    if arr.ndim != 3 or arr.shape[0 if channels_first else -1] not in (1, 3):
        raise ValueError(f"expected an RGB image, (3, H, W) tensor or (H, W, 3) array, got shape {arr.shape}")
    if channels_first:
        arr = arr.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"expected uint8 or float [0, 1] pixels, got dtype {arr.dtype}")
        arr = arr.astype(np.promote_types(arr.dtype, np.float32), copy=False)
        arr = np.round(np.clip(arr, 0.0, 1.0) * arr.dtype.type(255.0)).astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr)


def random_hflip_batch(batch: dict, generator: Optional[torch.Generator]) -> dict:
    """Mirror each sample of a collated batch left-right with probability 0.5.

    Every entry in `SPATIAL_KEYS` that is present ((B, C, H, W) or (B, H, W)) is flipped with the
    same per-sample decision, so image, masks and superpixels stay aligned. The coin flips come
    from `generator` (a CPU generator) so the sequence of augmentations depends only on the seed.
    A new dict is returned, with the decisions as a bool (B,) tensor under "hflip"; other
    entries are passed through untouched.
    """
    if "image" not in batch:
        raise KeyError("batch has no 'image' entry")
    image = batch["image"]
    b = image.shape[0]
    flips = torch.rand(b, generator=generator) < 0.5  # (B,) on CPU, where the generator lives
    out = dict(batch)
    for key in SPATIAL_KEYS:
        x = batch.get(key)
        if not isinstance(x, torch.Tensor):
            continue
        if x.ndim < 3 or x.shape[0] != b:
            raise ValueError(f"batch[{key!r}] has shape {tuple(x.shape)}; expected (B, ..., H, W) with B={b}")
        sel = flips.to(x.device).view(b, *([1] * (x.ndim - 1)))  # (B,1,..,1) broadcast over sample dims
        out[key] = torch.where(sel, x.flip(-1), x)
    out["hflip"] = flips.to(image.device)
    return out
