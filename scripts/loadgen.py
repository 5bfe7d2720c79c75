"""A small load generator: closed loop at a fixed concurrency, with latency percentiles."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

PERCENTILES = (50, 90, 95, 99, 99.9)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # successful requests, seconds
    errors: dict[int, int] = field(default_factory=dict)  # status code (0: exception) -> count

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return percentile(sorted(self.latencies), q)

    def summary(self) -> dict:
        ordered = sorted(self.latencies)
        return {
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
            "ok": len(self.latencies),
            "errors": dict(self.errors),
            "throughput_rps": round(self.throughput, 2),
            **{f"p{q:g}_ms": round(percentile(ordered, q) * 1000, 2) for q in PERCENTILES},
        }

    def line(self) -> str:
        s = self.summary()
        return (f"c={self.concurrency:<3} {s['throughput_rps']:8.1f} req/s  p50 {s['p50_ms']:8.1f} ms  "
                f"p90 {s['p90_ms']:8.1f} ms  p99 {s['p99_ms']:8.1f} ms  errors {sum(self.errors.values())}")


def closed_loop(send: Callable[[], int], concurrency: int, duration: float = 10.0,
                max_requests: Optional[int] = None, warmup: int = 0) -> LoadResult:
    """``concurrency`` clients each send, wait for the answer, and send again, for ``duration`` seconds.

    ``send`` performs one request and returns its HTTP status.
    """
    for _ in range(warmup):
        send()
    result = LoadResult(concurrency=concurrency, seconds=0.0)
    lock = threading.Lock()
    stop_at = time.perf_counter() + duration
    budget = [max_requests if max_requests is not None else -1]

    def client() -> None:
        while time.perf_counter() < stop_at:
            with lock:
                if budget[0] == 0:
                    return
                budget[0] -= 1
            started = time.perf_counter()
            try:
                status = send()
            except Exception:
                status = 0
            elapsed = time.perf_counter() - started
            with lock:
                if status == 200:
                    result.latencies.append(elapsed)
                else:
                    result.errors[status] = result.errors.get(status, 0) + 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - began
    return result
