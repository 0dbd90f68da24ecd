"""Tests of crm_core.viz (the engine's drawing: jet colours, CAM overlays, outlines, boundaries)
and of the one image conversion every picture goes through (crm_core.data.to_uint8_image)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crm_core.data import to_uint8_image
from crm_core.data.transforms import image_to_tensor
from crm_core.evaluate import sample_panel
from crm_core.viz import boundaries_overlay, cam_overlay, jet_colormap, mask_outline, side_by_side


def test_jet_colormap_endpoints() -> None:
    colors = jet_colormap(np.array([0.0, 0.5, 1.0]))
    assert np.allclose(colors, [[0, 0, 0.5], [0.5, 1, 0.5], [0.5, 0, 0]])
    assert jet_colormap(np.zeros((2, 3))).shape == (2, 3, 3)


def test_cam_overlay() -> None:
    image_uint8 = np.full((12, 16, 3), 100, dtype=np.uint8)
    cam = torch.zeros(3, 4)
    cam[0, 0] = 1.0
    out = cam_overlay(image_uint8, cam, alpha=0.5)
    assert out.dtype == np.uint8 and out.shape == (12, 16, 3)
    assert tuple(out[-1, -1]) == (50, 50, 50 + 64)  # cam 0 -> dark blue (0, 0, 127.5)
    image_float = torch.full((3, 12, 16), 100 / 255)
    assert np.array_equal(cam_overlay(image_float, cam, alpha=0.5), out)
    assert np.array_equal(cam_overlay(image_uint8, cam, alpha=0.0), image_uint8)


def test_cam_overlay_weighted_by_cam() -> None:
    image = np.full((4, 6, 3), 100, dtype=np.uint8)
    cam = np.zeros((4, 6))
    cam[:, 3:] = 1.0
    out = cam_overlay(image, cam, alpha=0.7, weight_by_cam=True)
    assert np.array_equal(out[:, :3], image[:, :3])  # CAM 0: the image as is
    assert np.array_equal(out[:, 3:], np.round(0.3 * 100 + 0.7 * np.array([127.5, 0, 0])).astype(np.uint8)[None, None]
                          .repeat(4, 0).repeat(3, 1))  # CAM 1: alpha of jet's dark red


def test_mask_outline() -> None:
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    mask = np.zeros((10, 10), dtype=bool)
    mask[2:8, 3:9] = True
    out = mask_outline(image, mask, color=(255, 0, 0), thickness=1)
    drawn = out[..., 0] == 255
    ring = mask.copy()
    ring[3:7, 4:8] = False
    assert np.array_equal(drawn, ring)
    assert not image.any()  # input untouched
    thick = mask_outline(image, mask, thickness=2)[..., 1] == 255
    assert thick.sum() > drawn.sum() and not thick[4:6, 5:7].any()
    # Edges cut by the image frame are not outlined.
    full = mask_outline(image, np.ones((10, 10)), thickness=1)
    assert not full.any()
    with pytest.raises(ValueError):
        mask_outline(image, np.ones((5, 5)))


def test_boundaries_overlay() -> None:
    img = np.full((20, 20, 3), 10, np.uint8)
    seg = np.zeros((20, 20), np.int64)
    seg[:, 10:] = 1
    out = boundaries_overlay(img, torch.from_numpy(seg))
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert (out[:, 9:11] == [255, 255, 0]).all() and (out[:, :8] == 10).all() and (img == 10).all()


def test_side_by_side_and_evaluation_panel() -> None:
    a, b = np.zeros((4, 3, 3), np.uint8), np.ones((4, 5, 3), np.uint8)
    row = side_by_side([a, b], gap=2)
    assert row.shape == (4, 10, 3) and (row[:, 3:5] == 255).all() and (row[:, 5:] == 1).all()
    image = torch.rand(3, 8, 8)
    mask = torch.zeros(8, 8, dtype=torch.int64)
    mask[2:6, 2:6] = 1
    panel = sample_panel(image, torch.rand(2, 2), mask, None)  # image | CAM | outline
    assert panel.shape == (8, 3 * 8 + 2 * 4, 3) and np.array_equal(panel[:, :8], to_uint8_image(image))
    assert panel.shape[1] + 8 + 4 == sample_panel(image, torch.rand(2, 2), mask, torch.rand(3, 4, 4)).shape[1]


def test_to_uint8_image_takes_every_layout_and_inverts_image_to_tensor() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    tensor = image_to_tensor(rgb)  # (3, H, W) float32 in [0, 1]
    assert np.array_equal(to_uint8_image(tensor), rgb)  # k / 255 maps back to k
    assert np.array_equal(to_uint8_image(rgb), rgb) and to_uint8_image(rgb).flags.c_contiguous
    assert np.array_equal(to_uint8_image(tensor.numpy().transpose(1, 2, 0)), rgb)  # float (H, W, 3)
    assert np.array_equal(to_uint8_image(tensor.double().numpy()), rgb)  # float (3, H, W) array
    assert np.array_equal(to_uint8_image(torch.from_numpy(rgb).permute(2, 0, 1)), rgb)  # uint8 tensor kept
    grey = to_uint8_image(torch.full((5, 7), 0.5))
    assert grey.shape == (5, 7, 3) and (grey == 128).all()
    assert (to_uint8_image(np.full((2, 2, 1), -1.0)) == 0).all() and (to_uint8_image(torch.full((1, 2, 2), 2.0)) == 255).all()
    for bad in (np.zeros((4, 4, 4)), np.zeros((4, 4, 3), bool), torch.zeros(4, 4, 3), np.zeros(4)):
        with pytest.raises(ValueError):
            to_uint8_image(bad)
