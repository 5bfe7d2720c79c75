"""The ``model-config.yaml`` an archive carries: our defaults, the user's file merged over them, and
the checks a worker would otherwise fail at load."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from torchserve_perf.tools.archive.plan import ArchiveError

# Top-level model-config.yaml keys that must be positive integers.
POSITIVE_INT_KEYS = ("minWorkers", "maxWorkers", "batchSize", "responseTimeout")


def optimizations_section(choice: Optional[str], ours: bool) -> Optional[dict[str, Any]]:
    """``--optimizations`` -> the ``handler: optimizations:`` section; None writes none.

    Default: auto (plugins/host_defaults.py) for our handlers, nothing for your own handler file."""
    from torchserve_perf.plugins.host_defaults import auto_optimizations

    if choice is None:
        return auto_optimizations() if ours else None
    if choice == "auto":
        return auto_optimizations()
    chain = [name.strip() for name in choice.split(",") if name.strip()]
    if not chain or "auto" in chain:
        raise ArchiveError(f"--optimizations {choice!r}: give auto, none, or plugin names joined by commas "
                           "(e.g. channels_last,torchscript)")
    return {"chain": ["none"]} if chain == ["none"] else {"chain": chain}


def default_model_config(section: Optional[str], options: Mapping[str, Any], *, workers: int, batch_size: int,
                         max_batch_delay: int, response_timeout: int,
                         optimizations: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The model-config.yaml we write: TorchServe's worker and batching keys plus our ``handler:`` section.

    Threads are left to the handler's default policy (``intra_op: auto`` splits the physical cores
    between the workers, elastic threads use idle ones), so the machine-specific choices here are
    the worker count and batching.
    """
    config: dict[str, Any] = {"minWorkers": workers, "maxWorkers": workers, "batchSize": batch_size,
                              "maxBatchDelay": max_batch_delay, "responseTimeout": response_timeout}
    handler: dict[str, Any] = {}
    if section and options:
        handler[section] = dict(options)
    if optimizations:
        handler["optimizations"] = dict(optimizations)
    if handler:
        config["handler"] = handler
    return config


def merge_model_config(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` (the user's --model-config file) wins key by key; ``handler:`` sections merge one level down."""
    merged = {**base, **{k: v for k, v in override.items() if k != "handler"}}
    handler = {k: dict(v) if isinstance(v, Mapping) else v for k, v in (base.get("handler") or {}).items()}
    for key, value in (override.get("handler") or {}).items():
        if isinstance(value, Mapping) and isinstance(handler.get(key), Mapping):
            handler[key] = {**handler[key], **value}
        else:
            handler[key] = value
    if handler:
        merged["handler"] = handler
    return merged


def check_model_config(config: Mapping[str, Any], section: Optional[str]) -> None:
    """TorchServe's keys are positive integers; our ``handler:`` section passes the handler's own validation."""
    for key in POSITIVE_INT_KEYS:
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ArchiveError(f"model-config {key}: {value!r} is not a positive integer; give e.g. {key}: 1")
    delay = config.get("maxBatchDelay")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int) or delay < 0):
        raise ArchiveError(f"model-config maxBatchDelay: {delay!r} is not a whole number of ms >= 0")
    if (config.get("minWorkers") or 1) > (config.get("maxWorkers") or config.get("minWorkers") or 1):
        raise ArchiveError("model-config minWorkers is above maxWorkers; make maxWorkers >= minWorkers")
    if section is None:
        return  # your own handler reads its own settings
    from torchserve_perf.handlers.options import OPTIONS
    from torchserve_perf.handlers.settings import load_settings
    from torchserve_perf.plugins.config import HandlerConfigError
    from torchserve_perf.plugins.optimizations.registry import standard_registry

    options = OPTIONS[section]
    try:  # with the registry a worker loads, so a misspelt plugin fails here, not at serve time
        load_settings(config, {}, section, options, standard_registry())
    except HandlerConfigError as exc:
        raise ArchiveError(str(exc)) from None


def read_model_config(path: Path) -> dict[str, Any]:
    """The user's --model-config file: a mapping of model-config keys (ours, or the one TorchServe's
    Transformers example ships, whose handler: keys the hf path turns into ours)."""
    import yaml

    try:
        override = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ArchiveError(f"--model-config {path}: {exc}".splitlines()[0]) from None
    if not isinstance(override, dict):
        raise ArchiveError(f"--model-config {path}: expected a mapping of keys such as batchSize")
    return override
