"""What every dataset of the lab hands out: the sample dict, index checking, optional superpixels.

A dataset subclasses :class:`PetsDataset` and implements :meth:`PetsDataset.arrays` (the
pixels and labels of one checked index as numpy arrays) and ``__len__``; the base class turns
them into the sample dict that training, evaluation and the dashboard read, with the same keys
and dtypes for every dataset.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from crm_core.data.superpixels import SuperpixelCache
from crm_core.data.transforms import image_to_tensor


class SampleArrays(NamedTuple):
    """One sample before it becomes tensors.

    A single-label dataset gives ``label`` and the binary ``mask``; the class mask and the label
    set follow from them. A multi-label dataset (several objects of different classes) also gives
    ``class_mask`` and ``labels``, and ``label`` is then one of ``labels`` (the largest object's)."""

    image: np.ndarray  # uint8 (S, S, 3)
    label: int  # image-level class index
    mask: np.ndarray  # int64 (S, S): 1 object, 0 background, 255 ignored
    trimap: np.ndarray  # uint8 (S, S): 1 foreground, 2 background, 3 border (Oxford-IIIT Pet)
    parts: np.ndarray  # uint8 (S, S): 0 background, part ids as in the dataset's ``part_names``, 255 ignored
    class_mask: Optional[np.ndarray] = None  # int64 (S, S): 0 background, class index + 1, 255 ignored
    labels: tuple[int, ...] = ()  # the class indices present in the image


def held_out_split(count: int, split: str, every: int, length: Optional[int] = None) -> list[int]:
    """Indices into a list of ``count`` images for ``split``: "train" all but every ``every``-th
    image, "val" those (where thresholds are chosen), anything else all of them; the first
    ``length`` when given. How the real datasets carve a val split out of their training list."""
    if split == "train":
        indices = [i for i in range(count) if i % every != 0]
    elif split == "val":
        indices = [i for i in range(count) if i % every == 0]
    else:
        indices = list(range(count))
    return indices if length is None else indices[: max(int(length), 0)]


def class_mask_of(mask: np.ndarray, label: int) -> np.ndarray:
    """The class mask of a single-object sample: its object pixels carry ``label + 1``."""
    return np.where(mask == 1, label + 1, mask).astype(np.int64)


def multi_hot(labels: tuple[int, ...], num_classes: int) -> torch.Tensor:
    """(num_classes,) float32 with 1 at each class in ``labels``."""
    out = torch.zeros(num_classes, dtype=torch.float32)
    out[list(labels)] = 1.0
    return out


class PetsDataset(Dataset):
    """Base of the lab's datasets: samples are dicts of tensors.

    image (3, S, S) float [0, 1], label int64, mask (S, S) int64, trimap (S, S) uint8, parts
    (S, S) uint8, class_mask (S, S) int64 (0 background, class index + 1, 255 ignored), labels
    (num_classes,) float32 multi-hot, index int64, and superpixels (S, S) int64 when ``self.superpixels`` is a
    :class:`SuperpixelCache` (computed from the un-augmented image; flips are applied to the
    batch later). Subclasses set ``superpixels`` and implement :meth:`arrays` and ``__len__``.
    """

    superpixels: Optional[SuperpixelCache] = None
    num_classes: int
    multi_label = False  # True: an image may hold objects of several classes (train with a multi-label loss)

    def __len__(self) -> int:
        raise NotImplementedError

    def arrays(self, index: int) -> SampleArrays:
        """The sample at ``index`` (already checked: 0 <= index < len) as numpy arrays."""
        raise NotImplementedError(f"{type(self).__name__} must implement arrays")

    def _check_index(self, index: int) -> int:
        """``index`` as an int in [0, len); negative indices count from the end."""
        index = int(index)
        length = len(self)
        if index < 0:
            index += length
        if not 0 <= index < length:
            raise IndexError(f"index {index} out of range for {length} samples")
        return index

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = self._check_index(index)
        image, label, mask, trimap, parts, class_mask, labels = self.arrays(index)
        sample = {
            "image": image_to_tensor(image),  # (3,H,W) float [0, 1]
            "label": torch.tensor(label, dtype=torch.int64),
            "mask": torch.from_numpy(mask),
            "trimap": torch.from_numpy(trimap),
            "parts": torch.from_numpy(parts),
            "class_mask": torch.from_numpy(class_mask_of(mask, label) if class_mask is None else class_mask),
            "labels": multi_hot(labels or (label,), self.num_classes),
            "index": torch.tensor(index, dtype=torch.int64),
        }
        if self.superpixels is not None:
            sample["superpixels"] = torch.from_numpy(self.superpixels.get(image).astype(np.int64))
        return sample


class FolderDataset(PetsDataset):
    """A dataset read from a folder through a torchvision dataset (``self._tv``), its split
    carved by :func:`held_out_split`: what the real datasets share."""

    _tv: Any
    _indices: list[int]
    root: Path

    @staticmethod
    def _check_request(split: str, splits: Any, image_size: int) -> None:
        """Refuse a split the dataset does not have (``splits``: its names) and a size below 1."""
        if split not in splits:
            raise ValueError(f"unknown split {split!r}; choose from {list(splits)}")
        if int(image_size) < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")

    def _settle(self, tv: Any, root: Union[str, Path], split: str, image_size: int,
                superpixels: Optional[SuperpixelCache], length: Optional[int], class_names: list[str],
                every: int) -> None:
        """Keep the torchvision dataset and this split's indices into it, and what a sample needs."""
        self._tv = tv
        self._indices = held_out_split(len(tv), split, every, length)
        self.root, self.split, self.image_size = Path(root), split, int(image_size)
        self.superpixels = superpixels
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)

    def __len__(self) -> int:
        return len(self._indices)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, "
                f"image_size={self.image_size}, n={len(self)})")
