"""compile: torch.compile, warmed up at load, with a compile cache shared by the model's workers.

Also reads TorchServe's ``pt2:`` key (``pt2: {compile: {enable: true, backend: ..., mode: ...}}``,
and the older ``pt2: inductor`` / ``pt2: {backend: ..., mode: ...}``), so existing
model-configs keep working.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Mapping, Optional

import torch

from torchserve_perf.plugins.config import ConfigValueError, HandlerConfigError, build, parse_bool
from torchserve_perf.plugins.optimizations.interface import AutoCandidate, OptimizationSpec, StepContext

log = logging.getLogger("torchserve_perf.plugins.optimizations")

Mode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]


@dataclass(frozen=True)
class CompileOptions:
    backend: str = "inductor"
    mode: Optional[Mode] = None
    fullgraph: bool = False
    # None: compile static first, then dynamic for dimensions seen to vary during warm-up.
    dynamic: Optional[bool] = None
    options: dict = field(default_factory=dict)  # backend options (inductor config); not with mode
    # Inductor / FX-graph cache. None: the worker's runtime cache dir, else inductor's default
    # (under TorchServe's TMPDIR), which the workers of one server already share.
    cache_dir: Optional[str] = None

    def __post_init__(self) -> None:
        if self.mode is not None and self.options:
            raise ConfigValueError("options", "torch.compile takes either mode or options, not both",
                                   "remove mode, or move its settings into options")
        if self.backend != "inductor":
            backends = _backends()
            if backends and self.backend not in backends:
                raise ConfigValueError("backend", f"{self.backend!r} is not a torch.compile backend here",
                                       f"use one of {backends}")

    def kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"backend": self.backend, "fullgraph": self.fullgraph, "dynamic": self.dynamic}
        if self.mode is not None:
            kwargs["mode"] = self.mode
        if self.options:
            kwargs["options"] = dict(self.options)
        return kwargs


def _backends() -> list[str]:
    try:
        from torch._dynamo import list_backends

        return sorted(set(list_backends(exclude_tags=())) | {"inductor"})
    except Exception:  # an old or stripped torch: let torch.compile itself complain at load
        return []


def options_from_pt2(pt2: Any) -> tuple[bool, CompileOptions]:
    """TorchServe's ``pt2:`` value -> (compile enabled, options). Raises on what we cannot honour."""
    where = "optimizations.pt2"
    if isinstance(pt2, str):
        return True, CompileOptions(backend=pt2)
    if not isinstance(pt2, Mapping):
        raise ConfigValueError("pt2", f"{pt2!r} is neither a backend name nor a mapping",
                               "write pt2: {compile: {enable: true, backend: inductor}}")
    if "export" in pt2:
        raise ConfigValueError("pt2.export", "AOTInductor packages (pt2.export) are not loaded by this handler",
                               "archive the model normally and use pt2: {compile: {enable: true}} or "
                               "handler.optimizations.chain")
    if "compile" in pt2:
        section = dict(pt2["compile"] or {})
        try:
            enabled = parse_bool(section.pop("enable", True))
        except ValueError:
            raise ConfigValueError("pt2.compile.enable", f"{pt2['compile'].get('enable')!r} is not a boolean",
                                   "use true or false") from None
        return enabled, _build(section, f"{where}.compile")
    return True, _build(pt2, where)


def _build(raw: Mapping[str, Any], where: str) -> CompileOptions:
    try:
        return build(CompileOptions, raw, where)
    except HandlerConfigError as exc:
        raise HandlerConfigError(exc.key, f"{exc.problem} (in TorchServe's top-level pt2: key)", exc.fix) from None


def unavailable(model: Callable[..., Any], step: StepContext) -> Optional[str]:
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if isinstance(model, torch.jit.ScriptModule):
        return "torch.compile does not take TorchScript modules; put compile before torchscript, or drop one"
    return None


def apply(model: Callable[..., Any], step: StepContext) -> Callable[..., Any]:
    options: CompileOptions = step.options
    cache_dir = options.cache_dir or step.runtime.cache_dir
    if cache_dir:
        os.makedirs(cache_dir, exist_ok=True)
        # Inductor reads its cache location from this variable on every lookup; it is the only
        # switch it has. Every worker of the model points at the same folder, so the first to
        # compile a graph saves it and the others load it.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir
    _enable_caches()
    folder = _cache_dir()
    log.info("compile: torch.compile(%s), cache %s", _describe(options.kwargs()), folder)
    compiled = torch.compile(model, **options.kwargs())
    # Compile now, on every warm-up shape, so the first request does not pay for it. Workers
    # start together: one at a time compiles, and the next finds the graphs in the cache
    # instead of compiling the same thing on the same cores.
    lock = os.path.join(folder, f"ts_perf_compile_{_safe(step.runtime.model_name or 'model')}.lock")
    with compile_lock(lock) as waited:
        if waited > 1.0:
            log.info("compile: waited %.1f s for another worker compiling this model; reusing its cache", waited)
        with torch.inference_mode():
            for x in step.inputs:
                compiled(x)
    return compiled


@contextlib.contextmanager
def compile_lock(path: str) -> Iterator[float]:
    """An exclusive lock across processes (released by the OS if the holder dies); yields seconds waited."""
    started = time.perf_counter()
    try:
        import fcntl
    except ImportError:  # not POSIX: compile side by side
        yield 0.0
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield time.perf_counter() - started
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _enable_caches() -> None:
    try:
        import torch._inductor.config as inductor_config

        inductor_config.fx_graph_cache = True
        if hasattr(inductor_config, "autotune_local_cache"):
            inductor_config.autotune_local_cache = True
    except Exception:
        log.debug("could not switch the inductor caches on", exc_info=True)


def _cache_dir() -> str:
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        return cache_dir()
    except Exception:
        return os.environ.get("TORCHINDUCTOR_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "torchinductor")


def _describe(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if v is not None)


# Last among auto's candidates: tens of seconds per cold worker, so a spent budget skips it first.
PLUGIN = OptimizationSpec(
    name="compile", description="torch.compile (inductor by default), compiled at load on every warm-up shape",
    options_class=CompileOptions, apply=apply, unavailable=unavailable,
    auto_candidates=(AutoCandidate("compile", order=100), AutoCandidate("channels_last+compile", order=110)),
)
