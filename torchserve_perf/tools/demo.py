#!/usr/bin/env python3
"""The demo: a real TorchServe with our handlers, a short real load, and what to look at next.

Starts TorchServe on free loopback ports (token auth on) with model_store/, profiles with
ENABLE_TORCH_PROFILER (sampled), sends a few seconds of load to both models at 4 concurrent
clients, prints throughput and p50/p90/p99, then stops the server.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Optional

from torchserve_perf.tools import paths, serving
from torchserve_perf.tools.loadgen import SAMPLE_TEXT, closed_loop, sample_image
from torchserve_perf.tools.argparsing import command_parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = command_parser("demo", description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("model_store"))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, default=paths.results_dir("demo"))
    args = parser.parse_args(argv)

    if not (args.store / "resnet18.mar").is_file():
        print(f"{args.store} has no archives: run `make model-store` first", file=sys.stderr)
        return 2
    shutil.rmtree(args.out, ignore_errors=True)
    traces = args.out / "traces"
    env = {"ENABLE_TORCH_PROFILER": "1", "TS_PERF_PROFILER_DIR": str(traces)}
    print("starting TorchServe (token auth on) with model_store/ ...", flush=True)
    server = serving.start(args.store, args.out / "server", env=env, ready_models=["resnet18", "text_classifier"])
    try:
        loads = {
            "resnet18": server.sender("resnet18", sample_image()),
            "text_classifier": server.sender("text_classifier", SAMPLE_TEXT),
        }
        print(f"\n{args.concurrency} concurrent clients, {args.seconds:.0f} s per model\n")
        print(f"{'model':<16} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for model, send in loads.items():
            result = closed_loop(send, args.concurrency, duration=args.seconds, warmup=4)
            s = result.summary()
            print(f"{model:<16} {s['throughput_rps']:>8.1f} {s['p50_ms']:>8.1f} {s['p90_ms']:>8.1f} "
                  f"{s['p99_ms']:>8.1f} {sum(result.errors.values()):>7}")
        scrape = server.scrape()
        ours = sorted({line.split("{")[0] for line in scrape.splitlines() if line.startswith("ts_perf_")})
        print(f"\nmetrics:  {server.metrics_url}/metrics  ({len(ours)} torchserve-perf series while it ran: "
              f"{', '.join(ours[:6]) or 'none'})")
    finally:
        server.stop()
    trace_files = sorted(traces.rglob("*.json*")) if traces.exists() else []
    print(f"traces:   {traces}  ({len(trace_files)} Kineto trace files)")
    print(f"open them: {Path(sys.executable).with_name('tensorboard')} --logdir {traces}")
    print(f"logs:     {args.out / 'server' / 'logs'}")
    print("server stopped; nothing left running.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
