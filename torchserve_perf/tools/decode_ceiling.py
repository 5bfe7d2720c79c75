"""Decode ceilings of the image handler, in process: images per second per decode path and pool size.

For each pool size, whole batches of one payload (the 120 kB sample JPEG by default) go through
the image handler's preprocessing with its default settings:

* ``pillow``: decode, resize, crop and normalise on the CPU (the handler's own decode);
* ``device``: decode to uint8 on the pool, resize/crop/normalise with torch on ``device``
  (handlers/device_imaging.py; on a CPU-only host that device is the CPU);
* ``nvjpeg``: JPEGs decoded on the GPU as a batch (only where CUDA and torchvision are present).

``cores busy`` is process CPU seconds per wall second: above 1 shows the pool's threads ran side
by side even where a shared machine's other load caps the rate.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from torchserve_perf.handlers import imaging
from torchserve_perf.handlers.device_imaging import DeviceImages, Nvjpeg
from torchserve_perf.handlers.options import ImageOptions
from torchserve_perf.plugins.decode_pool import DecodePool, Failure


@dataclass(frozen=True)
class DecodePoint:
    path: str
    threads: int
    images_per_s: float
    cores_busy: float

    def as_dict(self) -> dict:
        return {"path": self.path, "threads": self.threads, "images_per_s": round(self.images_per_s, 1),
                "cores_busy": round(self.cores_busy, 2)}


def pillow_decoder(options: ImageOptions) -> Callable[[Any, int], torch.Tensor]:
    """The image handler's CPU decode, built without a model (its settings are all it reads)."""
    from torchserve_perf.handlers.image_handler import ImageClassifierHandler
    from torchserve_perf.handlers.settings import load_settings

    handler = ImageClassifierHandler()
    handler.settings = load_settings({"handler": {"image": {}}}, {}, "image", ImageOptions)
    handler.normalise = imaging.Normaliser(options.mean, options.std)
    return handler.decode


def rate(run_batch: Callable[[], list], batch: int, seconds: float, sync: Callable[[], None]) -> tuple[float, float]:
    """(images per second, cores busy): the best of three windows, after one warm-up batch."""
    failures = [o for o in run_batch() if isinstance(o, Failure)]
    if failures:
        raise RuntimeError(f"decode failed: {failures[0].error!r}")
    sync()
    windows = []
    for _ in range(3):
        done, started, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - started < seconds / 3 or done == 0:
            run_batch()
            done += batch
        sync()
        wall = time.perf_counter() - started
        windows.append((done / wall, (time.process_time() - cpu) / wall))
    return max(windows)


def batch_runner(path: Optional[DeviceImages], pool: DecodePool, pillow: Callable[[Any, int], torch.Tensor],
                 bodies: Sequence[bytes]) -> Callable[[], list]:
    """One batch of ``bodies`` through ``path`` on ``pool``; no path is the handler's own Pillow decode."""
    if path is None:
        return lambda: pool.map(pillow, bodies)
    return lambda: path.decode_all(bodies, pillow, pool)


def measure(threads: Sequence[int] = (1, 2), batch: int = 8, seconds: float = 3.0,
            device: Optional[torch.device] = None, payload: Optional[bytes] = None,
            progress: Optional[Callable[[DecodePoint], None]] = None) -> dict:
    """Every decode path at every pool size; ``{"points": [...], "nvjpeg": why not, ...}``."""
    from torchserve_perf.tools.loadgen import sample_image

    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    options = ImageOptions()
    body = payload or sample_image()
    bodies = [body] * batch
    pillow = pillow_decoder(options)
    nvjpeg, why = Nvjpeg.load(device)
    paths: dict[str, Optional[DeviceImages]] = {"pillow": None, "device": DeviceImages(options, device)}
    if nvjpeg is not None:
        paths["nvjpeg"] = DeviceImages(options, device, nvjpeg)
    before = torch.get_num_threads()
    points = []
    try:
        for count in threads:
            torch.set_num_threads(count)  # a worker's budget: as many intra-op threads as decode threads
            pool = DecodePool(count)
            try:
                for name, path in paths.items():
                    runner = batch_runner(path, pool, pillow, bodies)
                    point = DecodePoint(name, count, *rate(runner, batch, seconds, sync))
                    points.append(point)
                    if progress:
                        progress(point)
            finally:
                pool.close()
    finally:
        torch.set_num_threads(before)
    return {"device": str(device), "batch": batch, "payload_bytes": len(body), "cpus": os.cpu_count(),
            "nvjpeg": "yes" if nvjpeg else why, "points": [p.as_dict() for p in points]}
