"""What a results report says, rendered from its summary (:mod:`crm_core.experiments.results_summary`):
the report as markdown -- every run (docs/results_runs.md), the tables docs/results.md reads
(:func:`results_block`) and README.md's headline (:func:`headline_block`) -- and how it was made
(its parts). Pure functions of the report's JSON: nothing here trains or evaluates.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from crm_core.atomic import atomic_write_text
from crm_core.data.synthetic import APPEARANCES
from crm_core.metrics import DELETION_STEPS
from crm_core.recipes import RESULTS
from crm_core.experiments.results_table import (ALPHA, APPEARANCE_TITLES, CAM_TABLE_METRICS, COMPARED,
                                                DELETION_METRICS, FAITHFULNESS_COLUMNS,
                                                FAITHFULNESS_METRICS, HEADLINE_BEGIN, HEADLINE_COLUMNS,
                                                HEADLINE_END, HEADLINE_LINES, METRICS, NEGLIGIBLE, PLAN_COMMAND,
                                                REFERENCE_LABELS, RESULTS_BEGIN, RESULTS_COMPARISONS, RESULTS_END,
                                                RESULTS_METRICS, ROW_BY_KEY, ROWS, SEG_RECIPE, SETTINGS,
                                                setting_label, STAGE2_METRICS, TABLE_ORDER)


FAITHFULNESS_TITLE = ("Threshold-free and faithfulness metrics: PxAP; Average Drop and Increase in Confidence "
                      "of the map times the image under the row's own classifier; the map's area at half its peak")


def faithfulness_table(summary: dict[str, Any], appearance: str) -> list[str]:
    """PxAP, faithfulness and map area of one appearance's rows that have them, beside the maps from
    no model judged by the same classifier, and the paired differences over the table's pairs."""
    keys = [r.key for g in TABLE_ORDER for r in ROWS if r.group == g and r.setting == appearance
            and "pxap" in summary["rows"].get(r.key, {}).get("stats", {})]
    if not any("average_drop" in summary["rows"][k]["stats"] for k in keys):
        return []
    lines = [*beside_references(summary, keys, FAITHFULNESS_COLUMNS, ("pxap", "average_drop", "cam_area")), ""]
    for key in keys:
        for name, metrics in summary["rows"][key].get("vs_references", {}).items():
            cells = ", ".join(f"{METRICS[m][0]} {comparison_cell(metrics[m])}" for m in FAITHFULNESS_METRICS
                              if m in metrics)
            lines.append(f"- {summary['rows'][key]['label']} − {REFERENCE_LABELS[name]} under its classifier "
                         f"(exploratory): {cells}")
    for c in summary["comparisons"]:
        if c["row"] in keys and c["baseline"] in keys and any(m in c["metrics"] for m in FAITHFULNESS_METRICS):
            cells = ", ".join(f"{METRICS[m][0]} {comparison_cell(c['metrics'][m])}" for m in FAITHFULNESS_METRICS
                              if m in c["metrics"])
            lines.append(f"- {summary['rows'][c['row']]['label']} − {summary['rows'][c['baseline']]['label']} "
                         f"(exploratory): {cells}")
    return lines


DELETION_TITLE = (f"Deletion and insertion (RISE, {DELETION_STEPS} steps, black baseline; `--faithfulness full`, on "
                  "the first test images, as many as its images column says): the area under the class's probability "
                  "as the map's top pixels are blacked out (lower is better) or put back on black (higher is better)")


def deletion_table(summary: dict[str, Any], appearance: str) -> list[str]:
    """The deletion and insertion AUCs of one appearance's rows run with ``--faithfulness full``,
    beside those of the maps from no model ranking the same images under the same classifier (a
    random order, brightness, and raster order: the all-ones map's ties)."""
    keys = [r.key for g in TABLE_ORDER for r in ROWS if r.group == g and r.setting == appearance
            and "deletion_auc" in summary["rows"].get(r.key, {}).get("stats", {})]
    return beside_references(summary, keys, (*DELETION_METRICS, "deletion_images"), DELETION_METRICS) if keys else []


