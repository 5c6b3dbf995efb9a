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

from robotrain.config import flags as config_flags
from robotrain.constants import ACTION, OBS_STATE
from robotrain.data.format import DatasetMeta, image_hwc
from robotrain.errors import ConfigError

Batch = Mapping[str, Any]

LEROBOT_BASE_FIELDS = frozenset({
    "type", "n_obs_steps", "input_features", "output_features", "device", "use_amp", "use_peft", "push_to_hub",
    "repo_id", "private", "tags", "license", "pretrained_path",
})
"""Keys every LeRobot policy config.json has (LeRobot's PreTrainedConfig); not policy fields."""


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

    def to_lerobot(self) -> dict[str, Any]:
        """`input_features` / `output_features` as LeRobot's config.json writes them."""
        inputs: dict[str, Any] = {}
        if self.state_dim > 0:
            inputs[OBS_STATE] = {"type": "STATE", "shape": [self.state_dim]}
        for key in self.camera_keys:
            inputs[key] = {"type": "VISUAL", "shape": list(self.image_shape)}
        return {"input_features": inputs, "output_features": {ACTION: {"type": "ACTION", "shape": [self.action_dim]}}}

    @classmethod
    def from_meta(cls, meta: DatasetMeta) -> PolicyFeatures:
        """What a policy trained on this dataset is built for; images are the recorded
        (C, H, W), read in either layout (the policy config says what size it is fed at)."""
        cameras = tuple(meta.camera_keys)
        if cameras:
            height, width, channels = image_hwc(meta.features[cameras[0]], cameras[0])
            shape = (channels, height, width)
        else:
            shape = (3, 0, 0)
        return cls(state_dim=int(meta.state_dim), action_dim=int(meta.action_dim), camera_keys=cameras,
                   image_shape=shape, fps=int(meta.fps))

    @classmethod
    def from_lerobot(cls, config: Mapping[str, Any], fps: int = 30) -> PolicyFeatures:
        """From a LeRobot config.json's `input_features` / `output_features`. Cameras keep
        input_features order (the order LeRobot feeds them in) and must share one shape."""
        try:
            inputs, outputs = config["input_features"], config["output_features"]
            cameras = [k for k, v in inputs.items() if v.get("type") == "VISUAL"]
            shapes = {tuple(int(s) for s in inputs[k]["shape"]) for k in cameras}
            state = inputs.get(OBS_STATE)
            action_dim = int(outputs[ACTION]["shape"][0])
            state_dim = int(state["shape"][0]) if state else 0
        except (KeyError, IndexError, AttributeError, TypeError, ValueError) as exc:
            raise ConfigError(f"config.json input_features/output_features are malformed ({exc!r})") from None
        if len(shapes) > 1:
            raise ConfigError(f"config.json cameras have different shapes {sorted(shapes)}; one shape is needed")
        image_shape = shapes.pop() if shapes else (3, 0, 0)
        if len(image_shape) != 3:
            raise ConfigError(f"config.json camera shape must be (C, H, W), got {list(image_shape)}")
        return cls(state_dim=state_dim, action_dim=action_dim, camera_keys=tuple(cameras),
                   image_shape=image_shape, fps=fps)  # type: ignore[arg-type]


@dataclass
class PolicyConfig:
    """Fields every policy config has. Subclasses add their own, with published defaults.

    `type` names the policy in the registry and in LeRobot's `config.json`.
    """

    type: ClassVar[str] = ""
    lerobot_only_fields: ClassVar[frozenset[str]] = frozenset()
    """Fields of LeRobot's config.json for this policy that robotrain reads past (they have
    no effect here); any other key robotrain does not know is refused as a likely typo."""

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

    # --- LeRobot's checkpoint files (each policy says how it is written) ------------
    def to_lerobot_dict(self, features: PolicyFeatures | None = None) -> dict[str, Any]:
        """config.json content LeRobot can read: `type`, `n_obs_steps`, the features, then
        the fields. Policies whose LeRobot config differs from their fields override this."""
        out: dict[str, Any] = {"type": self.type, "n_obs_steps": self.n_obs_steps}
        if features is not None:
            out.update(features.to_lerobot())
        body = config_flags.to_dict(self)
        out.update({k: v for k, v in body.items() if k not in out})
        return out

    @classmethod
    def from_lerobot_dict(cls, data: Mapping[str, Any]) -> PolicyConfig:
        """The config from config.json content. LeRobot's own keys that are not fields here
        (device, push_to_hub, the features, ...) are dropped; an unknown key is a ConfigError
        naming it (a misspelt field must not silently keep its default), and every value is
        converted to its field's type or refused naming the field."""
        return config_flags.from_dict(cls, cls.fields_of_lerobot_dict(data), keys=True)

    @classmethod
    def fields_of_lerobot_dict(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of config.json content that are fields of this config; unknown keys
        are refused (with the closest field name as a hint)."""
        import difflib

        if data.get("type", cls.type) != cls.type:
            raise ConfigError(f"config.json is for policy type {data.get('type')!r}, not {cls.type!r}")
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - names - LEROBOT_BASE_FIELDS - cls.lerobot_only_fields)
        if unknown:
            hints = [f"{k!r}" + (f" (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, names, 1)) else "")
                     for k in unknown]
            raise ConfigError(f"unknown {cls.type} config field(s): {', '.join(hints)}")
        return {k: v for k, v in data.items() if k in names}

    def lerobot_preprocessor_steps(self) -> list[dict[str, Any]]:
        """LeRobot pre-processor steps this policy needs between adding the batch dimension
        and moving to the device (written into policy_preprocessor.json): none by default."""
        return []

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
    library_bytes: ClassVar[int] = 0
    """Resident memory of the libraries this policy imports beyond torch (for `robotrain plan`)."""

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
        return {ACTION: [i / fps for i in range(self.config.chunk_size)]}

    def normalized_io_layers(self) -> tuple[dict[str, str], dict[str, str]] | None:
        """Where normalised low-dimensional features meet the weights, for re-expressing the
        weights in other normalisation statistics (`robotrain.checkpoints.reexpress`).

        Returns `(inputs, outputs)`: each maps the state-dict prefix of an `nn.Linear` to the
        feature key whose normalised values it reads (inputs) or writes (outputs), and together
        they must be the only places those features touch the weights. None (the default)
        means the policy cannot be re-expressed exactly.
        """
        return None

    def activation_bytes_per_sample(self, device_type: str, amp: bool) -> int | None:
        """Bytes one training sample adds to the peak of a training step (what forward keeps
        for backward, and backward's transients) on `device_type` ("cpu", "cuda"), with or
        without bf16 autocast: `robotrain plan` multiplies it by the batch. It must work on
        a policy built on the meta device. None (the default): no model, no plan."""
        return None

    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        """Parameter groups for AdamW (e.g. ACT's separate backbone lr)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]
