"""Build a .mar for your own model with our handler bundled: ``torchserve-perf archive``.

Three ways in, one archive out:

- eager:       ``--model-file net.py --weights net.pt`` (one nn.Module class, its state dict)
- TorchScript: ``--torchscript net.ts.pt``
- torch.export: ``--exported net.pt2``

The archive carries the handler (``--handler image|text|tensor`` or your own file), the
``torchserve_perf`` namespace (unless ``--no-bundle``: then the server needs the package
installed), a ``model-config.yaml`` of sensible defaults with a ``handler:`` section, labels and
your extra files. It wraps the real ``torch-model-archiver``. For example::

    torchserve-perf archive --name mlp --model-file mlp.py --weights mlp.pt --input-shape 16
    torchserve-perf archive --name resnet --torchscript resnet.ts.pt --handler image \\
        --labels index_to_name.json --export-path model_store --force
    torchserve-perf archive --name mlp --exported mlp.pt2 --layout kserve --export-path kserve/

``--layout kserve`` writes ``model-store/NAME.mar`` and ``config/config.properties`` (what
KServe's TorchServe runtime mounts) under the export path.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

from torchserve_perf.tools.archive.build import create_archive
from torchserve_perf.tools.archive.calibration import add_calibration
from torchserve_perf.tools.archive.inputs import check_plan, handler_file, read_labels, split_extra_files
from torchserve_perf.tools.archive.model_config import (
    check_model_config,
    default_model_config,
    merge_model_config,
    optimizations_section,
    read_model_config,
)
from torchserve_perf.tools.archive.plan import HANDLERS, LAYOUTS, ArchiveError, ArchivePlan, ModelSource
from torchserve_perf.tools.archive.verify import verify_model
from torchserve_perf.tools.argparsing import command_parser


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = command_parser("archive", description=__doc__.splitlines()[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--name", help="model name (the URL is /predictions/NAME; with --from: the archive's)")
    parser.add_argument("--version", default="1.0", help="model version (default 1.0)")
    model = parser.add_argument_group("the model (one of)")
    model.add_argument("--model-file", type=Path, help="eager: the .py file defining one nn.Module class")
    model.add_argument("--weights", type=Path, help="eager: its state dict (torch.save(model.state_dict(), path))")
    model.add_argument("--torchscript", type=Path, help="a TorchScript file (torch.jit.save)")
    model.add_argument("--exported", type=Path, help="a torch.export program (.pt2, torch.export.save)")
    model.add_argument("--from", dest="from_archive", type=Path, metavar="EXISTING.mar",
                       help="a stock TorchServe archive (.mar or unpacked), rebuilt with our handler and defaults: "
                            "image_classifier -> image (answering in stock's shape), text_classifier -> text")
    model.add_argument("--hf-model", type=Path, metavar="DIR",
                       help="a Hugging Face save_pretrained folder (sequence or token classification), served by "
                            "the transformers handler; its TorchServe-example settings (model-config.yaml "
                            "handler:, setup_config.json) are read (docs/transformers.md)")
    model.add_argument("--samples", type=Path, metavar="FILE",
                       help="--hf-model: sample requests (one text a line) carried in the archive, so auto may "
                            "keep dynamic int8 when their labels agree with fp32")
    handler = parser.add_argument_group("handler and its settings")
    handler.add_argument("--handler", default="tensor",
                         help="image, text, tensor (default) or the path of your own handler file")
    handler.add_argument("--input-shape", type=int, nargs="+", metavar="N",
                         help="tensor: shape of one row without the batch dimension (checked on every request)")
    handler.add_argument("--dtype", choices=("float32", "float64", "int64", "int32"), help="tensor: input dtype")
    handler.add_argument("--topk", type=int, help="image/text: labels returned per request")
    handler.add_argument("--labels", type=Path, help="index_to_name.json, a JSON list or a text file of one label a line")
    serve = parser.add_argument_group("serving defaults (written to model-config.yaml)")
    serve.add_argument("--workers", type=int, help="workers (default: the physical cores of this machine, one "
                                                   "intra-op thread each)")
    serve.add_argument("--batch-size", type=int, help="max batch size (default: from the host, see plugins/host_defaults.py)")
    serve.add_argument("--max-batch-delay", type=int,
                       help="ms to wait to fill a batch (default: from the host, 1 ms; TorchServe reads 0 as 100 ms)")
    serve.add_argument("--response-timeout", type=int, default=120, help="seconds (default 120)")
    serve.add_argument("--optimizations", metavar="auto|none|CHAIN",
                       help="auto (the default for our handlers): at load, the fastest lossless chain that "
                            "passes parity, cached per host; none: eager; or a chain such as "
                            "channels_last,torchscript (docs/optimizations.md)")
    serve.add_argument("--calibration", type=Path, metavar="DIR",
                       help="a folder of request bodies (images, .npy, JSON) like your traffic: the model is "
                            "quantized to int8 on them now and carried in the archive; workers keep int8 only "
                            "if the accuracy gate passes on held-out samples (docs/int8.md)")
    serve.add_argument("--model-config", type=Path,
                       help="your own model-config.yaml, merged over the defaults (its handler: sections too)")
    out = parser.add_argument_group("output")
    out.add_argument("--extra-files", nargs="+", default=[], metavar="PATH",
                     help="files or folders put at the archive's root (comma-separated also works)")
    out.add_argument("--export-path", type=Path, default=Path("model_store"), help="default: model_store/")
    out.add_argument("--layout", choices=LAYOUTS, default="mar",
                     help="mar (default), folder (unpacked, --archive-format no-archive) or kserve "
                          "(model-store/NAME.mar + config/config.properties)")
    out.add_argument("--kserve-layout", dest="layout", action="store_const", const="kserve",
                     help="the same as --layout kserve")
    out.add_argument("--force", action="store_true", help="overwrite an existing archive")
    out.add_argument("--no-bundle", action="store_true",
                     help="leave torchserve_perf out (the server must have torchserve-perf installed)")
    out.add_argument("--no-verify", action="store_true", help="do not load the model before archiving")
    args = parser.parse_args(argv)
    if args.samples is not None and args.hf_model is None:
        parser.error("--samples goes with --hf-model")
    if args.hf_model is not None:
        if any(getattr(args, k) for k in ("model_file", "weights", "torchscript", "exported", "from_archive")):
            parser.error("--hf-model is the model; drop --model-file, --weights, --torchscript, --exported and --from")
        if not args.name:
            parser.error("the following arguments are required: --name")
    elif args.from_archive is not None:
        if any(getattr(args, k) for k in ("model_file", "weights", "torchscript", "exported", "dtype")) \
                or args.input_shape is not None:
            parser.error("--from takes the model from the archive; drop --model-file, --weights, --torchscript, "
                         "--exported, --input-shape and --dtype")
    else:
        check_model_args(parser, args)
    for key in ("workers", "batch_size", "response_timeout", "topk"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    if args.max_batch_delay is not None and args.max_batch_delay < 0:
        parser.error("--max-batch-delay must be >= 0")
    return args


def check_model_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The model and handler options given without --from: one model, and settings its handler reads."""
    given = [k for k in ("model_file", "torchscript", "exported") if getattr(args, k)]
    if not args.name:
        parser.error("the following arguments are required: --name")
    if len(given) != 1:
        parser.error("give one model: --model-file with --weights (eager), --torchscript FILE or --exported FILE.pt2")
    if args.model_file and not args.weights:
        parser.error("--model-file needs --weights (the state dict saved with torch.save(model.state_dict(), path))")
    if args.weights and not args.model_file:
        parser.error("--weights needs --model-file (the .py file with the nn.Module class)")
    kind = HANDLERS.get(args.handler, (None, None))[1]
    if kind == "transformers":
        parser.error("--handler transformers serves a Hugging Face folder: give --hf-model DIR instead of a model file")
    if args.input_shape is not None and kind != "tensor" or args.dtype and kind != "tensor":
        parser.error("--input-shape and --dtype are tensor handler settings; give --handler tensor or drop them")
    if args.topk is not None and kind not in ("image", "text"):
        parser.error("--topk is an image/text handler setting; give --handler image or text, or drop it")


