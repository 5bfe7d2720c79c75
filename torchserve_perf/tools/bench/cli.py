"""Benchmark a TorchServe model: closed loop at fixed concurrencies and/or open loop at Poisson rates.

Reports p50/p90/p95/p99/p99.9, throughput and errors per run, checks that the client is not the
bottleneck (its own ceiling against a trivial loopback endpoint, and its CPU time per request),
and writes bench.json, bench.md and bench.png (latency CDF, throughput against concurrency).

Target either a running server (``--url`` plus ``--key-file`` or ``--token=VALUE``) or let the
command start one from a model store (``--model-store``), e.g.::

    torchserve-perf bench --model-store model_store --model resnet18 --concurrency 1 4 8
    torchserve-perf bench --url http://127.0.0.1:8080 --key-file key_file.json \\
        --model resnet18 --payload cat.jpg --rate 20 40 --duration 60

Give a token as ``--token=VALUE``: TorchServe's keys may begin with '-', which ``--token VALUE``
would read as an option.

Or run a suite (models, payloads, concurrencies and rates, durations) from a YAML file into one
report, suite.json and suite.md (the format: docs/benchmarking.md)::

    torchserve-perf bench --suite suite.yaml --out results/nightly
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn, Optional
from urllib.parse import urlsplit

from torchserve_perf.tools import paths, worker_memory
from torchserve_perf.tools.argparsing import CommandParser
from torchserve_perf.tools.bench.config import BenchConfig
from torchserve_perf.tools.bench.render import render_markdown, write_outputs
from torchserve_perf.tools.bench.report import build_report
from torchserve_perf.tools.bench.run import run_benchmark, server_dir, start_server
from torchserve_perf.tools.loadgen import LoadResult, Payload, ProgressFn, load_payload, read_token, sample_image
from torchserve_perf.tools.loadgen.protocols import (
    HTTP,
    PROTOCOLS,
    V2,
    grpc_address_for,
    payloads_for,
    server_properties,
    target_url,
)

EMPTY_KEY_OPTION = "argument --token: expected one argument"


def explain_usage_error(message: str) -> str:
    """argparse's message, plus the way out where a token that begins with '-' was taken for an option."""
    if EMPTY_KEY_OPTION in message:
        return (f"{message}: a token that begins with '-' reads as an option; give it as --token=VALUE, "
                "or give --key-file key_file.json")
    return message


class BenchParser(CommandParser):
    def error(self, message: str) -> NoReturn:
        super().error(explain_usage_error(message))


