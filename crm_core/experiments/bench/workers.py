"""Fresh interpreters for the sections that must not share the bench's process.

Training runs (sections 3 and 6) need their own peak memory and thread settings; the dashboard
section (4) lives on the demo side, which ``crm_core`` never imports. Each child is started
from the repository root with the repository on ``PYTHONPATH`` and writes its result as JSON.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

REPO_ROOT = Path(__file__).resolve().parents[3]


def run_python(args: list[str], out: Path, what: str, env: dict[str, str] | None = None,
               timeout: float = 3600) -> tuple[dict[str, Any], float]:
    """``python *args`` from the repository root; returns the JSON it wrote to ``out`` and the
    wall-clock seconds it ran. Raises RuntimeError (with its stderr's tail) when it failed."""
    env = dict(os.environ, **(env or {}))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    wall = time.perf_counter() - started
    if proc.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(out.read_text()), wall


@contextlib.contextmanager
def environ(name: str, value: str) -> Iterator[None]:
    """Set one environment variable (inherited by children) for the block; restored after."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous
