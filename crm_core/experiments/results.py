"""The results table: every configuration over several seeds, with the untrained floor.

    python -m crm_core.experiments.results --seeds 3                    # docs/results.json + docs/results_runs.md
    python -m crm_core.experiments.results --seeds 3 --jobs 8 --device cuda

Each (row, seed) trains one model with the shared recipe (:data:`crm_core.recipes.RESULTS`; a row changes only
what it names), then evaluates it on the synthetic test split at the CAM threshold chosen on
the val split: accuracy, CAM mIoU, head and body coverage, background false-positive rate,
the decoder's CAM dependence, train time. "floor" rows are the same architectures with no
training step. Rows come in groups (:data:`ROWS`):

- ``main``: {resnet, resnet_drs} x {no CRM, CRM} on both data appearances (``random``: the
  reconstruction cannot use the CAM; ``informative``: it can -- ``python -m crm_core.experiments.oracle``).
- ``floor``: untrained resnet and resnet_drs on both appearances.
- ``ablation``: on informative data, SSC's decoder input and SSC's alignment target, and an
  over-expanding DRS (delta 0.3) with and without CRM (the paper's claim that CRM "constrains
  the diffusion" of attention).
- ``preset``: the speed preset's check on the recipe that shows the effect -- resnet_drs + CRM on
  informative data with the ``exact`` preset (ReconstructNet decodes at full size) against the
  default ``fast`` one (a quarter of the size): the body coverage must agree within 0.05.
- ``legacy``: the old table's fast/exact preset check on random data (``--exact-row``).
- ``stage2``: a segmentation network (``python -m crm_core.segment``, :data:`SEG_RECIPE`) trained
  on the train-split pseudo masks of resnet and of resnet + CRM (informative data; the CAM model
  of the same seed, trained first or reused; the masks cut at the threshold that model's job
  chose on val, ``postprocess --at-val-threshold``), on resnet + CRM's masks refined with SLIC
  superpixels (``postprocess --superpixels``), on the image brightness's masks (the no-model cue,
  cut at its own val-chosen threshold), on the ground truth (the ceiling), and with no
  training step (the floor); each job records the mIoU of its masks, the
  threshold they were cut at and the CAM mIoU of the model that made them.

Seeds change the weights, the batches *and* the synthetic data; rows with the same seed share
all three, so comparisons are paired by seed. An effect is claimed only where a two-sided paired
Student's t-test over the seeds gives p < :data:`ALPHA` and the mean difference reaches a minimal
size (:data:`NEGLIGIBLE`, below which it says "negligible"); elsewhere the table says "no effect".
Every comparison reports its p.

``baseline`` and ``ceiling`` rows score maps that come from no model (:mod:`crm_core.experiments.baselines`:
the image's brightness, a per-pixel colour classifier, perfect head / object masks at the CAM
grid) with the same protocol and data, so every table reads between the floor, the cues and the
ceiling. ``camouflage`` is the appearance where colour alone does not segment the object.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from crm_core.atomic import atomic_write_json, atomic_write_text
from crm_core.cli_options import device_option, job_options
from crm_core.data.synthetic import APPEARANCES
from crm_core.evaluate import faithfulness_options
from crm_core.processes import run_jobs, threads_per_job

from crm_core.experiments.results_jobs import checkpoint_name, run_stage2, score_constant_floor, score_row_baseline
from crm_core.experiments.results_report import fill_blocks, markdown
from crm_core.experiments.results_summary import summarise
from crm_core.recipes import CRM, DEFAULT_STEPS, RESULTS
from crm_core.experiments.results_table import (DELETION_IMAGES, FAITHFULNESS_METRICS, GROUPS, MULTI_OBJECTS, README_PLAN,
                                                ROW_BY_KEY, ROWS, SEG_RECIPE, Row)

log = logging.getLogger("crm_core.experiments.results")


# What a job's numbers depend on: a change here makes a run "dirty" (the table's own outputs,
# docs/results.* and the README, are written by the runs and do not).
CODE_PATHS = ("crm_core", "requirements.txt")


def code_revision() -> str:
    """The git commit the code runs from; with "+dirty:<hash>" when tracked code files
    (:data:`CODE_PATHS`) differ from it (the hash: sha256 of their ``git diff HEAD``, so two dirty runs say whether they ran the same
    changes); "unknown" outside a git checkout. Every job of docs/results.json records it."""
    import hashlib
    import subprocess

    root = Path(__file__).resolve().parents[2]  # the repository
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        diff = subprocess.run(["git", "diff", "HEAD", "--", *CODE_PATHS], cwd=root, capture_output=True,
                              timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + (f"+dirty:{hashlib.sha256(diff).hexdigest()[:12]}" if diff.strip() else "")


def job_command(row_key: str, seed: int, steps: int, test_limit: int, val_limit: int, device: str,
                crm_overrides: dict[str, Any], train_size: int | None, stage2_steps: int | None = None,
                threads: int | None = None, stage2_seed: int = 0, faithfulness: str = "basic",
                deletion_images: int = DELETION_IMAGES) -> str:
    """The command that reruns exactly this (row, seed) and merges it into the table (with the
    thread count it ran on: CPU results depend on it)."""
    parts = ["python -m crm_core.experiments.results --merge --rows", row_key, "--first-seed", str(seed), "--seeds 1"]
    if threads is not None:
        parts += ["--threads", str(threads)]
    if stage2_seed:
        parts += ["--first-stage2-seed", str(stage2_seed), "--stage2-seeds 1"]
    if steps != DEFAULT_STEPS:
        parts += ["--steps", str(steps)]
    if test_limit != 200:
        parts += ["--test-limit", str(test_limit)]
    if val_limit != 100:
        parts += ["--val-limit", str(val_limit)]
    if train_size is not None:
        parts += ["--train-size", str(train_size)]
    if stage2_steps is not None and stage2_steps != SEG_RECIPE["steps"]:
        parts += ["--stage2-steps", str(stage2_steps)]
    if "crm_preset" in crm_overrides:
        parts += ["--crm-preset", str(crm_overrides["crm_preset"])]
    if faithfulness != "basic":
        parts += ["--faithfulness", faithfulness]
        if deletion_images != DELETION_IMAGES:
            parts += ["--deletion-images", str(deletion_images)]
    if device != "cpu":
        parts += ["--device", device]
    return " ".join(parts)


def job_key(job: dict[str, Any]) -> tuple[str, int, int]:
    """What a job of the table is: its row, its seed and (stage 2) its network seed."""
    return job["row"], job["seed"], int(job.get("stage2_seed") or 0)


def run_job(row_key: str, seed: int, steps: int, test_limit: int, val_limit: int, checkpoint_dir: str, runs_dir: str,
            device: str, crm_overrides: dict[str, Any], reuse: bool, threads: int | None,
            train_size: int | None = None, stage2_steps: int | None = None,
            table_source: dict[str, Any] | None = None, stage2_seed: int = 0,
            revision: str | None = None, source: dict[str, Any] | None = None,
            faithfulness: str = "basic", deletion_images: int = DELETION_IMAGES) -> dict[str, Any]:
    """Train (unless reused or a floor row) and evaluate one (row, seed); returns its measurements.

    ``revision``: the code revision the runner started from (its workers import that code); when
    the tracked files have changed by the time this job starts, the job records the tree it found
    as ``tree_changed`` beside it, so a rerun knows its code may not be that revision's.

    ``table_source``: for a stage-2 row, the table's own job of its source CAM row and seed (from
    the JSON merged into). Its checkpoint is reused when present; otherwise it is retrained at the
    thread count that job recorded, and the stage-2 job says whether the copy reproduces it.
    ``source``: that source job, already run (:func:`run` runs each source once for all the
    network seeds that learn its masks); computed here when absent.

    ``faithfulness``: the evaluation's faithfulness level (:data:`crm_core.evaluate.FAITHFULNESS_LEVELS`);
    the maps from no model are scored beside the CAM unless it is "none"; "full" adds the deletion
    and insertion AUCs of the first ``deletion_images`` test images (the CAM's and those maps')."""
    import torch

    from crm_core.evaluate import evaluate_protocol
    from crm_core.experiments.baselines import FAITHFULNESS_REFERENCES
    from crm_core.explain import CamModel
    from crm_core.thresholds import THRESHOLDS
    from crm_core.train import TrainConfig, main as train_main

    if threads:
        torch.set_num_threads(threads)
    os.environ["CRM_LAB_NO_PROGRESS"] = "1"
    row = ROW_BY_KEY[row_key]
    used_threads = torch.get_num_threads() if device == "cpu" else None
    found = code_revision()
    grid = THRESHOLDS.grid
    provenance = {"revision": revision or found, "thresholds": [min(grid), max(grid), len(grid)],
                  "threads": used_threads,
                  "command": job_command(row_key, seed, steps, test_limit, val_limit, device, crm_overrides,
                                         train_size, stage2_steps, used_threads, stage2_seed,
                                         "basic" if row.baseline or row.stage2 else faithfulness, deletion_images)}
    if revision and found != revision:
        provenance["tree_changed"] = found
    if row.baseline is not None:
        return {"row": row.key, "seed": seed, **score_row_baseline(row, seed, test_limit, val_limit), **provenance}
    if row.stage2 == "constant":
        return {"row": row.key, "seed": seed, **score_constant_floor(row, seed, test_limit, val_limit), **provenance}
    if row.stage2 is not None:
        checks: dict[str, Any] = {}
        if row.stage2 != "gt":  # the CAM model of the source row (same seed), reused when already trained
            if source is None:
                source = run_source_job(row.stage2, seed, steps, test_limit, val_limit, checkpoint_dir, runs_dir,
                                        device, crm_overrides, (table_source or {}).get("threads") or threads,
                                        train_size, revision)
            if threads:
                torch.set_num_threads(threads)  # the source may have run at the table's own thread count
            if table_source is not None and table_source.get("miou") is not None:
                checks = {"source_threads": source.get("threads"),
                          "source_reproduces_table": source["miou"] == table_source["miou"]
                          and source.get("threshold") == table_source.get("threshold")}
        return {"row": row.key, "seed": seed, "stage2_seed": stage2_seed,
                **run_stage2(row, seed, source, test_limit, checkpoint_dir, runs_dir, device, train_size, stage2_steps,
                             stage2_seed), **checks, **provenance}
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
    evaluation = evaluate_protocol(model, limit=test_limit, val_limit=val_limit, samples=5, runs_dir=runs_dir,
                                   faithfulness=faithfulness, deletion_images=deletion_images,
                                   references=None if faithfulness == "none" else FAITHFULNESS_REFERENCES)
    at = evaluation["cam_miou_val_threshold"]
    coverage = evaluation["coverage_val_threshold"]
    return {"cam_peak_raw": raw_cam_peak(model), **{
        "row": row.key, "seed": seed, "checkpoint": str(path), "reused": reused,
        "accuracy": evaluation["accuracy"], "threshold": at["threshold"], "miou": at["miou"],
        "fg_iou": at["fg_iou"], "bg_fpr": at["bg_fpr"], "head": coverage.get("head"), "body": coverage.get("body"),
        "confusion": at.get("confusion"),  # several objects per image: object pixels given another present class
        "miou_best_on_test": evaluation["cam_miou_best"]["miou"],
        **{key: evaluation.get(key) for key in FAITHFULNESS_METRICS},
        **({"deletion_images": evaluation["deletion_images"]} if "deletion_images" in evaluation else {}),
        "references": evaluation.get("references"),  # the same metrics of maps from no model, same classifier
        "cam_dependence": evaluation.get("cam_dependence"), "recon_l1": evaluation.get("recon_l1"),
        "recon_l1_shuffled": evaluation.get("recon_l1_shuffled"),
        "train_s": float(model.checkpoint.extra.get("wall_time", 0.0)), "eval_s": time.perf_counter() - started,
        "notices": model.checkpoint.train_config.get("extra", {}).get("notices", []),
        **provenance,
    }}


def run_source_job(source_key: str, seed: int, steps: int, test_limit: int, val_limit: int, checkpoint_dir: str,
                   runs_dir: str, device: str, crm_overrides: dict[str, Any], threads: int | None,
                   train_size: int | None, revision: str | None) -> dict[str, Any]:
    """The CAM model (or no-model map) whose masks a stage-2 row learns: its checkpoint reused when
    already trained, its threshold chosen on val. Stage 2 needs only the checkpoint, the threshold
    and the mIoU, so the evaluation skips faithfulness."""
    return run_job(source_key, seed, steps, test_limit, val_limit, checkpoint_dir, runs_dir, device, crm_overrides,
                   True, threads, train_size, revision=revision, faithfulness="none")


def raw_cam_peak(model: Any, images: int = 16) -> float:
    """The median, over the first ``images`` test images, of the peak of the ground-truth class's
    raw (unnormalised) CAM: how much signal the normalised maps were scaled up from. A tiny peak
    is not an empty map (normalisation is scale-free), but the table flags it
    (:data:`crm_core.experiments.results_table.TINY_CAM_PEAK`)."""
    import torch

    from crm_core.cams import DEFAULT_CAM_METHOD, create_cam
    from crm_core.explain import dataset_for

    test = dataset_for(model, "test")
    batch = next(iter(torch.utils.data.DataLoader(torch.utils.data.Subset(test, range(min(images, len(test)))),
                                                  batch_size=images)))
    with torch.no_grad():
        raw = create_cam(DEFAULT_CAM_METHOD, model.classifier)(batch["image"].to(model.device),
                                                               batch["label"].tolist()).cams  # (B, h, w)
    return float(raw.flatten(1).amax(dim=1).median())


def select_rows(groups: list[str], keys: list[str] | None, appearances: list[str], max_objects: int = 1) -> list[Row]:
    """The rows ``keys`` names, else those of ``groups`` on ``appearances`` with ``max_objects``
    objects per image at most (1: the single-object table; the multi-object rows' own number)."""
    if keys:
        unknown = [k for k in keys if k not in ROW_BY_KEY]
        if unknown:
            raise ValueError(f"unknown rows {unknown}; choose from {sorted(ROW_BY_KEY)}")
        return [ROW_BY_KEY[k] for k in keys]
    return [r for r in ROWS if r.group in groups and r.appearance in appearances and r.max_objects == max_objects]


def run(rows: list[Row], seeds: list[int], *, steps: int, test_limit: int, val_limit: int, checkpoint_dir: str,
        runs_dir: str, device: str, jobs: int, crm_overrides: dict[str, Any], reuse: bool,
        train_size: int | None = None, on_job: Callable[[list[dict[str, Any]]], None] | None = None,
        stage2_steps: int | None = None, threads: int | None = None,
        table: list[dict[str, Any]] | None = None, stage2_seeds: tuple[int, ...] = (0,),
        revision: str | None = None, faithfulness: str = "basic",
        deletion_images: int = DELETION_IMAGES) -> list[dict[str, Any]]:
    """Run every (row, seed) job, ``jobs`` at a time (a stage-2 row: one per network seed of
    ``stage2_seeds``); results come back in task order.

    ``on_job`` gets the jobs finished so far after each one (the CLI rewrites its report, so an
    interrupted run keeps what it measured). ``revision``: the code revision the run started from
    (default: the tree now), which every job records. ``faithfulness`` ("basic" or "full") and
    ``deletion_images``: the CAM rows' evaluation (:func:`run_job`)."""
    revision = revision or code_revision()
    tasks = [(row.key, seed, k) for seed in seeds for row in rows for k in (stage2_seeds if row.stage2 else (0,))]
    common = dict(steps=steps, test_limit=test_limit, val_limit=val_limit, checkpoint_dir=checkpoint_dir,
                  runs_dir=runs_dir, device=device, crm_overrides=crm_overrides, reuse=reuse,
                  threads=threads or threads_per_job(jobs, device), train_size=train_size, stage2_steps=stage2_steps,
                  revision=revision)
    cam_evaluation = dict(faithfulness=faithfulness, deletion_images=deletion_images)

    logged: set[int] = set()

    def done(results: dict[int, dict[str, Any]]) -> None:
        for index in sorted(set(results) - logged):
            logged.add(index)
            key, seed, k = tasks[index]
            log.info("%s seed %d%s: %s", key, seed, f" network seed {k}" if k else "", _short(results[index]))
        if on_job is not None:
            on_job([results[i] for i in sorted(results)])

    # a stage-2 row's source CAM is the table's own job of that row and seed, when the table has it
    by_key = {(j["row"], j["seed"]): j for j in table or []}

    def table_source_of(source: str, seed: int) -> dict[str, Any] | None:
        job = by_key.get((source, seed))
        return None if job is None else {k: job.get(k) for k in ("threads", "miou", "threshold")}

    def table_source(key: str, seed: int) -> dict[str, Any] | None:
        source = ROW_BY_KEY[key].stage2
        return table_source_of(source, seed) if source not in (None, "gt", "constant") else None

    # each stage-2 source (CAM row, seed) runs once, before the network seeds that learn its masks:
    # parallel jobs of one source would otherwise each train the same model
    wanted = list(dict.fromkeys((ROW_BY_KEY[key].stage2, seed) for key, seed, _ in tasks
                                if ROW_BY_KEY[key].stage2 not in (None, "gt", "constant")))
    source_tasks = [dict(source_key=key, seed=seed, threads=(table_source_of(key, seed) or {}).get("threads")
                         or common["threads"], **{k: v for k, v in common.items() if k not in ("reuse", "threads",
                                                                                              "stage2_steps")})
                    for key, seed in wanted]
    sources = dict(zip(wanted, run_jobs(run_source_job, source_tasks, jobs, desc="stage-2 sources"))) if wanted else {}

    return run_jobs(run_job, [dict(row_key=key, seed=seed, table_source=table_source(key, seed), stage2_seed=k,
                                   source=sources.get((ROW_BY_KEY[key].stage2, seed)), **common, **cam_evaluation)
                              for key, seed, k in tasks], jobs, desc="results", on_done=done)


def _short(job: dict[str, Any]) -> str:
    return ", ".join(f"{k} {job[k]:.3f}" for k in ("accuracy", "miou", "head", "body", "bg_fpr")
                     if job.get(k) is not None)


def oracle_report(appearances: tuple[str, ...] = APPEARANCES) -> dict[str, Any]:
    """Per appearance, the oracle gain and what colour alone segments (``python -m crm_core.experiments.oracle``'s
    numbers at its defaults: seed 0, 400 train / 100 val / 200 test images, 112 px)."""
    from crm_core.experiments.oracle import colour_cues, oracle_gain

    out = {}
    for appearance in tqdm(appearances, desc="oracle", unit="appearance"):
        gain = oracle_gain(appearance, image_size=RESULTS.image_size, num_classes=RESULTS.num_classes)
        cues = colour_cues(appearance, image_size=RESULTS.image_size, num_classes=RESULTS.num_classes,
                           cam_size=RESULTS.cam_size)
        out[appearance] = {"oracle_gain": gain["oracle_gain"], "l1_constant": gain["l1_constant"],
                           "l1_oracle": gain["l1_oracle"], "intensity_miou": cues["intensity"]["miou"],
                           "colour_miou": cues["colour"]["miou"]}
    return out


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train and evaluate the results table over several seeds.",
                                parents=[job_options(DEFAULT_STEPS), device_option(),
                                         faithfulness_options(("basic", "full"), DELETION_IMAGES)],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (0, 1, ..., N-1)")
    p.add_argument("--first-seed", type=int, default=0, help="first seed")
    p.add_argument("--groups", nargs="+", default=["main", "floor", "baseline", "ceiling", "ablation", "preset"],
                   choices=GROUPS,
                   help="row groups to run")
    p.add_argument("--rows", nargs="+", default=None, help="run these row keys only (overrides --groups)")
    p.add_argument("--appearance", nargs="+", default=list(APPEARANCES), choices=APPEARANCES,
                   help="data appearances to run")
    p.add_argument("--max-objects", type=int, default=1, choices=(1, MULTI_OBJECTS),
                   help=f"run the groups' single-object rows (1) or their multi-object rows ({MULTI_OBJECTS}: up to "
                        f"{MULTI_OBJECTS} animals of distinct classes per image, scored by the multi-class protocol)")
    p.add_argument("--stage2-steps", type=int, default=SEG_RECIPE["steps"],
                   help="training steps of each stage-2 segmentation network (group stage2)")
    p.add_argument("--stage2-seeds", type=int, default=1,
                   help="stage-2 networks per CAM seed and mask set (network seeds --first-stage2-seed, ...)")
    p.add_argument("--first-stage2-seed", type=int, default=0, help="first stage-2 network seed")
    p.add_argument("--test-limit", type=int, default=200, help="test images evaluated")
    p.add_argument("--val-limit", type=int, default=100, help="val images the CAM threshold is chosen on")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of each job (default: the cores split between --jobs; results depend on it, "
                        "so every job's recorded command names it)")
    p.add_argument("--allow-dirty", action="store_true",
                   help="run even though tracked files differ from the git commit (the jobs then record "
                        "the diff's hash); without it such a run is refused, as its numbers could not be rerun")
    p.add_argument("--checkpoint-dir", default="checkpoints", help="where results_*.pt go")
    p.add_argument("--out", default="docs/results_runs.md",
                   help="markdown report of every run: each row, its train time, every paired difference, the parts")
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
    p.add_argument("--drop-rows", default=None, nargs="+", metavar="KEY",
                   help="only remove these rows' jobs from --json (rows whose definition changed and that are "
                        "not rerun yet), recorded as a part of the report; runs nothing")
    p.add_argument("--readme", default=None, nargs="+", metavar="PATH",
                   help="only rewrite --out and the generated blocks of each PATH from --json (README.md's headline "
                        "table, docs/results.md's tables); runs nothing")
    return p


def cli(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    if args.readme or args.oracle or args.drop_rows:
        return _refresh(args)
    if args.plan:
        common = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--plan"]
        for rows, count, *extra in README_PLAN:
            code = cli(["--merge", *common, "--rows", *rows, "--seeds", str(count), *(extra[0] if extra else ())])
            if code:
                return code
        return cli(["--oracle", *common])
    if (args.seeds < 1 or args.jobs < 1 or args.steps < 1 or args.stage2_steps < 1 or (args.threads or 1) < 1
            or args.stage2_seeds < 1 or args.first_stage2_seed < 0 or args.deletion_images < 1):
        log.error("--seeds, --jobs, --steps, --stage2-steps, --stage2-seeds, --threads and --deletion-images must "
                  "be >= 1, --first-stage2-seed >= 0")
        return 2
    revision = code_revision()
    if "+dirty" in revision and not args.allow_dirty:
        log.error("tracked files differ from git commit %s: commit first (a job's recorded revision must rerun it), "
                  "or pass --allow-dirty to record the diff's hash instead", revision.split("+")[0][:12])
        return 2
    groups = list(args.groups) + (["legacy"] if args.exact_row else [])
    try:
        rows = select_rows(groups, args.rows, args.appearance, args.max_objects)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    crm_overrides = {} if args.crm_preset is None else {"crm_preset": args.crm_preset}
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    started = time.perf_counter()
    command = "python -m crm_core.experiments.results " + " ".join(argv if argv is not None else sys.argv[1:])
    old = json.loads(Path(args.json).read_text()) if args.merge and args.json and Path(args.json).is_file() else None

    def write(jobs: list[dict[str, Any]], complete: bool) -> str:
        meta = {"command": command.strip(), "wall_s": time.perf_counter() - started, "jobs": args.jobs,
                "device": args.device, "steps": args.steps, "seeds": seeds, "complete": complete,
                "stage2_recipe": {**SEG_RECIPE, "steps": args.stage2_steps},
                "crm_recipe": {**CRM.fields(), **crm_overrides}, "recipe": RESULTS.fields(),
                "machine": f"{platform.machine()} with {os.cpu_count()} CPU cores", "revision": revision}
        if old is not None:
            done = {job_key(j) for j in jobs}
            jobs = [j for j in old.get("jobs", []) if job_key(j) not in done] + jobs
            meta["merged_with"] = old.get("meta")
        report = {"meta": meta, "jobs": jobs, "summary": summarise(jobs)}
        if old is not None and "oracle" in old:  # measured by --oracle, not by a row: a merge keeps it
            report["oracle"] = old["oracle"]
        table = markdown(report)
        if args.json:
            atomic_write_json(args.json, report)
        if args.out:
            atomic_write_text(args.out, table)
        return table

    jobs = run(rows, seeds, steps=args.steps, test_limit=args.test_limit, val_limit=args.val_limit,
               checkpoint_dir=args.checkpoint_dir, runs_dir=args.runs_dir, device=args.device, jobs=args.jobs,
               crm_overrides=crm_overrides, reuse=args.reuse, train_size=args.train_size,
               on_job=lambda done: write(done, complete=False), stage2_steps=args.stage2_steps, threads=args.threads,
               table=(old or {}).get("jobs"), revision=revision, faithfulness=args.faithfulness,
               deletion_images=args.deletion_images,
               stage2_seeds=tuple(range(args.first_stage2_seed, args.first_stage2_seed + args.stage2_seeds)))
    print(write(jobs, complete=True))
    return 0


def _refresh(args: argparse.Namespace) -> int:
    """--oracle (measure into the JSON), --drop-rows (remove rows' jobs from it) and --readme
    (render from it): no training."""
    path = Path(args.json)
    try:
        report = json.loads(path.read_text())
        if not isinstance(report, dict) or "jobs" not in report:
            raise ValueError(f"{path} is not a results report")
    except (OSError, ValueError) as exc:
        log.error("cannot read %s: %s", path, exc)
        return 2
    if args.drop_rows:
        unknown = sorted(set(args.drop_rows) - set(ROW_BY_KEY))
        if unknown:
            log.error("--drop-rows: no such row %s (crm_core.experiments.results_table.ROWS)", ", ".join(unknown))
            return 2
        dropped = {key: sum(1 for job in report["jobs"] if job["row"] == key) for key in args.drop_rows}
        report["jobs"] = [job for job in report["jobs"] if job["row"] not in dropped]
        # the removal is a part of the report like a merge: its parts list says what went and why
        earlier = report.get("meta") or {}
        report["meta"] = {**{k: v for k, v in earlier.items() if k != "merged_with"},
                          "command": "python -m crm_core.experiments.results --drop-rows " + " ".join(args.drop_rows),
                          "dropped": dropped, "wall_s": 0.0, "jobs": 1, "complete": True,
                          "revision": code_revision(), "merged_with": earlier}
    report["summary"] = summarise(report["jobs"])  # the current statistics, from the per-seed values
    if args.oracle:
        started = time.perf_counter()
        report["oracle"] = oracle_report()
        report["meta"] = {**report["meta"], "oracle_wall_s": time.perf_counter() - started}
    if args.drop_rows or args.oracle:  # --readme alone only renders
        atomic_write_json(path, report)
    if args.out:
        atomic_write_text(args.out, markdown(report))
    for path in args.readme or ():
        try:
            fill_blocks(Path(path), report)
        except (OSError, ValueError) as exc:
            log.error("%s", exc)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