def beside_references(summary: dict[str, Any], keys: list[str], columns: tuple[str, ...],
                      reference_metrics: tuple[str, ...]) -> list[str]:
    """A table of ``keys``' rows: their ``columns`` (mean ± std over seeds), then, for each map from
    no model scored beside them under the same classifier, its ``reference_metrics`` in one cell."""
    refs = list(REFERENCE_LABELS)
    named = " / ".join(METRICS[m][0] for m in reference_metrics)
    lines = ["| row | seeds | " + " | ".join(METRICS[m][0] for m in columns) + " | "
             + " | ".join(f"{REFERENCE_LABELS[r]}: {named}" for r in refs) + " |",
             "| --- | --- | " + " | ".join("---" for _ in (*columns, *refs)) + " |"]
    for key in keys:
        row = summary["rows"][key]
        ref_cells = [" / ".join(_cell(row.get("references", {}).get(r, {}), m) for m in reference_metrics)
                     for r in refs]
        lines.append(f"| {row['label']} | {row['stats'][columns[0]]['n']} | "
                     + " | ".join(_cell(row["stats"], m) for m in columns) + " | " + " | ".join(ref_cells) + " |")
    return lines


STAGE2_TITLE = "Stage 2: a segmentation network trained on the pseudo masks (informative appearance)"


def stage2_title(setting: str) -> str:
    """The stage-2 table's title for the rows of ``setting``."""
    return STAGE2_TITLE if setting == "informative" else f"{STAGE2_TITLE.split(' (')[0]} ({APPEARANCE_TITLES[setting]})"


def stage2_sections(summary: dict[str, Any], heading: str) -> list[str]:
    """:func:`stage2_table` of every setting that has stage-2 rows, each under ``heading`` (with ``title``)."""
    lines: list[str] = []
    for setting in SETTINGS:
        lines += titled(heading.format(title=stage2_title(setting)), stage2_table(summary, setting))
    return lines


def setting_metrics(setting: str, metrics: tuple[str, ...]) -> tuple[str, ...]:
    """A table's columns: with several objects per image, the class confusion beside them."""
    return metrics if setting in APPEARANCES else (*metrics, "confusion")


def titled(heading: str, table: list[str]) -> list[str]:
    """``table`` under ``heading``, with the blank lines around it; nothing for an empty table."""
    return [heading, "", *table, ""] if table else []


def faithfulness_sections(summary: dict[str, Any], heading: str) -> list[str]:
    """:func:`faithfulness_table` of every appearance that has one, each under ``heading``
    (formatted with ``title`` and ``appearance``)."""
    lines: list[str] = []
    for appearance in APPEARANCES:
        lines += titled(heading.format(title=FAITHFULNESS_TITLE, appearance=appearance),
                        faithfulness_table(summary, appearance))
        lines += titled(heading.format(title=DELETION_TITLE, appearance=appearance), deletion_table(summary, appearance))
    return lines


def stage2_sources_line(summary: dict[str, Any]) -> str:
    sources = summary.get("stage2_sources") or {}
    pairs = sources.get("pairs") or []
    if not pairs:
        return ""
    if sources["identical"] == len(pairs):
        return (f"Every stage-2 job's CAM model reproduces the table's own job of its row and seed "
                f"({len(pairs)} of {len(pairs)}, CAM mIoU identical).")
    return (f"Stage-2 source CAMs against the table's own job of the same row and seed: {sources['identical']} of "
            f"{len(pairs)} identical, largest CAM mIoU difference {sources['largest']:.3f} (retrained copies, "
            "not the table's checkpoints: a copy matches only at the same code, seed and thread count).")


def _cell(stats: dict[str, Any], metric: str) -> str:
    if metric not in stats:
        return "–"
    fmt = METRICS[metric][1]
    s = stats[metric]
    return fmt.format(s["mean"]) + (f" ± {fmt.format(s['std']).lstrip('+')}" if s["n"] > 1 else "")


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def comparison_cell(m: dict[str, Any] | None) -> str:
    """One metric of a paired comparison, as the tables and the README print it (a headline
    comparison adds its Holm-adjusted p, on which its effect is decided)."""
    if m is None:
        return "–"
    p = m.get("p", float("nan"))
    ps = _p(p) + (f", Holm {_p(m['p_holm']).replace('p ', 'p_adj ')}" if "p_holm" in m else "")
    if m.get("negligible"):
        return f"negligible ({m['diff']:+.3f}, {ps})"
    if not m["effect"]:
        return f"no effect ({m['diff']:+.3f}, {ps})" if math.isfinite(p) else f"no effect ({m['diff']:+.3f})"
    return f"**{m['diff']:+.3f}** ± {m['se']:.3f} ({ps})"


