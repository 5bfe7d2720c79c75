"""``chain: [auto]``: try candidate chains at load, keep the fastest that passes parity."""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from torchserve_perf.plugins.optimizations.auto_cache import ChoiceCache, choice_key
from torchserve_perf.plugins.optimizations.chain import ChainOutcome, run_chain, step_context
from torchserve_perf.plugins.optimizations.config import OptimizationConfig
from torchserve_perf.plugins.optimizations.interface import Runtime, split_chain
from torchserve_perf.plugins.optimizations.parity import Reference, time_in_turns, time_per_call
from torchserve_perf.plugins.optimizations.registry import Registry

log = logging.getLogger("torchserve_perf.plugins.optimizations")


@dataclass
class AutoOutcome:
    chain: ChainOutcome
    reason: str
    seconds: float
    trials: dict[str, str] = field(default_factory=dict)  # candidate -> what happened
    cached: bool = False  # the choice came from the cache (auto_cache) instead of a search


def _ratio(value: object, eager_s: float) -> str:
    if isinstance(value, float):
        return f"{eager_s / value:.2f}x ({value * 1e3:.1f} ms)"
    return str(value)


def candidates(model: nn.Module, config: OptimizationConfig, reference: Reference, runtime: Runtime,
               registry: Registry) -> tuple[list[tuple[str, ...]], dict[str, str]]:
    """The chains worth trying here, and why the others are not tried. Without ``auto.candidates``:
    the chains the registered plugins offer (their ``auto_candidates``), in their ``order``."""
    explicit = bool(config.auto.candidates)
    chains = [split_chain(c) for c in (config.auto.candidates or registry.auto_candidates())]
    kept, left_out = [], {}
    for chain in chains:
        label = "+".join(chain)
        missing = [name for name in chain if name not in registry]
        if missing:
            left_out[label] = f"{missing[0]} is not registered"
            continue
        lossy = [name for name in chain if registry.get(name).lossy and name not in config.auto.allow]
        if lossy and not config.auto.allow_lossy and not explicit:
            left_out[label] = (f"{lossy[0]} changes numerics (list it under auto.allow, or set auto.allow_lossy: "
                               "true, to consider it)")
            continue
        reason = None
        for name in chain:
            try:
                reason = registry.get(name).unavailable(model, step_context(name, config, reference, runtime, registry))
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if reason:
                break
        if reason:
            left_out[label] = reason
            continue
        kept.append(chain)
    return kept, left_out


def choose(model: nn.Module, config: OptimizationConfig, reference: Reference, runtime: Runtime,
           registry: Registry) -> AutoOutcome:
    """The fastest chain that passes parity; with a cache dir, decided once per model and host (auto_cache)."""
    directory = config.auto.cache_dir or runtime.cache_dir
    if not config.auto.cache or not directory:
        return search(model, config, reference, runtime, registry)
    started = time.perf_counter()
    cache = ChoiceCache(Path(directory) / "auto")
    try:
        key = choice_key(model, shape=tuple(reference.largest.shape), runtime=runtime,
                         settings=dataclasses.asdict(config.auto) | {"cache_dir": None})
        lock = cache.locked(key)
        waited = lock.__enter__()
    except Exception as exc:  # an unusable cache dir costs the cache, never the load
        log.warning("auto: choice cache in %s unusable (%s: %s); searching without it", directory,
                    type(exc).__name__, exc)
        return search(model, config, reference, runtime, registry)
    try:
        cached = cache.read(key)
        if cached is not None:
            reused = _reuse(model, cached, config, reference, runtime, registry, started, waited, cache.path(key))
            if reused is not None:
                return reused
        outcome = search(model, config, reference, runtime, registry)
        try:
            cache.write(key, outcome.chain.applied, outcome.reason)
        except OSError as exc:
            log.warning("auto: could not cache the choice in %s: %s", directory, exc)
        return outcome
    finally:
        lock.__exit__(None, None, None)


def _reuse(model: nn.Module, cached: dict, config: OptimizationConfig, reference: Reference, runtime: Runtime,
           registry: Registry, started: float, waited: float, path: Path) -> Optional[AutoOutcome]:
    """Apply the cached chain (parity still checked); None when it no longer applies cleanly."""
    chain = [str(n) for n in cached["chain"]]
    if any(name not in registry for name in chain):
        return None
    outcome = run_chain(model, chain, reference, config, runtime, registry, announce=False) if chain \
        else ChainOutcome(model=model)
    if outcome.applied != chain:
        log.warning("auto: the cached choice %s no longer applies (%s); searching again", "+".join(chain) or "eager",
                    outcome.skipped)
        return None
    total = time.perf_counter() - started
    label = "+".join(chain) or "eager"
    reason = (f"auto reused its cached choice, {label} ({path}; waited {waited:.1f} s for the first worker). "
              f"First decided as: {cached.get('reason', '?')}")
    outcome.step_seconds = {**{n: outcome.step_seconds.get(n, 0.0) for n in outcome.applied}, "auto": total}
    log.info("auto reused its cached choice %s in %.1f s (%s)", label, total, path)
    return AutoOutcome(chain=outcome, reason=reason, seconds=total, trials={}, cached=True)


def gated(chain: tuple[str, ...], registry: Registry) -> bool:
    """Whether a chain judges its own accuracy (an accuracy-gated plugin is in it)."""
    return any(registry.get(name).gated for name in chain)


