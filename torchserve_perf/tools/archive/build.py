"""Building the archive: the staged files handed to the real ``torch-model-archiver``."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from torchserve_perf.tools import paths
from torchserve_perf.tools.archive.inputs import check_plan
from torchserve_perf.tools.archive.kserve import write_kserve_config
from torchserve_perf.tools.archive.plan import ArchiveError, ArchivePlan
from torchserve_perf.tools.archive.staging import stage_extra, write_model_config


def archiver() -> str:
    """The torch-model-archiver beside this interpreter (a venv's), else the one on PATH."""
    found = paths.console_script("torch-model-archiver")
    if not Path(found).is_file():
        raise ArchiveError("torch-model-archiver is not installed; pip install torch-model-archiver")
    return found


def archiver_command(plan: ArchivePlan, config_path: Path, extra: Path) -> list[str]:
    """The torch-model-archiver command line for ``plan``; ``extra`` is passed only when it holds something."""
    command = [archiver(), "--model-name", plan.name, "--version", plan.version,
               "--serialized-file", str(plan.source.serialized_file), "--handler", str(plan.handler),
               "--config-file", str(config_path), "--export-path", str(plan.store),
               "--archive-format", "no-archive" if plan.layout == "folder" else "default", "--force"]
    if plan.source.model_file is not None:
        command += ["--model-file", str(plan.source.model_file)]
    if any(extra.iterdir()):
        command += ["--extra-files", str(extra)]
    return command


def create_archive(plan: ArchivePlan) -> Path:
    """Stage the plan's files and run torch-model-archiver; returns the .mar (or folder, layout 'folder')."""
    check_plan(plan)
    plan.store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"stage-{plan.name}-") as tmp:
        work = Path(tmp)
        extra = work / "extra"
        stage_extra(plan, extra)
        command = archiver_command(plan, write_model_config(plan, work / "model-config.yaml"), extra)
        # The archiver stages in $TMPDIR/<model name>: a private TMPDIR lets builds run side by side.
        done = subprocess.run(command, env={**os.environ, "TMPDIR": tmp, "TEMP": tmp, "TMP": tmp},  # noqa: S603
                              capture_output=True, text=True)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise RuntimeError(f"torch-model-archiver failed ({done.returncode}): {detail[-1] if detail else ''}")
    if plan.layout == "kserve":
        write_kserve_config(plan)
    return plan.output
