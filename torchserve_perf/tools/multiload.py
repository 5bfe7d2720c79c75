"""Closed-loop load spread over several processes, so the client's ceiling grows with the cores.

One Python process tops out at a few thousand requests per second (the GIL serialises its client
threads' HTTP work): 3.4k req/s on a 16-core host, far below what a GPU server can answer. Here
``processes`` children each run :func:`loadgen.closed_loop` with their share of the clients,
start together behind a barrier, and their results are merged into one :class:`LoadResult`.
The trivial endpoint used to measure the ceiling can be spread the same way (SO_REUSEPORT).

    python -m torchserve_perf.tools.multiload --processes 1 2 --concurrency 16 64
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

from torchserve_perf.tools.loadgen import HttpSender, LoadResult, Payload, _TrivialProtocol, closed_loop, open_loop

START_TIMEOUT_S = 60.0


def auto_processes(concurrency: int, cores: int) -> int:
    """Client processes for ``concurrency`` clients on ``cores`` cores: one per 4 clients, at most half
    the cores (the server needs the rest). Pure."""
    return max(1, min(max(1, concurrency) // 4, max(1, cores) // 2))


def resolve(processes: Union[int, str], concurrency: int, cores: Optional[int] = None) -> int:
    """``--client-processes``: a number, or ``auto`` (:func:`auto_processes` for this machine)."""
    if processes == "auto":
        return auto_processes(concurrency, cores or os.cpu_count() or 1)
    return max(1, int(processes))


def split(concurrency: int, processes: int) -> list[int]:
    """Clients per process, as even as possible; no process without clients."""
    processes = max(1, min(processes, concurrency))
    base, extra = divmod(concurrency, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def merge(parts: Sequence[LoadResult]) -> LoadResult:
    """One result from the processes' results: their latencies and errors together, over the longest run.
    Open-loop parts (Poisson streams whose sum is one Poisson stream) add up their offered rates."""
    first = parts[0]
    merged = LoadResult(concurrency=sum(p.concurrency for p in parts), seconds=max(p.seconds for p in parts),
                        mode=first.mode)
    if first.mode == "open":
        merged.offered_rate = sum(p.offered_rate or 0.0 for p in parts)
    for part in parts:
        merged.latencies.extend(part.latencies)
        merged.start_lags.extend(part.start_lags)
        for code, count in part.errors.items():
            merged.errors[code] = merged.errors.get(code, 0) + count
        merged.client_cpu_s += part.client_cpu_s
    return merged


@dataclass(frozen=True)
class _Job:
    url: str
    payloads: tuple[Payload, ...]
    token: Optional[str]
    headers: Optional[dict]
    concurrency: int  # closed loop: clients; open loop: client threads (max in flight)
    duration: float
    warmup: int
    timeout: float
    rate: Optional[float] = None  # open loop: this process's share of the offered rate
    seed: Optional[int] = None


def _child(job: _Job, barrier: Any, results: Any) -> None:
    try:
        send = HttpSender(job.url, job.payloads, token=job.token, headers=job.headers, timeout=job.timeout)
        if job.warmup:
            closed_loop(send, job.concurrency, duration=job.duration, max_requests=job.warmup)
        barrier.wait(START_TIMEOUT_S)
        if job.rate is None:
            result = closed_loop(send, job.concurrency, duration=job.duration)
        else:
            result = open_loop(send, job.rate, duration=job.duration, seed=job.seed, max_in_flight=job.concurrency)
        results.put(("ok", result))
    except BaseException as exc:  # reported to the parent, which raises it
        barrier.abort()
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def closed_loop_processes(url: str, payloads: Sequence[Payload], concurrency: int, duration: float = 10.0,
                          processes: Union[int, str] = "auto", *, token: Optional[str] = None,
                          headers: Optional[dict] = None, warmup: int = 0, timeout: float = 120.0) -> LoadResult:
    """``concurrency`` closed-loop clients against ``url``, spread over ``processes`` processes.

    With one process it runs here, in threads, like :func:`loadgen.closed_loop`. ``warmup``: requests
    each process sends before the timed run (its connections and caches)."""
    shares = split(concurrency, resolve(processes, concurrency))
    if len(shares) == 1:
        send = HttpSender(url, payloads, token=token, headers=headers, timeout=timeout)
        if warmup:
            closed_loop(send, concurrency, duration=duration, max_requests=warmup)
        return closed_loop(send, concurrency, duration=duration)
    return _run([_Job(url, tuple(payloads), token, headers, share, duration, warmup, timeout) for share in shares],
                duration + timeout)


def open_loop_processes(url: str, payloads: Sequence[Payload], rate: float, duration: float = 10.0,
                        processes: Union[int, str] = "auto", *, max_in_flight: int = 64, seed: Optional[int] = 0,
                        token: Optional[str] = None, headers: Optional[dict] = None,
                        timeout: float = 120.0) -> LoadResult:
    """Poisson arrivals at ``rate``/s spread over processes: each sends its own Poisson stream at its
    share of the rate (their sum is a Poisson stream at ``rate``), with its share of the client threads."""
    count = min(resolve(processes, max_in_flight), max(1, max_in_flight))
    if count == 1:
        send = HttpSender(url, payloads, token=token, headers=headers, timeout=timeout)
        return open_loop(send, rate, duration=duration, seed=seed, max_in_flight=max_in_flight)
    threads = split(max_in_flight, count)
    jobs = [_Job(url, tuple(payloads), token, headers, share, duration, 0, timeout, rate=rate / count,
                 seed=None if seed is None else seed + i) for i, share in enumerate(threads)]
    return _run(jobs, 2 * duration + max(5.0, duration) + timeout)  # the open loop's grace period too


def _run(jobs: Sequence[_Job], patience_s: float) -> LoadResult:
    """Each job in its own spawned process, started together behind a barrier; their results merged."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with threads
    barrier, results = context.Barrier(len(jobs)), context.Queue()
    children = [context.Process(target=_child, args=(job, barrier, results), daemon=True) for job in jobs]
    for child in children:
        child.start()
    try:
        parts, deadline = [], time.monotonic() + START_TIMEOUT_S + patience_s
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
    return merge(parts)