def ceiling_share(summary: dict[str, Any], key: str) -> float | None:
    """Where a trained row's mIoU sits between its untrained floor (0) and the perfect object mask
    at the CAM grid (1); None for rows that have no floor or no ceiling measured."""
    row = summary["rows"][key]
    # its floor: the untrained row of the same appearance, variant and backbone
    setting = ROW_BY_KEY[key].setting
    floor = next((r for k, r in summary["rows"].items() if r.get("untrained") and ROW_BY_KEY[k].setting == setting
                  and r["model"] == row["model"] and r["overrides"].get("arch") == row["overrides"].get("arch")),
                 None)
    ceiling = summary["rows"].get(f"{setting}_perfect_object")
    if row["group"] in ("floor", "baseline", "ceiling") or floor is None or ceiling is None:
        return None
    lo, hi = floor["stats"]["miou"]["mean"], ceiling["stats"]["miou"]["mean"]
    return (row["stats"]["miou"]["mean"] - lo) / (hi - lo) if hi > lo else None


def appearance_table(summary: dict[str, Any], appearance: str, metrics: tuple[str, ...] = CAM_TABLE_METRICS) -> list[str]:
    """The markdown lines of one appearance's table (a setting of :data:`SETTINGS`): floor,
    baselines, trained rows, ceilings."""
    keys = [r.key for g in TABLE_ORDER for r in ROWS
            if r.group == g and r.setting == appearance and r.key in summary["rows"]]
    if not keys:
        return []
    metrics = setting_metrics(appearance, metrics)
    lines = ["| row | seeds | " + " | ".join(METRICS[m][0] for m in metrics) + " | floor → ceiling |",
             "| --- | --- | " + " | ".join("---" for _ in metrics) + " | --- |"]
    for key in keys:
        row = summary["rows"][key]
        n = max(s["n"] for s in row["stats"].values())
        tagged = row["group"] in ("main", "floor") or f"({row['group']})" in row["label"]  # labels that say it
        group = "" if tagged else f" *({row['group']})*"
        share = ceiling_share(summary, key)
        lines.append(f"| {row['label']}{group} | {n} | " + " | ".join(_cell(row["stats"], m) for m in metrics)
                     + f" | {'–' if share is None else f'{share:.0%}'} |")
    return lines


def stage2_table(summary: dict[str, Any], setting: str = "informative") -> list[str]:
    """The markdown lines of the stage-2 table of ``setting`` (group ``stage2``): the segmentation
    network's mIoU on the test split beside the mIoU of the masks it was trained on and of the CAM
    that made them, and the paired differences between its rows (better CAMs against plain ones,
    the ceiling)."""
    keys = [r.key for r in ROWS if r.group == "stage2" and r.setting == setting and r.key in summary["rows"]]
    if not keys:
        return []
    metrics = setting_metrics(setting, STAGE2_METRICS)
    titles = {**{m: METRICS[m][0] for m in metrics}, "miou": "segmentation mIoU (test)"}
    lines = ["| row | seeds | " + " | ".join(titles[m] for m in metrics) + " |",
             "| --- | --- | " + " | ".join("---" for _ in metrics) + " |"]
    for key in keys:
        row = summary["rows"][key]
        n = max(s["n"] for s in row["stats"].values())
        networks = row.get("networks_per_seed", 1)
        seeds = f"{n} × {networks} networks" if networks > 1 else str(n)
        lines.append(f"| {row['label']} | {seeds} | " + " | ".join(_cell(row["stats"], m) for m in metrics)
                     + " |")
    lines.append("")
    for c in summary["comparisons"]:
        if c["row"] in keys and "miou" in c["metrics"]:
            lines.append(f"- {summary['rows'][c['row']]['label']} − {summary['rows'][c['baseline']]['label']} "
                         f"(n = {c['metrics']['miou']['n']}): segmentation mIoU {comparison_cell(c['metrics']['miou'])}")
    lines += ["", f"Stage 2 recipe: {json.dumps(SEG_RECIPE)}, python -m crm_core.segment's default architecture, "
              "trained on the whole train split's masks (python -m crm_core.postprocess --at-val-threshold: each CAM's "
              "val-chosen threshold t is the object cut, 0.44 t the background one, uncertain between)."]
    return lines


def comparisons_table(summary: dict[str, Any], keys: set[str] | None = None) -> list[str]:
    entries = [c for c in summary["comparisons"] if keys is None or c["row"] in keys]
    if not entries:
        return []
    lines = ["| row | baseline | " + " | ".join(METRICS[m][0] for m in COMPARED) + " |",
             "| --- | --- | " + " | ".join("---" for _ in COMPARED) + " |"]
    for comparison in entries:
        cells = [comparison_cell(comparison["metrics"].get(metric)) for metric in COMPARED]
        lines.append(f"| {comparison['row']} | {comparison['baseline']} | " + " | ".join(cells) + " |")
    return lines


