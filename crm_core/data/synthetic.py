"""Synthetic pets: an offline, deterministic benchmark that reproduces the WSSS problem.

Each image holds one "animal": a *body* whose shape, colour and texture are drawn from the
same distribution for every class, and a *head* (a disc touching the body) whose pattern
alone decides the class. The background is cluttered with distractor shapes, head-sized discs
and textured decoys whose fills are never one of the head patterns. The animal sits anywhere
(its body may leave the frame), and ``appearance`` chooses whether the object's look is
random or one class-agnostic look (see ``APPEARANCES``). A classifier therefore only needs the head, so a plain CAM lights
the head; methods that expand CAMs (DRS, CRM) should also cover the body, and the exact part map
measures by how much.

Generation is split in two so the claim "only the head is class-specific" is testable:
`sample_scene` draws every random parameter (geometry, colours, textures) from a generator that
never sees the label, and `render_scene` draws the scene with numpy on coordinate grids, picking
the head pattern from the label. Swapping the label of a scene changes head pixels only.

Geometry is stored in fractions of the image size, and per-pixel noise is drawn from its own
generator last, so rendering one scene at 64 px and at 112 px gives the same picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from crm_core.data.base import PetsDataset, SampleArrays
from crm_core.data.drawing import (PATTERNS, Window, blob_radius, head_pattern, pixel_grid, render_fill, shade,
                                   shape_mask, shape_window, window)
from crm_core.data.superpixels import SuperpixelCache

__all__ = [
    "APPEARANCES",
    "DEFAULT_LENGTHS",
    "Animal",
    "Fill",
    "Head",
    "PATTERNS",
    "SPLITS",
    "Scene",
    "Shape",
    "SyntheticPets",
    "data_setting",
    "head_pattern",
    "render_scene",
    "render_scene_classes",
    "sample_scene",
    "trimap_from_mask",
]


SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}  # split name -> id mixed into the seed
DEFAULT_LENGTHS: dict[str, int] = {"train": 2000, "val": 200, "test": 200}

_MIN_IMAGE_SIZE = 32  # below this a head is a handful of pixels and its pattern is illegible
_MARGIN = 0.04  # keep the animal this far (fraction of the size) from the image border
# Animal size, as a fraction of the image area. Small enough that the animal can sit anywhere:
# with bodies of 15-30% every animal covered the centre, and a fixed centred blob scored a
# best-threshold CAM mIoU of 0.63, above every trained model (the "blob floor").
_BODY_FRAC = (0.06, 0.12)
_HEAD_FRAC = (0.05, 0.08)

# Object appearance (``appearance=``). "random": body and background colours are drawn from the
# same range, so knowing where the animal is does not predict its pixels and a reconstruction
# cannot use the CAM (the oracle gain of ``python -m crm_core.experiments.oracle`` is ~0). "informative": the
# object has one appearance for every class (bright body, dark background) -- class-agnostic, so
# no label leaks -- and some distractors share it. On "informative" data brightness alone still
# segments the object about as well as a trained CRM model (image grayscale as the CAM: mIoU
# 0.69). "camouflage": the same object appearance, but more distractors, nearly all of it, that
# together cover more of the image than the body: the object is still bright (knowing where it
# is still predicts its pixels, so CRM has something to use), but a bright pixel is more likely
# a distractor than the object, so colour alone no longer segments it.
APPEARANCES: tuple[str, ...] = ("random", "informative", "camouflage")
_COLOUR_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "random": {"body": (0.05, 0.95), "background": (0.05, 0.95)},
    "informative": {"body": (0.65, 0.95), "background": (0.05, 0.45)},
    "camouflage": {"body": (0.65, 0.95), "background": (0.05, 0.45)},
}


@dataclass(frozen=True)
class _Clutter:
    """How many distractors an appearance draws and how likely each takes the object's appearance."""

    count: tuple[int, int]  # [low, high) of the number of distractors
    shared_p: float  # chance that a distractor's colours come from the body's range
    kinds: tuple[str, ...] = ("ellipse", "rect", "blob", "disc", "decoy")


_CLUTTER: dict[str, _Clutter] = {
    "random": _Clutter((3, 7), 0.0),
    "informative": _Clutter((3, 7), 0.3),
    "camouflage": _Clutter((7, 12), 0.9),
}
_BODY_FILLS = ("plain", "gradient", "mottled")
_BLOTCH_GRID = 24  # control points across the image of a decoy's texture (blotches of ~5 px at 112 px)


