"""SmolVLA policy (Shukor et al. 2025) behind robotrain's policy contract.

Build one (tiny random backbone, CPU, seconds):
    PYTHONPATH=src /work/venv/bin/python -c "
    import numpy as np; from robotrain.policies.base import PolicyFeatures
    from robotrain.policies.smolvla import SmolVLAConfig, SmolVLAPolicy
    f = PolicyFeatures(6, 6, ('observation.images.front',), (3, 32, 32))
    s = {k: {'mean': np.zeros(6), 'std': np.ones(6)} for k in ('observation.state', 'action')}
    p = SmolVLAPolicy(SmolVLAConfig(vlm='tiny', resize_imgs_with_padding=(32, 32)), f, s)
    print(sum(t.numel() for t in p.parameters()))"

`state_dict()` names are LeRobot 0.4.4's (`model.vlm_with_expert.vlm.*`,
`model.vlm_with_expert.lm_expert.*`, `model.state_proj`, `model.action_*`); the
normaliser's statistics are non-persistent buffers, saved beside the weights.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from robotrain.constants import ACTION, ACTION_IS_PAD, CONFIG_JSON, MODEL_SAFETENSORS, OBS_STATE, TASK
from robotrain.errors import CheckpointError, ConfigError
from robotrain.policies.normalize import Normalizer
from robotrain.policies.base import Batch, Policy, PolicyFeatures
from robotrain.policies.smolvla import backbone
from robotrain.policies.smolvla import memory as smolvla_memory
from robotrain.policies.smolvla.config import SmolVLAConfig
from robotrain.policies.smolvla.flow import VLAFlowMatching, sample_time
from robotrain.data.images import fit_float, to_unit_float
from robotrain.policies.smolvla.preprocess import ensure_tensor, last_step, pad_last_dim, to_siglip_range
from robotrain.system.files import read_json

logger = logging.getLogger(__name__)

# Architecture fields a pretrained checkpoint's config.json must agree with.
_ARCH_FIELDS = (
    "max_state_dim",
    "max_action_dim",
    "chunk_size",
    "num_vlm_layers",
    "num_expert_layers",
    "expert_width_multiplier",
    "self_attn_every_n_layers",
    "attention_mode",
)


class SmolVLAPolicy(Policy):
    """SmolVLM2 prefix (images, task, state) + flow-matching action expert."""

    name = "smolvla"
    config_class = SmolVLAConfig
    library_bytes = 112 * 2**20
    """transformers' SmolVLM modules: RSS 382 MB after importing them against 269 MB without."""

    def __init__(
        self,
        config: SmolVLAConfig,
        features: PolicyFeatures,
        stats: Mapping[str, Mapping[str, Any]],
        device: torch.device | str | None = None,
    ) -> None:
        """`device="meta"` builds the architecture without memory (shape checks only)."""
        super().__init__(config, features, stats)
        self.config: SmolVLAConfig = config
        if features.state_dim > config.max_state_dim:
            raise ConfigError(f"state_dim {features.state_dim} exceeds max_state_dim {config.max_state_dim}")
        if features.action_dim > config.max_action_dim:
            raise ConfigError(f"action_dim {features.action_dim} exceeds max_action_dim {config.max_action_dim}")
        vlm_dict, snapshot = backbone.resolve_vlm(config)
        vlm = backbone.build_vlm(vlm_dict, config.num_vlm_layers, device=device)
        if config.load_vlm_weights and device != "meta":
            if snapshot is None:
                raise ConfigError(f"load_vlm_weights needs --policy.vlm to be a snapshot directory, not {config.vlm!r}")
            backbone.load_vlm_weights(vlm, snapshot)
        if snapshot is not None and not config.load_vlm_weights and not config.pretrained and device != "meta":
            logger.warning(
                "SmolVLA: the VLM from %s has RANDOM weights (load_vlm_weights=False and no --policy.pretrained); "
                "with a frozen VLM that trains only the expert on noise features", snapshot,
            )
        self._check_image_size(vlm)
        self.tokenizer = backbone.load_tokenizer(snapshot, vlm.config.text_config.vocab_size)
        with torch.device(device) if device is not None else nullcontext():
            self.model = VLAFlowMatching(config, vlm)
        self.model.vlm_with_expert.gradient_checkpointing = config.gradient_checkpointing
        if config.gradient_checkpointing and not config.freeze_vision_encoder:
            vision = vlm.model.vision_model  # transformers >= 5.2x renamed the method
            enable = getattr(vision, "activation_checkpointing_enable", None) or vision.gradient_checkpointing_enable
            enable({"use_reentrant": False})
        modes = {OBS_STATE: config.normalization_mapping["STATE"], ACTION: config.normalization_mapping["ACTION"]}
        modes.update({key: config.normalization_mapping["VISUAL"] for key in features.camera_keys})
        self.normalizer = Normalizer(stats, modes) if device != "meta" else Normalizer({}, {})
        self._token_cache: dict[tuple[str, ...], tuple[Tensor, Tensor]] = {}
        self._set_requires_grad()
        if config.pretrained:
            self.load_pretrained(config.pretrained)
        self.reset()

    # --- construction helpers -------------------------------------------------------
    def _check_image_size(self, vlm: nn.Module) -> None:
        patch = vlm.config.vision_config.patch_size * vlm.config.scale_factor
        size = self.config.resize_imgs_with_padding or self.features.image_shape[1:][::-1]
        if any(s % patch for s in size):
            raise ConfigError(
                f"resize_imgs_with_padding {tuple(size)} must be a multiple of patch_size x scale_factor = {patch}"
            )
        if size[0] != size[1]:
            raise ConfigError(f"SmolVLM's pixel shuffle needs square images, got {tuple(size)}")

    def _set_requires_grad(self) -> None:
        """Freeze per config; parameters nothing reads are frozen too (DDP-safe)."""
        vwe = self.model.vlm_with_expert
        vlm = vwe.vlm
        if self.config.freeze_vision_encoder:
            for p in vlm.model.vision_model.parameters():
                p.requires_grad_(False)
        if self.config.train_expert_only:
            for p in vlm.parameters():
                p.requires_grad_(False)
        else:
            # No language head, and the last VLM layer only feeds its keys/values.
            unused = [vlm.lm_head, vwe.text_model.norm]
            last = vwe.text_model.layers[-1]
            unused += [last.self_attn.o_proj, last.mlp, last.post_attention_layernorm]
            if vwe.is_cross_layer(vwe.num_layers - 1):
                unused.append(last.self_attn.q_proj)
            for module in unused:
                for p in module.parameters():
                    p.requires_grad_(False)
        for p in self.model.state_proj.parameters():
            p.requires_grad_(self.config.train_state_proj)

    def train(self, mode: bool = True) -> SmolVLAPolicy:
        """Frozen parts stay in eval mode (LeRobot does the same)."""
        super().train(mode)
        vlm = self.model.vlm_with_expert.vlm
        if self.config.freeze_vision_encoder:
            vlm.model.vision_model.eval()
        if self.config.train_expert_only:
            vlm.eval()
        return self

    # --- weights ----------------------------------------------------------------------
    def load_pretrained(self, path: str | Path) -> None:
        """Load a LeRobot SmolVLA checkpoint dir (config.json + model.safetensors), strictly."""
        root = Path(path)
        if (root / "pretrained_model").is_dir():
            root = root / "pretrained_model"
        cfg_path, weights = root / CONFIG_JSON, root / MODEL_SAFETENSORS
        for p in (cfg_path, weights):
            if not p.is_file():
                raise CheckpointError("missing in the SmolVLA checkpoint", p)
        saved = read_json(cfg_path, CheckpointError, expect=dict)
        if saved.get("type") != "smolvla":
            raise CheckpointError(f"type is {saved.get('type')!r}, expected 'smolvla'", cfg_path)
        diffs = [
            f"{k}={saved[k]!r} (ours {getattr(self.config, k)!r})"
            for k in _ARCH_FIELDS
            if k in saved and saved[k] != getattr(self.config, k)
        ]
        if diffs:
            raise CheckpointError("checkpoint architecture differs: " + ", ".join(diffs), cfg_path)
        self.load_weights(weights)

    def load_weights(self, path: str | Path) -> None:
        """Strict load of a model.safetensors written by LeRobot or by us."""
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"cannot read weights: {exc}", path) from exc
        own = self.state_dict()
        missing, unexpected = sorted(set(own) - set(tensors)), sorted(set(tensors) - set(own))
        if missing or unexpected:
            raise CheckpointError(
                f"weights do not match SmolVLA: missing {backbone.short_list(missing)}, "
                f"unexpected {backbone.short_list(unexpected)}",
                path,
            )
        bad = [f"{k} {tuple(tensors[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if tensors[k].shape != v.shape]
        if bad:
            raise CheckpointError(f"shape mismatch: {backbone.short_list(bad)}", path)
        with torch.no_grad():
            for key, value in own.items():
                value.copy_(tensors[key].to(value.dtype))

    # --- memory (robotrain plan) ---------------------------------------------------------
    def activation_bytes_per_sample(self, device_type: str, amp: bool) -> int:
        """Calibrated per-sample peak of a training step (`policies/smolvla/memory.py`)."""
        vwe = self.model.vlm_with_expert
        vision, text = vwe.vlm.config.vision_config, vwe.vlm.config.text_config
        width, _ = self.config.resize_imgs_with_padding or self.features.image_shape[1:][::-1]
        patches = (int(width) // vision.patch_size) ** 2
        dims = {
            "cameras": len(self.features.camera_keys) + self.config.empty_cameras,
            "patches": patches, "image_tokens": patches // vwe.vlm.config.scale_factor**2,
            "language_tokens": self.config.tokenizer_max_length, "chunk": self.config.chunk_size,
            "vision_layers": vision.num_hidden_layers, "vision_width": vision.hidden_size,
            "vision_ffn": vision.intermediate_size, "layers": vwe.num_layers, "width": vwe.hidden_size,
            "ffn": text.intermediate_size,
            "expert_width": vwe.expert_hidden_size, "expert_ffn": vwe.lm_expert.layers[0].mlp.up_proj.out_features,
        }
        vlm_trains = not self.config.train_expert_only
        vision_trains = vlm_trains and not self.config.freeze_vision_encoder
        return smolvla_memory.activation_bytes_per_sample(dims, vision_trains, vlm_trains, device_type, amp,
                                                          self.config.gradient_checkpointing)

    # --- batch preparation -------------------------------------------------------------
    @property
    def _device(self) -> torch.device:
        return self.model.state_proj.weight.device

    def _prepare(self, batch: Batch) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor, Tensor, dict[str, Any]]:
        """Normalised inputs: images, image masks, tokens, token mask, padded state."""
        device = self._device
        batch = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in batch.items()}
        batch = self.normalizer.normalize_batch(batch)
        images, masks = self.prepare_images(batch)
        state = last_step(ensure_tensor(batch[OBS_STATE], OBS_STATE), 2).float()
        state = pad_last_dim(state, self.config.max_state_dim)
        tokens, lang_mask = self._tokens(batch.get(TASK), state.shape[0])
        return images, masks, tokens.to(device), lang_mask.to(device), state, batch

    def prepare_images(self, batch: Batch) -> tuple[list[Tensor], list[Tensor]]:
        """Each camera of `batch` (B, C, H, W) in [0, 1] or uint8, fitted into the model's
        input (LeRobot's resize_with_pad; a no-op on frames our loader or rollout fitted
        already) and scaled to SigLIP's [-1, 1], with a (B,) mask; then the empty cameras."""
        present = [k for k in self.features.camera_keys if k in batch]
        if not present:
            raise ConfigError(f"the batch has none of the cameras {list(self.features.camera_keys)}")
        size, mode = self.config.image_input()
        images, masks = [], []
        for key in present:
            img = to_unit_float(last_step(ensure_tensor(batch[key], key), 4)).float()  # (B, C, H, W)
            img = fit_float(img.to(self._device), size, mode)
            images.append(to_siglip_range(img))
            masks.append(torch.ones(img.shape[0], dtype=torch.bool, device=img.device))
        for _ in range(self.config.empty_cameras):
            images.append(torch.full_like(images[0], -1.0))
            masks.append(torch.zeros_like(masks[0]))
        return images, masks

    def _tokens(self, task: str | Sequence[str] | None, batch_size: int) -> tuple[Tensor, Tensor]:
        if task is None:
            raise ConfigError(f"the batch has no {TASK!r} (the language instruction SmolVLA conditions on)")
        tasks = [task] * batch_size if isinstance(task, str) else list(task)
        if len(tasks) != batch_size:
            raise ConfigError(f"batch[{TASK!r}] has {len(tasks)} strings for a batch of {batch_size}")
        key = tuple(tasks)
        if key not in self._token_cache:
            if len(self._token_cache) > 1024:
                self._token_cache.clear()
            self._token_cache[key] = backbone.tokenize(
                self.tokenizer, tasks, self.config.tokenizer_max_length, self.config.pad_language_to == "max_length"
            )
        return self._token_cache[key]

    # --- the contract -------------------------------------------------------------------
    def forward(
        self, batch: Batch, noise: Tensor | None = None, time: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """Flow-matching loss: MSE(v, noise - action) over real steps and real action dims.

        LeRobot averages over all 32 zero-padded action dims and over padded steps too (the
        source we read even looks the mask up under a misspelt key, `actions_id_pad`, so
        padded steps count in full); ours is the mean over what exists, so it does not
        shrink with the padding: LeRobot's logged loss is about ours x action_dim / 32."""
        images, img_masks, tokens, lang_mask, state, batch = self._prepare(batch)
        actions = ensure_tensor(batch[ACTION], ACTION).float()  # (B, S, A) normalised
        if actions.shape[1] != self.config.chunk_size:
            raise ConfigError(f"batch action window is {actions.shape[1]} steps, chunk_size is {self.config.chunk_size}")
        action_dim = actions.shape[-1]
        actions = pad_last_dim(actions, self.config.max_action_dim)
        if noise is None:
            noise = torch.randn_like(actions)
        if time is None:
            time = sample_time(actions.shape[0], actions.device)
        losses = self.model(images, img_masks, tokens, lang_mask, state, actions, noise.to(actions), time.to(actions))
        losses = losses[:, :, :action_dim]  # (B, S, A)
        is_pad = batch.get(ACTION_IS_PAD)
        valid = torch.ones(losses.shape[:2], dtype=torch.bool, device=losses.device)
        if isinstance(is_pad, Tensor):
            valid = ~is_pad.to(losses.device).bool()
        weight = valid[..., None].to(losses.dtype)
        loss = (losses * weight).sum() / (weight.sum() * action_dim).clamp(min=1.0)
        return loss, {"flow_mse": float(loss.detach())}

    @torch.no_grad()
    def predict_action_chunk(self, batch: Batch, noise: Tensor | None = None) -> Tensor:
        """(B, chunk_size, action_dim) in joint units; deterministic for a given `noise`
        of shape (B, chunk_size, max_action_dim)."""
        images, img_masks, tokens, lang_mask, state, _ = self._prepare(batch)
        shape = (state.shape[0], self.config.chunk_size, self.config.max_action_dim)
        if noise is None:
            noise = torch.randn(shape, device=state.device)
        elif tuple(noise.shape) != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        actions = self.model.sample_actions(images, img_masks, tokens, lang_mask, state, noise.to(state.device))
        actions = actions[:, :, : self.features.action_dim]
        return self.normalizer.unnormalize(ACTION, actions)

    @torch.no_grad()
    def select_action(self, batch: Batch, noise: Tensor | None = None) -> Tensor:
        """(B, action_dim): the next queued action; a new chunk every `n_action_steps`."""
        if not self._queue:
            chunk = self.predict_action_chunk(batch, noise=noise)  # (B, S, A)
            self._queue.extend(chunk[:, : self.config.n_action_steps].transpose(0, 1))
        return self._queue.popleft()

    def reset(self) -> None:
        self._queue: deque[Tensor] = deque()
