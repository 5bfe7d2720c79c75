"""``torchserve-perf archive --from EXISTING.mar``: a stock TorchServe archive rebuilt with our handler.

The archive's manifest names its pieces: the model file, the serialized file, the handler, a
model-config.yaml; everything else at its root is an extra file. Stock's built-in handlers map to
ours (``image_classifier`` -> image, answering in stock's shape; ``text_classifier`` -> text; the
Transformers example -> our Transformers text path, its max_length, labels and task kept); the
model, its labels and extra files carry over, and the serving settings become our defaults. A
piece with no counterpart stops the conversion with one line that names it.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from torchserve_perf.tools.archive.inputs import read_labels
from torchserve_perf.tools.archive.plan import ArchiveError, ArchivePlan, ModelSource

MANIFEST = "MAR-INF/MANIFEST.json"
LABELS = "index_to_name.json"
SETUP_CONFIG = "setup_config.json"  # the Transformers example's settings in releases before model-config.yaml
# Stock's built-in handlers and ours that serve the same requests.
BUILTIN = {"image_classifier": "image", "text_classifier": "text"}
# What stock's image_classifier answers: {label: probability} of the top 5, unrounded.
STOCK_IMAGE_OPTIONS = {"response": "stock", "topk": 5}
# Stock handlers that have no counterpart here, and why.
UNMAPPED = {
    "object_detector": "stock's object detector (boxes) has no counterpart here",
    "image_segmenter": "stock's image segmenter (masks) has no counterpart here",
    "base_handler": "BaseHandler alone leaves the request format to the model; give --handler tensor with "
                    "--model-file/--weights instead",
}


@dataclass(frozen=True)
class StockArchive:
    """A stock archive unpacked at ``root``: what its manifest names, and the files it does not."""

    root: Path
    name: str
    version: str
    handler: str
    serialized_file: Optional[str]
    model_file: Optional[str]
    config_file: Optional[str]
    requirements_file: Optional[str]
    source_vocab: Optional[str]
    others: tuple[str, ...]  # the rest of the root: labels, setup_config.json, the user's own files

    def path(self, name: str) -> Path:
        return self.root / name


@dataclass(frozen=True)
class Conversion:
    """How the stock archive is rebuilt: our handler's section and options, the model, labels, extras."""

    section: str
    options: Mapping[str, Any]
    source: ModelSource
    labels: Optional[Mapping[str, Any]]
    extra_files: tuple[Path, ...]
    notes: tuple[str, ...] = ()


def unpack(archive: Path, into: Path) -> Path:
    """The archive's root: ``into`` for a .mar (a zip), the folder itself for an unpacked archive."""
    if archive.is_dir():
        if not (archive / MANIFEST).is_file():
            raise ArchiveError(f"--from {archive}: a folder without {MANIFEST}; give a .mar or an unpacked archive")
        return archive
    try:
        with zipfile.ZipFile(archive) as mar:
            for member in mar.namelist():
                target = (into / member).resolve()
                if not target.is_relative_to(into.resolve()):  # a name such as ../x would escape the folder
                    raise ArchiveError(f"--from {archive}: the entry {member!r} points outside the archive")
            mar.extractall(into)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"--from {archive}: not a readable .mar ({exc})") from None
    if not (into / MANIFEST).is_file():
        raise ArchiveError(f"--from {archive}: no {MANIFEST}; is it a torch-model-archiver .mar?")
    return into