def source_from_args(args: argparse.Namespace) -> ModelSource:
    if args.model_file:
        return ModelSource("eager", args.weights, args.model_file)
    if args.torchscript:
        return ModelSource("torchscript", args.torchscript)
    return ModelSource("export", args.exported)


def model_config_from_args(args: argparse.Namespace, section: Optional[str]) -> dict[str, Any]:
    """Our defaults (the options given, else this host's), the user's file merged over them; checked."""
    from torchserve_perf.plugins.host_defaults import detect

    options: dict[str, Any] = {}
    if args.input_shape:
        options["input_shape"] = list(args.input_shape)
    if args.dtype:
        options["dtype"] = args.dtype
    if args.topk is not None:
        options["topk"] = args.topk
    host = detect()  # what the user leaves out comes from this host's cores and GPUs
    workers = args.workers if args.workers is not None else host.workers
    batch_size = args.batch_size if args.batch_size is not None else host.batch_size
    delay = args.max_batch_delay if args.max_batch_delay is not None else host.max_batch_delay_ms
    config = default_model_config(section, options, workers=workers, batch_size=batch_size,
                                  max_batch_delay=delay, response_timeout=args.response_timeout,
                                  optimizations=optimizations_section(args.optimizations, args.handler in HANDLERS))
    if args.model_config:
        config = merge_model_config(config, read_model_config(args.model_config))
    check_model_config(config, section)
    return config


