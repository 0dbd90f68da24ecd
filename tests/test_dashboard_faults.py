"""Faults pushed through the served dashboard's HTTP API (gradio_client): hostile and broken
checkpoints in its folder, the bad-image zoo, hostile parameters, concurrent users, memory over
many requests, two fine-tunes at once. Each: a clear message, no traceback, the next request works."""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import require
from demo import render
from demo.memory import rss_mb
from demo_fixtures import assert_no_server_detail, copy_pair, served_app
from hostile_files import IMAGE_ZOO, broken_checkpoints, hostile_checkpoint

try:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
except ImportError:  # not skipped here (that would drop the whole file): each test that needs it
    Client = handle_file = AppError = None  # calls require("gradio_client"), through `client` or itself

GOOD = ["resnet", "resnet_drs"]
COMPARE = ("(predicted class)", 0.3, "gradcampp")


@pytest.fixture(scope="module")
def server(trained_pair: dict, tmp_path_factory: pytest.TempPathFactory):
    """The tiny trained pair plus a hostile payload and four kinds of broken checkpoint."""
    root = tmp_path_factory.mktemp("hostile")
    checkpoints, runs = copy_pair(trained_pair, root)
    marker = root / "pwned"
    hostile_checkpoint(checkpoints / "evil.pt", marker)
    broken_checkpoints(checkpoints / "resnet.pt", checkpoints)
    wrong_arch = torch.load(checkpoints / "resnet.pt", weights_only=True)
    wrong_arch["model_config"]["arch"] = "resnet34"
    torch.save(wrong_arch, checkpoints / "wrong_arch.pt")
    with served_app(checkpoints, runs) as url:
        yield {"url": url, "checkpoints": checkpoints, "runs": runs, "root": root, "marker": marker}


def _client(server: dict) -> Client:
    """A gradio_client on the served app; without the package the test skips (CI: fails)."""
    return require("gradio_client").Client(server["url"], analytics_enabled=False, verbose=False)


@pytest.fixture(scope="module")
def client(server: dict) -> Client:
    return _client(server)


def _assert_clear_error(info: pytest.ExceptionInfo, pattern: str) -> None:
    message = str(info.value)
    assert re.search(pattern, message, re.IGNORECASE), message
    assert "Traceback" not in message and 'File "' not in message, message


def _normal_compare_works(client: Client) -> None:
    out = client.predict("resnet", "resnet_drs", None, 1, *COMPARE, api_name="/compare")
    assert "test sample #1" in out[-1]


# -- checkpoints -----------------------------------------------------------------------------
def test_menus_list_only_loadable_checkpoints_and_say_why_the_others_are_not(client: Client, server: dict) -> None:
    refreshed = client.predict("resnet", "resnet_drs", "resnet_drs", "resnet", "resnet", GOOD,
                               "(none: from scratch)", [], api_name="/refresh_checkpoints")
    choices = [c[0] for c in refreshed[0]["choices"]]
    assert choices == GOOD
    report = refreshed[-1]
    for name, why in [("evil", "refused"), ("empty", "empty"), ("truncated", "truncated or corrupt"),
                      ("garbage", "truncated or corrupt"), ("not_ours", "not a CRM Lab checkpoint"),
                      ("wrong_arch", "do not match")]:
        line = next(line for line in report.splitlines() if f"`{name}.pt`" in line)
        assert why in line, line
    assert str(server["root"]) not in report, "server paths leak into the page"
    assert not server["marker"].exists(), "the pickle payload ran"


@pytest.mark.parametrize("name,pattern", [
    ("evil", "refused"), ("truncated", "truncated or corrupt"), ("wrong_arch", "do not match"),
    ("../../etc/passwd", "invalid checkpoint name"), ("/etc/passwd", "invalid checkpoint name"),
    ("missing", "no checkpoint named"),
])
def test_asking_for_a_bad_checkpoint_by_name_is_a_message(client: Client, server: dict, name: str, pattern: str) -> None:
    with pytest.raises(AppError) as info:
        client.predict(name, "resnet", None, 1, *COMPARE, api_name="/compare")
    _assert_clear_error(info, pattern)
    assert str(server["root"]) not in str(info.value), "server paths leak into the message"
    with pytest.raises(AppError) as info:
        client.predict(name, "resnet", None, 3, 0.4, api_name="/drs_cam")
    _assert_clear_error(info, pattern)
    assert not server["marker"].exists(), "the pickle payload ran"
    _normal_compare_works(client)


