"""The handler's settings: one frozen object per component, built once from model-config.yaml."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Generic, Mapping, Optional, TypeVar

from torchserve_perf.plugins.config import HandlerConfigError, apply_env_overrides, build
from torchserve_perf.plugins.decode_pool import DecodeConfig
from torchserve_perf.plugins.metrics import MetricsConfig
from torchserve_perf.plugins.optimizations import OptimizationConfig, Registry
from torchserve_perf.plugins.profiler import ProfilerConfig
from torchserve_perf.plugins.threads import ThreadConfig

OptionsT = TypeVar("OptionsT")  # a handler's own options (ImageOptions, ...), or None for a handler without

COMPONENTS: Mapping[str, type] = {
    "threads": ThreadConfig,
    "optimizations": OptimizationConfig,
    "profiler": ProfilerConfig,
    "metrics": MetricsConfig,
    "decode": DecodeConfig,
}


@dataclass(frozen=True)
class HandlerSettings(Generic[OptionsT]):
    threads: ThreadConfig
    optimizations: OptimizationConfig
    profiler: ProfilerConfig
    metrics: MetricsConfig
    options: OptionsT  # the handler's own section (image:, text:, tensor:), or None
    decode: DecodeConfig = DecodeConfig()


def load_settings(model_yaml_config: Optional[Mapping[str, Any]], environ: Mapping[str, str],
                  options_section: Optional[str] = None, options_class: Optional[type] = None,
                  registry: Optional[Registry] = None) -> HandlerSettings[Any]:
    """Validate model-config.yaml's ``handler:`` section, with environment overrides applied.

    With ``registry`` (what the handler passes at load), optimization plugin names and their
    options are checked against it too; without one, only their structure is."""
    model_yaml_config = model_yaml_config or {}
    section = model_yaml_config.get("handler") or {}
    if not isinstance(section, Mapping):
        raise HandlerConfigError("", f"'handler:' must be a mapping, got {section!r}",
                                 "write 'handler:' as a mapping of sections such as threads: and profiler:")
    raw = apply_env_overrides(section, environ)
    if isinstance(raw.get("optimizations"), (list, tuple, str)):
        raw["optimizations"] = {"chain": raw["optimizations"]}
    raw["optimizations"] = _with_stock_pt2(raw.get("optimizations"), model_yaml_config)

    sections = dict(COMPONENTS)
    if options_section and options_class:
        sections[options_section] = options_class
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(sections), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise HandlerConfigError(unknown[0], "unknown section",
                                 f"{hint}this handler reads {sorted(sections)}; remove or rename it")
    built: dict[str, Any] = {name: build(cls, raw.get(name), name) for name, cls in sections.items()}
    options = built.pop(options_section) if options_section and options_class else None
    if registry is not None:
        built["optimizations"].check(registry)
    return HandlerSettings(options=options, **built)


def _with_stock_pt2(optimizations: Any, model_yaml_config: Mapping[str, Any]) -> Any:
    """Honour TorchServe's own top-level ``pt2:`` key when no chain is given under ``handler:``."""
    pt2 = model_yaml_config.get("pt2")
    optimizations = dict(optimizations or {})
    if pt2 and not optimizations.get("chain") and "pt2" in _fields(OptimizationConfig):
        optimizations["pt2"] = pt2
    return optimizations


def _fields(cls: type) -> set[str]:
    return set(getattr(cls, "__dataclass_fields__", {}))
