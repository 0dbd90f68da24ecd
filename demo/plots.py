"""Plotly figures of the dashboard: loss curves, the live fine-tune chart, CAM mIoU vs DRS delta.

Pure functions of plain data (lists of metric rows), so they are tested without a server.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Iterable, Mapping, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from crm_core.api import THRESHOLDS

#: Columns of metrics.csv that can be plotted, in display order.
TERMS = ("loss_total", "loss_cls", "loss_l1", "loss_vgg", "loss_align", "accuracy", "lr")
X_AXES = {"step": "step", "epoch": "epoch", "wall time": "wall_time"}
# Results tab: line colour of the rows made by no model (no-model cues; perfect maps at the CAM grid).
REFERENCE_COLOURS = {"baseline": "#b8860b", "ceiling": "#2e8b57"}


def run_colour(name: str) -> str:
    """A stable colour for a run: the hue comes from a hash of its name (same in every process)."""
    digest = hashlib.sha1(name.encode("utf-8")).digest()
    hue = int.from_bytes(digest[:2], "big") * 360 // 65536
    saturation = 55 + digest[2] % 30  # 55..84 %
    lightness = 38 + digest[3] % 17  # 38..54 %: readable on white
    return f"hsl({hue},{saturation}%,{lightness}%)"


def ema(values: Sequence[float | None], weight: float) -> list[float | None]:
    """Debiased exponential moving average, as TensorBoard's scalar smoothing.

    ``last = weight * last + (1 - weight) * v`` starting from 0, divided by ``1 - weight ** n``
    (n = finite values seen) so the start is not pulled towards 0. Missing or non-finite values
    pass through unchanged and do not update the average.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {weight}")
    out: list[float | None] = []
    last, count = 0.0, 0
    for value in values:
        if value is None or not math.isfinite(value):
            out.append(value)
            continue
        last = last * weight + (1.0 - weight) * value
        count += 1
        out.append(last / (1.0 - weight ** count) if weight > 0 else value)
    return out