# -- images ----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(IMAGE_ZOO))
def test_image_zoo_through_the_http_api(client: Client, tmp_path: Path, case: str) -> None:
    build, accepted = IMAGE_ZOO[case]
    path = build(tmp_path)
    upload = handle_file(str(path))
    if accepted:
        out = client.predict("resnet", "resnet_drs", upload, -1, *COMPARE, api_name="/compare")
        assert "your upload" in out[-1] and Path(out[0]).is_file()
        if case == "exif_rotated_jpeg":  # 40x20 landscape shown upright: 20 wide, 40 tall, blue on top
            shown = np.asarray(Image.open(out[0]).convert("RGB"), dtype=float)[:, :render.DISPLAY]  # not the colour bar
            assert shown[: shown.shape[0] // 4, :, 2].mean() > shown[-shown.shape[0] // 4:, :, 2].mean()
    else:
        with pytest.raises(AppError) as info:
            client.predict("resnet", "resnet_drs", upload, -1, *COMPARE, api_name="/compare")
        _assert_clear_error(info, "image|too large|megapixels|corrupt|truncated")
        # Truncated PNG / JPEG, a text file, 100 megapixels: the user's file name at most, no server path.
        assert_no_server_detail(str(info.value))
        if case.startswith("corrupt_"):
            assert f"{path.name}: corrupt" in str(info.value), str(info.value)
    _normal_compare_works(client)


def test_upload_above_the_size_limit_is_refused(client: Client, server: dict, tmp_path: Path) -> None:
    import httpx

    big = tmp_path / "big.png"
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((2100, 2100, 3)) * 255).astype(np.uint8)).save(big, compress_level=0)
    assert big.stat().st_size > 10 * 1024 * 1024  # the app's --max-file-size default is 10mb
    with pytest.raises(Exception) as info:  # gradio_client checks first; its message names the client's own file
        client.predict("resnet", "resnet_drs", handle_file(str(big)), -1, *COMPARE, api_name="/compare")
    print(f"over-size upload: {info.value!s:.300}")
    assert "size" in str(info.value).lower() or "413" in str(info.value), str(info.value)
    with big.open("rb") as data:  # sent anyway: the server refuses it, with nothing of its own in the answer
        response = httpx.post(server["url"].rstrip("/") + "/gradio_api/upload", files=[("files", ("big.png", data))],
                              timeout=120)
    assert response.status_code == 413 and "size" in response.text, response.text
    assert_no_server_detail(response.text)
    _normal_compare_works(client)


# -- hostile parameters ----------------------------------------------------------------------
FINE_TUNE = dict(name="ok-name", base="resnet_drs", model="resnet_drs", dataset="synthetic", steps=2, batch=4,
                 cls_lr=1e-3, rec_lr=2e-3, l1=1.0, vgg=0.0, align=1.0, delta=0.55, learnable=False, arch="resnet18")


# gradio checks a slider's or number's bounds and a dropdown's choices itself, with a message
# such as "Value -5 is less than minimum value 1."; anything it lets through, our callbacks check.
BOUNDS = "minimum value|maximum value|not in the list of choices"


@pytest.mark.parametrize("override,pattern", [
    ({"steps": -5}, BOUNDS), ({"steps": 10**9}, BOUNDS), ({"batch": 10**6}, BOUNDS), ({"cls_lr": -1.0}, "learning rate"),
    ({"model": "resnet_evil"}, "unknown model|resnet_evil"), ({"dataset": "imagenet_full"}, "unknown dataset|imagenet_full"),
    ({"base": "../../etc/passwd"}, "invalid"), ({"name": "../../etc/passwd"}, "checkpoint name"),
    ({"name": "resnet"}, "exists|already"), ({"delta": 7.0}, BOUNDS), ({"base": "evil"}, "refused"),
    ({"arch": "vgg_evil"}, BOUNDS + "|backbone"),
])
def test_hostile_fine_tune_parameters_are_refused_before_training(client: Client, server: dict, override: dict,
                                                                   pattern: str) -> None:
    args = {**FINE_TUNE, **override}
    before = sorted(p.name for p in server["checkpoints"].iterdir())
    with pytest.raises(AppError) as info:
        client.predict(*args.values(), api_name="/fine_tune")
    _assert_clear_error(info, pattern)
    assert sorted(p.name for p in server["checkpoints"].iterdir()) == before
    assert not server["marker"].exists()


