"""The load runner: one load (closed or open loop) spread over client processes.

One Python process tops out at a few thousand requests per second (the GIL serialises its client
threads' HTTP work), so a load can be spread over ``processes`` spawned children: each runs its
share of the clients (closed loop) or its own Poisson stream at its share of the rate (open loop;
Poisson streams add up to one), they start together behind a barrier, and :func:`merge` makes
one result of theirs. One process is the same run without children: its share is the whole
load, run here, and it can report progress.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import queue
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from torchserve_perf.tools.loadgen.grpc_client import make_sender
from torchserve_perf.tools.loadgen.loops import ProgressFn, closed_loop, open_loop
from torchserve_perf.tools.loadgen.payloads import Payload
from torchserve_perf.tools.loadgen.stats import LoadResult, merge

START_TIMEOUT_S = 60.0

Processes = Union[int, str]  # a number, or "auto"


def auto_processes(concurrency: int, cores: int) -> int:
    """Client processes for ``concurrency`` clients on ``cores`` cores: one per 4 clients, at most half
    the cores (the server needs the rest). Pure."""
    return max(1, min(max(1, concurrency) // 4, max(1, cores) // 2))


def resolve(processes: Processes, concurrency: int, cores: Optional[int] = None) -> int:
    """``--client-processes``: a number, or ``auto`` (:func:`auto_processes` for this machine)."""
    if processes == "auto":
        return auto_processes(concurrency, cores or os.cpu_count() or 1)
    return max(1, int(processes))


def split(concurrency: int, processes: int) -> list[int]:
    """Clients per process, as even as possible; no process without clients."""
    processes = max(1, min(processes, concurrency))
    base, extra = divmod(concurrency, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


@dataclass(frozen=True)
class Target:
    """Where the requests go and what they carry."""

    url: str
    payloads: tuple[Payload, ...]
    token: Optional[str] = None
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 120.0

    @classmethod
    def of(cls, url: str, payloads: Sequence[Payload], *, token: Optional[str] = None,
           headers: Optional[Mapping[str, str]] = None, timeout: float = 120.0) -> Target:
        return cls(url, tuple(payloads), token, tuple((headers or {}).items()), timeout)

    def sender(self) -> Callable[[], int]:
        """An HTTP sender, or a gRPC one for a ``grpc://`` URL (loadgen/grpc_client.py)."""
        return make_sender(self.url, self.payloads, token=self.token, headers=dict(self.headers),
                           timeout=self.timeout)


@dataclass(frozen=True)
class Load:
    """One run: ``concurrency`` closed-loop clients, or Poisson arrivals at ``rate``/s served by
    ``concurrency`` client threads (the most requests in flight), for ``duration`` seconds."""

    concurrency: int
    duration: float
    rate: Optional[float] = None  # None: closed loop
    seed: Optional[int] = 0  # of the Poisson schedule
    warmup: int = 0  # requests each process sends, unrecorded, before the timed run

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.duration <= 0:
            raise ValueError(f"duration must be > 0, got {self.duration}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")

    def shares(self, processes: int) -> list[Load]:
        """This load cut into one load per process: the clients split, the rate in equal Poisson streams."""
        counts = split(self.concurrency, processes)
        rate = None if self.rate is None else self.rate / len(counts)
        return [dataclasses.replace(self, concurrency=count, rate=rate,
                                    seed=None if self.seed is None else self.seed + i)
                for i, count in enumerate(counts)]

    def patience_s(self, timeout: float) -> float:
        """How long after the start a process may take to report (an open loop's grace period too)."""
        if self.rate is None:
            return self.duration + timeout
        return 2 * self.duration + max(5.0, self.duration) + timeout


def run_share(target: Target, load: Load, *, barrier: Any = None,
              progress: Optional[ProgressFn] = None) -> LoadResult:
    """One process's part of a load: warm-up, the barrier shared with the other processes, the timed run."""
    send = target.sender()
    if load.warmup:
        closed_loop(send, load.concurrency, duration=load.duration, max_requests=load.warmup)
    if barrier is not None:
        barrier.wait(START_TIMEOUT_S)
    if load.rate is None:
        return closed_loop(send, load.concurrency, duration=load.duration, progress=progress)
    return open_loop(send, load.rate, duration=load.duration, seed=load.seed, max_in_flight=load.concurrency,
                     progress=progress)


def run_load(target: Target, load: Load, processes: Processes = 1, *,
             progress: Optional[ProgressFn] = None) -> LoadResult:
    """``load`` against ``target`` from ``processes`` client processes (a number or "auto"), as one result.

    ``progress`` lines come from a load run in this process only."""
    shares = load.shares(resolve(processes, load.concurrency))
    if len(shares) == 1:
        return merge([run_share(target, shares[0], progress=progress)])
    return merge(_in_processes(target, shares))


def _child(target: Target, load: Load, barrier: Any, results: Any) -> None:
    try:
        results.put(("ok", run_share(target, load, barrier=barrier)))
    except BaseException as exc:  # reported to the parent, which raises it
        barrier.abort()
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def _in_processes(target: Target, shares: Sequence[Load]) -> list[LoadResult]:
    """Each share in its own spawned process, started together behind a barrier; their results."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    barrier, results = context.Barrier(len(shares)), context.Queue()
    children = [context.Process(target=_child, args=(target, share, barrier, results), daemon=True)
                for share in shares]
    for child in children:
        child.start()
    try:
        parts: list[LoadResult] = []
        deadline = time.monotonic() + START_TIMEOUT_S + shares[0].patience_s(target.timeout)
        while len(parts) < len(children):
            try:
                status, value = results.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{len(children) - len(parts)} load processes did not report") from None
            if status != "ok":
                raise RuntimeError(f"a load process failed: {value}")
            parts.append(value)
    finally:
        for child in children:
            child.join(5)
            if child.is_alive():
                child.terminate()
                child.join()
    return parts
