"""The built-in plugins: every module of this package that declares ``PLUGIN`` (one
:class:`~torchserve_perf.plugins.optimizations.interface.OptimizationSpec`) or ``PLUGINS``
(several, e.g. autocast's bf16 and fp16).

Adding one is adding its module. The registry registers its spec, its ``options_class`` becomes
the ``optimizations.<name>:`` section of model-config.yaml, and its ``auto_candidates`` join the
chains auto tries. Nothing else lists the built-ins.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from torchserve_perf.plugins.optimizations.interface import OptimizationSpec, PluginError, ordered_chains

PACKAGE = "torchserve_perf.plugins.optimizations"


def builtin_modules(package: str = PACKAGE) -> dict[str, tuple[OptimizationSpec, ...]]:
    """Each module of ``package`` that declares plugins -> its specs, in module name order."""
    root = importlib.import_module(package)
    found: dict[str, tuple[OptimizationSpec, ...]] = {}
    for info in pkgutil.iter_modules(root.__path__, prefix=f"{package}."):
        specs = declared(importlib.import_module(info.name))
        if specs:
            found[info.name] = specs
    return found


def declared(module: ModuleType) -> tuple[OptimizationSpec, ...]:
    """The specs ``module`` declares in ``PLUGIN`` and ``PLUGINS``; none for a module that is not a plugin."""
    one, many = getattr(module, "PLUGIN", None), getattr(module, "PLUGINS", None)
    specs = ((one,) if one is not None else ()) + tuple(many or ())
    for spec in specs:
        if not isinstance(spec, OptimizationSpec):
            raise PluginError(module.__name__, f"it declares {spec!r} as a plugin, which is not an OptimizationSpec",
                              "write PLUGIN = OptimizationSpec(name=..., apply=...)")
    return specs


def builtin_specs(package: str = PACKAGE) -> tuple[OptimizationSpec, ...]:
    return tuple(spec for specs in builtin_modules(package).values() for spec in specs)


def builtin_options(package: str = PACKAGE) -> dict[str, type]:
    """Built-in plugin name -> its options class, for the ones that take options: the sections
    of ``handler.optimizations`` named after them."""
    return {spec.name: spec.options_class for spec in builtin_specs(package) if spec.options_class is not None}


def archive_candidates(package: str = PACKAGE) -> tuple[str, ...]:
    """The chains that ``torchserve-perf archive`` writes for auto (``in_archives``), in auto's order."""
    return ordered_chains(c for spec in builtin_specs(package) for c in spec.auto_candidates if c.in_archives)