def data_setting(appearance: str, max_objects: int = 1) -> str:
    """The name of a synthetic data setting, as tables group their rows: the appearance, with
    several objects per image marked (``informative_m3``)."""
    return appearance if int(max_objects) == 1 else f"{appearance}_m{int(max_objects)}"


# ---------------------------------------------------------------------------------------------
# Scene description (all random choices; no pixels)


@dataclass(frozen=True, eq=False)
class Fill:
    """How a region is coloured. Shared by background, distractors and body."""

    kind: str  # "plain" | "gradient" | "mottled"
    color_a: np.ndarray  # (3,) float RGB in [0, 1]
    color_b: np.ndarray  # (3,) second colour of gradients and mottles
    angle: float  # gradient direction, radians
    noise: float  # std of per-pixel noise added inside the region
    grid: Optional[np.ndarray] = None  # (c, c) control grid in [0, 1] of the mottle, upsampled bilinearly


@dataclass(frozen=True, eq=False)
class Shape:
    """A filled shape; positions and radii are fractions of the image size."""

    kind: str  # "ellipse" | "rect" | "blob"
    cx: float
    cy: float
    rx: float  # half-axis along the shape's own x axis
    ry: float
    angle: float  # rotation, radians
    fill: Fill
    harmonics: tuple[tuple[int, float, float], ...] = ()  # blob radius wobble: (k, amplitude, phase)


@dataclass(frozen=True, eq=False)
class Head:
    """The class-bearing disc; its pattern comes from the scene's label at render time."""

    cx: float  # centre, fraction of the image size
    cy: float
    r: float  # radius, fraction of the image size
    color_on: np.ndarray  # (3,) colour where the pattern is "on"
    color_off: np.ndarray  # (3,) strongly contrasting colour elsewhere
    period: float  # pattern period in units of the head radius
    phase: tuple[float, float]  # pattern offsets, in periods
    angle: float  # small orientation jitter, radians (patterns stay axis-aligned-ish)
    noise: float  # per-pixel noise std


@dataclass(frozen=True, eq=False)
class Animal:
    """One more animal of a multi-object scene: its geometry and its class."""

    body: Shape
    head: Head
    label: int


@dataclass(frozen=True, eq=False)
class Scene:
    """Everything needed to draw one image. Only `label` (and the labels of `others`) is class-specific."""

    label: int
    background: Fill
    distractors: tuple[Shape, ...]
    body: Shape
    head: Head
    noise_seed: int  # per-pixel noise generator seed (its draws depend on the image size)
    noise: float  # global sensor-noise std
    others: tuple[Animal, ...] = ()  # further animals, each of a class distinct from every other's

    @property
    def labels(self) -> tuple[int, ...]:
        """The classes in the image, the first animal's first."""
        return (self.label, *(animal.label for animal in self.others))


def _color(g: np.random.Generator, lo: float = 0.05, hi: float = 0.95) -> np.ndarray:
    return g.uniform(lo, hi, 3).astype(np.float32)


def _related(g: np.random.Generator, c: np.ndarray, spread: float) -> np.ndarray:
    return np.clip(c + g.uniform(-spread, spread, 3), 0.0, 1.0).astype(np.float32)


def _sample_fill(g: np.random.Generator, kinds: tuple[str, ...], color: Optional[np.ndarray] = None,
                 noisy_p: float = 0.3, colour_range: tuple[float, float] = (0.05, 0.95)) -> Fill:
    """A random fill with both colours in ``colour_range``; a fixed number of draws whatever the
    outcome keeps streams aligned."""
    lo, hi = colour_range
    kind = kinds[int(g.integers(len(kinds)))]
    a = _color(g, lo, hi) if color is None else color
    b_rel = np.clip(_related(g, a, 0.35), lo, hi)
    b_ind = _color(g, lo, hi)
    b = b_ind if g.random() < 0.3 else b_rel
    angle = float(g.uniform(0.0, 2.0 * math.pi))
    noise = float(g.uniform(0.07, 0.14) if g.random() < noisy_p else g.uniform(0.01, 0.04))
    grid = g.random((5, 5)).astype(np.float32)
    return Fill(kind=kind, color_a=a, color_b=b, angle=angle, noise=noise,
                grid=grid if kind == "mottled" else None)




