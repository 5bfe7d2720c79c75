#!/usr/bin/env python3
"""Build model_store/: seeded models archived with torch-model-archiver, plus a ready server config.

Each archive bundles the ``torchserve_perf`` namespace with its ``handlers`` and ``plugins``
packages (a staging folder that contains it is given to --extra-files, so it stays a package), so
a stock TorchServe serves it with nothing of ours installed, under the same import path as an
installed copy. ``--no-bundle`` leaves it out, for servers that have the package installed.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from torchserve_perf.models.resnet18 import ResNet18
from torchserve_perf.models.seeded import seeded_state_dict as seeded_state_dict  # re-exported: scripts, tests
from torchserve_perf.models.text_classifier import NUM_LABELS, TextClassifier
from torchserve_perf.plugins.host_defaults import auto_optimizations, detect, fill_model_config
from torchserve_perf.tools import paths
from torchserve_perf.tools.archive import ArchivePlan, ModelSource, create_archive
from torchserve_perf.tools.archive import stage_packages as stage_packages  # re-exported: tests that archive by hand
from torchserve_perf.tools.argparsing import command_parser

ARCHIVER = paths.console_script("torch-model-archiver")
TEXT_LATENCY_MS = 1.3  # text_classifier, one sentence, one intra-op thread, in-process
TEXT_LABELS = ["negative", "neutral", "positive", "question"][:NUM_LABELS]


@dataclass(frozen=True)
class ArchiveSpec:
    name: str
    model_file: Path
    make_model: Callable[[], torch.nn.Module]
    handler: Path
    labels: list[str]
    model_config: dict[str, Any] = field(default_factory=dict)


def default_specs() -> list[ArchiveSpec]:
    return [
        ArchiveSpec(
            name="resnet18",
            model_file=paths.models_dir() / "resnet18.py",
            make_model=ResNet18,
            handler=paths.handlers_dir() / "image_handler.py",
            labels=[f"class_{i:04d}" for i in range(1000)],
            # From the host (plugins/host_defaults.py): a worker per physical core, elastic threads, batch 2
            # (4 clients keep both workers of a 2-core host busy; make tune-grid), 1 ms delay (a lone
            # request does not wait for batch-mates).
            # Optimizations on, as `archive` writes them: auto among the chains that follow elastic
            # threads (torch's, and onnxruntime with a session per thread count), cached per host.
            model_config=fill_model_config({"responseTimeout": 120, "handler": {
                "image": {"topk": 5}, "optimizations": auto_optimizations()}}, detect()),
        ),
        ArchiveSpec(
            name="text_classifier",
            model_file=paths.models_dir() / "text_classifier.py",
            make_model=TextClassifier,
            handler=paths.handlers_dir() / "text_handler.py",
            labels=TEXT_LABELS,
            # One worker (this tiny model is bound by HTTP work, and it shares the demo's host with
            # resnet18); ~1.3 ms per sentence on one thread (measured): batches up to 8, 1 ms delay.
            model_config=fill_model_config({"minWorkers": 1, "maxWorkers": 1, "responseTimeout": 120,
                                            "handler": {"text": {"topk": 3}}}, detect(latency_ms=TEXT_LATENCY_MS)),
        ),
    ]


def find_spec(name: str) -> ArchiveSpec:
    """One of the demo models by name; a usage error names the choices."""
    specs = {s.name: s for s in default_specs()}
    if name not in specs:
        raise SystemExit(f"unknown model {name!r}; choose from {sorted(specs)}")
    return specs[name]


def default_payload(spec: ArchiveSpec) -> bytes:
    """The sample request for a demo model: the 120 kB JPEG for images, a sentence for text."""
    from torchserve_perf.tools.loadgen import SAMPLE_TEXT, sample_image

    return sample_image() if spec.handler.name == "image_handler.py" else SAMPLE_TEXT


def build_archive(spec: ArchiveSpec, export_path: Path, *, bundle: bool = True, name: Optional[str] = None,
                  model_config: Optional[dict] = None, archive_format: str = "default",
                  calibration: Optional[Path] = None) -> Path:
    """Archive one demo model through the same path as ``torchserve-perf archive``; returns the .mar
    (or folder, for archive_format='no-archive'). ``calibration``: a folder of image request bodies,
    as ``archive --calibration`` takes (the image handler only)."""
    from torchserve_perf.tools.archive.calibration import add_calibration

    name = name or spec.name
    config = model_config if model_config is not None else spec.model_config
    with tempfile.TemporaryDirectory(prefix=f"weights-{name}-") as tmp:
        weights = Path(tmp) / f"{name}.pt"
        torch.save(seeded_state_dict(spec.make_model), weights)
        plan = ArchivePlan(name=name, source=ModelSource("eager", weights, spec.model_file), handler=spec.handler,
                           export_path=export_path, model_config=config,
                           labels={str(i): label for i, label in enumerate(spec.labels)}, bundle=bundle,
                           layout="mar" if archive_format == "default" else "folder", force=True)
        if calibration is not None:
            plan = add_calibration(plan, "image", calibration, Path(tmp))
        return create_archive(plan)


def build_stock_archive(export_path: Path, *, name: str = "resnet18_stock", model_config: Optional[dict] = None,
                        archive_format: str = "default") -> Path:
    """ResNet-18 behind TorchServe's own BaseHandler (torchserve_perf/fixtures/), for side-by-side runs."""
    spec = default_specs()[0]
    stock = ArchiveSpec(name=name, model_file=spec.model_file, make_model=spec.make_model,
                        handler=paths.fixtures_dir() / "stock_image_handler.py", labels=spec.labels,
                        model_config={k: v for k, v in spec.model_config.items() if k != "handler"})
    return build_archive(stock, export_path, bundle=False, model_config=model_config, archive_format=archive_format)


