"""Backbone, DRS, ReconstructNet and the registry."""
from __future__ import annotations

import pytest
import torch

from crm_core.models import DRS, MODEL_VARIANTS, ModelConfig, ReconstructNet, create_model, delta_override
from crm_core.models.decoder import ChannelAffineLayerNorm, num_up_blocks


@pytest.mark.parametrize("variant", sorted(MODEL_VARIANTS))
@pytest.mark.parametrize("arch,stride,size,expected", [("resnet18", 16, 64, 4), ("resnet18", 32, 64, 2), ("resnet34", 16, 96, 6),
                                                       ("efficientnet_b0", 16, 112, 7), ("efficientnet_b0", 32, 64, 2)])
def test_variant_shapes(variant: str, arch: str, stride: int, size: int, expected: int) -> None:
    model = create_model(ModelConfig(variant=variant, arch=arch, num_classes=5, output_stride=stride))
    out = model(torch.rand(2, 3, size, size))
    assert out.logits.shape == (2, 5)
    assert out.features.shape[-2:] == (expected, expected)
    # the head sits on GAP of exactly these features
    model.eval()  # (EfficientNet's head dropout is identity at evaluation)
    out = model(torch.rand(2, 3, size, size))
    assert torch.allclose(out.logits, model.fc(out.features.mean((2, 3))), atol=1e-5)


def test_drs_caps_each_channel_at_delta_times_max() -> None:
    x = torch.rand(2, 3, 5, 5)
    y = DRS(3, delta=0.4)(x)
    peak = x.amax(dim=(2, 3), keepdim=True)
    assert torch.all(y <= 0.4 * peak + 1e-7)
    assert torch.equal(y, torch.minimum(x, 0.4 * peak))


def test_learnable_drs_predicts_delta_per_sample_and_channel() -> None:
    layer = DRS(4, learnable=True)
    x = torch.rand(3, 4, 6, 6)
    delta = layer.current_delta(x)
    assert delta.shape == (3, 4, 1, 1) and torch.all((delta > 0) & (delta < 1))
    layer(x).sum().backward()
    assert layer.delta_fc.weight.grad is not None


def test_delta_override_changes_only_drs_models_and_is_restored() -> None:
    torch.manual_seed(0)
    drs = create_model(ModelConfig(variant="resnet_drs", arch="resnet18", num_classes=3, output_stride=16)).eval()
    plain = create_model(ModelConfig(variant="resnet", arch="resnet18", num_classes=3, output_stride=16)).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        base, plain_base = drs(x), plain(x)
        with delta_override(0.2):
            capped, plain_capped = drs(x), plain(x)
        after = drs(x)
    # a model without DRS layers ignores the override ...
    assert torch.equal(plain_base.features, plain_capped.features)
    assert torch.equal(plain_base.logits, plain_capped.logits)
    # ... a DRS model's features (and so its logits) change, and are restored on exit
    assert not torch.allclose(base.features, capped.features)
    assert not torch.allclose(base.logits, capped.logits)
    assert torch.equal(base.features, after.features)
    with pytest.raises(ValueError):
        with delta_override(1.5):
            pass


def test_last2_freezes_everything_but_layer4_and_head() -> None:
    model = create_model(ModelConfig(variant="resnet_drs", arch="resnet18", num_classes=3, freeze="last2", drs_learnable=True))
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layer4", "fc"}
    model.train()
    assert not model.layer1.training and model.layer4.training


def test_pretrained_backbone_loads_torchvision_layout() -> None:
    import torchvision

    from crm_core.pretrained import ResolvedWeights

    reference = torchvision.models.resnet18(weights=None)
    model = create_model(ModelConfig(variant="resnet_drs", arch="resnet18", num_classes=3))
    model.load_backbone(ResolvedWeights(reference.state_dict(), "test"))
    assert torch.equal(model.stem[0].weight, reference.conv1.weight)
    assert torch.equal(model.layer4[1][0].conv2.weight, reference.layer4[1].conv2.weight)


@pytest.mark.parametrize("arch", ["efficientnet_b0", "efficientnet_b1", "resnet18"])
def test_imagenet_layout_loads_into_every_backbone_and_gives_torchvisions_features(arch) -> None:
    """Independent check: with the same weights our stem + stages compute exactly torchvision's
    feature extractor (output stride 32, no DRS), however the stages were regrouped."""
    import torchvision

    from crm_core.pretrained import ResolvedWeights

    torch.manual_seed(0)
    reference = getattr(torchvision.models, arch)(weights=None).eval()
    model = create_model(ModelConfig(variant="resnet", arch=arch, num_classes=3, output_stride=32)).eval()
    model.load_backbone(ResolvedWeights(reference.state_dict(), "test"))
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        ours = model.forward_features(x)
        normalised = (x - model.mean) / model.std
        if arch.startswith("efficientnet"):
            theirs = reference.features(normalised)
        else:
            theirs = torch.nn.Sequential(*list(reference.children())[:-2])(normalised)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0"])
def test_drs_positions_put_one_layer_where_they_say(arch) -> None:
    def count(positions):
        model = create_model(ModelConfig(variant="resnet_drs", arch=arch, num_classes=3, output_stride=16,
                                         drs_positions=positions))
        return sum(isinstance(m, DRS) for m in model.modules()), model

    plain = create_model(ModelConfig(variant="resnet", arch=arch, num_classes=3))
    blocks = {name: len(getattr(plain, name)) for name in ("layer1", "layer2", "layer3", "layer4")}
    assert count(("layer4",))[0] == 1
    assert count(("layer2", "layer4"))[0] == 2
    assert count(("layer4_blocks",))[0] == blocks["layer4"]
    assert count(("all_blocks",))[0] == sum(blocks.values())
    # a DRS after every block caps every block's output (delta 0.3 everywhere)
    _, model = count(("all_blocks",))
    outputs = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: outputs.append((inp[0], out)))
             for m in model.modules() if isinstance(m, DRS)]
    with torch.no_grad(), delta_override(0.3):
        model.eval()(torch.rand(1, 3, 64, 64))
    for hook in hooks:
        hook.remove()
    for before, after in outputs:
        assert torch.equal(after, torch.minimum(before, 0.3 * before.amax(dim=(2, 3), keepdim=True)))


