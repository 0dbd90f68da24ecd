"""The README's results: every configuration over several seeds, with the untrained floor.

    python -m crm_core.results --seeds 3                    # docs/results.json + docs/results.md
    python -m crm_core.results --seeds 3 --jobs 8 --device cuda

Each (row, seed) trains one model with the shared recipe (:data:`RECIPE`; a row changes only
what it names), then evaluates it on the synthetic test split at the CAM threshold chosen on
the val split: accuracy, CAM mIoU, head and body coverage, background false-positive rate,
the decoder's CAM dependence, train time. "floor" rows are the same architectures with no
training step. Rows come in groups (:data:`ROWS`):

- ``main``: {resnet, resnet_drs} x {no CRM, CRM} on both data appearances (``random``: the
  reconstruction cannot use the CAM; ``informative``: it can -- ``python -m crm_core.oracle``).
- ``floor``: untrained resnet and resnet_drs on both appearances.
- ``ablation``: on informative data, SSC's decoder input and SSC's alignment target, and an
  over-expanding DRS (delta 0.3) with and without CRM (the paper's claim that CRM "constrains
  the diffusion" of attention).
- ``preset``: the speed preset's check on the recipe that shows the effect -- resnet_drs + CRM on
  informative data with the ``exact`` preset (ReconstructNet decodes at full size) against the
  default ``fast`` one (a quarter of the size): the body coverage must agree within 0.05.
- ``legacy``: the old table's fast/exact preset check on random data (``--exact-row``).

Seeds change the weights, the batches *and* the synthetic data; rows with the same seed share
all three, so comparisons are paired by seed. An effect is claimed only where a two-sided paired
Student's t-test over the seeds gives p < :data:`ALPHA` and the mean difference reaches a minimal
size (:data:`NEGLIGIBLE`, below which it says "negligible"); elsewhere the table says "no effect".
Every comparison reports its p.

``baseline`` and ``ceiling`` rows score maps that come from no model (:mod:`crm_core.baselines`:
the image's brightness, a per-pixel colour classifier, perfect head / object masks at the CAM
grid) with the same protocol and data, so every table reads between the floor, the cues and the
ceiling. ``camouflage`` is the appearance where colour alone does not segment the object.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from crm_core.atomic import atomic_write_json, atomic_write_text
from crm_core.data.synthetic import APPEARANCES

log = logging.getLogger("crm_core.results")

# One recipe for every row: resnet18 from scratch, 112 px, stride 16 (7x7 CAMs), cosine decay.
RECIPE: dict[str, Any] = dict(
    dataset="synthetic", arch="resnet18", image_size=112, output_stride=16, num_classes=4,
    batch_size=16, epochs=2, cls_lr=1e-3, rec_lr=2e-3, lr_schedule="cosine", align_warmup=1, workers=1,
    val_limit=100, diag_every=25,
)
DEFAULT_STEPS = 200
# What "CRM" means in every CRM row (see the README's results section for how it was chosen):
# the reconstruction L1 weighted x30 (at weight 1 its gradient on the CAM features is ~1e-2 of
# CE's), gated by the reconstruction's specificity so that it does nothing where the decoder
# cannot use the CAM. The perceptual term is off unless ImageNet VGG19 weights are cached.
CRM_RECIPE: dict[str, Any] = dict(crm=True, l1_weight=30.0, crm_gate=True)


@dataclass(frozen=True)
class Row:
    key: str  # unique id, also the checkpoint name stem
    label: str  # what the table shows
    group: str  # main | floor | ablation | preset | legacy
    appearance: str  # random | informative
    model: str  # registered variant
    crm: bool
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields on top of RECIPE (+ CRM_RECIPE)
    untrained: bool = False  # floor: no training step
    baseline: str | None = None  # a map from no model (crm_core.baselines.BASELINES): nothing is trained

    def train_fields(self, steps: int, crm_overrides: dict[str, Any]) -> dict[str, Any]:
        values = {**RECIPE, "model": self.model, "appearance": self.appearance, "crm": self.crm}
        if self.crm:
            values.update({**CRM_RECIPE, **crm_overrides})
        values.update(self.overrides)
        values["steps"] = 0 if self.untrained else steps
        return values


def _rows() -> tuple[Row, ...]:
    from crm_core.baselines import BASELINES

    rows = []
    for appearance in APPEARANCES:
        for baseline in BASELINES.values():
            rows.append(Row(f"{appearance}_{baseline.name}", baseline.label, baseline.kind, appearance, "none", False,
                            baseline=baseline.name))
        for model in ("resnet", "resnet_drs"):
            rows.append(Row(f"{appearance}_{model}_floor", f"{model} untrained (floor)", "floor", appearance, model,
                            False, untrained=True))
            rows.append(Row(f"{appearance}_{model}", model, "main", appearance, model, False))
            rows.append(Row(f"{appearance}_{model}_crm", f"{model} + CRM", "main", appearance, model, True))
    rows += [
        Row("informative_resnet_drs_crm_sscinput", "resnet_drs + CRM, SSC decoder input (raw class scores)", "ablation",
            "informative", "resnet_drs", True, {"decoder_input": "scores"}),
        Row("informative_resnet_drs_crm_sscalign", "resnet_drs + CRM, SSC alignment target (0.3, 8x8 erosion)",
            "ablation", "informative", "resnet_drs", True, {"align_confident": 0.3, "align_erosion": 8}),
        Row("informative_resnet_drs_d03", "resnet_drs delta 0.3", "ablation", "informative", "resnet_drs", False,
            {"delta": "0.3"}),
        Row("informative_resnet_drs_d03_crm", "resnet_drs delta 0.3 + CRM", "ablation", "informative", "resnet_drs",
            True, {"delta": "0.3"}),
        Row("informative_resnet_drs_crm_exact", "resnet_drs + CRM, exact preset (full-size reconstruction)", "preset",
            "informative", "resnet_drs", True, {"crm_preset": "exact"}),
        Row("random_resnet_drs_crm_exact", "resnet_drs + CRM, exact preset", "legacy", "random", "resnet_drs", True,
            {"crm_preset": "exact"}),
    ]
    return tuple(rows)


ROWS: tuple[Row, ...] = _rows()
ROW_BY_KEY = {row.key: row for row in ROWS}
GROUPS = ("main", "floor", "baseline", "ceiling", "ablation", "preset", "legacy")
# Paired comparisons the table reads out: (row, baseline it is compared with).
COMPARISONS: tuple[tuple[str, str], ...] = tuple(
    pair for appearance in APPEARANCES for pair in (
        (f"{appearance}_resnet", f"{appearance}_resnet_floor"),
        (f"{appearance}_resnet_drs", f"{appearance}_resnet"),
        (f"{appearance}_resnet_crm", f"{appearance}_resnet"),
        (f"{appearance}_resnet_drs_crm", f"{appearance}_resnet_drs"),
        # against the cues that need no model, and the plain CAM against a perfect head-only map
        (f"{appearance}_resnet_crm", f"{appearance}_intensity"),
        (f"{appearance}_resnet_drs_crm", f"{appearance}_intensity"),
        (f"{appearance}_resnet", f"{appearance}_perfect_head"),
    )
) + (
    ("informative_resnet_drs_crm_sscinput", "informative_resnet_drs_crm"),
    ("informative_resnet_drs_crm_sscalign", "informative_resnet_drs_crm"),
    ("informative_resnet_drs_d03_crm", "informative_resnet_drs_d03"),
    ("informative_resnet_drs_crm_exact", "informative_resnet_drs_crm"),
    ("random_resnet_drs_crm_exact", "random_resnet_drs_crm"),
)
# metric key -> (column title, format); "higher" says which direction is better (None: neither)
METRICS: dict[str, tuple[str, str]] = {
    "accuracy": ("accuracy", "{:.3f}"),
    "miou": ("CAM mIoU (val thr.)", "{:.3f}"),
    "head": ("head covered", "{:.2f}"),
    "body": ("body covered", "{:.2f}"),
    "bg_fpr": ("background FP rate", "{:.3f}"),
    "cam_dependence": ("CAM dependence", "{:+.2f}"),
    "train_s": ("train time (s)", "{:.0f}"),
}
COMPARED = ("miou", "head", "body", "bg_fpr", "accuracy", "cam_dependence")
# Below these sizes a difference is "negligible" even when it clears 2 SE: paired seeds can make
# the standard error of a tiny, consistent difference ~0 (two runs that differ only in a term too
# weak to move anything), and +0.001 mIoU is not a finding.
ALPHA = 0.05  # significance level of the two-sided paired t-test
NEGLIGIBLE: dict[str, float] = {"miou": 0.01, "head": 0.01, "body": 0.01, "bg_fpr": 0.005, "accuracy": 0.005,
                                "cam_dependence": 0.01}


def code_revision() -> str:
    """The git commit the code runs from, with "+dirty" when tracked files differ from it
    ("unknown" outside a git checkout): every job of docs/results.json records it."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def job_command(row_key: str, seed: int, steps: int, test_limit: int, val_limit: int, device: str,
                crm_overrides: dict[str, Any], train_size: int | None) -> str:
    """The command that reruns exactly this (row, seed) and merges it into the table."""
    parts = ["python -m crm_core.results --merge --rows", row_key, "--first-seed", str(seed), "--seeds 1"]
    if steps != DEFAULT_STEPS:
        parts += ["--steps", str(steps)]
    if test_limit != 200:
        parts += ["--test-limit", str(test_limit)]
    if val_limit != 100:
        parts += ["--val-limit", str(val_limit)]
    if train_size is not None:
        parts += ["--train-size", str(train_size)]
    if "crm_preset" in crm_overrides:
        parts += ["--crm-preset", str(crm_overrides["crm_preset"])]
    if device != "cpu":
        parts += ["--device", device]
    return " ".join(parts)