def _sample_animal(g: np.random.Generator, bg_mean: np.ndarray, appearance: str) -> tuple[Shape, Head]:
    # Body colour: from the appearance's body range, and distinguishable from the background's
    # average colour so the ground-truth extent is visually recoverable (independent of the class).
    body_range = _COLOUR_RANGES[appearance]["body"]
    body_color = _color(g, *body_range)
    for _ in range(20):
        if float(np.abs(body_color - bg_mean).sum()) >= 0.45:
            break
        body_color = _color(g, *body_range)
    fill = _sample_fill(g, _BODY_FILLS, color=body_color, noisy_p=0.25, colour_range=body_range)

    # Body: a wobbly ellipse covering 15-30% of the image (area = pi * rx * ry).
    frac = g.uniform(*_BODY_FRAC)
    aspect = g.uniform(1.2, 2.0)
    ry = math.sqrt(frac / (math.pi * aspect))
    rx = aspect * ry
    angle = float(g.uniform(0.0, math.pi))
    harmonics = tuple((k, float(g.uniform(0.0, 0.07)), float(g.uniform(0.0, 2 * math.pi))) for k in (2, 3, 4))

    # Head: a disc of 3-6% of the image at one end of the body, its centre just outside the
    # body's boundary so the two touch and overlap a little (a neck).
    r = math.sqrt(g.uniform(*_HEAD_FRAC) / math.pi)
    psi = float(int(g.integers(2)) * math.pi + g.uniform(-0.6, 0.6))  # normalised angle on the body
    depth = float(g.uniform(0.25, 0.5))  # head centre this many head radii outside the boundary
    dark, bright = _color(g, 0.0, 0.35), _color(g, 0.6, 1.0)
    on, off = (dark, bright) if g.random() < 0.5 else (bright, dark)
    period = float(1.0 / g.uniform(1.5, 2.1))
    phase = (float(g.random()), float(g.random()))
    jitter = float(g.uniform(-0.15, 0.15))
    head_noise = float(g.uniform(0.01, 0.04))

    ca, sa = math.cos(angle), math.sin(angle)
    rb = float(blob_radius(harmonics, psi))
    lx, ly = rx * rb * math.cos(psi), ry * rb * math.sin(psi)  # boundary point, body frame
    bx, by = lx * ca - ly * sa, lx * sa + ly * ca  # ... in image frame, relative to centre
    norm = math.hypot(bx, by)
    hx, hy = bx + bx / norm * depth * r, by + by / norm * depth * r  # head centre relative to the body's

    # Placement: the body's centre anywhere in the inner 84% of the image, the head whole and
    # inside the margins; the body may leave the frame (cropped, as in photos). Confining the
    # whole animal to the frame made the centre far likelier to be object than the border, and
    # a fixed centred blob then scored a CAM mIoU no trained model reached. A fixed number of
    # candidate draws keeps the random streams aligned.
    candidates = g.uniform(0.08, 0.92, (16, 2))
    lo, hi = _MARGIN + r, 1 - _MARGIN - r
    inside = [(x, y) for x, y in candidates if lo <= x + hx <= hi and lo <= y + hy <= hi]
    cx, cy = inside[0] if inside else (min(max(candidates[0, 0] + hx, lo), hi) - hx,
                                      min(max(candidates[0, 1] + hy, lo), hi) - hy)
    cx, cy = float(cx), float(cy)

    body = Shape(kind="blob", cx=cx, cy=cy, rx=rx, ry=ry, angle=angle, fill=fill, harmonics=harmonics)
    head = Head(cx=cx + hx, cy=cy + hy, r=r, color_on=on, color_off=off, period=period,
                phase=phase, angle=jitter, noise=head_noise)
    return body, head