def kept_candidates(model: nn.Module, keep_mb: int) -> int:
    """How many built candidates the search may hold at once for its final round in turns: each is
    taken to cost about twice the model's weights (a converted copy, plus workspace)."""
    weights = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    return int(keep_mb * 2**20 // max(1, 2 * weights))


# ---- what the search leaves behind -----------------------------------------------------------------
def torchscript_functions() -> int:
    """How many functions TorchScript's global compilation unit holds. Every trace adds its module's
    methods there (the torchscript candidates, the ONNX exporter's), and they stay after the traced
    module is gone: about 95 MiB of a ResNet-18 search that chose ONNX Runtime."""
    unit: Any = torch.jit._state._python_cu  # typed as Any: torch's stub says get_functions returns None
    return len(unit.get_functions())


def uses_torchscript(eager: Any, chosen: Any) -> bool:
    """Whether the served model may run TorchScript code: a scripted model, or a chain that made one."""
    def scripted(obj: Any) -> bool:
        return isinstance(obj, (torch.jit.ScriptModule, torch.jit.ScriptFunction))

    def holds_script(obj: Any) -> bool:
        if scripted(obj):
            return True
        if isinstance(obj, nn.Module):
            return any(scripted(m) for m in obj.modules())
        return any(scripted(v) or (isinstance(v, nn.Module) and holds_script(v))
                   for v in getattr(obj, "__dict__", {}).values())

    return holds_script(eager) or holds_script(chosen) or holds_script(getattr(chosen, "optimized", chosen))


def drop_search_torchscript() -> None:
    """Empty TorchScript's global compilation unit. Called only when it held nothing before the
    search and the chosen model runs no TorchScript: everything in it then came from candidates
    that were dropped, and nothing left calls it."""
    count = torchscript_functions()
    if count:
        torch.jit._state._python_cu.drop_all_functions()
        log.info("auto: released %d TorchScript functions the search's candidates left behind", count)


def search(model: nn.Module, config: OptimizationConfig, reference: Reference, runtime: Runtime,
           registry: Registry) -> AutoOutcome:
    started = time.perf_counter()
    scripted_before = torchscript_functions()
    budget = config.auto.budget_s
    x = reference.largest
    chains, left_out = candidates(model, config, reference, runtime, registry)
    if config.auto.gated_first:  # stable: each group keeps its order
        chains.sort(key=lambda chain: not gated(chain, registry))
    trials: dict[str, object] = dict(left_out)  # candidate -> seconds per call, or why it was not kept
    eager_s = time_per_call(model, x, config.auto.repeats)
    best: Optional[tuple[float, ChainOutcome]] = None
    failed: dict[str, str] = {}
    keep = kept_candidates(model, config.auto.keep_mb)
    kept: list[tuple[str, float, ChainOutcome]] = []  # label, its time alone, the built chain
    measured: dict[str, dict[str, float]] = {}  # what lossy candidates' accuracy gates saw, chosen or not
    for chain in chains:
        label = "+".join(chain)
        elapsed = time.perf_counter() - started
        if elapsed >= budget:
            trials[label] = f"not tried: the {budget:g} s budget was spent"
            continue
        if best is not None and config.auto.gated_first and not gated(chain, registry) \
                and eager_s / best[0] >= config.auto.min_speedup:
            trials[label] = "not timed: a gated candidate passed its accuracy gate first (auto.gated_first)"
            continue
        outcome = run_chain(model, chain, reference, config, runtime, registry, announce=False)
        measured.update(outcome.measured)
        if outcome.applied != list(chain):
            name = next(n for n in chain if n in outcome.skipped)
            trials[label] = failed[label] = f"{name} dropped: {outcome.skipped[name]}"
            log.warning("auto: candidate %r dropped: %s", label, failed[label])
            continue
        seconds = time_per_call(outcome.model, x, config.auto.repeats)
        trials[label] = seconds
        if len(kept) < keep:
            kept.append((label, seconds, outcome))
        if best is None or seconds < best[0]:
            best = (seconds, outcome)
    if kept:  # all again with eager, in turns: one candidate's bad moment is not its verdict
        again = time_in_turns([model] + [o.model for _, _, o in kept], x, config.auto.repeats)
        eager_s = min(eager_s, again[0])
        for (label, alone_s, outcome), turns_s in zip(kept, again[1:]):
            seconds = trials[label] = min(alone_s, turns_s)
            if best is None or seconds < best[0]:
                best = (seconds, outcome)
    else:  # measured again at the end and the faster kept: eager went first, with colder caches
        eager_s = min(eager_s, time_per_call(model, x, config.auto.repeats))
    described = {k: _ratio(v, eager_s) for k, v in trials.items()}
    shape = list(x.shape)
    summary = "; ".join(f"{k}: {v}" for k, v in described.items())
    if best is not None and eager_s / best[0] >= config.auto.min_speedup:
        seconds, outcome = best
        label = "+".join(outcome.applied)
        reason = (f"auto chose {label}: {eager_s / seconds:.2f}x eager ({seconds * 1e3:.1f} ms vs "
                  f"{eager_s * 1e3:.1f} ms on input {shape}), parity passed. Tried: {summary}")
    else:
        outcome = ChainOutcome(model=model)
        fastest = (f"the best, {'+'.join(best[1].applied)}, was {eager_s / best[0]:.2f}x"
                   if best else "no candidate passed")
        reason = (f"auto kept eager ({eager_s * 1e3:.1f} ms on input {shape}): {fastest}, below "
                  f"auto.min_speedup {config.auto.min_speedup:g}. Tried: {summary}")
    total = time.perf_counter() - started
    outcome.step_seconds = {**{n: outcome.step_seconds.get(n, 0.0) for n in outcome.applied}, "auto": total}
    outcome.skipped = failed
    outcome.measured = measured
    if scripted_before == 0 and not uses_torchscript(model, outcome.model):
        drop_search_torchscript()
    log.info("%s (search took %.1f s)", reason, total)
    return AutoOutcome(chain=outcome, reason=reason, seconds=total, trials=described)
