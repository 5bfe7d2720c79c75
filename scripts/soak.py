#!/usr/bin/env python3
"""`make soak`: ResNet-18 on a real TorchServe at 8 clients for 10 minutes, sampled profiling and metrics on.

Reports and checks: errors (must be 0), each worker's RSS growth after the warm-up (under 5%;
the median of the samples after the warm-up's first minute against the median of the last
minute), the same workers from start to end (none restarted), and the traces' disk use against
the profiler's bound (``max_mb`` per worker) with private permissions (files 0600, directory
0700). ``--duration 60`` is the short version the test suite runs (tests/e2e/test_reliability_soak.py).
Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import stat
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import psutil

from torchserve_perf.tools import serving
from torchserve_perf.tools.loadgen import closed_loop, sample_image
from torchserve_perf.tools.model_store import build_archive, default_specs, write_server_config

MIB = 1024 * 1024


@dataclass
class SoakReport:
    seconds: float
    clients: int
    requests: int = 0
    errors: dict = field(default_factory=dict)
    throughput_rps: float = 0.0
    p99_ms: Optional[float] = None
    rss_mib: dict = field(default_factory=dict)  # worker pid -> {"after_warmup": MiB, "end": MiB, "growth_pct": %}
    rss_timeline: dict = field(default_factory=dict)  # worker pid -> [[seconds, MiB], ...]
    workers_restarted: bool = False
    windows: int = 0  # profiling windows written (older traces are removed by retention)
    traces: int = 0
    trace_mb: float = 0.0
    trace_bound_mb: float = 0.0
    trace_permissions_ok: bool = True
    metrics_seen: bool = False
    failures: list = field(default_factory=list)

    def check(self, max_growth_pct: float) -> None:
        if sum(self.errors.values()):
            self.failures.append(f"{sum(self.errors.values())} errors ({self.errors})")
        for pid, rss in self.rss_mib.items():
            if rss["growth_pct"] >= max_growth_pct:
                self.failures.append(f"worker {pid} RSS grew {rss['growth_pct']:.1f}% after warm-up")
        if self.workers_restarted:
            self.failures.append("a worker was replaced during the run")
        if self.trace_mb > self.trace_bound_mb:
            self.failures.append(f"traces use {self.trace_mb:.1f} MB, over the bound of {self.trace_bound_mb:.1f} MB")
        if not self.traces:
            self.failures.append("no trace was written (sampled profiling did not run)")
        if not self.trace_permissions_ok:
            self.failures.append("a trace file or directory is readable by others")
        if not self.metrics_seen:
            self.failures.append("no ts_perf_ metric in the Prometheus scrape")

    def lines(self) -> list[str]:
        out = [f"soak: {self.requests} requests in {self.seconds:.0f} s at {self.clients} clients, "
               f"{self.throughput_rps:.1f} req/s, p99 {self.p99_ms} ms, errors {sum(self.errors.values())}"]
        for pid, rss in sorted(self.rss_mib.items()):
            out.append(f"  worker {pid}: RSS {rss['after_warmup']:.0f} MiB after warm-up -> {rss['end']:.0f} MiB "
                       f"at the end ({rss['growth_pct']:+.2f}%)")
        out.append(f"  traces: {self.windows} windows written, {self.traces} files kept, {self.trace_mb:.2f} MB "
                   f"(bound {self.trace_bound_mb:.0f} MB), "
                   f"permissions {'0600/0700' if self.trace_permissions_ok else 'TOO OPEN'}")
        out.append(f"  workers restarted: {self.workers_restarted}; ts_perf_ metrics scraped: {self.metrics_seen}")
        out.append("  PASS" if not self.failures else "  FAIL: " + "; ".join(self.failures))
        return out


def worker_processes(server: serving.TorchServe) -> dict[int, psutil.Process]:
    found = {}
    for proc in server.processes():
        try:
            if ".ts.sock." in " ".join(proc.cmdline()):
                found[proc.pid] = proc
        except psutil.NoSuchProcess:
            continue
    return found


def sample_rss(workers: dict[int, psutil.Process], samples: dict[int, list[tuple[float, int]]],
               stop: threading.Event, began: float, every: float) -> None:
    while not stop.wait(every):
        for pid, proc in workers.items():
            try:
                samples.setdefault(pid, []).append((time.perf_counter() - began, proc.memory_info().rss))
            except psutil.NoSuchProcess:
                continue


def rss_growth(samples: list[tuple[float, int]], warmup: float, window: float) -> dict:
    """Median RSS in the window after the warm-up against the median of the last window."""
    after = [rss for t, rss in samples if warmup <= t < warmup + window] or [samples[0][1]]
    last_start = samples[-1][0] - window
    end = [rss for t, rss in samples if t >= last_start] or [samples[-1][1]]
    first, last = statistics.median(after), statistics.median(end)
    return {"after_warmup": first / MIB, "end": last / MIB, "growth_pct": 100.0 * (last - first) / first}


def trace_usage(directory: Path) -> tuple[int, float, bool]:
    files = [p for p in directory.rglob("*") if p.is_file()] if directory.is_dir() else []
    private = (not directory.is_dir() or stat.S_IMODE(directory.stat().st_mode) & 0o077 == 0) and all(
        stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in files)
    return len(files), sum(p.stat().st_size for p in files) / 1e6, private


def soak(work: Path, duration: float, clients: int, warmup: float, every_n: int, max_mb: float,
         max_growth_pct: float, progress: bool = True) -> SoakReport:
    spec = default_specs()[0]
    traces = work / "traces"
    workers = spec.model_config.get("minWorkers", 2)
    config = {**spec.model_config, "handler": {
        **spec.model_config.get("handler", {}),
        "profiler": {"enabled": True, "every_n": every_n, "output_dir": str(traces), "max_traces": 5, "max_mb": max_mb,
                     "schedule": {"skip_first": 5, "warmup": 1, "active": 2, "repeat": 0}},
        "metrics": {"enabled": True, "sample_interval_s": 5.0}}}
    store = work / "store"
    build_archive(spec, store, model_config=config)
    write_server_config(store)
    report = SoakReport(seconds=duration, clients=clients)
    with serving.start(store, work / "server", models=[f"{spec.name}={spec.name}.mar"], ready_models=[spec.name]) as server:
        before = worker_processes(server)
        send = server.sender(spec.name, sample_image(), "image/jpeg")
        samples: dict[int, list[tuple[float, int]]] = {}
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(before, samples, stop, time.perf_counter(), 2.0), daemon=True)
        sampler.start()
        result = closed_loop(send, clients, duration, progress=print if progress else None, progress_every=30.0)
        stop.set()
        sampler.join()
        send.close()
        report.requests, report.errors = result.requests, {str(k): v for k, v in result.errors.items()}
        report.throughput_rps = round(result.throughput, 2)
        report.p99_ms = result.summary()["p99_ms"]
        window = min(60.0, max(10.0, (duration - warmup) / 4))
        report.rss_mib = {pid: rss_growth(s, warmup, window) for pid, s in samples.items() if s}
        report.rss_timeline = {pid: [[round(t, 1), round(rss / MIB, 1)] for t, rss in s] for pid, s in samples.items()}
        report.workers_restarted = set(worker_processes(server)) != set(before)
        report.metrics_seen = "ts_perf_" in server.scrape()
        report.windows = server.read_log().count("wrote profiler trace")
    report.traces, report.trace_mb, report.trace_permissions_ok = trace_usage(traces)
    report.trace_bound_mb = max_mb * workers
    report.check(max_growth_pct)
    return report


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--warmup", type=float, help="seconds before the RSS baseline (default: a fifth, at most 120)")
    parser.add_argument("--every-n", type=int, default=100, help="a profiling window every N batches per worker")
    parser.add_argument("--max-mb", type=float, default=20.0, help="the profiler's trace budget per worker")
    parser.add_argument("--max-growth-pct", type=float, default=5.0)
    parser.add_argument("--workdir", type=Path, help="keep the store, server logs and traces here")
    parser.add_argument("--json", type=Path, help="write the report here")
    args = parser.parse_args(argv)
    warmup = args.warmup if args.warmup is not None else min(120.0, args.duration / 5)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        report = soak(work, args.duration, args.clients, warmup, args.every_n, args.max_mb, args.max_growth_pct)
    print("\n".join(report.lines()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(report), indent=2))
    return 0 if not report.failures else 1


if __name__ == "__main__":
    sys.exit(main())
