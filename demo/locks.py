"""The engine's lock order, enforced: :class:`OrderedLock` and the level of every engine lock.

Each lock of the engine's services is an :class:`OrderedLock` with a level from the table below.
A thread may wait for a lock only while every lock it holds has a lower level; waiting for one
of the same or a lower level raises :class:`LockOrderError` at once, so a nesting that could
deadlock fails the first time any test runs it instead of hanging some day in production.

The order, outermost first (a thread holding one may take only those listed after it):

1. ``TRAINING`` (``demo.finetune``): one fine-tune at a time, held for the whole job, which
   reads its base checkpoint (``CHECKED``, ``MODELS``).
2. ``EVALUATION`` (``demo.evaluation``): the val-threshold and CAM-dependence caches, held while a
   CAM dependence is measured, which loads the model and its images (``CHECKED``, ``MODELS``).
3. ``CHECKED`` (``demo.checkpoint_store``): what each checkpoint file version is, held while a file
   is read or verified, which may put the model it built into the cache (``MODELS``).
4. ``MODELS`` (``demo.checkpoint_store``): the LRU cache of loaded models, held while one loads.
5. ``HOOKS`` (``demo.inference``): hook-based CAMs register hooks on shared modules.
6. ``PERCEPTUAL`` (``demo.inference``): the lazily built VGG19 of the perceptual distance.

State: which ordered locks each thread holds (thread-local). No lock of its own.
"""
from __future__ import annotations

import threading
from typing import Any

__all__ = ["CHECKED", "EVALUATION", "HOOKS", "LockOrderError", "MODELS", "OrderedLock", "PERCEPTUAL", "TRAINING"]

TRAINING = 1
EVALUATION = 2
CHECKED = 3
MODELS = 4
HOOKS = 5
PERCEPTUAL = 6


class LockOrderError(RuntimeError):
    """A thread waited for a lock out of order: one of the same or a lower level than one it holds."""


_local = threading.local()


def _held() -> list[OrderedLock]:
    """The ordered locks this thread holds, in the order it took them."""
    held = getattr(_local, "held", None)
    if held is None:
        held = _local.held = []
    return held


class OrderedLock:
    """A non-reentrant lock with a level (see the module docstring for the engine's levels).

    ``acquire()`` (blocking) raises :class:`LockOrderError` when this thread holds a lock whose
    level is not lower than this one's, itself included (a plain Lock would deadlock there).
    ``acquire(blocking=False)`` is not checked: a try-lock never waits, so it cannot close a
    cycle of waiting threads, and answering "busy" is what the fine-tune lock is for. Only the
    thread that acquired a lock may release it.
    """

    def __init__(self, name: str, level: int) -> None:
        self.name = name
        self.level = level
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OrderedLock({self.name!r}, level={self.level})"

    def acquire(self, blocking: bool = True) -> bool:
        held = _held()
        if blocking:
            blocking_on = [lock for lock in held if lock.level >= self.level]
            if blocking_on:
                raise LockOrderError(f"lock order: {self!r} acquired while holding {blocking_on[-1]!r}; "
                                     "take locks in increasing level (demo.locks)")
        if not self._lock.acquire(blocking):
            return False
        held.append(self)
        return True

    def release(self) -> None:
        held = _held()
        if self not in held:
            raise RuntimeError(f"{self!r} released by a thread that does not hold it")
        held.remove(self)
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    def __enter__(self) -> OrderedLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
