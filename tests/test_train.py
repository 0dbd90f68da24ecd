"""Training loop, CLIs, resume, divergence and data-parallel training."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from conftest import tiny_config, torchrun
from crm_core import train as train_mod
from crm_core import train_loop
from crm_core.checkpoints import load_checkpoint
from crm_core.thresholds import THRESHOLDS
from crm_core.models import to_tanh_range
from crm_core.runs import METRIC_COLUMNS, RunDir



def test_train_cli_writes_checkpoint_run_and_every_choice(tmp_path: Path) -> None:
    args = ["--model", "resnet_drs", "--dataset", "synthetic", "--epochs", "2", "--steps", "4", "--name", "cli",
            "--arch", "resnet18", "--image-size", "64", "--batch-size", "4", "--num-classes", "3", "--train-size", "16",
            "--cls-lr", "5e-4", "--rec-lr", "1e-3", "--l1-weight", "2", "--vgg-weight", "0.5", "--align-weight", "0.25",
            "--delta", "learnable", "--freeze", "none", "--weights", "none", "--perceptual", "vgg19",
            "--perceptual-weights", "random", "--perceptual-size", "64", "--seed", "3", "--workers", "0",
            "--val-limit", "4", "--n-segments", "16", "--align-warmup", "0", "--checkpoint-dir", str(tmp_path / "ck"), "--runs-dir", str(tmp_path / "runs")]
    assert train_mod.cli(args) == 0
    ckpt = load_checkpoint(tmp_path / "ck" / "cli.pt")
    assert ckpt.step == 4 and ckpt.model_config.drs and ckpt.model_config.drs_learnable
    assert ckpt.reconstructor is not None
    for key, value in {"cls_lr": 5e-4, "rec_lr": 1e-3, "l1_weight": 2.0, "vgg_weight": 0.5, "align_weight": 0.25,
                       "seed": 3, "delta": "learnable", "perceptual_weights": "random", "arch": "resnet18"}.items():
        assert ckpt.train_config[key] == value
    run = RunDir(tmp_path / "runs" / "cli")
    config = json.loads(run.config_path.read_text())
    assert config["train"]["l1_weight"] == 2.0 and config["train"]["extra"]["perceptual_weights_source"] == "random"
    with open(run.metrics_path) as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == METRIC_COLUMNS
        rows = list(reader)
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [int(r["step"]) for r in train_rows] == [1, 2, 3, 4]
    for row in train_rows:
        for column in ("loss_total", "loss_cls", "loss_l1", "loss_vgg", "loss_align", "accuracy", "wall_time", "lr"):
            assert row[column] != "", column
    assert any(r["split"] == "val" for r in rows)


def test_evaluate_and_postprocess_clis(trained_pair: dict, tmp_path: Path) -> None:
    from crm_core import evaluate, postprocess

    ckpt = trained_pair["resnet_drs"]
    runs = tmp_path / "runs"
    assert evaluate.cli(["--checkpoint", str(ckpt), "--split", "test", "--limit", "12", "--runs-dir", str(runs)]) == 0
    result = json.loads((runs / "resnet_drs" / "eval.json").read_text())
    assert result["num_images"] == 12 and 0 <= result["accuracy"] <= 1
    assert result["cam_miou_best"]["miou"] >= result["cam_miou_fixed"]["miou"] - 1e-12
    assert [p["threshold"] for p in result["curve"]] == list(THRESHOLDS.grid) and set(result["coverage_best"]) == {"body", "head"}
    assert result["recon_l1"] is not None and result["recon_l1_shuffled"] is not None and "cam_dependence" in result
    assert result["threshold_split"] == "val" and 0 <= result["cam_miou_val_threshold"]["bg_fpr"] <= 1
    assert set(result["coverage_val_threshold"]) == {"body", "head"}
    assert len(result["samples"]) == 5 and all(Path(p).is_file() for p in result["samples"])
    out = tmp_path / "pseudo"
    assert postprocess.cli(["--checkpoint", str(ckpt), "--out", str(out), "--split", "test", "--limit", "6",
                            "--superpixels", "--n-segments", "16"]) == 0
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 6
    from PIL import Image
    import numpy as np
    values = set(np.unique(np.array(Image.open(pngs[0]))).tolist())
    assert values <= {1, 2, 3}
    scores = json.loads((out / "scores.json").read_text())
    assert 0 <= scores["miou"] <= 1 and scores["refined"]


def test_postprocess_cuts_the_masks_at_the_cams_val_chosen_threshold(trained_pair: dict, tmp_path: Path) -> None:
    from crm_core import postprocess
    from crm_core.evaluate import select_threshold
    from crm_core.explain import CamModel, dataset_for
    from PIL import Image
    import numpy as np

    ckpt = trained_pair["resnet_drs"]
    model = CamModel.load(ckpt)
    expected = select_threshold(model, dataset_for(model, "val"), limit=6)  # the evaluation protocol's own choice
    out = tmp_path / "at_val"
    assert postprocess.cli(["--checkpoint", str(ckpt), "--out", str(out), "--split", "test", "--limit", "6",
                            "--at-val-threshold", "--val-limit", "6"]) == 0
    manifest = json.loads((out / postprocess.MANIFEST_NAME).read_text())
    assert manifest["val_threshold"] == manifest["high"] == expected
    assert manifest["low"] == pytest.approx(0.2 / 0.45 * expected)
    # the PNGs are those cut: the trimap of each image's CAM at the moved band
    batch = torch.utils.data.default_collate([dataset_for(model, "test")[i] for i in range(6)])
    cams = model.explain(batch["image"], batch["label"]).cams
    trimaps = postprocess.pseudo_trimap(cams, manifest["low"], manifest["high"]).numpy()
    for index, trimap in zip(batch["index"].tolist(), trimaps):
        assert np.array_equal(np.array(Image.open(out / f"{index:06d}.png")), trimap)
    fixed = tmp_path / "fixed"
    assert postprocess.cli(["--checkpoint", str(ckpt), "--out", str(fixed), "--split", "test", "--limit", "6"]) == 0
    assert json.loads((fixed / postprocess.MANIFEST_NAME).read_text())["val_threshold"] is None
    assert postprocess.cli(["--checkpoint", str(ckpt), "--out", str(out), "--at-val-threshold", "--val-limit", "0"]) == 2


def test_the_evaluation_protocol_chooses_on_val_reports_on_test_and_records_what_it_is_about(
        trained_pair: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from crm_core.evaluate import evaluate_checkpoint, evaluate_protocol, select_threshold
    from crm_core.explain import CamModel, dataset_for

    ckpt = trained_pair["resnet_drs"]
    model = CamModel.load(ckpt)
    chosen = select_threshold(model, dataset_for(model, "val"), limit=8)  # independently, on val only
    result = evaluate_checkpoint(ckpt, limit=10, val_limit=8, runs_dir=tmp_path / "runs")
    assert result["cam_miou_val_threshold"]["threshold"] == pytest.approx(chosen)
    assert (result["split"], result["threshold_split"], result["val_images"], result["num_images"]) == \
        ("test", "val", 8, 10)
    assert result["checkpoint_mtime_ns"] == ckpt.stat().st_mtime_ns
    assert json.loads((tmp_path / "runs" / "resnet_drs" / "eval.json").read_text()) == json.loads(json.dumps(result))
    none = evaluate_protocol(model, limit=4, threshold_split="none")  # nothing written without runs_dir
    assert "cam_miou_val_threshold" not in none and "threshold_split" not in none
    with caplog.at_level("WARNING", logger="crm_core.evaluate"):
        evaluate_protocol(model, split="val", limit=4, threshold_split="val", val_limit=4)
    assert "optimistic" in caplog.text


def test_every_train_config_field_is_one_cli_option_with_the_fields_default() -> None:
    """A field is written once: the trainer's options are read from TrainConfig's defaults, and a
    new field without its option (or an option without its field) fails here."""
    from dataclasses import fields

    from crm_core.train_config import TrainConfig, config_from_args, get_args_parser

    parser = get_args_parser()
    parsed = vars(parser.parse_args([]))
    names = {f.name for f in fields(TrainConfig)} - {"extra"}  # extra: what a run records, not an input
    assert set(parsed) == names
    default = TrainConfig()
    for name in names:
        value = getattr(default, name)
        assert parsed[name] == (list(value) if isinstance(value, tuple) else value), name
    assert config_from_args(parser.parse_args([])).to_dict() == default.to_dict()


def test_both_optimisers_zeroed_every_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same batch twice with parameters held fixed: step 2's gradients must equal step 1's.

    Without zeroing, gradients accumulate and step 2 sees twice step 1's.
    """
    cfg = tiny_config(tmp_path).resolve()
    train_set, _ = train_mod.build_datasets(cfg)
    modules = train_mod.build_modules(cfg, train_set.class_names)  # the trainer's own setup
    assert set(modules.optimizers) == {"cls", "rec"}
    seen: dict[str, list[torch.Tensor]] = {"cls": [], "rec": []}
    probes = {"cls": modules.classifier.fc.weight, "rec": modules.reconstructor.to_rgb[0].weight}
    for key, optimizer in modules.optimizers.items():
        monkeypatch.setattr(optimizer, "step", lambda key=key: seen[key].append(probes[key].grad.clone()))
    monkeypatch.setattr(train_loop, "random_hflip_batch", lambda batch, generator: batch)
    batch = next(iter(torch.utils.data.DataLoader(train_set, batch_size=4)))
    state = train_loop.TrainState()
    train_loop.train_one_epoch(modules.net, modules.optimizers, [batch, batch], cfg, state, modules.perceptual,
                              torch.device("cpu"), 10, lambda terms: None, None)
    assert state.step == 2
    for key in ("cls", "rec"):
        first, second = seen[key]
        assert first.abs().sum() > 0
        assert torch.allclose(first, second, rtol=1e-4, atol=1e-7), key


