"""The resumable record of a tuning run: every measurement, in order, saved after each one.

A rerun with the same state file skips the points already measured (the search replays them
from the record for free), so an interrupted or budget-limited run continues where it stopped.
The record is only reused when the measurement conditions (model, payload, concurrency,
durations) match; the p99 target and the search space may change between runs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from torchserve_perf.tools.tuning.objective import Aggregate, Measurement
from torchserve_perf.tools.tuning.space import Candidate

VERSION = 1


class StateMismatch(RuntimeError):
    """The state file was measured under other conditions than this run's."""


@dataclass
class TuneState:
    path: Optional[Path] = None
    conditions: dict[str, Any] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)  # {candidate, measurement, phase, at}
    resumed: int = 0  # entries found in the file when this run began

    @classmethod
    def open(cls, path: Optional[Path], conditions: Mapping[str, Any], *, fresh: bool = False) -> TuneState:
        state = cls(path=Path(path) if path else None, conditions=dict(conditions))
        if state.path is None or fresh or not state.path.is_file():
            return state
        data = json.loads(state.path.read_text())
        if data.get("version") != VERSION:
            raise StateMismatch(f"{state.path} has state version {data.get('version')}, this tuner writes {VERSION}; "
                                "pass --fresh to start over")
        differ = {k: (data.get("conditions", {}).get(k), v) for k, v in conditions.items()
                  if data.get("conditions", {}).get(k) != v}
        if differ:
            detail = ", ".join(f"{k}: was {old!r}, now {new!r}" for k, (old, new) in differ.items())
            raise StateMismatch(f"{state.path} was measured under other conditions ({detail}); "
                                "pass --fresh to start over or use another --out")
        state.entries = list(data.get("entries", []))
        state.resumed = len(state.entries)
        return state

    def measurements(self, c: Candidate) -> list[Measurement]:
        key = c.key
        return [Measurement.from_dict(e["measurement"]) for e in self.entries if e["key"] == key]

    def aggregate(self, c: Candidate) -> Aggregate:
        return Aggregate(tuple(self.measurements(c)))

    def record(self, c: Candidate, m: Measurement, phase: str) -> None:
        self.entries.append({"key": c.key, "candidate": c.to_dict(), "measurement": m.to_dict(), "phase": phase,
                             "at": round(time.time(), 3)})
        self.save()

    def candidates(self) -> list[Candidate]:
        """Distinct measured points, in the order they were first measured."""
        seen: dict[str, Candidate] = {}
        for e in self.entries:
            seen.setdefault(e["key"], Candidate.from_dict(e["candidate"]))
        return list(seen.values())

    def results(self) -> dict[Candidate, Aggregate]:
        return {c: self.aggregate(c) for c in self.candidates()}

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"version": VERSION, "conditions": self.conditions, "entries": self.entries},
                                  indent=1, allow_nan=True))
        os.replace(tmp, self.path)  # atomic: a kill mid-write leaves the previous state
