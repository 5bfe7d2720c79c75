"""Optimization plugins on tiny seeded models: registry checks, parity drops, each plugin, auto, pt2."""


from __future__ import annotations

import copy
import importlib.util
import logging
import textwrap
import time
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from torchserve_perf.handlers.settings import load_settings
from torchserve_perf.plugins.config import HandlerConfigError, build
from torchserve_perf.plugins.optimizations import (
    OptimizationConfig,
    OptimizationPlugin,
    PluginError,
    Registry,
    Runtime,
    optimize,
)
from torchserve_perf.plugins.optimizations.autocast import hardware_support
from torchserve_perf.plugins.optimizations.builtin import builtin_options, builtin_specs
from torchserve_perf.plugins.optimizations.chain import FallbackRunner
from torchserve_perf.plugins.optimizations.parity import warmup_inputs

LOGGER = "torchserve_perf.plugins.optimizations"


# ---- tiny seeded models ---------------------------------------------------------------------
class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


class TinyTokens(nn.Module):
    """Token ids [N, L] -> logits; length varies between batches."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(64, 8, padding_idx=0)
        self.head = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        keep = (ids != 0).unsqueeze(-1).float()
        return self.head((self.embed(ids) * keep).sum(1) / keep.sum(1).clamp(min=1.0))


def seeded(cls: type) -> nn.Module:
    torch.manual_seed(0)
    return cls().eval()


def runtime(batch_size: int = 4) -> Runtime:
    return Runtime(device=torch.device("cpu"), intra_op_threads=1, inter_op_threads=1, model_name="tiny",
                   batch_size=batch_size)


def config(**raw) -> OptimizationConfig:
    return build(OptimizationConfig, raw, "optimizations")


MLP_EXAMPLE = torch.randn(1, 16, generator=torch.Generator().manual_seed(0))


CNN_EXAMPLE = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))


TOKENS_EXAMPLE = torch.tensor([[5, 9, 33, 2, 17, 0, 0, 0]])


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


def same_outputs(result, model, example, atol=1e-5):
    for x in warmup_inputs(example, OptimizationConfig().warmup, runtime()):
        with torch.inference_mode():
            assert torch.allclose(result.model(x), model(x), atol=atol), x.shape


# ---- test plugins ---------------------------------------------------------------------------
class Scaled(nn.Module):
    def __init__(self, model, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x):
        return self.model(x) * self.factor


class WrongPlugin(OptimizationPlugin):
    name = "wrong"

    def apply(self, model, step):
        return Scaled(model, 1.5)


class BrokenPlugin(OptimizationPlugin):
    name = "broken"

    def apply(self, model, step):
        raise RuntimeError("kernel exploded")


class IdentityPlugin(OptimizationPlugin):
    name = "identity"

    def apply(self, model, step):
        return Scaled(model, 1.0)


@dataclass(frozen=True)
class SleepOptions:
    seconds: float = 0.0


class Sleepy(nn.Module):
    def __init__(self, model, seconds: float) -> None:
        super().__init__()
        self.model, self.seconds = model, seconds

    def forward(self, x):
        time.sleep(self.seconds)
        return self.model(x)


class FasterPlugin(OptimizationPlugin):
    """Strips the Sleepy wrapper: same outputs, much faster."""

    name = "faster"

    def apply(self, model, step):
        return copy.deepcopy(model.model)


class FastButWrongPlugin(OptimizationPlugin):
    name = "fast_wrong"

    def apply(self, model, step):
        return Scaled(copy.deepcopy(model.model), -1.0)


@pytest.fixture
def plugins_registry() -> Registry:
    """The built-ins plus the test plugins, passed explicitly to what needs a registry."""
    fresh = Registry()
    for plugin in builtin_specs() + (WrongPlugin, BrokenPlugin, IdentityPlugin, FasterPlugin, FastButWrongPlugin):
        fresh.register(plugin)
    return fresh


# ---- registry -------------------------------------------------------------------------------
def _plugin(**attrs):
    return type("Custom", (OptimizationPlugin,), {"name": "custom", "apply": lambda self, m, s: m, **attrs})


@dataclass
class NotFrozen:
    level: int = 1


@dataclass(frozen=True)
class NoDefault:
    level: int


@pytest.mark.parametrize("attrs, problem, fix", [
    ({"name": ""}, "is not a lower-case identifier", "set the class attribute name"),
    ({"name": "Bad Name"}, "is not a lower-case identifier", "set the class attribute name"),
    ({"name": "auto"}, "reserved", "choose a name other than"),
    ({"apply": OptimizationPlugin.apply}, "has no apply(model, step)", "implement apply"),
    ({"apply": lambda self: None}, "apply does not take (model, step)", "define apply(self, model, step)"),
    ({"options_class": dict}, "is not a dataclass", "@dataclass(frozen=True)"),
    ({"options_class": NotFrozen}, "is not frozen", "@dataclass(frozen=True)"),
    ({"options_class": NoDefault}, "have no default", "give every option a default"),
    ({"lossy": "yes"}, "lossy is 'yes', not a bool", "set lossy = True or False"),
])
def test_registration_checks_the_plugin_and_names_it_and_the_fix(attrs, problem, fix):
    with pytest.raises(PluginError) as info:
        Registry().register(_plugin(**attrs))
    message = str(info.value)
    assert problem in message.split("Fix:")[0] and fix in message.split("Fix:")[1]
    if attrs.get("name", "custom") == "custom":
        assert "'custom'" in message


def test_a_name_registers_once_unless_replaced():
    registry = Registry()
    registry.register(_plugin())
    with pytest.raises(PluginError, match="'custom': the name is already registered"):
        registry.register(_plugin())
    registry.register(_plugin(description="second"), replace=True)
    assert registry.get("custom").description == "second"


def test_builtin_options_match_their_config_sections():
    names = {plugin.name for plugin in builtin_specs()}
    assert names == {"channels_last", "compile", "torchscript", "quantize_dynamic", "bf16", "fp16", "onnxruntime",
                     "ipex", "tensorrt", "cuda_graphs", "int8", "openvino", "openvino_bf16", "openvino_int8",
                     "int8_dynamic"}
    for plugin in builtin_specs():
        if plugin.options_class is not None:
            assert builtin_options()[plugin.name] is plugin.options_class
            # the section named after the plugin is built with the plugin's own options class
            section = config(**{plugin.name: {}}).options_for(plugin.name, Registry())
            assert type(section) is plugin.options_class


def _fake_distribution(root, entry_points: str, module: str) -> None:
    dist = root / "fake_ts_perf_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-ts-perf-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[torchserve_perf.optimizations]\n{entry_points}")
    (root / "fake_ts_perf_plugin.py").write_text(textwrap.dedent(module))


def test_third_party_plugins_register_through_the_entry_point_group(tmp_path, monkeypatch, caplog):
    _fake_distribution(tmp_path, "halve = fake_ts_perf_plugin:Halve\nbroken = fake_ts_perf_plugin:Nope\n", """
        from dataclasses import dataclass
        from torchserve_perf.plugins.optimizations import OptimizationPlugin

        @dataclass(frozen=True)
        class HalveOptions:
            factor: float = 0.5

        class Halve(OptimizationPlugin):
            name = "halve"
            options_class = HalveOptions

            def apply(self, model, step):
                return model
    """)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert registry.load_entry_points() == ["halve"]
    assert registry.get("halve").options_class.__name__ == "HalveOptions"
    assert "broken" in registry.broken and "failed to register" in registry.unknown("broken")
    assert any("'broken'" in message and "could not be registered" in message for message in warnings_of(caplog))

    # Its options live under optimizations.plugins.<name>, validated with the plugin's own class.
    assert config(chain=["halve"], plugins={"halve": {"factor": 0.25}}).options_for("halve", registry).factor == 0.25
    with pytest.raises(HandlerConfigError, match=r"optimizations\.plugins\.halve\.factr: unknown key.*'factor'"):
        config(chain=["halve"], plugins={"halve": {"factr": 0.25}}).check(registry)


def test_setup_declares_the_entry_point_group():
    from pathlib import Path

    assert "torchserve_perf.optimizations" in (Path(__file__).resolve().parents[2] / "setup.py").read_text()


# ---- config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("handler, key, text", [
    ({"optimizations": ["compil"]}, "optimizations.chain[0]", "Did you mean 'compile'"),
    ({"optimizations": ["torchscript", "torchscript"]}, "optimizations.chain[1]", "appears twice"),
    ({"optimizations": ["auto", "compile"]}, "optimizations.chain", "mixes auto"),
    ({"optimizations": {"chain": ["compile"], "compile": {"mode": "fastest"}}}, "optimizations.compile.mode",
     "'fastest' is not one of"),
    ({"optimizations": {"compile": {"backend": "inductr"}}}, "optimizations.compile.backend", "not a torch.compile"),
    ({"optimizations": {"parity": {"rtoll": 1}}}, "optimizations.parity.rtoll", "did you mean 'rtol'"),
    ({"optimizations": {"parity": {"atol": -1}}}, "optimizations.parity.atol", "negative"),
    ({"optimizations": {"auto": {"budget_s": 0}}}, "optimizations.auto.budget_s", "not positive"),
    ({"optimizations": {"auto": {"candidates": ["torchscript+onnx"]}}}, "optimizations.auto.candidates[0]",
     "'onnx' is not a registered"),
    ({"optimizations": {"quantize_dynamic": {"layers": ["Conv2d"]}}}, "optimizations.quantize_dynamic.layers",
     "must be some of"),
])
def test_bad_optimization_settings_name_the_key_and_the_fix(handler, key, text, plugins_registry):
    with pytest.raises(HandlerConfigError) as info:
        load_settings({"handler": handler}, {}, registry=plugins_registry)
    message = str(info.value)
    assert f"handler.{key}:" in message and text in message and "Fix:" in message


def test_chain_from_yaml_shorthand_and_environment():
    assert load_settings({"handler": {"optimizations": ["channels_last", "compile"]}}, {}).optimizations.chain == \
        ("channels_last", "compile")
    assert load_settings({}, {"TS_PERF_OPTIMIZATIONS": "torchscript,onnxruntime"}).optimizations.chain == \
        ("torchscript", "onnxruntime")
    assert load_settings({"handler": {"optimizations": ["compile"]}}, {"TS_PERF_OPTIMIZATIONS": "none"}) \
        .optimizations.chain == ()


# ---- TorchServe's pt2: key ------------------------------------------------------------------
@pytest.mark.parametrize("pt2, chain, backend, mode", [
    ({"compile": {"enable": True, "backend": "inductor", "mode": "max-autotune"}}, ("compile",), "inductor",
     "max-autotune"),
    ({"compile": {"enable": True}}, ("compile",), "inductor", None),
    ({"compile": {"enable": False, "backend": "eager"}}, (), "eager", None),
    ("eager", ("compile",), "eager", None),                                 # the older string form
    ({"backend": "aot_eager", "mode": "reduce-overhead"}, ("compile",), "aot_eager", "reduce-overhead"),
])
def test_stock_pt2_key_implies_compile_with_its_options(pt2, chain, backend, mode):
    settings = load_settings({"pt2": pt2}, {})
    assert settings.optimizations.chain == chain
    options = settings.optimizations.options_for("compile", plugins_registry)
    assert (options.backend, options.mode) == (backend, mode)


def test_pt2_yields_to_an_explicit_chain_and_compile_section():
    settings = load_settings({"pt2": "eager", "handler": {"optimizations": ["torchscript"]}}, {})
    assert settings.optimizations.chain == ("torchscript",)
    settings = load_settings({"pt2": "eager", "handler": {"optimizations": {"compile": {"backend": "aot_eager"}}}}, {})
    assert settings.optimizations.options_for("compile", plugins_registry).backend == "aot_eager"


@pytest.mark.parametrize("pt2, text", [
    ({"export": {"aot_compile": True}}, "pt2.export"),
    ({"compile": {"enable": True, "modee": "default"}}, "pt2.compile.modee: unknown key (in TorchServe's"),
    (["inductor"], "neither a backend name nor a mapping"),
])
def test_pt2_values_we_cannot_honour_fail_with_the_fix(pt2, text):
    with pytest.raises(HandlerConfigError, match="Fix:") as info:
        load_settings({"pt2": pt2}, {})
    assert text in str(info.value)


def test_pt2_compiles_the_model_at_load(plugins_registry, caplog):
    settings = load_settings({"pt2": {"compile": {"enable": True, "backend": "eager"}}}, {})
    model = seeded(TinyMLP)
    result = optimize(model, settings.optimizations, MLP_EXAMPLE, runtime(), plugins_registry)
    assert result.applied == ["compile"] and not warnings_of(caplog)
    same_outputs(result, model, MLP_EXAMPLE)


# ---- the chain: parity and loud fallbacks ----------------------------------------------------
def test_empty_chain_serves_eager_and_needs_no_example(plugins_registry):
    model = seeded(TinyMLP)
    result = optimize(model, OptimizationConfig(), None, runtime(), plugins_registry)
    assert result.model is model and result.applied == [] and result.skipped == {}


def test_a_chain_without_an_example_input_says_to_set_input_shape(plugins_registry):
    with pytest.raises(HandlerConfigError) as info:
        optimize(seeded(TinyMLP), config(chain=["torchscript"]), None, runtime(), plugins_registry)
    assert "handler.tensor.input_shape" in str(info.value) and "Fix:" in str(info.value)


def test_a_mismatching_step_is_dropped_with_one_warning_and_the_chain_goes_on(plugins_registry, caplog):
    model = seeded(TinyMLP)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        result = optimize(model, config(chain=["wrong", "torchscript"]), MLP_EXAMPLE, runtime(), plugins_registry)
    assert result.applied == ["torchscript"]
    assert "output differs from eager" in result.skipped["wrong"]
    warnings = warnings_of(caplog)
    assert len(warnings) == 1 and "'wrong' dropped" in warnings[0] and "max |diff|" in warnings[0]
    same_outputs(result, model, MLP_EXAMPLE)
    assert set(result.step_seconds) == {"wrong", "torchscript"} and result.load_seconds > 0
    summary = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "optimizations for" in r.message]
    assert summary and "applied torchscript" in summary[0] and "dropped wrong" in summary[0]


def test_a_step_that_raises_is_dropped_and_the_worker_keeps_the_eager_model(plugins_registry, caplog):
    model = seeded(TinyMLP)
    result = optimize(model, config(chain=["broken"]), MLP_EXAMPLE, runtime(), plugins_registry)
    assert result.model is model and result.applied == []
    assert result.skipped["broken"] == "failed: RuntimeError: kernel exploded"
    assert len(warnings_of(caplog)) == 1


def test_tolerance_is_configurable(plugins_registry):
    model = seeded(TinyMLP)
    strict = optimize(model, config(chain=["quantize_dynamic"], parity={"lossy_rtol": 0, "lossy_atol": 0}),
                      MLP_EXAMPLE, runtime(), plugins_registry)
    assert strict.applied == [] and "loosen handler.optimizations.parity" in strict.skipped["quantize_dynamic"]
    relaxed = optimize(model, config(chain=["wrong"], parity={"rtol": 0.6}), MLP_EXAMPLE, runtime(), plugins_registry)
    assert relaxed.applied == ["wrong"]
    unchecked = optimize(model, config(chain=["wrong"], parity={"enabled": False}), MLP_EXAMPLE, runtime(), plugins_registry)
    assert unchecked.applied == ["wrong"]


def test_eager_failing_on_the_example_drops_everything_without_raising(caplog, plugins_registry):
    model = seeded(TinyMLP)
    result = optimize(model, config(chain=["torchscript"]), torch.randn(1, 7), runtime(), plugins_registry)
    assert result.model is model and "fails on the example input" in result.skipped["torchscript"]
    assert len(warnings_of(caplog)) == 1


def test_warmup_inputs_cover_batch_sizes_and_lengths():
    shapes = [tuple(x.shape) for x in warmup_inputs(CNN_EXAMPLE, OptimizationConfig().warmup, runtime(8))]
    assert shapes == [(1, 3, 8, 8), (8, 3, 8, 8)]
    shapes = [tuple(x.shape) for x in warmup_inputs(TOKENS_EXAMPLE, OptimizationConfig().warmup, runtime(4))]
    assert shapes == [(1, 8), (4, 8), (1, 16), (4, 16)]
    custom = config(warmup={"batch_sizes": [2, 3], "lengths": [8]}).warmup
    assert [tuple(x.shape) for x in warmup_inputs(TOKENS_EXAMPLE, custom, runtime())] == [(2, 8), (3, 8)]


def test_fallback_runs_eager_when_the_optimized_model_fails_at_serving_time(caplog):
    eager = seeded(TinyMLP)

    def fragile(x):
        if x.shape[0] > 4:
            raise RuntimeError("shape not compiled")
        return eager(x)

    runner = FallbackRunner(fragile, eager, ["compile"], limit=2)
    x = torch.randn(6, 16)
    with torch.inference_mode():
        assert torch.equal(runner(x), eager(x))
        runner(x)
        runner(x)  # past the limit: eager without trying again
    assert runner.failures == 2
    messages = warnings_of(caplog)
    assert len(messages) == 2 and "staying on eager" in messages[-1]


# ---- built-in plugins -----------------------------------------------------------------------
def test_channels_last_on_a_conv_model(plugins_registry):
    model = seeded(TinyCNN)
    result = optimize(model, config(chain=["channels_last"]), CNN_EXAMPLE, runtime(), plugins_registry)
    assert result.applied == ["channels_last"]
    assert result.model.optimized.model.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert model.conv.weight.is_contiguous()  # the eager model is left as it was
    same_outputs(result, model, CNN_EXAMPLE)
    skipped = optimize(seeded(TinyMLP), config(chain=["channels_last"]), MLP_EXAMPLE, runtime(), plugins_registry)
    assert "needs 4-D NCHW input" in skipped.skipped["channels_last"]


def test_torchscript_freezes_and_handles_variable_lengths(plugins_registry):
    model = seeded(TinyTokens)
    result = optimize(model, config(chain=["torchscript"]), TOKENS_EXAMPLE, runtime(), plugins_registry)
    assert result.applied == ["torchscript"]
    assert isinstance(result.model.optimized, torch.jit.ScriptModule)
    same_outputs(result, model, TOKENS_EXAMPLE)


def test_dynamic_int8_quantization(plugins_registry):
    model = seeded(TinyMLP)
    result = optimize(model, config(chain=["quantize_dynamic"]), MLP_EXAMPLE, runtime(), plugins_registry)
    assert result.applied == ["quantize_dynamic"]
    assert "quantized" in type(result.model.optimized.net[0]).__module__
    assert isinstance(model.net[0], nn.Linear)
    order = optimize(model, config(chain=["torchscript", "quantize_dynamic"]), MLP_EXAMPLE, runtime(), plugins_registry)
    assert "put quantize_dynamic before torchscript" in order.skipped["quantize_dynamic"]
    none = optimize(seeded(TinyCNN).conv, config(chain=["quantize_dynamic"]), CNN_EXAMPLE, runtime(), plugins_registry)
    assert "no Linear/LSTM layers" in none.skipped["quantize_dynamic"]


def test_onnxruntime_uses_the_worker_threads_and_dynamic_shapes(plugins_registry):
    pytest.importorskip("onnxruntime")
    model = seeded(TinyTokens)
    rt = Runtime(device=torch.device("cpu"), intra_op_threads=2, inter_op_threads=1, batch_size=4)
    result = optimize(model, config(chain=["onnxruntime"], onnxruntime={"exporter": "torchscript"}),
                      TOKENS_EXAMPLE, rt, plugins_registry)
    assert result.applied == ["onnxruntime"], result.skipped
    session = result.model.optimized.session
    assert session.get_session_options().intra_op_num_threads == 2
    assert session.get_session_options().inter_op_num_threads == 1
    same_outputs(result, model, TOKENS_EXAMPLE)
    with torch.inference_mode():  # a batch size and length it was not warmed up on
        x = torch.randint(1, 64, (3, 24))
        assert torch.allclose(result.model(x), model(x), atol=1e-5)
    assert result.model.failures == 0


@pytest.mark.parametrize("floor, ceiling, max_sessions, expected", [
    (1, 1, 3, (1,)),            # no elastic range: one session
    (1, 2, 3, (1, 2)),          # the 2-core demo host
    (2, 16, 3, (2, 8, 16)),     # static share 2 of 16 cores: 2, 4, 8, 16 thinned to 3
    (1, 16, 3, (1, 4, 16)),     # 1, 2, 4, 8, 16 thinned evenly
    (1, 16, 8, (1, 2, 4, 8, 16)),
    (3, 12, 8, (3, 4, 8, 12)),  # floor and ceiling kept even when not powers of two
    (1, 16, 1, (1,)),           # max_sessions 1: the static share only
    (4, 2, 3, (4,)),            # a ceiling under the floor is the floor
])
def test_onnxruntime_session_threads_table(floor, ceiling, max_sessions, expected):
    from torchserve_perf.plugins.optimizations.onnx_runtime import session_threads

    assert session_threads(floor, ceiling, max_sessions) == expected


def test_onnxruntime_follows_elastic_threads_with_a_session_per_count(plugins_registry, monkeypatch):
    pytest.importorskip("onnxruntime")
    model = seeded(TinyCNN)
    rt = Runtime(device=torch.device("cpu"), intra_op_threads=1, inter_op_threads=1, batch_size=2, intra_op_max=4)
    result = optimize(model, config(chain=["onnxruntime"], onnxruntime={"exporter": "torchscript"}),
                      CNN_EXAMPLE, rt, plugins_registry)
    assert result.applied == ["onnxruntime"], result.skipped
    runner = result.model.optimized
    counts = [count for count, _ in runner.by_threads]
    assert counts == [1, 2, 4]
    for count, session in runner.by_threads:
        assert session.get_session_options().intra_op_num_threads == count
    assert runner.session is runner.by_threads[0][1]  # the static share's session is the main one
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(x)
    for threads, session_threads in [(1, 1), (2, 2), (3, 2), (4, 4), (8, 4)]:
        chosen = runner.session_for(threads)
        assert chosen.get_session_options().intra_op_num_threads == session_threads
        used = []
        with monkeypatch.context() as patch:  # torch's count as elastic threads set it for this batch
            patch.setattr(torch, "get_num_threads", lambda threads=threads: threads)
            patch.setattr(chosen, "run", lambda *a, real=chosen.run, used=used: used.append(1) or real(*a), raising=False)
            assert torch.allclose(result.model(x), expected, atol=1e-5)
        assert used == [1]  # the batch ran on the session for this thread count
    one = optimize(model, config(chain=["onnxruntime"], onnxruntime={"exporter": "torchscript", "max_sessions": 1}),
                   CNN_EXAMPLE, rt, plugins_registry)
    assert one.model.optimized.by_threads == []


def test_onnxruntime_max_sessions_is_validated(plugins_registry):
    with pytest.raises(HandlerConfigError, match="max_sessions"):
        load_settings({"handler": {"optimizations": {"chain": ["onnxruntime"], "onnxruntime": {"max_sessions": 0}}}},
                      {}, registry=plugins_registry)


def test_onnxruntime_output_cannot_feed_a_module_plugin(plugins_registry):
    pytest.importorskip("onnxruntime")
    result = optimize(seeded(TinyMLP), config(chain=["onnxruntime", "torchscript"]), MLP_EXAMPLE, runtime(), plugins_registry)
    assert result.applied == ["onnxruntime"]
    assert "put torchscript before onnxruntime" in result.skipped["torchscript"]


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_half_precision_only_where_the_hardware_supports_it(plugins_registry, caplog, name):
    dtype = torch.bfloat16 if name == "bf16" else torch.float16
    unsupported = hardware_support(torch.device("cpu"), dtype)
    model = seeded(TinyMLP)
    result = optimize(model, config(chain=[name]), MLP_EXAMPLE, runtime(), plugins_registry)
    if unsupported:
        assert result.applied == [] and result.skipped[name] == unsupported
        assert "no native" in unsupported and "remove" in unsupported
        assert len(warnings_of(caplog)) == 1
    else:
        assert result.applied == [name]
    forced = optimize(model, config(chain=[name], **{name: {"force": True}}), MLP_EXAMPLE, runtime(), plugins_registry)
    assert forced.applied == [name], forced.skipped  # lossy tolerance admits half precision
    with torch.inference_mode():
        assert forced.model(MLP_EXAMPLE).dtype == torch.float32


@pytest.mark.parametrize("name, text", [("ipex", "intel_extension_for_pytorch"), ("tensorrt", "NVIDIA GPU")])
def test_missing_packages_or_hardware_are_reported_and_the_handler_continues(plugins_registry, caplog, name, text):
    if name == "ipex" and importlib.util.find_spec("intel_extension_for_pytorch") is not None:
        pytest.skip("IPEX is installed here")
    model = seeded(TinyMLP)
    result = optimize(model, config(chain=[name, "torchscript"]), MLP_EXAMPLE, runtime(), plugins_registry)
    assert result.applied == ["torchscript"] and text in result.skipped[name]
    assert "continuing without it" in result.skipped[name]
    assert len(warnings_of(caplog)) == 1


def test_compile_with_a_cheap_backend_warms_up_every_shape(plugins_registry):
    import torch._dynamo

    torch._dynamo.reset()
    model = seeded(TinyTokens)
    result = optimize(model, config(chain=["compile"], compile={"backend": "eager"}), TOKENS_EXAMPLE, runtime(), plugins_registry)
    assert result.applied == ["compile"], result.skipped
    same_outputs(result, model, TOKENS_EXAMPLE)


def test_workers_compile_one_at_a_time(tmp_path):
    """The second worker waits for the first, then finds its graphs in the shared cache."""
    import threading

    from torchserve_perf.plugins.optimizations.compile import compile_lock

    lock = str(tmp_path / "cache" / "ts_perf_compile_tiny.lock")
    holding, release, waited = threading.Event(), threading.Event(), []

    def first():
        with compile_lock(lock):
            holding.set()
            release.wait(5)

    thread = threading.Thread(target=first)
    thread.start()
    holding.wait(5)
    threading.Timer(0.3, release.set).start()
    with compile_lock(lock) as seconds:
        waited.append(seconds)
    thread.join()
    assert waited[0] >= 0.25


# ---- auto -----------------------------------------------------------------------------------
def test_auto_keeps_the_fastest_chain_that_passes_parity(plugins_registry, caplog):
    model = Sleepy(seeded(TinyMLP), 0.02).eval()
    cfg = config(chain=["auto"], auto={"candidates": ["identity", "fast_wrong", "faster"], "repeats": 3})
    result = optimize(model, cfg, MLP_EXAMPLE, runtime(), plugins_registry)
    assert result.applied == ["faster"]
    assert result.auto_reason.startswith("auto chose faster") and "fast_wrong: fast_wrong dropped" in \
        result.auto_reason
    assert "fast_wrong" in result.skipped and "auto" in result.step_seconds
    assert [m for m in warnings_of(caplog) if "fast_wrong" in m]
    same_outputs(result, model.model, MLP_EXAMPLE)


@pytest.mark.parametrize("keep_mb, applied", [(1024, ["faster"]), (0, [])])
def test_auto_times_its_candidates_again_in_turns(plugins_registry, monkeypatch, keep_mb, applied):
    """A burst of load while one candidate is timed alone (a server starting beside this one) must not
    decide the search: with keep_mb the candidates and eager are timed again in turns."""
    from torchserve_perf.plugins.optimizations import auto

    alone = auto.time_per_call
    # "faster" (a bare TinyMLP) is timed alone during someone else's burst: +0.5 s
    monkeypatch.setattr(auto, "time_per_call", lambda model, x, repeats: alone(model, x, repeats) + (
        0.5 if isinstance(model, TinyMLP) else 0.0))
    eager = Sleepy(seeded(TinyMLP), 0.02).eval()
    cfg = config(chain=["auto"], auto={"candidates": ["faster"], "repeats": 3, "keep_mb": keep_mb, "cache": False})
    result = optimize(eager, cfg, MLP_EXAMPLE, runtime(), plugins_registry)
    assert result.applied == applied, result.auto_reason


def test_auto_keeps_eager_when_nothing_is_faster_and_respects_the_budget(plugins_registry):
    model = seeded(TinyMLP)
    cfg = config(chain=["auto"], auto={"candidates": ["identity", "torchscript"], "min_speedup": 100,
                                       "repeats": 5})
    result = optimize(model, cfg, MLP_EXAMPLE, runtime(), plugins_registry)
    assert result.model is model and result.applied == []
    assert result.auto_reason.startswith("auto kept eager") and "below auto.min_speedup 100" in result.auto_reason
    budget = config(chain=["auto"], auto={"candidates": ["identity", "torchscript"], "budget_s": 1e-9})
    spent = optimize(model, budget, MLP_EXAMPLE, runtime(), plugins_registry)
    assert "budget was spent" in spent.auto_reason and spent.applied == []


def test_auto_default_candidates_skip_what_does_not_fit(plugins_registry):
    from torchserve_perf.plugins.optimizations.auto import candidates
    from torchserve_perf.plugins.optimizations.parity import Reference

    model = seeded(TinyMLP)
    cfg = config(chain=["auto"])
    reference = Reference.capture(model, warmup_inputs(MLP_EXAMPLE, cfg.warmup, runtime()))
    chains, left_out = candidates(model, cfg, reference, runtime(), plugins_registry)
    assert ("torchscript",) in chains and ("compile",) in chains
    assert "needs 4-D" in left_out["channels_last"]
    assert "allow_lossy" in left_out["quantize_dynamic"]
    assert "NVIDIA GPU" in left_out["tensorrt"]

