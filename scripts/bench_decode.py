#!/usr/bin/env python3
"""Decode ceilings of the image handler, in process: img/s at decode pool sizes 1, 2, ...

For each pool size it times whole batches of the sample 120 kB JPEG (loadgen.sample_image) through
the ResNet-18 handler's preprocessing with its default image settings:

* ``pillow``: decode, resize, crop and normalise on the CPU (the handler's own decode);
* ``device``: decode to uint8 on the pool, resize/crop/normalise with torch on the model's device
  (handlers/device_imaging.py; on a CPU-only host that device is the CPU);
* ``nvjpeg``: JPEGs decoded on the GPU as a batch (only where CUDA and torchvision are present).

    python scripts/bench_decode.py [--threads 1 2] [--batch 8] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any, Callable, Optional

import torch

from torchserve_perf.handlers.device_imaging import DeviceImages, Nvjpeg
from torchserve_perf.handlers.options import ImageOptions
from torchserve_perf.plugins.decode_pool import DecodePool, Failure
from torchserve_perf.tools.loadgen import sample_image


def pillow_decoder(options: ImageOptions) -> Callable[[Any, int], torch.Tensor]:
    """The image handler's CPU decode, built without a model (its settings are all it reads)."""
    from torchserve_perf.handlers.image_handler import ImageClassifierHandler
    from torchserve_perf.handlers.settings import HandlerSettings, load_settings

    handler = ImageClassifierHandler()
    base = load_settings({}, {})
    handler.settings = HandlerSettings(base.threads, base.optimizations, base.profiler, base.metrics, options,
                                       base.decode)
    handler._mean = torch.tensor(options.mean).view(3, 1, 1)
    handler._std = torch.tensor(options.std).view(3, 1, 1)
    return handler.decode


def rate(run_batch: Callable[[], list], batch: int, seconds: float, sync: Callable[[], None]) -> tuple[float, float]:
    """Images per second over repeated batches (the best of three windows, after one warm-up batch),
    and the cores this process kept busy meanwhile (CPU seconds / wall seconds: above 1 means the
    pool's threads really ran side by side, even when a shared machine's other load caps the rate)."""
    outputs = run_batch()
    failures = [o for o in outputs if isinstance(o, Failure)]
    if failures:
        raise SystemExit(f"decode failed: {failures[0].error!r}")
    sync()
    windows = []
    for _ in range(3):
        done, started, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - started < seconds / 3:
            run_batch()
            done += batch
        sync()
        wall = time.perf_counter() - started
        windows.append((done / wall, (time.process_time() - cpu) / wall))
    return max(windows)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="decode pool sizes")
    parser.add_argument("--batch", type=int, default=8, help="requests per batch")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="short runs: checks that it works")
    args = parser.parse_args(argv)
    seconds = 0.3 if args.quick else args.seconds
    torch.set_num_threads(1)  # the pool is the parallelism being measured
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    options = ImageOptions()
    image = sample_image()
    bodies = [image] * args.batch
    pillow = pillow_decoder(options)
    nvjpeg, why = Nvjpeg.load(device)
    paths: dict[str, Optional[DeviceImages]] = {"pillow": None, "device": DeviceImages(options, device)}
    if nvjpeg is not None:
        paths["nvjpeg"] = DeviceImages(options, device, nvjpeg)
    print(f"# decode ceilings: {len(image) / 1e3:.0f} kB JPEG, batch {args.batch}, device {device}, "
          f"{os.cpu_count()} CPUs; nvjpeg: {'yes' if nvjpeg else why}")
    print(f"{'path':8} {'threads':>7} {'img/s':>9} {'cores busy':>10}")
    results: dict[tuple[str, int], float] = {}
    for threads in args.threads:
        pool = DecodePool(threads)
        try:
            for name, path in paths.items():
                if path is None:
                    run_batch = lambda: pool.map(pillow, bodies)  # noqa: E731
                else:
                    run_batch = lambda path=path: path.decode_all(bodies, pillow, pool)  # noqa: E731
                results[name, threads], busy = rate(run_batch, args.batch, seconds, sync)
                print(f"{name:8} {threads:>7} {results[name, threads]:>9.0f} {busy:>10.2f}", flush=True)
        finally:
            pool.close()
    first = args.threads[0]
    for name in paths:
        scaling = ", ".join(f"{t} threads {results[name, t] / results[name, first]:.2f}x" for t in args.threads[1:])
        if scaling:
            print(f"# {name}: {scaling} of {first} thread{'s' if first > 1 else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
