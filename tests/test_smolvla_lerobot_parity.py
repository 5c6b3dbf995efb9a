"""A SmolVLA saved by LeRobot 0.4.4 itself runs in robotrain with LeRobot's outputs.

`tests/fixtures/lerobot_smolvla_tiny/` (README there): LeRobot's checkpoint of a tiny random
SmolVLM, fixed inputs, and LeRobot's per-element flow loss and sampled chunk for them. The
check runs in float32 under whatever transformers the install gave: robotrain computes the
vision patch position ids itself, so `losses` / `sampled` (the 0..n-1 rule) must match
under transformers 4.5x and 5.x alike; `losses_tf457` / `sampled_tf457` are what LeRobot
itself computed with transformers 4.57's shifted ids, kept to show the size of that shift.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from robotrain.policies.base import PolicyFeatures
from robotrain.policies.smolvla import SmolVLAConfig
from robotrain.policies.smolvla.backbone import patch_position_ids
from robotrain.policies.smolvla.model import SmolVLAPolicy
from robotrain.policies.smolvla.preprocess import pad_last_dim

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "lerobot_smolvla_tiny"
CAMERAS = ("observation.images.front", "observation.images.wrist")
TOL = 1e-4


def tiny_snapshot(tmp: Path) -> Path:
    """A snapshot dir with the fixture's SmolVLM config (the weights come from the checkpoint)
    and a stand-in tokenizer: the fixture's inputs are token ids, so it is never used."""
    from tokenizers import Tokenizer, models

    cfg = json.loads((FIXTURE / "tiny_smolvlm_config.json").read_text())
    cfg["model_type"] = "smolvlm"
    cfg["text_config"]["model_type"] = "llama"
    cfg["vision_config"]["model_type"] = "smolvlm_vision"
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.json").write_text(json.dumps(cfg))
    Tokenizer(models.WordLevel(vocab={"<pad>": 0, "<unk>": 1}, unk_token="<unk>")).save(str(tmp / "tokenizer.json"))
    (tmp / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<pad>"}))
    return tmp


@pytest.fixture(scope="module")
def lerobot_policy(tmp_path_factory: pytest.TempPathFactory) -> SmolVLAPolicy:
    saved = json.loads((FIXTURE / "pretrained_model" / "config.json").read_text())
    snapshot = tiny_snapshot(tmp_path_factory.mktemp("tiny_smolvlm"))
    config = SmolVLAConfig.from_lerobot_dict(saved, vlm=str(snapshot), pretrained=str(FIXTURE / "pretrained_model"))
    features = PolicyFeatures(state_dim=6, action_dim=6, camera_keys=CAMERAS, image_shape=(3, 120, 160))
    identity = {k: {"mean": np.zeros(6, np.float32), "std": np.ones(6, np.float32)} for k in ("observation.state", "action")}
    torch.manual_seed(0)
    return SmolVLAPolicy(config, features, identity).eval()


@pytest.fixture(scope="module")
def expect() -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v) for k, v in np.load(FIXTURE / "expect.npz").items()}


def model_inputs(policy: SmolVLAPolicy, e: dict[str, torch.Tensor]) -> tuple:
    images, masks = policy.prepare_images({CAMERAS[0]: e["front"], CAMERAS[1]: e["wrist"]})
    state = pad_last_dim(e["state"], policy.config.max_state_dim)
    return images, masks, e["lang_tokens"], e["lang_mask"], state


def test_patch_position_ids_are_0_to_n_for_a_full_image() -> None:
    full = torch.ones(1, 4, 4, dtype=torch.bool)
    assert patch_position_ids(full, 4).tolist() == [list(range(16))]
    # A 2x2-patch image on a 4x4 grid takes every other bucket; padding patches get 0.
    assert patch_position_ids(torch.ones(1, 2, 2, dtype=torch.bool), 4).tolist() == [[0, 2, 8, 10]]
    partial = torch.zeros(1, 4, 4, dtype=torch.bool)
    partial[:, :2, :2] = True
    assert patch_position_ids(partial, 4).reshape(4, 4)[:2, :2].tolist() == [[0, 2], [8, 10]]
    assert patch_position_ids(partial, 4).reshape(4, 4)[2:].sum() == 0


def test_lerobot_checkpoint_gives_lerobots_flow_loss(lerobot_policy: SmolVLAPolicy, expect) -> None:
    e = expect
    images, masks, tokens, lang_mask, state = model_inputs(lerobot_policy, e)
    actions = pad_last_dim(e["actions"], lerobot_policy.config.max_action_dim)
    with torch.no_grad():
        losses = lerobot_policy.model(images, masks, tokens, lang_mask, state, actions, e["noise"], e["time"])
    assert losses.shape == e["losses"].shape
    torch.testing.assert_close(losses, e["losses"], rtol=0, atol=TOL)
    # The transformers-4.57 reference differs by far more than the tolerance: the test can
    # tell the two position-id rules apart.
    assert (e["losses_tf457"] - e["losses"]).abs().max() > 100 * TOL


def test_lerobot_checkpoint_samples_lerobots_chunk(lerobot_policy: SmolVLAPolicy, expect) -> None:
    e = expect
    images, masks, tokens, lang_mask, state = model_inputs(lerobot_policy, e)
    with torch.no_grad():
        sampled = lerobot_policy.model.sample_actions(images, masks, tokens, lang_mask, state, e["noise"])
    torch.testing.assert_close(sampled, e["sampled"], rtol=0, atol=TOL)
    assert (e["sampled_tf457"] - e["sampled"]).abs().max() > 10 * TOL


def test_policy_chunk_is_the_model_sample_unpadded(lerobot_policy: SmolVLAPolicy, expect) -> None:
    """Through the policy contract (identity stats): the first 6 dims of LeRobot's chunk."""
    e = expect
    n = e["state"].shape[0]
    lerobot_policy._token_cache[tuple(["x"] * n)] = (e["lang_tokens"], e["lang_mask"])  # token ids as given
    batch = {CAMERAS[0]: e["front"], CAMERAS[1]: e["wrist"], "observation.state": e["state"], "task": ["x"] * n}
    chunk = lerobot_policy.predict_action_chunk(batch, noise=e["noise"])
    torch.testing.assert_close(chunk, e["sampled"][:, :, :6], rtol=0, atol=TOL)
