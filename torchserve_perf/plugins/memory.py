"""What a worker's memory holds, measured at load: the resident set before and after each load step.

The worker's RSS is split into parts by measuring it around each step of the load (the process
as it was before loading, the eager model, each runtime's weights and sessions, what the
optimization left behind, the eager model released, the metrics and profiler): the parts add up
to the RSS at the end of the load by construction, and a part that no step claimed is named
``rest``. A runtime may split its own step further: a model with a ``memory_parts`` mapping (part name ->
bytes) has those parts taken out of its step, the remainder kept under the step's name.

Freed heap memory is not always given back to the system at once (glibc keeps it for reuse), so
each measurement first asks the C library to return what it can (:func:`return_freed_heap`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

log = logging.getLogger(__name__)

MIB = 1024 * 1024
BEFORE_LOAD = "process before load"  # the interpreter, torch, ONNX Runtime and TorchServe's libraries
REST = "rest"


@functools.cache
def _malloc_trim() -> Optional[Callable[[int], int]]:
    """glibc's ``malloc_trim``, looked up once: ``find_library`` may run ``ldconfig`` in a subprocess."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None)
    except OSError:
        return None


def return_freed_heap() -> None:
    """Ask glibc to give freed heap pages back to the system (no-op elsewhere). Takes milliseconds,
    where a full garbage collection takes about half a second in a worker: callers that drop objects
    held in reference cycles collect first themselves."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def resident_bytes() -> int:
    """This process's resident set size, after giving freed heap back (see the module docstring)."""
    return_freed_heap()
    try:
        with open(f"/proc/{os.getpid()}/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import psutil

        return int(psutil.Process().memory_info().rss)


@dataclass(frozen=True)
class MemoryBreakdown:
    """The worker's resident memory at the end of its load, as named parts (bytes; a release is negative)."""

    resident: int
    parts: tuple[tuple[str, int], ...]

    @property
    def explained(self) -> int:
        """Bytes the named parts account for (everything but ``rest``)."""
        return sum(size for name, size in self.parts if name != REST)

    @property
    def explained_fraction(self) -> float:
        return self.explained / self.resident if self.resident > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"resident_mib": round(self.resident / MIB, 1),
                "parts_mib": {name: round(size / MIB, 1) for name, size in self.parts},
                "explained_fraction": round(self.explained_fraction, 3)}

    def describe(self) -> str:
        parts = ", ".join(f"{name} {size / MIB:+.1f}" for name, size in self.parts)
        return (f"RSS {self.resident / MIB:.1f} MiB at load = {parts} MiB "
                f"({100 * self.explained_fraction:.0f}% named)")


def split_step(name: str, delta: int, reported: Mapping[str, int]) -> list[tuple[str, int]]:
    """A step's RSS delta split into the parts its runtime reported and what is left under its own name.

    Reported parts are kept as reported; the step's name keeps the remainder (may be negative when
    the runtime reports bytes the step freed elsewhere). Pure: see test_memory_split_table."""
    parts = [(part, int(size)) for part, size in reported.items() if int(size) != 0]
    rest = delta - sum(size for _, size in parts)
    if rest != 0 or not parts:
        parts.append((name, rest))
    return parts


def breakdown(baseline: int, steps: Sequence[tuple[str, int]], resident: int) -> MemoryBreakdown:
    """The parts: ``baseline`` (RSS before loading), each step's delta, and ``rest`` (what changed
    between the steps, unmeasured) so that the parts add up to ``resident``. Steps with the same
    name are summed. Pure: see test_memory_breakdown_table."""
    merged: dict[str, int] = {BEFORE_LOAD: baseline}
    for name, delta in steps:
        merged[name] = merged.get(name, 0) + delta
    rest = resident - sum(merged.values())
    if rest:
        merged[REST] = merged.get(REST, 0) + rest
    return MemoryBreakdown(resident, tuple(merged.items()))


@dataclass
class LoadMeter:
    """The RSS delta of each load step: call :meth:`mark` after each step, :meth:`finish` at the end."""

    probe: Callable[[], int] = resident_bytes
    baseline: int = 0
    last: int = 0
    steps: list[tuple[str, int]] = field(default_factory=list)

    @classmethod
    def start(cls, probe: Callable[[], int] = resident_bytes) -> LoadMeter:
        now = probe()
        return cls(probe=probe, baseline=now, last=now)

    def mark(self, name: str, reported: Optional[Mapping[str, int]] = None, *, collect: bool = False) -> None:
        """The step that just ended: its RSS delta, split into the parts its runtime ``reported``.
        ``collect``: the step dropped objects that may sit in reference cycles (a model): collect them first."""
        if collect:
            gc.collect()
        now = self.probe()
        self.steps.extend(split_step(name, now - self.last, reported or {}))
        self.last = now

    def finish(self) -> MemoryBreakdown:
        return breakdown(self.baseline, self.steps, self.probe())


def metric_label(part: str) -> str:
    """A part's name as a metric label: lower-case words joined by ``_`` ("onnxruntime_sessions_3")."""
    return re.sub(r"[^a-z0-9]+", "_", part.lower()).strip("_") or REST


def reported_parts(model: Any) -> Mapping[str, int]:
    """The ``memory_parts`` a runtime declares, looked up through wrappers (``optimized``, ``model``)."""
    seen: set[int] = set()
    current = model
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts = getattr(current, "memory_parts", None)
        if isinstance(parts, Mapping):
            return {str(k): int(v) for k, v in parts.items()}
        current = getattr(current, "optimized", None) or getattr(current, "inner", None)
    return {}
