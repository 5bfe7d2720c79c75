"""Decode a batch's requests in parallel, on threads taken from the worker's thread budget.

While a worker decodes, its intra-op threads are idle (the model runs after preprocess), so the
decode pool borrows that budget: ``threads: auto`` gives it as many threads as torch has intra-op
threads (capped at the largest batch). Pillow and torch release the GIL while they decode, resize
and normalise, so the requests of one batch decode side by side. With one thread there is no
pool at all: requests decode inline, with no hand-off cost.

``handler.decode:`` in model-config.yaml::

    handler:
      decode:
        threads: auto        # or a number; 1 decodes inline
        on_device: auto      # images: resize/crop/normalise on the model's device (auto: on CUDA)
        nvjpeg: auto         # images: JPEGs decoded on the GPU as a batch when torchvision can
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Sequence, Union

from torchserve_perf.plugins.config import ConfigValueError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecodeConfig:
    threads: Union[int, Literal["auto"]] = "auto"
    # Images: send uint8 to the model's device and resize, crop and normalise there.
    # auto: when the device is CUDA; always: on any device (on CPU it matches the Pillow path); never.
    on_device: Literal["auto", "always", "never"] = "auto"
    # Images: decode JPEGs on the GPU (torchvision.io.decode_jpeg) as a batch; off, or auto: when
    # the device is CUDA and torchvision is importable. Any request it cannot decode takes the CPU path.
    nvjpeg: Literal["auto", "off"] = "auto"

    def __post_init__(self) -> None:
        if self.threads != "auto" and self.threads < 1:
            raise ConfigValueError("threads", f"{self.threads} is below 1", "give a positive number or 'auto'")


@dataclass(frozen=True)
class Failure:
    """A request whose decode raised: kept in its place so it fails alone."""

    error: Exception


def pool_threads(config: DecodeConfig, intra_op_threads: int, batch_size: int) -> int:
    """Decode threads for one worker. Pure: the worker's intra-op budget, never more than a batch holds."""
    wanted = intra_op_threads if config.threads == "auto" else int(config.threads)
    return max(1, min(wanted, max(1, batch_size)))


class DecodePool:
    """Maps a decode function over a batch's bodies, in order, each failure kept in its place."""

    def __init__(self, threads: int) -> None:
        self.threads = max(1, int(threads))
        # Threads start on first use and live as long as the worker; none at all when inline.
        self._executor: Optional[ThreadPoolExecutor] = (
            ThreadPoolExecutor(self.threads, thread_name_prefix="ts-perf-decode") if self.threads > 1 else None)

    @classmethod
    def for_worker(cls, config: DecodeConfig, intra_op_threads: int, batch_size: int) -> DecodePool:
        pool = cls(pool_threads(config, intra_op_threads, batch_size))
        log.info("requests of a batch: %s (decode.threads=%s, %d intra-op threads, batch size %d)",
                 pool.describe(), config.threads, intra_op_threads, batch_size)
        return pool

    def map(self, decode: Callable[[Any, int], Any], bodies: Sequence[Any]) -> list[Any]:
        """``decode(body, index)`` for every body: its result, or a :class:`Failure` where it raised."""
        if self._executor is None or len(bodies) <= 1:
            return [attempt(decode, body, idx) for idx, body in enumerate(bodies)]
        return list(self._executor.map(attempt, [decode] * len(bodies), bodies, range(len(bodies))))

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    def describe(self) -> str:
        return f"{self.threads} decode threads" if self._executor else "decode inline"


def attempt(decode: Callable[[Any, int], Any], body: Any, idx: int) -> Any:
    try:
        return decode(body, idx)
    except Exception as exc:  # the caller turns it into this request's error; the others go on
        return Failure(exc)
