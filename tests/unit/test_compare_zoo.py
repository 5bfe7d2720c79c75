"""``compare --zoo``'s pure pieces: its options, what it reads from a server, its report."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from torchserve_perf.tools.compare.analysis import defaults_ratios
from torchserve_perf.tools.compare.goals import load_goals
from torchserve_perf.tools.compare.results import SystemResult
from torchserve_perf.tools.compare.worker_report import (
    auto_choice,
    describe,
    gate_agreement,
    phase_seconds,
    phase_shares,
)
from torchserve_perf.tools.compare.zoo import parse_args
from torchserve_perf.tools.compare.zoo_config import ZOO_SYSTEMS, ZooConfig
from torchserve_perf.tools.compare.zoo_report import build_zoo_report, render_zoo

SCRAPE = """# HELP ts_perf_inference_seconds time in the model for one batch
ts_perf_inference_seconds_sum{WorkerName="W-1",ModelName="m",Level="Model"} 3.0
ts_perf_inference_seconds_count{WorkerName="W-1",ModelName="m",Level="Model"} 10.0
ts_perf_inference_seconds_sum{WorkerName="W-2",ModelName="m",Level="Model"} 1.0
ts_perf_inference_seconds_count{WorkerName="W-2",ModelName="m",Level="Model"} 10.0
ts_perf_preprocess_seconds_sum{WorkerName="W-1",ModelName="m",Level="Model"} 1.0
ts_perf_preprocess_seconds_count{WorkerName="W-1",ModelName="m",Level="Model"} 20.0
ts_perf_handler_seconds_sum{WorkerName="W-1",ModelName="m",Level="Model"} 9.0
# TYPE ts_perf_optimization_agreement gauge
ts_perf_optimization_agreement{Level="Model",Optimization="openvino_int8",ModelName="m",WorkerName="W-1"} 1.0
ts_perf_optimization_agreement{Level="Model",Optimization="openvino_int8",ModelName="m",WorkerName="W-2"} 0.9375
ts_perf_optimization_agreement{Level="Model",Optimization="int8",ModelName="m",WorkerName="W-2"} nan?
"""


def run(rps: float, p99: float) -> dict[str, Any]:
    return {"throughput_rps": rps, "p50_ms": p99 / 2, "p99_ms": p99, "errors": {}}


def test_phase_seconds_adds_workers_and_skips_other_metrics() -> None:
    phases = phase_seconds(SCRAPE)
    assert phases == {"inference": {"sum": 4.0, "count": 20.0}, "preprocess": {"sum": 1.0, "count": 20.0}}
    assert phase_shares(phases) == {"inference": {"mean_ms": 200.0, "share": 0.8},
                                    "preprocess": {"mean_ms": 50.0, "share": 0.2}}


def test_auto_choice_prefers_the_search_and_explains_a_reuse(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    cache = tmp_path / "choice.json"
    cache.write_text('{"chain": ["channels_last"], "reason": "auto chose channels_last: 1.20x eager"}')
    (logs / "model_log.log").write_text("x MODEL_LOG - loading\n"
                                        "x MODEL_LOG - auto chose channels_last: 1.20x eager (...)\n"
                                        f"x MODEL_LOG - auto reused its cached choice channels_last in 0.1 s ({cache})\n")
    server: Any = SimpleNamespace(workdir=tmp_path)
    assert auto_choice(server) == "auto chose channels_last: 1.20x eager (...)"
    (logs / "model_log.log").write_text(f"x MODEL_LOG - auto reused its cached choice channels_last in 0.1 s ({cache})\n")
    assert auto_choice(server) == (f"auto reused its cached choice channels_last in 0.1 s ({cache}); "
                                   "first decided as: auto chose channels_last: 1.20x eager")
    (logs / "model_log.log").write_text("nothing\n")
    assert auto_choice(server) is None


def test_gate_agreement_keeps_each_gated_optimizations_lowest_worker() -> None:
    agreement = gate_agreement(SCRAPE)
    assert agreement == {"openvino_int8": 0.9375}  # the unparsable value is skipped
    assert describe({"auto": "auto chose openvino_int8: 9.1x eager", "agreement": agreement}) == (
        "auto chose openvino_int8: 9.1x eager; openvino_int8 top-1 agreement with fp32 0.938")
    assert describe({"auto": None, "agreement": {}}).startswith("no auto choice logged")
    assert describe(None) == "n/a"


def test_int8_adds_the_calibrated_system(tmp_path: Path) -> None:
    cfg = parse_args(["--zoo", "--quick", "--int8", "--out", str(tmp_path)])
    assert cfg.systems == (*ZOO_SYSTEMS, "ours_int8")
    plain = parse_args(["--zoo", "--out", str(tmp_path)])
    assert plain.systems == ZOO_SYSTEMS
    cfg.work.rmdir()
    plain.work.rmdir()


@pytest.mark.parametrize("argv, error", [
    (["--zoo", "--families", "resnet51"], "invalid choice"),
    (["--zoo", "--rounds", "0"], "--rounds must be >= 1"),
    (["--zoo", "--concurrency", "0"], "concurrencies must be >= 1"),
])
def test_bad_options_are_usage_errors(argv: list[str], error: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert error in capsys.readouterr().err


def test_quick_defaults(tmp_path: Path) -> None:
    cfg = parse_args(["--zoo", "--quick", "--out", str(tmp_path)])
    assert (cfg.seconds, cfg.warmup, cfg.rounds, cfg.concurrencies) == (3.0, 2.0, 1, (1, 4, 8))
    assert len(cfg.families) == 4
    cfg.work.rmdir()


def test_report_judges_every_family_and_names_phases_when_short(tmp_path: Path) -> None:
    cfg = ZooConfig(families=("resnet50",), seconds=1.0, warmup=0.0, concurrencies=(1, 4), rounds=1, out=tmp_path,
                    quick=True, work=tmp_path)
    results = {
        "stock_default": SystemResult("stock_default", "defaults", runs={1: run(10, 100), 4: run(12, 400)}),
        "stock_guided": SystemResult("stock_guided", "1 thread", runs={1: run(8, 120), 4: run(10, 420)}),
        "ours_default": SystemResult("ours_default", "ours", runs={1: run(11, 90), 4: run(12, 380)}),
    }
    assert defaults_ratios(results, (1, 4))["stock_guided"]["4"] == {"throughput": 1.2, "p99": 0.9}
    family = {"family": "resnet50", "description": "ResNet-50", "parameters": 25_557_032,
              "systems": {k: r.as_dict() for k, r in results.items()}, "results": results,
              "memory": {"ours_default": {"workers": 2, "rss_mib": [300.0, 300.0], "mean_rss_mib": 300.0}},
              "loads": {"ours_default": {"auto": "auto chose channels_last: 1.2x", "agreement": {},
                                         "phases": phase_shares(phase_seconds(SCRAPE))}}}
    goals = load_goals(Path(__file__).resolve().parents[2] / "scripts" / "goals" / "zoo.yaml")  # make compare-zoo's
    report = build_zoo_report(cfg, [family], command="torchserve-perf compare --zoo", wall_s=1.0, goals=goals)
    row = report["families"][0]
    assert [g["passed"] for g in row["goals"]] == [True, False]  # 1.1x the better stock; 1.2x < 1.3x at 4
    assert row["met"] is False
    text = render_zoo(report)
    assert "## resnet50" in text and "300 MiB (2 workers)" in text and "auto chose channels_last" in text
    assert "handler time per batch: inference 200.0 ms (80%)" in text and "| goal | clients |" in text
    unjudged = render_zoo(build_zoo_report(cfg, [family], command="torchserve-perf compare --zoo", wall_s=1.0))
    assert "| goal | clients |" not in unjudged and "## resnet50" in unjudged  # no --goals: no empty table


def test_int8_accuracy_line_gives_points_and_reasons() -> None:
    from torchserve_perf.tools.int8_accuracy import describe as accuracy_line

    line = accuracy_line({"fp32": 0.9926, "held_out": 540, "openvino_int8": 0.9907, "int8": "Unavailable: no onnx"})
    assert line == ("digits CNN held-out accuracy (540 images): fp32 99.26%, openvino_int8 99.07% (-0.19 points), "
                    "int8: not measured (Unavailable: no onnx)")

