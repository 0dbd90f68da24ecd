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
from demo import evaluation as evaluation_module
from demo.layout import build_app
from demo_fixtures import FakeEngine, assert_no_server_detail

SEEDS = (0, 1, 2)
# key -> (label, group, appearance, model, miou per seed); cam_dependence only where CRM is on. The rows made
# by no model (groups baseline and ceiling, model "none") come first, as crm_core.experiments.results lists them.
ROWS = {
    "random_intensity": ("image brightness as the CAM (no model)", "baseline", "random", "none", (0.20, 0.21, 0.22)),
    "random_colour": ("per-pixel colour classifier fitted on train masks (no model)", "baseline", "random", "none",
                      (0.24, 0.25, 0.26)),
    "random_perfect_head": ("perfect head mask at the CAM grid", "ceiling", "random", "none", (0.55, 0.56, 0.57)),
    "random_perfect_object": ("perfect object mask at the CAM grid (ceiling)", "ceiling", "random", "none",
                              (0.80, 0.81, 0.82)),
    "random_resnet_floor": ("resnet untrained (floor)", "floor", "random", "resnet", (0.30, 0.31, 0.32)),
    "random_resnet": ("resnet", "main", "random", "resnet", (0.40, 0.42, 0.44)),
    "random_resnet_crm": ("resnet + CRM", "main", "random", "resnet", (0.41, 0.42, 0.45)),
    "informative_resnet_drs_floor": ("resnet_drs untrained (floor)", "floor", "informative", "resnet_drs",
                                     (0.35, 0.36, 0.37)),
    "informative_resnet_floor": ("resnet untrained (floor)", "floor", "informative", "resnet", (0.33, 0.33, 0.34)),
    "informative_resnet_drs": ("resnet_drs", "main", "informative", "resnet_drs", (0.50, 0.52, 0.54)),
    "informative_resnet_drs_crm": ("resnet_drs + CRM", "main", "informative", "resnet_drs", (0.60, 0.62, 0.65)),
    "camouflage_intensity": ("image brightness as the CAM (no model)", "baseline", "camouflage", "none",
                             (0.53, 0.54, 0.55)),
    "camouflage_resnet_floor": ("resnet untrained (floor)", "floor", "camouflage", "resnet", (0.28, 0.29, 0.30)),
    "camouflage_resnet": ("resnet", "main", "camouflage", "resnet", (0.35, 0.36, 0.37)),
}
NO_MODEL = {key for key, (_, group, *_) in ROWS.items() if group in ("baseline", "ceiling")}


def _job(key: str, seed: int, miou: float) -> dict:
    if key in NO_MODEL:  # crm_core.experiments.results.score_row_baseline: no accuracy, no CAM dependence, nothing trained
        return {"row": key, "seed": seed, "threshold": 0.99 if key == "random_intensity" and seed == 2 else 0.5,
                "miou": miou, "fg_iou": miou, "bg_fpr": 0.2, "head": 0.7, "body": miou, "train_s": 0.0,
                "eval_s": 0.5}
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
            values = [j[metric] for j in jobs if j["row"] == key and j.get(metric) is not None]
            if values:
                stats[metric] = {"mean": statistics.mean(values), "std": statistics.stdev(values), "n": len(values)}
        rows[key] = {"key": key, "label": label, "group": group, "appearance": appearance, "model": model,
                     "crm": key.endswith("_crm"), "overrides": {}, "untrained": group == "floor", "stats": stats}
    comparisons = [
        {"row": "random_resnet_crm", "baseline": "random_resnet",
         "metrics": {"miou": {"diff": 0.004, "se": 0.01, "n": 3, "t": 0.4, "p": 0.728, "effect": False,
                              "negligible": False}}},
        {"row": "random_resnet_crm", "baseline": "random_intensity",
         "metrics": {"miou": {"diff": 0.217, "se": 0.01, "n": 3, "t": 21.7, "p": 0.0021, "effect": True,
                              "negligible": False}}},
        {"row": "informative_resnet_drs_crm", "baseline": "informative_resnet_drs",
         "metrics": {"miou": {"diff": 0.101, "se": 0.012, "n": 3, "t": 8.4, "p": 0.0139, "effect": True,
                              "negligible": False}}},
    ]
    meta = {"command": "python -m crm_core.experiments.results --seeds 3", "wall_s": 600.0, "jobs": len(jobs), "device": "cpu",
            "steps": 200, "seeds": list(SEEDS), "crm_recipe": {}, "recipe": {}, "machine": "test"}
    grid_edges = {"grid": [0.0, 0.99, 100], "runs": len(jobs),
                  "at_edge": [{"row": j["row"], "seed": j["seed"]} for j in jobs if j["threshold"] in (0.0, 0.99)]}
    return {"meta": meta, "jobs": jobs, "summary": {"rows": rows, "comparisons": comparisons, "grid_edges": grid_edges}}


