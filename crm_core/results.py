"""The README's results table: resnet, resnet+CRM, resnet_drs, resnet_drs+CRM on synthetic pets.

    python -m crm_core.results --out docs/results.md

Trains the four configurations with one shared recipe (:data:`RECIPE`), evaluates each on
the synthetic test split (accuracy, CAM mIoU at the fixed and best threshold, head/body
coverage) and scores superpixel-refined pseudo masks. Checkpoints land in
``checkpoints/results_*.pt`` and runs in ``runs/results_*``; the table is printed and
written as markdown together with the exact command and the time each step took.
"""
from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

from crm_core.api import CamModel, dataset_for
from crm_core.atomic import atomic_write_text
from crm_core.evaluate import evaluate_model
from crm_core.postprocess import make_pseudo_masks
from crm_core.runs import RunDir
from crm_core.train import TrainConfig, main as train_main

log = logging.getLogger("crm_core.results")

# One recipe for all four rows; only `model` and `crm` change between them.
RECIPE: dict[str, Any] = dict(
    dataset="synthetic", arch="resnet18", image_size=112, output_stride=16, num_classes=4,
    batch_size=16, epochs=2, cls_lr=1e-3, rec_lr=2e-3, lr_schedule="cosine", align_warmup=1, seed=0, workers=1,
    val_limit=100,
)
CONFIGS = (("resnet", False), ("resnet", True), ("resnet_drs", False), ("resnet_drs", True))
# With --exact-row: the quality check of the CRM speed preset, resnet_drs + CRM as the method is
# written (crm_preset=exact), beside the table's fast-preset row. Not part of the 4-row budget.
EXACT_ROW = ("resnet_drs", True, "exact")


def row_name(model: str, crm: bool, preset: str | None = None) -> str:
    return f"results_{model}{'_crm' if crm else ''}{'_' + preset if preset else ''}"


def run(steps: int | None, test_limit: int, checkpoint_dir: str, runs_dir: str, train_size: int | None,
        extra: dict[str, Any], reuse: bool = False, exact_row: bool = False) -> list[dict[str, Any]]:
    rows = []
    configs = [(model, crm, None) for model, crm in CONFIGS] + ([EXACT_ROW] if exact_row else [])
    for model, crm, preset in configs:
        name = row_name(model, crm, preset)
        started = time.perf_counter()
        overrides = {**(extra if crm else {}), **({"crm_preset": preset} if preset else {})}
        cfg = TrainConfig(name=name, model=model, crm=crm, steps=steps, train_size=train_size,
                          checkpoint_dir=checkpoint_dir, runs_dir=runs_dir, **{**RECIPE, **overrides})
        path = Path(checkpoint_dir) / f"{name}.pt"
        if reuse and steps is not None and path.is_file() and CamModel.load(path).checkpoint.step == steps:
            log.info("%s: reusing the finished checkpoint %s", name, path)
        else:
            path = train_main(cfg)
        cam_model = CamModel.load(path)
        train_s = float(cam_model.checkpoint.extra.get("wall_time", time.perf_counter() - started))
        eval_started = time.perf_counter()
        test_set = dataset_for(cam_model, "test")
        evaluation = evaluate_model(cam_model, test_set, limit=test_limit, samples=5,
                                    samples_dir=RunDir(Path(runs_dir) / name).samples_dir)
        evaluation["split"] = "test"
        RunDir(Path(runs_dir) / name).write_eval(evaluation)
        pseudo = make_pseudo_masks(cam_model, dataset_for(cam_model, "test"), None, refine=True, limit=test_limit)
        rows.append({
            "name": name, "model": model, "crm": crm, "train_s": train_s,
            "crm_preset": cam_model.checkpoint.train_config.get("crm_preset") if crm else None,
            "in_budget": preset is None, "eval_s": time.perf_counter() - eval_started,
            "accuracy": evaluation["accuracy"], "miou_fixed": evaluation["cam_miou_fixed"]["miou"],
            "fixed_t": evaluation["cam_miou_fixed"]["threshold"], "miou_best": evaluation["cam_miou_best"]["miou"],
            "best_t": evaluation["cam_miou_best"]["threshold"], "head": evaluation["coverage_best"].get("head"),
            "body": evaluation["coverage_best"].get("body"), "pseudo_miou": pseudo["miou"],
        })
        log.info("%s: %s", name, rows[-1])
    return rows


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        "| model | CRM | accuracy | CAM mIoU @0.30 | CAM mIoU best (t) | head / body covered @best | pseudo-mask mIoU | train time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        crm = f"yes ({r['crm_preset']})" if r["crm"] else "no"
        lines.append(
            f"| {r['model']} | {crm} | {r['accuracy']:.3f} | {r['miou_fixed']:.3f} | "
            f"{r['miou_best']:.3f} ({r['best_t']:.2f}) | {r['head']:.2f} / {r['body']:.2f} | {r['pseudo_miou']:.3f} | "
            f"{r['train_s'] / 60:.1f} min |"
        )
    total = sum(r["train_s"] + r["eval_s"] for r in rows if r["in_budget"])
    extra = sum(r["train_s"] + r["eval_s"] for r in rows if not r["in_budget"])
    lines += ["", f"Reproduce: `{command}` ({total / 60:.1f} min for the four rows on {platform.machine()} "
              f"with {_cpu_count()} CPU cores{f', plus {extra / 60:.1f} min for the exact-preset row' if extra else ''}; "
              f"recipe: {RECIPE})."]
    return "\n".join(lines) + "\n"


def _cpu_count() -> int:
    import os
    return os.cpu_count() or 1


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train and evaluate the four configurations of the results table.")
    p.add_argument("--steps", type=int, default=None, help="cap per run (default: the recipe's 2 epochs)")
    p.add_argument("--train-size", type=int, default=None, help="synthetic training images (default 2000)")
    p.add_argument("--test-limit", type=int, default=200)
    p.add_argument("--checkpoint-dir", default="checkpoints")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--out", default=None, help="write the markdown table here")
    p.add_argument("--crm-preset", default=None, help="speed preset of the CRM rows (exact | fast)")
    p.add_argument("--reuse", action="store_true", help="keep checkpoints already trained to the requested steps")
    p.add_argument("--exact-row", action="store_true",
                   help="also train resnet_drs + CRM with crm_preset=exact (the speed preset's quality check)")
    return p


def cli(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    extra = {} if args.crm_preset is None else {"crm_preset": args.crm_preset}
    rows = run(args.steps, args.test_limit, args.checkpoint_dir, args.runs_dir, args.train_size, extra, args.reuse,
               args.exact_row)
    command = "python -m crm_core.results " + " ".join(argv if argv is not None else sys.argv[1:])
    table = markdown(rows, command.strip())
    print(table)
    if args.out:
        atomic_write_text(args.out, table)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
