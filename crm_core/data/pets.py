"""Oxford-IIIT Pet (37 breeds, trimap ground truth) in the same sample format as SyntheticPets.

torchvision's `OxfordIIITPet` does the file parsing; this wrapper adds our train/val/test split,
square resizing, the mask/parts encodings and optional superpixels. It checks the files itself
before constructing torchvision's dataset so that a missing dataset fails at once with a message
saying what to download and where, and never touches the network unless `download=True`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image

from crm_core.data.base import FolderDataset, SampleArrays
from crm_core.data.errors import DatasetNotFoundError
from crm_core.data.superpixels import SuperpixelCache
from crm_core.data.transforms import pil_to_rgb, resize_rgb

__all__ = ["OxfordPets", "PETS_URL", "VAL_EVERY", "expected_layout"]

logger = logging.getLogger(__name__)

PETS_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/"
VAL_EVERY = 10  # every 10th trainval image (index % 10 == 0) is held out as "val"
_SPLITS = ("train", "val", "trainval", "test")  # ours -> torchvision's "trainval" / "test"

# Trimap value -> our encodings (Oxford-IIIT Pet: 1 pet, 2 background, 3 uncertain border).
_MASK_LUT = np.full(256, 255, dtype=np.int64)
_MASK_LUT[1], _MASK_LUT[2] = 1, 0
_PARTS_LUT = np.full(256, 255, dtype=np.uint8)
_PARTS_LUT[1], _PARTS_LUT[2] = 1, 0


def expected_layout(root: Union[str, Path]) -> dict[str, Path]:
    """The paths torchvision reads under `root` (used for the error message and the checks)."""
    base = Path(root).expanduser() / "oxford-iiit-pet"
    return {
        "images": base / "images",
        "annotations": base / "annotations",
        "trimaps": base / "annotations" / "trimaps",
        "trainval": base / "annotations" / "trainval.txt",
        "test": base / "annotations" / "test.txt",
    }


def _check_files(root: Union[str, Path], tv_split: str) -> None:
    layout = expected_layout(root)
    needed = [layout["images"], layout["annotations"], layout["trimaps"], layout[tv_split]]
    missing = [p for p in needed if not p.exists()]
    if missing:
        raise DatasetNotFoundError(
            "Oxford-IIIT Pet not found: missing " + ", ".join(str(p) for p in missing) + ".\n"
            f"Download images.tar.gz and annotations.tar.gz from {PETS_URL} and extract both into "
            f"{layout['images'].parent}, so that it contains\n"
            f"  {layout['images']}/<Breed>_<n>.jpg\n"
            f"  {layout['trimaps']}/<Breed>_<n>.png\n"
            f"  {layout['trainval']} and {layout['test']}\n"
            "or pass --download (download=True) on a machine with internet access."
        )


class OxfordPets(FolderDataset):
    """Oxford-IIIT Pet as dicts of tensors (`PetsDataset`: the same keys and dtypes as `SyntheticPets`).

    Splits: "train" = torchvision's trainval minus every 10th image, "val" = those held-out
    images, "test" = torchvision's test ("trainval" = the full trainval is also accepted).

    Images are squashed to `image_size` x `image_size` (bilinear; trimaps nearest). EXIF
    orientation is deliberately *not* applied: the trimaps annotate the stored pixel array.
    mask: 1 pet, 0 background, 255 uncertain border (ignored); parts: 1 pet, 0 bg, 255 border.
    """

    name = "pets"
    part_names = {1: "pet"}

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
        tv_split = "test" if split == "test" else "trainval"
        if not download:
            _check_files(root, tv_split)

        from torchvision.datasets import OxfordIIITPet  # lazy: only pets users pay for it

        try:
            self._tv = OxfordIIITPet(
                root=str(Path(root).expanduser()),
                split=tv_split,
                target_types=("category", "segmentation"),
                download=download,
            )
        except RuntimeError as exc:  # torchvision's own "Dataset not found" (e.g. after a failed download)
            raise DatasetNotFoundError(f"{exc}\n(root: {root})") from exc
        if download:
            _check_files(root, tv_split)

        self._settle(self._tv, root, split, image_size, superpixels, length, list(self._tv.classes), VAL_EVERY)
        logger.debug("OxfordPets(%s): %d of %d %s images", split, len(self), len(self._tv), tv_split)

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(image uint8 (S, S, 3), trimap uint8 (S, S) with values 1/2/3, label); `index` is checked."""
        image, (label, trimap) = self._tv[self._indices[index]]
        size = (self.image_size, self.image_size)
        rgb = resize_rgb(pil_to_rgb(image), size)  # torchvision already gives RGB; this is a safety net
        tri = np.asarray(trimap)
        if tri.ndim == 3:  # a trimap saved as RGB(A): the value is repeated in every channel
            tri = tri[..., 0]
        tri = Image.fromarray(tri.astype(np.uint8)).resize(size[::-1], Image.NEAREST)
        # np.array (not asarray): writable copies, which torch.from_numpy needs.
        return np.array(rgb, dtype=np.uint8), np.array(tri, dtype=np.uint8), int(label)

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray, int]:
        """(image uint8 (S, S, 3), parts uint8 (S, S): 1 pet / 0 bg / 255 border, label), without torch.

        Same contract as `SyntheticPets.render`, so viewers can treat both datasets alike.
        """
        image, trimap, label = self._load(self._check_index(index))
        return image, _PARTS_LUT[trimap], label

    def arrays(self, index: int) -> SampleArrays:
        image, trimap, label = self._load(index)
        return SampleArrays(image, label, _MASK_LUT[trimap], trimap, _PARTS_LUT[trimap])
