"""GPU memory headroom, checked before a worker loads its model onto the GPU.

Several workers share a GPU (and other models may too). A worker that runs out of memory while
loading fails with a CUDA out-of-memory error deep in torch.load or in the first batch, and
TorchServe restarts it in a loop. Checking first turns that into one clear load error that says
how much is needed, how much is free, and what to change.

The estimate is deliberately simple: the serialized weights three times (the loaded copy, the
state dict it is loaded from, and an optimized copy such as channels_last or fp16 casts) plus a
workspace for activations, cuDNN and CUDA graph pools of ``WORKSPACE_FRACTION`` of the weights,
at least ``MIN_WORKSPACE``. :func:`headroom_error` decides from numbers only (tested as a table).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Mapping, Optional

import torch

log = logging.getLogger(__name__)

GIB = 1024 ** 3
MIB = 1024 ** 2
WEIGHT_COPIES = 3
WORKSPACE_FRACTION = 1.0
MIN_WORKSPACE = 512 * MIB


class GpuMemoryError(RuntimeError):
    """The model does not fit. A RuntimeError: TorchServe fails the registration instead of
    restarting the worker forever (see plugins/config.HandlerConfigError)."""


def needed_bytes(weight_bytes: int) -> int:
    """Memory one worker needs on its GPU for a model whose serialized weights take ``weight_bytes``."""
    weight_bytes = max(0, int(weight_bytes))
    return WEIGHT_COPIES * weight_bytes + max(MIN_WORKSPACE, int(WORKSPACE_FRACTION * weight_bytes))


def headroom_error(free: int, total: int, needed: int, gpu: str = "the GPU") -> Optional[str]:
    """None when ``needed`` bytes fit in ``free``; else the load error, with the fix."""
    if needed <= free:
        return None
    used = max(0, total - free)
    return (f"the model needs about {needed / GIB:.2f} GiB on {gpu}, and only {free / GIB:.2f} GiB of "
            f"{total / GIB:.2f} GiB are free ({used / GIB:.2f} GiB already used by other workers and models). "
            "Fix: fewer workers on this GPU (minWorkers/maxWorkers), spread the model over more GPUs "
            "(number_of_gpu in config.properties), or serve a smaller model or precision")


def weights_size(model_dir: str, manifest: Mapping[str, Any]) -> int:
    """Bytes of the archive's serialized file (0 when it has none)."""
    serialized = (manifest.get("model") or {}).get("serializedFile")
    path = os.path.join(model_dir, serialized) if serialized else ""
    return os.path.getsize(path) if path and os.path.isfile(path) else 0


def check_fits(device: torch.device, model_dir: str, manifest: Mapping[str, Any],
               mem_get_info: Optional[Callable[[torch.device], tuple[int, int]]] = None) -> None:
    """Raise :class:`GpuMemoryError` when the model will not fit on ``device``; nothing off CUDA."""
    if device.type != "cuda":
        return
    mem_get_info = mem_get_info or torch.cuda.mem_get_info
    free, total = mem_get_info(device)
    weights = weights_size(model_dir, manifest)
    needed = needed_bytes(weights)
    error = headroom_error(free, total, needed, f"GPU {device.index if device.index is not None else 0}")
    if error:
        raise GpuMemoryError(error)
    log.info("GPU memory: needs about %.2f GiB (weights %.0f MiB), %.2f of %.2f GiB free", needed / GIB,
             weights / MIB, free / GIB, total / GIB)
