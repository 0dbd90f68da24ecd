"""CAM post-processing and display: normalisation, upsampling, heat-map overlays, outlines.

Display helpers are pure numpy (no matplotlib / cv2 at runtime) so the engine and the
dashboard need nothing beyond torch, numpy and pillow.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

ImageLike = Union[np.ndarray, torch.Tensor]


def normalize_cams(cams: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Divide each map by its own maximum (CAM papers compare maps in [0, 1] this way).

    Works on (h, w), (B, h, w) and (B, C, h, w): the max is taken over the last two dims.
    Maps are expected non-negative (raw CAMs are, after the final ReLU). The divisor is
    clamped at ``eps``, so an all-zero map stays zero with finite gradients, and a map whose
    maximum exceeds ``eps`` reaches exactly 1.
    """
    peak = cams.amax(dim=(-2, -1), keepdim=True)  # (..., 1, 1)
    return cams / peak.clamp_min(eps)


def upsample_cams(cams: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Bilinear upsampling (half-pixel centres, like cv2.resize) of (h, w), (B, h, w) or (B, C, h, w) maps."""
    out_size = (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if cams.ndim not in (2, 3, 4):
        raise ValueError(f"expected (h, w), (B, h, w) or (B, C, h, w) maps, got shape {tuple(cams.shape)}")
    leading = cams.shape[:-2]
    flat = cams.reshape(-1, 1, *cams.shape[-2:])  # (N, 1, h, w) with N = prod(leading)
    if not flat.is_floating_point():
        flat = flat.float()
    up = F.interpolate(flat, size=out_size, mode="bilinear", align_corners=False)  # (N, 1, H, W)
    return up.reshape(*leading, *out_size)


def jet_colormap(values: np.ndarray) -> np.ndarray:
    """Jet-like colormap: values in [0, 1] (any shape) -> float RGB in [0, 1], shape (..., 3).

    Piecewise-linear approximation of matplotlib's ``jet``: dark blue -> cyan -> yellow -> dark red.
    """
    x = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)[..., None]  # (..., 1)
    offsets = np.array([1.5, 0.5, -0.5])  # centres of red, green, blue at 3/4, 1/2, 1/4 of the range
    return np.clip(np.minimum(4.0 * x - offsets, -4.0 * x + offsets + 3.0), 0.0, 1.0)  # (..., 3)


def to_uint8_image(image: ImageLike) -> np.ndarray:
    """uint8 (H, W, 3) as is; float (3, H, W) or (H, W, 3) in [0, 1] (numpy or torch) -> uint8 (H, W, 3)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"expected an RGB image, got shape {arr.shape}")
    if arr.dtype == np.uint8:
        if arr.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (H, W, 3), got shape {arr.shape}")
        return arr
    if arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0)  # (3, H, W) -> (H, W, 3)
    if arr.shape[-1] != 3:
        raise ValueError(f"float images must be (3, H, W) or (H, W, 3), got shape {arr.shape}")
    return np.round(np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def _cam_at(cam: ImageLike, height: int, width: int) -> np.ndarray:
    """(h, w) map -> float64 (H, W) in [0, 1], bilinearly resized if needed."""
    tensor = torch.as_tensor(cam.detach().cpu() if isinstance(cam, torch.Tensor) else np.asarray(cam))
    if tensor.ndim != 2:
        raise ValueError(f"expected one (h, w) map, got shape {tuple(tensor.shape)}")
    tensor = tensor.double()
    if tuple(tensor.shape) != (height, width):
        tensor = upsample_cams(tensor, (height, width))
    return tensor.clamp(0.0, 1.0).numpy()


def cam_overlay(image: ImageLike, cam: ImageLike, alpha: float = 0.5, *, weight_by_cam: bool = False) -> np.ndarray:
    """Blend a jet heat map of ``cam`` over ``image``.

    Args:
        image: uint8 (H, W, 3) or float (3, H, W) in [0, 1].
        cam: (h, w) map in [0, 1] (e.g. from :func:`normalize_cams`), resized bilinearly to
            (H, W) when it is smaller.
        alpha: weight of the heat map (0: image only, 1: heat map only).
        weight_by_cam: weight the heat map by ``alpha * cam`` per pixel instead of ``alpha``
            everywhere (as pytorch-grad-cam's ``show_cam_on_image`` mixes by CAM): where the CAM
            is 0 the image shows unchanged, where it is 1 the colour takes weight ``alpha``.

    Returns:
        uint8 (H, W, 3).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = to_uint8_image(image).astype(np.float64)  # (H, W, 3) in [0, 255]
    values = _cam_at(cam, rgb.shape[0], rgb.shape[1])  # (H, W)
    heat = jet_colormap(values) * 255.0  # (H, W, 3)
    weight = alpha * values[..., None] if weight_by_cam else alpha  # (H, W, 1) or scalar
    return np.round((1.0 - weight) * rgb + weight * heat).clip(0, 255).astype(np.uint8)


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour binary erosion; the image border counts as 'same as the edge pixel'."""
    padded = np.pad(mask, 1, mode="edge")
    return (
        padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    )


def mask_outline(
    image: ImageLike,
    mask: ImageLike,
    color: Sequence[int] = (0, 255, 0),
    thickness: int = 2,
) -> np.ndarray:
    """Draw the inner outline of a binary ``mask`` (e.g. ground truth) on ``image``.

    Args:
        image: uint8 (H, W, 3) or float (3, H, W) in [0, 1].
        mask: (H, W), non-zero = inside.
        color: RGB of the outline.
        thickness: outline width in pixels (1 or 2 reads well on CAM overlays).

    Returns:
        uint8 (H, W, 3) copy of the image with the pixels within ``thickness`` of the mask's
        boundary (inside the mask) painted ``color``. Edges cut by the image frame are not drawn.
    """
    rgb = to_uint8_image(image).copy()
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    inside = np.asarray(mask) != 0
    if inside.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {inside.shape} does not match image {rgb.shape[:2]}")
    if thickness < 1:
        raise ValueError(f"thickness must be >= 1, got {thickness}")
    core = inside
    for _ in range(thickness):
        core = _erode(core)
    rgb[inside & ~core] = np.asarray(color, dtype=np.uint8)
    return rgb
