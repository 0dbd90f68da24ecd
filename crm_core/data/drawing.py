"""Drawing primitives of the synthetic data: numpy on coordinate grids, no randomness.

Fills, shape masks and head patterns are evaluated on pixel-centre coordinates given as
fractions of the image size, inside the window a shape can touch, so the same scene draws the
same picture at any size and a 112 px image takes a couple of milliseconds. ``PATTERNS`` lists
the head patterns in class-id order; a class is a position in it.
"""
from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Callable, Optional, Union

import numpy as np

if TYPE_CHECKING:  # the scene's dataclasses; drawing reads their fields only
    from crm_core.data.synthetic import Fill, Head, Shape

__all__ = ["PATTERNS", "Window", "blob_radius", "head_pattern", "pixel_grid", "render_fill", "shade", "shape_mask",
           "shape_window", "upsample_grid", "window"]

# Head patterns, one per class, in class-id order. The first four are the most distinct from
# one another, since the default benchmark uses four classes.
PATTERNS: tuple[str, ...] = (
    "stripes_h",
    "stripes_v",
    "checker",
    "dots",
    "stripes_d",
    "rings",
    "stripes_a",
    "grid",
    "rays",
    "waves",
)

_MIN_PERIOD_PX = 4.0  # a pattern period under 4 px aliases into mush


def blob_radius(
    harmonics: tuple[tuple[int, float, float], ...], phi: Union[np.ndarray, float]
) -> Union[np.ndarray, float]:
    """Boundary radius (in units of the half-axes) of a blob at normalised angle `phi`."""
    r = 1.0
    for k, amp, ph in harmonics:
        r = r + amp * np.cos(k * phi + ph)
    return r


@functools.lru_cache(maxsize=8)
def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates as fractions of the image size: x (1, S) and y (S, 1)."""
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size)
    x, y = c[None, :], c[:, None]
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def upsample_grid(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of a (c, c) control grid to (size, size): smooth low-frequency noise."""
    c = grid.shape[0]
    pos = (np.arange(size, dtype=np.float32) + 0.5) / size * (c - 1)  # (S,) in [0, c-1]
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, c - 2)
    f = pos - i0
    rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]  # (S, c)
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]  # (S, S)


Window = tuple[slice, slice]  # (rows, cols) of the image that a shape can touch


def window(cx: float, cy: float, radius: float, size: int) -> Window:
    """Pixel slices of the square of half-side `radius` (fractions) around (cx, cy), clipped."""
    x0, x1 = int(math.floor((cx - radius) * size)), int(math.ceil((cx + radius) * size)) + 1
    y0, y1 = int(math.floor((cy - radius) * size)), int(math.ceil((cy + radius) * size)) + 1
    return slice(max(y0, 0), max(min(y1, size), 0)), slice(max(x0, 0), max(min(x1, size), 0))


def shape_window(shape: Shape, size: int) -> Window:
    reach = max(shape.rx, shape.ry) * (1.0 + sum(abs(a) for _, a, _ in shape.harmonics))
    if shape.kind == "rect":
        reach *= math.sqrt(2.0)  # corners stick out of the inscribed circle
    return window(shape.cx, shape.cy, reach, size)


def render_fill(fill: Fill, size: int, noise: np.ndarray, win: Window) -> np.ndarray:
    """(h, w, 3) float colours of `fill` inside window `win` of the image (callers mask them)."""
    x, y = pixel_grid(size)
    x, y = x[:, win[1]], y[win[0]]  # (1, w), (h, 1)
    shape = (y.shape[0], x.shape[1], 3)
    if fill.kind == "plain":
        out = np.broadcast_to(fill.color_a, shape)
    else:
        if fill.kind == "gradient":
            t = (x - 0.5) * math.cos(fill.angle) + (y - 0.5) * math.sin(fill.angle) + 0.5  # (h, w)
        elif fill.kind == "mottled":
            t = (upsample_grid(fill.grid, size)[win] - 0.5) * 3.0 + 0.5  # blotches with soft edges
        elif fill.kind == "blotched":
            t = (upsample_grid(fill.grid, size)[win] - 0.5) * 12.0 + 0.5  # fine, crisp, high-contrast blotches
        else:
            raise ValueError(f"unknown fill kind {fill.kind!r}")
        t = np.clip(t, 0.0, 1.0)[..., None]  # (h, w, 1)
        out = fill.color_a + (fill.color_b - fill.color_a) * t
    return out + fill.noise * noise[win]