def _sample_distractor(g: np.random.Generator, appearance: str) -> Shape:
    # disc: head-sized plain discs, so the head's *shape* does not give the class away; decoy:
    # head-sized discs with a high-contrast texture that is no class pattern, so "textured" is
    # not "animal" either (an untrained network's CAM is a saliency map: without decoys it found
    # the head, and the CAM floor came close to trained models).
    clutter = _CLUTTER[appearance]
    kind = clutter.kinds[int(g.integers(len(clutter.kinds)))]
    cx, cy = float(g.uniform(-0.05, 1.05)), float(g.uniform(-0.05, 1.05))
    rx = float(g.uniform(0.05, 0.17))
    ry = float(g.uniform(0.04, rx))
    if kind in ("disc", "decoy"):
        rx = ry = float(math.sqrt(g.uniform(*_HEAD_FRAC) / math.pi))
    angle = float(g.uniform(0.0, math.pi))
    harmonics = tuple((k, float(g.uniform(0.0, 0.12)), float(g.uniform(0.0, 2 * math.pi))) for k in (2, 3))
    shared = appearance != "random" and g.random() < clutter.shared_p  # random: no draw, streams as before
    colour_range = _COLOUR_RANGES[appearance]["body"] if shared else (0.05, 0.95)
    if kind == "decoy":
        dark, bright = _color(g, 0.0, 0.35), _color(g, 0.6, 1.0)
        fill = Fill(kind="blotched", color_a=dark, color_b=bright, angle=0.0, noise=float(g.uniform(0.01, 0.04)),
                    grid=g.random((_BLOTCH_GRID, _BLOTCH_GRID)).astype(np.float32))
    else:
        fill = _sample_fill(g, ("plain",) if kind == "disc" else _BODY_FILLS, colour_range=colour_range)
    return Shape(kind="ellipse" if kind in ("disc", "decoy") else kind, cx=cx, cy=cy, rx=rx, ry=ry, angle=angle,
                 fill=fill, harmonics=harmonics if kind == "blob" else ())


# A further animal of a multi-object scene is placed where it does not touch the animals already
# there, checked on a coarse grid; after this many candidate draws it is left out.
_PLACEMENT_TRIES = 32
_PLACEMENT_GRID = 56


def _occupancy(body: Shape, head: Head, size: int = _PLACEMENT_GRID) -> np.ndarray:
    """Boolean (size, size): the pixels of ``body`` and ``head``, grown by one pixel (a gap between animals)."""
    out = np.zeros((size, size), dtype=bool)
    win = shape_window(body, size)
    out[win] |= shape_mask(body, size, win)[0]
    x, y = pixel_grid(size)
    out |= (x - head.cx) ** 2 + (y - head.cy) ** 2 <= head.r ** 2
    grown = out.copy()
    grown[1:] |= out[:-1]
    grown[:-1] |= out[1:]
    grown[:, 1:] |= out[:, :-1]
    grown[:, :-1] |= out[:, 1:]
    return grown


def _sample_others(g: np.random.Generator, seed: int, split: str, index: int, num_classes: int,
                   max_objects: int, first: tuple[Shape, Head], bg_mean: np.ndarray,
                   appearance: str) -> tuple[Animal, ...]:
    """Up to ``max_objects - 1`` further animals that do not touch one another nor the first one.

    Their geometry comes from the scene's generator ``g``; their classes (distinct, none the
    first animal's) from a generator of their own, so labels still never steer geometry."""
    count = int(g.integers(1, max_objects + 1)) - 1
    taken = _occupancy(*first)
    placed: list[tuple[Shape, Head]] = []
    for _ in range(count):
        candidates = [_sample_animal(g, bg_mean, appearance) for _ in range(_PLACEMENT_TRIES)]
        for body, head in candidates:
            cells = _occupancy(body, head)
            if not (cells & taken).any():
                taken |= cells
                placed.append((body, head))
                break
    first_label = int(index) % int(num_classes)
    labels = np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[split], int(index), 1])).permutation(
        [c for c in range(int(num_classes)) if c != first_label])
    return tuple(Animal(body, head, int(label)) for (body, head), label in zip(placed, labels))


