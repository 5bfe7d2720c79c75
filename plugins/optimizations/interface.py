"""What an optimization plugin is: a name, optional options, an availability check and ``apply``.

A plugin turns a model into a faster callable with the same outputs. It must not change the
model it is given in place (the chain falls back to that model when the step is dropped), and
it may raise: the chain catches everything and drops the step with one WARNING.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Optional

import torch


@dataclass(frozen=True)
class Runtime:
    """What an optimization may need to know about the worker it runs in."""

    device: torch.device
    intra_op_threads: int
    inter_op_threads: int
    model_name: str = ""
    cache_dir: Optional[str] = None  # shared by the workers of one model (compile cache, exports)
    batch_size: int = 1  # TorchServe's batchSize: the largest batch the worker will see
    # Elastic threads (plugins/elastic.py) may raise torch's intra-op threads per batch up to this;
    # 0: they stay at intra_op_threads. A runtime with its own fixed pool (onnxruntime) reads it.
    intra_op_max: int = 0


@dataclass(frozen=True)
class StepContext:
    """Everything one plugin step may use."""

    runtime: Runtime
    options: Any  # the plugin's validated options (its ``options_class``), or None
    inputs: tuple[torch.Tensor, ...]  # warm-up inputs, smallest first; eager runs on all of them
    example: torch.Tensor  # the largest warm-up input: use it to trace or export

    @property
    def dynamic_dims(self) -> tuple[int, ...]:
        """Dimensions whose size varies across warm-up inputs (the batch dimension always does)."""
        dims = {0}
        for dim in range(1, self.example.dim()):
            if len({x.shape[dim] for x in self.inputs}) > 1:
                dims.add(dim)
        return tuple(sorted(dims))


class Unavailable(Exception):
    """Raised by a plugin when it does not apply here (missing package, unfit hardware or model)."""


class OptimizationPlugin:
    """Subclass this, set ``name``, implement :meth:`apply`, and register the class.

    ``options_class``: a frozen dataclass whose fields all have defaults; users set it under
    ``handler.optimizations.<name>:`` (built-ins) or ``handler.optimizations.plugins.<name>:``.
    ``lossy``: the plugin changes numerics on purpose (int8, bf16), so parity uses the looser
    ``parity.lossy_rtol`` / ``parity.lossy_atol``.
    ``needs_module``: ``apply`` needs an ``nn.Module`` (not, say, an ONNX Runtime session).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options_class: ClassVar[Optional[type]] = None
    lossy: ClassVar[bool] = False
    needs_module: ClassVar[bool] = True

    def unavailable(self, model: Callable[..., Any], step: StepContext) -> Optional[str]:
        """Why this plugin cannot run here (package, hardware, model), or None when it can."""
        return None

    def apply(self, model: Callable[..., Any], step: StepContext) -> Callable[..., Any]:
        raise NotImplementedError
