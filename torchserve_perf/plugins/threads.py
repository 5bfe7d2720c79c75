"""Per-worker thread policy.

Stock TorchServe sets no thread counts, so each of N workers runs one intra-op thread per core
and the CPU is oversubscribed. The performance guide's rule: split the physical cores between
the workers and keep inter-op at 1. :func:`decide` is a pure function of the machine and the
config; :func:`apply` performs the decision on this process and reports what torch really uses.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Literal, Optional, Sequence, Union

import torch

from torchserve_perf.plugins.config import ConfigValueError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThreadConfig:
    intra_op: Union[int, Literal["auto"]] = "auto"
    inter_op: int = 1
    pin_cores: bool = False
    # Overrides the worker count used to split the cores (default: model-config minWorkers).
    workers: Optional[int] = None
    # Per batch, use the cores the model's other workers leave idle (plugins/elastic.py).
    elastic: bool = True
    # Elastic threads keep the static split on a host loaded beyond what the model makes itself.
    elastic_check_host: bool = True

    def __post_init__(self) -> None:
        if self.intra_op != "auto" and self.intra_op < 1:
            raise ConfigValueError("intra_op", f"{self.intra_op} is below 1", "give a positive number or 'auto'")
        if self.inter_op < 1:
            raise ConfigValueError("inter_op", f"{self.inter_op} is below 1", "give a positive number")
        if self.workers is not None and self.workers < 1:
            raise ConfigValueError("workers", f"{self.workers} is below 1", "give a positive number or remove it")


@dataclass(frozen=True)
class ThreadDecision:
    intra_op: int
    inter_op: int
    cores: tuple[int, ...]  # empty: not pinned
    reason: str
    device: str = "cpu"

    def describe(self) -> str:
        pinned = f", pinned to cores {list(self.cores)}" if self.cores else ""
        return f"intra_op={self.intra_op} inter_op={self.inter_op}{pinned} on {self.device} ({self.reason})"


def allowed_cores() -> tuple[int, ...]:
    """Logical CPUs this process may run on (a container or taskset may allow fewer than exist)."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return tuple(range(os.cpu_count() or 1))


def physical_cores(allowed: Optional[Sequence[int]] = None) -> int:
    """Physical cores (psutil), but never more than the logical CPUs this process may use."""
    try:
        import psutil

        count = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unable to read the topology
        count = None
    count = count or os.cpu_count() or 1
    if allowed:
        count = min(count, len(allowed))
    return max(1, count)


def decide(config: ThreadConfig, *, physical: int, cores: Sequence[int], workers: int,
           worker_index: int, device: str = "cpu") -> ThreadDecision:
    """Threads and cores for one worker. Pure: same inputs, same answer."""
    workers = max(1, config.workers or workers)
    if config.intra_op == "auto":
        intra = max(1, physical // workers)
        source = "threads.workers" if config.workers else "workers"
        reason = f"{physical} physical cores / {workers} {source}"
    else:
        intra = int(config.intra_op)
        reason = "threads.intra_op set in model-config"
    pinned: tuple[int, ...] = ()
    if config.pin_cores and cores:
        # Disjoint, contiguous slices; wrap when there are more workers than slices.
        width = max(1, min(intra, len(cores)))
        slices = max(1, len(cores) // width)
        start = (worker_index % slices) * width
        pinned = tuple(cores[start:start + width])
    return ThreadDecision(intra_op=intra, inter_op=config.inter_op, cores=pinned, reason=reason, device=device)


def apply(decision: ThreadDecision) -> ThreadDecision:
    """Set torch's thread pools (and CPU affinity when pinned); returns what torch now really uses."""
    if decision.cores and hasattr(os, "sched_setaffinity"):
        # Pin first: OpenMP threads started afterwards inherit the affinity.
        os.sched_setaffinity(0, decision.cores)
    torch.set_num_threads(decision.intra_op)
    try:
        torch.set_num_interop_threads(decision.inter_op)
    except RuntimeError:
        # Only settable before the first inter-op parallel work in this process.
        pass
    intra, inter = torch.get_num_threads(), torch.get_num_interop_threads()
    if (intra, inter) == (decision.intra_op, decision.inter_op):
        return decision
    note = f"; torch kept intra_op={intra} inter_op={inter}"
    return dataclasses.replace(decision, intra_op=intra, inter_op=inter, reason=decision.reason + note)
