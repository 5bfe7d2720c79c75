"""Warm-up inputs, eager reference outputs, and the parity check every step must pass."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from torchserve_perf.plugins.optimizations.config import ParityConfig, WarmupConfig
from torchserve_perf.plugins.optimizations.interface import Runtime


def warmup_inputs(example: torch.Tensor, config: WarmupConfig, runtime: Runtime) -> list[torch.Tensor]:
    """Inputs shaped like the traffic: batch 1 and the largest batch; for token ids, two lengths too.

    Ordered so that torch.compile's automatic dynamic shapes compile the static graph first and
    then generalise (batch 1 is always specialised, so it appears at every length).
    """
    row = example[:1]
    batch_sizes = config.batch_sizes or tuple(sorted({1, max(2, runtime.batch_size)}))
    lengths: Sequence[Optional[int]] = (None,)
    if not row.is_floating_point() and row.dim() == 2:
        length = row.shape[1]
        lengths = config.lengths or (length, 2 * length)
    inputs = []
    for each in lengths:
        for batch in batch_sizes:
            inputs.append(_make(row, batch, each))
    return inputs


def _make(row: torch.Tensor, batch: int, length: Optional[int]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1000 * batch + (length or 0))
    if length is not None:
        base = row[0]
        reps = -(-length // base.shape[0])
        base = base.repeat(reps)[:length]
        # Each row a rotation of the example: different content, same vocabulary (and padding ids).
        return torch.stack([torch.roll(base, shifts=3 * i) for i in range(batch)]).to(row.device)
    if row.is_floating_point():
        scale = row.float().std().clamp(min=1e-3) if row.numel() > 1 else torch.tensor(1.0)
        noise = torch.randn((batch - 1, *row.shape[1:]), generator=generator) * scale
        rows = [row] + ([(row.float().cpu() + noise).to(row.dtype).to(row.device)] if batch > 1 else [])
        return torch.cat(rows, dim=0).contiguous()
    return row.repeat(batch, *([1] * (row.dim() - 1)))


@dataclass
class Reference:
    """Eager outputs on the warm-up inputs eager can run."""

    inputs: list[torch.Tensor]
    outputs: list[Any]
    dropped: list[str]  # inputs eager itself fails on (shapes the model does not accept)

    @classmethod
    def capture(cls, model: Callable[..., Any], candidates: Sequence[torch.Tensor]) -> Reference:
        inputs, outputs, dropped = [], [], []
        for i, x in enumerate(candidates):
            try:
                with torch.inference_mode():
                    out = _detach(model(x))
            except Exception as exc:
                if i == 0:  # the handler's own example: the model must run it
                    raise RuntimeError(f"the eager model fails on the example input {list(x.shape)}: {exc}") from exc
                dropped.append(f"{list(x.shape)}: {type(exc).__name__}")
                continue
            inputs.append(x)
            outputs.append(out)
        return cls(inputs, outputs, dropped)

    @property
    def largest(self) -> torch.Tensor:
        return max(self.inputs, key=lambda x: x.numel())


def tolerance(config: ParityConfig, lossy: bool) -> tuple[float, float]:
    return (config.lossy_rtol, config.lossy_atol) if lossy else (config.rtol, config.atol)


def check(model: Callable[..., Any], reference: Reference, rtol: float, atol: float,
          compare: bool = True) -> Optional[str]:
    """Run ``model`` on every warm-up input (which also warms it up); None when it matches eager."""
    for x, expected in zip(reference.inputs, reference.outputs):
        with torch.inference_mode():
            got = model(x)
        if not compare:
            continue
        problem = _compare(got, expected, rtol, atol)
        if problem:
            return f"output differs from eager on input {list(x.shape)}: {problem}"
    return None


def time_per_call(model: Callable[..., Any], x: torch.Tensor, repeats: int) -> float:
    """Fastest of ``repeats`` calls, after one untimed call: the least disturbed by other processes."""
    with torch.inference_mode():
        model(x)
    return time_in_turns([model], x, repeats)[0]


def time_in_turns(models: Sequence[Callable[..., Any]], x: torch.Tensor, rounds: int) -> list[float]:
    """Fastest call of each model over ``rounds`` rounds that call every model once in turn, so a
    disturbance that lasts a while reaches them all rather than the one timed then."""
    best = [float("inf")] * len(models)
    with torch.inference_mode():
        for _ in range(rounds):
            for i, model in enumerate(models):
                started = time.perf_counter()
                model(x)
                best[i] = min(best[i], time.perf_counter() - started)
    return best


def _compare(got: Any, expected: Any, rtol: float, atol: float) -> Optional[str]:
    got_leaves, expected_leaves = _leaves(got), _leaves(expected)
    if len(got_leaves) != len(expected_leaves):
        return f"{len(got_leaves)} outputs where eager gives {len(expected_leaves)}"
    for i, (g, e) in enumerate(zip(got_leaves, expected_leaves)):
        where = f"output {i} " if len(expected_leaves) > 1 else ""
        if not isinstance(e, torch.Tensor):
            if g != e:
                return f"{where}is {g!r}, eager gives {e!r}"
            continue
        if not isinstance(g, torch.Tensor):
            return f"{where}is a {type(g).__name__}, eager gives a tensor"
        if tuple(g.shape) != tuple(e.shape):
            return f"{where}has shape {list(g.shape)}, eager gives {list(e.shape)}"
        g, e = g.detach().float().cpu(), e.float()
        if not torch.isfinite(g).all() and torch.isfinite(e).all():
            return f"{where}has NaN/inf values where eager has none"
        finite = torch.isfinite(e)
        diff = (g - e).abs()[finite].max().item() if finite.any() else 0.0
        scale = e.abs()[finite].max().item() if finite.any() else 0.0
        bound = atol + rtol * scale
        if diff > bound:
            return (f"{where}max |diff| {diff:.3g} > {bound:.3g} (atol {atol:g} + rtol {rtol:g} x max |eager| "
                    f"{scale:.3g}); loosen handler.optimizations.parity if this is acceptable")
    return None


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    if isinstance(value, dict):
        return [leaf for k in sorted(value, key=str) for leaf in _leaves(value[k])]
    return [value]


def _detach(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_detach(v) for v in value)
    if isinstance(value, dict):
        return {k: _detach(v) for k, v in value.items()}
    return value
