"""test_optimizations: the tests that start real processes (TorchServe, the archiver, load clients)."""

from __future__ import annotations

from tests.unit import test_optimizations
from tests.unit.test_optimizations import MLP_EXAMPLE, TinyMLP, config, seeded
from torchserve_perf.plugins.optimizations import Runtime, optimize

plugins_registry = test_optimizations.plugins_registry  # the fixture, found by pytest under this name


def test_compile_cache_is_shared_through_the_cache_dir(plugins_registry, tmp_path, monkeypatch):
    """A second worker compiling the same model loads the first one's graphs from the cache dir."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "unused"))  # restored after the test
    cache = tmp_path / "compile-cache"
    rt = Runtime(device=torch.device("cpu"), intra_op_threads=1, inter_op_threads=1, batch_size=2,
                 cache_dir=str(cache))
    model = seeded(TinyMLP)
    cfg = config(chain=["compile"], warmup={"batch_sizes": [2]})
    torch._dynamo.reset()
    counters.clear()
    first = optimize(model, cfg, MLP_EXAMPLE, rt, plugins_registry)
    assert first.applied == ["compile"], first.skipped
    assert counters["inductor"]["fxgraph_cache_miss"] >= 1 and any(cache.rglob("*"))
    torch._dynamo.reset()  # as a fresh worker process would start
    counters.clear()
    second = optimize(model, cfg, MLP_EXAMPLE, rt, plugins_registry)
    assert second.applied == ["compile"]
    assert counters["inductor"]["fxgraph_cache_hit"] >= 1 and counters["inductor"]["fxgraph_cache_miss"] == 0
    torch._dynamo.reset()

