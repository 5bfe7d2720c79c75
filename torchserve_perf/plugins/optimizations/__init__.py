"""Runtime optimizations applied at load, each verified against eager outputs.

``optimize()`` is what the base handler calls: it runs the configured chain (or ``auto``) on
warm-up inputs derived from the handler's example input, keeps every step whose outputs match
eager within tolerance, drops the others with one WARNING each, and never raises because of an
optimization (only for a configuration it cannot honour).

Write a plugin: declare an :class:`OptimizationSpec` (or subclass :class:`OptimizationPlugin`),
then name it under the ``torchserve_perf.optimizations`` entry-point group of your package, or
register it on the registry your handler builds (override ``PerfHandler.optimization_registry``).
A built-in is one module of this package with ``PLUGIN = OptimizationSpec(...)`` (builtin.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from torchserve_perf.plugins.optimizations.config import (
    AutoConfig,
    OptimizationConfig,
    ParityConfig,
    WarmupConfig,
    missing_example_error,
)
from torchserve_perf.plugins.optimizations.interface import (
    AutoCandidate,
    OptimizationPlugin,
    OptimizationSpec,
    PluginError,
    Runtime,
    StepContext,
    Unavailable,
)
from torchserve_perf.plugins.optimizations.registry import ENTRY_POINT_GROUP, Registry, standard_registry

__all__ = [
    "AutoCandidate", "AutoConfig", "ENTRY_POINT_GROUP", "OptimizationConfig", "OptimizationPlugin",
    "OptimizationResult", "OptimizationSpec", "ParityConfig", "PluginError", "Registry", "Runtime", "StepContext",
    "Unavailable", "WarmupConfig", "optimize", "standard_registry",
]

log = logging.getLogger("torchserve_perf.plugins.optimizations")


@dataclass
class OptimizationResult:
    model: Callable[..., Any]  # what the handler runs
    applied: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # plugin (or auto candidate) -> reason
    load_seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)  # plugin -> seconds spent on it at load
    auto_reason: Optional[str] = None  # chain: [auto]: what was chosen and why
    # plugin -> what its accuracy gate measured on held-out samples (top1_agreement, topk_overlap, samples)
    measured: dict[str, dict[str, float]] = field(default_factory=dict)

    def describe(self) -> str:
        applied = ", ".join(f"{n} ({self.step_seconds.get(n, 0.0):.1f} s)" for n in self.applied) or "none"
        text = f"applied {applied}; load {self.load_seconds:.1f} s"
        if self.skipped:
            text += "; dropped " + ", ".join(self.skipped)
        for name, values in self.measured.items():
            text += (f"; {name} top-1 agreement with fp32 {values.get('top1_agreement', 0.0):.4f} "
                     f"on {int(values.get('samples', 0))} held-out samples")
        return text


def optimize(model: torch.nn.Module, config: OptimizationConfig, example: Optional[torch.Tensor],
             runtime: Runtime, registry: Registry) -> OptimizationResult:
    """Apply ``config.chain`` to ``model`` with the plugins of ``registry``; see the module docstring."""
    from torchserve_perf.plugins.optimizations.auto import choose
    from torchserve_perf.plugins.optimizations.chain import FallbackRunner, run_chain
    from torchserve_perf.plugins.optimizations.gpu_defaults import with_gpu_defaults
    from torchserve_perf.plugins.optimizations.parity import Reference, warmup_inputs
    from torchserve_perf.plugins.optimizations.report import route_worker_warnings

    config = with_gpu_defaults(config, runtime.device, example)  # CUDA with no chain given: fp16, graphs
    if not config.chain:
        return OptimizationResult(model=model)
    if example is None:
        raise missing_example_error()
    config.check(registry)
    route_worker_warnings()
    started = time.perf_counter()
    name = runtime.model_name or "model"
    try:
        reference = Reference.capture(model, warmup_inputs(example, config.warmup, runtime))
    except Exception as exc:
        reason = f"cannot verify optimizations: {type(exc).__name__}: {exc}"
        log.warning("optimizations for %s dropped, serving the eager model: %s", name, reason)
        return OptimizationResult(model=model, skipped={n: reason for n in config.chain},
                                  load_seconds=time.perf_counter() - started)
    if reference.dropped:
        log.info("warm-up inputs the eager model rejects, left out: %s", "; ".join(reference.dropped))

    auto_reason = None
    if config.chain == ("auto",):
        auto = choose(model, config, reference, runtime, registry)
        outcome, auto_reason = auto.chain, auto.reason
    else:
        outcome = run_chain(model, config.chain, reference, config, runtime, registry)
    runner = outcome.model
    if outcome.applied and config.fallback_to_eager:
        runner = FallbackRunner(outcome.model, model, outcome.applied)
    result = OptimizationResult(model=runner, applied=list(outcome.applied), skipped=dict(outcome.skipped),
                                load_seconds=time.perf_counter() - started, step_seconds=dict(outcome.step_seconds),
                                auto_reason=auto_reason, measured=dict(outcome.measured))
    log.info("optimizations for %s: %s", name, result.describe())
    return result
