"""SmolVLA configuration: LeRobot 0.4.4's field names and defaults, plus three of ours.

Sources of the defaults: LeRobot's `SmolVLAConfig` (written to `config.json` by
`lerobot-train --policy.type=smolvla`) and Shukor et al. 2025, see
`../shared/docs/lerobot-reference.md` §5. `from_lerobot_dict` reads such a `config.json`;
`to_lerobot_dict` writes one LeRobot can read back.

Ours (never written to LeRobot's config.json):
- `vlm`: where the SmolVLM2 backbone comes from: a local snapshot directory (config.json,
  model.safetensors, tokenizer.json), "tiny" (a small random model for tests and CPU
  smoke runs), "sim" (a small random model sized for the simulated SO-101 on a CPU, the
  `smolvla_sim` preset's) or "full-random" (the full SmolVLM2-500M shape, random weights, for
  benchmarks). Nothing is ever downloaded.
- `pretrained`: a local LeRobot SmolVLA checkpoint directory (config.json +
  model.safetensors) whose weights are loaded strictly after building.
- `gradient_checkpointing`: recompute each transformer layer in backward to save memory.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from robotrain.config import flags as config_flags
from robotrain.constants import TASK
from robotrain.errors import ConfigError
from robotrain.policies.base import PolicyConfig, PolicyFeatures

logger = logging.getLogger(__name__)

VLM_TINY = "tiny"
VLM_SIM = "sim"
VLM_FULL_RANDOM = "full-random"
ATTENTION_MODES = ("cross_attn", "self_attn")
PAD_LANGUAGE_MODES = ("longest", "max_length")

# Fields of our config that LeRobot's config.json does not have.
_OURS = ("vlm", "pretrained", "gradient_checkpointing", "scheduler")
# LeRobot SmolVLA options for ALOHA / real-time chunking that we do not implement.
_UNSUPPORTED_IF_SET = (
    "adapt_to_pi_aloha", "use_delta_joint_actions_aloha", "rtc_config", "fine_tune_vision_encoder"
)
# Fields every LeRobot PreTrainedConfig writes, with the values we write (informational only).
_LEROBOT_BASE_FIELDS: dict[str, Any] = {
    "device": "cpu",
    "use_amp": False,
    "use_peft": False,
    "push_to_hub": False,
    "repo_id": None,
    "private": None,
    "tags": None,
    "license": None,
    "pretrained_path": None,
}


@dataclass
class SmolVLAConfig(PolicyConfig):
    """SmolVLA (Shukor et al. 2025): SmolVLM2 prefix + flow-matching action expert."""

    type: ClassVar[str] = "smolvla"
    lerobot_only_fields: ClassVar[frozenset[str]] = frozenset(
        {"adapt_to_pi_aloha", "use_delta_joint_actions_aloha", "rtc_config", "compile_model", "compile_mode",
         "fine_tune_vision_encoder"})

    # --- input / output structure -------------------------------------------------
    chunk_size: int = 50
    """Actions predicted per forward pass."""
    n_action_steps: int = 50
    """Actions of a chunk executed before predicting again."""
    n_obs_steps: int = 1
    max_state_dim: int = 32
    """State is zero-padded to this size before `state_proj` (pretrained checkpoints use 32)."""
    max_action_dim: int = 32
    """Actions are zero-padded to this size inside the model and cut back at the output."""
    resize_imgs_with_padding: tuple[int, int] | None = (512, 512)
    """(width, height) images are resized to, aspect kept, padded left/top. None: no resize."""
    empty_cameras: int = 0
    """Extra all-black (masked) cameras appended to the prefix (LeRobot's aloha setups)."""
    tokenizer_max_length: int = 48
    """Task strings are truncated to this many tokens."""
    pad_language_to: str = "longest"
    """"longest" (LeRobot's default: pad to the longest task in the batch) or "max_length"."""

    # --- decoding -------------------------------------------------------------------
    num_steps: int = 10
    """Euler steps from t=1 (noise) to t=0 (actions) at inference."""
    use_cache: bool = True
    """Cache the prefix keys/values across the denoising steps."""

    # --- finetuning -------------------------------------------------------------------
    freeze_vision_encoder: bool = True
    train_expert_only: bool = True
    """Freeze the whole VLM; only the action expert and projections train (paper default)."""
    train_state_proj: bool = True

    # --- architecture -------------------------------------------------------------------
    vlm_model_name: str = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
    """Hub id LeRobot records; we never contact the hub (see `vlm`)."""
    load_vlm_weights: bool = False
    """Load the VLM weights of the `vlm` snapshot (LeRobot: True to train the expert from
    scratch on a pretrained VLM; False when weights come from a SmolVLA checkpoint)."""
    add_image_special_tokens: bool = False
    attention_mode: str = "cross_attn"
    """"cross_attn": expert layers alternate cross-attention to the VLM keys/values and
    self-attention over [prefix; actions]; "self_attn": every layer is joint self-attention."""
    prefix_length: int = -1
    num_expert_layers: int = -1
    """<= 0: the expert has as many layers as the (cut) VLM (the only supported layout)."""
    num_vlm_layers: int = 16
    """Only the first `num_vlm_layers` decoder layers of SmolVLM2 are kept."""
    self_attn_every_n_layers: int = 2
    """Expert layer i is self-attention when i % n == 0, else cross-attention."""
    expert_width_multiplier: float = 0.75
    """Expert hidden size relative to the VLM's (960 * 0.75 = 720)."""
    min_period: float = 4e-3
    """Smallest period of the sinusoidal flow-time embedding."""
    max_period: float = 4.0

    # --- training presets (LeRobot's) ---------------------------------------------------
    optimizer_lr: float = 1e-4
    optimizer_betas: tuple[float, float] = (0.9, 0.95)
    optimizer_eps: float = 1e-8
    optimizer_weight_decay: float = 1e-10
    optimizer_grad_clip_norm: float = 10.0
    scheduler: str = "cosine"
    scheduler_warmup_steps: int = 1_000
    scheduler_decay_steps: int = 30_000
    scheduler_decay_lr: float = 2.5e-6

    normalization_mapping: dict[str, str] = field(
        default_factory=lambda: {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
    )
    """Images are only scaled to [-1, 1] (SigLIP's range); state and action use mean/std."""

    # --- ours -------------------------------------------------------------------------
    vlm: str | None = None
    """Local SmolVLM2 snapshot dir, "tiny" or "full-random". None: look for
    `vlm_model_name` in the local Hugging Face cache (never downloads)."""
    pretrained: str | None = None
    """Local LeRobot SmolVLA checkpoint dir (config.json + model.safetensors)."""
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.optimizer_betas, list):
            self.optimizer_betas = tuple(self.optimizer_betas)  # type: ignore[assignment]
        if isinstance(self.resize_imgs_with_padding, list):
            self.resize_imgs_with_padding = tuple(self.resize_imgs_with_padding)  # type: ignore[assignment]
        if self.n_obs_steps != 1:
            raise ConfigError(f"n_obs_steps must be 1 for SmolVLA, got {self.n_obs_steps}")
        if self.attention_mode not in ATTENTION_MODES:
            raise ConfigError(f"attention_mode must be one of {ATTENTION_MODES}, got {self.attention_mode!r}")
        if self.pad_language_to not in PAD_LANGUAGE_MODES:
            raise ConfigError(f"pad_language_to must be one of {PAD_LANGUAGE_MODES}, got {self.pad_language_to!r}")
        for name in ("max_state_dim", "max_action_dim", "tokenizer_max_length", "num_steps", "num_vlm_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_expert_layers > 0 and self.num_expert_layers != self.num_vlm_layers:
            raise ConfigError(
                f"num_expert_layers={self.num_expert_layers} differs from num_vlm_layers={self.num_vlm_layers}; "
                "only an expert as deep as the VLM (num_expert_layers=-1) is supported"
            )
        if not 0.0 < self.expert_width_multiplier <= 4.0:
            raise ConfigError(f"expert_width_multiplier must be in (0, 4], got {self.expert_width_multiplier}")
        if not 0.0 < self.min_period < self.max_period:
            raise ConfigError(f"need 0 < min_period < max_period, got {self.min_period}, {self.max_period}")
        if self.resize_imgs_with_padding is not None and (
            len(self.resize_imgs_with_padding) != 2 or min(self.resize_imgs_with_padding) < 1
        ):
            raise ConfigError(f"resize_imgs_with_padding must be (width, height), got {self.resize_imgs_with_padding}")
        if self.empty_cameras < 0:
            raise ConfigError(f"empty_cameras must be >= 0, got {self.empty_cameras}")
        if self.add_image_special_tokens:
            raise ConfigError("add_image_special_tokens=True is not supported (LeRobot's default is False)")
        if self.prefix_length > 0:
            raise ConfigError("prefix_length > 0 (fixed prefix padding) is not supported; use -1")

    def image_input(self) -> tuple[tuple[int, int] | None, str]:
        """SmolVLA fits every frame into `resize_imgs_with_padding` (W, H) with padding."""
        if self.resize_imgs_with_padding is None:
            return None, "pad"
        width, height = self.resize_imgs_with_padding
        return (int(height), int(width)), "pad"

    def with_image_input(self, size: tuple[int, int] | None, mode: str | None) -> SmolVLAConfig:
        if mode == "resize" and size is None:  # run configs saved before the default became None
            return self
        if mode not in (None, "pad"):
            raise ConfigError(f"SmolVLA pads frames into its input size (resize_mode 'pad'), got {mode!r}")
        if size is None:
            return self
        return dataclasses.replace(self, resize_imgs_with_padding=(int(size[1]), int(size[0])))

    # --- LeRobot config.json --------------------------------------------------------
    @classmethod
    def from_lerobot_dict(cls, data: Mapping[str, Any], **overrides: Any) -> SmolVLAConfig:
        """Build from LeRobot's `config.json` content; LeRobot-only fields are ignored.

        `overrides` sets our own fields (e.g. `vlm="/path/to/snapshot"`)."""
        # Our own fields come along when `data` is our robotrain_config.json's policy section.
        kwargs = cls.fields_of_lerobot_dict(data)
        unsupported = [k for k in _UNSUPPORTED_IF_SET if data.get(k)]
        if unsupported:
            raise ConfigError(f"config.json enables LeRobot options robotrain does not implement: {unsupported}")
        ignored = sorted(set(data) - set(kwargs) - {"type", "input_features", "output_features"} - set(_LEROBOT_BASE_FIELDS))
        if ignored:
            logger.info("ignoring LeRobot SmolVLA config fields without effect here: %s", ignored)
        # LeRobot has one cosine-with-warmup preset for SmolVLA.
        kwargs.setdefault("scheduler", "cosine")
        kwargs.update(overrides)
        return config_flags.from_dict(cls, kwargs, keys=True)

    def to_lerobot_dict(self, features: PolicyFeatures | None = None) -> dict[str, Any]:
        """The `config.json` LeRobot writes for this policy (our own fields left out)."""
        out: dict[str, Any] = {"type": self.type, "n_obs_steps": self.n_obs_steps}
        if features is not None:
            out.update(features.to_lerobot())
        out.update(_LEROBOT_BASE_FIELDS)
        for f in dataclasses.fields(self):
            if f.name in _OURS or f.name in out:
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def lerobot_preprocessor_steps(self) -> list[dict[str, Any]]:
        """LeRobot's SmolVLA preprocessor: the task gets its newline, then the VLM's tokenizer
        (named by `vlm_model_name`, as LeRobot resolves it) runs with these settings."""
        return [
            {"registry_name": "smolvla_new_line_processor", "config": {}},
            {"registry_name": "tokenizer_processor",
             "config": {"max_length": self.tokenizer_max_length, "task_key": TASK, "padding_side": "right",
                        "padding": self.pad_language_to, "truncation": True,
                        "tokenizer_name": self.vlm_model_name}},
        ]
