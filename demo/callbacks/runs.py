"""Runs tab: loss curves of the selected runs, the table of every run, their metrics as CSV."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import gradio as gr
import pandas as pd

from crm_core.api import METRIC_COLUMNS
from demo import plots
from demo.callbacks.common import _number, user_errors
from demo.protocol import DashboardEngine, finite


def _last(rows: Sequence[dict], split: str, key: str) -> Any:
    for row in reversed(rows):
        if row.get("split") == split and row.get(key) is not None:
            return row[key]
    return None


def runs_table(engine: DashboardEngine, names: Sequence[str] | None = None) -> pd.DataFrame:
    records = []
    for name in names if names is not None else engine.runs.names():
        info = engine.runs.run(name)
        train = info.config.get("train", {})
        extra = train.get("extra", {})
        ev = info.eval or {}
        best = ev.get("cam_miou_best") or {}
        records.append({
            "run": name, "model": train.get("model"), "arch": train.get("arch"), "dataset": train.get("dataset"),
            "image px": train.get("image_size"), "steps": _last(info.metrics, "train", "step"),
            "wall time s": finite(_last(info.metrics, "train", "wall_time")),
            "final loss_total": finite(_last(info.metrics, "train", "loss_total")),
            "val accuracy": finite(_last(info.metrics, "val", "accuracy")),
            "eval accuracy": finite(ev.get("accuracy")), "CAM mIoU (best thr)": finite(best.get("miou")),
            "best thr": finite(best.get("threshold")), "recon L1": finite(ev.get("recon_l1")),
            "cls lr": train.get("cls_lr"), "delta": train.get("delta") if train.get("model") == "resnet_drs" else None,
            "init from": Path(train["init_from"]).stem if train.get("init_from") else None,
            "weights": extra.get("weights_source"),
            "owner": extra.get("owner"),  # the login that started it from the dashboard (docs/serving.md)
        })
    frame = pd.DataFrame(records)
    return frame.round(4) if not frame.empty else pd.DataFrame(columns=["run"])


@user_errors
def runs_view(engine: DashboardEngine, names: Any, terms: Any, smoothing: Any, x_axis: Any, log_y: Any, split: Any = "train") -> tuple:
    """Loss curves of the selected runs and the table of every run."""
    names = [str(n) for n in (names or [])]
    smoothing = _number(smoothing, "smoothing", 0.0, 0.99)
    if x_axis not in plots.X_AXES:
        raise gr.Error(f"x axis must be one of {list(plots.X_AXES)}")
    if split not in ("train", "val"):
        raise gr.Error("split must be train or val")
    terms = [t for t in (terms or []) if t in plots.TERMS] or ["loss_total"]
    data = {name: engine.runs.run(name).metrics for name in names}
    figure = plots.loss_figure(data, terms, smoothing, x_axis, bool(log_y), split)
    return figure, runs_table(engine)


@user_errors
def runs_csv(engine: DashboardEngine, names: Any) -> str:
    """Every metrics row of the selected runs as one CSV (a ``run`` column first)."""
    names = [str(n) for n in (names or [])] or engine.runs.names()
    frames = []
    for name in names:
        rows = engine.runs.run(name).metrics
        frames.append(pd.DataFrame(rows, columns=list(METRIC_COLUMNS)).assign(run=name))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run", *METRIC_COLUMNS])
    frame = frame[["run", *METRIC_COLUMNS]]
    path = Path(tempfile.mkdtemp(prefix="crm-lab-csv-")) / "crm_lab_metrics.csv"
    frame.to_csv(path, index=False)
    return str(path)