@pytest.fixture()
def engine(tmp_path: Path) -> FakeEngine:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_report()))
    return FakeEngine(names=("resnet", "resnet_drs", "plain", "informative_drs"), results_path=path)


def _view(engine: FakeEngine, appearance: str = "random", metric: str = "miou", user_rows: list | None = None) -> tuple:
    return cb.results_view(engine, appearance, metric, user_rows or [])


def _markers(figure: go.Figure) -> list[tuple[str, float]]:
    """(row label, value) of every dot of the strip plot (its box traces: rows on y, the metric on x)."""
    return [(y, x) for trace in figure.data if trace.type == "box" for y, x in zip(trace.y, trace.x)]


def _lines(figure: go.Figure) -> list[tuple[str, float, str]]:
    """(dash, x, legend name) of every vertical line, in drawing order: each is a full-height shape and a
    legend entry in the same dash (a line trace with no points)."""
    shapes = [shape for shape in figure.layout.shapes if shape.type == "line"]
    entries = [t for t in figure.data if t.type == "scatter" and t.mode == "lines" and t.showlegend]
    assert len(shapes) == len(entries)
    for shape, entry in zip(shapes, entries):
        assert shape.x0 == shape.x1 and shape.yref == "y domain" and (shape.y0, shape.y1) == (0, 1)
        assert entry.line.dash == shape.line.dash and entry.line.color == shape.line.color
        assert shape.name == entry.name
    return [(shape.line.dash, shape.x0, entry.name) for shape, entry in zip(shapes, entries)]


def _references(figure: go.Figure) -> list[tuple[str, float, str]]:
    """The dotted lines: the baseline and ceiling rows."""
    return [line for line in _lines(figure) if line[0] == "dot"]


def test_table_has_the_rows_of_the_chosen_appearance_with_mean_and_std(engine: FakeEngine) -> None:
    choices, status, table, _, _ = _view(engine, "random")
    assert choices["choices"] == ["informative", "camouflage", "random"] and choices["value"] == "random"
    # floor, no-model cues, trained rows, ceilings; the group column names the rows made by no model
    assert list(table["row"]) == ["resnet untrained (floor)", "image brightness as the CAM (no model)",
                                  "per-pixel colour classifier fitted on train masks (no model)", "resnet",
                                  "resnet + CRM", "perfect head mask at the CAM grid",
                                  "perfect object mask at the CAM grid (ceiling)"]
    assert list(table["group"]) == ["floor", "baseline", "baseline", "main", "main", "ceiling", "ceiling"]
    assert list(table["seeds"]) == [3] * 7
    miou = table[cb.RESULT_METRICS["miou"]]
    assert all("±" in cell for cell in miou) and miou[3] == "0.420 ± 0.020" and miou[1] == "0.210 ± 0.010"
    assert table[cb.RESULT_METRICS["cam_dependence"]].tolist() == ["–", "–", "–", "–", "0.200 ± 0.000", "–", "–"]
    assert table[cb.RESULT_METRICS["accuracy"]].tolist()[1:3] == ["–", "–"]  # no model, no accuracy
    assert "27 models and 15 no-model baseline/ceiling runs" in status and "seeds [0, 1, 2]" in status
    assert "\n" not in status
    _, _, informative, _, _ = _view(engine, "informative")
    assert len(informative) == 4 and "resnet_drs + CRM" in set(informative["row"])
    assert _view(engine, "no such appearance")[0]["value"] == "informative"  # falls back to the first


