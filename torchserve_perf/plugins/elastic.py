"""Elastic intra-op threads: per batch, a worker uses the cores its model's other workers leave free.

The static rule (cores / workers) leaves cores idle whenever fewer workers than that are busy,
which is always the case at one client. Here every worker of a model on this host shares a small
memory-mapped board with one slot per worker process: ``(pid, busy_since_ns)``. Before a batch a
worker marks itself busy and counts the busy slots; it takes ``cores / busy`` threads (the
remainder goes to the lowest slots) and calls ``torch.set_num_threads`` only when the number
changes (~13 us). After the batch it clears its mark. Reading the board is a few microseconds.
It does not expand on a host loaded beyond what the model itself makes (/proc/loadavg: a 1-minute
load of 2 x cores + 1), so a noisy neighbour gets the static split rather than stalled OpenMP barriers.

Robust to a worker dying mid-batch: a busy mark whose pid no longer exists, or that is older than
``stale_s``, is not counted, and a new worker reclaims dead workers' slots. Claiming a slot takes
an ``flock`` (once per worker); the per-batch path takes no lock (aligned 8-byte stores).

Pinned workers (``threads.pin_cores``) stay pinned: their OpenMP threads may only run on their
own slice, so expanding would only oversubscribe it; elastic threads are off for them. It is also
off when ``threads.intra_op`` is set explicitly, on GPU workers, and with ``threads.elastic: false``
(or ``TS_PERF_ELASTIC_THREADS=0``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

from torchserve_perf.plugins.observers import BatchFinished, BatchObserver, BatchStarted

log = logging.getLogger(__name__)

SLOTS = 64  # worker processes per model and host; more and the extra workers stay static
_FIELDS = 2  # pid, busy_since_ns (0: idle)
SIZE = SLOTS * _FIELDS * 8
DEFAULT_STALE_S = 600.0


def share(cores: int, busy: int, rank: int) -> int:
    """Threads for the busy worker at ``rank`` (0-based among the busy ones) of ``busy``. Pure."""
    busy = max(1, busy)
    base, extra = divmod(max(1, cores), busy)
    return max(1, base + (1 if rank < extra else 0))


@dataclass(frozen=True)
class ElasticPlan:
    """Whether this worker runs elastic threads, over how many cores, and why."""

    enabled: bool
    cores: int
    reason: str

    def describe(self) -> str:
        return f"elastic threads over {self.cores} cores" if self.enabled else f"elastic threads off ({self.reason})"


def plan(*, elastic: bool, intra_op_auto: bool, pinned: bool, device: str, physical: int) -> ElasticPlan:
    """Pure: elastic threads run only where the static split is ours to change."""
    if not elastic:
        return ElasticPlan(False, physical, "threads.elastic is false")
    if not intra_op_auto:
        return ElasticPlan(False, physical, "threads.intra_op is set")
    if pinned:
        return ElasticPlan(False, physical, "workers are pinned to their cores")
    if not device.startswith("cpu"):
        return ElasticPlan(False, physical, f"the model runs on {device}")
    if physical < 2:
        return ElasticPlan(False, physical, "one core: nothing to share")
    return ElasticPlan(True, physical, "")


def board_path(model_name: str, model_version: str, directory: Optional[Path] = None) -> Path:
    """One board per model and host; TMPDIR separates independent servers (each test server has its own)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{model_name}_{model_version}")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(directory or tempfile.gettempdir()) / f"ts_perf_elastic_{uid}_{safe}.slots"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class BusyBoard:
    """This worker's slot on the shared board of its model."""

    def __init__(self, path: Path, *, pid: Optional[int] = None, stale_s: float = DEFAULT_STALE_S,
                 alive: Callable[[int], bool] = _alive) -> None:
        self.path = Path(path)
        self.pid = pid or os.getpid()
        self.stale_ns = int(stale_s * 1e9)
        self._alive = alive
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size < SIZE:
                    os.ftruncate(fd, SIZE)
                self._map = mmap.mmap(fd, SIZE)
                self._cells = memoryview(self._map).cast("q")
                self.slot = self._claim()
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)  # the mapping stays valid

    def _claim(self) -> int:
        cells, free = self._cells, None
        for i in range(SLOTS):
            owner = cells[i * _FIELDS]
            if owner == self.pid:
                free = i
                break
            if free is None and (owner == 0 or not self._alive(owner)):
                free = i
        if free is None:
            raise RuntimeError(f"all {SLOTS} slots of {self.path} are held by live workers")
        cells[free * _FIELDS + 1] = 0
        cells[free * _FIELDS] = self.pid
        return free

    def enter(self, now_ns: Optional[int] = None) -> tuple[int, int]:
        """Mark this worker busy; returns (busy workers including this one, this worker's rank)."""
        now = now_ns if now_ns is not None else time.monotonic_ns()
        cells, mine = self._cells, self.slot
        cells[mine * _FIELDS] = self.pid  # re-assert: a peer may have taken a slot it believed dead
        cells[mine * _FIELDS + 1] = now
        busy = rank = 0
        for i in range(SLOTS):
            since = cells[i * _FIELDS + 1]
            if since == 0:
                continue
            if i != mine:
                pid = cells[i * _FIELDS]
                if pid == 0 or now - since > self.stale_ns or not self._alive(pid):
                    continue
            if i < mine:
                rank += 1
            busy += 1
        return busy, rank

    def leave(self) -> None:
        self._cells[self.slot * _FIELDS + 1] = 0

    def busy_pids(self) -> list[int]:
        """Pids with a busy mark (stale ones included): for tests and debugging."""
        cells = self._cells
        return [cells[i * _FIELDS] for i in range(SLOTS) if cells[i * _FIELDS + 1]]

    def close(self) -> None:
        if self._map.closed:
            return
        cells = self._cells
        if cells[self.slot * _FIELDS] == self.pid:
            cells[self.slot * _FIELDS + 1] = 0
            cells[self.slot * _FIELDS] = 0
        cells.release()
        self._map.close()


