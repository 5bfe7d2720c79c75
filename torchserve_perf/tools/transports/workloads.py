"""The workloads a transports comparison sends: the 120 kB JPEG to ResNet-18, a small tensor to a
small MLP; both archived with our handlers into one model store."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from torchserve_perf.tools.loadgen.payloads import Payload, sample_image

TENSOR_MODEL = "tiny_mlp"
# One worker with batching: the tensor's cost is transport, not the model.
TENSOR_CONFIG: dict[str, Any] = {"minWorkers": 1, "maxWorkers": 1, "batchSize": 4, "maxBatchDelay": 1,
                                 "responseTimeout": 60, "handler": {"tensor": {"input_shape": [64]}}}


@dataclass(frozen=True)
class Workload:
    key: str  # "image" or "tensor"
    model: str
    archive: str
    payload: Payload
    description: str


def tensor_payload(seed: int = 0) -> Payload:
    """One row of the small MLP's input as a .npy body (the same numbers travel as a v2 FP32 tensor)."""
    from torchserve_perf.models.tiny_mlp import INPUT_SIZE

    row = np.random.default_rng(seed).standard_normal((1, INPUT_SIZE)).astype(np.float32)
    buffer = io.BytesIO()
    np.save(buffer, row, allow_pickle=False)
    return Payload(buffer.getvalue(), "application/octet-stream", f"tensor-1x{INPUT_SIZE}.npy")


def build_store(store: Path, keys: tuple[str, ...]) -> dict[str, Workload]:
    """Archive the models ``keys`` need into ``store``; the workloads by key."""
    from torchserve_perf.models.tiny_mlp import TinyMLP
    from torchserve_perf.tools import paths
    from torchserve_perf.tools.model_store import ArchiveSpec, build_archive, default_specs, write_server_config

    store.mkdir(parents=True, exist_ok=True)
    out: dict[str, Workload] = {}
    if "image" in keys:
        spec = next(s for s in default_specs() if s.name == "resnet18")
        build_archive(spec, store)
        image = Payload(sample_image(), "image/jpeg", "generated-640x480.jpg")
        out["image"] = Workload("image", spec.name, f"{spec.name}.mar", image,
                                f"ResNet-18, {len(image.body) / 1000:.0f} kB JPEG, demo archive settings")
    if "tensor" in keys:
        spec = ArchiveSpec(name=TENSOR_MODEL, model_file=paths.models_dir() / "tiny_mlp.py", make_model=TinyMLP,
                           handler=paths.handlers_dir() / "tensor_handler.py", labels=[], model_config=TENSOR_CONFIG)
        build_archive(spec, store)
        tensor = tensor_payload()
        out["tensor"] = Workload("tensor", TENSOR_MODEL, f"{TENSOR_MODEL}.mar", tensor,
                                 f"small MLP, one 64-float row ({len(tensor.body)} B .npy; a v2 FP32 tensor), "
                                 "1 worker, batch 4, 1 ms delay")
    write_server_config(store)
    return out
