"""Jobs for tests/test_processes.py: importable by the spawned workers of crm_core.processes.run_jobs."""
from __future__ import annotations

import os
import time
from pathlib import Path


def square(x: int) -> int:
    return x * x


def sleep_forever(pid_dir: str, index: int) -> None:
    """Write this worker's pid, then sleep (a stand-in for a long training)."""
    Path(pid_dir, f"{index}.pid").write_text(str(os.getpid()))
    time.sleep(600)
