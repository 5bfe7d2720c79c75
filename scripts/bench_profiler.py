#!/usr/bin/env python3
"""What profiling costs: ResNet-18 through a real TorchServe, four cases in one run.

  off      our image handler, profiler off
  idle     our handler, ENABLE_TORCH_PROFILER on but outside its active window
  active   our handler, inside an active window the whole time (a trace saved every 10 batches)
  stock    TorchServe's BaseHandler with ENABLE_TORCH_PROFILER set (profiles and saves every batch)

Our three cases share one server (one worker each, measured one after the other, interleaved over
rounds); stock needs the variable in the server's environment, so it runs on a second server.

    .venv/bin/python scripts/bench_profiler.py [--quick] [--seconds 10] [--rounds 5] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from torchserve_perf.tools import paths, serving
from torchserve_perf.tools.loadgen import LoadResult, closed_loop, merge, sample_image
from torchserve_perf.tools.model_store import build_archive, build_stock_archive, default_specs

SERVING = {"minWorkers": 1, "maxWorkers": 1, "batchSize": 4, "maxBatchDelay": 10, "responseTimeout": 120}
STOCK_NAME = "resnet18_stock_profiled"
STOCK_DIR = Path("/tmp/pytorch_profiler") / STOCK_NAME  # noqa: S108 -- where stock TorchServe writes, fixed


def our_cases(trace_dir: Path) -> dict[str, dict]:
    never = {"enabled": True, "schedule": {"skip_first": 10**12}}
    always = {"enabled": True, "schedule": {"skip_first": 0, "warmup": 0, "active": 10, "repeat": 0},
              "max_traces": 3, "output_dir": str(trace_dir)}
    return {"off": {"enabled": False}, "idle": never, "active": always}


def build_store(store: Path, trace_dir: Path) -> None:
    spec = default_specs()[0]
    for case, profiler in our_cases(trace_dir).items():
        config = {**SERVING, "handler": {"image": {"topk": 5}, "profiler": profiler}}
        build_archive(spec, store, name=f"resnet18_{case}", model_config=config)
    build_stock_archive(store, name=STOCK_NAME, model_config=dict(SERVING))


def measure(server: serving.TorchServe, model: str, body: bytes, args: argparse.Namespace) -> LoadResult:
    return closed_loop(server.sender(model, body), args.concurrency, duration=args.seconds, warmup=args.warmup)


def pooled(rounds: list[LoadResult]) -> dict:
    """One case's rounds as one measurement (:func:`merge` adds up their seconds)."""
    case = merge(rounds)
    return {"requests": len(case.latencies), "errors": case.error_count, "seconds": round(case.seconds, 2),
            "throughput_rps": round(case.throughput, 2), "p50_ms": round(case.pct(50) * 1000, 2),
            "p99_ms": round(case.pct(99) * 1000, 2)}


def report(summary: dict[str, dict], args: argparse.Namespace) -> str:
    off = summary["off"]["p50_ms"]
    lines = [f"ResNet-18 through TorchServe, batch <= 4, 1 worker, {args.concurrency} clients, "
             f"{args.rounds} x {args.seconds:g} s per case", "",
             "| case | req/s | p50 ms | p99 ms | p50 vs off | errors |", "|---|---:|---:|---:|---:|---:|"]
    for case, s in summary.items():
        delta = f"{100 * (s['p50_ms'] - off) / off:+.1f}%" if off else "-"
        lines.append(f"| {case} | {s['throughput_rps']:.1f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {delta} | "
                     f"{s['errors']} |")
    idle = 100 * (summary["idle"]["p50_ms"] - off) / off if off else float("nan")
    lines += ["", f"on-but-idle p50 cost: {idle:+.2f}%"]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short round per case, to check it runs")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (noise spreads over all cases)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=8, help="requests per case before measuring")
    parser.add_argument("--out", type=Path, default=paths.results_dir("bench_profiler"))
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.rounds, args.concurrency, args.warmup = 3.0, 1, 2, 4

    stock_dir_existed, stock_root_existed = STOCK_DIR.exists(), STOCK_DIR.parent.exists()
    body = sample_image()
    runs: dict[str, list[LoadResult]] = {"off": [], "idle": [], "active": [], "stock": []}
    with tempfile.TemporaryDirectory(prefix="bench-profiler-") as tmp:
        work = Path(tmp)
        print("building archives ...", flush=True)
        build_store(work / "store", work / "traces")
        ours = [f"resnet18_{case}" for case in ("off", "idle", "active")]
        print("our handler: off / idle / active", flush=True)
        server = serving.start(work / "store", work / "ours", models=[f"{m}.mar" for m in ours], ready_models=ours,
                               env={"ENABLE_TORCH_PROFILER": "", "TS_PERF_PROFILER_DIR": ""})
        try:
            for round_ in range(args.rounds):
                for case in ("off", "idle", "active"):
                    result = measure(server, f"resnet18_{case}", body, args)
                    runs[case].append(result)
                    print(f"  round {round_ + 1} {case:<6} {result.line()}", flush=True)
        finally:
            server.stop()
        print("stock BaseHandler with ENABLE_TORCH_PROFILER=1", flush=True)
        server = serving.start(work / "store", work / "stock", models=[f"{STOCK_NAME}.mar"], ready_models=[STOCK_NAME],
                               env={"ENABLE_TORCH_PROFILER": "1"})
        try:
            for round_ in range(args.rounds):
                result = measure(server, STOCK_NAME, body, args)
                runs["stock"].append(result)
                print(f"  round {round_ + 1} stock  {result.line()}", flush=True)
        finally:
            server.stop()
            if not stock_dir_existed:  # stock writes one trace per batch there; leave /tmp as we found it
                shutil.rmtree(STOCK_DIR, ignore_errors=True)
            if not stock_root_existed:
                with contextlib.suppress(OSError):
                    STOCK_DIR.parent.rmdir()  # only if empty

    summary = {case: pooled(results) for case, results in runs.items()}
    text = report(summary, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.md").write_text(text)
    (args.out / "summary.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                       "cases": summary}, indent=2))
    print("\n" + text + f"\nwrote {args.out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
