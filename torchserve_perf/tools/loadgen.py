"""Load generation: closed and open (Poisson) loops, a low-overhead HTTP client, payloads, percentiles.

Used by ``torchserve-perf bench``, ``torchserve-perf compare``, ``torchserve-perf tune`` and ``torchserve-perf demo``.

* :func:`closed_loop`: ``concurrency`` clients each send, wait, and send again.
* :func:`open_loop`: requests start on a Poisson schedule whatever the server does; each latency
  is measured from the *scheduled* start, so a stalled server cannot hide its stall by slowing
  the client down (no coordinated omission).
* :class:`HttpSender`: one keep-alive ``http.client`` connection per client thread, far cheaper
  per request than ``requests`` (the client shares the machine's 2 cores with the server).
* :func:`client_ceiling`: the same client against a trivial local endpoint, to show how far the
  client itself could go.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import itertools
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence
from urllib.parse import urlsplit

PERCENTILES = (50, 90, 95, 99, 99.9)
NOT_SENT = -1  # error code: the schedule ran past its grace period before this request could start
EXCEPTION = 0  # error code: connection error or timeout

ProgressFn = Callable[[str], None]


# ---- statistics ---------------------------------------------------------------------------------
def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (``nan`` when empty)."""
    if not sorted_values:
        return float("nan")
    # round first: 99.9 / 100 * 1000 is 999.0000000000001 in floating point, whose ceiling is 1000
    rank = max(1, math.ceil(round(q / 100 * len(sorted_values), 9)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def cdf_points(sorted_values: Sequence[float], points: int = 200) -> list[tuple[float, float]]:
    """At most ``points`` (value, cumulative fraction) pairs of the empirical CDF, ends included."""
    n = len(sorted_values)
    if n == 0:
        return []
    if n <= points:
        indices = range(n)
    else:
        indices = sorted({round(i * (n - 1) / (points - 1)) for i in range(points)})
    return [(sorted_values[i], (i + 1) / n) for i in indices]


def _ms(seconds: float) -> Optional[float]:
    return None if math.isnan(seconds) else round(seconds * 1000, 2)


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # successful requests, seconds
    errors: dict[int, int] = field(default_factory=dict)  # status code (0: exception, -1: not sent) -> count
    mode: str = "closed"
    offered_rate: Optional[float] = None  # open loop: requests per second asked for
    client_cpu_s: float = 0.0  # CPU time this process spent during the run (all its threads)
    start_lags: list[float] = field(default_factory=list)  # open loop: actual start - scheduled start
    gpu: list[dict] = field(default_factory=list)  # per GPU: utilisation and memory sampled during the run (NVML)

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    @property
    def client_cpu_ms_per_request(self) -> float:
        return 1000 * self.client_cpu_s / self.requests if self.requests else float("nan")

    def pct(self, q: float) -> float:
        return percentile(sorted(self.latencies), q)

    def label(self) -> str:
        return f"open {self.offered_rate:g}/s" if self.mode == "open" else f"c={self.concurrency}"

    def summary(self) -> dict:
        ordered = sorted(self.latencies)
        out = {
            "mode": self.mode,
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
            "ok": len(self.latencies),
            "errors": {str(k): v for k, v in sorted(self.errors.items())},
            "throughput_rps": round(self.throughput, 2),
            **{f"p{q:g}_ms": _ms(percentile(ordered, q)) for q in PERCENTILES},
            "mean_ms": _ms(sum(ordered) / len(ordered)) if ordered else None,
            "max_ms": _ms(ordered[-1]) if ordered else None,
            "client_cpu_ms_per_request": (round(self.client_cpu_ms_per_request, 3)
                                          if self.requests else None),
        }
        if self.gpu:
            out["gpu"] = self.gpu
        if self.mode == "open":
            lags = sorted(self.start_lags)
            out["offered_rate_rps"] = self.offered_rate
            out["start_lag_p99_ms"] = _ms(percentile(lags, 99))
        return out

    def line(self) -> str:
        s = self.summary()
        fmt = lambda v: f"{v:8.1f}" if v is not None else "     n/a"  # noqa: E731
        return (f"{self.label():<12} {s['throughput_rps']:8.1f} req/s  p50 {fmt(s['p50_ms'])} ms  "
                f"p90 {fmt(s['p90_ms'])} ms  p99 {fmt(s['p99_ms'])} ms  errors {self.error_count}")


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

    def record(self, status: int, latency: float) -> None:
        with self.lock:
            if status == 200:
                self.result.latencies.append(latency)
            else:
                self.result.errors[status] = self.result.errors.get(status, 0) + 1

    def _report(self) -> None:
        while not self.done.wait(self.every):
            with self.lock:
                ok, errors = len(self.result.latencies), self.result.error_count
                recent = sorted(self.result.latencies[-500:])
            elapsed = time.perf_counter() - self.began
            p99 = percentile(recent, 99) * 1000 if recent else float("nan")
            self.progress(f"  [{self.result.label()}] {min(elapsed, self.duration):5.0f}/{self.duration:.0f} s  "
                          f"{ok} ok  {errors} errors  {ok / elapsed:6.1f} req/s  p99(last 500) {p99:7.1f} ms")

    def __enter__(self) -> "_Recorder":
        self.cpu0 = time.process_time()
        self.began = time.perf_counter()
        if self.progress is not None and self.duration >= 2 * self.every:
            threading.Thread(target=self._report, daemon=True).start()
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


# ---- closed loop --------------------------------------------------------------------------------
def closed_loop(send: Callable[[], int], concurrency: int, duration: float = 10.0,
                max_requests: Optional[int] = None, warmup: int = 0, *,
                progress: Optional[ProgressFn] = None, progress_every: float = 5.0) -> LoadResult:
    """``concurrency`` clients each send, wait for the answer, and send again, for ``duration`` seconds.

    ``send`` performs one request and returns its HTTP status; it is called from several threads
    at once. ``warmup`` requests are sent first, one at a time, and not recorded.
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

        threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return result


# ---- open loop ----------------------------------------------------------------------------------
def poisson_schedule(rate: float, duration: float, seed: Optional[int] = 0) -> list[float]:
    """Start offsets (seconds from 0) of a Poisson process of ``rate`` per second, within ``duration``.

    Inter-arrival gaps are exponential with mean ``1/rate``; pure given ``seed``.
    """
    if rate <= 0:
        raise ValueError(f"rate must be positive, got {rate}")
    rng = random.Random(seed)
    offsets, t = [], 0.0
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

        threads = [threading.Thread(target=client, daemon=True) for _ in range(min(max_in_flight, len(schedule)) or 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return result


# ---- payloads -----------------------------------------------------------------------------------
CONTENT_TYPES = {
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
    ".txt": "text/plain", ".json": "application/json", ".npy": "application/octet-stream",
}


@dataclass(frozen=True)
class Payload:
    body: bytes
    content_type: str
    name: str = "payload"

    def as_json_base64(self, key: str = "image") -> "Payload":
        """The same bytes, base64 under ``key`` in a JSON object (for JSON-only servers)."""
        body = json.dumps({key: base64.b64encode(self.body).decode("ascii")}).encode()
        return Payload(body, "application/json", f"{self.name} (base64 JSON)")


def load_payload(path: Path, content_type: Optional[str] = None) -> Payload:
    """A payload file; the content type comes from the extension unless given."""
    path = Path(path)
    if content_type is None:
        content_type = CONTENT_TYPES.get(path.suffix.lower())
        if content_type is None:
            raise ValueError(f"cannot tell the content type of {path.name}: give it explicitly "
                             f"(known extensions: {', '.join(sorted(CONTENT_TYPES))})")
    return Payload(path.read_bytes(), content_type, path.name)


# The text payload of the demo, the tuner and the benchmarks.
SAMPLE_TEXT = b"The delivery was late but the support team fixed it."


def sample_image(width: int = 640, height: int = 480, seed: int = 0, quality: int = 90) -> bytes:
    """A photo-like JPEG (gradients, shapes and noise), so decoding costs what a real photo costs."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width * 200, y / height * 180, (x + y) / (width + height) * 255], axis=-1)
    noisy = np.clip(base + rng.normal(0, 18, base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(noisy, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        size = int(rng.integers(20, 160))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.ellipse((x0, y0, x0 + size, y0 + size), fill=color)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


# ---- HTTP client --------------------------------------------------------------------------------
def read_token(key_file: Path, api: str = "inference") -> str:
    """The ``api`` key from the key_file.json TorchServe writes into its working directory."""
    data = json.loads(Path(key_file).read_text())
    try:
        return data[api]["key"]
    except (KeyError, TypeError):
        raise ValueError(f"{key_file} has no '{api}' key (keys: {sorted(data)})") from None


class HttpSender:
    """``send()`` POSTs the next payload to ``url``; one keep-alive connection per calling thread."""

    def __init__(self, url: str, payloads: Sequence[Payload], *, token: Optional[str] = None,
                 headers: Optional[dict] = None, timeout: float = 120.0) -> None:
        if not payloads:
            raise ValueError("at least one payload is needed")
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"only http:// URLs are supported, got {url!r}")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.timeout = timeout
        base = dict(headers or {})
        if token:
            base["Authorization"] = f"Bearer {token}"
        self.requests = [(p.body, {**base, "Content-Type": p.content_type}) for p in payloads]
        self.local = threading.local()
        self.turn = itertools.count()

    def _state(self) -> tuple[Optional[http.client.HTTPConnection], "itertools.cycle"]:
        local = self.local
        if not hasattr(local, "cycle"):
            start = next(self.turn) % len(self.requests)  # threads start on different payloads
            local.cycle = itertools.cycle(self.requests[start:] + self.requests[:start])
            local.conn = None
        return local.conn, local.cycle

    def __call__(self) -> int:
        conn, cycle = self._state()
        body, headers = next(cycle)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", self.path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
        except Exception:
            conn.close()
            self.local.conn = None
            raise
        if response.will_close:
            conn.close()
            self.local.conn = None
        return response.status

    def close(self) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            conn.close()


# ---- the client's own ceiling -------------------------------------------------------------------
_TRIVIAL_REPLY = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n"
                  b"Connection: keep-alive\r\n\r\n{\"ok\":true}")


class _TrivialProtocol(asyncio.Protocol):
    """Answers every HTTP/1.1 request with a fixed 200, keep-alive; reads bodies by Content-Length."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            length = 0
            for line in self.buffer[:head_end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            self.transport.write(_TRIVIAL_REPLY)


def _serve_trivial(port_file: Path) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_TrivialProtocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.rename(port_file)
        await server.serve_forever()

    asyncio.run(main())


class TrivialServer:
    """A do-nothing HTTP endpoint on loopback, in its own process (so it does not share our GIL)."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        port_file = workdir / f"trivial-{os.getpid()}-{time.monotonic_ns()}.port"
        self.process = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--trivial-server",
                                         str(port_file)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not port_file.is_file():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the trivial endpoint for the client ceiling did not start")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{int(port_file.read_text())}/"
        port_file.unlink()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> "TrivialServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def client_ceiling(payloads: Sequence[Payload], concurrencies: Sequence[int], duration: float = 2.0,
                   workdir: Optional[Path] = None) -> dict[int, LoadResult]:
    """This client's throughput against a trivial loopback endpoint, per concurrency.

    On a small machine the endpoint competes with the client for cores, so this is a lower
    bound of what the client can do; the per-request client CPU time is the other half of the
    story (it is CPU taken from the server under test).
    """
    import tempfile

    workdir = workdir or Path(tempfile.gettempdir())
    out = {}
    with TrivialServer(workdir) as server:
        send = HttpSender(server.url, payloads)
        for c in sorted(set(concurrencies)):
            closed_loop(send, c, duration=min(0.5, duration))  # connections, caches
            out[c] = closed_loop(send, c, duration=duration)
    return out


def _main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="internal entry points of torchserve_perf.tools.loadgen")
    parser.add_argument("--trivial-server", type=Path, metavar="PORT_FILE", required=True,
                        help="serve a trivial HTTP endpoint and write its port to PORT_FILE")
    args = parser.parse_args(argv)
    _serve_trivial(args.trivial_server)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