def headline_table(summary: dict[str, Any]) -> list[str]:
    """The declared headline family (:data:`HEADLINE`): raw and Holm-adjusted p side by side."""
    family = summary.get("headline") or []
    if not family:
        return []
    rows = summary["rows"]
    lines = ["| appearance | comparison (row − baseline) | metric | n | difference | p | Holm-adjusted p | effect |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in family:
        row = rows[e["row"]]
        metric = ("segmentation mIoU (test)" if row["group"] == "stage2" and e["metric"] == "miou"
                  else METRICS[e["metric"]][0])
        lines.append(f"| {setting_label(row.get('setting', row['appearance']))} | {row['label']} − "
                     f"{rows[e['baseline']]['label']} | {metric} | {e['n']} | "
                     f"{e['diff']:+.3f} | {_p(e['p'])} | {_p(e['p_holm'])} | {'yes' if e['effect'] else 'no'} |")
    return lines


def degenerate_line(summary: dict[str, Any]) -> str:
    flagged = summary.get("degenerate")
    if flagged is None:
        return ""
    if not flagged:
        return "No run flagged: every val-chosen threshold cuts a mask that is neither empty nor full."
    listed = "; ".join(f"{f['row']} seed {f['seed']}: {', '.join(f['reasons'])}" for f in flagged)
    return f"Flagged runs ({len(flagged)}): {listed}."


def edges_line(summary: dict[str, Any]) -> str:
    edges = summary.get("grid_edges") or {}
    if not edges:
        return ""
    low, high, count = edges["grid"]
    at = edges["at_edge"]
    listed = ", ".join(f"{e['row']} seed {e['seed']}" for e in at)
    return (f"Threshold grid {low:g}–{high:g} ({count} thresholds): {len(at)} of {edges['runs']} runs chose "
            f"its edge on val" + (f" ({listed})." if at else "."))


def markdown(report: dict[str, Any]) -> str:
    summary = report["summary"]
    lines = []
    for appearance in SETTINGS:
        table = appearance_table(summary, appearance)
        if table:
            lines += [f"### {APPEARANCE_TITLES.get(appearance, appearance)}", "", *table, ""]
    lines += faithfulness_sections(summary, "### {title} ({appearance})")
    lines += stage2_sections(summary, "### {title}")
    headline = headline_table(summary)
    if headline:
        lines += ["### Headline comparisons (the README's claims; Holm-corrected over this family)", "", *headline, ""]
    if summary["comparisons"]:
        lines += ["### Paired differences (row − baseline, same seeds; the headline family's cells add Holm's p, "
                  "every other comparison is exploratory; effect: two-sided paired t-test "
                  f"p < {ALPHA} and at least " + ", ".join(f"{k} {v:g}" for k, v in NEGLIGIBLE.items())
                  + "; negligible: p < {ALPHA} but smaller)".replace("{ALPHA}", str(ALPHA)), "",
                  *comparisons_table(summary), ""]
    for line in (edges_line(summary), degenerate_line(summary), stage2_sources_line(summary)):
        if line:
            lines += [line, ""]
    meta = report["meta"]
    if meta.get("complete") is False:
        lines.append("**Partial report: the run is still going, or was interrupted.**")
    made = provenance(report)
    lines.append(f"Rebuild it whole: `{made['plan']}` (on {meta['machine']}, device {meta['device']}); recipe "
                 f"{json.dumps(RESULTS.fields())}, steps {meta['steps']}, CRM rows {json.dumps(meta['crm_recipe'])}. "
                 f"{made['runs']} runs, {made['minutes']:.0f} min at {made['jobs_at_once']} jobs at a time"
                 + (f"; {made['dirty_runs']} of them ran from uncommitted code (revision +dirty) and cannot be "
                    "rerun exactly" if made["dirty_runs"] else "") + ".")
    lines += ["", f"This report was merged from {len(made['parts'])} part(s), oldest first (each job's own command, "
              "in the JSON, reruns that job alone):", ""]
    lines += [f"{i}. `{part['command']}` — " + (f"{part['wall_s'] / 60:.1f} min" if part.get("wall_s") is not None else "time ?")
              + f", revision {str(part.get('revision') or 'unknown')[:12]}"
              + ("" if part.get("complete", True) else ", interrupted (its finished jobs were kept)")
              for i, part in enumerate(made["parts"], 1)]
    notices = sorted({n for job in report["jobs"] for n in job.get("notices", [])})
    if notices:
        lines += [""] + [f"Notice recorded by the runs: {n}." for n in notices]
    return "\n".join(lines) + "\n"


def parts_of(meta: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The parts a merged report was built from, oldest first (each --merge run nests the one before)."""
    parts = []
    while meta:
        parts.append({k: v for k, v in meta.items() if k != "merged_with"})
        meta = meta.get("merged_with")
    return parts[::-1]


def provenance(report: dict[str, Any]) -> dict[str, Any]:
    """How ``report`` was made: the command that rebuilds it whole (``plan``), the parts it was
    merged from with their commands (oldest first), its runs and their time, and how many runs
    ran from uncommitted code (a revision with "+dirty": their numbers cannot be rerun exactly)."""
    jobs = report["jobs"]
    parts = parts_of(report.get("meta"))
    jobs_at_once = max(int(p.get("jobs", 1)) for p in parts) if parts else 1
    # Job time, not the parts' wall clock: a part rerun with --reuse re-evaluates without training.
    busy = sum(float(j.get("train_s") or 0.0) + float(j.get("eval_s") or 0.0) for j in jobs)
    oracle_s = sum(float(p.get("oracle_wall_s", 0.0)) for p in parts)
    return {"plan": PLAN_COMMAND, "runs": len(jobs), "jobs_at_once": jobs_at_once,
            "minutes": (busy / jobs_at_once + oracle_s) / 60, "job_minutes": busy / 60, "oracle_minutes": oracle_s / 60,
            "parts": [{"command": p.get("command"), "seeds": p.get("seeds"), "wall_s": p.get("wall_s"),
                       "complete": p.get("complete", True), "revision": p.get("revision")} for p in parts],
            # a run from uncommitted code, or one whose tracked files changed after its runner started
            "dirty_runs": sum(1 for j in jobs if "+dirty" in str(j.get("revision", "")) or j.get("tree_changed")),
            "revisions": sorted({str(j.get("revision", "unknown"))[:12] for j in jobs})}


def results_block(report: dict[str, Any]) -> str:
    """docs/results.md's tables, every number from ``report`` (docs/results.json)."""
    summary = report["summary"]
    seeds = sorted({j["seed"] for j in report["jobs"]})
    made = provenance(report)
    train = [j["train_s"] for j in report["jobs"] if j.get("train_s")]
    dirty = (f" {made['dirty_runs']} of the {made['runs']} runs ran from uncommitted code (their revision ends in "
             "+dirty), so their numbers cannot be rerun exactly." if made["dirty_runs"] else "")
    lines = [f"Seeds {', '.join(map(str, seeds))}; {made['runs']} runs, "
             f"{made['minutes']:.0f} min of training and evaluation on "
             f"{report['meta']['machine']} at {made['jobs_at_once']} jobs at a time (the runs' own times: "
             f"{made['job_minutes']:.0f} job-minutes, + {made['oracle_minutes']:.0f} min for the oracle); a training run took "
             f"{min(train):.0f}–{max(train):.0f} s (train time column of docs/results_runs.md). "
             f"Built in {len(made['parts'])} parts (listed in docs/results_runs.md); `{made['plan']}` rebuilds it whole. "
             f"Code revision(s): {', '.join(made['revisions'])}.{dirty}", ""]
    oracle = report.get("oracle") or {}
    if oracle:
        lines += ["| appearance | oracle gain | brightness as the CAM: mIoU | colour classifier: mIoU |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {a} | {o['oracle_gain']:.1%} | {o['intensity_miou']:.3f} | {o['colour_miou']:.3f} |"
                  for a, o in oracle.items()]
        lines += ["", "(`python -m crm_core.experiments.oracle`: seed 0, fitted on 400 training images, scored on 200 test "
                  "images; brightness and the colour classifier with a threshold chosen on 100 val images.)", ""]
    for appearance in SETTINGS:
        table = appearance_table(summary, appearance, RESULTS_METRICS)
        if not table:
            continue
        lines += [f"**{APPEARANCE_TITLES.get(appearance, appearance)}**", "", *table, ""]
        by_pair = {(c["row"], c["baseline"]): c for c in summary["comparisons"]}
        for row, base in RESULTS_COMPARISONS:
            c = by_pair.get((f"{appearance}_{row}", f"{appearance}_{base}"))
            if c is None:
                continue
            read_out = ("miou", "body", "head", "bg_fpr") if appearance in APPEARANCES else (
                "miou", "body", "head", "bg_fpr", "confusion", "accuracy")  # several objects: classes can mix
            cells = ", ".join(f"{METRICS[m][0]} {comparison_cell(c['metrics'].get(m))}"
                              for m in read_out if m in c["metrics"])
            lines.append(f"- {summary['rows'][c['row']]['label']} − {summary['rows'][c['baseline']]['label']} "
                         f"(n = {c['metrics']['miou']['n']}): {cells}")
        lines.append("")
    lines += faithfulness_sections(summary, "**{title} ({appearance})**")
    lines += stage2_sections(summary, "**{title}**")
    headline = headline_table(summary)
    if headline:
        lines += [f"**Headline comparisons** (the claims below rest on these {len(headline) - 2}; their p is "
                  "corrected for multiplicity by Holm's method, and an effect needs the adjusted p < "
                  f"{ALPHA}; every other comparison above is exploratory):", "", *headline, ""]
    for line in (edges_line(summary), degenerate_line(summary), stage2_sources_line(summary)):
        if line:
            lines += [line, ""]
    return "\n".join(lines).rstrip() + "\n"


def headline_block(report: dict[str, Any]) -> str:
    """README.md's one table (:data:`HEADLINE_LINES`): each question between its floor, the no-model
    cues and its ceiling, with CRM's paired difference over the plain model; then the headline
    family with its Holm-adjusted p."""
    summary = report["summary"]
    rows = summary["rows"]
    by_pair = {(c["row"], c["baseline"]): c for c in summary["comparisons"]}
    lines = ["| | " + " | ".join(HEADLINE_COLUMNS[:-1]) + f" | CRM − plain | {HEADLINE_COLUMNS[-1]} |",
             "| --- |" + " --- |" * (len(HEADLINE_COLUMNS) + 1)]
    for title, keys in HEADLINE_LINES:
        if not any(k in rows for k in keys if k):
            continue
        cells = [_cell(rows[k]["stats"], "miou") if k in rows else "–" for k in keys]
        plain, crm = keys[3], keys[4]
        m = (by_pair.get((crm, plain)) or {}).get("metrics", {}).get("miou")
        if m is None:
            change = "–"
        elif "p_holm" in m:  # a member of the headline family (apply_holm)
            change = f"{m['diff']:+.3f} (Holm-adjusted {_p(m['p_holm'])})"
        else:
            change = f"{m['diff']:+.3f} ({_p(m['p'])}, exploratory)"
        lines.append(f"| {title} | " + " | ".join(cells[:-1]) + f" | {change} | {cells[-1]} |")
    seeds = sorted({j["seed"] for j in report["jobs"]})
    lines += ["", f"Mean ± std over seeds {', '.join(map(str, seeds))} (test split; the CAM threshold chosen on "
              "val). Floor: the same network with no training step; for stage 2, the better constant mask. "
              f"Ceiling: a perfect object mask at the {RESULTS.cam_size}×{RESULTS.cam_size} CAM grid. For stage 2 "
              "each column is the network trained on that column's masks, the ceiling on the ground truth's. With "
              "several objects the mIoU is over the background and the 4 classes: each image's classes compete with "
              "a background score chosen on val, the cues from no model give each pixel above it to the image's "
              "first class, and the ceiling is each object's class mask at the CAM grid."]
    headline = headline_table(summary)
    if headline:
        lines += ["", f"The {len(headline) - 2} comparisons the claims rest on (paired over seeds, two-sided "
                  f"Student's t, Holm-adjusted together; an effect needs the adjusted p < {ALPHA}):", "", *headline]
    return "\n".join(lines) + "\n"


# The generated blocks a file may hold: its markers and what fills them.
BLOCKS = ((RESULTS_BEGIN, RESULTS_END, results_block), (HEADLINE_BEGIN, HEADLINE_END, headline_block))


def fill_blocks(path: Path, report: dict[str, Any]) -> None:
    """Replace the text between each pair of :data:`BLOCKS` markers that ``path`` holds with what
    that block makes of ``report``; a file with no block is an error."""
    text = path.read_text()
    found = [(begin, end, make) for begin, end, make in BLOCKS if begin in text and end in text]
    if not found:
        raise ValueError(f"{path} has no generated block ({RESULTS_BEGIN} ... {RESULTS_END}, or "
                         f"{HEADLINE_BEGIN} ... {HEADLINE_END})")
    for begin, end, make in found:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{make(report)}{end}{tail}"
    atomic_write_text(path, text)
