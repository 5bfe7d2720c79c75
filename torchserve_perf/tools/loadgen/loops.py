"""The two ways to load a server from one process: a closed loop and an open (Poisson) loop.

* :func:`closed_loop`: ``concurrency`` clients each send, wait, and send again.
* :func:`open_loop`: requests start on a Poisson schedule whatever the server does; each latency
  is measured from the *scheduled* start, so a stalled server cannot hide its stall by slowing
  the client down (no coordinated omission).

``send`` performs one request and returns its HTTP status; the loops call it from several
threads at once.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from typing import Callable, Optional

from torchserve_perf.tools.loadgen.stats import EXCEPTION, NOT_SENT, LoadResult, percentile

ProgressFn = Callable[[str], None]


class _Recorder:
    """Thread-safe accumulation into a LoadResult, plus periodic progress lines."""

    def __init__(self, result: LoadResult, duration: float, progress: Optional[ProgressFn],
                 every: float) -> None:
        self.result = result
        self.lock = threading.Lock()
        self.duration = duration
        self.progress = progress
        self.every = every
        self.done = threading.Event()
        self.began = time.perf_counter()
        self.cpu0 = time.process_time()

    def record(self, status: int, latency: float) -> None:
        with self.lock:
            if status == 200:
                self.result.latencies.append(latency)
            else:
                self.result.errors[status] = self.result.errors.get(status, 0) + 1

    def _report(self, progress: ProgressFn) -> None:
        while not self.done.wait(self.every):
            with self.lock:
                ok, errors = len(self.result.latencies), self.result.error_count
                recent = sorted(self.result.latencies[-500:])
            elapsed = time.perf_counter() - self.began
            p99 = percentile(recent, 99) * 1000 if recent else float("nan")
            progress(f"  [{self.result.label()}] {min(elapsed, self.duration):5.0f}/{self.duration:.0f} s  "
                     f"{ok} ok  {errors} errors  {ok / elapsed:6.1f} req/s  p99(last 500) {p99:7.1f} ms")

    def __enter__(self) -> _Recorder:
        self.cpu0 = time.process_time()
        self.began = time.perf_counter()
        self.result.started = time.time()
        if self.progress is not None and self.duration >= 2 * self.every:
            threading.Thread(target=self._report, args=(self.progress,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.result.seconds = time.perf_counter() - self.began
        self.result.client_cpu_s = time.process_time() - self.cpu0


def _timed(send: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        status = send()
    except Exception:  # a failed request is data, not a crash of the load generator
        status = EXCEPTION
    return status, time.perf_counter() - started


def _run_threads(client: Callable[[], None], count: int) -> None:
    threads = [threading.Thread(target=client, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def closed_loop(send: Callable[[], int], concurrency: int, duration: float = 10.0,
                max_requests: Optional[int] = None, warmup: int = 0, *,
                progress: Optional[ProgressFn] = None, progress_every: float = 5.0) -> LoadResult:
    """``concurrency`` clients each send, wait for the answer, and send again, for ``duration`` seconds.

    ``warmup`` requests are sent first, one at a time, and not recorded; ``max_requests`` ends
    the run early once that many were sent.
    """
    for _ in range(warmup):
        _timed(send)
    result = LoadResult(concurrency=concurrency, seconds=0.0)
    budget = [max_requests if max_requests is not None else -1]

    with _Recorder(result, duration, progress, progress_every) as recorder:
        stop_at = time.perf_counter() + duration

        def client() -> None:
            while time.perf_counter() < stop_at:
                with recorder.lock:
                    if budget[0] == 0:
                        return
                    budget[0] -= 1
                recorder.record(*_timed(send))

        _run_threads(client, concurrency)
    return result


def poisson_schedule(rate: float, duration: float, seed: Optional[int] = 0) -> list[float]:
    """Start offsets (seconds from 0) of a Poisson process of ``rate`` per second, within ``duration``.

    Inter-arrival gaps are exponential with mean ``1/rate``; pure given ``seed``.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    rng = random.Random(seed)  # noqa: S311 -- a reproducible schedule, not a secret
    offsets: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= duration:
            return offsets
        offsets.append(t)


def open_loop(send: Callable[[], int], rate: float, duration: float = 10.0, *, seed: Optional[int] = 0,
              max_in_flight: int = 64, grace: Optional[float] = None, progress: Optional[ProgressFn] = None,
              progress_every: float = 5.0) -> LoadResult:
    """Start requests at Poisson arrival times of ``rate``/s for ``duration`` s, whatever the server does.

    Latency runs from each request's *scheduled* start to its answer, so time a request spends
    waiting for a free client (all ``max_in_flight`` busy) counts against the server. Requests
    that still have not started ``grace`` seconds after the schedule ends (default: the
    duration, at least 5 s) are counted as errors with code -1.
    """
    schedule = poisson_schedule(rate, duration, seed)
    grace = max(5.0, duration) if grace is None else grace
    result = LoadResult(concurrency=max_in_flight, seconds=0.0, mode="open", offered_rate=rate)
    cursor = itertools.count()

    with _Recorder(result, duration, progress, progress_every) as recorder:
        t0 = time.perf_counter() + 0.05  # let all threads reach their first wait
        give_up = t0 + duration + grace

        def client() -> None:
            while True:
                i = next(cursor)  # itertools.count is atomic under the GIL
                if i >= len(schedule):
                    return
                scheduled = t0 + schedule[i]
                wait = scheduled - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                started = time.perf_counter()
                if started > give_up:
                    recorder.record(NOT_SENT, 0.0)
                    continue
                status, _ = _timed(send)
                finished = time.perf_counter()
                with recorder.lock:
                    result.start_lags.append(started - scheduled)
                recorder.record(status, finished - scheduled)

        _run_threads(client, min(max_in_flight, len(schedule)) or 1)
    return result