def test_reconstruction_loss_trains_the_classifier_through_the_cams(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, vgg_weight=0.0, align_weight=0.0).resolve()
    train_set, _ = train_mod.build_datasets(cfg)
    classifier = train_mod.create_model(cfg.model_config(train_set.class_names))
    reconstructor = train_mod.ReconstructNet(3, cfg.image_size, train_mod.cam_size_of(classifier, cfg.image_size))
    net = train_mod.CRMNet(classifier, reconstructor).train()
    images = next(iter(torch.utils.data.DataLoader(train_set, batch_size=4)))["image"]
    out = net(images)
    (out["recon"] - to_tanh_range(images)).abs().mean().backward()
    assert classifier.layer4[0][0].conv1.weight.grad.abs().sum() > 0
    assert classifier.fc.weight.grad.abs().sum() > 0  # the closed-form CAM depends on the head


@pytest.mark.slow
def test_resume_after_interruption_matches_uninterrupted_run(tmp_path: Path, no_progress: None) -> None:
    full = load_checkpoint(train_mod.main(tiny_config(tmp_path / "a", steps=5, ckpt_every=1, epochs=2, train_size=12)))
    part_cfg = tiny_config(tmp_path / "b", steps=3, ckpt_every=1, epochs=2, train_size=12)
    train_mod.main(part_cfg)
    resumed = load_checkpoint(train_mod.main(tiny_config(tmp_path / "b", steps=5, ckpt_every=1, epochs=2, train_size=12, resume=True)))
    assert resumed.step == full.step == 5
    for key, value in full.classifier.state_dict().items():
        assert torch.allclose(value.float(), resumed.classifier.state_dict()[key].float(), atol=1e-5), key
    rows = RunDir(tmp_path / "b" / "runs" / "tiny").read_metrics()
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4, 5]