def write_server_config(store: Path) -> Path:
    """model_store/config.properties: loopback, Prometheus metrics, our metrics declarations."""
    from torchserve_perf.handlers.options import max_request_size

    metrics_yaml = store / "metrics.yaml"
    shutil.copy2(paths.metrics_yaml(), metrics_yaml)
    props = {
        "inference_address": "http://127.0.0.1:8080",
        "management_address": "http://127.0.0.1:8081",
        "metrics_address": "http://127.0.0.1:8082",
        "metrics_mode": "prometheus",
        "metrics_config": str(metrics_yaml.resolve()),
        "model_store": str(store.resolve()),
        "load_models": "all",
        "install_py_dep_per_model": "false",
        # The frontend refuses larger bodies with a 413 and an empty body (docs/security.md).
        "max_request_size": str(max_request_size([spec.model_config for spec in default_specs()])),
    }
    path = store / "config.properties"
    path.write_text("# Written by torchserve-perf (model store build)\n" + "".join(f"{k}={v}\n" for k, v in props.items()))
    return path


DEMO_TEXT = "text_bert"  # the demo's text model: a small BERT served through archive --hf-model


def build_demo_text(store: Path) -> Optional[Path]:
    """The demo's text model, made the way a user makes one: a small BERT ``save_pretrained`` folder
    (WordPiece tokenizer trained on the shipped corpus, then a short fine-tuning on it; seconds on CPU)
    archived by ``torchserve-perf archive --hf-model`` with one worker. None, with the reason
    printed, when the ``hf`` extra (transformers, tokenizers) is not installed."""
    import importlib.util

    missing = [p for p in ("transformers", "tokenizers", "safetensors") if importlib.util.find_spec(p) is None]
    if missing:
        from torchserve_perf.handlers.hf_model import EXTRA

        print(f"skipped {DEMO_TEXT}: {missing[0]} is not installed (pip install '{EXTRA}')")
        return None
    from torchserve_perf.models.small_bert import SmallBertConfig, write_small_bert
    from torchserve_perf.tools.archive import main as archive_main

    with tempfile.TemporaryDirectory(prefix="demo-bert-") as tmp:
        folder = write_small_bert(Path(tmp) / "bert", SmallBertConfig(), trained=True)
        code = archive_main(["--name", DEMO_TEXT, "--hf-model", str(folder), "--export-path", str(store),
                             "--workers", "1", "--force"])
    if code != 0:
        raise SystemExit(f"archiving {DEMO_TEXT} failed (exit {code})")
    return store / f"{DEMO_TEXT}.mar"


def main(argv: Optional[list[str]] = None) -> int:
    parser = command_parser("model-store", description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("model_store"))
    parser.add_argument("--no-bundle", action="store_true", help="leave handlers/plugins out of the archives")
    parser.add_argument("--only", nargs="*", help="archive only these models")
    args = parser.parse_args(argv)
    for spec in default_specs():
        if args.only and spec.name not in args.only:
            continue
        path = build_archive(spec, args.store, bundle=not args.no_bundle)
        print(f"built {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if not args.only or DEMO_TEXT in args.only:
        build_demo_text(args.store)
    print(f"wrote {write_server_config(args.store)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
