"""Per-worker metrics in process: TorchServe's real metrics cache, the lines it prints, the shipped YAML."""

from __future__ import annotations

import logging
import re
import runpy
import sys
import time
import types
from pathlib import Path

import pytest
import yaml

from tests.conftest import RequestContext, write_model_dir
from torchserve_perf.plugins.config import HandlerConfigError, apply_env_overrides, build
from torchserve_perf.plugins.metrics import METRICS_YAML, MetricsConfig, WorkerMetrics, catalog, declarations
from torchserve_perf.plugins.metrics.gpu import NvmlProbe
from torchserve_perf.plugins.metrics.sampler import describe_cores
from torchserve_perf.plugins.observers import BatchFinished, Observers, PhaseEvent, WorkerLoaded
from torchserve_perf.plugins.optimizations import OptimizationResult
from torchserve_perf.plugins.threads import ThreadDecision
from torchserve_perf.plugins.worker import WorkerIdentity
from torchserve_perf.tools.metrics_cli import main as metrics_cli

TS_DEFAULT_YAML = Path(__import__("ts").__file__).parent / "configs" / "metrics.yaml"
CACHING_LOGGER = "ts.metrics.caching_metric"

# The shape TorchServe's frontend accepts for a worker's metrics line (name.unit:value|#dims|#type|#hostname,ts).
FRONTEND_LINE = re.compile(r"^\[METRICS\](?P<name>\w+)\.(?P<unit>\w+):(?P<value>[0-9\-.e]+)\|#(?P<dims>[^|]*)"
                           r"\|#type:(?P<type>[A-Z]+)\|#hostname:[^,]+,\d+$")

WORKER = WorkerIdentity(model_name="tiny_metrics", model_version="1.0", port=9123, gpu_id=None, workers=2, pid=1)


def ts_cache(path: Path = METRICS_YAML):
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    cache = MetricsCacheYamlImpl(str(path))
    cache.initialize_cache()
    return cache


def emitted(caplog, worker: WorkerIdentity = None) -> list[dict]:
    """This worker's [METRICS] lines, parsed the way the frontend reads them.

    Filtered by worker name: handlers built by other tests in this process may still be sampling.
    """
    worker = worker or WORKER
    lines = []
    for record in caplog.records:
        if record.name != CACHING_LOGGER or not record.getMessage().startswith("[METRICS]"):
            continue
        match = FRONTEND_LINE.match(record.getMessage())
        assert match, f"the frontend could not parse: {record.getMessage()}"
        dims = [tuple(pair.split(":", 1)) for pair in match["dims"].split(",")]
        if ("WorkerName", worker.name) not in dims:
            continue
        lines.append({"name": match["name"], "value": float(match["value"]), "type": match["type"],
                      "dims": dims})
    return lines


@pytest.fixture
def metrics(caplog):
    caplog.set_level(logging.INFO, logger=CACHING_LOGGER)
    made = []

    def make(config: MetricsConfig = MetricsConfig(sample_interval_s=0), cache=None, worker=WORKER) -> WorkerMetrics:
        made.append(WorkerMetrics(config, worker, ts_cache() if cache is None else cache))
        return made[-1]

    yield make
    for m in made:
        m.close()


# ---- config -------------------------------------------------------------------------------------
def test_config_defaults_and_validation():
    config = build(MetricsConfig, {}, "metrics")
    assert config.enabled and config.sample_interval_s == 5.0 and config.gpu
    assert build(MetricsConfig, {"sample_interval_s": 0}, "metrics").sample_interval_s == 0
    with pytest.raises(HandlerConfigError, match="metrics.sample_interval_s"):
        build(MetricsConfig, {"sample_interval_s": 0.01}, "metrics")
    with pytest.raises(HandlerConfigError, match="metrics.sample_interval_s"):
        build(MetricsConfig, {"sample_interval_s": -1}, "metrics")
    with pytest.raises(HandlerConfigError, match="did you mean 'enabled'"):
        build(MetricsConfig, {"enable": True}, "metrics")


def test_env_turns_metrics_off():
    raw = apply_env_overrides({"metrics": {"sample_interval_s": 2}}, {"TS_PERF_METRICS": "0"})
    config = build(MetricsConfig, raw["metrics"], "metrics")
    assert config.enabled is False and config.sample_interval_s == 2


# ---- the shipped YAML ---------------------------------------------------------------------------
def test_shipped_yaml_declares_every_metric_as_emitted():
    document = declarations.read(METRICS_YAML)
    assert declarations.problems(document) == []
    assert all(spec.name.startswith("ts_perf_") for spec in catalog.ALL)
    for spec in catalog.ALL:
        assert re.fullmatch(r"\w+", spec.unit), spec
        assert spec.dimensions[-3:] == ("WorkerName", "ModelName", "Level")
        assert "Hostname" not in spec.dimensions  # TorchServe appends it to model metrics


