"""Batch-size buckets: every batch padded to one of a few sizes, so shapes stay static.

CUDA graphs (and compiled graphs without dynamic shapes) replay one fixed shape. A worker that
sees batches of 1 to 128 rows would need 128 graphs; with buckets it needs 8 (1, 2, 4, ... 128):
a batch of 5 rows is padded to 8 with copies of its last row, runs the graph of bucket 8, and
the first 5 rows of the output go back. A batch larger than the largest bucket runs in chunks.
Everything here is pure and runs on any device; capturing graphs is plugins/optimizations/cuda_graphs.py.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch


def default_buckets(batch_size: int) -> tuple[int, ...]:
    """Powers of two up to ``batch_size``, and ``batch_size`` itself: 12 -> (1, 2, 4, 8, 12)."""
    batch_size = max(1, int(batch_size))
    sizes, size = [], 1
    while size < batch_size:
        sizes.append(size)
        size *= 2
    return tuple(sizes + [batch_size])


def checked_buckets(buckets: Sequence[int], batch_size: int) -> tuple[int, ...]:
    """The configured buckets sorted, or the defaults; the largest must cover TorchServe's batchSize."""
    if not buckets:
        return default_buckets(batch_size)
    sizes = tuple(sorted(set(int(b) for b in buckets)))
    if sizes[0] < 1:
        raise ValueError(f"bucket sizes must be positive, got {list(sizes)}")
    if sizes[-1] < batch_size:
        sizes = sizes + (int(batch_size),)  # a full batch would otherwise always run in chunks
    return sizes


def bucket_for(rows: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds ``rows`` (``buckets`` sorted); the largest when none does."""
    for size in buckets:
        if size >= rows:
            return size
    return buckets[-1]


def chunks(rows: int, largest: int) -> list[tuple[int, int]]:
    """[start, stop) row ranges of at most ``largest`` rows covering ``rows``."""
    return [(start, min(rows, start + largest)) for start in range(0, rows, largest)]


def pad_rows(x: torch.Tensor, size: int) -> torch.Tensor:
    """``x`` with copies of its last row appended up to ``size`` rows (real data: no NaN from zeros)."""
    missing = size - x.shape[0]
    if missing <= 0:
        return x
    return torch.cat([x, x[-1:].expand(missing, *x.shape[1:])], dim=0)


def slice_rows(output: Any, rows: int) -> Any:
    """The first ``rows`` rows of every tensor in ``output`` (a tensor, tuple, list or dict)."""
    if isinstance(output, torch.Tensor):
        return output[:rows] if output.dim() else output
    if isinstance(output, (list, tuple)):
        return type(output)(slice_rows(o, rows) for o in output)
    if isinstance(output, Mapping):
        return {k: slice_rows(v, rows) for k, v in output.items()}
    return output


def join_rows(parts: Sequence[Any]) -> Any:
    """Chunks' outputs concatenated back along the batch dimension."""
    first = parts[0]
    if len(parts) == 1:
        return first
    if isinstance(first, torch.Tensor):
        return torch.cat(list(parts), dim=0)
    if isinstance(first, (list, tuple)):
        return type(first)(join_rows([p[i] for p in parts]) for i in range(len(first)))
    if isinstance(first, Mapping):
        return {k: join_rows([p[k] for p in parts]) for k in first}
    return first


class BucketedRunner:
    """Runs a batch through the callable of its bucket: padded in, sliced out, chunked when too big.

    ``runners`` maps each bucket size to a callable that takes exactly that many rows (a replayed
    CUDA graph, a static compiled graph). An input whose other dimensions, dtype or device differ
    from the ones the runners were built for goes to ``fallback`` (the model itself), unpadded.
    """

    def __init__(self, runners: Mapping[int, Callable[[torch.Tensor], Any]], row_shape: Sequence[int],
                 dtype: torch.dtype, device: torch.device, fallback: Callable[..., Any]) -> None:
        self.runners = dict(runners)
        self.buckets = tuple(sorted(self.runners))
        self.row_shape, self.dtype, self.device = tuple(row_shape), dtype, device
        self.fallback = fallback

    def fits(self, x: Any) -> bool:
        return (isinstance(x, torch.Tensor) and tuple(x.shape[1:]) == self.row_shape and x.dtype == self.dtype
                and x.device == self.device and x.shape[0] > 0)

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or not self.fits(x):
            return self.fallback(x, *args, **kwargs)
        parts = []
        for start, stop in chunks(x.shape[0], self.buckets[-1]):
            rows = stop - start
            bucket = bucket_for(rows, self.buckets)
            parts.append(slice_rows(self.runners[bucket](pad_rows(x[start:stop], bucket)), rows))
        return join_rows(parts)

    def __repr__(self) -> str:
        return f"BucketedRunner(buckets={list(self.buckets)}, rows of {list(self.row_shape)})"
