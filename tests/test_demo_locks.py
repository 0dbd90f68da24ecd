"""The engine's lock order is enforced: demo.locks.OrderedLock refuses to wait out of order, and
every lock of the engine's services is one, each at its own documented level."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from demo import locks
from demo.engine import Engine
from demo.locks import LockOrderError, OrderedLock


def test_acquiring_a_lower_level_while_holding_a_higher_one_raises() -> None:
    outer, inner = OrderedLock("outer", 1), OrderedLock("inner", 2)
    with inner:
        with pytest.raises(LockOrderError, match="'outer'.*while holding.*'inner'"):
            outer.acquire()
        assert not outer.locked(), "the refused lock was taken anyway"
    with outer, inner:  # in order: fine, and the refusal left nothing behind
        assert outer.locked() and inner.locked()
    assert not outer.locked() and not inner.locked()


def test_the_same_level_and_the_same_lock_twice_raise_instead_of_deadlocking() -> None:
    first, twin = OrderedLock("first", 3), OrderedLock("twin", 3)
    with first:
        with pytest.raises(LockOrderError):
            twin.acquire()
        with pytest.raises(LockOrderError):
            first.acquire()  # a plain Lock would wait for itself forever
    assert issubclass(LockOrderError, RuntimeError)


def test_a_try_lock_is_not_checked_and_says_busy() -> None:
    """acquire(blocking=False) never waits, so it cannot deadlock: the fine-tune lock uses it to
    answer "busy", also from a thread that holds a lock of a higher level."""
    training, models = OrderedLock("training", 1), OrderedLock("models", 4)
    with models:
        assert training.acquire(blocking=False)
        assert not training.acquire(blocking=False)  # held: busy, not an error
        training.release()


def test_the_order_is_per_thread_and_only_the_holder_releases() -> None:
    low, high = OrderedLock("low", 1), OrderedLock("high", 2)
    held, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold_high() -> None:
        with high:
            held.set()
            done.wait(10)

    other = threading.Thread(target=hold_high)
    other.start()
    try:
        assert held.wait(10)
        with low:  # another thread holding a higher level does not constrain this one
            pass
        with pytest.raises(RuntimeError, match="does not hold it"):
            high.release()
    except BaseException as exc:  # noqa: BLE001 - reported after the other thread is let go
        errors.append(exc)
    finally:
        done.set()
        other.join(10)
    assert not errors, errors
    assert not high.locked()


def test_every_engine_lock_is_ordered_at_its_documented_level(tmp_path: Path) -> None:
    engine = Engine(tmp_path / "checkpoints", tmp_path / "runs")
    services = [engine.checkpoints, engine.inference, engine.evaluation, engine.training, engine.runs, engine.results]
    plain = type(threading.Lock()), type(threading.RLock())
    found = {}
    for service in services:
        for attr, value in vars(service).items():
            assert not isinstance(value, plain), f"{type(service).__name__}.{attr} is a lock outside the order"
            if isinstance(value, OrderedLock):
                found[value.level] = f"{type(service).__name__}.{attr}"
    assert not [a for a in vars(engine).values() if isinstance(a, (OrderedLock, *plain))], "the engine holds no lock"
    documented = [locks.TRAINING, locks.EVALUATION, locks.CHECKED, locks.MODELS, locks.HOOKS, locks.PERCEPTUAL]
    assert documented == sorted(set(documented)), "the documented levels are distinct and in order"
    assert found == {
        locks.TRAINING: "FineTuneRunner._lock", locks.EVALUATION: "Evaluation._lock",
        locks.CHECKED: "CheckpointStore._checked_lock", locks.MODELS: "CheckpointStore._models_lock",
        locks.HOOKS: "Inference._hooks_lock", locks.PERCEPTUAL: "Inference._perceptual_lock",
    }
