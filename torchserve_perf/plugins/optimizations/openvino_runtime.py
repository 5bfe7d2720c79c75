"""openvino, openvino_bf16, openvino_int8: the model converted to OpenVINO and compiled for the CPU.

- ``openvino``: fp32 (the precision hint is pinned to f32: on a CPU with bf16 OpenVINO would
  otherwise pick bf16 on its own, which would make a lossless step lossy);
- ``openvino_bf16``: bf16 inference precision, only where the CPU computes it natively;
- ``openvino_int8``: NNCF post-training quantization on the archive's calibration samples, kept
  only if the accuracy gate (accuracy_gate.py) passes on the held-out ones.

A compiled model's thread count is fixed when it is compiled, so with elastic threads the worker
compiles one per thread count (onnx_runtime.session_threads) and runs each batch on the largest
not above torch's current count, as the onnxruntime plugin does with its sessions.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import numpy as np
import torch

from torchserve_perf.plugins.config import at_least_one
from torchserve_perf.plugins.optimizations import auto_cache, calibration
from torchserve_perf.plugins.optimizations.autocast import hardware_support
from torchserve_perf.plugins.optimizations.interface import AutoCandidate, OptimizationSpec, StepContext, Unavailable
from torchserve_perf.plugins.optimizations.onnx_runtime import for_threads, session_threads
from torchserve_perf.plugins.optimizations.quantized_store import QuantizedStore

Precision = Literal["f32", "bf16"]


@dataclass(frozen=True)
class OpenVinoOptions:
    max_models: int = 3  # compiled models kept to follow elastic threads (1: the static share only)
    performance_hint: Literal["LATENCY", "THROUGHPUT"] = "LATENCY"

    def __post_init__(self) -> None:
        at_least_one(self, "max_models")


@dataclass(frozen=True)
class OpenVinoInt8Options(calibration.CalibratedOptions):
    preset: Literal["performance", "mixed"] = "performance"  # NNCF: symmetric, or asymmetric activations
    max_models: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least_one(self, "max_models")


class OpenVinoModel:
    """Compiled models keyed by thread count, called like a module: tensors in, a tensor out."""

    def __init__(self, by_threads: dict[int, Any], device: torch.device) -> None:
        self.by_threads = sorted(by_threads.items())
        self.device = device
        self.measured: dict[str, float] = {}

    def compiled_for(self, threads: int) -> Any:
        return for_threads(self.by_threads, threads)

    def __call__(self, *args: torch.Tensor) -> Any:
        compiled = self.compiled_for(torch.get_num_threads()) if len(self.by_threads) > 1 else self.by_threads[0][1]
        feeds = [np.ascontiguousarray(a.detach().cpu().numpy()) for a in args]
        results = compiled(feeds)
        outputs = [torch.from_numpy(np.array(results[out])).to(self.device) for out in compiled.outputs]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def __repr__(self) -> str:
        return f"OpenVinoModel(compiled for {[count for count, _ in self.by_threads]} threads)"


def _missing(step: StepContext) -> Optional[str]:
    if importlib.util.find_spec("openvino") is None:
        return "the openvino package is not installed (pip install openvino, or torchserve-perf[openvino])"
    if step.runtime.device.type != "cpu":
        return f"the openvino plugins compile for the CPU, and this worker runs on {step.runtime.device}"
    return None


def convert(model: Callable[..., Any], step: StepContext) -> Any:
    """The model as an OpenVINO model, with the dimensions that vary across warm-up inputs left dynamic."""
    import openvino as ov

    if not isinstance(model, torch.nn.Module):
        raise Unavailable(f"cannot convert a {type(model).__name__} to OpenVINO; put it earlier in the chain")
    dims = step.dynamic_dims
    shape = [-1 if d in dims else int(n) for d, n in enumerate(step.example.shape)]
    return ov.convert_model(model, example_input=step.example, input=[ov.PartialShape(shape)])


def compile_models(ov_model: Any, step: StepContext, precision: Precision, max_models: int,
                   hint: str = "LATENCY") -> OpenVinoModel:
    import openvino as ov

    runtime = step.runtime
    counts: tuple[int, ...] = (max(1, runtime.intra_op_threads),)
    if runtime.intra_op_max > runtime.intra_op_threads:
        counts = session_threads(runtime.intra_op_threads, runtime.intra_op_max, max_models)
    core = ov.Core()
    if runtime.cache_dir:  # OpenVINO's own cache of compiled models: a restarted worker imports, not compiles
        core.set_property({"CACHE_DIR": str(Path(runtime.cache_dir) / "openvino_compiled")})
    compiled = {n: core.compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": n,
                                                         "INFERENCE_PRECISION_HINT": precision,
                                                         "PERFORMANCE_HINT": hint,
                                                         "NUM_STREAMS": 1})
                for n in counts}
    return OpenVinoModel(compiled, runtime.device)


def fp32_unavailable(model: Callable[..., Any], step: StepContext) -> Optional[str]:
    return _missing(step)


def bf16_unavailable(model: Callable[..., Any], step: StepContext) -> Optional[str]:
    return _missing(step) or hardware_support(step.runtime.device, torch.bfloat16)


def int8_unavailable(model: Callable[..., Any], step: StepContext) -> Optional[str]:
    missing = _missing(step)
    if missing:
        return missing
    if importlib.util.find_spec("nncf") is None:
        return "the nncf package is not installed (pip install nncf, or torchserve-perf[openvino])"
    options: OpenVinoInt8Options = step.options
    if calibration.find(options.calibration) is None:
        return (f"no calibration samples ({options.calibration} not found): random inputs do not calibrate a "
                "real model. Build the archive with --calibration DIR")
    return None


def apply_fp32(model: Callable[..., Any], step: StepContext) -> Callable[..., Any]:
    options: OpenVinoOptions = step.options
    return compile_models(convert(model, step), step, "f32", options.max_models, options.performance_hint)


def apply_bf16(model: Callable[..., Any], step: StepContext) -> Callable[..., Any]:
    options: OpenVinoOptions = step.options
    return compile_models(convert(model, step), step, "bf16", options.max_models, options.performance_hint)


def quantize(ov_model: Any, samples: torch.Tensor, preset: str) -> Any:
    """``ov_model`` quantized by NNCF on ``samples`` (one row per calibration step)."""
    import nncf

    # Its INFO lines would fill the model log. Not nncf.set_log_level: that also sets the level of
    # every handler on its logger, which may be shared (a test runner's capture handler).
    logging.getLogger("nncf").setLevel(logging.ERROR)
    rows = [np.ascontiguousarray(samples[i:i + 1].numpy()) for i in range(samples.shape[0])]
    chosen = nncf.QuantizationPreset.PERFORMANCE if preset == "performance" else nncf.QuantizationPreset.MIXED
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return nncf.quantize(ov_model, nncf.Dataset(rows), preset=chosen, subset_size=len(rows))


def quantized_model(model: Callable[..., Any], step: StepContext, samples: calibration.CalibrationSet,
                    found: Path, model_digest: str) -> Any:
    """NNCF's int8 model: the archive's, the host's cached one, or quantized now (quantized_store.py).
    NNCF is imported only to quantize: a worker that finds the model does not pay its ~20 MiB."""
    from importlib.metadata import version

    import openvino as ov

    options: OpenVinoInt8Options = step.options
    key = calibration.artefact_key(model_digest, found, "openvino", ov.__version__, version("nncf"), options.preset,
                                   options.holdout_every, list(step.example.shape[1:]), step.dynamic_dims)
    store = QuantizedStore("openvino_int8", key, (".xml", ".bin"), calibration.store_dir(step))
    return store.get(lambda: quantize(convert(model, step), samples.calibrate, options.preset),
                     lambda path: ov.Core().read_model(str(path)),
                     lambda quantized, path: ov.save_model(quantized, str(path), compress_to_fp16=False))


def apply_int8(model: Callable[..., Any], step: StepContext) -> Callable[..., Any]:
    options: OpenVinoInt8Options = step.options
    found, samples = calibration.required(options.calibration, options.holdout_every, step.example)
    digest = auto_cache.model_digest(model)
    quantized = quantized_model(model, step, samples, found, digest)
    runner = compile_models(quantized, step, "f32", options.max_models)
    runner.measured = calibration.gate("openvino_int8", model, digest, found, samples, runner, step)
    return runner


PLUGINS = (
    OptimizationSpec(name="openvino", description="OpenVINO fp32 on the CPU, compiled per thread count",
                     options_class=OpenVinoOptions, apply=apply_fp32, unavailable=fp32_unavailable,
                     auto_candidates=(AutoCandidate("openvino", order=42),)),
    OptimizationSpec(name="openvino_bf16", description="OpenVINO with bf16 inference precision, where the CPU "
                                                       "computes bf16 natively",
                     options_class=OpenVinoOptions, apply=apply_bf16, unavailable=bf16_unavailable, lossy=True,
                     auto_candidates=(AutoCandidate("openvino_bf16", order=62),)),
    OptimizationSpec(name="openvino_int8", description="OpenVINO int8 (NNCF) calibrated on the archive's samples, "
                                                       "kept only if the accuracy gate passes",
                     options_class=OpenVinoInt8Options, apply=apply_int8, unavailable=int8_unavailable, lossy=True,
                     gated=True,
                     auto_candidates=(AutoCandidate("openvino_int8", order=47),)),
)
