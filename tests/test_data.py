"""Data layer: synthetic pets, Oxford pets (on a tiny fake folder), transforms, superpixels.

Everything here is offline and small: the whole file runs in well under 30 s on 2 CPU cores.
"""
from __future__ import annotations

import dataclasses
import io
import struct
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader, default_collate

from crm_core.data import (
    DATASETS,
    DatasetNotFoundError,
    ImageError,
    OxfordPets,
    SuperpixelCache,
    SyntheticPets,
    build_dataset,
    load_image,
    random_hflip_batch,
    slic_superpixels,
    superpixel_mean,
    to_uint8_image,
)
from crm_core.data.superpixels import default_cache_root
from crm_core.data.synthetic import PATTERNS, head_pattern, render_scene, sample_scene, trimap_from_mask

KEYS = {"image", "label", "mask", "trimap", "parts", "index"}


def _check_sample(sample: dict, size: int, num_classes: int) -> None:
    assert KEYS <= set(sample)
    img = sample["image"]
    assert img.shape == (3, size, size) and img.dtype == torch.float32
    assert 0.0 <= float(img.min()) and float(img.max()) <= 1.0
    assert sample["label"].dtype == torch.int64 and sample["label"].ndim == 0
    assert 0 <= int(sample["label"]) < num_classes
    assert sample["index"].dtype == torch.int64 and sample["index"].ndim == 0
    assert sample["mask"].shape == (size, size) and sample["mask"].dtype == torch.int64
    assert sample["trimap"].shape == (size, size) and sample["trimap"].dtype == torch.uint8
    assert sample["parts"].shape == (size, size) and sample["parts"].dtype == torch.uint8
    assert set(sample["trimap"].unique().tolist()) <= {1, 2, 3}


# ----------------------------------------------------------------------------------------------
# Synthetic pets


def test_synthetic_deterministic_and_splits_disjoint():
    a = SyntheticPets("train", image_size=64, length=10)
    b = SyntheticPets("train", image_size=64, length=10)
    for i in (0, 3, 9):
        s1, s2, s3 = a[i], a[i], b[i]
        for k in s1:
            assert torch.equal(s1[k], s2[k]) and torch.equal(s1[k], s3[k]), k
    val, test = SyntheticPets("val", image_size=64), SyntheticPets("test", image_size=64)
    other_seed = SyntheticPets("train", image_size=64, seed=1)
    for i in range(5):
        img = a[i]["image"]
        assert not torch.equal(img, val[i]["image"])
        assert not torch.equal(img, test[i]["image"])
        assert not torch.equal(img, other_seed[i]["image"])
        assert not torch.equal(val[i]["image"], test[i]["image"])


def test_synthetic_default_lengths_and_validation():
    assert (len(SyntheticPets("train")), len(SyntheticPets("val")), len(SyntheticPets("test"))) == (2000, 200, 200)
    assert len(SyntheticPets("train", length=7)) == 7
    ds = SyntheticPets("val", num_classes=6)
    assert ds.class_names == list(PATTERNS[:6]) and ds.num_classes == 6
    assert ds.part_names == {1: "body", 2: "head"} and ds.name == "synthetic"
    for bad in (dict(split="holdout"), dict(num_classes=1), dict(num_classes=len(PATTERNS) + 1), dict(image_size=8)):
        with pytest.raises(ValueError):
            SyntheticPets(**bad)
    with pytest.raises(IndexError):
        ds[200]
    assert torch.equal(ds[-1]["image"], ds[199]["image"])


def test_synthetic_sample_format_and_collate():
    ds = SyntheticPets("val", image_size=64, num_classes=5)
    _check_sample(ds[0], 64, 5)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["label"].shape == (4,)
    assert batch["mask"].shape == (4, 64, 64) and batch["index"].tolist() == [0, 1, 2, 3]
    image, parts, label = ds.render(2)
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3) and parts.dtype == np.uint8
    assert torch.equal(ds[2]["image"], torch.from_numpy(image).permute(2, 0, 1).float() / 255)
    assert label == int(ds[2]["label"])


