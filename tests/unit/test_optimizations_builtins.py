"""One place per optimization: a plugin module declares its spec, and the registry, the config and
auto find it. Registration checks every spec and names the problem and the fix."""

from __future__ import annotations

import dataclasses
import sys
import textwrap
from dataclasses import dataclass

import pytest
import torch

from torchserve_perf.handlers.settings import load_settings
from torchserve_perf.plugins.config import ConfigValueError, HandlerConfigError, build
from torchserve_perf.plugins.host_defaults import auto_optimizations
from torchserve_perf.plugins.optimizations import (
    AutoCandidate,
    OptimizationConfig,
    OptimizationPlugin,
    OptimizationSpec,
    PluginError,
    Registry,
    Runtime,
    standard_registry,
)
from torchserve_perf.plugins.optimizations.builtin import archive_candidates, builtin_options, declared
from torchserve_perf.plugins.optimizations.interface import ordered_chains
from torchserve_perf.plugins.optimizations.registry import RESERVED

PACKAGE = "torchserve_perf.plugins.optimizations"

# auto's default candidates and the archives' candidates, in the order auto tries them.
DEFAULT_CANDIDATES = ("onnxruntime", "channels_last", "torchscript", "channels_last+torchscript", "int8_dynamic", "openvino", "int8",
                      "openvino_int8", "quantize_dynamic", "bf16", "openvino_bf16", "fp16", "ipex", "tensorrt", "compile",
                      "channels_last+compile")
ARCHIVE_CANDIDATES = ("onnxruntime", "channels_last", "torchscript", "channels_last+torchscript")


def test_the_builtins_offer_auto_its_candidates_in_order():
    assert standard_registry(entry_points=False).auto_candidates() == DEFAULT_CANDIDATES
    assert archive_candidates() == ARCHIVE_CANDIDATES
    assert auto_optimizations() == {"chain": ["auto"], "auto": {"budget_s": 30, "candidates": list(ARCHIVE_CANDIDATES)}}


@pytest.mark.parametrize("candidates, expected", [
    ((), ()),
    ((AutoCandidate("b", 20), AutoCandidate("a", 10)), ("a", "b")),
    ((AutoCandidate("b", 10), AutoCandidate("a", 10)), ("a", "b")),                       # a tie: by chain
    ((AutoCandidate("a + b", 30), AutoCandidate("a+b", 5)), ("a+b",)),                    # once, at its lowest order
])
def test_ordered_chains_table(candidates, expected):
    assert ordered_chains(candidates) == expected


# ---- a new built-in: one module, found without editing anything else ------------------------------------
NEW_BUILTIN = '''
    from dataclasses import dataclass

    from torch import nn

    from torchserve_perf.plugins.optimizations.interface import AutoCandidate, OptimizationSpec


    @dataclass(frozen=True)
    class HalveOptions:
        factor: float = 0.5


    class Scaled(nn.Module):
        def __init__(self, model, factor):
            super().__init__()
            self.model, self.factor = model, factor

        def forward(self, x):
            return self.model(x) * self.factor / 0.5


    def apply(model, step):
        return Scaled(model, step.options.factor)


    PLUGIN = OptimizationSpec(
        name="halve", description="a test built-in", options_class=HalveOptions, apply=apply,
        auto_candidates=(AutoCandidate("halve", order=15, in_archives=True),
                         AutoCandidate("channels_last+halve", order=35)),
    )
'''


@pytest.fixture
def new_builtin(tmp_path, monkeypatch):
    """A module added to the package the way a contributor adds one: a file on the package's path."""
    import torchserve_perf.plugins.optimizations as package

    folder = tmp_path / "more_builtins"
    folder.mkdir()
    (folder / "halve.py").write_text(textwrap.dedent(NEW_BUILTIN))
    monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
    yield f"{PACKAGE}.halve"
    sys.modules.pop(f"{PACKAGE}.halve", None)
    vars(package).pop("halve", None)  # importing a submodule also sets it on the package


def test_a_new_builtin_module_is_registered_configurable_and_offered_to_auto(new_builtin):
    registry = standard_registry(entry_points=False)
    assert "halve" in registry and registry.get("halve").description == "a test built-in"

    # configurable: its own section, built with its options class; a typo names the fix
    settings = load_settings({"handler": {"optimizations": {"chain": ["halve"], "halve": {"factor": 0.25}}}}, {},
                             registry=registry)
    options = settings.optimizations.options_for("halve", registry)
    assert type(options).__name__ == "HalveOptions" and options.factor == 0.25
    assert OptimizationConfig().options_for("halve", registry).factor == 0.5  # no section: its defaults
    with pytest.raises(HandlerConfigError, match=r"optimizations\.halve\.factr: unknown key.*did you mean 'factor'"):
        load_settings({"handler": {"optimizations": {"halve": {"factr": 0.25}}}}, {}, registry=registry)

    # offered to auto, in its order, and to the archives' auto
    assert registry.auto_candidates() == ("onnxruntime", "channels_last", "halve", "torchscript",
                                          "channels_last+torchscript", "channels_last+halve", *DEFAULT_CANDIDATES[4:])
    assert archive_candidates() == ("onnxruntime", "channels_last", "halve", *ARCHIVE_CANDIDATES[2:])

    # and it runs as a step of a chain, with its options
    from torchserve_perf.plugins.optimizations import optimize

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2).eval()
    config = build(OptimizationConfig, {"chain": ["halve"], "halve": {"factor": 0.5}}, "optimizations")
    result = optimize(model, config, torch.randn(1, 4), Runtime(torch.device("cpu"), 1, 1, batch_size=2), registry)
    assert result.applied == ["halve"]


