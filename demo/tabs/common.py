"""What the tabs share: the page they are built on, its header and the events that span all of them.

:class:`Page` carries the engine, the logins (``access``), the job book and the checkpoint names
every menu starts from. The checkpoint menus live in several tabs, and the events that refresh
them (the header's button, the page's load, a tab opening, a finished training) need every one of
them, so a tab asks for such an event (:meth:`Page.refresh_menus_after`, :meth:`Page.on_open`)
and :func:`wire_page` binds them all once the last tab exists.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import gradio as gr
from PIL import Image, UnidentifiedImageError

from demo import callbacks as cb
from demo.messages import safe_message
from demo.protocol import DashboardEngine
from demo.serving import Access, JobBook

log = logging.getLogger(__name__)

PRIVATE = dict(api_visibility="private")
# Checkpoint and run menus accept any value: the engine validates names with a clear message, and an
# API client can name a checkpoint trained after its page's menus were filled.
PICK = dict(allow_custom_value=True)
# Pictures are 256 px (render.DISPLAY) plus a colour bar; their boxes leave them at >= 224 px.
VIEW = dict(height=300, min_width=300)
# Galleries of results: 4 columns and "contain" (not cropped: the colour bar stays) show them at >= 224 px.
RESULTS = dict(columns=4, object_fit="contain", format="png", allow_preview=False)

#: Chains an event's follow-ups (``event.then(...)``) onto it.
FollowUp = Callable[[Any], Any]


def readable_upload_errors(image: gr.Image) -> gr.Image:
    """Make ``image``'s decoding failures reach the user as a message.

    gr.Image opens every upload with PIL before any event handler runs; a file that is not an
    image would otherwise end in a generic "error" and a server-side traceback. The instance's
    ``preprocess`` is wrapped rather than gr.Image subclassed: gradio writes a ``.pyi`` stub next
    to the module of every component subclass.
    """
    preprocess = image.preprocess

    def checked(payload: Any) -> Any:
        try:
            return preprocess(payload)
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
            log.info("upload refused: %s", exc)
            orig_name = getattr(payload, "orig_name", None)
            name = safe_message(orig_name or "the upload", keep_name=orig_name)[-80:]
            reason = "too large" if isinstance(exc, Image.DecompressionBombError) else "not an image file PIL can read"
            raise gr.Error(f"cannot use {name} as an image: {reason}; upload a PNG or JPEG") from exc

    image.preprocess = checked  # type: ignore[method-assign]
    return image


@dataclass
class Page:
    """The engine and the start-up values every tab is built from, and the page-wide events the
    tabs ask for (bound by :func:`wire_page`, in the order asked)."""

    engine: DashboardEngine
    access: Access
    # The training jobs of this app, with their owners. Without logins gradio's queue holds the
    # waiting jobs (concurrency_limit=1) and the book only ever holds the running one; with logins
    # every job is booked on arrival, so that each user's running plus queued jobs can be counted.
    jobs: JobBook
    names: list[str]  # the checkpoint menus' choices, read but not verified (no model is built)
    model_a: str | None  # Compare's pair at start-up; the single-model menus start from A
    model_b: str | None
    # (event, what follows the refresh) and (tab, what fills it), bound once every menu exists.
    menu_refreshes: list[tuple[Any, FollowUp | None]] = field(default_factory=list)
    openers: list[tuple[gr.Tab, FollowUp | None]] = field(default_factory=list)

    @classmethod
    def of(cls, engine: DashboardEngine, access: Access) -> Page:
        names = engine.checkpoints.names(verify=False)
        return cls(engine, access, JobBook(access.jobs_per_user if access.logins else None), names,
                   *cb.default_pair(names))

    def bind(self, fn: Any) -> Any:
        """fn(engine, *inputs) -> fn(*inputs); gradio inspects the partial's remaining signature."""
        bound = functools.partial(fn, self.engine)
        bound.__name__, bound.__doc__ = fn.__name__, fn.__doc__  # type: ignore[attr-defined]
        return bound

    def owner(self, request: gr.Request | None) -> str | None:
        """Who starts a training: the login (gradio hands each call its gr.Request); None without logins."""
        return getattr(request, "username", None) if self.access.logins else None

    def training_queue(self) -> dict[str, Any]:
        """One training at a time, fine-tunes and stage-2 networks alike. Without logins
        concurrency_limit=1 queues the others; with logins they wait in ``jobs`` (so that each
        user's jobs are counted), whose first job trains. The engine's lock refuses with a message
        anything that slips past, e.g. a second app on the same engine."""
        return dict(concurrency_limit=None if self.access.logins else 1, concurrency_id="training")

    def stop_training(self, name: Any, request: gr.Request = None) -> str:  # type: ignore[assignment]
        """The Stop buttons' event: stops the named job, when the user may (its owner or an admin)."""
        return cb.stop_training(self.engine, name, jobs=self.jobs, access=self.access,
                                user=getattr(request, "username", None))

    def refresh_menus_after(self, event: Any, then: FollowUp | None = None) -> None:
        """After ``event``, refresh every checkpoint menu (a checkpoint just trained appears), then ``then``."""
        self.menu_refreshes.append((event, then))

    def on_open(self, tab: gr.Tab, fill: FollowUp | None = None) -> None:
        """When ``tab`` opens, refresh every checkpoint menu (a new checkpoint appears without a
        restart), then ``fill`` its view."""
        self.openers.append((tab, fill))


@dataclass
class Header:
    """The header's checkpoint list and its refresh button (wire_page binds them)."""

    models: gr.Markdown
    refresh: gr.Button


def header(access: Access) -> Header:
    """The banner of an app served without login to the network, the title and the checkpoint list."""
    if access.banner:
        gr.Markdown(f"⚠️ **{access.banner}**", elem_id="insecure-banner")
    gr.Markdown("# CRM Lab\nWeakly supervised segmentation: Grad-CAM++ maps of ResNet classifiers with "
                "DRS (Discriminative Region Suppression) and CRM (a ReconstructNet decoding the CAMs back "
                "into the image).", elem_id="crm-title")
    with gr.Accordion("Checkpoints: what each model is", open=False):
        models_md = gr.Markdown("…")
        refresh_btn = gr.Button("↻ Refresh checkpoint and run lists", size="sm")
    return Header(models_md, refresh_btn)


def wire_page(app: gr.Blocks, page: Page, head: Header, pickers: list, startup: tuple[list, list],
              after_startup: Callable[[Any], Any] | None = None) -> None:
    """The events that span the tabs: the header's refresh, the page's load (menus verified, then
    the Compare view filled: ``startup`` is its inputs and outputs, ``after_startup`` chains what
    follows it), then what the tabs asked for.

    The public refresh is bound before any private one: gradio names a private event after its
    function, and a later public event of the same name would get a suffix.
    """
    menus = (page.bind(cb.refresh_checkpoints), pickers, pickers + [head.models])
    head.refresh.click(*menus, api_name="refresh_checkpoints")
    startup_in, startup_out = startup
    loaded = app.load(*menus, **PRIVATE).then(page.bind(cb.startup), startup_in, startup_out + [head.models],
                                              api_name="startup")
    if after_startup is not None:
        after_startup(loaded)
    for event, then in page.menu_refreshes:
        refreshed = event.then(*menus, **PRIVATE)
        if then is not None:
            then(refreshed)
    for tab, fill in page.openers:
        opened = tab.select(*menus, **PRIVATE)
        if fill is not None:
            fill(opened)
