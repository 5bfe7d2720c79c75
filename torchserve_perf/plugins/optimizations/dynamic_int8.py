"""int8_dynamic: dynamic int8 ``Linear`` layers, kept only when the archive's sample requests keep
their labels.

Dynamic quantization needs no calibration, but it changes numerics, so it is never chosen on
made-up input: the archive carries sample requests as model inputs (``torchserve-perf archive
--samples FILE``, written as :data:`SAMPLES_FILE` at the archive's root, where a worker runs), and
the labels of the quantized model on them must agree with fp32's (accuracy_gate.py). For an
output per token ([N, tokens, labels], token classification) each non-padding token is a sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from torchserve_perf.plugins.optimizations import calibration
from torchserve_perf.plugins.optimizations.accuracy_gate import (
    GateConfig,
    Verdict,
    accepted,
    agreement,
    first_output,
    judge,
    ranked,
)
from torchserve_perf.plugins.optimizations.interface import AutoCandidate, OptimizationSpec, StepContext, Unavailable

SAMPLES_FILE = "samples.pt"


@dataclass(frozen=True)
class DynamicInt8Options:
    samples: str = SAMPLES_FILE  # relative to the worker's folder (the model's)
    pad_id: int = 0  # token id of padding in the samples: those positions are not judged
    gate: GateConfig = GateConfig()


def load_samples(path: Path) -> torch.Tensor:
    data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, dict):
        data = data.get("samples")
    if not isinstance(data, torch.Tensor) or data.dim() < 2:
        raise Unavailable(f"{path}: expected model inputs [N, ...] (or {{'samples': tensor}})")
    return data


def per_sample_labels(output: torch.Tensor, inputs: torch.Tensor, pad_id: int, k: int) -> list[list[int]]:
    """Ranked labels per sample: per row for [N, labels], per non-padding token for [N, tokens, labels]."""
    if output.dim() == 3 and inputs.dim() == 2 and output.shape[:2] == inputs.shape:
        return ranked(output[inputs != pad_id], k)
    return ranked(output, k)


def gate(reference: Callable[..., Any], candidate: Callable[..., Any], samples: torch.Tensor,
         options: DynamicInt8Options, batch: int = 16) -> Verdict:
    """Both models on the samples, ``batch`` rows at a time; their labels judged by the shared gate."""
    ref: list[list[int]] = []
    got: list[list[int]] = []
    k = options.gate.topk
    with torch.inference_mode():
        for start in range(0, samples.shape[0], batch):
            chunk = samples[start:start + batch]
            ref += per_sample_labels(first_output(reference(chunk)).float(), chunk, options.pad_id, k)
            got += per_sample_labels(first_output(candidate(chunk)).float(), chunk, options.pad_id, k)
    return judge(agreement(ref, got, k), options.gate)


class GatedInt8(nn.Module):
    """The quantized model, carrying what the gate measured (the load report shows it)."""

    def __init__(self, model: nn.Module, measured: dict[str, float]) -> None:
        super().__init__()
        self.model = model
        self.measured = measured

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)


def unavailable(model: Callable[..., Any], step: StepContext) -> Optional[str]:
    if step.runtime.device.type != "cpu":
        return f"dynamic quantization runs on CPU only, and this worker runs on {step.runtime.device}"
    if not isinstance(model, nn.Module) or isinstance(model, torch.jit.ScriptModule):
        return "needs an eager nn.Module; put int8_dynamic first in the chain"
    if not torch.backends.quantized.supported_engines:
        return "this torch build has no quantized engine"
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        return "the model has no Linear layers to quantize"
    options: DynamicInt8Options = step.options
    if calibration.find(options.samples) is None:
        return (f"no sample requests ({options.samples} not found): the labels cannot be checked on made-up "
                "input. Build the archive with --samples FILE")
    return None


def apply(model: Callable[..., Any], step: StepContext) -> Callable[..., Any]:
    options: DynamicInt8Options = step.options
    found = calibration.find(options.samples)
    if found is None or not isinstance(model, nn.Module):
        raise Unavailable(f"no sample requests ({options.samples} not found)")
    samples = load_samples(found).to(step.runtime.device)
    # inplace=False: the eager model stays intact for the fallback.
    quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=False)
    return GatedInt8(quantized, accepted(gate(model, quantized, samples, options), "int8_dynamic"))


PLUGIN = OptimizationSpec(
    name="int8_dynamic",
    description="dynamic int8 Linear layers, kept only if the archive's sample requests keep their labels",
    options_class=DynamicInt8Options, apply=apply, unavailable=unavailable, lossy=True, gated=True,
    auto_candidates=(AutoCandidate("int8_dynamic", order=40),),
)
