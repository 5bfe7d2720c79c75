"""The values one handled batch passes through: ``read_batch`` -> Batch -> ``inference`` -> the
model's output -> ``answer_batch`` -> Served (handlers/base.py).

The handler keeps no per-batch state in attributes: each step takes the previous step's value and
returns a new one, so the one-by-one retry can run a single request through the same steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch

from torchserve_perf.handlers.errors import RequestError


@dataclass(frozen=True)
class Decoded:
    """One accepted request: its place in TorchServe's batch, its rows for the model, and whatever
    the handler needs later to answer it (``meta``, e.g. that it sent a bare row)."""

    index: int
    tensor: torch.Tensor
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return int(self.tensor.shape[0])


@dataclass(frozen=True)
class Batch:
    """What ``read_batch`` returns: the accepted requests, their collated input, and the rejected ones."""

    size: int  # requests TorchServe handed over
    requests: tuple[Decoded, ...] = ()
    inputs: Optional[torch.Tensor] = None  # the accepted requests' rows, collated, on the device
    rejected: Mapping[int, RequestError] = field(default_factory=dict)  # index in the batch -> its error

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(r.index for r in self.requests)

    @property
    def rows(self) -> tuple[int, ...]:
        return tuple(r.rows for r in self.requests)

    @property
    def empty(self) -> bool:
        return not self.requests


@dataclass(frozen=True)
class Served:
    """What ``answer_batch`` returns: a response per served request, an error per rejected one."""

    size: int
    outputs: Mapping[int, Any] = field(default_factory=dict)
    rejected: Mapping[int, RequestError] = field(default_factory=dict)

    def merged(self, other: Served) -> Served:
        """This batch's results with ``other``'s (the retry of some of its requests) laid over them."""
        return Served(self.size, {**self.outputs, **other.outputs}, {**self.rejected, **other.rejected})
