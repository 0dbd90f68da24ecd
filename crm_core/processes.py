"""Worker processes that end with the process that started them."""
from __future__ import annotations

import os
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def die_with_parent() -> None:
    """Linux: ask the kernel to send this process SIGTERM when its parent dies, however it dies
    (SIGKILL included). Called first in every worker process (training pools, the dashboard's
    bootstrap): a stopped CLI or server leaves no training behind. Elsewhere a no-op, and the
    parent's own cleanup still applies."""
    import ctypes
    import signal

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def run_jobs(job: Callable[..., T], tasks: list[dict[str, Any]], jobs: int, *, desc: str,
             on_done: Callable[[dict[int, T]], None] | None = None) -> list[T]:
    """``job(**task)`` for every task, ``jobs`` at a time in spawned workers that die with this
    process (a stopped CLI leaves no training behind); results come back in task order.

    ``on_done`` gets the results finished so far (task index -> result) after each one, so a
    caller can rewrite its report and an interrupted run keeps what it measured. tqdm shows
    progress."""
    from tqdm import tqdm

    results: dict[int, T] = {}
    progress = tqdm(total=len(tasks), desc=desc, unit="run")
    if jobs <= 1:
        for index, task in enumerate(tasks):
            results[index] = job(**task)
            progress.update(1)
            if on_done is not None:
                on_done(results)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=die_with_parent) as pool:
            futures = {pool.submit(job, **task): index for index, task in enumerate(tasks)}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                progress.update(1)
                if on_done is not None:
                    on_done(results)
    progress.close()
    return [results[index] for index in range(len(tasks))]


def threads_per_job(jobs: int, device: str) -> int | None:
    """CPU threads for each of ``jobs`` parallel runs (they split the cores); None: torch's default."""
    return max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 and device == "cpu" else None
