"""Mask metrics (crm_core.metrics) against a plain-Python reference, with hypothesis-drawn masks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from crm_core.metrics import IGNORE, ThresholdCurve, binary_counts, ious_from_counts, mask_iou


def _reference_ious(preds: list[np.ndarray], targets: list[np.ndarray]) -> dict[str, float]:
    """IoU by pixel sets, counts pooled over the images; pixels labelled 255 are skipped."""
    inter_fg = union_fg = inter_bg = union_bg = 0
    for pred, target in zip(preds, targets):
        for p, t in zip(pred.ravel().tolist(), target.ravel().tolist()):
            if t == IGNORE:
                continue
            inter_fg += p and t == 1
            union_fg += p or t == 1
            inter_bg += (not p) and t == 0
            union_bg += (not p) or t == 0
    fg = inter_fg / union_fg if union_fg else math.nan
    bg = inter_bg / union_bg if union_bg else math.nan
    return {"fg_iou": fg, "bg_iou": bg}


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


masks = st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.integers(0, 2**31 - 1))


def _draw(shape: tuple[int, int, int, int], ignore_share: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    b, h, w, seed = shape
    rng = np.random.default_rng(seed)
    cams = torch.from_numpy(rng.random((b, h, w)).astype(np.float32))
    target = (rng.random((b, h, w)) < rng.random()).astype(np.int64)
    target[rng.random((b, h, w)) < ignore_share] = IGNORE
    return cams, torch.from_numpy(target)


@settings(max_examples=60, deadline=None)
@given(shape=masks)
def test_threshold_curve_equals_reference_at_every_threshold(shape):
    cams, target = _draw(shape)
    curve = ThresholdCurve(thresholds=(0.0, 0.25, 0.5, 0.75, 0.99))
    curve.add(cams, target)
    for i, t in enumerate(curve.thresholds):
        preds = [(c >= t).numpy() for c in cams]
        expected = _reference_ious(preds, list(target.numpy()))
        got = curve.at(i)
        assert _same(got["fg_iou"], expected["fg_iou"]) and _same(got["bg_iou"], expected["bg_iou"]), t
        assert math.isnan(got["miou"]) or 0.0 <= got["miou"] <= 1.0


@settings(max_examples=60, deadline=None)
@given(shape=masks)
def test_ignored_pixels_never_count_and_counts_add_up(shape):
    cams, target = _draw(shape, ignore_share=0.4)
    pred = cams >= 0.5
    counts = binary_counts(pred, target)
    # Whatever the prediction says on ignored pixels, the counts do not move.
    flipped = torch.where(target == IGNORE, ~pred, pred)
    assert torch.equal(binary_counts(flipped, target), counts)
    assert int(counts.sum()) == int((target != IGNORE).sum())


@settings(max_examples=60, deadline=None)
@given(shape=masks)
def test_fg_and_bg_iou_swap_when_prediction_and_target_are_inverted(shape):
    cams, target = _draw(shape)
    pred = cams >= 0.5
    inverted = torch.where(target == IGNORE, target, 1 - target)
    a = ious_from_counts(binary_counts(pred, target).sum(0))
    b = ious_from_counts(binary_counts(~pred, inverted).sum(0))
    assert _same(a["fg_iou"], b["bg_iou"]) and _same(a["bg_iou"], b["fg_iou"])


@settings(max_examples=40, deadline=None)
@given(shape=masks)
def test_perfect_prediction_scores_one(shape):
    _, target = _draw((1, *shape[1:]), ignore_share=0.0)
    result = mask_iou(target[0] == 1, target[0])
    present = [k for k, v in (("fg_iou", 1), ("bg_iou", 0)) if bool((target[0] == v).any())]
    assert all(result[k] == 1.0 for k in present)


def test_part_coverage_counts_each_part_alone() -> None:
    cams = torch.zeros(1, 4, 4)
    cams[0, :2] = 1.0  # the CAM lights the top half
    parts = torch.zeros(1, 4, 4, dtype=torch.int64)
    parts[0, 0, :] = 2  # head: top row (fully covered)
    parts[0, 2:, :] = 1  # body: bottom half (not covered)
    masks = (parts > 0).long()
    curve = ThresholdCurve(thresholds=(0.5,), part_ids=(1, 2))
    curve.add(cams, masks, parts)
    assert curve.coverage_at(0, {1: "body", 2: "head"}) == {"body": 0.0, "head": 1.0}
