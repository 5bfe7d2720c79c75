"""A worker's memory: the breakdown at load (plugins/memory.py), ONNX Runtime sessions sharing one copy of
the weights (plugins/optimizations/ort_shared_weights.py), the eager model released and read back for
the fallback (handlers/eager_release.py), and the reports' reading of it (tools/worker_memory.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from tests.unit.test_handler_core import GOOD, make_handler, run
from torchserve_perf.handlers import eager_release
from torchserve_perf.plugins import memory
from torchserve_perf.plugins.optimizations import OptimizationConfig, Runtime, StepContext, optimize, standard_registry
from torchserve_perf.tools import worker_memory

MIB = memory.MIB


# ---- the breakdown: pure functions as tables ----------------------------------------------------------
@pytest.mark.parametrize("name, delta, reported, expected", [
    ("eager model", 50, {}, [("eager model", 50)]),
    ("eager model", 0, {}, [("eager model", 0)]),  # a step that added nothing still shows
    ("optimization", 100, {"weights": 60, "arena": 10}, [("weights", 60), ("arena", 10), ("optimization", 30)]),
    ("optimization", 70, {"weights": 60, "arena": 10}, [("weights", 60), ("arena", 10)]),  # all of it reported
    ("optimization", 50, {"weights": 60}, [("weights", 60), ("optimization", -10)]),  # freed elsewhere
    ("optimization", 10, {"weights": 0}, [("optimization", 10)]),  # zero parts are left out
])
def test_memory_split_table(name, delta, reported, expected):
    assert memory.split_step(name, delta, reported) == expected


@pytest.mark.parametrize("baseline, steps, resident, parts, explained", [
    (300, [("eager", 50)], 350, ((memory.BEFORE_LOAD, 300), ("eager", 50)), 1.0),
    (300, [("eager", 50), ("released", -50)], 300, ((memory.BEFORE_LOAD, 300), ("eager", 50), ("released", -50)), 1.0),
    (300, [("eager", 50)], 400, ((memory.BEFORE_LOAD, 300), ("eager", 50), (memory.REST, 50)), 0.875),
    (300, [("a", 10), ("a", 5)], 315, ((memory.BEFORE_LOAD, 300), ("a", 15)), 1.0),  # same name: summed
])
def test_memory_breakdown_table(baseline, steps, resident, parts, explained):
    result = memory.breakdown(baseline, steps, resident)
    assert result.parts == parts
    assert sum(size for _, size in result.parts) == resident  # the parts always add up to the RSS
    assert result.explained_fraction == pytest.approx(explained)


def test_the_load_meter_marks_each_step_against_the_last():
    readings = iter([100, 150, 150, 400, 390, 390])
    meter = memory.LoadMeter.start(probe=lambda: next(readings) * MIB)
    meter.mark("eager model")
    meter.mark("setup")
    meter.mark("optimization", {"onnxruntime weights": 200 * MIB})
    meter.mark("eager model released")
    breakdown = meter.finish()
    assert dict(breakdown.parts) == {memory.BEFORE_LOAD: 100 * MIB, "eager model": 50 * MIB, "setup": 0,
                                     "onnxruntime weights": 200 * MIB, "optimization": 50 * MIB,
                                     "eager model released": -10 * MIB}
    assert breakdown.resident == 390 * MIB and breakdown.explained_fraction == 1.0
    assert "RSS 390.0 MiB at load" in breakdown.describe() and "(100% named)" in breakdown.describe()


@pytest.mark.parametrize("part, label", [
    ("onnxruntime sessions (3)", "onnxruntime_sessions_3"),
    ("process before load", "process_before_load"),
    ("Eager model released", "eager_model_released"),
    ("()", "rest"),
])
def test_memory_metric_label_table(part, label):
    assert memory.metric_label(part) == label


def test_reported_parts_are_found_through_the_fallback_wrapper():
    class Runtime_:
        memory_parts = {"weights": 3}

    class Wrapper:
        def __init__(self) -> None:
            self.optimized = Runtime_()

    assert memory.reported_parts(Wrapper()) == {"weights": 3}
    assert memory.reported_parts(object()) == {}


# ---- reports ------------------------------------------------------------------------------------------
LOG = ("2026-12-04T21:00:00,1 [INFO ] W-9000-ours_1.0-stdout MODEL_LOG - W-9000-ours_1.0 memory at load: "
       "RSS 502.0 MiB at load = process before load +383.4, eager model +49.7, onnxruntime sessions (2) +12.8, "
       "eager model released -44.5, rest +101.1 MiB (80% named)\nsomething else\n")


@pytest.mark.parametrize("text, expected", [
    (LOG, [{"worker": "W-9000-ours_1.0", "rss_mib": 502.0, "named_pct": 80,
            "parts_mib": {"process before load": 383.4, "eager model": 49.7, "onnxruntime sessions (2)": 12.8,
                          "eager model released": -44.5, "rest": 101.1}}]),
    ("no breakdown here\n", []),
])
def test_worker_memory_log_table(text, expected):
    assert worker_memory.parse_load_lines(text) == expected


@pytest.mark.parametrize("workers, cell", [
    ([{"rss_mib": 400.0}, {"rss_mib": 410.0}], "405 MiB (2 workers)"),
    ([{"rss_mib": 300.0, "pss_mib": 200.0}], "300 MiB (1 worker)"),
    ([], "-"),
])
def test_worker_memory_column_table(workers, cell):
    assert worker_memory.column(worker_memory.summary(workers)) == cell


# ---- ONNX Runtime: one copy of the weights for every session ------------------------------------------
class ConvStack(nn.Module):
    """About 8 MiB of convolution weights on a small input: sessions cost weights, not activations."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(*[nn.Sequential(nn.Conv2d(192, 192, 3, padding=1), nn.ReLU()) for _ in range(6)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))


