"""What one compared system measured: its load points, or why it could not be measured."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from torchserve_perf.tools.compare.config import TITLES


@dataclass(frozen=True)
class SystemResult:
    key: str
    settings: str
    runs: dict[int, dict] = field(default_factory=dict)  # concurrency -> LoadResult.summary()
    error: Optional[str] = None
    startup_s: Optional[float] = None
    memory: Optional[dict] = None  # the workers' memory after the runs (tools/worker_memory.py summary)
    load: Optional[dict] = None  # ours only: auto's choice and the gates' agreement (worker_report.load_summary)

    def run(self, concurrency: int) -> Optional[dict]:
        return self.runs.get(concurrency)

    def as_dict(self) -> dict:
        return {"key": self.key, "title": TITLES[self.key], "settings": self.settings, "error": self.error,
                "startup_s": self.startup_s, "runs": {str(c): r for c, r in sorted(self.runs.items())},
                "memory": self.memory, "load": self.load}
