"""A lab's mixed, concurrent use of a served dashboard, and the server's memory through it.

    python -m demo.load --checkpoints DIR [--make-lab] [--clients 6] [--requests 12] [--rounds 5]
                        [--malloc bounded|default] [--json PATH]

Several ``gradio_client`` clients, one thread each, send seeded random requests to the served
app: ``/compare`` (random pairs, every CAM method on offer, the grad-cam package's included),
``/browse``, ``/drs_cam`` (random delta) and ``/reconstructions``. A share of them is hostile
(indices, thresholds and deltas out of range, unknown models, path-like names): those must be
refused with a message, and no message may carry a server folder. After each round the server's
resident memory (VmRSS) is read from ``/proc``.

``--make-lab`` first fills an empty folder with :data:`LAB`, nine resnet18 checkpoints of the demo
recipe after two steps each (plain, CRM, DRS and DRS + CRM, further seeds, a camouflage one):
memory depends on the architecture and the image size, not on the weights.

The CLI starts ``app.py --no-bootstrap`` on the folder in a subprocess (so its RSS is the server's
alone) and prints a table of RSS by round; ``tests/test_dashboard_soak.py`` and ``python -m
demo.bench`` use :func:`run_load` on an app they serve themselves.
"""
from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from demo.memory import rss_mb

__all__ = ["LoadReport", "Request", "loadable_checkpoints", "memory_report_of", "mixed_requests", "run_load", "serve",
           "stop"]

REPO_ROOT = Path(__file__).resolve().parent.parent
PREDICTED = "(predicted class)"
HOSTILE_NAMES = ("../../etc/passwd", "/etc/passwd", "missing_model", "")
#: What a refusal may say; anything else from a hostile request, or any error from a sound one, is unexpected.
REFUSAL = re.compile(r"must be|invalid|no checkpoint|unknown|choose|out of range|not a|has no|without CRM|"
                     r"no ReconstructNet|cannot|less than minimum|greater than maximum|not in the list", re.IGNORECASE)


@dataclass(frozen=True)
class Request:
    api_name: str
    args: tuple
    hostile: bool  # expected to be refused with a message


def mixed_requests(rng: random.Random, count: int, models: Sequence[str], drs_models: Sequence[str],
                   methods: Sequence[str], test_images: int, hostile_share: float = 0.5) -> list[Request]:
    """``count`` random requests over ``models`` (``drs_models``: those with DRS), each CAM ``method``
    value and the first ``test_images`` test images; about ``hostile_share`` of them hostile."""
    out = []
    for _ in range(count):
        kind = rng.choice(("compare", "compare", "browse", "drs_cam", "reconstructions"))
        hostile = rng.random() < hostile_share
        a, b = rng.choice(models), rng.choice(models)
        index = rng.randrange(test_images)
        if kind == "compare":
            threshold, method = round(rng.uniform(0.05, 0.95), 2), rng.choice(methods)
            if hostile:
                a, index, threshold = rng.choice([(a, test_images + rng.randrange(1, 10**6), threshold),
                                                  (a, index, rng.choice([-0.5, 1.5, float("nan")])),
                                                  (rng.choice(HOSTILE_NAMES), index, threshold)])
            out.append(Request("/compare", (a, b, None, index, PREDICTED, threshold, method), hostile))
        elif kind == "browse":
            count_, threshold = rng.choice([4, 8]), round(rng.uniform(0.1, 0.9), 2)
            if hostile:
                count_, threshold = rng.choice([(10**6, threshold), (count_, 7.0), (-3, threshold)])
            out.append(Request("/browse", (a, count_, rng.choice(("worst IoU first", "best IoU first", "dataset order")),
                                           threshold), hostile))
        elif kind == "drs_cam":
            model, delta = rng.choice(drs_models or models), round(rng.uniform(0.05, 1.0), 2)
            if hostile:
                delta = rng.choice([-1.0, 2.5, float("inf")])
            out.append(Request("/drs_cam", (model, a, None, index, delta), hostile))
        else:
            chosen = rng.sample(list(models), k=min(2, len(models)))
            if hostile:
                index = -(10**6) - rng.randrange(100)
            out.append(Request("/reconstructions", (chosen, a, None, index), hostile))
    return out