def checkpoint_name(row: Row, seed: int) -> str:
    return f"results_{row.key}_s{seed}"


def run_job(row_key: str, seed: int, steps: int, test_limit: int, val_limit: int, checkpoint_dir: str, runs_dir: str,
            device: str, crm_overrides: dict[str, Any], reuse: bool, threads: int | None,
            train_size: int | None = None) -> dict[str, Any]:
    """Train (unless reused or a floor row) and evaluate one (row, seed); returns its measurements."""
    import torch

    from crm_core.explain import CamModel
    from crm_core.evaluate import evaluate_protocol
    from crm_core.metrics import DEFAULT_THRESHOLDS
    from crm_core.train import TrainConfig, main as train_main

    if threads:
        torch.set_num_threads(threads)
    os.environ["CRM_LAB_NO_PROGRESS"] = "1"
    row = ROW_BY_KEY[row_key]
    provenance = {"revision": code_revision(), "thresholds": [min(DEFAULT_THRESHOLDS), max(DEFAULT_THRESHOLDS),
                                                             len(DEFAULT_THRESHOLDS)],
                  "command": job_command(row_key, seed, steps, test_limit, val_limit, device, crm_overrides,
                                         train_size)}
    if row.baseline is not None:
        return {"row": row.key, "seed": seed, **score_row_baseline(row, seed, test_limit, val_limit), **provenance}
    name = checkpoint_name(row, seed)
    fields = row.train_fields(steps, crm_overrides)
    cfg = TrainConfig(name=name, seed=seed, checkpoint_dir=checkpoint_dir, runs_dir=runs_dir, device=device,
                      train_size=train_size, **fields)
    path = Path(checkpoint_dir) / f"{name}.pt"
    reused = False
    if reuse and path.is_file():
        try:
            old = CamModel.load(path)
            wanted = TrainConfig(**{**asdict(cfg), "extra": {}}).resolve().to_dict()
            reused = old.checkpoint.step == fields["steps"] and all(
                old.checkpoint.train_config.get(k) == v for k, v in wanted.items()
                if k not in ("extra", "device", "resume", "workers"))
        except Exception:  # noqa: BLE001 - an unreadable old checkpoint is simply retrained
            reused = False
    if not reused:
        train_main(cfg)
    model = CamModel.load(path, device)
    started = time.perf_counter()
    evaluation = evaluate_protocol(model, limit=test_limit, val_limit=val_limit, samples=5, runs_dir=runs_dir)
    at = evaluation["cam_miou_val_threshold"]
    coverage = evaluation["coverage_val_threshold"]
    return {
        "row": row.key, "seed": seed, "checkpoint": str(path), "reused": reused,
        "accuracy": evaluation["accuracy"], "threshold": at["threshold"], "miou": at["miou"],
        "fg_iou": at["fg_iou"], "bg_fpr": at["bg_fpr"], "head": coverage.get("head"), "body": coverage.get("body"),
        "miou_best_on_test": evaluation["cam_miou_best"]["miou"],
        "cam_dependence": evaluation.get("cam_dependence"), "recon_l1": evaluation.get("recon_l1"),
        "recon_l1_shuffled": evaluation.get("recon_l1_shuffled"),
        "train_s": float(model.checkpoint.extra.get("wall_time", 0.0)), "eval_s": time.perf_counter() - started,
        "notices": model.checkpoint.train_config.get("extra", {}).get("notices", []),
        **provenance,
    }


