"""Per-worker resource gauges, sampled by one daemon thread every few seconds.

Sampling off the request path keeps the per-batch cost at a few log lines, and an idle worker
still reports its memory and threads.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResourceSample:
    resident_bytes: int
    cpu_percent: float
    intra_op_threads: int
    cores: tuple[int, ...]


class ProcessProbe:
    """This process's memory, CPU use since the previous call, torch threads and CPU affinity."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._process.cpu_percent(None)  # the first call only starts the measurement

    def sample(self) -> ResourceSample:
        import torch

        return ResourceSample(
            resident_bytes=int(self._process.memory_info().rss),
            cpu_percent=float(self._process.cpu_percent(None)),
            intra_op_threads=int(torch.get_num_threads()),
            cores=current_cores(),
        )


def current_cores() -> tuple[int, ...]:
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return tuple(range(os.cpu_count() or 1))


def describe_cores(cores: Sequence[int]) -> str:
    """``0-3+8+10-11``: compact, and free of the ',' and ':' the metrics line format reserves."""
    runs: list[list[int]] = []  # [first, last] of each run of consecutive cores
    for core in sorted(set(cores)):
        if runs and core == runs[-1][1] + 1:
            runs[-1][1] = core
        else:
            runs.append([core, core])
    return "+".join(str(first) if first == last else f"{first}-{last}" for first, last in runs) or "none"


class Sampler:
    """Calls ``sample`` every ``interval`` seconds until :meth:`stop`, or until its owner is gone.

    The thread holds ``sample`` weakly, so a handler that is dropped without being closed (tests,
    a model reloaded in process) does not keep a sampler thread alive for ever.
    """

    def __init__(self, interval: float, sample: Callable[[], None], name: str = "ts-perf-metrics") -> None:
        self.interval = interval
        self._sample = weakref.WeakMethod(sample) if inspect.ismethod(sample) else lambda: sample
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._name = name

    def start(self) -> None:
        if self._thread is not None or self.interval <= 0:
            return
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        failures = 0
        while not self._stop.wait(self.interval):
            sample = self._sample()
            if sample is None:  # the owner was collected
                return
            try:
                sample()
            except Exception:  # the thread's only guard: the first failure in full, the others at DEBUG
                failures += 1
                log.log(logging.WARNING if failures == 1 else logging.DEBUG, "%s: metrics sample failed; "
                        "sampling goes on", self._name, exc_info=True)
            del sample

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