def test_synthetic_masks_trimap_and_part_sizes():
    from scipy import ndimage

    ds = SyntheticPets("train", image_size=112, length=80)
    head_fracs, body_fracs = [], []
    for i in range(len(ds)):
        s = ds[i]
        parts, mask, trimap = s["parts"].numpy(), s["mask"].numpy(), s["trimap"].numpy()
        fg = parts > 0
        assert set(np.unique(parts)) == {0, 1, 2}
        assert np.array_equal(mask, fg.astype(np.int64))
        # Border band = dilation xor erosion with a 3x3 square (reference via scipy); the image
        # edge is not an object boundary (edge padding), since bodies may leave the frame.
        padded = np.pad(fg, 1, mode="edge")
        dil = ndimage.binary_dilation(padded, structure=np.ones((3, 3)))[1:-1, 1:-1]
        ero = ndimage.binary_erosion(padded, structure=np.ones((3, 3)), border_value=1)[1:-1, 1:-1]
        band = dil & ~ero
        assert np.array_equal(trimap == 3, band)
        assert np.array_equal(trimap == 1, fg & ~band) and np.array_equal(trimap == 2, ~fg & ~band)
        head_fracs.append((parts == 2).mean())
        body_fracs.append((parts == 1).mean())
        # Animal is connected (head touches the body); its head is whole, away from the border
        # (the body may leave the frame).
        assert ndimage.label(fg)[1] == 1
        head = parts == 2
        assert not head[0].any() and not head[-1].any() and not head[:, 0].any() and not head[:, -1].any()
    head_fracs, body_fracs = np.array(head_fracs), np.array(body_fracs)
    assert head_fracs.min() > 0.045 and head_fracs.max() < 0.085
    assert body_fracs.min() > 0.01 and body_fracs.max() < 0.14  # a body may be cropped by the frame
    assert body_fracs.mean() > head_fracs.mean()  # the body is the larger part: what CAM expansion must find


def test_trimap_from_mask_width():
    fg = np.zeros((20, 20), bool)
    fg[5:15, 5:15] = True
    tri = trimap_from_mask(fg)
    assert (tri[10, 3:8] == [2, 3, 3, 1, 1]).all()  # 1 px outside + 1 px inside = 2 px band
    assert set(np.unique(trimap_from_mask(fg, radius=2)[10, 2:9])) == {1, 2, 3}


def test_synthetic_classes_balanced_and_all_present():
    for k in (2, 4, 8, len(PATTERNS)):
        labels = [int(SyntheticPets("val", image_size=64, num_classes=k).scene(i).label) for i in range(200)]
        counts = np.bincount(labels, minlength=k)
        assert (counts > 0).all() and counts.max() - counts.min() <= 1


@pytest.mark.parametrize("appearance", ["random", "informative", "camouflage"])
def test_only_the_head_depends_on_the_label(appearance):
    """Swapping a scene's label changes head pixels only, and always changes them."""
    for index in range(30):
        scene = sample_scene(0, "train", index, len(PATTERNS), appearance)
        image, parts = render_scene(scene, 96)
        for other in range(len(PATTERNS)):
            if other == scene.label:
                continue
            image2, parts2 = render_scene(dataclasses.replace(scene, label=other), 96)
            assert np.array_equal(parts, parts2)
            changed = (image != image2).any(axis=2)
            assert not changed[parts != 2].any()
            assert changed[parts == 2].mean() > 0.1
    # The scene's random draws do not depend on the number of classes (hence not on the label).
    a, b = sample_scene(3, "val", 17, 4, appearance), sample_scene(3, "val", 17, 9, appearance)
    assert np.array_equal(render_scene(dataclasses.replace(a, label=0), 64)[0],
                          render_scene(dataclasses.replace(b, label=0), 64)[0])


