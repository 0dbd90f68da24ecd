"""The dashboard's memory: what a loaded model keeps, every cache's bound, the allocator settings,
the memory-by-owner report, and (slow) a served app under mixed concurrent use from several clients."""
from __future__ import annotations

import os
import re
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import require
from crm_core.checkpoints import load_checkpoint
from crm_core.explain import SUPERPIXEL_CACHES, superpixel_cache_sizes, superpixels
from demo.engine import Engine, package_cam_available
from demo.memory import BoundedDict, allocator_stats, format_owners, memory_by_owner, rss_mb
from demo_fixtures import copy_pair


@pytest.fixture(scope="module")
def engine(trained_pair: dict, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    checkpoints, runs = copy_pair(trained_pair, tmp_path_factory.mktemp("memory"))
    return Engine(checkpoints, runs, eval_limit=2)


def _storage_bytes(tensors) -> int:
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())


def test_a_model_that_explains_keeps_no_optimizer_state(engine: Engine, trained_pair: dict) -> None:
    """Adam's moments are twice the weights: a dashboard model kept them for its whole life."""
    full = load_checkpoint(trained_pair["resnet"])
    assert full.optimizers, "the checkpoint holds optimizer state (a resume needs it)"
    model = engine.checkpoints.model("resnet")
    assert model.checkpoint.optimizers == {}
    torch.testing.assert_close(model.classifier.state_dict(), full.classifier.state_dict())  # same weights


def test_bounded_dict_keeps_the_most_recently_used_entries() -> None:
    cache = BoundedDict(3)
    for key in "abc":
        cache[key] = key.upper()
    assert cache.get("a") == "A"  # read: a is now the most recent
    cache["d"] = "D"
    assert list(cache) == ["c", "a", "d"] and "b" not in cache
    assert cache.get("b", 7) == 7
    with pytest.raises(ValueError, match=">= 1"):
        BoundedDict(0)


def test_the_engines_caches_stay_within_their_bounds(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Their keys come from users (any delta, any SLIC parameters): each cache has a bound, enforced."""
    monkeypatch.setattr(engine.evaluation._val_thresholds, "bound", 3)
    for delta in (0.2, 0.3, 0.4, 0.5, 0.6):
        engine.evaluation.val_threshold("resnet_drs", limit=2, drs_delta=delta)
    sizes = engine.cache_sizes()
    assert sizes["val thresholds"] == (3, 3)
    image = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    for compactness in range(SUPERPIXEL_CACHES + 5):
        superpixels(image, n_segments=4, compactness=float(compactness + 1))
    assert superpixel_cache_sizes() == (SUPERPIXEL_CACHES, SUPERPIXEL_CACHES)
    for name, (used, bound) in engine.cache_sizes().items():
        assert 0 <= used <= bound, name


def test_memory_by_owner_counts_the_cached_models_weights(engine: Engine) -> None:
    engine.checkpoints.model("resnet"), engine.checkpoints.model("resnet_drs")
    report = memory_by_owner(engine)
    models = engine.checkpoints.cached_models()
    expected = sum(_storage_bytes([*m.classifier.parameters(), *m.classifier.buffers(),
                                   *(m.reconstructor.parameters() if m.reconstructor else [])])
                   for m in models) / 2**20
    assert len(models) == 2 and report["owners"]["model cache"] == pytest.approx(expected, rel=0.01)
    assert report["owners"]["libraries (mapped files)"] > 50  # torch's code alone
    assert report["rss"] == pytest.approx(sum(report["owners"].values()), abs=1e-6)  # "other" closes the sum
    text = format_owners(report)
    assert text.startswith("memory: RSS") and "cache: models" in text and "2 / 6 entries" in text


def test_the_allocator_settings_take_on_glibc() -> None:
    """app.py's --malloc bounded: mallopt accepts both settings (checked in a child: they are process-wide)."""
    if not allocator_stats():
        pytest.skip("not glibc: the settings do not apply")
    code = "from demo.memory import configure_allocator; import sys; sys.exit(0 if configure_allocator() else 1)"
    import subprocess
    import sys

    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent).returncode == 0


