"""The offline grasp probes against policies whose answers are known: one that returns the
expert's recorded action (no bias) and follows its state input one-for-one, and one that
ignores its state (sensitivity 0)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from robotrain.constants import ACTION, OBS_STATE
from robotrain.errors import ConfigError

grasp_probe = pytest.importorskip("robotrain.sim.grasp_probe")


@pytest.fixture(scope="module")
def sim_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("probe") / "sim_ds"
    res = run_cli("sim", "record", "--episodes", "1", "--out", str(out), "--size", "24x32", "--workers", "1",
                  "--codec", "libx264", "--no-progress")
    assert res.returncode == 0, res.stderr
    return out


class _Features:
    camera_keys = ("observation.images.front", "observation.images.wrist")


FRONT = "observation.images.front"


class ExpertLookup(torch.nn.Module):
    """Finds the recorded frame by its front image and returns that frame's action plus the
    state input's offset from the recorded state: exact on the recorded frames, and copies
    any shift of its state input one-for-one."""

    features = _Features()

    def __init__(self, states: np.ndarray, actions: np.ndarray, images: np.ndarray | None = None) -> None:
        super().__init__()
        self.states, self.actions = torch.as_tensor(states), torch.as_tensor(actions)
        self.images = None if images is None else torch.as_tensor(images).flatten(1)

    def predict_action_chunk(self, batch: dict) -> torch.Tensor:
        state = batch[OBS_STATE]
        nearest = torch.cdist(batch[FRONT].flatten(1), self.images).argmin(dim=1)
        action = self.actions[nearest] + (state - self.states[nearest])
        return action[:, None].repeat(1, 3, 1)  # (B, chunk, 6)


class Constant(ExpertLookup):
    def predict_action_chunk(self, batch: dict) -> torch.Tensor:
        return self.actions[:1].repeat(len(batch[OBS_STATE]), 1)[:, None]


def _dataset(path: Path):
    from robotrain.data.dataset import LeRobotDataset

    return LeRobotDataset(path, image_size=(24, 32), progress=False, use_cache=False)


def test_expert_lookup_has_no_bias_and_follows_its_state(sim_dataset: Path) -> None:
    ds = _dataset(sim_dataset)
    states = np.stack([ds[i][OBS_STATE].numpy() for i in range(len(ds))])
    actions = np.stack([ds[i][ACTION].numpy() for i in range(len(ds))])
    images = np.stack([ds[i][FRONT].numpy() for i in range(len(ds))])
    result = grasp_probe.probe(ExpertLookup(states, actions, images), ds, window=5)
    assert list(result["episodes"]) == [0] and result["window_frames"] == 5
    assert result["episodes"][0]["close_frame"] == int(np.argmax(actions[:, 5] < 10))
    np.testing.assert_allclose(result["grasp_bias_mm_mean"], 0.0, atol=1e-3)
    np.testing.assert_allclose(list(result["state_sensitivity_mean"].values()), 1.0, atol=1e-3)
    constant = grasp_probe.probe(Constant(states, actions), ds, window=5)
    np.testing.assert_allclose(list(constant["state_sensitivity_mean"].values()), 0.0, atol=1e-6)
    assert abs(constant["grasp_bias_mm_mean"][2]) > 10  # the start pose is far above the cube


def test_bad_window_and_cli_output(sim_dataset: Path, tmp_path: Path) -> None:
    ds = _dataset(sim_dataset)
    with pytest.raises(ConfigError, match="window"):
        grasp_probe.probe(Constant(np.zeros((1, 6)), np.zeros((1, 6))), ds, window=0)
    res = run_cli("train", "--dataset", str(sim_dataset), "--policy", "act", "--policy.dim_model", "32",
                  "--policy.dim_feedforward", "64", "--policy.n_heads", "2", "--policy.n_encoder_layers", "1",
                  "--policy.n_vae_encoder_layers", "1", "--policy.chunk_size", "5", "--policy.n_action_steps", "5",
                  "--image-size", "24x32", "--steps", "1", "--batch-size", "2", "--num-workers", "0",
                  "--eval-freq", "0", "--output-dir", str(tmp_path / "run"))
    assert res.returncode == 0, res.stderr
    out = tmp_path / "probe.json"
    code = grasp_probe.main(["--checkpoint", str(tmp_path / "run" / "checkpoints" / "last"), "--dataset",
                             str(sim_dataset), "--episodes", "0", "--output", str(out)])
    saved = json.loads(out.read_text())
    assert code == 0 and set(saved["state_sensitivity_mean"]) == set(grasp_probe.JOINT_LABELS)
    assert all(np.isfinite(saved["grasp_bias_mm_mean"]))


def test_cli_user_errors_are_one_line(sim_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--checkpoint", str(tmp_path / "missing"), "--dataset", str(sim_dataset), "--episodes", "0"]
    assert grasp_probe.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("grasp_probe: error:") and "checkpoint directory not found" in err[0]
