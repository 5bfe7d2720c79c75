"""One TorchServe with every transport on; each workload over each protocol at each client count.

The protocols are measured in turn at each client count (and, with ``rounds`` > 1, in slices that
alternate), so a noisy machine weighs on all of them alike.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from torchserve_perf.tools import machine, paths
from torchserve_perf.tools.argparsing import command_parser
from torchserve_perf.tools.loadgen import LoadResult, ProgressFn, closed_loop, merge
from torchserve_perf.tools.loadgen.grpc_client import make_sender
from torchserve_perf.tools.loadgen.protocols import PROTOCOLS, payloads_for, target_url
from torchserve_perf.tools.report_files import finish, write_report
from torchserve_perf.tools.transports.config import DEFAULT_CONCURRENCIES, DEFAULT_PROTOCOLS, TransportsConfig
from torchserve_perf.tools.transports.report import render
from torchserve_perf.tools.transports.workloads import Workload, build_store

Sender = Callable[[], int]


def measure(senders: dict[str, Sender], cfg: TransportsConfig, rounds: int,
            progress: Optional[ProgressFn]) -> dict[str, dict[int, LoadResult]]:
    """Each protocol at each client count, the protocols in turn; ``rounds`` slices per point."""
    if cfg.warmup > 0:
        for send in senders.values():
            closed_loop(send, max(cfg.concurrencies), duration=cfg.warmup)
    parts: dict[tuple[str, int], list[LoadResult]] = {}
    order = list(senders)
    for c in cfg.concurrencies:
        for _ in range(rounds):
            for protocol in order:
                parts.setdefault((protocol, c), []).append(
                    closed_loop(senders[protocol], c, duration=cfg.seconds / rounds))
            order = order[1:] + order[:1]  # no protocol always goes first
        for protocol in senders:
            if progress:
                progress(f"  {protocol:<8} {merge(parts[(protocol, c)]).line()}")
    return {p: {c: merge(parts[(p, c)]) for c in cfg.concurrencies} for p in senders}


def _senders(workload: Workload, cfg: TransportsConfig, http_url: str, grpc_address: str,
             token: Optional[str]) -> tuple[dict[str, Sender], dict[str, str]]:
    """A sender per protocol that answered its first request; why each other one did not."""
    senders: dict[str, Sender] = {}
    errors: dict[str, str] = {}
    for protocol in cfg.protocols:
        url = target_url(protocol, workload.model, http_url, grpc_address)
        try:
            send = make_sender(url, payloads_for(protocol, [workload.payload]), token=token)
            status = send()
        except Exception as exc:  # the report says what failed and goes on with the other protocols
            errors[protocol] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            continue
        if status != 200:
            errors[protocol] = f"first request answered {status}"
            continue
        senders[protocol] = send
    return senders, errors


def run(cfg: TransportsConfig, rounds: int = 1, progress: Optional[ProgressFn] = print) -> dict:
    """Everything measured, as the JSON report."""
    from torchserve_perf.tools import serving

    began = time.perf_counter()
    workloads = build_store(cfg.work / "store", cfg.workloads)
    properties = {"ts_open_inference_protocol": "true"} if cfg.needs_oip else {}
    if progress:
        progress(f"starting TorchServe ({', '.join(w.archive for w in workloads.values())}) in {cfg.work} ...")
    server = serving.start(cfg.work / "store", cfg.work / "server", models=[w.archive for w in workloads.values()],
                           ready_models=[w.model for w in workloads.values()], properties=properties)
    results: dict[str, dict] = {}
    try:
        token = server.key()
        for key, workload in workloads.items():
            if progress:
                progress(f"\n[{key}] {workload.description}")
            senders, errors = _senders(workload, cfg, server.inference_url, server.grpc_inference_address, token)
            measured = measure(senders, cfg, rounds, progress) if senders else {}
            results[key] = {
                "model": workload.model, "description": workload.description,
                "payload": {"name": workload.payload.name, "bytes": len(workload.payload.body)},
                "protocols": {p: {str(c): r.summary() for c, r in runs.items()} for p, runs in measured.items()},
                "errors": errors,
            }
    finally:
        server.stop()
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "protocols": list(cfg.protocols), "concurrencies": list(cfg.concurrencies),
        "seconds": cfg.seconds, "warmup": cfg.warmup, "rounds": rounds, "quick": cfg.quick,
        "workloads": results,
        "wall_s": round(time.perf_counter() - began, 1),
    }


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = command_parser("compare --transports", description="one model over several transports side by side")
    parser.add_argument("--transports", nargs="+", default=list(DEFAULT_PROTOCOLS), choices=PROTOCOLS,
                        help="protocols to compare (default: http grpc)")
    parser.add_argument("--workloads", nargs="+", default=["image", "tensor"], choices=["image", "tensor"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(DEFAULT_CONCURRENCIES))
    parser.add_argument("--quick", action="store_true", help="3 s per point, 1 s warm-up")
    parser.add_argument("--seconds", type=float, help="seconds per load point (default 20; 3 with --quick)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per protocol (default 5; 1 with --quick)")
    parser.add_argument("--rounds", type=int, default=1, help="slices per point, the protocols in turn")
    parser.add_argument("--out", type=Path, default=paths.results_dir("compare"))
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        cfg = TransportsConfig(protocols=tuple(args.transports), concurrencies=tuple(args.concurrency),
                               seconds=args.seconds or (3.0 if args.quick else 20.0),
                               warmup=args.warmup if args.warmup is not None else (1.0 if args.quick else 5.0),
                               out=args.out.resolve(), work=Path(tempfile.mkdtemp(prefix="transports-")),
                               workloads=tuple(args.workloads), quick=args.quick)
        if args.rounds < 1:
            raise ValueError("--rounds must be >= 1")
    except ValueError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    try:
        report = run(cfg, args.rounds, progress=lambda line: print(line, flush=True))
    except (RuntimeError, TimeoutError) as exc:  # the server did not start: its logs say why
        print(f"compare: {str(exc).splitlines()[0]}; server folder kept in {cfg.work}", file=sys.stderr)
        return 1
    write_report(cfg.out, "transports", report, render(report))
    return finish(cfg.work, ", ".join(f"{k}: {w['errors']}" for k, w in report["workloads"].items() if w["errors"]))

if __name__ == "__main__":
    sys.exit(main())
