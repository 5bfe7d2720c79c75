"""bf16 / fp16: run the model under torch.autocast, only where the hardware computes in that type.

Without native support (AVX512-BF16 or AMX on CPU, a CUDA GPU) autocast emulates the type and is
slower than float32, so the plugin refuses with the reason instead of making the model slower.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from torchserve_perf.plugins.optimizations.interface import AutoCandidate, OptimizationSpec, StepContext


@dataclass(frozen=True)
class AutocastOptions:
    # Run even without native support (for testing numerics on any machine; slow there).
    force: bool = False


class AutocastModel(nn.Module):
    """Runs the model under autocast and hands back float32, as the handlers expect."""

    def __init__(self, model: Callable[..., Any], device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.device_type, self.dtype = device_type, dtype

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.model(*args, **kwargs)
        return _to_float(out)


def _to_float(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(_to_float(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_float(v) for k, v in out.items()}
    return out


def hardware_support(device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """None when ``device`` computes natively in ``dtype``; else why not."""
    label = "bf16" if dtype == torch.bfloat16 else "fp16"
    if device.type == "cuda":
        if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
            return f"GPU {torch.cuda.get_device_name(device)} has no native bf16; use fp16 instead"
        return None
    if device.type != "cpu":
        return f"{label} autocast is not supported on {device.type}"
    cpu = getattr(torch, "cpu", None)

    def has(flag: str) -> bool:
        check = getattr(cpu, flag, None)
        try:
            return bool(check()) if check else False
        except Exception:
            return False

    if dtype == torch.bfloat16:
        if has("_is_avx512_bf16_supported") or has("_is_amx_tile_supported"):
            return None
        return ("this CPU has no native bf16 (AVX512-BF16 or AMX): autocast would emulate it and run slower "
                "than float32. Run on a CPU with AVX512-BF16/AMX or a GPU, or remove bf16 from the chain")
    if has("_is_amx_fp16_supported"):
        return None
    return ("this CPU has no native fp16 (AMX-FP16): autocast would emulate it and run slower than float32. "
            "Run on a GPU or a CPU with AMX-FP16, or remove fp16 from the chain")


def autocast_spec(name: str, dtype: torch.dtype, description: str, order: int) -> OptimizationSpec:
    """bf16 and fp16 differ only in the type they compute in."""

    def unavailable(model: Callable[..., Any], step: StepContext) -> Optional[str]:
        options: AutocastOptions = step.options
        reason = hardware_support(step.runtime.device, dtype)
        return None if options.force else reason

    def apply(model: Callable[..., Any], step: StepContext) -> Callable[..., Any]:
        return AutocastModel(model, step.runtime.device.type, dtype).eval()

    return OptimizationSpec(name=name, description=description, options_class=AutocastOptions, apply=apply,
                            unavailable=unavailable, lossy=True, needs_module=False,
                            auto_candidates=(AutoCandidate(name, order=order),))


PLUGINS = (
    autocast_spec("bf16", torch.bfloat16, "bfloat16 autocast where the hardware supports it", order=60),
    autocast_spec("fp16", torch.float16, "float16 autocast where the hardware supports it", order=70),
)
