"""How much time robotrain's rollout machinery adds per env step, beside the simulation.

Runs `evaluate_in_sim` against a zero-cost fake env (two 480x640 cameras, the sim's
spaces) and a zero-cost policy that still receives images resized to 240x320, with and
without video recording, and prints ms per step and the share of a real sim step
(sim-facts.md: ~20 renders/s per process, two cameras -> ~100 ms per step).

    PYTHONPATH=src:tests nice -n 10 /work/venv/bin/python benchmarks/rollout_overhead.py
"""

from __future__ import annotations

import tempfile
import time

import torch

from test_rollout import FAKE_ID, FakePolicy, _Features  # noqa: F401  (registers the fake env)
from robotrain.evaluation.rollout import evaluate_in_sim

SIM_STEP_MS = 100.0
STEPS = 12  # the fake env's episode length (odd seeds)


class Policy240(FakePolicy):
    def __init__(self) -> None:
        super().__init__()
        self.features = _Features(image_shape=(3, 240, 320))

    def select_action(self, batch) -> torch.Tensor:
        return batch["observation.state"] + 1.0


def bench(videos: int, n_episodes: int = 6) -> float:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        info = evaluate_in_sim(Policy240(), n_episodes, seed=1, videos=videos, out_dir=d, progress=False,
                               env_id=FAKE_ID, env_kwargs={"image_size": (480, 640)})
        dt = time.perf_counter() - t0
    steps = sum(e["steps"] for e in info["per_episode"])
    return 1000 * dt / steps


if __name__ == "__main__":
    bench(0, 1)  # warm-up
    # Best of 3: the CPU is shared, the minimum is the least disturbed measurement.
    no_video = min(bench(0) for _ in range(3))
    video = min(bench(6) for _ in range(3))
    print(f"rollout overhead, no video : {no_video:6.2f} ms/step ({no_video / SIM_STEP_MS:.1%} of a ~{SIM_STEP_MS:.0f} ms sim step)")
    print(f"rollout overhead, all video: {video:6.2f} ms/step ({video / SIM_STEP_MS:.1%} of a sim step; "
          f"video costs {video / no_video:.1f}x the no-video overhead)")