def _series(rows: Iterable[Mapping[str, Any]], x_key: str, term: str, split: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        if row.get("split", "train") != split:
            continue
        x, y = row.get(x_key), row.get(term)
        if x is None or y is None:
            continue
        xs.append(x)
        ys.append(y)
    return xs, ys


def loss_figure(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    terms: Sequence[str] = ("loss_total",),
    smoothing: float = 0.6,
    x_axis: str = "step",
    log_y: bool = False,
    split: str = "train",
    title: str | None = None,
) -> go.Figure:
    """One subplot per term; per run a faint raw curve and a solid smoothed one, in the run's colour."""
    if x_axis not in X_AXES:
        raise ValueError(f"x axis must be one of {sorted(X_AXES)}, got {x_axis!r}")
    terms = [t for t in terms if t in TERMS] or ["loss_total"]
    x_key = X_AXES[x_axis]
    fig = make_subplots(rows=len(terms), cols=1, shared_xaxes=True, subplot_titles=terms, vertical_spacing=0.08)
    for name, rows in runs.items():
        colour = run_colour(name)
        for i, term in enumerate(terms, start=1):
            xs, ys = _series(rows, x_key, term, split)
            if not xs:
                continue
            show_legend = i == 1
            if smoothing > 0 and len(ys) > 1:
                fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=colour, width=1), opacity=0.25,
                                         name=f"{name} (raw)", legendgroup=name, showlegend=False,
                                         hoverinfo="skip"), row=i, col=1)
            smooth = ema(ys, smoothing) if smoothing > 0 else ys
            fig.add_trace(go.Scatter(x=xs, y=smooth, mode="lines+markers" if len(xs) < 3 else "lines",
                                     line=dict(color=colour, width=2), name=name, legendgroup=name,
                                     showlegend=show_legend), row=i, col=1)
    fig.update_yaxes(type="log" if log_y else "linear")
    fig.update_xaxes(title_text=x_axis, row=len(terms), col=1)
    fig.update_layout(height=max(320, 230 * len(terms)), margin=dict(l=50, r=20, t=50, b=40),
                      template="plotly_white", legend=dict(orientation="h", y=-0.12),
                      title=title or None, uirevision="runs")
    if not runs:
        fig.add_annotation(text="no runs selected", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


def live_figure(name: str, rows: Sequence[Mapping[str, Any]]) -> go.Figure:
    """The fine-tune tab's chart: every loss term of the running job so far."""
    terms = [t for t in ("loss_total", "loss_cls", "loss_l1", "loss_vgg", "loss_align")
             if any(r.get(t) is not None for r in rows)] or ["loss_total"]
    fig = go.Figure()
    for term in terms:
        xs, ys = _series(rows, "step", term, "train")
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers" if len(xs) < 3 else "lines", name=term))
    fig.update_layout(title=f"{name}: training losses" if name else "training losses", height=360,
                      template="plotly_white", margin=dict(l=50, r=20, t=50, b=40), xaxis_title="step",
                      uirevision="live")
    return fig


def delta_figure(points: Sequence[Mapping[str, Any]], name: str = "") -> go.Figure:
    """Against the DRS delta: CAM mIoU at the threshold chosen on val, the background
    false-positive rate and body coverage there, mIoU at the best test threshold (optimistic, for
    comparison) and at the fixed threshold, and accuracy. Keys missing from ``points`` are not drawn."""
    deltas = [p["delta"] for p in points]
    fig = go.Figure()
    for key, label in (("miou_val_threshold", "CAM mIoU (val threshold)"), ("bg_fpr", "background false positives"),
                       ("body_covered", "body covered"), ("miou_best", "CAM mIoU (best test threshold)"),
                       ("miou_fixed", f"CAM mIoU (threshold {THRESHOLDS.fixed:g})"), ("accuracy", "accuracy")):
        if not any(p.get(key) is not None for p in points):
            continue
        fig.add_trace(go.Scatter(x=deltas, y=[p.get(key) for p in points], mode="lines+markers", name=label,
                                 line=dict(dash="dot") if key in ("accuracy", "miou_best", "miou_fixed") else None))
    fig.update_layout(title=f"{name}: CAM mIoU vs DRS delta" if name else "CAM mIoU vs DRS delta", height=360,
                      template="plotly_white", xaxis_title="delta (DRS cap)", yaxis_title="score",
                      yaxis_range=[0, 1], margin=dict(l=50, r=20, t=50, b=40))
    return fig


def results_figure(points: Mapping[str, Sequence[tuple[int, float]]], floors: Sequence[tuple[str, float]],
                   metric: str, yours: Mapping[str, float] | None = None,
                   references: Sequence[tuple[str, str, float]] = ()) -> go.Figure:
    """The Results tab's strip plot: one row of jittered dots per table row (one dot per seed), the
    metric along x; untrained floors as dashed lines, the rows made by no model (baselines, ceilings)
    as dotted lines, each line named in the legend below the plot.

    Rows run down the y axis so that long labels stay horizontal and legible at any width; the
    lines' names go in the legend rather than beside the lines, where close values would overlap.

    ``points``: row label -> [(seed, value)]; ``floors``: [(floor row's label, its mean)];
    ``yours``: label -> value of each checkpoint the user evaluated (drawn as a star);
    ``references``: [(group, row label, mean)] of each baseline ("baseline") and ceiling ("ceiling")
    row, named with its label and mean.
    """
    fig = go.Figure()
    for label, values in points.items():
        # A box with every point and no visible box is plotly's strip plot (what px.strip draws).
        fig.add_trace(go.Box(y=[label] * len(values), x=[v for _, v in values], name=label, orientation="h",
                             boxpoints="all", jitter=0.6, pointpos=0, fillcolor="rgba(0,0,0,0)",
                             line=dict(color="rgba(0,0,0,0)"), marker=dict(size=8, color=run_colour(label)),
                             hoveron="points", text=[f"seed {seed}" for seed, _ in values], showlegend=False))
    for label, value in (yours or {}).items():
        fig.add_trace(go.Scatter(y=[label], x=[value], mode="markers", name=label, showlegend=False,
                                 marker=dict(symbol="star", size=16, color="black")))
    lines = [("dash", "grey", f"{label}: {mean:.3f}", mean) for label, mean in floors]
    lines += [("dot", REFERENCE_COLOURS.get(group, "grey"), f"{label}: {mean:.3f}", mean)
              for group, label, mean in references]
    for dash, colour, name, mean in lines:
        fig.add_vline(x=mean, line_dash=dash, line_color=colour, name=name)
        # The line's legend entry: a trace with no points, drawn in the line's style.
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=name, showlegend=True,
                                 line=dict(dash=dash, color=colour)))
    rows = len(points) + len(yours or {})
    fig.update_layout(height=160 + 42 * max(rows, 2) + 22 * len(lines), template="plotly_white",
                      margin=dict(l=20, r=20, t=30, b=40), xaxis_title=metric, uirevision="results",
                      legend=dict(orientation="h", yanchor="top", y=-0.12 - 0.4 / max(rows, 2), x=0,
                                  xanchor="left", font=dict(size=11)))
    fig.update_yaxes(automargin=True, autorange="reversed")  # the table's order, top down
    if not points and not yours:
        fig.add_annotation(text="no values for this metric" if not references and not floors else
                           "no trained rows with this metric", showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5)
    return fig
