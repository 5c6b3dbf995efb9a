"""The SmolVLM2 backbone: its configuration, weights and tokenizer, from local files only.

`vlm` (see `SmolVLAConfig`) is resolved here:
- a directory: a SmolVLM2 snapshot (config.json, model.safetensors or a sharded index,
  tokenizer.json + tokenizer_config.json), as `huggingface-cli download` leaves it;
- "full-random": SmolVLM2-500M-Video-Instruct's shape with random weights (benchmarks);
- "tiny": a few-thousand-parameter SmolVLM for tests and CPU smoke runs;
- None: the `vlm_model_name` snapshot in the local Hugging Face cache, if there is one.
Random configurations have no tokenizer file; they use `ByteTokenizer`.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

from robotrain.errors import CheckpointError, ConfigError
from robotrain.policies.smolvla.config import VLM_FULL_RANDOM, VLM_SIM, VLM_TINY, SmolVLAConfig
from robotrain.system.files import read_json

logger = logging.getLogger(__name__)

# SmolVLM2-500M-Video-Instruct (text 960 wide, SigLIP 768 wide at 512 px, pixel shuffle 4).
# The shapes agree with ../shared/docs/smolvla_state_dict_keys.txt.
FULL_SMOLVLM2_500M: dict[str, Any] = {
    "model_type": "smolvlm",
    "image_token_id": 49190,
    "scale_factor": 4,
    "tie_word_embeddings": False,
    "text_config": {
        "model_type": "llama",
        "hidden_size": 960,
        "intermediate_size": 2560,
        "num_attention_heads": 15,
        "num_key_value_heads": 5,
        "head_dim": 64,
        "num_hidden_layers": 32,
        "vocab_size": 49280,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 8192,
        "rope_theta": 100000.0,
        "hidden_act": "silu",
        "pad_token_id": 2,
        "tie_word_embeddings": False,
    },
    "vision_config": {
        "model_type": "smolvlm_vision",
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_attention_heads": 12,
        "num_hidden_layers": 12,
        "image_size": 512,
        "patch_size": 16,
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu_pytorch_tanh",
    },
}

# A tiny SmolVLM: 32 px images, 8 px patches -> 16 patches -> 4 tokens after pixel shuffle 2.
TINY_SMOLVLM: dict[str, Any] = {
    "model_type": "smolvlm",
    "image_token_id": 3,
    "scale_factor": 2,
    "tie_word_embeddings": False,
    "text_config": {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "num_hidden_layers": 4,
        "vocab_size": 260,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 512,
        "hidden_act": "silu",
        "pad_token_id": 0,
        "tie_word_embeddings": False,
    },
    "vision_config": {
        "model_type": "smolvlm_vision",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "image_size": 32,
        "patch_size": 8,
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu_pytorch_tanh",
    },
}


INSTALL_HINT = "pip install -e '.[smolvla]' (or: pip install 'robotrain[smolvla]')"


def require(module: str) -> Any:
    """Import one of SmolVLA's optional dependencies (transformers, tokenizers), or say in
    one line how to install them instead of a ModuleNotFoundError traceback."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise ConfigError(f"SmolVLA needs the {module!r} package, which is not installed: {INSTALL_HINT}") from None


