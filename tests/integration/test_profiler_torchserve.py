"""ENABLE_TORCH_PROFILER on a real TorchServe, and the traces it writes opened in a real TensorBoard."""

from __future__ import annotations

import gzip
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from tests.unit.test_profiler_traces import assert_chrome_trace, strict_json
from torchserve_perf.plugins.profiler import traces
from torchserve_perf.tools import serving
from torchserve_perf.tools.model_store import build_archive, default_specs

TEXT = "The parcel arrived two days late."
BOUNDED = {"every_n": 2, "max_traces": 2, "schedule": {"skip_first": 0, "warmup": 0, "active": 1}}


def steps_of(trace: dict) -> list[int]:
    return [int(e["name"].split("#")[1]) for e in trace["traceEvents"] if e["name"].startswith("ProfilerStep#")]


@pytest.fixture(scope="module")
def profiled(model_store: Path, torchserve_factory, tmp_path_factory) -> dict:
    """A server with ENABLE_TORCH_PROFILER=1 serving the text model twice: default schedule and bounded."""
    root = tmp_path_factory.mktemp("profiler")
    store = serving.copy_archives(["text_classifier.mar"], model_store, root / "store")
    text = default_specs()[1]
    config = {**text.model_config, "handler": {**text.model_config["handler"], "profiler": BOUNDED}}
    build_archive(text, store, name="text_bounded", model_config=config)
    trace_root = root / "traces"
    server = torchserve_factory(store, ready_models=["text_classifier", "text_bounded"],
                                env={"ENABLE_TORCH_PROFILER": "1", "TS_PERF_PROFILER_DIR": f"{trace_root}/{{model_name}}"})
    answers = []
    # batch 0 carries the header (mixed case), batch 1 says 0, then the default window (warmup 3, record 4-5)
    answers.append(server.predict("text_classifier", TEXT.encode(), headers={"x-TORCH-Profile": "1"}))
    answers.append(server.predict("text_classifier", TEXT.encode(), headers={"X-Torch-Profile": "0"}))
    for _ in range(6):
        answers.append(server.predict("text_classifier", TEXT.encode()))
    for _ in range(9):
        answers.append(server.predict("text_bounded", TEXT.encode()))
    assert [a.status_code for a in answers] == [200] * len(answers), [a.text for a in answers if not a.ok]
    return {"server": server, "root": trace_root}


def test_default_schedule_and_header_write_named_traces_with_steps_and_phases(profiled):
    directory = profiled["root"] / "text_classifier"
    files = sorted(directory.iterdir())  # no temporary files left beside the traces
    assert len(files) == 2, files
    for path in files:
        assert path.name.startswith("W-") and "-text_classifier_1.0." in path.name
        assert path.name.endswith(".pt.trace.json")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = [strict_json(p) for p in files]
    by_steps = {tuple(steps_of(t)): t for t in loaded}
    assert set(by_steps) == {(0,), (4, 5)}, "header-forced batch 0 plus the default window 4-5 (not batch 1)"
    forced, window = by_steps[(0,)], by_steps[(4, 5)]
    assert forced["ts_perf"]["forced_by_header"] == [0] and window["ts_perf"]["forced_by_header"] == []
    for trace in loaded:
        worker = trace["ts_perf"]["worker"]
        assert any(p.name.startswith(worker + ".") for p in files)
        assert trace["ts_perf"]["model_name"] == "text_classifier" and trace["ts_perf"]["model_version"] == "1.0"
        phases = {e["name"]: e["args"] for e in trace["traceEvents"]
                  if e.get("cat") == "user_annotation" and e["name"] in traces.PHASES}
        assert set(phases) == set(traces.PHASES)
        assert all(args["batch_size"] == 1 for args in phases.values())
        assert trace["distributedInfo"] == {"backend": "none", "rank": 0, "world_size": 1}
    for directory_made in (profiled["root"], directory):
        assert stat.S_IMODE(directory_made.stat().st_mode) == 0o700


def test_traces_are_bounded_per_worker(profiled):
    files = sorted((profiled["root"] / "text_bounded").iterdir())
    # every 2nd batch of 9 is saved (0, 2, 4, 6, 8): only the newest 2 remain
    assert len(files) == 2, files
    assert sorted(steps_of(strict_json(p))[0] for p in files) == [6, 8]


def test_traces_are_valid_chrome_and_perfetto_json(profiled):
    files = list(traces.find_traces(profiled["root"]))
    assert len(files) == 4
    for path in files:
        assert_chrome_trace(strict_json(path))


def test_the_worker_log_says_where_traces_go(profiled):
    log = profiled["server"].read_log("model_log.log")
    assert "profiling to" in log and "wrote profiler trace" in log
    assert "profiler failed" not in log


# ---- TensorBoard --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tensorboard(profiled, tmp_path_factory) -> Iterator[str]:
    binary = Path(sys.executable).with_name("tensorboard")
    port = serving.free_port()
    workdir = tmp_path_factory.mktemp("tensorboard")
    env = {**os.environ, "TMPDIR": str(workdir), "HOME": str(workdir)}
    with open(workdir / "tensorboard.log", "wb") as log:
        process = subprocess.Popen([str(binary), "--logdir", str(profiled["root"]), "--host", "127.0.0.1",
                                    "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env,
                                   cwd=workdir, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}/data/plugin/pytorch_profiler"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def get(url: str, **params) -> requests.Response:
    response = requests.get(url, params=params, timeout=60)
    assert response.status_code == 200, (url, params, response.text[:500])
    return response


def test_tensorboard_loads_the_run_and_its_overview_operator_and_trace_views(tensorboard):
    deadline = time.monotonic() + 120
    runs: dict = {}
    while time.monotonic() < deadline:
        try:
            runs = requests.get(f"{tensorboard}/runs", timeout=10).json()
        except (requests.RequestException, ValueError):
            runs = {}
        if "text_classifier" in runs.get("runs", []) and not runs.get("loading"):
            break
        time.sleep(1)
    assert "text_classifier" in runs.get("runs", []), runs
    run = "text_classifier"
    views = get(f"{tensorboard}/views", run=run).json()
    assert {"Overview", "Operator", "Trace"} <= set(views), views
    workers = get(f"{tensorboard}/workers", run=run, view="Overview").json()
    assert workers and all(w.startswith("W-") and w.endswith("-text_classifier_1.0") for w in workers), workers
    worker = workers[0]
    spans = get(f"{tensorboard}/spans", run=run, worker=worker).json()
    assert len(spans) == 2, spans
    for span in spans:
        query = {"run": run, "worker": worker, "span": span}
        overview = get(f"{tensorboard}/overview", **query).json()
        assert overview["steps"]["rows"], overview  # one row per ProfilerStep
        operators = get(f"{tensorboard}/operation/table", group_by="Operation", **query).json()
        rows = operators["data"]
        rows = rows["data"] if isinstance(rows, dict) else rows
        names = {row["name"] for row in rows}
        assert any(name.startswith("aten::") for name in names), names
        pie = get(f"{tensorboard}/operation", group_by="Operation", **query).json()
        assert pie["device_total_time"] or pie["host_total_time"]
        raw = get(f"{tensorboard}/trace", **query).content
        try:
            raw = gzip.decompress(raw)  # requests may have undone the Content-Encoding already
        except OSError:
            pass
        assert any(e.get("name", "").startswith("ProfilerStep#") for e in json.loads(raw)["traceEvents"])
