"""robotrain against LeRobot 0.4.4 on the same machine, same files, same settings (issue 23.5).

1. Loading: a 10-episode, 2-camera 480x640 AV1 dataset written by LeRobot itself
   (tools/make_lerobot_dataset.py); batch 32, 2 workers, shuffled, a 100-step action
   window: LeRobot's LeRobotDataset (PyAV decoding per sample, float32 images) against ours
   through torch's DataLoader (frame cache, uint8 images) and our batched loader (2
   threads). Frames at the recorded 480x640 on both sides; our cache is built first and its
   build time printed apart.
2. ACT training step (forward + backward + clip + AdamW) at LeRobot's default config
   (ResNet18 random, dim 512, 4+1 layers, chunk 100), batch 8, 480x640 and 240x320 inputs,
   random batches: LeRobot's ACTPolicy against ours, in PyTorch's default (contiguous) layout
   and with `--channels-last true`.
Every measurement is a fresh subprocess (LeRobot's in `--peer-python`, ours in this
python); the two sides alternate, round after round, and the table gives medians and the
25-75% spread over the rounds, and the ratio of the medians.

Run on a quiet machine (the LeRobot venv must exist; nothing is downloaded):
    HF_HUB_OFFLINE=1 /work/lerobot-venv/bin/python tools/make_lerobot_dataset.py /tmp/lerobot_bench_ds
    env PYTHONPATH=src python benchmarks/bench_lerobot.py --peer-python /work/lerobot-venv/bin/python \\
        --dataset /tmp/lerobot_bench_ds --rounds 5
Check that it works (tiny dataset, one round, one step; the numbers mean nothing):
    ... tools/make_lerobot_dataset.py /tmp/le_tiny --episodes 2 --frames 40 --height 96 --width 128
    nice -n 10 env PYTHONPATH=src python benchmarks/bench_lerobot.py --peer-python /work/lerobot-venv/bin/python \\
        --dataset /tmp/le_tiny --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PEER = REPO / "benchmarks" / "lerobot_peer.py"
CAMERAS = ("observation.images.front", "observation.images.wrist")


# --- our side (children run by this python) ----------------------------------------------


def our_loader(root: str, impl: str, batches: int, batch_size: int, workers: int, chunk: int) -> dict[str, Any]:
    import torch

    from robotrain.data.batch_loader import BatchedLoader
    from robotrain.data.dataset import LeRobotDataset

    ds = LeRobotDataset(root, {"action": [i / 30 for i in range(chunk)]}, image_dtype="uint8", progress=False)
    if impl == "batched":
        order = np.random.default_rng(0).permutation(len(ds))
        it = BatchedLoader(ds).iterate((order[i:i + batch_size] for i in range(0, len(ds) - batch_size + 1,
                                                                               batch_size)), threads=workers)
    else:
        it = iter(torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                              drop_last=True, generator=torch.Generator().manual_seed(0)))
    next(it)  # worker / thread start-up
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        n += next(it)["action"].shape[0]
    return {"samples_per_s": n / (time.perf_counter() - t0)}


def our_act(size: tuple[int, int], steps: int, warmup: int, batch_size: int, channels_last: bool) -> dict[str, Any]:
    import torch

    from robotrain.constants import ACTION, ACTION_IS_PAD, OBS_STATE
    from robotrain.evaluation.offline import batch_to_device
    from robotrain.policies.act.config import ACTConfig
    from robotrain.policies.act.model import ACTPolicy
    from robotrain.training.loop import Runtime, train_step
    from robotrain.training.memory import placeholder_stats, so101_features
    from robotrain.training.optim import make_optimizer

    features = so101_features()
    torch.manual_seed(0)
    policy = ACTPolicy(ACTConfig(image_size=size), features, placeholder_stats(features)).train()
    if channels_last:  # what `robotrain train --channels-last true` does
        policy = policy.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(policy)
    params = [p for p in policy.parameters() if p.requires_grad]
    g = torch.Generator().manual_seed(0)
    batch = {cam: torch.rand(batch_size, 3, *size, generator=g) for cam in CAMERAS}
    batch[OBS_STATE] = torch.randn(batch_size, 6, generator=g)
    batch[ACTION] = torch.randn(batch_size, policy.config.chunk_size, 6, generator=g)
    batch[ACTION_IS_PAD] = torch.zeros(batch_size, policy.config.chunk_size, dtype=torch.bool)
    batch = batch_to_device(batch, torch.device("cpu"), channels_last)  # the training loop's layout step
    rt = Runtime(device=torch.device("cpu"))
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        train_step(policy, params, batch, optimizer, None, policy.config.optimizer_grad_clip_norm, rt)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {"step_s": float(np.median(times)), "params": sum(p.numel() for p in policy.parameters())}


# --- orchestration ---------------------------------------------------------------------------


def run_child(cmd: list[str]) -> dict[str, Any]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def spread(values: list[float]) -> str:
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return f"{q50:.3g} [{q25:.3g}-{q75:.3g}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-python", required=True, help="the LeRobot venv's python, e.g. /work/lerobot-venv/bin/python")
    ap.add_argument("--our-python", default=sys.executable,
                    help="python for our side (default: this one); give the peer's to compare on the same torch")
    ap.add_argument("--dataset", required=True, help="written by tools/make_lerobot_dataset.py")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=20, help="timed batches per loader run")
    ap.add_argument("--steps", type=int, default=10, help="timed ACT steps per run (after 2 warm-up steps)")
    ap.add_argument("--sizes", nargs="+", default=["480x640", "240x320"])
    ap.add_argument("--skip", choices=["loader", "act"], action="append", default=[])
    ap.add_argument("--quick", action="store_true", help="1 round, 1 batch, 1 step: checks that it works")
    ap.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        what, *rest = args.child
        if what == "loader":
            root, impl, batches, workers = rest
            result = our_loader(root, impl, int(batches), 32, int(workers), 100)
        else:
            size, steps, warmup, layout = rest
            h, w = (int(v) for v in size.split("x"))
            result = our_act((h, w), int(steps), int(warmup), 8, layout == "channels_last")
        print("RESULT " + json.dumps(result))
        return 0
    if args.quick:
        args.rounds, args.batches, args.steps = 1, 1, 1
    ours = [args.our_python, __file__, "--peer-python", args.peer_python, "--dataset", args.dataset, "--child"]
    peer = [args.peer_python, str(PEER)]

    if "loader" not in args.skip:
        sys.path.insert(0, str(REPO / "src"))
        from robotrain.data.dataset import LeRobotDataset

        t0 = time.perf_counter()
        LeRobotDataset(args.dataset, image_dtype="uint8", progress=False)  # builds our frame cache once
        print(f"our frame cache: {time.perf_counter() - t0:.1f} s (built once, reused by every run below)")
        sps: dict[str, list[float]] = {"lerobot": [], "ours, DataLoader": [], "ours, batched": []}
        peer_failed = ""
        for _ in range(args.rounds):
            if not peer_failed:
                try:
                    sps["lerobot"].append(run_child([*peer, "loader", args.dataset, "--batches", str(args.batches)])
                                          ["samples_per_s"])
                except RuntimeError as exc:  # e.g. no video decoder LeRobot can use in its venv
                    peer_failed = str(exc).strip().splitlines()[-1]
            for impl, name in (("dataloader", "ours, DataLoader"), ("batched", "ours, batched")):
                sps[name].append(run_child([*ours, "loader", args.dataset, impl, str(args.batches), "2"])
                                 ["samples_per_s"])
        base = float(np.median(sps["lerobot"])) if sps["lerobot"] else float("nan")
        print(f"\nloading (batch 32, 2 workers, 100-step action window, 480x640 frames), {args.rounds} rounds:")
        if peer_failed:
            print(f"LeRobot's loader failed: {peer_failed}")
        print("| loader | samples/s, median [25-75%] | vs LeRobot |\n|---|---|---|")
        for name, values in sps.items():
            if values:
                print(f"| {name} | {spread(values)} | {np.median(values) / base:.1f}x |")

    if "act" not in args.skip:
        torch_versions = {side: run_child([python, "-c", "import torch; print('RESULT \"' + torch.__version__ + '\"')"])
                          for side, python in (("LeRobot", args.peer_python), ("ours", args.our_python))}
        print(f"\nACT training step at LeRobot's defaults, batch 8, {args.rounds} rounds of {args.steps} steps "
              f"(torch: LeRobot {torch_versions['LeRobot']}, ours {torch_versions['ours']}):")
        print("| input | LeRobot s/step | ours s/step | ours, channels_last s/step | LeRobot / ours | "
              "LeRobot / ours, channels_last |\n|---|---|---|---|---|---|")
        for size in args.sizes:
            times: dict[str, list[float]] = {"lerobot": [], "contiguous": [], "channels_last": []}
            for _ in range(args.rounds):
                times["lerobot"].append(run_child([*peer, "act", "--size", size, "--steps", str(args.steps),
                                                   "--batch-size", "8"])["step_s"])
                for layout in ("contiguous", "channels_last"):
                    times[layout].append(run_child([*ours, "act", size, str(args.steps), "2", layout])["step_s"])
            base = np.median(times["lerobot"])
            print(f"| {size} | {spread(times['lerobot'])} | {spread(times['contiguous'])} | "
                  f"{spread(times['channels_last'])} | {base / np.median(times['contiguous']):.2f}x | "
                  f"{base / np.median(times['channels_last']):.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
