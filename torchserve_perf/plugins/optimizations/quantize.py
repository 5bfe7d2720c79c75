"""quantize_dynamic: int8 (or fp16) dynamic quantization of Linear / LSTM / GRU layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

import torch
from torch import nn

from torchserve_perf.plugins.config import ConfigValueError
from torchserve_perf.plugins.optimizations.interface import AutoCandidate, OptimizationSpec, StepContext

LAYERS = {"Linear": nn.Linear, "LSTM": nn.LSTM, "GRU": nn.GRU}


@dataclass(frozen=True)
class QuantizeOptions:
    dtype: Literal["qint8", "float16"] = "qint8"
    layers: tuple[str, ...] = ("Linear", "LSTM")

    def __post_init__(self) -> None:
        unknown = [name for name in self.layers if name not in LAYERS]
        if unknown or not self.layers:
            raise ConfigValueError("layers", f"{list(self.layers)} must be some of {sorted(LAYERS)}",
                                   f"use layers: {sorted(LAYERS)} (or a subset)")


def unavailable(model: Callable[..., Any], step: StepContext) -> Optional[str]:
    if step.runtime.device.type != "cpu":
        return f"dynamic quantization runs on CPU only, and this worker runs on {step.runtime.device}"
    if isinstance(model, torch.jit.ScriptModule):
        return "cannot quantize a TorchScript module; put quantize_dynamic before torchscript in the chain"
    if not torch.backends.quantized.supported_engines:
        return "this torch build has no quantized engine"
    options: QuantizeOptions = step.options
    targets = tuple(LAYERS[name] for name in options.layers)
    if isinstance(model, nn.Module) and not any(isinstance(m, targets) for m in model.modules()):
        return f"the model has no {'/'.join(options.layers)} layers to quantize"
    return None


def apply(model: Callable[..., Any], step: StepContext) -> Callable[..., Any]:
    options: QuantizeOptions = step.options
    dtype = torch.qint8 if options.dtype == "qint8" else torch.float16
    layers = {LAYERS[name] for name in options.layers}
    # inplace=False: the eager model stays intact for the fallback.
    return torch.ao.quantization.quantize_dynamic(model, layers, dtype=dtype, inplace=False)


PLUGIN = OptimizationSpec(
    name="quantize_dynamic",
    description="dynamic int8 quantization of Linear/LSTM weights (activations quantized per batch)",
    options_class=QuantizeOptions, apply=apply, unavailable=unavailable, lossy=True,
    auto_candidates=(AutoCandidate("quantize_dynamic", order=50),),
)
