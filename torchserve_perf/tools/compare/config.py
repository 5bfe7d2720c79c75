"""What one ``torchserve-perf compare`` run measures: the systems, the load points, where it writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torchserve_perf.tools import paths

# The systems in the order the report lists them; "raw" is the in-process limit, the rest are servers.
SYSTEMS = ("raw", "stock_default", "stock_guided", "ours_default", "ours_int8", "ours_tuned", "litserve")
SERVERS = SYSTEMS[1:]
TITLES = {
    "raw": "in-process limit (model only)",
    "stock_default": "stock TorchServe, defaults",
    "stock_guided": "stock TorchServe, 1 thread/worker",
    "ours_default": "ours, defaults",
    "ours_int8": "ours, defaults + --calibration",
    "ours_tuned": "ours, tuned",
    "litserve": "LitServe, batching",
}
# Where torchserve-perf tune writes its winner for the demo ResNet-18.
TUNE_BEST = paths.results_dir("tune", "resnet18", "best.json")


@dataclass(frozen=True)
class CompareConfig:
    seconds: float
    warmup: float
    concurrencies: tuple[int, ...]
    systems: tuple[str, ...]
    out: Path
    quick: bool
    compile: bool
    tune_best: Path
    work: Path  # archives and server folders (logs); removed at the end unless something failed
    # > 1: every TorchServe system runs at once and the load alternates between them, each point
    # split into this many slices (the order rotates), so a noisy neighbour hits all of them alike.
    rounds: int = 1

    def __post_init__(self) -> None:
        unknown = sorted(set(self.systems) - set(SYSTEMS))
        if unknown:
            raise ValueError(f"unknown systems {unknown}; choose from {list(SYSTEMS)}")
        if self.rounds < 1:
            raise ValueError("--rounds must be >= 1")
        if self.seconds <= 0 or self.warmup < 0 or not self.concurrencies or min(self.concurrencies) < 1:
            raise ValueError("--seconds must be > 0, --warmup >= 0, concurrencies >= 1")
