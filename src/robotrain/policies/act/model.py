r"""ACT: Action Chunking with Transformers (Zhao et al. 2023), our implementation.

Parameter names and shapes equal LeRobot 0.4.4's ACT (`model.*`), so checkpoints move
between the two projects; the computation follows the paper / LeRobot exactly (post-norm
layers, dropout positions, latent projection, position embeddings) so outputs match.
Two differences in how, not in what, both for training speed: the VAE encoder's last
layer computes its [CLS] token alone (the only output read), and dropout draws its masks
with `MaskDropout` (same distribution, p rounded to 1/65536; cheaper on a CPU).

```
                         training only                                  every step
  [CLS] [state] [a_1 .. a_k] (+ fixed sin pos, padded a masked)
        |                                              image(s) (B,3,H,W) in [0,1]
   VAE encoder (n_vae_encoder_layers)                      | resize? augment? normalise
        | CLS token -> Linear -> (mu, 2 log sigma)     ResNet18 -> (B,512,H/32,W/32)
        v                                                  | 1x1 conv -> dim_model
   z = mu + sigma * eps   (z = 0 at inference)             | + 2D sinusoidal pos
        |                                                  v
   Linear(z) [latent]  Linear(state) [state]  ---- image tokens of every camera
        \__________ + learned 1D pos ___________________/
                           |
              transformer encoder (n_encoder_layers)
                           |  memory (+ pos on keys)
  chunk_size zero queries + learned pos -> decoder (n_decoder_layers) -> LayerNorm
                           |
                  Linear -> (B, chunk_size, action_dim)
```
Loss: l1 (padded steps masked) + kl_weight * KL(N(mu, sigma) || N(0, I)).

Example:
    >>> from robotrain.policies.act.config import ACTConfig
    >>> feats = PolicyFeatures(6, 6, ("observation.images.front",), (3, 96, 128))
    >>> policy = ACTPolicy(ACTConfig(dim_model=64, n_heads=4), feats, stats)
    >>> loss, metrics = policy(batch)          # metrics: {"l1_loss": ..., "kld_loss": ...}
    >>> action = policy.select_action(obs)     # (B, 6) in joint units
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from robotrain.constants import ACTION, ACTION_IS_PAD, OBS_STATE
from robotrain.data.images import fit_float, to_unit_float
from robotrain.errors import ConfigError, TrainingError
from robotrain.policies.normalize import Normalizer
from robotrain.policies.act import memory as act_memory
from robotrain.policies.act.augment import ImageAugment
from robotrain.policies.act.config import ACTConfig
from robotrain.policies.act.dropout import MaskDropout
from robotrain.policies.act.resnet import OUT_CHANNELS, ResNetBackbone
from robotrain.policies.base import Batch, Policy, PolicyFeatures

logger = logging.getLogger(__name__)


# --- position embeddings ------------------------------------------------------------


def sinusoidal_1d(num_positions: int, dim: int) -> Tensor:
    """(num_positions, dim) fixed table (Vaswani et al.): column j of position p is
    sin(p / 10000^(2*(j//2)/dim)) for even j, cos(...) for odd j. Computed in float64."""
    pos = torch.arange(num_positions, dtype=torch.float64).unsqueeze(1)  # (P, 1)
    j = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)  # (P, dim)
    table = torch.where(j.long() % 2 == 0, angle.sin(), angle.cos())
    return table.float()


def sinusoidal_2d(height: int, width: int, dim_model: int, device: torch.device | None = None) -> Tensor:
    """(1, dim_model, height, width) DETR-style 2D embedding: the first dim_model/2 channels
    encode the row, the rest the column; positions 1..n are scaled to (0, 2*pi]; channel
    j of each half is sin (even j) / cos (odd j) with frequency 10000^(2*(j//2)/half).
    The float32 op order is DETR's/LeRobot's so results agree to the bit."""
    half = dim_model // 2
    eps, two_pi, temperature = 1e-6, 2 * math.pi, 10000
    ones = torch.ones(1, height, width, dtype=torch.float32, device=device)
    y = ones.cumsum(1, dtype=torch.float32)  # (1, H, W): 1..H down the rows
    x = ones.cumsum(2, dtype=torch.float32)  # (1, H, W): 1..W along the columns
    y = y / (y[:, -1:, :] + eps) * two_pi
    x = x / (x[:, :, -1:] + eps) * two_pi
    inv_freq = temperature ** (2 * (torch.arange(half, dtype=torch.float32, device=device) // 2) / half)  # (half,)
    x = x.unsqueeze(-1) / inv_freq  # (1, H, W, half)
    y = y.unsqueeze(-1) / inv_freq
    # Interleave sin of even channels with cos of odd channels.
    pos_x = torch.stack((x[..., 0::2].sin(), x[..., 1::2].cos()), dim=-1).flatten(3)
    pos_y = torch.stack((y[..., 0::2].sin(), y[..., 1::2].cos()), dim=-1).flatten(3)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)  # (1, D, H, W)


# --- transformer layers (post-norm by default, as in the paper) ---------------------


def _activation(name: str):
    return {"relu": F.relu, "gelu": F.gelu}[name]


def _with_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    return x if pos is None else x + pos


def _residual(x: Tensor, sublayer: Callable[[Tensor], Tensor], dropout: nn.Module, norm: nn.Module,
              pre_norm: bool, first_token_only: bool = False) -> Tensor:
    """One transformer sublayer with its skip connection: the LayerNorm comes after the sum
    (post-norm, ACT's default) or before the sublayer (`pre_norm`). With
    `first_token_only` the sublayer returns token 0 alone and so does this."""
    skip = x[:, :1] if first_token_only else x
    if pre_norm:
        return skip + dropout(sublayer(norm(x)))
    return norm(skip + dropout(sublayer(x)))


def _feedforward(layer: EncoderLayer | DecoderLayer, x: Tensor) -> Tensor:
    """The position-wise feed-forward block both layer kinds share (same parameter names)."""
    return layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))


class EncoderLayer(nn.Module):
    """Self-attention + feed-forward; position embeddings are added to queries and keys only."""

    def __init__(self, cfg: ACTConfig) -> None:
        super().__init__()
        d = cfg.dim_model
        self.self_attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.linear1 = nn.Linear(d, cfg.dim_feedforward)
        self.dropout = MaskDropout(cfg.dropout)
        self.linear2 = nn.Linear(cfg.dim_feedforward, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.dropout1 = MaskDropout(cfg.dropout)
        self.dropout2 = MaskDropout(cfg.dropout)
        self.activation = _activation(cfg.feedforward_activation)
        self.pre_norm = cfg.pre_norm

    def forward(self, x: Tensor, pos: Tensor | None = None, key_padding_mask: Tensor | None = None,
                first_token_only: bool = False) -> Tensor:
        """(B, S, D) -> (B, S, D), or (B, 1, D) with `first_token_only`: token 0's output
        alone (its query attends to every token), skipping the other queries' attention
        and feed-forward work. pos: (1 or B, S, D); key_padding_mask: (B, S) True = ignore."""

        def attend(h: Tensor) -> Tensor:
            qk = _with_pos(h, pos)
            query = qk[:, :1] if first_token_only else qk
            return self.self_attn(query, qk, h, key_padding_mask=key_padding_mask, need_weights=False)[0]

        x = _residual(x, attend, self.dropout1, self.norm1, self.pre_norm, first_token_only)
        return _residual(x, lambda h: _feedforward(self, h), self.dropout2, self.norm2, self.pre_norm)


class Encoder(nn.Module):
    """A stack of EncoderLayers; a final LayerNorm only with pre_norm (else no parameters)."""

    def __init__(self, cfg: ACTConfig, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(n_layers))
        self.norm = nn.LayerNorm(cfg.dim_model) if cfg.pre_norm else nn.Identity()
        self.gradient_checkpointing = cfg.gradient_checkpointing

    def forward(self, x: Tensor, pos: Tensor | None = None, key_padding_mask: Tensor | None = None,
                first_token_only: bool = False) -> Tensor:
        """(B, S, D) -> (B, S, D); with `first_token_only` (B, 1, D): the last layer computes
        token 0 alone, which is all the VAE encoder reads (its [CLS] token)."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = _maybe_checkpoint(self, layer, x, pos, key_padding_mask, first_token_only and i == last)
        return self.norm(x)


class DecoderLayer(nn.Module):
    """Self-attention over the action queries, cross-attention to the encoder memory, FFN."""

    def __init__(self, cfg: ACTConfig) -> None:
        super().__init__()
        d = cfg.dim_model
        self.self_attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.linear1 = nn.Linear(d, cfg.dim_feedforward)
        self.dropout = MaskDropout(cfg.dropout)
        self.linear2 = nn.Linear(cfg.dim_feedforward, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.norm3 = nn.LayerNorm(d)
        self.dropout1 = MaskDropout(cfg.dropout)
        self.dropout2 = MaskDropout(cfg.dropout)
        self.dropout3 = MaskDropout(cfg.dropout)
        self.activation = _activation(cfg.feedforward_activation)
        self.pre_norm = cfg.pre_norm

    def forward(self, x: Tensor, memory: Tensor, query_pos: Tensor, memory_pos: Tensor) -> Tensor:
        # x: (B, chunk, D) queries; memory: (B, S, D); query_pos (1, chunk, D); memory_pos (1, S, D)
        def attend_self(h: Tensor) -> Tensor:
            qk = _with_pos(h, query_pos)
            return self.self_attn(qk, qk, h, need_weights=False)[0]

        def attend_memory(h: Tensor) -> Tensor:
            return self.multihead_attn(_with_pos(h, query_pos), _with_pos(memory, memory_pos), memory,
                                       need_weights=False)[0]

        x = _residual(x, attend_self, self.dropout1, self.norm1, self.pre_norm)
        x = _residual(x, attend_memory, self.dropout2, self.norm2, self.pre_norm)
        return _residual(x, lambda h: _feedforward(self, h), self.dropout3, self.norm3, self.pre_norm)


class Decoder(nn.Module):
    """A stack of DecoderLayers followed by a LayerNorm (always, as in DETR/ACT)."""

    def __init__(self, cfg: ACTConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_decoder_layers))
        self.norm = nn.LayerNorm(cfg.dim_model)
        self.gradient_checkpointing = cfg.gradient_checkpointing

    def forward(self, x: Tensor, memory: Tensor, query_pos: Tensor, memory_pos: Tensor) -> Tensor:
        for layer in self.layers:
            x = _maybe_checkpoint(self, layer, x, memory, query_pos, memory_pos)
        return self.norm(x)


def _maybe_checkpoint(stack: Encoder | Decoder, layer: nn.Module, *args: Tensor | bool | None) -> Tensor:
    """layer(*args), recomputed in backward when the stack checkpoints (training only).
    Non-reentrant checkpointing restores the RNG state before recomputing, so dropout
    draws the same masks twice and the gradients are those of the plain forward."""
    if stack.gradient_checkpointing and stack.training and torch.is_grad_enabled():
        return checkpoint(layer, *args, use_reentrant=False)
    return layer(*args)


# --- the network -------------------------------------------------------------------


class ACT(nn.Module):
    """The ACT network on normalised tensors; `ACTPolicy` wraps it with normalisation,
    image preparation, the loss and the action queue. Attribute names = LeRobot's keys."""

    def __init__(self, cfg: ACTConfig, state_dim: int, action_dim: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.use_state = state_dim > 0
        d = cfg.dim_model
        if cfg.use_vae:
            self.vae_encoder = Encoder(cfg, cfg.n_vae_encoder_layers)
            self.vae_encoder_cls_embed = nn.Embedding(1, d)
            if self.use_state:
                self.vae_encoder_robot_state_input_proj = nn.Linear(state_dim, d)
            self.vae_encoder_action_input_proj = nn.Linear(action_dim, d)
            self.vae_encoder_latent_output_proj = nn.Linear(d, cfg.latent_dim * 2)
            n_vae_tokens = 1 + int(self.use_state) + cfg.chunk_size  # [CLS, state, actions]
            # Persistent: LeRobot saves it in model.safetensors.
            self.register_buffer("vae_encoder_pos_enc", sinusoidal_1d(n_vae_tokens, d).unsqueeze(0))
        self.backbone = ResNetBackbone(cfg.vision_backbone, cfg.replace_final_stride_with_dilation)
        self.backbone.gradient_checkpointing = cfg.gradient_checkpointing
        self.encoder = Encoder(cfg, cfg.n_encoder_layers)
        self.decoder = Decoder(cfg)
        if self.use_state:
            self.encoder_robot_state_input_proj = nn.Linear(state_dim, d)
        self.encoder_latent_input_proj = nn.Linear(cfg.latent_dim, d)
        self.encoder_img_feat_input_proj = nn.Conv2d(OUT_CHANNELS, d, kernel_size=1)
        self.n_1d_tokens = 1 + int(self.use_state)  # [latent, state]
        self.encoder_1d_feature_pos_embed = nn.Embedding(self.n_1d_tokens, d)
        self.decoder_pos_embed = nn.Embedding(cfg.chunk_size, d)
        self.action_head = nn.Linear(d, action_dim)
        # As in ACT/LeRobot: Xavier-uniform for every matrix of the main encoder and decoder.
        for p in [*self.encoder.parameters(), *self.decoder.parameters()]:
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def encode_latent(self, state: Tensor | None, actions: Tensor, action_is_pad: Tensor) -> tuple[Tensor, Tensor]:
        """VAE posterior from (normalised) state (B, S_dim) and actions (B, chunk, A):
        mu, log_sigma_x2 (= 2 log sigma), each (B, latent_dim)."""
        b = actions.shape[0]
        tokens = [self.vae_encoder_cls_embed.weight.expand(b, 1, -1)]  # (B, 1, D)
        if self.use_state:
            tokens.append(self.vae_encoder_robot_state_input_proj(state).unsqueeze(1))  # (B, 1, D)
        tokens.append(self.vae_encoder_action_input_proj(actions))  # (B, chunk, D)
        x = torch.cat(tokens, dim=1)  # (B, 1 [+1] + chunk, D)
        n_prefix = len(tokens) - 1
        mask = torch.cat([action_is_pad.new_zeros(b, n_prefix), action_is_pad], dim=1)  # (B, S) True = pad
        pos = self.vae_encoder_pos_enc.to(x.dtype)  # (1, S, D)
        cls_out = self.vae_encoder(x, pos, key_padding_mask=mask, first_token_only=True)[:, 0]  # (B, D)
        params = self.vae_encoder_latent_output_proj(cls_out)  # (B, 2 * latent)
        latent = self.cfg.latent_dim
        return params[:, :latent], params[:, latent:]

    def forward(
        self,
        images: Tensor,
        n_cameras: int,
        state: Tensor | None,
        actions: Tensor | None = None,
        action_is_pad: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Tensor | None, Tensor | None]]:
        """images: (n_cameras * B, 3, H, W) normalised, camera-major; state (B, S_dim);
        actions (B, chunk, A) and action_is_pad (B, chunk) only for the VAE (training).
        Returns actions (B, chunk, A) normalised and (mu, log_sigma_x2) or (None, None)."""
        b = images.shape[0] // n_cameras
        if self.cfg.use_vae and actions is not None:
            assert action_is_pad is not None
            mu, log_sigma_x2 = self.encode_latent(state, actions, action_is_pad)
            # Reparameterisation trick: z = mu + sigma * eps.
            latent = mu + (log_sigma_x2 / 2).exp() * torch.randn_like(mu)  # (B, latent)
        else:
            mu = log_sigma_x2 = None
            latent = images.new_zeros(b, self.cfg.latent_dim)

        tokens = [self.encoder_latent_input_proj(latent).unsqueeze(1)]  # (B, 1, D)
        if self.use_state:
            tokens.append(self.encoder_robot_state_input_proj(state).unsqueeze(1))  # (B, 1, D)
        pos = [self.encoder_1d_feature_pos_embed.weight.unsqueeze(0)]  # (1, n_1d, D)

        # All cameras through the backbone in one call: frozen BN makes this identical to
        # one call per camera, and it is faster.
        feat = self.backbone(images)  # (N*B, 512, h, w)
        h, w = feat.shape[-2:]
        feat = self.encoder_img_feat_input_proj(feat)  # (N*B, D, h, w)
        d = feat.shape[1]
        feat = feat.flatten(2).transpose(1, 2)  # (N*B, h*w, D), row-major pixels
        feat = feat.reshape(n_cameras, b, h * w, d).transpose(0, 1).reshape(b, n_cameras * h * w, d)
        tokens.append(feat)  # (B, N*h*w, D): camera 0's pixels, then camera 1's, ...
        cam_pos = sinusoidal_2d(h, w, d, feat.device).flatten(2).transpose(1, 2).to(feat.dtype)  # (1, h*w, D)
        pos.append(cam_pos.repeat(1, n_cameras, 1))  # (1, N*h*w, D)

        x = torch.cat(tokens, dim=1)  # (B, S, D), S = n_1d + N*h*w
        pos_all = torch.cat(pos, dim=1).to(x.dtype)  # (1, S, D)
        memory = self.encoder(x, pos_all)  # (B, S, D)

        queries = x.new_zeros(b, self.cfg.chunk_size, d)  # (B, chunk, D)
        query_pos = self.decoder_pos_embed.weight.unsqueeze(0).to(x.dtype)  # (1, chunk, D)
        out = self.decoder(queries, memory, query_pos, pos_all)  # (B, chunk, D)
        return self.action_head(out), (mu, log_sigma_x2)  # (B, chunk, A)


# --- inference helpers --------------------------------------------------------------


class TemporalEnsembler:
    """Online temporal ensembling (ACT paper §IV): every step a new chunk is predicted and
    the action for time t is the weighted mean of all predictions made for t, with weight
    exp(-coeff * i), i = 0 for the oldest prediction. Kept as a running weighted average per
    future step, so memory is O(chunk) rather than O(chunk^2)."""

    def __init__(self, coeff: float, chunk_size: int) -> None:
        self.coeff = coeff
        self.chunk_size = chunk_size
        self.weights = torch.exp(-coeff * torch.arange(chunk_size, dtype=torch.float64))  # (chunk,)
        self.weights_cumsum = self.weights.cumsum(0)  # (chunk,)
        self.reset()

    def reset(self) -> None:
        self.avg: Tensor | None = None  # (B, k, A): running averages for steps t .. t+k-1
        self.count: Tensor | None = None  # (k,): predictions averaged in each

    def update(self, chunk: Tensor) -> Tensor:
        """chunk (B, chunk_size, A) predicted now -> (B, A) action to execute now."""
        if self.avg is None:
            self.avg = chunk.clone()
            self.count = torch.ones(self.chunk_size, dtype=torch.long)
        else:
            assert self.count is not None
            w = self.weights.to(chunk.device, chunk.dtype)
            wc = self.weights_cumsum.to(chunk.device, chunk.dtype)
            c = self.count.to(chunk.device)  # (chunk-1,)
            # The new chunk's first chunk-1 steps overlap the running averages.
            prev = self.avg * wc[c - 1].view(1, -1, 1)
            self.avg = (prev + chunk[:, :-1] * w[c].view(1, -1, 1)) / wc[c].view(1, -1, 1)
            self.count = torch.cat([(self.count + 1).clamp(max=self.chunk_size), self.count.new_ones(1)])
            self.avg = torch.cat([self.avg, chunk[:, -1:]], dim=1)
        action = self.avg[:, 0]
        self.avg, self.count = self.avg[:, 1:], self.count[1:]
        return action


# --- the policy ---------------------------------------------------------------------


class ACTPolicy(Policy):
    """ACT behind robotrain's policy contract (raw batches in, joint-unit actions out)."""

    name = "act"
    config_class = ACTConfig

    def __init__(self, config: ACTConfig, features: PolicyFeatures, stats: Mapping[str, Mapping[str, Any]]):
        super().__init__(config, features, stats)
        if not isinstance(config, ACTConfig):
            raise ConfigError(f"ACTPolicy needs an ACTConfig, got {type(config).__name__}")
        if not features.camera_keys:
            raise ConfigError("ACT needs at least one camera; the dataset has no observation.images.* feature")
        if features.action_dim < 1:
            raise ConfigError(f"action_dim must be >= 1, got {features.action_dim}")
        self.config: ACTConfig = config
        self.camera_keys = tuple(features.camera_keys)
        self.image_hw: tuple[int, int] = config.image_size or (features.image_shape[1], features.image_shape[2])

        mapping = config.normalization_mapping
        modes = {ACTION: mapping["ACTION"], **{k: mapping["VISUAL"] for k in self.camera_keys}}
        if features.state_dim > 0:
            modes[OBS_STATE] = mapping["STATE"]
        self.normalizer = Normalizer(_image_stats_as_chw(stats, self.camera_keys), modes)
        self.model = ACT(config, features.state_dim, features.action_dim)
        if config.pretrained_backbone_weights:
            self.model.backbone.load_torchvision_weights(config.pretrained_backbone_weights)
            logger.info("ACT backbone weights loaded from %s", config.pretrained_backbone_weights)
        self.augment = (
            ImageAugment(
                config.augment_brightness,
                config.augment_contrast,
                config.augment_saturation,
                config.augment_hue,
                config.augment_sharpness,
                config.augment_crop_scale,
            )
            if config.augment
            else None
        )
        self._ensembler = (
            TemporalEnsembler(config.temporal_ensemble_coeff, config.chunk_size)
            if config.temporal_ensemble_coeff is not None
            else None
        )
        fh, fw = self.model.backbone.output_hw(*self.image_hw)
        logger.info(
            "ACT: %d encoder tokens (%d camera(s) at %dx%d -> %dx%d feature maps, + %d latent/state)",
            self.encoder_token_count(),
            len(self.camera_keys),
            *self.image_hw,
            fh,
            fw,
            self.model.n_1d_tokens,
        )
        self.reset()

    # --- sizes ------------------------------------------------------------------------

    def encoder_token_count(self) -> int:
        """Tokens the transformer encoder attends over: latent + state + h*w per camera
        (602 for two 480x640 cameras, 162 at 240x320, 100 at 224x224)."""
        h, w = self.model.backbone.output_hw(*self.image_hw)
        return self.model.n_1d_tokens + len(self.camera_keys) * h * w

    def activation_bytes_per_sample(self, device_type: str, amp: bool) -> int:
        """Calibrated per-sample peak of a training step (`policies/act/memory.py`)."""
        return act_memory.activation_bytes_per_sample(
            self.config, len(self.camera_keys), self.image_hw, self.encoder_token_count(), self.model.use_state,
            device_type, amp)

    def normalized_io_layers(self) -> tuple[dict[str, str], dict[str, str]]:
        """State and action touch ACT's weights only through these Linear layers (the
        VAE encoder's are used in training only), so a checkpoint re-expressed there in
        other statistics predicts the same actions."""
        inputs: dict[str, str] = {}
        if self.model.use_state:
            inputs["model.encoder_robot_state_input_proj"] = OBS_STATE
            if self.config.use_vae:
                inputs["model.vae_encoder_robot_state_input_proj"] = OBS_STATE
        if self.config.use_vae:
            inputs["model.vae_encoder_action_input_proj"] = ACTION
        return inputs, {"model.action_head": ACTION}

    # --- batch preparation -------------------------------------------------------------

    def _images(self, batch: Batch) -> Tensor:
        """Every camera resized (if needed), augmented (training), normalised and stacked
        camera-major: (N * B, 3, H, W)."""
        out = []
        for key in self.camera_keys:
            if key not in batch:
                raise TrainingError(f"batch lacks camera {key!r} (has {sorted(k for k in batch)})")
            img = batch[key]
            if img.dim() == 5:  # (B, T=1, C, H, W): a one-frame observation window
                img = img[:, -1]
            img = fit_float(to_unit_float(img), self.image_hw, self.config.resize_mode)
            if self.training and self.augment is not None:
                img = self.augment(img)
            out.append(self.normalizer.normalize(key, img))
        return torch.cat(out, dim=0)

    def _state(self, batch: Batch) -> Tensor | None:
        if OBS_STATE not in self.normalizer.modes:
            return None
        if OBS_STATE not in batch:
            raise TrainingError(f"batch lacks {OBS_STATE!r}")
        state = batch[OBS_STATE]
        if state.dim() == 3:  # (B, T=1, S)
            state = state[:, -1]
        return self.normalizer.normalize(OBS_STATE, state)

    # --- training -------------------------------------------------------------------

    def forward(self, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        """Loss on a raw batch with `action` (B, chunk, A) and `action_is_pad` (B, chunk).

        The VAE posterior is used in training mode; in eval mode the latent is zero (the
        inference path) and kld_loss is 0.
        """
        if ACTION not in batch:
            raise TrainingError(f"batch lacks {ACTION!r}; ACT trains on action chunks")
        actions = batch[ACTION]
        if actions.dim() != 3 or actions.shape[1] != self.config.chunk_size:
            raise TrainingError(
                f"action batch must be (B, chunk_size={self.config.chunk_size}, action_dim), got "
                f"{tuple(actions.shape)}; set the dataset's delta_timestamps from policy.delta_timestamps()"
            )
        is_pad = batch.get(ACTION_IS_PAD)
        if is_pad is None:
            is_pad = torch.zeros(actions.shape[:2], dtype=torch.bool, device=actions.device)
        is_pad = is_pad.bool()
        target = self.normalizer.normalize(ACTION, actions)  # (B, chunk, A)
        use_posterior = self.training and self.config.use_vae
        pred, (mu, log_sigma_x2) = self.model(
            self._images(batch),
            len(self.camera_keys),
            self._state(batch),
            target if use_posterior else None,
            is_pad if use_posterior else None,
        )
        valid = (~is_pad).unsqueeze(-1).to(pred.dtype)  # (B, chunk, 1)
        abs_err = (pred - target).abs() * valid  # (B, chunk, A)
        if self.config.l1_reduction == "valid":
            l1_loss = abs_err.sum() / (valid.sum() * pred.shape[-1]).clamp(min=1)
        else:  # paper/LeRobot: padded steps count as zero error in the mean
            l1_loss = abs_err.mean()
        if mu is not None and log_sigma_x2 is not None:
            # KL(N(mu, sigma^2) || N(0, 1)), summed over latent dims, mean over the batch.
            kld = (-0.5 * (1 + log_sigma_x2 - mu.pow(2) - log_sigma_x2.exp())).sum(-1).mean()
            loss = l1_loss + self.config.kl_weight * kld
            kld_value = kld.item()
        else:
            loss, kld_value = l1_loss, 0.0
        return loss, {"l1_loss": l1_loss.item(), "kld_loss": kld_value}

    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        """Two AdamW groups: everything at optimizer_lr, the ResNet at optimizer_lr_backbone."""
        main, backbone = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (backbone if name.startswith("model.backbone.") else main).append(p)
        return [{"params": main}, {"params": backbone, "lr": self.config.optimizer_lr_backbone}]

    # --- inference ------------------------------------------------------------------

    @torch.no_grad()
    def predict_action_chunk(self, batch: Batch) -> Tensor:
        """(B, chunk_size, action_dim) in joint units, latent zero, dropout off (the module's
        train/eval mode is restored afterwards)."""
        was_training = self.training
        self.eval()
        try:
            images = self._images(batch)
            pred, _ = self.model(images, len(self.camera_keys), self._state(batch))
        finally:
            self.train(was_training)
        return self.normalizer.unnormalize(ACTION, pred)

    @torch.no_grad()
    def select_action(self, batch: Batch) -> Tensor:
        """(B, action_dim): pops the action queue (refilled with the first n_action_steps of a
        new chunk when empty), or, with temporal ensembling, predicts every step."""
        if self._ensembler is not None:
            return self._ensembler.update(self.predict_action_chunk(batch))
        if not self._queue:
            chunk = self.predict_action_chunk(batch)[:, : self.config.n_action_steps]  # (B, n, A)
            self._queue.extend(chunk.transpose(0, 1))  # n tensors of (B, A)
        return self._queue.popleft()

    def reset(self) -> None:
        self._queue: deque[Tensor] = deque(maxlen=self.config.n_action_steps)
        if self._ensembler is not None:
            self._ensembler.reset()


def _image_stats_as_chw(
    stats: Mapping[str, Mapping[str, Any]], camera_keys: tuple[str, ...]
) -> dict[str, Mapping[str, Any]]:
    """Image statistics as (3, 1, 1) so they broadcast over (B, 3, H, W), whatever shape
    ((3,), (3, 1, 1), (1, 3, 1, 1)) the dataset stored."""
    out: dict[str, Mapping[str, Any]] = dict(stats)
    for key in camera_keys:
        if key in stats:
            out[key] = {
                name: np.asarray(value.detach().cpu() if isinstance(value, Tensor) else value).reshape(-1, 1, 1)
                for name, value in stats[key].items()
            }
    return out
