"""The explicit handler core: the batch is a value, the retry runs through the same phases, observers
are guarded, and the optimization registry is passed in (handlers/batch.py, handlers/observers.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from torchserve_perf.handlers.batch import Batch, Decoded, Inferred, Served
from torchserve_perf.handlers.errors import RequestError
from torchserve_perf.handlers.observers import BatchFinished, Observers, PhaseEvent
from torchserve_perf.handlers.tensor_handler import TensorHandler
from torchserve_perf.plugins.optimizations import OptimizationPlugin, Registry, standard_registry
from torchserve_perf.plugins.optimizations import registry as registry_module
from tests.conftest import RequestContext, write_model_dir
from tests.handler_fixtures import TINY_MODEL, tiny_linear

GOOD = [1.0, 2.0, 3.0, 4.0]
BREAKS_MODEL = [1e9, 0.0, 0.0, 0.0]  # decodes, but the tiny model raises on it


class Recorder:
    """An observer that keeps every event it sees."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def batch_started(self, event: Any) -> None:
        self.events.append(("batch_started", event))

    def phase_started(self, event: Any) -> None:
        self.events.append(("phase_started", event))

    def phase_finished(self, event: Any) -> None:
        self.events.append(("phase_finished", event))

    def batch_finished(self, event: Any) -> None:
        self.events.append(("batch_finished", event))


class Exploding:
    def phase_finished(self, event: Any) -> None:
        raise RuntimeError("observer defect")

    def batch_finished(self, event: Any) -> None:
        raise ValueError("another observer defect")


def make_handler(tmp_path: Path, handler_class: type = TensorHandler, handler_config: dict | None = None,
                 extra_observers: tuple = ()) -> tuple[Any, RequestContext]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    model_file = tmp_path / "tiny_model.py"
    model_file.write_text(TINY_MODEL)
    model = torch.nn.Module()
    model.linear = tiny_linear()
    manifest = write_model_dir(tmp_path / "model", model_file, model)
    config = {"tensor": {"input_shape": [4]}, **(handler_config or {})}
    ctx = RequestContext(tmp_path / "model", manifest, {"handler": config})

    class Observed(handler_class):  # type: ignore[misc, valid-type]
        def make_observers(self) -> list[Any]:
            return super().make_observers() + list(extra_observers)

    handler = Observed()
    handler.initialize(ctx.context)
    return handler, ctx


def run(handler: Any, ctx: RequestContext, bodies: list[Any]) -> tuple[list, list]:
    context = ctx.for_batch(size=len(bodies))
    outputs = handler.handle([{"body": json.dumps({"inputs": b}).encode() if isinstance(b, list) else b}
                              for b in bodies], context)
    return outputs, [context.get_response_status(i)[0] or 200 for i in range(len(bodies))]


def test_preprocess_returns_the_batch_as_a_value(tmp_path):
    handler, _ = make_handler(tmp_path)
    batch = handler.preprocess([{"body": json.dumps({"inputs": GOOD}).encode()}, {"body": b"{broken"},
                                {"body": json.dumps({"inputs": [GOOD, GOOD]}).encode()}])
    assert isinstance(batch, Batch) and batch.size == 3
    assert batch.indices == (0, 2) and batch.rows == (1, 2) and tuple(batch.inputs.shape) == (3, 4)
    assert set(batch.rejected) == {1} and batch.rejected[1].status == 400
    assert batch.requests[0].meta == {"bare_row": True} and batch.requests[1].meta == {}
    inferred = handler.inference(batch)
    assert isinstance(inferred, Inferred) and inferred.batch is batch and tuple(inferred.output.shape) == (3, 3)
    served = handler.postprocess(inferred)
    assert isinstance(served, Served) and set(served.outputs) == {0, 2} and set(served.rejected) == {1}
    assert len(served.outputs[0]) == 3 and len(served.outputs[2]) == 2  # a bare row comes back bare


def test_no_per_batch_state_is_left_on_the_handler(tmp_path):
    handler, ctx = make_handler(tmp_path)
    before = set(vars(handler))
    run(handler, ctx, [GOOD, b"{broken", BREAKS_MODEL])
    assert set(vars(handler)) - before <= {"context"}  # BaseHandler's convention; nothing batch-shaped


