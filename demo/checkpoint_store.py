"""The dashboard's checkpoint store: which checkpoint files can be used, and the models loaded from them.

:class:`CheckpointStore` (the engine's ``checkpoints``: a :class:`demo.protocol.CheckpointService`)
resolves checkpoint names to paths inside the checkpoint folder (a name never walks out of it),
checks each file version (reading it without building a model for the menus' first fill, building
it to verify), refuses the others with a one-line reason that names no server folder, and keeps
the loaded models in an LRU cache that every user shares.
:func:`path_in` is the name rule for checkpoints and runs alike.

State:

- ``_checked``: per checkpoint file version ``(path, mtime ns, size)``, what it is (its
  description and summary) or why it is refused; a refusal is final for that version. An LRU of
  at most ``CHECKED_BOUND`` versions (a folder retrained often leaves old versions behind).
- ``_models``: the LRU cache of loaded models keyed by ``(path, mtime ns)`` (a retrained file is
  reloaded; older versions of a file leave the cache), at most ``cache_size`` of them.

Locks (levels in ``demo.locks``): ``_checked_lock`` (``CHECKED``) guards ``_checked`` and is held
while a file is read or verified; verifying may put the model it built into the cache, so it
takes ``_models_lock`` (``MODELS``) inside. ``_models_lock`` guards ``_models`` and is held while
a checkpoint loads; a load that fails records the refusal only after releasing it.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crm_core.api import CamModel, list_checkpoints
from crm_core.checkpoints import CheckpointError, CheckpointSummary, inspect_checkpoint
from demo.locks import CHECKED, MODELS, OrderedLock
from demo.memory import BoundedDict
from demo.messages import safe_message
from demo.protocol import NAME_RE, InvalidName

__all__ = ["CheckpointStore", "path_in"]

log = logging.getLogger(__name__)


def path_in(root: Path, name: Any, suffix: str, what: str) -> Path:
    """``root/name+suffix`` for a plain ``name`` (:data:`demo.protocol.NAME_RE`), else InvalidName
    naming ``what`` (checkpoint, run): no name resolves outside ``root``."""
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise InvalidName(f"invalid {what} name {str(name)[:80]!r}: use letters, digits, '_', '-', '.'")
    path = (root / f"{name}{suffix}").resolve()
    if path.parent != root:
        raise InvalidName(f"invalid {what} name {name!r}")
    return path


@dataclass
class _Checked:
    """What the store knows of one checkpoint file version (see CheckpointStore.check)."""
    ok: bool
    text: str  # its description, or why it is refused
    summary: CheckpointSummary | None
    verified: bool  # its model was built and its weights loaded (or it is refused)


def _file_key(path: Path) -> tuple[str, int, int]:
    stat = path.stat()
    return str(path.resolve()), stat.st_mtime_ns, stat.st_size


def _public_message(exc: BaseException, path: Path) -> str:
    """The error with this server's folders left out: users see ``name.pt``, not the path."""
    return safe_message(exc, keep_name=path.name)


def _refusal(exc: BaseException, path: Path) -> _Checked:
    return _Checked(False, _public_message(exc, path).splitlines()[0][:300], None, verified=True)