@pytest.mark.parametrize("size", [112, 64])
def test_head_pattern_identifies_the_class(size):
    """A template matcher on the head pixels recovers the label: the patterns are legible."""
    hits, n = 0, 100
    for index in range(n):
        scene = sample_scene(0, "test", index, len(PATTERNS))
        image, parts = render_scene(scene, size)
        head = parts == 2
        gray = image.astype(np.float64).mean(axis=2)[head]
        scores = []
        for name in PATTERNS:
            t = head_pattern(name, scene.head, size)[head]
            scores.append(abs(np.corrcoef(gray, t)[0, 1]) if t.std() > 0 else 0.0)
        hits += int(np.argmax(scores) == scene.label)
    assert hits / n >= 0.9


def test_body_statistics_do_not_depend_on_the_class():
    ds = SyntheticPets("train", image_size=64, num_classes=4, length=400)
    colours, areas, labels, distractor_fills = [], [], [], set()
    for i in range(len(ds)):
        image, parts, label = ds.render(i)
        colours.append(image[parts == 1].mean(axis=0) / 255)
        areas.append((parts == 1).mean())
        labels.append(label)
        distractor_fills |= {d.fill.kind for d in ds.scene(i).distractors}
    colours, areas, labels = np.array(colours), np.array(areas), np.array(labels)
    for k in range(4):
        assert np.abs(colours[labels == k].mean(axis=0) - colours.mean(axis=0)).max() < 0.08
        assert abs(areas[labels == k].mean() - areas.mean()) < 0.02
    assert distractor_fills <= {"plain", "gradient", "mottled", "blotched"}  # never a head pattern


def test_same_scene_at_two_sizes():
    big = SyntheticPets("val", image_size=128).render(5)[1] > 0
    small = SyntheticPets("val", image_size=64).render(5)[1] > 0
    down = big.reshape(64, 2, 64, 2).mean(axis=(1, 3)) >= 0.5
    assert (down & small).sum() / (down | small).sum() > 0.9


def _python_events(image_size: int, indices: range) -> int:
    """Python calls and C-function calls made while rendering ``indices`` (sys.setprofile)."""
    ds = SyntheticPets("train", image_size=image_size)
    ds.render(indices[0])  # lazy set-up outside the count
    events = 0

    def count(frame, event, arg) -> None:
        nonlocal events
        events += 1

    sys.setprofile(count)
    try:
        for i in indices:
            ds.render(i)
    finally:
        sys.setprofile(None)
    return events


def test_synthetic_generation_is_vectorised():
    """Rendering runs in numpy: the Python work per image does not grow with its pixels.

    Counted, not timed (speed is the benchmark's): a per-pixel Python loop at 224 px adds
    ~50k calls per image over 32 px; the vectorised renderer makes the same calls at any size.
    """
    small, large = _python_events(32, range(1, 11)), _python_events(224, range(1, 11))
    assert small > 0
    assert large < 1.2 * small


def test_synthetic_with_superpixels(tmp_path):
    cache = SuperpixelCache(root=tmp_path, n_segments=16)
    ds = SyntheticPets("val", image_size=64, length=4, superpixels=cache)
    s = ds[0]
    assert s["superpixels"].shape == (64, 64) and s["superpixels"].dtype == torch.int64
    assert torch.equal(ds[0]["superpixels"], s["superpixels"]) and cache.hits == 1
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["superpixels"].shape == (2, 64, 64)


# ----------------------------------------------------------------------------------------------
# Oxford pets on a fake folder with torchvision's layout

# The folder itself: the ``pets_root`` fixture (tests/conftest.py, make_pets_folder).


