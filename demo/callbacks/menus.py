"""The checkpoint and run menus every tab shares: their choices, defaults and the checkpoint list."""
from __future__ import annotations

from typing import Any, Sequence

import gradio as gr

from demo.callbacks.common import USER_ERRORS, user_errors
from demo.protocol import DashboardEngine

NO_BASE = "(none: from scratch)"
#: Model B of the first view, in order of preference: the demo set's CRM model shows the
#: contrast the lab is about (the plain CAM lights the head, CRM's the whole animal).
PREFERRED_B = ("resnet_drs_crm", "resnet_drs")


def checkpoints_markdown(engine: DashboardEngine) -> str:
    names = engine.checkpoints.names()
    refused = engine.checkpoints.refused()
    lines = [f"- {engine.checkpoints.describe(name)}" for name in names]
    if not names:
        lines.append("No checkpoints yet: train one in **Fine-tune** (or restart `python app.py` with an empty `checkpoints/` to bootstrap the demo set).")
    if refused:
        lines.append("\n**Not listed** (cannot be loaded safely):")
        lines += [f"- `{name}.pt`: {reason}" for name, reason in refused.items()]
    return "\n".join(lines)


def default_pair(names: Sequence[str]) -> tuple[str | None, str | None]:
    """(resnet, resnet_drs_crm or else resnet_drs) when present, else the first two checkpoints."""
    a = "resnet" if "resnet" in names else (names[0] if names else None)
    rest = [n for n in names if n != a]
    b = next((n for n in PREFERRED_B if n in rest), rest[0] if rest else a)
    return a, b


def default_drs(engine: DashboardEngine, names: Sequence[str]) -> str | None:
    if "resnet_drs" in names:
        return "resnet_drs"
    for name in names:
        try:
            if engine.checkpoints.has_drs(name):
                return name
        except USER_ERRORS:
            continue
    return names[0] if names else None


@user_errors
def refresh_checkpoints(engine: DashboardEngine, model_a: Any, model_b: Any, drs_model: Any, sp_model: Any,
                        browse_model: Any, rec_models: Any, base: Any, runs_selected: Any) -> tuple:
    """New choices for every checkpoint / run selector (after training, on tab change); values kept when valid."""
    names = engine.checkpoints.names()
    a0, b0 = default_pair(names)

    def keep(value: Any, fallback: Any) -> dict:
        return gr.update(choices=names, value=value if value in names else fallback)

    rec = [m for m in (rec_models or []) if m in names] or [m for m in dict.fromkeys([a0, b0]) if m]
    runs = engine.runs.names()
    selected = [r for r in (runs_selected or []) if r in runs] or runs
    return (
        keep(model_a, a0), keep(model_b, b0), keep(drs_model, default_drs(engine, names)), keep(sp_model, a0),
        keep(browse_model, a0 if browse_model not in names else browse_model),
        gr.update(choices=names, value=rec),
        gr.update(choices=[NO_BASE] + names, value=base if base in names else NO_BASE),
        gr.update(choices=runs, value=selected),
        checkpoints_markdown(engine),
    )


@user_errors
def checkpoint_choices(engine: DashboardEngine, value: Any) -> dict:
    """A checkpoint menu's choices now (a new checkpoint appears), its value kept when it still exists."""
    names = engine.checkpoints.names()
    return gr.update(choices=names, value=value if value in names else default_pair(names)[0])
