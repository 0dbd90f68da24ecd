"""Faults injected for real into the engine: hostile and broken checkpoints, killed and
diverging runs, full disks. Nothing is executed, nothing valid is lost."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from hostile_files import broken_checkpoints, hostile_checkpoint
from crm_core import atomic
from crm_core.checkpoints import CheckpointError, load_checkpoint, read_checkpoint
from crm_core.runs import RunDir

REPO = Path(__file__).resolve().parents[1]


def test_pickle_payload_is_live_when_loaded_unsafely(tmp_path: Path) -> None:
    """Proves the attack file really runs code, so the refusal tests below can fail."""
    marker = tmp_path / "pwned_unsafe"
    bad = hostile_checkpoint(tmp_path / "evil.pt", marker)
    torch.load(bad, weights_only=False)
    assert marker.exists()


def test_pickle_payload_refused_by_loader_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from crm_core import evaluate, postprocess

    marker = tmp_path / "pwned"
    bad = hostile_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(bad)
    assert evaluate.cli(["--checkpoint", str(bad), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert postprocess.cli(["--checkpoint", str(bad), "--out", str(tmp_path / "out")]) == 2
    from crm_core import train
    assert train.cli(["--init-from", str(bad), "--arch", "resnet18", "--checkpoint-dir", str(tmp_path),
                      "--runs-dir", str(tmp_path / "runs"), "--name", "x", "--steps", "1"]) == 2
    assert not marker.exists()


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from crm_core.train import main

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CRM_LAB_NO_PROGRESS", "1")
        return main(tiny_config(tmp_path_factory.mktemp("good"), steps=1))


def _variant(good: Path, tmp_path: Path, name: str, mutate) -> Path:
    payload = torch.load(good, weights_only=True)
    mutate(payload)
    out = tmp_path / name
    torch.save(payload, out)
    return out


@pytest.mark.parametrize("case,pattern", [
    ("empty", "empty"), ("truncated", "truncated or corrupt"), ("garbage", "truncated or corrupt"),
    ("wrong_arch", "do not match"), ("wrong_classes", "class names"), ("wrong_head", "do not match"),
    ("not_ours", "not a CRM Lab checkpoint"), ("missing", "no such"),
])
def test_broken_checkpoints_name_the_file_and_the_problem(good_checkpoint: Path, tmp_path: Path, case: str, pattern: str) -> None:
    path = tmp_path / f"{case}.pt"
    if case in ("empty", "truncated", "garbage", "not_ours"):
        path = broken_checkpoints(good_checkpoint, tmp_path)[case]
    elif case == "wrong_arch":
        path = _variant(good_checkpoint, tmp_path, path.name, lambda p: p["model_config"].update(arch="resnet34"))
    elif case == "wrong_classes":
        path = _variant(good_checkpoint, tmp_path, path.name, lambda p: p.update(class_names=["a", "b"]))
    elif case == "wrong_head":
        def grow(p):
            p["model_config"]["num_classes"] = 5
            p["class_names"] = list("abcde")
        path = _variant(good_checkpoint, tmp_path, path.name, grow)
    with pytest.raises(CheckpointError, match=pattern) as info:
        load_checkpoint(path)
    assert path.name in str(info.value)


def test_disk_full_during_checkpoint_write_keeps_the_previous_file(good_checkpoint: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from crm_core.checkpoints import save_checkpoint

    target = tmp_path / "model.pt"
    target.write_bytes(good_checkpoint.read_bytes())
    before = target.read_bytes()
    ckpt = load_checkpoint(target)

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(target, classifier=ckpt.classifier, reconstructor=ckpt.reconstructor, train_config={},
                        image_size=ckpt.image_size, dataset="synthetic", step=99, epoch=0)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temp file left behind
    monkeypatch.undo()
    assert load_checkpoint(target).step == ckpt.step


def test_unwritable_run_folder_is_a_clear_error(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from crm_core import train

    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where a folder should be")
    code = train.cli(["--arch", "resnet18", "--image-size", "64", "--num-classes", "3", "--train-size", "8",
                      "--batch-size", "4", "--steps", "1", "--name", "x", "--checkpoint-dir", str(blocker / "ck"),
                      "--runs-dir", str(blocker / "runs"), "--workers", "0"])
    assert code == 2
    assert "not_a_dir" in caplog.text


@pytest.mark.slow
def test_sigkill_mid_epoch_leaves_loadable_checkpoint_and_resume_finishes(tmp_path: Path) -> None:
    args = ["--name", "killed", "--model", "resnet_drs", "--arch", "resnet18", "--image-size", "64",
            "--batch-size", "4", "--num-classes", "3", "--train-size", "200", "--epochs", "1", "--steps", "10",
            "--ckpt-every", "1", "--val-limit", "4", "--workers", "0", "--perceptual-size", "64", "--n-segments", "16",
            "--align-warmup", "0", "--checkpoint-dir", str(tmp_path / "ck"), "--runs-dir", str(tmp_path / "runs")]
    env = dict(os.environ, CRM_LAB_NO_PROGRESS="1")
    proc = subprocess.Popen([sys.executable, "-m", "crm_core.train", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = tmp_path / "runs" / "killed" / "metrics.csv"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= 4:  # header + 3 steps
                break
            time.sleep(0.05)
        else:
            pytest.fail("training made no progress")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = load_checkpoint(tmp_path / "ck" / "killed.pt")  # intact despite the kill
    assert 1 <= killed.step < 10
    rows = RunDir(tmp_path / "runs" / "killed").read_metrics()  # readable, torn tail tolerated
    assert rows and rows[0]["step"] == 1
    from crm_core import train
    assert train.cli([*args, "--resume"]) == 0
    done = load_checkpoint(tmp_path / "ck" / "killed.pt")
    assert done.step == 10
    steps = [r["step"] for r in RunDir(tmp_path / "runs" / "killed").read_metrics() if r["split"] == "train"]
    assert steps == list(range(1, 11))
