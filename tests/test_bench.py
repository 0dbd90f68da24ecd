"""crm_core.experiments.bench (and demo.bench, its dashboard section) at tiny sizes: every section runs and
returns finite numbers (no timing asserts); the report keeps its keys and its generated block."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from crm_core.experiments import bench

REPO = Path(__file__).resolve().parents[1]
TINY = bench.StepRecipe("tiny", "resnet18", 64, 16, 2, "none", n_segments=16)


def _finite_stats(stats: dict) -> bool:
    return stats["n"] >= 1 and all(math.isfinite(stats[k]) and stats[k] >= 0 for k in ("min", "median", "max"))


def test_gradcampp_matches_package_and_times_both(grad_cam_package) -> None:
    r = bench.bench_gradcampp(arch="resnet18", batch=2, size=64, num_classes=5, repeats=1, warmup=0)
    assert _finite_stats(r["ours_s"]) and _finite_stats(r["package_s"])
    assert math.isfinite(r["speedup"]) and r["speedup"] > 0
    assert r["max_abs_diff"] <= 1e-4
    assert math.isfinite(r["max_abs_diff_exact_eq19_vs_package"])


def test_crm_step_levers_run_every_loss() -> None:
    levers = [lever for lever in bench.default_levers(TINY.image_size)
              if lever.name in ("plain", "crm_exact", "crm_fast", "crm_exact_unfused_norm", "crm_fast_bf16")]
    r = bench.bench_crm_step(TINY, levers, repeats=1, warmup=0)
    rows = {row["lever"]: row for row in r["rows"]}
    assert set(rows) == {lever.name for lever in levers}
    for row in rows.values():
        assert _finite_stats(row["step_s"]) and math.isfinite(row["ratio_vs_plain"]) and row["ratio_vs_plain"] > 0
    assert rows["plain"]["loss_terms"] == ["loss_cls"]
    assert rows["crm_exact"]["loss_terms"] == ["loss_align", "loss_cls", "loss_l1", "loss_vgg"]
    assert rows["crm_fast"]["channels_last"] and rows["crm_fast"]["recon_size"] == TINY.image_size // 4
    assert rows["crm_exact"]["perceptual_size"] is None and rows["crm_exact"]["recon_size"] == TINY.image_size
    assert rows["crm_exact_unfused_norm"]["channels_last"] is False


def test_crm_step_on_efficientnet_reports_ratio_and_throughput() -> None:
    recipe = bench.TINY_RECIPES["efficientnet_b0_224_last2"]
    levers = [lever for lever in bench.default_levers(recipe.image_size, quick=True) if lever.name in ("plain", "crm_fast")]
    r = bench.bench_crm_step(recipe, levers, repeats=1, warmup=0)
    assert r["recipe"]["arch"] == "efficientnet_b0"
    assert r["ratio"]["crm_fast"] > 0 and r["images_per_s"]["plain"] > 0
    rows = {row["lever"]: row for row in r["rows"]}
    assert r["images_per_s"]["plain"] == pytest.approx(recipe.batch_size / rows["plain"]["step_s"]["median"])


def test_reference_norm_lever_swaps_the_kernel_not_the_function() -> None:
    """The 'unfused' LayerNorm lever changes speed only: same decoder output, same parameters,
    and the decoder class itself is left alone."""
    import copy

    import torch

    from crm_core.models import ReconstructNet
    from crm_core.models.decoder import ChannelAffineLayerNorm

    torch.manual_seed(0)
    net = ReconstructNet(3, 32, 4)
    norms = [m for m in net.modules() if isinstance(m, ChannelAffineLayerNorm)]
    for norm in norms:  # a non-trivial affine, so a wrong scale or shift shows
        torch.nn.init.uniform_(norm.weight, 0.5, 1.5)
        torch.nn.init.normal_(norm.bias)
    cams = torch.rand(2, 3, 4, 4)
    fused = net(cams)
    reference_net = copy.deepcopy(net)
    assert bench.use_reference_norms(reference_net) == len(norms) > 0
    assert not any(type(m) is ChannelAffineLayerNorm for m in reference_net.modules())
    assert sorted(n for n, _ in reference_net.named_parameters()) == sorted(n for n, _ in net.named_parameters())
    assert torch.allclose(reference_net(cams), fused, atol=1e-5)
    assert torch.equal(net(cams), fused)  # the original decoder still runs the fused kernel
    assert all(type(m) is ChannelAffineLayerNorm for m in norms)


def test_superpixel_cache_bench() -> None:
    r = bench.bench_superpixels(image_size=64, batch=2, n_segments=16, repeats=1)
    assert _finite_stats(r["recompute_s"]) and _finite_stats(r["cached_s"]) and r["speedup"] > 0


def test_the_voc_sized_folder_reads_as_voc_and_trains_plain_and_with_crm(tmp_path: Path) -> None:
    from crm_core.data import build_dataset

    root = bench.write_voc_sized_folder(tmp_path / "voc", images=10, size=(50, 37))
    train = build_dataset("voc", "train", image_size=32, data_root=root)
    test = build_dataset("voc", "test", image_size=32, data_root=root)
    assert (len(train), len(test)) == (9, 1)  # VOC's train list minus the lab's val; its val list
    jpeg = next((root / "VOCdevkit/VOC2012/JPEGImages").glob("*.jpg"))
    from PIL import Image

    assert Image.open(jpeg).size == (50, 37)
    for i in range(len(train)):
        sample = train[i]
        assert 1 <= int(sample["labels"].sum()) <= 3 and (sample["class_mask"] == 255).any()
    doc = bench.run_all(bench.BenchConfig(tiny=True, sections=("voc_training",)))
    r = doc["details"]["voc_training"]
    assert set(r["runs"]) == {"voc_plain", "voc_crm"} and r["runs"]["voc_crm"]["crm"]
    assert all(math.isfinite(run["images_per_s"]) and run["steps_timed"] >= 1 for run in r["runs"].values())
    assert doc["voc_crm_step_ratio"] == pytest.approx(r["runs"]["voc_crm"]["step_s"] / r["runs"]["voc_plain"]["step_s"])
    assert "### 9. Training at VOC's sizes" in bench.format_tables(doc)
    assert "voc_training" in bench.ALL_SECTIONS and "voc_training" not in bench.BenchConfig.sections  # asked for only


def test_training_subprocess_reports_throughput_and_rss() -> None:
    r = bench.bench_training([("tiny_crm", TINY, True, {"crm_preset": "fast", "workers": 0})], steps=3, warmup_steps=1)
    run = r["tiny_crm"]
    assert run["steps_timed"] == 1 and math.isfinite(run["images_per_s"]) and run["images_per_s"] > 0
    assert run["peak_rss_mb"]["self"] > 50
    assert run["resolved"]["channels_last"] is True


def test_dashboard_api_latencies(trained_pair: dict) -> None:
    from demo import bench as demo_bench

    image = demo_bench._upload_image(size=80)
    r = demo_bench.bench_dashboard_api([trained_pair["resnet"], trained_pair["resnet_drs"]], image, repeats=1)
    assert all(_finite_stats(r[k]) for k in ("compare_cold", "compare_warm", "drs_update"))


def test_report_formats_and_summary_keys(tmp_path: Path) -> None:
    """The Markdown writer handles a document with every section (numbers faked, shapes real)."""
    stats = {"min": 1.0, "median": 1.5, "max": 2.0, "n": 3}
    row = {"lever": "crm_fast", "description": "fast", "step_s": stats, "ratio_vs_plain": 1.5, "ratio_vs_plain_min": 1.4,
           "baseline": "plain_bf16", "ratio_vs_baseline": 1.2, "ratio_vs_baseline_min": 1.1, "compile_s": 3.0}
    step = {"recipe": TINY.__dict__, "repeats": 1, "rows": [row], "ratio": {"crm_fast": 1.5}}
    run = {"batch_size": 2, "images_per_s": 3.0, "step_s": 0.7, "peak_rss_mb": {"self": 500.0}}
    doc = {
        "gradcampp_speedup_vs_grad_cam": 2.5, "gradcampp_max_abs_diff": 1e-7, "crm_step_ratio": 1.4,
        "crm_step_ratio_synthetic": 1.8, "train_images_per_s": 3.0, "train_peak_rss_mb": 500.0,
        "compare_latency_s": 0.2, "drs_update_latency_s": 0.1, "cold_start_s": None,
        "details": {
            "machine": bench.machine_info(),
            "gradcampp": {"config": {"arch": "resnet18", "batch": 2, "size": 64, "repeats": 1}, "ours_s": stats,
                          "package_s": stats, "speedup": 1.0, "max_abs_diff": 0.0,
                          "max_abs_diff_exact_eq19_vs_package": 0.01, "feature_size": [2, 2]},
            "crm_step": {"tiny": step},
            "training": {"tiny": run},
            "dashboard": {"measured_through": "crm_core.api.CamModel", "checkpoints": ["a.pt", "b.pt"],
                          "model_image_size": 64, "image_shape": [256, 256, 3], "engine": {"available": False},
                          "api": {"compare_cold": stats, "compare_warm": stats, "drs_update": stats},
                          "cold_start": {"available": False, "reason": "skipped"}},
            "superpixels": {"batch": 2, "image_size": 64, "n_segments": 16, "recompute_s": stats, "cached_s": stats,
                            "speedup": 1.0},
            "scale": {"recipe": "tiny", "global_batch": 2, "cores": 2, "speedup_2proc": 0.9,
                      "runs": {"a": {"nproc": 1, "threads_per_proc": 2, "per_process_batch": 2, **run},
                               "b": {"nproc": 2, "threads_per_proc": 1, "per_process_batch": 1, **run}}},
        },
    }
    out = tmp_path / "bench.md"
    bench.write_markdown(doc, out, "python -m crm_core.experiments.bench --quick")
    text = out.read_text()
    assert "Reproduce: `python -m crm_core.experiments.bench --quick`" in text and "crm_fast" in text and "n/a" in text
    out.write_text("# Title\n\nanalysis before\n\n" + text.split("\n", 2)[2] + "\nanalysis after\n")
    bench.write_markdown(doc, out, "python -m crm_core.experiments.bench")
    again = out.read_text()
    assert "analysis before" in again and "analysis after" in again and again.count(bench.MARK_BEGIN) == 1
    assert again.count(bench.MARK_END) == 1 and again.index(bench.MARK_BEGIN) < again.index(bench.MARK_END)
    # The summary block lists every top-level key but "details", in order, floats to 4 digits.
    summary = again.split("#### Summary (JSON top-level keys)\n\n```\n", 1)[1].split("\n```", 1)[0].splitlines()
    assert [line.split(": ", 1)[0] for line in summary] == [k for k in doc if k != "details"]
    assert "crm_step_ratio: 1.4000" in summary and "cold_start_s: None" in summary
    for number in range(1, 7):
        assert f"### {number}. " in again, number
    assert "| `crm_fast` | 1.00 / 1.50 / 2.00 | **1.50**; 1.40 | 1.20; 1.10 (/plain_bf16) | fast; compile took 3 s |" in again
    assert "| 2 x 1 | 1 | 3.00 | 0.70 |" in again and "**0.90x**" in again
    doc["details"]["dashboard"]["cold_start"] = {"available": True, "seconds": 9.5, "first_view_seconds": 15.25}
    bench.write_markdown(doc, out, "python -m crm_core.experiments.bench")
    measured = out.read_text()
    assert "to HTTP 200 (median of fresh starts) | 9.50 | <= 10 |" in measured
    assert "to the first view's result (both default models' CAMs of sample #0) | 15.25 |" in measured
    # Plain JSON: what --json writes, --from-json reads back unchanged and renders the same.
    reloaded = json.loads(json.dumps(doc))
    assert reloaded == doc and bench.format_tables(reloaded) == bench.format_tables(doc)


def test_dashboard_section_without_the_demo_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """crm_core never imports demo: without it the dashboard keys stay in the report, as None."""
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "demo" else real_find_spec(name, *a))
    doc = bench.run_all(bench.BenchConfig(tiny=True, sections=("dashboard",)))
    assert {k: doc[k] for k in doc if k != "details"} == {
        "compare_latency_s": None, "drs_update_latency_s": None, "cold_start_s": None, "dashboard_rss_mb": None}
    assert doc["details"]["dashboard"]["available"] is False
    assert "### 4. Dashboard latencies: not measured (the demo package is not installed)" in bench.format_tables(doc)


def test_bench_imports_neither_the_dashboard_nor_the_trainer() -> None:
    """Importing crm_core.experiments.bench pulls in no demo / gradio code, and the trainer only when a run needs it."""
    code = ("import sys, crm_core.experiments.bench; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('demo', 'gradio') or m == 'crm_core.train'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_combined_report_runs_the_demo_dashboard_section(tmp_path: Path) -> None:
    """The dashboard section runs ``python -m demo.bench`` and keeps the report's keys."""
    out_json = tmp_path / "bench.json"
    assert bench.cli(["--tiny", "--sections", "dashboard", "--json", str(out_json)]) == 0
    doc = json.loads(out_json.read_text())
    assert [k for k in doc if k != "details"] == ["compare_latency_s", "drs_update_latency_s", "cold_start_s",
                                                  "dashboard_rss_mb"]
    assert math.isfinite(doc["compare_latency_s"]) and math.isfinite(doc["drs_update_latency_s"])
    assert doc["cold_start_s"] is None and doc["dashboard_rss_mb"] is None  # --tiny starts no server
    quick = json.loads((REPO / "docs" / "bench_quick.json").read_text())["details"]["dashboard"]
    expected = set(quick) - {"import_gradio_s", "memory"}  # measured with a served app only
    if "api_1thread" not in doc["details"]["dashboard"]:  # one-thread rows exist when torch runs > 1 thread
        expected -= {"api_1thread", "engine_1thread"}
    assert set(doc["details"]["dashboard"]) == expected
    assert doc["details"]["dashboard"]["checkpoints"] == ["resnet.pt", "resnet_drs.pt"]


