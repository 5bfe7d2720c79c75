"""Sampled, bounded Kineto profiling of handled batches."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from plugins.worker import WorkerIdentity


@dataclass(frozen=True)
class ProfilerConfig:
    enabled: bool = False
    output_dir: str = ""


class BatchProfiler:
    def __init__(self, config: ProfilerConfig, worker: WorkerIdentity,
                 on_trace_written: Optional[Callable[[Path], None]] = None) -> None:
        self.config = config
        self.worker = worker
        self.on_trace_written = on_trace_written

    @contextlib.contextmanager
    def batch(self, size: int, force: bool = False) -> Iterator[bool]:
        """Wraps one handled batch; yields True when this batch is being recorded."""
        yield False

    def close(self) -> None:
        pass