def _onnx_runner(model: nn.Module, share: bool, cache: Path) -> Any:
    from torchserve_perf.plugins.optimizations.onnx_runtime import OnnxRuntimeOptions, apply

    inputs = (torch.randn(1, 192, 4, 4), torch.randn(2, 192, 4, 4))
    runtime = Runtime(device=torch.device("cpu"), intra_op_threads=1, inter_op_threads=1, batch_size=2,
                      intra_op_max=2, cache_dir=str(cache))
    options = OnnxRuntimeOptions(exporter="torchscript", share_weights=share, shared_arena=share)
    return apply(model, StepContext(runtime, options, inputs, inputs[-1]))


def test_onnxruntime_sessions_share_one_copy_of_the_weights(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = ConvStack().eval()
    weights_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / MIB
    copies = _onnx_runner(model, False, tmp_path)
    shared = _onnx_runner(model, True, tmp_path)
    assert [n for n, _ in shared.by_threads] == [1, 2] and shared.shared is not None
    session_cost = {label: next(v for k, v in runner.memory_parts.items() if k.startswith("onnxruntime sessions"))
                    for label, runner in (("copies", copies), ("shared", shared))}
    # Two sessions with their own copies cost about twice the weights; sharing, a small fraction.
    assert session_cost["copies"] > 1.2 * weights_mib * MIB, session_cost
    assert session_cost["shared"] < 0.25 * session_cost["copies"], session_cost
    x = torch.randn(3, 192, 4, 4)
    with torch.inference_mode():
        expected = model(x)
        for _, session in shared.by_threads:  # every session answers like eager
            assert torch.allclose(shared.run(session, x), expected, atol=1e-4)
    from torchserve_perf.plugins.optimizations import onnx_runtime

    # A sibling worker, or the next start: the saved graph is found, and the model is not even exported.
    monkeypatch.setattr(onnx_runtime, "export", lambda *args: pytest.fail("exported again"))
    again = _onnx_runner(model, True, tmp_path)
    assert again.shared.graph_path == shared.shared.graph_path
    assert len(list((tmp_path / "onnxruntime").iterdir())) == 1


@pytest.mark.parametrize("change, same", [
    ({}, True),
    ({"export_key": "other model"}, False),
    ({"ort_version": "1.99"}, False),
    ({"level": "basic"}, False),
    ({"host": "another host"}, False),
])
def test_ort_cache_key_table(change, same):
    from torchserve_perf.plugins.optimizations.ort_shared_weights import cache_key

    base = {"export_key": "model", "ort_version": "1.32", "level": "all", "host": "h"}
    assert (cache_key(**{**base, **change}) == cache_key(**base)) is same


# ---- the eager model: released after load, read back for the fallback ---------------------------------
def _numbers(outputs: list) -> list[float]:
    return torch.tensor(json.loads(outputs[0]) if isinstance(outputs[0], (str, bytes)) else outputs[0]).flatten().tolist()


def test_the_eager_model_is_released_and_reloaded_once_for_the_fallback(tmp_path, caplog):
    pytest.importorskip("onnxruntime")
    handler, ctx = make_handler(tmp_path, handler_config={"optimizations": {"chain": ["onnxruntime"]}})
    assert handler.optimization.applied == ["onnxruntime"]
    assert isinstance(handler.model, eager_release.ReloadableEager) and not handler.model.loaded
    assert handler.runner.eager is handler.model  # the fallback reruns on the stand-in
    parts = dict(handler.memory.parts)
    assert parts["eager model released"] <= 0 and sum(parts.values()) == handler.memory.resident
    served, status = run(handler, ctx, [GOOD])
    assert status == [200] and not handler.model.loaded  # the optimized model serves: nothing reloaded

    def broken(*args: Any) -> Any:
        raise RuntimeError("optimized model down")

    handler.runner.optimized = broken
    with caplog.at_level("INFO", logger="torchserve_perf.handlers.eager_release"):
        again, status = run(handler, ctx, [GOOD])
    assert status == [200] and _numbers(again) == pytest.approx(_numbers(served), abs=1e-5)  # eager answers alike
    assert handler.model.loaded and handler.model.reload_seconds is not None
    assert "eager model reloaded from the archive" in caplog.text
    run(handler, ctx, [GOOD])
    assert caplog.text.count("eager model reloaded") == 1  # once


def test_the_eager_model_is_kept_when_the_optimized_model_uses_its_weights():
    model = nn.Sequential(nn.Linear(4, 4)).eval()
    config = OptimizationConfig(chain=("torchscript",))
    result = optimize(model, config, torch.randn(2, 4), Runtime(torch.device("cpu"), 1, 1), standard_registry())
    assert result.applied == ["torchscript"] or result.skipped
    kept = eager_release.release(result.model, model, result.applied, lambda: pytest.fail("reloaded"), "w")
    if result.applied:
        assert eager_release.holds_weights_of(result.model.optimized, model) == (kept is model)
    assert eager_release.release(result.model, model, [], lambda: None, "w") is model  # eager serves: kept


@pytest.mark.parametrize("holder, holds", [
    ("itself", True),
    ("same tensors in a list", True),
    ("a copy", False),
    ("nothing", False),
])
def test_holds_weights_of_table(holder, holds):
    eager = nn.Linear(3, 3)
    optimized: Any = {
        "itself": {"model": eager},
        "same tensors in a list": [eager.weight.detach()],
        "a copy": nn.Linear(3, 3),
        "nothing": object(),
    }[holder]
    assert eager_release.holds_weights_of(optimized, eager) is holds
