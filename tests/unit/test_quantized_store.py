"""Quantized models built once: carried in the archive (archive --calibration), else cached per host;
fp32's gate references stored beside them; auto trying the gated candidates first when asked."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from tests.unit.test_optimizations import MLP_EXAMPLE, FasterPlugin, Sleepy, TinyMLP, config, runtime, seeded
from torchserve_perf.plugins.optimizations import Registry, optimize
from torchserve_perf.plugins.optimizations.auto_cache import model_digest
from torchserve_perf.plugins.optimizations.builtin import builtin_specs
from torchserve_perf.plugins.optimizations.calibration import CalibratedOptions, load, reference_scores, save
from torchserve_perf.plugins.optimizations.interface import OptimizationPlugin, StepContext
from torchserve_perf.plugins.optimizations.quantized_store import ARCHIVE_DIR, QuantizedStore
from torchserve_perf.tools.archive.prequantize import int8_plugins


@dataclass
class Calls:
    built: int = 0
    read: int = 0


def _store(tmp_path, calls: Calls, suffixes=(".a", ".b")):
    store = QuantizedStore("plug", "k1", suffixes, str(tmp_path / "cache"))

    def build() -> str:
        calls.built += 1
        return "built"

    def read(path) -> str:
        calls.read += 1
        return path.read_text()

    def write(value: str, path) -> None:
        for suffix in suffixes:
            path.with_suffix(suffix).write_text(f"{value} {suffix}")

    return store, build, read, write


def test_built_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = Calls()
    store, build, read, write = _store(tmp_path, calls)
    assert store.get(build, read, write) == "built"
    assert store.get(build, read, write) == "built .a"  # the first suffix's file is the one read
    assert (calls.built, calls.read) == (1, 1)
    assert sorted(p.name for p in (tmp_path / "cache" / "plug").iterdir()) == ["k1.a", "k1.b", "k1.lock"]


@pytest.mark.parametrize("archived, expected", [
    (("k1.a", "k1.b"), "archived"),   # the archive's artefact wins over building
    (("k1.a",), "built"),             # one file of two: incomplete, not used
    (("k2.a", "k2.b"), "built"),      # another key (other weights, versions, settings): not used
])
def test_the_archives_artefact_is_used_only_when_complete_and_its_key_matches(tmp_path, monkeypatch, archived,
                                                                              expected):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / ARCHIVE_DIR / "plug"
    folder.mkdir(parents=True)
    for name in archived:
        (folder / name).write_text("archived")
    calls = Calls()
    store, build, read, write = _store(tmp_path, calls)
    assert store.get(build, read, write) == expected


def test_without_a_cache_dir_it_builds_at_every_call(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = Calls()
    store, build, read, write = _store(tmp_path, calls)
    store = QuantizedStore(store.plugin, store.key, store.suffixes, None)
    store.get(build, read, write)
    store.get(build, read, write)
    assert calls.built == 2


@pytest.mark.parametrize("optimizations, expected", [
    ({"chain": ["auto"], "auto": {"allow": ["int8", "openvino_int8"]}}, ("openvino_int8", "int8")),
    ({"chain": ["auto"], "auto": {"candidates": ["int8", "onnxruntime"]}}, ("int8",)),
    ({"chain": ["auto"]}, ()),
    ({"chain": ["int8"]}, ("int8",)),
    ({"chain": ["onnxruntime"]}, ()),
    ({}, ()),
])
def test_int8_plugins_table(optimizations, expected):
    assert int8_plugins({"handler": {"optimizations": optimizations}}) == expected


def test_model_digest_is_remembered_until_a_weight_changes():
    model = nn.Linear(4, 2)
    first = model_digest(model)
    assert model_digest(model) == first
    with torch.no_grad():
        model.weight.add_(1.0)  # in place: the version counter moves
    assert model_digest(model) != first
    assert model_digest(nn.Linear(4, 2)) != model_digest(model)


def test_reference_scores_are_run_once_and_then_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = nn.Linear(4, 3).eval()
    samples_file = save(torch.randn(16, 4, generator=torch.Generator().manual_seed(0)), tmp_path / "cal.pt")
    samples = load(samples_file, 4, torch.zeros(1, 4))
    calls = []

    def counted(x):
        calls.append(x.shape[0])
        return model(x)

    # Serving batches of 2: the gate (and so the references) runs 2 rows per call.
    step = StepContext(runtime=runtime(), options=CalibratedOptions(holdout_every=4),
                       inputs=(torch.zeros(1, 4), torch.zeros(2, 4)), example=torch.zeros(2, 4))
    first = reference_scores(counted, model_digest(model), samples_file, samples, step, str(tmp_path / "cache"))
    again = reference_scores(counted, model_digest(model), samples_file, samples, step, str(tmp_path / "cache"))
    assert calls == [2, 2] and torch.equal(first, again)
    assert torch.allclose(first, model(samples.holdout).detach())


# ---- auto.gated_first ------------------------------------------------------------------------
class GatedPlugin(OptimizationPlugin):
    """Stands for int8: judges its own accuracy (here it always passes) and is fast."""

    name = "gated_fast"
    lossy = True
    gated = True

    def apply(self, model, step):
        import copy

        return copy.deepcopy(model.model)


class RefusedPlugin(GatedPlugin):
    name = "gated_refused"

    def apply(self, model, step):
        from torchserve_perf.plugins.optimizations.interface import Unavailable

        raise Unavailable("accuracy gate failed: top-1 agreement 0.5")


def _registry() -> Registry:
    registry = Registry()
    for plugin in builtin_specs() + (FasterPlugin, GatedPlugin, RefusedPlugin):
        registry.register(plugin)
    return registry


@pytest.mark.parametrize("gated, gated_first, chosen, untimed", [
    ("gated_fast", True, "gated_fast", True),       # passed its gate: the lossless one is not timed
    ("gated_fast", False, None, False),             # off: every candidate is timed, the fastest kept
    ("gated_refused", True, "faster", False),       # refused: the lossless candidates are the fallback
])
def test_gated_first(gated, gated_first, chosen, untimed):
    model = Sleepy(seeded(TinyMLP), 0.01).eval()
    cfg = config(chain=["auto"], auto={"candidates": ["faster", gated], "allow": [gated], "cache": False,
                                       "gated_first": gated_first, "repeats": 2})
    result = optimize(model, cfg, MLP_EXAMPLE, runtime(), _registry())
    if chosen:
        assert result.applied == [chosen], result.auto_reason
    else:
        assert result.applied and result.applied[0] in ("faster", "gated_fast")
    assert ("faster: not timed: a gated candidate passed" in result.auto_reason) is untimed
