"""Serving settings derived from the host when the user sets none.

:func:`host_defaults` is pure: physical cores, GPUs, how many models share the host, and the
model's latency for one item (when measured) -> workers, batch size, max batch delay, threads.

The rules, and why:
- CPU: a worker per physical core of the model's share of the host (cores / models), one intra-op
  thread each when all are busy (the performance guide's split). Elastic threads
  (plugins/elastic.py) let a lone busy worker use every core, so many workers cost nothing at
  one client.
- GPU: ``number_of_gpu`` = GPUs / models (the guide's rule); a worker per core of the model's
  share (decode and resize run on the CPU and keep the GPU fed), batch 16.
- Batch size: a batch should take at most ~``BATCH_BUDGET_MS`` on one thread, so a request that
  arrives behind it does not wait long; 2 when the latency is unknown (the best region of the
  2-core tuner runs for ResNet-18), at most ``MAX_BATCH``.
- Max batch delay: a lone request must not wait for batch-mates. Under load batches fill from the
  queue without waiting, so the delay only needs to cover a client's turnaround: 5% of the
  latency, at least ``MIN_DELAY_MS`` and at most ``MAX_DELAY_MS``; ``MIN_DELAY_MS`` when the
  latency is unknown. Never 0: TorchServe 0.12 reads a model-config ``maxBatchDelay: 0`` as unset
  and waits its default 100 ms (ModelManager keeps only values > 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

BATCH_BUDGET_MS = 100.0
MAX_BATCH = 8
GPU_BATCH = 16
MAX_DELAY_MS = 5
MIN_DELAY_MS = 1  # the smallest delay TorchServe honours (0 means its default, 100 ms)
UNKNOWN_LATENCY_BATCH = 2


@dataclass(frozen=True)
class HostSettings:
    workers: int
    batch_size: int
    max_batch_delay_ms: int
    intra_op: int  # per worker when every worker is busy (elastic threads use more when they are not)
    number_of_gpu: int  # server-wide config.properties setting; 0 on a CPU host
    reason: str

    def model_config(self) -> dict[str, Any]:
        """The model-config.yaml keys TorchServe's frontend reads."""
        return {"minWorkers": self.workers, "maxWorkers": self.workers, "batchSize": self.batch_size,
                "maxBatchDelay": self.max_batch_delay_ms}


def host_defaults(cores: int, gpus: int = 0, models: int = 1, latency_ms: Optional[float] = None) -> HostSettings:
    """Settings for one model on a host with ``cores`` physical cores and ``gpus`` GPUs. Pure."""
    cores, gpus, models = max(1, int(cores)), max(0, int(gpus)), max(1, int(models))
    share = max(1, cores // models)
    workers = share
    if gpus:
        number_of_gpu = max(1, gpus // models)
        batch = GPU_BATCH
    else:
        number_of_gpu = 0
        if latency_ms is None or latency_ms <= 0:
            batch = UNKNOWN_LATENCY_BATCH
        else:
            batch = int(max(1, min(MAX_BATCH, BATCH_BUDGET_MS // latency_ms)))
    delay = MIN_DELAY_MS
    if latency_ms is not None and latency_ms > 0:
        delay = int(max(MIN_DELAY_MS, min(MAX_DELAY_MS, round(0.05 * latency_ms))))
    intra = max(1, share // workers)
    latency = "unknown latency" if latency_ms is None else f"{latency_ms:g} ms per item"
    gpu_note = f", {number_of_gpu} of {gpus} GPUs" if gpus else ""
    reason = f"{cores} physical cores / {models} model(s){gpu_note}, {latency}"
    return HostSettings(workers=workers, batch_size=batch, max_batch_delay_ms=delay, intra_op=intra,
                        number_of_gpu=number_of_gpu, reason=reason)


FRONTEND_KEYS = ("minWorkers", "maxWorkers", "batchSize", "maxBatchDelay")

def auto_optimizations() -> dict[str, Any]:
    """The ``handler: optimizations:`` section our archives write (a fresh dict each call).

    auto within 30 s at load, once per host (its choice is cached), among the chains the built-in
    plugins mark ``in_archives``: lossless ones that follow elastic threads. Not compile: on CPU it
    costs tens of seconds per cold worker. On CUDA the GPU default chain runs instead
    (plugins/optimizations/gpu_defaults.py)."""
    from torchserve_perf.plugins.optimizations.builtin import archive_candidates

    return {"chain": ["auto"], "auto": {"budget_s": 30, "candidates": list(archive_candidates())}}


def fill_model_config(model_config: Mapping[str, Any], settings: HostSettings) -> dict[str, Any]:
    """``model_config`` with the host's values for the frontend keys the user left out."""
    derived = settings.model_config()
    filled = dict(model_config)
    for key in FRONTEND_KEYS:
        if key not in filled:
            filled[key] = derived[key]
    return filled


def detect(models: int = 1, latency_ms: Optional[float] = None) -> HostSettings:
    """:func:`host_defaults` for this machine (physical cores this process may use, visible GPUs)."""
    from torchserve_perf.plugins.threads import allowed_cores, physical_cores
    from torchserve_perf.plugins.worker import _gpu_count

    return host_defaults(physical_cores(allowed_cores()), _gpu_count(), models, latency_ms)


def log_if_unset(worker: str, model_yaml_config: Mapping[str, Any]) -> Optional[HostSettings]:
    """At load: when model-config leaves the frontend's keys out, TorchServe uses its own defaults
    (a worker per CPU, batch 1, 100 ms); the worker cannot change them, so it says what this host's
    would be and how to get them."""
    missing = [key for key in FRONTEND_KEYS if key not in model_yaml_config]
    if not missing:
        return None
    settings = detect()
    derived = settings.model_config()
    import logging

    logging.getLogger(__name__).info(
        "%s: model-config sets no %s, so TorchServe's defaults apply; this host's would be %s (%s). "
        "Archive with `torchserve-perf archive` or add them to model-config.yaml", worker, ", ".join(missing),
        ", ".join(f"{k}: {derived[k]}" for k in missing), settings.reason)
    return settings
