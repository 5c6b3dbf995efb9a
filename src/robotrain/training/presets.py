"""Presets: plain functions returning partial train configs (`robotrain train --preset NAME`).

Precedence: dataclass defaults < preset < `--config FILE.json` < flags."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def preset_act_so101() -> dict[str, Any]:
    """ACT on an SO-101 dataset at LeRobot's defaults, with 240x320 frames (4x fewer tokens)."""
    return {"policy_type": "act", "batch_size": 8, "steps": 100_000, "image_size": [240, 320]}


def preset_smolvla_so101() -> dict[str, Any]:
    """SmolVLA fine-tuning on an SO-101 dataset (LeRobot's recipe: bs 64, 20k steps)."""
    return {"policy_type": "smolvla", "batch_size": 64, "steps": 20_000}


def preset_act_sim_demo() -> dict[str, Any]:
    """ACT sized for 2 CPU cores on the SO-101 sim (`robotrain demo`): 96x128 frames, a
    narrow transformer, short chunks re-planned often, lr 1e-4 for the random backbone too
    (measured recipe: docs/results.md)."""
    return {"policy_type": "act", "batch_size": 8, "steps": 1500, "image_size": [96, 128], "num_workers": 1,
            "log_freq": 50, "save_freq": 500, "eval_freq": 500, "eval_max_samples": 64, "keep_last": 0,
            "policy": {"dim_model": 256, "n_heads": 8, "dim_feedforward": 1024, "n_encoder_layers": 2,
                       "n_decoder_layers": 1, "n_vae_encoder_layers": 2, "latent_dim": 32,
                       "chunk_size": 30, "n_action_steps": 10,
                       "optimizer_lr": 1e-4, "optimizer_lr_backbone": 1e-4}}


def preset_debug() -> dict[str, Any]:
    """A few steps with frequent logging/saving/eval to check a setup end to end."""
    return {"steps": 20, "batch_size": 2, "num_workers": 0, "log_freq": 1, "save_freq": 10, "eval_freq": 10,
            "eval_max_samples": 8}


PRESETS: dict[str, Callable[[], dict[str, Any]]] = {
    "act_so101": preset_act_so101,
    "smolvla_so101": preset_smolvla_so101,
    "act_sim_demo": preset_act_sim_demo,
    "debug": preset_debug,
}
