"""Staging an archive's files: what lands at its root beside the model and the handler."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from torchserve_perf.tools import paths
from torchserve_perf.tools.archive.plan import ArchivePlan

IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")


def copy_into(path: Path, folder: Path) -> None:
    """``path`` (a file, or a folder without bytecode) into ``folder`` under its own name."""
    if path.is_dir():
        shutil.copytree(path, folder / path.name, ignore=IGNORED)
    else:
        shutil.copy2(path, folder / path.name)


def stage_packages(target: Path) -> None:
    """Copy the ``torchserve_perf`` namespace a worker needs into ``target`` (an --extra-files folder).

    Only what a worker imports: the package's ``__init__`` and ``ts_compat``, ``handlers`` and
    ``plugins`` (not the tools).
    """
    import torchserve_perf

    root = target / "torchserve_perf"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(torchserve_perf.__file__, root / "__init__.py")
    shutil.copy2(Path(torchserve_perf.__file__).with_name("ts_compat.py"), root / "ts_compat.py")
    shutil.copytree(paths.handlers_dir(), root / "handlers", ignore=IGNORED)
    shutil.copytree(paths.plugins_dir(), root / "plugins", ignore=IGNORED)


def stage_extra(plan: ArchivePlan, extra: Path) -> None:
    """Fill ``extra``, the one folder given to --extra-files: its content lands at the archive's root, so
    the bundled torchserve_perf/ and the user's own folders stay packages under their own names."""
    extra.mkdir(parents=True, exist_ok=True)
    if plan.bundle:
        stage_packages(extra)
    if plan.labels is not None:
        (extra / "index_to_name.json").write_text(json.dumps(dict(plan.labels)))
    for path in plan.extra_files:
        copy_into(path, extra)


def write_model_config(plan: ArchivePlan, path: Path) -> Path:
    """The plan's model-config as YAML at ``path``, keys in the plan's order."""
    import yaml

    path.write_text(yaml.safe_dump(dict(plan.model_config), sort_keys=False))
    return path
