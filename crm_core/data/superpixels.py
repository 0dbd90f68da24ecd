"""SLIC superpixels: computation, an on-disk cache and superpixel pooling (drawn by `crm_core.viz`).

The CRM alignment loss (docs/method.md, "Training objective") averages the CAM inside each SLIC superpixel. SLIC
costs tens of milliseconds per image, far more than rendering a synthetic image, so results are
cached on disk keyed by the exact pixels and the SLIC parameters. DataLoader workers share the
cache concurrently, hence atomic writes and tolerance of unreadable files.

skimage is imported lazily inside the functions that need it so importing this module stays cheap.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Union

import numpy as np
import torch
from tqdm import tqdm

from crm_core.atomic import atomic_open
from crm_core.data.transforms import to_uint8_image

__all__ = [
    "DEFAULT_SIGMA",
    "SuperpixelCache",
    "default_cache_root",
    "slic_superpixels",
    "superpixel_mean",
]

logger = logging.getLogger(__name__)

ImageLike = Union[np.ndarray, torch.Tensor]

DEFAULT_SIGMA = 1.0  # SLIC pre-smoothing, see slic_superpixels

# Bumped whenever the way labels are computed changes, so stale cache entries are never reused.
_CACHE_VERSION = "slic-v1"


def default_cache_root() -> Path:
    """`$CRM_LAB_CACHE/superpixels`, or `~/.cache/crm_lab/superpixels` when the variable is unset.

    `CRM_LAB_CACHE` names the lab's whole cache folder (other caches may live beside ours), so
    the superpixels get their own sub-folder.
    """
    base = os.environ.get("CRM_LAB_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "crm_lab"
    return root / "superpixels"


def _slic_uint8(image: np.ndarray, n_segments: int, compactness: float, sigma: float) -> np.ndarray:
    """SLIC on a canonical uint8 (H, W, 3) image -> int32 (H, W) labels starting at 0."""
    from skimage.segmentation import slic  # lazy: skimage is slow to import

    labels = slic(
        image.astype(np.float32) / 255.0,
        n_segments=int(n_segments),
        compactness=float(compactness),
        sigma=float(sigma),
        start_label=0,
        channel_axis=-1,
    )
    return labels.astype(np.int32, copy=False)


def slic_superpixels(
    image: ImageLike, n_segments: int = 64, compactness: float = 10.0, *, sigma: float = DEFAULT_SIGMA
) -> np.ndarray:
    """SLIC superpixel labels of one image.

    Args:
        image: uint8 (H, W, 3), float (H, W, 3) in [0, 1], or a torch (3, H, W) float tensor.
        n_segments: approximate number of superpixels.
        compactness: SLIC's colour/space trade-off (higher = more square superpixels).
        sigma: Gaussian pre-smoothing in pixels. Without it, pixel noise fragments SLIC's
            clusters and its connectivity step merges the fragments into a handful of giant
            segments (3 instead of ~20 on a noisy 48 px image); 1 px restores the requested count.

    Returns:
        int32 (H, W) labels, 0-based and contiguous enough to index a per-segment table.
    """
    return _slic_uint8(to_uint8_image(image), n_segments, compactness, sigma)


@dataclass
class SuperpixelCache:
    """SLIC with its results memoised as `.npy` files.

    The key is sha1(shape + uint8 pixel bytes + SLIC parameters), so an image is never given
    another image's labels and changing `n_segments`/`compactness`/`sigma` never reuses old entries.
    Writes go to a temporary file that is `os.replace`d into place, so a concurrent reader sees
    either nothing or a whole file; a file that still fails to load is recomputed and rewritten.
    A cache folder that cannot be written only costs speed, never correctness.

    `hits` and `misses` count this process's lookups (each DataLoader worker has its own).
    """

    root: Union[str, Path, None] = None  # None -> default_cache_root(), read at construction
    n_segments: int = 64  # SLIC's approximate number of superpixels
    compactness: float = 10.0  # SLIC's colour/space trade-off
    sigma: float = DEFAULT_SIGMA  # SLIC's Gaussian pre-smoothing, pixels
    hits: int = field(default=0, compare=False)
    misses: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser() if self.root is not None else default_cache_root()
        if int(self.n_segments) < 1:
            raise ValueError(f"n_segments must be >= 1, got {self.n_segments}")
        if float(self.compactness) <= 0:
            raise ValueError(f"compactness must be > 0, got {self.compactness}")
        if float(self.sigma) < 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")

    def key(self, image: ImageLike) -> str:
        """Cache key of `image` under this cache's SLIC parameters."""
        return self._key(to_uint8_image(image))

    def _key(self, canonical: np.ndarray) -> str:
        h = hashlib.sha1()
        n, c, s = int(self.n_segments), float(self.compactness), float(self.sigma)
        h.update(f"{_CACHE_VERSION}|n={n}|c={c!r}|s={s!r}|".encode())
        h.update(str(canonical.shape).encode())
        h.update(canonical.tobytes())
        return h.hexdigest()

    def path_for(self, image: ImageLike) -> Path:
        """Where the labels of `image` are (or would be) stored."""
        return self._path(self.key(image))

    def _path(self, key: str) -> Path:
        # Two-character fan-out keeps directories small for datasets of many thousand images.
        return Path(self.root) / key[:2] / f"{key}.npy"

    def get(self, image: ImageLike) -> np.ndarray:
        """int32 (H, W) SLIC labels of `image`, from disk when cached, computed (and stored) otherwise."""
        canonical = to_uint8_image(image)
        path = self._path(self._key(canonical))
        labels = self._read(path, canonical.shape[:2])
        if labels is not None:
            self.hits += 1
            return labels
        self.misses += 1
        labels = _slic_uint8(canonical, self.n_segments, self.compactness, self.sigma)
        self._write(path, labels)
        return labels

    @staticmethod
    def _read(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
        """Load a cached entry; None if absent or unusable (it is then recomputed)."""
        try:
            labels = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as exc:  # truncated / garbage / unreadable file
            logger.warning("superpixel cache entry %s is unreadable (%s); recomputing", path, exc)
            return None
        if labels.shape != tuple(shape) or not np.issubdtype(labels.dtype, np.integer):
            logger.warning("superpixel cache entry %s has shape %s dtype %s; recomputing",
                           path, labels.shape, labels.dtype)
            return None
        return labels.astype(np.int32, copy=False)

    @staticmethod
    def _write(path: Path, labels: np.ndarray) -> None:
        """Atomically store `labels` at `path`; failures are logged, not raised."""
        try:
            with atomic_open(path, "wb", durable=False) as fh:  # a lost entry is just recomputed
                np.save(fh, labels, allow_pickle=False)
        except OSError as exc:
            logger.warning("could not write superpixel cache entry %s: %s", path, exc)


def _touch(dataset: Any, index: int) -> None:
    dataset[index]  # computes and caches the sample's superpixels as a side effect


def prefill_superpixels(dataset: Any, processes: int | None = None, indices: Iterable[int] | None = None,
                        progress: bool = True) -> None:
    """Fill ``dataset.superpixels`` (a :class:`SuperpixelCache`) for every sample in a process pool.

    SLIC runs on one core per call; on a multi-core machine -- and on a GPU machine, where SLIC is
    the bottleneck of the first epoch and of pseudo masks -- the cache is filled by all cores
    first. The labels are the ones a lookup would compute (same key, same SLIC), so results do
    not change; samples already cached cost a file read. ``processes`` defaults to the CPU count.
    """
    if getattr(dataset, "superpixels", None) is None:
        return
    indices = list(range(len(dataset)) if indices is None else indices)
    processes = min(processes or os.cpu_count() or 1, len(indices))
    # A daemonic process (the dashboard's bootstrap trains in one) may not start a pool.
    serial = processes <= 1 or not sys.platform.startswith("linux") or multiprocessing.current_process().daemon
    if serial:
        for index in tqdm(indices, desc="superpixels", unit="image", disable=not progress, leave=False):
            _touch(dataset, index)
        return
    # fork: the dataset object need not be picklable; workers only render images and run SLIC.
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        jobs = pool.imap_unordered(functools.partial(_touch, dataset), indices, chunksize=16)
        for _ in tqdm(jobs, total=len(indices), desc="superpixels", unit="image", disable=not progress, leave=False):
            pass


def superpixel_mean(values: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
    """Replace every pixel of `values` by the mean of `values` over its superpixel.

    This is the superpixel pooling of the CRM alignment loss. Each sample's segment ids are
    offset by `b * n` (n = largest id + 1) so one `index_add_` over the flattened batch pools all
    samples at once; it is differentiable with respect to `values`.

    Args:
        values: float (B, H, W) (or (H, W)).
        segments: integer (B, H, W) (or (H, W)) non-negative superpixel ids, per sample.

    Returns:
        Tensor shaped like `values`.
    """
    if values.shape != segments.shape:
        raise ValueError(f"values {tuple(values.shape)} and segments {tuple(segments.shape)} differ in shape")
    if segments.is_floating_point() or segments.dtype == torch.bool:
        raise TypeError(f"segments must be an integer tensor, got {segments.dtype}")
    squeeze = values.ndim == 2
    if squeeze:
        values, segments = values.unsqueeze(0), segments.unsqueeze(0)
    if values.ndim != 3:
        raise ValueError(f"expected (B, H, W) tensors, got {tuple(values.shape)}")
    if values.numel() == 0:
        return values.squeeze(0) if squeeze else values

    b = values.shape[0]
    seg = segments.to(device=values.device, dtype=torch.long)
    if int(seg.min()) < 0:
        raise ValueError("segments must be non-negative")
    n = int(seg.max()) + 1
    offsets = torch.arange(b, device=seg.device).view(b, 1, 1) * n  # (B,1,1)
    ids = (seg + offsets).reshape(-1)  # (B*H*W,) ids unique across the batch
    flat = values.reshape(-1)  # (B*H*W,)
    sums = flat.new_zeros(b * n).index_add_(0, ids, flat)  # (B*n,)
    counts = torch.zeros(b * n, device=flat.device, dtype=flat.dtype).index_add_(
        0, ids, torch.ones_like(flat)
    )  # (B*n,)
    means = sums / counts.clamp_min(1)  # empty segments never get gathered; clamp avoids 0/0
    out = means[ids].view_as(values)  # (B,H,W)
    return out.squeeze(0) if squeeze else out
