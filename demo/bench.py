"""Dashboard latencies: Compare, a DRS delta change and the cold start of ``app.py``; the
served app's memory under mixed concurrent use.

    python -m demo.bench [--repeats 7] [--no-cold-start] [--no-memory] [--json PATH]

Section 4 of the CRM Lab benchmark. It lives on the dashboard side because it drives the
dashboard's own engine and callbacks; ``python -m crm_core.experiments.bench`` runs it as a subprocess
(``--json``), puts its result under ``details.dashboard`` of the combined report and draws its
table there. This module imports the library only (its timing harness, :mod:`crm_core.timing`),
never the studies, so the subprocess does not loop back into the package that started it.

The two checkpoints are the demo recipe (:data:`demo.bootstrap.DEMO_RECIPE`) after a single step:
latency depends on the architecture and the image size, not on the weights.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crm_core.api import CamModel, upsample_normalised
from crm_core.data import build_dataset, to_uint8_image
from crm_core.timing import time_interleaved
from demo.bootstrap import DEMO_RECIPE
from demo.load import loadable_checkpoints, memory_report_of, methods_on_offer, run_load, serve, stop
from demo.memory import rss_mb

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The models a Compare shows side by side: DRS off and on, both with CRM.
DASHBOARD_PAIR = ("resnet", "resnet_drs")
#: What the benchmark changes on DEMO_RECIPE: one short CPU step instead of a training run.
ONE_STEP = dict(steps=1, epochs=1, train_size=16, batch_size=8, val_limit=8, workers=0, crm=True, device="cpu")


def make_demo_checkpoints(directory: str | Path, recipe: dict[str, Any] | None = None) -> list[Path]:
    """The :data:`DASHBOARD_PAIR` checkpoints after one training step of the demo recipe
    (``recipe``: further TrainConfig overrides)."""
    from crm_core.train import TrainConfig
    from crm_core.train import main as train_main

    values = dict(DEMO_RECIPE, **ONE_STEP)
    values.update(recipe or {})
    directory = Path(directory)
    paths = []
    for variant in DASHBOARD_PAIR:
        paths.append(train_main(TrainConfig(**dict(values, name=variant, model=variant, checkpoint_dir=str(directory),
                                                   runs_dir=str(directory.parent / "runs")))))
    return paths


def _demo_callbacks() -> tuple[Any, Any] | None:
    """(demo.engine.Engine, demo.callbacks) when the callbacks import (they need gradio), else None."""
    try:
        from demo import callbacks
        from demo.engine import Engine
    except ImportError as exc:  # no gradio: measure through crm_core.api only
        log.info("demo.callbacks not importable (%s): measuring through crm_core.api only", exc)
        return None
    if not all(hasattr(callbacks, name) for name in ("compare", "drs_view")):
        return None
    return Engine, callbacks


def _upload_image(size: int = 256, seed: int = 1) -> np.ndarray:
    """A photo-like uint8 (H, W, 3) image, as Gradio hands an upload to a callback."""
    dataset = build_dataset("synthetic", "test", image_size=size, num_classes=4, length=seed + 1)
    return to_uint8_image(dataset[seed]["image"])


def bench_dashboard_api(paths: list[Path], image: np.ndarray, repeats: int = 5, deltas: tuple[float, ...] = (0.3, 0.7)) -> dict[str, Any]:
    """Compare and DRS latencies through :class:`CamModel` calls equivalent to the callbacks."""
    def show(model: CamModel) -> None:  # preprocess the upload, predict, CAM of the top class at upload size
        pred = model.predict(model.preprocess(image)[None])
        upsample_normalised(pred.cams[:, int(pred.probs[0].argmax())], image.shape[:2])

    def compare_cold() -> None:  # load both checkpoints first
        for path in paths:
            show(CamModel.load(path))

    loaded = [CamModel.load(path) for path in paths]
    drs_model = loaded[-1]
    counter = {"i": 0}

    def drs_update() -> None:
        counter["i"] += 1
        x = drs_model.preprocess(image)[None]
        drs_model.cam(x, drs_delta=deltas[counter["i"] % len(deltas)], size=image.shape[:2])
        drs_model.predict(x, drs_delta=deltas[counter["i"] % len(deltas)])

    stats = time_interleaved({"compare_cold": compare_cold, "compare_warm": lambda: [show(m) for m in loaded],
                              "drs_update": drs_update}, repeats, warmup=1)
    return {name: s.as_dict() for name, s in stats.items()}


def bench_dashboard_engine(checkpoint_dir: Path, image: np.ndarray, repeats: int = 5,
                           deltas: tuple[float, ...] = (0.3, 0.7)) -> dict[str, Any]:
    """Compare and DRS latencies through the dashboard's own callbacks (demo.callbacks)."""
    modules = _demo_callbacks()
    if modules is None:
        return {"available": False}
    Engine, callbacks = modules
    predicted = getattr(callbacks, "PREDICTED", None)
    runs_dir = checkpoint_dir.parent / "runs"
    a, b = DASHBOARD_PAIR

    def compare(engine: Any) -> None:
        callbacks.compare(engine, a, b, image, None, predicted, 0.3, "gradcampp")

    def compare_cold() -> None:  # a fresh engine: both checkpoints are loaded inside the call
        compare(Engine(checkpoint_dir, runs_dir))

    warm_engine = Engine(checkpoint_dir, runs_dir)
    counter = {"i": 0}

    def drs_update() -> None:
        counter["i"] += 1
        callbacks.drs_view(warm_engine, b, a, image, None, deltas[counter["i"] % len(deltas)], 0.3)

    stats = time_interleaved({"compare_cold": compare_cold, "compare_warm": lambda: compare(warm_engine),
                              "drs_update": drs_update}, repeats, warmup=1)
    return {"available": True, **{name: s.as_dict() for name, s in stats.items()}}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _first_view(port: int, timeout: float) -> None:
    """Call the page's ``startup`` event (sample gallery, sample #0, both default models' CAMs)
    through gradio's HTTP API and wait for its result: what a first visit waits for."""
    base = f"http://127.0.0.1:{port}/gradio_api/call/startup"
    body = json.dumps({"data": [None, None, None, 0.5, None]}).encode()  # None: the defaults
    request = urllib.request.Request(base, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        event_id = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{base}/{event_id}", timeout=timeout) as stream:
        for line in stream:
            if line.startswith(b"event: error"):
                raise RuntimeError(f"the startup event failed: {stream.read(500).decode(errors='replace')}")
            if line.startswith(b"event: complete"):
                return
    raise RuntimeError("the startup event ended without a result")


def bench_cold_start(checkpoint_dir: Path, timeout: float = 180.0) -> dict[str, Any]:
    """Seconds from ``python app.py --no-bootstrap`` to the first HTTP 200 on its port
    (``seconds``), and on to the first view's result (``first_view_seconds``: the page's startup
    event, both default models' CAMs of sample #0, while the models are still being built)."""
    app = REPO_ROOT / "app.py"
    if not app.is_file():
        return {"available": False, "reason": "app.py does not exist"}
    port = _free_port()
    cmd = [sys.executable, str(app), "--no-bootstrap", "--checkpoints", str(checkpoint_dir),
           "--runs", str(checkpoint_dir.parent / "runs"), "--port", str(port), "--log-level", "WARNING"]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1")
    with tempfile.TemporaryFile() as output:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            while time.perf_counter() - started < timeout:
                if proc.poll() is not None:
                    output.seek(0)
                    tail = output.read().decode(errors="replace")[-1500:]
                    return {"available": False, "reason": f"app.py exited with {proc.returncode}: {tail}"}
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                        if response.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, OSError):
                    pass
                time.sleep(0.1)
            else:
                return {"available": False, "reason": f"no HTTP answer within {timeout:.0f} s"}
            result: dict[str, Any] = {"available": True, "seconds": time.perf_counter() - started, "port": port}
            try:
                _first_view(port, timeout)
                result["first_view_seconds"] = time.perf_counter() - started
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                result["first_view_error"] = f"{type(exc).__name__}: {exc}"[:300]
            return result
        finally:
            stop(proc)


