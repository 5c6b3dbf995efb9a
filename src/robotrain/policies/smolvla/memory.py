"""SmolVLA's activation memory per training sample, for `robotrain plan` (training/memory.py).

Per-token terms, one per part of the network (a frozen vision tower keeps nothing for
backward; a frozen VLM still keeps FROZEN_PREFIX_FRACTION of its prefix cost):
- vision tower: n_cameras x patches x layers x (A_V * width + 8 * ffn)
- VLM text layers over the prefix (image tokens, `tokenizer_max_length` language tokens,
  the state token): prefix x layers x (A_T * width + 16 * ffn)
- action expert over the chunk: chunk x layers x (A_E * expert width + 16 * expert ffn)
8 and 16 bytes per ffn unit are what the MLPs save (SigLIP: fc2's input and the GELU's
input; the gated MLP: gate, SiLU output, up and their product); the width coefficients
were fitted to `saved_tensors_hooks` counts of the sim SmolVLM's forward (2 cameras at
128 and 256 px, chunk 30 and 60, 1 and 2 cameras, 3 and 42 language tokens: every count
within 1%). No attention term: PyTorch's SDPA saves no attention weights here.

Calibration to peaks: on a CPU, peak RSS of real training steps grows by CPU_PEAK_FACTOR
times these saved bytes per sample (the smolvla_sim preset at 128x128, batch 8 and 32:
665 and 1,112 MiB, 19.0 MB per sample besides the batch against 16.3 MB saved); the other
points of benchmarks/bench_memory.py were predicted with it, not fitted. The sizes of the full SmolVLM2 (960 wide, ffn 2.7x) follow
from the same per-unit costs, which is an extrapolation: it was not measured.

Gradient checkpointing (each vision layer, and each VLM layer with its expert layer, is
recomputed in backward) keeps only the layers' inputs (4 bytes per token and width unit),
and backward holds one recomputed layer and its activation gradients at once: the peak
grows by the inputs x CPU_PEAK_FACTOR plus the largest layer's saved bytes x
(CPU_PEAK_FACTOR + CHECKPOINT_SEGMENT_FACTOR). The factor was fitted to the smolvla_sim
preset at 128x128, batch 32 (785 MiB measured against 1,106 without checkpointing) and
checked at 256x256, batch 16 (benchmarks/bench_memory.py, docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any

A_V = 38.2
"""Vision tower: bytes saved per (patch, layer, width unit), besides the MLP's."""
A_T = 23.1
"""VLM text layer: bytes saved per (prefix token, layer, width unit), besides the MLP's."""
A_E = 52.9
"""Action expert layer: bytes per (action token, layer, width unit), besides the MLP's."""
FROZEN_PREFIX_FRACTION = 0.675
"""A frozen VLM still saves this much over the prefix (its keys and values feed the
trained expert, so gradients flow through the layers; only weight gradients are skipped):
measured 15.1 kB against 22.3 kB per (token, layer) for the sim SmolVLM."""
CPU_PEAK_FACTOR = 1.16
"""Peak RSS added per sample / bytes saved per sample (measured, CPU, float32)."""
CHECKPOINT_SEGMENT_FACTOR = 2.3
"""With gradient checkpointing: what backward through the largest recomputed layer adds to
the peak, per byte that layer saves (measured, CPU, float32; module docstring)."""
BF16_FACTOR = 0.55
"""Activation bytes under bf16 autocast / float32 (most tensors in 2 bytes, norms in 4; not measured)."""


def saved_bytes_per_sample(dims: dict[str, Any], vision_trains: bool, vlm_trains: bool,
                           checkpointing: bool = False) -> tuple[float, float]:
    """What one training sample makes autograd save, float32, as (kept through backward,
    largest layer recomputed in backward). `dims` holds the sizes (see
    `SmolVLAPolicy.activation_bytes_per_sample`): cameras, patches, image_tokens,
    language_tokens, chunk, and width/ffn/layers for vision, text and expert."""
    vision_tokens = dims["cameras"] * dims["patches"]
    vision_layer = vision_tokens * (A_V * dims["vision_width"] + 8 * dims["vision_ffn"]) if vision_trains else 0.0
    prefix = dims["cameras"] * dims["image_tokens"] + dims["language_tokens"] + 1
    text_layer = prefix * (A_T * dims["width"] + 16 * dims["ffn"])
    if not vlm_trains:
        text_layer *= FROZEN_PREFIX_FRACTION
    expert_layer = dims["chunk"] * (A_E * dims["expert_width"] + 16 * dims["expert_ffn"])
    if not checkpointing:
        return dims["vision_layers"] * vision_layer + dims["layers"] * (text_layer + expert_layer), 0.0
    inputs = 4 * dims["layers"] * (prefix * dims["width"] + dims["chunk"] * dims["expert_width"])
    if vision_trains:
        inputs += 4 * dims["vision_layers"] * vision_tokens * dims["vision_width"]
    return float(inputs), max(vision_layer, text_layer + expert_layer)


def activation_bytes_per_sample(dims: dict[str, Any], vision_trains: bool, vlm_trains: bool, device_type: str,
                                amp: bool, checkpointing: bool = False) -> int:
    """What one sample adds to a training step's peak (calibration: module docstring)."""
    kept, recomputed = saved_bytes_per_sample(dims, vision_trains, vlm_trains, checkpointing)
    if amp:
        kept, recomputed = kept * BF16_FACTOR, recomputed * BF16_FACTOR
    factor = CPU_PEAK_FACTOR if device_type == "cpu" else 1.0
    return int(kept * factor + recomputed * (factor + CHECKPOINT_SEGMENT_FACTOR))