def test_the_one_by_one_retry_runs_through_the_same_phases(tmp_path):
    recorder = Recorder()
    handler, ctx = make_handler(tmp_path, extra_observers=(recorder,))
    outputs, statuses = run(handler, ctx, [GOOD, BREAKS_MODEL, GOOD])
    assert statuses == [200, 422, 200]
    assert "the model could not process this input" in outputs[1]["error"]["message"]
    finished = [e for kind, e in recorder.events if kind == "phase_finished"]
    # The whole batch: preprocess, then inference fails; then each request alone: inference (+ postprocess).
    assert [(e.name, e.size, e.retry) for e in finished] == [
        ("preprocess", 3, False), ("inference", 3, False),
        ("inference", 1, True), ("postprocess", 1, True),
        ("inference", 1, True),
        ("inference", 1, True), ("postprocess", 1, True),
    ]
    assert all(e.seconds >= 0 for e in finished)
    end = [e for kind, e in recorder.events if kind == "batch_finished"]
    assert end == [BatchFinished(3, 2, 1, end[0].seconds, False)]
    starts = [e.name for kind, e in recorder.events if kind == "phase_started"]
    assert starts == [e.name for e in finished]  # every phase announced is closed, failed ones included


def test_retry_time_reaches_the_metrics(tmp_path, monkeypatch):
    handler, ctx = make_handler(tmp_path)
    seen: list[tuple[str, float]] = []
    monkeypatch.setattr(handler.metrics, "phase", lambda name, seconds: seen.append((name, seconds)))
    run(handler, ctx, [GOOD, BREAKS_MODEL])
    assert [name for name, _ in seen] == ["preprocess", "inference", "inference", "postprocess", "inference"]


def test_a_raising_observer_is_logged_once_and_never_fails_a_request(tmp_path, caplog):
    handler, ctx = make_handler(tmp_path, extra_observers=(Exploding(),))
    with caplog.at_level(logging.WARNING, logger="torchserve_perf.handlers.observers"):
        for _ in range(3):
            outputs, statuses = run(handler, ctx, [GOOD, GOOD])
            assert statuses == [200, 200] and len(outputs[0]) == 3
    messages = [r.getMessage() for r in caplog.records if r.name == "torchserve_perf.handlers.observers"]
    assert len([m for m in messages if "phase_finished" in m]) == 1
    assert len([m for m in messages if "batch_finished" in m]) == 1
    assert all("Exploding" in m for m in messages)


def test_observers_runner_calls_only_the_hooks_an_observer_has():
    recorder, partial = Recorder(), Exploding()
    runner = Observers([recorder, None, partial])
    runner.phase_started(PhaseEvent("inference", 2))
    runner.phase_finished(PhaseEvent("inference", 2, 0.5))
    assert [kind for kind, _ in recorder.events] == ["phase_started", "phase_finished"]
    assert runner.failures == {(id(partial), "phase_finished"): 1}


def test_a_format_error_rejects_that_request_alone(tmp_path):
    class Picky(TensorHandler):
        def format_output(self, output: torch.Tensor, request: Decoded) -> Any:
            if request.index == 1:
                raise RequestError("this output cannot be answered", 422)
            return super().format_output(output, request)

    handler, ctx = make_handler(tmp_path, handler_class=Picky)
    outputs, statuses = run(handler, ctx, [GOOD, GOOD, GOOD])
    assert statuses == [200, 422, 200] and outputs[1]["error"]["message"] == "this output cannot be answered"


# ---- the optimization registry is an argument ------------------------------------------------
class Doubling(OptimizationPlugin):
    name = "doubling_for_tests"
    description = "multiplies outputs by 1 (a no-op that is only in this test's registry)"

    def apply(self, model: Any, step: Any) -> Any:
        return model


def test_the_handler_passes_its_own_registry(tmp_path):
    class WithPlugin(TensorHandler):
        def optimization_registry(self) -> Registry:
            registry = super().optimization_registry()
            registry.register(Doubling)
            return registry

    handler, ctx = make_handler(tmp_path, handler_class=WithPlugin,
                                handler_config={"optimizations": ["doubling_for_tests"]})
    assert handler.optimization.applied == ["doubling_for_tests"]
    assert run(handler, ctx, [GOOD])[1] == [200]
    # The same config on a handler whose registry lacks the plugin fails at load, naming the fix.
    from torchserve_perf.plugins.config import HandlerConfigError

    with pytest.raises(HandlerConfigError, match=r"optimizations\.chain\[0\].*doubling_for_tests"):
        make_handler(tmp_path / "plain", handler_config={"optimizations": ["doubling_for_tests"]})


def test_there_is_no_process_wide_registry():
    assert not hasattr(registry_module, "default_registry") and not hasattr(registry_module, "_DEFAULT")
    first, second = standard_registry(), standard_registry()
    first.register(Doubling)
    assert "doubling_for_tests" in first and "doubling_for_tests" not in second
