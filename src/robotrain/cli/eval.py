"""`robotrain eval`: score a checkpoint offline on a dataset's episodes (or in sim).

Offline mode prints a per-joint table of the mean absolute action error (joint units) of
the predicted chunks and of the first action, next to a constant mean-action baseline,
and writes the numbers as JSON.

Examples:
    robotrain eval --checkpoint outputs/train/run/checkpoints/last --dataset data/so101 --episodes 8 9
    robotrain eval --checkpoint outputs/train/run/checkpoints/last --sim --n-episodes 50
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a checkpoint: offline action error (or --sim rollouts)")
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint dir (<run>/checkpoints/<step> or .../last) or its pretrained_model/")
    parser.add_argument("--dataset", help="LeRobot dataset to score against (offline mode)")
    parser.add_argument("--episodes", type=int, nargs="+", help="episode indices (default: every episode)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-samples", type=int, default=0, help="at most N evenly spaced frames (0: all)")
    parser.add_argument("--image-size", help="HxW the frames are resized to (default: the policy's input shape)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--output", help="JSON file for the results (default: <checkpoint>/eval_offline.json)")
    # Sim rollouts: robotrain.rollout (another module) implements them; wired by the lead.
    parser.add_argument("--sim", action="store_true", help="roll the policy out in the SO-101 sim instead")
    parser.add_argument("--n-episodes", type=int, default=10, help="sim episodes (with --sim)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from robotrain.errors import ConfigError

    if args.sim:
        return run_sim(args)
    if not args.dataset:
        raise ConfigError("--dataset is required for offline evaluation (or pass --sim)")
    return run_offline(args)


def run_sim(args: argparse.Namespace) -> int:
    """Rollouts in simulation: `robotrain.rollout` (a separate module) does the work."""
    from robotrain.errors import ConfigError

    import importlib

    try:
        importlib.import_module("robotrain.rollout")
    except ModuleNotFoundError as exc:
        if exc.name == "robotrain.rollout":
            raise ConfigError("--sim: sim rollouts are not available in this build (robotrain.rollout missing)") from None
        raise
    raise ConfigError("--sim: rollout evaluation is not wired into `robotrain eval` yet")


def run_offline(args: argparse.Namespace) -> int:
    import torch

    from robotrain.checkpoint import load_policy, load_stats
    from robotrain.constants import ACTION, PRETRAINED_MODEL_DIR
    from robotrain.data.dataset import LeRobotDataset
    from robotrain.errors import ConfigError
    from robotrain.evaluate import format_table, offline_action_error
    from robotrain.io_utils import atomic_write_json

    checkpoint = Path(args.checkpoint)
    pretrained = checkpoint / PRETRAINED_MODEL_DIR if (checkpoint / PRETRAINED_MODEL_DIR).is_dir() else checkpoint
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    policy = load_policy(pretrained, device=device)
    if args.image_size:
        parts = args.image_size.lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ConfigError(f"--image-size: expected HxW like 240x320, got {args.image_size!r}")
        image_size = (int(parts[0]), int(parts[1]))
    else:
        image_size = tuple(policy.features.image_shape[1:]) if policy.features.camera_keys else None
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    dataset = LeRobotDataset(args.dataset, delta_timestamps=policy.delta_timestamps(), image_size=image_size)
    if policy.features.fps != dataset.meta.fps:
        policy.features = dataclasses.replace(policy.features, fps=int(dataset.meta.fps))
        dataset = LeRobotDataset(args.dataset, delta_timestamps=policy.delta_timestamps(), image_size=image_size)
    baseline = load_stats(pretrained)[ACTION]["mean"]  # the training-set mean action
    result = offline_action_error(policy, dataset, episodes=args.episodes, batch_size=args.batch_size,
                                  baseline_action=baseline, max_samples=args.max_samples or None)
    names = (dataset.meta.features.get(ACTION) or {}).get("names")
    print(format_table(result, names if isinstance(names, list) else None))
    output = Path(args.output) if args.output else pretrained.parent / "eval_offline.json"
    atomic_write_json(output, {
        "checkpoint": str(checkpoint), "dataset": str(args.dataset), "episodes": args.episodes,
        "num_samples": result.num_samples, "num_steps": result.num_steps,
        "policy": dataclasses.asdict(result.policy),
        "mean_action_baseline": dataclasses.asdict(result.baseline) if result.baseline else None,
        **result.to_metrics(),
    })
    print(f"wrote {output}")
    return 0
