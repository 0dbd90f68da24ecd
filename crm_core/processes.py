"""Worker processes that end with the process that started them."""
from __future__ import annotations

import os


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