def test_pets_splits_and_format(pets_root):
    train, val = OxfordPets(pets_root, "train", image_size=48), OxfordPets(pets_root, "val", image_size=48)
    test = OxfordPets(pets_root, "test", image_size=48)
    assert (len(train), len(val), len(test)) == (13, 2, 6)  # 15 trainval: indices 0 and 10 held out
    assert train.class_names == ["Abyssinian", "Bengal", "Beagle"] and train.num_classes == 3
    assert train.name == "pets" and train.part_names == {1: "pet"}
    for ds in (train, val, test):
        for i in range(len(ds)):
            s = ds[i]
            _check_sample(s, 48, 3)
            tri, mask, parts = s["trimap"], s["mask"], s["parts"]
            assert torch.equal(mask == 1, tri == 1) and torch.equal(mask == 0, tri == 2)
            assert torch.equal(mask == 255, tri == 3)
            assert torch.equal(parts.long(), mask)
            assert (tri == 1).any() and (tri == 3).any()
    # val = every 10th trainval image, labels follow the annotation file.
    assert [int(val[i]["label"]) for i in range(2)] == [0, 2]
    assert [int(test[i]["label"]) for i in range(6)] == [0, 0, 1, 1, 2, 2]
    batch = next(iter(DataLoader(train, batch_size=4)))
    assert batch["image"].shape == (4, 3, 48, 48)
    image, parts, label = train.render(0)
    assert image.shape == (48, 48, 3) and set(np.unique(parts)) <= {0, 1, 255}


def test_pets_registry_superpixels_and_length(pets_root, tmp_path):
    ds = build_dataset("pets", "train", image_size=40, data_root=pets_root, length=3,
                       superpixels=SuperpixelCache(tmp_path, n_segments=12))
    assert isinstance(ds, OxfordPets) and len(ds) == 3
    s = ds[1]
    assert s["superpixels"].shape == (40, 40)
    merged = default_collate([ds[0], SyntheticPets("val", image_size=40, num_classes=3, superpixels=ds.superpixels)[0]])
    assert merged["image"].shape == (2, 3, 40, 40)  # both datasets share one sample format


def test_pets_missing_fails_offline_without_trying_the_network(tmp_path, network_attempts):
    attempts = network_attempts
    with pytest.raises(DatasetNotFoundError) as info:
        build_dataset("pets", "test", image_size=64, data_root=tmp_path)
    assert attempts == []  # never a download attempt that could hang (torchvision's or a socket)
    msg = str(info.value)
    assert isinstance(info.value, RuntimeError)
    for needle in ("images.tar.gz", "annotations.tar.gz", "robots.ox.ac.uk/~vgg/data/pets",
                   str(tmp_path / "oxford-iiit-pet" / "images"), str(tmp_path / "oxford-iiit-pet" / "annotations"),
                   "--download"):
        assert needle in msg
    # Annotations present but the split list missing is reported too.
    (tmp_path / "oxford-iiit-pet" / "images").mkdir(parents=True)
    (tmp_path / "oxford-iiit-pet" / "annotations" / "trimaps").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="test.txt"):
        OxfordPets(tmp_path, "test")


def test_registry():
    assert set(DATASETS) == {"synthetic", "pets", "voc", "voc_aug"}
    ds = build_dataset("synthetic", "val", image_size=48, num_classes=3, seed=2, length=5)
    assert isinstance(ds, SyntheticPets) and len(ds) == 5 and ds.num_classes == 3 and ds.seed == 2
    with pytest.raises(ValueError, match="pets.*synthetic.*voc_aug"):
        build_dataset("imagenet", "train", image_size=64)


# ----------------------------------------------------------------------------------------------
# Superpixels


def _image(seed: int = 0, size: int = 48) -> np.ndarray:
    return SyntheticPets("val", image_size=size).render(seed)[0]


def test_slic_superpixels_inputs_agree():
    img = _image()
    seg = slic_superpixels(img, n_segments=20)
    assert seg.dtype == np.int32 and seg.shape == img.shape[:2] and seg.min() == 0
    assert 5 <= len(np.unique(seg)) <= 60
    as_float = img.astype(np.float32) / 255
    as_tensor = torch.from_numpy(as_float).permute(2, 0, 1)
    assert np.array_equal(seg, slic_superpixels(as_float, n_segments=20))
    assert np.array_equal(seg, slic_superpixels(as_tensor, n_segments=20))


@settings(max_examples=25, deadline=None)
@given(h=st.integers(8, 40), w=st.integers(8, 40), n=st.integers(2, 40), seed=st.integers(0, 2**31 - 1),
       flat=st.booleans())