Reading = tuple[Optional[int], Optional[float]]  # (other runnable threads now, 1-minute load average)


def expand_to(want: int, floor: int, cores: int, reading: Reading) -> int:
    """Pure: threads past the static share (``floor``) unless the host has been loaded beyond what
    the model's own workers, TorchServe and its clients make (a 1-minute load of 2 x cores + 1): OpenMP's
    barriers stall badly when one of a batch's threads is descheduled (measured here: 2 threads on
    a host loaded 6 deep took 10x longer than 1), so a noisy host keeps the static split.

    The instantaneous count of runnable threads is not used: inside TorchServe the frontend's own
    threads are often still on a core when a batch starts, and counting them held a lone client
    back (21 vs 29 req/s at 1 client here)."""
    _, load = reading
    if want <= floor or load is None:
        return want
    return floor if load >= 2 * cores + 1 else want


RECENT_WEIGHT = 0.2  # weight of the newest batch in the smoothed count of other busy workers
STEADY_BUSY = 0.5  # expand only while fewer than this many others were busy, on average, lately


def recent_busy(previous: float, others_now: int) -> float:
    """Pure: the smoothed number of the model's other workers busy at this worker's batch starts.

    A worker that finds the others idle only in the short gap between their batches (4 clients on
    2 workers) must not take every core for a whole batch: the others start again a moment later
    and the host is oversubscribed until it ends (p99 suffers). So it expands only while the others
    were mostly idle over its last few batches (1 client), and takes its share otherwise."""
    return (1 - RECENT_WEIGHT) * previous + RECENT_WEIGHT * max(0, others_now)


