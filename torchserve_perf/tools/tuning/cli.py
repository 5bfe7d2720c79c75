"""Command line of ``torchserve-perf tune``: search TorchServe settings for the most throughput under a p99 target."""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from torchserve_perf.tools import paths
from torchserve_perf.tools.argparsing import command_parser
from torchserve_perf.tools.model_store import default_payload, find_spec
from torchserve_perf.tools.tuning import headtohead, report
from torchserve_perf.tools.tuning.evaluate import LoadSettings, TorchServeEvaluator, payload_digest
from torchserve_perf.tools.tuning.objective import Aggregate, Objective
from torchserve_perf.tools.tuning.space import Candidate, SearchSpace, heuristic_start, host_space, parse_optimization
from torchserve_perf.tools.tuning.state import StateMismatch, TuneState
from torchserve_perf.tools.tuning.strategy import Budget, Pruner, Session, run

GRID_FRACTION = 0.30  # the tuner's default cap on distinct points, as a share of the grid


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one value")
    return values


CPU_OPTIMIZATIONS = ((), ("channels_last",))
GPU_OPTIMIZATIONS = ((), ("decode_device",), ("decode_cpu",))  # none: the handler's GPU defaults


def chain_list(text: str) -> tuple[tuple[str, ...], ...]:
    try:
        chains = tuple(dict.fromkeys(parse_optimization(v) for v in text.split(",")))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return chains


