"""LeRobot's side of benchmarks/bench_lerobot.py, run by the LeRobot venv's python (it
imports only LeRobot, torch and numpy; never robotrain). Prints one `RESULT {json}` line.

    HF_HUB_OFFLINE=1 /work/lerobot-venv/bin/python benchmarks/lerobot_peer.py loader DATASET --batches 20
    HF_HUB_OFFLINE=1 /work/lerobot-venv/bin/python benchmarks/lerobot_peer.py act --size 240x320 --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

CAMERAS = ("observation.images.front", "observation.images.wrist")


def loader(root: str, batches: int, batch_size: int, workers: int, chunk: int) -> dict:
    """Samples/s of LeRobotDataset (PyAV decoding, float32 images) through a shuffled DataLoader."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/bench", root=root, delta_timestamps={"action": [i / 30 for i in range(chunk)]},
                        video_backend="pyav")
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                                     generator=torch.Generator().manual_seed(0))
    it = iter(dl)
    next(it)  # worker start-up
    t0, n = time.perf_counter(), 0
    for _ in range(batches):
        n += next(it)["action"].shape[0]
    return {"samples_per_s": n / (time.perf_counter() - t0)}


def act(size: tuple[int, int], steps: int, warmup: int, batch_size: int) -> dict:
    """Median seconds of an ACT training step (forward, backward, clip, AdamW) at LeRobot's
    defaults with a random backbone, on a random normalised batch of `size` images."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.act.configuration_act import ACTConfig
    from lerobot.policies.act.modeling_act import ACTPolicy

    features = {cam: PolicyFeature(type=FeatureType.VISUAL, shape=(3, *size)) for cam in CAMERAS}
    features["observation.state"] = PolicyFeature(type=FeatureType.STATE, shape=(6,))
    cfg = ACTConfig(input_features=features, output_features={"action": PolicyFeature(type=FeatureType.ACTION,
                                                                                        shape=(6,))},
                    pretrained_backbone_weights=None, device="cpu")
    torch.manual_seed(0)
    policy = ACTPolicy(cfg).train()
    preset = cfg.get_optimizer_preset()  # what lerobot-train builds: AdamW, lr, weight decay, clip norm
    opt = torch.optim.AdamW(policy.get_optim_params(), lr=preset.lr, weight_decay=preset.weight_decay)
    g = torch.Generator().manual_seed(0)
    batch = {cam: torch.randn(batch_size, 3, *size, generator=g) for cam in CAMERAS}
    batch["observation.state"] = torch.randn(batch_size, 6, generator=g)
    batch["action"] = torch.randn(batch_size, cfg.chunk_size, 6, generator=g)
    batch["action_is_pad"] = torch.zeros(batch_size, cfg.chunk_size, dtype=torch.bool)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss, _ = policy.forward(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), preset.grad_clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {"step_s": float(np.median(times)), "params": sum(p.numel() for p in policy.parameters())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["loader", "act"])
    ap.add_argument("dataset", nargs="?")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--size", default="480x640")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    if args.what == "loader":
        result = loader(args.dataset, args.batches, args.batch_size, args.workers, args.chunk)
    else:
        h, w = (int(v) for v in args.size.split("x"))
        result = act((h, w), args.steps, args.warmup, args.batch_size)
    import lerobot

    result["lerobot"] = getattr(lerobot, "__version__", "?")
    result["torch"] = torch.__version__
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
