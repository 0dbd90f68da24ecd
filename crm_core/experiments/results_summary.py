"""The summary of a results report's jobs: each row's mean and std over seeds (and those of the maps
from no model scored beside it), the paired Student's t-tests between rows with the effect rule
(p < ALPHA and a difference of at least NEGLIGIBLE), Holm over the declared headline family, and
the runs flagged as degenerate or at the threshold grid's edge. Pure functions of the jobs:
:mod:`crm_core.experiments.results_report` renders what they return."""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from crm_core.experiments.paired_stats import compare, holm, mean_std
from crm_core.experiments.results_table import (ALPHA, COMPARED, COMPARISONS, FAITHFULNESS_METRICS, HEADLINE, METRICS,
                                                NEGLIGIBLE, REFERENCE_LABELS, ROW_BY_KEY, ROWS, TINY_CAM_PEAK)


def _values(jobs: list[dict[str, Any]], row: str, metric: str) -> dict[int, float]:
    """Seed -> the row's value of ``metric``; a stage-2 row's several networks of one CAM seed are
    averaged first, so that seeds stay the unit of every mean, std and paired test."""
    per_seed: dict[int, list[float]] = {}
    for job in jobs:
        value = job.get(metric)
        if job["row"] == row and value is not None and math.isfinite(value):
            per_seed.setdefault(job["seed"], []).append(float(value))
    return {seed: sum(values) / len(values) for seed, values in per_seed.items()}


def reference_stats(jobs: list[dict[str, Any]], row: str) -> dict[str, dict[str, dict[str, float]]]:
    """Mean/std over seeds of what each map from no model scored beside ``row``'s CAM under the same
    classifier (a job's ``references``: PxAP, Average Drop, Increase in Confidence, area)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in REFERENCE_LABELS:
        for metric in FAITHFULNESS_METRICS:
            values = [float(v) for j in jobs if j["row"] == row
                      for v in [((j.get("references") or {}).get(name) or {}).get(metric)]
                      if v is not None and math.isfinite(v)]
            if values:
                mean, std = mean_std(values)
                out.setdefault(name, {})[metric] = {"mean": mean, "std": std, "n": len(values)}
    return out


def reference_comparisons(jobs: list[dict[str, Any]], row: str) -> dict[str, dict[str, dict[str, Any]]]:
    """``row``'s CAM against each map from no model scored beside it (same seed, same classifier,
    same images): paired differences (CAM - reference) over seeds of PxAP, Average Drop, Increase
    in Confidence and area, with the table's effect rule. Does the trained map beat doing nothing?"""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name in REFERENCE_LABELS:
        for metric in FAITHFULNESS_METRICS:
            own, ref = _values(jobs, row, metric), {}
            for job in jobs:
                value = ((job.get("references") or {}).get(name) or {}).get(metric)
                if job["row"] == row and value is not None and math.isfinite(value):
                    ref[job["seed"]] = float(value)
            seeds = sorted(set(own) & set(ref))
            if len(seeds) > 1:
                out.setdefault(name, {})[metric] = compare([own[s] - ref[s] for s in seeds], metric)
    return out


def networks_per_seed(jobs: list[dict[str, Any]], row: str) -> int:
    """How many stage-2 networks each CAM seed of ``row`` has (the fewest over its seeds; 1 elsewhere)."""
    counts: dict[int, int] = {}
    for job in jobs:
        if job["row"] == row:
            counts[job["seed"]] = counts.get(job["seed"], 0) + 1
    return min(counts.values(), default=1)