def sample_scene(seed: int, split: str, index: int, num_classes: int, appearance: str = "random",
                 max_objects: int = 1) -> Scene:
    """Draw the scene of sample `index` of `split` with object appearance `appearance`.

    The generator is seeded from (seed, split id, index), so splits never share images and a
    sample does not depend on any other. The label is `index % num_classes` (exactly balanced
    over any `num_classes` consecutive indices) and is never fed to the generator.

    ``max_objects`` > 1: 1 to ``max_objects`` animals (uniformly), of distinct classes, that do not
    touch. The first animal and everything else drawn for ``max_objects=1`` are the same, so the
    multi-object image is the single-object one with animals added.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {sorted(SPLITS)}")
    if not 1 <= int(num_classes) <= len(PATTERNS):
        raise ValueError(f"num_classes must be in [1, {len(PATTERNS)}], got {num_classes}")
    if appearance not in APPEARANCES:
        raise ValueError(f"unknown appearance {appearance!r}; choose from {list(APPEARANCES)}")
    if not 1 <= int(max_objects) <= int(num_classes):
        raise ValueError(f"max_objects must be in [1, num_classes={num_classes}] (one animal per class), "
                         f"got {max_objects}")
    ss = np.random.SeedSequence([int(seed), SPLITS[split], int(index)])
    g = np.random.default_rng(ss)
    noise_seed = int(g.integers(2**63 - 1))

    background = _sample_fill(g, ("gradient",), noisy_p=0.4, colour_range=_COLOUR_RANGES[appearance]["background"])
    bg_mean = (background.color_a + background.color_b) / 2
    distractors = tuple(_sample_distractor(g, appearance) for _ in range(int(g.integers(*_CLUTTER[appearance].count))))
    body, head = _sample_animal(g, bg_mean, appearance)
    noise = float(g.uniform(0.005, 0.02))
    others = () if max_objects == 1 else _sample_others(g, seed, split, index, num_classes, int(max_objects),
                                                        (body, head), bg_mean, appearance)
    return Scene(label=int(index) % int(num_classes), background=background, distractors=distractors,
                 body=body, head=head, noise_seed=noise_seed, noise=noise, others=others)


def render_scene(scene: Scene, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw `scene` at `image_size` px.

    Every shape is drawn only inside its bounding window, which keeps a 112 px image at about
    a couple of milliseconds.

    Returns:
        image: uint8 (S, S, 3).
        parts: uint8 (S, S) with 0 background, 1 body, 2 head.
    """
    image, parts, _ = render_scene_classes(scene, image_size)
    return image, parts


