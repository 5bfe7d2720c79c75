"""``torchserve-perf archive --calibration DIR``: request bodies to model inputs, and auto allowed to try int8."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import png_bytes
from torchserve_perf.tools.archive.calibration import calibration_samples, with_int8
from torchserve_perf.tools.archive.plan import ArchiveError


def test_images_become_the_handlers_model_inputs(tmp_path):
    for i in range(16):
        (tmp_path / f"{i:02d}.png").write_bytes(png_bytes((40 + i, 30), (10 * i, 20, 30)))
    config = {"handler": {"image": {"resize": 32, "crop": 24}}}
    samples = calibration_samples(tmp_path, "image", config)
    assert samples.shape == (16, 3, 24, 24) and samples.dtype == torch.float32
    assert samples[0].mean().item() != pytest.approx(samples[15].mean().item())


def test_tensor_bodies_npy_and_json(tmp_path):
    for i in range(8):
        np.save(tmp_path / f"{i}.npy", np.full((4,), i, dtype=np.float32))
        (tmp_path / f"{i}.json").write_text(json.dumps({"inputs": [[i, i, i, i]]}))
    samples = calibration_samples(tmp_path, "tensor", {"handler": {"tensor": {"input_shape": [4]}}})
    assert samples.shape == (16, 4)


@pytest.mark.parametrize("files, section, words", [
    (3, "image", "give at least 16"),
    (16, "text", "works with --handler image or tensor"),
])
def test_calibration_refusals_name_the_fix(tmp_path, files, section, words):
    for i in range(files):
        (tmp_path / f"{i}.png").write_bytes(png_bytes())
    with pytest.raises(ArchiveError, match=words):
        calibration_samples(tmp_path, section, {})


@pytest.mark.parametrize("section, expected", [
    ({"chain": ["auto"], "auto": {"budget_s": 30, "candidates": ["torchscript", "onnxruntime"]}},
     {"chain": ["auto"], "auto": {"budget_s": 30, "candidates": ["openvino_int8", "int8", "torchscript", "onnxruntime"],
                                  "allow": ["int8", "openvino_int8"], "gated_first": True}}),
    ({"chain": ["auto"]}, {"chain": ["auto"], "auto": {"allow": ["int8", "openvino_int8"], "gated_first": True}}),
    ({"chain": ["torchscript"]}, {"chain": ["torchscript"]}),         # an explicit chain is the user's
])
def test_with_int8_table(section, expected):
    assert with_int8({"batchSize": 4, "handler": {"optimizations": section}}) == \
        {"batchSize": 4, "handler": {"optimizations": expected}}


def test_calibration_images_are_seeded_jpegs_the_image_handler_accepts(tmp_path: Path) -> None:
    from torchserve_perf.tools.calibration_images import write_jpegs

    first = write_jpegs(tmp_path / "a", count=16, size=(64, 48))
    again = write_jpegs(tmp_path / "b", count=16, size=(64, 48))
    names = sorted(p.name for p in first.iterdir())
    assert len(names) == 16 and all(n.endswith(".jpg") for n in names)
    assert all((first / n).read_bytes() == (again / n).read_bytes() for n in names)  # same seed, same bytes
    samples = calibration_samples(first, "image", {"handler": {"image": {"resize": 32, "crop": 32}}})
    assert tuple(samples.shape) == (16, 3, 32, 32) and float(samples.std()) > 0.1  # not flat pictures
    with pytest.raises(ValueError, match="at least one"):
        write_jpegs(tmp_path / "c", count=0)
