"""Context-managed capture of a layer's activation and of the gradient that reaches it.

Hook-based CAMs need ``A`` (the target layer's output) and ``dS_c/dA``. Hooks left behind
after an exception keep firing on every later forward pass (and keep tensors alive), so the
helper removes every hook it registered in a ``finally`` block, whatever the body does.
A module hook fires for every thread that runs the module, so it records only the passes of the
thread that registered it: a server explaining with one shared model in several threads would
otherwise capture another request's activation.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


@dataclass
class CapturedTensors:
    """What :func:`capture_activations_and_grads` saw, one entry per call of the layer."""

    activations: list[torch.Tensor] = field(default_factory=list)  # layer outputs, graph attached
    gradients: list[torch.Tensor | None] = field(default_factory=list)  # d(loss)/d(output), None until backward

    @property
    def activation(self) -> torch.Tensor:
        """The single activation (the layer must have run exactly once)."""
        if len(self.activations) != 1:
            raise RuntimeError(f"expected the target layer to run once, it ran {len(self.activations)} times")
        return self.activations[0]

    @property
    def gradient(self) -> torch.Tensor:
        """The gradient of the single activation (after a backward pass through it)."""
        if len(self.gradients) != 1 or self.gradients[0] is None:
            raise RuntimeError("no gradient captured: run a backward pass through the target layer first")
        return self.gradients[0]


@contextlib.contextmanager
def capture_activations_and_grads(layer: nn.Module) -> Iterator[CapturedTensors]:
    """Record ``layer``'s output and, after a backward pass, the gradient reaching it.

    A forward hook stores each output and registers a tensor hook on it for its gradient
    (a tensor hook rather than a module backward hook, as pytorch-grad-cam does, citing
    pytorch/pytorch#61519; it also fires for ``torch.autograd.grad``). If the output does
    not require grad (frozen backbone, inference), it is replaced by a detached leaf that does,
    so ``dS_c/dA`` always exists; gradients then simply stop at this layer.

    All hooks -- the module hook and every tensor hook -- are removed on exit, also when the
    body raises, so later passes neither fire them nor overwrite the captured gradients. Passes
    that other threads run through ``layer`` meanwhile are ignored.

    Example::

        with capture_activations_and_grads(model.feature_layer) as captured:
            out = model(images)
            torch.autograd.grad(out.logits[:, 0].sum(), captured.activation)
        grads = captured.gradient
    """
    captured = CapturedTensors()
    tensor_handles: list[RemovableHandle] = []
    owner = threading.get_ident()

    def forward_hook(module: nn.Module, inputs: Any, output: Any) -> torch.Tensor | None:
        if threading.get_ident() != owner:
            return None  # another thread's pass through the shared layer: not ours to record
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"target layer must output a tensor, got {type(output).__name__}")
        replaced = not output.requires_grad
        if replaced:
            output = output.detach().requires_grad_(True)
        index = len(captured.activations)
        captured.activations.append(output)
        captured.gradients.append(None)

        def store_gradient(grad: torch.Tensor) -> None:
            captured.gradients[index] = grad

        tensor_handles.append(output.register_hook(store_gradient))
        return output if replaced else None  # returning a tensor replaces the layer's output

    module_handle = layer.register_forward_hook(forward_hook)
    try:
        yield captured
    finally:
        module_handle.remove()
        for handle in tensor_handles:
            handle.remove()
