"""Serving to a team (docs/serving.md): the refused launches, the logins, whose jobs are whose."""
from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import gradio as gr
import pytest

import app
from conftest import require
from demo import callbacks as cb
from demo.serving import (AUTH_ENV, Access, JobBook, JobLimit, ServingRefused, check_bind, is_loopback,
                          parse_auth_env, read_auth_file, resolve_logins)
from demo_fixtures import FakeEngine, free_port

ROOT = Path(__file__).resolve().parents[1]


def _env_without_logins() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != AUTH_ENV}


def _auth_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- 1. the refusal -------------------------------------------------------------------------
def test_a_non_loopback_host_without_login_is_refused_at_once(tmp_path: Path) -> None:
    port = free_port()
    checkpoints, runs = tmp_path / "checkpoints", tmp_path / "runs"
    started = time.monotonic()
    out = subprocess.run([sys.executable, "app.py", "--host", "0.0.0.0", "--port", str(port), "--no-bootstrap",
                          "--checkpoints", str(checkpoints), "--runs", str(runs)],
                         cwd=ROOT, env=_env_without_logins(), capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert out.returncode == 2, (out.returncode, lines)
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert len(lines) == 1, lines
    assert "--auth-file PATH" in lines[0] and "--insecure-no-auth" in lines[0] and "ERROR" in lines[0]
    assert not _listening(port)
    assert not checkpoints.exists() and not runs.exists()  # refused before launch() made its folders


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "myhost.example"])
def test_every_non_loopback_host_needs_a_login(host: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(AUTH_ENV, raising=False)
    with caplog.at_level(logging.ERROR, logger="crm_lab.app"):
        assert app.main(["--host", host, "--no-bootstrap", "--checkpoints", str(tmp_path / "c")]) == 2
    assert len(caplog.records) == 1 and "--insecure-no-auth" in caplog.records[0].getMessage()
    assert not (tmp_path / "c").exists()


def test_insecure_no_auth_warns_and_puts_a_banner_on_the_page(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    from demo.layout import build_app

    monkeypatch.delenv(AUTH_ENV, raising=False)
    args = app.get_args_parser().parse_args(["--host", "0.0.0.0", "--port", "7999", "--insecure-no-auth"])
    with caplog.at_level(logging.WARNING, logger="crm_lab.app"):
        logins, access = app.serving_setup(args)
    assert logins is None and not access.logins
    assert "served without login to 0.0.0.0:7999" in access.banner
    assert any("without a login" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    blocks = build_app(FakeEngine(), access)
    banners = [b for b in blocks.blocks.values() if getattr(b, "elem_id", None) == "insecure-banner"]
    assert len(banners) == 1 and "served without login to 0.0.0.0:7999" in banners[0].value
    # Loopback: no banner, no login needed, as before.
    assert check_bind("127.0.0.1", 7860, None, insecure=False) == (None, [])
    plain = build_app(FakeEngine(), Access())
    assert not [b for b in plain.blocks.values() if getattr(b, "elem_id", None) == "insecure-banner"]


def test_contradicting_or_doubled_logins_are_refused(tmp_path: Path) -> None:
    users = _auth_file(tmp_path / "users", "ann:pw1\n")
    with pytest.raises(ServingRefused, match="contradicts"):
        check_bind("0.0.0.0", 1, read_auth_file(users), insecure=True)
    with pytest.raises(ServingRefused, match="--auth-file and CRM_LAB_AUTH"):
        resolve_logins(str(users), None, {AUTH_ENV: "bob:pw2"})
    with pytest.raises(ServingRefused, match="--auth-file and --auth"):
        resolve_logins(str(users), "bob:pw2", {})
    assert app.main(["--jobs-per-user", "0"]) == 2


# -- 4 (d). which hosts are loopback ---------------------------------------------------------
@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.5.5.5", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("::ffff:127.0.0.1", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("", False), ("myhost", False),
    ("128.0.0.1", False), ("localhost.example.com", False),
])
def test_host_classification(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


# -- 2 (b, c). logins outside argv -----------------------------------------------------------
def test_auth_file_users_admins_comments_and_blank_lines(tmp_path: Path) -> None:
    path = _auth_file(tmp_path / "users", "# the team\n\nalice:s3cret:admin\n  bob:pa:ss:word  \n# carol:x\n")
    logins = read_auth_file(path)
    assert logins.passwords == {"alice": "s3cret", "bob": "pa:ss:word"}
    assert logins.admins == frozenset({"alice"})
    assert logins.gradio_auth() == [("alice", "s3cret"), ("bob", "pa:ss:word")]
    assert "s3cret" not in repr(logins)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601], ids=lambda mode: f"{mode:04o}")
