"""``torchserve-perf compare --zoo``: every image family of torchserve_perf/models/zoo.py, stock against ours.

For each family three TorchServe servers run at once, each with the family's model and seeded
weights: stock's BaseHandler with TorchServe's defaults, the same with one thread per worker
(``OMP_NUM_THREADS=1``), and ours with the defaults ``torchserve-perf archive`` writes (auto
optimizations included). The same JPEG goes to each at every concurrency, the load alternating
between them in ``--rounds`` slices as ``compare --rounds`` does. The report has a table per
family with the workers' resident memory, what ``auto`` chose and why, the goals judged, and where
our handler's time goes (its per-phase metrics) when a goal is missed.

    torchserve-perf compare --zoo --quick                 # a few seconds per point
    torchserve-perf compare --zoo --families resnet50 vit_b16 --seconds 20 --rounds 4
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from torchserve_perf.tools import int8_accuracy, loadgen, paths
from torchserve_perf.tools.argparsing import command_parser
from torchserve_perf.tools.compare.goals import GoalsError, load_goals
from torchserve_perf.tools.compare.runs import run_interleaved, say
from torchserve_perf.tools.compare.systems import ServerPlan, describe_model_config
from torchserve_perf.tools.compare.zoo_config import ZooConfig
from torchserve_perf.tools.report_files import finish, write_report

if TYPE_CHECKING:
    from torchserve_perf.models.zoo import Family


def parse_args(argv: Optional[Sequence[str]]) -> ZooConfig:
    from torchserve_perf.models.zoo import FAMILIES

    parser = command_parser("compare --zoo", description=__doc__.splitlines()[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--zoo", action="store_true", help="(selects this comparison)")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--quick", action="store_true", help="3 s per point, 2 s warm-up, 1 round")
    parser.add_argument("--seconds", type=float, help="seconds per load point and system (default 20; 3 with --quick)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per server (default 5; 2 with --quick)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--int8", action="store_true",
                        help="also ours with --calibration (64 synthetic JPEGs): auto may choose a gated int8 path")
    parser.add_argument("--rounds", type=int, help="slices per point, systems in turn (default 4; 1 with --quick)")
    parser.add_argument("--out", type=Path, default=paths.results_dir("compare"))
    parser.add_argument("--goals", type=Path, nargs="+", action="extend", default=[], metavar="FILE",
                        help="YAML files of goals to judge each family against (make compare-zoo passes the project's)")
    args = parser.parse_args(argv)
    try:
        goals = tuple(goal for path in args.goals for goal in load_goals(path))  # checked before anything runs
    except GoalsError as exc:
        parser.error(str(exc))
    try:
        cfg = ZooConfig(families=tuple(args.families),
                        seconds=args.seconds if args.seconds is not None else (3.0 if args.quick else 20.0),
                        warmup=args.warmup if args.warmup is not None else (2.0 if args.quick else 5.0),
                        concurrencies=tuple(args.concurrency),
                        rounds=args.rounds if args.rounds is not None else (1 if args.quick else 4),
                        out=args.out.resolve(), quick=args.quick, work=Path("."), goals=goals, int8=args.int8)
    except ValueError as exc:
        parser.error(str(exc))
    return dataclasses.replace(cfg, work=Path(tempfile.mkdtemp(prefix="compare-zoo-")))


# ---- the archives -------------------------------------------------------------------------------
def ours_model_config() -> dict[str, Any]:
    """What ``torchserve-perf archive --handler image`` writes on this host (auto optimizations included)."""
    from torchserve_perf.plugins.host_defaults import auto_optimizations, detect, fill_model_config

    return fill_model_config({"responseTimeout": 120, "handler": {"image": {"topk": 5},
                                                                  "optimizations": auto_optimizations()}}, detect())


def build_family(family: Family, store: Path, int8: bool = False) -> dict[str, ServerPlan]:
    """The family's archives (unpacked, so its weights are not zipped twice) and each system's plan; with
    ``int8``, also ours built with ``--calibration`` as ``ours_int8``."""
    import torch

    from torchserve_perf.models.zoo import family_state_dict
    from torchserve_perf.tools.archive import ArchivePlan, ModelSource, create_archive
    from torchserve_perf.tools.archive.calibration import add_calibration
    from torchserve_perf.tools.calibration_images import SETTINGS, write_jpegs

    weights = store.parent / f"{family.name}.pt"
    torch.save(family_state_dict(family.make), weights)
    labels = {str(i): f"class_{i:04d}" for i in range(1000)}
    stock_name, ours_name = f"{family.name}_stock", family.name
    ours_config = ours_model_config()
    source = ModelSource("eager", weights, Path(family.path))
    # No minWorkers/batchSize: TorchServe's defaults (workers = cores, batch 1, delay 100 ms).
    create_archive(ArchivePlan(name=stock_name, source=source, handler=paths.fixtures_dir() / "stock_image_handler.py",
                               export_path=store, model_config={"responseTimeout": 120}, labels=labels, bundle=False,
                               layout="folder", force=True))
    ours = ArchivePlan(name=ours_name, source=source, handler=paths.handlers_dir() / "image_handler.py",
                       export_path=store, model_config=ours_config, labels=labels, layout="folder", force=True)
    create_archive(ours)
    plans: dict[str, ServerPlan] = {}
    if int8:
        staging = store.parent / "calibration"
        calibrated = add_calibration(dataclasses.replace(ours, name=f"{family.name}_int8"), "image",
                                     write_jpegs(staging / "images"), staging)
        create_archive(calibrated)
        plans["ours_int8"] = ServerPlan(calibrated.name, calibrated.name, describe_model_config(
            calibrated.model_config) + f", {SETTINGS}")
    weights.unlink()
    return {
        "stock_default": ServerPlan(stock_name, stock_name, "BaseHandler; TorchServe defaults: workers = cores, "
                                                            "batch 1, no thread settings"),
        "stock_guided": ServerPlan(stock_name, stock_name, "BaseHandler; defaults plus OMP_NUM_THREADS=1",
                                   env={"OMP_NUM_THREADS": "1"}),
        "ours_default": ServerPlan(ours_name, ours_name, describe_model_config(ours_config)),
    } | plans


# ---- one family -----------------------------------------------------------------------------------
def run_family(family: Family, cfg: ZooConfig, payload: loadgen.Payload) -> dict[str, Any]:
    """The family's servers up at once, the load interleaved; results, memory, what ours chose at load."""
    store = cfg.work / family.name / "store"
    store.mkdir(parents=True, exist_ok=True)
    shutil.copy2(paths.metrics_yaml(), store / "metrics.yaml")  # our per-phase metrics on every server
    say(f"\n=== {family.name}: {family.description}")
    plans = build_family(family, store, cfg.int8)
    results = run_interleaved(list(plans), plans, store, cfg.work / family.name, cfg, payload)
    return {"family": family.name, "description": family.description, "parameters": family.published_parameters,
            "systems": {k: r.as_dict() for k, r in results.items()}, "results": results,
            "memory": {k: r.memory for k, r in results.items() if r.memory},
            "loads": {k: r.load for k, r in results.items() if r.load is not None}}


def main(argv: Optional[Sequence[str]] = None) -> int:
    from torchserve_perf.models.zoo import find_family
    from torchserve_perf.tools.compare.zoo_report import build_zoo_report, render_zoo

    cfg = parse_args(argv)
    cfg.out.mkdir(parents=True, exist_ok=True)
    payload = loadgen.Payload(loadgen.sample_image(), "image/jpeg", "sample.jpg")
    began = time.perf_counter()
    families = [run_family(find_family(name), cfg, payload) for name in cfg.families]
    accuracy = int8_accuracy.digits_accuracy() if cfg.int8 else None  # beside the int8 figures
    command = "torchserve-perf compare " + " ".join(argv if argv is not None else sys.argv[1:])
    report = build_zoo_report(cfg, families, command=command, wall_s=round(time.perf_counter() - began, 1),
                              goals=cfg.goals, int8_accuracy=accuracy)
    write_report(cfg.out, "zoo", report, render_zoo(report))
    return finish(cfg.work, ", ".join(f"{f['family']}/{k}" for f in families for k, r in f["results"].items() if r.error))
