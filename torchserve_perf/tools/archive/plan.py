"""What one archive is built from: the model, the handler, its model-config, where it goes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

# handler kind -> (file in torchserve_perf/handlers, its options section in model-config.yaml)
HANDLERS: dict[str, tuple[str, str]] = {
    "image": ("image_handler.py", "image"),
    "text": ("text_handler.py", "text"),
    "tensor": ("tensor_handler.py", "tensor"),
    "transformers": ("transformers_handler.py", "transformers"),
}
KINDS = ("eager", "torchscript", "export", "hf")  # hf: a save_pretrained folder (archive/hf.py)
LAYOUTS = ("mar", "folder", "kserve")


class ArchiveError(Exception):
    """A bad input; the message says what is wrong and how to fix it (the command exits 2)."""


@dataclass(frozen=True)
class ModelSource:
    """The user's model: eager (class file + state dict), TorchScript or torch.export."""

    kind: str
    serialized_file: Path
    model_file: Optional[Path] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ArchiveError(f"unknown model kind {self.kind!r}; use one of {list(KINDS)}")
        if (self.kind == "eager") != (self.model_file is not None):
            raise ArchiveError("an eager model needs --model-file (the nn.Module class) with --weights (its state "
                               "dict); TorchScript and torch.export files need no model file")


@dataclass(frozen=True)
class ArchivePlan:
    """Everything one archive is built from; :func:`~torchserve_perf.tools.archive.build.create_archive`
    turns it into a .mar."""

    name: str
    source: ModelSource
    handler: Path
    export_path: Path
    model_config: Mapping[str, Any]
    version: str = "1.0"
    labels: Optional[Mapping[str, Any]] = None  # index_to_name.json: a label, or a list of names, per index
    extra_files: tuple[Path, ...] = ()
    bundle: bool = True
    layout: str = "mar"
    force: bool = False

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "_-." for c in self.name) or self.name[0] in "-.":
            raise ArchiveError(f"--name {self.name!r}: use letters, digits, '_', '-' or '.' (no leading '-' or '.')")
        if self.layout not in LAYOUTS:
            raise ArchiveError(f"--layout {self.layout!r}: use one of {list(LAYOUTS)}")

    @property
    def store(self) -> Path:
        """The folder the .mar goes into (KServe wants it in model-store/)."""
        return self.export_path / "model-store" if self.layout == "kserve" else self.export_path

    @property
    def output(self) -> Path:
        return self.store / (self.name if self.layout == "folder" else f"{self.name}.mar")