def shape_mask(shape: Shape, size: int, win: Window) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (h, w) mask inside `win` and relative radius q (0 at the centre, 1 on the boundary)."""
    x, y = pixel_grid(size)
    dx, dy = x[:, win[1]] - shape.cx, y[win[0]] - shape.cy  # (1, w), (h, 1)
    ca, sa = math.cos(shape.angle), math.sin(shape.angle)
    u, v = (dx * ca + dy * sa) / shape.rx, (-dx * sa + dy * ca) / shape.ry  # (h, w) shape frame
    if shape.kind == "rect":
        q = np.maximum(np.abs(u), np.abs(v))
    else:
        q = np.sqrt(u * u + v * v)
        if shape.kind == "blob":
            q = q / blob_radius(shape.harmonics, np.arctan2(v, u))
        elif shape.kind != "ellipse":
            raise ValueError(f"unknown shape kind {shape.kind!r}")
    return q <= 1.0, q


_TWO_PI = 2.0 * math.pi
_SQRT2 = math.sqrt(2.0)


def _frac(a: np.ndarray) -> np.ndarray:
    return a - np.floor(a)


PatternFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]

# Signed pattern fields, > 0 where the pattern is "on". Arguments: head-frame coordinates in
# pattern periods (a along x, b along y, both phase-shifted), the phase-shifted radius r in
# periods, and the polar angle th. Gains (2, 3, 6) bring each field's useful range to ~[-1, 1].
_PATTERN_FNS: dict[str, PatternFn] = {
    "stripes_h": lambda a, b, r, th: np.sin(_TWO_PI * b),
    "stripes_v": lambda a, b, r, th: np.sin(_TWO_PI * a),
    "checker": lambda a, b, r, th: 2.0 * np.sin(_TWO_PI * a) * np.sin(_TWO_PI * b),
    "dots": lambda a, b, r, th: 6.0 * (0.3 - np.hypot(_frac(a) - 0.5, _frac(b) - 0.5)),
    "stripes_d": lambda a, b, r, th: np.sin(_TWO_PI * (a + b) / _SQRT2),
    "rings": lambda a, b, r, th: np.sin(_TWO_PI * r),
    "stripes_a": lambda a, b, r, th: np.sin(_TWO_PI * (a - b) / _SQRT2),
    "grid": lambda a, b, r, th: 3.0 * (np.maximum(np.cos(_TWO_PI * a), np.cos(_TWO_PI * b)) - 0.7),
    "rays": lambda a, b, r, th: np.sin(5.0 * th),
    "waves": lambda a, b, r, th: np.sin(_TWO_PI * (b + 0.4 * np.sin(math.pi * a))),
}
if tuple(_PATTERN_FNS) != PATTERNS:  # class ids are positions in PATTERNS: keep them in sync
    raise RuntimeError("_PATTERN_FNS and PATTERNS disagree")


def head_pattern(name: str, head: Head, size: int, win: Optional[Window] = None) -> np.ndarray:
    """Pattern intensity t in [0, 1] of pattern `name` drawn on `head`, shape (S, S) or of `win`.

    The pattern lives in image axes (up to the head's small jitter), so orientation is part of
    the class: horizontal and vertical stripes are different classes.
    """
    try:
        fn = _PATTERN_FNS[name]
    except KeyError:
        raise ValueError(f"unknown head pattern {name!r}; choose from {list(PATTERNS)}") from None
    win = win if win is not None else (slice(0, size), slice(0, size))
    x, y = pixel_grid(size)
    dx, dy = (x[:, win[1]] - head.cx) * size, (y[win[0]] - head.cy) * size  # pixels
    ca, sa = math.cos(head.angle), math.sin(head.angle)
    u, v = dx * ca + dy * sa, -dx * sa + dy * ca  # (h, w) head frame, pixels
    p = max(head.period * head.r * size, _MIN_PERIOD_PX)  # period, pixels
    ph_a, ph_b = head.phase
    r = np.sqrt(u * u + v * v) / p + ph_a
    th = np.arctan2(v, u) + _TWO_PI * ph_a / 5.0  # rays: rotate by a fraction of a sector
    s = fn(u / p + ph_a, v / p + ph_b, r, th)
    return np.clip(0.5 + 1.5 * s, 0.0, 1.0)  # steep soft threshold: crisp yet not aliased to bits


def shade(q: np.ndarray) -> np.ndarray:
    """Rounder look: 1 at a blob's centre, darker towards the rim (q = relative radius)."""
    return 1.0 - 0.3 * np.clip(q, 0.0, 1.0) ** 2
