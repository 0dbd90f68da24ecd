"""The Results tab: docs/results.json as a table, a strip plot and paired comparisons, plus the user's checkpoints."""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import plotly.graph_objects as go
import pytest

from demo import callbacks as cb
from demo import engine as engine_module
from demo.layout import build_app
from demo_fixtures import FakeEngine, assert_no_server_detail

SEEDS = (0, 1, 2)
# key -> (label, group, appearance, model, miou per seed); cam_dependence only where CRM is on.
ROWS = {
    "random_resnet_floor": ("resnet untrained (floor)", "floor", "random", "resnet", (0.30, 0.31, 0.32)),
    "random_resnet": ("resnet", "main", "random", "resnet", (0.40, 0.42, 0.44)),
    "random_resnet_crm": ("resnet + CRM", "main", "random", "resnet", (0.41, 0.42, 0.45)),
    "informative_resnet_drs_floor": ("resnet_drs untrained (floor)", "floor", "informative", "resnet_drs",
                                     (0.35, 0.36, 0.37)),
    "informative_resnet_floor": ("resnet untrained (floor)", "floor", "informative", "resnet", (0.33, 0.33, 0.34)),
    "informative_resnet_drs": ("resnet_drs", "main", "informative", "resnet_drs", (0.50, 0.52, 0.54)),
    "informative_resnet_drs_crm": ("resnet_drs + CRM", "main", "informative", "resnet_drs", (0.60, 0.62, 0.65)),
}


def _job(key: str, seed: int, miou: float) -> dict:
    crm = key.endswith("_crm")
    return {"row": key, "seed": seed, "checkpoint": f"/srv/ckpt/results_{key}_s{seed}.pt", "accuracy": 0.5 + miou / 2,
            "threshold": 0.4, "miou": miou, "fg_iou": miou, "bg_fpr": 0.1, "head": 0.9, "body": miou,
            "miou_best_on_test": miou + 0.05, "cam_dependence": 0.2 if crm else None, "recon_l1": None,
            "recon_l1_shuffled": None, "train_s": 10.0 * (seed + 1), "eval_s": 1.0, "notices": [], "reused": False}


def _report() -> dict:
    jobs = [_job(key, seed, mious[seed]) for key, (*_, mious) in ROWS.items() for seed in SEEDS]
    rows = {}
    for key, (label, group, appearance, model, _) in ROWS.items():
        stats = {}
        for metric in ("accuracy", "miou", "head", "body", "bg_fpr", "cam_dependence", "train_s"):
            values = [j[metric] for j in jobs if j["row"] == key and j[metric] is not None]
            if values:
                stats[metric] = {"mean": statistics.mean(values), "std": statistics.stdev(values), "n": len(values)}
        rows[key] = {"key": key, "label": label, "group": group, "appearance": appearance, "model": model,
                     "crm": key.endswith("_crm"), "overrides": {}, "untrained": group == "floor", "stats": stats}
    comparisons = [
        {"row": "random_resnet_crm", "baseline": "random_resnet",
         "metrics": {"miou": {"diff": 0.004, "se": 0.01, "n": 3, "effect": False}}},
        {"row": "informative_resnet_drs_crm", "baseline": "informative_resnet_drs",
         "metrics": {"miou": {"diff": 0.101, "se": 0.012, "n": 3, "effect": True}}},
    ]
    meta = {"command": "python -m crm_core.results --seeds 3", "wall_s": 600.0, "jobs": len(jobs), "device": "cpu",
            "steps": 200, "seeds": list(SEEDS), "crm_recipe": {}, "recipe": {}, "machine": "test"}
    return {"meta": meta, "jobs": jobs, "summary": {"rows": rows, "comparisons": comparisons}}


@pytest.fixture()
def engine(tmp_path: Path) -> FakeEngine:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_report()))
    return FakeEngine(names=("resnet", "resnet_drs", "plain", "informative_drs"), results_path=path)


def _view(engine: FakeEngine, appearance: str = "random", metric: str = "miou", user_rows: list | None = None) -> tuple:
    return cb.results_view(engine, appearance, metric, user_rows or [])


def _markers(figure: go.Figure) -> list[tuple[str, float]]:
    """(x label, y) of every dot of the strip plot (its box traces)."""
    return [(x, y) for trace in figure.data if trace.type == "box" for x, y in zip(trace.x, trace.y)]