def score_row_baseline(row: Row, seed: int, test_limit: int, val_limit: int) -> dict[str, Any]:
    """A baseline row: the no-model map on the recipe's data (same seed, size and classes), same protocol."""
    from crm_core.baselines import score_baseline
    from crm_core.data.synthetic import SyntheticPets

    started = time.perf_counter()
    splits = {split: SyntheticPets(split, RECIPE["image_size"], RECIPE["num_classes"], seed=seed,
                                   appearance=row.appearance) for split in ("train", "val", "test")}
    scores = score_baseline(row.baseline, train=splits["train"], val=splits["val"], test=splits["test"],
                            cam_size=RECIPE["image_size"] // RECIPE["output_stride"], val_limit=val_limit,
                            test_limit=test_limit)
    return {**scores, "train_s": 0.0, "eval_s": time.perf_counter() - started}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value); NaN-free input expected."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def _values(jobs: list[dict[str, Any]], row: str, metric: str) -> dict[int, float]:
    out = {}
    for job in jobs:
        value = job.get(metric)
        if job["row"] == row and value is not None and math.isfinite(value):
            out[job["seed"]] = float(value)
    return out


def paired_t_test(diffs: list[float]) -> tuple[float, float]:
    """Two-sided paired Student's t-test of ``diffs`` (row - baseline per seed) against 0:
    (t, p) with n - 1 degrees of freedom. Differences that are equal on every seed have no
    spread: p is 0 when they are not 0, 1 when they are (the minimal size then decides)."""
    from scipy import stats

    n = len(diffs)
    if n < 2:
        return float("nan"), float("nan")
    mean, std = mean_std(diffs)
    if std == 0.0:
        return (math.copysign(math.inf, mean), 0.0) if mean != 0.0 else (0.0, 1.0)
    t = mean / (std / math.sqrt(n))
    return t, float(2.0 * stats.t.sf(abs(t), df=n - 1))


