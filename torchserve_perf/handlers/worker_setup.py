"""What a worker sets up once, at load, from its settings: the device, the thread policy, elastic
threads and the optimized model. Each step takes values and returns one; the handler keeps them."""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import torch

from torchserve_perf.plugins import elastic, threads
from torchserve_perf.plugins.optimizations import (
    OptimizationConfig,
    OptimizationResult,
    Registry,
    Runtime,
    auto_cache,
    optimize,
)
from torchserve_perf.plugins.worker import WorkerIdentity

log = logging.getLogger(__name__)


def select_device(context: Any) -> torch.device:
    """The GPU TorchServe gave this worker (``gpu_id``), else the CPU."""
    gpu_id = context.system_properties.get("gpu_id")
    if gpu_id is not None and torch.cuda.is_available():
        torch.cuda.set_device(int(gpu_id))
        return torch.device("cuda", int(gpu_id))
    return torch.device("cpu")


def apply_thread_policy(config: threads.ThreadConfig, worker: WorkerIdentity,
                        device: torch.device) -> threads.ThreadDecision:
    decision = threads.decide(config, physical=threads.physical_cores(), cores=threads.allowed_cores(),
                              workers=worker.workers, worker_index=worker.index, device=str(device))
    decision = threads.apply(decision)
    # Once per worker; also says which copy of the package serves (bundled in the .mar or installed).
    log.info("%s thread policy: %s; handlers from %s", worker.name, decision.describe(),
             os.path.dirname(os.path.abspath(__file__)))
    return decision


def start_elastic_threads(config: threads.ThreadConfig, decision: threads.ThreadDecision, worker: WorkerIdentity,
                          device: torch.device) -> Optional[elastic.ElasticThreads]:
    """Per batch, the cores the model's other workers leave idle (plugins/elastic.py); None when off."""
    plan = elastic.plan(elastic=config.elastic, intra_op_auto=config.intra_op == "auto", pinned=bool(decision.cores),
                        device=str(device), physical=threads.physical_cores(threads.allowed_cores()))
    log.info("%s %s", worker.name, plan.describe())
    return elastic.start(plan, worker.model_name, worker.model_version, floor=decision.intra_op,
                         check_host=config.elastic_check_host)


def optimize_model(model: torch.nn.Module, config: OptimizationConfig, example: Optional[torch.Tensor],
                   device: torch.device, decision: threads.ThreadDecision, worker: WorkerIdentity,
                   elastic_threads: Optional[elastic.ElasticThreads], batch_size: int,
                   registry: Registry) -> OptimizationResult:
    """The model after the configured optimization chain, checked against eager on ``example``
    (None: the handler cannot make one)."""
    runtime = Runtime(
        device=device,
        intra_op_threads=decision.intra_op,
        inter_op_threads=decision.inter_op,
        model_name=worker.model_name,
        batch_size=batch_size,
        intra_op_max=elastic_threads.cores if elastic_threads is not None else 0,
        cache_dir=auto_cache.shared_dir(),  # auto's choice and compile caches, kept across restarts
    )
    example = example.to(device) if example is not None else None
    return optimize(model, config, example, runtime, registry)
