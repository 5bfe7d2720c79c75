"""The user's files: the handler, labels and extra files read, and the plan checked before the archiver runs.

Each check fails with an :class:`~torchserve_perf.tools.archive.plan.ArchiveError` that names its fix.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Optional, Sequence

from torchserve_perf.tools import paths
from torchserve_perf.tools.archive.plan import HANDLERS, ArchiveError, ArchivePlan


def handler_file(handler: str) -> tuple[Path, Optional[str]]:
    """``image``/``text``/``tensor`` -> our handler file and its options section; else a path to your own."""
    if handler in HANDLERS:
        filename, section = HANDLERS[handler]
        return paths.handlers_dir() / filename, section
    path = Path(handler)
    if path.suffix != ".py" or not path.is_file():
        raise ArchiveError(f"--handler {handler!r} is neither one of {sorted(HANDLERS)} nor a .py file; "
                           "give image, text, tensor or the path of your handler file")
    return path, None


def read_labels(path: Path) -> dict[str, Any]:
    """index_to_name.json from a JSON mapping ({"0": "cat"}), a JSON list, or a text file of one label a line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ArchiveError(f"--labels {path}: {exc.strerror}; give an existing file") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchiveError(f"--labels {path}: not JSON ({exc.msg}, line {exc.lineno})") from None
        if isinstance(data, list):
            data = {str(i): label for i, label in enumerate(data)}
        if not isinstance(data, dict) or not all(str(k).isdigit() for k in data):
            raise ArchiveError(f"--labels {path}: give a list of labels or a mapping of class index to label")
        return {str(k): v if isinstance(v, (str, list)) else str(v) for k, v in data.items()}
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise ArchiveError(f"--labels {path} is empty; give one label a line or a JSON list")
    return {str(i): label for i, label in enumerate(labels)}


def split_extra_files(values: Sequence[str]) -> tuple[Path, ...]:
    """--extra-files takes paths one by one or comma-separated, as torch-model-archiver does."""
    found = []
    for value in values:
        for part in value.split(","):
            if part.strip():
                path = Path(part.strip())
                if not path.exists():
                    raise ArchiveError(f"--extra-files {path}: no such file or folder")
                found.append(path)
    return tuple(found)


def _check_extra_names(plan: ArchivePlan) -> None:
    """Extra files land at the archive's root by their own names: refuse names that clash."""
    taken = {"MAR-INF": "the archive's manifest", "model-config.yaml": "the generated model config",
             plan.handler.name: "the handler file", plan.source.serialized_file.name: "the serialized model"}
    if plan.source.model_file is not None:
        taken[plan.source.model_file.name] = "the model file"
    if plan.bundle:
        taken["torchserve_perf"] = "our bundled package (or give --no-bundle)"
    if plan.labels is not None:
        taken["index_to_name.json"] = "the --labels file"
    seen: set[str] = set()
    for path in plan.extra_files:
        if path.name in taken:
            raise ArchiveError(f"--extra-files {path}: the name {path.name!r} is already {taken[path.name]}; rename it")
        if path.name in seen:
            raise ArchiveError(f"--extra-files: two entries named {path.name!r}; each lands at the archive's root, "
                               "rename one")
        seen.add(path.name)


def check_plan(plan: ArchivePlan) -> None:
    """Cheap checks before the archiver runs; each failure names its fix."""
    source = plan.source
    if not source.serialized_file.is_file():
        raise ArchiveError(f"{source.serialized_file}: no such file")
    if source.model_file is not None and (source.model_file.suffix != ".py" or not source.model_file.is_file()):
        raise ArchiveError(f"--model-file {source.model_file}: give the .py file that defines your nn.Module class")
    if source.kind == "torchscript" and not _is_zip_with(source.serialized_file, ("constants.pkl", "/code/")):
        raise ArchiveError(f"--torchscript {source.serialized_file} is not a TorchScript file; save it with "
                           "torch.jit.save(torch.jit.script(model) or torch.jit.trace(model, x), path)")
    if source.kind == "export" and (source.serialized_file.suffix != ".pt2"
                                    or not _is_zip_with(source.serialized_file, ("",))):
        raise ArchiveError(f"--exported {source.serialized_file} is not a torch.export program; save it with "
                           "torch.export.save(torch.export.export(model, (x,)), 'model.pt2')")
    if not plan.handler.is_file():
        raise ArchiveError(f"--handler {plan.handler}: no such file")
    _check_extra_names(plan)
    if plan.output.exists() and not plan.force:
        raise ArchiveError(f"{plan.output} exists; give --force to overwrite it or another --name/--export-path")


def _is_zip_with(path: Path, markers: Sequence[str]) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(marker in name for name in archive.namelist() for marker in markers)
    except (zipfile.BadZipFile, OSError):
        return False