def summarise(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-row mean/std and the paired comparisons (effect = two-sided paired t-test p < ALPHA and
    at least :data:`NEGLIGIBLE`)."""
    rows = {}
    for row in ROWS:
        stats = {}
        for metric in METRICS:
            values = list(_values(jobs, row.key, metric).values())
            if values:
                mean, std = mean_std(values)
                stats[metric] = {"mean": mean, "std": std, "n": len(values)}
        if stats:
            rows[row.key] = {**asdict(row), "setting": row.setting, "stats": stats,
                             "networks_per_seed": networks_per_seed(jobs, row.key)}
            references = reference_stats(jobs, row.key)
            if references:
                rows[row.key]["references"] = references
                rows[row.key]["vs_references"] = reference_comparisons(jobs, row.key)
    comparisons = []
    for key, base in COMPARISONS:
        if key not in rows or base not in rows:
            continue
        entry: dict[str, Any] = {"row": key, "baseline": base, "metrics": {}}
        for metric in (*COMPARED, *FAITHFULNESS_METRICS):
            a, b = _values(jobs, key, metric), _values(jobs, base, metric)
            seeds = sorted(set(a) & set(b))
            if seeds:
                entry["metrics"][metric] = compare([a[s] - b[s] for s in seeds], metric)
        comparisons.append(entry)
    return {"rows": rows, "comparisons": comparisons, "headline": apply_holm(comparisons),
            "grid_edges": grid_edges(jobs), "degenerate": degenerate_runs(jobs),
            "stage2_sources": stage2_sources(jobs)}


def stage2_sources(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Does each stage-2 job's CAM model reproduce the table's own job of that row and seed? (A
    stage-2 job reuses the table's checkpoint or retrains it; a retrained copy matches only at the
    same code, seed and thread count.) The differences in CAM mIoU, per (stage-2 row, seed)."""
    table = {(j["row"], j["seed"]): j for j in jobs}
    pairs = []
    for job in jobs:
        row = ROW_BY_KEY.get(job["row"])
        if row is None or row.stage2 is None or job.get("cam_miou") is None:
            continue
        source = ROW_BY_KEY.get(row.stage2)
        own = table.get((row.stage2, job["seed"]))
        if source is None or source.baseline is not None or own is None:
            continue
        pairs.append({"row": job["row"], "seed": job["seed"], "diff": job["cam_miou"] - own["miou"]})
    identical = sum(p["diff"] == 0.0 for p in pairs)
    largest = max((abs(p["diff"]) for p in pairs), default=0.0)
    return {"pairs": pairs, "identical": identical, "largest": largest}


def apply_holm(comparisons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Correct the headline family (:data:`HEADLINE`) for multiplicity: each of its metrics gets
    ``p_holm`` and its ``effect`` is decided on it; every other comparison metric is marked
    exploratory (raw p). Returns the family's entries, in :data:`HEADLINE`'s order (those measured)."""
    by_pair = {(c["row"], c["baseline"]): c for c in comparisons}
    for c in comparisons:
        for m in c["metrics"].values():
            m["family"] = "exploratory"
    members = [(key, base, metric, by_pair[(key, base)]["metrics"][metric]) for key, base, metric in HEADLINE
               if (key, base) in by_pair and metric in by_pair[(key, base)]["metrics"]]
    adjusted = holm([m["p"] for *_, m in members])
    family = []
    for (key, base, metric, m), p_holm in zip(members, adjusted):
        m["family"], m["p_holm"] = "headline", p_holm
        m["effect"] = bool(m["n"] > 1 and p_holm < ALPHA and not m["negligible"]
                           and abs(m["diff"]) >= NEGLIGIBLE.get(metric, 0.0))
        family.append({"row": key, "baseline": base, "metric": metric, "diff": m["diff"], "n": m["n"],
                       "p": m["p"], "p_holm": p_holm, "effect": m["effect"]})
    return family


def degenerate_runs(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs whose evaluation cannot mean what its row says: a CAM whose val-chosen threshold leaves
    no object pixel (or no background pixel) on test -- a constant prediction, not a map -- or whose
    raw peak is below :data:`TINY_CAM_PEAK`. Rows that are constant by design are not flagged."""
    flagged = []
    for job in jobs:
        row = ROW_BY_KEY.get(job["row"])
        if row is None or row.stage2 is not None or row.group == "ceiling":
            continue
        reasons = []
        if job.get("bg_fpr") == 0.0 and not job.get("head") and not job.get("body"):
            reasons.append("its val-chosen threshold leaves no object pixel")
        elif job.get("bg_fpr") is not None and job["bg_fpr"] >= 0.999:
            reasons.append("its val-chosen threshold calls every pixel object")
        peak = job.get("cam_peak_raw")
        if peak is not None and peak < TINY_CAM_PEAK:
            reasons.append(f"raw CAM peak {peak:.1e} < {TINY_CAM_PEAK:g}")
        if reasons:
            flagged.append({"row": job["row"], "seed": job["seed"], "reasons": reasons})
    return flagged


def grid_edges(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Which runs chose the threshold grid's top or bottom on val (their optimum may lie beyond it)."""
    from crm_core.thresholds import THRESHOLDS

    grid = THRESHOLDS.grid
    low, high = min(grid), max(grid)
    # a job records the grid it was chosen on ([low, high, count]); older jobs were on the 0.05 grid to 0.95
    at_edge = sorted({(j["row"], j["seed"]) for j in jobs
                      if j.get("threshold") in tuple(j.get("thresholds", [0.0, 0.95])[:2])})
    return {"grid": [low, high, len(grid)], "runs": len(jobs),
            "at_edge": [{"row": r, "seed": s} for r, s in at_edge]}
