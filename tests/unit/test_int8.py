"""int8 and OpenVINO: the accuracy gate as tables, and a real classifier trained here and quantized by
every quantizer we ship, with its held-out accuracy in fp32 and int8."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

from torchserve_perf.plugins.config import ConfigValueError
from torchserve_perf.plugins.optimizations import (
    OptimizationConfig,
    Runtime,
    StepContext,
    calibration,
    optimize,
    standard_registry,
)
from torchserve_perf.plugins.optimizations.accuracy_gate import (
    Agreement,
    GateConfig,
    GateRejected,
    agreement,
    judge,
    ranked,
)
from torchserve_perf.plugins.optimizations.auto import candidates
from torchserve_perf.plugins.optimizations.parity import Reference

pytest.importorskip("sklearn")
from torchserve_perf.models.digits_training import accuracy, load_digits_data, train_digits_cnn

HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
HAS_OPENVINO = importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("nncf") is not None
MAX_DROP = 0.005  # at most half a point of held-out accuracy


# ---- the gate, as tables ----------------------------------------------------------------------------
@pytest.mark.parametrize("reference, candidate, k, top1, overlap", [
    ([[1, 2, 3]], [[1, 2, 3]], 3, 1.0, 1.0),
    ([[1, 2, 3]], [[2, 1, 3]], 3, 0.0, 1.0),                    # same set, other winner
    ([[1, 2, 3], [4, 5, 6]], [[1, 9, 8], [4, 5, 6]], 3, 1.0, (1 / 3 + 1) / 2),
    ([["cat", "dog"]], [["cat", "owl"]], 2, 1.0, 0.5),          # any labels: text models' too
    ([[1, 2]], [[1, 2]], 5, 1.0, 1.0),                          # fewer classes than k
    ([], [], 5, 0.0, 0.0),
])
def test_agreement_table(reference, candidate, k, top1, overlap):
    measured = agreement(reference, candidate, k)
    assert measured.top1 == pytest.approx(top1) and measured.topk_overlap == pytest.approx(overlap)
    assert measured.samples == len(reference)


@pytest.mark.parametrize("top1, overlap, samples, passed, words", [
    (1.0, 1.0, 64, True, "accuracy gate passed"),
    (0.99, 0.8, 64, True, "passed"),
    (0.98, 1.0, 64, False, "accuracy gate failed: top-1 agreement 0.9800"),
    (1.0, 0.7, 64, False, "top-5 overlap 0.7000"),
    (1.0, 1.0, 4, False, "fewer than the 8 the gate needs"),
])
def test_judge_table(top1, overlap, samples, passed, words):
    verdict = judge(Agreement(samples=samples, top1=top1, topk_overlap=overlap, k=5), GateConfig())
    assert verdict.passed is passed and words in verdict.reason


@pytest.mark.parametrize("count, every, kept, held", [
    (8, 4, [0, 1, 2, 4, 5, 6], [3, 7]),
    (3, 4, [0, 1, 2], []),
    (4, 2, [0, 2], [1, 3]),
])
def test_calibration_split_table(count, every, kept, held):
    assert calibration.split(count, every) == (kept, held)


@pytest.mark.parametrize("field, value", [("threshold", 1.5), ("min_topk_overlap", -0.1), ("topk", 0)])
def test_gate_config_refuses_nonsense(field, value):
    with pytest.raises(ConfigValueError, match=field):
        GateConfig(**{field: value})


def test_ranked_orders_best_first():
    assert ranked(torch.tensor([[0.1, 0.9, 0.5], [3.0, 1.0, 2.0]]), 2) == [[1, 2], [0, 2]]


# ---- a real classifier -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    data = load_digits_data()
    return data, train_digits_cnn(data)


def _runtime(tmp_path: Path) -> Runtime:
    return Runtime(device=torch.device("cpu"), intra_op_threads=1, inter_op_threads=1, intra_op_max=2,
                   cache_dir=str(tmp_path / "cache"))


def _step(tmp_path: Path, options, example: torch.Tensor) -> StepContext:
    return StepContext(runtime=_runtime(tmp_path), options=options, inputs=(example[:1], example), example=example)


def _calibration_file(tmp_path: Path, samples: torch.Tensor) -> str:
    return str(calibration.save(samples, tmp_path / "calibration.pt"))


QUANTIZERS = [pytest.param("int8", marks=pytest.mark.skipif(not HAS_ORT, reason="onnxruntime not installed")),
              pytest.param("openvino_int8", marks=pytest.mark.skipif(not HAS_OPENVINO, reason="openvino/nncf missing"))]


@pytest.mark.parametrize("plugin", QUANTIZERS)
def test_int8_keeps_the_trained_cnn_within_half_a_point(plugin, digits, tmp_path):
    data, model = digits
    spec = standard_registry(entry_points=False).get(plugin)
    options = spec.options_class(calibration=_calibration_file(tmp_path, data.train_x[:256]))
    quantized = spec.apply(model, _step(tmp_path, options, data.test_x[:2]))
    fp32, int8 = accuracy(model, data.test_x, data.test_y), accuracy(quantized, data.test_x, data.test_y)
    assert fp32 > 0.95  # the classifier is real
    assert fp32 - int8 <= MAX_DROP, f"{plugin}: fp32 {fp32:.4f}, int8 {int8:.4f}"
    assert quantized.measured["top1_agreement"] >= 0.99 and quantized.measured["samples"] == 64


@pytest.mark.parametrize("plugin", QUANTIZERS)
def test_unrepresentative_calibration_fails_the_gate(plugin, digits, tmp_path):
    """The quantizer sees blank images; the held-out samples are real digits: int8 saturates, the gate says so."""
    data, model = digits
    samples = torch.zeros(128, 1, 8, 8)
    held = [i for i in range(128) if i % 4 == 3]
    samples[held] = data.test_x[:len(held)]
    spec = standard_registry(entry_points=False).get(plugin)
    options = spec.options_class(calibration=_calibration_file(tmp_path, samples))
    with pytest.raises(GateRejected, match="accuracy gate failed") as info:
        spec.apply(model, _step(tmp_path, options, data.test_x[:2]))
    assert info.value.measured["top1_agreement"] < 0.99


@pytest.mark.skipif(not HAS_ORT, reason="onnxruntime not installed")
def test_a_load_reports_the_agreement_kept_or_refused(digits, tmp_path):
    data, model = digits
    path = _calibration_file(tmp_path, data.train_x[:256])
    registry = standard_registry(entry_points=False)
    kept = optimize(model, OptimizationConfig.from_mapping({"chain": ["int8"], "int8": {"calibration": path}}),
                    data.test_x[:1], _runtime(tmp_path), registry)
    assert kept.applied == ["int8"] and kept.measured["int8"]["top1_agreement"] >= 0.99
    assert "int8 top-1 agreement with fp32" in kept.describe()
    strict = {"calibration": path, "gate": {"threshold": 1.0, "min_topk_overlap": 1.0}, "method": "minmax"}
    refused = optimize(model, OptimizationConfig.from_mapping({"chain": ["int8"], "int8": strict}),
                       data.test_x[:1], _runtime(tmp_path), registry)
    if refused.applied:  # a perfect top-5 match everywhere is possible; then there is nothing to refuse
        return
    assert "accuracy gate failed" in refused.skipped["int8"] and "int8" in refused.measured


@pytest.mark.parametrize("plugin, pattern", [
    pytest.param("int8", "*.onnx", marks=pytest.mark.skipif(not HAS_ORT, reason="onnxruntime not installed")),
    pytest.param("openvino_int8", "*.xml", marks=pytest.mark.skipif(not HAS_OPENVINO, reason="openvino missing")),
])
def test_the_quantized_model_is_cached_per_host(plugin, pattern, digits, tmp_path):
    data, model = digits
    spec = standard_registry(entry_points=False).get(plugin)
    options = spec.options_class(calibration=_calibration_file(tmp_path, data.train_x[:128]))
    spec.apply(model, _step(tmp_path, options, data.test_x[:2]))
    cached = list((tmp_path / "cache" / plugin).glob(pattern))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    spec.apply(model, _step(tmp_path, options, data.test_x[:2]))  # a restart: read, not quantized again
    assert cached[0].stat().st_mtime_ns == stamp


# ---- auto: lossy candidates only when allowed, and never without calibration ------------------------------
def _auto_config(**auto) -> OptimizationConfig:
    return OptimizationConfig.from_mapping({"chain": ["auto"], "auto": auto})


def test_auto_considers_int8_only_when_allowed_and_calibrated(digits, tmp_path, monkeypatch):
    data, model = digits
    registry = standard_registry(entry_points=False)
    reference = Reference.capture(model, [data.test_x[:1], data.test_x[:2]])
    runtime = dataclasses.replace(_runtime(tmp_path), cache_dir=None)

    _, left_out = candidates(model, _auto_config(), reference, runtime, registry)
    assert "changes numerics (list it under auto.allow" in left_out["int8"]

    monkeypatch.chdir(tmp_path)  # a worker's folder, without calibration samples
    _, left_out = candidates(model, _auto_config(allow=["int8"]), reference, runtime, registry)
    if HAS_ORT:
        assert "no calibration samples" in left_out["int8"]

    calibration.save(data.train_x[:64], tmp_path / calibration.DEFAULT_FILE)
    kept, left_out = candidates(model, _auto_config(allow=["int8"]), reference, runtime, registry)
    if HAS_ORT:
        assert ("int8",) in kept
    assert "openvino_int8" in left_out  # allowed by name only


def test_auto_allow_names_must_be_registered():
    from torchserve_perf.plugins.config import HandlerConfigError

    with pytest.raises(HandlerConfigError, match=r"auto\.allow\[0\]"):
        _auto_config(allow=["int9"]).check(standard_registry(entry_points=False))


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino not installed")
@pytest.mark.parametrize("plugin, tolerance", [("openvino", 1e-4), ("openvino_bf16", 0.1)])
def test_openvino_matches_fp32_and_follows_elastic_threads(plugin, tolerance, digits, tmp_path):
    data, model = digits
    spec = standard_registry(entry_points=False).get(plugin)
    step = _step(tmp_path, spec.options_class(), data.test_x[:2])
    reason = spec.unavailable(model, step)
    if reason:  # bf16 on a CPU without it: refused, with the reason
        assert "bf16" in reason
        return
    compiled = spec.apply(model, step)
    assert [count for count, _ in compiled.by_threads] == [1, 2]  # one compiled model per thread count
    expected = model(data.test_x[:8]).detach()
    assert (compiled(data.test_x[:8]) - expected).abs().max() <= tolerance * expected.abs().max()
    assert accuracy(compiled, data.test_x, data.test_y) >= accuracy(model, data.test_x, data.test_y) - MAX_DROP
