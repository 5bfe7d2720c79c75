"""BatchProfiler in-process with a real Kineto session: trace content, naming, retention, failures."""

from __future__ import annotations

import json
import logging
import os
import re
import stat
from pathlib import Path

import pytest
import torch

from torchserve_perf.plugins.config import build
from torchserve_perf.plugins.observers import BatchFinished, BatchStarted, Observers
from torchserve_perf.plugins.profiler import BatchProfiler, ProfilerConfig, traces
from torchserve_perf.plugins.worker import WorkerIdentity

WORKER = WorkerIdentity(model_name="tiny", model_version="2.1", port=9123, gpu_id=None, workers=1, pid=os.getpid())


def run_batches(profiler: BatchProfiler, count: int, size: int = 2, forced: tuple[int, ...] = ()) -> list[bool]:
    model = torch.nn.Linear(8, 4)
    recorded = []
    for number in range(count):
        with profiler.batch(size, force=number in forced) as on:
            with profiler.annotate("preprocess", size):
                x = torch.randn(size, 8)
            with profiler.annotate("inference", size):
                y = model(x)
            with profiler.annotate("postprocess", size):
                y.tolist()
        recorded.append(on)
    return recorded


def make(tmp_path: Path, **settings) -> tuple[BatchProfiler, list[Path]]:
    config = build(ProfilerConfig, {"enabled": True, "output_dir": str(tmp_path / "out" / "{model_name}"), **settings},
                   "profiler")
    written: list[Path] = []
    return BatchProfiler(config, WORKER, on_trace_written=written.append), written


