"""The plugin registry: built-ins, entry-point plugins and programmatic registrations.

A plugin is checked when it is registered, so a broken third-party plugin is reported once, by
name, with the fix, instead of failing somewhere inside a worker's load.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
import re
from typing import Any, Union

from torchserve_perf.plugins.optimizations.interface import OptimizationPlugin

log = logging.getLogger("torchserve_perf.plugins.optimizations")

ENTRY_POINT_GROUP = "torchserve_perf.optimizations"
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
# Words the chain or the optimizations: section already uses.
RESERVED = frozenset({"auto", "none", "chain", "pt2", "parity", "warmup", "plugins", "fallback_to_eager"})


class PluginError(RuntimeError):
    """A plugin that cannot be registered. Names the plugin, the problem and the fix."""

    def __init__(self, plugin: str, problem: str, fix: str) -> None:
        self.plugin, self.problem, self.fix = plugin, problem, fix
        super().__init__(f"optimization plugin {plugin}: {problem}. Fix: {fix}")


PluginLike = Union[OptimizationPlugin, type]


class Registry:
    def __init__(self) -> None:
        self._plugins: dict[str, OptimizationPlugin] = {}
        self._origins: dict[str, str] = {}
        self.broken: dict[str, str] = {}  # entry-point name -> why it could not be loaded

    # ---- registration -----------------------------------------------------------------------
    def register(self, plugin: PluginLike, *, origin: str = "", replace: bool = False) -> OptimizationPlugin:
        instance = validate(plugin)
        if instance.name in self._plugins and not replace:
            raise PluginError(repr(instance.name), f"the name is already registered by {self._origins[instance.name]}",
                              "choose another name, or pass replace=True to override it on purpose")
        self._plugins[instance.name] = instance
        self._origins[instance.name] = origin or _describe(plugin)
        return instance

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Register the plugins installed packages declare; a broken one is logged and skipped."""
        from importlib.metadata import entry_points

        loaded = []
        for point in entry_points(group=group):
            if point.name in self._plugins and self._origins.get(point.name, "").startswith("entry point"):
                continue  # the same distribution seen twice on sys.path
            try:
                obj = point.load()
                instance = self.register(obj, origin=f"entry point {point.name} = {point.value}")
                if instance.name != point.name:
                    log.info("optimization entry point %r registered plugin %r", point.name, instance.name)
                loaded.append(instance.name)
            except Exception as exc:
                reason = f"{type(exc).__name__}: {exc}"
                self.broken[point.name] = reason
                log.warning("optimization plugin entry point %r (%s) could not be registered: %s",
                            point.name, point.value, reason)
        return loaded

    # ---- lookup -----------------------------------------------------------------------------
    def get(self, name: str) -> OptimizationPlugin:
        try:
            return self._plugins[name]
        except KeyError:
            raise KeyError(self.unknown(name)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def names(self) -> list[str]:
        return sorted(self._plugins)

    def unknown(self, name: str) -> str:
        """Why ``name`` is not a plugin, with a suggestion."""
        if name in self.broken:
            return f"plugin {name!r} is installed but failed to register ({self.broken[name]})"
        close = difflib.get_close_matches(name, self.names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"{name!r} is not a registered optimization.{hint} Known: {self.names()}"


def validate(plugin: PluginLike) -> OptimizationPlugin:
    """Instantiate and check a plugin; raise :class:`PluginError` naming it and the fix."""
    label = _describe(plugin)
    if inspect.isclass(plugin):
        try:
            instance = plugin()
        except Exception as exc:
            raise PluginError(label, f"the class cannot be created without arguments ({exc})",
                              "give the plugin class a constructor that takes no arguments") from None
    else:
        instance = plugin
    name = getattr(instance, "name", None)
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise PluginError(label, f"name {name!r} is not a lower-case identifier",
                          "set the class attribute name, e.g. name = 'my_plugin' (letters, digits, _)")
    label = repr(name)
    if name in RESERVED:
        raise PluginError(label, "the name is reserved by the optimizations: section",
                          f"choose a name other than {sorted(RESERVED)}")
    apply = getattr(instance, "apply", None)
    if not callable(apply) or _is_abstract(instance, "apply"):
        raise PluginError(label, "it has no apply(model, step) method", "implement apply(self, model, step)")
    for method in ("apply", "unavailable"):
        func = getattr(instance, method, None)
        if func is None:
            raise PluginError(label, f"it has no {method} method", "subclass plugins.optimizations.OptimizationPlugin")
        try:
            inspect.signature(func).bind(None, None)
        except TypeError:
            raise PluginError(label, f"{method} does not take (model, step)",
                              f"define {method}(self, model, step)") from None
        except ValueError:
            pass  # no signature available (a builtin); nothing to check
    for flag in ("lossy", "needs_module"):
        if not isinstance(getattr(instance, flag, None), bool):
            raise PluginError(label, f"{flag} is {getattr(instance, flag, None)!r}, not a bool",
                              f"set {flag} = True or False")
    _check_options(label, getattr(instance, "options_class", None))
    return instance


def _check_options(label: str, options_class: Any) -> None:
    if options_class is None:
        return
    if not (inspect.isclass(options_class) and dataclasses.is_dataclass(options_class)):
        raise PluginError(label, f"options_class {options_class!r} is not a dataclass",
                          "make options_class a @dataclass(frozen=True), or None when there are no options")
    if not options_class.__dataclass_params__.frozen:
        raise PluginError(label, f"options_class {options_class.__name__} is not frozen",
                          "declare it with @dataclass(frozen=True): options are shared by every request")
    missing = [f.name for f in dataclasses.fields(options_class)
               if f.init and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise PluginError(label, f"options {missing} have no default",
                          "give every option a default, so the plugin works with no options section")
    try:
        options_class()
    except Exception as exc:
        raise PluginError(label, f"its default options are invalid ({exc})", "fix the defaults of options_class") \
            from None


def _is_abstract(instance: Any, method: str) -> bool:
    impl = getattr(type(instance), method, None)
    return impl is OptimizationPlugin.__dict__.get(method)


def _describe(plugin: Any) -> str:
    cls = plugin if inspect.isclass(plugin) else type(plugin)
    return f"{cls.__module__}.{cls.__qualname__}"


def standard_registry(*, entry_points: bool = True) -> Registry:
    """A new registry with the built-ins, then the installed entry points. There is no process-wide
    registry: the handler makes one at load and passes it to whatever needs it."""
    from torchserve_perf.plugins.optimizations.builtin import BUILTIN_PLUGINS

    registry = Registry()
    for plugin in BUILTIN_PLUGINS:
        registry.register(plugin, origin="torchserve-perf (built in)")
    if entry_points:
        registry.load_entry_points()
    return registry
