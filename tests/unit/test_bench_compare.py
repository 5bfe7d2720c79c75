"""torchserve-perf compare's pieces that need no server: tuned settings, ratios, goals, the report,
and the order of interleaved rounds."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Optional

import pytest

from torchserve_perf.tools import compare
from torchserve_perf.tools.compare import Goal, SystemResult
from torchserve_perf.tools.loadgen import LoadResult

# The project's goals (what `make compare` and `make compare-defaults` pass with --goals).
GOALS = Path(__file__).resolve().parents[2] / "scripts" / "goals"


def tuned_goals(results: dict[str, SystemResult], raw: Optional[dict], cs: tuple[int, ...]) -> list[dict]:
    return compare.evaluate(compare.load_goals(GOALS / "compare-tuned.yaml"), results, raw, cs)


def defaults_goals(results: dict[str, SystemResult], cs: tuple[int, ...]) -> list[dict]:
    return compare.evaluate(compare.load_goals(GOALS / "compare-defaults.yaml"), results, None, cs)


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
    goals = {g["goal"].split(",")[0].split(" (")[0]: g for g in tuned_goals(results, RAW, (1, 4, 8))}
    assert goals["ours tuned vs stock defaults"]["passed"] is True
    assert goals["ours tuned vs stock 1 thread/worker"]["passed"] is True  # 1.33x and p99 120 <= 165
    assert goals["ours tuned"]["passed"] is True and goals["ours tuned"]["concurrency"] == "best"  # 54/55 >= 0.95
    assert goals["ours tuned vs LitServe"]["passed"] is True
    # a slower p99 than stock-guided fails that goal even with the throughput
    results["ours_tuned"] = _system("ours_tuned", dict.fromkeys((1, 4, 8), 60.0), dict.fromkeys((1, 4, 8), 400.0))
    guided = [g for g in tuned_goals(results, RAW, (1, 4, 8)) if "1 thread/worker" in g["goal"]][0]
    assert guided["value"] == 1.6 and guided["passed"] is False


def test_goals_are_unknown_when_a_system_failed() -> None:
    results = _results()
    results["litserve"] = SystemResult("litserve", "s", error="did not start")
    lit = [g for g in tuned_goals(results, None, (1, 4, 8)) if "LitServe" in g["goal"]][0]
    assert lit["passed"] is None and lit["value"] is None


def test_report_renders_every_system_and_goal() -> None:
    results = _results()
    results["litserve"] = SystemResult("litserve", "s", error="did not start")
    results["ours_int8"] = dataclasses.replace(
        _system("ours_int8", dict.fromkeys((1, 4, 8), 90.0), dict.fromkeys((1, 4, 8), 80.0)),
        load={"auto": "auto chose openvino_int8: 9.00x eager", "agreement": {"openvino_int8": 1.0}})
    report = {
        "created": "now", "machine": {"cores": 2, "cpu": "cpu"}, "quick": False, "seconds": 20, "warmup": 5,
        "concurrencies": [1, 4, 8], "payload": {"name": "payload.jpg", "bytes": 1000}, "raw": RAW,
        "systems": {k: r.as_dict() for k, r in results.items()}, "ratios": compare.ratios(results, RAW, (1, 4, 8)),
        "goals": tuned_goals(results, RAW, (1, 4, 8)), "tuned_source": "from best.json",
        "client_ceiling": {"1": {"throughput_rps": 2000.0, "client_cpu_ms_per_request": 0.2}},
        "client_notes": [], "command": "make compare",
    }
    text = compare.render(report)
    for title in compare.TITLES.values():
        assert title in text
    assert "**50.0** · 120 · 120" in text  # ours tuned at 4 clients: req/s · p50 · p99
    assert "failed: did not start" in text
    assert "- ours, defaults + --calibration: auto chose openvino_int8: 9.00x eager; openvino_int8 top-1 agreement" in text
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
    goals = {g["concurrency"]: g for g in defaults_goals(results, cs)}
    # 1 client: against the better stock (stock defaults here), p99 45 <= 50.
    assert goals[1]["against"] == "stock_default" and goals[1]["value"] == 1.03 and goals[1]["passed"] is True
    assert goals[4]["against"] == "stock_guided" and goals[4]["value"] == 1.36 and goals[4]["passed"] is True
    assert goals[8]["value"] == 1.2 and goals[8]["passed"] is False  # below 1.3x, and p99 520 > 500
    results["ours_default"].runs[1]["p99_ms"] = 51.0
    assert defaults_goals(results, cs)[0]["passed"] is False  # faster but a worse p99 fails
    del results["stock_default"]
    assert defaults_goals(results, cs)[0]["against"] == "stock_guided"
    ratios = compare.defaults_ratios(results, cs)
    assert ratios["stock_guided"]["4"] == {"throughput": 1.36, "p99": pytest.approx(0.83, abs=0.01)}
    assert ratios["stock_default"]["4"] == {"throughput": None, "p99": None}
    report = {
        "created": "now", "machine": {"cores": 2, "cpu": "cpu"}, "quick": True, "seconds": 3, "warmup": 1,
        "concurrencies": list(cs), "payload": {"name": "payload.jpg", "bytes": 1000}, "raw": None,
        "systems": {k: r.as_dict() for k, r in results.items()}, "ratios": compare.ratios(results, None, cs),
        "defaults_ratios": ratios, "goals": defaults_goals(results, cs), "tuned_source": "-",
        "client_ceiling": {}, "client_notes": [], "command": "c",
    }
    text = compare.render(report)
    assert "## Ours (defaults) against stock" in text and "ours tuned vs" not in text
    assert "| stock TorchServe, 1 thread/worker | 1.55x (p99 0.85x) | 1.36x (p99 0.83x) | 1.20x (p99 1.04x) |" in text


def _goal(**fields: object) -> Goal:
    base: dict = {"description": "ours tuned vs {against}", "system": "ours_tuned", "against": ("stock_guided",),
                  "at": 4, "comparison": ">=", "threshold": 1.3}
    return Goal(**{**base, **fields})


# _results(): ours tuned 30/50/54 req/s (p99 40/120/200 ms) at 1/4/8 clients; stock guided 37.5 (165 ms),
# stock defaults 10 (1900 ms), LitServe 40 (200 ms) everywhere; the in-process limit 55 img/s.
@pytest.mark.parametrize("fields, cs, drop, expected", [
    ({}, (1, 4, 8), (), [(4, 1.33, True, "stock_guided")]),
    ({"at": 3}, (1, 4, 8), (), [(4, 1.33, True, "stock_guided")]),  # the nearest measured concurrency
    ({"at": 8}, (1, 4), (), [(4, 1.33, True, "stock_guided")]),
    ({"comparison": ">", "threshold": 1.33}, (1, 4, 8), (), [(4, 1.33, False, "stock_guided")]),
    ({"against": ("litserve",), "at": "each", "p99_no_worse": True}, (1, 4, 8), (),
     [(1, 0.75, False, "litserve"), (4, 1.25, False, "litserve"), (8, 1.35, True, "litserve")]),  # p99 200 <= 200
    ({"at": "each", "min_clients": 2, "max_clients": 4}, (1, 4, 8), (), [(4, 1.33, True, "stock_guided")]),
    ({"at": "each", "max_clients": 1, "against": ("stock_default", "stock_guided")}, (1, 4, 8), (),
     [(1, 0.8, False, "stock_guided")]),  # the one with more throughput
    ({"against": ("stock_default", "stock_guided")}, (1, 4, 8), ("stock_guided",), [(4, 5.0, True, "stock_default")]),
    ({"against": ("stock_default", "stock_guided")}, (1, 4, 8), ("stock_default", "stock_guided"),
     [(4, None, None, None)]),
    ({"against": ("raw",), "at": "best", "threshold": 0.95}, (1, 4, 8), (), [("best", 0.98, True, "raw")]),
    ({"against": ("litserve",), "at": "best", "threshold": 1}, (1, 4, 8), (), [("best", 1.35, True, "litserve")]),
    ({"metric": "p99_ms", "comparison": "<=", "threshold": 1}, (1, 4, 8), (), [(4, 0.73, True, "stock_guided")]),
    ({"p99_no_worse": True}, (1, 4, 8), (), [(4, 1.33, True, "stock_guided")]),  # 120 <= 165 ms
    ({"against": ("litserve",), "p99_no_worse": True}, (1, 4, 8), ("litserve",), [(4, None, None, "litserve")]),
    ({}, (1, 4, 8), ("ours_tuned",), []),  # the system was not run: no row
    ({"against": ("raw",), "at": "best", "threshold": 0.95}, (1, 4, 8), ("raw",), []),  # nor the limit
])
def test_a_goal_is_judged_where_it_says(fields: dict, cs: tuple[int, ...], drop: tuple[str, ...],
                                        expected: list[tuple]) -> None:
    results = {k: r for k, r in _results().items() if k not in drop}
    rows = compare.evaluate([_goal(**fields)], results, None if "raw" in drop else RAW, cs)
    assert [(r["concurrency"], r["value"], r["passed"], r["against"]) for r in rows] == expected
    goal = _goal(**fields)
    assert all(r["target"] == goal.target and r["goal"].startswith("ours tuned vs ") for r in rows)


def test_goal_descriptions_and_targets() -> None:
    goal = _goal(description="{against} at p99 {system_p99} vs {against_p99} ms ({limit_variant})",
                 p99_no_worse=True)
    row = compare.evaluate([goal], _results(), RAW, (1, 4, 8))[0]
    assert row["goal"] == "stock TorchServe, 1 thread/worker at p99 120 vs 165 ms (compile)"
    assert row["target"] == ">= 1.3x, p99 <=" and _goal(comparison=">", threshold=1).target == "> 1x"


def test_no_goals_no_goals_section() -> None:
    results = _results()
    report = {
        "created": "now", "machine": {"cores": 2, "cpu": "cpu"}, "quick": True, "seconds": 3, "warmup": 1,
        "concurrencies": [1, 4, 8], "payload": {"name": "payload.jpg", "bytes": 1000}, "raw": None,
        "systems": {k: r.as_dict() for k, r in results.items()}, "ratios": compare.ratios(results, None, (1, 4, 8)),
        "goals": compare.evaluate([], results, None, (1, 4, 8)), "tuned_source": "-",
        "client_ceiling": {}, "client_notes": [], "command": "c",
    }
    assert report["goals"] == [] and "Goals" not in compare.render(report)


def test_build_report_judges_the_goals_it_is_given(tmp_path: Path) -> None:
    from torchserve_perf.tools.loadgen import Payload

    results, cs = _results(), (1, 4, 8)
    cfg = compare.CompareConfig(20, 5, cs, compare.SYSTEMS, tmp_path, False, True, tmp_path, tmp_path)
    goals = compare.load_goals(GOALS / "compare-tuned.yaml") + compare.load_goals(GOALS / "compare-defaults.yaml")

    def report(goals: tuple[Goal, ...] = ()) -> dict:
        return compare.build_report(cfg, payload=Payload(b"x", "image/jpeg"), tuned={}, tuned_source="-", raw=RAW,
                                    gpu_limits=None, results=results, ceilings={}, command="c", wall_s=1.0,
                                    goals=goals)

    with_goals = report(goals=goals)
    assert with_goals["goals"] == tuned_goals(results, RAW, cs) + defaults_goals(results, cs)
    assert len(with_goals["goals"]) == 4 + 3 and "## Goals" in compare.render(with_goals)
    assert report()["goals"] == []


@pytest.mark.parametrize("text, message", [
    ("goals:\n  - {description: d, system: ours_tuned, against: litserve, at: 4, comparison: '>', treshold: 1}",
     "goals[0]: unknown key 'treshold'; did you mean 'threshold'?"),
    ("goal: []", "unknown key 'goal'; did you mean 'goals'?"),
    ("goals:\n  - {description: d, system: ours_tuned, against: litserve, at: 4, comparison: '>'}",
     "goals[0]: missing threshold"),
    ("goals:\n  - {description: d, system: ours, against: litserve, at: 4, comparison: '>', threshold: 1}",
     "goals[0].system: 'ours' is not a server"),
    ("goals:\n  - {description: d, system: ours_tuned, against: litserve, at: all, comparison: '>', threshold: 1}",
     "goals[0].at: 'all'; give a concurrency >= 1, each or best"),
    ("goals:\n  - {description: d, system: ours_tuned, against: litserve, at: 4, comparison: =>, threshold: 1}",
     "goals[0].comparison: '=>'; choose from"),
    ("goals:\n  - {description: d, system: ours_tuned, against: litserve, at: 4, comparison: '>', threshold: x}",
     "goals[0].threshold: 'x'; give a number"),
    ("goals:\n  - {description: '{them}', system: ours_tuned, against: litserve, at: 4, comparison: '>', "
     "threshold: 1}", "goals[0].description: unknown placeholder ['them']"),
    ("goals:\n  - {description: d, system: ours_tuned, against: [raw, litserve], at: best, comparison: '>', "
     "threshold: 1}", "goals[0].against: raw (the in-process limit) stands alone"),
    ("goals:\n  - {description: d, system: ours_tuned, against: litserve, at: 4, max_clients: 1, comparison: '>', "
     "threshold: 1}", "goals[0].min_clients/max_clients apply only with at: each"),
    ("goals:\n  - {description: 'a { b', system: ours_tuned, against: litserve, at: 4, comparison: '>', "
     "threshold: 1}", "goals[0].description: expected '}' before end of string; write {{ and }}"),
    ("goals: [", "not YAML (while parsing a flow node)"),
])
def test_a_bad_goals_file_is_a_one_line_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "goals.yaml"
    path.write_text(text)
    with pytest.raises(compare.GoalsError) as caught:
        compare.load_goals(path)
    assert message in str(caught.value) and "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_compare_goals_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from torchserve_perf.tools.compare.cli import parse_args

    args = parse_args(["--goals", str(GOALS / "compare-tuned.yaml"), "--goals", str(GOALS / "compare-defaults.yaml")])
    assert args.goals == [GOALS / "compare-tuned.yaml", GOALS / "compare-defaults.yaml"]
    assert parse_args(["--goals", "a.yaml", "b.yaml", "--quick"]).goals == [Path("a.yaml"), Path("b.yaml")]
    assert parse_args([]).goals == []
    bad = tmp_path / "goals.yaml"
    bad.write_text("goals:\n  - {description: d, system: ours_tuned, against: litserve, at: 4, comparison: '>', "
                   "threshold: 1, unit: x}\n")
    assert compare.main(["--goals", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("compare: ") and "unknown key 'unit'" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_rounds_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rounds"):
        compare.CompareConfig(1, 0, (1,), ("ours_default",), tmp_path, True, False, tmp_path, tmp_path, rounds=0)



def test_interleaved_rounds_take_turns_and_rotate_the_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchserve_perf.tools import loadgen
    from torchserve_perf.tools.compare.runs import interleave

    slices: list[tuple[str, int, float]] = []
    names = {1: "a", 2: "b"}  # what each fake sender answers -> its system

    def closed_loop(send: Callable[[], int], concurrency: int, duration: float, **_: object) -> LoadResult:
        slices.append((names[send()], concurrency, duration))
        return LoadResult(concurrency=concurrency, seconds=duration, latencies=[0.1])

    monkeypatch.setattr(loadgen, "closed_loop", closed_loop)
    parts = interleave({"a": lambda: 1, "b": lambda: 2}, (1, 4), 6.0, 3)
    assert [(key, c) for key, c, _ in slices] == [("a", 1), ("b", 1), ("a", 4), ("b", 4),   # round 1: a first
                                                  ("b", 1), ("a", 1), ("b", 4), ("a", 4),   # round 2: b first
                                                  ("a", 1), ("b", 1), ("a", 4), ("b", 4)]
    assert {duration for _, _, duration in slices} == {2.0}  # each point split into rounds slices
    assert {key: len(pieces) for key, pieces in parts.items()} == dict.fromkeys([("a", 1), ("b", 1), ("a", 4), ("b", 4)], 3)
