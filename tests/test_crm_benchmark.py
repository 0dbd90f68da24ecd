"""The CRM benchmark: data appearances, oracle gain, CAM dependence, gradient diagnostics, the
CRM gate, SSC's options and the untrained floor."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_erosion

from conftest import tiny_config
from crm_core import train as train_mod
from crm_core import train_loop
from crm_core.data.synthetic import SyntheticPets, sample_scene
from crm_core.losses import alignment_target, erode
from crm_core.metrics import CamDependence, ious_from_counts
from crm_core.models import ModelConfig, create_model
from crm_core.crm import CRMNet, class_score_maps, decoder_input
from crm_core.experiments.oracle import colour_cues, oracle_gain


def _part_means(appearance: str, n: int = 40) -> dict[str, float]:
    ds = SyntheticPets("train", image_size=64, length=n, appearance=appearance)
    sums: dict[str, list[float]] = {"background": [], "body": []}
    for i in range(n):
        image, parts, _ = ds.render(i)
        brightness = image.astype(np.float32).mean(axis=-1) / 255.0
        sums["background"].append(float(brightness[parts == 0].mean()))
        sums["body"].append(float(brightness[parts == 1].mean()))
    return {k: float(np.mean(v)) for k, v in sums.items()} | {"min_gap": float(np.min(np.subtract(sums["body"], sums["background"])))}


def test_informative_appearance_is_one_class_agnostic_object_look() -> None:
    informative, random = _part_means("informative"), _part_means("random")
    assert informative["body"] > informative["background"] + 0.3
    assert informative["min_gap"] > 0.1  # every image, not just on average
    assert abs(random["body"] - random["background"]) < 0.15  # the default: no appearance cue


def test_informative_distractors_sometimes_share_the_object_appearance() -> None:
    shared = total = 0
    for index in range(60):
        scene = sample_scene(0, "train", index, 4, "informative")
        for shape in scene.distractors:
            if shape.fill.kind == "blotched":
                continue
            total += 1
            shared += bool((shape.fill.color_a >= 0.65 - 1e-6).all())
    assert 0.1 < shared / total < 0.6  # bright is not a free segmentation


def test_camouflage_keeps_the_object_look_but_hands_it_to_more_distractor_area() -> None:
    camouflage = _part_means("camouflage")
    assert camouflage["body"] > camouflage["background"] + 0.15 and camouflage["min_gap"] > 0.0
    bright_distractor_area = body_area = 0.0
    for index in range(40):
        image, parts, _ = SyntheticPets("train", image_size=64, length=40, appearance="camouflage").render(index)
        bright = image.astype(np.float32).mean(axis=-1) / 255.0 > 0.6
        bright_distractor_area += float((bright & (parts == 0)).sum())
        body_area += float((parts == 1).sum())
    assert bright_distractor_area > body_area  # P(object | bright) is low ...


def test_camouflage_defeats_colour_cues_but_keeps_the_oracle_gain() -> None:
    # ... while P(bright | object) stays high: knowing where the object is still predicts its pixels.
    gain = oracle_gain("camouflage", train_images=120, test_images=60, image_size=64)
    assert gain["oracle_gain"] >= 0.05, gain
    cues = colour_cues("camouflage", train_images=120, val_images=40, test_images=60, image_size=64, cam_size=4)
    informative = colour_cues("informative", train_images=120, val_images=40, test_images=60, image_size=64, cam_size=4)
    assert cues["intensity"]["miou"] <= 0.58 < informative["intensity"]["miou"], (cues, informative)


@pytest.mark.parametrize("appearance", ["informative", "camouflage"])
def test_informative_scenes_keep_the_label_out_of_everything_but_the_head(appearance: str) -> None:
    a, b = sample_scene(3, "val", 17, 4, appearance), sample_scene(3, "val", 17, 9, appearance)
    assert a.label != b.label
    from crm_core.data.synthetic import render_scene
    image_a, parts_a = render_scene(a, 64)
    image_b, parts_b = render_scene(b, 64)
    assert (parts_a == parts_b).all()
    differs = (image_a != image_b).any(axis=-1)
    assert differs.any() and (parts_a[differs] == 2).all()


def test_unknown_appearance_is_refused() -> None:
    with pytest.raises(ValueError, match="appearance"):
        SyntheticPets("train", appearance="glossy")
    with pytest.raises(ValueError, match="appearance"):
        tiny_config(Path("/nonexistent"), appearance="glossy").resolve()


def test_oracle_gain_separates_the_appearances() -> None:
    random = oracle_gain("random", train_images=80, test_images=40, image_size=48)
    informative = oracle_gain("informative", train_images=80, test_images=40, image_size=48)
    assert abs(random["oracle_gain"]) < 0.03, random
    assert informative["oracle_gain"] > 0.08, informative
    assert informative["l1_oracle"] < informative["l1_constant"]


class _Constant(torch.nn.Module):
    """A decoder that ignores its input (what ReconstructNet learns on the default data)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), 3, 8, 8)


