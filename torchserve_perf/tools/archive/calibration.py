"""``--calibration DIR``: request bodies (images, .npy, JSON) turned into the model inputs the handler
would make of them, stored in the archive for the int8 plugins (plugins/optimizations/calibration.py).

The archive also lets auto consider int8: its ``auto`` section lists the int8 candidates, allows
them (``auto.allow``) and tries them first (``auto.gated_first``). The models are quantized now
(prequantize.py) and carried in the archive; a worker keeps int8 only if the accuracy gate passes on
the held-out samples, and otherwise times its fp32 candidates, serves the best and says why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from torchserve_perf.tools.archive.plan import ArchiveError

# OpenVINO's NNCF, then ONNX Runtime's static quantization (docs/int8.md): tried first, so auto's
# budget is not spent before them; one whose package is missing on the server is left out, with the reason.
INT8_PLUGINS = ("openvino_int8", "int8")
MIN_SAMPLES = 16


def _image_rows(files: list[Path], options: Any) -> list[torch.Tensor]:
    from torchserve_perf.handlers import imaging
    from torchserve_perf.handlers.errors import RequestError

    normalise = imaging.Normaliser(options.mean, options.std)
    rows = []
    for path in files:
        try:
            image = imaging.open_image(path.read_bytes(), options.formats)
            target = imaging.target_for(image.size, options)
            rows.append(normalise(imaging.resize_crop_pixels(imaging.decode(image, target), target, options.crop)))
        except RequestError as exc:
            raise ArchiveError(f"--calibration {path}: the image handler would refuse it ({exc})") from None
    return rows


def _tensor_rows(files: list[Path], options: Any) -> list[torch.Tensor]:
    rows = []
    for path in files:
        try:
            if path.suffix == ".npy":
                array = np.load(path, allow_pickle=False)
            else:
                payload = json.loads(path.read_text())
                array = np.asarray(payload[options.input_field] if isinstance(payload, dict) else payload)
        except (OSError, ValueError, KeyError) as exc:
            raise ArchiveError(f"--calibration {path}: not a tensor request body (.npy or JSON): {exc}") from None
        tensor = torch.from_numpy(np.ascontiguousarray(array)).float()
        shape = tuple(options.input_shape or ())
        rows.append(tensor.unsqueeze(0) if shape and tuple(tensor.shape) == shape else tensor)
    return rows


def calibration_samples(directory: Path, section: Optional[str], model_config: Mapping[str, Any]) -> torch.Tensor:
    """Every file of ``directory`` (sorted) as the handler's model input, stacked into [N, ...]."""
    from torchserve_perf.handlers.options import ImageOptions, TensorOptions
    from torchserve_perf.plugins.config import build

    if not directory.is_dir():
        raise ArchiveError(f"--calibration {directory}: not a folder; give a folder of request bodies")
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    if len(files) < MIN_SAMPLES:
        raise ArchiveError(f"--calibration {directory}: {len(files)} files; give at least {MIN_SAMPLES} "
                           "(a quarter is held out for the accuracy gate; a few hundred calibrate well)")
    handler = dict(model_config.get("handler") or {})
    if section == "image":
        rows = _image_rows(files, build(ImageOptions, handler.get("image"), "handler.image"))
    elif section == "tensor":
        rows = _tensor_rows(files, build(TensorOptions, handler.get("tensor"), "handler.tensor"))
    else:
        raise ArchiveError("--calibration works with --handler image or tensor (request bodies to model inputs)")
    try:
        return torch.cat(rows, dim=0)
    except RuntimeError as exc:
        raise ArchiveError(f"--calibration {directory}: the samples do not share one shape ({exc})") from None


def with_int8(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """The model-config with auto allowed to try int8 (when the chain is auto; an explicit chain stays)."""
    config = dict(model_config)
    handler = dict(config.get("handler") or {})
    section = dict(handler.get("optimizations") or {})
    if list(section.get("chain") or []) != ["auto"]:
        return config
    auto = dict(section.get("auto") or {})
    if auto.get("candidates"):
        auto["candidates"] = [*INT8_PLUGINS, *(c for c in auto["candidates"] if c not in INT8_PLUGINS)]
    auto["allow"] = sorted(set(auto.get("allow") or []) | set(INT8_PLUGINS))
    auto.setdefault("gated_first", True)  # asked for int8: fp32 candidates are the fallback
    section["auto"] = auto
    handler["optimizations"] = section
    config["handler"] = handler
    return config


def add_calibration(plan: Any, section: Optional[str], directory: Path, staging: Path,
                    quantize: bool = True) -> Any:
    """``plan`` (an ArchivePlan) with the samples of ``directory`` as an extra file (written under
    ``staging``, which must outlive the build) and auto allowed to try int8. ``quantize``: also
    quantize now (prequantize.py) and carry the int8 models, so workers do not quantize at load."""
    import dataclasses

    from torchserve_perf.plugins.optimizations import calibration
    from torchserve_perf.plugins.optimizations.quantized_store import ARCHIVE_DIR
    from torchserve_perf.tools.archive.prequantize import prequantize

    samples = calibration_samples(directory, section, plan.model_config)
    path = calibration.save(samples, staging / calibration.DEFAULT_FILE)
    plan = dataclasses.replace(plan, model_config=with_int8(plan.model_config), extra_files=(*plan.extra_files, path))
    if not quantize:
        return plan
    folder = staging / ARCHIVE_DIR
    for name, outcome in prequantize(plan, path, folder).items():
        print(f"int8 ({name}): {outcome}", flush=True)
    return dataclasses.replace(plan, extra_files=(*plan.extra_files, folder)) if folder.is_dir() else plan
