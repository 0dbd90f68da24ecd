"""PASCAL VOC 2012 segmentation (20 classes, several objects per image) in the lab's sample format.

torchvision's `VOCSegmentation` reads the standard layout::

    <root>/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    <root>/VOCdevkit/VOC2012/SegmentationClass/<id>.png     palette PNGs: pixel value = class index
    <root>/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt

This wrapper checks those files first (a missing dataset fails at once, in one line, and never
touches the network unless ``download=True``), then checks every mask it reads: a palette (or
single-channel) image whose values are 0 (background), 1-20 (the classes) or 255 (the object
boundaries VOC leaves unlabelled, ignored everywhere).

Splits: the lab chooses thresholds on a val split it never reports, so "train" is VOC's train list
minus every 10th image, "val" is those held-out images, and "test" is VOC's val list (the split
the field reports, whose masks are public). Image labels are the classes present in the mask.
Images are squashed to ``image_size`` square (bilinear; masks nearest), as for Oxford-IIIT Pet.

``voc_aug`` (:class:`VOCAugSegmentationData`) trains on the field's ``train_aug`` instead: VOC's
train images plus SBD's (Hariharan et al. 2011), 10,582 images, in the folder layout the
DeepLab and IRN code bases use::

    <root>/VOCdevkit/VOC2012/SegmentationClassAug/<id>.png   class-index PNGs (mode L or P)
    <root>/VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt

"train" and "val" are carved out of that list as above; "test" is still VOC's val list, and an
image of it in ``train_aug.txt`` is refused (it would be scored on what it was trained on).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image

from crm_core.data.base import FolderDataset, SampleArrays
from crm_core.data.errors import DatasetFormatError, DatasetNotFoundError
from crm_core.data.superpixels import SuperpixelCache
from crm_core.data.transforms import pil_to_rgb, resize_rgb

__all__ = ["SBD_URL", "VOC_CLASSES", "VOC_URL", "VOCAugSegmentationData", "VOCSegmentationData", "voc_layout",
           "voc_palette"]

logger = logging.getLogger(__name__)

VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
# SBD's images and boundaries; SegmentationClassAug is those masks converted to VOC's class PNGs
SBD_URL = "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz"
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
IGNORE = 255  # VOC's unlabelled object boundaries
VAL_EVERY = 10  # every 10th image of VOC's train list is held out as the lab's "val"
_SPLITS = {"train": "train", "val": "train", "test": "val"}  # ours -> the VOC list it is drawn from


def voc_palette() -> list[int]:
    """VOC's colour map as a flat list of 256 RGB triples (PIL's ``putpalette`` format): class c's
    colour spreads the bits of c over the high bits of the three channels."""
    palette = []
    for c in range(256):
        r = g = b = 0
        for shift in range(8):
            r |= ((c >> 0) & 1) << (7 - shift)
            g |= ((c >> 1) & 1) << (7 - shift)
            b |= ((c >> 2) & 1) << (7 - shift)
            c >>= 3
        palette += [r, g, b]
    return palette


def voc_layout(root: Union[str, Path]) -> dict[str, Path]:
    """The paths read under ``root`` (for the checks and the error message)."""
    base = Path(root).expanduser() / "VOCdevkit" / "VOC2012"
    sets = base / "ImageSets" / "Segmentation"
    return {"base": base, "images": base / "JPEGImages", "masks": base / "SegmentationClass",
            "train": sets / "train.txt", "val": sets / "val.txt",
            "aug_masks": base / "SegmentationClassAug", "train_aug": sets / "train_aug.txt"}


def _check_files(root: Union[str, Path], voc_list: str) -> None:
    layout = voc_layout(root)
    missing = [p for p in (layout["images"], layout["masks"], layout[voc_list]) if not p.exists()]
    if missing:
        raise DatasetNotFoundError(
            f"PASCAL VOC 2012 not found: missing {', '.join(str(p) for p in missing)}; expected "
            f"{layout['base']}/{{JPEGImages/<id>.jpg, SegmentationClass/<id>.png, "
            f"ImageSets/Segmentation/{{train,val}}.txt}}: extract {VOC_URL} into {Path(root).expanduser()} "
            "or pass --download on a machine with internet access")


def _check_aug_files(root: Union[str, Path]) -> None:
    layout = voc_layout(root)
    missing = [p for p in (layout["images"], layout["aug_masks"], layout["train_aug"]) if not p.exists()]
    if missing:
        raise DatasetNotFoundError(
            f"VOC 2012 train_aug not found: missing {', '.join(str(p) for p in missing)}; expected "
            f"{layout['base']}/{{JPEGImages/<id>.jpg, SegmentationClassAug/<id>.png, "
            f"ImageSets/Segmentation/train_aug.txt}} (VOC's train images and SBD's, {SBD_URL}, "
            "with SBD's masks converted to class-index PNGs, as the DeepLab and IRN code bases ship them)")


def _read_ids(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


class _TrainAugList:
    """train_aug as (image, mask) pairs, read like torchvision's VOCSegmentation (which knows
    only VOC's own lists): ``images``, ``masks``, ``len`` and ``[i]`` -> (RGB image, mask image)."""

    def __init__(self, root: Union[str, Path]) -> None:
        layout = voc_layout(root)
        ids = _read_ids(layout["train_aug"])
        if layout["val"].is_file():
            leaked = sorted(set(ids) & set(_read_ids(layout["val"])))
            if leaked:
                raise DatasetFormatError(
                    f"{layout['train_aug']}: {len(leaked)} of its images are in VOC's val list (the lab's test "
                    f"split), e.g. {leaked[0]}; train_aug must leave them out")
        self.images = [str(layout["images"] / f"{i}.jpg") for i in ids]
        self.masks = [str(layout["aug_masks"] / f"{i}.png") for i in ids]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Image.Image, Image.Image]:
        return Image.open(self.images[index]).convert("RGB"), Image.open(self.masks[index])