def strict_json(path: Path) -> dict:
    def reject(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(path.read_text(), parse_constant=reject)


def assert_chrome_trace(trace: dict) -> None:
    """The Trace Event Format that chrome://tracing and ui.perfetto.dev read (JSON object form)."""
    assert isinstance(trace.get("traceEvents"), list) and trace["traceEvents"]
    assert trace.get("displayTimeUnit", "ms") in ("ms", "ns")
    for event in trace["traceEvents"]:
        assert isinstance(event.get("ph"), str) and event["ph"], event
        if event["ph"] == "X":
            assert isinstance(event["name"], str)
            assert isinstance(event["ts"], (int, float)) and isinstance(event["dur"], (int, float))
            assert event["dur"] >= 0, event
            assert isinstance(event["pid"], (int, str)) and isinstance(event["tid"], (int, str))
        if "args" in event:
            assert isinstance(event["args"], dict)


def test_a_window_is_one_named_private_trace_with_steps_and_phases(tmp_path):
    profiler, written = make(tmp_path, schedule={"skip_first": 1, "warmup": 1, "active": 2})
    assert run_batches(profiler, 6) == [False, False, True, True, False, False]
    assert len(written) == 1
    path = written[0]
    assert path.parent == tmp_path / "out" / "tiny"
    assert path.name.startswith("W-9123-tiny_2.1.") and path.name.endswith(".pt.trace.json")
    for directory in (tmp_path / "out", tmp_path / "out" / "tiny"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temporary files left behind"

    trace = strict_json(path)
    assert_chrome_trace(trace)
    steps = [e["name"] for e in trace["traceEvents"] if e["name"].startswith("ProfilerStep#")]
    assert steps == ["ProfilerStep#2", "ProfilerStep#3"]
    phases = [(e["name"], e["args"].get("batch_size"), e["args"].get("step")) for e in trace["traceEvents"]
              if e.get("cat") == "user_annotation" and e["name"] in traces.PHASES]
    assert sorted(phases) == sorted((name, 2, step) for step in (2, 3) for name in traces.PHASES)
    assert trace["distributedInfo"]["rank"] == 0 and trace["distributedInfo"]["world_size"] == 1
    # HTA 0.5 finds the rank by searching the file's lines for '"rank":' followed by whitespace
    first = next(line for line in path.read_text().splitlines() if '"rank":' in line)
    assert re.search(r'"rank":\s+(\d+)', first).group(1) == "0"
    assert trace["ts_perf"]["worker"] == "W-9123-tiny_2.1" and trace["ts_perf"]["batches"] == [2, 3]
    assert any(e.get("cat") == "cpu_op" and e["name"] == "aten::addmm" for e in trace["traceEvents"])


def test_forcing_records_a_batch_outside_the_window(tmp_path):
    profiler, written = make(tmp_path, schedule={"skip_first": 100})
    assert run_batches(profiler, 4, forced=(2,)) == [False, False, True, False]
    assert len(written) == 1
    trace = strict_json(written[0])
    assert [e["name"] for e in trace["traceEvents"] if e["name"].startswith("ProfilerStep#")] == ["ProfilerStep#2"]
    assert trace["ts_perf"]["forced_by_header"] == [2]


def test_forcing_is_ignored_when_the_header_is_turned_off(tmp_path):
    profiler, written = make(tmp_path, schedule={"skip_first": 100}, header=False)
    assert run_batches(profiler, 3, forced=(1,)) == [False, False, False]
    assert written == []


def test_disabled_profiler_records_nothing_even_when_forced(tmp_path):
    config = ProfilerConfig(enabled=False, output_dir=str(tmp_path / "never"))
    profiler = BatchProfiler(config, WORKER)
    assert run_batches(profiler, 8, forced=(0, 6)) == [False] * 8
    assert not (tmp_path / "never").exists()


def test_oldest_traces_are_removed_beyond_max_traces(tmp_path):
    profiler, written = make(tmp_path, every_n=1, schedule={"skip_first": 0, "warmup": 0, "active": 1}, max_traces=3)
    run_batches(profiler, 7)
    assert len(written) == 7
    kept = traces.worker_traces(written[0].parent, WORKER.name)
    assert kept == written[-3:]


def test_retention_by_size_keeps_the_newest_and_other_workers_files(tmp_path):
    for i in range(4):
        (tmp_path / f"W-1-m_1.0.{1000 + i}.pt.trace.json").write_bytes(b"x" * 400_000)
        os.utime(tmp_path / f"W-1-m_1.0.{1000 + i}.pt.trace.json", (1000 + i, 1000 + i))
    other = tmp_path / "W-2-m_1.0.5.pt.trace.json"
    other.write_bytes(b"y" * 2_000_000)
    removed = traces.enforce_retention(tmp_path, "W-1-m_1.0", max_traces=0, max_mb=1.0)
    assert [p.name for p in removed] == ["W-1-m_1.0.1000.pt.trace.json", "W-1-m_1.0.1001.pt.trace.json"]
    assert other.exists()
    assert traces.enforce_retention(tmp_path, "W-2-m_1.0", max_traces=1, max_mb=0.5) == []  # newest always kept


def test_a_failing_profiler_is_logged_and_the_batch_still_runs(tmp_path, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = build(ProfilerConfig, {"enabled": True, "output_dir": str(blocker / "traces"),
                                    "schedule": {"skip_first": 0, "warmup": 0, "active": 1}, "every_n": 1}, "profiler")
    profiler = BatchProfiler(config, WORKER)
    caplog.set_level(logging.ERROR, logger="torchserve_perf.plugins.profiler.profiler")
    caplog.set_level(logging.WARNING, logger="torchserve_perf.plugins.observers")
    runner = Observers([profiler])  # in a worker, the handler's runner is the profiler's guard
    ran = []
    for _ in range(5):
        runner.batch_started(BatchStarted(1))
        ran.append(True)
        runner.batch_finished(BatchFinished(1, 1, 0, 0.0, profiler.recording))
    assert ran == [True] * 5
    assert "the request is still served" in caplog.text
    assert "switched off for this worker" in caplog.text
    assert profiler.enabled is False and profiler.failures == 3
    assert runner.failures == {(id(profiler), "batch_finished"): 3}  # logged once, with the traceback
    [logged] = [r for r in caplog.records if r.name == "torchserve_perf.plugins.observers"]
    assert logged.exc_info and "BatchProfiler failed in batch_finished" in logged.getMessage()


def test_an_error_in_the_batch_itself_propagates_and_the_window_is_kept(tmp_path):
    profiler, written = make(tmp_path, schedule={"skip_first": 0, "warmup": 0, "active": 2})
    with pytest.raises(ZeroDivisionError):
        with profiler.batch(1):
            raise ZeroDivisionError("the batch itself failed")
    run_batches(profiler, 1)
    assert len(written) == 1
    assert profiler.failures == 0


def test_close_writes_a_window_in_progress(tmp_path):
    profiler, written = make(tmp_path, schedule={"skip_first": 0, "warmup": 0, "active": 5})
    run_batches(profiler, 2)
    assert written == []
    profiler.close()
    assert len(written) == 1


def test_summary_tool_reports_phases_per_worker_and_top_operators(tmp_path):
    from torchserve_perf.tools import traces as summarize_traces

    profiler, written = make(tmp_path, schedule={"skip_first": 0, "warmup": 0, "active": 3})
    run_batches(profiler, 3, size=3)
    assert len(written) == 1
    assert summarize_traces.main([str(tmp_path / "out"), "--out", str(tmp_path / "report"), "--top", "5"]) == 0
    text = (tmp_path / "report" / "summary.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| W-9123-tiny_2.1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:4] == ["1", "3", "3.0"]  # traces, batches, mean batch size
    assert "## tiny: top" in text and "`aten::addmm`" in text
    assert (tmp_path / "report" / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_summary_tool_fails_clearly_without_traces(tmp_path, capsys):
    from torchserve_perf.tools import traces as summarize_traces

    assert summarize_traces.main([str(tmp_path)]) == 1
    assert "no *.pt.trace.json" in capsys.readouterr().err