def bench_cold_starts(checkpoint_dir: Path, repeats: int) -> dict[str, Any]:
    """:func:`bench_cold_start` ``repeats`` times (each a fresh process): the runs and their medians."""
    runs = [bench_cold_start(checkpoint_dir) for _ in range(max(1, repeats))]
    ok = [r for r in runs if r.get("available")]
    if not ok:
        return runs[0]
    views = [r["first_view_seconds"] for r in ok if "first_view_seconds" in r]
    return {"available": True, "seconds": float(np.median([r["seconds"] for r in ok])),
            "first_view_seconds": float(np.median(views)) if views else None, "runs": runs}


#: The load of the memory measurement: a fixed mixed warm-up round, then one more round (demo.load).
MEMORY_LOAD = dict(clients=4, requests=8, rounds=2, seed=0, same_each_round=True)


def bench_memory(checkpoint_dir: Path, malloc: str, timeout: float = 900.0) -> dict[str, Any]:
    """The served app's RSS (MiB) at start, after a fixed mixed warm-up round of concurrent clients
    (demo.load) and after one more round, with ``app.py --malloc MALLOC``; the seconds each round
    took; and the memory by owner the server logs at the end."""
    try:
        import gradio_client  # noqa: F401 - the load's clients
    except ImportError as exc:
        return {"available": False, "reason": f"gradio_client is not installed ({exc})"}
    names, drs = loadable_checkpoints(checkpoint_dir)  # read from the files, no model built
    runs = checkpoint_dir.parent / "runs"
    port = _free_port()
    server = serve(checkpoint_dir, runs, port, extra=["--malloc", malloc, "--log-level", "INFO"],
                   env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1"))
    try:
        report = run_load(f"http://127.0.0.1:{port}/", names, drs, methods_on_offer(), rss=lambda: rss_mb(server.pid),
                          secret_paths=[str(checkpoint_dir), str(runs)], timeout=timeout, **MEMORY_LOAD)
        owners = memory_report_of(server)
    finally:
        stop(server)
    start, warm, after = report.rss_mb
    return {"available": True, "malloc": malloc, "rss_start_mb": start, "rss_warm_mb": warm, "rss_after_mb": after,
            "round_s": report.seconds, "requests": report.requests, "unexpected": len(report.unexpected),
            "leaked": len(report.leaked), "memory_by_owner": owners}


def _import_time(module: str) -> float | None:
    """Seconds a fresh interpreter needs to ``import module`` (part of any cold start)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    try:
        return float(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def bench_dashboard(repeats: int = 5, cold_start: bool = True, checkpoint_recipe: dict[str, Any] | None = None,
                    workdir: str | Path | None = None, one_thread_too: bool = True, cold_repeats: int = 3,
                    memory: bool = True) -> dict[str, Any]:
    """Compare / DRS latencies (engine callbacks when importable, and the API path), cold start and
    (``memory``) the served app's RSS under load with both ``--malloc`` settings, side by side."""
    with contextlib.ExitStack() as stack:
        root = Path(workdir) if workdir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="crm_bench_dash_")))
        checkpoint_dir = root / "checkpoints"
        paths = sorted(checkpoint_dir.glob("*.pt")) if checkpoint_dir.is_dir() else []
        if len(paths) < 2:
            paths = make_demo_checkpoints(checkpoint_dir, checkpoint_recipe)
        image = _upload_image()
        result: dict[str, Any] = {"checkpoints": [p.name for p in paths], "image_shape": list(image.shape),
                                  "model_image_size": CamModel.load(paths[0]).image_size,
                                  "api": bench_dashboard_api(paths, image, repeats)}
        result["engine"] = bench_dashboard_engine(checkpoint_dir, image, repeats)
        if one_thread_too and torch.get_num_threads() > 1:
            # Small models on a busy machine: a second intra-op thread can cost more (waiting for
            # a descheduled partner at every op) than it gives. Same calls with one thread:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                result["api_1thread"] = bench_dashboard_api(paths, image, repeats)
                result["engine_1thread"] = bench_dashboard_engine(checkpoint_dir, image, repeats)
            finally:
                torch.set_num_threads(threads)
        result["cold_start"] = (bench_cold_starts(checkpoint_dir, cold_repeats) if cold_start
                                else {"available": False, "reason": "skipped"})
        if cold_start:
            result["import_gradio_s"] = _import_time("gradio")
        if memory:
            result["memory"] = {malloc: bench_memory(checkpoint_dir, malloc) for malloc in ("bounded", "default")}
    source = result["engine"] if result["engine"].get("available") else result["api"]
    result["measured_through"] = "demo.callbacks (Engine)" if source is result["engine"] else "crm_core.api.CamModel"
    result["compare_latency_s"] = source["compare_cold"]["median"]
    result["compare_warm_latency_s"] = source["compare_warm"]["median"]
    result["drs_update_latency_s"] = source["drs_update"]["median"]
    result["cold_start_s"] = result["cold_start"].get("seconds") if result["cold_start"].get("available") else None
    return result


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m demo.bench",
                                description="Dashboard latencies: Compare, DRS delta change, cold start of app.py.")
    p.add_argument("--repeats", type=int, default=7, help="timing repeats per action")
    p.add_argument("--no-cold-start", dest="cold_start", action="store_false",
                   help="skip the cold start of app.py and the import time of gradio")
    p.add_argument("--cold-repeats", type=int, default=3, help="cold starts of app.py (the median is reported)")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="skip the served app's RSS under mixed concurrent load (two app.py servers, a minute or two)")
    p.add_argument("--workdir", default=None, metavar="DIR",
                   help="keep the two checkpoints in DIR/checkpoints (reused when there; default: a temporary folder)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the result as JSON")
    return p


def cli(argv: list[str] | None = None) -> int:
    """Measure, write the JSON, print the medians; returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = get_args_parser().parse_args(argv)
    os.environ.setdefault("CRM_LAB_NO_PROGRESS", "1")
    result = bench_dashboard(repeats=args.repeats, cold_start=args.cold_start, workdir=args.workdir,
                             cold_repeats=args.cold_repeats, memory=args.memory)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    print(summary_line(result))
    return 0


def summary_line(result: dict[str, Any]) -> str:
    """The medians in one line (the full table: ``python -m crm_core.experiments.bench``'s report)."""
    cold = result.get("cold_start_s")
    return (f"Compare {result['compare_latency_s']:.3f} s (loading both checkpoints), "
            f"{result['compare_warm_latency_s']:.3f} s (cached); DRS delta change {result['drs_update_latency_s']:.3f} s; "
            f"cold start {'not measured' if cold is None else f'{cold:.1f} s'} "
            f"(medians, measured through {result['measured_through']})")


if __name__ == "__main__":
    sys.exit(cli())
