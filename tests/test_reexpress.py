"""Weights re-expressed in other normalisation statistics (ACT, exactly), used by
`robotrain checkpoint average` and by `--init-from`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from act_testutils import batch, features, single_thread, stats, tiny_config  # noqa: F401
from conftest import run_cli
from safetensors.torch import load_file

from robotrain.checkpoints.averaging import AVERAGE_JSON, average_checkpoints
from robotrain.checkpoints.store import PREPROCESSOR_STATS, init_weights_from, load_policy, save_pretrained
from robotrain.constants import ACTION, OBS_STATE
from robotrain.errors import CheckpointError, ConfigError
from robotrain.policies.normalize import Normalizer
from robotrain.policies.act.model import ACTPolicy
from robotrain.checkpoints.reexpress import reexpress_state_dict


def _stats_b() -> dict:
    """Statistics unlike `stats()` in every low-dim entry; the image statistics are equal."""
    out = stats()
    out[OBS_STATE] = {"mean": np.array([0.3, -2.0, 1.0, 0.0, 5.0, -1.0]), "std": np.array([0.5, 1.5, 4.0, 1.0, 2.5, 0.2])}
    out[ACTION] = {"mean": np.array([-1.0, 0.5, 2.0, 3.0, -0.2, 0.0]), "std": np.array([1.0, 0.7, 2.0, 6.0, 0.3, 1.2])}
    return out


def _save(root: Path, seed: int, policy_stats: dict, **cfg) -> Path:
    torch.manual_seed(seed)
    policy = ACTPolicy(tiny_config(**cfg), features(), policy_stats)
    dest = root / f"ckpt{seed}" / "pretrained_model"
    dest.mkdir(parents=True)
    save_pretrained(dest, policy, policy_stats)
    return dest.parent


def _chunk(policy: ACTPolicy) -> torch.Tensor:
    with torch.no_grad():
        return policy.predict_action_chunk(batch(seed=3))


def _normalizer(policy_stats: dict) -> Normalizer:
    return ACTPolicy(tiny_config(), features(), policy_stats).normalizer


def test_reexpressed_act_predicts_the_same_actions_in_other_statistics() -> None:
    torch.manual_seed(0)
    source = ACTPolicy(tiny_config(), features(), stats()).eval()
    state, converted = reexpress_state_dict(source, _normalizer(_stats_b()))
    assert converted == [ACTION, OBS_STATE]
    moved = ACTPolicy(tiny_config(), features(), _stats_b()).eval()
    moved.load_state_dict({k: v.to(moved.state_dict()[k].dtype) for k, v in state.items()})
    assert not torch.equal(moved.model.action_head.weight, source.model.action_head.weight)
    torch.testing.assert_close(_chunk(moved), _chunk(source), rtol=1e-5, atol=1e-5)


def test_min_max_statistics_are_reexpressed_too() -> None:
    cfg = {"normalization_mapping": {"VISUAL": "MEAN_STD", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"}}

    def minmax(s: dict) -> dict:
        out = dict(s)
        for key in (OBS_STATE, ACTION):
            out[key] = {"min": s[key]["mean"] - 2 * s[key]["std"], "max": s[key]["mean"] + s[key]["std"]}
        return out

    torch.manual_seed(0)
    source = ACTPolicy(tiny_config(**cfg), features(), minmax(stats())).eval()
    target = ACTPolicy(tiny_config(**cfg), features(), minmax(_stats_b())).eval()
    state, _ = reexpress_state_dict(source, target.normalizer)
    target.load_state_dict({k: v.to(target.state_dict()[k].dtype) for k, v in state.items()})
    torch.testing.assert_close(_chunk(target), _chunk(source), rtol=1e-5, atol=1e-5)


def test_average_is_the_weighted_mean_in_the_first_checkpoints_statistics(tmp_path: Path) -> None:
    a = _save(tmp_path, 0, stats())
    b = _save(tmp_path, 1, _stats_b())
    out = average_checkpoints([a, b], tmp_path / "soup", weights=[3, 1])
    assert out.weights == [0.75, 0.25] and out.reexpressed == [[], [ACTION, OBS_STATE]]
    soup = tmp_path / "soup" / "pretrained_model"
    # The reference's config and statistics are kept; the provenance is recorded.
    for name in ("config.json", "policy_preprocessor_step_3_normalizer_processor.safetensors"):
        assert (soup / name).read_bytes() == (a / "pretrained_model" / name).read_bytes()
    provenance = json.loads((soup / AVERAGE_JSON).read_text())
    assert [s["weight"] for s in provenance["sources"]] == [0.75, 0.25]

    policy_a, policy_b = load_policy(a), load_policy(b)
    b_in_a, _ = reexpress_state_dict(policy_b, policy_a.normalizer)
    averaged = load_file(str(soup / "model.safetensors"))
    for key, value in policy_a.state_dict().items():
        if value.is_floating_point():
            expected = (0.75 * value.double() + 0.25 * b_in_a[key]).float()
            torch.testing.assert_close(averaged[key], expected, rtol=1e-6, atol=1e-7)
    # Weight 1 on the second checkpoint reproduces its predictions in the first's statistics.
    only_b = average_checkpoints([a, b], tmp_path / "only_b", weights=[0, 1])
    torch.testing.assert_close(_chunk(load_policy(only_b.out)), _chunk(policy_b), rtol=1e-5, atol=1e-5)


def test_average_cli_and_its_output_evaluates(tmp_path: Path) -> None:
    a, b = _save(tmp_path, 0, stats()), _save(tmp_path, 1, _stats_b())
    res = run_cli("checkpoint", "average", str(a), str(b), "--out", str(tmp_path / "soup"))
    assert res.returncode == 0, res.stderr
    assert "0.500 x" in res.stdout and "re-expressed" in res.stdout and "wrote" in res.stdout
    assert torch.isfinite(_chunk(load_policy(tmp_path / "soup"))).all()
    again = run_cli("checkpoint", "average", str(a), str(b), "--out", str(tmp_path / "soup"))
    assert again.returncode == 2 and "output exists" in again.stderr


def test_average_refuses_what_it_cannot_average(tmp_path: Path) -> None:
    a = _save(tmp_path, 0, stats())
    with pytest.raises(ConfigError, match="at least two"):
        average_checkpoints([a], tmp_path / "x")
    with pytest.raises(ConfigError, match="weights"):
        average_checkpoints([a, a], tmp_path / "x", weights=[1, -1])
    with pytest.raises(ConfigError, match="2 checkpoints"):
        average_checkpoints([a, a], tmp_path / "x", weights=[1])
    bigger = _save(tmp_path, 1, stats(), dim_feedforward=128)
    with pytest.raises(CheckpointError, match="different architecture"):
        average_checkpoints([a, bigger], tmp_path / "x")
    other_images = stats()
    other_images["observation.images.front"] = {"mean": np.full((3, 1, 1), 0.5), "std": np.full((3, 1, 1), 0.2)}
    c = _save(tmp_path, 2, other_images)
    with pytest.raises(CheckpointError, match="image statistics must be equal"):
        average_checkpoints([a, c], tmp_path / "x")
    with pytest.raises(CheckpointError, match="not found"):
        average_checkpoints([a, tmp_path / "missing"], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_a_policy_without_io_layers_averages_only_equal_statistics() -> None:
    from robotrain.policies.smolvla.config import SmolVLAConfig
    from robotrain.policies.smolvla.model import SmolVLAPolicy
    from smolvla_tiny import features as vla_features
    from smolvla_tiny import stats as vla_stats

    torch.manual_seed(0)
    cfg = SmolVLAConfig(vlm="tiny", chunk_size=4, n_action_steps=4, resize_imgs_with_padding=(32, 32), num_steps=2)
    policy = SmolVLAPolicy(cfg, vla_features(), vla_stats(0))
    assert policy.normalized_io_layers() is None
    _, converted = reexpress_state_dict(policy, policy.normalizer)
    assert converted == []
    with pytest.raises(CheckpointError, match="cannot be re-expressed"):
        reexpress_state_dict(policy, SmolVLAPolicy(cfg, vla_features(), vla_stats(1)).normalizer)


def test_init_from_starts_from_the_checkpoints_actions_in_the_new_statistics(tmp_path: Path) -> None:
    source = _save(tmp_path, 0, stats())
    torch.manual_seed(5)
    fresh = ACTPolicy(tiny_config(), features(), _stats_b()).eval()
    init_weights_from(fresh, source)
    torch.testing.assert_close(_chunk(fresh), _chunk(load_policy(source)), rtol=1e-5, atol=1e-5)


def test_init_from_without_readable_statistics_copies_the_weights(tmp_path: Path, caplog) -> None:
    source = _save(tmp_path, 0, stats())
    (source / "pretrained_model" / PREPROCESSOR_STATS).unlink()
    fresh = ACTPolicy(tiny_config(), features(), _stats_b())
    with caplog.at_level("WARNING"):
        init_weights_from(fresh, source)
    assert "without re-expressing" in caplog.text
    weights = load_file(str(source / "pretrained_model" / "model.safetensors"))
    assert all(torch.equal(fresh.state_dict()[k], weights[k]) for k in weights)
