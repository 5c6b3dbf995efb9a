"""ACT's activation memory per training sample, for `robotrain plan` (training/memory.py).

Why a formula and not a trial run: the plan must answer for a 24 GB GPU from a laptop,
without building real weights. The formula counts what autograd saves for backward,
layer by layer, and one factor calibrated against measured peaks turns that into what a
training step adds to the peak (gradients of activations during backward, the float copy
of the images, allocator slack).

How it was calibrated (float32, CPU, torch 2.13):
- The saved bytes: `torch.autograd.graph.saved_tensors_hooks` summed the distinct
  storages (parameters excluded) saved by one forward of each part at several shapes
  (widths 512/3200 and 256/1024, 50-200 tokens), and the coefficients below reproduce
  them to 0.3%: the ResNet18 saves 244.5 bytes per input pixel at any size (ResNet34
  344.7; 268.5 / 380.7 with a dilated layer4), an encoder layer S x (38 D + 9 F) bytes
  plus 12 h S^2 for the attention weights (softmax output, dropout mask, dropped weights),
  the VAE encoder's last layer (token 0 alone) 16 S D + 38 D + 9 F + 12 h S, a decoder
  layer C x (55 D + 9 F) + 16 S D + 12 h C (C + S), for S tokens, C action queries,
  width D, feed-forward F and h heads. (MaskDropout keeps a 1-byte mask where
  `nn.Dropout` on a CPU kept a 4-byte one: 10 D + 3 F less per token than before.)
- The factor: peak RSS of real training steps grows by CPU_PEAK_FACTOR x the saved bytes
  per sample, fitted to full-size ACT at 240x320 (batch 2 and 8: 1,423 and 2,202 MiB, 136
  MB per sample against 107 MB saved) and 480x640 (batch 4: 3,116 MiB, 512 MB per sample
  against 442 MB saved): 1.27 and 1.16, 1.21 taken.
- Gradient checkpointing: backward holds the segments' inputs, one recomputed segment and
  its activation gradients, and which of these is the peak depends on the shapes; a
  per-part fraction of the plain figure fits what was measured (peak RSS per sample, all
  parts checkpointed, float32, CPU): the transformers' part falls to CHECKPOINT_TRANSFORMER
  of its plain cost and the ResNet's only to CHECKPOINT_BACKBONE (its stem, recomputed
  with its gradients, is most of what the ResNet keeps). Fitted to three points: full ACT
  at 240x320 (72 MiB per sample against 130 plain) and 480x640 (282 against 488), and a
  tiny transformer (dim 32) at 480x640 (151 against 180), each reproduced within 3%.
- CUDA: the attention is fused there (flash / memory-efficient kernels save no S^2
  weights), and bf16 autocast stores most activations in 2 bytes: BF16_FACTOR x the
  float32 bytes reproduces the six H100 peaks of docs/benchmarks.md within 5% (fitted to
  them; they were recorded before the VAE encoder's last layer was cut to its [CLS]
  token, which saves about 4 MB per sample: re-measure when a GPU is at hand).
"""

from __future__ import annotations

from robotrain.policies.act.config import ACTConfig

# Bytes saved for backward per input pixel, by (backbone, dilated layer4), float32.
BACKBONE_BYTES_PER_PIXEL = {
    ("resnet18", False): 244.5,
    ("resnet18", True): 268.5,
    ("resnet34", False): 344.7,
    ("resnet34", True): 380.7,
}
CPU_PEAK_FACTOR = 1.21
"""Peak RSS added per sample / bytes saved per sample (measured, CPU, float32)."""
CHECKPOINT_TRANSFORMER = 0.41
"""With gradient checkpointing: the transformers' (VAE, encoder, decoder) share of the peak
per sample, as a fraction of what they add without it (measured; module docstring)."""
CHECKPOINT_BACKBONE = 0.87
"""The same for the ResNet (measured; module docstring)."""
BF16_FACTOR = 0.62
"""Activation bytes under bf16 autocast / float32 (fitted to the H100 peaks)."""


def encoder_layer_bytes(tokens: int, cfg: ACTConfig, attention_weights: bool) -> float:
    """Bytes one (VAE or main) encoder layer saves per sample, float32."""
    d, f, h = cfg.dim_model, cfg.dim_feedforward, cfg.n_heads
    out = tokens * (38 * d + 9 * f)
    if attention_weights:
        out += 12 * h * tokens * tokens
    return float(out)


def first_token_layer_bytes(tokens: int, cfg: ACTConfig, attention_weights: bool) -> float:
    """Bytes the VAE encoder's last layer saves per sample: keys and values of every token,
    the rest for token 0 alone, float32."""
    d, f, h = cfg.dim_model, cfg.dim_feedforward, cfg.n_heads
    out = 16 * tokens * d + 38 * d + 9 * f
    if attention_weights:
        out += 12 * h * tokens
    return float(out)


def decoder_layer_bytes(queries: int, tokens: int, cfg: ACTConfig, attention_weights: bool) -> float:
    """Bytes one decoder layer saves per sample (self-attention over the queries,
    cross-attention to `tokens` encoder outputs), float32."""
    d, f, h = cfg.dim_model, cfg.dim_feedforward, cfg.n_heads
    out = queries * (55 * d + 9 * f) + 16 * tokens * d
    if attention_weights:
        out += 12 * h * queries * (queries + tokens)
    return float(out)


def saved_bytes_per_sample(cfg: ACTConfig, n_cameras: int, image_hw: tuple[int, int], encoder_tokens: int,
                           use_state: bool, fused_attention: bool) -> tuple[float, float]:
    """What one training sample makes autograd save in a plain forward, float32 (see the
    module docstring), as (ResNet, transformers)."""
    weights = not fused_attention
    key = (cfg.vision_backbone, cfg.replace_final_stride_with_dilation)
    pixels = n_cameras * image_hw[0] * image_hw[1]
    vae_tokens = 1 + int(use_state) + cfg.chunk_size
    vae_layers = cfg.n_vae_encoder_layers if cfg.use_vae else 0
    vae = 0.0
    if vae_layers:
        vae = ((vae_layers - 1) * encoder_layer_bytes(vae_tokens, cfg, weights)
               + first_token_layer_bytes(vae_tokens, cfg, weights))
    transformers = (cfg.n_encoder_layers * encoder_layer_bytes(encoder_tokens, cfg, weights)
                    + cfg.n_decoder_layers * decoder_layer_bytes(cfg.chunk_size, encoder_tokens, cfg, weights) + vae)
    return pixels * BACKBONE_BYTES_PER_PIXEL[key], transformers


def activation_bytes_per_sample(cfg: ACTConfig, n_cameras: int, image_hw: tuple[int, int], encoder_tokens: int,
                                use_state: bool, device_type: str, amp: bool) -> int:
    """What one sample adds to a training step's peak on `device_type`, with or without
    bf16 autocast and gradient checkpointing (calibration: module docstring)."""
    fused = device_type == "cuda"
    backbone, transformers = saved_bytes_per_sample(cfg, n_cameras, image_hw, encoder_tokens, use_state, fused)
    if cfg.gradient_checkpointing:
        backbone, transformers = backbone * CHECKPOINT_BACKBONE, transformers * CHECKPOINT_TRANSFORMER
    saved = backbone + transformers
    if amp:
        saved *= BF16_FACTOR
    return int(saved * (CPU_PEAK_FACTOR if device_type == "cpu" else 1.0))