def compare(diffs: list[float], metric: str) -> dict[str, Any]:
    """One paired comparison: an effect is p < :data:`ALPHA` and at least :data:`NEGLIGIBLE` in size."""
    mean, std = mean_std(diffs)
    n = len(diffs)
    se = std / math.sqrt(n) if n > 1 else float("nan")
    t, p = paired_t_test(diffs)
    significant = n > 1 and p < ALPHA
    negligible = significant and abs(mean) < NEGLIGIBLE.get(metric, 0.0)
    return {"diff": mean, "se": se, "n": n, "t": t, "p": p,
            "effect": bool(significant and not negligible), "negligible": bool(negligible)}


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
            rows[row.key] = {**asdict(row), "stats": stats}
    comparisons = []
    for key, base in COMPARISONS:
        if key not in rows or base not in rows:
            continue
        entry: dict[str, Any] = {"row": key, "baseline": base, "metrics": {}}
        for metric in COMPARED:
            a, b = _values(jobs, key, metric), _values(jobs, base, metric)
            seeds = sorted(set(a) & set(b))
            if seeds:
                entry["metrics"][metric] = compare([a[s] - b[s] for s in seeds], metric)
        comparisons.append(entry)
    return {"rows": rows, "comparisons": comparisons, "grid_edges": grid_edges(jobs)}