def plan_from_args(args: argparse.Namespace) -> tuple[ArchivePlan, Optional[str]]:
    """The plan, and the handler's options section (None for the user's own handler file)."""
    if args.hf_model is not None:
        from torchserve_perf.tools.archive.hf import plan_from_hf

        return plan_from_hf(args, model_config_from_args)
    if args.from_archive is not None:
        from torchserve_perf.tools.archive.convert import plan_from_stock

        return plan_from_stock(args, model_config_from_args)
    source = source_from_args(args)
    handler, section = handler_file(args.handler)
    config = model_config_from_args(args, section)
    plan = ArchivePlan(name=args.name, version=args.version, source=source, handler=handler,
                       export_path=args.export_path, model_config=config,
                       labels=read_labels(args.labels) if args.labels else None,
                       extra_files=split_extra_files(args.extra_files), bundle=not args.no_bundle,
                       layout=args.layout, force=args.force)
    return plan, section


def verify(plan: ArchivePlan, section: Optional[str]) -> str:
    """:func:`verify_model` with the tensor handler's input shape and dtype, when that is the handler."""
    if plan.source.kind == "hf":
        from torchserve_perf.tools.archive.hf import verify_hf

        return verify_hf(plan.source.serialized_file.parent)
    tensor = plan.model_config.get("handler", {}).get("tensor", {})
    shape = tensor.get("input_shape") if section == "tensor" else None
    return verify_model(plan, shape, tensor.get("dtype", "float32"))


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        plan, section = plan_from_args(args)
        with tempfile.TemporaryDirectory(prefix="ts-perf-calibration-") as staging:
            if args.calibration:
                plan = add_calibration(plan, section, args.calibration, Path(staging))
            check_plan(plan)
            if not args.no_verify:
                print(f"verified: {verify(plan, section)}", flush=True)
            path = create_archive(plan)
    except ArchiveError as exc:
        sys.stderr.write(f"torchserve-perf archive: error: {exc}\n")
        return 2
    except (RuntimeError, OSError) as exc:  # the archiver itself failed, or the disk did
        sys.stderr.write(f"torchserve-perf archive: {exc}\n")
        return 1
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    print(f"built {path} ({size / 1e6:.1f} MB; {plan.source.kind}, handler {plan.handler.name}"
          f"{', torchserve_perf bundled' if plan.bundle else ''})")
    if plan.layout == "kserve":
        print(f"wrote {plan.export_path / 'config' / 'config.properties'} (KServe: storageUri -> {plan.export_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
