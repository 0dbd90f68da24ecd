"""Discriminative Region Suppression (Kim, Han, Kim, AAAI 2021, arXiv 2103.07246).

DRS caps every channel of a post-ReLU feature map at a fraction ``delta`` of that
channel's spatial maximum: ``x = min(x, delta * max_hw(x))``. Suppressing the peak
forces the classifier to spread evidence over less discriminative object parts, which
widens the class activation map.

The cap is a plain ``nn.Module`` so a backbone takes it as a layer argument instead of
being forked. ``delta`` can be overridden at inference time (the dashboard's threshold
slider) through :func:`delta_override`, a context manager backed by a ``ContextVar`` so
concurrent requests in different threads never see each other's override.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Iterator

import torch
from torch import nn

#: DRS's suppression ratio when none is given: the DRS paper's default (Kim et al. 2021).
DRS_DEFAULT_DELTA = 0.55
_DELTA_OVERRIDE: ContextVar[float | None] = ContextVar("crm_drs_delta_override", default=None)


@contextlib.contextmanager
def delta_override(delta: float | None) -> Iterator[None]:
    """Run every DRS layer with a fixed ``delta`` inside the block (``None``: no override)."""
    if delta is not None and not (0.0 < float(delta) <= 1.0):
        raise ValueError(f"DRS delta must be in (0, 1], got {delta}")
    token = _DELTA_OVERRIDE.set(None if delta is None else float(delta))
    try:
        yield
    finally:
        _DELTA_OVERRIDE.reset(token)


class DRS(nn.Module):
    """Per-channel suppression ``min(x, delta * max_hw(x))``.

    Args:
        channels: number of channels of the input feature map.
        delta: fixed suppression ratio (default the paper's, DRS_DEFAULT_DELTA); ignored when ``learnable``.
        learnable: predict delta per sample and channel as ``sigmoid(FC(GAP(x)))``
            (the paper's learnable variant).
    """

    def __init__(self, channels: int, delta: float = DRS_DEFAULT_DELTA, learnable: bool = False) -> None:
        super().__init__()
        if not learnable and not (0.0 < delta <= 1.0):
            raise ValueError(f"DRS delta must be in (0, 1], got {delta}")
        self.channels = channels
        self.delta = float(delta)
        self.learnable = learnable
        self.delta_fc = nn.Linear(channels, channels) if learnable else None
        if self.delta_fc is not None:
            # Start near the paper's fixed 0.55 so early training behaves like fixed DRS.
            nn.init.zeros_(self.delta_fc.weight)
            nn.init.constant_(self.delta_fc.bias, 0.2)

    def current_delta(self, x: torch.Tensor) -> torch.Tensor | float:
        """The delta this forward pass uses: override > learnable > fixed."""
        override = _DELTA_OVERRIDE.get()
        if override is not None:
            return override
        if self.delta_fc is not None:
            pooled = x.mean(dim=(2, 3))  # (B, C)
            return torch.sigmoid(self.delta_fc(pooled))[:, :, None, None]  # (B, C, 1, 1)
        return self.delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        peak = x.amax(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
        return torch.minimum(x, self.current_delta(x) * peak)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, delta={'learnable' if self.learnable else self.delta}"
