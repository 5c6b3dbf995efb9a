"""The contract between policies and the rest of robotrain.

The training loop, offline evaluation and sim rollouts only use what is here; nothing
outside `policies/<name>/` knows what a policy is made of (house rule 3).

A policy receives *raw* batches, exactly what the dataset yields (state and action in
joint units, images float32 (B, C, H, W) in [0, 1], `action_is_pad`, `task` strings) and
returns actions in joint units. Normalisation happens inside the policy with a
`robotrain.policies.normalize.Normalizer`, whose statistics are saved next to (not inside)
`model.safetensors`, as LeRobot does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn

from robotrain.errors import ConfigError

Batch = Mapping[str, Any]


@dataclass(frozen=True)
class PolicyFeatures:
    """What a policy needs to know about the dataset it is built for."""

    state_dim: int
    """Size of `observation.state` (6 for the SO-101)."""
    action_dim: int
    """Size of `action` (6 for the SO-101)."""
    camera_keys: tuple[str, ...]
    """Image keys in a fixed order, e.g. ("observation.images.front", "observation.images.wrist")."""
    image_shape: tuple[int, int, int]
    """(C, H, W) of the camera frames as recorded (LeRobot's `input_features` shape). What
    the policy is fed is its config's `image_input()`; the sim renders at this size."""
    fps: int = 30


@dataclass
class PolicyConfig:
    """Fields every policy config has. Subclasses add their own, with published defaults.

    `type` names the policy in the registry and in LeRobot's `config.json`.
    """

    type: ClassVar[str] = ""

    chunk_size: int = 100
    """Number of future actions predicted at once."""
    n_action_steps: int = 100
    """How many actions of a predicted chunk are executed before predicting again."""
    n_obs_steps: int = 1
    """Observation history length (1 for ACT and SmolVLA)."""

    optimizer_lr: float = 1e-5
    optimizer_betas: tuple[float, float] = (0.9, 0.999)
    optimizer_eps: float = 1e-8
    optimizer_weight_decay: float = 1e-4
    optimizer_grad_clip_norm: float = 10.0
    scheduler: str = "none"
    """"none" or "cosine" (linear warmup then cosine decay to `scheduler_decay_lr`)."""
    scheduler_warmup_steps: int = 0
    scheduler_decay_steps: int = 0
    scheduler_decay_lr: float = 0.0

    normalization_mapping: dict[str, str] = field(
        default_factory=lambda: {"VISUAL": "MEAN_STD", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
    )

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise ConfigError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise ConfigError(
                f"n_action_steps must be in [1, chunk_size={self.chunk_size}], got {self.n_action_steps}"
            )
        if self.scheduler not in ("none", "cosine"):
            raise ConfigError(f"scheduler must be 'none' or 'cosine', got {self.scheduler!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **dataclasses.asdict(self)}

    def image_input(self) -> tuple[tuple[int, int] | None, str]:
        """((H, W) or None for the frames' own size, resize mode) of the images this policy
        is fed: the one place the image size lives. The frame cache, per-sample decoding
        and the sim rollout all fit frames to it with `robotrain.data.images`."""
        return None, "resize"

    def with_image_input(self, size: tuple[int, int] | None, mode: str | None) -> PolicyConfig:
        """A copy fed at `size` with `mode` (None keeps the current one): what `--image-size`
        and `--resize-mode` set. Policies without an image size setting refuse."""
        if size is None and mode is None:
            return self
        raise ConfigError(f"the {self.type!r} policy has no image size setting (--image-size/--resize-mode)")


class Policy(nn.Module):
    """Base class of every policy. Subclasses set `name` and `config_class`."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[PolicyConfig]] = PolicyConfig

    def __init__(self, config: PolicyConfig, features: PolicyFeatures, stats: Mapping[str, Mapping[str, Any]]):
        super().__init__()
        self.config = config
        self.features = features

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """Training loss (scalar tensor) and its components as floats, e.g.
        `{"l1_loss": 0.3, "kld_loss": 0.01}` (ACT) or `{"flow_mse": 0.8}` (SmolVLA)."""
        raise NotImplementedError

    def predict_action_chunk(self, batch: Batch) -> Tensor:
        """(B, chunk_size, action_dim) actions in joint units, from one observation."""
        raise NotImplementedError

    def select_action(self, batch: Batch) -> Tensor:
        """(B, action_dim): the next action to execute, using the action queue."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the action queue (call at the start of every episode)."""

    def delta_timestamps(self) -> dict[str, list[float]]:
        """Temporal windows this policy needs from the dataset, in seconds.

        E.g. ACT: `{"action": [i / fps for i in range(chunk_size)]}`.
        """
        fps = self.features.fps
        return {"action": [i / fps for i in range(self.config.chunk_size)]}

    def normalized_io_layers(self) -> tuple[dict[str, str], dict[str, str]] | None:
        """Where normalised low-dimensional features meet the weights, for re-expressing the
        weights in other normalisation statistics (`robotrain.checkpoints.reexpress`).

        Returns `(inputs, outputs)`: each maps the state-dict prefix of an `nn.Linear` to the
        feature key whose normalised values it reads (inputs) or writes (outputs), and together
        they must be the only places those features touch the weights. None (the default)
        means the policy cannot be re-expressed exactly.
        """
        return None

    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups for AdamW (e.g. ACT's separate backbone lr)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]
