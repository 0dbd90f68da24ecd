"""Tests of crm_core.cams: Grad-CAM++ (eq. 19) closed form vs hooks vs the grad-cam package.

Tiny random-init ResNets in double precision, small inputs, parametrised over every registered
model variant and both output strides. The grad-cam package (pytorch-grad-cam) is the oracle;
its maps are taken at feature resolution, before its min-max scaling and resize. Only the tests
that compare with it take the ``grad_cam_package`` fixture (conftest.require: skipped without
the package, a failure in CI); the others run without it.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from crm_core.cams import (
    CAM_METHODS,
    PACKAGE_EPS,
    BaseCAM,
    CamResult,
    ClosedFormGradCAMPlusPlus,
    GradCAM,
    GradCAMPlusPlus,
    capture_activations_and_grads,
    class_cams,
    compute_cams,
    create_cam,
    gradcampp_closed_form,
    normalize_cams,
    upsample_cams,
    upsample_normalised,
)
from crm_core.models import MODEL_VARIANTS, ClassifierOutput, LogitsOnly, ModelConfig, create_model, delta_override

NUM_CLASSES = 5
IMAGE_SIZE = (64, 96)  # non-square: catches h/w mix-ups; 4x6 (stride 16) or 2x3 (stride 32) CAMs
VARIANTS = sorted(MODEL_VARIANTS)
STRIDES = (16, 32)


@functools.lru_cache(maxsize=None)
def _model(variant: str, output_stride: int, arch: str = "resnet18", dtype: torch.dtype = torch.float64):
    torch.manual_seed(0)
    cfg = ModelConfig(variant=variant, arch=arch, num_classes=NUM_CLASSES, output_stride=output_stride)
    return create_model(cfg, load_pretrained=False).to(dtype).eval()


def _images(batch: int = 2, size: tuple[int, int] = IMAGE_SIZE, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(batch, 3, *size, generator=generator, dtype=dtype)


def _max_rel_diff(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """max |a - b| per map, relative to the map's max (absolute for an all-zero reference)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.maximum(np.abs(b).max(axis=(-2, -1), keepdims=True), 1e-12)
    return float((np.abs(a - b) / scale).max())


def _package_maps(model, images: torch.Tensor, classes: torch.Tensor, method: str = "GradCAMPlusPlus") -> np.ndarray:
    """The grad-cam package's maps at feature resolution (its pipeline minus scale/resize).

    Only for tests that take the ``grad_cam_package`` fixture.
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    method = getattr(importlib.import_module("pytorch_grad_cam"), method)
    layer = model.feature_layer
    cam = method(model=LogitsOnly(model), target_layers=[layer])
    recorder = cam.activations_and_grads
    try:
        outputs = recorder(images)
        targets = [ClassifierOutputTarget(int(c)) for c in classes]
        cam.model.zero_grad()
        sum(target(output) for target, output in zip(targets, outputs)).backward()
        activations = recorder.activations[0].numpy()
        grads = recorder.gradients[0].numpy()
        maps = cam.get_cam_image(images, layer, targets, activations, grads)  # (B, h, w)
    finally:
        recorder.release()
    model.zero_grad(set_to_none=True)
    return np.maximum(maps, 0)  # as in its compute_cam_per_layer


@dataclass(frozen=True)
class _Reference:
    """One model's expensive passes, computed once and shared by the oracle tests."""

    model: nn.Module
    images: torch.Tensor  # (B, 3, H, W)
    features: torch.Tensor  # (B, K, h, w), no graph
    hooked: CamResult  # GradCAMPlusPlus (exact, hooks + backward), predicted classes
    hooked_eps: CamResult  # GradCAMPlusPlus at the package's eps, same classes


@functools.lru_cache(maxsize=None)
def _reference(variant: str, output_stride: int, arch: str = "resnet18") -> _Reference:
    model, images = _model(variant, output_stride, arch), _images()
    hooked = GradCAMPlusPlus(model)(images)
    hooked_eps = GradCAMPlusPlus(model, eps=PACKAGE_EPS)(images, hooked.classes)
    with torch.no_grad():
        features = model(images).features
    return _Reference(model, images, features, hooked, hooked_eps)


