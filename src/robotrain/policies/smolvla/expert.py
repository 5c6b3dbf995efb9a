"""SmolVLM2 decoder layers run side by side with the action expert.

```
 prefix tokens (images, language, state)      suffix tokens (noisy actions + time)
        |                                            |
  VLM layer i (960 wide)                      expert layer i (720 wide)
        |  q k v -----------------------------------+  q (k v)
        |                                            |
   i % 2 == 0: joint self-attention over [prefix; suffix] (prefix never sees the suffix,
               suffix tokens see the prefix and earlier suffix tokens)
   i % 2 == 1: prefix self-attention; the expert cross-attends to the VLM's keys/values
               re-projected by its own k_proj/v_proj (320 -> 320)
```
The expert shares the VLM's head layout (15 query heads, 5 key/value heads of 64), which
is why its q_proj maps 720 -> 960 and o_proj 960 -> 720. Parameter names follow LeRobot's
`vlm_with_expert` (`vlm.*`, `lm_expert.layers.*`, `lm_expert.norm`).

Three modes of `VLMWithExpert.forward`: training (prefix + suffix), prefix-only with
`fill_cache` (inference, once per observation) and suffix-only with the cache (each of
the Euler steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

# LeRobot's SmolVLA applies its own rotary embedding with a 10,000 wavelength rather than
# SmolVLM2's rope_theta; pretrained SmolVLA weights expect it.
ROPE_MAX_WAVELENGTH = 10_000.0


def intermediate_size(hidden: int, ffn_multiplier: int = 4, multiple_of: int = 256) -> int:
    """Llama's MLP sizing rule LeRobot uses for the expert: 720 -> 2048."""
    size = int(ffn_multiplier * int(2 * hidden / 3))
    return multiple_of * ((size + multiple_of - 1) // multiple_of)


def apply_rope(x: Tensor, positions: Tensor, max_wavelength: float = ROPE_MAX_WAVELENGTH) -> Tensor:
    """Rotary embedding (rotate-half layout). x: (B, L, H, D), positions: (B, L)."""
    dtype = x.dtype
    half = x.shape[-1] // 2
    exponents = (2.0 / x.shape[-1]) * torch.arange(half, dtype=torch.float32, device=x.device)
    radians = positions.to(torch.float32)[..., None] / (max_wavelength**exponents)  # (B, L, D/2)
    sin, cos = torch.sin(radians)[:, :, None, :], torch.cos(radians)[:, :, None, :]
    x1, x2 = x.to(torch.float32).split(half, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(dtype)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """q (B, Lq, H, D), k/v (B, Lk, Hkv, D), mask (B, Lq, Lk) bool -> (B, Lq, H*D)."""
    # A query that may see nothing (a padded token) attends to everything, as a softmax
    # over equal large negatives would; its output is never read by a real token.
    mask = mask | ~mask.any(dim=-1, keepdim=True)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2).to(q.dtype), v.transpose(1, 2).to(q.dtype),
        attn_mask=mask[:, None], enable_gqa=q.shape[2] != k.shape[2],
    )  # (B, H, Lq, D)
    return out.transpose(1, 2).flatten(2)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class GatedMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class ExpertAttention(nn.Module):
    """Projections only; the attention itself is computed jointly in `VLMWithExpert`."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int, head_dim: int, kv_in: int) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.q_proj = nn.Linear(dim, n_heads * head_dim, bias=False)
        self.k_proj = nn.Linear(kv_in, n_kv_heads * head_dim, bias=False)
        self.v_proj = nn.Linear(kv_in, n_kv_heads * head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * head_dim, dim, bias=False)


class ExpertLayer(nn.Module):
    def __init__(self, dim: int, ffn: int, n_heads: int, n_kv_heads: int, head_dim: int, kv_in: int, eps: float):
        super().__init__()
        self.self_attn = ExpertAttention(dim, n_heads, n_kv_heads, head_dim, kv_in)
        self.mlp = GatedMLP(dim, ffn)
        self.input_layernorm = RMSNorm(dim, eps)
        self.post_attention_layernorm = RMSNorm(dim, eps)


class ActionExpert(nn.Module):
    """The expert's layers and final norm (LeRobot's `lm_expert`, a Llama without embeddings)."""

    def __init__(self, layers: list[ExpertLayer], dim: int, eps: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(dim, eps)


@dataclass
class LayerCache:
    """Keys (after RoPE) and values of the prefix at one layer, (B, P, Hkv, D)."""

    key: Tensor
    value: Tensor


def _qkv(attn: nn.Module, h: Tensor, head_dim: int) -> tuple[Tensor, Tensor, Tensor]:
    shape = (*h.shape[:-1], -1, head_dim)
    return attn.q_proj(h).view(shape), attn.k_proj(h).view(shape), attn.v_proj(h).view(shape)


class VLMWithExpert(nn.Module):
    """LeRobot's `vlm_with_expert`: the (cut) SmolVLM and the action expert."""

    def __init__(
        self,
        vlm: nn.Module,
        width_multiplier: float,
        attention_mode: str,
        self_attn_every_n_layers: int,
    ) -> None:
        super().__init__()
        self.vlm = vlm
        text = vlm.config.text_config
        self.num_layers = len(vlm.model.text_model.layers)
        self.head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)
        self.hidden_size = text.hidden_size
        self.expert_hidden_size = int(text.hidden_size * width_multiplier)
        self.attention_mode = attention_mode
        self.self_attn_every_n_layers = self_attn_every_n_layers
        kv_dim = text.num_key_value_heads * self.head_dim
        layers = [
            ExpertLayer(
                dim=self.expert_hidden_size,
                ffn=intermediate_size(self.expert_hidden_size),
                n_heads=text.num_attention_heads,
                n_kv_heads=text.num_key_value_heads,
                head_dim=self.head_dim,
                kv_in=kv_dim if self.is_cross_layer(i) else self.expert_hidden_size,
                eps=text.rms_norm_eps,
            )
            for i in range(self.num_layers)
        ]
        self.lm_expert = ActionExpert(layers, self.expert_hidden_size, text.rms_norm_eps)
        self.gradient_checkpointing = False

    def is_cross_layer(self, i: int) -> bool:
        if "cross" not in self.attention_mode:
            return False
        n = self.self_attn_every_n_layers
        return not (n > 0 and i % n == 0)

    @property
    def text_model(self) -> nn.Module:
        return self.vlm.model.text_model

    # --- prefix embeddings -------------------------------------------------------------
    def embed_image(self, pixels: Tensor) -> Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, n_img_tokens, hidden) (SigLIP + pixel shuffle)."""
        vision = self.vlm.model.vision_model
        pixels = pixels.to(vision.embeddings.patch_embedding.weight.dtype)
        features = vision(pixel_values=pixels, patch_attention_mask=None).last_hidden_state
        return self.vlm.model.connector(features)

    def embed_language(self, tokens: Tensor) -> Tensor:
        return self.text_model.get_input_embeddings()(tokens)

    # --- the layers ----------------------------------------------------------------
    def forward(
        self,
        prefix: Tensor | None,
        suffix: Tensor | None,
        mask: Tensor,
        positions: Tensor,
        cache: list[LayerCache] | None = None,
        fill_cache: bool = False,
    ) -> tuple[Tensor | None, list[LayerCache] | None]:
        """prefix (B, P, hidden) / suffix (B, S, expert_hidden); mask (B, Lq, Lk) bool over
        [cache or prefix; suffix] keys; positions (B, Lq).

        Returns the expert's final-normed output (B, S, expert_hidden) (None without a
        suffix) and, with `fill_cache`, the prefix keys/values of every layer. The VLM's
        own output is never needed (no language head), so its last layer stops at k/v."""
        if fill_cache:
            cache = []
        for i in range(self.num_layers):
            last = i == self.num_layers - 1
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled() and not fill_cache:
                prefix, suffix, layer_cache = checkpoint(
                    self._layer, i, prefix, suffix, mask, positions, cache, fill_cache, last, use_reentrant=False
                )
            else:
                prefix, suffix, layer_cache = self._layer(i, prefix, suffix, mask, positions, cache, fill_cache, last)
            if fill_cache:
                cache.append(layer_cache)
        if suffix is not None:
            suffix = self.lm_expert.norm(suffix)
        return suffix, cache

    def _layer(
        self,
        i: int,
        prefix: Tensor | None,
        suffix: Tensor | None,
        mask: Tensor,
        positions: Tensor,
        cache: list[LayerCache] | None,
        fill_cache: bool,
        last: bool,
    ) -> tuple[Tensor | None, Tensor | None, LayerCache | None]:
        vlm_layer = self.text_model.layers[i]
        exp_layer = self.lm_expert.layers[i]
        hd = self.head_dim
        n_prefix = prefix.shape[1] if prefix is not None else 0
        # Nothing reads the prefix output of the last layer (only its keys/values).
        need_prefix_out = prefix is not None and not last
        prefix_att = suffix_att = None
        layer_cache = None

        if fill_cache or not self.is_cross_layer(i):
            # Joint self-attention over [prefix (or its cache); suffix].
            qs, ks, vs = [], [], []
            if prefix is not None:
                q, k, v = _qkv(vlm_layer.self_attn, vlm_layer.input_layernorm(prefix), hd)
                qs.append(q), ks.append(k), vs.append(v)
            if suffix is not None:
                h = exp_layer.input_layernorm(suffix)
                h = h.to(exp_layer.self_attn.q_proj.weight.dtype)
                q, k, v = _qkv(exp_layer.self_attn, h, hd)
                qs.append(q), ks.append(k.to(qs[0].dtype)), vs.append(v.to(qs[0].dtype))
            q = apply_rope(torch.cat([t.to(qs[0].dtype) for t in qs], dim=1), positions)
            k = apply_rope(torch.cat(ks, dim=1), positions)
            v = torch.cat(vs, dim=1)
            if fill_cache:
                layer_cache = LayerCache(k, v)
            elif cache is not None:
                k = torch.cat([cache[i].key.to(k.dtype), k], dim=1)
                v = torch.cat([cache[i].value.to(v.dtype), v], dim=1)
            if prefix is not None and not need_prefix_out:
                if suffix is not None:  # only the suffix queries matter
                    suffix_att = attention(q[:, n_prefix:], k, v, mask[:, n_prefix:])
            else:
                out = attention(q, k, v, mask)
                prefix_att, suffix_att = out[:, :n_prefix], out[:, n_prefix:]
        else:
            # Cross-attention layer: the prefix attends to itself, the expert to the prefix.
            if prefix is not None:
                pos_p = positions[:, :n_prefix]
                q, k, v = _qkv(vlm_layer.self_attn, vlm_layer.input_layernorm(prefix), hd)
                k = apply_rope(k, pos_p)
                if need_prefix_out:
                    prefix_att = attention(apply_rope(q, pos_p), k, v, mask[:, :n_prefix, :n_prefix])
                key, value = k, v
            else:
                assert cache is not None, "suffix-only calls need the prefix cache"
                key, value = cache[i].key, cache[i].value
            if suffix is not None:
                attn = exp_layer.self_attn
                h = exp_layer.input_layernorm(suffix).to(attn.q_proj.weight.dtype)
                q = attn.q_proj(h).view(*h.shape[:-1], -1, hd)
                w_dtype = attn.k_proj.weight.dtype
                ek = attn.k_proj(key.flatten(2).to(w_dtype)).view(*key.shape[:2], -1, hd)
                ev = attn.v_proj(value.flatten(2).to(w_dtype)).view(*value.shape[:2], -1, hd)
                pos_s = positions[:, n_prefix:]
                pos_s = pos_s - pos_s.min(dim=1, keepdim=True).values  # expert positions start at 0
                q = apply_rope(q, pos_s)
                suffix_att = attention(q, ek, ev.to(q.dtype), mask[:, -suffix.shape[1] :, : key.shape[1]])

        if prefix is not None:
            prefix = self._residual_mlp(vlm_layer, prefix, prefix_att) if need_prefix_out else None
        if suffix is not None:
            suffix = self._residual_mlp(exp_layer, suffix, suffix_att)
        return prefix, suffix, layer_cache

    @staticmethod
    def _residual_mlp(layer: nn.Module, x: Tensor, att: Tensor) -> Tensor:
        o = layer.self_attn.o_proj(att.to(layer.self_attn.o_proj.weight.dtype))
        x = x + o.to(x.dtype)
        return x + layer.mlp(layer.post_attention_layernorm(x)).to(x.dtype)
