"""Batch observers: what watches a worker's batches (metrics, the profiler, elastic threads) without
being able to fail one.

An observer subclasses :class:`BatchObserver` and overrides the hooks it needs; each hook takes one
typed event. The handler calls every hook through one :class:`Observers` runner, which is the only
guard: a hook that raises is logged once (with its traceback) and its observer is told through
:meth:`BatchObserver.hook_failed`, so it can drop what it had half done; the request is served
all the same. Observers therefore need no try/except of their own around their hooks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Optional, TypeVar

if TYPE_CHECKING:  # typing only: the events carry these, the runner never looks inside
    from torchserve_perf.plugins.memory import MemoryBreakdown
    from torchserve_perf.plugins.optimizations import OptimizationResult
    from torchserve_perf.plugins.threads import ThreadDecision

log = logging.getLogger(__name__)

Event = TypeVar("Event")


# ---- events -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerLoaded:
    optimization: OptimizationResult  # what the optimization chain made of the model
    threads: ThreadDecision  # the worker's thread policy
    memory: Optional[MemoryBreakdown] = None  # what the worker's RSS held at the end of its load


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


# ---- observers ----------------------------------------------------------------------------------
class BatchObserver:
    """Base class of every observer; each hook does nothing until overridden.

    Order: ``worker_loaded`` once, at the end of the handler's initialize; then per batch
    ``batch_started``, ``phase_started``/``phase_finished`` around each phase (a failed phase is
    finished too), and ``batch_finished``, which comes even after a batch broken by a defect.
    """

    def worker_loaded(self, event: WorkerLoaded) -> None:
        """The worker has loaded and optimized its model."""

    def batch_started(self, event: BatchStarted) -> None:
        """A batch arrived; nothing of it has run yet."""

    def phase_started(self, event: PhaseEvent) -> None:
        """A phase (preprocess, inference or postprocess) is about to run."""

    def phase_finished(self, event: PhaseEvent) -> None:
        """A phase ended, well or not; ``event.seconds`` says how long it took."""

    def batch_finished(self, event: BatchFinished) -> None:
        """The batch's responses are decided."""

    def hook_failed(self, hook: str, error: Exception) -> None:
        """One of this observer's hooks raised ``error``; the runner has logged it. Drop half-done
        state here, or switch off after repeated failures."""


class Observers:
    """Calls each hook on every observer, in order; a raising hook is logged once and never propagates."""

    def __init__(self, observers: Iterable[Optional[BatchObserver]] = ()) -> None:
        self.observers = tuple(o for o in observers if o is not None)
        self.failures: dict[tuple[int, str], int] = {}  # (id(observer), hook) -> failures so far

    def worker_loaded(self, event: WorkerLoaded) -> None:
        for observer in self.observers:
            self._call(observer, "worker_loaded", observer.worker_loaded, event)

    def batch_started(self, event: BatchStarted) -> None:
        for observer in self.observers:
            self._call(observer, "batch_started", observer.batch_started, event)

    def phase_started(self, event: PhaseEvent) -> None:
        for observer in self.observers:
            self._call(observer, "phase_started", observer.phase_started, event)

    def phase_finished(self, event: PhaseEvent) -> None:
        for observer in self.observers:
            self._call(observer, "phase_finished", observer.phase_finished, event)

    def batch_finished(self, event: BatchFinished) -> None:
        for observer in self.observers:
            self._call(observer, "batch_finished", observer.batch_finished, event)

    def _call(self, observer: BatchObserver, hook: str, method: Callable[[Event], None], event: Event) -> None:
        try:
            method(event)
        except Exception as error:
            self._record(observer, hook, error)
            try:
                observer.hook_failed(hook, error)
            except Exception as second:
                self._record(observer, "hook_failed", second)

    def _record(self, observer: BatchObserver, hook: str, error: Exception) -> None:
        key = (id(observer), hook)
        self.failures[key] = self.failures.get(key, 0) + 1
        if self.failures[key] == 1:
            log.warning("observer %s failed in %s; the request is still served, and further failures of "
                        "this hook are logged at DEBUG", type(observer).__name__, hook, exc_info=error)
        else:
            log.debug("observer %s failed in %s again: %s: %s", type(observer).__name__, hook,
                      type(error).__name__, error)
