"""The dashboard's pictures at display size: CAM overlays, pseudo masks, trimaps, error maps, superpixel boundaries.

The drawing itself (jet colours, CAM overlays, outlines, boundaries) is :mod:`crm_core.viz`, reached
through ``crm_core.api`` as every UI module reaches crm_core; this module adds what the views need on top: display sizes, colour bars with their labels, trimap
tints. Pure numpy/torch/PIL on uint8 images, shared by the callbacks. Small model inputs (64 px) are
shown enlarged, to at least 224 px: the picture with nearest-neighbour (the pixels the model saw),
CAMs bilinearly (as CAMs are always upsampled), never in blocks. A CAM overlay keeps the image
visible: the colour's opacity follows the CAM (0: the image as is). Every heat map carries a
colour bar at its right (a jet strip, its top and bottom values written beside it).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from crm_core.api import boundaries_overlay, cam_overlay, jet_colormap, mask_outline, upsample_cams, voc_palette

DISPLAY = 256  # side of the pictures in the views, pixels
THUMB = 224  # side of gallery thumbnails
CAM_ALPHA = 0.7  # opacity of the CAM colour where the CAM is 1; it falls with the CAM, to 0
BAR_WIDTH = 44  # the colour-bar panel right of each heat map, pixels
BAR_STRIP = (6, 18)  # columns of the jet strip in that panel
BAR_MARGIN = 8  # rows above and below the strip
BAR_BACKGROUND = 255
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


@functools.lru_cache(maxsize=1)
def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=12)
    except (ImportError, OSError, TypeError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def colour_bar(height: int, low: str = "0", high: str = "1") -> np.ndarray:
    """uint8 (height, BAR_WIDTH, 3) panel: a vertical jet strip, 1 at the top and 0 at the bottom,
    labelled ``high`` and ``low`` at its ends."""
    panel = np.full((height, BAR_WIDTH, 3), BAR_BACKGROUND, np.uint8)
    top, bottom = BAR_MARGIN, height - BAR_MARGIN  # strip rows [top, bottom)
    colours = np.round(jet_colormap(np.linspace(1.0, 0.0, bottom - top)) * 255).astype(np.uint8)  # (n, 3)
    panel[top:bottom, BAR_STRIP[0]:BAR_STRIP[1]] = colours[:, None]
    picture = Image.fromarray(panel)
    draw = ImageDraw.Draw(picture)
    for text, row in ((high, top), (low, bottom - 1)):
        left, upper, _, lower = draw.textbbox((0, 0), text, font=_font())
        y = min(max(row - (upper + lower) // 2, 0), height - lower)  # centred on the row, inside the panel
        draw.text((BAR_STRIP[1] + 3 - left, y), text, fill=(0, 0, 0), font=_font())
    return np.asarray(picture)


def with_colour_bar(picture: np.ndarray, low: str = "0", high: str = "1") -> np.ndarray:
    """``picture`` (H, W, 3) with a :func:`colour_bar` to its right: (H, W + BAR_WIDTH, 3)."""
    return np.concatenate([picture, colour_bar(picture.shape[0], low, high)], axis=1)


def overlay(rgb: np.ndarray, cam: np.ndarray, gt: np.ndarray | None = None, size: int = DISPLAY) -> np.ndarray:
    """Jet CAM over the (enlarged) image, opacity following the CAM, with the ground-truth outline
    when there is one and a 0..1 colour bar: (size, size + BAR_WIDTH, 3)."""
    picture = cam_overlay(upscale(rgb, size), np.clip(upscale_map(cam, size), 0, 1), alpha=CAM_ALPHA,
                          weight_by_cam=True)
    return with_colour_bar(_outline(picture, gt, size))


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


LEGEND_ROW = 16  # height of one line of a class mask's legend, pixels


def class_mask_view(rgb: np.ndarray, cams: np.ndarray, classes: list[int], names: list[str], background: float,
                    gt: np.ndarray | None = None, size: int = DISPLAY) -> np.ndarray:
    """A multi-label pseudo mask: each pixel takes the class whose CAM leads there if that CAM
    reaches the ``background`` score (``cams`` (K, H, W) of ``classes``), tinted in VOC's palette
    colour of the class, background dimmed, ground truth outlined; a legend of the colours below."""
    cams = np.stack([upscale_map(c, size) for c in np.asarray(cams, dtype=np.float32)])  # (K, size, size)
    lead, top = cams.argmax(0), cams.max(0)
    palette = np.array(voc_palette(), dtype=np.float64).reshape(256, 3)
    base = upscale(rgb, size).astype(np.float64)
    out = base * 0.3
    for k, c in enumerate(classes):
        at = (lead == k) & (top >= background)
        out[at] = 0.45 * base[at] + 0.55 * palette[c + 1]
    picture = _outline(np.round(out).clip(0, 255).astype(np.uint8), gt, size)
    legend = Image.new("RGB", (size, LEGEND_ROW * len(classes) + 4), (BAR_BACKGROUND,) * 3)
    draw = ImageDraw.Draw(legend)
    for row, (c, name) in enumerate(zip(classes, names)):
        y = 2 + row * LEGEND_ROW
        draw.rectangle((4, y + 2, 16, y + 12), fill=tuple(int(v) for v in palette[c + 1]))
        draw.text((22, y), str(name)[:30], fill=(0, 0, 0), font=_font())
    return np.concatenate([picture, np.asarray(legend)], axis=0)


def error_view(error: np.ndarray, vmax: float = 0.5, size: int = DISPLAY) -> np.ndarray:
    """|recon - input| in [0, 1] as a jet map, 0 blue .. vmax (or more) red, on a fixed scale, with its
    colour bar; per pixel, so enlarged by nearest neighbour like the picture."""
    heat = jet_colormap(np.clip(np.asarray(error, dtype=np.float64) / vmax, 0, 1))
    return with_colour_bar(upscale(np.round(heat * 255).astype(np.uint8), size), high=f"{vmax:g}+")


def boundaries_view(rgb: np.ndarray, labels: np.ndarray, size: int = DISPLAY) -> np.ndarray:
    """SLIC boundaries drawn at display resolution (thin lines) over the enlarged image."""
    return boundaries_overlay(upscale(rgb, size), upscale_labels(labels, size))


MAP_TILE = 128  # side of each class map in a decoder-input strip, pixels
CAPTION_HEIGHT = 18


def map_strip(maps: np.ndarray, labels: list[str], signed: bool = False, tile: int = MAP_TILE) -> np.ndarray:
    """One jet tile per (h, w) map of ``maps`` (C, h, w), upsampled smoothly and captioned with
    ``labels``, side by side, with the strip's colour bar: (tile + CAPTION_HEIGHT, C * tile + BAR_WIDTH, 3).

    Unsigned maps (max-normalised CAMs) are drawn on 0..1; ``signed`` maps (raw class scores) on
    -m..m with m their largest magnitude, so 0 is the middle of the scale for every tile.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if signed:
        m = float(np.abs(maps).max()) or 1.0
        scaled, low, high = (maps / m + 1.0) / 2.0, f"{-m:.2g}", f"{m:.2g}"
    else:
        scaled, low, high = maps, "0", "1"
    tiles = []
    for values, label in zip(scaled, labels):
        heat = np.round(jet_colormap(np.clip(upscale_map(values, tile), 0, 1)) * 255).astype(np.uint8)
        caption = Image.new("RGB", (tile, CAPTION_HEIGHT), (BAR_BACKGROUND,) * 3)
        ImageDraw.Draw(caption).text((4, 2), str(label)[:20], fill=(0, 0, 0), font=_font())
        tiles.append(np.concatenate([heat, np.asarray(caption)], axis=0))
    return with_colour_bar(np.concatenate(tiles, axis=1), low, high)
