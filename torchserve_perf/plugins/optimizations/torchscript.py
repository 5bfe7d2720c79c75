"""torchscript: trace (or script), freeze, and optimize_for_inference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch

from torchserve_perf.plugins.optimizations.interface import AutoCandidate, OptimizationSpec, StepContext


@dataclass(frozen=True)
class TorchScriptOptions:
    method: Literal["trace", "script"] = "trace"
    freeze: bool = True
    # Fuses conv+bn, pre-packs weights for oneDNN/MKLDNN; can be slower on some CPUs (auto measures it).
    optimize_for_inference: bool = True


def apply(model: Callable[..., Any], step: StepContext) -> Callable[..., Any]:
    options: TorchScriptOptions = step.options
    if isinstance(model, torch.jit.ScriptModule):
        scripted = model
    elif options.method == "script":
        scripted = torch.jit.script(model)
    else:
        # check_trace off: the parity check that follows runs every warm-up input, not just this one.
        scripted = torch.jit.trace(model, (step.example,), check_trace=False)
    scripted = scripted.eval()
    if options.freeze:
        scripted = torch.jit.freeze(scripted)
    if options.optimize_for_inference:
        scripted = torch.jit.optimize_for_inference(scripted)
    return scripted


PLUGIN = OptimizationSpec(
    name="torchscript", description="TorchScript trace/script + freeze + optimize_for_inference",
    options_class=TorchScriptOptions, apply=apply,
    auto_candidates=(AutoCandidate("torchscript", order=20, in_archives=True),
                     AutoCandidate("channels_last+torchscript", order=30, in_archives=True)),
)