def grid_edges(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Which runs chose the threshold grid's top or bottom on val (their optimum may lie beyond it)."""
    from crm_core.metrics import DEFAULT_THRESHOLDS

    low, high = min(DEFAULT_THRESHOLDS), max(DEFAULT_THRESHOLDS)
    # a job records the grid it was chosen on ([low, high, count]); older jobs were on the 0.05 grid to 0.95
    at_edge = sorted({(j["row"], j["seed"]) for j in jobs
                      if j.get("threshold") in tuple(j.get("thresholds", [0.0, 0.95])[:2])})
    return {"grid": [low, high, len(DEFAULT_THRESHOLDS)], "runs": len(jobs),
            "at_edge": [{"row": r, "seed": s} for r, s in at_edge]}


def _cell(stats: dict[str, Any], metric: str) -> str:
    if metric not in stats:
        return "–"
    fmt = METRICS[metric][1]
    s = stats[metric]
    return fmt.format(s["mean"]) + (f" ± {fmt.format(s['std']).lstrip('+')}" if s["n"] > 1 else "")


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def comparison_cell(m: dict[str, Any] | None) -> str:
    """One metric of a paired comparison, as the tables and the README print it."""
    if m is None:
        return "–"
    p = m.get("p", float("nan"))
    if m.get("negligible"):
        return f"negligible ({m['diff']:+.3f}, {_p(p)})"
    if not m["effect"]:
        return f"no effect ({m['diff']:+.3f}, {_p(p)})" if math.isfinite(p) else f"no effect ({m['diff']:+.3f})"
    return f"**{m['diff']:+.3f}** ± {m['se']:.3f} ({_p(p)})"


# Order of the groups in a table: the floor and the cues first, the ceilings last.
TABLE_ORDER = ("floor", "baseline", "main", "ablation", "preset", "legacy", "ceiling")
APPEARANCE_TITLES = {
    "random": "Random appearance (reconstruction cannot use the CAM)",
    "informative": "Informative appearance (one class-agnostic object appearance; brightness nearly segments it)",
    "camouflage": "Camouflage appearance (the object's look, shared by distractors that cover more area)",
}


def ceiling_share(summary: dict[str, Any], key: str) -> float | None:
    """Where a trained row's mIoU sits between its untrained floor (0) and the perfect object mask
    at the CAM grid (1); None for rows that have no floor or no ceiling measured."""
    row = summary["rows"][key]
    floor = summary["rows"].get(f"{row['appearance']}_{row['model']}_floor")
    ceiling = summary["rows"].get(f"{row['appearance']}_perfect_object")
    if row["group"] in ("floor", "baseline", "ceiling") or floor is None or ceiling is None:
        return None
    lo, hi = floor["stats"]["miou"]["mean"], ceiling["stats"]["miou"]["mean"]
    return (row["stats"]["miou"]["mean"] - lo) / (hi - lo) if hi > lo else None


def appearance_table(summary: dict[str, Any], appearance: str, metrics: tuple[str, ...] = tuple(METRICS)) -> list[str]:
    """The markdown lines of one appearance's table: floor, baselines, trained rows, ceilings."""
    keys = [r.key for g in TABLE_ORDER for r in ROWS
            if r.group == g and r.appearance == appearance and r.key in summary["rows"]]
    if not keys:
        return []
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
    for appearance in APPEARANCES:
        table = appearance_table(summary, appearance)
        if table:
            lines += [f"### {APPEARANCE_TITLES.get(appearance, appearance)}", "", *table, ""]
    if summary["comparisons"]:
        lines += ["### Paired differences (row − baseline, same seeds; effect: two-sided paired t-test "
                  f"p < {ALPHA} and at least " + ", ".join(f"{k} {v:g}" for k, v in NEGLIGIBLE.items())
                  + "; negligible: p < {ALPHA} but smaller)".replace("{ALPHA}", str(ALPHA)), "",
                  *comparisons_table(summary), ""]
    edges = edges_line(summary)
    if edges:
        lines += [edges, ""]
    meta = report["meta"]
    if meta.get("complete") is False:
        lines.append("**Partial report: the run is still going, or was interrupted.**")
    lines.append(f"Reproduce: `{meta['command']}` — {meta['wall_s'] / 60:.1f} min on {meta['machine']} "
                 f"({meta['jobs']} parallel job(s), device {meta['device']}); recipe {json.dumps(RECIPE)}, "
                 f"steps {meta['steps']}, CRM rows {json.dumps(meta['crm_recipe'])}.")
    notices = sorted({n for job in report["jobs"] for n in job.get("notices", [])})
    if notices:
        lines += [""] + [f"Notice recorded by the runs: {n}." for n in notices]
    return "\n".join(lines) + "\n"


def select_rows(groups: list[str], keys: list[str] | None, appearances: list[str]) -> list[Row]:
    if keys:
        unknown = [k for k in keys if k not in ROW_BY_KEY]
        if unknown:
            raise ValueError(f"unknown rows {unknown}; choose from {sorted(ROW_BY_KEY)}")
        return [ROW_BY_KEY[k] for k in keys]
    return [r for r in ROWS if r.group in groups and r.appearance in appearances]


def run(rows: list[Row], seeds: list[int], *, steps: int, test_limit: int, val_limit: int, checkpoint_dir: str,
        runs_dir: str, device: str, jobs: int, crm_overrides: dict[str, Any], reuse: bool,
        train_size: int | None = None, on_job: Callable[[list[dict[str, Any]]], None] | None = None,
        ) -> list[dict[str, Any]]:
    """Run every (row, seed) job, ``jobs`` at a time; results come back in (row, seed) order.

    ``on_job`` gets the jobs finished so far after each one (the CLI rewrites its report, so an
    interrupted run keeps what it measured)."""
    tasks = [(row.key, seed) for seed in seeds for row in rows]
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 and device == "cpu" else None
    common = dict(steps=steps, test_limit=test_limit, val_limit=val_limit, checkpoint_dir=checkpoint_dir,
                  runs_dir=runs_dir, device=device, crm_overrides=crm_overrides, reuse=reuse, threads=threads,
                  train_size=train_size)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    progress = tqdm(total=len(tasks), desc="results", unit="run")
    if jobs <= 1:
        for key, seed in tasks:
            results[(key, seed)] = run_job(key, seed, **common)
            log.info("%s seed %d: %s", key, seed, _short(results[(key, seed)]))
            progress.update(1)
            if on_job is not None:
                on_job([results[t] for t in tasks if t in results])
    else:
        import multiprocessing

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(run_job, key, seed, **common): (key, seed) for key, seed in tasks}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                log.info("%s seed %d: %s", *futures[future], _short(results[futures[future]]))
                progress.update(1)
                if on_job is not None:
                    on_job([results[t] for t in tasks if t in results])
    progress.close()
    return [results[task] for task in tasks]


