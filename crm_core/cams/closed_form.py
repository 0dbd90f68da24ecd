"""Grad-CAM++ (Chattopadhay et al., WACV 2018, arXiv 1710.11063), eq. 19, in torch.

Grad-CAM++ weights channel ``k`` of the target feature map ``A`` for class ``c`` by

    alpha_kij = g_kij^2 / (2 g_kij^2 + sum_ab(A_kab) * g_kij^3)      (eq. 19; alpha = 0 where g = 0)
    w_k       = sum_ij alpha_kij * relu(g_kij)                        (eq. 7 with eq. 19)
    CAM       = relu(sum_k w_k A_k)

with ``g = dS_c / dA`` and ``sum_ab(A_kab)`` the spatial sum of channel ``k`` only (not of all
channels). Only positions with ``g > 0`` contribute because of ``relu(g)``, and there eq. 19
simplifies (divide by ``g^2``) to ``alpha = 1 / (2 + sum_ab(A_k) g)``, which needs no ``eps``.

For the GAP + linear head of :class:`~crm_core.models.CamClassifier`,
``S_c = sum_k W[c, k] mean_ij(A_kij) + b_c``, so ``g = W[c, k] / (h w)`` is constant over space
and the weights have a closed form from the forward pass alone (no backward pass):

    w_k = h w * relu(g_k) / (2 + S_k g_k),    g_k = W[c, k] / (h w),  S_k = sum_ij A_kij

which is differentiable in both the features and ``W`` -- what CRM training needs.

The ``grad-cam`` package (pytorch-grad-cam 1.5.7, ``GradCAMPlusPlus.get_cam_weights``)
computes ``alpha = g^2 / (2 g^2 + S g^3 + eps)`` with ``eps = 1e-6``, masks it with
``np.where(grads != 0, alpha, 0)`` and weights with ``relu(grads) * alpha``. With GAP heads
``g`` is about 1e-4, so ``g^2 ~ 1e-8`` and that ``eps`` dominates the denominator: its maps differ
from the exact eq. 19 by up to ~0.04 after max-normalisation. Passing ``eps > 0`` here reproduces
the package's formula so tests can compare at equal ``eps``; the default ``eps = 0`` is exact.
"""
from __future__ import annotations

import torch

# Denominators of eq. 19 are pushed away from zero to at least this fraction of their value at
# S = 0 (2 g^2 + eps). This never triggers for non-negative features with g > 0 (there the
# denominator is >= its S = 0 value); it only keeps alpha finite when features can be negative
# and S_k g reaches -2, where eq. 19 itself is singular.
_MIN_DENOM_FRACTION = 1e-3


def _away_from_zero(denom: torch.Tensor, floor: torch.Tensor | float) -> torch.Tensor:
    """Keep the sign of ``denom`` but give it magnitude >= ``floor`` (finite values and grads)."""
    return torch.where(denom >= 0, torch.clamp(denom, min=floor), torch.clamp(denom, max=-floor))


def gradcampp_weight_terms(
    grads: torch.Tensor, sum_activations: torch.Tensor, eps: float = 0.0
) -> torch.Tensor:
    """Elementwise ``relu(g) * alpha`` of Grad-CAM++ eq. 19 (the summand of ``w_k``).

    Args:
        grads: ``g = dS_c/dA``, any shape.
        sum_activations: ``sum_ab(A_k)``, the spatial sum of each channel, broadcastable to
            ``grads`` (e.g. (B, K, 1, 1) against (B, K, h, w) gradients).
        eps: 0 for the exact eq. 19; > 0 reproduces the grad-cam package,
            ``alpha = g^2 / (2 g^2 + S g^3 + eps)``.

    Returns:
        ``relu(g) * alpha`` with the broadcast shape; 0 wherever ``g <= 0``. Both the values and
        their gradients are finite for every input: the ``g <= 0`` branch is masked with
        ``torch.where`` *after* dividing by a denominator kept away from zero, so no ``inf * 0``
        reaches autograd.
    """
    positive = grads > 0
    if eps == 0.0:
        # Eq. 19 divided by g^2 (valid where g != 0): alpha = 1 / (2 + S g);  relu(g) alpha = g alpha.
        denom = _away_from_zero(2.0 + sum_activations * grads, 2.0 * _MIN_DENOM_FRACTION)
        terms = grads / denom
    else:
        grads_2 = grads * grads
        # The package's form: 2 g^2 + S g^3 + eps (the eps is what makes it differ from eq. 19).
        denom = grads_2 * (2.0 + sum_activations * grads) + eps
        denom = _away_from_zero(denom, (2.0 * grads_2 + eps) * _MIN_DENOM_FRACTION)
        terms = grads * grads_2 / denom
    return torch.where(positive, terms, torch.zeros_like(terms))


