"""BatchProfiler: one Kineto session per sampled window of handled batches.

Stock TorchServe wraps every batch in its own profiler and never calls ``prof.step()``. Here a
pure schedule (:func:`action_for`) decides per batch; a window's batches share one session, each
inside a ``ProfilerStep#<batch>`` range, and the window is written out as one trace. Outside a
window the cost is a counter and a table lookup. The profiler is a batch observer: the handler's
guarded runner (plugins/observers.py) logs a failing hook and the batch still runs; the profiler
then drops its session, and after a few failures profiling stops for this worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Optional

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from torchserve_perf.plugins.observers import BatchFinished, BatchObserver, BatchStarted, PhaseEvent
from torchserve_perf.plugins.profiler import traces
from torchserve_perf.plugins.profiler.config import ProfilerConfig
from torchserve_perf.plugins.profiler.schedule import Action, action_for
from torchserve_perf.plugins.worker import WorkerIdentity

log = logging.getLogger(__name__)

MAX_FAILURES = 3
_NULL = contextlib.nullcontext()
_profiler_enabled: Callable[[], bool] = getattr(torch.autograd, "_profiler_enabled", lambda: False)


class BatchProfiler(BatchObserver):
    def __init__(self, config: ProfilerConfig, worker: WorkerIdentity,
                 on_trace_written: Optional[Callable[[Path], None]] = None) -> None:
        self.config = config
        self.worker = worker
        self.on_trace_written = on_trace_written
        self.schedule = config.resolved_schedule()
        self.directory = Path(config.directory(worker.model_name, worker.model_version))
        self.enabled = config.enabled
        self.batches = 0  # handled batches so far; the next batch's number
        self.failures = 0
        self._session: Optional[profile] = None
        self._recording = False
        self._step: Optional[int] = None
        self._steps: list[int] = []
        self._forced: list[int] = []
        self._marks: list[traces.PhaseMark] = []
        self._action: Optional[Action] = None  # the current batch's scheduled action; None between batches
        self._step_range: Optional[ContextManager[Any]] = None
        self._phases: list[ContextManager[Any]] = []  # open phase ranges of the current batch
        if self.enabled:
            log.info("%s profiling to %s: %s", worker.name, self.directory, self.describe())
            self._warm_up_kineto()

    def describe(self) -> str:
        s = self.schedule
        if s.active == 0:
            return "on request only (X-Torch-Profile header)"
        windows = "every cycle" if s.windows == 0 else f"{s.windows} window(s)"
        return (f"skip {s.skip_first} batches, then wait {s.wait} / warmup {s.warmup} / record {s.active}, "
                f"{windows}; keep {self.config.max_traces or 'all'} traces, {self.config.max_mb or 'any'} MB")

    # ---- per batch ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def batch(self, size: int, force: bool = False) -> Iterator[bool]:
        """Wraps one batch outside a handler (scripts, tests); yields True when it is being recorded.
        Nothing guards it: in a handler the observer runner does."""
        self.start_batch(size, force)
        try:
            yield self.recording
        finally:
            self.finish_batch()

    @property
    def recording(self) -> bool:
        """The current batch is being recorded into a trace."""
        return self._step is not None

    def start_batch(self, size: int, force: bool = False) -> None:
        if not self.enabled:
            return
        number = self.batches
        self.batches += 1
        self._action = Action.NONE  # first: should the schedule raise, batch_finished still closes the batch
        self._action = action_for(number, self.schedule)
        if self._begin(number, self._action, force and self.config.header, size):
            self._step_range = record_function(f"{traces.STEP_PREFIX}{number}")
            self._step_range.__enter__()

    def finish_batch(self) -> None:
        if self._action is None:
            return  # no batch started (profiling off, or switched off since)
        action, step_range = self._action, self._step_range
        self._action, self._step_range = None, None
        while self._phases:  # a phase left open by an exception closes with its batch
            self._phases.pop().__exit__(None, None, None)
        if step_range is not None:
            step_range.__exit__(None, None, None)
        self._step = None
        if self._recording and action in (Action.RECORD_AND_SAVE, Action.NONE):
            self._save()

    def annotate(self, name: str, batch_size: int) -> ContextManager[Any]:
        """A range for one phase of the batch, with its batch size kept for the trace."""
        if self._step is not None:
            self._marks.append(traces.PhaseMark(self._step, name, batch_size))
            return record_function(name)
        if _profiler_enabled():  # someone else's profiler is running: keep the range
            return record_function(name, args=f"batch_size={batch_size}")
        return _NULL

    # ---- as a batch observer (plugins/observers.py) --------------------------------------------
    def batch_started(self, event: BatchStarted) -> None:
        self.start_batch(event.size, force=event.profile_requested)

    def phase_started(self, event: PhaseEvent) -> None:
        if self._step is None and not _profiler_enabled():
            return  # the common case: nothing records, nothing to open
        scope = self.annotate(event.name, event.size)
        scope.__enter__()
        self._phases.append(scope)

    def phase_finished(self, event: PhaseEvent) -> None:
        if self._phases:
            self._phases.pop().__exit__(None, None, None)

    def batch_finished(self, event: BatchFinished) -> None:
        self.finish_batch()

    def hook_failed(self, hook: str, error: Exception) -> None:
        """The runner caught (and logged) one of the hooks above failing: drop the half-made trace."""
        self._failed(hook)

    def _begin(self, number: int, action: Action, force: bool, size: int) -> bool:
        record = self._recording or force or action in (Action.RECORD, Action.RECORD_AND_SAVE)
        if action is Action.WARMUP and self._session is None and not record:
            self._session = self._new_session()
            self._session.prepare_trace()
        if not record:
            return False
        if self._session is None:
            self._session = self._new_session()
            self._session.prepare_trace()
        if not self._recording:
            self._session.start_trace()
            self._recording = True
            self._steps, self._forced, self._marks = [], [], []
        self._steps.append(number)
        if force:
            self._forced.append(number)
        self._step = number
        return True

    # ---- sessions -----------------------------------------------------------------------------
    def _activities(self) -> list[ProfilerActivity]:
        activities = []
        if "cpu" in self.config.activities:
            activities.append(ProfilerActivity.CPU)
        if "cuda" in self.config.activities and torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        return activities or [ProfilerActivity.CPU]

    def _new_session(self) -> profile:
        return profile(activities=self._activities(), record_shapes=self.config.record_shapes,
                       profile_memory=self.config.profile_memory, with_stack=self.config.with_stack)

    def _warm_up_kineto(self) -> None:
        """Kineto's first start takes seconds; pay it while the worker loads, not in a request."""
        try:
            started = time.perf_counter()
            session = self._new_session()
            session.prepare_trace()
            session.start_trace()
            session.stop_trace()
            log.info("%s profiler ready in %.2f s", self.worker.name, time.perf_counter() - started)
        except Exception as error:  # at load, outside any hook: the worker loads without profiling
            self._failed("starting the profiler", error)

    def _save(self) -> None:
        session, steps, forced, marks = self._session, self._steps, self._forced, self._marks
        if session is None:  # a window only records inside a session; nothing to save without one
            raise RuntimeError("no profiler session to save")
        try:
            session.stop_trace()
        finally:  # a window is written once, whatever happens below
            self._session, self._recording, self._steps, self._forced, self._marks = None, False, [], [], []
        directory = traces.make_private_dir(self.directory)
        path = traces.new_trace_path(directory, self.worker.name)
        raw = path.with_name(f".{path.name}.kineto")
        try:
            session.export_chrome_trace(str(raw))
            trace = traces.read_trace(raw)
        finally:
            with contextlib.suppress(FileNotFoundError):
                raw.unlink()
        traces.annotate(trace, marks, self._metadata(steps, forced))
        trace["traceName"] = str(path)
        traces.write_json(trace, path)
        log.info("%s wrote profiler trace %s (batches %s)", self.worker.name, path, _span(steps))
        self._notify(path)
        for removed in traces.enforce_retention(directory, self.worker.name, self.config.max_traces,
                                                self.config.max_mb):
            log.info("%s removed old profiler trace %s", self.worker.name, removed)
        self.failures = 0

    def _metadata(self, steps: list[int], forced: list[int]) -> dict:
        return {
            "model_name": self.worker.model_name,
            "model_version": self.worker.model_version,
            "worker": self.worker.name,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "batches": steps,
            "forced_by_header": forced,
            "schedule": vars(self.schedule),
        }

    def _notify(self, path: Path) -> None:
        if self.on_trace_written is None:
            return
        try:
            self.on_trace_written(path)
        except Exception:
            log.warning("%s trace callback failed for %s", self.worker.name, path, exc_info=True)

    def _failed(self, what: str, error: Optional[BaseException] = None) -> None:
        """Count a failure (``error``: one no runner has logged), drop the session, and switch
        profiling off after MAX_FAILURES."""
        self.failures += 1
        log.error("%s profiler failed in %s; the request is still served", self.worker.name, what, exc_info=error)
        self._discard()
        if self.failures >= MAX_FAILURES:
            self.enabled = False
            log.error("%s profiling switched off for this worker after %d failures", self.worker.name, self.failures)

    def _discard(self) -> None:
        session, recording = self._session, self._recording
        self._session, self._recording, self._step = None, False, None
        self._steps, self._forced, self._marks = [], [], []
        if session is None:
            return
        with contextlib.suppress(Exception):
            if not recording:  # a prepared (warm-up) session is closed the way torch does it
                session.start_trace()
            session.stop_trace()

    def close(self) -> None:
        """Write out a window in progress (what was recorded is still useful) and stop."""
        try:
            if self._recording:
                self._save()
        except Exception as error:  # at unload, outside any hook
            self._failed("saving the last trace", error)
        self._discard()
        self.enabled = False


def _span(steps: list[int]) -> str:
    if not steps:
        return "none"
    return str(steps[0]) if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"
