"""WorkerMetrics: what the base handler reports, per worker, through TorchServe's metrics API."""

from __future__ import annotations

import logging
from typing import Any, Optional

from torchserve_perf.plugins.memory import MemoryBreakdown, metric_label
from torchserve_perf.plugins.metrics import catalog
from torchserve_perf.plugins.metrics.config import MetricsConfig
from torchserve_perf.plugins.metrics.emitter import Emitter, label, seconds
from torchserve_perf.plugins.metrics.gpu import NvmlProbe
from torchserve_perf.plugins.metrics.sampler import ProcessProbe, Sampler, describe_cores
from torchserve_perf.plugins.observers import BatchFinished, BatchObserver, PhaseEvent, WorkerLoaded
from torchserve_perf.plugins.worker import WorkerIdentity

log = logging.getLogger(__name__)

class WorkerMetrics(BatchObserver):
    """Per-worker histograms, counters and sampled gauges, labelled with TorchServe's worker name.

    ``cache`` is the worker's ``context.metrics``. With metrics off, or no usable cache, every
    method is a no-op. As an observer it is called through the handler's guarded runner
    (plugins/observers.py), so a metrics failure never reaches a request.
    """

    def __init__(self, config: MetricsConfig, worker: WorkerIdentity, cache: Any) -> None:
        self.config = config
        self.worker = worker
        self._emitter: Optional[Emitter] = None
        self._sampler: Optional[Sampler] = None
        self._process: Optional[ProcessProbe] = None
        self._gpu: Optional[NvmlProbe] = None
        if not config.enabled:
            log.info("%s: metrics off (handler.metrics.enabled / TS_PERF_METRICS)", worker.name)
            return
        if cache is None:
            log.warning("%s: no TorchServe metrics cache in the context; metrics off", worker.name)
            return
        try:
            emitter = Emitter(cache, worker.name, worker.model_name)
        except Exception:
            log.warning("%s: could not set up metrics; metrics off", worker.name, exc_info=True)
            return
        self._emitter = emitter if emitter.active else None

    @property
    def enabled(self) -> bool:
        return self._emitter is not None

    def _emit(self, spec: catalog.MetricSpec, value: float, *labels: str) -> None:
        if self._emitter is not None:  # metrics off: nothing to emit to
            self._emitter.emit(spec, value, *labels)

    # ---- per batch ----------------------------------------------------------------------------
    def phase(self, name: str, seconds_taken: float) -> None:
        spec = catalog.PHASES.get(name)
        if spec is not None:
            self._emit(spec, seconds(seconds_taken))

    def batch(self, size: int, seconds_taken: float) -> None:
        self._emit(catalog.HANDLER, seconds(seconds_taken))
        self._emit(catalog.BATCH_SIZE, int(size))

    def rejected(self, count: int) -> None:
        if count > 0:
            self._emit(catalog.REJECTED, int(count))

    def profiled(self, recorded: bool) -> None:
        if recorded:
            self._emit(catalog.PROFILED, 1)

    # ---- as a batch observer (plugins/observers.py) --------------------------------------------
    def worker_loaded(self, event: WorkerLoaded) -> None:
        self.loaded(event.optimization, event.threads)
        if event.memory is not None:
            self.memory_at_load(event.memory)

    def phase_finished(self, event: PhaseEvent) -> None:
        self.phase(event.name, event.seconds)

    def batch_finished(self, event: BatchFinished) -> None:
        self.profiled(event.profiled)
        self.batch(event.size, event.seconds)
        self.rejected(event.rejected)

    def batch_threads(self, threads: int) -> None:
        """Intra-op threads the batch ran with (elastic threads change it per batch)."""
        self._emit(catalog.BATCH_THREADS, int(threads))

    def trace_written(self, path: Any) -> None:
        self._emit(catalog.TRACES, 1)

    # ---- once, after load ---------------------------------------------------------------------
    def loaded(self, optimization: Any, threads: Any) -> None:
        if not self.enabled:
            return
        self._emit(catalog.LOAD_SECONDS, seconds(getattr(optimization, "load_seconds", 0.0) or 0.0))
        applied = list(getattr(optimization, "applied", None) or [])
        skipped = dict(getattr(optimization, "skipped", None) or {})
        for name in applied:
            self._emit(catalog.OPTIMIZATION, 1, label(name))
        for name in skipped:
            if name not in applied:
                self._emit(catalog.OPTIMIZATION, 0, label(name))
        if not applied:
            self._emit(catalog.OPTIMIZATION, 1, "none")
        steps = dict(getattr(optimization, "step_seconds", None) or {})
        for name, taken in steps.items():
            self._emit(catalog.OPTIMIZATION_SECONDS, seconds(taken), label(name))
        if not applied and not steps:
            self._emit(catalog.OPTIMIZATION_SECONDS, 0.0, "none")
        for name, values in dict(getattr(optimization, "measured", None) or {}).items():
            self._emit(catalog.OPTIMIZATION_AGREEMENT, float(values.get("top1_agreement", 0.0)), label(name))
        self._emit(catalog.INTER_OP, int(getattr(threads, "inter_op", 0) or 0))
        # Counters start at 0 so their series exist (and rate() works) before the first event.
        for spec in (catalog.REJECTED, catalog.PROFILED, catalog.TRACES):
            self._emit(spec, 0)
        self._start_sampling()

    def memory_at_load(self, breakdown: MemoryBreakdown) -> None:
        """The worker's RSS at load by part (plugins/memory.py), one gauge series per part."""
        for name, size in breakdown.parts:
            self._emit(catalog.MEMORY_PART, int(size), metric_label(name))

    def _start_sampling(self) -> None:
        if self.config.sample_interval_s <= 0 or self._sampler is not None:
            return
        self._process = ProcessProbe()
        if self.config.gpu and self.worker.gpu_id is not None:
            self._gpu = NvmlProbe(self.worker.gpu_id)
        self.sample()  # gauges are on the endpoint as soon as the worker is READY
        self._sampler = Sampler(self.config.sample_interval_s, self.sample, name=f"ts-perf-metrics-{self.worker.name}")
        self._sampler.start()

    # ---- sampled ------------------------------------------------------------------------------
    def sample(self) -> None:
        """One sample of the resource gauges (the sampler thread calls this every interval)."""
        if self._process is not None:
            resources = self._process.sample()
            self._emit(catalog.RESIDENT_MEMORY, resources.resident_bytes)
            self._emit(catalog.CPU_PERCENT, round(resources.cpu_percent, 2))
            self._emit(catalog.INTRA_OP, resources.intra_op_threads)
            self._emit(catalog.PINNED_CORES, len(resources.cores), describe_cores(resources.cores))
        if self._gpu is not None:
            gpu = self._gpu.sample()
            if gpu is not None:
                self._emit(catalog.GPU_UTILIZATION, gpu.utilization_percent, gpu.device_id)
                self._emit(catalog.GPU_MEMORY_USED, gpu.memory_used_bytes, gpu.device_id)
                self._emit(catalog.GPU_MEMORY_TOTAL, gpu.memory_total_bytes, gpu.device_id)

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
        if self._gpu is not None:
            self._gpu.close()