@pytest.mark.parametrize("endpoint,args,pattern", [
    ("/compare", ("resnet", "resnet_drs", None, 10**12, "(predicted class)", 0.3, "gradcampp"), "sample index|out of range|index"),
    ("/compare", ("resnet", "resnet_drs", None, 1, "no_such_class", 0.3, "gradcampp"), "not a class"),
    ("/compare", ("resnet", "resnet_drs", None, 1, "(predicted class)", 0.3, "os.system"), BOUNDS),
    ("/drs_cam", ("resnet_drs", "resnet", None, 3, -2.0), BOUNDS),
    ("/superpixels", ("resnet", "resnet", None, 3, 10**7, 10, 0.2, 0.45), BOUNDS),
    ("/browse", ("resnet", 10**6, "best IoU first", 0.3), BOUNDS),
])
def test_out_of_range_values_sent_straight_to_the_api(client: Client, endpoint: str, args: tuple, pattern: str) -> None:
    with pytest.raises(AppError) as info:
        client.predict(*args, api_name=endpoint)
    _assert_clear_error(info, pattern)
    _normal_compare_works(client)


def _raw_call(url: str, api_name: str, body: str) -> tuple[str, str]:
    """POST a hand-written JSON body to gradio's HTTP API (gradio_client cannot send NaN or
    Infinity: they are not JSON, but Python's server-side parser accepts them); returns the
    (event, data) that ends the result stream."""
    import json
    import urllib.request

    base = url.rstrip("/") + f"/gradio_api/call/{api_name}"
    request = urllib.request.Request(base, data=body.encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        event_id = json.loads(response.read())["event_id"]
    event = data = ""
    with urllib.request.urlopen(f"{base}/{event_id}", timeout=300) as response:
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = line.split(":", 1)[1].strip()
                if event in ("complete", "error"):
                    break
    return event, data


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_through_raw_http_are_refused(server: dict, value: str) -> None:
    compare = f'{{"data": ["resnet", "resnet_drs", null, 1, "(predicted class)", {value}, "gradcampp"]}}'
    event, data = _raw_call(server["url"], "compare", compare)
    assert event == "error" and "Traceback" not in data, (event, data)
    assert re.search("threshold|finite|number|" + BOUNDS, data, re.IGNORECASE), data
    fine_tune = (f'{{"data": ["nan-run", "resnet_drs", "resnet_drs", "synthetic", 2, 4, {value}, 0.002, 1.0, 0.0, '
                 f'1.0, 0.55, false, "resnet18", 1]}}')
    event, data = _raw_call(server["url"], "fine_tune", fine_tune)
    assert event == "error" and re.search("learning rate|finite|number|" + BOUNDS, data, re.IGNORECASE), data
    assert not (server["checkpoints"] / "nan-run.pt").exists()
    event, data = _raw_call(server["url"], "compare",
                            '{"data": ["resnet", "resnet_drs", null, 1, "(predicted class)", 0.3, "gradcampp"]}')
    assert event == "complete", data


# -- load ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_twenty_concurrent_compares_are_all_answered_correctly(server: dict) -> None:
    clients = [_client(server) for _ in range(4)]
    indices = list(range(20))
    expected = {i: clients[0].predict("resnet", "resnet_drs", None, i, *COMPARE, api_name="/compare") for i in indices}
    jobs = {i: clients[i % 4].submit("resnet", "resnet_drs", None, i, *COMPARE, api_name="/compare") for i in indices}
    for i, job in jobs.items():
        out = job.result(timeout=300)
        want = expected[i]
        assert f"test sample #{i}" in out[-1]
        assert out[2]["label"] == want[2]["label"] and out[3]["label"] == want[3]["label"]
        got_conf = {c["label"]: c["confidence"] for c in out[2]["confidences"]}
        want_conf = {c["label"]: c["confidence"] for c in want[2]["confidences"]}
        assert got_conf == pytest.approx(want_conf, abs=1e-5)
        # The overlays are the same pictures as the ones computed alone.
        assert np.abs(np.asarray(Image.open(out[0]), float) - np.asarray(Image.open(want[0]), float)).max() <= 1


@pytest.mark.slow
def test_two_hundred_sequential_requests_keep_memory_flat(client: Client, tmp_path: Path, record_property) -> None:
    """The app is served in this process, so this process's RSS is the server's."""
    upload = tmp_path / "up.png"
    Image.fromarray((np.random.default_rng(1).random((80, 60, 3)) * 255).astype(np.uint8)).save(upload)

    def request(i: int) -> None:
        if i % 4 == 3:
            client.predict("resnet", "resnet_drs", handle_file(str(upload)), -1, *COMPARE, api_name="/compare")
        elif i % 4 == 2:
            client.predict("resnet_drs", "resnet", None, i % 30, 0.2 + (i % 7) / 10, api_name="/drs_cam")
        else:
            client.predict("resnet", "resnet_drs", None, i % 30, *COMPARE, api_name="/compare")

    for i in range(30):  # warm up: caches fill, allocator settles
        request(i)
    before = rss_mb()
    samples = []
    for i in range(200):
        request(i)
        if i % 50 == 49:
            samples.append(rss_mb())
    after = rss_mb()
    record_property("rss_before_mb", round(before, 1))
    record_property("rss_after_mb", round(after, 1))
    print(f"RSS before {before:.1f} MiB, after 200 requests {after:.1f} MiB, samples {[round(s) for s in samples]}")
    assert after - before < 60, f"RSS grew from {before:.0f} to {after:.0f} MiB over 200 requests"
    # No steady climb either: the last quarter grows no more than a few MiB over the first.
    assert samples[-1] - samples[0] < 30


@pytest.mark.slow
def test_two_clients_start_fine_tunes_at_once_exactly_one_trains_at_a_time(server: dict,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Events, not timing: the first fine-tune is held inside the trainer until the second request
    is seen waiting in the queue; the trainer counts how many jobs are inside it at once."""
    import threading

    import crm_core.train
    from gradio_client.utils import Status

    a, b = (_client(server) for _ in range(2))
    real_train = crm_core.train.main
    lock, inside, most, order = threading.Lock(), [0], [0], []
    first_started, release = threading.Event(), threading.Event()

    def gated_train(cfg, **kwargs):  # the app is served in this process: its fine-tunes call this
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            order.append(cfg.name)
            first = len(order) == 1
        try:
            if first:
                first_started.set()
                assert release.wait(300), "the test never released the first fine-tune"
            return real_train(cfg, **kwargs)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(crm_core.train, "main", gated_train)
    args = {**FINE_TUNE, "steps": 3}
    jobs = {"ft-one": a.submit(*{**args, "name": "ft-one"}.values(), api_name="/fine_tune")}
    assert first_started.wait(300), "the first fine-tune never reached the trainer"
    jobs["ft-two"] = b.submit(*{**args, "name": "ft-two"}.values(), api_name="/fine_tune")
    # While the first is held, the second either waits in the queue (the state stays until the
    # release, so this wait cannot miss it) or enters the trainer too (then the assertions fail).
    deadline = time.monotonic() + 120
    while jobs["ft-two"].status().code != Status.IN_QUEUE and len(order) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    queued = jobs["ft-two"].status().code == Status.IN_QUEUE
    release.set()
    from crm_core.checkpoints import load_checkpoint
    from crm_core.runs import RunDir

    for name, job in jobs.items():
        status, _ = job.result(timeout=300)
        assert f"**{name}** saved" in status
        assert load_checkpoint(server["checkpoints"] / f"{name}.pt").step == 3
        rows = [r for r in RunDir(server["runs"] / name).read_metrics() if r["split"] == "train"]
        assert [r["step"] for r in rows] == [1, 2, 3]
        assert (server["runs"] / name / "eval.json").is_file()
    assert queued, "the second fine-tune did not wait in the queue while the first trained"
    assert most[0] == 1 and order == ["ft-one", "ft-two"], (most[0], order)
