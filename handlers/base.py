"""PerfHandler: TorchServe's preprocess -> inference -> postprocess, composed with our plugins.

Subclasses implement ``decode`` (one request body -> a tensor whose first dimension counts its
rows) and ``format_output`` (one request's rows of output -> a JSON-able result). The base
collates the batch into one tensor, runs it, splits the output back per request, and gives each
bad request its own 4xx without failing the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any, ClassVar, Iterator, Optional

import torch
from ts.torch_handler.base_handler import BaseHandler

from torchserve_perf.handlers.errors import RequestError
from torchserve_perf.handlers.loading import eval_mode, load_archived_model
from torchserve_perf.handlers.settings import HandlerSettings, load_settings
from torchserve_perf.plugins import threads
from torchserve_perf.plugins.metrics import WorkerMetrics
from torchserve_perf.plugins.optimizations import OptimizationResult, Runtime, optimize
from torchserve_perf.plugins.profiler import BatchProfiler
from torchserve_perf.plugins.worker import WorkerIdentity

log = logging.getLogger(__name__)

PROFILE_HEADER = "x-torch-profile"


class PerfHandler(BaseHandler):
    options_section: ClassVar[Optional[str]] = None
    options_class: ClassVar[Optional[type]] = None

    def __init__(self) -> None:
        super().__init__()
        self.settings: Optional[HandlerSettings] = None
        self.worker: Optional[WorkerIdentity] = None
        self.runner: Any = None
        self._counts: list[int] = []
        self._rejected: dict[int, RequestError] = {}
        self._accepted: list[int] = []
        self._tensors: list[torch.Tensor] = []

    # ---- load -------------------------------------------------------------------------------
    def initialize(self, context: Any) -> None:
        self.context = context
        self.manifest = context.manifest
        self.settings = load_settings(context.model_yaml_config, os.environ, self.options_section, self.options_class)
        self.worker = WorkerIdentity.from_context(context)
        self.device = self.select_device(context)
        self.thread_decision = self.apply_thread_policy()
        self.model = eval_mode(self.load_model(context))
        self.optimization = self.optimize_model()
        self.runner = self.optimization.model
        self.metrics = WorkerMetrics(self.settings.metrics, self.worker, context.metrics)
        self.profiler = BatchProfiler(self.settings.profiler, self.worker, on_trace_written=self.metrics.trace_written)
        self.metrics.loaded(self.optimization, self.thread_decision)
        self.initialized = True

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

    def load_model(self, context: Any) -> torch.nn.Module:
        return load_archived_model(context.system_properties["model_dir"], context.manifest, self.device)

    def example_input(self) -> Optional[torch.Tensor]:
        """A representative input with a leading batch dimension, for warm-up and parity checks."""
        raise NotImplementedError

    def optimize_model(self) -> OptimizationResult:
        assert self.settings and self.worker
        runtime = Runtime(
            device=self.device,
            intra_op_threads=self.thread_decision.intra_op,
            inter_op_threads=self.thread_decision.inter_op,
            model_name=self.worker.model_name,
            batch_size=int(self.context.system_properties.get("batch_size") or 1),
        )
        example = self.example_input()  # None: the handler cannot make one (e.g. no tensor.input_shape)
        example = example.to(self.device) if example is not None else None
        return optimize(self.model, self.settings.optimizations, example, runtime)

    # ---- serve ------------------------------------------------------------------------------
    def handle(self, data: list, context: Any) -> list:
        started = time.perf_counter()
        self.context = context
        # The header only counts while profiling is on: skip reading every request's headers otherwise.
        force = self.profiler.enabled and self.profile_requested(context, len(data))
        with self.profiler.batch(len(data), force=force) as recorded:
            outputs = self._run_batch(data)
        self.metrics.profiled(recorded)
        self.metrics.batch(len(data), time.perf_counter() - started)
        return self._responses(len(data), outputs)

    def _run_batch(self, data: list) -> list:
        with self.phase("preprocess", len(data)):
            inputs = self.preprocess(data)
        if inputs is None:
            return []
        try:
            with self.phase("inference", len(self._accepted)):
                raw = self.inference(inputs)
            with self.phase("postprocess", len(self._accepted)):
                return self.postprocess(raw)
        except Exception:  # a request that decodes but breaks the model must not fail the others
            log.warning("batch of %d failed as a whole; retrying its requests one by one", len(self._accepted),
                        exc_info=True)
            return self._run_one_by_one()

    def _run_one_by_one(self) -> list:
        outputs, served = [], []
        for idx, tensor in list(zip(self._accepted, self._tensors)):
            self._accepted, self._counts = [idx], [tensor.shape[0]]
            try:
                outputs.extend(self.postprocess(self.inference(self.collate([tensor]).to(self.device))))
                served.append(idx)
            except Exception as exc:
                self._rejected[idx] = RequestError(f"the model could not process this input: {exc}", 422)
        self._accepted = served
        return outputs

    @contextlib.contextmanager
    def phase(self, name: str, batch_size: int) -> Iterator[None]:
        started = time.perf_counter()
        # The profiler's range: record_function's args string never reaches Kineto's JSON, so the
        # profiler keeps the batch size and writes it into the trace itself.
        with self.profiler.annotate(name, batch_size):
            yield
        self.metrics.phase(name, time.perf_counter() - started)

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

    def preprocess(self, data: list) -> Optional[torch.Tensor]:
        """Decode each request; bad ones are set aside with their error, the rest collated."""
        self._rejected, self._accepted, self._tensors = {}, [], []
        tensors = self._tensors
        for idx, row in enumerate(data):
            try:
                tensor = self.decode(request_body(row), idx)
            except RequestError as exc:
                self._rejected[idx] = exc
                continue
            except Exception as exc:
                self._rejected[idx] = RequestError(f"could not decode the request: {type(exc).__name__}: {exc}")
                continue
            self._accepted.append(idx)
            tensors.append(tensor)
        if not tensors:
            return None
        self._counts = [t.shape[0] for t in tensors]
        return self.collate(tensors).to(self.device)

    def decode(self, body: Any, idx: int) -> torch.Tensor:
        raise NotImplementedError

    def collate(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(tensors, dim=0)

    def inference(self, data: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.inference_mode():
            return self.runner(data, *args, **kwargs)

    def postprocess(self, data: torch.Tensor) -> list:
        if isinstance(data, (tuple, list)):
            data = data[0]
        data = data.detach().float().cpu()
        parts = torch.split(data, self._counts, dim=0)
        return [self.format_output(part, idx) for part, idx in zip(parts, self._accepted)]

    def format_output(self, output: torch.Tensor, idx: int) -> Any:
        """One request's rows of output -> its JSON-able response; ``idx`` is its place in the batch."""
        return output.tolist()

    def _responses(self, size: int, outputs: list) -> list:
        by_index = dict(zip(self._accepted, outputs))
        responses = []
        for idx in range(size):
            if idx in self._rejected:
                error = self._rejected[idx]
                self.context.set_response_status(error.status, error.phrase, idx)
                responses.append(error.body())
            else:
                responses.append(by_index.get(idx))
        if self._rejected:
            # Names the batch, so a rejected request can be told apart from a failed batch in the log.
            log.warning("%s batch of %d: served %d, rejected %s", self.worker.name if self.worker else "", size,
                        len(self._accepted), "; ".join(f"request {i}: {e.status} {e.message}"
                                                       for i, e in sorted(self._rejected.items())))
        self.metrics.rejected(len(self._rejected))
        return responses


def request_body(row: Any) -> Any:
    """The payload TorchServe put in one batch row (form field, raw body or JSON)."""
    if isinstance(row, dict):
        for key in ("data", "body"):
            if row.get(key) is not None:
                return row[key]
        return None
    return row
