"""The load generator's own ceiling: the same client and payloads against a trivial loopback endpoint.

On a small machine the endpoint competes with the client for cores, so this is a lower bound of
what the client can do; the client's CPU time per request is the other half of the story (it is
CPU taken from the server under test).

    python -m torchserve_perf.tools.loadgen --processes 1 2 --concurrency 16 64
"""

from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from torchserve_perf.tools.loadgen.payloads import Payload, sample_image
from torchserve_perf.tools.loadgen.runner import Load, Processes, Target, resolve, run_load
from torchserve_perf.tools.loadgen.stats import LoadResult
from torchserve_perf.tools.loadgen.trivial import TrivialServer

WARMUP_REQUESTS = 20  # per process: its connections and caches


def ceiling(payloads: Sequence[Payload], concurrency: int, processes: int, duration: float = 3.0,
            server_processes: int = 1) -> LoadResult:
    """The client's throughput against the trivial endpoint with ``processes`` load processes."""
    with TrivialServer(server_processes) as server:
        return run_load(Target.of(server.url, payloads), Load(concurrency, duration, warmup=WARMUP_REQUESTS),
                        processes)


def client_ceiling(payloads: Sequence[Payload], concurrencies: Sequence[int], duration: float = 2.0, *,
                   processes: Processes = 1) -> dict[int, LoadResult]:
    """The client's ceiling at each concurrency, with as many load (and endpoint) processes as a run
    at that concurrency uses."""
    levels: dict[int, list[int]] = {}
    for concurrency in sorted(set(concurrencies)):
        levels.setdefault(resolve(processes, concurrency), []).append(concurrency)
    out = {}
    for count, concurrencies_here in levels.items():
        with TrivialServer(count) as server:  # one endpoint for every level of this many processes
            target = Target.of(server.url, payloads)
            for concurrency in concurrencies_here:
                out[concurrency] = run_load(target, Load(concurrency, duration, warmup=WARMUP_REQUESTS), count)
    return dict(sorted(out.items()))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchserve_perf.tools.loadgen",
                                     description="the load generator's own ceiling, by client processes")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--server-processes", type=int, default=0,
                        help="processes answering the trivial endpoint (0: as many as the client's)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--payload", choices=["image", "small"], default="image",
                        help="the 120 kB sample JPEG, or a 10-byte body")
    args = parser.parse_args(argv)
    if args.payload == "image":
        payload = Payload(sample_image(), "image/jpeg", "sample.jpg")
    else:
        payload = Payload(b"0123456789", "application/octet-stream", "small")
    print(f"# load generator ceiling against a trivial loopback endpoint: {os.cpu_count()} CPUs, "
          f"{len(payload.body) / 1e3:.1f} kB body, {args.seconds:g} s per point")
    print(f"{'processes':>9} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'client CPU ms/req':>18}")
    for processes in args.processes:
        for concurrency in args.concurrency:
            result = ceiling([payload], concurrency, processes, args.seconds, args.server_processes or processes)
            s = result.summary()
            print(f"{processes:>9} {concurrency:>7} {s['throughput_rps']:>9.0f} {s['p50_ms']:>8.2f} "
                  f"{s['p99_ms']:>8.2f} {s['client_cpu_ms_per_request'] or 0:>18.3f}"
                  + (f"  errors {result.errors}" if result.errors else ""), flush=True)
    return 0
