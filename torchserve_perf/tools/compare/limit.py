"""The in-process limit: the model alone, no HTTP and no decoding, at its best threads x batch size.

It runs in a child process (its own torch threads and compile workers, nothing left behind in the
parent that then drives the servers)::

    python -m torchserve_perf.tools.compare.limit --out raw.json --payload payload.jpg [--quick] [--no-compile]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence


def measure_forward(model: Callable, batch: int, seconds: float) -> float:
    """Images per second of ``model`` on random ``batch``x3x224x224 input, after warm-up."""
    import torch

    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds or done == 0:
            model(x)
            done += batch
    return done / (time.perf_counter() - began)


def raw_limit(quick: bool, use_compile: bool, payload: bytes) -> dict[str, Any]:
    """Every thread count x batch size eager, then torch.compile around the best eager point; and what
    decoding ``payload`` costs per image, which the servers pay on top."""
    import torch

    from torchserve_perf.fixtures.litserve_app import preprocess
    from torchserve_perf.models.resnet18 import ResNet18
    from torchserve_perf.tools.model_store import seeded_state_dict

    cores = os.cpu_count() or 1
    seconds = 1.5 if quick else 4.0
    thread_options = sorted({1, cores}) if quick else list(range(1, cores + 1))
    batch_options = (1, 4, 8) if quick else (1, 2, 4, 8, 16)
    torch.set_num_interop_threads(1)
    model = ResNet18().eval()
    model.load_state_dict(seeded_state_dict(ResNet18))

    points: list[dict[str, Any]] = []
    for threads in thread_options:
        torch.set_num_threads(threads)
        for batch in batch_options:
            rate = measure_forward(model, batch, seconds)
            points.append({"variant": "eager", "threads": threads, "batch": batch, "images_per_s": round(rate, 2)})
            print(f"  raw eager   threads={threads} batch={batch:<2} {rate:7.1f} img/s", flush=True)
    best_eager = max(points, key=lambda p: p["images_per_s"])

    best_optimized = None
    if use_compile:
        torch.set_num_threads(best_eager["threads"])
        compiled = torch.compile(model)
        batches = [best_eager["batch"]] if quick else sorted({best_eager["batch"], max(1, best_eager["batch"] // 2),
                                                             best_eager["batch"] * 2})
        for batch in batches:
            began = time.perf_counter()
            measure_forward(compiled, batch, 0.0)  # compiles for this shape
            compile_s = time.perf_counter() - began
            rate = measure_forward(compiled, batch, seconds)
            point = {"variant": "compile", "threads": best_eager["threads"], "batch": batch,
                     "images_per_s": round(rate, 2), "compile_s": round(compile_s, 1)}
            points.append(point)
            print(f"  raw compile threads={point['threads']} batch={batch:<2} {rate:7.1f} img/s "
                  f"(compiled in {compile_s:.0f} s)", flush=True)
        best_optimized = max((p for p in points if p["variant"] == "compile"), key=lambda p: p["images_per_s"])
    # The limit the servers are held to: the fastest variant measured (compile can lose on some shapes).
    limit = max([best_eager] + ([best_optimized] if best_optimized else []), key=lambda p: p["images_per_s"])

    timings = []
    for _ in range(5 if quick else 20):
        began = time.perf_counter()
        preprocess(payload)
        timings.append(time.perf_counter() - began)
    return {"points": points, "best_eager": best_eager, "best_optimized": best_optimized, "limit": limit,
            "preprocess_ms_per_image": round(1000 * sorted(timings)[len(timings) // 2], 2)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchserve_perf.tools.compare.limit",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="write the JSON here")
    parser.add_argument("--payload", type=Path, required=True, help="the JPEG whose decoding cost is measured")
    parser.add_argument("--quick", action="store_true", help="fewer points, shorter each")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args(argv)
    data = raw_limit(args.quick, not args.no_compile, args.payload.read_bytes())
    args.out.write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
