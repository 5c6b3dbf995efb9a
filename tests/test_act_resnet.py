"""Our ResNet18 backbone: shapes, frozen batch norm, torchvision-format weight loading."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from act_testutils import single_thread  # noqa: F401
from robotrain.errors import CheckpointError, ConfigError
from robotrain.policies.act.resnet import FrozenBatchNorm2d, ResNetBackbone


def torchvision_style_state_dict(net: ResNetBackbone, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with torchvision's resnet18 key format: our keys plus
    `num_batches_tracked` for every norm and the classifier `fc.*`."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in net.state_dict().items():
        if name.endswith("running_var"):
            state[name] = torch.rand(value.shape, generator=g) + 0.5
        else:
            state[name] = torch.randn(value.shape, generator=g) * 0.05
        if name.endswith("running_var"):
            state[name.replace("running_var", "num_batches_tracked")] = torch.tensor(7)
    state["fc.weight"] = torch.randn(1000, 512, generator=g)
    state["fc.bias"] = torch.randn(1000, generator=g)
    return state


def test_shapes_and_output_hw():
    net = ResNetBackbone().eval()
    for h, w in [(64, 80), (96, 128), (33, 47)]:
        out = net(torch.rand(1, 3, h, w))
        assert out.shape[:2] == (1, 512)
        assert tuple(out.shape[-2:]) == net.output_hw(h, w)
    assert net.output_hw(480, 640) == (15, 20)
    assert net.output_hw(240, 320) == (8, 10)
    assert net.output_hw(224, 224) == (7, 7)


def test_dilation_keeps_stride_16():
    net = ResNetBackbone(dilate_last=True).eval()
    out = net(torch.rand(1, 3, 64, 96))
    assert tuple(out.shape[-2:]) == net.output_hw(64, 96) == (4, 6)


def test_frozen_batch_norm_has_only_buffers():
    bn = FrozenBatchNorm2d(4)
    assert list(bn.parameters()) == []
    assert sorted(bn.state_dict()) == ["bias", "running_mean", "running_var", "weight"]
    bn.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    bn.running_mean.fill_(0.5)
    bn.running_var.fill_(4.0)
    x = torch.randn(2, 4, 3, 3)
    ref = torch.nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, 1e-5)
    torch.testing.assert_close(bn(x), ref)
    net = ResNetBackbone()
    assert not any("num_batches_tracked" in k for k in net.state_dict())
    # Only conv weights are trainable.
    assert all(name.endswith("weight") and p.dim() == 4 for name, p in net.named_parameters())


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_torchvision_weights(tmp_path, suffix):
    net = ResNetBackbone()
    state = torchvision_style_state_dict(net)
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    net.load_torchvision_weights(path)
    own = net.state_dict()
    for name, value in own.items():
        torch.testing.assert_close(value, state[name], msg=name)


def test_load_rejects_missing_and_mismatched(tmp_path):
    net = ResNetBackbone()
    state = torchvision_style_state_dict(net)
    missing = dict(state)
    del missing["layer3.1.conv2.weight"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="layer3.1.conv2.weight"):
        net.load_torchvision_weights(tmp_path / "missing.pth")
    bad = dict(state)
    bad["conv1.weight"] = torch.zeros(64, 3, 3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="conv1.weight"):
        net.load_torchvision_weights(tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="not found"):
        net.load_torchvision_weights(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        net.load_torchvision_weights(tmp_path / "junk.pth")


def test_unknown_backbone():
    with pytest.raises(ConfigError, match="vision_backbone"):
        ResNetBackbone("resnet50")