def read_stock_archive(root: Path) -> StockArchive:
    """The manifest's pieces and the other files at ``root``."""
    try:
        manifest = json.loads((root / MANIFEST).read_text())
        model = manifest["model"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ArchiveError(f"{MANIFEST}: unreadable or without a 'model' section") from None
    if not isinstance(model, dict) or not model.get("handler"):
        raise ArchiveError(f"{MANIFEST}: the model section names no handler")
    named = {model.get(key) for key in ("serializedFile", "modelFile", "configFile", "requirementsFile", "sourceVocab")}
    handler = str(model["handler"])
    named.add(handler.split(":")[0])
    others = tuple(sorted(p.name for p in root.iterdir() if p.name != "MAR-INF" and p.name not in named))
    return StockArchive(root=root, name=str(model.get("modelName") or root.name), version=str(model.get("modelVersion")
                        or "1.0"), handler=handler, serialized_file=model.get("serializedFile"),
                        model_file=model.get("modelFile"), config_file=model.get("configFile"),
                        requirements_file=model.get("requirementsFile"), source_vocab=model.get("sourceVocab"),
                        others=others)


def handler_name(handler: str) -> str:
    """A manifest's handler as a bare name: ``image_classifier``, ``ts.torch_handler.image_classifier``
    and ``image_classifier:handle`` are all ``image_classifier``; a file keeps its ``.py``."""
    module = handler.split(":")[0]
    if module.endswith(".py"):
        return module.rsplit("/", 1)[-1]
    return module.rsplit(".", 1)[-1]


def handler_settings(stock: StockArchive) -> dict[str, Any]:
    """The handler's own settings: model-config.yaml's ``handler:`` section, else setup_config.json."""
    import yaml

    if stock.config_file and stock.path(stock.config_file).is_file():
        try:
            section = (yaml.safe_load(stock.path(stock.config_file).read_text()) or {}).get("handler")
        except (yaml.YAMLError, AttributeError):
            raise ArchiveError(f"{stock.config_file}: not a YAML mapping") from None
        if isinstance(section, dict) and section:
            return section
    if SETUP_CONFIG in stock.others:
        try:
            found = json.loads(stock.path(SETUP_CONFIG).read_text())
        except ValueError:
            raise ArchiveError(f"{SETUP_CONFIG}: not JSON") from None
        return found if isinstance(found, dict) else {}
    return {}


def is_transformers_example(stock: StockArchive, settings: Mapping[str, Any]) -> bool:
    """TorchServe's Transformers example: its own handler file reading ``model_name`` and ``mode``."""
    return "transformer" in handler_name(stock.handler).lower() and "mode" in settings


def model_source(stock: StockArchive) -> ModelSource:
    """Eager (a model file and its state dict), TorchScript or torch.export, from the manifest's files."""
    if not stock.serialized_file:
        raise ArchiveError(f"{MANIFEST}: no serialized file; a model built in the handler cannot be converted")
    serialized = stock.path(stock.serialized_file)
    if stock.model_file:
        return ModelSource("eager", serialized, stock.path(stock.model_file))
    if serialized.suffix == ".pt2":
        return ModelSource("export", serialized)
    try:
        with zipfile.ZipFile(serialized) as saved:
            scripted = any(name.endswith("constants.pkl") or "/code/" in name for name in saved.namelist())
    except (zipfile.BadZipFile, OSError):
        scripted = False
    if not scripted:
        raise ArchiveError(f"serialized file {stock.serialized_file}: not TorchScript or torch.export, and the "
                           "archive has no model file to load it into")
    return ModelSource("torchscript", serialized)


def mapped_section(stock: StockArchive, settings: Mapping[str, Any]) -> str:
    """Our handler for ``stock``'s: image, text or transformers; an ArchiveError names a handler without one."""
    name = handler_name(stock.handler)
    if is_transformers_example(stock, settings):
        return "transformers"
    if name in UNMAPPED:
        raise ArchiveError(f"handler {name}: {UNMAPPED[name]}")
    if name not in BUILTIN:
        raise ArchiveError(f"handler {name}: a handler of your own has no counterpart here; build with --handler "
                           "image|text|tensor and --model-file/--weights")
    return BUILTIN[name]


def convert(stock: StockArchive) -> Conversion:
    """How ``stock`` (served by stock's image or text classifier) is rebuilt with our handler; an
    ArchiveError names the piece that cannot be. The Transformers example goes through
    :func:`transformers_folder` instead."""
    section = mapped_section(stock, handler_settings(stock))
    if section not in ("image", "text"):
        raise ArchiveError(f"handler {handler_name(stock.handler)}: converted through the Transformers text path")
    if section == "text" and stock.source_vocab:
        raise ArchiveError(f"source vocabulary {stock.source_vocab}: our text handler hashes words instead of "
                           "looking them up, so a model trained on this vocabulary would get other ids")
    notes = []
    if stock.requirements_file:
        notes.append(f"requirements file {stock.requirements_file} left out: install its packages on the server")
    carried = [n for n in stock.others if n not in (LABELS, SETUP_CONFIG)]
    labels = read_labels(stock.path(LABELS)) if LABELS in stock.others else None
    return Conversion(section=section, options=STOCK_IMAGE_OPTIONS if section == "image" else {},
                      source=model_source(stock), labels=labels,
                      extra_files=tuple(stock.path(n) for n in carried), notes=tuple(notes))


def transformers_folder(stock: StockArchive, into: Path) -> Path:
    """The Transformers example's files as a ``save_pretrained`` folder for our Transformers path: the
    weights, config and tokenizer files and the example's settings (``handler:`` of its model-config,
    or setup_config.json, which that path reads); its handler left out. The labels of
    index_to_name.json become config.json's ``id2label``, so answers keep the example's labels."""
    import shutil

    folder = into / "hf-model"
    folder.mkdir()
    skip = {handler_name(stock.handler), LABELS, stock.requirements_file}
    names = [n for n in (stock.serialized_file, stock.config_file, *stock.others) if n and n not in skip]
    for name in names:
        source = stock.path(name)
        target = folder / ("model-config.yaml" if name == stock.config_file else name)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy2(source, target)
    if LABELS in stock.others and (folder / "config.json").is_file():
        labels = read_labels(stock.path(LABELS))
        config = json.loads((folder / "config.json").read_text())
        id2label = {str(k): v[-1] if isinstance(v, list) else str(v) for k, v in labels.items()}
        config["id2label"] = id2label
        config["label2id"] = {v: int(k) for k, v in id2label.items()}
        (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def plan_from_stock(args: Any, make_config: Callable[[Any, Optional[str]], dict[str, Any]]
                    ) -> tuple[ArchivePlan, Optional[str]]:
    """``archive --from``'s plan: the stock archive unpacked (into a folder removed at exit), converted,
    with ``make_config(args, section)``'s model-config (our defaults and the options given) and the
    conversion's handler options over them."""
    import atexit
    import shutil
    import sys
    import tempfile

    from torchserve_perf.tools.archive.inputs import handler_file, split_extra_files
    from torchserve_perf.tools.archive.model_config import check_model_config, merge_model_config

    workdir = Path(tempfile.mkdtemp(prefix="from-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    (workdir / "archive").mkdir()
    stock = read_stock_archive(unpack(args.from_archive, workdir / "archive"))
    if mapped_section(stock, handler_settings(stock)) == "transformers":
        import argparse

        from torchserve_perf.tools.archive.hf import plan_from_hf

        folder = transformers_folder(stock, workdir)
        print(f"from {args.from_archive}: handler {handler_name(stock.handler)} (the Transformers example) -> "
              "transformers", flush=True)
        version = stock.version if args.version == "1.0" else args.version
        return plan_from_hf(argparse.Namespace(**{**vars(args), "hf_model": folder, "name": args.name or stock.name,
                                                  "version": version}), make_config)
    conversion = convert(stock)
    for note in conversion.notes:
        print(f"note: {note}", file=sys.stderr)
    handler, section = handler_file(conversion.section)
    config = make_config(args, section)
    if conversion.options:  # what the user gave (--topk, --model-config) still wins
        given = dict((config.get("handler") or {}).get(section) or {})
        config = merge_model_config(config, {"handler": {section: {**conversion.options, **given}}})
        check_model_config(config, section)
    plan = ArchivePlan(name=args.name or stock.name, version=stock.version if args.version == "1.0" else args.version,
                       source=conversion.source, handler=handler, export_path=args.export_path, model_config=config,
                       labels=conversion.labels,
                       extra_files=conversion.extra_files + split_extra_files(args.extra_files),
                       bundle=not args.no_bundle, layout=args.layout, force=args.force)
    print(f"from {args.from_archive}: handler {handler_name(stock.handler)} -> {conversion.section}; "
          f"{conversion.source.kind} model {conversion.source.serialized_file.name}"
          + (f", extra files {', '.join(p.name for p in conversion.extra_files)}" if conversion.extra_files else ""),
          flush=True)
    return plan, section