def sim_smolvlm(width: int = 256, layers: int = 4, vision_width: int = 192, vision_layers: int = 4,
                image_size: int = 128, patch_size: int = 16, scale_factor: int = 2) -> dict[str, Any]:
    """A small SmolVLM for the simulated SO-101 on a CPU (random weights: none can be
    downloaded here). Its vision tower's position table covers the whole input
    (`image_size` = the padded frame, 128 for 96x128 frames), so every patch has its own
    position: a tower built for 512 px fed 128 px frames would give 4x4 patches one
    position. 16 px patches, pixel shuffle 2: 16 image tokens per camera, as ACT's ResNet
    gives 12 feature positions per 96x128 camera."""
    heads = max(1, width // 64)
    return {
        "model_type": "smolvlm",
        "image_token_id": 3,
        "scale_factor": scale_factor,
        "tie_word_embeddings": False,
        "text_config": {
            "model_type": "llama", "hidden_size": width, "intermediate_size": 4 * width,
            "num_attention_heads": heads, "num_key_value_heads": max(1, heads // 2), "head_dim": 64,
            "num_hidden_layers": layers, "vocab_size": 260, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 1024, "hidden_act": "silu", "pad_token_id": 0, "tie_word_embeddings": False,
        },
        "vision_config": {
            "model_type": "smolvlm_vision", "hidden_size": vision_width, "intermediate_size": 4 * vision_width,
            "num_attention_heads": max(1, vision_width // 64), "num_hidden_layers": vision_layers,
            "image_size": image_size, "patch_size": patch_size, "layer_norm_eps": 1e-6,
            "hidden_act": "gelu_pytorch_tanh",
        },
    }


class TaskTokenizer(Protocol):
    pad_id: int

    def encode_batch(self, texts: Sequence[str], max_length: int, pad_to_max: bool) -> tuple[Tensor, Tensor]:
        """Token ids (B, L) and attention mask (B, L) bool, truncated to `max_length`,
        right-padded to the longest text (or to `max_length` with `pad_to_max`)."""
        ...


class ByteTokenizer:
    """UTF-8 bytes shifted by 4 (0 = pad). Only for random backbones that ship no tokenizer."""

    pad_id = 0

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def encode(self, text: str) -> list[int]:
        return [(b + 4) % self.vocab_size for b in text.encode("utf-8")]

    def encode_batch(self, texts: Sequence[str], max_length: int, pad_to_max: bool) -> tuple[Tensor, Tensor]:
        return _right_pad([self.encode(t)[:max_length] for t in texts], self.pad_id, max_length if pad_to_max else None)


class FileTokenizer:
    """A snapshot's `tokenizer.json`, run by the `tokenizers` library with the settings
    LeRobot's SmolVLA preprocessor gives the fast tokenizer it runs (its
    `TokenizerProcessorStep`): special tokens added as tokenizer.json says, truncation to
    `tokenizer_max_length` (longest-first, from the right), padding on the right with the
    pad token of `tokenizer_config.json`, to the longest task or to the maximum length."""

    def __init__(self, snapshot: Path) -> None:
        Tokenizer = require("tokenizers").Tokenizer
        path = snapshot / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError("no tokenizer.json in the SmolVLM2 snapshot", snapshot)
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as exc:  # the tokenizers library raises plain Exceptions
            raise CheckpointError(f"cannot read tokenizer: {exc}", path) from exc
        self.pad_token, self.pad_id = self._find_pad(snapshot)

    def _find_pad(self, snapshot: Path) -> tuple[str, int]:
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            path = snapshot / name
            if not path.is_file():
                continue
            pad = read_json(path, CheckpointError, expect=dict).get("pad_token")
            if isinstance(pad, dict):
                pad = pad.get("content")
            if isinstance(pad, str):
                pad_id = self._tok.token_to_id(pad)
                if pad_id is None:
                    raise CheckpointError(f"pad_token {pad!r} is not in tokenizer.json", path)
                return pad, pad_id
        raise CheckpointError("tokenizer_config.json names no pad_token", snapshot)

    def encode_batch(self, texts: Sequence[str], max_length: int, pad_to_max: bool) -> tuple[Tensor, Tensor]:
        self._tok.enable_truncation(max_length=max_length)
        self._tok.enable_padding(direction="right", pad_id=self.pad_id, pad_token=self.pad_token,
                                 length=max_length if pad_to_max else None)
        encodings = self._tok.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.bool)
        return ids, mask


def _right_pad(ids: list[list[int]], pad_id: int, length: int | None) -> tuple[Tensor, Tensor]:
    length = length or max(1, max(len(i) for i in ids))
    out = torch.full((len(ids), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), length), dtype=torch.bool)
    for row, seq in enumerate(ids):
        out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = True
    return out, mask


def task_prompts(tasks: Sequence[str]) -> list[str]:
    """LeRobot's SmolVLA prompt: the task string ending in one newline (added if missing)."""
    return [t if t.endswith("\n") else t + "\n" for t in tasks]


def tokenize(
    tokenizer: TaskTokenizer, tasks: Sequence[str], max_length: int, pad_to_max: bool
) -> tuple[Tensor, Tensor]:
    """The prompts of `tasks` as token ids (B, L) and attention mask (B, L)."""
    return tokenizer.encode_batch(task_prompts(tasks), max_length, pad_to_max)


def _hf_cache_snapshot(model_name: str) -> Path | None:
    """The newest local snapshot of `model_name` in the Hugging Face cache, if any."""
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub"
    )
    snapshots = Path(hub) / ("models--" + model_name.replace("/", "--")) / "snapshots"
    if not snapshots.is_dir():
        return None
    candidates = sorted((p for p in snapshots.iterdir() if (p / "config.json").is_file()), key=os.path.getmtime)
    return candidates[-1] if candidates else None


