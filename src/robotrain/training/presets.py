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


def preset_smolvla_sim() -> dict[str, Any]:
    """SmolVLA for the simulated SO-101 on a CPU, from scratch: no pretrained SmolVLM can be
    downloaded here, so the backbone is the small random "sim" SmolVLM and *all* of it
    trains (a frozen random VLM passes the state and images on as noise: held-out action
    error 16.2 vs 8.3 at 4k samples, mean-action baseline 18.2). 96x128 frames are padded
    into 128x128 (not 512x512), chunks of 30 re-planned every 10 steps as ACT's demo
    preset does, cosine lr from 3e-4 (1e-4 and 6e-4 measured worse or no better at 16k
    samples: docs/smolvla_sim.md)."""
    steps = 8000
    return {"policy_type": "smolvla", "batch_size": 8, "steps": steps, "image_size": [128, 128], "num_workers": 1,
            "log_freq": 100, "save_freq": 2000, "eval_freq": 1000, "eval_max_samples": 128, "keep_last": 2,
            "policy": {"vlm": "sim", "train_expert_only": False, "freeze_vision_encoder": False,
                       "chunk_size": 30, "n_action_steps": 10, "optimizer_lr": 3e-4,
                       "scheduler_warmup_steps": 100, "scheduler_decay_steps": steps, "scheduler_decay_lr": 1e-5}}


def preset_debug() -> dict[str, Any]:
    """A few steps with frequent logging/saving/eval to check a setup end to end."""
    return {"steps": 20, "batch_size": 2, "num_workers": 0, "log_freq": 1, "save_freq": 10, "eval_freq": 10,
            "eval_max_samples": 8}


PRESETS: dict[str, Callable[[], dict[str, Any]]] = {
    "act_so101": preset_act_so101,
    "smolvla_so101": preset_smolvla_so101,
    "act_sim_demo": preset_act_sim_demo,
    "smolvla_sim": preset_smolvla_sim,
    "debug": preset_debug,
}
