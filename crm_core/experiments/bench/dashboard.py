"""Section 4: dashboard latencies, measured on the demo side.

Compare / DRS latencies and the cold start of ``app.py`` are the dashboard's to measure
(``python -m demo.bench``); ``crm_core`` never imports ``demo``. When the demo package is
there, this runs it in a fresh interpreter and returns its JSON unchanged, so the combined
report keeps its ``dashboard`` details and summary keys.
"""
from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Any

from crm_core.experiments.bench.workers import run_python

DASHBOARD_MODULE = "demo.bench"


def dashboard_latencies(repeats: int, cold_start: bool, timeout: float = 3600) -> dict[str, Any]:
    """``python -m demo.bench --json ...``'s result, or ``{"available": False, "reason": ...}``
    when there is no demo package next to this one."""
    if importlib.util.find_spec("demo") is None:
        return {"available": False, "reason": "the demo package is not installed"}
    with tempfile.TemporaryDirectory(prefix="crm_bench_dash_") as tmp:
        out = Path(tmp) / "dashboard.json"
        args = ["-m", DASHBOARD_MODULE, "--json", str(out), "--repeats", str(repeats)]
        if not cold_start:  # the tiny run starts no server: neither the cold start nor the memory under load
            args += ["--no-cold-start", "--no-memory"]
        result, _ = run_python(args, out, "dashboard bench", timeout=timeout)
    return result
