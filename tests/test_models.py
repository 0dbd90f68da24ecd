"""Backbone, DRS, ReconstructNet and the registry."""
from __future__ import annotations

import pytest
import torch

from crm_core.models import DRS, MODEL_VARIANTS, ModelConfig, ReconstructNet, create_model, delta_override
from crm_core.models.decoder import ChannelAffineLayerNorm, num_up_blocks


@pytest.mark.parametrize("variant", sorted(MODEL_VARIANTS))
@pytest.mark.parametrize("arch,stride,size,expected", [("resnet18", 16, 64, 4), ("resnet18", 32, 64, 2), ("resnet34", 16, 96, 6)])
def test_variant_shapes(variant: str, arch: str, stride: int, size: int, expected: int) -> None:
    model = create_model(ModelConfig(variant=variant, arch=arch, num_classes=5, output_stride=stride))
    out = model(torch.rand(2, 3, size, size))
    assert out.logits.shape == (2, 5)
    assert out.features.shape[-2:] == (expected, expected)
    # the head sits on GAP of exactly these features
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
        assert num_up_blocks(image_size, cam_size) == 5  # DESIGN: 5 up-blocks take 7x7 to 224x224


def test_layernorm_normalises_over_chw_per_sample() -> None:
    norm = ChannelAffineLayerNorm(4)
    x = torch.randn(3, 4, 5, 5) * 3 + 2
    y = norm(x)
    assert torch.allclose(y.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.var(dim=(1, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)
