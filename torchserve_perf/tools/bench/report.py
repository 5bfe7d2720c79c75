"""A benchmark's report: its runs and ceilings as one JSON-able dict, and what they say about the client."""

from __future__ import annotations

import datetime as _dt
import os
import platform
from typing import Optional, Sequence

from torchserve_perf.tools import machine
from torchserve_perf.tools.bench.config import BenchConfig
from torchserve_perf.tools.loadgen import NOT_SENT, LoadResult, Payload, cdf_points

# The client is called the bottleneck when a run reaches this share of its measured ceiling,
# or when it uses this share of the machine's CPU (CPU it takes away from the server).
CEILING_WARN_SHARE = 0.5
CLIENT_CPU_WARN_SHARE = 0.10


def ceiling_notes(runs: Sequence[LoadResult], ceilings: dict[int, LoadResult], cores: int) -> list[str]:
    """Say where the client, not the server, may be what limits a run."""
    notes = []
    for run in runs:
        key = run.concurrency if run.mode == "closed" else max(ceilings, default=0)
        ceiling = ceilings.get(key)
        if ceiling is not None and ceiling.throughput > 0:
            share = run.throughput / ceiling.throughput
            if share >= CEILING_WARN_SHARE:
                notes.append(f"{run.label()}: {run.throughput:.0f} req/s is {share:.0%} of this client's own ceiling "
                             f"({ceiling.throughput:.0f} req/s at {ceiling.label()}); the client may be the bottleneck")
        if run.seconds > 0 and run.client_cpu_s / (run.seconds * cores) >= CLIENT_CPU_WARN_SHARE:
            notes.append(f"{run.label()}: the client used {run.client_cpu_s / run.seconds:.2f} of {cores} cores; "
                         "it competes with the server for CPU")
        if run.mode == "open":
            lag = run.summary().get("start_lag_p99_ms")
            if run.errors.get(NOT_SENT):
                notes.append(f"{run.label()}: {run.errors[NOT_SENT]} requests could not start in time: "
                             "the server fell behind the offered rate (raise --max-in-flight to keep offering it)")
            elif run.throughput < 0.9 * (run.offered_rate or 0):
                notes.append(f"{run.label()}: the server answered {run.throughput:.1f} req/s of the "
                             f"{run.offered_rate:g} offered: past its capacity, latencies grow with the run's length")
            elif lag is not None and lag > 50:
                notes.append(f"{run.label()}: p99 start lag {lag:.0f} ms: requests waited for a free client "
                             "(server saturated or --max-in-flight too low); that wait is in the latencies")
    return notes


def build_report(config: BenchConfig, target: dict, payloads: Sequence[Payload], runs: Sequence[LoadResult],
                 ceilings: dict[int, LoadResult], cores: Optional[int] = None) -> dict:
    cores = cores or os.cpu_count() or 1
    return {
        "tool": "torchserve-perf bench",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cores": cores, "cpu": machine.cpu_name(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "target": target,
        "config": {"model": config.model, "concurrencies": list(config.concurrencies), "rates": list(config.rates),
                   "duration_s": config.duration, "warmup_s": config.warmup, "seed": config.seed,
                   "max_in_flight": config.max_in_flight},
        "payloads": [{"name": p.name, "content_type": p.content_type, "bytes": len(p.body)} for p in payloads],
        "client_ceiling": {str(c): {**r.summary(), "label": r.label()} for c, r in sorted(ceilings.items())},
        "runs": [{**run.summary(), "label": run.label(),
                  "cdf_ms": [[round(v * 1000, 3), round(f, 5)] for v, f in cdf_points(sorted(run.latencies))]}
                 for run in runs],
        "notes": ceiling_notes(runs, ceilings, cores),
    }
