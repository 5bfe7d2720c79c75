"""``compare --zoo``'s pure pieces: its options, what it reads from a server, its report."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from torchserve_perf.tools.compare.analysis import defaults_ratios
from torchserve_perf.tools.compare.goals import load_goals
from torchserve_perf.tools.compare.results import SystemResult
from torchserve_perf.tools.compare.zoo import auto_choice, parse_args, phase_seconds
from torchserve_perf.tools.compare.zoo_config import ZooConfig
from torchserve_perf.tools.compare.zoo_report import build_zoo_report, phase_shares, render_zoo

SCRAPE = """# HELP ts_perf_inference_seconds time in the model for one batch
ts_perf_inference_seconds_sum{WorkerName="W-1",ModelName="m",Level="Model"} 3.0
ts_perf_inference_seconds_count{WorkerName="W-1",ModelName="m",Level="Model"} 10.0
ts_perf_inference_seconds_sum{WorkerName="W-2",ModelName="m",Level="Model"} 1.0
ts_perf_inference_seconds_count{WorkerName="W-2",ModelName="m",Level="Model"} 10.0
ts_perf_preprocess_seconds_sum{WorkerName="W-1",ModelName="m",Level="Model"} 1.0
ts_perf_preprocess_seconds_count{WorkerName="W-1",ModelName="m",Level="Model"} 20.0
ts_perf_handler_seconds_sum{WorkerName="W-1",ModelName="m",Level="Model"} 9.0
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
              "memory": {"ours_default": {"workers": 2, "rss_mib": 600.0, "per_worker_mib": [300.0, 300.0]}},
              "auto": "auto chose channels_last: 1.2x", "phases": phase_seconds(SCRAPE)}
    goals = load_goals(Path(__file__).resolve().parents[2] / "scripts" / "goals" / "zoo.yaml")  # make compare-zoo's
    report = build_zoo_report(cfg, [family], command="torchserve-perf compare --zoo", wall_s=1.0, goals=goals)
    row = report["families"][0]
    assert [g["passed"] for g in row["goals"]] == [True, False]  # 1.1x the better stock; 1.2x < 1.3x at 4
    assert row["met"] is False
    text = render_zoo(report)
    assert "## resnet50" in text and "600 (2 workers)" in text and "auto chose channels_last" in text
    assert "Where ours' time goes" in text and "inference 200.0 ms (80%)" in text
