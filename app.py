"""CRM Lab dashboard: ``python app.py`` then open http://127.0.0.1:7860.

On a fresh clone (no checkpoint in ``checkpoints/``) it first trains the demo pair on the synthetic
dataset (a few minutes on a laptop CPU, offline), serves, and trains the rest of the demo set and
its two stage-2 networks in the background; ``--no-bootstrap`` skips all that. Parse args, build, launch: nothing heavy
happens at import. A ``--host`` other machines can reach needs logins (``--auth-file``,
``CRM_LAB_AUTH``) or ``--insecure-no-auth``, checked before anything else (docs/serving.md).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Set before torch loads: idle OpenMP threads sleep instead of spinning. The dashboard shares its
# cores between requests and a fine-tune thread (and often with other programs); measured on a
# busy 2-core machine, a CRM training step took 2.6 s passive against 8.8 s with spinning threads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

log = logging.getLogger("crm_lab.app")
ROOT = Path(__file__).resolve().parent


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="CRM Lab dashboard (Gradio).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--auth-file", default=None, metavar="PATH",
                   help="require a login: user:password lines (user:password:admin for an admin; # comments), "
                        "a file only you may read (chmod 600). Or set CRM_LAB_AUTH=user:password[,user2:password2]")
    p.add_argument("--auth", default=None, metavar="USER:PASS",
                   help="require this one login (its password shows in ps: prefer --auth-file or CRM_LAB_AUTH)")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="serve a non-loopback --host without any login (refused otherwise; the page says so)")
    p.add_argument("--jobs-per-user", type=int, default=2,
                   help="with logins: the most fine-tune jobs (running plus queued) one user may have")
    p.add_argument("--checkpoints", default=str(ROOT / "checkpoints"), help="checkpoint folder")
    p.add_argument("--runs", default=str(ROOT / "runs"), help="run folder")
    p.add_argument("--results", default=str(ROOT / "docs" / "results.json"),
                   help="the Results tab's report (python -m crm_core.experiments.results)")
    p.add_argument("--no-bootstrap", action="store_true", help="do not train the demo set when no checkpoint exists")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--max-file-size", default="10mb", help="upload size limit")
    p.add_argument("--eval-images", type=int, default=64, help="test images scored after each training (eval.json)")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--malloc", choices=("bounded", "default"), default="bounded",
                   help="bounded: at most 2 malloc arenas and large blocks mapped on their own, so memory freed "
                        "after a request goes back to the system (demo.memory); default: glibc's own settings")
    return p


def parse_auth(value: str | None) -> tuple[str, str] | None:
    """``--auth user:password`` as (user, password); ValueError when it is not that."""
    from demo.serving import parse_auth_arg  # light: the standard library only

    return None if value is None else parse_auth_arg(value)


def serving_setup(args: argparse.Namespace, environ: dict[str, str] | None = None) -> tuple:
    """(demo.serving.Logins or None, demo.serving.Access) for ``args``: who may log in and what the
    UI is told about it; logs the warnings (--auth on the command line, --insecure-no-auth). Refuses (demo.serving.ServingRefused, a ValueError with a one-line message) a host
    other machines can reach without a login, unless --insecure-no-auth; a bad --auth-file,
    CRM_LAB_AUTH or --auth; logins given two ways. Passwords are never logged."""
    from demo.serving import Access, check_bind, resolve_logins

    if args.jobs_per_user < 1:
        raise ValueError("--jobs-per-user must be >= 1")
    logins, warnings = resolve_logins(args.auth_file, args.auth, environ)
    banner, more = check_bind(args.host, args.port, logins, args.insecure_no_auth)
    for warning in warnings + more:
        log.warning("%s", warning)
    if logins is not None:
        log.info("logins from %s: %d user(s), admins: %s", logins.source, len(logins.users),
                 ", ".join(sorted(logins.admins)) or "none")
    access = Access(logins=logins is not None, admins=logins.admins if logins else frozenset(),
                    jobs_per_user=args.jobs_per_user, banner=banner)
    return logins, access


def _import_dashboard() -> None:
    import demo.engine  # noqa: F401
    import demo.layout  # noqa: F401


def _train_rest(checkpoints: Path, runs: Path, device: str, eval_images: int, names: list[str],
                stage2: bool = False) -> None:
    """The demo models not needed for the first view, trained while the dashboard serves, then (``stage2``)
    the stage-2 networks of the demo set: each appears in its menus (on the next tab change or refresh)
    once trained and evaluated."""
    from demo.bootstrap import bootstrap_demo, bootstrap_stage2

    what = ", ".join(names + (["the stage-2 networks"] if stage2 else []))
    log.info("training %s in the background (lowest priority); each joins the menus when done", what)
    try:
        if names:
            bootstrap_demo(checkpoints, runs, device=device, eval_images=eval_images, names=names, background=True)
        if stage2:
            bootstrap_stage2(checkpoints, runs, device=device, eval_images=eval_images, background=True)
    except Exception:  # noqa: BLE001 - a thread's last word; the dashboard keeps serving the others
        log.exception("background training of %s failed", what)


def launch(args: argparse.Namespace, prevent_thread_lock: bool = False):
    """Bootstrap if needed, build the UI and launch it; returns the Blocks (``.local_url`` set).
    ``args.serving`` is :func:`serving_setup`'s answer when :func:`main` has it already."""
    logins, access = getattr(args, "serving", None) or serving_setup(args)  # refused before any work
    from demo.bootstrap import (DEMO_BEFORE_SERVING, DEMO_MODELS, bootstrap_demo, needs_bootstrap,  # light
                                stage2_leftovers, staged_demo_models)

    checkpoints, runs = Path(args.checkpoints).resolve(), Path(args.runs).resolve()
    checkpoints.mkdir(parents=True, exist_ok=True)
    runs.mkdir(parents=True, exist_ok=True)
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    empty = needs_bootstrap(checkpoints)
    first_launch = empty and not args.no_bootstrap
    if first_launch:
        log.info("no checkpoints in %s: training the demo set first (offline, a few minutes)", checkpoints)
        # The dashboard's own imports (torch, gradio: ~10 s) load while the models train.
        preload = threading.Thread(target=_import_dashboard, name="preload", daemon=True)
        preload.start()
        bootstrap_demo(checkpoints, runs, device=device, eval_images=args.eval_images, names=DEMO_BEFORE_SERVING)
        preload.join()
    elif empty:
        log.warning("no checkpoints in %s and --no-bootstrap given: the views stay empty until you fine-tune one",
                    checkpoints)
    from demo.engine import Engine
    from demo.layout import build_app

    engine = Engine(checkpoints, runs, device=device, eval_limit=args.eval_images, results_path=Path(args.results))
    app = build_app(engine, access)
    app.queue(default_concurrency_limit=2)
    log.info("serving on http://%s:%d%s", args.host, args.port, " (login required)" if logins else "")
    app.launch(
        server_name=args.host, server_port=args.port, share=False, auth=logins.gradio_auth() if logins else None,
        max_file_size=args.max_file_size, allowed_paths=[str(checkpoints), str(runs)], show_error=False,
        prevent_thread_lock=True, quiet=False, footer_links=["api"],
    )
    # The menus were filled from the files alone; building the models (torchvision, weights)
    # starts once the page is served, so the first view finds most of it done.
    threading.Thread(target=engine.warm_up, name="warm-up", daemon=True).start()
    log_memory_on_signal(engine)
    # The rest of the demo set trains behind the served page, then its stage-2 networks: on a first
    # launch, or when a launch was stopped while they trained (a staged CAM model is resumed, a
    # stage-2 network trained again).
    rest = ([name for name in DEMO_MODELS if name not in DEMO_BEFORE_SERVING] if first_launch
            else [] if args.no_bootstrap else staged_demo_models(checkpoints))
    stage2 = first_launch or (not args.no_bootstrap and bool(stage2_leftovers(checkpoints, runs)))
    if rest or stage2:
        threading.Thread(target=_train_rest, args=(checkpoints, runs, device, args.eval_images, rest, stage2),
                         name="bootstrap-rest", daemon=True).start()
    if not prevent_thread_lock:
        app.block_thread()
    return app


