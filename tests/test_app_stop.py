"""A process the server starts, the server stops: SIGTERM to ``python app.py`` leaves none of
its training workers running, before serving (the first launch's bootstrap) and while serving
(the demo models and the demo set's stage-2 networks that train behind the page), and a stopped launch's staged checkpoint is
resumed or discarded by the next one."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from demo_fixtures import free_port

ROOT = Path(__file__).resolve().parent.parent


def _session_processes(sid: int) -> list[int]:
    """PIDs of live (non-zombie) processes in session ``sid``, from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry.name))
    return pids


def _children(pid: int) -> list[int]:
    """Child processes of ``pid``, whichever of its threads started them."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _start_app(checkpoints: Path, runs: Path, log: Path, *extra: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_DISABLE_TELEMETRY": "1"}
    proc = subprocess.Popen([sys.executable, "app.py", "--checkpoints", str(checkpoints), "--runs", str(runs),
                             "--port", str(port), "--eval-images", "4", *extra], cwd=ROOT, env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    return proc, port


def _wait(condition, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"app exited ({proc.returncode}) while waiting for {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _stop_and_check(proc: subprocess.Popen, log: Path) -> None:
    sid = proc.pid  # start_new_session: the app leads its own session
    assert len(_session_processes(sid)) >= 2, "no worker was running when the app was signalled"
    os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _session_processes(sid) and time.monotonic() < deadline:
        proc.poll()  # reap the app itself once it exits
        time.sleep(0.2)
    left = _session_processes(sid)
    if left:
        os.killpg(sid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert not left, f"{len(left)} process(es) of the app's session survived SIGTERM by 10 s:\n{log.read_text()[-3000:]}"


@pytest.mark.slow
def test_sigterm_during_the_first_launch_stops_the_bootstrap_workers(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    proc, _ = _start_app(tmp_path / "checkpoints", tmp_path / "runs", log)
    _wait(lambda: len(_children(proc.pid)) >= 2, 120, "the bootstrap's workers", proc, log)
    time.sleep(3)  # let them get into training
    _stop_and_check(proc, log)
    assert proc.returncode is not None and "stopped before serving" in log.read_text()
    assert not list((tmp_path / "checkpoints").glob("*.pt")), "a half-trained model was left where menus list it"


@pytest.mark.slow
def test_sigterm_while_serving_stops_the_background_training(tmp_path: Path) -> None:
    from crm_core.train import main as train_main

    from conftest import tiny_config

    checkpoints = tmp_path / "checkpoints"
    train_main(tiny_config(tmp_path, name="served", steps=1))  # a model to serve: no first launch
    staged = checkpoints / ".training"
    staged.mkdir()
    (staged / "resnet_drs.pt").write_bytes(b"left half-written by a launch that was killed")
    log = tmp_path / "app.log"
    proc, port = _start_app(checkpoints, tmp_path / "runs", log)

    def serving() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status == 200
        except OSError:
            return False

    _wait(serving, 120, "the page", proc, log)
    _wait(lambda: len(_children(proc.pid)) >= 1, 60, "the background worker", proc, log)
    time.sleep(2)
    _stop_and_check(proc, log)
    text = log.read_text()
    assert "discarding" in text and "resnet_drs.pt" in text  # the unreadable staged file, said in the log
    assert not (checkpoints / "resnet_drs.pt").exists()


@pytest.mark.slow
def test_sigterm_while_the_stage2_networks_train_stops_them(tmp_path: Path) -> None:
    """A launch that finds a demo stage-2 network a stopped launch left unfinished trains it again
    behind the page, in a worker process; SIGTERM leaves none of it running."""
    from crm_core.train import main as train_main

    from conftest import tiny_config

    checkpoints, runs = tmp_path / "checkpoints", tmp_path / "runs"
    train_main(tiny_config(tmp_path, name="resnet", model="resnet", crm=False, steps=1))  # the CAM model it needs
    (runs / "stage2_resnet" / "pseudo_masks.partial").mkdir(parents=True)  # left by a launch that was killed
    log = tmp_path / "app.log"
    proc, _ = _start_app(checkpoints, runs, log)
    _wait(lambda: len(_children(proc.pid)) >= 1, 120, "the stage-2 worker", proc, log)
    time.sleep(3)
    _stop_and_check(proc, log)
    text = log.read_text()
    assert "discarding" in text and "stage2_resnet" in text and "training stage2_resnet (stage 2" in text
    assert not (checkpoints / "stage2_resnet.pt").exists()


def test_a_staged_checkpoint_of_the_demo_recipe_is_resumed_and_any_other_discarded(tmp_path: Path,
                                                                                   caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from crm_core.train import main as train_main
    from demo.bootstrap import STAGING, _resume_or_discard, demo_config, staged_demo_models

    from conftest import tiny_config

    checkpoints = tmp_path / "checkpoints"
    staging = checkpoints / STAGING
    values = demo_config("resnet_drs", staging, tmp_path / "runs")
    # a partial run of the demo recipe (a tiny dataset keeps it quick; the recipe fields match)
    cfg = tiny_config(tmp_path, name="resnet_drs", checkpoint_dir=str(staging), steps=values["steps"], epochs=1,
                      model=values["model"], crm=values["crm"], seed=values["seed"], appearance=values["appearance"],
                      arch=values["arch"], l1_weight=values["l1_weight"])
    train_main(cfg)
    assert staged_demo_models(checkpoints) == ["resnet_drs"]
    with caplog.at_level(logging.INFO, logger="demo.bootstrap"):
        assert _resume_or_discard(staging / "resnet_drs.pt", values) is True
        assert "resuming resnet_drs from step" in caplog.text
        other = dict(values, steps=values["steps"] + 1)
        assert _resume_or_discard(staging / "resnet_drs.pt", other) is False
        assert "another recipe (steps differ)" in caplog.text and not (staging / "resnet_drs.pt").exists()
    torch.save({"not": "a checkpoint"}, staging / "resnet.pt")
    assert _resume_or_discard(staging / "resnet.pt", demo_config("resnet", staging, tmp_path / "runs")) is False
    assert not (staging / "resnet.pt").exists()
