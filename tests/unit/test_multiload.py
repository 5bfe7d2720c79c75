"""The load runner over client processes (tools/loadgen/runner.py) and merge (tools/loadgen/stats.py):
shares, merging, all without processes."""

from __future__ import annotations

import pytest

from torchserve_perf.tools.loadgen import Load, LoadResult, auto_processes, merge, split


@pytest.mark.parametrize("concurrency, cores, expected", [
    (1, 16, 1), (4, 16, 1), (16, 16, 4), (64, 16, 8), (128, 16, 8), (128, 2, 1), (64, 4, 2), (0, 0, 1)])
def test_auto_processes(concurrency, cores, expected):
    assert auto_processes(concurrency, cores) == expected


@pytest.mark.parametrize("concurrency, processes, expected", [
    (16, 2, [8, 8]), (5, 2, [3, 2]), (3, 8, [1, 1, 1]), (7, 1, [7])])
def test_split(concurrency, processes, expected):
    assert split(concurrency, processes) == expected and sum(expected) == concurrency


@pytest.mark.parametrize("load, processes, expected", [
    (Load(5, 1.0), 2, [Load(3, 1.0), Load(2, 1.0, seed=1)]),
    (Load(7, 1.0, warmup=5), 1, [Load(7, 1.0, warmup=5)]),
    (Load(8, 2.0, rate=400.0, seed=3), 2, [Load(4, 2.0, rate=200.0, seed=3), Load(4, 2.0, rate=200.0, seed=4)]),
    (Load(2, 1.0, rate=90.0, seed=None), 3, [Load(1, 1.0, rate=45.0, seed=None), Load(1, 1.0, rate=45.0, seed=None)]),
])
def test_a_load_is_cut_into_one_share_per_process(load, processes, expected):
    assert load.shares(processes) == expected


@pytest.mark.parametrize("kwargs, message", [
    ({"concurrency": 0, "duration": 1.0}, "concurrency"), ({"concurrency": 1, "duration": 0.0}, "duration"),
    ({"concurrency": 1, "duration": 1.0, "rate": 0.0}, "rate"),
    ({"concurrency": 1, "duration": 1.0, "warmup": -1}, "warmup")])
def test_a_load_is_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Load(**kwargs)


def test_merge_keeps_every_latency_and_error_over_the_longest_run():
    a = LoadResult(concurrency=3, seconds=2.0, latencies=[0.1, 0.2], errors={503: 1}, client_cpu_s=0.5)
    b = LoadResult(concurrency=2, seconds=2.5, latencies=[0.3], errors={503: 2, 0: 1}, client_cpu_s=0.25)
    merged = merge([a, b])
    assert merged.concurrency == 5 and merged.seconds == 2.5
    assert sorted(merged.latencies) == [0.1, 0.2, 0.3] and merged.errors == {503: 3, 0: 1}
    assert merged.client_cpu_s == 0.75 and merged.throughput == pytest.approx(3 / 2.5)


def test_slices_of_one_point_merge_into_one_result() -> None:
    """Slices taken one after another (compare's rounds): their seconds add up, the clients stay."""
    a = LoadResult(concurrency=4, seconds=2.0, latencies=[0.1, 0.2], errors={503: 1}, client_cpu_s=0.1)
    b = LoadResult(concurrency=4, seconds=3.0, latencies=[0.3] * 4, errors={503: 2, 0: 1}, client_cpu_s=0.2,
                   started=2.0)
    merged = merge([a, b])
    assert (merged.concurrency, merged.seconds, merged.errors) == (4, 5.0, {503: 3, 0: 1})
    assert merged.throughput == 6 / 5.0 and sorted(merged.latencies) == [0.1, 0.2] + [0.3] * 4
    assert merged.client_cpu_s == pytest.approx(0.3)


@pytest.mark.parametrize("windows, expected", [
    ([(0.0, 1.0, 2)], (1.0, 2)),                                   # one part is itself
    ([(100.0, 1.0, 2), (100.0, 1.0, 2)], (1.0, 4)),                # side by side
    ([(100.0, 1.0, 2), (100.2, 1.0, 2)], (1.2, 4)),                # side by side, one started late
    ([(0.0, 1.0, 2), (5.0, 1.0, 2), (10.0, 2.0, 2)], (4.0, 2)),    # slices with gaps between them
    ([(0.0, 1.0, 2), (0.0, 1.0, 2), (5.0, 1.0, 2), (5.0, 1.0, 2)], (2.0, 4)),  # rounds of two processes
    ([(0.0, 3.0, 1), (1.0, 1.0, 4)], (3.0, 5)),                    # one inside the other
])
def test_merge_tells_parts_side_by_side_from_slices_in_turn(windows, expected):
    parts = [LoadResult(concurrency=c, seconds=s, latencies=[0.01], started=t) for t, s, c in windows]
    merged = merge(parts)
    assert (merged.seconds, merged.concurrency) == (pytest.approx(expected[0]), expected[1])
    assert merged.started == min(t for t, _, _ in windows) and len(merged.latencies) == len(windows)


def test_merge_keeps_the_last_gpu_sample_and_refuses_nonsense():
    a = LoadResult(concurrency=1, seconds=1.0, gpu=[{"index": 0}])
    b = LoadResult(concurrency=1, seconds=1.0, started=1.0)
    assert merge([a, b]).gpu == [{"index": 0}]
    with pytest.raises(ValueError, match="nothing"):
        merge([])
    with pytest.raises(ValueError, match="different loops"):
        merge([a, LoadResult(concurrency=1, seconds=1.0, mode="open", offered_rate=1.0)])


def test_bench_parses_client_processes():
    from torchserve_perf.tools import bench

    assert bench.parse_args(["--url", "http://x", "--client-processes", "auto"]).client_processes == "auto"
    assert bench.parse_args(["--url", "http://x", "--client-processes", "3"]).client_processes == 3
    assert bench.parse_args(["--url", "http://x"]).client_processes == "auto"


def test_merge_of_open_loop_parts():
    a = LoadResult(concurrency=4, seconds=1.0, latencies=[0.1], mode="open", offered_rate=100.0, start_lags=[0.01])
    b = LoadResult(concurrency=4, seconds=1.2, latencies=[0.2], mode="open", offered_rate=100.0, start_lags=[0.02])
    merged = merge([a, b])
    assert merged.mode == "open" and merged.offered_rate == 200.0 and merged.start_lags == [0.01, 0.02]
