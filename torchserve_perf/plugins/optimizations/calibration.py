"""Calibration samples for static quantization: model inputs as the handler would feed them.

``torchserve-perf archive --calibration DIR`` runs the files of DIR through the handler's
preprocessing and stores the resulting tensors as one file (:data:`DEFAULT_FILE`) at the
archive's root. A worker runs in its model's folder, so the plugins find it under that relative
name. Random inputs do not calibrate a real model: without this file the quantizing plugins refuse.

The samples are split in two: most calibrate the quantizer; every ``holdout_every``-th one is held
out for the accuracy gate (accuracy_gate.py), so the gate judges on inputs the quantizer did not see.
"""

from __future__ import annotations

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
    calibrate: torch.Tensor  # [N, ...] inputs the quantizer sees
    holdout: torch.Tensor  # [M, ...] inputs only the gate sees
    source: str  # where they came from, for messages


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
    data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, dict):
        data = data.get("samples")
    if not isinstance(data, torch.Tensor) or data.dim() < 1:
        raise ValueError(f"{path}: expected a tensor of samples [N, ...] (or {{'samples': tensor}})")
    if tuple(data.shape[1:]) != tuple(example.shape[1:]):
        raise ValueError(f"{path}: samples of shape {list(data.shape[1:])}, but the model's input rows are "
                         f"{list(example.shape[1:])}; rebuild the archive with --calibration")
    data = data.to(example.dtype)
    kept, held = split(int(data.shape[0]), holdout_every)
    return CalibrationSet(calibrate=data[kept], holdout=data[held], source=str(path))


def required(name: str, holdout_every: int, example: torch.Tensor) -> tuple[Path, CalibrationSet]:
    """The calibration file a gated plugin was given, found and loaded; Unavailable when it is missing."""
    from torchserve_perf.plugins.optimizations.interface import Unavailable

    found = find(name)
    if found is None:
        raise Unavailable(f"no calibration samples ({name} not found)")
    return found, load(found, holdout_every, example)


def artefact_key(model: Any, samples_file: Path, *settings: Any) -> str:
    """The name of a quantized artefact in the cache: the model's weights, the calibration file's
    bytes, the torch version and the quantizer's own version and settings (``settings``)."""
    from torchserve_perf.plugins.optimizations.auto_cache import model_digest

    digest = hashlib.sha256(model_digest(model).encode())
    digest.update(hashlib.sha256(samples_file.read_bytes()).digest())
    digest.update("|".join(str(s) for s in (torch.__version__, *settings)).encode())
    return digest.hexdigest()[:32]


def save(samples: torch.Tensor, path: Path) -> Path:
    torch.save({"samples": samples.detach().cpu().contiguous()}, path)
    return path
