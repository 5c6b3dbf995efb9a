"""The frame cache held in accelerator memory, so batches carry frame indices, not pixels.

Why: on a fast GPU ACT's update at 240x320 batch 64 takes ~0.06 s, while moving 64 x 2
uint8 frames (29 MB) from the DataLoader workers through shared memory, pinning and PCIe
took longer (data_s 0.075 s on an H100, docs/benchmarks.md). A cached SO-101 dataset is
small next to GPU memory (75 episodes x 2 cameras at 240x320: 7.4 GB), so it can be copied
there once; then workers only ship row indices and the batch's images are one gather on
the device.

Use (what `robotrain train --frames-on-device` does):
    dataset = LeRobotDataset(path, image_size=(240, 320), frames="indices", ...)
    frames = DeviceFrames(dataset.cache, dataset.camera_keys, torch.device("cuda"))
    batch = frames.fill(next(loader))  # camera keys now hold (B, [T,] 3, H, W) uint8 on the GPU
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from robotrain.constants import frame_index_key
from robotrain.data.cache import FrameCache
from robotrain.errors import ConfigError

logger = logging.getLogger(__name__)

_COPY_ROWS = 512  # frames copied per chunk while loading (bounds the host staging memory)


class DeviceFrames:
    """Every frame of a `FrameCache` as one uint8 tensor per camera on `device`."""

    def __init__(self, cache: FrameCache, camera_keys: Sequence[str], device: torch.device,
                 max_fraction_of_free: float = 0.6) -> None:
        self.device = device
        self.camera_keys = tuple(camera_keys)
        arrays = {key: cache.open(key) for key in self.camera_keys}
        need = sum(int(a.nbytes) for a in arrays.values())
        free = _free_bytes(device)
        if free is not None and need > max_fraction_of_free * free:
            raise ConfigError(
                f"--frames-on-device: the frame cache needs {need / 2**30:.1f} GiB on {device} but only "
                f"{free / 2**30:.1f} GiB is free (at most {max_fraction_of_free:.0%} of it may be used); "
                f"train without --frames-on-device or at a smaller --image-size")
        self.frames: dict[str, torch.Tensor] = {}
        for key, array in arrays.items():
            dest = torch.empty(array.shape, dtype=torch.uint8, device=device)
            with warnings.catch_warnings():  # the read-only memmap is only read from here
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                for lo in range(0, len(array), _COPY_ROWS):
                    dest[lo:lo + _COPY_ROWS].copy_(torch.from_numpy(array[lo:lo + _COPY_ROWS]))
            self.frames[key] = dest
        self.nbytes = need
        logger.info("frame cache on %s: %d cameras x %d frames, %.2f GiB", device, len(self.frames),
                    len(next(iter(arrays.values()))) if arrays else 0, need / 2**30)

    def fill(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Replace each camera's `frame_index.<key>` entry by its frames, gathered on the
        device: indices (B,) -> (B, 3, H, W), (B, T) -> (B, T, 3, H, W), uint8."""
        out = dict(batch)
        for key in self.camera_keys:
            index_key = frame_index_key(key)
            if index_key not in out:
                raise ConfigError(f"batch has no {index_key!r}: the dataset must be built with frames='indices'")
            index = out.pop(index_key).to(self.device, non_blocking=True)
            out[key] = self.frames[key][index]
        return out


def _free_bytes(device: torch.device) -> int | None:
    """Free accelerator memory, or None where there is no such limit to check (CPU)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return None