def test_without_the_module_nothing_knows_the_name():
    assert "halve" not in standard_registry(entry_points=False)
    with pytest.raises(HandlerConfigError, match=r"optimizations\.halve: unknown key"):
        load_settings({"handler": {"optimizations": {"halve": {"factor": 0.25}}}}, {})


def test_a_module_that_declares_something_else_is_refused():
    module = type(sys)("not_a_spec")
    module.PLUGIN = object()
    with pytest.raises(PluginError, match="not an OptimizationSpec.*Fix: write PLUGIN = OptimizationSpec"):
        declared(module)
    module.PLUGIN, module.PLUGINS = None, ()
    assert declared(module) == ()  # a helper module of the package: no plugin


# ---- registration checks a spec (as it does a plugin class) ---------------------------------------------
def keep(model, step):
    return model


@dataclass
class NotFrozen:
    level: int = 1


@dataclass(frozen=True)
class Unresolvable:
    level: NoSuchType = None  # noqa: F821


def spec(**changes) -> OptimizationSpec:
    return dataclasses.replace(OptimizationSpec(name="custom", apply=keep), **changes)


@pytest.mark.parametrize("changes, problem, fix", [
    ({"name": "Bad Name"}, "is not a lower-case identifier", "pass name='my_plugin' to OptimizationSpec"),
    ({"name": "parity"}, "reserved", "choose a name other than"),
    ({"apply": None}, "has no apply(model, step)", "define apply(model, step)"),
    ({"apply": lambda model: model}, "apply does not take (model, step)", "define apply(model, step)"),
    ({"unavailable": lambda: None}, "unavailable does not take (model, step)", "define unavailable(model, step)"),
    ({"lossy": "yes"}, "lossy is 'yes', not a bool", "pass lossy=True or False"),
    ({"description": 3}, "is not text", "describe the plugin"),
    ({"options_class": NotFrozen}, "is not frozen", "@dataclass(frozen=True)"),
    ({"options_class": Unresolvable}, "default options are invalid", "fix the defaults"),
    ({"auto_candidates": [AutoCandidate("custom", 1)]}, "is not a tuple of AutoCandidate", "AutoCandidate('custom'"),
    ({"auto_candidates": (AutoCandidate("torchscript", 1),)}, "includes 'custom'", "offer chains that contain it"),
    ({"auto_candidates": (AutoCandidate("custom+custom", 1),)}, "distinct plugin names", "offer chains"),
    ({"auto_candidates": (AutoCandidate("custom", 1.5),)}, "has order 1.5", "give a whole number"),
])
def test_registration_checks_a_spec_and_names_it_and_the_fix(changes, problem, fix):
    with pytest.raises(PluginError) as info:
        Registry().register(spec(**changes))
    message = str(info.value)
    assert problem in message.split("Fix:")[0] and fix in message.split("Fix:")[1]


def test_a_spec_name_registers_once():
    registry = standard_registry(entry_points=False)
    with pytest.raises(PluginError, match=r"'compile': the name is already registered by torchserve-perf \(built in, "
                                          r"torchserve_perf.plugins.optimizations.compile\)"):
        registry.register(spec(name="compile"))


def test_an_entry_point_may_name_a_spec(tmp_path, monkeypatch):
    dist = tmp_path / "fake_ts_perf_spec-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-ts-perf-spec\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[torchserve_perf.optimizations]\nfuse = fake_ts_perf_spec:PLUGIN\n")
    (tmp_path / "fake_ts_perf_spec.py").write_text(textwrap.dedent("""
        from torchserve_perf.plugins.optimizations import AutoCandidate, OptimizationSpec

        def apply(model, step):
            return model

        PLUGIN = OptimizationSpec(name="fuse", apply=apply, auto_candidates=(AutoCandidate("fuse", order=25),))
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry = standard_registry()
    finally:
        sys.modules.pop("fake_ts_perf_spec", None)
    assert "fuse" in registry and "fuse" in registry.auto_candidates()


def test_a_plugin_class_may_offer_auto_candidates_too():
    class Offered(OptimizationPlugin):
        name = "offered"
        auto_candidates = (AutoCandidate("offered", order=1),)

        def apply(self, model, step):
            return model

    registry = Registry()
    registry.register(Offered)
    assert registry.auto_candidates() == ("offered",)


# ---- the optimizations: section -----------------------------------------------------------------------
def test_reserved_names_cover_the_section_keys():
    assert {f.name for f in dataclasses.fields(OptimizationConfig) if f.init} <= RESERVED


def test_builtin_options_from_python_are_checked():
    from torchserve_perf.plugins.optimizations.cuda_graphs import CudaGraphOptions

    config = OptimizationConfig(builtin_options={"cuda_graphs": CudaGraphOptions(capture="compile")})
    assert config.options_for("cuda_graphs", standard_registry(entry_points=False)).capture == "compile"
    with pytest.raises(ConfigValueError, match="is not a CudaGraphOptions"):
        OptimizationConfig(builtin_options={"cuda_graphs": {"capture": "compile"}})
    with pytest.raises(ConfigValueError, match="not a built-in plugin that takes options"):
        OptimizationConfig(builtin_options={"channels_last": CudaGraphOptions()})
    assert set(builtin_options()) == {"compile", "torchscript", "quantize_dynamic", "bf16", "fp16", "onnxruntime",
                                      "ipex", "tensorrt", "cuda_graphs", "int8", "openvino", "openvino_bf16",
                                      "openvino_int8", "int8_dynamic"}
