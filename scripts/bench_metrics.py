#!/usr/bin/env python3
"""What per-worker metrics cost: metrics on against metrics off, one real TorchServe, one run.

Two archives of the same model differ only in ``handler.metrics.enabled``; one server serves both
(one worker each, Prometheus mode, the shipped metrics.yaml), and the two are measured one after
the other, in alternating order over rounds, so drift hits both. A second, in-process figure
times the metrics calls of one batch against TorchServe's real metrics cache, which is the
direct cost without the noise of a loaded machine.

    .venv/bin/python scripts/bench_metrics.py [--quick] [--model resnet18|text_classifier]
        [--rounds 6] [--seconds 10] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from torchserve_perf.plugins.metrics import METRICS_YAML, MetricsConfig, WorkerMetrics
from torchserve_perf.plugins.worker import WorkerIdentity
from torchserve_perf.tools import paths, serving
from torchserve_perf.tools.loadgen import SAMPLE_TEXT, LoadResult, closed_loop, merge, sample_image
from torchserve_perf.tools.model_store import build_archive, default_specs

ARMS = ("off", "on")
BODIES = {"resnet18": sample_image, "text_classifier": lambda: SAMPLE_TEXT}


def build_store(store: Path, model: str) -> dict[str, str]:
    spec = next(s for s in default_specs() if s.name == model)
    names = {}
    for arm in ARMS:
        config = dict(spec.model_config)
        config.update(minWorkers=1, maxWorkers=1)
        config["handler"] = {**config.get("handler", {}), "metrics": {"enabled": arm == "on"}}
        names[arm] = f"{model}_metrics_{arm}"
        build_archive(spec, store, name=names[arm], model_config=config)
    shutil.copy2(METRICS_YAML, store / "metrics.yaml")
    return names


def pooled(rounds: list[LoadResult]) -> dict:
    """One arm's rounds as one measurement (:func:`merge` adds up their seconds)."""
    arm = merge(rounds)
    return {"requests": len(arm.latencies), "errors": arm.error_count, "seconds": round(arm.seconds, 2),
            "throughput_rps": round(arm.throughput, 2), "p50_ms": round(arm.pct(50) * 1000, 3),
            "p90_ms": round(arm.pct(90) * 1000, 3), "p99_ms": round(arm.pct(99) * 1000, 3)}


def direct_cost_us(batches: int = 3000) -> dict[str, float]:
    """Microseconds per batch of the calls the base handler makes, against TorchServe's real cache."""
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    # A worker prints its metrics lines to stdout; a line-buffered sink that flushes like it.
    sink = open(os.devnull, "w")
    handler = logging.StreamHandler(sink)
    logger = logging.getLogger("ts.metrics.caching_metric")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        cache = MetricsCacheYamlImpl(str(METRICS_YAML))
        cache.initialize_cache()
        worker = WorkerIdentity("bench", "1.0", 9000, None, 1, os.getpid())
        cost = {}
        for arm in ARMS:
            metrics = WorkerMetrics(MetricsConfig(enabled=arm == "on", sample_interval_s=0), worker, cache)
            runs = []
            for _ in range(5):
                started = time.perf_counter()
                for _ in range(batches):
                    metrics.phase("preprocess", 0.0012)
                    metrics.phase("inference", 0.0213)
                    metrics.phase("postprocess", 0.0004)
                    metrics.profiled(False)
                    metrics.batch(4, 0.0231)
                    metrics.rejected(0)
                runs.append((time.perf_counter() - started) / batches * 1e6)
            cost[arm] = round(min(runs), 2)  # the least disturbed run
        return cost
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        sink.close()


def check_arms(server: serving.TorchServe, names: dict[str, str]) -> dict[str, int]:
    """Series per arm on the endpoint: the on arm must report, the off arm must not."""
    text = server.scrape()
    return {arm: sum(1 for line in text.splitlines()
                     if line.startswith("ts_perf_") and f'ModelName="{name}"' in line) for arm, name in names.items()}


