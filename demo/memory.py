"""The server's memory: the allocator settings ``app.py`` applies, and who holds what.

glibc's malloc, left to its defaults, is most of a busy dashboard's memory. Each thread that
allocates while another holds an arena lock gets an arena of its own (up to 8 per core), and
after the first large block is freed the threshold above which a block is mapped on its own
rises to 32 MiB: a CAM's activations (0.5-20 MiB each) then come from the arenas, and what is
freed there stays in the process. Measured with 9 checkpoints and 6 concurrent clients
(``python -m demo.load``, docs/benchmarks.md): 3.3 GB after 5 rounds with the defaults,
1.5 GB with :func:`configure_allocator`'s two settings.

- :func:`configure_allocator`: at most ``arena_max`` arenas and a fixed mmap threshold, so a
  large tensor is mapped on its own and unmapped when freed. It costs a page fault per 4 KiB
  page of each large tensor, paid again for every request (see docs/benchmarks.md).
- :func:`memory_by_owner`: the server's resident memory split by owner (the model cache, the
  perceptual network, the caches, what the allocator holds freed); ``app.py`` logs it after the
  checkpoints are checked and whenever the server gets SIGUSR1.

State: none (glibc keeps the settings).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from pathlib import Path
from typing import Any

from crm_core.lru import BoundedDict  # re-exported: the engine's caches are built from here

__all__ = ["BoundedDict", "allocator_stats", "configure_allocator", "format_owners", "memory_by_owner", "rss_mb"]

log = logging.getLogger(__name__)

# mallopt(3) parameters (malloc.h).
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MiB = 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _glibc() -> Any | None:
    """glibc, or None on another C library (musl, macOS), where the settings do not apply."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallinfo2.restype = _MallInfo2
        return libc
    except (OSError, AttributeError):  # not glibc, or older than 2.33 (no mallinfo2)
        return None


def configure_allocator(arena_max: int = 2, mmap_threshold: int = 256 * 1024) -> bool:
    """Limit malloc to ``arena_max`` arenas and map every block of ``mmap_threshold`` bytes or more
    on its own (a fixed threshold also turns off glibc's raising of it). Call it before the server's
    threads start allocating; returns whether both settings took (False off glibc)."""
    libc = _glibc()
    if libc is None:
        log.info("allocator settings skipped: not glibc")
        return False
    ok = bool(libc.mallopt(_M_ARENA_MAX, int(arena_max))) and bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)))
    if not ok:
        log.warning("mallopt refused the allocator settings (arena_max=%d, mmap_threshold=%d)", arena_max, mmap_threshold)
    return ok


def allocator_stats() -> dict[str, float]:
    """glibc's own account, in MiB: ``in_use`` (blocks handed out from the arenas), ``free_held``
    (freed, still held by the arenas), ``mapped`` (large blocks mapped on their own). Empty off glibc."""
    libc = _glibc()
    if libc is None:
        return {}
    info = libc.mallinfo2()
    return {"in_use": info.uordblks / MiB, "free_held": info.fordblks / MiB, "mapped": info.hblkhd / MiB}


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory (VmRSS) of process ``pid`` (default: this one), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc")


def file_backed_mb(pid: int | str = "self") -> float:
    """Resident pages of mapped files (the libraries' code and data: torch alone is hundreds of
    MiB), from ``/proc/<pid>/smaps``; 0 where it cannot be read."""
    total, file_backed = 0, False
    try:
        with open(f"/proc/{pid}/smaps") as smaps:
            for line in smaps:
                first = line.split(maxsplit=1)[0]
                if first.endswith(":"):
                    if first == "Rss:" and file_backed:
                        total += int(line.split()[1])
                elif "-" in first:  # a mapping's header line: address range, perms, offset, dev, inode, path
                    parts = line.split()
                    file_backed = len(parts) >= 6 and parts[5].startswith("/") and parts[4] != "0"
    except OSError:
        return 0.0
    return total / 1024


def _module_mb(*modules: Any) -> float:
    """Bytes of the parameters and buffers of ``modules`` (None skipped), each storage counted once."""
    seen: dict[int, int] = {}
    for module in modules:
        if module is None:
            continue
        for tensor in [*module.parameters(), *module.buffers()]:
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values()) / MiB


def memory_by_owner(engine: Any) -> dict[str, Any]:
    """The server's resident memory by owner, in MiB, with each cache's size and bound
    (``engine``: a :class:`demo.engine.Engine`, not imported here: the engine imports this module).

    ``other`` is what no owner accounts for: Python objects, torch's and gradio's own allocations
    outside the models, thread stacks, and the memory a request in flight is using."""
    models = engine.checkpoints.cached_models()
    owners: dict[str, float] = {
        "model cache": sum(_module_mb(m.classifier, m.reconstructor) for m in models),
        "stage-2 networks": sum(_module_mb(net) for net in engine.stage2.networks()),
        "perceptual network": _module_mb(engine.inference.built_perceptual()),
    }
    allocator = allocator_stats()
    if allocator:
        owners["allocator: freed, held"] = allocator["free_held"]
    owners["libraries (mapped files)"] = file_backed_mb()
    rss = rss_mb()
    owners["other"] = rss - sum(owners.values())
    return {"rss": rss, "owners": owners, "caches": engine.cache_sizes(), "allocator": allocator}


def format_owners(report: dict[str, Any]) -> str:
    """:func:`memory_by_owner` as log lines."""
    lines = [f"memory: RSS {report['rss']:.0f} MiB"]
    lines += [f"  {owner:<26} {mb:8.1f} MiB" for owner, mb in report["owners"].items()]
    lines += [f"  cache: {name:<19} {used:>4} / {bound} entries" for name, (used, bound) in report["caches"].items()]
    return "\n".join(lines)
