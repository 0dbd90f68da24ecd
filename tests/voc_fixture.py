"""A tiny PASCAL VOC 2012 folder in the standard layout, made by the tests themselves.

JPEGs of odd sizes; palette PNG masks holding a few rectangles of different classes with the
255 boundary VOC draws around each object; the train and val lists of ImageSets/Segmentation;
optionally the field's train_aug (VOC's train images and more, as SBD adds them): single-channel
class PNGs in SegmentationClassAug and ImageSets/Segmentation/train_aug.txt.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from crm_core.data.voc import voc_palette

SIZES = ((37, 29), (50, 41), (45, 45), (31, 53))  # (width, height), odd on purpose


def object_mask(width: int, height: int, objects: list[tuple[int, tuple[float, float, float, float]]]) -> np.ndarray:
    """uint8 (height, width): 0 background, each (class, (x0, y0, x1, y1) as fractions) a filled
    rectangle of that class, with a 1-pixel 255 boundary around it as in VOC's masks."""
    mask = np.zeros((height, width), dtype=np.uint8)
    for cls, (x0, y0, x1, y1) in objects:
        xa, ya, xb, yb = int(x0 * width), int(y0 * height), int(x1 * width), int(y1 * height)
        mask[max(ya - 1, 0):yb + 1, max(xa - 1, 0):xb + 1] = 255
        mask[ya:yb, xa:xb] = cls
    return mask


def write_voc(root: Path, train: int = 10, val: int = 4, seed: int = 0) -> dict[str, list[tuple[int, ...]]]:
    """Write the folder under ``root``; returns, per VOC list, each image's classes (sorted, 1-20)."""
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes: dict[str, list[tuple[int, ...]]] = {}
    for voc_list, count in (("train", train), ("val", val)):
        ids, present = [], []
        for i in range(count):
            image_id = f"2007_{voc_list}_{i:04d}"
            width, height = SIZES[i % len(SIZES)]
            picked = sorted(rng.choice(np.arange(1, 21), size=1 + i % 3, replace=False).tolist())
            boxes = [(0.05, 0.05, 0.45, 0.45), (0.55, 0.55, 0.95, 0.95), (0.55, 0.05, 0.95, 0.45)]
            mask = object_mask(width, height, list(zip(picked, boxes)))
            png = Image.fromarray(mask, mode="P")
            png.putpalette(voc_palette())
            png.save(base / "SegmentationClass" / f"{image_id}.png")
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(base / "JPEGImages" / f"{image_id}.jpg", quality=90)
            ids.append(image_id)
            present.append(tuple(picked))
        (base / "ImageSets" / "Segmentation" / f"{voc_list}.txt").write_text("\n".join(ids) + "\n")
        classes[voc_list] = present
    return classes


def write_train_aug(root: Path, extra: int = 9, seed: int = 1) -> list[tuple[int, ...]]:
    """Add train_aug to a :func:`write_voc` folder: VOC's train images (their masks copied as
    single-channel PNGs, as SegmentationClassAug ships them) then ``extra`` images of SBD's own;
    returns each listed image's classes (sorted, 1-20), in the list's order."""
    base = root / "VOCdevkit" / "VOC2012"
    (base / "SegmentationClassAug").mkdir(parents=True, exist_ok=True)
    ids = (base / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    present = []
    for image_id in ids:
        mask = np.array(Image.open(base / "SegmentationClass" / f"{image_id}.png"))
        Image.fromarray(mask, mode="L").save(base / "SegmentationClassAug" / f"{image_id}.png")
        present.append(tuple(sorted(set(np.unique(mask).tolist()) - {0, 255})))
    rng = np.random.default_rng(seed)
    for i in range(extra):
        image_id = f"2008_sbd_{i:04d}"
        width, height = SIZES[(i + 1) % len(SIZES)]
        picked = sorted(rng.choice(np.arange(1, 21), size=1 + i % 2, replace=False).tolist())
        mask = object_mask(width, height, list(zip(picked, [(0.1, 0.1, 0.5, 0.5), (0.5, 0.5, 0.9, 0.9)])))
        Image.fromarray(mask, mode="L").save(base / "SegmentationClassAug" / f"{image_id}.png")
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
            base / "JPEGImages" / f"{image_id}.jpg", quality=90)
        ids.append(image_id)
        present.append(tuple(picked))
    (base / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("\n".join(ids) + "\n")
    return present