def test_every_appearance_of_the_report_is_offered_in_display_order(engine: FakeEngine, tmp_path: Path) -> None:
    choices, _, table, figure, _ = _view(engine, "camouflage")
    assert choices["value"] == "camouflage" and "camouflage" in choices["choices"]
    assert list(table["row"]) == ["resnet untrained (floor)", "image brightness as the CAM (no model)", "resnet"]
    assert {x for x, _ in _markers(figure)} == {"resnet untrained (floor)", "resnet"}  # floors keep their dots
    assert _references(figure) == [("dot", pytest.approx(0.54), "image brightness as the CAM (no model): 0.540")]
    # An appearance the dashboard does not know follows the known ones; a report with only that one opens on it.
    report = _report()
    report["summary"]["rows"] = {"x": {**report["summary"]["rows"]["random_resnet"], "appearance": "zebra"},
                                 "y": {**report["summary"]["rows"]["random_resnet"], "appearance": "aardvark"}}
    path = tmp_path / "other.json"
    path.write_text(json.dumps(report))
    choices = _view(FakeEngine(results_path=path), "random")[0]
    assert choices["choices"] == ["informative", "camouflage", "random", "aardvark", "zebra"]
    assert _view(FakeEngine(results_path=path), "nothing")[0]["value"] == "aardvark"


def test_strip_plot_has_a_dot_per_row_and_seed_and_the_floor_lines(engine: FakeEngine) -> None:
    figure = _view(engine, "random", "miou")[3]
    expected = {(ROWS[key][0], ROWS[key][4][seed]) for key in ROWS
                if key.startswith("random") and key not in NO_MODEL for seed in SEEDS}
    markers = _markers(figure)
    assert len(markers) == 9 and set(markers) == expected
    assert all(trace.boxpoints == "all" and trace.jitter > 0 for trace in figure.data if trace.type == "box")
    floors = [line for line in _lines(figure) if line[0] == "dash"]
    assert floors == [("dash", pytest.approx(0.31), "resnet untrained (floor): 0.310")]
    assert figure.layout.xaxis.title.text == cb.RESULT_METRICS["miou"]
    # rows down the y axis in the table's order, labels horizontal; the lines' names in a legend, not
    # as notes beside the lines (close values would overlap)
    assert figure.layout.yaxis.autorange == "reversed" and not figure.layout.xaxis.tickangle
    assert not [a for a in figure.layout.annotations] and figure.layout.legend.orientation == "h"

    figure = _view(engine, "informative", "miou")[3]
    assert len(_markers(figure)) == 12 and not _references(figure)  # no baseline rows in this appearance
    floors = sorted((x, name) for _, x, name in _lines(figure))
    assert floors == [(pytest.approx(1.0 / 3), "resnet untrained (floor): 0.333"),
                      (pytest.approx(0.36), "resnet_drs untrained (floor): 0.360")]
    # A metric that some rows lack (no decoder, no CAM dependence): only the rows that have it.
    figure = _view(engine, "informative", "cam_dependence")[3]
    assert {x for x, _ in _markers(figure)} == {"resnet_drs + CRM"} and not figure.layout.shapes


def test_baselines_and_ceilings_are_labelled_lines_not_dots(engine: FakeEngine) -> None:
    figure = _view(engine, "random", "miou")[3]
    labels = {ROWS[key][0] for key in NO_MODEL}
    assert not labels & {x for x, _ in _markers(figure)}  # no dot of a row made by no model
    assert sorted(_references(figure), key=lambda line: line[1]) == [
        ("dot", pytest.approx(0.21), "image brightness as the CAM (no model): 0.210"),
        ("dot", pytest.approx(0.25), "per-pixel colour classifier fitted on train masks (no model): 0.250"),
        ("dot", pytest.approx(0.56), "perfect head mask at the CAM grid: 0.560"),
        ("dot", pytest.approx(0.81), "perfect object mask at the CAM grid (ceiling): 0.810"),
    ]
    assert len(figure.layout.shapes) == 5  # and the floor, dashed as before
    colours = {round(shape.x0, 2): shape.line.color for shape in figure.layout.shapes if shape.line.dash == "dot"}
    assert colours[0.21] != colours[0.81]  # a cue and a ceiling read apart
    # A metric the no-model rows lack (accuracy, CAM dependence) draws no line for them.
    assert not _references(_view(engine, "random", "accuracy")[3])
    assert not _references(_view(engine, "random", "cam_dependence")[3])
    assert [line[2] for line in _references(_view(engine, "random", "head")[3])] == [
        f"{ROWS[key][0]}: 0.700" for key in ROWS if key in NO_MODEL and key.startswith("random")]
    # The user's checkpoint still joins as a star beside them.
    rows = cb.results_evaluate(engine, "resnet", "random", "miou", [])[0]
    figure = _view(engine, "random", "miou", rows)[3]
    assert [t.name for t in figure.data if t.type == "scatter" and t.mode == "markers"] == ["resnet (yours)"]
    assert len(_references(figure)) == 4


