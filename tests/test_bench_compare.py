"""torchserve-perf compare's pieces that need no server: tuned settings, ratios, goals, the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from torchserve_perf.tools import compare
from torchserve_perf.tools.compare import SystemResult
from torchserve_perf.tools.loadgen import LoadResult


def test_tuned_settings_read_the_tuners_best_json(tmp_path: Path) -> None:
    best = {"workers": 1, "intra_op_threads": 2, "batch_size": 8, "max_batch_delay_ms": 20,
            "optimizations": ["channels_last"], "p99_target_ms": 250, "throughput_rps": 51.2, "p99_ms": 240.0}
    path = tmp_path / "best.json"
    path.write_text(json.dumps(best))
    settings, source = compare.tuned_settings(path)
    assert settings == {k: best[k] for k in compare.FALLBACK_TUNED}
    assert "p99 target 250 ms" in source and "FALLBACK" not in source


@pytest.mark.parametrize("content", [None, "{not json", json.dumps({"workers": 2})])
def test_tuned_settings_fall_back_and_say_so(tmp_path: Path, content: str) -> None:
    path = tmp_path / "best.json"
    if content is not None:
        path.write_text(content)
    settings, source = compare.tuned_settings(path)
    assert settings == compare.FALLBACK_TUNED and source.startswith("FALLBACK")


def test_tuned_model_config_overrides_the_demo_archive_settings() -> None:
    from torchserve_perf.tools.model_store import default_specs

    base = default_specs()[0].model_config
    config = compare.tuned_model_config(base, {"workers": 1, "intra_op_threads": 2, "batch_size": 8,
                                               "max_batch_delay_ms": 20, "optimizations": ["channels_last"]})
    assert (config["minWorkers"], config["maxWorkers"], config["batchSize"], config["maxBatchDelay"]) == (1, 1, 8, 20)
    assert config["handler"]["threads"]["intra_op"] == 2
    assert config["handler"]["optimizations"] == ["channels_last"]
    assert config["handler"]["image"] == base["handler"]["image"]  # the rest of the archive's config is kept
    assert base.get("batchSize") == 2  # the spec itself is untouched
    assert "workers 1, batch 8, delay 20 ms, intra-op threads 2, optimizations channels_last" == \
        compare.describe_model_config(config)


def _system(key: str, rps: dict[int, float], p99: dict[int, float]) -> SystemResult:
    result = SystemResult(key, "settings")
    for c, rate in rps.items():
        run = LoadResult(concurrency=c, seconds=10, latencies=[p99[c] / 1000] * int(rate * 10))
        result.runs[c] = run.summary()
    return result


def _results() -> dict[str, SystemResult]:
    cs = (1, 4, 8)
    return {
        "stock_default": _system("stock_default", dict.fromkeys(cs, 10.0), dict.fromkeys(cs, 1900.0)),
        "stock_guided": _system("stock_guided", dict.fromkeys(cs, 37.5), dict.fromkeys(cs, 165.0)),
        "ours_default": _system("ours_default", dict.fromkeys(cs, 45.0), dict.fromkeys(cs, 150.0)),
        "ours_tuned": _system("ours_tuned", {1: 30.0, 4: 50.0, 8: 54.0}, {1: 40.0, 4: 120.0, 8: 200.0}),
        "litserve": _system("litserve", dict.fromkeys(cs, 40.0), dict.fromkeys(cs, 200.0)),
    }


RAW = {"best_eager": {"variant": "eager", "threads": 2, "batch": 8, "images_per_s": 42.0},
       "best_optimized": {"variant": "compile", "threads": 2, "batch": 8, "images_per_s": 55.0},
       "limit": {"variant": "compile", "threads": 2, "batch": 8, "images_per_s": 55.0},
       "preprocess_ms_per_image": 3.0, "points": []}


def test_ratios_and_goals() -> None:
    results = _results()
    ratios = compare.ratios(results, RAW, (1, 4, 8))
    assert ratios["stock_default"]["4"] == {"throughput": 5.0, "p99": pytest.approx(0.06, abs=0.01)}
    assert ratios["stock_guided"]["4"]["throughput"] == pytest.approx(1.33, abs=0.01)
    assert ratios["raw_optimized"]["8"]["throughput"] == pytest.approx(54 / 55, abs=0.01)
    goals = {g["goal"].split(",")[0].split(" (")[0]: g for g in compare.goals(results, RAW, (1, 4, 8))}
    assert goals["ours tuned vs stock defaults"]["passed"] is True
    assert goals["ours tuned vs stock 1 thread/worker"]["passed"] is True  # 1.33x and p99 120 <= 165
    assert goals["ours tuned"]["passed"] is True and goals["ours tuned"]["concurrency"] == "best"  # 54/55 >= 0.95
    assert goals["ours tuned vs LitServe"]["passed"] is True
    # a slower p99 than stock-guided fails that goal even with the throughput
    results["ours_tuned"] = _system("ours_tuned", dict.fromkeys((1, 4, 8), 60.0), dict.fromkeys((1, 4, 8), 400.0))
    guided = [g for g in compare.goals(results, RAW, (1, 4, 8)) if "1 thread/worker" in g["goal"]][0]
    assert guided["value"] == 1.6 and guided["passed"] is False


def test_goals_are_unknown_when_a_system_failed() -> None:
    results = _results()
    results["litserve"] = SystemResult("litserve", "s", error="did not start")
    lit = [g for g in compare.goals(results, None, (1, 4, 8)) if "LitServe" in g["goal"]][0]
    assert lit["passed"] is None and lit["value"] is None


def test_report_renders_every_system_and_goal() -> None:
    results = _results()
    results["litserve"] = SystemResult("litserve", "s", error="did not start")
    report = {
        "created": "now", "machine": {"cores": 2, "cpu": "cpu"}, "quick": False, "seconds": 20, "warmup": 5,
        "concurrencies": [1, 4, 8], "payload": {"name": "payload.jpg", "bytes": 1000}, "raw": RAW,
        "systems": {k: r.as_dict() for k, r in results.items()}, "ratios": compare.ratios(results, RAW, (1, 4, 8)),
        "goals": compare.goals(results, RAW, (1, 4, 8)), "tuned_source": "from best.json",
        "client_ceiling": {"1": {"throughput_rps": 2000.0, "client_cpu_ms_per_request": 0.2}},
        "client_notes": [], "command": "make compare",
    }
    text = compare.render(report)
    for title in compare.TITLES.values():
        assert title in text
    assert "**50.0** · 120 · 120" in text  # ours tuned at 4 clients: req/s · p50 · p99
    assert "failed: did not start" in text
    assert "| ours tuned vs stock defaults, throughput | 4 clients | 5.00x | >= 4x | yes |" in text
    assert "compiled **55.0** img/s" in text and "Regenerate: `make compare`" in text
    json.dumps(report)


def test_config_rejects_unknown_systems(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown systems"):
        compare.CompareConfig(1, 0, (1,), ("nope",), tmp_path, True, False, tmp_path, tmp_path)


def test_defaults_goals_at_every_concurrency() -> None:
    cs = (1, 4, 8)
    results = {
        "stock_default": _system("stock_default", {1: 30.0, 4: 8.0, 8: 9.0}, {1: 50.0, 4: 900.0, 8: 1900.0}),
        "stock_guided": _system("stock_guided", {1: 20.0, 4: 25.0, 8: 25.0}, {1: 60.0, 4: 300.0, 8: 500.0}),
        "ours_default": _system("ours_default", {1: 31.0, 4: 34.0, 8: 30.0}, {1: 45.0, 4: 250.0, 8: 520.0}),
    }
    goals = {g["concurrency"]: g for g in compare.defaults_goals(results, cs)}
    # 1 client: against the better stock (stock defaults here), p99 45 <= 50.
    assert goals[1]["against"] == "stock_default" and goals[1]["value"] == 1.03 and goals[1]["passed"] is True
    assert goals[4]["against"] == "stock_guided" and goals[4]["value"] == 1.36 and goals[4]["passed"] is True
    assert goals[8]["value"] == 1.2 and goals[8]["passed"] is False  # below 1.3x, and p99 520 > 500
    results["ours_default"].runs[1]["p99_ms"] = 51.0
    assert compare.defaults_goals(results, cs)[0]["passed"] is False  # faster but a worse p99 fails
    del results["stock_default"]
    assert compare.defaults_goals(results, cs)[0]["against"] == "stock_guided"
    ratios = compare.defaults_ratios(results, cs)
    assert ratios["stock_guided"]["4"] == {"throughput": 1.36, "p99": pytest.approx(0.83, abs=0.01)}
    assert ratios["stock_default"]["4"] == {"throughput": None, "p99": None}
    report = {
        "created": "now", "machine": {"cores": 2, "cpu": "cpu"}, "quick": True, "seconds": 3, "warmup": 1,
        "concurrencies": list(cs), "payload": {"name": "payload.jpg", "bytes": 1000}, "raw": None,
        "systems": {k: r.as_dict() for k, r in results.items()}, "ratios": compare.ratios(results, None, cs),
        "defaults_ratios": ratios, "goals": compare.defaults_goals(results, cs), "tuned_source": "-",
        "client_ceiling": {}, "client_notes": [], "command": "c",
    }
    text = compare.render(report)
    assert "## Ours (defaults) against stock" in text and "ours tuned vs" not in text
    assert "| stock TorchServe, 1 thread/worker | 1.55x (p99 0.85x) | 1.36x (p99 0.83x) | 1.20x (p99 1.04x) |" in text


def test_slices_of_one_point_merge_into_one_result() -> None:
    a = LoadResult(concurrency=4, seconds=2.0, latencies=[0.1, 0.2], errors={503: 1}, client_cpu_s=0.1)
    b = LoadResult(concurrency=4, seconds=3.0, latencies=[0.3] * 4, errors={503: 2, 0: 1}, client_cpu_s=0.2)
    merged = compare.merge_results([a, b])
    assert (merged.concurrency, merged.seconds, merged.errors) == (4, 5.0, {503: 3, 0: 1})
    assert merged.throughput == 6 / 5.0 and sorted(merged.latencies) == [0.1, 0.2] + [0.3] * 4
    assert merged.client_cpu_s == pytest.approx(0.3)


def test_rounds_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rounds"):
        compare.CompareConfig(1, 0, (1,), ("ours_default",), tmp_path, True, False, tmp_path, tmp_path, rounds=0)
