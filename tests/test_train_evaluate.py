"""Offline action error: joint units, non-padded steps only, first action, mean-action baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robotrain.constants import ACTION, ACTION_IS_PAD
from robotrain.errors import ConfigError
from robotrain.evaluation.offline import format_table, offline_action_error
from robotrain.policies import PolicyFeatures

from conftest import run_cli
from train_helpers import CAMERA, SyntheticSource, TinyConfig, TinyPolicy


class Oracle(TinyPolicy):
    """Predicts the recorded chunk, plus `offset` on joint 0 and garbage on padded steps."""

    offset = 0.0

    def predict_action_chunk(self, batch):
        pred = batch[ACTION].clone()
        pred[..., 0] += self.offset
        pred[batch[ACTION_IS_PAD]] = 1000.0  # must be ignored
        return pred


def oracle(source: SyntheticSource, offset: float) -> Oracle:
    features = PolicyFeatures(state_dim=6, action_dim=6, camera_keys=(CAMERA,), image_shape=(3, 8, 8), fps=30)
    policy = Oracle(TinyConfig(chunk_size=5, n_action_steps=5), features, source.meta.stats)
    policy.offset = offset
    return policy


def test_errors_in_joint_units_over_valid_steps() -> None:
    source = SyntheticSource(n_episodes=3, length=6)
    policy = oracle(source, offset=2.5)
    dataset = source.full(policy.delta_timestamps())
    result = offline_action_error(policy, dataset, batch_size=4)
    assert result.policy.action_error_per_joint == pytest.approx([2.5, 0, 0, 0, 0, 0])
    assert result.policy.action_error == pytest.approx(2.5 / 6)
    assert result.policy.first_action_error == pytest.approx(2.5 / 6)
    assert result.num_samples == len(dataset) == 18
    assert result.num_steps < 18 * 5  # padded steps were left out


def test_mean_action_baseline_matches_numpy() -> None:
    source = SyntheticSource(n_episodes=2, length=4)
    policy = oracle(source, offset=0.0)
    dataset = source.full(policy.delta_timestamps())
    mean = source.meta.stats[ACTION]["mean"]
    result = offline_action_error(policy, dataset, baseline_action=mean)
    errs, firsts = [], []
    for i in range(len(dataset)):
        s = dataset[i]
        valid = ~s[ACTION_IS_PAD].numpy()
        errs.append(np.abs(s[ACTION].numpy()[valid] - mean))
        firsts.append(np.abs(s[ACTION].numpy()[0] - mean))
    assert result.baseline.action_error_per_joint == pytest.approx(np.concatenate(errs).mean(0), rel=1e-5)
    assert result.baseline.first_action_error == pytest.approx(np.mean(firsts), rel=1e-5)
    assert result.policy.action_error == 0.0
    table = format_table(result, ["a", "b", "c", "d", "e", "f"])
    assert "mean-action" in table and "first action" in table


def test_episode_selection_and_sample_cap() -> None:
    source = SyntheticSource(n_episodes=3, length=6)
    policy = oracle(source, offset=1.0)
    dataset = source.full(policy.delta_timestamps())
    assert offline_action_error(policy, dataset, episodes=[1]).num_samples == 6
    assert offline_action_error(policy, dataset, episodes=[0, 2], max_samples=5).num_samples == 5
    with pytest.raises(ConfigError, match="unknown episode"):
        offline_action_error(policy, dataset, episodes=[7])


def test_policy_rng_use_does_not_leak() -> None:
    source = SyntheticSource(n_episodes=2, length=4)
    policy = oracle(source, offset=0.0)
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    offline_action_error(policy, source.full(policy.delta_timestamps()))
    assert torch.equal(torch.rand(1), expected)


def test_eval_cli_errors_are_one_line(tmp_path) -> None:
    out = run_cli("eval", "--checkpoint", str(tmp_path / "nope"), "--sim")
    assert out.returncode == 2 and "checkpoint directory not found" in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1
    out = run_cli("eval", "--checkpoint", str(tmp_path / "nope"))
    assert out.returncode == 2 and "--dataset" in out.stderr
