"""A bounded least-recently-used mapping: the one cache type of the engine and the dashboard."""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

__all__ = ["BoundedDict"]


class BoundedDict(OrderedDict):
    """A dict that keeps its ``bound`` most recently set or read entries (the caches whose keys come
    from users -- any delta, any image count, any SLIC parameters -- so that without a bound they
    only grow). Not thread-safe: its owner guards it with its lock."""

    def __init__(self, bound: int) -> None:
        super().__init__()
        if bound < 1:
            raise ValueError(f"a cache bound must be >= 1, got {bound}")
        self.bound = int(bound)

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        return default

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.bound:
            self.popitem(last=False)
