"""What one benchmark runs: :class:`BenchConfig`, and the loads it makes of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torchserve_perf.tools.loadgen import Load, Processes


@dataclass(frozen=True)
class BenchConfig:
    model: str
    concurrencies: tuple[int, ...]
    rates: tuple[float, ...]
    duration: float
    warmup: float
    seed: int
    max_in_flight: int
    ceiling: bool
    # Clients (closed loop) or client threads (open loop) spread over this many processes, or "auto".
    client_processes: Processes = 1
    gpu_limits: bool = False  # measure the GPU's in-process limits and decode ceilings first (tools/gpu_report.py)

    def __post_init__(self) -> None:
        if not self.concurrencies and not self.rates:
            raise ValueError("give at least one --concurrency or --rate")
        if any(c < 1 for c in self.concurrencies):
            raise ValueError(f"concurrencies must be >= 1, got {list(self.concurrencies)}")
        if any(r <= 0 for r in self.rates):
            raise ValueError(f"rates must be > 0, got {list(self.rates)}")
        if self.duration <= 0 or self.warmup < 0:
            raise ValueError("--duration must be > 0 and --warmup >= 0")

    def loads(self) -> list[Load]:
        """The timed runs, in order: the closed loop at each concurrency, then the open loop at each rate."""
        return ([Load(c, self.duration) for c in self.concurrencies]
                + [Load(self.max_in_flight, self.duration, rate=r, seed=self.seed) for r in self.rates])

    def warmup_load(self) -> Optional[Load]:
        """Unrecorded load before the runs: the largest closed loop (two clients for an open-loop-only bench)."""
        if self.warmup <= 0:
            return None
        return Load(max(self.concurrencies or (2,)), self.warmup)

    def ceiling_levels(self) -> list[int]:
        """Client counts whose ceiling the report compares runs with: each concurrency, and the open loop's threads."""
        return sorted(set(self.concurrencies) | ({self.max_in_flight} if self.rates else set()))