def render_scene_classes(scene: Scene, image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`render_scene`, and the class mask: int64 (S, S), 0 background, each animal's head and
    body its class index + 1."""
    s = int(image_size)
    noise = np.random.default_rng(scene.noise_seed).standard_normal((s, s, 3), dtype=np.float32)
    full: Window = (slice(0, s), slice(0, s))

    img = np.asarray(render_fill(scene.background, s, noise, full), dtype=np.float32).copy()
    for shape in scene.distractors:
        win = shape_window(shape, s)
        m, q = shape_mask(shape, s, win)
        rgb = render_fill(shape.fill, s, noise, win)
        if shape.kind == "blob":  # shaded like the body, so the rounded look is no cue either
            rgb = rgb * shade(q)[..., None]
        img[win][m] = rgb[m]

    parts = np.zeros((s, s), dtype=np.uint8)
    classes = np.zeros((s, s), dtype=np.int64)
    for animal in (Animal(scene.body, scene.head, scene.label), *scene.others):
        body = animal.body
        win = shape_window(body, s)
        m, q = shape_mask(body, s, win)
        img[win][m] = (render_fill(body.fill, s, noise, win) * shade(q)[..., None])[m]
        parts[win][m] = 1
        classes[win][m] = animal.label + 1

        head = animal.head
        win = window(head.cx, head.cy, head.r, s)
        x, y = pixel_grid(s)
        m = (x[:, win[1]] - head.cx) ** 2 + (y[win[0]] - head.cy) ** 2 <= head.r**2  # (h, w)
        t = head_pattern(PATTERNS[animal.label], head, s, win)[..., None]  # (h, w, 1)
        head_rgb = head.color_off + (head.color_on - head.color_off) * t + head.noise * noise[win]
        img[win][m] = head_rgb[m]
        parts[win][m] = 2
        classes[win][m] = animal.label + 1

    img += scene.noise * noise[::-1]  # sensor noise, decorrelated from the per-region noise
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), parts, classes


def trimap_from_mask(fg: np.ndarray, radius: int = 1) -> np.ndarray:
    """Oxford-IIIT-Pet-style trimap from a boolean mask: 1 foreground, 2 background, 3 border.

    The border is dilation minus erosion with a (2 radius + 1)^2 square, i.e. a band 2 radius
    pixels wide straddling the boundary (2 px for the default radius 1), implemented with array
    shifts so it costs microseconds.
    """
    fg = np.asarray(fg, dtype=bool)
    h, w = fg.shape
    padded = np.pad(fg, radius, mode="edge")  # (H+2r, W+2r): the image edge is not a boundary
    dil = np.zeros_like(fg)
    ero = np.ones_like(fg)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            win = padded[dy:dy + h, dx:dx + w]
            dil |= win
            ero &= win
    trimap = np.where(fg, 1, 2).astype(np.uint8)
    trimap[dil & ~ero] = 3
    return trimap


# ---------------------------------------------------------------------------------------------
# Dataset


class SyntheticPets(PetsDataset):
    """The synthetic benchmark as a torch Dataset (see the module docstring).

    Samples are dicts of tensors (`PetsDataset`): image (3, S, S) float [0, 1], label int64, mask
    (S, S) int64 (1 animal, 0 background; no 255 ignore pixels here), trimap (S, S) uint8 (1/2/3 as
    in Oxford-IIIT Pet), parts (S, S) uint8 (0 bg, 1 body, 2 head), class_mask and labels (see
    `PetsDataset`), index int64, and superpixels (S, S) int64 when a `SuperpixelCache` is given.

    ``max_objects`` > 1 puts 1 to ``max_objects`` animals of distinct classes in an image (see
    :func:`sample_scene`); the dataset is then multi-label, ``label`` is the first animal's class
    (balanced over consecutive indices) and ``mask`` covers every animal.
    """

    name = "synthetic"
    part_names = {1: "body", 2: "head"}

    def __init__(
        self,
        split: str = "train",
        image_size: int = 112,
        num_classes: int = 4,
        length: Optional[int] = None,
        seed: int = 0,
        superpixels: Optional[SuperpixelCache] = None,
        appearance: str = "random",
        max_objects: int = 1,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {sorted(SPLITS)}")
        if not 2 <= int(num_classes) <= len(PATTERNS):
            raise ValueError(f"num_classes must be in [2, {len(PATTERNS)}], got {num_classes}")
        if int(image_size) < _MIN_IMAGE_SIZE:
            raise ValueError(f"image_size must be >= {_MIN_IMAGE_SIZE}, got {image_size}")
        if int(seed) < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if appearance not in APPEARANCES:
            raise ValueError(f"unknown appearance {appearance!r}; choose from {list(APPEARANCES)}")
        if length is not None and int(length) < 0:
            raise ValueError(f"length must be non-negative, got {length}")
        if not 1 <= int(max_objects) <= int(num_classes):
            raise ValueError(f"max_objects must be in [1, num_classes={num_classes}] (one animal per class), "
                             f"got {max_objects}")
        self.split = split
        self.image_size = int(image_size)
        self.num_classes = int(num_classes)
        self.length = DEFAULT_LENGTHS[split] if length is None else int(length)
        self.seed = int(seed)
        self.appearance = appearance
        self.max_objects = int(max_objects)
        self.multi_label = self.max_objects > 1
        self.superpixels = superpixels
        self.class_names: list[str] = list(PATTERNS[: self.num_classes])

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return (f"SyntheticPets(split={self.split!r}, image_size={self.image_size}, "
                f"num_classes={self.num_classes}, length={self.length}, seed={self.seed}, appearance={self.appearance!r}"
                + (f", max_objects={self.max_objects})" if self.multi_label else ")"))

    def scene(self, index: int) -> Scene:
        """The random parameters of sample `index` (no pixels)."""
        return sample_scene(self.seed, self.split, self._check_index(index), self.num_classes, self.appearance,
                            self.max_objects)

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(image uint8 (S, S, 3), parts uint8 (S, S), label) of sample `index`, without torch."""
        scene = self.scene(index)
        image, parts = render_scene(scene, self.image_size)
        return image, parts, scene.label

    def arrays(self, index: int) -> SampleArrays:
        scene = self.scene(index)
        image, parts, classes = render_scene_classes(scene, self.image_size)
        fg = parts > 0
        return SampleArrays(image, scene.label, fg.astype(np.int64), trimap_from_mask(fg), parts, classes,
                            scene.labels)
