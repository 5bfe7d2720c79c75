"""channels_last: NHWC memory layout for convolutional models on 4-D (NCHW) input."""

from __future__ import annotations

import copy
from typing import Any, Callable, Optional

import torch
from torch import nn

from torchserve_perf.plugins.optimizations.interface import AutoCandidate, OptimizationSpec, StepContext


class ChannelsLastModel(nn.Module):
    """The model in channels_last, with its input converted too (converting only one side is slow)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x, *args, **kwargs)


def unavailable(model: Callable[..., Any], step: StepContext) -> Optional[str]:
    if step.example.dim() != 4:
        return f"needs 4-D NCHW input, and this model's input is {step.example.dim()}-D"
    return None


def apply(model: Callable[..., Any], step: StepContext) -> Callable[..., Any]:
    # A copy: .to(memory_format) converts in place, and a dropped step must leave the model as it was.
    converted: Any = copy.deepcopy(model)  # an nn.Module: needs_module has the chain check that first
    converted = converted.to(memory_format=torch.channels_last)
    return ChannelsLastModel(converted).eval()


PLUGIN = OptimizationSpec(
    name="channels_last", description="NHWC memory layout for convolutions (4-D image input)",
    apply=apply, unavailable=unavailable,
    auto_candidates=(AutoCandidate("channels_last", order=10, in_archives=True),),
)