def resolve_vlm(config: SmolVLAConfig) -> tuple[dict[str, Any], Path | None]:
    """(SmolVLM config dict, snapshot dir or None for random configs)."""
    if config.vlm == VLM_TINY:
        return json.loads(json.dumps(TINY_SMOLVLM)), None
    if config.vlm == VLM_SIM:
        return sim_smolvlm(), None
    if config.vlm == VLM_FULL_RANDOM:
        return json.loads(json.dumps(FULL_SMOLVLM2_500M)), None
    if config.vlm is None:
        snapshot = _hf_cache_snapshot(config.vlm_model_name)
        if snapshot is None:
            raise ConfigError(
                f"--policy.vlm is not set and {config.vlm_model_name!r} is not in the local Hugging Face "
                "cache; set it to a local SmolVLM2 snapshot directory, 'tiny' or 'full-random'"
            )
    else:
        snapshot = Path(config.vlm)
    path = snapshot / "config.json"
    if not path.is_file():
        raise ConfigError("not a SmolVLM2 snapshot directory (no config.json)", snapshot)
    data = read_json(path, ConfigError, expect=dict)
    if data.get("model_type") not in ("smolvlm", "idefics3"):
        raise ConfigError(f"model_type is {data.get('model_type')!r}, expected 'smolvlm'", path)
    return data, snapshot


def patch_position_ids(patch_mask: Tensor, patches_per_side: int) -> Tensor:
    """(B, rows, cols) bool mask of real patches -> (B, rows * cols) position-embedding ids.

    SmolVLM's vision tower places an image of r x c real patches on its n x n grid of
    position embeddings: patch (i, j) gets bucket (i * n // r) * n + (j * n // c), a full
    n x n image gets 0..n^2-1. Computed here in integers because transformers computes it
    in floats and changed the rounding between releases: 4.55.1-4.57.x scale the float32
    coordinates by (1 - 1e-6) first, so every exact bucket boundary falls one bucket low (a
    4x4 grid gets 0,0,1,2,0,0,1,2,4,4,5,6,8,8,9,10); 5.x clamps and gives 0..15. The same
    weights must not act differently after a minor dependency upgrade, so the ids are ours.
    Padding patches (mask False) get id 0, as in transformers."""
    batch, rows, cols = patch_mask.shape
    n = patches_per_side
    real_rows = patch_mask[:, :, 0].sum(dim=1).clamp(min=1)  # (B,)
    real_cols = patch_mask[:, 0, :].sum(dim=1).clamp(min=1)
    i = torch.arange(rows, device=patch_mask.device)
    j = torch.arange(cols, device=patch_mask.device)
    bucket_h = torch.div(i[None, :] * n, real_rows[:, None], rounding_mode="floor").clamp(max=n - 1)  # (B, rows)
    bucket_w = torch.div(j[None, :] * n, real_cols[:, None], rounding_mode="floor").clamp(max=n - 1)  # (B, cols)
    ids = (bucket_h[:, :, None] * n + bucket_w[:, None, :]).reshape(batch, -1)
    return torch.where(patch_mask.reshape(batch, -1), ids, torch.zeros_like(ids))


