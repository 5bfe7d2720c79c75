"""What a load run measured: percentiles, the latency CDF, :class:`LoadResult` and :func:`merge`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

PERCENTILES = (50, 90, 95, 99, 99.9)
NOT_SENT = -1  # error code: the schedule ran past its grace period before this request could start
EXCEPTION = 0  # error code: connection error or timeout


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (``nan`` when empty)."""
    if not sorted_values:
        return float("nan")
    # round first: 99.9 / 100 * 1000 is 999.0000000000001 in floating point, whose ceiling is 1000
    rank = max(1, math.ceil(round(q / 100 * len(sorted_values), 9)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def cdf_points(sorted_values: Sequence[float], points: int = 200) -> list[tuple[float, float]]:
    """At most ``points`` (value, cumulative fraction) pairs of the empirical CDF, ends included."""
    n = len(sorted_values)
    if n == 0:
        return []
    if n <= points:
        indices: Sequence[int] = range(n)
    else:
        indices = sorted({round(i * (n - 1) / (points - 1)) for i in range(points)})
    return [(sorted_values[i], (i + 1) / n) for i in indices]


def _ms(seconds: float) -> Optional[float]:
    return None if math.isnan(seconds) else round(seconds * 1000, 2)


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # successful requests, seconds
    errors: dict[int, int] = field(default_factory=dict)  # status code (0: exception, -1: not sent) -> count
    mode: str = "closed"
    offered_rate: Optional[float] = None  # open loop: requests per second asked for
    client_cpu_s: float = 0.0  # CPU time this process spent during the run (all its threads)
    start_lags: list[float] = field(default_factory=list)  # open loop: actual start - scheduled start
    gpu: list[dict] = field(default_factory=list)  # per GPU: utilisation and memory sampled during the run (NVML)
    # Wall-clock start of the timed run (time.time(), comparable across processes): tells merge
    # whether parts ran side by side or one after another.
    started: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def client_cpu_ms_per_request(self) -> float:
        return 1000 * self.client_cpu_s / self.requests if self.requests else float("nan")

    def pct(self, q: float) -> float:
        return percentile(sorted(self.latencies), q)

    def label(self) -> str:
        return f"open {self.offered_rate:g}/s" if self.mode == "open" else f"c={self.concurrency}"

    def summary(self) -> dict:
        ordered = sorted(self.latencies)
        out: dict[str, Any] = {
            "mode": self.mode,
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
            "ok": len(self.latencies),
            "errors": {str(k): v for k, v in sorted(self.errors.items())},
            "throughput_rps": round(self.throughput, 2),
            **{f"p{q:g}_ms": _ms(percentile(ordered, q)) for q in PERCENTILES},
            "mean_ms": _ms(sum(ordered) / len(ordered)) if ordered else None,
            "max_ms": _ms(ordered[-1]) if ordered else None,
            "client_cpu_ms_per_request": (round(self.client_cpu_ms_per_request, 3)
                                          if self.requests else None),
        }
        if self.gpu:
            out["gpu"] = self.gpu
        if self.mode == "open":
            lags = sorted(self.start_lags)
            out["offered_rate_rps"] = self.offered_rate
            out["start_lag_p99_ms"] = _ms(percentile(lags, 99))
        return out

    def line(self) -> str:
        s = self.summary()

        def fmt(v: Optional[float]) -> str:
            return f"{v:8.1f}" if v is not None else "     n/a"

        return (f"{self.label():<12} {s['throughput_rps']:8.1f} req/s  p50 {fmt(s['p50_ms'])} ms  "
                f"p90 {fmt(s['p90_ms'])} ms  p99 {fmt(s['p99_ms'])} ms  errors {self.error_count}")


def _peaks(parts: Sequence[LoadResult]) -> tuple[float, int, float]:
    """Time covered by the parts' windows, and the most clients and offered rate running at once."""
    events = sorted((edge, is_start, i) for i, p in enumerate(parts)
                    for edge, is_start in ((p.started, 1), (p.started + p.seconds, 0)))  # ends before starts
    covered, clients, rate, peak_clients, peak_rate = 0.0, 0, 0.0, 0, 0.0
    cluster_start, cluster_seconds, running = 0.0, 0.0, 0
    for _, is_start, i in events:
        part = parts[i]
        sign = 1 if is_start else -1
        clients += sign * part.concurrency
        rate += sign * (part.offered_rate or 0.0)
        peak_clients, peak_rate = max(peak_clients, clients), max(peak_rate, rate)
        if is_start:
            if running == 0:
                cluster_start, cluster_seconds = part.started, 0.0
            running += 1
            # measured from the cluster's start so that a lone part keeps its exact seconds
            cluster_seconds = max(cluster_seconds, part.started - cluster_start + part.seconds)
        else:
            running -= 1
            if running == 0:
                covered += cluster_seconds
    return covered, peak_clients, peak_rate


def merge(parts: Sequence[LoadResult]) -> LoadResult:
    """One result from parts of one load: every latency, error and CPU second of them together.

    Parts whose windows overlap ran side by side (client processes): their clients and offered
    rates add up and the load lasted as long as their union. Parts one after another are slices
    of one measurement taken in turns: their seconds add up and the clients stay those of one
    slice. Both follow from the parts' ``started`` and ``seconds``; parts that never set
    ``started`` count as started together.
    """
    if not parts:
        raise ValueError("nothing to merge")
    modes = {p.mode for p in parts}
    if len(modes) > 1:
        raise ValueError(f"cannot merge results of different loops: {sorted(modes)}")
    seconds, clients, rate = _peaks(parts)
    errors: dict[int, int] = {}
    for part in parts:
        for code, count in part.errors.items():
            errors[code] = errors.get(code, 0) + count
    mode = parts[0].mode
    return LoadResult(concurrency=clients, seconds=seconds, latencies=[x for p in parts for x in p.latencies],
                      errors=errors, mode=mode, offered_rate=rate if mode == "open" else None,
                      client_cpu_s=sum(p.client_cpu_s for p in parts),
                      start_lags=[x for p in parts for x in p.start_lags],
                      gpu=next((p.gpu for p in reversed(parts) if p.gpu), []),
                      started=min(p.started for p in parts))
