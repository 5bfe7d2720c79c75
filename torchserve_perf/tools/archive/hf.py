"""A Hugging Face ``save_pretrained`` folder as an archive: ``torchserve-perf archive --hf-model DIR``.

The folder's files land at the archive's root (the weights as the serialized file), where the
Transformers handler loads them offline. Settings written the way TorchServe's Transformers
example writes them (``handler:`` in its model-config.yaml, or ``setup_config.json`` before 0.8)
are read from the folder and turned into ours; ``--samples FILE`` adds the sample requests that
gate dynamic int8 (plugins/optimizations/dynamic_int8.py).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from torchserve_perf.tools.archive.model_config import read_model_config
from torchserve_perf.tools.archive.plan import ArchiveError

WEIGHTS = ("model.safetensors", "pytorch_model.bin")
# The example's handler settings; ours replace them (see example_settings).
EXAMPLE_KEYS = ("model_name", "mode", "do_lower_case", "num_labels", "save_mode", "max_length", "captum_explanation",
                "embedding_name", "FasterTransformer", "BetterTransformer", "model_parallel")
EXAMPLE_MODES = {"sequence_classification": "ForSequenceClassification",
                 "token_classification": "ForTokenClassification"}
SETTINGS_FILES = ("model-config.yaml", "setup_config.json")
SAMPLES_NAME = "samples.pt"  # where plugins/optimizations/dynamic_int8.py looks
SECTION = "transformers"


@dataclass(frozen=True)
class HfFolder:
    """The folder's weights file (the archive's serialized file) and every other file it carries."""

    weights: Path
    others: tuple[Path, ...]
    config: Mapping[str, Any]


def read_folder(folder: Path) -> HfFolder:
    if not (folder / "config.json").is_file():
        raise ArchiveError(f"--hf-model {folder}: no config.json; give a folder written by save_pretrained")
    if not (folder / "tokenizer.json").is_file():
        raise ArchiveError(f"--hf-model {folder}: no tokenizer.json (a fast tokenizer); save the tokenizer "
                           "into the folder with tokenizer.save_pretrained(folder)")
    weights = next((folder / name for name in WEIGHTS if (folder / name).is_file()), None)
    if weights is None:
        shards = sorted(folder.glob("model-*.safetensors"))
        if not shards:
            raise ArchiveError(f"--hf-model {folder}: no weights ({' or '.join(WEIGHTS)} or shards)")
        weights = shards[0]
    others = tuple(p for p in sorted(folder.iterdir()) if p != weights and p.name not in SETTINGS_FILES
                   and p.is_file() and not p.name.startswith("."))
    return HfFolder(weights, others, json.loads((folder / "config.json").read_text()))


def example_handler_section(folder: Path, model_config: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The example's settings: the ``handler:`` section of a model-config (given, or the folder's), else
    the folder's setup_config.json; {} when there are none."""
    import yaml

    if model_config is None and (folder / "model-config.yaml").is_file():
        model_config = yaml.safe_load((folder / "model-config.yaml").read_text()) or {}
    section = dict((model_config or {}).get("handler") or {})
    if any(key in section for key in EXAMPLE_KEYS):
        return {k: v for k, v in section.items() if k in EXAMPLE_KEYS}
    if (folder / "setup_config.json").is_file():
        return json.loads((folder / "setup_config.json").read_text())
    return {}


