"""cuda_graphs: the model captured as one CUDA graph per batch-size bucket, all warmed at load.

A small model at small batches spends more time launching kernels than running them; a CUDA
graph replays the whole forward pass with one launch. Graphs need static shapes, so batches are
padded to buckets (plugins/optimizations/buckets.py). ``capture: graphs`` captures with
``torch.cuda.CUDAGraph``; ``capture: compile`` uses ``torch.compile(mode="reduce-overhead",
dynamic=False)`` on the padded shapes instead (inductor kernels too, a longer load). Every bucket is
built at load, and the chain's parity check then runs the bucketed model against eager.

    handler:
      optimizations:
        chain: [channels_last, fp16, cuda_graphs]
        cuda_graphs: {buckets: [1, 2, 4, 8, 16, 32, 64, 128], capture: graphs}
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

import torch

from torchserve_perf.plugins.config import ConfigValueError, at_least_one
from torchserve_perf.plugins.optimizations.buckets import BucketedRunner, checked_buckets, pad_rows
from torchserve_perf.plugins.optimizations.interface import OptimizationSpec, StepContext

log = logging.getLogger("torchserve_perf.plugins.optimizations")


@dataclass(frozen=True)
class CudaGraphOptions:
    # Batch sizes to capture; empty: powers of two up to TorchServe's batchSize, and batchSize itself.
    buckets: tuple[int, ...] = ()
    capture: Literal["graphs", "compile"] = "graphs"
    warmup_runs: int = 3  # eager runs on a side stream before each capture (cuDNN picks its kernels)

    def __post_init__(self) -> None:
        if any(b < 1 for b in self.buckets):
            raise ConfigValueError("buckets", f"{list(self.buckets)} has a size below 1", "give positive batch sizes")
        at_least_one(self, "warmup_runs")


class CapturedGraph:
    """One bucket: a static input buffer, the graph that reads it, and the output it writes."""

    def __init__(self, model: Callable[..., Any], example: torch.Tensor, warmup_runs: int) -> None:
        self.static_input = example.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(warmup_runs):
                model(self.static_input)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # Each bucket keeps its own memory pool: buckets replay in any order, never sharing intermediates.
        with torch.inference_mode(), torch.cuda.graph(self.graph):
            self.static_output = model(self.static_input)

    def __call__(self, x: torch.Tensor) -> Any:
        self.static_input.copy_(x)
        self.graph.replay()
        return _clone(self.static_output)  # the next replay overwrites it


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_clone(v) for v in value)
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    return value


class CompiledBucket:
    """One bucket through a static reduce-overhead compile (its CUDA graph is recorded on the first calls)."""

    def __init__(self, compiled: Callable[..., Any], example: torch.Tensor, warmup_runs: int) -> None:
        self.compiled = compiled
        with torch.inference_mode():
            for _ in range(max(2, warmup_runs)):  # reduce-overhead records its graph after a warm run
                compiled(example)

    def __call__(self, x: torch.Tensor) -> Any:
        return _clone(self.compiled(x))


def build_runner(model: Callable[..., Any], example: torch.Tensor, buckets: tuple[int, ...],
                 make_bucket: Callable[[torch.Tensor], Callable[[torch.Tensor], Any]]) -> BucketedRunner:
    """A runner per bucket from rows of ``example``, largest first (the most memory while it is free)."""
    row = example[:1]
    runners = {size: make_bucket(pad_rows(row, size)) for size in sorted(buckets, reverse=True)}
    return BucketedRunner(runners, row.shape[1:], row.dtype, row.device, fallback=model)


def replay_mismatch(runner: BucketedRunner, model: Callable[..., Any], example: torch.Tensor) -> Optional[str]:
    """Every bucket replayed against the model it captured (the chain's parity check sees only the
    warm-up batch sizes); None when all agree."""
    with torch.inference_mode():
        for size in runner.buckets:
            x = pad_rows(example[:1], size)
            got, want = runner(x), model(x)
            for g, w in zip(_tensors(got), _tensors(want)):
                g, w = g.float(), w.float()
                bound = 1e-3 + 1e-2 * w.abs().max().item()
                if g.shape != w.shape or (g - w).abs().max().item() > bound:
                    return f"the graph of bucket {size} replays different outputs from the model it captured"
    return None


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for k in sorted(value, key=str) for t in _tensors(value[k])]
    return []


def unavailable(model: Callable[..., Any], step: StepContext) -> Optional[str]:
    if step.runtime.device.type != "cuda" or not torch.cuda.is_available():
        return f"CUDA graphs need a CUDA device, and this worker runs on {step.runtime.device}"
    if step.example.device.type != "cuda":
        return "the warm-up input is not on the GPU"
    return None


def apply(model: Callable[..., Any], step: StepContext) -> Callable[..., Any]:
    options: CudaGraphOptions = step.options or CudaGraphOptions()
    buckets = checked_buckets(options.buckets, step.runtime.batch_size)
    make: Callable[[torch.Tensor], Callable[[torch.Tensor], Any]]
    if options.capture == "compile":
        compiled = torch.compile(model, mode="reduce-overhead", dynamic=False)
        make = lambda x: CompiledBucket(compiled, x, options.warmup_runs)  # noqa: E731
    else:
        make = lambda x: CapturedGraph(model, x, options.warmup_runs)  # noqa: E731
    runner = build_runner(model, step.example, buckets, make)
    problem = replay_mismatch(runner, model, step.example)
    if problem:
        raise RuntimeError(problem)  # the chain drops the step with this reason
    log.info("cuda_graphs: %s buckets %s captured", options.capture, list(buckets))
    return runner


# Not an auto candidate: on CUDA the GPU default chain (gpu_defaults.py) runs it instead of auto.
PLUGIN = OptimizationSpec(
    name="cuda_graphs", description="one CUDA graph per batch-size bucket (batches padded to the bucket), warmed at load",
    options_class=CudaGraphOptions, apply=apply, unavailable=unavailable, needs_module=False,
)
