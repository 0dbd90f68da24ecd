"""Datasets, preprocessing and superpixels.

`DATASETS` maps a dataset name to its class (a `crm_core.data.base.PetsDataset`, which builds
the sample dicts); CLIs take their `choices` from it and build datasets through
`build_dataset`, so adding a dataset is one `PetsDataset` subclass plus one entry here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from torch.utils.data import Dataset

from crm_core.data.errors import DatasetFormatError, DatasetNotFoundError, ImageError
from crm_core.data.pets import OxfordPets
from crm_core.data.superpixels import (
    SuperpixelCache,
    slic_superpixels,
    superpixel_mean,
)
from crm_core.data.synthetic import PATTERNS, SyntheticPets
from crm_core.data.transforms import load_image, random_hflip_batch, to_uint8_image
from crm_core.data.voc import VOCAugSegmentationData, VOCSegmentationData

__all__ = [
    "DATASETS",
    "DEFAULT_DATA_ROOT",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "ImageError",
    "OxfordPets",
    "PATTERNS",
    "SuperpixelCache",
    "SyntheticPets",
    "VOCAugSegmentationData",
    "VOCSegmentationData",
    "build_dataset",
    "load_image",
    "random_hflip_batch",
    "slic_superpixels",
    "superpixel_mean",
    "to_uint8_image",
]

DATASETS: dict[str, type[Dataset]] = {
    "synthetic": SyntheticPets,
    "pets": OxfordPets,
    "voc": VOCSegmentationData,
    "voc_aug": VOCAugSegmentationData,
}

DEFAULT_DATA_ROOT = Path("data")  # where `pets` and `voc` look when no data_root is given


def build_dataset(
    name: str,
    split: str,
    *,
    image_size: int,
    data_root: Union[str, Path, None] = None,
    num_classes: int = 4,
    seed: int = 0,
    superpixels: Optional[SuperpixelCache] = None,
    download: bool = False,
    length: Optional[int] = None,
    appearance: str = "random",
    max_objects: int = 1,
) -> Dataset:
    """Build dataset `name` for `split` ("train", "val" or "test").

    Arguments that do not apply are ignored: `num_classes` and `seed` shape the synthetic data
    only (Oxford pets always has its 37 breeds, VOC its 20 classes), and so do `appearance` (see
    `crm_core.data.synthetic.APPEARANCES`) and `max_objects` (animals per image, of distinct
    classes); `data_root` and `download` concern pets and voc only. `length` sets the synthetic
    length, and truncates the others (handy for quick runs).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
    if name == "synthetic":
        return SyntheticPets(split=split, image_size=image_size, num_classes=num_classes,
                             length=length, seed=seed, superpixels=superpixels, appearance=appearance,
                             max_objects=max_objects)
    if max_objects != 1:
        raise ValueError(f"max_objects applies to the synthetic dataset only; {name} has its own objects")
    root = DEFAULT_DATA_ROOT if data_root is None else data_root
    return DATASETS[name](root, split, image_size=image_size, download=download, superpixels=superpixels,
                          length=length)  # the folder datasets (FolderDataset) share one constructor
