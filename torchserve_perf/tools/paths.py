"""Where the package's own files are, installed (wheel), editable (checkout) or bundled alike.

Found from the modules themselves, never from a checkout's layout, so the tools work from a wheel.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from types import ModuleType


def _folder(module: ModuleType) -> Path:
    if module.__file__ is None:  # only a namespace package has no file, and ours all have __init__.py
        raise RuntimeError(f"{module.__name__} has no __init__.py to locate it by")
    return Path(os.path.dirname(os.path.abspath(module.__file__)))


def handlers_dir() -> Path:
    from torchserve_perf import handlers
    return _folder(handlers)


def plugins_dir() -> Path:
    from torchserve_perf import plugins
    return _folder(plugins)


def models_dir() -> Path:
    from torchserve_perf import models
    return _folder(models)


def fixtures_dir() -> Path:
    from torchserve_perf import fixtures
    return _folder(fixtures)


def metrics_yaml() -> Path:
    return plugins_dir() / "metrics" / "metrics.yaml"


def results_dir(*parts: str) -> Path:
    """Default output folder: ``results/`` under the current directory (a checkout's is git-ignored)."""
    return Path("results").joinpath(*parts)


def console_script(name: str) -> str:
    """A console script beside this interpreter (a venv's own), else the one on PATH. TorchServe's
    workers run under the interpreter of the ``torchserve`` found, so the one beside ours comes first."""
    beside = Path(sys.executable).with_name(name)
    if beside.is_file():
        return str(beside)
    return shutil.which(name) or str(beside)