@functools.lru_cache(maxsize=None)
def _reference_package(variant: str, output_stride: int, arch: str = "resnet18") -> np.ndarray:
    """(B, h, w) grad-cam package maps for _reference's images and classes (needs the package)."""
    ref = _reference(variant, output_stride, arch)
    return _package_maps(ref.model, ref.images, ref.hooked.classes)


# -- (a) closed form with the package's eps == pytorch_grad_cam.GradCAMPlusPlus -------------

@pytest.mark.parametrize("output_stride", STRIDES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_closed_form_matches_package_at_its_eps(variant: str, output_stride: int, grad_cam_package) -> None:
    ref, package = _reference(variant, output_stride), _reference_package(variant, output_stride)
    classes, weight = ref.hooked.classes, ref.model.fc.weight.detach()
    with torch.no_grad():
        functional = gradcampp_closed_form(ref.features, weight, classes, eps=PACKAGE_EPS)
        all_classes = gradcampp_closed_form(ref.features, weight, None, eps=PACKAGE_EPS)
        ours = ClosedFormGradCAMPlusPlus(ref.model, eps=PACKAGE_EPS)(ref.images, classes).cams
    assert functional.shape == package.shape
    assert package.max() > 0
    assert _max_rel_diff(functional, package) < 1e-4
    assert _max_rel_diff(ours, package) < 1e-4
    assert _max_rel_diff(all_classes[torch.arange(len(classes)), classes], package) < 1e-4
    # The hook path at the package's eps matches it too.
    assert _max_rel_diff(ref.hooked_eps.cams, package) < 1e-4


def test_resnet50_float32_matches_package_and_hooks(grad_cam_package) -> None:
    """The setting docs/method.md describes (ResNet50, float32), at a small input to stay fast."""
    model = _model("resnet_drs", 16, arch="resnet50", dtype=torch.float32)
    images = _images(size=(64, 64), dtype=torch.float32)
    hooked = GradCAMPlusPlus(model)(images)
    package = _package_maps(model, images, hooked.classes)
    with torch.no_grad():
        features = model(images).features
    exact = gradcampp_closed_form(features, model.fc.weight.detach(), hooked.classes)
    package_eps = gradcampp_closed_form(features, model.fc.weight.detach(), hooked.classes, eps=PACKAGE_EPS)
    assert exact.shape == (2, 4, 4)
    assert _max_rel_diff(package_eps, package) < 1e-4
    assert _max_rel_diff(exact, hooked.cams) < 1e-5


def test_package_public_output_matches_after_scaling(grad_cam_package) -> None:
    """The package's public __call__ (min-max scaled, resized) equals ours scaled the same way."""
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    ref = _reference("resnet_drs", 16)
    model, classes = ref.model, ref.hooked.classes
    cam = grad_cam_package.GradCAMPlusPlus(model=LogitsOnly(model), target_layers=[model.feature_layer])
    try:
        public = cam(ref.images, targets=[ClassifierOutputTarget(int(c)) for c in classes])  # (B, H, W)
    finally:
        cam.activations_and_grads.release()
    model.zero_grad(set_to_none=True)
    ours = gradcampp_closed_form(ref.features, model.fc.weight.detach(), classes, eps=PACKAGE_EPS).numpy()
    width_height = (IMAGE_SIZE[1], IMAGE_SIZE[0])
    # Its pipeline: per layer min-max + resize, then (layer aggregation) min-max again.
    assert np.abs(scale_cam_image(scale_cam_image(ours, width_height)) - public).max() < 1e-4


@pytest.mark.parametrize("variant", VARIANTS)
def test_exact_differs_from_package_eps(variant: str) -> None:
    """Why the default is eps = 0: with GAP heads the package's eps changes the maps visibly."""
    ref = _reference(variant, 16)
    weight = ref.model.fc.weight.detach()
    exact = normalize_cams(gradcampp_closed_form(ref.features, weight))
    package = normalize_cams(gradcampp_closed_form(ref.features, weight, eps=PACKAGE_EPS))
    assert (exact - package).abs().max() > 1e-3


# -- (b) closed form (exact) == hook-based path (exact) ---------------------------------------

@pytest.mark.parametrize("output_stride", STRIDES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_closed_form_matches_hook_path(variant: str, output_stride: int) -> None:
    ref = _reference(variant, output_stride)
    with torch.no_grad():
        closed = ClosedFormGradCAMPlusPlus(ref.model)(ref.images)  # predicted classes, like ref.hooked
    assert torch.equal(closed.classes, ref.hooked.classes)
    assert torch.allclose(closed.logits, ref.hooked.logits)
    assert closed.cams.max() > 0
    assert _max_rel_diff(closed.cams, ref.hooked.cams) < 1e-5
    # The functional form (what the reconstruction module calls) and its all-classes output.
    weight = ref.model.fc.weight.detach()
    functional = gradcampp_closed_form(ref.features, weight, closed.classes)
    all_classes = gradcampp_closed_form(ref.features, weight)  # (B, C, h, w)
    assert _max_rel_diff(functional, ref.hooked.cams) < 1e-5
    assert _max_rel_diff(all_classes[torch.arange(len(closed.classes)), closed.classes], ref.hooked.cams) < 1e-5


@pytest.mark.parametrize("variant", VARIANTS)
def test_efficientnet_closed_form_is_exact_against_autograd_and_the_package(variant: str, grad_cam_package) -> None:
    """EfficientNet's head is GAP + dropout + linear: at evaluation the dropout is the identity, so
    the closed form holds. float64; its SiLU features can be negative, which eq. 19 allows."""
    ref = _reference(variant, 16, "efficientnet_b0")
    package = _reference_package(variant, 16, "efficientnet_b0")
    assert ref.features.shape[-2:] == (4, 6) and ref.features.min() < 0
    with torch.no_grad():
        closed = ClosedFormGradCAMPlusPlus(ref.model)(ref.images)
        at_eps = ClosedFormGradCAMPlusPlus(ref.model, eps=PACKAGE_EPS)(ref.images, closed.classes)
    assert torch.equal(closed.classes, ref.hooked.classes)
    assert closed.cams.max() > 0
    assert _max_rel_diff(closed.cams, ref.hooked.cams) < 1e-5  # autograd eq. 19
    assert _max_rel_diff(at_eps.cams, package) < 1e-4  # the grad-cam package at its eps
    assert _max_rel_diff(ref.hooked_eps.cams, package) < 1e-4


# -- (c) eq. 19 exactly, not a common wrong variant -------------------------------------------

def _eq19_slow(features: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Direct per-element eq. 19 (Chattopadhay et al.) for one map: A (K, h, w), g (K, h, w)."""
    channels, height, width = features.shape
    cam = np.zeros((height, width))
    for k in range(channels):
        channel_sum = sum(features[k, a, b] for a in range(height) for b in range(width))
        weight = 0.0
        for i in range(height):
            for j in range(width):
                g = grads[k, i, j]
                alpha = 0.0 if g == 0 else g**2 / (2 * g**2 + channel_sum * g**3)
                weight += alpha * max(g, 0.0)
        cam += weight * features[k]
    return np.maximum(cam, 0.0)


def test_closed_form_is_eq19_not_a_wrong_variant() -> None:
    """Channel magnitudes span 1..100 so |S_k g_k| spans ~0.1..40: there eq. 19's per-channel
    alpha differs clearly from alpha with S summed over all channels and from Grad-CAM weights."""
    generator = torch.Generator().manual_seed(3)
    batch, channels, height, width = 2, 6, 3, 4
    area = height * width
    scales = torch.logspace(0, 2, channels, dtype=torch.float64)  # per-channel magnitude
    features = torch.rand(batch, channels, height, width, generator=generator, dtype=torch.float64)
    features = features * scales.view(1, channels, 1, 1)
    fc_weight = torch.randn(NUM_CLASSES, channels, generator=generator, dtype=torch.float64)
    fc_weight[:, :2] = -fc_weight[:, :2].abs()  # some negative gradients, which relu(g) drops
    classes = torch.tensor([1, 4])

    ours = gradcampp_closed_form(features, fc_weight, classes)
    grads = (fc_weight[classes] / area)[:, :, None, None].expand(-1, -1, height, width)  # (B, K, h, w)
    slow = np.stack([_eq19_slow(features[b].numpy(), grads[b].numpy()) for b in range(batch)])
    assert slow.max() > 0
    assert _max_rel_diff(ours, slow) < 1e-12

    # Wrong variant 1: sum_ab taken over all channels' activations.
    total = features.sum(dim=(1, 2, 3)).view(batch, 1, 1, 1)  # (B, 1, 1, 1)
    g = grads
    wrong_alpha = torch.where(g != 0, g**2 / (2 * g**2 + total * g**3), torch.zeros_like(g))
    wrong_all = torch.relu(torch.einsum("bk,bkhw->bhw", (wrong_alpha * g.relu()).sum((2, 3)), features))
    # Wrong variant 2: plain Grad-CAM weights.
    gradcam = torch.relu(torch.einsum("bk,bkhw->bhw", g.mean((2, 3)), features))
    for wrong in (wrong_all, gradcam):
        assert np.abs(normalize_cams(wrong).numpy() - normalize_cams(torch.as_tensor(slow)).numpy()).max() > 0.1


class _NonlinearHeadNet(nn.Module):
    """Toy classifier whose head is not GAP + linear, so dS_c/dA varies over space."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU())
        self.head_conv = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, NUM_CLASSES)

    @property
    def feature_layer(self) -> nn.Module:
        return self.body

    def forward(self, images: torch.Tensor) -> ClassifierOutput:
        features = self.body(images)
        pooled = torch.tanh(self.head_conv(features)).pow(2).mean(dim=(2, 3))
        return ClassifierOutput(self.fc(pooled), features)


def test_hook_path_is_eq19_for_a_nonlinear_head() -> None:
    """Per-position gradients: the hook path equals the slow eq. 19."""
    model = _NonlinearHeadNet().double().eval()
    images = _images(batch=2, size=(24, 32))
    classes = torch.tensor([0, 3])
    result = GradCAMPlusPlus(model)(images, classes)

    features = model(images).features.detach().requires_grad_(True)
    scores = model.fc(torch.tanh(model.head_conv(features)).pow(2).mean(dim=(2, 3)))
    (grads,) = torch.autograd.grad(scores.gather(1, classes[:, None]).sum(), features)
    assert grads[0, 0].std() > 0  # the gradient really varies over space
    slow = np.stack([_eq19_slow(features[b].detach().numpy(), grads[b].numpy()) for b in range(2)])
    assert slow.max() > 0
    assert _max_rel_diff(result.cams, slow) < 1e-10


def test_hook_path_at_its_eps_matches_package_for_a_nonlinear_head(grad_cam_package) -> None:
    """Gradients that vary over space: at the package's eps, the hook path equals the package."""
    model = _NonlinearHeadNet().double().eval()
    images = _images(batch=2, size=(24, 32))
    classes = torch.tensor([0, 3])
    expected = _package_maps(model, images, classes)
    package_eps = GradCAMPlusPlus(model, eps=PACKAGE_EPS)(images, classes).cams
    assert expected.max() > 0
    assert _max_rel_diff(package_eps, expected) < 1e-4


# -- (d) hooks are always removed -------------------------------------------------------------

def test_hooks_removed_after_context() -> None:
    layer = nn.Conv2d(3, 4, 3)
    x = torch.rand(2, 3, 8, 8)
    with capture_activations_and_grads(layer) as captured:
        assert len(layer._forward_hooks) == 1
        out = layer(x)
        loss = out.sum()
        torch.autograd.grad(loss, captured.activation, retain_graph=True)
        assert torch.allclose(captured.gradient, torch.ones_like(out))
    assert len(layer._forward_hooks) == 0
    # The tensor hook is gone too: a later backward does not overwrite what was captured.
    first = captured.gradient
    (2 * out.sum()).backward()
    assert captured.gradient is first
    layer(x)
    assert len(captured.activations) == 1


def test_hooks_record_only_the_thread_that_registered_them() -> None:
    """A server explains with one shared model in several threads: another request's pass through
    the hooked layer (here: run in a second thread while the hooks are on) is not captured."""
    import threading

    layer = nn.Conv2d(3, 4, 3)
    ours, theirs = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    with capture_activations_and_grads(layer) as captured:
        other = threading.Thread(target=lambda: layer(theirs))
        other.start()
        other.join()
        out = layer(ours)
        assert len(captured.activations) == 1  # raised "ran 2 times" before
        torch.testing.assert_close(captured.activation, out)


def test_hooks_removed_when_body_raises() -> None:
    layer = nn.Conv2d(3, 4, 3)
    with pytest.raises(RuntimeError, match="boom"):
        with capture_activations_and_grads(layer):
            layer(torch.rand(1, 3, 8, 8))
            raise RuntimeError("boom")
    assert len(layer._forward_hooks) == 0


def test_cam_call_leaves_no_hooks_even_on_error() -> None:
    model, images = _model("resnet", 32), _images(batch=2)
    layer = model.feature_layer
    GradCAMPlusPlus(model)(images)
    assert len(layer._forward_hooks) == 0
    with pytest.raises(ValueError, match="class indices"):
        GradCAMPlusPlus(model)(images, NUM_CLASSES)
    assert len(layer._forward_hooks) == 0
    assert all(p.grad is None for p in model.parameters())  # autograd.grad leaves .grad alone


def test_hook_path_works_with_frozen_model_and_no_grad() -> None:
    model, images = _model("resnet", 32), _images(batch=2)
    reference = GradCAMPlusPlus(model)(images).cams
    model.requires_grad_(False)
    try:
        with torch.no_grad():
            frozen = GradCAMPlusPlus(model)(images).cams
    finally:
        model.requires_grad_(True)
    assert torch.allclose(frozen, reference)


# -- (e) gradients through the closed form ----------------------------------------------------

@pytest.mark.parametrize("eps", [0.0, PACKAGE_EPS])
def test_closed_form_gradients_flow(eps: float) -> None:
    generator = torch.Generator().manual_seed(7)
    features = torch.rand(2, 16, 5, 6, generator=generator, dtype=torch.float64).requires_grad_(True)
    fc_weight = torch.randn(NUM_CLASSES, 16, generator=generator, dtype=torch.float64).requires_grad_(True)
    for classes in (torch.tensor([0, 3]), None):
        cams = gradcampp_closed_form(features, fc_weight, classes, eps=eps)
        loss = normalize_cams(cams).square().mean() + cams.mean()
        feature_grad, weight_grad = torch.autograd.grad(loss, (features, fc_weight))
        for grad in (feature_grad, weight_grad):
            assert torch.isfinite(grad).all()
            assert grad.abs().sum() > 0


@pytest.mark.parametrize("eps", [0.0, PACKAGE_EPS])
def test_closed_form_no_nan_for_zero_or_singular_features(eps: float) -> None:
    fc_weight = torch.randn(NUM_CLASSES, 4, dtype=torch.float64)
    fc_weight[:, 0] = 0.0  # g == 0 exactly
    fc_weight = fc_weight.requires_grad_(True)
    zeros = torch.zeros(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    # Negative features with S_k g_k == -2 exactly (g = W / 9 > 0, S = 9 A): eq. 19's denominator
    # vanishes. DRS / ReLU features cannot do this, other heads might.
    positive_weight = fc_weight.detach().abs() + 0.1
    singular = (-2.0 / positive_weight[1]).view(1, 4, 1, 1).expand(2, 4, 3, 3).clone().requires_grad_(True)
    cases = ((zeros, fc_weight, None), (zeros, fc_weight, torch.tensor([1, 2])))
    cases += ((singular, positive_weight.requires_grad_(True), torch.tensor([1, 1])),)
    for features, weight, classes in cases:
        cams = gradcampp_closed_form(features, weight, classes, eps=eps)
        assert torch.isfinite(cams).all()
        loss = normalize_cams(cams).sum() + cams.sum()
        grads = torch.autograd.grad(loss, (features, weight))
        assert all(torch.isfinite(g).all() for g in grads)
    assert gradcampp_closed_form(zeros, fc_weight).abs().max() == 0


def test_closed_form_cam_trains_the_model() -> None:
    """The default CAM keeps the forward graph: a loss on it reaches the backbone and head."""
    model, images = _model("resnet_drs", 16), _images(batch=2)
    model.zero_grad(set_to_none=True)
    result = compute_cams(model, images, classes=torch.tensor([0, 1]))
    normalize_cams(result.cams).mean().backward()  # the CAM alone: no logit term that would reach them anyway
    grads = [p.grad for p in (model.fc.weight, model.layer4[-1][0].conv2.weight)]
    model.zero_grad(set_to_none=True)
    for grad in grads:
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    detached = compute_cams(model, images, classes=torch.tensor([0, 1])).cams.detach()
    assert not detached.requires_grad  # the control: a detached CAM gives a loss nothing to backpropagate


def test_hook_path_create_graph_is_differentiable() -> None:
    """With create_graph the hook path's CAM (weights included) backpropagates like the closed form."""
    model, images = _model("resnet_drs", 32), _images()
    classes = torch.tensor([1, 2])
    hooked = GradCAMPlusPlus(model, create_graph=True)(images, classes)
    closed = ClosedFormGradCAMPlusPlus(model)(images, classes)
    assert hooked.cams.requires_grad
    (hook_grad,) = torch.autograd.grad(hooked.cams.sum(), model.fc.weight)
    (closed_grad,) = torch.autograd.grad(closed.cams.sum(), model.fc.weight)
    assert torch.isfinite(hook_grad).all() and hook_grad.abs().sum() > 0
    assert torch.allclose(hook_grad, closed_grad, rtol=1e-6, atol=1e-12)
    assert not GradCAMPlusPlus(model)(images, classes).cams.requires_grad  # inference: detached


# -- (f) DRS delta override changes the CAM ----------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_delta_override_changes_drs_cams(variant: str) -> None:
    model, images = _model(variant, 16), _images(batch=2)
    classes = torch.tensor([0, 2])
    with torch.no_grad():
        default = ClosedFormGradCAMPlusPlus(model)(images, classes).cams
        with delta_override(0.3):
            overridden = ClosedFormGradCAMPlusPlus(model)(images, classes).cams
    with delta_override(0.3):
        hooked = GradCAMPlusPlus(model)(images, classes).cams
    assert _max_rel_diff(hooked, overridden) < 1e-5
    if model.cfg.drs:
        assert _max_rel_diff(overridden, default) > 1e-3
    else:
        assert torch.equal(overridden, default)


# -- (g) all-classes output == per-class outputs stacked --------------------------------------

@pytest.mark.parametrize("eps", [0.0, PACKAGE_EPS])
@pytest.mark.parametrize("variant", VARIANTS)
def test_all_classes_equal_stacked_per_class(variant: str, eps: float) -> None:
    ref = _reference(variant, 32)
    model, features = ref.model, ref.features
    with torch.no_grad():
        all_maps = gradcampp_closed_form(features, model.fc.weight, None, eps=eps)
        stacked = torch.stack(
            [
                gradcampp_closed_form(features, model.fc.weight, torch.full((2,), c), eps=eps)
                for c in range(NUM_CLASSES)
            ],
            dim=1,
        )  # (B, C, h, w)
    assert all_maps.shape == (2, NUM_CLASSES, *features.shape[-2:])
    assert torch.allclose(all_maps, stacked, rtol=1e-12, atol=1e-14)


# -- base class, registry, Grad-CAM ------------------------------------------------------------

def test_class_selection_and_result() -> None:
    model, images = _model("resnet", 32), _images()
    cam = ClosedFormGradCAMPlusPlus(model)
    with torch.no_grad():
        predicted = cam(images)
        assert isinstance(predicted, CamResult)
        assert torch.equal(predicted.classes, predicted.logits.argmax(1))
        assert predicted.cams.shape == (2, 2, 3) and predicted.logits.shape == (2, NUM_CLASSES)
        assert (predicted.cams >= 0).all()
        assert torch.equal(cam(images, 2).classes, torch.full((2,), 2))
        assert torch.equal(cam(images, [1, 3]).classes, torch.tensor([1, 3]))
        for bad in (-1, NUM_CLASSES, torch.tensor([0, 1, 2])):
            with pytest.raises(ValueError):
                cam(images, bad)


def test_registry_and_compute_cams() -> None:
    model, images = _model("resnet_drs", 32), _images(batch=2)
    assert {"gradcampp", "gradcampp_hooks", "gradcam"} <= set(CAM_METHODS)
    default = compute_cams(model, images, classes=1)
    hooked = compute_cams(model, images, classes=1, method="gradcampp_hooks")
    assert _max_rel_diff(default.cams.detach(), hooked.cams) < 1e-5
    with pytest.raises(ValueError, match="unknown CAM method"):
        compute_cams(model, images, method="nope")
    for name, entry in CAM_METHODS.items():
        assert issubclass(entry.build, BaseCAM) and entry.label, name
        assert isinstance(create_cam(name, model), entry.build)
    assert not CAM_METHODS["gradcampp"].uses_hooks and CAM_METHODS["gradcampp_hooks"].uses_hooks


def test_from_features_is_the_forward_pass_cam_for_one_or_every_class() -> None:
    """Analytic methods take the CAM from features of a forward pass already run (training,
    evaluation, the API): the same maps as calling them on images, for one class or every class."""
    model, images = _model("resnet_drs", 16), _images()
    classes = torch.tensor([3, 1])
    with torch.no_grad():
        features = model(images).features
        closed, generic = ClosedFormGradCAMPlusPlus(model), GradCAMPlusPlus(model, gradients="analytic")
        result = closed(images, classes)
        assert torch.equal(result.activations, features)
        assert torch.equal(result.cams, closed.from_features(features, classes))
        every = closed.from_features(features)  # (B, C, h, w)
        assert torch.equal(every, gradcampp_closed_form(features, model.fc.weight))
        assert torch.equal(class_cams(model, features), normalize_cams(every))
        assert _max_rel_diff(generic.from_features(features), every) < 1e-10
        assert _max_rel_diff(generic.from_features(features, classes), every[torch.arange(2), classes]) < 1e-10
    with pytest.raises(ValueError, match="own forward pass"):
        GradCAMPlusPlus(model).from_features(features, classes)


def test_upsample_normalised() -> None:
    cams = torch.rand(2, 3, 4, dtype=torch.float64) * 5
    up = upsample_normalised(cams, (12, 16))
    assert up.shape == (2, 12, 16) and up.dtype == torch.float32
    assert torch.allclose(up.amax(dim=(1, 2)), torch.ones(2))
    assert torch.equal(up, normalize_cams(upsample_cams(cams.float(), (12, 16)).clamp_min(0)))


def test_gradcam_override_point_matches_package(grad_cam_package) -> None:
    model, images = _model("resnet", 32), _images()
    classes = torch.tensor([2, 0])
    expected = _package_maps(model, images, classes, method="GradCAM")
    hooked = GradCAM(model)(images, classes).cams
    analytic = GradCAM(model, gradients="analytic")(images, classes).cams
    assert _max_rel_diff(hooked, expected) < 1e-10
    assert _max_rel_diff(analytic.detach(), expected) < 1e-10


def test_base_cam_requires_override() -> None:
    model, images = _model("resnet", 32), _images(batch=2)
    with pytest.raises(NotImplementedError):
        BaseCAM(model)(images)
    with pytest.raises(ValueError):
        BaseCAM(model, gradients="finite-differences")  # type: ignore[arg-type]


# -- utilities ---------------------------------------------------------------------------------

def test_normalize_cams() -> None:
    cams = torch.rand(2, 3, 4, 5, dtype=torch.float64)
    cams[0, 1] = 0.0
    normalized = normalize_cams(cams)
    assert torch.isfinite(normalized).all()
    assert normalized[0, 1].abs().max() == 0
    peaks = normalized.amax(dim=(-2, -1))
    assert torch.allclose(peaks[peaks > 0], torch.ones_like(peaks[peaks > 0]))
    assert normalize_cams(cams[:, 0]).shape == (2, 4, 5)
    zero = torch.zeros(1, 2, 2, requires_grad=True)
    (grad,) = torch.autograd.grad(normalize_cams(zero).sum(), zero)
    assert torch.isfinite(grad).all()


def test_upsample_cams_shapes() -> None:
    assert upsample_cams(torch.rand(2, 3, 4), (12, 16)).shape == (2, 12, 16)
    assert upsample_cams(torch.rand(2, 5, 3, 4), 8).shape == (2, 5, 8, 8)
    assert upsample_cams(torch.rand(3, 4), (6, 8)).shape == (6, 8)
    constant = torch.full((1, 3, 4), 0.5)
    assert torch.allclose(upsample_cams(constant, (9, 9)), torch.full((1, 9, 9), 0.5))

