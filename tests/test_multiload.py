"""The multi-process load generator (tools/multiload.py): shares, merging, a real two-process run."""

from __future__ import annotations

import pytest

from torchserve_perf.tools.loadgen import LoadResult, Payload
from torchserve_perf.tools.multiload import TrivialServers, auto_processes, closed_loop_processes, merge, split

BODY = [Payload(b"0123456789", "application/octet-stream")]


@pytest.mark.parametrize("concurrency, cores, expected", [
    (1, 16, 1), (4, 16, 1), (16, 16, 4), (64, 16, 8), (128, 16, 8), (128, 2, 1), (64, 4, 2), (0, 0, 1)])
def test_auto_processes(concurrency, cores, expected):
    assert auto_processes(concurrency, cores) == expected


@pytest.mark.parametrize("concurrency, processes, expected", [
    (16, 2, [8, 8]), (5, 2, [3, 2]), (3, 8, [1, 1, 1]), (7, 1, [7])])
def test_split(concurrency, processes, expected):
    assert split(concurrency, processes) == expected and sum(expected) == concurrency


def test_merge_keeps_every_latency_and_error_over_the_longest_run():
    a = LoadResult(concurrency=3, seconds=2.0, latencies=[0.1, 0.2], errors={503: 1}, client_cpu_s=0.5)
    b = LoadResult(concurrency=2, seconds=2.5, latencies=[0.3], errors={503: 2, 0: 1}, client_cpu_s=0.25)
    merged = merge([a, b])
    assert merged.concurrency == 5 and merged.seconds == 2.5
    assert sorted(merged.latencies) == [0.1, 0.2, 0.3] and merged.errors == {503: 3, 0: 1}
    assert merged.client_cpu_s == 0.75 and merged.throughput == pytest.approx(3 / 2.5)


def test_two_processes_load_a_real_endpoint_together():
    with TrivialServers(2) as server:
        result = closed_loop_processes(server.url, BODY, concurrency=4, duration=0.5, processes=2, warmup=5)
        alone = closed_loop_processes(server.url, BODY, concurrency=2, duration=0.3, processes=1)
    assert result.concurrency == 4 and result.errors == {}
    assert len(result.latencies) > 50 and result.client_cpu_s > 0
    assert alone.concurrency == 2 and len(alone.latencies) > 10


def test_a_dead_endpoint_counts_errors_and_a_broken_child_raises():
    with TrivialServers(1) as server:
        url = server.url
    result = closed_loop_processes(url, BODY, concurrency=2, duration=0.3, processes=2)  # nothing listens now
    assert not result.latencies and result.errors.get(0, 0) > 0
    with pytest.raises(RuntimeError, match="a load process failed: ValueError: only http://"):
        closed_loop_processes("https://127.0.0.1:1/", BODY, concurrency=2, duration=0.3, processes=2)


def test_bench_spreads_its_closed_loop_runs_and_ceilings_over_processes():
    from torchserve_perf.tools import bench

    config = bench.BenchConfig("m", (4,), (200.0,), 0.5, 0.0, 0, 4, True, client_processes=2)
    with TrivialServers(2) as server:
        runs, ceilings = bench.run_benchmark(config, server.url, None, BODY, progress=None)
    assert runs[0].concurrency == 4 and runs[0].errors == {} and len(runs[0].latencies) > 50
    assert runs[1].mode == "open" and runs[1].offered_rate == 200.0 and runs[1].errors == {}
    assert set(ceilings) == {4} and ceilings[4].throughput > 0  # the open loop's 4 threads share the key
    report = bench.build_report(config, {"url": server.url}, BODY, runs, ceilings)
    assert report["runs"][0]["ok"] == len(runs[0].latencies) and "gpu" not in report["runs"][0]  # no GPUs here


def test_bench_parses_client_processes():
    from torchserve_perf.tools import bench

    assert bench.parse_args(["--url", "http://x", "--client-processes", "auto"]).client_processes == "auto"
    assert bench.parse_args(["--url", "http://x", "--client-processes", "3"]).client_processes == 3
    assert bench.parse_args(["--url", "http://x"]).client_processes == "auto"


def test_open_loop_spread_over_processes_offers_the_whole_rate():
    from torchserve_perf.tools.multiload import open_loop_processes

    with TrivialServers(2) as server:
        result = open_loop_processes(server.url, BODY, rate=400, duration=1.0, processes=2, max_in_flight=8, seed=3)
    assert result.mode == "open" and result.offered_rate == 400 and result.concurrency == 8
    assert result.errors == {} and 300 <= len(result.latencies) <= 500  # two Poisson streams of 200/s for 1 s
    assert len(result.start_lags) == len(result.latencies)
    assert result.summary()["offered_rate_rps"] == 400


def test_merge_of_open_loop_parts():
    a = LoadResult(concurrency=4, seconds=1.0, latencies=[0.1], mode="open", offered_rate=100.0, start_lags=[0.01])
    b = LoadResult(concurrency=4, seconds=1.2, latencies=[0.2], mode="open", offered_rate=100.0, start_lags=[0.02])
    merged = merge([a, b])
    assert merged.mode == "open" and merged.offered_rate == 200.0 and merged.start_lags == [0.01, 0.02]