def _processes(value: str) -> object:
    return value if value == "auto" else int(value)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = BenchParser(prog="torchserve-perf bench", description=doc.splitlines()[0],
                         formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    where = parser.add_argument_group("target")
    where.add_argument("--url", help="inference address of a running TorchServe, e.g. http://127.0.0.1:8080")
    where.add_argument("--key-file", type=Path, help="TorchServe's key_file.json (its inference key is used)")
    where.add_argument("--token", metavar="VALUE",
                       help="inference token (instead of --key-file); write --token=VALUE, as a key may begin with '-'")
    where.add_argument("--model-store", type=Path, help="start a TorchServe from this store instead of --url")
    where.add_argument("--archive", action="append", default=[],
                       help="with --model-store: archive(s) to load (default: <model>.mar)")
    where.add_argument("--model", help="model name (default: resnet18)")
    where.add_argument("--path", help="request path (default: /predictions/<model>)")
    where.add_argument("--protocol", default=HTTP, choices=PROTOCOLS,
                       help="http: POST /predictions/<model> (default); v2: v2 JSON to /v2/models/<model>/infer; "
                            "grpc: gRPC Predictions; v2-grpc: the Open Inference Protocol's gRPC ModelInfer "
                            "(gRPC needs the grpc extra; docs/transports.md)")
    where.add_argument("--grpc-address", metavar="HOST:PORT",
                       help="with --url and a gRPC protocol: TorchServe's gRPC inference address (default: the "
                            "URL's host, port 7070)")
    load = parser.add_argument_group("load")
    load.add_argument("--concurrency", "-c", type=int, nargs="+", default=None,
                      help="closed loop at each of these concurrencies (default 1 4 8 unless --rate is given)")
    load.add_argument("--rate", "-r", type=float, nargs="+", default=[],
                      help="open loop at each of these Poisson arrival rates (req/s)")
    load.add_argument("--duration", "-d", type=float, help="seconds per run (default 30)")
    load.add_argument("--warmup", type=float, help="seconds of unrecorded load first (default 5)")
    load.add_argument("--seed", type=int, default=0, help="seed of the Poisson schedule")
    load.add_argument("--max-in-flight", type=int, default=64, help="open loop: client threads (default 64)")
    load.add_argument("--payload", type=Path, nargs="+", default=[],
                      help="payload file(s), sent in turn (default: a generated 640x480 JPEG)")
    load.add_argument("--content-type", help="content type of all payloads (default: from the extension)")
    load.add_argument("--quick", action="store_true", help="short runs: 3 s each, 1 s warm-up")
    load.add_argument("--no-ceiling", action="store_true", help="skip measuring the client's own ceiling")
    load.add_argument("--client-processes", default="auto", type=_processes,
                      help="clients (closed loop) or client threads (open loop) spread over this many processes; "
                           "'auto' (default): one per 4 clients, at most half the cores (one process tops out at a "
                           "few thousand req/s)")
    load.add_argument("--gpu-limits", action="store_true",
                      help="on a CUDA host, first measure the model's in-process limits (eager, fp16, CUDA graphs, "
                           "compiled) and the decode ceilings (CPU pool, nvjpeg) for the report")
    parser.add_argument("--suite", type=Path, help="run the models, payloads and loads of this YAML file into one "
                                                   "report (suite.json, suite.md); see docs/benchmarking.md")
    parser.add_argument("--out", type=Path, default=paths.results_dir("bench"), help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)
    if args.model_store and (args.url or args.key_file or args.token):
        parser.error("--model-store starts its own server: leave out --url/--key-file/--token")
    if args.key_file and args.token:
        parser.error("give --key-file or --token, not both")
    if args.protocol != HTTP and (args.path or args.suite):
        parser.error(f"--protocol {args.protocol}: leave out --path and --suite (their requests are HTTP)")
    if args.suite:
        given = [flag for flag, value in (("--model", args.model), ("--archive", args.archive), ("--path", args.path),
                                          ("--concurrency", args.concurrency), ("--rate", args.rate),
                                          ("--payload", args.payload), ("--content-type", args.content_type))
                 if value]
        if given:
            parser.error(f"{' '.join(given)}: with --suite, set these per model in the suite file")
        return args
    args.model = args.model or "resnet18"
    args.duration = 30.0 if args.duration is None else args.duration
    args.warmup = 5.0 if args.warmup is None else args.warmup
    if args.concurrency is None:
        args.concurrency = [] if args.rate else [1, 4, 8]
    if args.quick:
        args.duration, args.warmup = min(args.duration, 3.0), min(args.warmup, 1.0)
    if not args.model_store and not args.url:
        parser.error("give --url (a running TorchServe), --model-store (start one) or --suite FILE")
    return args


def _progress(quiet: bool) -> Optional[ProgressFn]:
    """Progress lines on stdout, flushed as they come, unless ``--quiet``."""
    if quiet:
        return None
    return lambda line: print(line, flush=True)


def suite_main(args: argparse.Namespace) -> int:
    """``torchserve-perf bench --suite FILE``."""
    from torchserve_perf.tools.bench.suite import load_suite, with_overrides
    from torchserve_perf.tools.bench.suite_run import render_suite_markdown, run_suite, write_suite

    try:
        suite = with_overrides(load_suite(args.suite), url=args.url, key_file=args.key_file, token=args.token,
                               model_store=args.model_store, duration=args.duration, warmup=args.warmup,
                               quick=args.quick)
        payloads = {m.name: [load_payload(p, m.content_type) for p in m.payloads] for m in suite.models}
        target = suite.target  # with_overrides leaves none without one
        token = target.token or (read_token(target.key_file) if target.key_file else None) if target else None
    except (ValueError, OSError) as exc:  # SuiteError, a payload or key file that cannot be read
        print(f"torchserve-perf bench: error: {exc}", file=sys.stderr)
        return 2
    progress = _progress(args.quiet)
    try:
        report = run_suite(suite, args.out, payloads, token, progress=progress)
    except ValueError as exc:  # an archive missing from the model store
        print(f"torchserve-perf bench: error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, TimeoutError) as exc:  # the server did not start: its logs say why
        print(f"torchserve-perf bench: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    written = write_suite(report, args.out)
    print()
    print(render_suite_markdown(report).split("\n\n#", 1)[0])
    print("wrote " + ", ".join(str(p) for p in written.values()))
    failed = [m["config"]["model"] for m in report["models"] if all(r["ok"] == 0 for r in m["runs"])]
    if failed:
        print(f"no request succeeded for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.suite:
        return suite_main(args)
    try:
        config = BenchConfig(model=args.model, concurrencies=tuple(args.concurrency), rates=tuple(args.rate),
                             duration=args.duration, warmup=args.warmup, seed=args.seed,
                             max_in_flight=args.max_in_flight,
                             # the ceiling's trivial endpoint speaks HTTP: no measure of a gRPC client
                             ceiling=not args.no_ceiling and args.protocol in (HTTP, V2),
                             client_processes=args.client_processes, gpu_limits=args.gpu_limits)
        if args.payload:
            payloads = [load_payload(p, args.content_type) for p in args.payload]
        else:
            payloads = [Payload(sample_image(), args.content_type or "image/jpeg", "generated-640x480.jpg")]
        payloads = payloads_for(args.protocol, payloads)
    except (ValueError, OSError) as exc:
        print(f"torchserve-perf bench: error: {exc}", file=sys.stderr)
        return 2
    progress = _progress(args.quiet)
    path = args.path or f"/predictions/{args.model}"

    gpu_limits = None
    if config.gpu_limits:  # before any server: the GPU must be the benchmark's alone
        from torchserve_perf.tools.gpu_report import limits_in_child

        args.out.mkdir(parents=True, exist_ok=True)
        gpu_limits = limits_in_child(args.quick, args.out / "gpu_limits.json")
    server = None
    if args.model_store:
        archives = args.archive or [f"{args.model}.mar"]
        missing = [a for a in archives if "://" not in a and not (Path(args.model_store) / a).exists()]
        if missing:  # TorchServe would only log it and never become ready
            print(f"torchserve-perf bench: error: {args.model_store} has no {', '.join(missing)}; build it with "
                  "`make model-store` (the demo's models) or `torchserve-perf archive`, or give --archive",
                  file=sys.stderr)
            return 2
        server = start_server(args.model_store, args.out, archives, [args.model], progress,
                              properties=server_properties(args.protocol))
        url, token = server.inference_url, server.key()
        grpc_address = server.grpc_inference_address
        target = {"kind": "torchserve started by bench", "url": url, "model_store": str(args.model_store),
                  "archives": archives, "server_dir": str(server_dir(args.out))}
    else:
        url = args.url.rstrip("/")
        try:
            token = args.token or (read_token(args.key_file) if args.key_file else None)
        except (ValueError, OSError) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 2
        target = {"kind": "running server", "url": url, "token": "given" if token else "none"}
        grpc_address = args.grpc_address or grpc_address_for(url)
    request_url = url + path if args.path else target_url(args.protocol, args.model, url, grpc_address)
    target["path"], target["protocol"] = urlsplit(request_url).path, args.protocol
    memory: dict[str, dict] = {}  # run label -> the workers' memory after it (a server bench started)

    def measure_workers(run: LoadResult) -> None:
        if server is not None:
            memory[run.label()] = worker_memory.summary(worker_memory.server_workers(server))

    try:
        runs, ceilings = run_benchmark(config, request_url, token, payloads, progress=progress,
                                       after_run=measure_workers)
        loaded = worker_memory.parse_load_lines(server.read_log()) if server is not None else []
    finally:
        if server is not None:
            server.stop()
    report = build_report(config, target, payloads, runs, ceilings)
    if memory:
        report["worker_memory"] = {"runs": memory, "at_load": loaded}
    if gpu_limits is not None:
        report["gpu_limits"] = gpu_limits
    written = write_outputs(report, args.out)
    print()
    print(render_markdown(report))
    print("wrote " + ", ".join(str(p) for p in written.values()))
    failed = all(not r.latencies for r in runs)
    return 1 if failed else 0
