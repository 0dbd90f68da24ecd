"""Shared machinery of gradient-weighted CAM methods (pytorch-grad-cam's structure, in torch).

A method is a small subclass of :class:`BaseCAM` that implements one thing,
:meth:`BaseCAM.cam_weights`: channel weights from the target layer's activations ``A`` and the
gradients ``g = dS_c/dA``. The base class runs the model, picks the classes
(:func:`resolve_classes`, the one place that turns a class selection into indices), obtains
``g`` and forms ``CAM = relu(sum_k w_k A_k)`` (Grad-CAM, Selvaraju et al. 2017, eq. 2; Grad-CAM++
eq. 19 feeds the same sum). Everything stays in torch, so CAMs can feed losses.

Gradients come from one of two sources:

* ``"autograd"``: hooks on the target layer plus a backward pass of the selected class
  scores -- works for any head and any target layer.
* ``"analytic"``: for the GAP + linear head of :class:`~crm_core.models.CamClassifier`,
  ``dS_c/dA_kij = W[c, k] / (h w)`` is known without a backward pass, so the CAM comes from the
  same forward pass as the logits (and is differentiable end to end under autograd). Such a
  method also works on features already computed (:meth:`BaseCAM.from_features`): training,
  evaluation and the API take the CAM from the forward pass they run anyway. A method with a
  closed form for the whole map may override ``from_features`` instead of ``cam_weights``
  (:class:`~crm_core.cams.gradcampp.ClosedFormGradCAMPlusPlus` does, vectorised over classes).

Methods are looked up by name in :data:`crm_core.cams.registry.CAM_METHODS`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Literal, Sequence, Union

import torch
from torch import nn

from crm_core.cams.hooks import capture_activations_and_grads
from crm_core.models import CamClassifier

logger = logging.getLogger(__name__)

GradientSource = Literal["autograd", "analytic"]
ClassSelection = Union[None, int, Sequence[int], torch.Tensor]


@dataclass
class CamResult:
    """Output of a CAM method for one batch."""

    cams: torch.Tensor  # (B, h, w) raw non-negative maps at feature resolution (not normalised)
    logits: torch.Tensor  # (B, C) classifier logits from the same forward pass
    classes: torch.Tensor  # (B,) long: the class each map explains (argmax of logits if not given)
    activations: torch.Tensor  # (B, K, h, w) the target layer's output A in that pass (the GAP input by default)


def resolve_classes(classes: ClassSelection, logits: torch.Tensor) -> torch.Tensor:
    """Turn a class selection into a (B,) LongTensor on the logits' device.

    ``None`` picks the predicted class per sample, an ``int`` the same class for all samples, a
    sequence / tensor of length B one class per sample.
    """
    batch, num_classes = logits.shape
    if classes is None:
        selected = logits.detach().argmax(dim=1)
    elif isinstance(classes, int):
        selected = torch.full((batch,), classes, dtype=torch.long, device=logits.device)
    else:
        selected = torch.as_tensor(classes, device=logits.device).long().reshape(-1)
        if selected.numel() == 1 and batch > 1:
            selected = selected.expand(batch)
        if selected.shape != (batch,):
            raise ValueError(f"expected one class per sample (B={batch}), got {selected.numel()} classes")
    if selected.numel() and (int(selected.min()) < 0 or int(selected.max()) >= num_classes):
        raise ValueError(f"class indices must be in [0, {num_classes}), got {selected.tolist()}")
    return selected


class BaseCAM:
    """Gradient-weighted CAM over a :class:`~crm_core.models.CamClassifier`.

    Subclasses implement :meth:`cam_weights` (the one override point; a closed form of the whole
    map may override :meth:`from_features` instead). Calling the object with images returns a
    :class:`CamResult`.

    Args:
        model: the classifier; any module with ``feature_layer`` and a ``forward`` returning
            ``(logits, features)`` works for ``"autograd"``; ``"analytic"`` also needs the GAP +
            linear head ``fc``. The model's train/eval mode is left as it is (callers choose:
            eval for inference; training code reuses its own forward pass).
        target_layer: layer whose output is ``A`` (``"autograd"`` only); default
            ``model.feature_layer``, the input of the GAP.
        gradients: ``"autograd"`` (hooks + backward, any head) or ``"analytic"`` (GAP + linear
            head, no backward pass).
        create_graph: ``"autograd"`` only. ``False``: the backward pass builds no graph and the
            result is detached (inference). ``True``: ``g`` keeps its graph so the CAM is
            differentiable including its weights (second-order backward, costly).
    """

    #: Gradient source used when the constructor is not told otherwise.
    default_gradients: ClassVar[GradientSource] = "autograd"

    def __init__(
        self,
        model: CamClassifier,
        target_layer: nn.Module | None = None,
        gradients: GradientSource | None = None,
        create_graph: bool = False,
    ) -> None:
        self.model = model
        self.gradient_source: GradientSource = gradients or self.default_gradients
        if self.gradient_source not in ("autograd", "analytic"):
            raise ValueError(f"gradients must be 'autograd' or 'analytic', got {self.gradient_source!r}")
        if self.gradient_source == "analytic":
            if target_layer is not None:
                raise ValueError("analytic gradients exist only for the GAP input; do not pass target_layer")
            if not isinstance(getattr(model, "fc", None), nn.Linear):
                raise TypeError("analytic gradients need a GAP + linear head named `fc`")
        self.target_layer = target_layer if target_layer is not None else model.feature_layer
        self.create_graph = create_graph

    # -- the override point ------------------------------------------------------------
    def cam_weights(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """Channel weights ``w`` (B, K) from activations ``A`` and gradients ``g = dS_c/dA``.

        Both inputs are (B, K, h, w). With ``"analytic"`` gradients, ``grads`` is an expanded
        view of (B, K, 1, 1), i.e. constant over space. The map is ``relu(sum_k w_k A_k)``.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement cam_weights")

    # -- driver ------------------------------------------------------------------------
    def __call__(self, images: torch.Tensor, classes: ClassSelection = None) -> CamResult:
        """CAMs of ``images`` (B, 3, H, W) for ``classes`` (None: the predicted class)."""
        if self.gradient_source == "analytic":
            out = self.model(images)
            selected = resolve_classes(classes, out.logits)
            return CamResult(self.from_features(out.features, selected), out.logits, selected, out.features)
        activations, grads, logits, selected = self._autograd(images, classes)
        cams = self._weighted_sum(activations, grads)  # (B, h, w)
        if not self.create_graph:
            cams, logits, activations = cams.detach(), logits.detach(), activations.detach()
        return CamResult(cams=cams, logits=logits, classes=selected, activations=activations)

    def from_features(self, features: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """Raw maps from the GAP input ``features`` (B, K, h, w) of a forward pass already run.

        Needs ``"analytic"`` gradients (no backward pass, so no second forward either). Returns
        (B, h, w) for ``classes`` (B,), or (B, C, h, w) for every class with ``None``; keeps the
        graph of ``features`` and of the head (differentiable).
        """
        if self.gradient_source != "analytic":
            raise ValueError(f"{type(self).__name__} with {self.gradient_source} gradients needs its own forward "
                             "pass; call it on images")
        batch, channels, h, w = features.shape
        if classes is None:
            every = [torch.full((batch,), c, dtype=torch.long, device=features.device)
                     for c in range(self.model.fc.out_features)]
            return torch.stack([self.from_features(features, c) for c in every], dim=1)  # (B, C, h, w)
        # S_c = sum_k W[c, k] mean_ij(A_kij) + b_c  =>  dS_c/dA_kij = W[c, k] / (h w) everywhere.
        grads = (self.model.fc.weight[classes] / (h * w)).view(batch, channels, 1, 1)
        return self._weighted_sum(features, grads.expand(batch, channels, h, w))

    def _weighted_sum(self, activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        weights = self.cam_weights(activations, grads)  # (B, K)
        return torch.relu(torch.einsum("bk,bkhw->bhw", weights, activations))  # (B, h, w)

    def _autograd(
        self, images: torch.Tensor, classes: ClassSelection
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.enable_grad(), capture_activations_and_grads(self.target_layer) as captured:
            out = self.model(images)
            selected = resolve_classes(classes, out.logits)
            activations = captured.activation
            # Samples are independent in the head, so one backward of the summed scores gives
            # each sample's dS_c/dA. autograd.grad (not .backward) leaves parameter .grad alone.
            scores = out.logits.gather(1, selected[:, None]).sum()
            torch.autograd.grad(scores, activations, create_graph=self.create_graph)
            grads = captured.gradient  # filled by the tensor hook
        logger.debug("%s: activations %s", type(self).__name__, tuple(activations.shape))
        return activations, grads, out.logits, selected
