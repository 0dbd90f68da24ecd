"""Maps from no model (crm_core.experiments.baselines): each checked against what it must be by construction."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crm_core.experiments.baselines import ColourClassifier, baseline_maps, intensity_map, pooled_mask_map, score_baseline
from crm_core.data.synthetic import SyntheticPets
from crm_core.metrics import mask_iou


def test_intensity_is_the_max_normalised_luma() -> None:
    images = torch.rand(2, 3, 8, 8)
    expected = 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    expected = expected / expected.amax(dim=(1, 2), keepdim=True)
    assert torch.allclose(intensity_map(images), expected, atol=1e-6)


def test_a_perfect_mask_at_full_resolution_scores_one_and_pooling_costs_detail() -> None:
    mask = torch.zeros(1, 32, 32, dtype=torch.long)
    mask[0, 5:19, 9:30] = 1
    full = pooled_mask_map(mask, 32)
    assert mask_iou(full[0] >= 0.5, mask[0])["miou"] == 1.0
    coarse = pooled_mask_map(mask, 4)  # a 4x4 grid cannot draw the edges at rows 5 and 19
    assert coarse.shape == mask.shape and 0.6 < mask_iou(coarse[0] >= 0.5, mask[0])["miou"] < 1.0


def test_colour_classifier_learns_the_object_colour_from_train_masks() -> None:
    images = torch.zeros(4, 3, 16, 16)
    masks = torch.zeros(4, 16, 16, dtype=torch.long)
    images[:, 2] = 0.8  # blue background
    for i in range(4):
        masks[i, 2 + i:9 + i, 3:12] = 1
        images[i, :, 2 + i:9 + i, 3:12] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]  # red object
    colour = ColourClassifier().fit(images, masks)
    p = colour.probability(images)
    assert (p[masks == 1] > 0.99).all() and (p[masks == 0] < 0.01).all()
    maps = baseline_maps("colour", {"image": images, "mask": masks}, 4, colour)
    assert mask_iou(maps[0] >= 0.5, masks[0])["miou"] == 1.0


def test_baselines_follow_the_results_protocol_on_synthetic_data() -> None:
    common = dict(image_size=48, num_classes=4, seed=0, appearance="informative")
    splits = {s: SyntheticPets(s, length=24, **common) for s in ("train", "val", "test")}
    scores = {name: score_baseline(name, train=splits["train"], val=splits["val"], test=splits["test"], cam_size=3,
                                   val_limit=24, test_limit=24, colour_images=24)
              for name in ("intensity", "colour", "perfect_head", "perfect_object")}
    for s in scores.values():
        assert 0.0 <= s["threshold"] <= 0.99 and 0.0 <= s["miou"] <= s["miou_best_on_test"] + 1e-9
    assert scores["perfect_head"]["head"] > 0.8 and scores["perfect_head"]["body"] < 0.3
    assert scores["perfect_object"]["miou"] == max(s["miou"] for s in scores.values())
    # PxAP: the object's own mask (pooled to the CAM grid) ranks pixels best; brightness is a cue, not nothing
    assert scores["perfect_object"]["pxap"] == max(s["pxap"] for s in scores.values())
    share = float(sum((splits["test"][i]["mask"] == 1).sum() for i in range(24))) / (24 * 48 * 48)
    assert scores["intensity"]["pxap"] > share  # above the PxAP of a map that says nothing
    with pytest.raises(ValueError, match="unknown baseline"):
        score_baseline("glow", train=splits["train"], val=splits["val"], test=splits["test"], cam_size=3)
    assert np.isfinite(scores["intensity"]["bg_fpr"])