def test_shipped_yaml_keeps_torchserve_defaults():
    ours, default = declarations.read(METRICS_YAML), declarations.read(TS_DEFAULT_YAML)
    assert ours["ts_metrics"] == default["ts_metrics"]
    assert set(default["dimensions"]) <= set(ours["dimensions"])
    shipped = declarations.declared(ours)
    for name, declared in declarations.declared(default).items():
        assert shipped[name] == declared
    assert set(shipped) == set(declarations.declared(default)) | {spec.name for spec in catalog.ALL}


def test_merge_into_an_existing_yaml(tmp_path):
    existing = declarations.read(TS_DEFAULT_YAML)
    existing["model_metrics"]["counter"] = [{"name": "MyCounter", "unit": "count", "dimensions": ["ModelName"]}]
    # A stale declaration of ours (wrong type and order) is replaced, not duplicated.
    existing["model_metrics"]["gauge"].append(
        {"name": catalog.HANDLER.name, "unit": "s", "dimensions": ["ModelName", "WorkerName", "Level"]})
    source = tmp_path / "theirs.yaml"
    source.write_text(yaml.safe_dump(existing))
    assert metrics_cli(["check", str(source)]) == 1
    target = tmp_path / "merged.yaml"
    assert metrics_cli(["merge", str(source), "-o", str(target)]) == 0
    merged = declarations.read(target)
    assert declarations.problems(merged) == []
    assert metrics_cli(["check", str(target)]) == 0
    found = declarations.declared(merged)
    assert found["MyCounter"] == ("counter", ("ModelName",))
    assert found["HandlerTime"] == ("gauge", ("ModelName", "Level"))
    assert sum(e["name"] == catalog.HANDLER.name for es in merged["model_metrics"].values() for e in es) == 1
    assert merged["ts_metrics"] == existing["ts_metrics"]
    ts_cache(target)  # TorchServe's own loader accepts the result


# ---- what a worker prints -----------------------------------------------------------------------
def test_batch_metrics_carry_the_worker_and_parse_as_the_frontend_reads_them(metrics, caplog):
    m = metrics()
    assert m.enabled
    m.phase("preprocess", 0.0012)
    m.phase("inference", 0.02)
    m.phase("postprocess", 0.0004)
    m.phase("not_a_phase", 1.0)
    m.batch(3, 0.025)
    m.rejected(0)
    m.profiled(False)
    lines = emitted(caplog)
    assert [line["name"] for line in lines] == [catalog.PREPROCESS.name, catalog.INFERENCE.name,
                                                catalog.POSTPROCESS.name, catalog.HANDLER.name,
                                                catalog.BATCH_SIZE.name]
    assert {line["type"] for line in lines} == {"HISTOGRAM"}
    for line in lines:
        assert line["dims"] == [("WorkerName", "W-9123-tiny_metrics_1.0"), ("ModelName", "tiny_metrics"), ("Level", "Model")]
    assert [line["value"] for line in lines] == [0.0012, 0.02, 0.0004, 0.025, 3]


def test_counters_only_on_events(metrics, caplog):
    m = metrics()
    m.rejected(2)
    m.profiled(True)
    m.trace_written(Path("/tmp/trace.json"))
    assert [(line["name"], line["type"], line["value"]) for line in emitted(caplog)] == [
        (catalog.REJECTED.name, "COUNTER", 2), (catalog.PROFILED.name, "COUNTER", 1),
        (catalog.TRACES.name, "COUNTER", 1)]


def test_loaded_reports_optimizations_threads_and_zeroed_counters(metrics, caplog):
    m = metrics()
    result = OptimizationResult(model=None, applied=["channels_last", "compile"], skipped={"onnx": "not installed"},
                                load_seconds=2.5)
    result.step_seconds = {"channels_last": 0.01, "compile": 2.2}  # type: ignore[attr-defined]
    m.loaded(result, ThreadDecision(intra_op=1, inter_op=1, cores=(0,), reason="test"))
    lines = emitted(caplog)
    values = {(line["name"], line["dims"][0][1] if len(line["dims"]) == 4 else None): line["value"] for line in lines}
    assert values[(catalog.LOAD_SECONDS.name, None)] == 2.5
    assert values[(catalog.OPTIMIZATION.name, "channels_last")] == 1
    assert values[(catalog.OPTIMIZATION.name, "compile")] == 1
    assert values[(catalog.OPTIMIZATION.name, "onnx")] == 0
    assert values[(catalog.OPTIMIZATION_SECONDS.name, "compile")] == 2.2
    assert values[(catalog.INTER_OP.name, None)] == 1
    for spec in (catalog.REJECTED, catalog.PROFILED, catalog.TRACES):
        assert values[(spec.name, None)] == 0
    assert not any(name == catalog.RESIDENT_MEMORY.name for name, _ in values)  # sampler off here


