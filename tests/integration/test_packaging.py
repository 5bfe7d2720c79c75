"""The package imported in a fresh interpreter, from a folder outside the checkout: cheap imports (no
torch for the command line) and no side effects. The static half is tests/unit/test_packaging.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


# ---- cheap, side-effect-free imports ---------------------------------------------------------------
def test_importing_the_package_and_the_cli_loads_no_torch(tmp_path: Path) -> None:
    code = ("import sys, torchserve_perf, torchserve_perf.cli, torchserve_perf.tools, "
            "torchserve_perf.tools.argparsing, torchserve_perf.tools.paths\n"
            "heavy = sorted(m for m in ('torch', 'numpy', 'ts', 'requests', 'yaml', 'matplotlib') if m in sys.modules)\n"
            "print(','.join(heavy) or 'none')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none" and done.stderr == "", done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == [], "importing wrote files into the current directory"


def test_top_level_help_loads_no_torch(tmp_path: Path) -> None:
    code = "import sys\nfrom torchserve_perf.cli import main\nmain(['--help'])\nprint('torch' in sys.modules)\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip().endswith("False"), done.stdout + done.stderr


@pytest.mark.parametrize("module", ["torchserve_perf.handlers", "torchserve_perf.plugins",
                                    "torchserve_perf.tools.archive", "torchserve_perf.tools.bench"])
def test_importing_a_module_has_no_side_effects(module: str, tmp_path: Path) -> None:
    code = f"import {module}\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "", done.stdout
    assert list(tmp_path.iterdir()) == [], "importing wrote files into the current directory"