def _short(job: dict[str, Any]) -> str:
    return ", ".join(f"{k} {job[k]:.3f}" for k in ("accuracy", "miou", "head", "body", "bg_fpr")
                     if job.get(k) is not None)


# The README's table, part by part (``--plan``): rows and seeds of each part, run in this order and
# merged into one JSON. The headline comparisons (CRM against none on the informative and the
# camouflage appearance, trained against the floor) get 5 seeds, the random control 3; the
# baselines and ceilings (no model) come first, they take seconds. DRS (delta 0.55 and 0.3) with
# and without CRM is not in it: two cores fit about two hours of training, and its last
# measurement is in docs/results_2026-11.md.
README_PLAN: tuple[tuple[tuple[str, ...], int], ...] = (
    (tuple(r.key for r in ROWS if r.group in ("baseline", "ceiling")), 5),
    (("informative_resnet_floor", "informative_resnet", "informative_resnet_crm"), 5),
    (("camouflage_resnet_floor", "camouflage_resnet", "camouflage_resnet_crm"), 5),
    # random data is the control (CRM should not help where the image carries no cue): 3 seeds
    (("random_resnet_floor", "random_resnet", "random_resnet_crm"), 3),
)
README_BEGIN, README_END = "<!-- results:begin (generated by python -m crm_core.results --readme) -->", "<!-- results:end -->"
# The comparisons the README reads out, per appearance (row, baseline): CRM against none, against
# brightness, the trained plain model against its floor and against a perfect head-only map.
README_COMPARISONS = (("resnet_crm", "resnet"), ("resnet_drs_crm", "resnet_drs"), ("resnet_crm", "intensity"),
                      ("resnet", "resnet_floor"), ("resnet", "perfect_head"), ("resnet_drs_d03_crm", "resnet_drs_d03"))
README_METRICS = ("accuracy", "miou", "head", "body", "bg_fpr", "cam_dependence")


