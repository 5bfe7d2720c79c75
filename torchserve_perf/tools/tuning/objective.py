"""What one evaluation measured, and how evaluations rank against a p99 target.

The objective is the most throughput with p99 at or under the target. A point that breaks the
target ranks below every point that meets it, ordered by how close its p99 came, so a search
that starts infeasible still has a direction; a point that failed (did not load, or answered
errors) ranks last.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Optional


@dataclass(frozen=True)
class Measurement:
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0  # measured load window
    cost_s: float = 0.0  # wall time of the whole evaluation (register, warm up, measure)
    error: Optional[str] = None  # the candidate could not be evaluated (did not load, ...)
    notes: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.error is not None or self.errors > 0 or not math.isfinite(self.p99_ms)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known["notes"] = tuple(known.get("notes") or ())
        return cls(**known)

    @classmethod
    def failure(cls, error: str, cost_s: float = 0.0) -> Measurement:
        nan = float("nan")
        return cls(throughput_rps=0.0, p50_ms=nan, p90_ms=nan, p99_ms=nan, cost_s=cost_s, error=error)


@dataclass(frozen=True)
class Aggregate:
    """All measurements of one candidate: the mean is what ranks; the spread says how noisy it was."""

    measurements: tuple[Measurement, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> tuple[Measurement, ...]:
        return tuple(m for m in self.measurements if not m.failed)

    @property
    def failed(self) -> bool:
        # One bad run (errors, a crash) disqualifies: the winner must be reliable.
        return not self.measurements or any(m.failed for m in self.measurements)

    @property
    def error(self) -> Optional[str]:
        for m in self.measurements:
            if m.error:
                return m.error
            if m.errors:
                return f"{m.errors} of {m.requests} requests failed"
        return None

    def _mean(self, name: str) -> float:
        values = [getattr(m, name) for m in self.ok]
        return statistics.fmean(values) if values else float("nan")

    @property
    def throughput_rps(self) -> float:
        return self._mean("throughput_rps") if not self.failed else 0.0

    @property
    def p50_ms(self) -> float:
        return self._mean("p50_ms")

    @property
    def p99_ms(self) -> float:
        return self._mean("p99_ms")

    @property
    def spread(self) -> float:
        """(max - min) / mean of throughput over the repeats; 0 for a single measurement."""
        values = [m.throughput_rps for m in self.ok]
        if len(values) < 2 or not statistics.fmean(values):
            return 0.0
        return (max(values) - min(values)) / statistics.fmean(values)


@dataclass(frozen=True)
class Objective:
    p99_target_ms: float

    def feasible(self, a: Aggregate) -> bool:
        return not a.failed and a.p99_ms <= self.p99_target_ms

    def score(self, a: Aggregate) -> tuple[int, float, float]:
        """Larger is better: (2, throughput, -p99) meets the target, (1, -p99/target, throughput) misses it,
        (0, 0, 0) failed."""
        if a.failed:
            return (0, 0.0, 0.0)
        if a.p99_ms <= self.p99_target_ms:
            return (2, a.throughput_rps, -a.p99_ms)
        return (1, -a.p99_ms / self.p99_target_ms, a.throughput_rps)

    def better(self, a: Aggregate, b: Optional[Aggregate], min_gain: float = 0.0) -> bool:
        """``a`` beats ``b`` clearly: by more than ``min_gain`` (a fraction) when both meet the target."""
        if b is None:
            return True
        sa, sb = self.score(a), self.score(b)
        if sa[0] != sb[0]:
            return sa[0] > sb[0]
        if sa[0] == 2:
            return sa[1] > sb[1] * (1 + min_gain) if min_gain else sa[1:] > sb[1:]
        if sa[0] == 1:  # both miss: a lower p99 is progress
            return sa[1] > sb[1] + min_gain if min_gain else sa[1:] > sb[1:]
        return False


def rank(results: Mapping[Any, Aggregate], objective: Objective) -> list[Any]:
    """Keys ordered best first (ties broken by key, so the order is deterministic)."""
    return sorted(results, key=lambda k: (tuple(-x for x in objective.score(results[k])), k))


def weakest(throughputs: Mapping[int, float], reference: Mapping[int, float]) -> tuple[float, int]:
    """Pure: the lowest ratio of ``throughputs`` to ``reference`` over the concurrencies both have, and
    where it is. Several concurrencies at once: a candidate is as good as its weakest one, relative to
    the run's start point (the shipped defaults), so 1 client counts as much as 8."""
    ratios = {c: throughputs[c] / reference[c] for c in throughputs if reference.get(c)}
    if not ratios:
        return 0.0, 0
    c = min(ratios, key=lambda k: (ratios[k], k))
    return ratios[c], c