def parser() -> argparse.ArgumentParser:
    p = command_parser("tune", description=__doc__,
                                epilog="Compare a grid run with a search run: torchserve-perf tune compare GRID_DIR SEARCH_DIR")
    p.add_argument("--model", default="resnet18", help="a model of torchserve_perf.tools.model_store.default_specs()")
    p.add_argument("--p99-ms", type=float, default=250.0, help="p99 latency target in ms (default 250)")
    p.add_argument("--concurrency", type=int, default=4, help="closed-loop clients (default 4)")
    p.add_argument("--concurrencies", type=int_list,
                   help="several client counts at once, e.g. 1,4,8: each candidate is measured at each and scored "
                        "by its weakest one relative to the start point (the p99 target applies at every one)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of load per measurement (default 5)")
    p.add_argument("--warmup", type=float, default=1.5, help="seconds of load before each measurement (default 1.5)")
    p.add_argument("--payload", type=Path, help="request body file (default: a JPEG for images, a sentence for text)")
    # Axes left out come from the host (space.host_space): workers up to the physical cores, threads
    # elastic (0) or 1 up to the cores, batch up to 8 (128 on a GPU), delays 1, 5, 25 ms.
    p.add_argument("--workers", type=int_list, help="worker counts (default: 1, 2, 4, ... up to the physical cores)")
    p.add_argument("--threads", type=int_list,
                   help="intra-op threads per worker; 0 = elastic (default: 0, 1, 2, ... up to the cores)")
    p.add_argument("--batch-sizes", type=int_list, help="batch sizes (default: 1, 2, 4, 8; up to 128 on a GPU host)")
    p.add_argument("--delays", type=int_list, help="max batch delays in ms (default 1, 5, 25; TorchServe reads 0 as 100)")
    p.add_argument("--optimizations", type=chain_list, default=None,
                   help="comma-separated choices; 'none', a plugin name, or a chain joined by '+' "
                        "(e.g. none,channels_last,compile,channels_last+compile); decode_cpu, decode_device and "
                        "decode_nvjpeg choose the image decode path (default: none,channels_last; on a GPU host "
                        "none (fp16, CUDA graphs, resize on the GPU, nvjpeg where available),decode_device,decode_cpu)")
    p.add_argument("--gpus", default="auto", help="number_of_gpu values: 'auto' (1..all GPUs on a GPU host, "
                   "0 without), or a comma list")
    p.add_argument("--strategy", choices=("search", "grid"), default="search")
    p.add_argument("--budget-min", type=float, default=30.0, help="wall-clock budget in minutes (default 30)")
    p.add_argument("--max-points", type=int, help=f"cap on distinct points (search default: "
                   f"{GRID_FRACTION * 100:.0f}%% of the grid; grid: none)")
    p.add_argument("--margin", type=float, default=0.05, help="expand points within this share of the best (0.05)")
    p.add_argument("--patience", type=int, default=2, help="stop after this many expansions without a new best")
    p.add_argument("--confirm-top", type=int, default=3, help="re-measure this many of the best points (default 3)")
    p.add_argument("--confirm-repeats", type=int, default=1, help="extra measurements of each (default 1; 0: off)")
    p.add_argument("--physical-cores", type=int, help="override the detected physical core count")
    p.add_argument("--out", type=Path, default=paths.results_dir("tune"), help="writes into OUT/<model>/")
    p.add_argument("--state", type=Path, help="resume file (default OUT/<model>/state.json)")
    p.add_argument("--fresh", action="store_true", help="ignore an existing state file")
    p.add_argument("--top", type=int, default=10, help="rows in the report (default 10)")
    p.add_argument("--quick", action="store_true", help="a tiny space and short loads, to check the tool end to end")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def detect_gpus(text: str) -> tuple[int, ...]:
    if text != "auto":
        return int_list(text)
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install must not stop a CPU tuning run
        count = 0
    return tuple(range(1, count + 1)) if count else (0,)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["compare"]:
        return headtohead.main(argv[1:])
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if args.quick:
        args.workers, args.threads, args.batch_sizes, args.delays = (1, 2), (1,), (1, 2), (5,)
        args.optimizations = (args.optimizations or CPU_OPTIMIZATIONS)[:1]
        args.duration, args.warmup = min(args.duration, 2.0), min(args.warmup, 0.5)
        args.budget_min = min(args.budget_min, 3.0)
        args.confirm_top = min(args.confirm_top, 1)

    from torchserve_perf.plugins.threads import physical_cores

    cores = args.physical_cores or physical_cores()
    gpus = detect_gpus(args.gpus)
    if args.optimizations is None:
        args.optimizations = GPU_OPTIMIZATIONS if max(gpus) else CPU_OPTIMIZATIONS
    host = host_space(cores, max(gpus), args.optimizations)
    space = SearchSpace(workers=args.workers or host.workers, threads=args.threads or host.threads,
                        batch_sizes=args.batch_sizes or host.batch_sizes, delays_ms=args.delays or host.delays_ms,
                        optimizations=args.optimizations, gpus=gpus)
    objective = Objective(args.p99_ms)
    grid_size = space.size()
    max_points = args.max_points
    if max_points is None and args.strategy == "search":
        max_points = grid_size if args.quick else max(2, math.floor(GRID_FRACTION * grid_size))
    spec = find_spec(args.model)
    payload = args.payload.read_bytes() if args.payload else default_payload(spec)
    if args.concurrencies and len(args.concurrencies) > 1:
        args.concurrency = max(args.concurrencies)  # the pruner's "batch never fills" bound
    load = LoadSettings(concurrency=args.concurrency, duration_s=args.duration, warmup_s=args.warmup,
                        concurrencies=tuple(args.concurrencies or ()) if args.concurrencies and
                        len(args.concurrencies) > 1 else ())
    out = args.out / spec.name
    conditions = {"model": spec.name, "concurrency": args.concurrency, "duration_s": args.duration,
                  **({"concurrencies": list(load.concurrencies)} if load.concurrencies else {}),
                  "warmup_s": args.warmup, "payload": payload_digest(payload), "physical_cores": cores}
    try:
        state = TuneState.open(args.state or out / "state.json", conditions, fresh=args.fresh)
    except StateMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    levels = load.levels
    # Several concurrencies: start from the middle one (the shipped defaults' batch on this host).
    start = heuristic_start(space, physical_cores=cores, concurrency=levels[len(levels) // 2], gpus=max(space.gpus))
    clients = ("the weakest of " + ", ".join(map(str, levels))) if len(levels) > 1 else str(args.concurrency)
    print(f"tuning {spec.name}: {args.strategy} over {grid_size} grid points"
          + (f" (at most {max_points})" if max_points else "")
          + f", p99 <= {args.p99_ms:g} ms at {clients} clients, budget {args.budget_min:g} min")
    if state.resumed:
        print(f"resuming: {len(state.candidates())} points already measured in {state.path}")
    print(f"start (performance guide, {cores} physical cores): {start.label()}", flush=True)

    budget = Budget(seconds=args.budget_min * 60, max_points=max_points)
    pruner = Pruner(concurrency=args.concurrency, physical_cores=cores) if args.strategy == "search" else Pruner()

    def progress(c: Candidate, a: Aggregate, phase: str) -> None:
        last = a.measurements[-1]
        verdict = f"FAILED {last.error or f'{last.errors} errors'}" if last.failed else \
            ("ok" if last.p99_ms <= args.p99_ms else "misses p99")
        print(f"[{len(state.candidates()):>3} pts {budget.elapsed():6.0f}s] {phase:<7} {c.label():<62} "
              f"{last.throughput_rps:7.1f} req/s  p99 {last.p99_ms:7.1f} ms  {verdict}", flush=True)

    began = time.monotonic()
    # A terminated tuner must still stop its TorchServe: SIGTERM unwinds like Ctrl-C (state is saved per point).
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix=f"tune-{spec.name}-"))
    try:
        with TorchServeEvaluator(spec, workdir, payload, load, progress=lambda m: print(m, flush=True)) as evaluator:
            session = Session(space, objective, evaluator, state, budget, pruner, on_result=progress)
            outcome = run(session, args.strategy, start, margin=args.margin, patience=args.patience,
                          top_k=args.confirm_top, repeats=args.confirm_repeats)
    except KeyboardInterrupt:
        print(f"\ninterrupted after {len(state.candidates())} points; TorchServe stopped. The same command "
              f"resumes from {state.path}", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    info = report.RunInfo(model=spec.name, strategy=args.strategy, space=space, objective=objective,
                          concurrency=args.concurrency, duration_s=args.duration, warmup_s=args.warmup, start=start,
                          best=outcome.best, confirmed=outcome.confirmed, stopped_by_budget=outcome.stopped_by_budget,
                          elapsed_s=time.monotonic() - began, measured_this_run=session.measured,
                          base_model_config=spec.model_config, physical_cores=cores)
    summary = report.write(out, state, info, top=args.top)
    print()
    print(report.markdown(summary, min(args.top, 5)))
    print(f"wrote {out}/ (best.json, report.md, report.json, tune.png, config.properties, model-config.yaml, "
          f"state.json)")
    met = outcome.best is not None and objective.feasible(state.aggregate(outcome.best))
    if not met:
        print(f"no configuration met p99 <= {args.p99_ms:g} ms; best.json holds the lowest-p99 one "
              "(meets_target: false)", file=sys.stderr)
    return 0 if met else 1
