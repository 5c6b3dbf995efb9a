"""Offline probes of a policy's grasp on recorded SO-101 sim episodes: why a cloned policy
misses the cube, measured without running the closed loop.

For each episode, over the `window` frames before the expert's first close command:
- **grasp bias**: the policy's predicted first action and the expert's recorded action are
  both put through the arm's forward kinematics; the difference of the two grasp points is
  expressed in the jaw frame (along the closing axis, across it, vertical; mm). A bias to
  the same side in every episode, even on training episodes, is what the closed loop later
  amplifies (docs/results.md, session 4).
- **state sensitivity**: how far the predicted target of each arm joint moves when that
  joint's state input is shifted by 1 degree (deg/deg). Near 1, the policy copies its own
  proprioception, so the images only partly pull a drifting arm back to the cube; near 0,
  it acts from the images.

Only for datasets recorded in our sim (`robotrain sim record`): the kinematics are the
sim's, and the joint units those of `robotrain.sim.env`.

Example:
    MUJOCO_GL=egl python -m robotrain.sim.grasp_probe --checkpoint outputs/runB/checkpoints/012000 \\
        --dataset data/sim75_96x128 --episodes 1,2,3,4
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from robotrain.checkpoints.store import load_policy
from robotrain.constants import ACTION, OBS_STATE, SO101_TASK, TASK
from robotrain.data.dataset import LeRobotDataset
from robotrain.errors import EXIT_USER_ERROR, ConfigError, RobotrainError
from robotrain.system.files import atomic_write_text
from robotrain.sim.env import GRIPPER_CLOSE_COMMAND, SO101PickPlaceEnv, to_jaw_frame
from robotrain.sim import scene
from robotrain.sim.expert import ARM_DOFS, IKSolver

JOINT_LABELS = scene.JOINTS[:ARM_DOFS]  # the arm joints, without the gripper


def _jaw_frame_difference(ik: IKSolver, env: SO101PickPlaceEnv, predicted: np.ndarray,
                          expert: np.ndarray) -> np.ndarray:
    """Grasp point of `predicted` minus that of `expert` (env units, (6,)) in the expert's jaw
    frame: (along the closing axis, across it horizontally, vertical), mm."""
    p_expert, rot = ik.forward(env.to_sim_units(expert)[:ARM_DOFS])
    p_pred, _ = ik.forward(env.to_sim_units(predicted)[:ARM_DOFS])
    return 1000.0 * to_jaw_frame(p_pred - p_expert, rot @ ik.jaw_axis_local)


def _first_close(actions: np.ndarray) -> int | None:
    """Index of the first frame whose gripper action is a close command after being open."""
    was_open = False
    for t, g in enumerate(actions[:, 5]):
        if g >= GRIPPER_CLOSE_COMMAND:
            was_open = True
        elif was_open:
            return t
    return None


def probe_episode(policy: Any, frames: Sequence[dict[str, Any]], window: int,
                  ik: IKSolver, env: SO101PickPlaceEnv) -> dict[str, Any] | None:
    """Probe one recorded episode (its dataset items in order). None if the expert never
    closed the gripper in it."""
    actions = np.stack([np.asarray(f[ACTION]) for f in frames])
    close = _first_close(actions)
    if close is None:
        return None
    idx = list(range(max(0, close - window + 1), close + 1))
    cams = tuple(policy.features.camera_keys)
    batch: dict[str, Any] = {OBS_STATE: torch.stack([torch.as_tensor(frames[t][OBS_STATE]) for t in idx]).float()}
    for cam in cams:
        batch[cam] = torch.stack([torch.as_tensor(frames[t][cam]) for t in idx]).float()
    batch[TASK] = [SO101_TASK] * len(idx)
    predicted = policy.predict_action_chunk(batch)[:, 0].detach().cpu().numpy()
    bias = np.mean([_jaw_frame_difference(ik, env, predicted[k], actions[t]) for k, t in enumerate(idx)], axis=0)
    sensitivity = []
    for j in range(ARM_DOFS):
        shifted = dict(batch)
        shifted[OBS_STATE] = batch[OBS_STATE].clone()
        shifted[OBS_STATE][:, j] += 1.0
        moved = policy.predict_action_chunk(shifted)[:, 0].detach().cpu().numpy()
        sensitivity.append(float(np.mean(moved[:, j] - predicted[:, j])))
    return {"close_frame": close, "grasp_bias_mm": [round(float(v), 3) for v in bias],
            "state_sensitivity": [round(v, 3) for v in sensitivity]}


def probe(policy: Any, dataset: Any, window: int = 10) -> dict[str, Any]:
    """Probe every episode of `dataset` (a LeRobotDataset, usually restricted with its
    `episodes` argument). Returns per-episode results and their mean and spread."""
    if window < 1:
        raise ConfigError(f"window must be >= 1 frame, got {window}")
    lengths = {e.episode_index: e.length for e in dataset.meta.episodes}
    env = SO101PickPlaceEnv(render=False)
    try:
        ik = IKSolver(env.model)
        per_episode, start = {}, 0
        for ep in dataset.episodes:  # the order dataset[i] walks them in
            length = lengths[ep]
            frames = [dataset[start + t] for t in range(length)]
            start += length
            result = probe_episode(policy, frames, window, ik, env)
            if result is not None:
                per_episode[int(ep)] = result
    finally:
        env.close()
    if not per_episode:
        raise ConfigError("no probed episode has a close command (is this a dataset recorded in our sim?)")
    bias = np.array([r["grasp_bias_mm"] for r in per_episode.values()])
    sens = np.array([r["state_sensitivity"] for r in per_episode.values()])
    return {
        "episodes": per_episode,
        "window_frames": window,
        "grasp_bias_mm_mean": [round(float(v), 3) for v in bias.mean(axis=0)],
        "grasp_bias_mm_std": [round(float(v), 3) for v in bias.std(axis=0)],
        "state_sensitivity_mean": dict(zip(JOINT_LABELS, (round(float(v), 3) for v in sens.mean(axis=0)))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint directory (holding pretrained_model/) "
                        "or a pretrained_model/ directory")
    parser.add_argument("--dataset", required=True, help="a dataset recorded by `robotrain sim record`")
    parser.add_argument("--episodes", required=True, help="comma-separated episode indices, e.g. 1,2,3")
    parser.add_argument("--window", type=int, default=10, help="frames before (and including) the close command")
    parser.add_argument("--output", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    try:
        episodes = [int(e) for e in args.episodes.split(",") if e.strip()]
    except ValueError:
        parser.error(f"--episodes must be comma-separated integers, got {args.episodes!r}")

    try:
        policy = load_policy(args.checkpoint)  # a step dir or its pretrained_model/
        size, mode = policy.config.image_input()
        dataset = LeRobotDataset(args.dataset, episodes=episodes, image_size=size, resize_mode=mode, progress=False)
        text = json.dumps(probe(policy, dataset, args.window), indent=2)
        if args.output:
            atomic_write_text(args.output, text + "\n")
    except RobotrainError as exc:
        print(f"grasp_probe: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