def test_table_has_the_rows_of_the_chosen_appearance_with_mean_and_std(engine: FakeEngine) -> None:
    choices, status, table, _, _ = _view(engine, "random")
    assert choices["choices"] == ["random", "informative"] and choices["value"] == "random"
    assert list(table["row"]) == ["resnet untrained (floor)", "resnet", "resnet + CRM"]
    assert list(table["group"]) == ["floor", "main", "main"] and list(table["seeds"]) == [3, 3, 3]
    miou = table[cb.RESULT_METRICS["miou"]]
    assert all("±" in cell for cell in miou) and miou[1] == "0.420 ± 0.020"
    assert table[cb.RESULT_METRICS["cam_dependence"]].tolist() == ["–", "–", "0.200 ± 0.000"]
    assert "21 models" in status and "seeds [0, 1, 2]" in status and "\n" not in status
    _, _, informative, _, _ = _view(engine, "informative")
    assert len(informative) == 4 and "resnet_drs + CRM" in set(informative["row"])
    assert _view(engine, "no such appearance")[0]["value"] == "random"  # falls back to the first


def test_strip_plot_has_a_dot_per_row_and_seed_and_the_floor_lines(engine: FakeEngine) -> None:
    figure = _view(engine, "random", "miou")[3]
    expected = {(ROWS[key][0], ROWS[key][4][seed]) for key in ROWS if key.startswith("random") for seed in SEEDS}
    markers = _markers(figure)
    assert len(markers) == 9 and set(markers) == expected
    assert all(trace.boxpoints == "all" and trace.jitter > 0 for trace in figure.data)
    shapes, notes = figure.layout.shapes, [a.text for a in figure.layout.annotations]
    assert len(shapes) == 1 and shapes[0].line.dash == "dash" and shapes[0].y0 == pytest.approx(0.31)
    assert notes == ["untrained floor (resnet)"] and figure.layout.yaxis.title.text == cb.RESULT_METRICS["miou"]

    figure = _view(engine, "informative", "miou")[3]
    assert len(_markers(figure)) == 12
    floors = sorted((s.y0, a.text) for s, a in zip(figure.layout.shapes, figure.layout.annotations))
    assert floors == [(pytest.approx(1.0 / 3), "untrained floor (resnet)"),
                      (pytest.approx(0.36), "untrained floor (resnet_drs)")]
    # A metric that some rows lack (no decoder, no CAM dependence): only the rows that have it.
    figure = _view(engine, "informative", "cam_dependence")[3]
    assert {x for x, _ in _markers(figure)} == {"resnet_drs + CRM"} and not figure.layout.shapes


def test_paired_comparisons_say_effect_or_no_effect(engine: FakeEngine) -> None:
    assert _view(engine, "random")[4].endswith("- resnet + CRM vs resnet: no effect (+0.004)")
    text = _view(engine, "informative")[4]
    assert "- resnet_drs + CRM vs resnet_drs: +0.101 ± 0.012 (effect)" in text and "resnet + CRM" not in text
    assert _view(engine, "informative", "body")[4] == ""  # no comparison of that metric in the report


def test_an_evaluated_checkpoint_joins_the_table_and_the_plot_as_yours(engine: FakeEngine) -> None:
    seen = []
    rows, choices, _, table, figure, _ = cb.results_evaluate(engine, "resnet_drs", "informative", "miou", [],
                                                             progress=lambda *a, **k: seen.append((a, k)))
    assert seen and len(rows) == 1 and rows[0]["name"] == "resnet_drs"
    assert choices["value"] == "random"  # shown under the appearance it was trained on
    mine = table[table["row"] == "resnet_drs (yours)"]
    assert len(mine) == 1 and mine["group"].item() == "yours" and mine[cb.RESULT_METRICS["miou"]].item() == "0.550"
    stars = [t for t in figure.data if t.type == "scatter"]
    assert [(t.name, t.x[0], t.y[0]) for t in stars] == [("resnet_drs (yours)", "resnet_drs (yours)", 0.55)]
    assert len(_markers(figure)) == 9  # the report's dots are still there

    # Evaluated again: replaced, not repeated; another appearance's checkpoint is listed under its own.
    rows, *_ = cb.results_evaluate(engine, "resnet_drs", "random", "miou", rows)
    rows, choices, _, table, _, _ = cb.results_evaluate(engine, "informative_drs", "random", "miou", rows)
    assert [r["name"] for r in rows] == ["resnet_drs", "informative_drs"] and choices["value"] == "informative"
    assert "informative_drs (yours)" in set(table["row"]) and "resnet_drs (yours)" not in set(table["row"])
    assert "resnet_drs (yours)" in set(_view(engine, "random", "miou", rows)[2]["row"])


