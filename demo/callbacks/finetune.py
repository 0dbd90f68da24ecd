"""Fine-tune tab: validate a request, train in a worker thread with a live chart, stop it.

Its job machinery (:func:`booked`: the queue; :func:`in_worker`: the worker thread and its live
chart; :func:`stop_training`) serves the Stage 2 tab's trainings too (demo.callbacks.stage2).

With a :class:`demo.serving.JobBook` (the served app's), jobs wait their turn in it, each with its
owner (the login; None without one); with logins, each user may have ``Access.jobs_per_user`` jobs
running or queued, and only a job's owner or an admin may stop it.
"""
from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Generator, Iterator

import gradio as gr

from demo import plots
from demo.callbacks.common import _delta, _model_name, _number, user_errors
from demo.callbacks.menus import NO_BASE
from demo.protocol import NAME_RE, DashboardEngine, FineTuneRequest
from demo.serving import Access, Job, JobBook

MAX_STEPS = 2000


def suggest_name(engine: DashboardEngine, stem: str = "finetune") -> str:
    """The first free ``<stem>-<n>`` among checkpoint and run names (the name box's default)."""
    taken = set(engine.checkpoints.names(verify=False)) | set(engine.runs.names())
    i = 1
    while f"{stem}-{i}" in taken:
        i += 1
    return f"{stem}-{i}"


def fine_tune_request(engine: DashboardEngine, name: Any, base: Any, model: Any, dataset: Any, steps: Any,
                      batch_size: Any, cls_lr: Any, rec_lr: Any, l1_weight: Any, vgg_weight: Any, align_weight: Any,
                      delta: Any, learnable: Any, arch: Any = None, owner: str | None = None,
                      max_objects: Any = None) -> FineTuneRequest:
    """The tab's values, validated, as the request the engine trains from (``arch`` None: the default;
    ``owner``: the login that asks, recorded in the run and the checkpoint; ``max_objects``: animals
    per image at most, synthetic data, None: one)."""
    name = new_name(name)
    if base in (None, "", NO_BASE):
        base = None
    else:
        base = _model_name(engine, base, "base")
    return FineTuneRequest(
        name=name, base=base, model=str(model), dataset=str(dataset),
        steps=_number(steps, "steps", 1, MAX_STEPS, integer=True),
        batch_size=_number(batch_size, "batch size", 1, 256, integer=True),
        cls_lr=_number(cls_lr, "classifier learning rate", 0.0, 1.0, lo_open=True),
        rec_lr=_number(rec_lr, "ReconstructNet learning rate", 0.0, 1.0, lo_open=True),
        l1_weight=_number(l1_weight, "L1 weight", 0.0, 1000.0), vgg_weight=_number(vgg_weight, "perceptual weight", 0.0, 1000.0),
        align_weight=_number(align_weight, "alignment weight", 0.0, 1000.0),
        delta="learnable" if learnable else f"{_delta(delta):g}", owner=owner,
        **({} if arch in (None, "") else {"arch": choice(arch, engine.training.backbones(), "backbone")}),
        **({} if max_objects in (None, "") else {"max_objects": _number(max_objects, "objects per image", 1, 10,
                                                                         integer=True)}),
    )


def new_name(name: Any) -> str:
    """A new checkpoint's name as typed, checked to be a plain name (not yet that it is free)."""
    name = str(name or "").strip()
    if not NAME_RE.match(name) or ".." in name:
        raise gr.Error(f"checkpoint name {name[:60]!r}: use 1-64 letters, digits, '_', '-', '.' (no path)")
    return name


def choice(value: Any, allowed: list[str], what: str) -> str:
    if str(value) not in allowed:
        raise gr.Error(f"{what} {str(value)[:60]!r}: choose from {', '.join(allowed)}")
    return str(value)


