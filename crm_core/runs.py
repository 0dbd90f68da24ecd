"""Run folders: ``runs/<name>/`` with config.json, metrics.csv, eval.json and sample images.

metrics.csv has one row per logged step (split "train") plus validation rows (split
"val"); each row is flushed and fsynced as it is written, so a killed run leaves a
readable file. Resuming truncates rows past the resumed step, so a resumed run never
logs a step twice.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crm_core.atomic import atomic_write_json, atomic_write_text

_REQUIRED_COLUMNS = (
    "step", "epoch", "split", "lr", "loss_total", "loss_cls", "loss_l1", "loss_vgg", "loss_align",
    "accuracy", "wall_time",
)
# Appended later, so metrics.csv files written before them still read: train rows may carry the
# reconstruction's specificity, the CRM gate and (every --diag-every steps) each term's gradient
# norm on the CAM features relative to CE's; val rows the decoder's CAM dependence; the test row of
# a stage-2 run (crm_core.segment) its mask mIoU; val rows of multi-label data the macro F1 and mAP.
METRIC_COLUMNS = _REQUIRED_COLUMNS + (
    "recon_specificity", "crm_gate", "grad_l1", "grad_vgg", "grad_align",
    "recon_l1", "recon_l1_shuffled", "cam_dependence", "miou", "f1", "map",
)


@dataclass
class RunDir:
    path: Path

    @classmethod
    def create(cls, runs_root: str | Path, name: str) -> "RunDir":
        path = Path(runs_root) / name
        (path / "samples").mkdir(parents=True, exist_ok=True)
        return cls(path)

    @property
    def name(self) -> str:
        return self.path.name

    # What a run folder holds, by name.
    config_path = property(lambda self: self.path / "config.json")
    metrics_path = property(lambda self: self.path / "metrics.csv")
    eval_path = property(lambda self: self.path / "eval.json")
    samples_dir = property(lambda self: self.path / "samples")

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.config_path, config)

    def read_config(self) -> dict[str, Any]:
        return _read_json(self.config_path)

    def write_eval(self, results: dict[str, Any]) -> None:
        atomic_write_json(self.eval_path, results)

    def read_eval(self) -> dict[str, Any]:
        return _read_json(self.eval_path)

    def read_metrics(self) -> list[dict[str, Any]]:
        """Rows of metrics.csv with numbers parsed (empty cells -> None); a torn last line is skipped."""
        if not self.metrics_path.is_file():
            return []
        rows = []
        with open(self.metrics_path, newline="") as handle:
            for row in csv.DictReader(handle):
                if None in row or any(row.get(c) is None for c in _REQUIRED_COLUMNS):
                    continue  # torn line from a killed writer
                rows.append({k: _parse(k, v) for k, v in row.items()})
        return rows


def _parse(key: str, value: str) -> Any:
    if key == "split":
        return value
    if value in ("", None):
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if key in ("step", "epoch") and math.isfinite(number) else number


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return {}


class MetricsWriter:
    """Append rows to metrics.csv, durable row by row."""

    def __init__(self, path: Path, resume_from_step: int | None = None) -> None:
        self.path = path
        if resume_from_step is not None and path.is_file():
            self._truncate_after(resume_from_step)
        new = not path.is_file() or path.stat().st_size == 0
        self._handle = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._handle, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        if new:
            self._writer.writeheader()
            self._flush()

    def _truncate_after(self, step: int) -> None:
        run = RunDir(self.path.parent)
        keep = [r for r in run.read_metrics() if r["step"] is not None and r["step"] <= step]
        lines = [",".join(METRIC_COLUMNS)]
        for row in keep:
            lines.append(",".join(_fmt(row.get(c)) for c in METRIC_COLUMNS))
        atomic_write_text(self.path, "\n".join(lines) + "\n")

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow({c: _fmt(row.get(c)) for c in METRIC_COLUMNS})
        self._flush()

    def _flush(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def list_runs(runs_root: str | Path) -> list[RunDir]:
    """Every run folder under ``runs_root`` that has a config or metrics, sorted by name."""
    root = Path(runs_root)
    if not root.is_dir():
        return []
    return [RunDir(p) for p in sorted(root.iterdir()) if p.is_dir() and ((p / "config.json").is_file() or (p / "metrics.csv").is_file())]