class RunnableProbe:
    """Runnable threads on the host right now besides the caller, and the 1-minute load average,
    from /proc/loadavg (a few microseconds with the file kept open)."""

    def __init__(self, path: str = "/proc/loadavg") -> None:
        try:
            self._fd: Optional[int] = os.open(path, os.O_RDONLY)
        except OSError:  # not Linux: no probe, never held back
            self._fd = None

    def __call__(self) -> Reading:
        if self._fd is None:
            return None, None
        try:
            fields = os.pread(self._fd, 128, 0).split()
            return max(0, int(fields[3].split(b"/")[0]) - 1), float(fields[0])
        except (OSError, ValueError, IndexError):
            return None, None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ElasticThreads:
    """Sets torch's intra-op threads around each batch from the board.

    A worker expands past ``floor`` (its static share, cores / workers) unless the host is loaded
    beyond what the model makes itself (:func:`expand_to`); under a noisy neighbour it keeps the
    static split."""

    def __init__(self, board: BusyBoard, cores: int, *, floor: int = 1,
                 set_threads: Optional[Callable[[int], None]] = None, current: Optional[int] = None,
                 others_running: Optional[Callable[[], Reading]] = None) -> None:
        import torch

        self.board = board
        self.cores = cores
        self.floor = max(1, floor)
        self._set = set_threads or torch.set_num_threads
        self.current = current if current is not None else torch.get_num_threads()
        self._others = others_running if others_running is not None else RunnableProbe()
        self.switches = 0
        self.held_back = 0  # batches kept at the floor (busy model lately, or a loaded host)
        self.recent_others = 0.0  # other busy workers seen at batch starts, smoothed (recent_busy)

    def begin(self) -> int:
        busy, rank = self.board.enter()
        wanted = share(self.cores, busy, rank)
        steady = self.recent_others < STEADY_BUSY  # the model's other workers were mostly idle lately
        self.recent_others = recent_busy(self.recent_others, busy - 1)
        if wanted > self.floor and not steady:
            threads = self.floor
        else:
            threads = expand_to(wanted, self.floor, self.cores, self._others()) if wanted > self.floor else wanted
        if threads < wanted:
            self.held_back += 1
        if threads != self.current:
            self._set(threads)
            self.current = threads
            self.switches += 1
        return threads

    def end(self) -> None:
        self.board.leave()

    @contextlib.contextmanager
    def batch(self) -> Iterator[int]:
        threads = self.begin()
        try:
            yield threads
        finally:
            self.end()

    def close(self) -> None:
        self.board.close()
        if isinstance(self._others, RunnableProbe):
            self._others.close()


def start(plan_: ElasticPlan, model_name: str, model_version: str, floor: int = 1, check_host: bool = True,
          directory: Optional[Path] = None) -> Optional[ElasticThreads]:
    """The worker's elastic threads, or None (off, or the board cannot be used: logged once).
    ``check_host`` false: expand whatever else runs on the host (threads.elastic_check_host)."""
    if not plan_.enabled:
        return None
    path = board_path(model_name, model_version, directory)
    try:
        return ElasticThreads(BusyBoard(path), plan_.cores, floor=floor,
                              others_running=None if check_host else (lambda: (None, None)))
    except Exception:
        log.warning("elastic threads off: cannot use %s; the static thread split stays", path, exc_info=True)
        return None


class ElasticObserver(BatchObserver):
    """A batch observer (plugins/observers.py): threads set before the batch, the mark cleared after,
    and the threads each batch ran with reported (``report``: the metrics' batch_threads)."""

    def __init__(self, elastic: Optional[ElasticThreads], report: Callable[[int], None]) -> None:
        self.elastic = elastic
        self.report = report
        self.threads = 0

    def batch_started(self, event: BatchStarted) -> None:
        if self.elastic is not None:
            self.threads = self.elastic.begin()
        else:
            import torch

            self.threads = torch.get_num_threads()

    def batch_finished(self, event: BatchFinished) -> None:
        if self.elastic is not None:
            self.elastic.end()
        self.report(self.threads)

    def close(self) -> None:
        if self.elastic is not None:
            self.elastic.close()