def example_settings(example: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The example's handler settings -> our ``transformers:`` options, checked against the folder's config.

    ``model_name`` named the Hub model to download (we serve the folder); ``do_lower_case`` is the
    tokenizer's own setting, saved with it. Pure: see its table test."""
    options: dict[str, Any] = {}
    architectures = list(config.get("architectures") or [])
    mode = example.get("mode")
    if mode is not None:
        if mode not in EXAMPLE_MODES:
            raise ArchiveError(f"mode {mode!r}: the Transformers handler serves {sorted(EXAMPLE_MODES)}")
        if not any(a.endswith(EXAMPLE_MODES[mode]) for a in architectures):
            raise ArchiveError(f"mode {mode!r}, but config.json's architectures are {architectures}; "
                               "save the model for that task or fix mode")
    save_mode = example.get("save_mode", "pretrained")
    if save_mode != "pretrained":
        raise ArchiveError(f"save_mode {save_mode!r}: archive the save_pretrained folder (save_mode: pretrained)")
    if example.get("num_labels") is not None:
        expected = len(config.get("id2label") or {}) or int(config.get("num_labels", 0) or 0)
        if expected and int(example["num_labels"]) != expected:
            raise ArchiveError(f"num_labels {example['num_labels']}, but config.json has {expected} labels")
    if example.get("max_length") is not None:
        options["max_length"] = int(example["max_length"])
    return options


def without_example_keys(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """A model-config with the example's handler keys taken out (ours replace them)."""
    handler = {k: v for k, v in (model_config.get("handler") or {}).items() if k not in EXAMPLE_KEYS}
    rest = {k: v for k, v in model_config.items() if k != "handler"}
    return {**rest, "handler": handler} if handler else rest


def read_samples(path: Path) -> list[str]:
    """Sample requests: one text a line, JSON lines with a "text" field, or a JSON list of strings."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ArchiveError(f"--samples {path}: {exc.strerror}") from None
    if path.suffix == ".json":
        items = json.loads(text)
        samples = [s if isinstance(s, str) else str(s.get("text", "")) for s in items]
    else:
        samples = [json.loads(line).get("text", "") if line.lstrip().startswith("{") else line
                   for line in text.splitlines() if line.strip()]
    samples = [s for s in samples if s.strip()]
    if not samples:
        raise ArchiveError(f"--samples {path} holds no texts; give one sample request a line")
    return samples


def write_samples(folder: Path, samples: list[str], max_length: int, target: Path) -> Path:
    """The samples tokenized with the folder's tokenizer, padded: the model inputs the gate runs."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, use_fast=True)
    limit = max_length or min(int(tokenizer.model_max_length or 512), 512)
    encoded = tokenizer(samples, truncation=True, max_length=limit, padding=True, return_tensors="pt")
    torch.save({"samples": encoded["input_ids"].contiguous()}, target)
    return target


def samples_file(folder: Path, samples: Path, max_length: int) -> Path:
    """``--samples FILE`` as samples.pt in a fresh temporary folder (it outlives the build; tiny)."""
    target = Path(tempfile.mkdtemp(prefix="hf-samples-")) / SAMPLES_NAME
    return write_samples(folder, read_samples(samples), max_length, target)


def gated_optimizations(base: Mapping[str, Any]) -> dict[str, Any]:
    """auto's section with dynamic int8 added and allowed: the archive carries its gate's samples."""
    section = {k: dict(v) if isinstance(v, Mapping) else v for k, v in base.items()}
    auto = dict(section.get("auto") or {})
    candidates = list(auto.get("candidates") or [])
    auto["candidates"] = ["int8_dynamic", *[c for c in candidates if c != "int8_dynamic"]]
    auto["allow"] = sorted({*auto.get("allow", ()), "int8_dynamic"})
    section["auto"] = auto
    return section


def hf_model_config(folder: HfFolder, folder_path: Path, base: Mapping[str, Any],
                    user: Optional[Mapping[str, Any]] = None, gated: bool = False) -> dict[str, Any]:
    """Our model-config for the folder: ``base`` (our defaults), the example's settings turned into
    ``transformers:`` options, the user's file merged over them; auto with gated int8 when ``gated``."""
    from torchserve_perf.tools.archive.model_config import merge_model_config

    options = example_settings(example_handler_section(folder_path, user), folder.config)
    config = merge_model_config(base, {"handler": {"transformers": options}} if options else {})
    if user:
        config = merge_model_config(config, without_example_keys(user))
    optimizations = (config.get("handler") or {}).get("optimizations")
    if gated and isinstance(optimizations, Mapping) and list(optimizations.get("chain") or []) == ["auto"]:
        config["handler"]["optimizations"] = gated_optimizations(optimizations)
    return config


def hf_plan(name: str, folder_path: Path, export_path: Path, model_config: Mapping[str, Any], *,
            samples: Optional[Path] = None, extra_files: tuple[Path, ...] = (), **plan: Any) -> Any:
    """The :class:`~torchserve_perf.tools.archive.plan.ArchivePlan` of a save_pretrained folder
    (``samples``: a samples.pt already written, see :func:`samples_file`)."""
    from torchserve_perf.tools import paths
    from torchserve_perf.tools.archive.plan import ArchivePlan, ModelSource

    folder = read_folder(folder_path)
    extra = folder.others + ((samples,) if samples is not None else ()) + tuple(extra_files)
    return ArchivePlan(name=name, source=ModelSource("hf", folder.weights),
                       handler=paths.handlers_dir() / "transformers_handler.py", export_path=export_path,
                       model_config=model_config, extra_files=extra, **plan)


def plan_from_hf(args: Any, model_config_from_args: Callable[[Any, Optional[str]], dict[str, Any]]) -> tuple[Any, str]:
    """``archive --hf-model DIR [--samples FILE]``: the plan and its handler's options section."""
    import argparse

    from torchserve_perf.tools.archive.inputs import split_extra_files
    from torchserve_perf.tools.archive.model_config import check_model_config

    folder_path = Path(args.hf_model)
    folder = read_folder(folder_path)
    user = read_model_config(args.model_config) if args.model_config else None
    base = model_config_from_args(argparse.Namespace(**{**vars(args), "model_config": None}), SECTION)
    config = hf_model_config(folder, folder_path, base, user, gated=args.samples is not None)
    check_model_config(config, SECTION)
    max_length = int((config.get("handler") or {}).get(SECTION, {}).get("max_length", 0) or 0)
    samples = samples_file(folder_path, args.samples, max_length) if args.samples is not None else None
    plan = hf_plan(args.name, folder_path, args.export_path, config, samples=samples,
                   extra_files=split_extra_files(args.extra_files), version=args.version, bundle=not args.no_bundle,
                   layout=args.layout, force=args.force)
    return plan, SECTION


def verify_hf(folder: Path) -> str:
    """Load the folder as a worker will (offline) and run one text through it."""
    import torch

    from torchserve_perf.handlers.hf_model import TransformersLoadError, load_transformers

    try:
        model = load_transformers(str(folder), torch.device("cpu"))
    except TransformersLoadError as exc:
        raise ArchiveError(str(exc)) from None
    ids = model.tokenizer(["a sentence to check the model"], return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.module(ids)
    return f"{model.task}, {len(model.labels)} labels, output {list(out.shape)} for {list(ids.shape)} token ids"
