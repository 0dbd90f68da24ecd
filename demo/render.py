"""Pictures the views show: CAM overlays, pseudo masks, trimaps, error maps, superpixel boundaries.

Pure numpy/torch on uint8 images, shared by the callbacks. Small model inputs (64 px) are shown
enlarged: the picture with nearest-neighbour (the pixels the model saw), CAMs bilinearly (as CAMs
are always upsampled).
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from crm_core.cams.utils import cam_overlay, jet_colormap, mask_outline, upsample_cams
from crm_core.data import boundaries_overlay

DISPLAY = 256  # side of the pictures in the views, pixels
THUMB = 160  # side of gallery thumbnails
GT_COLOUR = (0, 255, 0)  # ground-truth outline
FG_COLOUR = np.array([255, 48, 48], dtype=np.float64)
UNCERTAIN_COLOUR = np.array([255, 210, 0], dtype=np.float64)


def upscale(rgb: np.ndarray, size: int = DISPLAY) -> np.ndarray:
    """uint8 (H, W, 3) or (H, W) -> (size, size) by nearest neighbour (no-op when already that size)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.NEAREST))


def upscale_labels(labels: np.ndarray, size: int = DISPLAY) -> np.ndarray:
    """Integer (H, W) map -> (size, size) by nearest neighbour."""
    if labels.shape == (size, size):
        return labels
    rows = (np.arange(size) * labels.shape[0] // size)[:, None]
    cols = (np.arange(size) * labels.shape[1] // size)[None, :]
    return labels[rows, cols]


def upscale_map(values: np.ndarray, size: int = DISPLAY) -> np.ndarray:
    """Float (H, W) map -> (size, size) bilinear."""
    if values.shape == (size, size):
        return values
    return upsample_cams(torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)), size).numpy()


def _outline(rgb: np.ndarray, gt: np.ndarray | None, size: int) -> np.ndarray:
    if gt is None:
        return rgb
    return mask_outline(rgb, upscale_labels(np.asarray(gt) == 1, size), color=GT_COLOUR, thickness=2)


def overlay(rgb: np.ndarray, cam: np.ndarray, gt: np.ndarray | None = None, size: int = DISPLAY) -> np.ndarray:
    """Jet CAM over the (enlarged) image, with the ground-truth outline when there is one."""
    return _outline(cam_overlay(upscale(rgb, size), np.clip(upscale_map(cam, size), 0, 1), alpha=0.5), gt, size)


def mask_view(rgb: np.ndarray, fg: np.ndarray, gt: np.ndarray | None = None, size: int = DISPLAY) -> np.ndarray:
    """Binary pseudo mask: foreground tinted red, background dimmed, ground truth outlined."""
    return trimap_view(rgb, np.where(np.asarray(fg, dtype=bool), 1, 2).astype(np.uint8), gt, size)


def trimap_view(rgb: np.ndarray, trimap: np.ndarray, gt: np.ndarray | None = None, size: int = DISPLAY) -> np.ndarray:
    """Trimap (1 fg, 2 bg, 3 uncertain): fg red, uncertain yellow, bg dimmed."""
    base = upscale(rgb, size).astype(np.float64)
    tri = upscale_labels(np.asarray(trimap), size)
    out = base * 0.3
    fg, unc = tri == 1, tri == 3
    out[fg] = 0.55 * base[fg] + 0.45 * FG_COLOUR
    out[unc] = 0.55 * base[unc] + 0.45 * UNCERTAIN_COLOUR
    return _outline(np.round(out).clip(0, 255).astype(np.uint8), gt, size)


def error_view(error: np.ndarray, vmax: float = 0.5, size: int = DISPLAY) -> np.ndarray:
    """|recon - input| in [0, 1] as a jet map, 0 blue .. vmax (or more) red, on a fixed scale."""
    heat = jet_colormap(np.clip(np.asarray(error, dtype=np.float64) / vmax, 0, 1))
    return upscale(np.round(heat * 255).astype(np.uint8), size)


def boundaries_view(rgb: np.ndarray, labels: np.ndarray, size: int = DISPLAY) -> np.ndarray:
    """SLIC boundaries drawn at display resolution (thin lines) over the enlarged image."""
    return boundaries_overlay(upscale(rgb, size), upscale_labels(labels, size))
