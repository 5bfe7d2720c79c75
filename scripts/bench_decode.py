#!/usr/bin/env python3
"""Decode ceilings of the image handler, in process: img/s at decode pool sizes 1, 2, ...

Pillow (CPU), the device-side resize (handlers/device_imaging.py) and nvjpeg where CUDA and
torchvision are present; see torchserve_perf/tools/decode_ceiling.py.

    python scripts/bench_decode.py [--threads 1 2] [--batch 8] [--seconds 3]     # or: make bench-decode
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

import torch

from torchserve_perf.tools import decode_ceiling


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="decode pool sizes")
    parser.add_argument("--batch", type=int, default=8, help="requests per batch")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="short runs: checks that it works")
    args = parser.parse_args(argv)
    print(f"{'path':8} {'threads':>7} {'img/s':>9} {'cores busy':>10}")
    report = decode_ceiling.measure(
        args.threads, args.batch, 0.3 if args.quick else args.seconds, torch.device(args.device),
        progress=lambda p: print(f"{p.path:8} {p.threads:>7} {p.images_per_s:>9.0f} {p.cores_busy:>10.2f}",
                                 flush=True))
    print(f"# {report['payload_bytes'] / 1e3:.0f} kB JPEG, batch {report['batch']}, device {report['device']}, "
          f"{report['cpus']} CPUs; nvjpeg: {report['nvjpeg']}")
    first = {p["path"]: p["images_per_s"] for p in report["points"] if p["threads"] == args.threads[0]}
    for point in report["points"]:
        if point["threads"] != args.threads[0] and first.get(point["path"]):
            print(f"# {point['path']}: {point['threads']} threads {point['images_per_s'] / first[point['path']]:.2f}x "
                  f"of {args.threads[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
