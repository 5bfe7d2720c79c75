"""GPU memory headroom at load (plugins/gpu_memory.py): decided from (free, needed), tested as a table."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchserve_perf.plugins.gpu_memory import (
    GIB,
    MIB,
    MIN_WORKSPACE,
    GpuMemoryError,
    check_fits,
    headroom_error,
    needed_bytes,
)


@pytest.mark.parametrize("weights, expected", [
    (0, MIN_WORKSPACE),
    (45 * MIB, 3 * 45 * MIB + MIN_WORKSPACE),  # ResNet-18: the workspace floor dominates
    (2 * GIB, 3 * 2 * GIB + 2 * GIB),  # a large model: workspace as large as its weights
])
def test_needed_bytes(weights, expected):
    assert needed_bytes(weights) == expected


@pytest.mark.parametrize("free, total, needed, fits", [
    (80 * GIB, 80 * GIB, 1 * GIB, True),
    (1 * GIB, 80 * GIB, 1 * GIB, True),  # exactly enough
    (1 * GIB - 1, 80 * GIB, 1 * GIB, False),
    (0, 80 * GIB, 1, False),
    (10 * GIB, 80 * GIB, 12 * GIB, False),
    (0, 0, 0, True),
])
def test_headroom_table(free, total, needed, fits):
    error = headroom_error(free, total, needed, "GPU 3")
    assert (error is None) is fits
    if not fits:
        assert "GPU 3" in error and "Fix:" in error and f"{needed / GIB:.2f} GiB" in error
        assert f"{free / GIB:.2f} GiB of {total / GIB:.2f} GiB are free" in error


def write_weights(tmp_path: Path, size: int) -> dict:
    (tmp_path / "weights.pt").write_bytes(b"\0" * size)
    return {"model": {"serializedFile": "weights.pt"}}


def test_a_model_that_does_not_fit_fails_the_load_with_the_numbers(tmp_path: Path):
    manifest = write_weights(tmp_path, 4 * MIB)
    seen = []

    def fake_mem_get_info(device):
        seen.append(device)
        return 256 * MIB, 80 * GIB  # 79.75 GiB used by the other workers

    with pytest.raises(GpuMemoryError, match=r"needs about 0\.51 GiB on GPU 1, and only 0\.25 GiB of 80\.00 GiB"):
        check_fits(torch.device("cuda", 1), str(tmp_path), manifest, fake_mem_get_info)
    assert seen == [torch.device("cuda", 1)]
    check_fits(torch.device("cuda", 1), str(tmp_path), manifest, lambda d: (2 * GIB, 80 * GIB))  # fits


def test_cpu_workers_are_not_checked(tmp_path: Path):
    def never(device):
        raise AssertionError("mem_get_info called for a CPU worker")

    check_fits(torch.device("cpu"), str(tmp_path), write_weights(tmp_path, 10), never)


def test_an_archive_without_weights_needs_the_workspace_only(tmp_path: Path):
    check_fits(torch.device("cuda"), str(tmp_path), {"model": {"modelFile": "m.py"}}, lambda d: (MIN_WORKSPACE, GIB))
    with pytest.raises(GpuMemoryError):
        check_fits(torch.device("cuda"), str(tmp_path), {"model": {}}, lambda d: (MIN_WORKSPACE - 1, GIB))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_this_gpu_reports_real_numbers(tmp_path: Path):
    check_fits(torch.device("cuda", 0), str(tmp_path), write_weights(tmp_path, MIB))