class CheckpointStore:
    """Checkpoints ``*.pt`` in ``checkpoint_dir``, loaded on ``device``; see the module docstring."""

    CHECKED_BOUND = 1024  # file versions remembered (a summary each, no weights)

    def __init__(self, checkpoint_dir: str | Path, device: str = "cpu", cache_size: int = 6) -> None:
        self.checkpoint_dir = Path(checkpoint_dir).resolve()
        self.device = device
        self._cache_size = cache_size
        self._models: OrderedDict[tuple[str, int], CamModel] = OrderedDict()
        self._models_lock = OrderedLock("checkpoint store: models", MODELS)
        # Menus list only the loadable file versions; the refused ones are reported.
        self._checked: BoundedDict = BoundedDict(self.CHECKED_BOUND)  # (path, mtime ns, size) -> _Checked
        self._checked_lock = OrderedLock("checkpoint store: checked files", CHECKED)

    # -- names and paths -----------------------------------------------------------------
    def names(self, verify: bool = True) -> list[str]:
        """Names of the checkpoints that load; ``verify=False`` reads each file without building
        its model (:meth:`check`): the menus' first fill, which the page's load event then verifies."""
        return [name for name, entry in self._check_all(verify).items() if entry.ok]

    def refused(self) -> dict[str, str]:
        """name -> why it cannot be loaded (truncated, not ours, a pickle that wants to run code...)."""
        return {name: entry.text for name, entry in self._check_all().items() if not entry.ok}

    def _check_all(self, verify: bool = True) -> dict[str, _Checked]:
        return {p.stem: self.check(p, verify) for p in list_checkpoints(self.checkpoint_dir) if NAME_RE.match(p.stem)}

    def path(self, name: str) -> Path:
        """Validated path of checkpoint ``name``; refuses anything but a plain existing name."""
        path = path_in(self.checkpoint_dir, name, ".pt", "checkpoint")
        if not path.is_file():
            raise InvalidName(f"no checkpoint named {name!r} in {self.checkpoint_dir.name}/")
        return path

    def warm_up(self) -> None:
        """Verify every checkpoint now (the cache keeps the first few models it builds): run in a
        thread after the page is served, so the first view does not wait for it."""
        started = time.perf_counter()
        try:
            names = self.names()
        except Exception:  # noqa: BLE001 - a thread's last word: each view reports its own errors
            log.exception("checking the checkpoints failed")
            return
        log.info("checked %d checkpoints in %.1f s", len(names), time.perf_counter() - started)

    # -- what a file is ------------------------------------------------------------------
    def check(self, path: Path, verify: bool = True) -> _Checked:
        """What ``path`` is (``ok``, its description and summary), or why it cannot be used.

        Reading the file (inspect_checkpoint: a weights_only load, the config checked) refuses
        what is not a safe checkpoint of ours; ``verify`` also builds the model and loads its
        weights, which refuses weights that do not fit the architecture in the config. Each
        file version is read once and verified once; a refusal is final for that version.
        """
        try:
            key = _file_key(path)
        except OSError as exc:
            return _Checked(False, f"cannot be read: {exc.strerror}", None, verified=True)
        with self._checked_lock:
            entry = self._checked.get(key)
            if entry is None or (verify and entry.ok and not entry.verified):
                try:
                    if verify:
                        loaded = self._cached(key[:2]) or self._keep_if_room(key[:2], CamModel.load(path, self.device))
                        entry = _Checked(True, loaded.describe(), loaded.checkpoint.summary, verified=True)
                    else:
                        summary = inspect_checkpoint(path)
                        entry = _Checked(True, summary.describe(), summary, verified=False)
                except (CheckpointError, OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
                    log.warning("refusing checkpoint %s: %s", path, exc)
                    entry = _refusal(exc, path)
                self._checked[key] = entry
            return entry

    def summary(self, name: str) -> CheckpointSummary:
        """What checkpoint ``name`` is, from its file (no model built)."""
        entry = self.check(self.path(name), verify=False)
        if entry.summary is None:
            raise CheckpointError(f"{name}.pt cannot be loaded: {entry.text}")
        return entry.summary

    def describe(self, name: str) -> str:
        """CamModel.describe(), remembered per file version: menus list every checkpoint on each
        refresh, and describing must not push the models in use out of the LRU cache."""
        entry = self.check(self.path(name))
        if not entry.ok:
            raise CheckpointError(f"{name}.pt cannot be loaded: {entry.text}")
        return entry.text

    def class_names(self, name: str) -> list[str]:
        return list(self.model(name).class_names)

    def has_drs(self, name: str) -> bool:
        return self.summary(name).model_config.drs

    def has_reconstructor(self, name: str) -> bool:
        return self.summary(name).has_reconstructor

    def multi_label(self, name: str) -> bool:
        return self.summary(name).multi_label

    def variant(self, name: str) -> str:
        return self.summary(name).model_config.variant

    def default_delta(self, name: str) -> float | None:
        """The DRS delta a model was trained with (None: no DRS, or learnable)."""
        cfg = self.summary(name).model_config
        return None if not cfg.drs or cfg.drs_learnable else float(cfg.drs_delta)

    def arch(self, name: str) -> str:
        return self.summary(name).model_config.arch

    # -- the model cache -----------------------------------------------------------------
    def model(self, name: str) -> CamModel:
        """The loaded checkpoint, from the LRU cache keyed by (path, mtime)."""
        path = self.path(name)
        key = (str(path), path.stat().st_mtime_ns)
        with self._models_lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            log.info("loading checkpoint %s", path)
            try:
                model = CamModel.load(path, self.device)
            except CheckpointError as exc:
                refused = exc
            else:
                self._cache_put(key, model, evict=True)
                return model
        # Recorded after _models_lock is released: CHECKED comes before MODELS (demo.locks).
        with self._checked_lock:  # the menus drop it from now on, and say why
            self._checked[_file_key(path)] = _refusal(refused, path)
        raise CheckpointError(_public_message(refused, path)) from refused

    def cached_models(self) -> list[CamModel]:
        """The models in the cache, least recently used first."""
        with self._models_lock:
            return list(self._models.values())

    def cache_sizes(self) -> dict[str, tuple[int, int]]:
        """cache -> (entries, bound)."""
        with self._models_lock:
            models = len(self._models)
        with self._checked_lock:
            checked = len(self._checked)
        return {"models": (models, self._cache_size), "checked files": (checked, self._checked.bound)}

    def loaded(self) -> list[tuple[str, int]]:
        """The (path, mtime ns) of every model in the cache, least recently used first."""
        with self._models_lock:
            return list(self._models)

    def _cached(self, key: tuple[str, int]) -> CamModel | None:
        with self._models_lock:
            return self._models.get(key)

    def _cache_put(self, key: tuple[str, int], model: CamModel, evict: bool) -> None:
        """Put ``model`` in the LRU cache (caller holds ``_models_lock``), replacing older versions
        of its file; ``evict=False`` adds it only when no model in use would have to leave."""
        for old in [k for k in self._models if k[0] == key[0] and k != key]:
            del self._models[old]  # an older version of the same file
        if evict or len(self._models) < self._cache_size:
            self._models[key] = model
        while len(self._models) > self._cache_size:
            self._models.popitem(last=False)

    def _keep_if_room(self, key: tuple[str, int], model: CamModel) -> CamModel:
        """A model loaded to check its file joins the cache if there is room, so the first view of
        it (at start-up: the default pair) does not load it a second time."""
        with self._models_lock:
            if key not in self._models:
                self._cache_put(key, model, evict=False)
        return model
