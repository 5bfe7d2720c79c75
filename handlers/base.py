"""PerfHandler: TorchServe's preprocess -> inference -> postprocess, composed with our plugins.

Subclasses implement ``decode`` (one request body -> a tensor whose first dimension counts its
rows, or a :class:`Decoded` carrying what postprocess needs later) and ``format_output`` (one
request's rows of output -> a JSON-able result). Each step takes a value and returns one
(handlers/batch.py): ``preprocess`` returns a :class:`Batch` (accepted requests, collated input,
rejected requests with their errors), ``inference`` an :class:`Inferred`, ``postprocess`` a
:class:`Served`. A batch that fails as a whole is retried one request at a time through the same
phases, so a bad request fails alone. Metrics and the profiler watch through observers
(handlers/observers.py) and can never fail a request. Open Inference Protocol (v2) requests are
read and answered per request (handlers/v2.py): ``decode_v2`` and ``format_v2``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, ClassVar, Optional, TypeVar

import torch
from ts.torch_handler.base_handler import BaseHandler

from torchserve_perf.handlers import v2
from torchserve_perf.handlers.batch import Batch, Decoded, Inferred, Served
from torchserve_perf.handlers.errors import RequestError
from torchserve_perf.handlers.loading import eval_mode, load_archived_model
from torchserve_perf.handlers.observers import BatchFinished, BatchStarted, Observers, PhaseEvent
from torchserve_perf.handlers.settings import HandlerSettings, load_settings
from torchserve_perf.handlers.validation import (allows_non_finite, json_safe, non_finite_count, non_finite_error,
                                                 safe_text)
from torchserve_perf.plugins import elastic, gpu_memory, host_defaults, threads
from torchserve_perf.plugins.decode_pool import DecodePool, Failure
from torchserve_perf.plugins.metrics import WorkerMetrics
from torchserve_perf.plugins.optimizations import auto_cache
from torchserve_perf.plugins.optimizations import OptimizationResult, Registry, Runtime, optimize, standard_registry
from torchserve_perf.plugins.profiler import BatchProfiler
from torchserve_perf.plugins.worker import WorkerIdentity

log = logging.getLogger(__name__)

PROFILE_HEADER = "x-torch-profile"
T = TypeVar("T")


class PerfHandler(BaseHandler):
    options_section: ClassVar[Optional[str]] = None
    options_class: ClassVar[Optional[type]] = None
    # v2: the input this handler reads (None: the request's only input) and the datatypes it takes (None: any).
    v2_input: ClassVar[Optional[str]] = None
    v2_datatypes: ClassVar[Optional[frozenset]] = None

    def __init__(self) -> None:
        super().__init__()
        self.settings: Optional[HandlerSettings] = None
        self.worker: Optional[WorkerIdentity] = None
        self.runner: Any = None
        self.observers = Observers()
        self.decode_pool = DecodePool(1)  # inline until initialize sizes it from the thread budget

    # ---- load -------------------------------------------------------------------------------
    def initialize(self, context: Any) -> None:
        self.context = context
        self.manifest = context.manifest
        # TorchServe's kservev2 envelope would hand us only a batch's first request: we speak v2 ourselves.
        self.envelope = v2.take_over_envelope(context, self.handle)
        registry = self.optimization_registry()
        self.settings = load_settings(context.model_yaml_config, os.environ, self.options_section,
                                      self.options_class, registry)
        self.worker = WorkerIdentity.from_context(context)
        self.device = self.select_device(context)
        self.thread_decision = self.apply_thread_policy()
        # Settings the archive leaves to TorchServe: say once what this host's defaults would be.
        host_defaults.log_if_unset(self.worker.name, context.model_yaml_config or {})
        self.elastic = self.start_elastic_threads()
        self.decode_pool = DecodePool.for_worker(self.settings.decode, self.thread_decision.intra_op,
                                                 int(context.system_properties.get("batch_size") or 1))
        gpu_memory.check_fits(self.device, context.system_properties["model_dir"], context.manifest)
        self.model = eval_mode(self.load_model(context))
        self.optimization = self.optimize_model(registry)
        self.runner = self.optimization.model
        self.metrics = WorkerMetrics(self.settings.metrics, self.worker, context.metrics)
        self.profiler = BatchProfiler(self.settings.profiler, self.worker, on_trace_written=self.metrics.trace_written)
        self.threads_observer = elastic.ElasticObserver(self.elastic, self.metrics.batch_threads)
        self.observers = Observers(self.make_observers())
        self.metrics.loaded(self.optimization, self.thread_decision)
        self.initialized = True

    def optimization_registry(self) -> Registry:
        """The optimization plugins this handler may use: built-ins and installed entry points.
        Override to add your own (``registry = super().optimization_registry(); registry.register(P)``)."""
        return standard_registry()

    def make_observers(self) -> list[Any]:
        """What watches each batch, in call order. Override to add an observer of your own."""
        # Elastic threads first: the batch's threads are set before anything else runs.
        return [self.threads_observer, self.profiler, self.metrics]

    def select_device(self, context: Any) -> torch.device:
        gpu_id = context.system_properties.get("gpu_id")
        if gpu_id is not None and torch.cuda.is_available():
            torch.cuda.set_device(int(gpu_id))
            return torch.device("cuda", int(gpu_id))
        return torch.device("cpu")

    def apply_thread_policy(self) -> threads.ThreadDecision:
        assert self.settings and self.worker
        decision = threads.decide(
            self.settings.threads,
            physical=threads.physical_cores(),
            cores=threads.allowed_cores(),
            workers=self.worker.workers,
            worker_index=self.worker.index,
            device=str(self.device),
        )
        decision = threads.apply(decision)
        # Once per worker; also says which copy of the package serves (bundled in the .mar or installed).
        log.info("%s thread policy: %s; handlers from %s", self.worker.name, decision.describe(),
                 os.path.dirname(os.path.abspath(__file__)))
        return decision

    def start_elastic_threads(self) -> Optional[elastic.ElasticThreads]:
        """Per batch, the cores the model's other workers leave idle (plugins/elastic.py); None when off."""
        assert self.settings and self.worker
        config = self.settings.threads
        plan = elastic.plan(elastic=config.elastic, intra_op_auto=config.intra_op == "auto",
                            pinned=bool(self.thread_decision.cores), device=str(self.device),
                            physical=threads.physical_cores(threads.allowed_cores()))
        log.info("%s %s", self.worker.name, plan.describe())
        return elastic.start(plan, self.worker.model_name, self.worker.model_version,
                             floor=self.thread_decision.intra_op, check_host=config.elastic_check_host)

    def load_model(self, context: Any) -> torch.nn.Module:
        return load_archived_model(context.system_properties["model_dir"], context.manifest, self.device)

    def example_input(self) -> Optional[torch.Tensor]:
        """A representative input with a leading batch dimension, for warm-up and parity checks."""
        raise NotImplementedError

    def optimize_model(self, registry: Registry) -> OptimizationResult:
        assert self.settings and self.worker
        runtime = Runtime(
            device=self.device,
            intra_op_threads=self.thread_decision.intra_op,
            inter_op_threads=self.thread_decision.inter_op,
            model_name=self.worker.model_name,
            batch_size=int(self.context.system_properties.get("batch_size") or 1),
            intra_op_max=self.elastic.cores if self.elastic is not None else 0,
            cache_dir=auto_cache.shared_dir(),  # auto's choice and compile caches, kept across restarts
        )
        example = self.example_input()  # None: the handler cannot make one (e.g. no tensor.input_shape)
        example = example.to(self.device) if example is not None else None
        return optimize(self.model, self.settings.optimizations, example, runtime, registry)

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
        return self.respond(served, context)

    def serve(self, data: list) -> Served:
        """preprocess -> inference -> postprocess; a batch that fails as a whole is retried one by one."""
        batch = self.phase("preprocess", len(data), lambda: self.preprocess(data))
        if batch.empty:
            return Served(batch.size, rejected=batch.rejected)
        try:
            inferred = self.phase("inference", len(batch.requests), lambda: self.inference(batch))
            return self.phase("postprocess", len(batch.requests), lambda: self.postprocess(inferred))
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
                inferred = self.phase("inference", 1, lambda: self.inference(alone), retry=True)
                served = served.merged(self.phase("postprocess", 1, lambda: self.postprocess(inferred), retry=True))
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
            except Exception:
                continue
            for key, value in headers.items():
                if str(key).lower() == PROFILE_HEADER and str(value).strip().lower() not in ("", "0", "false", "no", "off"):
                    return True
        return False

    def preprocess(self, data: list) -> Batch:
        """Decode each request; bad ones are set aside with their error, the rest collated."""
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
            request = v2.parse(body)
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
        if item.is_bytes:
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

    def inference(self, batch: Batch, *args: Any, **kwargs: Any) -> Inferred:
        with torch.inference_mode():
            return Inferred(batch, self.runner(batch.inputs, *args, **kwargs))

    def postprocess(self, inferred: Inferred) -> Served:
        output = inferred.output
        if isinstance(output, (tuple, list)):
            output = output[0]
        output = output.detach().float().cpu()
        batch = inferred.batch
        outputs: dict[int, Any] = {}
        rejected = dict(batch.rejected)
        check_finite = not allows_non_finite(self.settings.options if self.settings else None)
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
        return v2.response(self.worker.model_name if self.worker else "", self.manifest["model"].get("modelVersion"),
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
        responses = []
        for idx in range(served.size):
            error = served.rejected.get(idx)
            if error is not None:
                context.set_response_status(error.status, error.phrase, idx)
                responses.append(error.body())
            elif idx in served.outputs:
                responses.append(served.outputs[idx])
            else:  # cannot happen unless a step lost a request: answer it rather than drop it
                error = RequestError("the request was not processed", 500)
                context.set_response_status(error.status, error.phrase, idx)
                responses.append(error.body())
        if served.rejected:
            # Names the batch, so a rejected request can be told apart from a failed batch in the log.
            log.warning("%s batch of %d: served %d, rejected %s", self.worker.name if self.worker else "",
                        served.size, len(served.outputs), "; ".join(
                            f"request {i}: {e.status} {e.message}" for i, e in sorted(served.rejected.items())))
        return responses


def for_request(error: RequestError, request: Decoded) -> RequestError:
    """A v2 request's error is v2-shaped (``{"error": ...}``); others keep ours."""
    return v2.as_v2_error(error) if v2.META_KEY in request.meta else error


def model_error(exc: Exception) -> RequestError:
    """A request the model could not run alone: 422, with the model's complaint (shapes, dtypes)."""
    text = str(exc).strip()
    # safe_text: a model's own message may quote the values it refused; shapes and dtypes stay.
    message = safe_text(text.splitlines()[0]) if text else ""
    return RequestError(f"the model could not process this input: {type(exc).__name__}"
                        + (f": {message}" if message else ""), 422)


def request_body(row: Any) -> Any:
    """The payload TorchServe put in one batch row (form field, raw body or JSON)."""
    if isinstance(row, dict):
        for key in ("data", "body"):
            if row.get(key) is not None:
                return row[key]
        return None
    return row