def read_class_mask(target: Image.Image, where: str, num_classes: int = len(VOC_CLASSES)) -> np.ndarray:
    """The class indices of a VOC mask image, checked: int64, 0 background, 1..num_classes, 255 ignored."""
    if target.mode not in ("P", "L"):
        raise DatasetFormatError(
            f"{where}: a mask of mode {target.mode}; VOC's SegmentationClass masks are palette (P) PNGs whose pixel "
            "values are class indices (an RGB rendering of the palette cannot be read as classes)")
    values = np.array(target, dtype=np.int64)
    bad = np.setdiff1d(np.unique(values), [*range(num_classes + 1), IGNORE])
    if bad.size:
        raise DatasetFormatError(f"{where}: mask values {bad.tolist()[:5]} are not classes (0-{num_classes}) "
                                 f"nor the ignore value {IGNORE}")
    return values


class VOCSegmentationData(FolderDataset):
    """PASCAL VOC 2012 as dicts of tensors (:class:`PetsDataset`), multi-label.

    ``class_mask``: 0 background, 1-20 the classes, 255 ignored; ``labels``: the classes present;
    ``label``: the class with the most pixels; ``mask``: 1 any object, 0 background, 255 ignored;
    ``parts``: the same with one part, "object".
    """

    name = "voc"
    part_names = {1: "object"}
    multi_label = True
    train_aug = False  # True: train and val come from train_aug (VOC + SBD), see the module's docstring

    def __init__(
        self,
        root: Union[str, Path],
        split: str = "train",
        image_size: int = 224,
        download: bool = False,
        superpixels: Optional[SuperpixelCache] = None,
        length: Optional[int] = None,
    ) -> None:
        self._check_request(split, _SPLITS, image_size)
        voc_list = _SPLITS[split]
        if self.train_aug and split != "test":
            _check_aug_files(root)  # SBD has no download here: torchvision's SBDataset keeps its .mat masks
            self._settle(_TrainAugList(root), root, split, image_size, superpixels, length, list(VOC_CLASSES),
                         VAL_EVERY)
            return
        if not download:
            _check_files(root, voc_list)

        from torchvision.datasets import VOCSegmentation  # lazy: only VOC users pay for it

        try:
            tv = VOCSegmentation(root=str(Path(root).expanduser()), year="2012", image_set=voc_list,
                                 download=download)
        except RuntimeError as exc:  # torchvision's own "Dataset not found or corrupted"
            raise DatasetNotFoundError(f"{exc} (root: {root})") from exc
        self._settle(tv, root, split, image_size, superpixels, length, list(VOC_CLASSES), VAL_EVERY)
        logger.debug("VOCSegmentationData(%s): %d of %d images of VOC's %s list", split, len(self), len(self._tv),
                     voc_list)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], int]:
        """(image uint8 (S, S, 3), class mask int64 (S, S), labels, label) of a checked ``index``;
        the labels come from the full-size mask, so a small object squashed away still counts."""
        position = self._indices[index]
        image, target = self._tv[position]
        classes = read_class_mask(target, self._tv.masks[position], self.num_classes)
        counts = np.bincount(classes[(classes > 0) & (classes != IGNORE)], minlength=self.num_classes + 1)[1:]
        if not counts.any():
            raise DatasetFormatError(f"{self._tv.masks[position]}: no object class in the mask; "
                                     "an image-level label needs one")
        size = (self.image_size, self.image_size)
        rgb = resize_rgb(pil_to_rgb(image), size)
        resized = Image.fromarray(classes.astype(np.uint8)).resize(size[::-1], Image.NEAREST)
        labels = tuple(int(c) for c in np.flatnonzero(counts))
        return np.array(rgb, dtype=np.uint8), np.array(resized, dtype=np.int64), labels, int(np.argmax(counts))

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(image, parts: 1 object / 0 background / 255 ignored, label), the contract of
        `SyntheticPets.render`, so viewers treat every dataset alike."""
        sample = self.arrays(self._check_index(index))
        return sample.image, sample.parts, sample.label

    def arrays(self, index: int) -> SampleArrays:
        image, classes, labels, label = self._load(index)
        mask = np.where(classes == IGNORE, IGNORE, classes > 0).astype(np.int64)
        trimap = np.select([classes == IGNORE, classes > 0], [3, 1], 2).astype(np.uint8)
        return SampleArrays(image, label, mask, trimap, mask.astype(np.uint8), classes, labels)


class VOCAugSegmentationData(VOCSegmentationData):
    """VOC 2012 with the field's train_aug (VOC's train images and SBD's, 10,582) as its train and
    val splits; test is VOC's val list, as for :class:`VOCSegmentationData`."""

    name = "voc_aug"
    train_aug = True
