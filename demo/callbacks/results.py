"""Results tab: docs/results.json's table, strip plot and paired comparisons, with the user's checkpoints."""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import gradio as gr
import pandas as pd

from demo import plots
from demo.callbacks.common import _model_name, user_errors
from demo.messages import safe_message
from demo.protocol import DashboardEngine, finite

log = logging.getLogger(__name__)

#: Metrics of docs/results.json the tab plots (key -> label); the table also shows train time.
RESULT_METRICS = {"miou": "CAM mIoU (val threshold)", "accuracy": "accuracy", "head": "head covered",
                  "body": "body covered", "bg_fpr": "background FP rate", "cam_dependence": "CAM dependence",
                  "pxap": "PxAP (no threshold)", "average_drop": "Average Drop %",
                  "increase_in_confidence": "Increase in Confidence %", "cam_area": "map area",
                  "deletion_auc": "deletion AUC", "insertion_auc": "insertion AUC"}
#: What the field's CAM metrics reward, and how a map can win them without being good: the tab says
#: it under the report's header when one of them is plotted.
METRIC_NOTES = {
    "pxap": "PxAP rewards ranking object pixels above background at every threshold at once (no threshold to "
            "choose); a constant map scores the object's share of the pixels, and an untrained network's map "
            "already beats brightness on it.",
    "average_drop": "Average Drop rewards a map that keeps what the classifier needs (lower is better); a map of "
                    "ones keeps everything and drops nothing, so read it beside the map's area.",
    "increase_in_confidence": "Increase in Confidence counts images whose class gets likelier on the map × image "
                              "(higher is better); removing a distracting background can raise it without the map "
                              "finding the object.",
    "cam_area": "Map area is the share of the image at or above half the map's peak: no better or worse in itself, "
                "it says whether a faithfulness score comes from covering everything.",
    "deletion_auc": "Deletion AUC rewards a map whose top pixels, blacked out first, make the class's probability "
                    "fall fastest (lower is better); black pixels are themselves off the training images, so part "
                    "of any fall is the classifier seeing something new.",
    "insertion_auc": "Insertion AUC rewards a map whose top pixels, put back first on black, restore the class "
                     "fastest (higher is better); its baseline image is as unnatural as deletion's.",
}
# Stage-2 rows (group STAGE2_GROUP) score a segmentation network, not a CAM: their "miou" goes in a
# column of its own, and the strip plot (CAM metrics) leaves them out.
STAGE2_GROUP = "stage2"
SEGMENTATION_COLUMN = "segmentation mIoU (stage 2)"
RESULT_COLUMNS = {**RESULT_METRICS, "train_s": "train time (s)"}
TABLE_COLUMNS = ("row", "group", "seeds", RESULT_COLUMNS["miou"], SEGMENTATION_COLUMN,
                 *(title for metric, title in RESULT_COLUMNS.items() if metric != "miou"))
# The report's data appearances in display order, the headline's first (the results table trains
# its rows on informative and camouflage data; random keeps its no-model rows); an appearance the
# report has and this list lacks follows them (read off the report's rows, not off crm_core.data).
APPEARANCES = ("informative", "camouflage", "random")
# Rows made by no model (crm_core.experiments.baselines): the plot draws them as reference lines, not as dots.
REFERENCE_GROUPS = ("baseline", "ceiling")
ALPHA = 0.05  # the significance level the report's paired t-tests use (crm_core.experiments.results_table.ALPHA)


def _result_metric(metric: Any) -> str:
    if metric not in RESULT_METRICS:
        raise gr.Error(f"metric must be one of {list(RESULT_METRICS)}, got {str(metric)[:40]!r}")
    return str(metric)


def _yours(user_row: dict[str, Any]) -> str:
    return f"{user_row['name']} (yours)"


def _mean_std(stats: dict[str, Any], metric: str) -> str:
    entry = stats.get(metric) or {}
    mean = finite(entry.get("mean"))
    return "–" if mean is None else f"{mean:.3f} ± {finite(entry.get('std')) or 0.0:.3f}"


