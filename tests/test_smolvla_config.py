"""SmolVLA config, key-name parity with LeRobot 0.4.4, and the small pure functions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from robotrain.errors import ConfigError
from robotrain.policies.base import PolicyFeatures
from robotrain.policies.smolvla import SmolVLAConfig
from robotrain.policies.smolvla.backbone import ByteTokenizer, FileTokenizer, tokenize
from robotrain.policies.smolvla.expert import apply_rope, intermediate_size
from robotrain.policies.smolvla.flow import make_att_2d_masks, sample_time, sinusoidal_time_embedding

KEYS_FILE = Path(__file__).resolve().parent / "fixtures" / "smolvla_state_dict_keys.txt"


def test_defaults_are_lerobots() -> None:
    cfg = SmolVLAConfig()
    assert (cfg.chunk_size, cfg.n_action_steps, cfg.max_state_dim, cfg.max_action_dim) == (50, 50, 32, 32)
    assert cfg.resize_imgs_with_padding == (512, 512) and cfg.tokenizer_max_length == 48 and cfg.num_steps == 10
    assert (cfg.num_vlm_layers, cfg.expert_width_multiplier, cfg.self_attn_every_n_layers) == (16, 0.75, 2)
    assert cfg.attention_mode == "cross_attn" and cfg.freeze_vision_encoder and cfg.train_expert_only
    assert (cfg.optimizer_lr, cfg.optimizer_betas, cfg.optimizer_eps, cfg.optimizer_weight_decay) == (
        1e-4, (0.9, 0.95), 1e-8, 1e-10)
    assert (cfg.scheduler, cfg.scheduler_warmup_steps, cfg.scheduler_decay_steps, cfg.scheduler_decay_lr) == (
        "cosine", 1000, 30000, 2.5e-6)
    assert cfg.normalization_mapping == {"VISUAL": "IDENTITY", "STATE": "MEAN_STD", "ACTION": "MEAN_STD"}
    assert (cfg.min_period, cfg.max_period) == (4e-3, 4.0)


def test_lerobot_dict_round_trip() -> None:
    cfg = SmolVLAConfig(chunk_size=20, n_action_steps=10, vlm="tiny", gradient_checkpointing=True)
    feats = PolicyFeatures(6, 6, ("observation.images.front",), (3, 96, 128))
    data = json.loads(json.dumps(cfg.to_lerobot_dict(feats)))
    assert data["type"] == "smolvla" and "vlm" not in data and "gradient_checkpointing" not in data
    assert data["input_features"]["observation.images.front"] == {"type": "VISUAL", "shape": [3, 96, 128]}
    assert data["output_features"]["action"] == {"type": "ACTION", "shape": [6]}
    assert data["optimizer_betas"] == [0.9, 0.95] and data["resize_imgs_with_padding"] == [512, 512]
    back = SmolVLAConfig.from_lerobot_dict(data, vlm="tiny", gradient_checkpointing=True)
    assert back == cfg
    with pytest.raises(ConfigError, match="adapt_to_pi_aloha"):
        SmolVLAConfig.from_lerobot_dict({**data, "adapt_to_pi_aloha": True})
    with pytest.raises(ConfigError, match="policy type 'act', not 'smolvla'"):
        SmolVLAConfig.from_lerobot_dict({"type": "act"})


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"attention_mode": "both"}, "attention_mode"),
        ({"n_action_steps": 60}, "n_action_steps"),
        ({"num_expert_layers": 8}, "num_expert_layers"),
        ({"pad_language_to": "left"}, "pad_language_to"),
        ({"min_period": 5.0}, "min_period"),
        ({"resize_imgs_with_padding": (0, 512)}, "resize_imgs_with_padding"),
        ({"max_action_dim": 0}, "max_action_dim"),
    ],
)
def test_bad_values_are_rejected(kw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SmolVLAConfig(**kw)


def test_missing_vlm_says_what_to_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from robotrain.policies.smolvla.model import SmolVLAPolicy

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    feats = PolicyFeatures(6, 6, ("observation.images.front",), (3, 32, 32))
    with pytest.raises(ConfigError, match="policy.vlm is not set"):
        SmolVLAPolicy(SmolVLAConfig(), feats, {})


def _reference_keys() -> dict[str, list[int]]:
    out = {}
    for line in KEYS_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape = line.split(" ", 1)
            out[name] = json.loads(shape)
    return out


def test_full_size_state_dict_matches_lerobot() -> None:
    """The full architecture, built on the meta device, has LeRobot 0.4.4's exact names,
    shapes and order, 450,046,176 parameters and 99,880,992 trainable by default."""
    from robotrain.policies.smolvla.model import SmolVLAPolicy

    feats = PolicyFeatures(6, 6, ("observation.images.front", "observation.images.wrist"), (3, 480, 640))
    policy = SmolVLAPolicy(SmolVLAConfig(vlm="full-random"), feats, {}, device="meta")
    ours = {k: list(v.shape) for k, v in policy.state_dict().items()}
    ref = _reference_keys()
    assert sorted(set(ref) - set(ours)) == [] and sorted(set(ours) - set(ref)) == []
    assert [k for k in ref if ref[k] != ours[k]] == []
    assert list(ours) == list(ref)
    assert sum(p.numel() for p in policy.parameters()) == 450_046_176
    assert sum(p.numel() for p in policy.parameters() if p.requires_grad) == 99_880_992


def test_time_embedding_and_sampling() -> None:
    emb = sinusoidal_time_embedding(torch.tensor([0.0, 0.5]), 8, 4e-3, 4.0)
    assert emb.shape == (2, 8)
    torch.testing.assert_close(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    # the slowest component has period max_period: sin(2*pi*0.5/4)
    assert emb[1, 3].item() == pytest.approx(math.sin(2 * math.pi * 0.5 / 4.0), abs=1e-6)
    torch.manual_seed(0)
    t = sample_time(20000, torch.device("cpu"))
    assert t.min() >= 0.001 and t.max() <= 1.0
    assert t.mean().item() == pytest.approx(0.001 + 0.999 * 1.5 / 2.5, abs=0.01)  # Beta(1.5, 1) mean 0.6


def test_block_mask_and_rope() -> None:
    pad = torch.tensor([[True, True, False, True, True, True]])
    flags = torch.tensor([[0, 0, 0, 1, 1, 1]])  # 2 image/lang + 1 padded lang, state, 2 actions
    m = make_att_2d_masks(pad, flags)[0]
    assert m[0].tolist() == [True, True, False, False, False, False]  # prefix sees prefix only
    assert m[3].tolist() == [True, True, False, True, False, False]  # state sees prefix + itself
    assert m[5].tolist() == [True, True, False, True, True, True]  # last action sees everything
    assert not m[2].any()  # a padded token sees nothing
    x = torch.randn(1, 5, 2, 8)
    torch.testing.assert_close(apply_rope(x, torch.zeros(1, 5, dtype=torch.long)), x)
    rotated = apply_rope(x, torch.arange(5)[None])
    torch.testing.assert_close(rotated.norm(dim=-1), x.norm(dim=-1))
    assert intermediate_size(720) == 2048


def test_tokenizers(tmp_path: Path) -> None:
    from smolvla_tiny import write_tiny_snapshot

    snap = write_tiny_snapshot(tmp_path / "snap", num_layers=1)
    tok = FileTokenizer(snap)
    assert tok.pad_id == 0
    ids, mask = tokenize(tok, ["pick up the cube", "push left and right and up"], max_length=5, pad_to_max=False)
    assert ids.shape == (2, 5) and mask[0].tolist() == [True] * 5 and ids[0, 4].item() == 2  # the "\n"
    ids, mask = tokenize(tok, ["pick"], max_length=6, pad_to_max=True)
    assert ids.shape == (1, 6) and mask[0].tolist() == [True, True, False, False, False, False]
    assert ids[0, 2:].tolist() == [0] * 4
    byte_ids, _ = tokenize(ByteTokenizer(300), ["ab"], 48, False)
    assert byte_ids.tolist() == [[ord("a") + 4, ord("b") + 4, ord("\n") + 4]]


@pytest.mark.parametrize("padding", ["longest", "max_length"])
def test_prompts_tokenize_as_lerobots_preprocessor(tmp_path: Path, padding: str) -> None:
    """LeRobot's SmolVLA preprocessor: newline-terminated task, then its fast tokenizer
    called with truncation to tokenizer_max_length and right padding. A small tokenizer that
    adds a begin and an end token shows the special tokens survive truncation as there."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, "\n": 4, **{w: i + 5 for i, w in enumerate(
        ["pick", "up", "the", "cube", "and", "place", "it", "in", "bowl"])}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(pattern=" ", behavior="removed"), pre_tokenizers.Split(pattern="\n", behavior="isolated")])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 2), ("</s>", 3)])
    snap = tmp_path / "snap"
    snap.mkdir()
    tok.save(str(snap / "tokenizer.json"))
    (snap / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<pad>"}))
    tasks = ["pick up the cube and place it in the bowl", "pick up\n", "cube"]
    max_length = 8

    ours_ids, ours_mask = tokenize(FileTokenizer(snap), tasks, max_length, pad_to_max=padding == "max_length")
    hf = PreTrainedTokenizerFast(tokenizer_file=str(snap / "tokenizer.json"), pad_token="<pad>")
    prompts = [t if t.endswith("\n") else f"{t}\n" for t in tasks]  # LeRobot's SmolVLANewLineProcessor
    ref = hf(prompts, max_length=max_length, truncation=True, padding=padding, padding_side="right",
             return_tensors="pt")
    assert ours_ids.tolist() == ref["input_ids"].tolist()
    assert ours_mask.tolist() == ref["attention_mask"].bool().tolist()
    assert ours_ids[0, -1].item() == 3 and ours_ids.shape[1] == max_length  # truncated, end token kept
