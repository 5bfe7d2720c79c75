"""int8: static post-training quantization with ONNX Runtime (QDQ, per-channel weights), gated on accuracy.

The model is exported to ONNX (onnx_runtime.export), calibrated on the archive's calibration
samples (calibration.py) by ONNX Runtime's own quantizer, and served by InferenceSessions sized
and kept per thread count exactly like the onnxruntime plugin (so it follows elastic threads).
Before it is kept, the held-out samples run through the fp32 model and the int8 one and the
accuracy gate (accuracy_gate.py) must pass; otherwise the step is dropped with the measured
agreement and the worker keeps its fp32 path.

Quantizing costs seconds to minutes, so ``torchserve-perf archive --calibration`` quantizes when it
builds the archive and the archive carries the graph (quantized_store.py); without it, the first
worker on a host quantizes (under a lock) and writes the graph to the host's cache (``int8/``) for
the others and for restarts. A graph the user quantized may also be given as ``prebuilt``: it is
used as it is. In every case the gate runs at load, on this host's kernels.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import numpy as np
import torch

from torchserve_perf.plugins.config import at_least_one
from torchserve_perf.plugins.optimizations import calibration
from torchserve_perf.plugins.optimizations.auto_cache import model_digest
from torchserve_perf.plugins.optimizations.interface import AutoCandidate, OptimizationSpec, StepContext, Unavailable
from torchserve_perf.plugins.optimizations.onnx_runtime import (
    OnnxRuntimeModel,
    OnnxRuntimeOptions,
    elastic_sessions,
    export,
    make_session,
)
from torchserve_perf.plugins.optimizations.quantized_store import QuantizedStore

log = logging.getLogger("torchserve_perf.plugins.optimizations")

METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}


@dataclass(frozen=True)
class Int8Options(calibration.CalibratedOptions):
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    # A graph quantized at archive time (torchserve-perf archive --calibration); used when present.
    prebuilt: str = "model.int8.onnx"
    max_sessions: int = 3  # sessions kept to follow elastic threads, as for onnxruntime

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least_one(self, "max_sessions")


def unavailable(model: Callable[..., Any], step: StepContext) -> Optional[str]:
    for package in ("onnxruntime", "onnx"):
        if importlib.util.find_spec(package) is None:
            return f"the {package} package is not installed (pip install {package}, or torchserve-perf[onnx])"
    if step.runtime.device.type != "cpu":
        return f"int8 static quantization targets CPU workers, and this one runs on {step.runtime.device}"
    options: Int8Options = step.options
    if calibration.find(options.calibration) is None:
        return (f"no calibration samples ({options.calibration} not found): random inputs do not calibrate a "
                "real model. Build the archive with --calibration DIR")
    return None


class _Reader:
    """ONNX Runtime's calibration data reader: one sample at a time, under the graph's input name."""

    def __init__(self, name: str, samples: torch.Tensor) -> None:
        self.name = name
        self.rows = iter([np.ascontiguousarray(samples[i:i + 1].numpy()) for i in range(samples.shape[0])])

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        row = next(self.rows, None)
        return None if row is None else {self.name: row}


def quantize(proto: bytes, samples: torch.Tensor, options: Int8Options) -> bytes:
    """The fp32 graph ``proto`` quantized to int8 (QDQ) on ``samples``; needs onnxruntime."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="ts_perf_int8_") as tmp:
        fp32, prepared, int8 = (os.path.join(tmp, n) for n in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        Path(fp32).write_bytes(proto)
        try:  # folds and infers shapes so more nodes quantize; a graph it cannot handle quantizes as it is
            quant_pre_process(fp32, prepared, skip_symbolic_shape=True)
        except Exception as exc:
            log.debug("int8: quantization pre-processing skipped: %s", exc)
            prepared = fp32
        name = onnx.load(prepared, load_external_data=False).graph.input[0].name
        quantize_static(prepared, int8, _Reader(name, samples), quant_format=QuantFormat.QDQ,
                        per_channel=options.per_channel, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, METHODS[options.method]))
        return Path(int8).read_bytes()


def cache_key(model_digest: str, calibration_file: Path, options: Int8Options, shape: tuple[int, ...]) -> str:
    import onnxruntime

    return calibration.artefact_key(model_digest, calibration_file, "onnxruntime", onnxruntime.__version__,
                                    options.method, options.per_channel, options.holdout_every, list(shape))


def quantized_graph(model: torch.nn.Module, step: StepContext, samples: calibration.CalibrationSet,
                    found: Path, model_digest: str) -> bytes:
    """The ``prebuilt`` graph, else the archive's, the cached one or a new one (quantized_store.py)."""
    options: Int8Options = step.options
    prebuilt = calibration.find(options.prebuilt)
    if prebuilt is not None:
        log.info("int8: using the graph quantized at archive time, %s", prebuilt)
        return prebuilt.read_bytes()
    store = QuantizedStore("int8", cache_key(model_digest, found, options, tuple(step.example.shape[1:])),
                           (".onnx",), calibration.store_dir(step))
    return store.get(lambda: quantize(export(model, step, "torchscript", None), samples.calibrate, options),
                     lambda path: path.read_bytes(), lambda graph, path: path.write_bytes(graph))


def sessions(graph: bytes, step: StepContext, max_sessions: int) -> QuantizedModel:
    """One session at the worker's threads, or one per thread count when elastic threads may raise
    them: built as the onnxruntime plugin builds its own, each session with its own weights and arena."""
    import onnxruntime as ort

    options = OnnxRuntimeOptions(max_sessions=max_sessions, share_weights=False, shared_arena=False)
    first = make_session(graph, options, step, ort, step.runtime.intra_op_threads)
    return QuantizedModel(first, step.runtime.device, elastic_sessions(graph, first, options, step, ort))


class QuantizedModel(OnnxRuntimeModel):
    """An int8 session (or one per thread count) that says what the accuracy gate measured."""

    measured: dict[str, float]


def apply(model: Callable[..., Any], step: StepContext) -> Callable[..., Any]:
    if not isinstance(model, torch.nn.Module):
        raise Unavailable(f"cannot quantize a {type(model).__name__}; put int8 first in the chain")
    options: Int8Options = step.options
    found, samples = calibration.required(options.calibration, options.holdout_every, step.example)
    digest = model_digest(model)
    graph = quantized_graph(model, step, samples, found, digest)
    runner = sessions(graph, step, options.max_sessions)
    runner.measured = calibration.gate("int8", model, digest, found, samples, runner, step)
    return runner


PLUGIN = OptimizationSpec(
    name="int8", description="static int8 (ONNX Runtime QDQ, per-channel) calibrated on the archive's samples, "
                             "kept only if the accuracy gate passes",
    options_class=Int8Options, apply=apply, unavailable=unavailable, lossy=True, gated=True,
    auto_candidates=(AutoCandidate("int8", order=45),),
)
