#!/usr/bin/env python3
"""Thread policy vs stock TorchServe on ResNet-18: one server, both archives, 4 and 8 clients.

In one run, on one real TorchServe (token auth, loopback):
  * ``resnet18``: our image handler with the default thread policy (2 workers -> physical cores / 2
    intra-op threads each, inter-op 1), batchSize 4, maxBatchDelay --delay-ms;
  * ``resnet18_stock``: the same model and model-config behind TorchServe's own BaseHandler
    (torchserve_perf/fixtures/), which sets no thread counts (each worker uses every core);
each driven by a closed loop of JPEG requests at every --clients level, one model at a time.
It prints req/s, p50/p99 and ours/stock ratios, and an in-process breakdown measured in the same
run (image preprocess per request, forward per image at batch 1/2/4 with the policy's threads) to
say where a request's time goes. Results go to results/bench_threads/summary.json.

    .venv/bin/python scripts/bench_threads.py --quick     # checks it works end to end (~2 minutes)
    .venv/bin/python scripts/bench_threads.py             # the numbers (about 6 minutes)
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

from torchserve_perf.models.resnet18 import ResNet18
from torchserve_perf.plugins.threads import allowed_cores, physical_cores
from torchserve_perf.tools import paths, serving
from torchserve_perf.tools.loadgen import closed_loop, sample_image
from torchserve_perf.tools.model_store import build_archive, build_stock_archive, default_specs, write_server_config

WORKERS = 2


def model_config(delay_ms: int, with_handler: bool) -> dict:
    config: dict[str, Any] = {"minWorkers": WORKERS, "maxWorkers": WORKERS, "batchSize": 4, "maxBatchDelay": delay_ms,
              "responseTimeout": 120}
    if with_handler:
        config["handler"] = {"image": {"topk": 5}}
    return config


def breakdown(threads: int, rounds: int) -> dict:
    """Where a request's time goes, in process: preprocess per image and forward per image by batch size."""
    from torchserve_perf.handlers.options import ImageOptions
    from torchserve_perf.tools.decode_ceiling import pillow_decoder

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        decode = pillow_decoder(ImageOptions())  # the image handler's own CPU decode
        body = sample_image()
        decode(body, 0)
        started = time.perf_counter()
        for _ in range(rounds * 4):
            decode(body, 0)
        out = {"preprocess_ms": 1000 * (time.perf_counter() - started) / (rounds * 4)}
        torch.manual_seed(0)
        model = ResNet18().eval()
        with torch.inference_mode():
            for batch in (1, 2, 4):
                x = torch.randn(batch, 3, 224, 224)
                model(x)
                started = time.perf_counter()
                for _ in range(rounds):
                    model(x)
                out[f"forward_ms_per_image_b{batch}"] = 1000 * (time.perf_counter() - started) / (rounds * batch)
        return {k: round(v, 2) for k, v in out.items()}
    finally:
        torch.set_num_threads(before)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per model and level")
    parser.add_argument("--delay-ms", type=int, default=10, help="maxBatchDelay for both archives")
    parser.add_argument("--quick", action="store_true", help="short runs, to check the script works")
    parser.add_argument("--out", type=Path, default=paths.results_dir("bench_threads"))
    args = parser.parse_args(argv)
    seconds = 6.0 if args.quick else args.seconds
    warmup = 4 if args.quick else 16

    shutil.rmtree(args.out, ignore_errors=True)
    store = args.out / "store"
    print("building archives ...", flush=True)
    build_archive(default_specs()[0], store, model_config=model_config(args.delay_ms, True))
    build_stock_archive(store, model_config=model_config(args.delay_ms, False))
    write_server_config(store)
    physical = physical_cores(allowed_cores())
    policy_threads = max(1, physical // WORKERS)

    models = {"ours": "resnet18", "stock": "resnet18_stock"}
    print("starting TorchServe with both archives ...", flush=True)
    server = serving.start(store, args.out / "server", models=[f"{m}={m}.mar" for m in models.values()],
                           ready_models=list(models.values()), env={"PYTHONPATH": ""})
    results: dict[str, dict[int, dict]] = {name: {} for name in models}
    try:
        body = sample_image()
        for clients in args.clients:
            for name, model in models.items():
                result = closed_loop(server.sender(model, body), clients, duration=seconds, warmup=warmup)
                results[name][clients] = result.summary()
                s = results[name][clients]
                print(f"  {name:<6} {clients} clients: {s['throughput_rps']:.1f} req/s  p50 {s['p50_ms']} ms  "
                      f"p99 {s['p99_ms']} ms  errors {result.error_count}", flush=True)
        decisions = [line.split("MODEL_LOG - ", 1)[-1] for line in server.read_log().splitlines()
                     if "thread policy:" in line]
    finally:
        server.stop()
    parts = breakdown(policy_threads, rounds=3 if args.quick else 10)

    print(f"\nResNet-18, {WORKERS} workers each, batchSize 4, maxBatchDelay {args.delay_ms} ms, "
          f"{physical} physical cores, {seconds:.0f} s per point")
    print(f"{'clients':>7} {'ours req/s':>11} {'stock req/s':>12} {'ratio':>6} {'ours p99':>9} {'stock p99':>10}")
    for clients in args.clients:
        o, s = results["ours"][clients], results["stock"][clients]
        ratio = o["throughput_rps"] / s["throughput_rps"] if s["throughput_rps"] else float("nan")
        print(f"{clients:>7} {o['throughput_rps']:>11.1f} {s['throughput_rps']:>12.1f} {ratio:>6.2f} "
              f"{o['p99_ms']:>9} {s['p99_ms']:>10}")
    print("\nour workers' decisions:\n  " + "\n  ".join(decisions))
    print(f"\nin process, {policy_threads} thread(s): " + ", ".join(f"{k} {v}" for k, v in parts.items()))
    summary = {"machine": platform.platform(), "physical_cores": physical, "workers": WORKERS,
               "delay_ms": args.delay_ms, "seconds": seconds, "results": results, "breakdown": parts,
               "decisions": decisions}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    shutil.rmtree(store, ignore_errors=True)
    print(f"\nwrote {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
