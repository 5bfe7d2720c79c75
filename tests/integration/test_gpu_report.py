"""test_gpu_report: the tests that start real processes (TorchServe, the archiver, load clients)."""

from __future__ import annotations

import torch


def test_limits_child_writes_json(tmp_path):
    from torchserve_perf.tools.gpu_report import limits_in_child

    report = limits_in_child(True, tmp_path / "gpu.json")
    assert (tmp_path / "gpu.json").is_file()
    assert ("skipped" in report) is (not torch.cuda.is_available())

