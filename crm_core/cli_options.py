"""The command-line options several CLIs share, each declared once as an argparse parent parser.

A CLI lists the ones it takes in ``parents=[...]``; each comes in its own titled group, so its
``--help`` shows the CLI's own options first and the shared ones under the group's title. Every
function returns a new parser: argparse copies a parent's actions into the child by reference,
and a child's ``set_defaults`` would change them for every other CLI.

- :func:`checkpoint_options`: the checkpoint a CLI reads and its dataset's folder (evaluate, postprocess).
- :func:`cam_options`: how its CAMs are computed (evaluate, postprocess).
- :func:`device_option`: where a checkpoint's CAMs or a table's jobs run (evaluate, postprocess,
  results, recipe_sweep).
- :func:`run_options`: what a training run writes and where it runs (train, segment), with the
  defaults of its config (``TrainConfig``, ``SegConfig``): the fields stay their one place.
- :func:`job_options`: the training jobs of the results table and the recipe sweeps (results,
  recipe_sweep).
"""
from __future__ import annotations

import argparse
from typing import Any

from crm_core.cams import CAM_METHODS, DEFAULT_CAM_METHOD


def _group(title: str) -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(add_help=False)
    return parser, parser.add_argument_group(title)


def checkpoint_options() -> argparse.ArgumentParser:
    parser, group = _group("checkpoint")
    group.add_argument("--checkpoint", required=True, help="path to a .pt checkpoint")
    group.add_argument("--data-root", default=None,
                       help="dataset folder (pets; default: the one recorded in the checkpoint)")
    return parser


def cam_options() -> argparse.ArgumentParser:
    parser, group = _group("CAM")
    group.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    group.add_argument("--cam-method", default=DEFAULT_CAM_METHOD, choices=sorted(CAM_METHODS),
                       help="CAM method (crm_core.cams.CAM_METHODS)")
    return parser


def device_option() -> argparse.ArgumentParser:
    parser, group = _group("device")
    group.add_argument("--device", default="cpu", help="cpu | cuda")
    return parser


def run_options(config: Any) -> argparse.ArgumentParser:
    """``config``: the run's config with its defaults (``batch_size``, ``workers``, ``log_every``,
    ``ckpt_every``, ``checkpoint_dir``, ``runs_dir``, ``device``; its device may be auto, which it
    resolves)."""
    parser, group = _group("training run")
    group.add_argument("--batch-size", type=int, default=config.batch_size, help="images per step and process")
    group.add_argument("--resume", action="store_true", help="continue checkpoints/<name>.pt")
    group.add_argument("--workers", type=int, default=config.workers, help="DataLoader worker processes")
    group.add_argument("--log-every", type=int, default=config.log_every, help="write a metrics.csv row every N steps")
    group.add_argument("--ckpt-every", type=int, default=config.ckpt_every, help="save the checkpoint every N steps")
    group.add_argument("--checkpoint-dir", default=config.checkpoint_dir, help="where <name>.pt is written")
    group.add_argument("--runs-dir", default=config.runs_dir, help="where the run folder <name>/ is written")
    group.add_argument("--device", default=config.device, help="auto | cpu | cuda")
    return parser


def job_options(steps: int) -> argparse.ArgumentParser:
    """``steps``: the training steps of a run (the results table's recipe, which both CLIs train)."""
    parser, group = _group("training jobs")
    group.add_argument("--steps", type=int, default=steps, help="training steps per run")
    group.add_argument("--train-size", type=int, default=None, help="synthetic training images (default 2000)")
    group.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes); on CPU they split the cores")
    group.add_argument("--runs-dir", default="runs", help="where the run folders go")
    return parser