@user_errors
def fine_tune(engine: DashboardEngine, name: Any, base: Any, model: Any, dataset: Any, steps: Any, batch_size: Any,
              cls_lr: Any, rec_lr: Any, l1_weight: Any, vgg_weight: Any, align_weight: Any, delta: Any,
              learnable: Any, arch: Any = None, progress: Callable | None = None, poll_s: float = 0.5,
              plot_every_s: float = 1.0, jobs: JobBook | None = None,
              owner: str | None = None, max_objects: Any = None) -> Iterator[tuple[str, Any]]:
    """Train in a worker thread; yield (status, live loss chart) while it runs.

    Closing the generator (Stop, or the browser leaving) asks the run to save and return. With
    ``jobs``, the job is booked there first (demo.serving.JobLimit past the owner's limit) and waits
    for its turn; without, a busy engine refuses it at once.
    """
    request = fine_tune_request(engine, name, base, model, dataset, steps, batch_size, cls_lr, rec_lr,
                                l1_weight, vgg_weight, align_weight, delta, learnable, arch, owner, max_objects)
    if jobs is None:
        refuse_if_busy(engine)
    engine.training.config(request)  # validate (name free, base compatible) before booking or starting a thread
    yield from booked(engine, jobs, request.name, owner, poll_s,
                      lambda job: _train(engine, request, progress, poll_s, plot_every_s, job))


def booked(engine: DashboardEngine, jobs: JobBook | None, name: str, owner: str | None, poll_s: float,
           start: Callable[[Job | None], Iterator[tuple[str, Any]]]) -> Iterator[tuple[str, Any]]:
    """``start(job)``'s updates once job ``name`` has its turn in ``jobs`` (None: at once), with a
    "Queued" line while it waits; the job leaves the book however it ends. Every training job of
    the app (fine-tunes, stage-2 trainings) goes through here, so they queue behind each other."""
    if jobs is None:
        yield from start(None)
        return
    job = jobs.admit(name, owner)
    try:
        while True:
            ahead = jobs.wait_turn(job, timeout=4 * poll_s)
            if job.stop.is_set():
                yield (f"**{name}** was cancelled before it started; nothing was trained.", plots.live_figure(name, []))
                return
            if ahead == 0:
                break
            yield f"Queued: **{name}** starts when the {ahead} job(s) before it end.", plots.live_figure(name, [])
        refuse_if_busy(engine)  # a job of another app on the same engine
        yield from start(job)
    finally:
        jobs.done(job)


def refuse_if_busy(engine: DashboardEngine) -> None:
    busy = engine.training.status()
    if busy:
        raise gr.Error(f"{busy}; one training job at a time — wait for it to finish, then start again")