class _Copy(torch.nn.Module):
    """A decoder whose output is its input: fully CAM-dependent."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :3] * 2 - 1


def test_cam_dependence_tells_an_input_ignoring_decoder_from_one_that_uses_it() -> None:
    images = torch.rand(6, 3, 8, 8)
    ignoring = CamDependence()
    ignoring.add(_Constant(), images, _Constant()(images), images)
    assert abs(ignoring.summary()["cam_dependence"]) < 1e-6
    using = CamDependence()
    using.add(_Copy(), images, _Copy()(images), images)
    summary = using.summary()
    assert summary["recon_l1"] < 1e-6 and summary["recon_l1_shuffled"] > 0.1 and summary["cam_dependence"] > 0.99
    lonely = CamDependence()
    lonely.add(_Copy(), images[:1], _Copy()(images[:1]), images[:1])
    assert np.isnan(lonely.summary()["cam_dependence"])


def test_background_false_positive_rate() -> None:
    counts = torch.tensor([5, 3, 2, 90])  # tp, fp, fn, tn
    assert ious_from_counts(counts)["bg_fpr"] == pytest.approx(3 / 93)


@pytest.mark.parametrize("size", [1, 2, 3, 8])
def test_erode_matches_scipy(size: int) -> None:
    masks = torch.rand(3, 21, 17, generator=torch.Generator().manual_seed(size)) > 0.25
    ours = erode(masks, size)
    for mask, eroded in zip(masks, ours):
        reference = binary_erosion(mask.numpy(), np.ones((size, size)), border_value=1) if size > 1 else mask.numpy()
        assert (eroded.numpy() == reference).all()


def test_ssc_alignment_target_keeps_only_the_eroded_confident_region() -> None:
    cam = torch.zeros(1, 24, 24)
    cam[0, 4:20, 4:20] = 0.5
    cam[0, 2, 2] = 1.0  # an isolated confident pixel: erosion removes it
    segments = torch.arange(24 * 24).reshape(1, 24, 24)  # one superpixel per pixel: the mean is the CAM
    kept = alignment_target(cam, segments, confident=0.3, erosion=8)
    assert kept[0, 12, 12] == pytest.approx(0.5) and kept[0, 2, 2] == pytest.approx(1.0)
    plain = alignment_target(cam * 0 + cam.amax(), segments, confident=0.3, erosion=0)
    assert torch.allclose(plain, torch.ones_like(plain))


def test_decoder_inputs() -> None:
    classifier = create_model(ModelConfig(variant="resnet", arch="resnet18", num_classes=4), load_pretrained=False)
    features = torch.rand(2, classifier.fc.in_features, 3, 3)
    weight = classifier.fc.weight.detach()
    scores = decoder_input(classifier, features, "scores").detach()
    assert torch.allclose(scores.mean(dim=(2, 3)), features.mean(dim=(2, 3)) @ weight.T, atol=1e-5)
    assert torch.equal(scores, class_score_maps(features, weight))
    cams = decoder_input(classifier, features, "gradcampp").detach()
    assert cams.min() >= 0 and torch.allclose(cams.amax(dim=(2, 3))[cams.amax(dim=(2, 3)) > 0], torch.tensor(1.0))
    with pytest.raises(ValueError, match="decoder input"):
        decoder_input(classifier, features, "pixels")


def _net_and_batch(tmp_path: Path, **overrides):
    cfg = tiny_config(tmp_path, vgg_weight=0.0, align_weight=0.0, **overrides).resolve()
    train_set, _ = train_mod.build_datasets(cfg)
    torch.manual_seed(0)
    classifier = train_mod.create_model(cfg.model_config(train_set.class_names))
    reconstructor = train_mod.ReconstructNet(3, cfg.recon_size, train_mod.cam_size_of(classifier, cfg.image_size))
    net = CRMNet(classifier, reconstructor, cfg.decoder_input).train()
    batch = next(iter(torch.utils.data.DataLoader(train_set, batch_size=4)))
    return cfg, net, batch


def test_closed_crm_gate_leaves_the_classifier_to_ce_but_trains_the_decoder(tmp_path: Path) -> None:
    cfg, net, batch = _net_and_batch(tmp_path, crm_gate=True, crm_gate_scale=1e12, l1_weight=30.0)
    total, terms, _ = train_loop.compute_losses(net, batch, cfg, None, use_alignment=False)
    total.backward()
    assert 0.0 <= terms["crm_gate"] < 1e-6
    gated_fc = net.classifier.fc.weight.grad.clone()
    assert net.reconstructor.to_rgb[0].weight.grad.abs().sum() > 0  # the decoder still learns
    net.zero_grad()
    out = net(batch["image"])
    torch.nn.functional.cross_entropy(out["logits"], batch["label"]).backward()
    assert torch.allclose(gated_fc, net.classifier.fc.weight.grad, atol=1e-7)



def test_open_crm_gate_lets_the_reconstruction_reach_the_classifier(tmp_path: Path, monkeypatch) -> None:
    """A reconstruction that depends on the image (specificity above the scale) opens the gate:
    the classifier then gets CE's gradient plus the reconstruction's, not CE's alone. Specificity
    is set, not left to the random decoder, so the open case is always the one tested."""
    monkeypatch.setattr(train_loop, "reconstruction_specificity", lambda *args: torch.tensor(0.5))
    cfg, net, batch = _net_and_batch(tmp_path, crm_gate=True, crm_gate_scale=0.05, l1_weight=30.0)
    total, terms, _ = train_loop.compute_losses(net, batch, cfg, None, use_alignment=False)
    total.backward()
    assert terms["crm_gate"] == 1.0
    open_fc = net.classifier.fc.weight.grad.clone()
    net.zero_grad()
    out = net(batch["image"])
    torch.nn.functional.cross_entropy(out["logits"], batch["label"]).backward()
    assert not torch.allclose(open_fc, net.classifier.fc.weight.grad, atol=1e-7)


def test_gradient_diagnostics_are_relative_to_ce(tmp_path: Path) -> None:
    cfg, net, batch = _net_and_batch(tmp_path, l1_weight=2.0)
    _, terms, _ = train_loop.compute_losses(net, batch, cfg, None, use_alignment=False, diagnose=True)
    out = net(batch["image"])
    ce = torch.nn.functional.cross_entropy(out["logits"], batch["label"])
    l1 = 2.0 * (out["recon"] - train_loop.reconstruction_target(batch["image"], out["recon"])).abs().mean()
    (g_ce,) = torch.autograd.grad(ce, out["features"], retain_graph=True)
    (g_l1,) = torch.autograd.grad(l1, out["features"])
    assert terms["grad_l1"] == pytest.approx(float(g_l1.norm() / g_ce.norm()), rel=1e-4)


def test_training_logs_diagnostics_dependence_and_the_perceptual_notice(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CRM_LAB_NO_PROGRESS", "1")
    cfg = tiny_config(tmp_path, steps=4, diag_every=2, crm_gate=True, appearance="informative",
                      perceptual_weights="auto")
    train_mod.main(cfg)
    run = tmp_path / "runs" / "tiny"
    with open(run / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    train_rows = [r for r in rows if r["split"] == "train"]
    diag = [r for r in train_rows if r["grad_l1"] != ""]
    assert [int(r["step"]) for r in diag] == [1, 3]  # steps 0 and 2 (0-based) are logged as 1 and 3
    assert all(float(r["grad_align"]) >= 0 and r["crm_gate"] != "" for r in diag)
    val = [r for r in rows if r["split"] == "val"]
    assert val and all(r["cam_dependence"] != "" and r["recon_l1_shuffled"] != "" for r in val)
    config = json.loads((run / "config.json").read_text())
    # No ImageNet VGG19 in the test cache: the perceptual term is off, and the run says so.
    assert any("perceptual loss off" in n for n in config["train"]["extra"]["notices"])
    assert config["train"]["appearance"] == "informative"


def test_perceptual_term_compares_at_64_px_or_more(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="perceptual_size"):
        tiny_config(tmp_path, perceptual_weights="random", perceptual_size=32).resolve()
    assert tiny_config(tmp_path, crm_preset="fast", image_size=112).resolve().perceptual_size >= 64


def test_zero_steps_saves_the_untrained_floor(tmp_path: Path, monkeypatch) -> None:
    from crm_core.api import CamModel, dataset_for
    from crm_core.evaluate import evaluate_protocol, select_threshold

    monkeypatch.setenv("CRM_LAB_NO_PROGRESS", "1")
    path = train_mod.main(tiny_config(tmp_path, steps=0, crm=False, model="resnet"))
    model = CamModel.load(path)
    assert model.checkpoint.step == 0
    threshold = select_threshold(model, dataset_for(model, "val"), limit=8)
    result = evaluate_protocol(model, limit=8, val_limit=8)
    assert result["cam_miou_val_threshold"]["threshold"] == pytest.approx(threshold)
    assert 0 <= result["cam_miou_val_threshold"]["bg_fpr"] <= 1
    assert set(result["coverage_val_threshold"]) == {"head", "body"}


@pytest.mark.parametrize("module", ["train", "evaluate", "postprocess", "segment", "experiments.results", "experiments.oracle",
                                    "experiments.recipe_sweep", "experiments.bench"])
def test_every_cli_option_has_a_help_text(module: str) -> None:
    import importlib

    parser = importlib.import_module(f"crm_core.{module}").get_args_parser()
    missing = [action.option_strings for action in parser._actions
               if action.option_strings and action.dest != "help" and not action.help]
    assert not missing, missing
