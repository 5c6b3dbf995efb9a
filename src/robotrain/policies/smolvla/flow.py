"""Flow matching over action chunks with the SmolVLM2 prefix (LeRobot's `model.*`).

```
 images --SigLIP+shuffle--> img tokens *sqrt(d) --+
 task   --embed_tokens----> lang tokens *sqrt(d) -+-> prefix (B, P, 960) --+
 state (pad 32) --state_proj--> 1 token ----------+                         |
                                                                            v
 x_t (B, 50, 32) --action_in_proj--+                           VLMWithExpert (16 layers)
 t --sinusoid(720)-----------------+-- mlp_in -> silu -> mlp_out --> suffix (B, 50, 720)
                                                                            |
                                                  action_out_proj <---------+  v_t (B, 50, 32)
```
Training: t ~ Beta(1.5, 1) * 0.999 + 0.001, x_t = t * noise + (1 - t) * a, target
u = noise - a. Inference: Euler from t = 1 to 0 in `num_steps` steps, x += dt * v.
Attention masks follow LeRobot's "block" convention: each token carries a flag and sees
every earlier token whose running flag sum is <= its own; images and language share
block 0, the state opens block 1, and every action opens its own (causal actions).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robotrain.policies.smolvla.config import SmolVLAConfig
from robotrain.policies.smolvla.expert import VLMWithExpert

TIME_BETA_ALPHA = 1.5  # Beta(1.5, 1.0): more mass near t = 1 (noisy end), paper §3
TIME_BETA_BETA = 1.0
TIME_MIN = 0.001


def sinusoidal_time_embedding(t: Tensor, dim: int, min_period: float, max_period: float) -> Tensor:
    """(B,) -> (B, dim): [sin, cos] of t at periods spaced geometrically in [min, max]."""
    if dim % 2:
        raise ValueError(f"time embedding dimension must be even, got {dim}")
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    angles = (2 * math.pi / period)[None, :] * t.to(torch.float64)[:, None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).to(torch.float32)


def make_att_2d_masks(pad_masks: Tensor, block_flags: Tensor) -> Tensor:
    """(B, L) bool pads, (B, L) int flags -> (B, L, L) bool: query i may see key j."""
    cumsum = torch.cumsum(block_flags, dim=1)
    return (cumsum[:, None, :] <= cumsum[:, :, None]) & (pad_masks[:, None, :] & pad_masks[:, :, None])


def sample_time(batch_size: int, device: torch.device, generator: torch.Generator | None = None) -> Tensor:
    """t ~ Beta(1.5, 1) scaled into [0.001, 1] (B,). Via two Gamma draws so a generator works."""
    a = torch._standard_gamma(torch.full((batch_size,), TIME_BETA_ALPHA, device=device), generator=generator)
    b = torch._standard_gamma(torch.full((batch_size,), TIME_BETA_BETA, device=device), generator=generator)
    return (a / (a + b)) * (1 - TIME_MIN) + TIME_MIN


class VLAFlowMatching(nn.Module):
    """LeRobot's `model`: prefix embedding, the VLM + expert, and the action head."""

    def __init__(self, config: SmolVLAConfig, vlm: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.vlm_with_expert = VLMWithExpert(
            vlm,
            width_multiplier=config.expert_width_multiplier,
            attention_mode=config.attention_mode,
            self_attn_every_n_layers=config.self_attn_every_n_layers,
        )
        hidden = self.vlm_with_expert.hidden_size
        expert = self.vlm_with_expert.expert_hidden_size
        self.state_proj = nn.Linear(config.max_state_dim, hidden)
        self.action_in_proj = nn.Linear(config.max_action_dim, expert)
        self.action_out_proj = nn.Linear(expert, config.max_action_dim)
        self.action_time_mlp_in = nn.Linear(2 * expert, expert)
        self.action_time_mlp_out = nn.Linear(expert, expert)

    # --- embeddings ---------------------------------------------------------------------
    def embed_prefix(
        self, images: list[Tensor], img_masks: list[Tensor], tokens: Tensor, lang_masks: Tensor, state: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Prefix tokens (B, P, hidden), pad mask (B, P) and block flags (B, P)."""
        vwe = self.vlm_with_expert
        embs, pads, flags = [], [], []
        for img, img_mask in zip(images, img_masks):
            emb = vwe.embed_image(img)  # (B, n_img, hidden)
            emb = emb * math.sqrt(emb.shape[-1])
            embs.append(emb)
            pads.append(img_mask[:, None].expand(-1, emb.shape[1]))
        lang = vwe.embed_language(tokens)  # (B, L, hidden)
        embs.append(lang * math.sqrt(lang.shape[-1]))
        pads.append(lang_masks)
        dtype = self.state_proj.weight.dtype
        state_emb = self.state_proj(state.to(dtype))[:, None, :]  # (B, 1, hidden)
        embs.append(state_emb)
        pads.append(torch.ones(state.shape[0], 1, dtype=torch.bool, device=state.device))
        n_before_state = sum(e.shape[1] for e in embs[:-1])
        target = embs[0].dtype
        prefix = torch.cat([e.to(target) for e in embs], dim=1)
        pad = torch.cat(pads, dim=1)
        flags = torch.zeros(pad.shape, dtype=torch.long, device=pad.device)
        flags[:, n_before_state:] = 1  # the state token starts a new block
        return prefix, pad, flags

    def embed_suffix(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Action tokens (B, S, expert) from noisy actions (B, S, A) and time (B,)."""
        dtype = self.action_in_proj.weight.dtype
        action_emb = self.action_in_proj(x_t.to(dtype))  # (B, S, expert)
        time_emb = sinusoidal_time_embedding(
            t, action_emb.shape[-1], self.config.min_period, self.config.max_period
        ).to(action_emb.dtype)
        time_emb = time_emb[:, None, :].expand_as(action_emb)
        h = self.action_time_mlp_in(torch.cat([action_emb, time_emb], dim=2))
        h = self.action_time_mlp_out(F.silu(h))
        pad = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device)
        flags = torch.ones(h.shape[:2], dtype=torch.long, device=h.device)  # causal over actions
        return h, pad, flags

    # --- training ---------------------------------------------------------------------
    def forward(
        self,
        images: list[Tensor],
        img_masks: list[Tensor],
        tokens: Tensor,
        lang_masks: Tensor,
        state: Tensor,
        actions: Tensor,
        noise: Tensor,
        time: Tensor,
    ) -> Tensor:
        """Squared error (B, S, max_action_dim) between predicted and target velocity."""
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions
        u_t = noise - actions
        prefix, prefix_pad, prefix_flags = self.embed_prefix(images, img_masks, tokens, lang_masks, state)
        suffix, suffix_pad, suffix_flags = self.embed_suffix(x_t, time)
        pad = torch.cat([prefix_pad, suffix_pad], dim=1)
        mask = make_att_2d_masks(pad, torch.cat([prefix_flags, suffix_flags], dim=1))
        positions = torch.cumsum(pad, dim=1) - 1
        out, _ = self.vlm_with_expert(prefix, suffix, mask, positions)
        v_t = self.action_out_proj(out[:, -self.config.chunk_size :].to(self.action_out_proj.weight.dtype))
        return F.mse_loss(v_t.float(), u_t.float(), reduction="none")

    # --- inference --------------------------------------------------------------------
    @torch.no_grad()
    def sample_actions(
        self,
        images: list[Tensor],
        img_masks: list[Tensor],
        tokens: Tensor,
        lang_masks: Tensor,
        state: Tensor,
        noise: Tensor,
    ) -> Tensor:
        """Denoised actions (B, S, max_action_dim), starting from `noise` at t = 1."""
        prefix, prefix_pad, prefix_flags = self.embed_prefix(images, img_masks, tokens, lang_masks, state)
        prefix_mask = make_att_2d_masks(prefix_pad, prefix_flags)
        prefix_pos = torch.cumsum(prefix_pad, dim=1) - 1
        cache = None
        if self.config.use_cache:
            _, cache = self.vlm_with_expert(prefix, None, prefix_mask, prefix_pos, fill_cache=True)
        dt = -1.0 / self.config.num_steps
        x_t = noise.float()
        batch = noise.shape[0]
        for step in range(self.config.num_steps):
            t = torch.full((batch,), 1.0 + step * dt, dtype=torch.float32, device=noise.device)
            if cache is not None:
                v_t = self._denoise_cached(prefix_pad, cache, x_t, t)
            else:
                v_t = self._denoise_full(prefix, prefix_pad, prefix_flags, x_t, t)
            x_t = x_t + dt * v_t
        return x_t

    def _denoise_cached(self, prefix_pad: Tensor, cache: list, x_t: Tensor, t: Tensor) -> Tensor:
        suffix, suffix_pad, suffix_flags = self.embed_suffix(x_t, t)
        batch, n_suffix = suffix_pad.shape
        prefix_part = prefix_pad[:, None, :].expand(batch, n_suffix, prefix_pad.shape[1])
        mask = torch.cat([prefix_part, make_att_2d_masks(suffix_pad, suffix_flags)], dim=2)
        positions = prefix_pad.sum(dim=1, keepdim=True) + torch.cumsum(suffix_pad, dim=1) - 1
        out, _ = self.vlm_with_expert(None, suffix, mask, positions, cache=cache)
        return self.action_out_proj(out[:, -self.config.chunk_size :].to(self.action_out_proj.weight.dtype)).float()

    def _denoise_full(self, prefix: Tensor, prefix_pad: Tensor, prefix_flags: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        suffix, suffix_pad, suffix_flags = self.embed_suffix(x_t, t)
        pad = torch.cat([prefix_pad, suffix_pad], dim=1)
        mask = make_att_2d_masks(pad, torch.cat([prefix_flags, suffix_flags], dim=1))
        positions = torch.cumsum(pad, dim=1) - 1
        out, _ = self.vlm_with_expert(prefix, suffix, mask, positions)
        return self.action_out_proj(out[:, -self.config.chunk_size :].to(self.action_out_proj.weight.dtype)).float()
