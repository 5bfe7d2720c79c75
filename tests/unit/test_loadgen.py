"""The load-generation library: percentiles, the Poisson schedule, both loops, payloads, the HTTP client."""


from __future__ import annotations

import json
import math
import statistics
import threading
import time
from pathlib import Path

import pytest

from torchserve_perf.tools import loadgen
from torchserve_perf.tools.loadgen import LoadResult, Payload


# ---- percentiles on known data ------------------------------------------------------------------
def test_percentile_nearest_rank_on_1_to_100() -> None:
    values = [float(v) for v in range(1, 101)]
    assert loadgen.percentile(values, 50) == 50
    assert loadgen.percentile(values, 90) == 90
    assert loadgen.percentile(values, 99) == 99
    assert loadgen.percentile(values, 99.9) == 100
    assert loadgen.percentile(values, 100) == 100
    assert loadgen.percentile(values, 0) == 1


def test_percentile_small_and_empty() -> None:
    assert loadgen.percentile([7.0], 99.9) == 7.0
    assert loadgen.percentile([1.0, 2.0], 50) == 1.0
    assert loadgen.percentile([1.0, 2.0], 51) == 2.0
    assert math.isnan(loadgen.percentile([], 50))


def test_summary_reports_every_percentile_in_ms() -> None:
    result = LoadResult(concurrency=2, seconds=2.0, latencies=[i / 1000 for i in range(1000, 0, -1)],
                        errors={503: 3, 0: 1})
    s = result.summary()
    assert (s["p50_ms"], s["p90_ms"], s["p95_ms"], s["p99_ms"], s["p99.9_ms"]) == (500, 900, 950, 990, 999)
    assert s["ok"] == 1000 and s["requests"] == 1004 and s["errors"] == {"0": 1, "503": 3}
    assert s["throughput_rps"] == 500.0
    assert result.pct(99) == pytest.approx(0.99)


def test_summary_of_an_all_failed_run_is_valid_json() -> None:
    s = LoadResult(concurrency=1, seconds=1.0, errors={0: 5}).summary()
    assert s["p99_ms"] is None and s["throughput_rps"] == 0
    json.dumps(s, allow_nan=False)


def test_cdf_points_are_monotonic_and_end_at_one() -> None:
    values = sorted(float(v) for v in range(10_000))
    points = loadgen.cdf_points(values, points=50)
    assert len(points) == 50
    assert points[0] == (0.0, 1 / 10_000) and points[-1] == (9999.0, 1.0)
    assert all(a[0] <= b[0] and a[1] < b[1] for a, b in zip(points, points[1:]))
    assert loadgen.cdf_points([3.0, 4.0]) == [(3.0, 0.5), (4.0, 1.0)]
    assert loadgen.cdf_points([]) == []


# ---- the Poisson schedule -----------------------------------------------------------------------
def test_poisson_schedule_is_deterministic_for_a_seed() -> None:
    assert loadgen.poisson_schedule(50, 10, seed=7) == loadgen.poisson_schedule(50, 10, seed=7)
    assert loadgen.poisson_schedule(50, 10, seed=7) != loadgen.poisson_schedule(50, 10, seed=8)


def test_poisson_schedule_has_the_asked_rate_and_exponential_gaps() -> None:
    rate, duration = 200.0, 100.0
    offsets = loadgen.poisson_schedule(rate, duration, seed=1)
    assert all(0 < t < duration for t in offsets)
    assert offsets == sorted(offsets)
    # count ~ Poisson(rate * duration): mean 20000, sd ~141
    assert abs(len(offsets) - rate * duration) < 4 * math.sqrt(rate * duration)
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(1 / rate, rel=0.03)
    assert statistics.pstdev(gaps) == pytest.approx(mean, rel=0.05)  # exponential: sd == mean
    # memoryless: P(gap > mean) = e^-1
    assert sum(g > mean for g in gaps) / len(gaps) == pytest.approx(math.exp(-1), abs=0.02)
    # arrivals per 1 s window: variance == mean (a fixed-interval schedule would have variance 0)
    counts = [0] * int(duration)
    for t in offsets:
        counts[int(t)] += 1
    assert statistics.pvariance(counts) == pytest.approx(statistics.fmean(counts), rel=0.3)


def test_poisson_schedule_rejects_a_non_positive_rate() -> None:
    with pytest.raises(ValueError):
        loadgen.poisson_schedule(0, 1)


