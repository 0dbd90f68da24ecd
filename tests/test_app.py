"""app.py served on 127.0.0.1 with real tiny checkpoints, every public endpoint driven by gradio_client."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from conftest import require
from demo_fixtures import copy_pair, served_app

if TYPE_CHECKING:
    from gradio_client import Client

ROOT = Path(__file__).resolve().parents[1]


def test_importing_app_is_light_and_disables_analytics() -> None:
    code = ("import os, sys; import app; "
            "assert 'torch' not in sys.modules and 'gradio' not in sys.modules, 'heavy import'; "
            "assert os.environ['GRADIO_ANALYTICS_ENABLED'] == 'False'; "
            "a = app.get_args_parser().parse_args([]); assert a.host == '127.0.0.1' and a.port == 7860")
    env = {k: v for k, v in os.environ.items() if k != "GRADIO_ANALYTICS_ENABLED"}
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)


def test_auth_argument_is_checked() -> None:
    import app

    assert app.parse_auth("ann:s3cret:x") == ("ann", "s3cret:x")
    for bad in ("nopassword", ":x", "x:"):
        with pytest.raises(ValueError):
            app.parse_auth(bad)
    assert app.main(["--auth", "nopassword"]) == 2


@pytest.fixture(scope="module")
def server(trained_pair: dict, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("served")
    checkpoints, runs = copy_pair(trained_pair, root)
    with served_app(checkpoints, runs) as url:
        yield {"url": url, "checkpoints": checkpoints, "runs": runs, "root": root}


@pytest.fixture(scope="module")
def client(server: dict) -> Client:
    """A gradio_client on the served app; without the package the tests that use it skip (CI: fail)."""
    return require("gradio_client").Client(server["url"], analytics_enabled=False, verbose=False)


def _png(path: Path) -> str:
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((90, 120, 3)) * 255).astype(np.uint8)).save(path)
    return str(path)


@pytest.mark.slow
def test_every_public_endpoint(client: Client, server: dict, tmp_path: Path) -> None:
    api = client.view_api(return_format="dict", print_info=False)
    public = set(api["named_endpoints"])
    called: set[str] = set()

    def call(name: str, *args):
        called.add(name)
        return client.predict(*args, api_name=name)

    # Refresh and startup: the page opens on a filled Compare view.
    refreshed = call("/refresh_checkpoints", "resnet", "resnet_drs", "resnet_drs", "resnet", "resnet",
                     ["resnet", "resnet_drs"], "(none: from scratch)", ["resnet"])
    assert "resnet_drs" in refreshed[-1]
    start = call("/startup", "resnet", "resnet_drs", "(predicted class)", 0.3, "gradcampp")
    gallery, _, index, picture, overlay_a = start[:5]
    assert len(gallery) == 24 and index == 0 and Path(overlay_a).suffix == ".png"

    # Compare: dataset sample, another class, an upload; gallery and sample loading.
    out = call("/compare", "resnet", "resnet_drs", None, 2, "stripes_v", 0.4, "gradcampp")
    assert Path(out[0]).suffix == ".png" and out[2]["label"] and len(out[2]["confidences"]) == 3
    assert "test sample #2" in out[-1] and "object IoU" in out[-1]
    upload = require("gradio_client").handle_file(_png(tmp_path / "mine.png"))
    out = call("/compare", "resnet", "resnet_drs", upload, -1, "(predicted class)", 0.3, "gradcampp")
    assert "your upload" in out[-1]
    gallery, classes = call("/sample_gallery", "resnet_drs")
    assert len(gallery) == 24
    index, picture = call("/load_sample", "resnet", 5)
    assert index == 5 and Path(picture).is_file()

    # Browse, DRS, superpixels, reconstructions.
    gallery, table = call("/browse", "resnet", 8, "best IoU first", 0.3)
    ious = [row[-1] for row in table["data"]]
    assert len(gallery) == 8 and ious == sorted(ious, reverse=True)
    text, _ = call("/drs_model_info", "resnet_drs")
    assert "DRS" in text
    image, label, info = call("/drs_cam", "resnet_drs", "resnet", None, 3, 0.3)
    assert Path(image).suffix == ".png" and "delta 0.30" in info
    assert len(call("/drs_strip", "resnet_drs", "resnet", None, 3)) == 7
    plot, table = call("/drs_curve", "resnet_drs", 4)
    assert len(table["data"]) == 7
    *images, info = call("/superpixels", "resnet", "resnet", None, 3, 24, 10, 0.2, 0.45)
    assert len(images) == 4 and "superpixels" in info
    # Stage 2: this folder has no segmentation network yet; Show still shows the CAM model's pseudo
    # mask and the ground truth, and says how to make a network (test_stage2_from_the_browser_api trains one).
    from gradio_client.exceptions import AppError

    network, pseudo, gt, info = call("/stage2", None, "resnet", 0, 0.2, 0.45)
    assert network is None and Path(pseudo).suffix == Path(gt).suffix == ".png"
    assert "no stage-2 network" in info and "Train stage 2" in info and "pseudo mask of resnet" in info
    with pytest.raises(AppError, match="less than minimum value 1"):  # the slider's own range, in words
        call("/stage2_train", "s2-none", "resnet", "the CAM's threshold chosen on val", 0.2, 0.45, 0, 2, "fcn_resnet18")
    assert "No running training job named 's2-none'" in call("/stage2_stop", "s2-none")
    gallery, table, info = call("/reconstructions", ["resnet", "resnet_drs"], "resnet", None, 3)
    # input, then per model: reconstruction, error map and decoder input (the per-class maps it decodes)
    assert len(gallery) == 7 and len(table["data"]) == 2
    assert sum("decoder input" in str(item) for item in gallery) == 2

    # Runs: curves, table, CSV.
    plot, table = call("/runs", ["resnet", "resnet_drs"], ["loss_total", "loss_l1"], 0.5, "wall time", True, "train")
    assert [row[0] for row in table["data"]] == ["resnet", "resnet_drs"]
    csv_path = call("/runs_csv", ["resnet"])
    assert Path(csv_path).read_text().startswith("run,step,epoch")

    # Results: the report's table (or the one line saying how to make it), then a checkpoint scored as its rows are.
    _, info, table, _, _ = call("/results", "random", "miou")
    header, _, parts = info.partition("\n\n")  # one line, then the report's parts (a collapsed list) if merged
    assert header and "\n" not in header and (not parts or parts.startswith("<details>"))
    assert all("±" in str(row[3]) for row in table["data"])
    _, _, table, _, _ = call("/results_evaluate", "resnet", "random", "miou")
    assert "resnet (yours)" in [row[0] for row in table["data"]]

    # Fine-tune from resnet_drs, stopped after its first steps; it then shows up everywhere. 500
    # steps (the slider's most) do not end by themselves before the stop that follows the first
    # step's report: "stopped early" is the stop's doing, not a race the stop might lose.
    job = client.submit("ft-client", "resnet_drs", "resnet_drs", "synthetic", 500, 4, 1e-3, 2e-3, 1.0, 0.0, 1.0,
                        0.55, False, api_name="/fine_tune")
    called.add("/fine_tune")
    deadline = time.monotonic() + 120
    # "Starting … (500 steps)" comes first: wait for a training step's own line
    while not any(re.search(r"step \d+/", str(o[0])) for o in job.outputs()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "Stopping" in call("/stop_training", "ft-client")
    status, _ = job.result(timeout=180)
    assert "ft-client" in status and "stopped early" in status
    assert (server["checkpoints"] / "ft-client.pt").is_file()
    assert (server["runs"] / "ft-client" / "eval.json").is_file()
    refreshed = client.predict("resnet", "resnet_drs", "resnet_drs", "resnet", "resnet", ["resnet"],
                               "(none: from scratch)", [], api_name="/refresh_checkpoints")
    assert isinstance(refreshed[0], dict) and "ft-client" in [c[0] for c in refreshed[0]["choices"]], refreshed[0]
    assert "ft-client" in refreshed[-1]
    out = client.predict("ft-client", "resnet", None, 1, "(predicted class)", 0.3, "gradcampp", api_name="/compare")
    assert "ft-client" in out[-1]

    assert called == public, f"endpoints not exercised: {public - called}"


def test_bad_input_is_a_message_not_a_traceback(client: Client) -> None:
    from gradio_client.exceptions import AppError

    for args, message in [
        (("../../etc/passwd", "resnet", None, 1, "(predicted class)", 0.3, "gradcampp"), "invalid checkpoint name"),
        (("resnet", "resnet", None, -1, "(predicted class)", 0.3, "gradcampp"), "no image"),
        (("resnet", "resnet", None, 1, "(predicted class)", 7, "gradcampp"), "threshold|maximum value"),
        (("resnet", "missing", None, 1, "(predicted class)", 0.3, "gradcampp"), "no checkpoint named 'missing'"),
    ]:
        with pytest.raises(AppError, match=message) as info:
            client.predict(*args, api_name="/compare")
        assert "Traceback" not in str(info.value)


def test_only_checkpoints_and_runs_are_served(server: dict) -> None:
    url = server["url"].rstrip("/")
    allowed = server["runs"] / "resnet" / "metrics.csv"
    with urllib.request.urlopen(f"{url}/gradio_api/file={allowed}", timeout=30) as response:
        assert response.status == 200
    secret = server["root"] / "secret.txt"
    secret.write_text("no")
    for path in (secret, Path("/etc/passwd"), Path(server["checkpoints"]) / ".." / "secret.txt"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{url}/gradio_api/file={path}", timeout=30)
        assert info.value.code in (403, 404)


def _pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_compare_fills_both_panels_and_the_drs_delta_changes_only_drs_models(client: Client) -> None:
    """Served end to end (latency is the benchmark's: crm_core.experiments.bench, compare/drs_update latency)."""
    def compare(a: str, b: str) -> tuple:
        return client.predict(a, b, None, 4, "(predicted class)", 0.3, "gradcampp", api_name="/compare")

    ov_a, ov_b, lab_a, lab_b, mask_a, mask_b, info = compare("resnet", "resnet_drs")
    for path in (ov_a, ov_b, mask_a, mask_b):
        assert Path(path).suffix == ".png"
    assert _pixels(ov_a).shape == _pixels(ov_b).shape
    assert len(lab_a["confidences"]) == len(lab_b["confidences"]) == 3
    assert "**A — resnet" in info and "**B — resnet_drs" in info
    # Each panel is its own model's: the two differ, and swapping the models swaps the panels.
    assert not np.array_equal(_pixels(ov_a), _pixels(ov_b))
    swapped = compare("resnet_drs", "resnet")
    assert np.array_equal(_pixels(swapped[0]), _pixels(ov_b)) and np.array_equal(_pixels(swapped[1]), _pixels(ov_a))
    assert swapped[2] == lab_b and swapped[3] == lab_a

    def drs(model: str, delta: float) -> tuple:
        return client.predict(model, "resnet", None, 4, delta, api_name="/drs_cam")

    # The delta slider re-runs a DRS model: its CAM overlay and class scores move, its summary says so.
    low, high = drs("resnet_drs", 0.2), drs("resnet_drs", 0.9)
    assert "delta 0.20" in low[2] and "delta 0.90" in high[2] and "changes nothing" not in low[2]
    assert not np.array_equal(_pixels(low[0]), _pixels(high[0]))
    assert low[1]["confidences"] != high[1]["confidences"]
    assert np.array_equal(_pixels(drs("resnet_drs", 0.2)[0]), _pixels(low[0]))  # same delta, same picture
    # A model without DRS layers is unchanged by the delta, and the summary says why.
    low, high = drs("resnet", 0.2), drs("resnet", 0.9)
    assert np.array_equal(_pixels(low[0]), _pixels(high[0])) and low[1] == high[1]
    assert "changes nothing" in low[2]


def test_auth_protects_the_app(tmp_path: Path) -> None:
    with served_app(tmp_path / "checkpoints", tmp_path / "runs", "--auth", "ann:pw") as url:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"{url.rstrip('/')}/config", timeout=30)
        assert info.value.code == 401