def log_memory_on_signal(engine: object) -> None:
    """``kill -USR1 <server pid>`` logs the server's memory by owner (demo.memory.memory_by_owner).
    Only the main thread may set a signal handler; elsewhere (a test serving the app) it is skipped."""
    import signal

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGUSR1"):
        return
    from demo.memory import format_owners

    def report(signum: int, frame: object) -> None:
        # Logged from a thread: the handler runs between bytecodes of the main thread, which may
        # hold a lock the report needs.
        threading.Thread(target=lambda: log.info("%s", format_owners(engine.memory_report())),
                         name="memory-report", daemon=True).start()

    signal.signal(signal.SIGUSR1, report)


def stop_on_sigterm() -> None:
    """SIGTERM (``kill``, systemd, ``docker stop``) stops the server the way Ctrl-C does: the
    bootstrap's finally terminates its training workers before serving, gradio closes on the
    interrupt once serving, and at exit multiprocessing terminates the background workers. The
    default action would kill this process alone and leave its workers training."""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.eval_images < 1:
            raise ValueError("--eval-images must be >= 1")
        # Before anything listens or trains: a host other machines reach needs a login (demo.serving).
        args.serving = serving_setup(args)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    stop_on_sigterm()
    if args.malloc == "bounded":
        from demo.memory import configure_allocator  # light: ctypes only

        configure_allocator()  # before the server's threads allocate
    try:
        launch(args)
    except KeyboardInterrupt:
        log.info("stopped before serving; the demo models trained so far are kept for the next launch")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
