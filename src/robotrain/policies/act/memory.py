"""ACT's activation memory per training sample, for `robotrain plan` (training/memory.py).

Why a formula and not a trial run: the plan must answer for a 24 GB GPU from a laptop,
without building real weights. The formula counts what autograd saves for backward,
layer by layer, and one factor calibrated against measured peaks turns that into what a
training step adds to the peak (gradients of activations during backward, the float copy
of the images, allocator slack).

How it was calibrated (float32, CPU, torch 2.11):
- The saved bytes: `torch.autograd.graph.saved_tensors_hooks` summed the distinct
  storages (parameters excluded) saved by one forward of each part at several shapes,
  and the coefficients below reproduce them to 0.1%: the ResNet18 saves 244.5 bytes per
  input pixel at any size (ResNet34 344.7; 268.5 / 380.7 with a dilated layer4), an
  encoder layer S x (48 D + 12 F) bytes plus 12 h S^2 for the attention weights (softmax
  output, dropout mask, dropped weights), a decoder layer C x (68 D + 12 F) + 16 S D +
  12 h C (C + S), for S tokens, C action queries, width D, feed-forward F and h heads;
  the whole policy at 240x320 saved 130.0 MB per sample against 129.4 MB predicted.
- The factor: peak RSS of real training steps grows by 1.30x the saved bytes per sample
  (full-size ACT at 240x320, batch 2 and 8: 1,425 and 2,399 MiB, i.e. 168 MB per sample
  of which 2.3 MB is the batch itself, against 129 MB saved); the other points of
  benchmarks/bench_memory.py were predicted with it, not fitted.
- CUDA: the attention is fused there (flash / memory-efficient kernels save no S^2
  weights), and bf16 autocast stores most activations in 2 bytes: 0.52x the float32
  bytes reproduces the six H100 peaks of docs/benchmarks.md within 3%.
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
# With gradient checkpointing: the inputs of the stem and layer1..4 plus layer4's output
# (image 12, 16, 16, 8, 4 and 2 bytes per input pixel; 8 for a dilated layer4's output),
# and the most any one stage saves (the stem: 108; ResNet34's layer1: 112).
STAGE_INPUT_BYTES_PER_PIXEL = {
    ("resnet18", False): 58.0,
    ("resnet18", True): 64.0,
    ("resnet34", False): 58.0,
    ("resnet34", True): 64.0,
}
LARGEST_STAGE_BYTES_PER_PIXEL = {
    ("resnet18", False): 108.0,
    ("resnet18", True): 108.0,
    ("resnet34", False): 112.0,
    ("resnet34", True): 112.0,
}
CPU_PEAK_FACTOR = 1.30
"""Peak RSS added per sample / bytes saved per sample (measured, CPU, float32)."""
BF16_FACTOR = 0.52
"""Activation bytes under bf16 autocast / float32 (fitted to the H100 peaks)."""


def encoder_layer_bytes(tokens: int, cfg: ACTConfig, attention_weights: bool) -> float:
    """Bytes one (VAE or main) encoder layer saves per sample, float32."""
    d, f, h = cfg.dim_model, cfg.dim_feedforward, cfg.n_heads
    out = tokens * (48 * d + 12 * f)
    if attention_weights:
        out += 12 * h * tokens * tokens
    return float(out)


def decoder_layer_bytes(queries: int, tokens: int, cfg: ACTConfig, attention_weights: bool) -> float:
    """Bytes one decoder layer saves per sample (self-attention over the queries,
    cross-attention to `tokens` encoder outputs), float32."""
    d, f, h = cfg.dim_model, cfg.dim_feedforward, cfg.n_heads
    out = queries * (68 * d + 12 * f) + 16 * tokens * d
    if attention_weights:
        out += 12 * h * queries * (queries + tokens)
    return float(out)


def saved_bytes_per_sample(cfg: ACTConfig, n_cameras: int, image_hw: tuple[int, int], encoder_tokens: int,
                           use_state: bool, fused_attention: bool) -> float:
    """What one training sample makes autograd save, float32 (see the module docstring).

    With `gradient_checkpointing` only each checkpointed segment's input stays (the
    ResNet stages' inputs: STAGE_INPUT_BYTES_PER_PIXEL; each layer's input tokens), and
    backward recomputes one segment at a time: the largest of them is added whole."""
    weights = not fused_attention
    key = (cfg.vision_backbone, cfg.replace_final_stride_with_dilation)
    pixels = n_cameras * image_hw[0] * image_hw[1]
    vae_tokens = 1 + int(use_state) + cfg.chunk_size
    vae_layers = cfg.n_vae_encoder_layers if cfg.use_vae else 0
    encoder = encoder_layer_bytes(encoder_tokens, cfg, weights)
    decoder = decoder_layer_bytes(cfg.chunk_size, encoder_tokens, cfg, weights)
    vae = encoder_layer_bytes(vae_tokens, cfg, weights)
    if not cfg.gradient_checkpointing:
        return (pixels * BACKBONE_BYTES_PER_PIXEL[key] + cfg.n_encoder_layers * encoder
                + cfg.n_decoder_layers * decoder + vae_layers * vae)
    layer_inputs = 4 * cfg.dim_model * (cfg.n_encoder_layers * encoder_tokens + cfg.n_decoder_layers * cfg.chunk_size
                                        + vae_layers * vae_tokens)
    largest = max(pixels * LARGEST_STAGE_BYTES_PER_PIXEL[key], encoder, decoder, vae if vae_layers else 0.0)
    return pixels * STAGE_INPUT_BYTES_PER_PIXEL[key] + layer_inputs + largest


def activation_bytes_per_sample(cfg: ACTConfig, n_cameras: int, image_hw: tuple[int, int], encoder_tokens: int,
                                use_state: bool, device_type: str, amp: bool) -> int:
    """What one sample adds to a training step's peak on `device_type`, with or without
    bf16 autocast (calibration: module docstring)."""
    fused = device_type == "cuda"
    saved = saved_bytes_per_sample(cfg, n_cameras, image_hw, encoder_tokens, use_state, fused)
    if amp:
        saved *= BF16_FACTOR
    return int(saved * (CPU_PEAK_FACTOR if device_type == "cpu" else 1.0))
