#!/usr/bin/env python3
"""Side-by-side performance report: one run, one model (ResNet-18, 224x224), one payload, this machine.

Systems compared:

1. ``raw``: the in-process limit, model only (no HTTP, no decoding): best threads x batch size,
   eager and optimized (torch.compile).
2. ``stock_default``: TorchServe's stock BaseHandler with its defaults (workers = cores, batch 1,
   no thread settings).
3. ``stock_guided``: the same with the performance guide's one thread per worker
   (``OMP_NUM_THREADS=1`` in the server environment).
4. ``ours_default``: our handlers with the demo archive's defaults.
   ``ours_int8`` (only when named in ``--systems``): the same built with ``--calibration`` (64
   seeded synthetic JPEGs), so auto may choose an int8 path that passes the accuracy gate.
5. ``ours_tuned``: our handlers with ``results/tune/resnet18/best.json`` (torchserve-perf tune), or a
   documented fallback when there is none.
6. ``litserve``: LitServe serving the same model with its dynamic batching (torchserve_perf/fixtures/litserve_app.py).

Each server gets the same JPEG at 1, 4 and 8 concurrent closed-loop clients. Writes
``results/compare/report.md`` and ``report.json``.

    torchserve-perf compare              # full run (about 10-15 minutes)
    torchserve-perf compare --quick      # a few seconds per point, to check it works
    torchserve-perf compare --goals goals.yaml   # and judge the ratios against goals (a Goals table)

``--zoo`` compares stock and ours on every image family (ResNet-50, MobileNetV3-Large,
EfficientNet-B0, ViT-B/16) and writes ``zoo.md`` and ``zoo.json``::

    torchserve-perf compare --zoo [--quick] [--families resnet50 vit_b16] [--int8]

``--transports`` compares one server over several transports instead (HTTP/1.1 and gRPC at 1, 4
and 8 clients, for the JPEG on ResNet-18 and a small tensor; docs/transports.md) and writes
``transports.md`` and ``transports.json``::

    torchserve-perf compare --transports http grpc [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from torchserve_perf.tools import int8_accuracy, loadgen, paths
from torchserve_perf.tools.argparsing import command_parser
from torchserve_perf.tools.compare.config import SERVERS, SYSTEMS, TUNE_BEST, CompareConfig
from torchserve_perf.tools.compare.goals import load_goals
from torchserve_perf.tools.compare.report import build_report, render
from torchserve_perf.tools.compare.results import SystemResult
from torchserve_perf.tools.compare.runs import run_interleaved, run_limit, run_litserve, run_torchserve, say
from torchserve_perf.tools.compare.systems import build_store, tuned_settings
from torchserve_perf.tools.gpu_report import limits_in_child
from torchserve_perf.tools.report_files import finish, write_report


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = command_parser("compare", description=__doc__.splitlines()[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 s per point, 1 s warm-up, fewer raw points")
    parser.add_argument("--seconds", type=float, help="seconds per load point (default 20; 3 with --quick)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per server (default 5; 1 with --quick)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--systems", nargs="+", default=[k for k in SYSTEMS if k != "ours_int8"], choices=SYSTEMS,
                        help="which to run (default: all but ours_int8, ours built with --calibration)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="> 1: run the TorchServe systems at once and alternate the load between them in this "
                             "many slices per point (fair on a noisy machine)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile in the in-process limit")
    parser.add_argument("--tune-best", type=Path, default=TUNE_BEST, help="the tuner's best.json")
    parser.add_argument("--out", type=Path, default=paths.results_dir("compare"))
    parser.add_argument("--goals", type=Path, nargs="+", action="extend", default=[], metavar="FILE",
                        help="YAML files of goals to judge the ratios against (the report's Goals table; "
                             "docs/benchmarking.md); without: no Goals table")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> CompareConfig:
    """The run's config; ``--quick`` shortens what is not given. Raises ValueError on bad values."""
    return CompareConfig(seconds=args.seconds or (3.0 if args.quick else 20.0),
                         warmup=args.warmup if args.warmup is not None else (1.0 if args.quick else 5.0),
                         concurrencies=tuple(args.concurrency), systems=tuple(args.systems), out=args.out.resolve(),
                         quick=args.quick, compile=not args.no_compile, tune_best=args.tune_best,
                         work=Path(tempfile.mkdtemp(prefix="compare-")), rounds=args.rounds)


def run_systems(cfg: CompareConfig, tuned: dict, payload: loadgen.Payload) -> dict[str, SystemResult]:
    """Every chosen server, interleaved (``--rounds``) or one after another; LitServe always on its own."""
    store, plans = build_store(cfg, tuned)
    results: dict[str, SystemResult] = {}
    if cfg.rounds > 1:
        results.update(run_interleaved([k for k in SERVERS if k in cfg.systems and k != "litserve"], plans,
                                       store, cfg.work, cfg, payload))
    for key in SERVERS:
        if key not in cfg.systems or key in results:
            continue
        results[key] = run_litserve(cfg, payload) if key == "litserve" else run_torchserve(key, plans[key], store, cfg,
                                                                                           payload)
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    cli = list(argv) if argv is not None else sys.argv[1:]
    if "--transports" in cli:  # one server over several transports: its own options and report
        from torchserve_perf.tools.transports.run import main as transports_main

        return transports_main(cli)
    if "--zoo" in cli:  # every image family against stock: its own options and report
        from torchserve_perf.tools.compare.zoo import main as zoo_main

        return zoo_main(cli)
    args = parse_args(argv)
    try:
        goals = tuple(goal for path in args.goals for goal in load_goals(path))  # checked before anything runs
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    cfg.out.mkdir(parents=True, exist_ok=True)
    payload_path = cfg.out / "payload.jpg"
    payload_path.write_bytes(loadgen.sample_image())
    payload = loadgen.load_payload(payload_path)
    tuned, tuned_source = tuned_settings(cfg.tune_best)
    say(f"tuned settings: {tuned} ({tuned_source})")

    began = time.perf_counter()
    say("client ceiling ...")
    ceilings = loadgen.client_ceiling([payload], cfg.concurrencies, duration=1.0 if cfg.quick else 2.0)
    raw = None
    if "raw" in cfg.systems:
        say("\n[raw] in-process limit (child process)")
        raw = run_limit(cfg, payload_path)
    say("\nGPU limits (CUDA hosts only) ...")
    gpu_limits = limits_in_child(cfg.quick, cfg.out / "gpu_limits.json")  # before any server holds the GPU
    results = run_systems(cfg, tuned, payload)
    accuracy = int8_accuracy.digits_accuracy() if "ours_int8" in results else None  # beside the int8 figures

    cli = list(argv) if argv is not None else sys.argv[1:]
    command = "torchserve-perf compare" + (" " + " ".join(cli) if cli else "  # or: make compare")
    report = build_report(cfg, payload=payload, tuned=tuned, tuned_source=tuned_source, raw=raw, gpu_limits=gpu_limits,
                          results=results, ceilings=ceilings, goals=goals, command=command,
                          wall_s=round(time.perf_counter() - began, 1), int8_accuracy=accuracy)
    write_report(cfg.out, "report", report, render(report))
    return finish(cfg.work, ", ".join(r.key for r in results.values() if r.error is not None))

if __name__ == "__main__":
    sys.exit(main())
