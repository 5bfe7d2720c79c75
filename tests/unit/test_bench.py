"""torchserve-perf bench without a server: arguments, configs, loads and report notes."""


from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from torchserve_perf.tools.loadgen import LoadResult


def load_bench() -> ModuleType:
    from torchserve_perf.tools import bench

    return bench


@pytest.mark.parametrize("argv", [[], ["--url", "http://x", "--model-store", "s"],
                                  ["--url", "http://x", "--key-file", "k", "--token=t"]])
def test_bench_rejects_contradictory_targets(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        load_bench().parse_args(argv)
    assert exc.value.code == 2


def test_bench_config_validation() -> None:
    bench = load_bench()
    with pytest.raises(ValueError, match="concurrency"):
        bench.BenchConfig("m", (), (), 1, 0, 0, 8, False)
    with pytest.raises(ValueError):
        bench.BenchConfig("m", (0,), (), 1, 0, 0, 8, False)


def _run(concurrency: int, rps: float, seconds: float = 10, cpu_s: float = 0.1, **kw: Any) -> LoadResult:
    n = int(rps * seconds)
    return LoadResult(concurrency=concurrency, seconds=seconds, latencies=[0.01] * n, client_cpu_s=cpu_s, **kw)


def test_ceiling_notes_flag_a_client_bound_run_and_an_overloaded_open_loop() -> None:
    bench = load_bench()
    ceilings = {1: _run(1, 1000), 8: _run(8, 2000)}
    fine, bound = _run(1, 100), _run(8, 1500)
    hot = _run(1, 10, cpu_s=5.0)  # half a core of client CPU on 2 cores
    overloaded = _run(64, 30, mode="open", offered_rate=60.0)
    notes = bench.ceiling_notes([fine, bound, hot, overloaded], ceilings, cores=2)
    assert not any(n.startswith("c=1: 100") for n in notes)
    assert any("c=8" in n and "75%" in n and "bottleneck" in n for n in notes)
    assert any("0.50 of 2 cores" in n for n in notes)
    assert any("open 60/s" in n and "capacity" in n for n in notes)



# TorchServe's keys are URL-safe random strings: about one in 64 begins with '-'.
DASHED_KEY = "-Jm3T0kVq9"


@pytest.mark.parametrize("argv, token", [
    (["--url", "http://x", f"--token={DASHED_KEY}"], DASHED_KEY),
    (["--url", "http://x", "--token=plain"], "plain"),
    (["--url", "http://x", "--token", "plain"], "plain"),
    (["--url", "http://x"], None),
])
def test_a_token_is_read_whatever_its_first_character(argv: list[str], token: str) -> None:
    assert load_bench().parse_args(argv).token == token


def test_a_dashed_token_after_a_space_is_an_error_that_names_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        load_bench().parse_args(["--url", "http://x", "--token", DASHED_KEY])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("torchserve-perf bench: error: argument --token: expected one argument")
    assert "--token=VALUE" in err and "--key-file" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("message, hint", [
    ("argument --token: expected one argument", True),
    ("argument --url: expected one argument", False),
    ("give --key-file or --token, not both", False),
    ("unrecognized arguments: -Jm3", False),
])
def test_usage_errors_about_a_missing_token_value_name_the_equals_form(message: str, hint: bool) -> None:
    explained = load_bench().explain_usage_error(message)
    assert explained.startswith(message) and (explained != message) == hint
    assert ("--token=VALUE" in explained) == hint


@pytest.mark.parametrize("concurrencies, rates, warmup, loads, warm, levels", [
    ((1, 4), (), 1.0, [(1, None, 0), (4, None, 0)], 4, [1, 4]),
    ((), (20.0,), 2.0, [(8, 20.0, 7)], 2, [8]),
    ((2,), (5.0, 10.0), 0.0, [(2, None, 0), (8, 5.0, 7), (8, 10.0, 7)], None, [2, 8]),
])
def test_a_bench_config_makes_its_loads(concurrencies: tuple, rates: tuple, warmup: float, loads: list,
                                        warm: Any, levels: list) -> None:
    config = load_bench().BenchConfig("m", concurrencies, rates, 3.0, warmup, 7, 8, True)
    made = config.loads()
    assert [(load.concurrency, load.rate, load.seed if load.rate else 0) for load in made] == loads
    assert all(load.duration == 3.0 and load.warmup == 0 for load in made)
    warmup_load = config.warmup_load()
    assert (warmup_load.concurrency if warmup_load else None) == warm
    assert warmup_load is None or warmup_load.duration == warmup
    assert config.ceiling_levels() == levels
