"""What one ``compare --zoo`` run measures: the families, the load points, where it writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torchserve_perf.tools.compare.goals import Goal

ZOO_SYSTEMS = ("stock_default", "stock_guided", "ours_default")


@dataclass(frozen=True)
class ZooConfig:
    families: tuple[str, ...]
    seconds: float
    warmup: float
    concurrencies: tuple[int, ...]
    rounds: int
    out: Path
    quick: bool
    work: Path  # archives and server folders (logs); removed at the end unless something failed
    goals: tuple[Goal, ...] = ()  # judged per family (--goals); none: no Goals rows
    int8: bool = False  # also ours built with --calibration (ours_int8)

    @property
    def systems(self) -> tuple[str, ...]:
        return ZOO_SYSTEMS + (("ours_int8",) if self.int8 else ())

    def __post_init__(self) -> None:
        from torchserve_perf.models.zoo import FAMILIES

        unknown = sorted(set(self.families) - set(FAMILIES))
        if unknown or not self.families:
            raise ValueError(f"unknown families {unknown}; choose from {sorted(FAMILIES)}")
        if self.rounds < 1 or self.seconds <= 0 or self.warmup < 0:
            raise ValueError("--rounds must be >= 1, --seconds > 0 and --warmup >= 0")
        if not self.concurrencies or min(self.concurrencies) < 1:
            raise ValueError("concurrencies must be >= 1")