def test_auth_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = _auth_file(tmp_path / "users", "alice:s3cret\n", mode)
    with pytest.raises(ServingRefused, match=f"mode {mode:04o}.*chmod 600") as info:
        read_auth_file(path)
    assert "s3cret" not in str(info.value) and "\n" not in str(info.value)


def test_missing_and_malformed_auth_files_are_refused_without_the_password(tmp_path: Path) -> None:
    with pytest.raises(ServingRefused, match="no such file"):
        read_auth_file(tmp_path / "absent")
    cases = {"alice:fine\nbob-without-colon-hunter2\n": "line 2", "# c\n\n:hunter2\n": "line 3",
             "alice:hunter2:admin\nbob:\n": "line 2", "alice:hunter2\nalice:hunter2x\n": "line 2.*twice",
             "# nobody\n": "no user"}
    for text, message in cases.items():
        path = _auth_file(tmp_path / "users", text)
        with pytest.raises(ServingRefused, match=message) as info:
            read_auth_file(path)
        assert "hunter2" not in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_app_refuses_a_bad_auth_file_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(AUTH_ENV, raising=False)
    path = _auth_file(tmp_path / "users", "alice:hunter2\n", 0o644)
    with caplog.at_level(logging.ERROR, logger="crm_lab.app"):
        assert app.main(["--auth-file", str(path), "--checkpoints", str(tmp_path / "c")]) == 2
    assert len(caplog.records) == 1 and "chmod 600" in caplog.text and "hunter2" not in caplog.text


def test_crm_lab_auth_environment_variable() -> None:
    logins = parse_auth_env("alice:s3cret:admin, bob:pw2,")
    assert logins.passwords == {"alice": "s3cret", "bob": "pw2"} and logins.admins == {"alice"}
    assert resolve_logins(None, None, {AUTH_ENV: "carol:pw3"})[0].passwords == {"carol": "pw3"}
    assert resolve_logins(None, None, {}) == resolve_logins(None, None, {AUTH_ENV: " "}) == (None, [])
    with pytest.raises(ServingRefused, match="entry 2") as info:
        parse_auth_env("alice:hunter2,bob")
    assert "hunter2" not in str(info.value)
    with pytest.raises(ServingRefused, match="no user"):
        parse_auth_env(" , ")