def test_a_first_launch_serves_after_the_compared_pair_and_trains_the_rest_behind(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty checkpoints/: the pair the first view compares trains before the page is served, the
    rest of the demo set after, in the background (the 5-minute first launch), then its stage-2 networks."""
    import socket

    import app
    import demo.bootstrap as bootstrap

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def serving() -> bool:
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status == 200
        except OSError:
            return False

    calls: list[tuple] = []

    def fake_bootstrap(checkpoints, runs, device="cpu", eval_images=64, names=None, background=False, **kw):
        calls.append((tuple(names), background, serving()))
        return []

    def fake_stage2(checkpoints, runs, device="cpu", eval_images=64, names=None, background=False):
        calls.append(("stage 2", background, serving()))
        return []

    monkeypatch.setattr(bootstrap, "bootstrap_demo", fake_bootstrap)
    monkeypatch.setattr(bootstrap, "bootstrap_stage2", fake_stage2)
    args = app.get_args_parser().parse_args(["--checkpoints", str(tmp_path / "checkpoints"), "--runs",
                                             str(tmp_path / "runs"), "--port", str(port)])
    blocks = app.launch(args, prevent_thread_lock=True)
    try:
        deadline = time.time() + 60
        while len(calls) < 3 and time.time() < deadline:
            time.sleep(0.2)
    finally:
        blocks.close()
    # the demo set's stage-2 networks train last, behind the served page
    assert calls == [(bootstrap.DEMO_BEFORE_SERVING, False, False), (("resnet_drs",), True, True),
                     ("stage 2", True, True)]
    assert set(bootstrap.DEMO_BEFORE_SERVING) | {"resnet_drs"} == set(bootstrap.DEMO_MODELS)


@pytest.mark.slow
def test_stage2_from_the_browser_api(client: Client, server: dict) -> None:
    """A stage-2 training started through the API finishes, is scored as crm_core.segment scores it
    and appears in the Stage 2 menu; a second one stops when asked; bad input is a message."""
    from gradio_client.exceptions import AppError

    val = "the CAM's threshold chosen on val"
    status, _ = client.predict("s2-api", "resnet", val, 0.2, 0.45, 8, 2, "fcn_resnet18", api_name="/stage2_train")
    results = json.loads((server["runs"] / "s2-api" / "eval.json").read_text())
    assert f"test mIoU **{results['miou']:.3f}** on {results['num_images']} test images" in status, status
    assert (server["checkpoints"] / "s2-api.pt").is_file()
    network, pseudo, gt, info = client.predict("s2-api", "resnet", 1, 0.2, 0.45, api_name="/stage2")
    assert network and pseudo and gt and "s2-api: stage-2" in info and info.count("mIoU **") == 2
    # stopped after its first step (500 steps do not end by themselves first): kept, scored, in the menu
    job = client.submit("s2-stop", "resnet", val, 0.2, 0.45, 8, 500, "fcn_resnet18", api_name="/stage2_train")
    deadline = time.monotonic() + 120
    # "Starting … (500 steps)" comes before the masks: wait for a training step's own line
    while not any(re.search(r"step \d+/", str(o[0])) for o in job.outputs()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "Stopping" in client.predict("s2-stop", api_name="/stage2_stop")
    status, _ = job.result(timeout=180)
    assert "s2-stop" in status and "stopped early" in status and "test mIoU" in status
    for args, message in ((("s2-api", "resnet", val, 0.2, 0.45, 8, 2, "fcn_resnet18"), "already exists"),
                          (("s2-x", "s2-api", val, 0.2, 0.45, 8, 2, "fcn_resnet18"), "not a CAM model"),
                          (("s2-x", "resnet", val, 0.2, 0.45, 8, 9000, "fcn_resnet18"), "greater than maximum value 500"),
                          (("s2-x", "resnet", "anywhere", 0.2, 0.45, 8, 2, "fcn_resnet18"), "anywhere")):
        with pytest.raises(AppError, match=message) as caught:
            client.predict(*args, api_name="/stage2_train")
        assert "Traceback" not in str(caught.value)
