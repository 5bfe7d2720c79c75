"""ipex: Intel Extension for PyTorch's ipex.optimize, on Intel CPUs / GPUs where it is installed."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, cast

import torch

from torchserve_perf.plugins.optimizations.interface import AutoCandidate, OptimizationSpec, StepContext


@dataclass(frozen=True)
class IpexOptions:
    dtype: Literal["float32", "bfloat16"] = "float32"


def cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def unavailable(model: Callable[..., Any], step: StepContext) -> Optional[str]:
    if importlib.util.find_spec("intel_extension_for_pytorch") is None:
        return (f"intel_extension_for_pytorch is not installed (pip install the release matching torch "
                f"{torch.__version__.split('+')[0]}); continuing without it")
    if step.runtime.device.type == "cpu":
        vendor = cpu_vendor()
        if vendor != "GenuineIntel":
            return f"IPEX targets Intel CPUs, and this CPU is {vendor}; continuing without it"
    elif step.runtime.device.type != "xpu":
        return f"IPEX runs on Intel CPUs and XPUs, not {step.runtime.device.type}"
    return None


def apply(model: Callable[..., Any], step: StepContext) -> Callable[..., Any]:
    import intel_extension_for_pytorch as ipex

    options: IpexOptions = step.options
    dtype = torch.bfloat16 if options.dtype == "bfloat16" else torch.float32
    module = cast(torch.nn.Module, model)  # needs_module: the chain checked it is one
    return ipex.optimize(module.eval(), dtype=dtype, inplace=False)


PLUGIN = OptimizationSpec(
    name="ipex", description="intel_extension_for_pytorch.optimize (Intel CPUs/GPUs)",
    options_class=IpexOptions, apply=apply, unavailable=unavailable,
    auto_candidates=(AutoCandidate("ipex", order=80),),
)