@pytest.mark.slow
def test_cosine_schedule_decays_lr_and_resumes_on_the_same_curve(tmp_path: Path, no_progress: None) -> None:
    common = dict(steps=5, ckpt_every=1, epochs=2, train_size=12, lr_schedule="cosine")
    full = load_checkpoint(train_mod.main(tiny_config(tmp_path / "a", **common)))
    # Stop cleanly after 2 steps of the same 5-step run, then resume it.
    done: list[int] = []
    train_mod.main(tiny_config(tmp_path / "b", **common), on_progress=lambda row: done.append(row["step"]),
                   should_stop=lambda: len(done) >= 2)
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "tiny.pt").step == 2
    resumed = load_checkpoint(train_mod.main(tiny_config(tmp_path / "b", resume=True, **common)))
    for key, value in full.classifier.state_dict().items():
        assert torch.allclose(value.float(), resumed.classifier.state_dict()[key].float(), atol=1e-5), key
    for run in ("a", "b"):
        rows = [r for r in RunDir(tmp_path / run / "runs" / "tiny").read_metrics() if r["split"] == "train"]
        # Row for step s logs the lr used by optimisation step s-1 (0-based): 1e-3 * (1 + cos(pi (s-1) / 5)) / 2.
        expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * (r["step"] - 1) / 5)) for r in rows]
        assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
        assert [float(r["lr"]) for r in rows] == pytest.approx(expected, rel=1e-5)  # metrics.csv keeps 6 significant digits


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      no_progress: None) -> None:
    cfg = tiny_config(tmp_path, steps=2, ckpt_every=1)
    good = train_mod.main(cfg)
    before = good.read_bytes()
    real = train_loop.classification_loss
    calls = {"n": 0}

    def poisoned(logits, batch, multi_label=False):
        calls["n"] += 1
        return real(logits, batch, multi_label) * (float("nan") if calls["n"] >= 2 else 1.0)

    monkeypatch.setattr(train_loop, "classification_loss", poisoned)
    with pytest.raises(train_mod.TrainingDiverged, match="loss became nan"):
        train_mod.main(tiny_config(tmp_path, steps=4, ckpt_every=1, resume=True))
    after = load_checkpoint(good)
    assert after.step == 3  # step 3 was good and saved; step 4 diverged and saved nothing
    assert good.read_bytes() != before