def test_cli_end_to_end_at_toy_sizes(tmp_path: Path, grad_cam_package) -> None:
    """The real pipeline (run_all -> JSON -> Markdown -> re-render) with the fast sections at toy sizes."""
    out_json, out_md = tmp_path / "bench.json", tmp_path / "bench.md"
    assert bench.cli(["--tiny", "--sections", "gradcampp", "superpixels", "evaluation",
                      "--json", str(out_json), "--markdown", str(out_md)]) == 0
    doc = json.loads(out_json.read_text())
    for key in ("gradcampp_speedup_vs_grad_cam", "gradcampp_max_abs_diff"):
        assert isinstance(doc[key], float) and math.isfinite(doc[key]), key
    assert doc["gradcampp_max_abs_diff"] <= 1e-4
    assert doc["details"]["command"].startswith("python -m crm_core.experiments.bench --tiny")
    text = out_md.read_text()
    assert "### 1. Grad-CAM++" in text and "### 5. Superpixels" in text and "### 8. Evaluation cost" in text
    # the ratios are measured and written (their size is the benchmark's to report, not a test's: at
    # toy sizes on a busy machine one run's noise can exceed a forward pass)
    for ratio in (doc["eval_faithfulness_ratio"], doc["details"]["evaluation"]["references_ratio"]):
        assert isinstance(ratio, float) and math.isfinite(ratio) and ratio > 0
    assert bench.cli(["--from-json", str(out_json), "--markdown", str(tmp_path / "again.md")]) == 0
    assert (tmp_path / "again.md").read_text() == text


