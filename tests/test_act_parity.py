"""State-dict parity with LeRobot's ACT, and loading a checkpoint LeRobot wrote."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from act_testutils import single_thread  # noqa: F401
from act_testutils import CAMERAS, features, stats
from robotrain.constants import ACTION, ACTION_IS_PAD, OBS_STATE
from robotrain.policies.normalize import unflatten_stats
from robotrain.policies.act.config import ACTConfig
from robotrain.policies.base import PolicyFeatures
from robotrain.policies.act.model import ACTPolicy

KEYS_FILE = Path(__file__).resolve().parent / "fixtures" / "act_state_dict_keys.txt"
CKPT = "lerobot_act_checkpoint/pretrained_model"


def read_reference_keys(path: Path) -> dict[str, list[int]]:
    ref = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, shape = line.split(" ", 1)
        ref[name] = json.loads(shape)
    return ref


def test_state_dict_equals_lerobot_keys_and_shapes():
    ref = read_reference_keys(KEYS_FILE)
    policy = ACTPolicy(ACTConfig(), features(480, 640), stats())
    mine = {k: list(v.shape) for k, v in policy.state_dict().items()}
    assert sorted(set(ref) - set(mine)) == [], "missing keys"
    assert sorted(set(mine) - set(ref)) == [], "extra keys"
    assert {k: v for k, v in mine.items() if ref[k] != v} == {}, "shape mismatch"
    total = int(KEYS_FILE.read_text().split("total elements")[1].split()[0])
    assert sum(v.numel() for v in policy.state_dict().values()) == total
    assert policy.encoder_token_count() == 602


def load_fixture_policy(fixtures: Path) -> tuple[ACTPolicy, dict]:
    d = json.loads((fixtures / CKPT / "config.json").read_text())
    flat = load_file(str(fixtures / CKPT / "policy_preprocessor_step_3_normalizer_processor.safetensors"))
    policy = ACTPolicy(ACTConfig.from_lerobot_dict(d), PolicyFeatures.from_lerobot(d), unflatten_stats(flat))
    result = policy.load_state_dict(load_file(str(fixtures / CKPT / "model.safetensors")), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return policy, d


def test_lerobot_checkpoint_loads_strict_and_acts(lerobot_fixtures):
    policy, _ = load_fixture_policy(lerobot_fixtures)
    g = torch.Generator().manual_seed(0)
    obs = {OBS_STATE: torch.randn(2, 6, generator=g) * 20}
    for cam in CAMERAS:
        obs[cam] = torch.rand(2, 3, 96, 128, generator=g)
    chunk = policy.predict_action_chunk(obs)
    assert chunk.shape == (2, 10, 6)
    assert torch.isfinite(chunk).all()
    # Unnormalised: joint units around the dataset's action statistics, not N(0, 1).
    assert chunk.abs().max() > 2
    action = policy.select_action(obs)
    torch.testing.assert_close(action, chunk[:, 0])
    train_batch = dict(obs, **{ACTION: torch.randn(2, 10, 6, generator=g) * 20,
                               ACTION_IS_PAD: torch.zeros(2, 10, dtype=torch.bool)})  # fmt: skip
    policy.train()
    loss, metrics = policy(train_batch)
    assert torch.isfinite(loss) and set(metrics) == {"l1_loss", "kld_loss"}


def test_fixture_buffers_match_our_tables(lerobot_fixtures):
    """The VAE's fixed sinusoidal table LeRobot saved equals the one we compute."""
    policy = ACTPolicy(ACTConfig(dim_model=64, n_heads=4, chunk_size=10, n_action_steps=10), features(96, 128), stats())
    saved = load_file(str(lerobot_fixtures / CKPT / "model.safetensors"))["model.vae_encoder_pos_enc"]
    torch.testing.assert_close(policy.state_dict()["model.vae_encoder_pos_enc"], saved, rtol=0, atol=0)


def test_normalizer_stays_out_of_state_dict(lerobot_fixtures):
    policy, _ = load_fixture_policy(lerobot_fixtures)
    assert all(k.startswith("model.") for k in policy.state_dict())
    flat = policy.normalizer.flat_stats()
    assert set(flat) == {f"{k}.{s}" for k in (OBS_STATE, ACTION, *CAMERAS) for s in ("mean", "std")}
    np.testing.assert_allclose(flat[f"{CAMERAS[0]}.mean"].flatten().numpy(), [0.485, 0.456, 0.406], rtol=1e-6)