def test_stage2_rows_have_their_own_mIoU_column_and_stay_off_the_cam_plot(tmp_path: Path) -> None:
    report = _report()
    stage2 = {"miou": {"mean": 0.61, "std": 0.02, "n": 3}, "masks_miou": {"mean": 0.55, "std": 0.01, "n": 3},
              "train_s": {"mean": 90.0, "std": 1.0, "n": 3}}
    report["summary"]["rows"]["informative_stage2_resnet"] = {
        "key": "informative_stage2_resnet", "label": "stage 2 on resnet's pseudo masks", "group": "stage2",
        "appearance": "informative", "model": "resnet", "crm": False, "overrides": {}, "untrained": False,
        "stats": stage2}
    report["jobs"] += [{"row": "informative_stage2_resnet", "seed": seed, "miou": 0.61, "masks_miou": 0.55,
                        "train_s": 90.0} for seed in SEEDS]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(report))
    _, _, table, figure, _ = _view(FakeEngine(results_path=path), "informative")
    line = table[table["row"] == "stage 2 on resnet's pseudo masks"].iloc[0]
    assert line[cb.SEGMENTATION_COLUMN] == "0.610 ± 0.020" and line[cb.RESULT_METRICS["miou"]] == "–"
    cam_rows = table[table["group"] != "stage2"]
    assert (cam_rows[cb.SEGMENTATION_COLUMN] == "–").all() and (cam_rows[cb.RESULT_METRICS["miou"]] != "–").all()
    assert "stage 2 on resnet's pseudo masks" not in {x for x, _ in _markers(figure)} and len(_markers(figure)) == 12


def test_runs_at_the_threshold_grids_edge_are_counted(engine: FakeEngine, tmp_path: Path) -> None:
    status = _view(engine, "random")[1]
    assert "1 of 42 runs chose an edge of the threshold grid (now 0.00–0.99) on val" in status
    assert "(1 of them in this appearance)" in status and "\n" not in status
    assert "(0 of them in this appearance)" in _view(engine, "informative")[1]
    report = _report()
    report["summary"]["grid_edges"]["at_edge"] = []
    path = tmp_path / "none_at_edge.json"
    path.write_text(json.dumps(report))
    assert "edge" not in _view(FakeEngine(results_path=path), "random")[1]
    del report["summary"]["grid_edges"]  # an older report
    path.write_text(json.dumps(report))
    assert "edge" not in _view(FakeEngine(results_path=path), "random")[1]


def test_paired_comparisons_say_effect_or_no_effect_with_p(engine: FakeEngine) -> None:
    text = _view(engine, "random")[4]
    assert "two-sided paired t-test, p < 0.05, and at least the minimal size" in text
    assert "2 standard errors" not in text
    assert "- resnet + CRM vs resnet: no effect (+0.004, p = 0.728)" in text
    assert text.endswith("- resnet + CRM vs image brightness as the CAM (no model): +0.217 ± 0.010 (effect, p = 0.002)")
    text = _view(engine, "informative")[4]
    assert "- resnet_drs + CRM vs resnet_drs: +0.101 ± 0.012 (effect, p = 0.014)" in text and "resnet + CRM" not in text
    assert _view(engine, "informative", "body")[4] == ""  # no comparison of that metric in the report


def test_an_evaluated_checkpoint_joins_the_table_and_the_plot_as_yours(engine: FakeEngine) -> None:
    seen = []
    rows, choices, _, table, figure, _ = cb.results_evaluate(engine, "resnet_drs", "informative", "miou", [],
                                                             progress=lambda *a, **k: seen.append((a, k)))
    assert seen and len(rows) == 1 and rows[0]["name"] == "resnet_drs"
    assert choices["value"] == "random"  # shown under the appearance it was trained on
    mine = table[table["row"] == "resnet_drs (yours)"]
    assert len(mine) == 1 and mine["group"].item() == "yours" and mine[cb.RESULT_METRICS["miou"]].item() == "0.550"
    stars = [t for t in figure.data if t.type == "scatter" and t.mode == "markers"]
    assert [(t.name, t.y[0], t.x[0]) for t in stars] == [("resnet_drs (yours)", "resnet_drs (yours)", 0.55)]
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
    assert reason in status and "`python -m crm_core.experiments.results --plan --jobs 2`" in status
    assert "\n" not in status and "Traceback" not in status and str(tmp_path) not in status
    assert_no_server_detail(status)
    assert table.empty and figure is None and comparisons == "" and choices["choices"] == list(cb.APPEARANCES)


