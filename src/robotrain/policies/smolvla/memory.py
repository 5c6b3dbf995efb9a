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
BF16_FACTOR = 0.55
"""Activation bytes under bf16 autocast / float32 (most tensors in 2 bytes, norms in 4; not measured)."""


def saved_bytes_per_sample(dims: dict[str, Any], vision_trains: bool, vlm_trains: bool) -> float:
    """What one training sample makes autograd save, float32. `dims` holds the sizes
    (see `SmolVLAPolicy.activation_bytes_per_sample`): cameras, patches, image_tokens,
    language_tokens, chunk, and width/ffn/layers for vision, text and expert."""
    total = 0.0
    if vision_trains:
        total += dims["cameras"] * dims["patches"] * dims["vision_layers"] * (
            A_V * dims["vision_width"] + 8 * dims["vision_ffn"])
    prefix = dims["cameras"] * dims["image_tokens"] + dims["language_tokens"] + 1
    prefix_bytes = prefix * dims["layers"] * (A_T * dims["width"] + 16 * dims["ffn"])
    total += prefix_bytes if vlm_trains else FROZEN_PREFIX_FRACTION * prefix_bytes
    total += dims["chunk"] * dims["layers"] * (A_E * dims["expert_width"] + 16 * dims["expert_ffn"])
    return total


def activation_bytes_per_sample(dims: dict[str, Any], vision_trains: bool, vlm_trains: bool, device_type: str,
                                amp: bool) -> int:
    """What one sample adds to a training step's peak (calibration: module docstring)."""
    saved = saved_bytes_per_sample(dims, vision_trains, vlm_trains)
    if amp:
        saved *= BF16_FACTOR
    return int(saved * (CPU_PEAK_FACTOR if device_type == "cpu" else 1.0))