# ---- a trivial endpoint on several processes ---------------------------------------------------------
def _serve(port: int, ready: Any) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_TrivialProtocol, "127.0.0.1", port, reuse_port=True)
        ready.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


class TrivialServers:
    """The do-nothing HTTP endpoint of :class:`loadgen.TrivialServer`, answered by ``processes``
    processes that share one port (SO_REUSEPORT: the kernel spreads the connections)."""

    def __init__(self, processes: int = 1) -> None:
        context = multiprocessing.get_context("spawn")
        ready = context.Queue()
        port = _free_port()
        self.processes = [context.Process(target=_serve, args=(port, ready), daemon=True)
                          for _ in range(max(1, processes))]
        for process in self.processes:
            process.start()
        try:
            for _ in self.processes:
                ready.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            self.stop()
            raise RuntimeError("the trivial endpoint did not start") from None
        self.url = f"http://127.0.0.1:{port}/"

    def stop(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
            process.join(10)

    def __enter__(self) -> "TrivialServers":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ceiling(payloads: Sequence[Payload], concurrency: int, processes: int, duration: float = 3.0,
            server_processes: int = 1) -> LoadResult:
    """The client's throughput against the trivial endpoint with ``processes`` load processes."""
    with TrivialServers(server_processes) as server:
        return closed_loop_processes(server.url, payloads, concurrency, duration, processes, warmup=20)


def client_ceilings(payloads: Sequence[Payload], concurrencies: Sequence[int], processes: Union[int, str] = 1,
                    duration: float = 2.0) -> dict[int, LoadResult]:
    """The client's ceiling at each concurrency, with as many load (and endpoint) processes as a run
    at that concurrency uses."""
    out = {}
    for concurrency in sorted(set(concurrencies)):
        count = resolve(processes, concurrency)
        out[concurrency] = ceiling(payloads, concurrency, count, duration, server_processes=count)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="the load generator's own ceiling, by client processes")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--server-processes", type=int, default=0,
                        help="processes answering the trivial endpoint (0: as many as the client's)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--payload", choices=["image", "small"], default="image",
                        help="the 120 kB sample JPEG, or a 10-byte body")
    args = parser.parse_args(argv)
    if args.payload == "image":
        from torchserve_perf.tools.loadgen import sample_image

        payload = Payload(sample_image(), "image/jpeg", "sample.jpg")
    else:
        payload = Payload(b"0123456789", "application/octet-stream", "small")
    print(f"# load generator ceiling against a trivial loopback endpoint: {os.cpu_count()} CPUs, "
          f"{len(payload.body) / 1e3:.1f} kB body, {args.seconds:g} s per point")
    print(f"{'processes':>9} {'clients':>7} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'client CPU ms/req':>18}")
    for processes in args.processes:
        for concurrency in args.concurrency:
            result = ceiling([payload], concurrency, processes, args.seconds, args.server_processes or processes)
            s = result.summary()
            print(f"{processes:>9} {concurrency:>7} {s['throughput_rps']:>9.0f} {s['p50_ms']:>8.2f} "
                  f"{s['p99_ms']:>8.2f} {s['client_cpu_ms_per_request'] or 0:>18.3f}"
                  + (f"  errors {result.errors}" if result.errors else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
