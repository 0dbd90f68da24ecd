"""crm_core.processes: a pool that returns in task order and whose workers die with their parent."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from crm_core.processes import run_jobs

TESTS = Path(__file__).resolve().parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_results_come_back_in_task_order_in_process_and_in_a_pool():
    sys.path.insert(0, str(TESTS))
    try:
        import pool_jobs

        tasks = [dict(x=x) for x in (3, 1, 2)]
        seen = []
        assert run_jobs(pool_jobs.square, tasks, 1, desc="t", on_done=lambda d: seen.append(len(d))) == [9, 1, 4]
        assert seen == [1, 2, 3]
        assert run_jobs(pool_jobs.square, tasks, 2, desc="t") == [9, 1, 4]
    finally:
        sys.path.remove(str(TESTS))


def test_a_killed_parent_leaves_no_worker_running(tmp_path):
    """SIGKILL gives the parent no chance to clean up: the kernel's parent-death signal must end
    the workers (what stopping a results run or the server relies on)."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(TESTS)!r})
        import pool_jobs
        from crm_core.processes import run_jobs
        run_jobs(pool_jobs.sleep_forever, [dict(pid_dir={str(tmp_path)!r}, index=i) for i in range(2)], 2, desc="t")
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=TESTS.parent)
    try:
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("*.pid"))) < 2:
            assert parent.poll() is None and time.monotonic() < deadline, "the workers never started"
            time.sleep(0.2)
        workers = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
        assert all(_alive(pid) for pid in workers)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in workers if _alive(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers {left} outlived their killed parent"