def test_engine_reads_the_report_from_the_repo_root_and_scores_a_checkpoint_as_the_table_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = engine_module.Engine("/nonexistent", "/nonexistent")
    assert engine.results.results_path == engine_module.REPO_ROOT / "docs" / "results.json"
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_report()))
    assert engine_module.Engine("/x", "/x", results_path=path).results.report() == _report()
    assert engine_module.Engine("/x", "/x", results_path=tmp_path / "none.json").results.report() is None

    calls = []
    model = SimpleNamespace(checkpoint=SimpleNamespace(train_config={"appearance": "informative"},
                                                       model_config=SimpleNamespace(variant="resnet_drs")))

    def evaluate_protocol(m, **protocol):
        calls.append((m, protocol))
        return {"accuracy": 0.75, "cam_miou_best": {"miou": 0.9, "threshold": 0.2},
                "cam_miou_val_threshold": {"threshold": 0.35, "miou": 0.6, "fg_iou": 0.5, "bg_fpr": 0.12},
                "coverage_val_threshold": {"head": 0.95, "body": 0.45}, "cam_dependence": float("nan"),
                "pxap": 0.7, "average_drop": 31.5, "cam_area": 0.25, "increase_in_confidence": 10.0}

    monkeypatch.setattr(engine.checkpoints, "model", lambda name: model)  # the store every service loads models from
    monkeypatch.setattr(evaluation_module, "evaluate_protocol", evaluate_protocol)
    row = engine.evaluation.results_row("mine", limit=7)
    assert calls == [(model, {"limit": 7, "val_limit": 7})]  # the protocol's defaults: val threshold, test report
    assert row == {"name": "mine", "appearance": "informative", "setting": "informative", "model": "resnet_drs",
                   "threshold": 0.35, "accuracy": 0.75, "miou": 0.6, "bg_fpr": 0.12, "head": 0.95, "body": 0.45, "cam_dependence": None,
                   "pxap": 0.7, "average_drop": 31.5, "increase_in_confidence": 10.0, "cam_area": 0.25}


def test_faithfulness_metrics_draw_the_maps_from_no_model_under_the_rows_classifiers(tmp_path: Path) -> None:
    """Average Drop needs a classifier to judge a map, so its baselines are the maps from no model
    the report scored beside each CAM row (a row's ``references``): one dotted line per map at its
    mean over the rows, named as the report names it; the tab says what the metric rewards and
    its pitfall. The menu offers every faithfulness metric."""
    report = _report()
    rows = report["summary"]["rows"]
    for key, drop in (("random_resnet", 4.0), ("random_resnet_crm", 6.0)):
        rows[key]["stats"]["average_drop"] = {"mean": drop, "std": 0.5, "n": 3}
        rows[key]["references"] = {"all_ones": {"average_drop": {"mean": 0.0, "std": 0.0, "n": 3}},
                                   "random": {"average_drop": {"mean": 40.0 + drop, "std": 1.0, "n": 3}}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(report))
    _, status, _, figure, _ = _view(FakeEngine(results_path=path), "random", "average_drop")
    assert sorted((x, name) for _, x, name in _references(figure)) == [
        (pytest.approx(0.0), "all ones, under the rows' classifiers (2 rows): 0.000"),
        (pytest.approx(45.0), "random map, under the rows' classifiers (2 rows): 45.000")]
    assert cb.METRIC_NOTES["average_drop"] in status and "map of ones" in status
    assert len(_references(_view(FakeEngine(results_path=path), "random", "miou")[3])) == 4  # the rows made by no model
    assert cb.METRIC_NOTES["average_drop"] not in _view(FakeEngine(results_path=path), "random", "miou")[1]
    assert {"pxap", "average_drop", "increase_in_confidence", "cam_area", "deletion_auc",
            "insertion_auc"} <= set(cb.RESULT_METRICS) == set(cb.METRIC_NOTES) | {
            "miou", "accuracy", "head", "body", "bg_fpr", "cam_dependence"}


