"""What an optimization plugin is: a name, optional options, an availability check and ``apply``.

A plugin turns a model into a faster callable with the same outputs. It must not change the
model it is given in place (the chain falls back to that model when the step is dropped), and
it may raise: the chain catches everything and drops the step with one WARNING.

A plugin is declared as an :class:`OptimizationSpec` (what the built-in modules do, one
``PLUGIN`` each) or as a subclass of :class:`OptimizationPlugin`; the registry turns the latter
into a spec when it registers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Optional

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


class PluginError(RuntimeError):
    """A plugin that cannot be registered. Names the plugin, the problem and the fix."""

    def __init__(self, plugin: str, problem: str, fix: str) -> None:
        self.plugin, self.problem, self.fix = plugin, problem, fix
        super().__init__(f"optimization plugin {plugin}: {problem}. Fix: {fix}")


class Unavailable(Exception):
    """Raised by a plugin when it does not apply here (missing package, unfit hardware or model)."""


class OptimizationPlugin:
    """Subclass this, set ``name``, implement :meth:`apply`, and register the class.

    ``options_class``: a frozen dataclass whose fields all have defaults; users set it under
    ``handler.optimizations.<name>:`` (built-ins) or ``handler.optimizations.plugins.<name>:``.
    ``lossy``: the plugin changes numerics on purpose (int8, bf16), so parity uses the looser
    ``parity.lossy_rtol`` / ``parity.lossy_atol``.
    ``needs_module``: ``apply`` needs an ``nn.Module`` (not, say, an ONNX Runtime session).
    ``gated``: the plugin judges its own accuracy (an accuracy gate, raising ``Unavailable`` when
    it fails), so parity does not compare its outputs; ``auto.gated_first`` tries it first.
    ``auto_candidates``: the chains ``auto`` tries with this plugin (:class:`AutoCandidate`).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options_class: ClassVar[Optional[type]] = None
    lossy: ClassVar[bool] = False
    needs_module: ClassVar[bool] = True
    gated: ClassVar[bool] = False
    auto_candidates: ClassVar[tuple[AutoCandidate, ...]] = ()

    def unavailable(self, model: Callable[..., Any], step: StepContext) -> Optional[str]:
        """Why this plugin cannot run here (package, hardware, model), or None when it can."""
        return None

    def apply(self, model: Callable[..., Any], step: StepContext) -> Callable[..., Any]:
        raise NotImplementedError


Apply = Callable[[Callable[..., Any], StepContext], Callable[..., Any]]
Check = Callable[[Callable[..., Any], StepContext], Optional[str]]


def always_available(model: Callable[..., Any], step: StepContext) -> Optional[str]:
    """The availability check of a plugin that fits every model and machine."""
    return None


def split_chain(chain: str) -> tuple[str, ...]:
    """``"a+b"`` -> ``("a", "b")``: how auto's candidates are written."""
    return tuple(part.strip() for part in str(chain).split("+") if part.strip())


@dataclass(frozen=True)
class AutoCandidate:
    """A chain that ``chain: [auto]`` tries when the user lists none (``auto.candidates: []``).

    ``chain``: plugin names joined by "+", the declaring plugin among them. A combination is
    declared by the plugin that makes it worth trying (``channels_last+torchscript`` by torchscript).
    ``order``: auto tries lower first. Cheap chains go first, so when ``auto.budget_s`` runs out
    the ones left untried are the costly ones (compile).
    ``in_archives``: also one of the chains that ``torchserve-perf archive`` writes for auto:
    lossless, quick to build at every cold load, and following elastic threads.
    """

    chain: str
    order: int
    in_archives: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return split_chain(self.chain)


def ordered_chains(candidates: Iterable[AutoCandidate]) -> tuple[str, ...]:
    """The candidates' chains in auto's order (``order``, then the chain), each once."""
    chains: list[str] = []
    for candidate in sorted(candidates, key=lambda c: (c.order, "+".join(c.names))):
        label = "+".join(candidate.names)
        if label not in chains:
            chains.append(label)
    return tuple(chains)


@dataclass(frozen=True)
class OptimizationSpec:
    """One plugin, declared in one place: what it is called, what it does and when auto tries it.

    ``apply(model, step)`` returns the faster callable; ``unavailable(model, step)`` says why the
    plugin cannot run here, or None. ``options_class``, ``lossy`` and ``needs_module`` mean what
    they mean on :class:`OptimizationPlugin`. ``gated``: the plugin judges its own accuracy on
    held-out samples (accuracy_gate.py) and raises when it fails, so the chain only checks that it
    runs on the warm-up inputs: their outputs may move by more than any value tolerance (int8).
    Checked when registered, not when made.
    """

    name: str
    apply: Apply
    description: str = ""
    options_class: Optional[type] = None
    unavailable: Check = always_available
    lossy: bool = False
    needs_module: bool = True
    auto_candidates: tuple[AutoCandidate, ...] = ()
    gated: bool = False
