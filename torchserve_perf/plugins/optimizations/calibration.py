"""Calibration samples for static quantization: model inputs as the handler would feed them.

``torchserve-perf archive --calibration DIR`` runs the files of DIR through the handler's
preprocessing and stores the resulting tensors as one file (:data:`DEFAULT_FILE`) at the
archive's root. A worker runs in its model's folder, so the plugins find it under that relative
name. Random inputs do not calibrate a real model: without this file the quantizing plugins refuse.

The samples are split in two: most calibrate the quantizer; every ``holdout_every``-th one is held
out for the accuracy gate (accuracy_gate.py), so the gate judges on inputs the quantizer did not see.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from torchserve_perf.plugins.config import ConfigValueError
from torchserve_perf.plugins.optimizations.accuracy_gate import GateConfig

DEFAULT_FILE = "calibration.pt"


@dataclass(frozen=True)
class CalibratedOptions:
    """The options every calibrated (int8) plugin takes; each plugin's own options extend them."""

    calibration: str = DEFAULT_FILE  # the samples file, relative to the worker's folder (the model's)
    holdout_every: int = 4  # every Nth sample is held out for the accuracy gate
    gate: GateConfig = GateConfig()
    cache: bool = True  # keep the quantized model in the worker's cache dir

    def __post_init__(self) -> None:
        if self.holdout_every < 2:
            raise ConfigValueError("holdout_every", f"{self.holdout_every} leaves nothing to calibrate with",
                                   "give at least 2 (every Nth sample is held out for the gate)")


@dataclass(frozen=True)
class CalibrationSet:
    """The samples file's rows, split. The file is memory-mapped and each part copied out when first
    read: a worker whose quantized model is already built reads only the held-out rows."""

    rows: torch.Tensor  # [N + M, ...] every sample, as stored
    kept: tuple[int, ...]
    held: tuple[int, ...]
    source: str  # where they came from, for messages

    @functools.cached_property
    def calibrate(self) -> torch.Tensor:
        """[N, ...] inputs the quantizer sees."""
        return self.rows[list(self.kept)]

    @functools.cached_property
    def holdout(self) -> torch.Tensor:
        """[M, ...] inputs only the gate sees."""
        return self.rows[list(self.held)]


def split(count: int, holdout_every: int) -> tuple[list[int], list[int]]:
    """Indices to calibrate with and to hold out: every ``holdout_every``-th sample (starting with the
    last of each group) is held out. Pure: see its table test."""
    if holdout_every < 2:
        raise ValueError(f"holdout_every {holdout_every} leaves nothing to calibrate with; give at least 2")
    held = [i for i in range(count) if i % holdout_every == holdout_every - 1]
    kept = [i for i in range(count) if i % holdout_every != holdout_every - 1]
    return kept, held


def find(path: str, base: Optional[str] = None) -> Optional[Path]:
    """``path`` (relative: to ``base``, else the working folder, which is a worker's model folder); None if absent."""
    candidate = Path(path)
    if not candidate.is_absolute() and base:
        candidate = Path(base) / candidate
    return candidate if candidate.is_file() else None


def load(path: Path, holdout_every: int, example: torch.Tensor) -> CalibrationSet:
    """Read a saved tensor of samples (``torch.save``, weights-only) shaped like the model's input rows."""
    data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if isinstance(data, dict):
        data = data.get("samples")
    if not isinstance(data, torch.Tensor) or data.dim() < 1:
        raise ValueError(f"{path}: expected a tensor of samples [N, ...] (or {{'samples': tensor}})")
    if tuple(data.shape[1:]) != tuple(example.shape[1:]):
        raise ValueError(f"{path}: samples of shape {list(data.shape[1:])}, but the model's input rows are "
                         f"{list(example.shape[1:])}; rebuild the archive with --calibration")
    kept, held = split(int(data.shape[0]), holdout_every)
    return CalibrationSet(rows=data.to(example.dtype), kept=tuple(kept), held=tuple(held), source=str(path))


def required(name: str, holdout_every: int, example: torch.Tensor) -> tuple[Path, CalibrationSet]:
    """The calibration file a gated plugin was given, found and loaded; Unavailable when it is missing."""
    from torchserve_perf.plugins.optimizations.interface import Unavailable

    found = find(name)
    if found is None:
        raise Unavailable(f"no calibration samples ({name} not found)")
    return found, load(found, holdout_every, example)


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def file_digest(path: Path) -> bytes:
    """sha256 of a file's bytes, hashed once per path, size and modification time."""
    stat = path.stat()
    return _file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def artefact_key(model_digest: str, samples_file: Path, *settings: Any) -> str:
    """The name of a quantized artefact (quantized_store.py): the model's weights (``model_digest``,
    auto_cache.model_digest), the calibration file's bytes, the torch version and the quantizer's own
    version and settings (``settings``)."""
    digest = hashlib.sha256(model_digest.encode())
    digest.update(file_digest(samples_file))
    digest.update("|".join(str(s) for s in (torch.__version__, *settings)).encode())
    return digest.hexdigest()[:32]


def store_dir(step: Any) -> Optional[str]:
    """Where a calibrated plugin keeps what it builds: the worker's runtime cache dir, or None when
    its options say ``cache: false`` (then it is built at every load, unless the archive carries it)."""
    return step.runtime.cache_dir if step.options.cache else None


def reference_scores(model: Any, model_digest: str, samples_file: Path, samples: CalibrationSet, step: Any,
                     cache_dir: Optional[str]) -> torch.Tensor:
    """fp32's scores on the held-out samples, which every gate compares with: they depend only on the
    model and the calibration file, so they are stored like a quantized model (in the archive when
    it was built with --calibration, else in ``cache_dir``) and eager runs them once per host."""
    from torchserve_perf.plugins.optimizations.accuracy_gate import gate_batch, scores
    from torchserve_perf.plugins.optimizations.quantized_store import QuantizedStore

    def read(path: Path) -> torch.Tensor:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(stored, torch.Tensor) or stored.shape[0] != samples.holdout.shape[0]:
            raise ValueError(f"{path}: not the scores of {samples.holdout.shape[0]} held-out samples")
        return stored

    holdout_every = step.options.holdout_every
    store = QuantizedStore("references", artefact_key(model_digest, samples_file, "fp32", holdout_every), (".pt",),
                           cache_dir)
    return store.get(lambda: scores(model, samples.holdout, gate_batch(step)), read,
                     lambda value, path: torch.save(value.contiguous(), path))


def gate(name: str, model: Any, model_digest: str, samples_file: Path, samples: CalibrationSet,
         candidate: Any, step: Any) -> dict[str, float]:
    """A calibrated plugin's accuracy gate: ``candidate`` on the held-out samples against fp32's
    scores on them (:func:`reference_scores`); accuracy_gate.gate_held_out, which raises GateRejected."""
    from torchserve_perf.plugins.optimizations.accuracy_gate import gate_held_out

    reference = reference_scores(model, model_digest, samples_file, samples, step, store_dir(step))
    return gate_held_out(name, reference, candidate, samples.holdout, step.options.gate, step)


def save(samples: torch.Tensor, path: Path) -> Path:
    torch.save({"samples": samples.detach().cpu().contiguous()}, path)
    return path