def gradcampp_closed_form_weights(features: torch.Tensor, fc_weight: torch.Tensor,
                                  classes: torch.Tensor | None = None, eps: float = 0.0) -> torch.Tensor:
    """Grad-CAM++ channel weights ``w_k`` for a GAP + linear head, from the forward pass.

    Args:
        features: (B, K, h, w) input of the GAP.
        fc_weight: (C, K) weight of the linear head.
        classes: (B,) class per sample, or ``None`` for all classes.
        eps: see :func:`gradcampp_weight_terms`.

    Returns:
        (B, K) weights for the given classes, or (B, C, K) for all classes.
    """
    _, _, h, w = features.shape
    area = h * w
    sums = features.sum(dim=(2, 3))  # (B, K): S_k, spatial sum of channel k only
    if classes is None:
        grads = (fc_weight / area).unsqueeze(0)  # (1, C, K): g = W[c, k] / (h w), constant over space
        # sum_ij relu(g) alpha = h w relu(g) alpha because g does not depend on (i, j).
        return area * gradcampp_weight_terms(grads, sums.unsqueeze(1), eps)  # (B, C, K)
    grads = fc_weight[classes] / area  # (B, K)
    return area * gradcampp_weight_terms(grads, sums, eps)  # (B, K)


def gradcampp_closed_form(
    features: torch.Tensor,
    fc_weight: torch.Tensor,
    classes: torch.Tensor | None = None,
    eps: float = 0.0,
) -> torch.Tensor:
    """Grad-CAM++ (eq. 19) maps of a GAP + linear head, without a backward pass.

    Args:
        features: (B, K, h, w) feature map that the head averages (``ClassifierOutput.features``).
        fc_weight: (C, K) weight of the linear head (``model.fc.weight``); its bias does not
            affect ``dS_c/dA`` and so does not enter.
        classes: (B,) LongTensor with one class per sample, or ``None`` for the maps of all
            classes (the reconstruction module decodes all of them; vectorised, no class loop).
        eps: 0 (default) for the exact eq. 19; 1e-6 reproduces the grad-cam package.

    Returns:
        Raw non-negative maps at feature resolution: (B, h, w) for given classes, (B, C, h, w)
        for ``classes=None``. Differentiable with respect to ``features`` and ``fc_weight``.
    """
    if features.ndim != 4:
        raise ValueError(f"features must be (B, K, h, w), got shape {tuple(features.shape)}")
    if fc_weight.ndim != 2 or fc_weight.shape[1] != features.shape[1]:
        raise ValueError(
            f"fc_weight must be (C, K={features.shape[1]}), got shape {tuple(fc_weight.shape)}"
        )
    if classes is not None and tuple(classes.shape) != (features.shape[0],):
        raise ValueError(f"classes must be (B={features.shape[0]},), got shape {tuple(classes.shape)}")
    weights = gradcampp_closed_form_weights(features, fc_weight, classes, eps)
    if classes is None:
        cams = torch.einsum("bck,bkhw->bchw", weights, features)  # (B, C, h, w)
    else:
        cams = torch.einsum("bk,bkhw->bhw", weights, features)  # (B, h, w)
    return torch.relu(cams)
