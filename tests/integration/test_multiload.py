"""test_multiload: the load runner with real client processes against the trivial endpoint."""

from __future__ import annotations

import pytest

from torchserve_perf.tools.loadgen import Load, Payload, Target, TrivialServer, run_load

BODY = [Payload(b"0123456789", "application/octet-stream")]


def test_two_processes_load_a_real_endpoint_together():
    with TrivialServer(2) as server:
        result = run_load(Target.of(server.url, BODY), Load(4, 0.5, warmup=5), processes=2)
        alone = run_load(Target.of(server.url, BODY), Load(2, 0.3), processes=1)
    assert result.concurrency == 4 and result.errors == {}
    assert len(result.latencies) > 50 and result.client_cpu_s > 0
    assert alone.concurrency == 2 and len(alone.latencies) > 10


def test_a_dead_endpoint_counts_errors_and_a_broken_child_raises():
    with TrivialServer(1) as server:
        url = server.url
    result = run_load(Target.of(url, BODY), Load(2, 0.3), processes=2)  # nothing listens now
    assert not result.latencies and result.errors.get(0, 0) > 0
    with pytest.raises(RuntimeError, match="a load process failed: ValueError: only http://"):
        run_load(Target.of("https://127.0.0.1:1/", BODY), Load(2, 0.3), processes=2)


def test_bench_spreads_its_closed_loop_runs_and_ceilings_over_processes():
    from torchserve_perf.tools import bench

    config = bench.BenchConfig("m", (4,), (200.0,), 0.5, 0.0, 0, 4, True, client_processes=2)
    with TrivialServer(2) as server:
        runs, ceilings = bench.run_benchmark(config, server.url, None, BODY, progress=None)
    assert runs[0].concurrency == 4 and runs[0].errors == {} and len(runs[0].latencies) > 50
    assert runs[1].mode == "open" and runs[1].offered_rate == 200.0 and runs[1].errors == {}
    assert set(ceilings) == {4} and ceilings[4].throughput > 0  # the open loop's 4 threads share the key
    report = bench.build_report(config, {"url": server.url}, BODY, runs, ceilings)
    assert report["runs"][0]["ok"] == len(runs[0].latencies) and "gpu" not in report["runs"][0]  # no GPUs here


def test_open_loop_spread_over_processes_offers_the_whole_rate():
    with TrivialServer(2) as server:
        result = run_load(Target.of(server.url, BODY), Load(8, 1.0, rate=400, seed=3), processes=2)
    assert result.mode == "open" and result.offered_rate == 400 and result.concurrency == 8
    assert result.errors == {} and 300 <= len(result.latencies) <= 500  # two Poisson streams of 200/s for 1 s
    assert len(result.start_lags) == len(result.latencies)
    assert result.summary()["offered_rate_rps"] == 400
