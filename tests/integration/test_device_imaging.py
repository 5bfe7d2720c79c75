"""test_device_imaging: the tests that start real processes (TorchServe, the archiver, load clients)."""

from __future__ import annotations

import subprocess
import sys


def test_the_cpu_path_never_imports_torchvision():
    code = ("import sys, torch\n"
            "from torchserve_perf.handlers.device_imaging import DeviceImages\n"
            "from torchserve_perf.handlers.options import ImageOptions\n"
            "from torchserve_perf.plugins.decode_pool import DecodeConfig, DecodePool\n"
            "from torchserve_perf.tools.loadgen import sample_image\n"
            "d = DeviceImages.for_handler(DecodeConfig(on_device='always'), ImageOptions(), torch.device('cpu'))\n"
            "out = d.decode_all([sample_image()], lambda b, i: None, DecodePool(1))\n"
            "assert out[0].shape == (1, 3, 224, 224), out\n"
            "print('torchvision' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"

