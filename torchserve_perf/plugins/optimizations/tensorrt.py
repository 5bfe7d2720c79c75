"""tensorrt: Torch-TensorRT compilation, on NVIDIA GPUs where torch_tensorrt is installed."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

import torch

from torchserve_perf.plugins.optimizations.interface import AutoCandidate, OptimizationSpec, StepContext


@dataclass(frozen=True)
class TensorRTOptions:
    precision: Literal["fp32", "fp16"] = "fp32"
    workspace_mb: int = 1024


def unavailable(model: Callable[..., Any], step: StepContext) -> Optional[str]:
    if step.runtime.device.type != "cuda":
        return f"TensorRT needs an NVIDIA GPU, and this worker runs on {step.runtime.device}; continuing without it"
    if importlib.util.find_spec("torch_tensorrt") is None:
        return ("torch_tensorrt is not installed (pip install torch-tensorrt matching torch "
                f"{torch.__version__.split('+')[0]}); continuing without it")
    return None


def apply(model: Callable[..., Any], step: StepContext) -> Callable[..., Any]:
    import torch_tensorrt

    options: TensorRTOptions = step.options
    shapes = [tuple(x.shape) for x in step.inputs]
    low = tuple(min(s[d] for s in shapes) for d in range(len(shapes[0])))
    high = tuple(max(s[d] for s in shapes) for d in range(len(shapes[0])))
    spec = torch_tensorrt.Input(min_shape=low, opt_shape=tuple(step.example.shape), max_shape=high,
                                dtype=step.example.dtype)
    precisions = {torch.float32} if options.precision == "fp32" else {torch.float32, torch.float16}
    return torch_tensorrt.compile(model, ir="dynamo", inputs=[spec], enabled_precisions=precisions,
                                  workspace_size=options.workspace_mb << 20)


PLUGIN = OptimizationSpec(
    name="tensorrt", description="Torch-TensorRT (NVIDIA GPUs), with the warm-up shapes as its dynamic range",
    options_class=TensorRTOptions, apply=apply, unavailable=unavailable,
    auto_candidates=(AutoCandidate("tensorrt", order=90),),
)
