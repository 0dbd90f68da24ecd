"""First launch: train the demo set so a fresh, offline clone opens on real models.

Three models, :data:`DEMO_MODELS` on :data:`DEMO_RECIPE` (resnet18,
112 px, output stride 16 = 7x7 CAMs, informative synthetic data): ``resnet``, ``resnet_drs`` and
``resnet_drs_crm``, so that the dashboard shows DRS off/on and CRM off/on. Each leaves
``checkpoints/<name>.pt`` and ``runs/<name>/`` (config, metrics.csv with the loss curves, eval.json
at the threshold chosen on val). The bootstrap log ends with the evidence the set is meant to
show (:func:`demo_evidence`): the plain CAM covers the head but little of the body, the CRM
model covers more of the body, and its reconstruction depends on its CAM.

With two or more cores the models train side by side, one process and one torch thread each:
at these sizes a second intra-op thread buys ~1.6x, a second process ~2x. With more models than
cores the plain models run at a slightly lower priority than the CRM one, whose steps cost more,
so that all three finish together. Progress shows as one tqdm bar per model in the terminal.
This module imports neither torch nor gradio: ``app.py`` starts the workers at once.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue as queue_module
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from crm_core.processes import die_with_parent
from crm_core.recipes import CRM, RESULTS

log = logging.getLogger(__name__)

#: Optimisation steps of each demo model (see DEMO_RECIPE).
DEMO_STEPS = 120

#: The demo set's training recipe (also the fine-tune defaults): the results recipe
#: (crm_core.recipes.RESULTS: resnet18 from scratch, 112 px, output stride 16 = 7x7 CAMs, cosine
#: decay) on the *informative* synthetic data -- the appearance under which CRM can act
#: (docs/results.md) -- shortened to DEMO_STEPS steps over 640 images. 120 is the fewest tried at
#: which the CRM model's evidence holds under the one definition of CAM dependence (crm_core.metrics:
#: (L1 shuffled - L1 real) / L1 shuffled): 18.6% at 100 steps, 26.7% at 120 (body 0.69, accuracy
#: 1.0; one run, 64 test images). The first launch still fits in 5 minutes on two CPU cores by
#: training DEMO_BEFORE_SERVING first (below).
DEMO_RECIPE: dict[str, Any] = dict(
    RESULTS.fields(), appearance="informative", train_size=640, epochs=1000, steps=DEMO_STEPS, val_limit=32,
    workers=0, log_every=1, ckpt_every=50, diag_every=20, seed=0, crm_gate=True,
    l1_weight=CRM.l1_weight,
)
#: The demo models, name -> what each changes on DEMO_RECIPE: the two contrasts the lab is about,
#: resnet against resnet_drs (DRS off/on) and resnet_drs against resnet_drs_crm (CRM off/on).
DEMO_MODELS: dict[str, dict[str, Any]] = {
    "resnet": dict(model="resnet", crm=False),
    "resnet_drs": dict(model="resnet_drs", crm=False),
    "resnet_drs_crm": dict(model="resnet_drs", **CRM.fields()),
}
#: Trained before the page is served: the pair the first view compares and the bootstrap's
#: evidence is about (plain against CRM). The rest of DEMO_MODELS trains after, in the background
#: (:func:`bootstrap_demo` with ``background=True``): all three do not fit in the 5-minute first
#: launch on two cores (docs/dashboard.md).
DEMO_BEFORE_SERVING = ("resnet", "resnet_drs_crm")


STAGING = ".training"  # the hidden subfolder of checkpoints/ where demo models train (no menu lists it)

#: The first launch's stage-2 networks, name -> the demo CAM model whose pseudo masks each trains
#: on: the plain CAM and the CRM one, so that the Stage 2 tab opens on the number WSSS papers report
#: for both. They train at the end of the background phase (:func:`bootstrap_stage2`).
DEMO_STAGE2: dict[str, str] = {"stage2_resnet": "resnet", "stage2_resnet_drs_crm": "resnet_drs_crm"}
#: Their recipe (demo.stage2_train.train_stage2_network): pseudo masks of the first ``images`` train
#: images cut at the CAM's val-chosen threshold (postprocess --at-val-threshold), then crm_core.segment's
#: default network (fcn_resnet18), ``steps`` steps of 16 images from scratch, scored on the launch's
#: --eval-images test images. Sized for time: the two train side by side, one thread each, and each
#: took 116 s of CPU (masks and threshold 15 s, 60 steps ~1.6 s each, scoring), so about two minutes
#: on an idle 2-core machine after resnet_drs (~4 minutes alone): the background phase ends about 6
#: minutes after the page is served. Measured on the demo set (64 test images): stage2_resnet 0.576
#: test mIoU on masks of mIoU 0.651, stage2_resnet_drs_crm 0.623 on masks of 0.707: the CRM model's
#: masks make the better network, as in the results' stage-2 rows (200 steps, the whole train split).
DEMO_STAGE2_RECIPE: dict[str, Any] = dict(images=320, steps=60)


def staged_demo_models(checkpoint_dir: str | Path) -> list[str]:
    """Demo models a stopped launch left half-trained in the staging folder (and not yet finished)."""
    folder = Path(checkpoint_dir)
    return [name for name in DEMO_MODELS
            if (folder / STAGING / f"{name}.pt").is_file() and not (folder / f"{name}.pt").is_file()]


def needs_bootstrap(checkpoint_dir: str | Path) -> bool:
    """True when the folder holds no checkpoint at all."""
    return not any(Path(checkpoint_dir).glob("*.pt"))


def _resume_or_discard(partial: Path, values: dict[str, Any]) -> bool:
    """A staged checkpoint left by a launch that was stopped: resume it when it is a readable
    checkpoint of this very recipe (say so in the log), else delete it. Returns whether to resume."""
    if not partial.is_file():
        return False
    from crm_core.checkpoints import CheckpointError, inspect_checkpoint

    try:
        summary = inspect_checkpoint(partial)
        recorded = summary.train_config
        mismatch = [k for k in ("model", "crm", "steps", "seed", "appearance", "arch", "l1_weight")
                    if recorded.get(k) != values.get(k)]
        if mismatch:
            raise CheckpointError(f"made with another recipe ({', '.join(mismatch)} differ)")
    except (CheckpointError, OSError, ValueError, KeyError) as exc:
        log.warning("bootstrap: discarding %s, left by a launch that was stopped: %s", partial, exc)
        partial.unlink(missing_ok=True)
        return False
    log.info("bootstrap: resuming %s from step %d of %d (a launch was stopped before it finished)",
             values["name"], summary.step, values["steps"])
    return True


def demo_config(name: str, checkpoint_dir: str | Path, runs_dir: str | Path, device: str = "cpu",
                **overrides: Any) -> dict[str, Any]:
    """TrainConfig values of one demo model (``name`` from DEMO_MODELS)."""
    values = dict(DEMO_RECIPE, name=name, **DEMO_MODELS[name], checkpoint_dir=str(checkpoint_dir),
                  runs_dir=str(runs_dir), device=device)
    values.update(overrides)
    return values


# What the demo set must show (issue "dashboard evidence"), measured at the val-chosen threshold.
EVIDENCE_HEAD_MIN = 0.6  # the plain CAM finds the discriminative head ...
EVIDENCE_BODY_MAX = 0.35  # ... but little of the body
EVIDENCE_BODY_GAIN = 0.2  # the CRM model covers at least this much more of the body than the plain one
EVIDENCE_ACCURACY_MIN = 0.95
EVIDENCE_CAM_DEPENDENCE_MIN = 0.2  # eval.json's cam_dependence: shuffled CAMs reconstruct >= 20% worse


def _coverage(results: dict[str, Any], part: str) -> float:
    return float(results.get("coverage_val_threshold", {}).get(part, float("nan")))


def demo_evidence(evals: dict[str, dict[str, Any]]) -> list[tuple[str, bool | None]]:
    """The demo set's claims, each (line, holds), from the models' eval.json dicts.

    ``holds`` is None for lines that report without claiming (DRS alone is not claimed to expand
    the CAM: docs/results.md). Models missing from ``evals`` are skipped.
    """
    lines: list[tuple[str, bool | None]] = []
    plain = evals.get("resnet")
    if plain is not None:
        head, body = _coverage(plain, "head"), _coverage(plain, "body")
        lines.append((f"resnet covers the head {head:.2f} (>= {EVIDENCE_HEAD_MIN} wanted) and the body {body:.2f} "
                      f"(<= {EVIDENCE_BODY_MAX} wanted)", head >= EVIDENCE_HEAD_MIN and body <= EVIDENCE_BODY_MAX))
        for name, claimed in (("resnet_drs", False), ("resnet_drs_crm", True)):
            if name in evals:
                gain = _coverage(evals[name], "body") - body
                accuracy = float(evals[name]["accuracy"])
                wanted = f" (>= +{EVIDENCE_BODY_GAIN} wanted, accuracy >= {EVIDENCE_ACCURACY_MIN})" if claimed else ""
                lines.append((f"{name} covers {gain:+.2f} more of the body than resnet{wanted}, accuracy {accuracy:.3f}",
                              gain >= EVIDENCE_BODY_GAIN and accuracy >= EVIDENCE_ACCURACY_MIN if claimed else None))
    crm = evals.get("resnet_drs_crm")
    if crm is not None and crm.get("recon_l1") is not None:
        # crm_core.metrics.CamDependence's definition, the one eval.json, the Reconstructions tab
        # and the README use: (L1 shuffled - L1 real) / L1 shuffled.
        real, shuffled = float(crm["recon_l1"]), float(crm["recon_l1_shuffled"])
        dependence = float(crm.get("cam_dependence") if crm.get("cam_dependence") is not None else float("nan"))
        lines.append((f"resnet_drs_crm's reconstruction depends on its CAM: L1 {real:.4f} with its own CAMs, "
                      f"{shuffled:.4f} with CAMs shuffled across the batch (CAM dependence {dependence:.1%}, "
                      f">= {EVIDENCE_CAM_DEPENDENCE_MIN:.0%} wanted)", dependence >= EVIDENCE_CAM_DEPENDENCE_MIN))
    return lines


def log_evidence(evals: dict[str, dict[str, Any]]) -> list[tuple[str, bool | None]]:
    """Write :func:`demo_evidence` to the log (warnings for claims that do not hold)."""
    lines = demo_evidence(evals)
    for line, holds in lines:
        verdict = {True: "ok", False: "NOT MET", None: "for reference"}[holds]
        log.log(logging.WARNING if holds is False else logging.INFO, "bootstrap evidence: %s: %s", verdict, line)
    return lines


def train_one(values: dict[str, Any], eval_images: int = 64, on_progress: Any = None,
              before_eval: Callable[[], None] | None = None) -> tuple[Path, dict[str, Any]]:
    """Train one demo model and store its eval.json; returns (checkpoint, eval results)."""
    from crm_core.evaluate import evaluate_checkpoint
    from crm_core.train import TrainConfig
    from crm_core.train import main as train_main

    path = train_main(TrainConfig(**values), on_progress=on_progress)
    if before_eval is not None:
        before_eval()
    return path, evaluate_checkpoint(path, values.get("device", "cpu"), limit=eval_images, val_limit=eval_images,
                                     runs_dir=values["runs_dir"])


def stage2_values(name: str, checkpoint_dir: str | Path, runs_dir: str | Path, device: str = "cpu",
                  **overrides: Any) -> dict[str, Any]:
    """The job of one first-launch stage-2 network (``name`` from DEMO_STAGE2), for :func:`_worker`."""
    return dict(DEMO_STAGE2_RECIPE, kind="stage2", name=name, cam_model=DEMO_STAGE2[name],
                checkpoint_dir=str(checkpoint_dir), runs_dir=str(runs_dir), device=device, **overrides)


def train_stage2_one(values: dict[str, Any], eval_images: int = 64, on_progress: Any = None) -> tuple[Path, dict[str, Any]]:
    """Pseudo masks of ``values["cam_model"]`` at its val-chosen threshold (the one its eval.json
    recorded for this very file, else chosen now on ``eval_images`` val images), then the network;
    returns (checkpoint, its eval.json)."""
    from crm_core.api import CamModel, dataset_for
    from crm_core.evaluate import select_threshold
    from crm_core.runs import RunDir
    from demo.stage2_job import train_stage2_network

    checkpoint_dir, runs_dir = Path(values["checkpoint_dir"]), Path(values["runs_dir"])
    cam_path = checkpoint_dir / f"{values['cam_model']}.pt"
    model = CamModel.load(cam_path, values.get("device", "cpu"))
    threshold = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        stored = RunDir(runs_dir / values["cam_model"]).read_eval()
        if stored.get("threshold_split") == "val" and stored.get("checkpoint_mtime_ns") == cam_path.stat().st_mtime_ns:
            threshold = float(stored["cam_miou_val_threshold"]["threshold"])
    if threshold is None:
        threshold = select_threshold(model, dataset_for(model, "val"), limit=eval_images)
    extra = {k: v for k, v in values.items() if k not in ("kind", "name", "cam_model", "checkpoint_dir", "runs_dir",
                                                          "device", "images", "steps")}
    path = train_stage2_network(model, values["name"], checkpoint_dir, runs_dir, checkpoint_dir / STAGING,
                                images=values["images"],
                                steps=values["steps"], val_threshold=threshold, device=values.get("device", "cpu"),
                                on_progress=on_progress, test_limit=eval_images, **extra)
    if path is None:
        raise RuntimeError(f"{values['name']} was stopped before it trained")
    return path, RunDir(runs_dir / values["name"]).read_eval()


def _worker(values: dict[str, Any], eval_images: int, events: Any, running: Any, cores: int, niceness: int) -> None:
    """Child process: progress rows sent to the parent (which draws the bars).

    Training uses one torch thread, always: the number of threads changes the order of
    floating-point sums, and the demo set must come out the same on every first launch. The
    evaluation after it uses ``cores // models still running`` (the last model left gets them all).
    """
    die_with_parent()  # the kernel stops it when the server dies, however it dies
    import torch

    os.environ["CRM_LAB_NO_PROGRESS"] = "1"
    if niceness:
        os.nice(niceness)
    torch.set_num_threads(1)
    name = values["name"]

    def before_eval() -> None:
        torch.set_num_threads(max(1, cores // max(1, running.value)))

    def on_progress(row: dict[str, Any]) -> None:
        if "step" in row:  # not the stage-2 jobs' rows of their pseudo masks
            events.put((name, "step", row))

    try:
        if values.get("kind") == "stage2":
            path, results = train_stage2_one(values, eval_images, on_progress=on_progress)
        else:
            path, results = train_one(values, eval_images, on_progress=on_progress, before_eval=before_eval)
        events.put((name, "done", {"path": str(path), "eval": results}))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        events.put((name, "error", f"{type(exc).__name__}: {exc}"))


def _ready_line(name: str, results: dict[str, Any]) -> str:
    if results.get("kind") == "segmentation":
        masks = results.get("masks") or {}
        source = Path(str((masks.get("manifest") or {}).get("checkpoint", "?"))).stem
        return (f"bootstrap: {name} ready: stage-2 test mIoU {results['miou']:.3f} ({results['num_images']} test "
                f"images), trained {results['step']} steps on {results['train_images']} pseudo masks of {source} "
                f"(their own mIoU {masks.get('miou', float('nan')):.3f})")
    at = results.get("cam_miou_val_threshold") or results["cam_miou_best"]
    return (f"bootstrap: {name} ready: accuracy {results['accuracy']:.3f}, CAM mIoU {at['miou']:.3f} at threshold "
            f"{at['threshold']:.2f} ({results['num_images']} test images)")


def _train_parallel(configs: list[dict[str, Any]], eval_images: int, niceness: int | None = None,
                    show_bars: bool = True, cores: int | None = None) -> dict[str, dict[str, Any]]:
    """Each config in its own worker process; ``niceness`` (default: balanced, below) for all of
    them; ``show_bars``: tqdm bars in the terminal, else a log line every quarter of the steps;
    ``cores`` the workers may share (default: all)."""
    from tqdm import tqdm

    context = mp.get_context("spawn")  # a clean interpreter per model (no forked torch state)
    events = context.Queue()
    cores = cores or os.cpu_count() or 1
    running = context.Value("i", len(configs))  # models still training or evaluating
    # A CRM step costs ~1.25x a plain one (the decoder and its losses), so at equal steps the CRM
    # model is the longest job. With more models than cores the others yield a little to it
    # (nice 1: ~0.8 of its CPU share). Measured on 2 cores: without it the plain models finished
    # training 50 s before the CRM one, which then trained alone on one core; with nice 1 the
    # three finish within 17 s of each other (nice 2 overshoots: the CRM one first, by 30 s).
    crowded = len(configs) > cores and any(c.get("crm") for c in configs)
    nice = {c["name"]: (1 if crowded and not c.get("crm") else 0) if niceness is None else niceness for c in configs}
    workers = {c["name"]: context.Process(target=_worker, name=f"bootstrap-{c['name']}", daemon=True,
                                          args=(c, eval_images, events, running, cores, nice[c["name"]]))
               for c in configs}
    bars = {c["name"]: tqdm(total=c["steps"], desc=c["name"], unit="step", position=i, dynamic_ncols=True,
                            disable=not show_bars) for i, c in enumerate(configs)}
    every = {c["name"]: max(1, c["steps"] // 4) for c in configs}
    done: dict[str, dict[str, Any]] = {}
    try:
        for worker in workers.values():
            worker.start()
        while len(done) < len(workers):
            try:
                name, kind, payload = events.get(timeout=1.0)
            except queue_module.Empty:
                dead = [n for n, w in workers.items() if n not in done and not w.is_alive() and w.exitcode is not None]
                if dead and events.empty():
                    raise RuntimeError(f"bootstrap worker(s) {dead} exited without a result")
                continue
            if kind == "step":
                bar = bars[name]
                if not show_bars and payload["step"] % every[name] == 0:
                    log.info("bootstrap: %s at step %d of %d", name, payload["step"], bar.total)
                bar.update(payload["step"] - bar.n)
                bar.set_postfix({k.replace("loss_", ""): f"{v:.3f}" for k, v in payload.items()
                                 if k.startswith("loss_") or k == "accuracy"}, refresh=False)
            elif kind == "done":
                done[name] = payload
                with running.get_lock():
                    running.value -= 1
            else:
                raise RuntimeError(f"bootstrap of {name} failed: {payload}")
    finally:
        for bar in bars.values():
            bar.close()
        for worker in workers.values():
            if worker.is_alive() and len(done) < len(workers):
                worker.terminate()
            worker.join(timeout=30)
    for name, result in done.items():
        log.info("%s", _ready_line(name, result["eval"]))
    return {name: result["eval"] for name, result in done.items()}


def bootstrap_demo(checkpoint_dir: str | Path, runs_dir: str | Path, device: str = "cpu",
                   processes: int | None = None, eval_images: int = 64, names: Sequence[str] | None = None,
                   background: bool = False, **overrides: Any) -> list[Path]:
    """Train the demo set (skipping any model that already exists); returns the checkpoint paths.

    ``processes``: models trained at once (default: all of them when there are >= 2 CPU cores
    and the device is the CPU; 1 trains them one after the other in this process).
    ``names``: a subset of DEMO_MODELS (default: all).
    ``background``: beside a running dashboard: worker processes at the lowest priority (nice 10,
    one thread) and log lines instead of bars. Either way each checkpoint is written to a hidden
    folder (:data:`STAGING`, which menus do not list) and moved into ``checkpoint_dir`` once
    trained and evaluated, so no half-trained model shows up; one left there by a stopped launch
    is resumed (or discarded when unreadable or of another recipe), and the log says which.
    """
    names = list(DEMO_MODELS) if names is None else list(names)
    unknown = sorted(set(names) - set(DEMO_MODELS))
    if unknown:
        raise ValueError(f"not demo models: {unknown}; choose from {sorted(DEMO_MODELS)}")
    Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    existing = {name: Path(checkpoint_dir) / f"{name}.pt" for name in names}
    # Every demo model trains in a hidden folder that no menu lists and moves in once trained and
    # evaluated: a launch stopped half-way leaves no half-trained model in checkpoint_dir (the next
    # launch would otherwise see a non-empty folder, skip the bootstrap and serve it as the demo).
    staging = Path(checkpoint_dir) / STAGING
    configs = []
    for name in names:
        if existing[name].is_file():
            continue
        values = demo_config(name, staging, runs_dir, device, **overrides)
        values["resume"] = _resume_or_discard(staging / f"{name}.pt", values)
        configs.append(values)
    if processes is None:
        processes = len(configs) if device == "cpu" and (os.cpu_count() or 1) >= 2 else 1
    for values in configs:
        log.info("bootstrap: training %s (%s, %s data, %spx, output stride %s, batch %s, %s steps, %s)", values["name"],
                 values["arch"], values["appearance"], values["image_size"], values["output_stride"],
                 values["batch_size"], values["steps"], "CRM" if values["crm"] else "no CRM")
    if background and configs:
        evals = _train_parallel(configs, eval_images, niceness=10, show_bars=False, cores=1)
    elif processes >= 2 and len(configs) >= 2:
        evals = _train_parallel(configs, eval_images)
    else:
        evals = {}
        for values in configs:
            _, evals[values["name"]] = train_one(values, eval_images)
            log.info("%s", _ready_line(values["name"], evals[values["name"]]))
    for name in evals:
        os.replace(staging / f"{name}.pt", existing[name])  # keeps its mtime: eval.json still matches it
    with contextlib.suppress(OSError):
        staging.rmdir()  # when empty
    log.info("bootstrap finished in %.0f s (the evidence above repeats on this machine at one thread per model; "
             "another CPU gives other numbers)", time.perf_counter() - started)
    if evals:
        log_evidence(evals)
    return list(existing.values())


def stage2_leftovers(checkpoint_dir: str | Path, runs_dir: str | Path) -> list[str]:
    """First-launch stage-2 networks a stopped launch left unfinished (a staged checkpoint or a run
    folder, and no checkpoint): the next launch trains them again."""
    folder = Path(checkpoint_dir)
    return [name for name in DEMO_STAGE2 if not (folder / f"{name}.pt").is_file()
            and ((folder / STAGING / f"{name}.pt").is_file() or (Path(runs_dir) / name).is_dir())]


def bootstrap_stage2(checkpoint_dir: str | Path, runs_dir: str | Path, device: str = "cpu", eval_images: int = 64,
                     names: Sequence[str] | None = None, background: bool = True, **overrides: Any) -> list[Path]:
    """Train the first launch's stage-2 networks (:data:`DEMO_STAGE2`, :data:`DEMO_STAGE2_RECIPE`)
    whose CAM model is in ``checkpoint_dir`` and which are not; returns the checkpoints trained.

    Side by side in worker processes, as the demo models (``background``: nice 10, log lines
    instead of bars), each in the staging folder until trained and scored; what a stopped launch
    left of one (its staged checkpoint, its run folder) is discarded first, and the log says so.
    ``overrides``: recipe values (images, steps) or SegConfig fields, for tests."""
    folder = Path(checkpoint_dir)
    names = list(DEMO_STAGE2) if names is None else list(names)
    unknown = sorted(set(names) - set(DEMO_STAGE2))
    if unknown:
        raise ValueError(f"not demo stage-2 networks: {unknown}; choose from {sorted(DEMO_STAGE2)}")
    started = time.perf_counter()
    configs = []
    for name in names:
        cam = DEMO_STAGE2[name]
        if (folder / f"{name}.pt").is_file():
            continue
        if not (folder / f"{cam}.pt").is_file():
            log.warning("bootstrap: %s needs %s, which is not in %s: not trained", name, cam, folder)
            continue
        for left in (folder / STAGING / f"{name}.pt", Path(runs_dir) / name):
            if left.exists():
                log.info("bootstrap: discarding %s, left by a launch that was stopped", left)
                shutil.rmtree(left) if left.is_dir() else left.unlink()
        configs.append(stage2_values(name, folder, runs_dir, device, **overrides))
    if not configs:
        return []
    for values in configs:
        log.info("bootstrap: training %s (stage 2: pseudo masks of %s on %d train images at its val-chosen threshold, "
                 "%d steps)", values["name"], values["cam_model"], values["images"], values["steps"])
    evals = _train_parallel(configs, eval_images, niceness=10 if background else None, show_bars=not background,
                            cores=1 if background else None)
    with contextlib.suppress(OSError):
        (folder / STAGING).rmdir()  # when empty
    log.info("bootstrap stage 2 finished in %.0f s", time.perf_counter() - started)
    plain, crm = (evals.get(name) for name in DEMO_STAGE2)
    if plain is not None and crm is not None:  # reported, not claimed: a few steps on a few hundred masks
        log.info("bootstrap evidence: for reference: stage 2 on the CRM model's pseudo masks (mIoU %.3f) reaches "
                 "test mIoU %.3f, on the plain model's (%.3f) %.3f (%+.3f)", crm["masks"]["miou"], crm["miou"],
                 plain["masks"]["miou"], plain["miou"], crm["miou"] - plain["miou"])
    return [folder / f"{name}.pt" for name in evals]
