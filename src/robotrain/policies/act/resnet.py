"""ResNet18/34 feature extractor (up to layer4) with frozen batch norm, torchvision-free.

ACT runs every camera image through an ImageNet ResNet18 cut after layer4 (512 channels,
stride 32: 480x640 -> 15x20). Batch norm is frozen (statistics and affine terms are
buffers), as in DETR/ACT, because batches are small and images of one episode correlated.
Parameter names follow torchvision (`conv1`, `bn1`, `layer1.0.conv1`, ...
`layer2.0.downsample.0/1`) so that torchvision's ImageNet state dicts load directly and the
policy's `model.backbone.*` keys equal LeRobot's.

Example:
    >>> net = ResNetBackbone("resnet18")
    >>> net(torch.zeros(1, 3, 480, 640)).shape
    torch.Size([1, 512, 15, 20])
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from robotrain.errors import CheckpointError, ConfigError

# Blocks per stage of the BasicBlock ResNets (He et al. 2016, table 1).
BLOCKS_PER_STAGE = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}
OUT_CHANNELS = 512


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine terms, all four stored as buffers
    (no `num_batches_tracked`), eps 1e-5 like torchvision's."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C, H, W)
        scale = self.weight * (self.running_var + self.eps).rsqrt()  # (C,)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def _conv3x3(in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; `downsample` (1x1 conv + norm) when the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_ch, out_ch, stride, dilation)
        self.bn1 = FrozenBatchNorm2d(out_ch)
        self.conv2 = _conv3x3(out_ch, out_ch, 1, dilation)
        self.bn2 = FrozenBatchNorm2d(out_ch)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), FrozenBatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity, inplace=True)


class ResNetBackbone(nn.Module):
    """conv1 -> bn1 -> relu -> maxpool -> layer1..layer4; (B, 3, H, W) -> (B, 512, H/32, W/32).

    `dilate_last`: layer4 keeps stride 1 and dilates its second+ blocks by 2 instead
    (torchvision's `replace_stride_with_dilation=[False, False, True]`), giving stride 16.
    """

    def __init__(self, name: str = "resnet18", dilate_last: bool = False) -> None:
        super().__init__()
        if name not in BLOCKS_PER_STAGE:
            raise ConfigError(f"vision_backbone must be one of {sorted(BLOCKS_PER_STAGE)}, got {name!r}")
        self.name = name
        self.dilate_last = dilate_last
        self.gradient_checkpointing = False  # recompute each stage (stem, layer1..4) in backward
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = FrozenBatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        for i, (width, blocks) in enumerate(zip((64, 128, 256, 512), BLOCKS_PER_STAGE[name]), start=1):
            stride = 1 if i == 1 else 2
            dilation = 1
            if i == 4 and dilate_last:
                stride, dilation = 1, 2
            # As in torchvision: the first block keeps the previous dilation (1).
            layers = [BasicBlock(in_ch, width, stride)]
            layers += [BasicBlock(width, width, 1, dilation) for _ in range(blocks - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*layers))
            in_ch = width
        self._init_weights()

    def _init_weights(self) -> None:
        # torchvision's initialisation: He normal (fan_out) for convs; norms at identity.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def stride(self) -> int:
        return 16 if self.dilate_last else 32

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        """Feature map size for an input of (height, width): ceil(size / stride)."""

        def out(size: int) -> int:
            size = (size + 2 * 3 - 7) // 2 + 1  # conv1
            size = (size + 2 * 1 - 3) // 2 + 1  # maxpool
            for _ in range(2 if self.dilate_last else 3):
                size = (size + 2 * 1 - 3) // 2 + 1  # stride-2 3x3 conv opening layer2, 3 (, 4)
            return size

        return out(height), out(width)

    def _stem(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, 64, H/4, W/4)
        return self.maxpool(F.relu(self.bn1(self.conv1(x)), inplace=True))

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, 512, h, w)
        stages = (self._stem, self.layer1, self.layer2, self.layer3, self.layer4)
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            # Keep only each stage's input; its activations are recomputed in backward.
            for stage in stages:
                x = checkpoint(stage, x, use_reentrant=False)
            return x
        for stage in stages:
            x = stage(x)
        return x

    def load_torchvision_weights(self, path: str | Path) -> None:
        """Load a torchvision-format ResNet state dict (.pth/.pt via `torch.load(weights_only=True)`,
        or .safetensors). `fc.*` and `num_batches_tracked` are ignored; any missing or
        mis-shaped key raises CheckpointError naming the file."""
        path = Path(path)
        state = _read_state_dict(path)
        own = self.state_dict()
        state = {
            k: v for k, v in state.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
        }
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise CheckpointError(
                f"not a torchvision {self.name} state dict: missing {missing[:5]}"
                f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                f"{'...' if len(unexpected) > 5 else ''}",
                path,
            )
        bad = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in state.items() if v.shape != own[k].shape]
        if bad:
            raise CheckpointError(f"shape mismatch for {len(bad)} tensors, e.g. {bad[0]}", path)
        self.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def _read_state_dict(path: Path) -> Mapping[str, Tensor]:
    if not path.is_file():
        raise CheckpointError("backbone weights file not found", path)
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt/unsupported file: one typed error with the reason
        raise CheckpointError(f"cannot read backbone weights ({type(exc).__name__}: {exc})", path) from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError("backbone weights file does not hold a flat {name: tensor} state dict", path)
    return state