@pytest.mark.parametrize("positions", [("layer4", "layer4_blocks"), ("all_blocks", "layer2")])
def test_drs_positions_that_stack_two_caps_are_refused(positions) -> None:
    with pytest.raises(ValueError, match="alone|delta\\^2"):
        ModelConfig(variant="resnet_drs", arch="resnet18", drs=True, drs_positions=positions)


def test_imagenet_weights_offline_fail_fast_with_instructions(tmp_path, monkeypatch) -> None:
    from crm_core.pretrained import WeightsNotFoundError

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.delenv("CRM_LAB_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(WeightsNotFoundError, match="put it at"):
        create_model(ModelConfig(variant="resnet", arch="resnet18", num_classes=3, weights="imagenet"))


@pytest.mark.parametrize("image_size,cam_size", [(224, 7), (112, 7), (64, 4), (96, 7)])
def test_reconstructnet_reaches_image_size_in_tanh_range(image_size: int, cam_size: int) -> None:
    net = ReconstructNet(num_classes=6, image_size=image_size, cam_size=cam_size, width=32)
    out = net(torch.rand(2, 6, cam_size, cam_size))
    assert out.shape == (2, 3, image_size, image_size)
    assert out.min() >= -1 and out.max() <= 1
    if (image_size, cam_size) == (224, 7):
        assert num_up_blocks(image_size, cam_size) == 5  # docs/method.md: 5 up-blocks take 7x7 to 224x224


def test_layernorm_normalises_over_chw_per_sample() -> None:
    norm = ChannelAffineLayerNorm(4)
    x = torch.randn(3, 4, 5, 5) * 3 + 2
    y = norm(x)
    assert torch.allclose(y.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.var(dim=(1, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)


def test_a_toy_backbone_family_added_through_the_registry_works_everywhere(monkeypatch) -> None:
    """docs/architecture.md's recipe for a backbone: one Backbone entry naming a constructor, one
    cutting function. Nothing else changes, and the classifier, DRS placement, output stride and
    Grad-CAM++ work on it."""
    from torch import nn

    from crm_core.cams.registry import compute_cams
    from crm_core.models import backbones

    def block(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())

    class Toy(nn.Module):
        def __init__(self, weights=None):
            super().__init__()
            self.stem = block(3, 8, 2)
            self.stages = nn.ModuleList([nn.Sequential(block(8, 8, 2), block(8, 8, 1)), nn.Sequential(block(8, 16, 2)),
                                         nn.Sequential(block(16, 16, 2)), nn.Sequential(block(16, 32, 2), block(32, 32, 1))])
            self.head = nn.Linear(32, 1000)

    monkeypatch.setitem(backbones.FAMILIES, "toy", lambda net: (net.stem, list(net.stages)))
    monkeypatch.setitem(backbones.HEAD_PREFIXES, "toy", ("head.",))
    monkeypatch.setitem(backbones.BACKBONES, "toy", backbones.Backbone("toy", Toy, None))
    from crm_core.train_config import TrainConfig

    assert TrainConfig(arch="toy").resolve().arch == "toy"  # a registered arch is accepted as is
    for stride, cells in ((32, 2), (16, 4)):
        model = create_model(ModelConfig(variant="resnet_drs", arch="toy", num_classes=3, output_stride=stride,
                                         drs_positions=("all_blocks",))).eval()
        out = model(torch.rand(2, 3, 64, 64))
        assert out.features.shape == (2, 32, cells, cells) and out.logits.shape == (2, 3)
        assert sum(isinstance(m, DRS) for m in model.modules()) == 6  # one after each of the 6 blocks
    cams = compute_cams(model, torch.rand(2, 3, 64, 64))
    assert cams.cams.shape == (2, 4, 4) and torch.isfinite(cams.cams).all()
    with pytest.raises(ValueError, match="no ImageNet weights"):
        create_model(ModelConfig(variant="resnet", arch="toy", num_classes=3, weights="imagenet"))


@pytest.mark.parametrize("overrides, message", [
    (dict(arch="vgg_nonexistent"), "unknown arch"),
    (dict(arch="efficientnet_b0", image_size=48, output_stride=32), "at least 2x2 cells"),
    (dict(model="resnet_drs", drs_positions=("layer4", "layer4_blocks")), "delta\\^2"),
])
def test_bad_backbone_options_get_a_clear_error(overrides, message) -> None:
    from crm_core.train_config import TrainConfig

    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides).resolve()


def test_learnable_drs_trains_on_efficientnet_and_last2_freezes_the_rest() -> None:
    model = create_model(ModelConfig(variant="resnet_drs", arch="efficientnet_b0", num_classes=3, output_stride=16,
                                     drs_learnable=True, freeze="last2"))
    layers = [m for m in model.modules() if isinstance(m, DRS)]
    assert layers and all(layer.learnable for layer in layers)
    out = model(torch.rand(2, 3, 64, 64))
    out.logits.sum().backward()
    assert all(layer.delta_fc.weight.grad is not None and layer.delta_fc.weight.grad.abs().sum() > 0
               for layer in layers)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"layer4", "fc"}