def test_pets_offline_missing_dataset_fails_with_instructions_and_no_download(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, network_attempts: list) -> None:
    attempts = network_attempts
    code = train_mod.cli(["--dataset", "pets", "--data-root", str(tmp_path / "nowhere"), "--weights", "none",
                          "--name", "x", "--checkpoint-dir", str(tmp_path), "--runs-dir", str(tmp_path)])
    assert code == 2 and attempts == []  # refused before any download that could hang
    assert "images.tar.gz" in caplog.text


def test_bad_configuration_is_refused_with_a_message() -> None:
    for overrides, pattern in [({"steps": -1}, "steps"), ({"cls_lr": float("nan")}, "learning rates"),
                               ({"model": "nope"}, "unknown model"), ({"delta": "2"}, "delta")]:
        with pytest.raises(ValueError, match=pattern):
            train_mod.TrainConfig(**overrides).resolve()


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tmp_path: Path) -> None:
    result = torchrun("crm_core.train", [
           "--name", "ddp", "--model", "resnet", "--arch", "resnet18", "--image-size", "64", "--batch-size", "2",
           "--num-classes", "3", "--train-size", "16", "--steps", "2", "--val-limit", "4", "--workers", "0",
           "--perceptual-size", "64", "--n-segments", "16", "--align-warmup", "0",
           "--checkpoint-dir", str(tmp_path / "ck"), "--runs-dir", str(tmp_path / "runs")])
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = load_checkpoint(tmp_path / "ck" / "ddp.pt")
    assert ckpt.step == 2 and ckpt.train_config["extra"]["world_size"] == 2
    rows = RunDir(tmp_path / "runs" / "ddp").read_metrics()
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2]  # rank 0 alone writes