def test_loaded_reports_what_accuracy_gates_measured(metrics, caplog):
    result = OptimizationResult(model=None, applied=["int8"], skipped={"openvino_int8": "accuracy gate failed"},
                                measured={"int8": {"top1_agreement": 0.995, "samples": 64.0},
                                          "openvino_int8": {"top1_agreement": 0.9, "samples": 64.0}})
    metrics().loaded(result, ThreadDecision(1, 1, (), "test"))
    assert [(line["dims"][0], line["value"]) for line in emitted(caplog)
            if line["name"] == catalog.OPTIMIZATION_AGREEMENT.name] == [
        (("Optimization", "int8"), 0.995), (("Optimization", "openvino_int8"), 0.9)]


def test_eager_model_reports_optimization_none(metrics, caplog):
    metrics().loaded(OptimizationResult(model=None), ThreadDecision(2, 1, (), "test"))
    lines = emitted(caplog)
    assert [(line["dims"][0], line["value"]) for line in lines if line["name"] == catalog.OPTIMIZATION.name] == [
        (("Optimization", "none"), 1)]
    assert [(line["dims"][0], line["value"]) for line in lines if line["name"] == catalog.OPTIMIZATION_SECONDS.name] == [
        (("Optimization", "none"), 0)]


def test_sampler_reports_resource_gauges_periodically_and_stops(metrics, caplog):
    m = metrics(MetricsConfig(sample_interval_s=0.5))
    m.loaded(OptimizationResult(model=None), ThreadDecision(1, 1, (), "test"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sum(line["name"] == catalog.RESIDENT_MEMORY.name for line in emitted(caplog)) >= 3:
            break
        time.sleep(0.1)
    m.close()
    lines = emitted(caplog)
    memory = [line["value"] for line in lines if line["name"] == catalog.RESIDENT_MEMORY.name]
    assert len(memory) >= 3 and min(memory) > 10e6  # the first at load, then one per interval
    import torch

    assert [line["value"] for line in lines if line["name"] == catalog.INTRA_OP.name][-1] == torch.get_num_threads()
    cores = [line for line in lines if line["name"] == catalog.PINNED_CORES.name][-1]
    assert cores["dims"][0][0] == "Cores" and cores["value"] >= 1
    assert not any(line["name"].startswith("ts_perf_gpu_") for line in lines)  # CPU worker: no GPU gauges
    after = len(emitted(caplog))
    time.sleep(1.2)
    assert len(emitted(caplog)) == after, "the sampler kept running after close()"


def test_sampler_thread_ends_with_its_owner():
    import gc

    m = WorkerMetrics(MetricsConfig(sample_interval_s=0.5), WORKER, ts_cache())
    m.loaded(OptimizationResult(model=None), ThreadDecision(1, 1, (), "test"))
    thread = m._sampler._thread
    assert thread.is_alive()
    del m
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive(), "a dropped handler kept its sampler thread"


def test_describe_cores():
    assert describe_cores([0, 1, 2, 3, 8, 10, 11]) == "0-3+8+10-11"
    assert describe_cores([5]) == "5"
    assert describe_cores([]) == "none"


def test_metrics_off_prints_nothing(metrics, caplog):
    m = metrics(MetricsConfig(enabled=False, sample_interval_s=0.5))
    m.loaded(OptimizationResult(model=None), ThreadDecision(1, 1, (), "test"))
    m.phase("inference", 0.1)
    m.batch(1, 0.1)
    m.rejected(1)
    assert not m.enabled and emitted(caplog) == []


def test_undeclared_metrics_are_reported_once_and_skipped(metrics, caplog):
    caplog.set_level(logging.WARNING, logger="torchserve_perf.plugins.metrics.emitter")
    m = metrics(cache=ts_cache(TS_DEFAULT_YAML))
    m.batch(1, 0.1)
    assert not m.enabled and emitted(caplog) == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "torchserve_perf.plugins.metrics.emitter"]
    assert len(warnings) == 1 and "metrics_config=" in warnings[0]


class BrokenMetric:
    dimension_names = list(catalog.HANDLER.dimensions)

    def add_or_update(self, *args, **kwargs):
        raise OSError("stdout is gone")


class BrokenCache:
    def get_metric(self, name, metric_type):
        return types.SimpleNamespace(dimension_names=list(catalog.by_name()[name].dimensions),
                                     add_or_update=BrokenMetric().add_or_update)


def test_a_failing_metric_is_logged_once_and_never_raises(metrics, caplog):
    caplog.set_level(logging.DEBUG, logger="torchserve_perf.plugins.observers")
    m = metrics(cache=BrokenCache())
    runner = Observers([m])  # the handler's one guard around every observer hook
    for _ in range(3):
        runner.phase_finished(PhaseEvent("inference", 2, 0.1))
        runner.batch_finished(BatchFinished(2, 2, 0, 0.2, False))
    runner.worker_loaded(WorkerLoaded(OptimizationResult(model=None), ThreadDecision(1, 1, (), "test")))
    assert runner.failures == {(id(m), "phase_finished"): 3, (id(m), "batch_finished"): 3, (id(m), "worker_loaded"): 1}
    warnings = [r for r in caplog.records if r.name == "torchserve_perf.plugins.observers" and r.levelno == logging.WARNING]
    assert len(warnings) == 3 and all(r.exc_info for r in warnings)  # one per hook, with the traceback
    assert all("WorkerMetrics" in r.getMessage() for r in warnings)


# ---- GPU ---------------------------------------------------------------------------------------
def test_no_nvml_means_no_gpu_gauges_and_no_error():
    probe = NvmlProbe(0, nvml=types.SimpleNamespace(nvmlInit=lambda: (_ for _ in ()).throw(OSError("no driver"))))
    assert probe.sample() is None and "no driver" in probe.unavailable
    assert probe.sample() is None  # asked once, not on every sample


def test_real_pynvml_without_a_gpu_is_skipped_cleanly():
    pytest.importorskip("pynvml")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; covered by the GPU gauge path")
    probe = NvmlProbe(0)
    assert probe.sample() is None and probe.unavailable
    probe.close()


class FakeNvml:
    """Stands in for pynvml's three calls we make, with fixed readings."""

    def __init__(self):
        self.indices = []

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        self.indices.append(index)
        return f"handle-{index}"

    def nvmlDeviceGetHandleByUUID(self, uuid):
        raise AssertionError("torch has no CUDA here, so no UUID to match")

    def nvmlDeviceGetUtilizationRates(self, handle):
        return types.SimpleNamespace(gpu=37, memory=12)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return types.SimpleNamespace(used=3 * 2**30, total=80 * 2**30, free=77 * 2**30)


def test_gpu_worker_reports_utilisation_and_memory_per_device(metrics, caplog, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("real GPU present")
    fake = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    worker = WorkerIdentity(model_name="tiny_metrics", model_version="1.0", port=9124, gpu_id=1, workers=2, pid=1)
    m = metrics(MetricsConfig(sample_interval_s=30), worker=worker)
    m.loaded(OptimizationResult(model=None), ThreadDecision(1, 1, (), "test"))
    gpu = {line["name"]: line for line in emitted(caplog, worker) if line["name"].startswith("ts_perf_gpu_")}
    assert gpu[catalog.GPU_UTILIZATION.name]["value"] == 37
    assert gpu[catalog.GPU_MEMORY_USED.name]["value"] == 3 * 2**30
    assert gpu[catalog.GPU_MEMORY_TOTAL.name]["value"] == 80 * 2**30
    assert all(line["dims"][:2] == [("DeviceId", "1"), ("WorkerName", "W-9124-tiny_metrics_1.0")] for line in gpu.values())
    assert fake.indices == [1]


# ---- inside the real handler ------------------------------------------------------------------
TINY_MODEL = '''
import torch


class TinyMetricsNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)
'''


def test_handler_serves_when_every_metric_fails(tmp_path, caplog, monkeypatch):
    import torch

    from torchserve_perf.handlers.tensor_handler import TensorHandler
    from torchserve_perf.plugins.metrics.emitter import Emitter

    model_file = tmp_path / "tiny_metrics_net.py"
    model_file.write_text(TINY_MODEL)
    torch.manual_seed(0)
    namespace = runpy.run_path(str(model_file))
    manifest = write_model_dir(tmp_path / "model", model_file, namespace["TinyMetricsNet"]())
    config = {"handler": {"tensor": {"input_shape": [4]}, "metrics": {"sample_interval_s": 0}}}
    request = RequestContext(tmp_path / "model", manifest, model_yaml_config=config)

    def explode(self, spec, value, *labels):
        raise RuntimeError("metrics backend broke")

    monkeypatch.setattr(Emitter, "emit", explode)
    handler = TensorHandler()
    handler.initialize(request.context)
    assert handler.metrics.enabled
    body = [{"body": {"inputs": [[1.0, 2.0, 3.0, 4.0]]}}, {"body": {"inputs": [[0.0, 0.0, 0.0, 0.0]]}},
            {"body": "not a tensor"}]
    outputs = handler.handle(body, request.for_batch(size=3))
    assert len(outputs) == 3 and len(outputs[0][0]) == 2 and len(outputs[1][0]) == 2
    assert "error" in outputs[2]
    failures = handler.observers.failures  # the runner guarded the metrics at load and per batch
    assert failures[(id(handler.metrics), "worker_loaded")] == 1 and failures[(id(handler.metrics), "batch_finished")] == 1