def report(summary: dict, args: argparse.Namespace) -> str:
    off = summary["arms"]["off"]
    direct = summary["direct_cost_us_per_batch"]
    lines = [f"{args.model} through TorchServe, 1 worker per arm, {args.concurrency} client(s), "
             f"{args.rounds} x {args.seconds:g} s per arm, alternating", "",
             "| metrics | req/s | p50 ms | p90 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|---:|"]
    for arm in ARMS:
        s = summary["arms"][arm]
        lines.append(f"| {arm} | {s['throughput_rps']:.1f} | {s['p50_ms']:.2f} | {s['p90_ms']:.2f} | "
                     f"{s['p99_ms']:.2f} | {s['errors']} |")
    lines += ["",
              f"p50 on vs off, pooled:            {summary['p50_overhead_pct']:+.2f}%",
              f"p50 on vs off, median per round:  {summary['p50_overhead_pct_paired']:+.2f}%",
              f"direct cost per batch (in process): {direct['on']:.1f} us on, {direct['off']:.1f} us off "
              f"= {summary['direct_cost_pct_of_p50']:.3f}% of p50 {off['p50_ms']:.2f} ms",
              f"series on the endpoint: on arm {summary['series']['on']}, off arm {summary['series']['off']}",
              "(end to end, pooled; the direct cost is the noise-free bound)"]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(BODIES), default="resnet18")
    parser.add_argument("--quick", action="store_true", help="2 rounds x 3 s: checks the script end to end")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--out", type=Path, default=paths.results_dir("bench_metrics"))
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.warmup = 2, 3.0, 5

    args.out.mkdir(parents=True, exist_ok=True)
    direct = direct_cost_us()
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        store = Path(tmp) / "store"
        print(f"building two {args.model} archives (metrics on / off) ...", flush=True)
        names = build_store(store, args.model)
        server = serving.start(store, Path(tmp) / "server", models=[f"{n}={n}.mar" for n in names.values()],
                               ready_models=list(names.values()))
        try:
            body = BODIES[args.model]()
            sends = {arm: server.sender(names[arm], body) for arm in ARMS}
            for arm in ARMS:
                for _ in range(args.warmup):
                    sends[arm]()
            results: dict[str, list[LoadResult]] = {arm: [] for arm in ARMS}
            paired = []
            for round_index in range(args.rounds):
                order = ARMS if round_index % 2 == 0 else ARMS[::-1]
                for arm in order:
                    results[arm].append(closed_loop(sends[arm], args.concurrency, duration=args.seconds))
                p50 = {arm: results[arm][-1].pct(50) for arm in ARMS}
                paired.append(100 * (p50["on"] - p50["off"]) / p50["off"])
                print(f"round {round_index + 1}/{args.rounds}: p50 off {p50['off'] * 1000:.2f} ms, "
                      f"on {p50['on'] * 1000:.2f} ms ({paired[-1]:+.2f}%)", flush=True)
            time.sleep(1)
            series = check_arms(server, names)
        finally:
            server.stop()

    arms = {arm: pooled(results[arm]) for arm in ARMS}
    off_p50 = arms["off"]["p50_ms"]
    overhead = 100 * (arms["on"]["p50_ms"] - off_p50) / off_p50
    summary = {
        "model": args.model, "rounds": args.rounds, "seconds": args.seconds, "concurrency": args.concurrency,
        "quick": args.quick, "arms": arms, "p50_overhead_pct": round(overhead, 3),
        "p50_overhead_pct_paired": round(statistics.median(paired), 3),
        "direct_cost_us_per_batch": direct,
        "direct_cost_pct_of_p50": round(100 * (direct["on"] - direct["off"]) / 1000 / off_p50, 4),
        "series": series,
    }
    text = report(summary, args)
    print("\n" + text)
    (args.out / f"{args.model}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / f"{args.model}.md").write_text(text)
    print(f"wrote {args.out / f'{args.model}.json'}")
    if series["on"] == 0 or series["off"] != 0:
        print("the arms did not behave as configured (see series above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
