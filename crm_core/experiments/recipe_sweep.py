"""How a recipe or a default is chosen: a sweep scored on val, on seeds the results table never reports.

    python -m crm_core.experiments.recipe_sweep                         # docs/sweep_crm_recipe.json + .md
    python -m crm_core.experiments.recipe_sweep --study drs_placement_efficientnet --jobs 2

A study (:data:`STUDIES`) names a results-table row, candidates (training settings on top of
that row's) and a reference trained beside them. ``crm_recipe``: CRM settings (:data:`CANDIDATES`,
on top of :data:`crm_core.recipes.CRM`) on the ``resnet + CRM`` row, against the
plain ``resnet``. ``drs_placement_*``: where DRS goes (:data:`crm_core.models.classifier.DRS_POSITIONS`)
on EfficientNet-b0 or on resnet18, against the same backbone without DRS. Everything is trained
with the table's recipe on seeds 10, 11, 12 by default (the table reports seeds 0-4; a seed changes
the data too, so no image of the table is seen here). Every model is scored on the **val** split
only: the CAM mIoU at the best threshold on all 200 val images (the score a threshold chosen on
val would get there), with head and body coverage at that threshold. The test split is never
read. The candidate with the highest mean val mIoU over seeds and appearances replaces the
current default only if it beats it by an effect (paired t-test, p < 0.05, at least 0.01 mIoU);
the report gives each candidate's paired difference to the plain model and to the current default,
and says which one is chosen.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crm_core.atomic import atomic_write_json, atomic_write_text
from crm_core.cli_options import device_option, job_options
from crm_core.data.synthetic import APPEARANCES
from crm_core.models.classifier import ModelConfig
from crm_core.processes import run_jobs, threads_per_job
from crm_core.experiments.paired_stats import compare, mean_std
from crm_core.recipes import CRM, DEFAULT_STEPS, RESULTS
from crm_core.experiments.results_table import ROW_BY_KEY

log = logging.getLogger("crm_core.experiments.recipe_sweep")

PLAIN = "none"  # the plain classifier (no CRM), trained on the same seeds: what CRM is measured against
# name -> the CRM settings it changes (on top of CRM). The L1 weight brackets the recipe's
# x30 by about 3x either way (at weight 1 the reconstruction's gradient on the CAM features is
# ~1e-2 of CE's); "nogate" drops the gate (the decoder's gradient then always reaches the classifier).
CANDIDATES: dict[str, dict[str, Any]] = {
    "l1x10_gate": {"l1_weight": 10.0, "crm_gate": True},
    "l1x30_gate": {"l1_weight": 30.0, "crm_gate": True},
    "l1x100_gate": {"l1_weight": 100.0, "crm_gate": True},
    "l1x30_nogate": {"l1_weight": 30.0, "crm_gate": False},
}
SWEEP_SEEDS = (10, 11, 12)
VAL_IMAGES = 200  # the whole val split
SCORED = ("miou", "head", "body", "bg_fpr")


def current_candidate() -> str:
    """The candidate that is today's CRM recipe (crm_core.recipes.CRM)."""
    for name, settings in CANDIDATES.items():
        if all(CRM.fields().get(k) == v for k, v in settings.items()):
            return name
    raise LookupError("crm_core.recipes.CRM is none of the sweep's candidates")


@dataclass(frozen=True)
class Study:
    title: str
    row: str  # the results-table row (without its appearance) every candidate trains
    candidates: dict[str, dict[str, Any]]  # name -> TrainConfig fields on top of the row's
    current: str  # the candidate that is today's default
    reference_row: str = "resnet"  # what PLAIN trains (same row naming)
    reference: dict[str, Any] = field(default_factory=dict)  # TrainConfig fields on top of reference_row's
    # a candidate is eligible only if its mean val accuracy reaches this: a recipe must first train
    # the network (CAMs of an unconverged classifier are not compared); None: no such condition
    min_accuracy: float | None = None


def _placement(arch: str) -> dict[str, dict[str, Any]]:
    return {position: {"arch": arch, "drs_positions": (position,)} for position in ("layer4", "layer4_blocks",
                                                                                      "all_blocks")}


