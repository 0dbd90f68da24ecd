"""What keeps the results table honest: scale-free CAM normalisation (an untrained network's CAM is
its real map, not an empty one), the constant-mask floor, the degenerate-run flags, Holm's
correction of the headline family, and the runner's refusal to run from uncommitted code."""
from __future__ import annotations

import logging
import math

import pytest
import torch

from crm_core.experiments import results, results_report
from crm_core.cams.utils import normalize_cams
from crm_core.experiments.paired_stats import holm
from crm_core.experiments.results_summary import degenerate_runs, summarise
from crm_core.experiments.results_table import COMPARISONS, HEADLINE, ROW_BY_KEY


def test_normalisation_is_scale_free_and_keeps_zero_maps_zero() -> None:
    torch.manual_seed(0)
    maps = torch.rand(2, 3, 7, 7)
    maps[1, 2] = 0.0
    for scale in (1.0, 1e-8, 4e-14):
        out = normalize_cams(maps * scale)
        assert torch.allclose(out, normalize_cams(maps), rtol=1e-5, atol=0)
        assert torch.equal(out.amax(dim=(-2, -1))[0], torch.ones(3))
        assert torch.equal(out[1, 2], torch.zeros(7, 7))
    # the training losses' divisor floor: a tiny map is not blown up to 1 there, its gradient stays bounded
    tiny = (maps * 1e-12).requires_grad_()
    floored = normalize_cams(tiny, min_peak=1e-8)
    assert float(floored.detach().max()) == pytest.approx(float(maps.max()) * 1e-4, rel=1e-4)
    floored.sum().backward()
    assert torch.isfinite(tiny.grad).all() and float(tiny.grad.abs().max()) <= 1e8 * 1.0001


def test_an_untrained_efficientnet_cam_is_a_real_map_not_the_all_background_prediction() -> None:
    """Its raw Grad-CAM++ peaks far below any absolute epsilon; evaluated as the table does, the map
    still peaks at 1 and a threshold in the grid cuts a mask that is neither empty nor full."""
    from crm_core.cams import DEFAULT_CAM_METHOD, create_cam, upsample_normalised
    from crm_core.models.classifier import ModelConfig
    from crm_core.models.registry import create_model

    torch.manual_seed(0)
    model = create_model(ModelConfig(variant="resnet", arch="efficientnet_b0", num_classes=4, output_stride=16,
                                     weights="none"), load_pretrained=False).eval()
    images = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        raw = create_cam(DEFAULT_CAM_METHOD, model)(images, [0, 1]).cams
    assert 0 < float(raw.amax()) < 1e-6  # the regime an absolute epsilon flattened
    cams = upsample_normalised(raw, (112, 112))
    assert torch.allclose(cams.amax(dim=(-2, -1)), torch.ones(2))
    share = (cams >= 0.5).float().mean(dim=(-2, -1))
    assert ((share > 0.01) & (share < 0.99)).all(), share
    assert len(torch.unique(cams[0])) > 100


def test_the_constant_floor_is_the_better_constant_mask_scored_from_ground_truth() -> None:
    from crm_core.experiments.baselines import score_constant_masks
    from crm_core.data import build_dataset

    config = dict(name="synthetic", image_size=48, data_root=None, num_classes=3, seed=1, appearance="informative")
    val, test = build_dataset(split="val", **config), build_dataset(split="test", **config)
    scores = score_constant_masks(val=val, test=test, val_limit=6, test_limit=8)
    # independently: all-background has object IoU 0 and background IoU = background share of the pixels
    masks = torch.stack([test[i]["mask"] for i in range(8)])
    valid = masks != 255
    background_share = float(((masks == 0) & valid).sum()) / float(valid.sum())
    assert scores["prediction"] == "all background"
    assert scores["miou"] == pytest.approx(background_share / 2)
    assert scores["fg_iou"] == 0 and scores["bg_fpr"] == 0 and scores["threshold"] is None


def test_holm_matches_the_step_down_definition() -> None:
    # hand-computed: sorted 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert math.isnan(holm([0.01, float("nan")])[1]) and holm([0.01, float("nan")])[0] == pytest.approx(0.02)