# ---- the loops, against an in-process fake "server" ---------------------------------------------
def test_closed_loop_keeps_concurrency_and_counts_errors() -> None:
    in_flight, peak, lock, calls = [0], [0], threading.Lock(), [0]

    def send() -> int:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            calls[0] += 1
            n = calls[0]
        time.sleep(0.01)
        with lock:
            in_flight[0] -= 1
        if n % 10 == 0:
            raise ConnectionError("every tenth fails")
        return 503 if n % 10 == 5 else 200

    lines: list[str] = []
    result = loadgen.closed_loop(send, 4, duration=0.6, progress=lines.append, progress_every=0.2)
    assert peak[0] == 4
    assert result.requests == calls[0]
    assert result.errors.get(0, 0) >= 1 and result.errors.get(503, 0) >= 1
    assert 0.005 < result.pct(50) < 0.1
    assert result.throughput == pytest.approx(len(result.latencies) / result.seconds)
    assert lines and "ok" in lines[0]  # progress lines came while it ran


def test_closed_loop_max_requests_and_warmup() -> None:
    calls = [0]

    def send() -> int:
        calls[0] += 1
        return 200

    result = loadgen.closed_loop(send, 3, duration=5, max_requests=10, warmup=2)
    assert result.requests == 10 and calls[0] == 12


def test_open_loop_measures_from_the_scheduled_start() -> None:
    """A server that stalls 0.3 s once: requests scheduled during the stall must show the wait."""
    stall = threading.Event()

    def send() -> int:
        if not stall.is_set():
            stall.set()
            time.sleep(0.3)
        return 200

    # one client thread: while it is stuck, the schedule keeps running (no coordinated omission)
    result = loadgen.open_loop(send, rate=100, duration=1.0, seed=3, max_in_flight=1)
    expected = len(loadgen.poisson_schedule(100, 1.0, seed=3))
    assert result.requests == expected and result.mode == "open" and result.offered_rate == 100
    stalled = sorted(result.latencies, reverse=True)
    # the stalled request plus those scheduled behind it: about 30 waited 100+ ms
    assert stalled[0] >= 0.29
    assert sum(lat > 0.1 for lat in stalled) >= 10
    assert result.summary()["start_lag_p99_ms"] > 100


def test_open_loop_counts_requests_that_never_started() -> None:
    result = loadgen.open_loop(lambda: (time.sleep(0.2), 200)[1], rate=200, duration=0.5, seed=0, max_in_flight=1,
                               grace=0.1)
    assert result.errors.get(loadgen.NOT_SENT, 0) > 50
    assert result.requests == len(loadgen.poisson_schedule(200, 0.5, seed=0))


# ---- payloads and HTTP ---------------------------------------------------------------------------
@pytest.mark.parametrize("name,content_type", [("a.jpg", "image/jpeg"), ("b.PNG", "image/png"), ("c.txt", "text/plain"),
                                               ("d.json", "application/json"), ("e.npy", "application/octet-stream")])
def test_load_payload_content_types(tmp_path: Path, name: str, content_type: str) -> None:
    (tmp_path / name).write_bytes(b"xyz")
    payload = loadgen.load_payload(tmp_path / name)
    assert payload == Payload(b"xyz", content_type, name)
    assert loadgen.load_payload(tmp_path / name, "application/x-custom").content_type == "application/x-custom"


def test_load_payload_unknown_extension_needs_a_content_type(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(b"1")
    with pytest.raises(ValueError, match="content type"):
        loadgen.load_payload(tmp_path / "blob.bin")


def test_json_base64_payload_round_trips() -> None:
    import base64

    wrapped = Payload(b"\xff\xd8jpeg", "image/jpeg").as_json_base64("image")
    assert wrapped.content_type == "application/json"
    assert base64.b64decode(json.loads(wrapped.body)["image"]) == b"\xff\xd8jpeg"


def test_read_token(tmp_path: Path) -> None:
    key_file = tmp_path / "key_file.json"
    key_file.write_text(json.dumps({"management": {"key": "m"}, "inference": {"key": "i"}, "API": {"key": "a"}}))
    assert loadgen.read_token(key_file) == "i"
    assert loadgen.read_token(key_file, "management") == "m"
    with pytest.raises(ValueError):
        loadgen.read_token(key_file, "nope")


def test_http_sender_counts_a_dead_server_as_errors(tmp_path: Path) -> None:
    send = loadgen.HttpSender(f"http://127.0.0.1:{loadgen.free_port()}/x", [Payload(b"1", "text/plain")], timeout=2)
    result = loadgen.closed_loop(send, 2, duration=0.2)
    assert result.latencies == [] and result.errors.get(0, 0) > 0


def test_sample_image_is_a_decodable_jpeg() -> None:
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(loadgen.sample_image(320, 240)))
    assert image.format == "JPEG" and image.size == (320, 240)



def test_free_ports_are_distinct_and_unbound() -> None:
    import socket

    from torchserve_perf.tools.loadgen.ports import free_ports

    for _ in range(20):  # one at a time the kernel may repeat a port; held together it cannot
        ports = free_ports(5)
        assert len(set(ports)) == 5
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", port))  # released: a server can take it