def _in_table_order(rows: dict[str, dict[str, Any]], order: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """``rows`` sorted by their group's place in ``order`` (the report's own, within a group); a group
    ``order`` does not list goes before the ceilings."""
    def rank(row: dict[str, Any]) -> float:
        group = row.get("group")
        return order.index(group) if group in order else order.index("ceiling") - 0.5

    return sorted(rows.items(), key=lambda item: rank(item[1]))


def results_table(rows: dict[str, dict[str, Any]], user_rows: Sequence[dict[str, Any]],
                  order: Sequence[str]) -> pd.DataFrame:
    """One line per report row (mean ± std over seeds) and per checkpoint the user evaluated (one value).

    Rows go floor, no-model baselines, trained rows, ceilings (the report's order within a group);
    the group column names the baselines and ceilings, which come from no model. A stage-2 row's
    mIoU (its segmentation network's, on test) is in the segmentation column, not the CAM one.
    ``order``: the report's groups in order (``ResultsService.group_order``)."""
    records = []
    for key, row in _in_table_order(rows, order):
        stats = row["stats"]
        cells = {title: _mean_std(stats, metric) for metric, title in RESULT_COLUMNS.items()}
        cells[SEGMENTATION_COLUMN] = "–"
        if row.get("group") == STAGE2_GROUP:
            cells[SEGMENTATION_COLUMN], cells[RESULT_COLUMNS["miou"]] = cells[RESULT_COLUMNS["miou"]], "–"
        records.append({"row": row.get("label", key), "group": row.get("group"),
                        "seeds": max((int(s.get("n", 1)) for s in stats.values()), default=0), **cells})
    for user_row in user_rows:
        records.append({"row": _yours(user_row), "group": "yours", "seeds": 1, SEGMENTATION_COLUMN: "–", **{
            title: "–" if finite(user_row.get(metric)) is None else f"{user_row[metric]:.3f}"
            for metric, title in RESULT_COLUMNS.items()}})
    return pd.DataFrame(records, columns=list(TABLE_COLUMNS))


def results_plot(rows: dict[str, dict[str, Any]], jobs: Sequence[dict[str, Any]], user_rows: Sequence[dict[str, Any]],
                 metric: str, order: Sequence[str], reference_labels: dict[str, str] | None = None) -> Any:
    """The strip plot of ``metric``: a dot per (row, seed) of the trained rows from the report's jobs; the
    floors, and the baselines and ceilings that come from no model, as labelled lines at their mean.
    Stage-2 rows are left out: their metrics are a segmentation network's, not a CAM's. The maps
    from no model judged by the rows' classifiers (:func:`judged_references`, named by
    ``reference_labels``) are lines too."""
    points: dict[str, list[tuple[int, float]]] = {}
    for key, row in _in_table_order(rows, order):
        if row.get("group") in (*REFERENCE_GROUPS, STAGE2_GROUP):
            continue
        values = [(job.get("seed"), finite(job.get(metric))) for job in jobs if job.get("row") == key]
        if any(v is not None for _, v in values):
            points[row.get("label", key)] = [(seed, v) for seed, v in values if v is not None]
    # every untrained CAM model's row is a floor, whatever its group (a second backbone's floor is in "backbone")
    floors = [(row.get("label", key), row["stats"][metric]["mean"]) for key, row in rows.items()
              if (row.get("group") == "floor" or row.get("untrained")) and row.get("group") != STAGE2_GROUP
              and finite((row["stats"].get(metric) or {}).get("mean")) is not None]
    references = [(str(row["group"]), str(row.get("label", key)), row["stats"][metric]["mean"])
                  for key, row in rows.items() if row.get("group") in REFERENCE_GROUPS
                  and finite((row["stats"].get(metric) or {}).get("mean")) is not None]
    references += judged_references(rows, metric, reference_labels or {})
    yours = {_yours(u): u[metric] for u in user_rows if finite(u.get(metric)) is not None}
    return plots.results_figure(points, floors, RESULT_METRICS[metric], yours, references=references)


def judged_references(rows: dict[str, dict[str, Any]], metric: str,
                      labels: dict[str, str]) -> list[tuple[str, str, float]]:
    """The maps from no model that the report scored beside each CAM row, under that row's own
    classifier (a row's ``references``: the all-ones map, a random map, brightness): one line per map
    at its mean over the rows that carry ``metric`` for it -- what doing nothing scores on the
    faithfulness metrics, which need a classifier to judge a map."""
    judged: dict[str, list[float]] = {}
    for row in rows.values():
        for name, stats in (row.get("references") or {}).items():
            mean = finite(((stats or {}).get(metric) or {}).get("mean"))
            if mean is not None:
                judged.setdefault(str(name), []).append(mean)
    return [("baseline", f"{labels.get(name, name)}, under the rows' classifiers ({len(means)} rows)",
             sum(means) / len(means)) for name, means in sorted(judged.items())]


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def comparisons_markdown(summary: dict[str, Any], rows: dict[str, dict[str, Any]], metric: str, plan: str) -> str:
    """The report's paired comparisons of ``metric`` (same seeds) among ``rows``, one bullet each; an
    older report without p values is told to be remade with ``plan``."""
    labels = {key: row.get("label", key) for key, row in summary.get("rows", {}).items()}
    lines, tested = [], False
    for comparison in summary.get("comparisons", []):
        entry = (comparison.get("metrics") or {}).get(metric) or {}
        diff, se = finite(entry.get("diff")), finite(entry.get("se"))
        if comparison.get("row") not in rows or diff is None:
            continue
        tested = tested or "p" in entry
        p = finite(entry.get("p"))
        # Every comparison of a t-tested report says its p (n/a: fewer than two paired seeds);
        # an older report (no "p": its rule was 2 SE) says none.
        p_text = "" if "p" not in entry else f", {_p(p)}" if p is not None else ", p n/a"
        if finite(entry.get("p_holm")) is not None:  # one of the claims the README rests on
            p_text += f", Holm-adjusted {_p(entry['p_holm'])}; headline"
        elif entry.get("family") == "exploratory":
            p_text += "; exploratory"
        effect = entry.get("effect") and se is not None
        if entry.get("negligible"):  # p < ALPHA but below the minimal size crm_core.experiments.results asks of an effect
            verdict = f"negligible ({diff:+.3f}{p_text})"
        else:
            verdict = f"{diff:+.3f} ± {se:.3f} (effect{p_text})" if effect else f"no effect ({diff:+.3f}{p_text})"
        baseline = comparison.get("baseline")
        lines.append(f"- {labels.get(comparison['row'], comparison['row'])} vs {labels.get(baseline, baseline)}: "
                     f"{verdict}")
    if not lines:
        return ""
    rule = (f"an effect is a two-sided paired t-test, p < {ALPHA}, and at least the minimal size; negligible: "
            f"p < {ALPHA} but smaller; a headline comparison is decided on its p adjusted by Holm over the "
            "declared family, the others are exploratory" if tested else
            "an older report: there an effect is a mean difference beyond 2 standard errors and a minimal size; "
            f"remake it with `{plan}` for p-values")
    return f"**Paired comparisons of {RESULT_METRICS[metric]}** (same seeds; {rule}):\n" + "\n".join(lines)


def edges_line(summary: dict[str, Any], rows: dict[str, dict[str, Any]]) -> str:
    """How many runs chose the threshold grid's edge on val (their optimum may lie beyond it); "" when none."""
    edges = summary.get("grid_edges")
    at_edge = edges.get("at_edge") if isinstance(edges, dict) else None
    if not at_edge or not isinstance(at_edge, list):
        return ""
    grid = edges.get("grid") or []
    low, high = (finite(grid[0]), finite(grid[1])) if len(grid) >= 2 else (None, None)
    # (a job is checked against the grid it recorded: an older job's top was 0.95)
    grid_now = f" (now {low:.2f}–{high:.2f})" if low is not None and high is not None else ""
    runs = edges.get("runs")
    of = f" of {runs}" if isinstance(runs, int) else ""
    here = sum(1 for e in at_edge if isinstance(e, dict) and e.get("row") in rows)
    return (f"{len(at_edge)}{of} runs chose an edge of the threshold grid{grid_now} on val, so their best threshold "
            f"may lie beyond it ({here} of them in this appearance).")


def _report_line(report: dict[str, Any], made: dict[str, Any]) -> str:
    """One line: what the report holds, how long it took, the command that rebuilds it whole, how many
    parts it was merged from, and how many of its runs ran from uncommitted code (``made``: its provenance)."""
    meta = report.get("meta") or {}
    seeds = meta.get("seeds") or sorted({job.get("seed") for job in report["jobs"]}, key=str)
    rows = (report.get("summary") or {}).get("rows") or {}
    no_model = {key for key, row in rows.items() if row.get("group") in REFERENCE_GROUPS or row.get("model") == "none"}
    maps = sum(1 for job in report["jobs"] if job.get("row") in no_model)
    models = f"{len(report['jobs']) - maps} models" + (f" and {maps} no-model baseline/ceiling runs" if maps else "")
    parts = len(made["parts"])
    built = (f"built in {parts} parts (listed below), " if parts > 1 else "") + f"rebuilt whole by `{made['plan']}`"
    dirty = (f" {made['dirty_runs']} of the {made['runs']} runs ran from uncommitted code (revision +dirty): their "
             "numbers cannot be rerun exactly." if made["dirty_runs"] else " Every run ran from committed code.")
    return safe_message(f"{models} ({meta.get('steps', '?')} steps, seeds {seeds}, {meta.get('device', '?')}, "
                        f"{made['minutes']:.0f} min of training and evaluation at {made['jobs_at_once']} jobs at a "
                        f"time); {built}.{dirty} Threshold chosen on val, scores on test; mean ± std over seeds.")


def _parts_markdown(made: dict[str, Any]) -> str:
    """The parts a merged report was built from, each with its command (a collapsed list); "" for one part."""
    parts = made["parts"]
    if len(parts) < 2:
        return ""
    items = "\n".join(
        f"{i}. `{safe_message(str(part.get('command')))}`"
        + (f" ({part['wall_s'] / 60:.0f} min)" if finite(part.get("wall_s")) is not None else "")
        + ("" if part.get("complete", True) else " (interrupted: its finished runs were kept)")
        for i, part in enumerate(parts, 1))
    return (f"<details><summary>The {len(parts)} parts of this report, oldest first (each merged into it with "
            f"--merge)</summary>\n\n{items}\n\n</details>")


def _setting(row: dict[str, Any]) -> str:
    """The data a row is about: its appearance, or its multi-object setting (``informative_m3``);
    reports written before settings existed carry the appearance alone."""
    return str(row.get("setting") or row.get("appearance") or "random")


@user_errors
def results_view(engine: DashboardEngine, appearance: Any, metric: Any, user_rows: Any = None) -> tuple:
    """The Results tab: docs/results.json's rows of one data appearance (table, strip plot, comparisons),
    with the checkpoints the user evaluated; a missing or unreadable report is one line saying how to make it."""
    metric = _result_metric(metric)
    user_rows = [u for u in (user_rows or []) if isinstance(u, dict) and "name" in u]
    plan, order = engine.results.plan_command(), engine.results.group_order()
    try:
        report = engine.results.report()
    except (OSError, ValueError) as exc:
        log.warning("results report: %s", exc)
        report, made, status = None, None, f"{' '.join(safe_message(exc).split())}; remake it with `{plan}`"
    else:
        made = engine.results.provenance(report) if report else None  # how it was made: the header and its parts
        status = _report_line(report, made) if report else \
            f"No results report yet (docs/results.json is missing): make it with `{plan}`"
    summary = (report or {}).get("summary") or {}
    every_row = summary.get("rows") or {}
    present = {_setting(r) for r in every_row.values()}
    present |= {_setting(u) for u in user_rows}
    # Every known appearance stays a choice (an API call may ask for one the report lacks yet);
    # the default is the first one the report has.
    choices = list(dict.fromkeys([*APPEARANCES, *sorted(present, key=str)]))
    appearance = appearance if appearance in choices else next((a for a in choices if a in present), choices[0])
    rows = {key: r for key, r in every_row.items() if _setting(r) == appearance}
    mine = [u for u in user_rows if _setting(u) == appearance]
    edges = edges_line(summary, rows)
    if edges:
        status = f"{status} {safe_message(edges)}"
    if metric in METRIC_NOTES:
        status = f"{status}\n\n{METRIC_NOTES[metric]}"
    parts = _parts_markdown(made) if made else ""
    if parts:
        status = f"{status}\n\n{parts}"
    figure = (results_plot(rows, (report or {}).get("jobs") or [], mine, metric, order,
                           engine.results.reference_labels()) if rows or mine else None)
    return (gr.update(choices=choices, value=appearance), status, results_table(rows, mine, order), figure,
            comparisons_markdown(summary, rows, metric, plan))


@user_errors
def results_evaluate(engine: DashboardEngine, model: Any, appearance: Any, metric: Any, user_rows: Any,
                     progress: Callable | None = None) -> tuple:
    """Score a checkpoint as the results table scores its rows (threshold on val, scores on test); it joins
    the table and the plot as "<name> (yours)" under the appearance it was trained on."""
    model = _model_name(engine, model, "checkpoint to evaluate")
    metric = _result_metric(metric)
    if progress is not None:
        progress(0.05, desc=f"evaluating {model}: threshold on val, scores on test")
    row = engine.evaluation.results_row(model)
    rows = [u for u in (user_rows or []) if isinstance(u, dict) and u.get("name") != model] + [row]
    return (rows, *results_view(engine, _setting(row) if row.get("appearance") else appearance, metric, rows))
