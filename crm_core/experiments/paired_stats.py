"""Paired statistics of the results table: mean and sample std, the two-sided paired Student's
t-test over seeds, the effect rule (p < :data:`ALPHA` and at least :data:`NEGLIGIBLE`) and Holm's
step-down correction of a family of p values."""
from __future__ import annotations

import math
from typing import Any

from crm_core.experiments.results_table import ALPHA, NEGLIGIBLE


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value); NaN-free input expected."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


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


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p values, in the order given: the k-th smallest p is multiplied by
    (m - k + 1), running maxima keep the order, capped at 1 (NaN stays NaN and counts in m)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: (math.isnan(pvalues[i]), pvalues[i]))
    adjusted = [float("nan")] * m
    running = 0.0
    for rank, i in enumerate(order):
        if math.isnan(pvalues[i]):
            continue
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted
