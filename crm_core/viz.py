"""Pictures of CAMs: a jet colour map, heat-map overlays, mask outlines, superpixel boundaries.

The one rendering module of the engine: ``crm_core.evaluate``'s sample panels and the
dashboard's views (``demo/render.py``, which adds display sizes, colour bars and captions) draw
with these. numpy on uint8 (H, W, 3) images, no matplotlib / cv2 (skimage, lazily, for
boundaries); every function also takes a float (3, H, W) image in [0, 1], converted by
:func:`crm_core.data.transforms.to_uint8_image`. CAM maths (normalising, upsampling) stays in
:mod:`crm_core.cams.utils`.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

from crm_core.cams.utils import upsample_cams
from crm_core.data.transforms import to_uint8_image

ImageLike = Union[np.ndarray, torch.Tensor]


def jet_colormap(values: np.ndarray) -> np.ndarray:
    """Jet-like colormap: values in [0, 1] (any shape) -> float RGB in [0, 1], shape (..., 3).

    Piecewise-linear approximation of matplotlib's ``jet``: dark blue -> cyan -> yellow -> dark red.
    """
    x = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)[..., None]  # (..., 1)
    offsets = np.array([1.5, 0.5, -0.5])  # centres of red, green, blue at 3/4, 1/2, 1/4 of the range
    return np.clip(np.minimum(4.0 * x - offsets, -4.0 * x + offsets + 3.0), 0.0, 1.0)  # (..., 3)


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
        cam: (h, w) map in [0, 1] (e.g. from :func:`crm_core.cams.utils.normalize_cams`), resized
            bilinearly to (H, W) when it is smaller.
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


def boundaries_overlay(
    image: ImageLike,
    segments: Union[np.ndarray, torch.Tensor],
    color: tuple[int, int, int] = (255, 255, 0),
) -> np.ndarray:
    """Draw superpixel boundaries on a copy of ``image`` for visual inspection.

    Args:
        image: uint8 (H, W, 3) or float (3, H, W) in [0, 1].
        segments: integer (H, W) labels.
        color: boundary colour; bright yellow by default because it stands out on most photos.

    Returns:
        uint8 (H, W, 3).
    """
    from skimage.segmentation import find_boundaries  # lazy: skimage is slow to import

    canvas = to_uint8_image(image).copy()
    seg = segments.detach().cpu().numpy() if isinstance(segments, torch.Tensor) else np.asarray(segments)
    if seg.shape != canvas.shape[:2]:
        raise ValueError(f"segments {seg.shape} do not match image {canvas.shape[:2]}")
    edges = find_boundaries(seg, mode="thick")  # both sides: label 0 is a segment, not background
    canvas[edges] = np.asarray(color, dtype=np.uint8)
    return canvas


def side_by_side(tiles: Sequence[np.ndarray], gap: int = 4, fill: int = 255) -> np.ndarray:
    """uint8 (H, W_i, 3) tiles of one height in a row, ``gap`` columns of ``fill`` between them."""
    if not tiles:
        raise ValueError("no tiles to put side by side")
    spacer = np.full((tiles[0].shape[0], gap, 3), fill, dtype=np.uint8)
    row: list[np.ndarray] = []
    for tile in tiles:
        row += [tile, spacer]
    return np.concatenate(row[:-1], axis=1)
