"""Runtime optimizations applied at load, each verified against eager outputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch


@dataclass(frozen=True)
class OptimizationConfig:
    chain: tuple[str, ...] = ()


@dataclass(frozen=True)
class Runtime:
    """What an optimization may need to know about the worker it runs in."""

    device: torch.device
    intra_op_threads: int
    inter_op_threads: int
    model_name: str = ""
    cache_dir: Optional[str] = None


@dataclass
class OptimizationResult:
    model: Callable[..., Any]
    applied: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # plugin -> reason
    load_seconds: float = 0.0


def optimize(model: torch.nn.Module, config: OptimizationConfig, example: torch.Tensor,
             runtime: Runtime) -> OptimizationResult:
    # Placeholder until the plugin registry lands: eager model, nothing applied.
    return OptimizationResult(model=model)
