"""The timing harness: repeated wall-clock timings, interleaved, and what they ran on.

A shared machine is noisy, so candidates are timed side by side in one process: every round
runs them all, in an order rotated each round, and each is reported as min / median / max.
"""
from __future__ import annotations

import datetime as _dt
import gc
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

@dataclass
class Stats:
    """min / median / max of repeated wall-clock timings, seconds."""

    min: float
    median: float
    max: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Stats":
        if not values:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(min(values), statistics.median(values), max(values), len(values))

    def as_dict(self) -> dict[str, float]:
        return {"min": self.min, "median": self.median, "max": self.max, "n": self.n}


def time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, Stats]:
    """Time every callable ``repeats`` times, interleaved: round r runs them all, in an order
    rotated by r, so slow phases of a shared machine hit every candidate alike."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            gc.collect()
            started = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - started)
    return {name: Stats.of(values) for name, values in times.items()}


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on: CPU model, cores, torch, date."""
    cpu = platform.processor() or "unknown"
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("unknown", platform.processor()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "torch_threads": torch.get_num_threads(),
        "memory_gb": mem_gb,
        "bf16_units": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "simd": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_average_at_start": load,
    }