def test_the_results_tab_reads_the_report_only_when_selected(engine: FakeEngine, monkeypatch) -> None:
    reads = []
    monkeypatch.setattr(engine.results, "report", lambda: reads.append(1))
    app = build_app(engine)
    config = app.get_config_file()
    tabs = [c for c in config["components"] if c["type"] == "tabitem" and c["props"].get("label") == "Results"]
    assert len(tabs) == 1 and not reads
    selects = [d for d in config["dependencies"] if [tabs[0]["id"], "select"] in [list(t) for t in d["targets"]]]
    assert selects  # the tab's select event starts the chain that reads the report


def test_a_negligible_difference_is_not_read_as_an_effect() -> None:
    from demo.callbacks.results import comparisons_markdown

    def summary(**metric):
        return {"rows": {"a": {"label": "A"}, "b": {"label": "B"}}, "comparisons": [
            {"row": "a", "baseline": "b", "metrics": {"miou": {"diff": 0.001, "se": 0.0001, **metric}}}]}

    text = comparisons_markdown(summary(p=0.0004, effect=False, negligible=True), {"a": {}}, "miou", "REMAKE")
    assert text.endswith("- A vs B: negligible (+0.001, p < 0.001)") and "negligible: p < 0.05 but smaller" in text
    # Fewer than two paired seeds: no p (NaN in the report), never an effect.
    text = comparisons_markdown(summary(p=float("nan"), effect=False, negligible=False), {"a": {}}, "miou", "REMAKE")
    assert text.endswith("- A vs B: no effect (+0.001, p n/a)")
    # An older report (its rule was 2 SE, no p): said so, with the command that remakes it.
    text = comparisons_markdown(summary(effect=False, negligible=True), {"a": {}}, "miou", "REMAKE")
    assert text.endswith("- A vs B: negligible (+0.001)") and "an older report" in text and "`REMAKE` for p-values" in text


def test_headline_comparisons_show_their_holm_p_and_the_rest_say_exploratory(tmp_path: Path) -> None:
    report = _report()
    headline, exploratory = report["summary"]["comparisons"][0]["metrics"]["miou"], \
        report["summary"]["comparisons"][1]["metrics"]["miou"]
    headline.update(family="headline", p_holm=0.9)
    exploratory.update(family="exploratory")
    path = tmp_path / "results.json"
    path.write_text(json.dumps(report))
    text = _view(FakeEngine(results_path=path), "random")[4]
    assert "- resnet + CRM vs resnet: no effect (+0.004, p = 0.728, Holm-adjusted p = 0.900; headline)" in text
    assert "(effect, p = 0.002; exploratory)" in text and "declared family" in text


def test_the_header_says_how_the_repositorys_report_was_made() -> None:
    """Held to docs/results.json itself: the command that rebuilds the table whole, each part it was
    merged from (walked here through meta.merged_with), and how many runs ran from uncommitted code."""
    from crm_core.experiments.results import get_args_parser
    from demo.messages import safe_message

    path = Path(__file__).resolve().parent.parent / "docs" / "results.json"
    report = json.loads(path.read_text())
    status = _view(FakeEngine(results_path=path), "informative")[1]
    plan = FakeEngine(results_path=path).results.plan_command()
    assert f"rebuilt whole by `{plan}`" in status
    assert get_args_parser().parse_args(plan.split()[3:]).plan  # a real option of the runner
    parts, meta = [], report["meta"]
    while meta:
        parts.append(meta["command"])
        meta = meta.get("merged_with")
    assert len(parts) > 1 and f"built in {len(parts)} parts" in status
    listed = status[status.index("<details>"):]
    assert f"The {len(parts)} parts of this report, oldest first" in listed
    positions = [listed.index(f"`{safe_message(command)}`") for command in reversed(parts)]
    assert positions == sorted(positions)  # oldest first
    dirty = sum("+dirty" in str(job.get("revision")) for job in report["jobs"])
    assert (f"{dirty} of the {len(report['jobs'])} runs ran from uncommitted code" in status if dirty
            else "Every run ran from committed code." in status)
    # A report of one part (no merge) has no list, and says it all on one line.
    single = _view(FakeEngine(results_path=path.parent / "missing.json"), "informative")[1]
    assert plan in single and "<details>" not in single
