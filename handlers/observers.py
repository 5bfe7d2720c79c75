"""Lifecycle observers: what watches a batch (metrics, the profiler) without being able to fail it.

An observer is any object with some of the hooks below; each hook is a plain method taking plain
values. The handler calls them through one :class:`Observers` runner, which guards every call: an
observer that raises is logged once (with its traceback) and never fails a request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

log = logging.getLogger(__name__)

HOOKS = ("batch_started", "phase_started", "phase_finished", "batch_finished")


@dataclass(frozen=True)
class BatchStarted:
    size: int  # requests TorchServe handed over
    profile_requested: bool = False  # a request carried X-Torch-Profile while profiling is on


@dataclass(frozen=True)
class PhaseEvent:
    name: str  # preprocess | inference | postprocess
    size: int  # requests in this phase (for the one-by-one retry: 1)
    seconds: float = 0.0  # set on phase_finished
    retry: bool = False  # part of the one-by-one retry after the batch failed as a whole


@dataclass(frozen=True)
class BatchFinished:
    size: int
    served: int
    rejected: int
    seconds: float
    profiled: bool  # this batch was recorded into a trace


class Observers:
    """Calls each hook on every observer that has it, in order; a raising observer is logged once."""

    def __init__(self, observers: Iterable[Any] = ()) -> None:
        self.observers = [o for o in observers if o is not None]
        self.failures: dict[tuple[int, str], int] = {}

    def batch_started(self, event: BatchStarted) -> None:
        self._call("batch_started", event)

    def phase_started(self, event: PhaseEvent) -> None:
        self._call("phase_started", event)

    def phase_finished(self, event: PhaseEvent) -> None:
        self._call("phase_finished", event)

    def batch_finished(self, event: BatchFinished) -> None:
        self._call("batch_finished", event)

    def _call(self, hook: str, event: Any) -> None:
        for observer in self.observers:
            method = getattr(observer, hook, None)
            if method is None:
                continue
            try:
                method(event)
            except Exception:
                key = (id(observer), hook)
                self.failures[key] = self.failures.get(key, 0) + 1
                if self.failures[key] == 1:
                    log.warning("observer %s failed in %s; the request is served and further failures of "
                                "this hook are not logged", type(observer).__name__, hook, exc_info=True)
