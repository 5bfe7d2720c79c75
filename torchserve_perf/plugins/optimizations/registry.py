"""The plugin registry: built-ins, entry-point plugins and programmatic registrations.

A plugin is checked when it is registered, so a broken plugin is reported once, by name, with
the fix, instead of failing somewhere inside a worker's load. What is registered is an
:class:`~torchserve_perf.plugins.optimizations.interface.OptimizationSpec`; a subclass of
:class:`~torchserve_perf.plugins.optimizations.interface.OptimizationPlugin` (or an instance of
one) is turned into a spec first.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
import re
from typing import Any, Union

from torchserve_perf.plugins.config import build
from torchserve_perf.plugins.optimizations.builtin import builtin_modules
from torchserve_perf.plugins.optimizations.interface import (
    AutoCandidate,
    OptimizationPlugin,
    OptimizationSpec,
    PluginError,
    ordered_chains,
)

log = logging.getLogger("torchserve_perf.plugins.optimizations")

ENTRY_POINT_GROUP = "torchserve_perf.optimizations"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
# Words the chain or the optimizations: section already uses.
RESERVED = frozenset({"auto", "none", "chain", "pt2", "parity", "warmup", "plugins", "fallback_to_eager",
                      "gpu_defaults", "builtin_options"})


PluginLike = Union[OptimizationSpec, OptimizationPlugin, type]


class Registry:
    def __init__(self) -> None:
        self._plugins: dict[str, OptimizationSpec] = {}
        self._origins: dict[str, str] = {}
        self.broken: dict[str, str] = {}  # entry-point name -> why it could not be loaded

    # ---- registration -----------------------------------------------------------------------
    def register(self, plugin: PluginLike, *, origin: str = "", replace: bool = False) -> OptimizationSpec:
        spec = validate(plugin)
        if spec.name in self._plugins and not replace:
            raise PluginError(repr(spec.name), f"the name is already registered by {self._origins[spec.name]}",
                              "choose another name, or pass replace=True to override it on purpose")
        self._plugins[spec.name] = spec
        self._origins[spec.name] = origin or _describe(plugin)
        return spec

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Register the plugins installed packages declare; a broken one is logged and skipped."""
        from importlib.metadata import entry_points

        loaded = []
        for point in entry_points(group=group):
            if point.name in self._plugins and self._origins.get(point.name, "").startswith("entry point"):
                continue  # the same distribution seen twice on sys.path
            try:
                obj = point.load()
                spec = self.register(obj, origin=f"entry point {point.name} = {point.value}")
                if spec.name != point.name:
                    log.info("optimization entry point %r registered plugin %r", point.name, spec.name)
                loaded.append(spec.name)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                self.broken[point.name] = reason
                log.warning("optimization plugin entry point %r (%s) could not be registered: %s",
                            point.name, point.value, reason)
        return loaded

    # ---- lookup -----------------------------------------------------------------------------
    def get(self, name: str) -> OptimizationSpec:
        try:
            return self._plugins[name]
        except KeyError:
            raise KeyError(self.unknown(name)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def names(self) -> list[str]:
        return sorted(self._plugins)

    def auto_candidates(self) -> tuple[str, ...]:
        """The chains ``auto`` tries when the user lists none: those the registered plugins offer, in order."""
        return ordered_chains(c for spec in self._plugins.values() for c in spec.auto_candidates)

    def unknown(self, name: str) -> str:
        """Why ``name`` is not a plugin, with a suggestion."""
        if name in self.broken:
            return f"plugin {name!r} is installed but failed to register ({self.broken[name]})"
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"{name!r} is not a registered optimization.{hint} Known: {self.names()}"


@dataclasses.dataclass(frozen=True)
class _Wording:
    """How a fix is phrased for the way the plugin was declared."""

    name: str
    method: str  # the signature to write, e.g. "apply(self, model, step)"
    flag: str


CLASS_WORDING = _Wording(name="set the class attribute name, e.g. name = 'my_plugin' (letters, digits, _)",
                         method="{method}(self, model, step)", flag="set {flag} = True or False")
SPEC_WORDING = _Wording(name="pass name='my_plugin' to OptimizationSpec (letters, digits, _)",
                        method="{method}(model, step)", flag="pass {flag}=True or False to OptimizationSpec")


def validate(plugin: PluginLike) -> OptimizationSpec:
    """Check a plugin (a spec, a plugin class or instance) and return its spec; raise
    :class:`PluginError` naming it and the fix."""
    if isinstance(plugin, OptimizationSpec):
        return _checked(plugin, _describe(plugin), SPEC_WORDING)
    label = _describe(plugin)
    instance: Any
    if inspect.isclass(plugin):
        try:
            instance = plugin()
        except Exception as exc:
            raise PluginError(label, f"the class cannot be created without arguments ({exc})",
                              "give the plugin class a constructor that takes no arguments") from None
    else:
        instance = plugin
    declared: dict[str, Any] = {key: getattr(instance, key, default) for key, default in (
        ("name", None), ("description", ""), ("options_class", None), ("lossy", None), ("needs_module", None),
        ("gated", None), ("auto_candidates", ()))}
    name = declared["name"]
    _check_name(label, name, CLASS_WORDING)
    if not callable(getattr(instance, "apply", None)) or _is_abstract(instance, "apply"):
        raise PluginError(repr(name), "it has no apply(model, step) method", "implement apply(self, model, step)")
    if getattr(instance, "unavailable", None) is None:
        raise PluginError(repr(name), "it has no unavailable method",
                          "subclass torchserve_perf.plugins.optimizations.OptimizationPlugin")
    spec = OptimizationSpec(apply=instance.apply, unavailable=instance.unavailable, **declared)
    return _checked(spec, label, CLASS_WORDING)


def _checked(spec: OptimizationSpec, label: str, wording: _Wording) -> OptimizationSpec:
    _check_name(label, spec.name, wording)
    label = repr(spec.name)
    for method in ("apply", "unavailable"):
        func = getattr(spec, method)
        if not callable(func):
            raise PluginError(label, f"it has no {method}(model, step) method",
                              f"define {wording.method.format(method=method)}")
        try:
            inspect.signature(func).bind(None, None)
        except TypeError:
            raise PluginError(label, f"{method} does not take (model, step)",
                              f"define {wording.method.format(method=method)}") from None
        except ValueError:
            pass  # no signature available (a builtin); nothing to check
    for flag in ("lossy", "needs_module", "gated"):
        if not isinstance(getattr(spec, flag), bool):
            raise PluginError(label, f"{flag} is {getattr(spec, flag)!r}, not a bool", wording.flag.format(flag=flag))
    if not isinstance(spec.description, str):
        raise PluginError(label, f"description {spec.description!r} is not text", "describe the plugin in one line")
    _check_options(label, spec.options_class)
    _check_candidates(label, spec.name, spec.auto_candidates)
    return spec


def _check_name(label: str, name: Any, wording: _Wording) -> None:
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise PluginError(label, f"name {name!r} is not a lower-case identifier", wording.name)
    if name in RESERVED:
        raise PluginError(repr(name), "the name is reserved by the optimizations: section",
                          f"choose a name other than {sorted(RESERVED)}")


def _check_options(label: str, options_class: Any) -> None:
    if options_class is None:
        return
    if not (inspect.isclass(options_class) and dataclasses.is_dataclass(options_class)):
        raise PluginError(label, f"options_class {options_class!r} is not a dataclass",
                          "make options_class a @dataclass(frozen=True), or None when there are no options")
    params = getattr(options_class, "__dataclass_params__", None)
    if params is None or not params.frozen:
        raise PluginError(label, f"options_class {options_class.__name__} is not frozen",
                          "declare it with @dataclass(frozen=True): options are shared by every request")
    missing = [f.name for f in dataclasses.fields(options_class)
               if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise PluginError(label, f"options {missing} have no default",
                          "give every option a default, so the plugin works with no options section")
    try:
        build(options_class, {}, "options")  # resolves the annotations too, as the config section will
    except Exception as exc:
        raise PluginError(label, f"its default options are invalid ({exc})", "fix the defaults of options_class") \
            from None


def _check_candidates(label: str, name: str, candidates: Any) -> None:
    fix = f"offer chains that contain it, e.g. AutoCandidate({name!r}, order=100)"
    if not isinstance(candidates, tuple) or not all(isinstance(c, AutoCandidate) for c in candidates):
        raise PluginError(label, f"auto_candidates {candidates!r} is not a tuple of AutoCandidate", fix)
    for candidate in candidates:
        names = candidate.names
        if name not in names or any(not NAME_PATTERN.match(n) for n in names) or len(set(names)) != len(names):
            raise PluginError(label, f"auto candidate {candidate.chain!r} is not a chain of distinct plugin names "
                              f"that includes {name!r}", fix)
        if not isinstance(candidate.order, int) or isinstance(candidate.order, bool):
            raise PluginError(label, f"auto candidate {candidate.chain!r} has order {candidate.order!r}",
                              "give a whole number: auto tries lower orders first")


def _is_abstract(instance: Any, method: str) -> bool:
    impl = getattr(type(instance), method, None)
    return impl is OptimizationPlugin.__dict__.get(method)


def _describe(plugin: Any) -> str:
    if isinstance(plugin, OptimizationSpec):
        return f"OptimizationSpec {plugin.name!r} ({getattr(plugin.apply, '__module__', '?')})"
    cls = plugin if inspect.isclass(plugin) else type(plugin)
    return f"{cls.__module__}.{cls.__qualname__}"


def standard_registry(*, entry_points: bool = True) -> Registry:
    """A new registry with the built-ins, then the installed entry points. There is no process-wide
    registry: the handler makes one at load and passes it to whatever needs it."""
    registry = Registry()
    for module, specs in builtin_modules().items():
        for spec in specs:
            registry.register(spec, origin=f"torchserve-perf (built in, {module})")
    if entry_points:
        registry.load_entry_points()
    return registry
