"""Validated, frozen configuration built once at load from model-config.yaml's ``handler:`` section.

Each component owns one frozen dataclass. :func:`build` turns a plain mapping into it, rejecting
unknown keys and wrong types with a message that names the key and the fix. Environment
variables are applied in exactly one place, :func:`apply_env_overrides`.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import TYPE_CHECKING, Any, Mapping, MutableMapping, Optional, TypeVar, Union

if TYPE_CHECKING:
    from _typeshed import DataclassInstance  # typing-only: what dataclasses.fields() accepts

T = TypeVar("T", bound="DataclassInstance")

FALSE_WORDS = frozenset({"0", "false", "no", "off"})
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})


class HandlerConfigError(RuntimeError):
    """A bad ``handler:`` setting.

    A RuntimeError on purpose: TorchServe answers a model load that raises RuntimeError with
    a 500, so a synchronous registration fails and the model is unregistered. A ValueError
    would kill the worker instead, and TorchServe restarts it in a loop.
    """

    def __init__(self, key: str, problem: str, fix: str) -> None:
        self.key, self.problem, self.fix = key, problem, fix
        super().__init__(f"model-config.yaml handler.{key}: {problem}. Fix: {fix}")


class ConfigValueError(Exception):
    """Raised from a config class's ``__post_init__``; :func:`build` adds the key path."""

    def __init__(self, field: str, problem: str, fix: str) -> None:
        super().__init__(field, problem, fix)
        self.field, self.problem, self.fix = field, problem, fix


def at_least_one(options: Any, *names: str, fix: str = "give at least 1") -> None:
    """For a config class's ``__post_init__``: a ConfigValueError for the first of ``names`` whose
    value on ``options`` is below 1 (counts: sessions, models, repeats, samples)."""
    for name in names:
        value = getattr(options, name)
        if value < 1:
            raise ConfigValueError(name, f"{value} is below 1", fix)


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{value!r} is not a boolean")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return build_section(hint, value, key)
    if origin is Union:
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except HandlerConfigError as exc:
                errors.append(exc.problem)
        raise HandlerConfigError(key, f"{value!r} is not valid ({'; '.join(errors)})", f"give one of: {_describe(hint)}")
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value in choices:
            return value
        raise HandlerConfigError(key, f"{value!r} is not one of {list(choices)}", f"use one of {list(choices)}")
    if origin is tuple:
        item_hint = typing.get_args(hint)[0]
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            raise HandlerConfigError(key, f"expected a list, got {value!r}", f"write '{key}' as a YAML list")
        return tuple(_coerce(item, item_hint, f"{key}[{i}]") for i, item in enumerate(value))
    if origin in (dict, Mapping) or hint is dict:
        if not isinstance(value, Mapping):
            raise HandlerConfigError(key, f"expected a mapping, got {value!r}", f"write '{key}' as a mapping")
        return dict(value)
    if hint is bool:
        try:
            return parse_bool(value)
        except ValueError:
            raise HandlerConfigError(key, f"{value!r} is not a boolean", "use true or false") from None
    if hint is int:
        if isinstance(value, bool) or not _is_int(value):
            raise HandlerConfigError(key, f"{value!r} is not an integer", "give a whole number")
        return int(value)
    if hint is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise HandlerConfigError(key, f"{value!r} is not a number", "give a number") from None
    if hint is str:
        if isinstance(value, (dict, list)):
            raise HandlerConfigError(key, f"expected text, got {value!r}", "give a single value")
        return str(value)
    raise TypeError(f"unsupported config type {hint!r} for {key}")


def _is_int(value: Any) -> bool:
    try:
        return float(value) == int(float(value))
    except (TypeError, ValueError):
        return False


def _describe(hint: Any) -> str:
    parts = []
    for arg in typing.get_args(hint):
        if arg is type(None):
            parts.append("null")
        elif typing.get_origin(arg) is typing.Literal:
            parts.extend(repr(a) for a in typing.get_args(arg))
        else:
            parts.append(getattr(arg, "__name__", str(arg)))
    return ", ".join(parts)