def oracle_report(appearances: tuple[str, ...] = APPEARANCES) -> dict[str, Any]:
    """Per appearance, the oracle gain and what colour alone segments (``python -m crm_core.oracle``'s
    numbers at its defaults: seed 0, 400 train / 100 val / 200 test images, 112 px)."""
    from crm_core.oracle import colour_cues, oracle_gain

    out = {}
    for appearance in tqdm(appearances, desc="oracle", unit="appearance"):
        gain = oracle_gain(appearance, image_size=RECIPE["image_size"], num_classes=RECIPE["num_classes"])
        cues = colour_cues(appearance, image_size=RECIPE["image_size"], num_classes=RECIPE["num_classes"],
                           cam_size=RECIPE["image_size"] // RECIPE["output_stride"])
        out[appearance] = {"oracle_gain": gain["oracle_gain"], "l1_constant": gain["l1_constant"],
                           "l1_oracle": gain["l1_oracle"], "intensity_miou": cues["intensity"]["miou"],
                           "colour_miou": cues["colour"]["miou"]}
    return out


def parts_of(meta: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The parts a merged report was built from, oldest first (each --merge run nests the one before)."""
    parts = []
    while meta:
        parts.append({k: v for k, v in meta.items() if k != "merged_with"})
        meta = meta.get("merged_with")
    return parts[::-1]


def readme_block(report: dict[str, Any]) -> str:
    """The README's results section body, every number from ``report`` (docs/results.json)."""
    summary = report["summary"]
    seeds = sorted({j["seed"] for j in report["jobs"]})
    parts = parts_of(report["meta"])
    jobs_at_once = max(int(p.get("jobs", 1)) for p in parts) if parts else 1
    # Job time, not the parts' wall clock: a part rerun with --reuse re-evaluates without training.
    busy = sum(float(j.get("train_s") or 0.0) + float(j.get("eval_s") or 0.0) for j in report["jobs"])
    oracle_s = sum(p.get("oracle_wall_s", 0.0) for p in parts)
    train = [j["train_s"] for j in report["jobs"] if j.get("train_s")]
    revisions = sorted({str(j.get("revision", "unknown"))[:12] for j in report["jobs"]})
    lines = [f"Seeds {', '.join(map(str, seeds))}; {len(report['jobs'])} runs, "
             f"{(busy / jobs_at_once + oracle_s) / 60:.0f} min of training and evaluation on "
             f"{report['meta']['machine']} at {jobs_at_once} jobs at a time (the runs' own times: "
             f"{busy / 60:.0f} job-minutes, + {oracle_s / 60:.0f} min for the oracle); a training run took "
             f"{min(train):.0f}–{max(train):.0f} s (train time column of docs/results.md). "
             f"Code revision(s): {', '.join(revisions)}.", ""]
    oracle = report.get("oracle") or {}
    if oracle:
        lines += ["| appearance | oracle gain | brightness as the CAM: mIoU | colour classifier: mIoU |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {a} | {o['oracle_gain']:.1%} | {o['intensity_miou']:.3f} | {o['colour_miou']:.3f} |"
                  for a, o in oracle.items()]
        lines += ["", "(`python -m crm_core.oracle`: seed 0, fitted on 400 training images, scored on 200 test "
                  "images; brightness and the colour classifier with a threshold chosen on 100 val images.)", ""]
    for appearance in APPEARANCES:
        table = appearance_table(summary, appearance, README_METRICS)
        if not table:
            continue
        lines += [f"**{APPEARANCE_TITLES.get(appearance, appearance)}**", "", *table, ""]
        by_pair = {(c["row"], c["baseline"]): c for c in summary["comparisons"]}
        for row, base in README_COMPARISONS:
            c = by_pair.get((f"{appearance}_{row}", f"{appearance}_{base}"))
            if c is None:
                continue
            cells = ", ".join(f"{METRICS[m][0]} {comparison_cell(c['metrics'].get(m))}"
                              for m in ("miou", "body", "head", "bg_fpr") if m in c["metrics"])
            lines.append(f"- {summary['rows'][c['row']]['label']} − {summary['rows'][c['baseline']]['label']} "
                         f"(n = {c['metrics']['miou']['n']}): {cells}")
        lines.append("")
    edges = edges_line(summary)
    if edges:
        lines += [edges, ""]
    return "\n".join(lines).rstrip() + "\n"


def fill_readme(readme: Path, report: dict[str, Any]) -> None:
    """Replace the text between README_BEGIN and README_END in ``readme`` with :func:`readme_block`."""
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{readme} has no results block ({README_BEGIN} ... {README_END})")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    atomic_write_text(readme, f"{head}{README_BEGIN}\n{readme_block(report)}{README_END}{tail}")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train and evaluate the results table over several seeds.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (0, 1, ..., N-1)")
    p.add_argument("--first-seed", type=int, default=0, help="first seed")
    p.add_argument("--groups", nargs="+", default=["main", "floor", "baseline", "ceiling", "ablation", "preset"],
                   choices=GROUPS,
                   help="row groups to run")
    p.add_argument("--rows", nargs="+", default=None, help="run these row keys only (overrides --groups)")
    p.add_argument("--appearance", nargs="+", default=list(APPEARANCES), choices=APPEARANCES,
                   help="data appearances to run")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps per run")
    p.add_argument("--train-size", type=int, default=None, help="synthetic training images (default 2000)")
    p.add_argument("--test-limit", type=int, default=200, help="test images evaluated")
    p.add_argument("--val-limit", type=int, default=100, help="val images the CAM threshold is chosen on")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes); on CPU they split the cores")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--checkpoint-dir", default="checkpoints", help="where results_*.pt go")
    p.add_argument("--runs-dir", default="runs", help="where the run folders go")
    p.add_argument("--out", default="docs/results.md", help="markdown table")
    p.add_argument("--json", default="docs/results.json", help="per-seed values and the summary")
    p.add_argument("--crm-preset", default=None, help="speed preset of the CRM rows (exact | fast)")
    p.add_argument("--reuse", action="store_true", help="keep checkpoints already trained with the same config")
    p.add_argument("--exact-row", action="store_true", help="also run the legacy exact-preset row")
    p.add_argument("--merge", action="store_true",
                   help="keep the jobs already in --json that this run does not redo (build the table in parts)")
    p.add_argument("--plan", action="store_true",
                   help="run the README's table part by part (README_PLAN), each merged into --json, then --oracle")
    p.add_argument("--oracle", action="store_true",
                   help="only measure the oracle gain and colour cues of every appearance into --json (seconds)")
    p.add_argument("--readme", default=None, metavar="PATH",
                   help="only rewrite --out and the results block of PATH (e.g. README.md) from --json; runs nothing")
    return p


