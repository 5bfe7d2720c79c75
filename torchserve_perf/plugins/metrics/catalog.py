"""Every metric a worker reports: name, TorchServe metric type, unit and labels.

This table is the single source for the emitter and for the declarations in ``metrics.yaml``
(a test keeps the two in step). TorchServe matches label values to the declared dimension
names by position and appends ``Hostname`` itself, so each metric's own dimensions come
first and the three common ones (:data:`COMMON_DIMENSIONS`) last, in that order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]

PREFIX = "ts_perf_"
COMMON_DIMENSIONS = ("WorkerName", "ModelName", "Level")
LEVEL = "Model"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    unit: str  # word characters only: TorchServe's frontend parses "<name>.<unit>:<value>"
    help: str
    labels: tuple[str, ...] = ()  # this metric's own dimensions, before the common ones

    @property
    def dimensions(self) -> tuple[str, ...]:
        return self.labels + COMMON_DIMENSIONS


def _h(name: str, help: str, unit: str = "s") -> MetricSpec:
    return MetricSpec(PREFIX + name, "histogram", unit, help)


# Per batch (histograms: Prometheus buckets are TorchServe's fixed 0.005 .. 10).
PREPROCESS = _h("preprocess_seconds", "time to decode and collate one batch")
INFERENCE = _h("inference_seconds", "time in the model for one batch")
POSTPROCESS = _h("postprocess_seconds", "time to split and format one batch's outputs")
HANDLER = _h("handler_seconds", "time in the handler for one batch, end to end")
BATCH_SIZE = _h("batch_size", "requests per handled batch (_sum: requests, _count: batches)", unit="count")
BATCH_THREADS = _h("batch_threads", "intra-op threads each batch ran with (elastic threads change it per batch)",
                   unit="count")
PHASES = {"preprocess": PREPROCESS, "inference": INFERENCE, "postprocess": POSTPROCESS}

REJECTED = MetricSpec(PREFIX + "rejected_requests_total", "counter", "count",
                      "requests answered with a 4xx by the handler")
PROFILED = MetricSpec(PREFIX + "profiled_batches_total", "counter", "count",
                      "batches recorded by the Kineto profiler")
TRACES = MetricSpec(PREFIX + "traces_written_total", "counter", "count", "profiler trace files written")

# Sampled every few seconds by the worker's sampler thread.
RESIDENT_MEMORY = MetricSpec(PREFIX + "resident_memory_bytes", "gauge", "B", "worker resident set size")
CPU_PERCENT = MetricSpec(PREFIX + "cpu_percent", "gauge", "percent",
                         "worker CPU use since the last sample (100 = one core busy)")
INTRA_OP = MetricSpec(PREFIX + "intra_op_threads", "gauge", "count", "torch intra-op threads")
INTER_OP = MetricSpec(PREFIX + "inter_op_threads", "gauge", "count", "torch inter-op threads")
PINNED_CORES = MetricSpec(PREFIX + "pinned_cores", "gauge", "count",
                          "CPU cores the worker may run on; the Cores label lists them", labels=("Cores",))
GPU_UTILIZATION = MetricSpec(PREFIX + "gpu_utilization_percent", "gauge", "percent",
                             "NVML utilisation of the worker's GPU", labels=("DeviceId",))
GPU_MEMORY_USED = MetricSpec(PREFIX + "gpu_memory_used_bytes", "gauge", "B",
                             "NVML memory in use on the worker's GPU", labels=("DeviceId",))
GPU_MEMORY_TOTAL = MetricSpec(PREFIX + "gpu_memory_total_bytes", "gauge", "B",
                              "NVML memory of the worker's GPU", labels=("DeviceId",))

# Once, after the model is loaded.
LOAD_SECONDS = MetricSpec(PREFIX + "load_seconds", "gauge", "s", "model load and optimization time of the worker")
OPTIMIZATION = MetricSpec(PREFIX + "optimization_applied", "gauge", "count",
                          "1 per applied optimization, 0 per skipped one ('none' when the model runs eager)",
                          labels=("Optimization",))
OPTIMIZATION_SECONDS = MetricSpec(PREFIX + "optimization_step_seconds", "gauge", "s",
                                  "time each optimization step took at load", labels=("Optimization",))
OPTIMIZATION_AGREEMENT = MetricSpec(PREFIX + "optimization_agreement", "gauge", "ratio",
                                    "top-1 agreement with fp32 that a lossy optimization's accuracy gate measured "
                                    "on held-out samples (kept or refused)", labels=("Optimization",))
MEMORY_PART = MetricSpec(PREFIX + "load_memory_bytes", "gauge", "B",
                         "the worker's RSS at the end of its load, by part (what each load step added; "
                         "negative: released)", labels=("Part",))

ALL: tuple[MetricSpec, ...] = (
    PREPROCESS, INFERENCE, POSTPROCESS, HANDLER, BATCH_SIZE, BATCH_THREADS,
    REJECTED, PROFILED, TRACES,
    RESIDENT_MEMORY, CPU_PERCENT, INTRA_OP, INTER_OP, PINNED_CORES,
    GPU_UTILIZATION, GPU_MEMORY_USED, GPU_MEMORY_TOTAL,
    LOAD_SECONDS, OPTIMIZATION, OPTIMIZATION_SECONDS, OPTIMIZATION_AGREEMENT, MEMORY_PART,
)
GPU_ONLY = frozenset({GPU_UTILIZATION.name, GPU_MEMORY_USED.name, GPU_MEMORY_TOTAL.name})
# Reported only by a worker whose archive carries samples for a lossy optimization (its accuracy gate).
GATED_ONLY = frozenset({OPTIMIZATION_AGREEMENT.name})


def by_name() -> dict[str, MetricSpec]:
    return {spec.name: spec for spec in ALL}