def build(cls: type[T], raw: Optional[Mapping[str, Any]], prefix: str = "") -> T:
    """Build the frozen dataclass ``cls`` from ``raw``, naming the key and the fix on any error.

    A class whose keys are not all its own fields (the optimizations section: one key per built-in
    plugin) defines a classmethod ``from_mapping(raw, prefix)``, which is called instead; it uses
    :func:`check_keys`, :func:`build_section` and :func:`build_fields` for the parts it shares."""
    from_mapping = getattr(cls, "from_mapping", None)
    if from_mapping is not None:
        return from_mapping(raw, prefix)
    return build_fields(cls, raw, prefix)


def build_section(cls: type[T], value: Any, key: str) -> T:
    """A nested section: None reads as empty, anything but a mapping is refused."""
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise HandlerConfigError(key, f"expected a mapping, got {value!r}", f"write '{key}:' as a mapping of settings")
    return build(cls, value, key)


def check_keys(raw: Mapping[str, Any], names: list[str], prefix: str = "") -> None:
    """Refuse the first key of ``raw`` that is not one of ``names``, suggesting the closest."""
    unknown = sorted(set(raw) - set(names))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), names, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise HandlerConfigError(
            _join(prefix, key),
            "unknown key",
            f"{hint}valid keys here are {names}; remove or rename it",
        )


def build_fields(cls: type[T], raw: Optional[Mapping[str, Any]], prefix: str = "") -> T:
    """:func:`build` for a dataclass whose keys are exactly its fields."""
    raw = dict(raw or {})
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    check_keys(raw, names, prefix)
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(raw[name], hints[name], _join(prefix, name)) for name in names if name in raw}
    try:
        return cls(**values)
    except ConfigValueError as exc:
        raise HandlerConfigError(_join(prefix, exc.field), exc.problem, exc.fix) from None


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def set_path(tree: MutableMapping[str, Any], path: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested dict, creating mappings on the way."""
    *parents, leaf = path.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if not isinstance(child, MutableMapping):
            child = {} if child is None else _promote(child, part)
            node[part] = child
        node = child
    node[leaf] = value


def _promote(value: Any, part: str) -> dict:
    # `optimizations: [compile]` is shorthand for `optimizations: {chain: [compile]}`.
    if part == "optimizations":
        return {"chain": value}
    raise HandlerConfigError(part, f"expected a mapping, got {value!r}", f"write '{part}:' as a mapping")


# Environment variable -> handler setting. Only these are read, and only here.
ENV_OVERRIDES: Mapping[str, str] = {
    "ENABLE_TORCH_PROFILER": "profiler.enabled",
    "TS_PERF_INTRA_OP_THREADS": "threads.intra_op",
    "TS_PERF_INTER_OP_THREADS": "threads.inter_op",
    "TS_PERF_PIN_CORES": "threads.pin_cores",
    "TS_PERF_ELASTIC_THREADS": "threads.elastic",
    "TS_PERF_OPTIMIZATIONS": "optimizations.chain",
    "TS_PERF_CACHE_DIR": "optimizations.auto.cache_dir",
    "TS_PERF_METRICS": "metrics.enabled",
    "TS_PERF_PROFILER_DIR": "profiler.output_dir",
    "TS_PERF_DECODE_THREADS": "decode.threads",
}


def apply_env_overrides(section: Mapping[str, Any], environ: Mapping[str, str]) -> dict:
    """Return a copy of the ``handler:`` section with environment overrides applied.

    An empty variable counts as unset. ``ENABLE_TORCH_PROFILER`` is on for any value but
    0/false/no/off (stock TorchServe treats every non-empty value, "false" too, as on).
    """
    tree = _deep_copy(section)
    for variable, path in ENV_OVERRIDES.items():
        text = environ.get(variable, "")
        if text.strip() == "":
            continue
        value: Union[str, bool] = text
        if variable == "ENABLE_TORCH_PROFILER":
            value = text.strip().lower() not in FALSE_WORDS
        set_path(tree, path, value)
    return tree


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
