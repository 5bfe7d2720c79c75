"""The search space: workers x threads per worker x batch size x max batch delay x optimizations (x GPUs).

A :class:`Candidate` is one point; :class:`SearchSpace` holds the values of each axis, makes
points canonical (with batch size 1 the batch delay is never waited on, so those points
collapse to one), enumerates the grid and steps along an axis for the search.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterator, Mapping, Optional, Sequence

# Axes the search steps along, in the order it tries them: the worker/thread layout matters
# most on CPU, then batching (the optimization choices are categorical: all are neighbours).
# threads = 0: the handler's own choice, elastic intra-op threads (plugins/elastic.py).
ELASTIC = "elastic"
AXES = ("workers", "threads", "split", "batch_size", "max_batch_delay_ms", "optimization", "gpus")
NONE = "none"


def parse_optimization(text: str) -> tuple[str, ...]:
    """'none' -> (), 'channels_last' -> ('channels_last',), 'channels_last+compile' -> a chain of two."""
    text = text.strip()
    if not text or text.lower() == NONE:
        return ()
    parts = tuple(p.strip() for p in text.split("+"))
    if any(not p for p in parts):
        raise ValueError(f"bad optimization choice {text!r}: write names joined by '+', or 'none'")
    return parts


def optimization_label(chain: Sequence[str]) -> str:
    return "+".join(chain) if chain else NONE


@dataclass(frozen=True, order=True)
class Candidate:
    workers: int
    threads: int
    batch_size: int
    max_batch_delay_ms: int
    optimization: tuple[str, ...] = ()
    gpus: int = 0

    @property
    def key(self) -> str:
        """A stable, file-name-safe identity (state files and model folders use it)."""
        opt = "-".join(self.optimization) if self.optimization else NONE
        gpu = f"-g{self.gpus}" if self.gpus else ""
        return f"w{self.workers}-t{self.threads}-b{self.batch_size}-d{self.max_batch_delay_ms}-{opt}{gpu}"

    def label(self) -> str:
        gpu = f" gpus={self.gpus}" if self.gpus else ""
        threads = self.threads or ELASTIC
        return (f"workers={self.workers} threads={threads} batch={self.batch_size} "
                f"delay={self.max_batch_delay_ms}ms opt={optimization_label(self.optimization)}{gpu}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["optimization"] = list(self.optimization)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        return cls(workers=int(data["workers"]), threads=int(data["threads"]), batch_size=int(data["batch_size"]),
                   max_batch_delay_ms=int(data["max_batch_delay_ms"]),
                   optimization=tuple(data.get("optimization") or ()), gpus=int(data.get("gpus", 0)))


@dataclass(frozen=True)
class SearchSpace:
    workers: tuple[int, ...] = (1, 2, 4)
    threads: tuple[int, ...] = (1, 2)
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    delays_ms: tuple[int, ...] = (5, 25)
    optimizations: tuple[tuple[str, ...], ...] = ((), ("channels_last",))
    gpus: tuple[int, ...] = (0,)
    values: Mapping[str, tuple] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("workers", "threads", "batch_sizes", "delays_ms", "gpus"):
            axis = getattr(self, name)
            if not axis:
                raise ValueError(f"search space axis {name!r} is empty")
            if list(axis) != sorted(set(axis)):
                raise ValueError(f"search space axis {name!r} must be ascending without repeats: {axis}")
            if min(axis) < (0 if name in ("delays_ms", "gpus", "threads") else 1):
                raise ValueError(f"search space axis {name!r} has a value out of range: {axis}")
        if not self.optimizations or len(set(self.optimizations)) != len(self.optimizations):
            raise ValueError(f"optimization choices must be non-empty and distinct: {self.optimizations}")
        object.__setattr__(self, "values", {
            "workers": self.workers, "threads": self.threads, "batch_size": self.batch_sizes,
            "max_batch_delay_ms": self.delays_ms, "optimization": self.optimizations, "gpus": self.gpus,
        })

    # ---- points -------------------------------------------------------------------------------
    def canonical(self, c: Candidate) -> Candidate:
        """Batch size 1 never waits for a batch to fill, so its delay is set to the smallest one."""
        if c.batch_size == 1 and c.max_batch_delay_ms != self.delays_ms[0]:
            return replace(c, max_batch_delay_ms=self.delays_ms[0])
        return c

    def contains(self, c: Candidate) -> bool:
        return all(getattr(c, axis) in values for axis, values in self.values.items())

    def grid(self) -> list[Candidate]:
        """Every distinct canonical point, in a fixed order."""
        seen: dict[Candidate, None] = {}
        for g in self.gpus:
            for opt in self.optimizations:
                for w in self.workers:
                    for t in self.threads:
                        for b in self.batch_sizes:
                            for d in self.delays_ms:
                                seen.setdefault(self.canonical(Candidate(w, t, b, d, opt, g)), None)
        return list(seen)

    def size(self) -> int:
        return len(self.grid())

    def snap(self, axis: str, wanted: float) -> Any:
        """The value of an ordered axis closest to ``wanted`` (ties go to the smaller one)."""
        return min(self.values[axis], key=lambda v: (abs(v - wanted), v))

    # ---- moves --------------------------------------------------------------------------------
    def step(self, c: Candidate, axis: str, direction: int) -> Optional[Candidate]:
        """The neighbour one value up (+1) or down (-1) along ``axis``; None past the end.

        ``split`` is a coupled move that keeps the worker/thread layout's shape: more workers
        with fewer threads each (+1) or the reverse (-1). ``optimization`` is categorical: its
        choices are visited in the order given.
        """
        if axis == "split":
            w = self._shift("workers", c.workers, direction)
            t = self._shift("threads", c.threads, -direction)
            return None if w is None or t is None else self.canonical(replace(c, workers=w, threads=t))
        current = getattr(c, axis)
        value = self._shift(axis, current, direction)
        if value is None:
            return None
        moved = self.canonical(replace(c, **{axis: value}))
        return None if moved == c else moved

    def _shift(self, axis: str, value: Any, direction: int) -> Any:
        values = self.values[axis]
        i = values.index(value) + direction
        return values[i] if 0 <= i < len(values) else None

    def neighbours(self, c: Candidate) -> Iterator[Candidate]:
        """One step along each ordered axis, the coupled workers/threads move, every other optimization."""
        seen = {c}
        for opt in self.optimizations:
            n = self.canonical(replace(c, optimization=opt))
            if n not in seen:
                seen.add(n)
                yield n
        for axis in AXES:
            if axis == "optimization":
                continue
            for direction in (1, -1):
                stepped = self.step(c, axis, direction)
                if stepped is not None and stepped not in seen:
                    seen.add(stepped)
                    yield stepped

    # ---- description ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"workers": list(self.workers), "threads": list(self.threads), "batch_sizes": list(self.batch_sizes),
                "delays_ms": list(self.delays_ms),
                "optimizations": [optimization_label(o) for o in self.optimizations], "gpus": list(self.gpus)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        return cls(workers=tuple(data["workers"]), threads=tuple(data["threads"]),
                   batch_sizes=tuple(data["batch_sizes"]), delays_ms=tuple(data["delays_ms"]),
                   optimizations=tuple(parse_optimization(o) for o in data["optimizations"]),
                   gpus=tuple(data.get("gpus", (0,))))

    def without_optimization(self, chain: tuple[str, ...]) -> SearchSpace:
        return replace(self, optimizations=tuple(o for o in self.optimizations if o != chain))


def heuristic_start(space: SearchSpace, *, physical_cores: int, concurrency: int, gpus: int = 0) -> Candidate:
    """The performance guide's starting point, snapped into the space.

    The guide: ``torch.set_num_threads(1)`` in every worker, then as many workers as the CPU
    takes (start at half the physical cores and increase). So: one thread per worker and a worker
    per physical core; batch: the requests each worker can expect at this concurrency (a larger
    batch lets the first free worker take every waiting request and idles the others); delay:
    about 10 ms; the first optimization choice; on a GPU host, every GPU.
    """
    workers = space.snap("workers", max(1, physical_cores))
    # Elastic threads are one per worker when all are busy, and more when some are idle.
    threads = 0 if 0 in space.threads else space.snap("threads", 1)
    batch = space.snap("batch_size", max(1, concurrency // workers))
    # With elastic threads, start from the shipped defaults: the smallest delay (a lone request waits little).
    delay = space.delays_ms[0] if threads == 0 else space.snap("max_batch_delay_ms", 10)
    gpu = space.snap("gpus", gpus)
    return space.canonical(Candidate(workers, threads, batch, delay, space.optimizations[0], gpu))


# TorchServe 0.12 reads a model-config maxBatchDelay of 0 as unset (its default, 100 ms): 1 ms is
# the smallest delay it honours, so the host space starts there.
HOST_DELAYS_MS = (1, 5, 25)
CPU_MAX_BATCH = 8
GPU_MAX_BATCH = 128  # a GPU runs ResNet-18 fastest at large batches (CUDA graph buckets up to 128)


def _up_to(limit: int) -> tuple[int, ...]:
    """1, 2, 4, ... below ``limit``, and ``limit`` itself."""
    values, v = [], 1
    while v < limit:
        values.append(v)
        v *= 2
    return tuple(values + [max(1, limit)])


def host_space(physical_cores: int, gpus: int = 0, optimizations: Sequence[tuple[str, ...]] = ((), ("channels_last",)),
               max_batch: Optional[int] = None) -> SearchSpace:
    """The space fitted to this host: workers up to the core count; threads elastic (0) or 1 up to the
    cores; batch up to ``max_batch`` (8 on CPU, 128 on a GPU); delays from TorchServe's smallest."""
    cores = max(1, int(physical_cores))
    batch_cap = max_batch or (GPU_MAX_BATCH if gpus else CPU_MAX_BATCH)
    return SearchSpace(workers=_up_to(cores), threads=(0,) + _up_to(cores), batch_sizes=_up_to(batch_cap),
                       delays_ms=HOST_DELAYS_MS, optimizations=tuple(optimizations),
                       gpus=tuple(range(1, gpus + 1)) if gpus else (0,))