@dataclass
class LoadReport:
    rss_mb: list[float] = field(default_factory=list)  # before the first round, then after each round
    requests: int = 0
    refused: int = 0  # hostile requests refused with a message (as they must be)
    unexpected: list[str] = field(default_factory=list)  # sound requests that failed, hostile ones that did not
    leaked: list[str] = field(default_factory=list)  # messages naming a server folder
    seconds: list[float] = field(default_factory=list)  # wall time of each round

    def as_dict(self) -> dict[str, Any]:
        return {"rss_mb": [round(r, 1) for r in self.rss_mb], "requests": self.requests, "refused": self.refused,
                "unexpected": self.unexpected[:20], "leaked": self.leaked[:20],
                "round_s": [round(s, 2) for s in self.seconds]}


def run_load(url: str, models: Sequence[str], drs_models: Sequence[str], methods: Sequence[str], *,
             rss: Callable[[], float], secret_paths: Sequence[str] = (), clients: int = 6, requests: int = 12,
             rounds: int = 5, test_images: int = 32, seed: int = 0, same_each_round: bool = False,
             timeout: float = 600.0) -> LoadReport:
    """``rounds`` rounds of ``clients`` concurrent clients x ``requests`` mixed requests each;
    ``rss()`` is read before the first round and after each. ``secret_paths``: folders no message may
    name. ``same_each_round``: every round repeats the first one's requests, so a round after the
    first shows what repeating a warm mix costs (growth there is a leak, not a cache filling)."""
    from gradio_client import Client

    report = LoadReport(rss_mb=[rss()])
    lock = threading.Lock()
    pool = [Client(url, verbose=False, analytics_enabled=False) for _ in range(clients)]

    def client_round(client: Any, todo: list[Request]) -> None:
        for request in todo:
            try:
                client.predict(*request.args, api_name=request.api_name)
                ok, message = True, ""
            except Exception as exc:  # noqa: BLE001 - every failure is classified below
                ok, message = False, str(exc)
            with lock:
                report.requests += 1
                if any(p and p in message for p in secret_paths) or 'File "' in message or "Traceback" in message:
                    report.leaked.append(f"{request.api_name} {request.args}: {message[:300]}")
                if request.hostile and not ok and REFUSAL.search(message):
                    report.refused += 1
                elif request.hostile or not ok:
                    report.unexpected.append(f"{request.api_name} {request.args} -> "
                                             f"{'accepted' if ok else message[:300]}")

    for r in range(rounds):
        started = time.perf_counter()
        threads = []
        for c, client in enumerate(pool):
            round_seed = 0 if same_each_round else r
            todo = mixed_requests(random.Random(seed * 1_000_003 + round_seed * 1009 + c), requests, models,
                                  drs_models, methods, test_images)
            threads.append(threading.Thread(target=client_round, args=(client, todo), daemon=True))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout)
        report.seconds.append(time.perf_counter() - started)
        report.rss_mb.append(rss())
    for client in pool:
        try:
            client.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass
    return report


def serve(checkpoints: Path, runs: Path, port: int, extra: Sequence[str] = (), env: dict | None = None,
          timeout: float = 180.0) -> subprocess.Popen:
    """``app.py --no-bootstrap`` on ``checkpoints`` in a subprocess, once it answers on ``port``;
    its log is the file ``process.log_path``."""
    log = tempfile.NamedTemporaryFile("w+", prefix="crm-lab-load-", suffix=".log", delete=False)
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "app.py"), "--no-bootstrap", "--checkpoints", str(checkpoints),
         "--runs", str(runs), "--port", str(port), *extra],
        cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    process.log_path = log.name  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}; log: {log.name}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).close()
            return process
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"app.py did not answer within {timeout:.0f} s; log: {log.name}")


