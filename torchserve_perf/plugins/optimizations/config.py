"""``handler.optimizations:`` in model-config.yaml.

    handler:
      optimizations:
        chain: [channels_last, compile]      # or [auto], or the shorthand `optimizations: [compile]`
        compile: {backend: inductor, mode: default}
        parity: {rtol: 1.0e-3, atol: 1.0e-4}
        auto: {budget_s: 60}

Built-in plugins read their options from a key named after them (each declares its options
class in its own module; builtin.py finds them); third-party plugins from
``plugins: {<name>: {...}}``. TorchServe's own top-level ``pt2:`` key implies ``compile``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Optional

from torchserve_perf.plugins.config import (
    ConfigValueError,
    HandlerConfigError,
    at_least_one,
    build,
    build_fields,
    build_section,
    check_keys,
)
from torchserve_perf.plugins.optimizations.builtin import builtin_options
from torchserve_perf.plugins.optimizations.compile import CompileOptions, options_from_pt2
from torchserve_perf.plugins.optimizations.interface import split_chain

if TYPE_CHECKING:
    from torchserve_perf.plugins.optimizations.registry import Registry

SECTION = "optimizations"


@dataclass(frozen=True)
class ParityConfig:
    """Outputs must satisfy max|opt - eager| <= atol + rtol * max|eager| on every warm-up input."""

    enabled: bool = True
    rtol: float = 1e-3
    atol: float = 1e-4
    # For plugins that change numerics on purpose (int8, bf16, fp16) and every step after them.
    lossy_rtol: float = 5e-2
    lossy_atol: float = 1e-3

    def __post_init__(self) -> None:
        for name in ("rtol", "atol", "lossy_rtol", "lossy_atol"):
            if getattr(self, name) < 0:
                raise ConfigValueError(name, f"{getattr(self, name)} is negative", "give a tolerance >= 0")


@dataclass(frozen=True)
class WarmupConfig:
    """The inputs every step is warmed up and checked on (derived from the handler's example input)."""

    # Empty: 1 and the model's batchSize (at least 2), so compiled graphs cover both.
    batch_sizes: tuple[int, ...] = ()
    # For integer [N, L] inputs (token ids). Empty: L and 2L, so a dynamic length is exercised.
    lengths: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("batch_sizes", "lengths"):
            if any(v < 1 for v in getattr(self, name)):
                raise ConfigValueError(name, f"{list(getattr(self, name))} has a value below 1", "give positive sizes")


@dataclass(frozen=True)
class AutoConfig:
    """``chain: [auto]``: try candidate chains at load and keep the fastest that passes parity."""

    budget_s: float = 60.0  # no new candidate starts after this; one already running finishes
    # Chains to try, each written "a+b". Empty: the built-ins that fit this model and machine.
    candidates: tuple[str, ...] = ()
    allow_lossy: bool = False  # int8 / bf16 / fp16 change numerics; opt in to let auto pick them
    # Lossy plugins auto may try, by name (e.g. [int8]: gated on accuracy); an archive built with
    # --calibration allows its int8 plugins.
    allow: tuple[str, ...] = ()
    min_speedup: float = 1.05  # keep eager unless a chain is at least this much faster
    # Try the gated candidates (int8, judged by their accuracy gate) first, and when one passes its
    # gate and beats eager by min_speedup, choose among them without timing the lossless ones (the
    # fallback when none passes). An archive built with --calibration sets it: its user asked for int8.
    gated_first: bool = False
    repeats: int = 5  # timed runs per candidate (the fastest counts)
    # Memory the search may hold in built candidates (estimated from the model's weights) so that,
    # after each is timed alone, all of them and eager are timed again in turns: a burst of load
    # from another process (a server starting beside this one) then slows every candidate alike.
    # 0: each candidate is timed alone only.
    keep_mb: int = 1024
    # Decide once per model and host and share the choice with the other workers and restarts
    # (auto_cache.py). The folder: cache_dir, else the worker's runtime cache dir.
    cache: bool = True
    cache_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.budget_s <= 0:
            raise ConfigValueError("budget_s", f"{self.budget_s} is not positive", "give seconds, e.g. 60")
        at_least_one(self, "repeats")
        if self.min_speedup <= 0:
            raise ConfigValueError("min_speedup", f"{self.min_speedup} is not positive", "give e.g. 1.05")
        if self.keep_mb < 0:
            raise ConfigValueError("keep_mb", f"{self.keep_mb} is negative", "give MiB, or 0 to time each alone")


@dataclass(frozen=True)
class OptimizationConfig:
    chain: tuple[str, ...] = ()
    pt2: Any = None  # TorchServe's pt2: value (copied from the top level); implies compile
    parity: ParityConfig = ParityConfig()
    warmup: WarmupConfig = WarmupConfig()
    auto: AutoConfig = AutoConfig()
    # A batch that the optimized model fails on is rerun eagerly instead of failing its requests.
    fallback_to_eager: bool = True
    # On a CUDA device with no chain given, or chain [auto]: channels_last (4-D input), fp16 and cuda_graphs,
    # each checked for parity like any chain (plugins/optimizations/gpu_defaults.py). Off: false, or chain: [none].
    gpu_defaults: bool = True
    # Built-in plugin options, by plugin name: in model-config.yaml the sections named after them
    # (``compile: {...}``; see from_mapping). A built-in left out runs with its defaults.
    builtin_options: dict = field(default_factory=dict)
    # Third-party plugin options: {plugin name: {option: value}}.
    plugins: dict = field(default_factory=dict)
    _pt2_compile: Optional[CompileOptions] = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_mapping(cls, raw: Optional[Mapping[str, Any]], prefix: str = "") -> OptimizationConfig:
        """What :func:`~torchserve_perf.plugins.config.build` calls: the fixed keys, plus a section
        for each built-in plugin that takes options, built with that plugin's options class."""
        raw = dict(raw or {})
        sections = builtin_options()
        fixed = [f.name for f in dataclasses.fields(cls) if f.init and f.name != "builtin_options"]
        check_keys(raw, fixed + list(sections), prefix)
        given: dict[str, Any] = {}
        for name in [key for key in raw if key in sections]:
            given[name] = build_section(sections[name], raw.pop(name), f"{prefix}.{name}" if prefix else name)
        return dataclasses.replace(build_fields(cls, raw, prefix), builtin_options=given)

    def __post_init__(self) -> None:
        chain = tuple(self.chain)
        if chain == ("none",):
            chain = ()  # lets TS_PERF_OPTIMIZATIONS=none switch a configured chain off
            object.__setattr__(self, "gpu_defaults", False)  # and the GPU's default chain
        if self.pt2 not in (None, "", {}):
            enabled, options = options_from_pt2(self.pt2)
            object.__setattr__(self, "_pt2_compile", options)
            if enabled and not chain:
                chain = ("compile",)
        object.__setattr__(self, "chain", chain)
        if "auto" in chain and chain != ("auto",):
            raise ConfigValueError("chain", f"{list(chain)} mixes auto with other plugins",
                                   "write chain: [auto] alone, and list chains to try under auto.candidates")
        for i, name in enumerate(chain):
            if name in chain[:i]:
                raise ConfigValueError(f"chain[{i}]", f"{name!r} appears twice", "list each plugin once")
        if self.builtin_options:
            _check_builtin_options(self.builtin_options)

    def check(self, registry: Registry) -> None:
        """Check plugin names and options against the registry the handler passes in (at load)."""
        try:
            self._check_names(registry)
        except ConfigValueError as exc:
            raise HandlerConfigError(f"{SECTION}.{exc.field}", exc.problem, exc.fix) from None

    def _check_names(self, registry: Registry) -> None:
        for i, name in enumerate(self.chain):
            if name != "auto" and name not in registry:
                raise ConfigValueError(f"chain[{i}]", registry.unknown(name), "use a registered plugin name")
        for i, candidate in enumerate(self.auto.candidates):
            for name in split_chain(candidate):
                if name not in registry:
                    raise ConfigValueError(f"auto.candidates[{i}]", registry.unknown(name),
                                           "write each candidate as registered names joined by '+'")
        for i, name in enumerate(self.auto.allow):
            if name not in registry:
                raise ConfigValueError(f"auto.allow[{i}]", registry.unknown(name), "list registered plugin names")
        for name, raw in self.plugins.items():
            if name not in registry:
                raise ConfigValueError(f"plugins.{name}", registry.unknown(name), "remove it or install the plugin")
            plugin = registry.get(name)
            if plugin.options_class is None and raw:
                raise ConfigValueError(f"plugins.{name}", "this plugin takes no options", "remove the section")
            if plugin.options_class is not None:
                build(plugin.options_class, raw, f"{SECTION}.plugins.{name}")

    def options_for(self, name: str, registry: Registry) -> Any:
        """The validated options of plugin ``name`` (its defaults when none were given)."""
        given = self.builtin_options.get(name)
        if name == "compile" and self._pt2_compile is not None and given in (None, CompileOptions()):
            return self._pt2_compile  # an explicit compile: section wins over the stock pt2: key
        if given is not None:
            return given
        defaults = builtin_options().get(name)
        if defaults is not None:
            return defaults()
        plugin = registry.get(name)
        if plugin.options_class is None:
            return None
        return build(plugin.options_class, self.plugins.get(name), f"{SECTION}.plugins.{name}")


def _check_builtin_options(given: Mapping[str, Any]) -> None:
    """``builtin_options`` set from Python: each a built-in's options, of that built-in's class."""
    sections = builtin_options()
    for name, options in given.items():
        if name not in sections:
            raise ConfigValueError(f"builtin_options.{name}", "is not a built-in plugin that takes options",
                                   f"use one of {sorted(sections)}, or plugins: for a third-party plugin")
        if not isinstance(options, sections[name]):
            raise ConfigValueError(f"builtin_options.{name}", f"{options!r} is not a {sections[name].__name__}",
                                   f"pass {sections[name].__name__}(...)")


def missing_example_error() -> HandlerConfigError:
    return HandlerConfigError(
        f"{SECTION}.chain",
        "optimizations are checked against eager outputs on a warm-up input, and this handler has no example "
        "input (handler.tensor.input_shape is not set)",
        "set handler.tensor.input_shape to the shape of one row, e.g. input_shape: [16] "
        "(and dtype if not float32), or remove handler.optimizations",
    )