def test_auth_on_the_command_line_still_works_and_warns_without_echoing(monkeypatch: pytest.MonkeyPatch,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(AUTH_ENV, raising=False)
    args = app.get_args_parser().parse_args(["--host", "0.0.0.0", "--auth", "ann:hunter2"])
    with caplog.at_level(logging.INFO, logger="crm_lab.app"):
        logins, access = app.serving_setup(args)
    assert logins.gradio_auth() == [("ann", "hunter2")] and access.logins and access.banner is None
    assert "ps" in caplog.text and "--auth-file" in caplog.text and "hunter2" not in caplog.text


# -- 5 (e). served with a login --------------------------------------------------------------
@pytest.mark.slow
def test_served_app_asks_for_a_login_and_keeps_the_password_off_every_command_line(tmp_path: Path) -> None:
    from demo.load import serve, stop

    password = secrets.token_hex(12)
    users = _auth_file(tmp_path / "users", f"alice:{password}:admin\n")
    port = free_port()
    server = serve(tmp_path / "checkpoints", tmp_path / "runs", port,
                   extra=["--host", "127.0.0.1", "--auth-file", str(users)], env=_env_without_logins(), timeout=120)
    try:
        url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{url}/", timeout=30) as response:
            page = response.read().decode("utf-8", "replace")
        assert "auth_required" in page and "crm-title" not in page and "Fine-tune" not in page
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{url}/config", timeout=30)
        assert info.value.code == 401
        client_module = require("gradio_client")
        client = client_module.Client(url, auth=("alice", password), analytics_enabled=False, verbose=False)
        _, table = client.predict([], ["loss_total"], 0.6, "step", False, "train", api_name="/runs")
        assert table["headers"] == ["run"]  # no run yet: the empty table
        with pytest.raises(Exception, match="Could not login"):  # gradio answers 400: a ValueError
            client_module.Client(url, auth=("alice", password + "x"), analytics_enabled=False, verbose=False)
        needle = password.encode()
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                assert needle not in cmdline, f"the password is on the command line of pid {proc.name}"
        log = Path(server.log_path).read_text(encoding="utf-8", errors="replace")  # type: ignore[attr-defined]
        assert "logins from --auth-file" in log and password not in log
    finally:
        stop(server)
    assert not _listening(port)


def test_served_fine_tunes_carry_the_login_and_respect_its_limit() -> None:
    """gradio hands the layout's callbacks the login (gr.Request.username): through the HTTP API,
    a fine-tune records it, a third job of one user is refused, another user cannot stop it."""
    from demo.layout import build_app

    client_module = require("gradio_client")
    from gradio_client.exceptions import AppError

    engine = FakeEngine(step_s=0.05)
    blocks = build_app(engine, Access(logins=True, admins=frozenset({"root"}), jobs_per_user=2))
    blocks.queue(default_concurrency_limit=2)
    blocks.launch(server_name="127.0.0.1", server_port=free_port(), auth=[("alice", "pa"), ("bob", "pb")],
                  prevent_thread_lock=True, quiet=True, show_error=False)
    try:
        def client(user: str, password: str):
            return client_module.Client(blocks.local_url, auth=(user, password), analytics_enabled=False,
                                        verbose=False)

        alice, bob = client("alice", "pa"), client("bob", "pb")

        def submit(who, name: str):
            return who.submit(name, *FT.values(), api_name="/fine_tune")

        first = submit(alice, "a1")
        _wait(lambda: engine.training.status() is not None)
        second = submit(alice, "a2")
        _wait(lambda: any("Queued" in str(o[0]) for o in second.outputs()))
        with pytest.raises(AppError, match="at most 2 per user"):
            submit(alice, "a3").result(timeout=60)
        with pytest.raises(AppError, match="alice's training job"):
            bob.predict("a1", api_name="/stop_training")
        assert "Cancelled" in alice.predict("a2", api_name="/stop_training")
        assert "cancelled before it started" in second.result(timeout=60)[0]
        assert "Stopping" in alice.predict("a1", api_name="/stop_training")
        assert "stopped early" in first.result(timeout=60)[0]
        assert [r.name for r in engine.training.trained] == ["a1"] and engine.training.trained[0].owner == "alice"
        _, table = bob.predict(["a1"], ["loss_total"], 0.6, "step", False, "train", api_name="/runs")
        row = dict(zip(table["headers"], next(r for r in table["data"] if r[0] == "a1")))
        assert row["owner"] == "alice"
    finally:
        blocks.close()


# -- 3. jobs carry their owner ---------------------------------------------------------------
def test_job_book_limits_each_owner_and_keeps_the_order() -> None:
    book = JobBook(per_user=2)
    a1, a2 = book.admit("a1", "alice"), book.admit("a2", "alice")
    with pytest.raises(JobLimit, match="alice already has 2 .*a1, a2.*at most 2 per user"):
        book.admit("a3", "alice")
    b1 = book.admit("b1", "bob")  # another user is not limited by alice's jobs
    with pytest.raises(ValueError, match="already running or queued"):
        book.admit("a1", "bob")
    assert book.wait_turn(a1, 0) == 0 and a1.started
    assert book.wait_turn(b1, 0.01) == 2 and not b1.started
    book.done(a1)
    assert book.wait_turn(a2, 0) == 0
    book.admit("a3", "alice")  # a1 finished: alice has room again
    assert book.cancel(b1) is False and book.wait_turn(b1, 0) == 1  # cancelled: returns without waiting
    assert [job.name for job in book.jobs()] == ["a2", "b1", "a3"]
    unlimited = JobBook(None)  # no logins: nobody is limited
    for i in range(5):
        unlimited.admit(f"j{i}", None)
    with pytest.raises(ValueError):
        JobBook(0)


def test_app_option_sets_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTH_ENV, "alice:pw")
    args = app.get_args_parser().parse_args(["--jobs-per-user", "3"])
    assert app.serving_setup(args)[1] == Access(logins=True, jobs_per_user=3)
    assert app.get_args_parser().parse_args([]).jobs_per_user == 2  # 1 running + 1 queued


FT = dict(base=cb.NO_BASE, model="resnet_drs", dataset="synthetic", steps=500, batch_size=4, cls_lr=1e-3,
          rec_lr=2e-3, l1_weight=1.0, vgg_weight=1.0, align_weight=1.0, delta=0.55, learnable=False, arch="resnet18")


def _start(engine: FakeEngine, book: JobBook, name: str, owner: str | None, **kw):
    return cb.fine_tune(engine, name, *FT.values(), poll_s=0.01, plot_every_s=0.0, jobs=book, owner=owner, **kw)