def cli(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    if args.readme or args.oracle:
        return _refresh(args)
    if args.plan:
        common = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--plan"]
        for rows, count in README_PLAN:
            code = cli(["--merge", *common, "--rows", *rows, "--seeds", str(count)])
            if code:
                return code
        return cli(["--oracle", *common])
    if args.seeds < 1 or args.jobs < 1 or args.steps < 1:
        log.error("--seeds, --jobs and --steps must be >= 1")
        return 2
    groups = list(args.groups) + (["legacy"] if args.exact_row else [])
    try:
        rows = select_rows(groups, args.rows, args.appearance)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    crm_overrides = {} if args.crm_preset is None else {"crm_preset": args.crm_preset}
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    started = time.perf_counter()
    command = "python -m crm_core.results " + " ".join(argv if argv is not None else sys.argv[1:])
    old = json.loads(Path(args.json).read_text()) if args.merge and args.json and Path(args.json).is_file() else None

    def write(jobs: list[dict[str, Any]], complete: bool) -> str:
        meta = {"command": command.strip(), "wall_s": time.perf_counter() - started, "jobs": args.jobs,
                "device": args.device, "steps": args.steps, "seeds": seeds, "complete": complete,
                "crm_recipe": {**CRM_RECIPE, **crm_overrides}, "recipe": RECIPE,
                "machine": f"{platform.machine()} with {os.cpu_count()} CPU cores", "revision": code_revision()}
        if old is not None:
            done = {(j["row"], j["seed"]) for j in jobs}
            jobs = [j for j in old.get("jobs", []) if (j["row"], j["seed"]) not in done] + jobs
            meta["merged_with"] = old.get("meta")
        report = {"meta": meta, "jobs": jobs, "summary": summarise(jobs)}
        table = markdown(report)
        if args.json:
            atomic_write_json(args.json, report)
        if args.out:
            atomic_write_text(args.out, table)
        return table

    jobs = run(rows, seeds, steps=args.steps, test_limit=args.test_limit, val_limit=args.val_limit,
               checkpoint_dir=args.checkpoint_dir, runs_dir=args.runs_dir, device=args.device, jobs=args.jobs,
               crm_overrides=crm_overrides, reuse=args.reuse, train_size=args.train_size,
               on_job=lambda done: write(done, complete=False))
    print(write(jobs, complete=True))
    return 0


def _refresh(args: argparse.Namespace) -> int:
    """--oracle (measure into the JSON) and --readme (render from it): no training."""
    path = Path(args.json)
    try:
        report = json.loads(path.read_text())
        if not isinstance(report, dict) or "jobs" not in report:
            raise ValueError(f"{path} is not a results report")
    except (OSError, ValueError) as exc:
        log.error("cannot read %s: %s", path, exc)
        return 2
    report["summary"] = summarise(report["jobs"])  # the current statistics, from the per-seed values
    if args.oracle:
        started = time.perf_counter()
        report["oracle"] = oracle_report()
        report["meta"] = {**report["meta"], "oracle_wall_s": time.perf_counter() - started}
        atomic_write_json(path, report)
    if args.out:
        atomic_write_text(args.out, markdown(report))
    if args.readme:
        try:
            fill_readme(Path(args.readme), report)
        except (OSError, ValueError) as exc:
            log.error("%s", exc)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
