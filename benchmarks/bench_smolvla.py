"""SmolVLA training-step and inference throughput: tiny, the sim preset's backbone (trained
whole, as the smolvla_sim preset does), and the full-size random backbone.

CPU (each configuration runs in its own subprocess so peak RSS is its own):
    nice -n 10 PYTHONPATH=src /work/venv/bin/python benchmarks/bench_smolvla.py --configs tiny full --batch 1
Peak memory with and without gradient checkpointing (run twice, compare peak_MB):
    PYTHONPATH=src python benchmarks/bench_smolvla.py --configs sim --batch 32
    PYTHONPATH=src python benchmarks/bench_smolvla.py --configs sim --batch 32 --gradient-checkpointing
GPU, bf16 autocast, batch 64:
    PYTHONPATH=src python benchmarks/bench_smolvla.py --configs full --device cuda --bf16 --batch 64

Prints total/trainable parameters, updt_s (forward + backward + AdamW step, mean over the
timed steps), samples/s, infer_s (one 10-step `predict_action_chunk`) and peak memory
(RSS on CPU, max allocated on CUDA), then the full/tiny ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

CAMERAS = ("observation.images.front", "observation.images.wrist")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_one(name: str, device: str, batch_size: int, steps: int, bf16: bool, ckpt: bool) -> dict[str, Any]:
    from robotrain.constants import ACTION, ACTION_IS_PAD, OBS_STATE, SO101_TASK, TASK
    from robotrain.policies.base import PolicyFeatures
    from robotrain.policies.smolvla.config import SmolVLAConfig
    from robotrain.policies.smolvla.model import SmolVLAPolicy

    dev = torch.device(device)
    side = {"tiny": 32, "sim": 128, "full": 512}[name]
    whole = name == "sim"  # the sim preset trains its random VLM too
    cfg = SmolVLAConfig(
        vlm={"tiny": "tiny", "sim": "sim", "full": "full-random"}[name],
        resize_imgs_with_padding=(side, side),
        gradient_checkpointing=ckpt,
        train_expert_only=not whole,
        freeze_vision_encoder=not whole,
        chunk_size=30 if whole else 50,
        n_action_steps=10 if whole else 50,
    )
    feats = PolicyFeatures(6, 6, CAMERAS, (3, side, side))
    stats = {k: {"mean": np.zeros(6, np.float32), "std": np.ones(6, np.float32)} for k in (OBS_STATE, ACTION)}
    torch.manual_seed(0)
    policy = SmolVLAPolicy(cfg, feats, stats).to(dev)
    total = sum(p.numel() for p in policy.parameters())
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    opt = torch.optim.AdamW(
        policy.optimizer_param_groups(), lr=cfg.optimizer_lr, betas=cfg.optimizer_betas,
        eps=cfg.optimizer_eps, weight_decay=cfg.optimizer_weight_decay,
    )
    g = torch.Generator().manual_seed(0)
    batch = {k: torch.rand(batch_size, 3, side, side, generator=g).to(dev) for k in CAMERAS}
    batch[OBS_STATE] = torch.randn(batch_size, 6, generator=g).to(dev)
    batch[ACTION] = torch.randn(batch_size, cfg.chunk_size, 6, generator=g).to(dev)
    batch[ACTION_IS_PAD] = torch.zeros(batch_size, cfg.chunk_size, dtype=torch.bool, device=dev)
    batch[TASK] = [SO101_TASK] * batch_size
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16)

    def step() -> float:
        with autocast:
            loss, _ = policy(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.optimizer_param_groups()[0]["params"], cfg.optimizer_grad_clip_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    policy.train()
    step()  # warm-up (allocations, kernel choice)
    _sync(dev)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    policy.eval()
    with autocast:
        policy.predict_action_chunk(batch)
        _sync(dev)
        t0 = time.perf_counter()
        policy.predict_action_chunk(batch)
        _sync(dev)
    infer_s = time.perf_counter() - t0
    updt_s = float(np.mean(times))
    if dev.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "config": name, "device": device, "bf16": bf16, "batch": batch_size, "gradient_checkpointing": ckpt,
        "total_params": total, "trainable_params": trainable,
        "updt_s": updt_s, "samples_per_s": batch_size / updt_s, "infer_s": infer_s, "peak_mem_mb": peak_mb,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["tiny", "full"], choices=["tiny", "sim", "full"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3, help="timed training steps after one warm-up step")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        result = bench_one(args.configs[0], args.device, args.batch, args.steps, args.bf16, args.gradient_checkpointing)
        print("RESULT " + json.dumps(result))
        return 0
    results = []
    for name in args.configs:
        cmd = [sys.executable, __file__, "--child", "--configs", name, "--device", args.device,
               "--batch", str(args.batch), "--steps", str(args.steps)]
        cmd += ["--bf16"] * args.bf16 + ["--gradient-checkpointing"] * args.gradient_checkpointing
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"{name}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        results.append(json.loads(lines[-1][len("RESULT "):]))
    header = f"{'config':6} {'device':6} {'bf16':5} {'batch':>5} {'total':>12} {'trainable':>12} {'updt_s':>9} {'samples/s':>10} {'infer_s':>8} {'peak_MB':>9}"
    print(header)
    for r in results:
        print(f"{r['config']:6} {r['device']:6} {str(r['bf16']):5} {r['batch']:>5} {r['total_params']:>12,} "
              f"{r['trainable_params']:>12,} {r['updt_s']:>9.4f} {r['samples_per_s']:>10.2f} {r['infer_s']:>8.3f} "
              f"{r['peak_mem_mb']:>9.0f}")
    if len(results) == 2:
        a, b = results
        print(f"ratio {b['config']}/{a['config']}: updt_s x{b['updt_s'] / a['updt_s']:.1f}, "
              f"infer_s x{b['infer_s'] / a['infer_s']:.1f}, peak memory x{b['peak_mem_mb'] / a['peak_mem_mb']:.1f}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