def test_evaluate_refuses_bad_input_before_evaluating(engine: FakeEngine) -> None:
    with pytest.raises(gr.Error, match="no checkpoint named"):
        cb.results_evaluate(engine, "missing", "random", "miou", [])
    with pytest.raises(gr.Error, match="metric must be one of"):
        cb.results_evaluate(engine, "resnet", "random", "evil", [])


@pytest.mark.parametrize("content, reason", [
    (None, "is missing"),
    ("{not json", "is not valid JSON"),
    (json.dumps({"jobs": [], "summary": {"rows": {"x": {"stats": []}}}}), "is not a results report"),
    (json.dumps([1, 2]), "is not a results report"),
])
def test_missing_or_unreadable_report_is_one_line_with_the_command(tmp_path: Path, content: str | None,
                                                                   reason: str) -> None:
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    choices, status, table, figure, comparisons = _view(FakeEngine(results_path=path))
    assert reason in status and "`python -m crm_core.results --seeds 3`" in status
    assert "\n" not in status and "Traceback" not in status and str(tmp_path) not in status
    assert_no_server_detail(status)
    assert table.empty and figure is None and comparisons == "" and choices["choices"] == list(cb.APPEARANCES)


def test_engine_reads_the_report_from_the_repo_root_and_scores_a_checkpoint_as_the_table_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_module.Engine("/nonexistent", "/nonexistent")
    assert engine.results_path == engine_module.REPO_ROOT / "docs" / "results.json"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_report()))
    assert engine_module.Engine("/x", "/x", results_path=path).results_report() == _report()
    assert engine_module.Engine("/x", "/x", results_path=tmp_path / "none.json").results_report() is None

    calls = []
    model = SimpleNamespace(checkpoint=SimpleNamespace(train_config={"appearance": "informative"},
                                                       model_config=SimpleNamespace(variant="resnet_drs")))

    def select_threshold(m, dataset, *, limit):
        calls.append(("threshold", dataset, limit))
        return 0.35

    def evaluate_model(m, dataset, *, limit, val_threshold, progress):
        calls.append(("evaluate", dataset, limit, val_threshold))
        return {"accuracy": 0.75, "cam_miou_best": {"miou": 0.9, "threshold": 0.2},
                "cam_miou_val_threshold": {"threshold": 0.35, "miou": 0.6, "fg_iou": 0.5, "bg_fpr": 0.12},
                "coverage_val_threshold": {"head": 0.95, "body": 0.45}, "cam_dependence": float("nan")}

    monkeypatch.setattr(engine, "model", lambda name: model)
    monkeypatch.setattr(engine_module, "dataset_for", lambda m, split: f"{split} split")
    monkeypatch.setattr(engine_module, "select_threshold", select_threshold)
    monkeypatch.setattr(engine_module, "evaluate_model", evaluate_model)
    row = engine.results_row("mine", limit=7)
    assert calls == [("threshold", "val split", 7), ("evaluate", "test split", 7, 0.35)]
    assert row == {"name": "mine", "appearance": "informative", "model": "resnet_drs", "threshold": 0.35,
                   "accuracy": 0.75, "miou": 0.6, "bg_fpr": 0.12, "head": 0.95, "body": 0.45, "cam_dependence": None}


def test_the_results_tab_reads_the_report_only_when_selected(engine: FakeEngine, monkeypatch) -> None:
    reads = []
    monkeypatch.setattr(engine, "results_report", lambda: reads.append(1))
    app = build_app(engine)
    config = app.get_config_file()
    tabs = [c for c in config["components"] if c["type"] == "tabitem" and c["props"].get("label") == "Results"]
    assert len(tabs) == 1 and not reads
    selects = [d for d in config["dependencies"] if [tabs[0]["id"], "select"] in [list(t) for t in d["targets"]]]
    assert selects  # the tab's select event starts the chain that reads the report


def test_a_negligible_difference_is_not_read_as_an_effect() -> None:
    from demo.callbacks.results import comparisons_markdown

    summary = {"rows": {"a": {"label": "A"}, "b": {"label": "B"}}, "comparisons": [
        {"row": "a", "baseline": "b", "metrics": {"miou": {"diff": 0.001, "se": 0.0001, "effect": False, "negligible": True}}}]}
    assert comparisons_markdown(summary, {"a": {}}, "miou").endswith("- A vs B: negligible (+0.001)")