def stop(process: subprocess.Popen, grace: float = 20.0) -> None:
    """Terminate a served app (SIGTERM stops it as Ctrl-C does), killed if it is not gone in ``grace`` s."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def memory_report_of(server: subprocess.Popen, timeout: float = 60.0) -> str:
    """The served app's memory by owner: SIGUSR1 makes it log one (``app.log_memory_on_signal``),
    which is read back from its log; "" if none came within ``timeout`` s."""
    log_path = Path(server.log_path)  # type: ignore[attr-defined]
    start = log_path.stat().st_size
    os.kill(server.pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with log_path.open() as f:
            f.seek(start)
            text = f.read()
        match = re.search(r"memory: RSS .*?(?=\n\S|\Z)", text, re.DOTALL)
        if match and "superpixel parameter sets" in match.group(0):
            return match.group(0).rstrip()
        time.sleep(0.5)
    return ""


#: The checkpoints of ``--make-lab``: name -> what it changes on the demo recipe.
LAB: dict[str, dict[str, Any]] = {
    "resnet": dict(model="resnet", crm=False), "resnet_crm": dict(model="resnet", crm=True),
    "resnet_drs": dict(model="resnet_drs", crm=False), "resnet_drs_crm": dict(model="resnet_drs", crm=True),
    "resnet_s1": dict(model="resnet", crm=False, seed=1), "resnet_crm_s1": dict(model="resnet", crm=True, seed=1),
    "resnet_drs_s1": dict(model="resnet_drs", crm=False, seed=1),
    "resnet_drs_crm_s1": dict(model="resnet_drs", crm=True, seed=1),
    "camouflage_drs_crm": dict(model="resnet_drs", crm=True, appearance="camouflage"),
}


def make_lab(directory: Path, runs: Path) -> list[Path]:
    """:data:`LAB` in ``directory``: the demo recipe (demo.bootstrap.DEMO_RECIPE) after two steps each."""
    from crm_core.train import TrainConfig
    from crm_core.train import main as train_main
    from demo.bootstrap import DEMO_RECIPE

    values = dict(DEMO_RECIPE, steps=2, epochs=1, train_size=16, batch_size=8, val_limit=8, device="cpu")
    return [train_main(TrainConfig(**dict(values, **spec, name=name, checkpoint_dir=str(directory), runs_dir=str(runs))))
            for name, spec in LAB.items()]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadable_checkpoints(checkpoints: Path) -> tuple[list[str], list[str]]:
    """Names of the loadable checkpoints in ``checkpoints`` and those with DRS (read, not built)."""
    from crm_core.checkpoints import inspect_checkpoint

    names, drs = [], []
    for path in sorted(checkpoints.glob("*.pt")):
        try:
            summary = inspect_checkpoint(path)
        except Exception:  # noqa: BLE001 - the load only uses checkpoints the server lists
            continue
        names.append(path.stem)
        if summary.model_config.drs:
            drs.append(path.stem)
    return names, drs


def methods_on_offer() -> list[str]:
    """The CAM-method values the Compare menu offers on this machine."""
    from demo.inference import cam_method_labels

    return list(cam_method_labels())


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoints", type=Path, required=True, help="checkpoint folder the server lists")
    p.add_argument("--runs", type=Path, default=None, help="run folder (default: a fresh temporary one)")
    p.add_argument("--make-lab", action="store_true",
                   help="first train the nine two-step checkpoints of LAB into --checkpoints when it has none")
    p.add_argument("--clients", type=int, default=6, help="concurrent clients")
    p.add_argument("--requests", type=int, default=12, help="requests per client per round")
    p.add_argument("--rounds", type=int, default=5, help="rounds (RSS is read after each)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random requests")
    p.add_argument("--same-each-round", action="store_true", help="every round repeats the first round's requests")
    p.add_argument("--malloc", choices=("bounded", "default"), default="bounded", help="the server's app.py --malloc")
    p.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = p.parse_args(argv)
    runs = args.runs or Path(tempfile.mkdtemp(prefix="crm-lab-load-runs-"))
    if args.make_lab and not list(args.checkpoints.glob("*.pt")):
        args.checkpoints.mkdir(parents=True, exist_ok=True)
        make_lab(args.checkpoints, runs)
    names, drs = loadable_checkpoints(args.checkpoints)
    if len(names) < 2:
        print(f"error: {args.checkpoints} holds {len(names)} loadable checkpoints; the load needs at least 2",
              file=sys.stderr)
        return 2
    port = _free_port()
    server = serve(args.checkpoints.resolve(), runs, port, extra=["--malloc", args.malloc],
                   env=dict(os.environ, GRADIO_ANALYTICS_ENABLED="False"))
    try:
        report = run_load(f"http://127.0.0.1:{port}/", names, drs, methods_on_offer(), rss=lambda: rss_mb(server.pid),
                          secret_paths=[str(args.checkpoints.resolve()), str(runs)], clients=args.clients,
                          requests=args.requests, rounds=args.rounds, seed=args.seed,
                          same_each_round=args.same_each_round)
        owners = memory_report_of(server)
    finally:
        stop(server)
    result = dict(report.as_dict(), malloc=args.malloc, memory_by_owner=owners)
    print(owners or "(the server logged no memory report)")
    print("round     " + " ".join(f"{r:>7d}" for r in range(len(report.rss_mb))))
    print("RSS (MiB) " + " ".join(f"{r:7.0f}" for r in report.rss_mb))
    print(f"{report.requests} requests, {report.refused} hostile ones refused, {len(report.unexpected)} unexpected, "
          f"{len(report.leaked)} naming a server folder")
    for line in report.unexpected[:10] + report.leaked[:10]:
        print("  " + line)
    if args.json:
        from crm_core.atomic import atomic_write_json

        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
