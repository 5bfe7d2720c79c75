"""Per-worker thread policy.

Stock TorchServe sets no thread counts, so each of N workers runs N intra-op threads and the
CPU is oversubscribed. The performance guide's rule: split the physical cores between the
workers and keep inter-op at 1. :func:`decide` is a pure function of the machine and the
config; :func:`apply` performs the decision on this process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Literal, Optional, Sequence, Union

import torch

from plugins.config import ConfigValueError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThreadConfig:
    intra_op: Union[int, Literal["auto"]] = "auto"
    inter_op: int = 1
    pin_cores: bool = False
    # Overrides the worker count used to split the cores (default: model-config minWorkers).
    workers: Optional[int] = None

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

    def describe(self) -> str:
        pinned = f", pinned to cores {list(self.cores)}" if self.cores else ""
        return f"intra_op={self.intra_op} inter_op={self.inter_op}{pinned} ({self.reason})"


def physical_cores() -> int:
    try:
        import psutil

        count = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unable to read the topology
        count = None
    return max(1, count or os.cpu_count() or 1)


def allowed_cores() -> tuple[int, ...]:
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return tuple(range(os.cpu_count() or 1))


def decide(config: ThreadConfig, *, physical: int, cores: Sequence[int], workers: int,
           worker_index: int) -> ThreadDecision:
    """Threads and cores for one worker. Pure: same inputs, same answer."""
    workers = max(1, config.workers or workers)
    if config.intra_op == "auto":
        intra = max(1, physical // workers)
        reason = f"{physical} physical cores / {workers} workers"
    else:
        intra = int(config.intra_op)
        reason = "set in model-config"
    pinned: tuple[int, ...] = ()
    if config.pin_cores and cores:
        # Disjoint, contiguous slices; wrap when there are more workers than slices.
        width = max(1, min(intra, len(cores)))
        slices = max(1, len(cores) // width)
        start = (worker_index % slices) * width
        pinned = tuple(cores[start:start + width])
    return ThreadDecision(intra_op=intra, inter_op=config.inter_op, cores=pinned, reason=reason)


def apply(decision: ThreadDecision) -> None:
    """Set torch's thread pools (and CPU affinity when pinned) for this process."""
    torch.set_num_threads(decision.intra_op)
    try:
        torch.set_num_interop_threads(decision.inter_op)
    except RuntimeError:
        # Only settable before the first inter-op parallel work; a later set is refused.
        log.debug("inter-op threads already fixed at %d", torch.get_num_interop_threads())
    if decision.cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, decision.cores)
