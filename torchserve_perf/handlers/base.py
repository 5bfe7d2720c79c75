"""PerfHandler: a TorchServe ``BaseHandler`` that serves each request of a batch on its own terms.

A batch runs in TorchServe's three phases. Ours read and answer each request on its own (a bad one
is rejected alone, the rest served), which TorchServe's whole-batch ``preprocess`` and
``postprocess`` cannot say, so those two steps have names of their own; ``inference`` keeps
TorchServe's meaning. Each step takes a value and returns one (handlers/batch.py):

- preprocess: ``read_batch(data)`` -> :class:`Batch` (accepted requests, their collated input,
  the rejected ones with their errors);
- inference: ``inference(model_input)`` -> the model's output, TorchServe's own meaning;
- postprocess: ``answer_batch(batch, output)`` -> :class:`Served` (a response or an error per request).

Subclasses implement ``decode`` (one request body -> a tensor whose first dimension counts its
rows, or a :class:`Decoded` carrying what the answer needs later) and ``format_output`` (one
request's rows of output -> a JSON-able result). TorchServe's ``preprocess`` and ``postprocess``
are never called, so a subclass that overrides them is refused at class definition.

A batch that fails as a whole is retried one request at a time through the same phases, so a bad
request fails alone. Metrics, the profiler and elastic threads watch through observers
(plugins/observers.py) and can never fail a request. Open Inference Protocol (v2) requests are
read and answered per request (handlers/v2.py): ``decode_v2`` and ``format_v2``.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any, Callable, ClassVar, Generic, Optional, TypeVar

import torch
from ts.torch_handler.base_handler import BaseHandler

from torchserve_perf import ts_compat
from torchserve_perf.handlers import eager_release, responses, transport, v2, worker_setup
from torchserve_perf.handlers.batch import Batch, Decoded, Served
from torchserve_perf.handlers.errors import RequestError
from torchserve_perf.handlers.loading import eval_mode, load_archived_model
from torchserve_perf.handlers.payloads import request_body
from torchserve_perf.handlers.responses import for_request, model_error
from torchserve_perf.handlers.settings import HandlerSettings, OptionsT, load_settings
from torchserve_perf.handlers.validation import (
    allows_non_finite,
    json_safe,
    non_finite_count,
    non_finite_error,
)
from torchserve_perf.plugins import elastic, gpu_memory, host_defaults, memory
from torchserve_perf.plugins.decode_pool import DecodePool, Failure
from torchserve_perf.plugins.metrics import WorkerMetrics
from torchserve_perf.plugins.observers import (
    BatchFinished,
    BatchObserver,
    BatchStarted,
    Observers,
    PhaseEvent,
    WorkerLoaded,
)
from torchserve_perf.plugins.optimizations import Registry, standard_registry
from torchserve_perf.plugins.profiler import BatchProfiler
from torchserve_perf.plugins.worker import WorkerIdentity

log = logging.getLogger(__name__)

PROFILE_HEADER = "x-torch-profile"
T = TypeVar("T")
# TorchServe's whole-batch steps, which PerfHandler never calls, and what to override instead.
NOT_CALLED = {
    "preprocess": "decode(body, idx) (one request body -> its rows; raise RequestError to reject it alone)",
    "postprocess": "format_output(output, request) (one request's rows of output -> its response)",
}


class PerfHandler(BaseHandler, Generic[OptionsT]):
    """Generic over the handler's own options: ``class ImageClassifierHandler(PerfHandler[ImageOptions])``
    gets ``self.settings.options`` as an ImageOptions (``PerfHandler[None]``: a handler without)."""

    # The handler's section under ``handler:`` in model-config.yaml and its frozen dataclass.
    options_section: ClassVar[Optional[str]] = None
    options_class: ClassVar[Optional[type]] = None
    # v2: the input this handler reads (None: the request's only input) and the datatypes it takes (None: any).
    v2_input: ClassVar[Optional[str]] = None
    v2_datatypes: ClassVar[Optional[frozenset]] = None

    # Set by initialize.
    settings: HandlerSettings[OptionsT]
    worker: WorkerIdentity
    runner: Any  # the optimized model, what inference runs
    metrics: WorkerMetrics
    profiler: BatchProfiler
    memory: memory.MemoryBreakdown  # what the worker's RSS held at the end of its load

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, instead in NOT_CALLED.items():
            if name in vars(cls):
                raise TypeError(f"{cls.__qualname__}.{name}: PerfHandler serves each request on its own and never "
                                f"calls TorchServe's whole-batch {name}; override {instead} instead "
                                "(docs/handlers.md), or subclass TorchServe's BaseHandler for its own template")

    def __init__(self) -> None:
        super().__init__()
        self.observers = Observers()
        self.decode_pool = DecodePool(1)  # inline until initialize sizes it from the thread budget

    # ---- load -------------------------------------------------------------------------------
    def initialize(self, context: Any) -> None:
        meter = memory.LoadMeter.start()  # RSS around each load step: the worker's memory breakdown
        self.context = context
        self.manifest = context.manifest
        # TorchServe's kservev2 envelope would hand us only a batch's first request: we speak v2 ourselves.
        self.envelope = ts_compat.take_over_envelope(context, self.handle)
        registry = self.optimization_registry()
        self.settings = load_settings(context.model_yaml_config, os.environ, self.options_section,
                                      self.options_class, registry)
        self.worker = WorkerIdentity.from_context(context)
        self.device = worker_setup.select_device(context)
        self.thread_decision = worker_setup.apply_thread_policy(self.settings.threads, self.worker, self.device)
        # Settings the archive leaves to TorchServe: say once what this host's defaults would be.
        host_defaults.log_if_unset(self.worker.name, context.model_yaml_config or {})
        self.elastic = worker_setup.start_elastic_threads(self.settings.threads, self.thread_decision, self.worker,
                                                          self.device)
        batch_size = int(context.system_properties.get("batch_size") or 1)
        self.decode_pool = DecodePool.for_worker(self.settings.decode, self.thread_decision.intra_op, batch_size)
        gpu_memory.check_fits(self.device, context.system_properties["model_dir"], context.manifest)
        meter.mark("worker setup")
        self.model = eval_mode(self.load_model(context))
        meter.mark("eager model")
        self.optimization = worker_setup.optimize_model(
            self.model, self.settings.optimizations, self.example_input(), self.device, self.thread_decision,
            self.worker, self.elastic, batch_size, registry)
        self.runner = self.optimization.model
        meter.mark("optimization", memory.reported_parts(self.runner))
        # The fallback and self.model read the eager model back from the archive if they ever need it.
        self.model = eager_release.release(self.runner, self.model, self.optimization.applied,
                                           functools.partial(self.reload_eager, context), self.worker.name)
        # A full collection costs about half a second: only worth it when the eager model was dropped.
        meter.mark("eager model released", collect=isinstance(self.model, eager_release.ReloadableEager))
        self.metrics = WorkerMetrics(self.settings.metrics, self.worker, context.metrics)
        self.profiler = BatchProfiler(self.settings.profiler, self.worker, on_trace_written=self.metrics.trace_written)
        self.threads_observer = elastic.ElasticObserver(self.elastic, self.metrics.batch_threads)
        self.observers = Observers(self.make_observers())
        meter.mark("metrics and profiler")
        self.memory = meter.finish()
        log.info("%s memory at load: %s", self.worker.name, self.memory.describe())
        self.observers.worker_loaded(WorkerLoaded(self.optimization, self.thread_decision, self.memory))
        self.initialized = True

    def optimization_registry(self) -> Registry:
        """The optimization plugins this handler may use: built-ins and installed entry points.
        Override to add your own (``registry = super().optimization_registry(); registry.register(P)``)."""
        return standard_registry()

    def make_observers(self) -> list[BatchObserver]:
        """What watches each batch, in call order. Override to add an observer of your own
        (a :class:`~torchserve_perf.plugins.observers.BatchObserver` subclass)."""
        # Elastic threads first: the batch's threads are set before anything else runs.
        return [self.threads_observer, self.profiler, self.metrics]

    def load_model(self, context: Any) -> torch.nn.Module:
        return load_archived_model(context.system_properties["model_dir"], context.manifest, self.device)

    def reload_eager(self, context: Any) -> Any:
        """The eager model loaded again, after it was released at load (handlers/eager_release.py)."""
        with torch.inference_mode(False):  # the fallback calls this from inside inference: load as at first
            return eval_mode(self.load_model(context))

    def example_input(self) -> Optional[torch.Tensor]:
        """A representative input with a leading batch dimension, for warm-up and parity checks."""
        raise NotImplementedError

    # ---- serve ------------------------------------------------------------------------------
    def handle(self, data: list, context: Any) -> list:
        started = time.perf_counter()
        self.context = context
        size = len(data)
        # The header only counts while profiling is on: skip reading every request's headers otherwise.
        requested = self.profiler.enabled and self.profile_requested(context, size)
        self.observers.batch_started(BatchStarted(size, requested))
        served, profiled = Served(size), False
        try:
            served = self.serve(data)
            profiled = self.profiler.recording
        finally:  # the observers see every batch end, even one broken by a defect of ours
            self.observers.batch_finished(BatchFinished(size, len(served.outputs), len(served.rejected),
                                                        time.perf_counter() - started, profiled))
        # gRPC drops the per-request status: answers fitted to the transport each request came by.
        return transport.fit_responses(self.respond(served, context), served.rejected, data, context,
                                       self.worker.model_name, self.manifest["model"].get("modelVersion"))

    def serve(self, data: list) -> Served:
        """preprocess -> inference -> postprocess; a batch that fails as a whole is retried one by one."""
        batch = self.phase("preprocess", len(data), lambda: self.read_batch(data))
        if batch.empty:
            return Served(batch.size, rejected=batch.rejected)
        try:
            output = self.phase("inference", len(batch.requests), lambda: self.inference(batch.inputs))
            return self.phase("postprocess", len(batch.requests), lambda: self.answer_batch(batch, output))
        except Exception:  # a request that decodes but breaks the model must not fail the others
            log.warning("batch of %d failed as a whole; retrying its requests one by one", len(batch.requests),
                        exc_info=True)
            return self.serve_one_by_one(batch)

    def serve_one_by_one(self, batch: Batch) -> Served:
        """Each accepted request alone, through the same inference and postprocess phases."""
        served = Served(batch.size, rejected=batch.rejected)
        for request in batch.requests:
            try:
                alone = Batch(batch.size, (request,), self.collate([request.tensor]).to(self.device))
                output = self.phase("inference", 1, functools.partial(self.inference, alone.inputs), retry=True)
                served = served.merged(self.phase("postprocess", 1, functools.partial(self.answer_batch, alone, output),
                                                  retry=True))
            except Exception as exc:
                served = served.merged(Served(batch.size, rejected={request.index: for_request(model_error(exc), request)}))
        return served

    def phase(self, name: str, size: int, step: Callable[[], T], retry: bool = False) -> T:
        """Run one step of the template, announced to the observers (metrics, profiler ranges)."""
        self.observers.phase_started(PhaseEvent(name, size, retry=retry))
        started = time.perf_counter()
        try:
            return step()
        finally:
            self.observers.phase_finished(PhaseEvent(name, size, time.perf_counter() - started, retry))

    def profile_requested(self, context: Any, size: int) -> bool:
        for idx in range(size):
            try:
                headers = context.get_all_request_header(idx) or {}
            except Exception:  # a row without headers (e.g. a gRPC request): it asks for nothing
                log.debug("no headers for request %d", idx, exc_info=True)
                continue
            for key, value in headers.items():
                if str(key).lower() == PROFILE_HEADER and str(value).strip().lower() not in ("", "0", "false", "no", "off"):
                    return True
        return False

    def read_batch(self, data: list) -> Batch:
        """The preprocess phase: decode each of TorchServe's rows; bad ones are set aside with their
        error, the rest collated onto the device."""
        accepted: list[Decoded] = []
        rejected: dict[int, RequestError] = {}
        for idx, decoded in enumerate(self.decode_all([request_body(row) for row in data])):
            if isinstance(decoded, Failure):
                exc = decoded.error  # its text may quote the request: name its type only
                rejected[idx] = exc if isinstance(exc, RequestError) else RequestError(
                    f"could not decode the request ({type(exc).__name__})")
                continue
            accepted.append(decoded if isinstance(decoded, Decoded) else Decoded(idx, decoded))
        if not accepted:
            return Batch(len(data), rejected=rejected)
        inputs = self.collate([r.tensor for r in accepted]).to(self.device)
        return Batch(len(data), tuple(accepted), inputs, rejected)

    def decode_all(self, bodies: list[Any]) -> list[Any]:
        """Every body decoded, in order (on the decode pool's threads when it has several);
        a body whose decode raised gets a :class:`Failure` in its place, so it fails alone."""
        return self.decode_pool.map(self.decode_request, bodies)

    def decode_request(self, body: Any, idx: int) -> torch.Tensor | Decoded:
        """A v2 request through ``decode_v2`` (its errors v2-shaped), any other body through ``decode``."""
        try:
            request = transport.as_sent(v2.parse(body), self.context, idx)  # BYTES as the client sent them
        except RequestError as exc:
            raise v2.as_v2_error(exc) from None
        if request is None:
            return self.decode(body, idx)
        try:
            return self.decode_v2(request, idx)
        except RequestError as exc:
            raise v2.as_v2_error(exc) from None
        except Exception as exc:  # its text may quote the request: name its type only
            raise v2.V2Error(f"could not decode the request ({type(exc).__name__})") from None

    def decode(self, body: Any, idx: int) -> torch.Tensor | Decoded:
        raise NotImplementedError

    def decode_v2(self, request: v2.V2Request, idx: int) -> Decoded:
        """A v2 request's input through the handler's own ``decode``: each BYTES element as a body
        (``v2_bytes``), a numeric tensor as a .npy body. The request rides along for ``format_v2``."""
        item = request.input(self.v2_input)
        if self.v2_datatypes is not None and item.datatype not in self.v2_datatypes:
            raise RequestError(f"input '{item.name}': this model takes {sorted(self.v2_datatypes)}, got {item.datatype}")
        if isinstance(item.data, tuple):  # BYTES: the elements
            if not item.data:
                raise RequestError(f"input '{item.name}' holds no elements")
            parts = [self.decode(self.v2_bytes(element), idx) for element in item.data]
            tensors = [p.tensor if isinstance(p, Decoded) else p for p in parts]
            return Decoded(idx, tensors[0] if len(tensors) == 1 else self.collate(tensors), {v2.META_KEY: request})
        decoded = self.decode(v2.npy_body(item.data), idx)
        if isinstance(decoded, Decoded):
            return Decoded(idx, decoded.tensor, {**decoded.meta, v2.META_KEY: request})
        return Decoded(idx, decoded, {v2.META_KEY: request})

    def v2_bytes(self, element: bytes) -> bytes:
        """One BYTES element as the body ``decode`` reads (the image handler takes base64 here)."""
        return element

    def collate(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(tensors, dim=0)

    def inference(self, model_input: Any, *args: Any, **kwargs: Any) -> Any:
        """The inference phase, as TorchServe means it: the model input (the collated rows) -> the model's
        output. An override from TorchServe's docs (``return self.model(model_input)``) works here."""
        with torch.inference_mode():
            return self.runner(model_input, *args, **kwargs)

    def answer_batch(self, batch: Batch, output: Any) -> Served:
        """The postprocess phase: the model's output split by each request's rows, one response each."""
        if isinstance(output, (tuple, list)):
            output = output[0]
        output = output.detach().float().cpu()
        outputs: dict[int, Any] = {}
        rejected = dict(batch.rejected)
        check_finite = not allows_non_finite(self.settings.options)
        for part, request in zip(torch.split(output, list(batch.rows), dim=0), batch.requests):
            if check_finite and (error := non_finite_error(part, "output")):  # NaN/Inf are not JSON: 422
                rejected[request.index] = for_request(error, request)
                continue
            try:
                outputs[request.index] = self.answer(part, request)
                if not check_finite and non_finite_count(part):  # allowed, and answered as null
                    outputs[request.index] = json_safe(outputs[request.index])
            except RequestError as exc:  # e.g. an output that cannot be answered as JSON
                rejected[request.index] = for_request(exc, request)
        return Served(batch.size, outputs, rejected)

    def answer(self, output: torch.Tensor, request: Decoded) -> Any:
        """One request's response: a v2 response for a v2 request, else ``format_output``'s."""
        v2_request = request.meta.get(v2.META_KEY)
        if v2_request is None:
            return self.format_output(output, request)
        return v2.response(self.worker.model_name, self.manifest["model"].get("modelVersion"),
                           v2_request.id or self.context.get_request_id(request.index),
                           self.format_v2(output, request), v2_request.outputs)

    def format_output(self, output: torch.Tensor, request: Decoded) -> Any:
        """One request's rows of output -> its JSON-able response."""
        return output.tolist()

    def format_v2(self, output: torch.Tensor, request: Decoded) -> list[v2.V2Output]:
        """One v2 request's rows of output -> its v2 outputs (default: the model's output as ``output``)."""
        return [v2.tensor_output("output", output)]

    def respond(self, served: Served, context: Any) -> list:
        """One response per request, in batch order; rejected requests get their own status."""
        return responses.respond(served, context, self.worker.name)
