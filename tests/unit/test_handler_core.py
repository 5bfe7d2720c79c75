"""The explicit handler core: the batch is a value, the retry runs through the same phases, observers
are typed and guarded once, TorchServe's step meanings are kept, and the optimization registry is
passed in (handlers/base.py, handlers/batch.py, plugins/observers.py)."""

from __future__ import annotations

import json
import logging
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import RequestContext, write_model_dir
from tests.handler_fixtures import TINY_MODEL, tiny_linear
from torchserve_perf.handlers.base import PerfHandler
from torchserve_perf.handlers.batch import Batch, Decoded, Served
from torchserve_perf.handlers.errors import RequestError
from torchserve_perf.handlers.tensor_handler import TensorHandler
from torchserve_perf.plugins.observers import (
    BatchFinished,
    BatchObserver,
    BatchStarted,
    Observers,
    PhaseEvent,
    WorkerLoaded,
)
from torchserve_perf.plugins.optimizations import OptimizationPlugin, Registry, standard_registry
from torchserve_perf.plugins.optimizations import registry as registry_module

GOOD = [1.0, 2.0, 3.0, 4.0]
BREAKS_MODEL = [1e9, 0.0, 0.0, 0.0]  # decodes, but the tiny model raises on it


class Recorder(BatchObserver):
    """An observer that keeps every event it sees."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def worker_loaded(self, event: WorkerLoaded) -> None:
        self.events.append(("worker_loaded", event))

    def batch_started(self, event: BatchStarted) -> None:
        self.events.append(("batch_started", event))

    def phase_started(self, event: PhaseEvent) -> None:
        self.events.append(("phase_started", event))

    def phase_finished(self, event: PhaseEvent) -> None:
        self.events.append(("phase_finished", event))

    def batch_finished(self, event: BatchFinished) -> None:
        self.events.append(("batch_finished", event))


class Exploding(BatchObserver):
    def __init__(self) -> None:
        self.told: list[tuple[str, str]] = []

    def phase_finished(self, event: PhaseEvent) -> None:
        raise RuntimeError("observer defect")

    def batch_finished(self, event: BatchFinished) -> None:
        raise ValueError("another observer defect")

    def hook_failed(self, hook: str, error: Exception) -> None:
        self.told.append((hook, type(error).__name__))


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
        def make_observers(self) -> list[BatchObserver]:
            return super().make_observers() + list(extra_observers)

    handler = Observed()
    handler.initialize(ctx.context)
    return handler, ctx


def run(handler: Any, ctx: RequestContext, bodies: list[Any]) -> tuple[list, list]:
    context = ctx.for_batch(size=len(bodies))
    outputs = handler.handle([{"body": json.dumps({"inputs": b}).encode() if isinstance(b, list) else b}
                              for b in bodies], context)
    return outputs, [context.get_response_status(i)[0] or 200 for i in range(len(bodies))]


def test_each_phase_returns_a_value(tmp_path):
    handler, _ = make_handler(tmp_path)
    batch = handler.read_batch([{"body": json.dumps({"inputs": GOOD}).encode()}, {"body": b"{broken"},
                                {"body": json.dumps({"inputs": [GOOD, GOOD]}).encode()}])
    assert isinstance(batch, Batch) and batch.size == 3
    assert batch.indices == (0, 2) and batch.rows == (1, 2) and tuple(batch.inputs.shape) == (3, 4)
    assert set(batch.rejected) == {1} and batch.rejected[1].status == 400
    assert batch.requests[0].meta == {"bare_row": True} and batch.requests[1].meta == {}
    output = handler.inference(batch.inputs)  # TorchServe's meaning: the model input -> the model's output
    assert isinstance(output, torch.Tensor) and tuple(output.shape) == (3, 3)
    served = handler.answer_batch(batch, output)
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
    exploding = Exploding()
    handler, ctx = make_handler(tmp_path, extra_observers=(exploding,))
    with caplog.at_level(logging.WARNING, logger="torchserve_perf.plugins.observers"):
        for _ in range(3):
            outputs, statuses = run(handler, ctx, [GOOD, GOOD])
            assert statuses == [200, 200] and len(outputs[0]) == 3
    records = [r for r in caplog.records if r.name == "torchserve_perf.plugins.observers"]
    messages = [r.getMessage() for r in records]
    assert len([m for m in messages if "phase_finished" in m]) == 1
    assert len([m for m in messages if "batch_finished" in m]) == 1
    assert all("Exploding" in m and "the request is still served" in m for m in messages)
    assert all(r.exc_info for r in records)  # with the traceback
    # Every failure is told to the observer, logged or not: 3 phases and 1 batch end, three times.
    assert exploding.told.count(("phase_finished", "RuntimeError")) == 9
    assert exploding.told.count(("batch_finished", "ValueError")) == 3


def test_observers_runner_calls_each_hook_in_order_and_counts_failures():
    recorder, partial = Recorder(), Exploding()
    runner = Observers([recorder, None, partial])
    runner.phase_started(PhaseEvent("inference", 2))
    runner.phase_finished(PhaseEvent("inference", 2, 0.5))
    assert [kind for kind, _ in recorder.events] == ["phase_started", "phase_finished"]
    assert runner.failures == {(id(partial), "phase_finished"): 1}
    assert partial.told == [("phase_finished", "RuntimeError")]


def test_an_observer_whose_failure_hook_raises_too_is_still_contained(caplog):
    class Worse(Exploding):
        def hook_failed(self, hook: str, error: Exception) -> None:
            raise OSError("cannot even clean up")

    worse, recorder = Worse(), Recorder()
    runner = Observers([worse, recorder])
    with caplog.at_level(logging.WARNING, logger="torchserve_perf.plugins.observers"):
        runner.batch_finished(BatchFinished(1, 1, 0, 0.1, False))
    assert runner.failures == {(id(worse), "batch_finished"): 1, (id(worse), "hook_failed"): 1}
    assert [kind for kind, _ in recorder.events] == ["batch_finished"]  # the next observer still runs


def test_observers_hear_the_worker_load_once(tmp_path):
    recorder = Recorder()
    handler, _ = make_handler(tmp_path, extra_observers=(recorder,))
    [(kind, event)] = recorder.events
    assert kind == "worker_loaded" and event == WorkerLoaded(handler.optimization, handler.thread_decision,
                                                                handler.memory)


def test_the_handler_types_its_observers():
    hooks = ("worker_loaded", "batch_started", "phase_started", "phase_finished", "batch_finished", "hook_failed")
    from torchserve_perf.plugins.elastic import ElasticObserver
    from torchserve_perf.plugins.metrics import WorkerMetrics
    from torchserve_perf.plugins.profiler import BatchProfiler

    for observer in (ElasticObserver, WorkerMetrics, BatchProfiler):
        assert issubclass(observer, BatchObserver) and all(callable(getattr(observer, h)) for h in hooks)


# ---- TorchServe's meanings ---------------------------------------------------------------------
def test_an_inference_override_from_torchserves_docs_works(tmp_path):
    class Doubled(TensorHandler):
        def inference(self, model_input, *args, **kwargs):  # as TorchServe's docs write it
            return self.model.forward(model_input) * 2

    handler, ctx = make_handler(tmp_path, handler_class=Doubled)
    plain, plain_ctx = make_handler(tmp_path / "plain")
    outputs, statuses = run(handler, ctx, [GOOD, BREAKS_MODEL, GOOD])
    expected, _ = run(plain, plain_ctx, [GOOD])
    assert statuses == [200, 422, 200]  # the one-by-one retry still runs through the override
    assert outputs[0] == pytest.approx([2 * v for v in expected[0]]) and outputs[2] == outputs[0]


@pytest.mark.parametrize("step, instead", [("preprocess", "decode(body, idx)"),
                                           ("postprocess", "format_output(output, request)")])
def test_overriding_a_step_perfhandler_never_calls_is_refused(step, instead):
    def torchserve_style(self, data):  # TorchServe's whole-batch meaning
        return data

    with pytest.raises(TypeError, match=rf"never calls TorchServe's whole-batch {step}; override "
                                        rf"{re.escape(instead)}"):
        type("FromTorchServeDocs", (TensorHandler,), {step: torchserve_style})
    with pytest.raises(TypeError, match=step):
        type("Direct", (PerfHandler,), {step: torchserve_style})
    # Inherited, they keep TorchServe's meaning (BaseHandler's own) for anyone who calls them.
    from ts.torch_handler.base_handler import BaseHandler

    assert getattr(TensorHandler, step) is getattr(BaseHandler, step)


def test_the_handler_is_generic_over_its_options(tmp_path):
    from torchserve_perf.handlers.options import TensorOptions

    handler, _ = make_handler(tmp_path)
    assert isinstance(handler.settings.options, TensorOptions) and handler.settings.options.input_shape == (4,)
    assert typing.get_args(TensorHandler.__orig_bases__[0]) == (TensorOptions,)


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