STUDIES: dict[str, Study] = {
    "crm_recipe": Study("How the CRM recipe was chosen", "resnet_crm", CANDIDATES, current_candidate()),
    # the default placement is ModelConfig's (layer4_blocks) for every backbone until this says otherwise
    "drs_placement_efficientnet": Study("Where DRS goes on EfficientNet-b0", "resnet_drs",
                                        _placement("efficientnet_b0"), ModelConfig().drs_positions[0],
                                        reference={"arch": "efficientnet_b0"}),
    # EfficientNet-b0 under the resnet18 recipe (200 steps) stops at ~0.85 accuracy: how long must it
    # train? Candidates differ in steps (epochs follow, 100 steps an epoch); the reference is resnet18
    # on the table's recipe, the backbone it is compared with.
    "efficientnet_recipe": Study("How long EfficientNet-b0 trains (a recipe that converges, chosen on val)", "resnet",
                                 {f"steps{n}": {"arch": "efficientnet_b0", "steps": n, "epochs": n // 100}
                                  for n in (200, 400, 600)}, "steps200", min_accuracy=0.98),
    # The alignment term alone (reconstruction weight 0, no gate) moves nothing under the table's
    # recipe: it switches on after one epoch, when the cosine schedule has decayed the learning
    # rate, and at 112 px its superpixel target is close to the smooth upsampled CAM itself.
    # Candidates: no warm-up, a 10x weight, and SSC's target (CAM > 0.3 eroded 8x8); reference:
    # the plain classifier.
    "alignment": Study("Can the superpixel alignment term act on its own? (warm-up, weight, target)",
                       "resnet_alignonly",
                       {"warmup1": {}, "warmup0": {"align_warmup": 0},
                        "warmup0_x10": {"align_warmup": 0, "align_weight": 10.0},
                        "warmup0_ssc_target": {"align_warmup": 0, "align_confident": 0.3, "align_erosion": 8}},
                       "warmup1"),
    "drs_placement_resnet": Study("Where DRS goes on resnet18: layer4's blocks against every block (the official "
                                  "code's placement)", "resnet_drs",
                                  {k: v for k, v in _placement("resnet18").items() if k != "layer4"},
                                  ModelConfig().drs_positions[0]),
}


def sweep_job(study: str, candidate: str, appearance: str, seed: int, steps: int, val_images: int,
              checkpoint_dir: str, runs_dir: str, device: str, threads: int | None,
              train_size: int | None = None) -> dict[str, Any]:
    """Train one (candidate, appearance, seed) of ``study`` and score it on val; returns its measurements."""
    import torch

    from crm_core.evaluate import evaluate_protocol
    from crm_core.explain import CamModel
    from crm_core.train import TrainConfig, main as train_main

    if threads:
        torch.set_num_threads(threads)
    os.environ["CRM_LAB_NO_PROGRESS"] = "1"
    spec = STUDIES[study]
    row = ROW_BY_KEY[f"{appearance}_{spec.reference_row if candidate == PLAIN else spec.row}"]
    settings = spec.reference if candidate == PLAIN else spec.candidates[candidate]
    fields = {**row.train_fields(steps, {}), **settings}
    name = f"sweep_{study}_{appearance}_{candidate}_s{seed}"
    train_main(TrainConfig(name=name, seed=seed, checkpoint_dir=checkpoint_dir, runs_dir=runs_dir, device=device,
                           train_size=train_size, **fields))
    model = CamModel.load(Path(checkpoint_dir) / f"{name}.pt", device)
    # threshold_split "none": the threshold is the best one on the split scored, which here is val
    scores = evaluate_protocol(model, split="val", limit=val_images, threshold_split="none")
    best = scores["cam_miou_best"]
    return {"candidate": candidate, "appearance": appearance, "seed": seed, "threshold": best["threshold"],
            "miou": best["miou"], "bg_fpr": best["bg_fpr"], **scores["coverage_best"],
            "accuracy": scores["accuracy"], "train_s": float(model.checkpoint.extra.get("wall_time", 0.0)),
            "settings": _as_json(settings)}


def _as_json(settings: dict[str, Any]) -> dict[str, Any]:
    """TrainConfig settings as the JSON report holds them (tuples, e.g. drs_positions, as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()}


def summarise_sweep(jobs: list[dict[str, Any]], current: str, min_accuracy: float | None = None) -> dict[str, Any]:
    """Per (appearance, candidate) means; paired differences to the plain model and to ``current``;
    the chosen candidate (highest mean val mIoU over every appearance and seed, among the candidates
    whose mean val accuracy reaches ``min_accuracy`` when given)."""
    def values(candidate: str, appearance: str, metric: str) -> dict[int, float]:
        return {j["seed"]: j[metric] for j in jobs
                if j["candidate"] == candidate and j["appearance"] == appearance and j.get(metric) is not None}

    appearances = sorted({j["appearance"] for j in jobs}, key=APPEARANCES.index)
    candidates = [PLAIN] + sorted({j["candidate"] for j in jobs} - {PLAIN})
    rows = []
    for appearance in appearances:
        for candidate in candidates:
            row: dict[str, Any] = {"appearance": appearance, "candidate": candidate, "stats": {}, "vs": {}}
            for metric in SCORED:
                mine = values(candidate, appearance, metric)
                if mine:
                    mean, std = mean_std(list(mine.values()))
                    row["stats"][metric] = {"mean": mean, "std": std, "n": len(mine)}
                for base in (PLAIN, current):
                    if base == candidate:
                        continue
                    theirs = values(base, appearance, metric)
                    seeds = sorted(set(mine) & set(theirs))
                    if len(seeds) > 1:
                        row["vs"].setdefault(base, {})[metric] = compare([mine[s] - theirs[s] for s in seeds], metric)
            rows.append(row)
    overall, accuracy = {}, {}
    for candidate in candidates:
        scores = [j["miou"] for j in jobs if j["candidate"] == candidate]
        accuracies = [j["accuracy"] for j in jobs if j["candidate"] == candidate and j.get("accuracy") is not None]
        if accuracies:
            accuracy[candidate] = sum(accuracies) / len(accuracies)
        if candidate != PLAIN and scores:
            overall[candidate] = sum(scores) / len(scores)
    eligible = {c: v for c, v in overall.items() if min_accuracy is None or accuracy.get(c, 0.0) >= min_accuracy}
    best = max(eligible, key=eligible.get) if eligible else None
    # The current default is kept unless the best candidate beats it by an effect (paired over every
    # appearance and seed): a tie or a difference within noise is no reason to change the table.
    beats_current = None
    if best is not None and best != current and current in overall:
        pairs = _paired(jobs, best, current)
        beats_current = compare([a - b for a, b in pairs], "miou") if len(pairs) > 1 else None
    chosen = best
    if best != current and current in eligible and not (beats_current and beats_current["effect"]
                                                       and beats_current["diff"] > 0):
        chosen = current  # a default that meets the condition is replaced only by an effect
    return {"rows": rows, "overall_val_miou": overall, "val_accuracy": accuracy, "min_accuracy": min_accuracy,
            "eligible": sorted(eligible), "best": best, "best_vs_current": beats_current,
            "chosen": chosen, "current": current, "current_is_chosen": chosen == current}


def _paired(jobs: list[dict[str, Any]], a: str, b: str) -> list[tuple[float, float]]:
    """(a's val mIoU, b's) for every (appearance, seed) both ran."""
    by = {(j["candidate"], j["appearance"], j["seed"]): j["miou"] for j in jobs}
    return [(by[(a, app, seed)], by[(b, app, seed)]) for (c, app, seed) in sorted(by) if c == a
            and (b, app, seed) in by]


def render(report: dict[str, Any]) -> str:
    """The markdown report of a sweep (docs/sweep_STUDY.md)."""
    summary, meta = report["summary"], report["meta"]
    lines = [f"# {meta['title']}", "",
             f"Generated by `{meta['command']}` (revision {meta['revision'][:12]}, {meta['wall_s'] / 60:.0f} min "
             f"on {meta['machine']}). Seeds {', '.join(map(str, meta['seeds']))} (the results table reports "
             f"seeds 0-4), the table's recipe for everything else; every number is on the **val** split "
             f"({meta['val_images']} images, CAM mIoU at the best val threshold), the test split is never read.",
             "", "| appearance | candidate | settings | val mIoU | head | body | bg FP | mIoU vs reference | "
             f"mIoU vs {summary['current']} |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def cell(stats: dict[str, Any], metric: str) -> str:
        s = stats.get(metric)
        return "–" if s is None else f"{s['mean']:.3f} ± {s['std']:.3f}"

    def diff(row: dict[str, Any], base: str) -> str:
        c = row["vs"].get(base, {}).get("miou")
        if c is None:
            return "–"
        p = "p < 0.001" if c["p"] < 0.001 else f"p = {c['p']:.3f}"
        return f"{c['diff']:+.3f} ({p}{'' if c['effect'] else ', no effect'})"

    for row in summary["rows"]:
        settings = ", ".join(f"{k} {v}" for k, v in meta["settings"].get(row["candidate"], {}).items())
        if row["candidate"] == PLAIN:
            settings = f"the {meta['reference_row']} row" + (f", {settings}" if settings else "")
        lines.append(f"| {row['appearance']} | {'reference' if row['candidate'] == PLAIN else row['candidate']} | {settings} | {cell(row['stats'], 'miou')} | "
                     f"{cell(row['stats'], 'head')} | {cell(row['stats'], 'body')} | {cell(row['stats'], 'bg_fpr')} | "
                     f"{diff(row, PLAIN)} | {diff(row, summary['current'])} |")
    overall = ", ".join(f"{c} {v:.3f}" for c, v in sorted(summary["overall_val_miou"].items(), key=lambda kv: -kv[1]))
    best, versus = summary["best"], summary.get("best_vs_current")
    condition = summary.get("min_accuracy")
    if condition is not None:
        accuracies = ", ".join(f"{'reference' if c == PLAIN else c} {v:.3f}"
                               for c, v in sorted(summary.get("val_accuracy", {}).items()))
        lines += ["", f"Mean val accuracy: {accuracies}. Only a candidate whose mean val accuracy reaches "
                      f"{condition:g} is eligible (a recipe must first train the network): "
                      f"{', '.join(summary.get('eligible') or []) or 'none'}."]
    if best is None:
        verdict = ("no candidate has finished yet" if not summary["overall_val_miou"] else
                   "no candidate reaches the accuracy condition")
    elif condition is not None and summary["current"] not in (summary.get("eligible") or []) and \
            summary["chosen"] == best:
        verdict = (f"the current default ({summary['current']}) does not reach it, so {best}, the highest eligible, "
                   "is chosen")
    elif summary["current_is_chosen"] and best == summary["current"]:
        verdict = "the current default has the highest, and stays"
    elif summary["current_is_chosen"] or versus is None:
        detail = "" if versus is None else f" ({versus['diff']:+.3f}, p = {versus['p']:.3f})"
        verdict = (f"{best} is higher but not by an effect{detail}, so the current default stays"
                   if summary["current_is_chosen"] else f"{best} is the highest; the current default was not run")
    else:
        verdict = (f"{best} beats the current default by an effect ({versus['diff']:+.3f}, p = {versus['p']:.3f}): "
                   f"it is the one chosen, and the default should become it")
    lines += ["", f"Mean val mIoU over every appearance and seed: {overall}. Rule: the highest one replaces the "
                  f"current default ({summary['current']}) only if it beats it by an effect (two-sided paired t-test "
                  f"over appearances and seeds, p < 0.05, at least 0.01); {verdict}.", ""]
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Choose the CRM recipe on val, on seeds the results table never reports.",
                                parents=[job_options(DEFAULT_STEPS), device_option()],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--study", default="crm_recipe", choices=list(STUDIES), help="what is being chosen")
    p.add_argument("--candidates", nargs="+", default=None,
                   choices=sorted({c for study in STUDIES.values() for c in study.candidates}),
                   help="candidates of the study to try (default all; the reference is always trained beside them)")
    p.add_argument("--appearance", nargs="+", default=["informative"], choices=APPEARANCES,
                   help="data appearances the candidates are scored on")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SWEEP_SEEDS),
                   help="seeds (keep them out of the table's 0-4)")
    p.add_argument("--val-images", type=int, default=VAL_IMAGES, help="val images scored")
    p.add_argument("--checkpoint-dir", default="checkpoints", help="where sweep_*.pt go")
    p.add_argument("--json", default=None, help="per-run values and the summary (default docs/sweep_STUDY.json)")
    p.add_argument("--out", default=None, help="markdown report (default docs/sweep_STUDY.md)")
    p.add_argument("--render", action="store_true",
                   help="only rewrite --out from --json with the current statistics; trains nothing")
    return p


def cli(argv: list[str] | None = None) -> int:
    from crm_core.experiments.results import code_revision
    import platform

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    if args.jobs < 1 or args.steps < 1 or args.val_images < 1:
        log.error("--jobs, --steps and --val-images must be >= 1")
        return 2
    if set(args.seeds) & set(range(5)):
        log.error("seeds %s are the results table's (0-4): a recipe is chosen on seeds the table does not report",
                  sorted(set(args.seeds) & set(range(5))))
        return 2
    study = STUDIES[args.study]
    candidates = args.candidates or list(study.candidates)
    foreign = [c for c in candidates if c not in study.candidates]
    if foreign:
        log.error("%s is not a candidate of --study %s; choose from %s", ", ".join(foreign), args.study,
                  sorted(study.candidates))
        return 2
    json_path = args.json or f"docs/sweep_{args.study}.json"
    out_path = args.out or f"docs/sweep_{args.study}.md"
    current = study.current
    if args.render:
        try:
            report = json.loads(Path(json_path).read_text())
            report["summary"] = summarise_sweep(report["jobs"], report["summary"]["current"],
                                                report["summary"].get("min_accuracy"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("cannot read sweep report %s: %s", json_path, exc)
            return 2
        atomic_write_text(out_path, render(report))
        return 0
    started = time.perf_counter()
    command = "python -m crm_core.experiments.recipe_sweep " + " ".join(argv if argv is not None else sys.argv[1:])
    tasks = [dict(study=args.study, candidate=c, appearance=a, seed=s, steps=args.steps, val_images=args.val_images,
                  checkpoint_dir=args.checkpoint_dir, runs_dir=args.runs_dir, device=args.device,
                  threads=threads_per_job(args.jobs, args.device), train_size=args.train_size)
             for s in args.seeds for a in args.appearance for c in (PLAIN, *candidates)]

    def write(results: dict[int, dict[str, Any]], complete: bool) -> str:
        jobs = [results[i] for i in sorted(results)]
        meta = {"command": command.strip(), "wall_s": time.perf_counter() - started, "jobs": args.jobs,
                "device": args.device, "steps": args.steps, "seeds": args.seeds, "val_images": args.val_images,
                "complete": complete, "recipe": RESULTS.fields(), "crm_recipe": CRM.fields(), "study": args.study, "title": study.title,
                "row": study.row, "reference_row": study.reference_row,
                "settings": {name: _as_json(settings)
                             for name, settings in ((PLAIN, study.reference), *study.candidates.items())},
                "machine": f"{platform.machine()} with {os.cpu_count()} CPU cores", "revision": code_revision()}
        report = {"meta": meta, "jobs": jobs, "summary": summarise_sweep(jobs, current, study.min_accuracy)}
        text = render(report)
        atomic_write_json(json_path, report)
        atomic_write_text(out_path, text)
        return text

    results = run_jobs(sweep_job, tasks, args.jobs, desc="sweep", on_done=lambda done: write(done, complete=False))
    print(write(dict(enumerate(results)), complete=True))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