def test_slic_labels_properties(tmp_path_factory, h, w, n, seed, flat):
    """Any image, any segment count: labels cover every pixel with consecutive ids from 0, each
    segment is one connected piece, and the on-disk cache returns exactly what SLIC computes."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 90, np.uint8) if flat else (rng.random((h, w, 3)) * 255).astype(np.uint8)
    seg = slic_superpixels(img, n_segments=n)
    assert seg.shape == (h, w) and seg.dtype == np.int32
    ids = np.unique(seg)
    assert ids[0] == 0 and np.array_equal(ids, np.arange(len(ids)))
    for label in ids:
        assert ndimage.label(seg == label)[1] == 1, f"segment {label} is in pieces"
    cache = SuperpixelCache(root=tmp_path_factory.mktemp("slic"), n_segments=n)
    assert np.array_equal(cache.get(img), seg) and np.array_equal(cache.get(img), seg)


def test_superpixel_cache_hits_keys_and_corruption(tmp_path):
    img = _image(1)
    cache = SuperpixelCache(root=tmp_path, n_segments=24)
    first = cache.get(img)
    assert (cache.hits, cache.misses) == (0, 1)
    path = cache.path_for(img)
    assert path.is_file() and path.suffix == ".npy"
    assert not [p for p in path.parent.iterdir() if p.suffix == ".tmp"]  # temp files are renamed away
    again = SuperpixelCache(root=tmp_path, n_segments=24)  # a fresh process-like instance
    assert np.array_equal(again.get(img), first) and (again.hits, again.misses) == (1, 0)
    assert np.array_equal(again.get(torch.from_numpy(img).permute(2, 0, 1).float() / 255), first)

    other = SuperpixelCache(root=tmp_path, n_segments=25)
    assert other.key(img) != cache.key(img)
    assert SuperpixelCache(root=tmp_path, n_segments=24, compactness=5.0).key(img) != cache.key(img)
    assert SuperpixelCache(root=tmp_path, n_segments=24, sigma=0.0).key(img) != cache.key(img)
    assert cache.key(_image(2)) != cache.key(img)
    assert cache.key(img[:, :-1]) != cache.key(img)

    for garbage in (b"not a numpy file", path.read_bytes()[:60]):
        path.write_bytes(garbage)
        fresh = SuperpixelCache(root=tmp_path, n_segments=24)
        assert np.array_equal(fresh.get(img), first) and fresh.misses == 1
        assert np.array_equal(np.load(path), first)  # rewritten


def test_superpixel_cache_concurrent_writers_and_workers(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    img = _image(4)
    caches = [SuperpixelCache(root=tmp_path, n_segments=16) for _ in range(6)]
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda c: c.get(img), caches))
    assert all(np.array_equal(r, results[0]) for r in results)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [caches[0].path_for(img).name]

    ds = SyntheticPets("val", image_size=48, length=8, superpixels=SuperpixelCache(tmp_path / "w", n_segments=16))
    serial = list(DataLoader(ds, batch_size=4))
    parallel = list(DataLoader(ds, batch_size=4, num_workers=2))
    for a, b in zip(serial, parallel):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_superpixel_cache_default_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CRM_LAB_CACHE", str(tmp_path / "c"))
    assert default_cache_root() == tmp_path / "c" / "superpixels"
    assert SuperpixelCache().root == tmp_path / "c" / "superpixels"
    monkeypatch.delenv("CRM_LAB_CACHE")
    assert default_cache_root() == Path.home() / ".cache" / "crm_lab" / "superpixels"


def test_superpixel_cache_unwritable_root_is_not_fatal(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cache = SuperpixelCache(root=blocker / "sub", n_segments=10)  # cannot mkdir under a file
    assert cache.get(_image(3)).shape == (48, 48)


def _reference_mean(values: np.ndarray, segments: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    for b in range(values.shape[0]):
        for s in np.unique(segments[b]):
            sel = segments[b] == s
            out[b][sel] = values[b][sel].mean()
    return out


def test_superpixel_mean_matches_reference_and_is_differentiable():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(3, 17, 23, generator=g, dtype=torch.float64)
    segments = torch.randint(0, 9, (3, 17, 23), generator=g) * 3  # sparse ids, gaps included
    segments[1] = torch.randint(0, 2, (17, 23), generator=g)  # samples with different id ranges
    out = superpixel_mean(values, segments)
    assert out.shape == values.shape
    np.testing.assert_allclose(out.numpy(), _reference_mean(values.numpy(), segments.numpy()), rtol=1e-12)
    np.testing.assert_allclose(superpixel_mean(values[0], segments[0]).numpy(), out[0].numpy())
    small = values[:, :5, :6].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda v: superpixel_mean(v, segments[:, :5, :6]), (small,))
    with pytest.raises(ValueError):
        superpixel_mean(values, segments - 1)
    with pytest.raises(ValueError):
        superpixel_mean(values, segments[:, :, :-1])


@settings(max_examples=40, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 12), w=st.integers(1, 12), n=st.integers(1, 6),
       seed=st.integers(0, 2**31 - 1))
def test_superpixel_mean_properties(b, h, w, n, seed):
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(b, h, w, generator=g, dtype=torch.float64)
    segments = torch.randint(0, n, (b, h, w), generator=g)
    out = superpixel_mean(values, segments)
    torch.testing.assert_close(superpixel_mean(out, segments), out)  # idempotent
    for i in range(b):  # per-segment sums (hence means) are preserved
        for s in segments[i].unique():
            sel = segments[i] == s
            torch.testing.assert_close(out[i][sel].sum(), values[i][sel].sum())
            assert torch.allclose(out[i][sel], out[i][sel][0])


# ----------------------------------------------------------------------------------------------
# Transforms


def test_random_hflip_batch_alignment_and_determinism():
    ds = SyntheticPets("val", image_size=32, length=64)
    batch = default_collate([ds[i] for i in range(64)])
    batch["superpixels"] = torch.arange(32).expand(64, 32, 32).clone()
    # Encode the mask into the image so alignment can be checked after flipping.
    batch["image"][:, 0] = batch["mask"].float()
    original = {k: v.clone() for k, v in batch.items()}
    out = random_hflip_batch(batch, torch.Generator().manual_seed(0))
    again = random_hflip_batch(batch, torch.Generator().manual_seed(0))
    for k in batch:
        assert torch.equal(batch[k], original[k])  # input untouched
        assert torch.equal(out[k], again[k])  # same seed, same flips
    flips = out["hflip"]
    assert flips.dtype == torch.bool and 16 < int(flips.sum()) < 48
    assert torch.equal(out["image"][:, 0], out["mask"].float())
    for k in ("mask", "trimap", "parts", "superpixels"):
        assert torch.equal(out[k][flips], original[k][flips].flip(-1))
        assert torch.equal(out[k][~flips], original[k][~flips])
    assert torch.equal(out["label"], original["label"]) and torch.equal(out["index"], original["index"])
    assert torch.equal(out["image"][flips], original["image"][flips].flip(-1))


def test_to_uint8_image_roundtrip():
    arr = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    t = load_image(arr, None)
    assert t.shape == (3, 7, 9)
    assert np.array_equal(to_uint8_image(t), arr)
    assert to_uint8_image(torch.full((1, 2, 2), 2.0)).tolist() == [[[255] * 3] * 2] * 2


def _save(im: Image.Image, path: Path, **kw) -> Path:
    im.save(path, **kw)
    return path


def test_load_image_modes(tmp_path):
    rgba = Image.new("RGBA", (10, 6), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (0, 0, 5, 6))
    t = load_image(_save(rgba, tmp_path / "a.png"), None)
    assert t.shape == (3, 6, 10)
    assert torch.allclose(t[:, 0, 0], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(t[:, 0, 9], torch.ones(3))  # transparent -> white

    gray = load_image(_save(Image.new("L", (5, 5), 128), tmp_path / "g.png"), 8)
    assert gray.shape == (3, 8, 8) and torch.allclose(gray, torch.full_like(gray, 128 / 255))

    deep = np.array([[0, 32896, 65535]], dtype=np.uint16)
    deep_path = _save(Image.fromarray(deep), tmp_path / "d16.png")
    with Image.open(deep_path) as im:
        assert im.mode.startswith("I")
    t = load_image(deep_path, None)
    assert t.shape == (3, 1, 3)
    np.testing.assert_allclose(t[0, 0].numpy(), [0.0, 128 / 255, 1.0], atol=1 / 255)

    cmyk = load_image(_save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / "c.jpg"), None)
    assert cmyk[0].mean() > 0.8 and cmyk[1].mean() < 0.2 and cmyk[2].mean() < 0.2

    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 255, 0] + [0] * 765)
    assert torch.allclose(load_image(pal, None)[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]))

    one = load_image(_save(Image.new("RGB", (1, 1), (255, 0, 0)), tmp_path / "one.png"), 16)
    assert one.shape == (3, 16, 16) and torch.allclose(one[0], torch.ones(16, 16))

    buf = io.BytesIO()
    Image.new("RGB", (3, 2), (0, 255, 0)).save(buf, "PNG")
    assert load_image(buf.getvalue(), None).shape == (3, 2, 3)
    assert load_image(np.ones((4, 5), np.float32), 6).shape == (3, 6, 6)
    assert torch.allclose(load_image(np.full((2, 2, 3), 65535, np.uint16), None), torch.ones(3, 2, 2))


def test_load_image_exif_orientation(tmp_path):
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = _save(im, tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    t = load_image(path, None)
    assert t.shape == (3, 40, 20)  # portrait once rotated
    assert t[0, :15].mean() > 0.8 and t[2, -15:].mean() > 0.8  # red on top, blue below


def test_load_image_errors(tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("definitely not an image")
    with pytest.raises(ImageError, match="not an image"):
        load_image(text, 32)

    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    full = _save(noisy, tmp_path / "full.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(cut, 32)

    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.jpg", 32)
    with pytest.raises(ImageError, match="megapixels"):
        load_image(full, 32, max_pixels=1000)
    with pytest.raises(ImageError):
        load_image(np.zeros((4, 4, 2), np.uint8), 8)
    with pytest.raises(ImageError):
        load_image(12345, 8)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size (the pixel data is a stub): a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [8000, 10000, 20000])  # 64 MP ours, 100 MP PIL warns, 400 MP PIL raises
def test_load_image_refuses_huge_images_without_pil_warnings(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(side, side))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match="too large|megapixels"):
            load_image(path, 64)
        with pytest.raises(ImageError):
            load_image(path.read_bytes(), 64)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 40), w=st.integers(1, 40), channels=st.sampled_from([0, 1, 3, 4]),
    dtype=st.sampled_from(["uint8", "uint16", "float32", "bool"]), size=st.integers(1, 24),
    seed=st.integers(0, 2**31 - 1), encode=st.booleans(),
)
def test_load_image_always_returns_unit_range_rgb(h, w, channels, dtype, size, seed, encode):
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 0 else (h, w, channels)
    if dtype == "float32":
        arr = rng.uniform(-0.5, 1.5, shape).astype(np.float32)
    elif dtype == "bool":
        arr = rng.random(shape) > 0.5
    else:
        arr = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    source = arr
    if encode and dtype == "uint8" and channels != 1:
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        source = buf.getvalue()
    t = load_image(source, size)
    assert t.shape == (3, size, size) and t.dtype == torch.float32
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0


def test_prefill_superpixels_in_a_pool_gives_the_labels_a_lookup_computes(tmp_path):
    from crm_core.data.superpixels import prefill_superpixels

    cache = SuperpixelCache(root=tmp_path / "pool", n_segments=16)
    ds = SyntheticPets("train", image_size=48, length=12, superpixels=cache)
    prefill_superpixels(ds, processes=2, progress=False)
    assert len(list((tmp_path / "pool").rglob("*.npy"))) == 12
    reference = SuperpixelCache(root=tmp_path / "direct", n_segments=16)
    for i in range(12):
        image = ds.render(i)[0]
        assert np.array_equal(cache.get(image), reference.get(image))
    assert cache.hits == 12 and cache.misses == 0  # every lookup after the prefill is a hit