def in_worker(name: str, steps: int, work: Callable[[Callable, Callable], Any], progress: Callable | None,
              poll_s: float, plot_every_s: float, job: Job | None = None) -> Generator[tuple[str, Any], None, tuple]:
    """Run ``work(on_progress, should_stop)`` in a worker thread; yield (status, live loss chart)
    while it runs and return (its result, the step rows). Rows without a step (a phase before
    training, e.g. making pseudo masks: ``phase_text``, ``done``, ``total``) update the status line.
    ``job.stop`` (Stop on a booked job) stops it as closing the generator does."""
    rows: list[dict[str, Any]] = []
    updates: queue.Queue = queue.Queue()
    stop = threading.Event()
    result: dict[str, Any] = {}

    def should_stop() -> bool:
        return stop.is_set() or (job is not None and job.stop.is_set())

    def run() -> None:
        try:
            result["value"] = work(updates.put, should_stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the generator, re-raised there
            result["error"] = exc

    worker = threading.Thread(target=run, name=f"training-{name}", daemon=True)
    worker.start()
    last_plot = time.monotonic()
    try:
        yield f"Starting **{name}** ({steps} steps)…", plots.live_figure(name, rows)
        while worker.is_alive() or not updates.empty():
            worker.join(timeout=poll_s)
            fresh = []
            while not updates.empty():
                fresh.append(updates.get_nowait())
            if not fresh:
                continue
            rows.extend(r for r in fresh if "step" in r)
            phases = [r for r in fresh if "step" not in r and r.get("total")]
            if phases and progress is not None:
                progress((int(phases[-1]["done"]), int(phases[-1]["total"])), desc=phases[-1].get("phase_text", name),
                         unit="images")
            last = fresh[-1]
            due = time.monotonic() - last_plot >= plot_every_s or not worker.is_alive()
            if "step" not in last:  # before the first step
                if due:
                    last_plot = time.monotonic()
                    yield f"**{name}**: {last.get('phase_text', 'preparing')}…", plots.live_figure(name, rows)
                continue
            row = rows[-1]
            total = int(row.get("max_steps") or steps)
            if progress is not None:
                progress((int(row["step"]), total), desc=f"training {name}", unit="steps")
            if due:
                last_plot = time.monotonic()
                yield (f"**{name}**: step {row['step']}/{total}, loss {row.get('loss_total', float('nan')):.4f}",
                       plots.live_figure(name, rows))
    finally:
        if worker.is_alive():  # generator closed early (Stop button, page closed): save and return
            stop.set()
            worker.join()
    if "error" in result:
        raise result["error"]
    return result.get("value"), rows


def _train(engine: DashboardEngine, request: FineTuneRequest, progress: Callable | None, poll_s: float,
           plot_every_s: float, job: Job | None = None) -> Iterator[tuple[str, Any]]:
    """The fine-tune itself: a worker thread trains, this generator reports."""
    def work(on_progress: Callable, should_stop: Callable) -> Path:
        return engine.training.train(request, on_progress=on_progress, should_stop=should_stop)

    path, rows = yield from in_worker(request.name, request.steps, work, progress, poll_s, plot_every_s, job)
    path = Path(path)
    done = rows[-1]["step"] if rows else 0
    total = int(rows[-1].get("max_steps", request.steps)) if rows else request.steps
    stopped = " (stopped early; resumable)" if done < total else ""
    yield (f"Done: **{request.name}** saved as `{path.parent.name}/{path.name}` after {done} steps{stopped}; "
           f"it is now in every model menu.\n\n{engine.checkpoints.describe(request.name)}",
           plots.live_figure(request.name, rows))


def select_new_run(engine: DashboardEngine, selected: Any, name: Any) -> dict:
    """After a fine-tune: its run joins the runs selected in the Runs tab."""
    selected = [str(r) for r in (selected or [])]
    if name in engine.runs.names() and name not in selected:
        selected.append(str(name))
    return gr.update(value=selected)


@user_errors
def base_defaults(engine: DashboardEngine, base: Any) -> tuple[dict, dict, dict]:
    """A base checkpoint chosen: its variant (init_from needs the same one), its delta and its backbone."""
    if base in (None, "", NO_BASE):
        return gr.update(), gr.update(), gr.update()
    base = _model_name(engine, base, "base")
    delta = engine.checkpoints.default_delta(base)
    return (gr.update(value=engine.checkpoints.variant(base)),
            gr.update(value=delta) if delta is not None else gr.update(),
            gr.update(value=engine.checkpoints.arch(base)))


@user_errors
def stop_training(engine: DashboardEngine, name: Any, jobs: JobBook | None = None, access: Access | None = None,
                  user: str | None = None) -> str:
    """Stop the fine-tune ``name``: a running one saves and returns, a queued one (in ``jobs``) never
    starts. With logins (``access.logins``), only the job's owner or an admin may stop it."""
    name = str(name or "").strip()
    job = jobs.find(name) if jobs is not None else None
    if access is not None and access.logins and not access.is_admin(user):
        if job is not None and job.owner != user:
            raise gr.Error(f"{name!r} is {job.owner}'s training job: only its owner or an admin can stop it")
        if job is None:  # nothing of this user's; a job this app did not book has no known owner
            return f"No training job of yours named {name!r} is running or queued."
    if job is not None:
        started = jobs.cancel(job)  # type: ignore[union-attr]
        engine.training.request_stop(name)
        if not started:
            return f"Cancelled **{name}**: it was waiting for its turn and will not start."
        return f"Stopping **{name}**: it saves its checkpoint at the end of the current step."
    if engine.training.request_stop(name):
        return f"Stopping **{name}**: it saves its checkpoint at the end of the current step."
    status = engine.training.status()
    return f"No running training job named {name!r}." + (f" ({status})" if status else "")