def test_the_grad_cam_package_never_hooks_the_shared_model(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its hooks record every thread's pass through the target layer: on the shared model another
    request's forward pass would slip into its activations, so it gets a private copy."""
    if not package_cam_available():
        require("pytorch_grad_cam")
    import pytorch_grad_cam

    shared = engine.checkpoints.model("resnet").classifier
    seen = []
    real = pytorch_grad_cam.GradCAM

    class Spy(real):  # type: ignore[misc, valid-type]
        def __init__(self, model, target_layers, **kwargs):
            seen.append((model.model, target_layers[0]))
            super().__init__(model=model, target_layers=target_layers, **kwargs)

    monkeypatch.setattr(pytorch_grad_cam, "GradCAM", Spy)
    sample = engine.inference.sample("resnet", 0)
    out = engine.inference.cam("resnet", sample.image, class_index=0, method="pgc:GradCAM")
    assert np.isfinite(out.cam).all() and seen
    copy, layer = seen[0]
    assert copy is not shared and layer is not shared.feature_layer
    torch.testing.assert_close(copy.state_dict(), shared.state_dict())
    assert not shared.feature_layer._forward_hooks


def test_concurrent_hook_based_cams_and_forward_passes_agree_with_serial_ones(engine: Engine) -> None:
    """The race a lab's load found: a hook-based CAM (Grad-CAM) while other threads run the same
    model raised "expected the target layer to run once, it ran 2 times" or mixed up images."""
    images = [engine.inference.sample("resnet", i).image for i in range(6)]
    alone = [engine.inference.cam("resnet", im, class_index=1, method="gradcam").cam for im in images]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                engine.inference.cam("resnet", images[i], class_index=1, method="gradcampp" if i % 2 else "gradcam")
            results[i] = engine.inference.cam("resnet", images[i], class_index=1, method="gradcam").cam
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for i in range(6):
        np.testing.assert_allclose(results[i], alone[i], atol=1e-5)


# -- a lab's use: several clients at once, mixed and hostile requests -------------------------------
SOAK_BOUND_MB = 2500  # the bound for 8-9 resnet18 checkpoints at the default cache sizes
ROUND_GROWTH_MB = 100  # once the caches are warm, a round adds at most this


@pytest.mark.slow
def test_a_served_app_under_mixed_concurrent_use_stays_bounded(trained_pair: dict, tmp_path: Path) -> None:
    """8 checkpoints (more than the model cache holds), 4 clients at once, every CAM method, Browse,
    DRS, reconstructions, half the requests hostile: RSS stays under the bound, the last round adds
    under 100 MB, every hostile request is refused with a message naming no server folder, every
    sound one succeeds, each cache is within its bound, and the server still answers. Each round
    repeats the first round's requests: the last round's growth is what a warm mix costs."""
    require("gradio_client")
    from demo.load import memory_report_of, methods_on_offer, run_load, serve, stop
    from demo_fixtures import free_port

    checkpoints, runs = copy_pair(trained_pair, tmp_path)
    names = []
    for i in range(4):
        for variant in ("resnet", "resnet_drs"):
            os.link(checkpoints / f"{variant}.pt", checkpoints / f"{variant}_{i}.pt")
            names.append(f"{variant}_{i}")
    for variant in ("resnet", "resnet_drs"):
        (checkpoints / f"{variant}.pt").unlink()
    port = free_port()
    server = serve(checkpoints, runs, port, extra=["--malloc", "bounded", "--eval-images", "4"],
                   env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"))
    try:
        report = run_load(f"http://127.0.0.1:{port}/", names, [n for n in names if "drs" in n], methods_on_offer(),
                          rss=lambda: rss_mb(server.pid), secret_paths=[str(tmp_path), tempfile.gettempdir()],
                          clients=4, requests=5, rounds=3, test_images=16, seed=1, same_each_round=True, timeout=300)
        owners = memory_report_of(server)
        from gradio_client import Client

        still = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            names[0], names[1], None, 1, "(predicted class)", 0.3, "gradcampp", api_name="/compare")
    finally:
        stop(server)
    print("RSS by round (MiB):", [round(r) for r in report.rss_mb], "\n" + owners)
    assert not report.unexpected, report.unexpected
    assert not report.leaked, report.leaked
    assert report.refused > 0 and report.requests == 4 * 5 * 3
    assert max(report.rss_mb) < SOAK_BOUND_MB
    assert report.rss_mb[-1] - report.rss_mb[-2] < ROUND_GROWTH_MB, report.rss_mb
    assert "test sample #1" in still[-1]
    caches = re.findall(r"cache: (.+?)\s+(\d+) / (\d+) entries", owners)
    assert {name.strip() for name, _, _ in caches} >= {"models", "val thresholds", "CAM dependence"}, owners
    assert all(int(used) <= int(bound) for _, used, bound in caches), owners
    assert ("models", "6", "6") in [(n.strip(), u, b) for n, u, b in caches]  # 8 checkpoints, 6 kept


def test_the_docs_memory_numbers_are_those_of_the_load_json() -> None:
    """docs/benchmarks.md quotes `python -m demo.load`'s JSON (docs/load_*.json)."""
    import json

    root = Path(__file__).resolve().parent.parent
    bounded = json.loads((root / "docs" / "load_bounded.json").read_text())
    default = json.loads((root / "docs" / "load_default.json").read_text())
    warm = bounded["rss_mb"][1:]
    table = (root / "docs" / "benchmarks.md").read_text()
    assert f"RSS stays at {min(warm):.0f}–{max(warm):.0f} MiB over five rounds" in table
    for label, run in (("`--malloc default`", default), ("`--malloc bounded` (the default)", bounded)):
        row = next(line for line in table.splitlines() if line.startswith("| optimizer state dropped") and label in line)
        assert row.split("|")[2:-1] == [f" {r:.0f} " for r in run["rss_mb"]], row
        assert not run["unexpected"] and not run["leaked"] and run["requests"] == 360
