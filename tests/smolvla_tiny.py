"""A tiny SmolVLM2-shaped snapshot on disk (config.json, model.safetensors, tokenizer),
laid out like a Hugging Face snapshot directory, for the SmolVLA tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from robotrain.constants import ACTION, ACTION_IS_PAD, OBS_STATE, TASK
from robotrain.policies.base import PolicyFeatures

CAMERAS = ("observation.images.front", "observation.images.wrist")
WORDS = ["pick", "up", "the", "cube", "and", "place", "it", "in", "bowl", "push", "left", "right"]


def write_tiny_snapshot(root: Path, num_layers: int = 6, seed: int = 0) -> Path:
    """A random tiny SmolVLM with `num_layers` decoder layers and a word-level tokenizer."""
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers

    from robotrain.policies.smolvla.backbone import TINY_SMOLVLM, build_vlm

    root.mkdir(parents=True, exist_ok=True)
    cfg = json.loads(json.dumps(TINY_SMOLVLM))
    cfg["text_config"]["num_hidden_layers"] = num_layers
    cfg["architectures"] = ["SmolVLMForConditionalGeneration"]
    torch.manual_seed(seed)
    vlm = build_vlm(cfg, num_layers)
    save_file({k: v.contiguous() for k, v in vlm.state_dict().items()}, str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps(cfg))
    vocab = {"<pad>": 0, "<unk>": 1, "\n": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(pattern=" ", behavior="removed"), pre_tokenizers.Split(pattern="\n", behavior="isolated")]
    )
    tok.save(str(root / "tokenizer.json"))
    (root / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<pad>", "model_max_length": 64}))
    return root


def features(h: int = 24, w: int = 32) -> PolicyFeatures:
    return PolicyFeatures(state_dim=6, action_dim=6, camera_keys=CAMERAS, image_shape=(3, h, w))


def stats(seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        OBS_STATE: {"mean": rng.normal(size=6).astype(np.float32), "std": rng.uniform(0.5, 2, 6).astype(np.float32)},
        ACTION: {"mean": rng.normal(size=6).astype(np.float32), "std": rng.uniform(0.5, 2, 6).astype(np.float32)},
    }


def batch(b: int = 2, chunk: int = 8, h: int = 24, w: int = 32, seed: int = 0) -> dict[str, object]:
    g = torch.Generator().manual_seed(seed)
    out: dict[str, object] = {key: torch.rand(b, 3, h, w, generator=g) for key in CAMERAS}
    out[OBS_STATE] = torch.randn(b, 6, generator=g)
    out[ACTION] = torch.randn(b, chunk, 6, generator=g)
    out[ACTION_IS_PAD] = torch.zeros(b, chunk, dtype=torch.bool)
    out[TASK] = ["pick up the cube", "place it in the bowl"][:b] + ["push left"] * max(0, b - 2)
    return out
