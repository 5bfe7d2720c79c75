"""Optimizations on a real TorchServe: one applied and serving eager-identical results, one dropped
with a WARNING in the model log while requests are still served."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from torchserve_perf.tools.model_store import build_archive, default_specs, write_server_config

TEXTS = [
    "The service was quick and the staff were friendly.",
    "Is this thing on?",
    "Terrible. The order arrived late, cold, and the wrong size, and nobody answered the phone for an hour.",
    "ok",
    "Would you recommend the blue one or the red one for a long hike in the mountains next weekend?",
    "Great value.",
]


def text_spec():
    return next(spec for spec in default_specs() if spec.name == "text_classifier")


@pytest.fixture(scope="module")
def optimized_server(tmp_path_factory, torchserve_factory):
    """text_eager: no optimizations. text_opt: quantize_dynamic (made to fail parity: zero lossy
    tolerance) then torchscript (applied)."""
    store = tmp_path_factory.mktemp("optimizations_store")
    spec = text_spec()
    handler = dict(spec.model_config["handler"])
    build_archive(spec, store, name="text_eager", model_config=dict(spec.model_config))
    optimized = {**spec.model_config, "handler": {**handler, "optimizations": {
        "chain": ["quantize_dynamic", "torchscript"],
        "parity": {"lossy_rtol": 0.0, "lossy_atol": 0.0},
    }}}
    build_archive(spec, store, name="text_opt", model_config=optimized)
    write_server_config(store)
    return torchserve_factory(store, ready_models=["text_eager", "text_opt"])


def _predict_all(server, model: str) -> list[dict]:
    # Concurrent, so TorchServe batches requests of different lengths together.
    with ThreadPoolExecutor(max_workers=len(TEXTS)) as pool:
        responses = list(pool.map(lambda text: server.predict(model, text.encode()), TEXTS))
    for response in responses:
        assert response.status_code == 200, response.text
    return [response.json() for response in responses]


def test_applied_optimization_serves_the_eager_results(optimized_server):
    eager = _predict_all(optimized_server, "text_eager")
    optimized = _predict_all(optimized_server, "text_opt")
    for text, want, got in zip(TEXTS, eager, optimized):
        assert list(got) == list(want), text
        for label, score in want.items():
            assert got[label] == pytest.approx(score, abs=1e-4), text


def test_dropped_optimization_is_one_warning_in_the_model_log(optimized_server):
    assert optimized_server.predict("text_opt", b"still served after the drop").status_code == 200
    log = optimized_server.read_log("model_log.log")
    opt_lines = [line for line in log.splitlines() if "text_opt" in line]
    dropped = [line for line in opt_lines if "optimization 'quantize_dynamic' dropped" in line]
    assert len(dropped) == 1, "\n".join(opt_lines[-40:])
    assert re.search(r"\bWARN", dropped[0]), dropped[0]  # TorchServe files our stderr WARNINGs as WARN
    assert any("optimization 'torchscript' applied" in line for line in opt_lines)
    summary = [line for line in opt_lines if "optimizations for text_opt:" in line]
    assert summary and "applied torchscript" in summary[0] and "dropped quantize_dynamic" in summary[0]
    assert not any("optimization" in line and "dropped" in line for line in log.splitlines() if "text_eager" in line)
