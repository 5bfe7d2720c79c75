"""Apply a chain of plugins, verifying each step against eager; drop a failing step loudly."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from torchserve_perf.plugins.optimizations.config import OptimizationConfig
from torchserve_perf.plugins.optimizations.interface import Runtime, StepContext, Unavailable
from torchserve_perf.plugins.optimizations.parity import Reference, check, tolerance
from torchserve_perf.plugins.optimizations.registry import Registry
from torchserve_perf.plugins.optimizations.report import quiet_torch

log = logging.getLogger("torchserve_perf.plugins.optimizations")


@dataclass
class ChainOutcome:
    model: Callable[..., Any]
    applied: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)
    # plugin -> what its accuracy gate measured (accuracy_gate.Agreement.as_metrics), kept or not
    measured: dict[str, dict[str, float]] = field(default_factory=dict)


def step_context(name: str, config: OptimizationConfig, reference: Reference, runtime: Runtime,
                 registry: Registry) -> StepContext:
    return StepContext(runtime=runtime, options=config.options_for(name, registry), inputs=tuple(reference.inputs),
                       example=reference.largest)


def run_chain(model: nn.Module, chain: Sequence[str], reference: Reference, config: OptimizationConfig,
              runtime: Runtime, registry: Registry, *, announce: bool = True) -> ChainOutcome:
    """Each step starts from the last good model; one that fails or mismatches is dropped.

    ``announce``: log a WARNING for each dropped step (auto passes False and reports itself).
    """
    outcome = ChainOutcome(model=model)
    lossy = False
    for name in chain:
        started = time.perf_counter()
        plugin = registry.get(name)
        reason: Optional[str] = None
        candidate: Any = None
        try:
            step = step_context(name, config, reference, runtime, registry)
            reason = _precondition(plugin, outcome, step)
            if reason is None:
                with quiet_torch():
                    candidate = plugin.apply(outcome.model, step)
                    rtol, atol = tolerance(config.parity, lossy or plugin.lossy)
                    mismatch = check(candidate, reference, rtol, atol,
                                     compare=config.parity.enabled and not plugin.gated)
                reason = mismatch
        except Unavailable as exc:
            reason = str(exc)
            if getattr(exc, "measured", None):  # an accuracy gate refused it: say what it saw
                outcome.measured[name] = dict(exc.measured)  # type: ignore[attr-defined]
        except Exception as exc:  # an optimization must never take the worker down
            reason = f"failed: {type(exc).__name__}: {_first_line(exc)}"
        seconds = time.perf_counter() - started
        outcome.step_seconds[name] = seconds
        if getattr(candidate, "measured", None):
            outcome.measured[name] = dict(candidate.measured)
        if reason is None:
            outcome.model = candidate
            outcome.applied.append(name)
            lossy = lossy or plugin.lossy
            log.info("optimization %r applied in %.1f s", name, seconds)
        else:
            outcome.skipped[name] = reason
            if announce:
                log.warning("optimization %r dropped, continuing without it: %s", name, reason)
    return outcome


def _precondition(plugin: Any, outcome: ChainOutcome, step: StepContext) -> Optional[str]:
    if plugin.needs_module and not isinstance(outcome.model, nn.Module):
        previous = outcome.applied[-1] if outcome.applied else "the loader"
        return (f"needs an nn.Module, and {previous} produced a {type(outcome.model).__name__}; "
                f"put {plugin.name} before {previous} in the chain")
    return plugin.unavailable(outcome.model, step)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


class FallbackRunner:
    """The optimized model, with eager as a safety net for inputs it was not checked on.

    A batch the optimized model raises on is rerun eagerly. Only a batch that eager then serves
    counts against the optimized model: when eager fails too, the input was bad (a wrong shape, a
    value the model refuses), eager's error goes to the caller and the optimization keeps its
    place. After ``limit`` counted failures the worker stays on eager. Each switch is one WARNING.
    """

    def __init__(self, optimized: Callable[..., Any], eager: Callable[..., Any], applied: Sequence[str],
                 limit: int = 3) -> None:
        self.optimized, self.eager = optimized, eager
        self.applied = list(applied)
        self.limit = limit
        self.failures = 0
        self.bad_inputs = 0  # batches both models refused: not the optimization's fault

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.failures >= self.limit:
            return self.eager(*args, **kwargs)
        try:
            return self.optimized(*args, **kwargs)
        except Exception as exc:
            optimized_error = exc
        try:
            result = self.eager(*args, **kwargs)
        except Exception:
            self.bad_inputs += 1
            log.info("optimized model (%s) and eager both refused an input %s; kept the optimization "
                     "(%d counted failures of %d)", "+".join(self.applied), _shapes(args), self.failures, self.limit)
            raise
        self.failures += 1
        final = self.failures >= self.limit
        log.warning("optimized model (%s) failed on input %s where eager succeeded: %s: %s; %s",
                    "+".join(self.applied), _shapes(args), type(optimized_error).__name__,
                    _first_line(optimized_error), "staying on eager from now on" if final else "ran this batch eagerly")
        return result

    def __repr__(self) -> str:
        return f"FallbackRunner({'+'.join(self.applied)}, failures={self.failures})"


def _shapes(args: Sequence[Any]) -> list[list[int]]:
    return [list(a.shape) for a in args if isinstance(a, torch.Tensor)]