def test_headline_family_is_declared_small_and_decided_on_the_adjusted_p() -> None:
    # few: the claims on one object (8) and whether CRM's effect holds with several (one per appearance)
    assert 1 <= len(HEADLINE) <= 10 and all((row, base) in COMPARISONS for row, base, _ in HEADLINE)
    row, base, metric = HEADLINE[0]
    # 5 seeds, every headline difference consistent: raw p passes, then Holm over the family decides
    jobs = []
    for seed in range(5):
        for key, _, _ in HEADLINE:
            jobs.append({"row": key, "seed": seed, "miou": 0.70 + 0.001 * seed ** 2, "body": 0.6})
        for _, key, _ in HEADLINE:
            jobs.append({"row": key, "seed": seed, "miou": 0.68 + 0.0012 * seed ** 2, "body": 0.6})
    summary = summarise(jobs)
    family = summary["headline"]
    entry = next(e for e in family if (e["row"], e["baseline"], e["metric"]) == (row, base, metric))
    assert entry["p_holm"] == pytest.approx(min(1.0, len(family) * entry["p"]), rel=1e-9) or entry["p_holm"] >= entry["p"]
    assert entry["effect"] == (entry["p_holm"] < 0.05)
    exploratory = [m for c in summary["comparisons"] for m in c["metrics"].values() if m["family"] == "exploratory"]
    assert all("p_holm" not in m for m in exploratory)
    assert "Holm" in results_report.comparison_cell(
        next(c for c in summary["comparisons"] if (c["row"], c["baseline"]) == (row, base))["metrics"][metric])


def test_degenerate_runs_are_flagged_and_constant_rows_by_design_are_not() -> None:
    jobs = [
        {"row": "informative_efficientnet_b0_floor", "seed": 0, "miou": 0.43, "head": 0.0, "body": 0.0, "bg_fpr": 0.0},
        {"row": "informative_resnet_floor", "seed": 0, "miou": 0.55, "head": 0.6, "body": 0.3, "bg_fpr": 0.1,
         "cam_peak_raw": 3e-14},
        {"row": "informative_resnet", "seed": 0, "miou": 0.6, "head": 0.9, "body": 0.2, "bg_fpr": 0.05,
         "cam_peak_raw": 2.5},
        {"row": "informative_resnet_drs", "seed": 1, "miou": 0.1, "head": 1.0, "body": 1.0, "bg_fpr": 1.0},
        {"row": "informative_stage2_constant", "seed": 0, "miou": 0.43, "head": 0.0, "body": 0.0, "bg_fpr": 0.0},
    ]
    flagged = {(f["row"], f["seed"]): f["reasons"] for f in degenerate_runs(jobs)}
    assert set(flagged) == {("informative_efficientnet_b0_floor", 0), ("informative_resnet_floor", 0),
                            ("informative_resnet_drs", 1)}
    assert "no object pixel" in flagged[("informative_efficientnet_b0_floor", 0)][0]
    assert "raw CAM peak" in flagged[("informative_resnet_floor", 0)][0]


def test_the_runner_refuses_uncommitted_code_unless_allowed(monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture, tmp_path) -> None:
    monkeypatch.setattr(results, "code_revision", lambda: "abc123+dirty:0123456789ab")
    ran = []
    monkeypatch.setattr(results, "run", lambda *a, **k: ran.append(1) or [])
    common = ["--rows", "informative_resnet", "--json", str(tmp_path / "r.json"), "--out", str(tmp_path / "r.md")]
    with caplog.at_level(logging.ERROR):
        assert results.cli(common) == 2
    assert "--allow-dirty" in caplog.text and not ran
    assert results.cli([*common, "--allow-dirty"]) == 0 and ran


def test_a_job_records_its_thread_count_in_the_command_that_reruns_it() -> None:
    command = results.job_command("informative_resnet", 3, 200, 200, 100, "cpu", {}, None, threads=1)
    assert "--threads 1" in command and "--first-seed 3" in command
    assert ROW_BY_KEY["informative_resnet_alignonly"].train_fields(200, {})["l1_weight"] == 0.0
    assert ROW_BY_KEY["informative_resnet_alignonly"].train_fields(200, {})["crm_gate"] is False
    assert ROW_BY_KEY["camouflage_resnet_crm_noalign"].train_fields(200, {})["align_weight"] == 0.0