def test_the_lever_table_in_docs_quotes_its_json() -> None:
    """docs/benchmarks.md's lever section quotes docs/bench_2026-12-02_crm_step_levers.json, row by row."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "benchmarks.md").read_text()
    section = text[text.index("## The CRM step's speed levers"):text.index("## Dashboard memory under a lab's use")]
    rows = {r["lever"]: r for r in json.loads((root / "docs" / "bench_2026-12-02_crm_step_levers.json").read_text())
            ["details"]["crm_step"]["224_last2"]["rows"]}
    quoted = {"plain (no CRM)": "plain", "`fast` preset, perceptual term on": "crm_fast",
              "`fast`, VGG taps relu1_1..relu4_1": "crm_fast_vgg_to_relu4",
              "`fast`, VGG taps relu1_1..relu3_1": "crm_fast_vgg_to_relu3", "the results' recipe": "crm_recipe",
              "`exact` preset": "crm_exact"}
    lines = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| lever")]
    assert len(lines) == len(quoted)
    for start, lever in quoted.items():
        line = next(line for line in lines if line.startswith(f"| {start}"))
        step, ratio = (cell.strip().strip("*") for cell in line.split("|")[2:4])
        assert step == f"{rows[lever]['step_s']['median']:.2f}" and ratio == f"{rows[lever]['ratio_vs_plain']:.2f}"
    # the perceptual term's cost, quoted as the difference of two rows and its share of a plain step
    vgg = rows["crm_fast"]["step_s"]["median"] - rows["crm_recipe"]["step_s"]["median"]
    assert f"costs {vgg:.2f} s here" in section and f"{vgg / rows['plain']['step_s']['median']:.0%}" in section


def test_the_evaluation_cost_section_in_docs_is_its_json() -> None:
    """docs/benchmarks.md's section on the CAM metrics' evaluation cost is the table that
    docs/bench_2026-12-07_evaluation.json renders to (python -m crm_core.experiments.bench --sections evaluation)."""
    root = Path(__file__).resolve().parents[1]
    doc = json.loads((root / "docs" / "bench_2026-12-07_evaluation.json").read_text())
    table = bench.format_tables({"details": {"evaluation": doc["details"]["evaluation"]}})
    text = (root / "docs" / "benchmarks.md").read_text()
    assert table.strip().replace("### 8. Evaluation cost", "#### Evaluation cost") in text
    assert doc["details"]["command"] in text and doc["eval_faithfulness_ratio"] > 1.0
