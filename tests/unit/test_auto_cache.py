"""auto's choice cache: decided once per model and host, reused by other workers and restarts."""

import dataclasses
import json
import time

import torch

from tests.unit import test_optimizations
from tests.unit.test_optimizations import MLP_EXAMPLE, Sleepy, TinyCNN, TinyMLP, config, runtime, seeded
from torchserve_perf.plugins.optimizations import optimize
from torchserve_perf.plugins.optimizations.auto_cache import choice_key, model_digest

CANDIDATES = {"candidates": ["faster"], "repeats": 3}
plugins_registry = test_optimizations.plugins_registry  # the fixture, found by pytest under this name


def cached_runtime(tmp_path, **changes):
    return dataclasses.replace(runtime(), cache_dir=str(tmp_path / "cache"), **changes)


def test_the_first_load_searches_and_a_restart_reuses_the_choice(tmp_path, plugins_registry):
    model = Sleepy(seeded(TinyMLP), 0.02).eval()
    cfg = config(chain=["auto"], auto=CANDIDATES)
    started = time.perf_counter()
    first = optimize(model, cfg, MLP_EXAMPLE, cached_runtime(tmp_path), plugins_registry)
    cold = time.perf_counter() - started
    assert first.applied == ["faster"] and first.auto_reason.startswith("auto chose faster")
    files = list((tmp_path / "cache" / "auto").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["chain"] == ["faster"]

    started = time.perf_counter()
    again = optimize(model, cfg, MLP_EXAMPLE, cached_runtime(tmp_path), plugins_registry)  # a restarted worker
    warm = time.perf_counter() - started
    assert again.applied == ["faster"] and again.auto_reason.startswith("auto reused its cached choice, faster")
    assert "First decided as: auto chose faster" in again.auto_reason
    assert warm < cold  # no candidate timed: the sleepy eager model is not run 2 x repeats times
    out = again.model(MLP_EXAMPLE)
    assert torch.allclose(out, model.model(MLP_EXAMPLE), atol=1e-6)


def test_what_changes_the_key(tmp_path):
    a, b = seeded(TinyMLP), seeded(TinyMLP)
    assert model_digest(a) == model_digest(b)
    assert model_digest(seeded(TinyCNN)) == model_digest(seeded(TinyCNN))  # BatchNorm's 0-dim buffer
    assert model_digest(seeded(TinyCNN)) != model_digest(a)
    base = dict(shape=(4, 16), runtime=runtime(), settings={"budget_s": 60})
    key = choice_key(a, **base)
    assert key == choice_key(b, **base)
    with torch.no_grad():
        b.net[0].weight[0, 0] += 1
    assert choice_key(b, **base) != key                                     # other weights
    assert choice_key(a, **{**base, "runtime": dataclasses.replace(runtime(), intra_op_threads=2)}) != key
    assert choice_key(a, **{**base, "shape": (8, 16)}) != key
    assert choice_key(a, **{**base, "settings": {"budget_s": 30}}) != key


def test_a_stale_or_broken_cache_means_a_new_search(tmp_path, plugins_registry):
    model = Sleepy(seeded(TinyMLP), 0.02).eval()
    cfg = config(chain=["auto"], auto=CANDIDATES)
    optimize(model, cfg, MLP_EXAMPLE, cached_runtime(tmp_path), plugins_registry)
    path = next((tmp_path / "cache" / "auto").glob("*.json"))
    path.write_text(json.dumps({"chain": ["fast_wrong"], "reason": "old"}))  # no longer passes parity
    result = optimize(model, cfg, MLP_EXAMPLE, cached_runtime(tmp_path), plugins_registry)
    assert result.applied == ["faster"] and result.auto_reason.startswith("auto chose faster")
    path.write_text("{not json")
    assert optimize(model, cfg, MLP_EXAMPLE, cached_runtime(tmp_path), plugins_registry).auto_reason.startswith(
        "auto chose")
    off = config(chain=["auto"], auto={**CANDIDATES, "cache": False})
    path.write_text(json.dumps({"chain": ["identity"], "reason": "old"}))
    assert optimize(model, off, MLP_EXAMPLE, cached_runtime(tmp_path), plugins_registry).applied == ["faster"]


def test_cache_settings_from_model_config_and_env():
    from torchserve_perf.handlers.settings import load_settings

    assert load_settings({}, {}).optimizations.auto.cache is True
    raw = {"handler": {"optimizations": {"chain": ["auto"], "auto": {"cache": False}}}}
    assert load_settings(raw, {}).optimizations.auto.cache is False
    env = load_settings({"handler": {"optimizations": ["auto"]}}, {"TS_PERF_CACHE_DIR": "/tmp/x"})
    assert env.optimizations.auto.cache_dir == "/tmp/x" and env.optimizations.chain == ("auto",)

