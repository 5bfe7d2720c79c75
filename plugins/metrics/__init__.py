"""Per-worker metrics through TorchServe's metrics API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from plugins.worker import WorkerIdentity


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True


class WorkerMetrics:
    def __init__(self, config: MetricsConfig, worker: WorkerIdentity, cache: Any) -> None:
        self.config = config
        self.worker = worker
        self.cache = cache

    def phase(self, name: str, seconds: float) -> None:
        pass


    def batch(self, size: int, seconds: float) -> None:
        pass

    def loaded(self, optimization: Any, threads: Any) -> None:
        pass

    def rejected(self, count: int) -> None:
        pass

    def trace_written(self, path: Any) -> None:
        pass

    def profiled(self, recorded: bool) -> None:
        pass
