"""Ratios between the systems and notes on the client; pure functions of the measured results."""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

from torchserve_perf.tools.compare.results import SystemResult
from torchserve_perf.tools.loadgen import LoadResult

STOCKS = ("stock_default", "stock_guided")


def number(value: Any, digits: int = 1, suffix: str = "") -> str:
    """``value`` with ``digits`` decimals, or n/a when it is missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}{suffix}"


def metric(results: Mapping[str, SystemResult], key: str, c: int, name: str) -> Optional[float]:
    """System ``key``'s ``name`` (throughput_rps, p99_ms, ...) at ``c`` clients; None when not measured."""
    system = results.get(key)
    run = system.run(c) if system else None
    value = run.get(name) if run else None
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 2) if a is not None and b else None


def ratios(results: dict[str, SystemResult], raw: Optional[dict], concurrencies: Sequence[int]) -> dict:
    """ours_tuned's throughput and p99 as ratios of every other system, per concurrency."""
    out: dict[str, dict] = {}
    for other in ("stock_default", "stock_guided", "ours_default", "litserve"):
        out[other] = {str(c): {"throughput": ratio(metric(results, "ours_tuned", c, "throughput_rps"),
                                                   metric(results, other, c, "throughput_rps")),
                               "p99": ratio(metric(results, "ours_tuned", c, "p99_ms"),
                                            metric(results, other, c, "p99_ms"))}
                      for c in concurrencies}
    if raw:
        limit = raw["limit"]["images_per_s"]
        out["raw_optimized"] = {str(c): {"throughput": ratio(metric(results, "ours_tuned", c, "throughput_rps"), limit)}
                                for c in concurrencies}
        out["raw_eager"] = {str(c): {"throughput": ratio(metric(results, "ours_tuned", c, "throughput_rps"),
                                                         raw["best_eager"]["images_per_s"])} for c in concurrencies}
    return out


def defaults_ratios(results: dict[str, SystemResult], concurrencies: Sequence[int]) -> dict:
    """ours_default's throughput and p99 as ratios of each stock setting, per concurrency."""
    return {other: {str(c): {"throughput": ratio(metric(results, "ours_default", c, "throughput_rps"),
                                                 metric(results, other, c, "throughput_rps")),
                             "p99": ratio(metric(results, "ours_default", c, "p99_ms"),
                                          metric(results, other, c, "p99_ms"))}
                    for c in concurrencies} for other in STOCKS}


def client_notes(results: dict[str, SystemResult], ceilings: dict[int, LoadResult]) -> list[str]:
    """A note for every point that came within half of the client's own ceiling (the client may have capped it)."""
    notes = []
    for system in results.values():
        for c, run in system.runs.items():
            ceiling = ceilings.get(c)
            if ceiling and ceiling.throughput and run["throughput_rps"] >= 0.5 * ceiling.throughput:
                notes.append(f"{system.key} c={c}: {run['throughput_rps']} req/s is "
                             f"{run['throughput_rps'] / ceiling.throughput:.0%} of the client's ceiling")
    return notes
