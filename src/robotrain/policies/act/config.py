"""ACT configuration: LeRobot's `config.json` field names and published defaults.

The ACT fields mirror LeRobot 0.4.4's `ACTConfig` one to one, so a LeRobot checkpoint's
`config.json` loads with `ACTConfig.from_lerobot_dict(json.load(f))` and
`to_lerobot_dict()` writes a file LeRobot can read back. robotrain adds, at the end:
`image_size` / `resize_mode` (ACT's biggest cost is 602 encoder tokens at 480x640; see
shared docs §7), optional image augmentation for real-robot data (off by default) and
`gradient_checkpointing`; none of them is written to LeRobot's config.json.

Example:
    >>> cfg = ACTConfig(image_size="240x320", dim_model=256)
    >>> cfg.image_size
    (240, 320)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from robotrain.config import flags as config_flags
from robotrain.data.images import check_mode, parse_image_size
from robotrain.errors import ConfigError
from robotrain.policies.base import PolicyConfig, PolicyFeatures

logger = logging.getLogger(__name__)

# Backbones we implement ourselves (no torchvision): BasicBlock ResNets with 512 channels out.
SUPPORTED_BACKBONES = ("resnet18", "resnet34")
ACTIVATIONS = ("relu", "gelu")
L1_REDUCTIONS = ("all", "valid")
NORM_TYPES = ("VISUAL", "STATE", "ACTION")

# torchvision's name for ImageNet weights (LeRobot's default value of the field); we cannot
# download, so it resolves to torch hub's cache file when present (see `resolve_backbone_weights`).
_TORCHVISION_WEIGHTS_RE = re.compile(r"^ResNet(18|34)_Weights\.\w+$")
_TORCH_HUB_FILES = {
    "ResNet18_Weights.IMAGENET1K_V1": "resnet18-f37072fd.pth",
    "ResNet34_Weights.IMAGENET1K_V1": "resnet34-b627a593.pth",
}

# LeRobot's ACT config.json fields (besides `type`), in LeRobot's order.
LEROBOT_FIELDS = (
    "n_obs_steps",
    "chunk_size",
    "n_action_steps",
    "normalization_mapping",
    "vision_backbone",
    "pretrained_backbone_weights",
    "replace_final_stride_with_dilation",
    "pre_norm",
    "dim_model",
    "n_heads",
    "dim_feedforward",
    "feedforward_activation",
    "n_encoder_layers",
    "n_decoder_layers",
    "use_vae",
    "latent_dim",
    "n_vae_encoder_layers",
    "temporal_ensemble_coeff",
    "dropout",
    "kl_weight",
    "optimizer_lr",
    "optimizer_weight_decay",
    "optimizer_lr_backbone",
)


@dataclass
class ACTConfig(PolicyConfig):
    """Action Chunking with Transformers (Zhao et al. 2023), LeRobot's defaults.

    Inherited from `PolicyConfig`: chunk_size 100, n_action_steps 100, n_obs_steps 1,
    optimizer_lr 1e-5, optimizer_weight_decay 1e-4 (AdamW, betas 0.9/0.999, grad clip 10,
    no scheduler: LeRobot's ACT preset), normalization_mapping (mean/std everywhere).
    """

    type: ClassVar[str] = "act"

    # --- vision backbone -------------------------------------------------------------
    vision_backbone: str = "resnet18"
    """ResNet used per camera, cut after layer4 (512 channels, stride 32)."""
    pretrained_backbone_weights: str | None = None
    """A LOCAL torchvision-format ResNet state dict (.pth or .safetensors), or None for a
    random backbone. LeRobot's default is "ResNet18_Weights.IMAGENET1K_V1" (downloaded by
    torchvision); we never download, so that name only resolves to torch hub's cache file
    ($TORCH_HOME/hub/checkpoints/resnet18-f37072fd.pth) if it is there."""
    replace_final_stride_with_dilation: bool = False
    """Dilate layer4 instead of striding (stride 16, 4x the image tokens). torchvision,
    hence LeRobot, refuses this for BasicBlock ResNets; we support it."""

    # --- transformer -----------------------------------------------------------------
    pre_norm: bool = False
    """LayerNorm before (True) or after (False, the paper) each attention/FFN block."""
    dim_model: int = 512
    """Transformer width; every token (latent, state, image patch, action query) has it."""
    n_heads: int = 8
    """Attention heads; must divide dim_model."""
    dim_feedforward: int = 3200
    """Hidden size of each transformer layer's feed-forward block (the paper's 3200)."""
    feedforward_activation: str = "relu"
    """Feed-forward activation: "relu" or "gelu"."""
    n_encoder_layers: int = 4
    """Layers of the main (observation) encoder."""
    n_decoder_layers: int = 1
    """Decoder layers. The original ACT code builds 7 but, through a bug, only uses the
    first; LeRobot (and we) build 1 to match what was actually trained."""

    # --- VAE ------------------------------------------------------------------------
    use_vae: bool = True
    """Train with the CVAE objective (a style latent inferred from the action chunk)."""
    latent_dim: int = 32
    """Size of the VAE latent; zero at inference."""
    n_vae_encoder_layers: int = 4
    """Layers of the VAE encoder (training only)."""

    # --- inference ------------------------------------------------------------------
    temporal_ensemble_coeff: float | None = None
    """Temporal ensembling weight decay m in exp(-m * i), i = 0 for the oldest prediction
    (paper: 0.01). None disables it; when set, n_action_steps must be 1 (a new chunk every
    step)."""

    # --- training -------------------------------------------------------------------
    dropout: float = 0.1
    """Dropout in every transformer layer (attention weights, residual branches, FFN)."""
    kl_weight: float = 10.0
    """Weight of the KL term: loss = l1 + kl_weight * kld."""
    optimizer_lr_backbone: float = 1e-5
    """Learning rate of the ResNet parameters (their own AdamW group)."""

    # --- robotrain additions (not in LeRobot's config.json) --------------------------
    l1_reduction: str = "all"
    """How the masked L1 is averaged. "all" (the paper's and LeRobot's): padded steps count
    as zero error and the mean runs over every (step, joint), so chunks near an episode's
    end weigh less. "valid": the mean runs over non-padded steps only."""

    image_size: tuple[int, int] | None = None
    """(H, W) every camera is fed at, e.g. "240x320" (162 encoder tokens for two cameras
    instead of 602 at 480x640); None keeps the dataset's native size. The dataset cache
    resizes once; batches at another size are resized inside the policy."""
    resize_mode: str = "resize"
    """"resize" stretches to image_size; "pad" keeps the aspect ratio and pads left/top."""
    gradient_checkpointing: bool = False
    """Recompute the ResNet stages and the transformer layers in backward
    (torch.utils.checkpoint) instead of keeping their activations: far less memory per
    sample for about one more forward pass of compute; losses and gradients are unchanged
    (the dropout masks are replayed). `robotrain plan` shows the difference."""
    augment: bool = False
    """Random photometric + crop augmentation of training images (real-robot data)."""
    augment_brightness: float = 0.2
    """Brightness factor drawn from [1 - b, 1 + b] per image; 0 disables."""
    augment_contrast: float = 0.2
    """Contrast factor drawn from [1 - c, 1 + c] per image; 0 disables."""
    augment_saturation: float = 0.5
    """Saturation factor drawn from [1 - s, 1 + s] per image; 0 disables."""
    augment_hue: float = 0.05
    """Hue shift drawn from [-h, h] turns (at most 0.5) per image; 0 disables."""
    augment_sharpness: float = 0.5
    """Sharpness factor drawn from [1 - s, 1 + s] per image; 0 disables."""
    augment_crop_scale: float = 0.9
    """Random crop keeping a fraction in [scale, 1] of each side, resized back; 1 disables."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.image_size = parse_image_size(self.image_size)
        if isinstance(self.optimizer_betas, list):
            self.optimizer_betas = tuple(self.optimizer_betas)  # type: ignore[assignment]
        if self.n_obs_steps != 1:
            raise ConfigError(f"n_obs_steps: ACT uses one observation, got {self.n_obs_steps}")
        if self.vision_backbone not in SUPPORTED_BACKBONES:
            raise ConfigError(f"vision_backbone must be one of {SUPPORTED_BACKBONES}, got {self.vision_backbone!r}")
        if self.pretrained_backbone_weights is not None and not isinstance(self.pretrained_backbone_weights, str):
            raise ConfigError(
                f"pretrained_backbone_weights must be a file path or None, got {self.pretrained_backbone_weights!r}"
            )
        for name in ("dim_model", "n_heads", "dim_feedforward", "n_encoder_layers", "n_decoder_layers", "latent_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.use_vae and self.n_vae_encoder_layers < 1:
            raise ConfigError(f"n_vae_encoder_layers must be >= 1 when use_vae, got {self.n_vae_encoder_layers}")
        if self.dim_model % self.n_heads:
            raise ConfigError(f"n_heads ({self.n_heads}) must divide dim_model ({self.dim_model})")
        if self.dim_model % 2:
            raise ConfigError(f"dim_model must be even (2D sinusoidal position embedding), got {self.dim_model}")
        if self.feedforward_activation not in ACTIVATIONS:
            raise ConfigError(
                f"feedforward_activation must be one of {ACTIVATIONS}, got {self.feedforward_activation!r}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.kl_weight < 0:
            raise ConfigError(f"kl_weight must be >= 0, got {self.kl_weight}")
        if self.temporal_ensemble_coeff is not None and self.n_action_steps != 1:
            raise ConfigError(
                "n_action_steps must be 1 when temporal_ensemble_coeff is set (a new chunk is predicted "
                f"every step), got {self.n_action_steps}"
            )
        for name in ("optimizer_lr", "optimizer_lr_backbone", "optimizer_weight_decay"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for kind in NORM_TYPES:
            if kind not in self.normalization_mapping:
                raise ConfigError(f"normalization_mapping lacks {kind!r}: {self.normalization_mapping}")
        if self.l1_reduction not in L1_REDUCTIONS:
            raise ConfigError(f"l1_reduction must be one of {L1_REDUCTIONS}, got {self.l1_reduction!r}")
        check_mode(self.resize_mode)
        for name in ("augment_brightness", "augment_contrast", "augment_saturation", "augment_sharpness"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0.0 <= self.augment_hue <= 0.5:
            raise ConfigError(f"augment_hue must be in [0, 0.5], got {self.augment_hue}")
        if not 0.0 < self.augment_crop_scale <= 1.0:
            raise ConfigError(f"augment_crop_scale must be in (0, 1], got {self.augment_crop_scale}")

    # --- LeRobot config.json -----------------------------------------------------------

    @classmethod
    def from_lerobot_dict(cls, d: Mapping[str, Any]) -> ACTConfig:
        """Build from a LeRobot ACT `config.json` (or our `to_dict()`); unknown fields
        (device, push_to_hub, input_features, ...) are ignored with a debug log."""
        kwargs = cls.fields_of_lerobot_dict(d)
        ignored = sorted(set(d) - set(kwargs) - {"type"})
        if ignored:
            logger.debug("ACT config: ignoring LeRobot's fields %s", ignored)
        weights = kwargs.get("pretrained_backbone_weights")
        if isinstance(weights, str) and _TORCHVISION_WEIGHTS_RE.match(weights):
            kwargs["pretrained_backbone_weights"] = resolve_torchvision_weights_name(weights)
        return config_flags.from_dict(cls, kwargs, keys=True)

    def to_lerobot_dict(self, features: PolicyFeatures | None = None, device: str = "cpu") -> dict[str, Any]:
        """LeRobot's ACT `config.json` content, in LeRobot's field order, with only fields
        LeRobot knows (so LeRobot can parse it). A local backbone weights path is written as
        null: the trained weights live in model.safetensors, and LeRobot would read the
        field as a torchvision weights name."""
        out: dict[str, Any] = {"type": self.type, "n_obs_steps": self.n_obs_steps}
        if features is not None:
            out.update(features.to_lerobot())
        out.update(
            device=device,
            use_amp=False,
            use_peft=False,
            push_to_hub=False,
            repo_id=None,
            private=None,
            tags=None,
            license=None,
            pretrained_path=None,
        )
        for name in LEROBOT_FIELDS:
            value = getattr(self, name)
            if name == "pretrained_backbone_weights" and value is not None and not _TORCHVISION_WEIGHTS_RE.match(value):
                logger.debug("config.json: writing pretrained_backbone_weights=null instead of local %s", value)
                value = None
            out[name] = dict(value) if isinstance(value, dict) else value
        return out

    def to_dict(self) -> dict[str, Any]:
        """Every field (LeRobot's and robotrain's), JSON-ready; `from_lerobot_dict` reads it."""
        out = super().to_dict()
        out["image_size"] = list(self.image_size) if self.image_size is not None else None
        out["optimizer_betas"] = list(self.optimizer_betas)
        return out

    def image_input(self) -> tuple[tuple[int, int] | None, str]:
        return self.image_size, self.resize_mode

    def with_image_input(self, size: tuple[int, int] | None, mode: str | None) -> ACTConfig:
        changes: dict[str, Any] = {}
        if size is not None:
            changes["image_size"] = tuple(size)
        if mode is not None:
            changes["resize_mode"] = mode
        return dataclasses.replace(self, **changes) if changes else self


def resolve_torchvision_weights_name(name: str) -> str | None:
    """Map torchvision's "ResNet18_Weights.IMAGENET1K_V1" to torch hub's cached file, or
    None (random backbone, with a warning) when it is not on this machine."""
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    file_name = _TORCH_HUB_FILES.get(name)
    if file_name is not None and (torch_home / "hub" / "checkpoints" / file_name).is_file():
        return str(torch_home / "hub" / "checkpoints" / file_name)
    logger.warning(
        "pretrained_backbone_weights %r is not available offline (no %s in torch hub's cache); "
        "the backbone starts random unless checkpoint weights are loaded. Pass a local file to use "
        "ImageNet weights.",
        name,
        file_name or "file",
    )
    return None