class VisionEmbeddings(nn.Module):
    """SmolVLM's vision embeddings (patch convolution + learned positions) with the position
    ids of `patch_position_ids`. It holds the original's two layers under their names, so
    state-dict keys are unchanged (`...vision_model.embeddings.patch_embedding.weight`)."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        self.patch_embedding = original.patch_embedding
        self.position_embedding = original.position_embedding
        self.patch_size = int(original.patch_size)
        self.num_patches_per_side = int(original.num_patches_per_side)

    def forward(self, pixel_values: Tensor, patch_attention_mask: Tensor | None = None) -> Tensor:
        """(B, 3, H, W) -> (B, H/p * W/p, hidden)."""
        batch, _, height, width = pixel_values.shape
        if patch_attention_mask is None:
            patch_attention_mask = torch.ones(
                batch, height // self.patch_size, width // self.patch_size, dtype=torch.bool, device=pixel_values.device
            )
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # (B, N, hidden)
        ids = patch_position_ids(patch_attention_mask.bool(), self.num_patches_per_side)
        return patches + self.position_embedding(ids)


def build_vlm(vlm_dict: dict[str, Any], num_layers: int, device: torch.device | str | None = None) -> torch.nn.Module:
    """A SmolVLMForConditionalGeneration with only the first `num_layers` decoder layers,
    its vision position ids computed by us (`VisionEmbeddings`)."""
    transformers = require("transformers")
    SmolVLMConfig, SmolVLMForConditionalGeneration = (
        transformers.SmolVLMConfig, transformers.SmolVLMForConditionalGeneration
    )

    data = json.loads(json.dumps(vlm_dict))
    data["model_type"] = "smolvlm"
    text = data.setdefault("text_config", {})
    text["num_hidden_layers"] = min(num_layers, int(text.get("num_hidden_layers", num_layers)))
    for key in ("architectures", "transformers_version", "torch_dtype", "dtype"):
        data.pop(key, None)
    vlm_config = SmolVLMConfig.from_dict(data)
    vlm_config._attn_implementation = "sdpa"
    vlm_config.vision_config._attn_implementation = "sdpa"
    vlm_config.text_config._attn_implementation = "sdpa"
    with torch.device(device) if device is not None else nullcontext():
        vlm = SmolVLMForConditionalGeneration(vlm_config)
        vision = vlm.model.vision_model
        vision.embeddings = VisionEmbeddings(vision.embeddings)
    return vlm


def _safetensors_files(snapshot: Path) -> list[Path]:
    single = snapshot / "model.safetensors"
    if single.is_file():
        return [single]
    index = snapshot / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index, CheckpointError, expect=dict).get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointError("no 'weight_map' object in the shard index", index)
        return [snapshot / s for s in sorted(set(map(str, weight_map.values())))]
    raise CheckpointError("no model.safetensors (or index) in the SmolVLM2 snapshot", snapshot)


def _iter_tensors(files: Sequence[Path]) -> Iterator[tuple[str, Tensor]]:
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    yield key, f.get_tensor(key)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"cannot read weights: {exc}", path) from exc


def load_vlm_weights(vlm: torch.nn.Module, snapshot: Path) -> None:
    """Copy a snapshot's weights into `vlm`; decoder layers beyond the kept ones are skipped.

    Strict: a missing weight, an unexpected one or a shape mismatch is a CheckpointError."""
    params = vlm.state_dict()
    kept = len(vlm.model.text_model.layers)
    seen: set[str] = set()
    unexpected: list[str] = []
    with torch.no_grad():
        for key, tensor in _iter_tensors(_safetensors_files(snapshot)):
            if key not in params:
                parts = key.split(".")
                if key.startswith("model.text_model.layers.") and int(parts[3]) >= kept:
                    continue  # layers cut by num_vlm_layers
                unexpected.append(key)
                continue
            if tuple(tensor.shape) != tuple(params[key].shape):
                raise CheckpointError(
                    f"{key}: shape {tuple(tensor.shape)} in the snapshot, {tuple(params[key].shape)} in the model",
                    snapshot,
                )
            params[key].copy_(tensor.to(params[key].dtype))
            seen.add(key)
    missing = sorted(set(params) - seen)
    if missing == ["lm_head.weight"] and "model.text_model.embed_tokens.weight" in seen:
        with torch.no_grad():  # tied embeddings: the snapshot stores one copy
            params["lm_head.weight"].copy_(params["model.text_model.embed_tokens.weight"])
        missing = []
    if missing or unexpected:
        raise CheckpointError(
            f"snapshot weights do not match SmolVLM: missing {short_list(missing)}, unexpected {short_list(unexpected)}",
            snapshot,
        )


def short_list(keys: Sequence[str], n: int = 8) -> str:
    keys = list(keys)
    return "[]" if not keys else f"{len(keys)} ({', '.join(keys[:n])}{', ...' if len(keys) > n else ''})"


def load_tokenizer(snapshot: Path | None, vocab_size: int) -> TaskTokenizer:
    if snapshot is None:
        return ByteTokenizer(vocab_size)
    return FileTokenizer(snapshot)