def _wait(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_fine_tunes_record_their_owner_queue_per_user_and_stop_only_for_owner_or_admin() -> None:
    engine = FakeEngine(step_s=0.02)
    book = JobBook(per_user=2)
    access = Access(logins=True, admins=frozenset({"root"}), jobs_per_user=2)
    first = _start(engine, book, "a1", "alice")
    assert "Starting" in next(first)[0]
    _wait(lambda: engine.training.status() is not None)
    second = _start(engine, book, "a2", "alice")
    assert "Queued" in next(second)[0] and "1 job" in next(second)[0]
    with pytest.raises(gr.Error, match="at most 2 per user"):
        next(_start(engine, book, "a3", "alice"))
    bobs = _start(engine, book, "b1", "bob")
    assert "Queued" in next(bobs)[0]
    # Stop: only the owner or an admin.
    with pytest.raises(gr.Error, match="alice's training job: only its owner or an admin"):
        cb.stop_training(engine, "a1", jobs=book, access=access, user="bob")
    assert "No training job of yours" in cb.stop_training(engine, "zz", jobs=book, access=access, user="bob")
    assert "Cancelled" in cb.stop_training(engine, "a2", jobs=book, access=access, user="alice")
    assert "cancelled before it started" in list(second)[-1][0]
    assert "Stopping" in cb.stop_training(engine, "a1", jobs=book, access=access, user="root")
    assert "stopped early" in list(first)[-1][0]
    assert engine.training.trained[-1].name == "a1" and engine.training.trained[-1].owner == "alice"
    assert engine.runs.run("a1").config["train"]["extra"]["owner"] == "alice"
    # bob's job gets its turn once alice's ended; bob stops it himself.
    _wait(lambda: "Starting" in next(bobs)[0], timeout=30)
    assert "Stopping" in cb.stop_training(engine, "b1", jobs=book, access=access, user="bob")
    list(bobs)
    assert engine.training.trained[-1].owner == "bob" and book.jobs() == []
    # The Runs tab shows each run's owner.
    table = cb.runs_table(engine)
    owners = dict(zip(table["run"], table["owner"]))
    assert owners["a1"] == "alice" and owners["b1"] == "bob"


def test_without_logins_nothing_changes() -> None:
    engine = FakeEngine(step_s=0.02)
    book = JobBook(None)
    gen = _start(engine, book, "ft", None)
    next(gen)
    _wait(lambda: engine.training.status() is not None)
    assert "Stopping" in cb.stop_training(engine, "ft", jobs=book, access=Access(), user=None)
    list(gen)
    assert engine.training.trained[-1].owner is None and "extra" not in engine.runs.run("ft").config["train"]
    assert cb.runs_table(engine).set_index("run").loc["ft", "owner"] is None


def test_closing_a_queued_job_frees_its_place() -> None:
    engine = FakeEngine(step_s=0.02)
    book = JobBook(per_user=2)
    first = _start(engine, book, "a1", "alice")
    next(first)
    queued = _start(engine, book, "a2", "alice")
    assert "Queued" in next(queued)[0]
    queued.close()  # the page was closed while it waited
    assert [job.name for job in book.jobs()] == ["a1"]
    first.close()
    assert book.jobs() == [] and engine.training.status() is None


def test_the_engine_records_the_owner_in_the_run_config_and_the_checkpoint(tmp_path: Path) -> None:
    """What crm_core.train writes in config.json ({"train": cfg.to_dict()}) and in the checkpoint
    (train_config=cfg.to_dict()); the checkpoint's one-line description names the owner."""
    from crm_core.checkpoints import CheckpointSummary
    from crm_core.models import ModelConfig
    from demo.engine import Engine, FineTuneRequest

    engine = Engine(tmp_path / "checkpoints", tmp_path / "runs")
    cfg = engine.training.config(FineTuneRequest(name="ft", owner="alice", extra={"extra": {"note": "kept"}}))
    assert cfg.to_dict()["extra"] == {"note": "kept", "owner": "alice"}
    assert "owner" not in engine.training.config(FineTuneRequest(name="ft")).to_dict()["extra"]
    summary = CheckpointSummary(name="ft", model_config=ModelConfig(arch="resnet18"), train_config=cfg.to_dict(),
                                class_names=["a", "b"], image_size=64, dataset="synthetic", step=3,
                                weights_source="none", has_reconstructor=False)
    assert summary.describe().endswith(", owner alice")
    no_owner = CheckpointSummary(**{**summary.__dict__, "train_config": {"cls_lr": 0.1}})
    assert "owner" not in no_owner.describe()


def test_served_fine_tune_is_one_at_a_time_with_logins_and_without() -> None:
    """The Fine-tune event: gradio's queue holds waiting jobs without logins (concurrency 1, as
    before); with logins the book does, so gradio lets every job in."""
    from demo.layout import build_app

    def limit(access: Access | None) -> object:
        blocks = build_app(FakeEngine(), access)
        fn = next(f for f in blocks.fns.values() if f.api_name == "fine_tune")
        return fn.concurrency_limit

    assert limit(None) == 1
    assert limit(Access(logins=True)) is None
