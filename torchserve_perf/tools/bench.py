#!/usr/bin/env python3
"""Benchmark a TorchServe model: closed loop at fixed concurrencies and/or open loop at Poisson rates.

Reports p50/p90/p95/p99/p99.9, throughput and errors per run, checks that the client is not the
bottleneck (its own ceiling against a trivial loopback endpoint, and its CPU time per request),
and writes bench.json, bench.md and bench.png (latency CDF, throughput against concurrency).

Target either a running server (``--url`` plus ``--key-file`` or ``--token``) or let the command
start one from a model store (``--model-store``), e.g.::

    torchserve-perf bench --model-store model_store --model resnet18 --concurrency 1 4 8
    torchserve-perf bench --url http://127.0.0.1:8080 --key-file key_file.json \\
        --model resnet18 --payload cat.jpg --rate 20 40 --duration 60

Or run a suite (models, payloads, concurrencies and rates, durations) from a YAML file into one
report, suite.json and suite.md (the format: docs/benchmarking.md)::

    torchserve-perf bench --suite suite.yaml --out results/nightly
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import sys
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union


from torchserve_perf.tools import loadgen, machine, multiload, paths
from torchserve_perf.tools.gpu_report import GpuSampler, render_lines
from torchserve_perf.tools.loadgen import LoadResult, Payload
from torchserve_perf.tools.argparsing import command_parser

if TYPE_CHECKING:
    from torchserve_perf.tools.suite import Suite

# The client is called the bottleneck when a run reaches this share of its measured ceiling,
# or when it uses this share of the machine's CPU (CPU it takes away from the server).
CEILING_WARN_SHARE = 0.5
CLIENT_CPU_WARN_SHARE = 0.10


@dataclass(frozen=True)
class BenchConfig:
    model: str
    concurrencies: tuple[int, ...]
    rates: tuple[float, ...]
    duration: float
    warmup: float
    seed: int
    max_in_flight: int
    ceiling: bool
    # Closed-loop clients spread over this many processes (tools/multiload.py), or "auto".
    client_processes: Union[int, str] = 1
    gpu_limits: bool = False  # measure the GPU's in-process limits and decode ceilings first (tools/gpu_report.py)

    def __post_init__(self) -> None:
        if not self.concurrencies and not self.rates:
            raise ValueError("give at least one --concurrency or --rate")
        if any(c < 1 for c in self.concurrencies):
            raise ValueError(f"concurrencies must be >= 1, got {list(self.concurrencies)}")
        if any(r <= 0 for r in self.rates):
            raise ValueError(f"rates must be > 0, got {list(self.rates)}")
        if self.duration <= 0 or self.warmup < 0:
            raise ValueError("--duration must be > 0 and --warmup >= 0")


# ---- analysis -----------------------------------------------------------------------------------
def ceiling_notes(runs: Sequence[LoadResult], ceilings: dict[int, LoadResult], cores: int) -> list[str]:
    """Say where the client, not the server, may be what limits a run."""
    notes = []
    for run in runs:
        key = run.concurrency if run.mode == "closed" else max(ceilings, default=0)
        ceiling = ceilings.get(key)
        if ceiling is not None and ceiling.throughput > 0:
            share = run.throughput / ceiling.throughput
            if share >= CEILING_WARN_SHARE:
                notes.append(f"{run.label()}: {run.throughput:.0f} req/s is {share:.0%} of this client's own ceiling "
                             f"({ceiling.throughput:.0f} req/s at {ceiling.label()}); the client may be the bottleneck")
        if run.seconds > 0 and run.client_cpu_s / (run.seconds * cores) >= CLIENT_CPU_WARN_SHARE:
            notes.append(f"{run.label()}: the client used {run.client_cpu_s / run.seconds:.2f} of {cores} cores; "
                         "it competes with the server for CPU")
        if run.mode == "open":
            lag = run.summary().get("start_lag_p99_ms")
            if run.errors.get(loadgen.NOT_SENT):
                notes.append(f"{run.label()}: {run.errors[loadgen.NOT_SENT]} requests could not start in time: "
                             "the server fell behind the offered rate (raise --max-in-flight to keep offering it)")
            elif run.throughput < 0.9 * (run.offered_rate or 0):
                notes.append(f"{run.label()}: the server answered {run.throughput:.1f} req/s of the "
                             f"{run.offered_rate:g} offered: past its capacity, latencies grow with the run's length")
            elif lag is not None and lag > 50:
                notes.append(f"{run.label()}: p99 start lag {lag:.0f} ms: requests waited for a free client "
                             "(server saturated or --max-in-flight too low); that wait is in the latencies")
    return notes


def build_report(config: BenchConfig, target: dict, payloads: Sequence[Payload], runs: Sequence[LoadResult],
                 ceilings: dict[int, LoadResult], cores: Optional[int] = None) -> dict:
    cores = cores or os.cpu_count() or 1
    return {
        "tool": "torchserve-perf bench",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cores": cores, "cpu": machine.cpu_name(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "target": target,
        "config": {"model": config.model, "concurrencies": list(config.concurrencies), "rates": list(config.rates),
                   "duration_s": config.duration, "warmup_s": config.warmup, "seed": config.seed,
                   "max_in_flight": config.max_in_flight},
        "payloads": [{"name": p.name, "content_type": p.content_type, "bytes": len(p.body)} for p in payloads],
        "client_ceiling": {str(c): {**r.summary(), "label": r.label()} for c, r in sorted(ceilings.items())},
        "runs": [{**run.summary(), "label": run.label(),
                  "cdf_ms": [[round(v * 1000, 3), round(f, 5)] for v, f in loadgen.cdf_points(sorted(run.latencies))]}
                 for run in runs],
        "notes": ceiling_notes(runs, ceilings, cores),
    }




# ---- output -------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def gpu_lines(report: dict) -> list[str]:
    """GPU utilisation per run, and the GPU's in-process limits, where they were measured."""
    return render_lines([(run["label"], run) for run in report["runs"]], report.get("gpu_limits"))


def render_markdown(report: dict) -> str:
    cfg, target = report["config"], report["target"]
    lines = [
        f"# Benchmark: {cfg['model']}",
        "",
        f"- target: {target.get('url')} ({target.get('kind')}), {report['created']}",
        f"- machine: {report['machine']['cores']} cores, {report['machine']['cpu']}",
        "- payloads: " + ", ".join(f"{p['name']} ({p['content_type']}, {p['bytes']} B)" for p in report["payloads"]),
        f"- {cfg['duration_s']:g} s per run after {cfg['warmup_s']:g} s of warm-up; open-loop seed {cfg['seed']}",
        "",
        "| run | requests | ok | errors | req/s | p50 ms | p90 ms | p95 ms | p99 ms | p99.9 ms | client CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in report["runs"]:
        errors = sum(run["errors"].values())
        lines.append(f"| {run['label']} | {run['requests']} | {run['ok']} | {errors} | {_fmt(run['throughput_rps'])} | "
                     f"{_fmt(run['p50_ms'])} | {_fmt(run['p90_ms'])} | {_fmt(run['p95_ms'])} | {_fmt(run['p99_ms'])} | "
                     f"{_fmt(run['p99.9_ms'])} | {_fmt(run['client_cpu_ms_per_request'], 3)} |")
    lines.append("")
    if report["client_ceiling"]:
        parts = [f"{c['label']}: {_fmt(c['throughput_rps'], 0)} req/s "
                 f"({_fmt(c['client_cpu_ms_per_request'], 3)} ms CPU/req)" for c in report["client_ceiling"].values()]
        lines += ["Client ceiling (same client and payloads against a trivial loopback endpoint): " + "; ".join(parts)
                  + ".", ""]
    lines += gpu_lines(report)
    if report["notes"]:
        lines += ["**Notes**", ""] + [f"- {note}" for note in report["notes"]] + [""]
    else:
        lines += ["The client was not the bottleneck: every run stayed below "
                  f"{CEILING_WARN_SHARE:.0%} of the client's ceiling and {CLIENT_CPU_WARN_SHARE:.0%} of the machine's CPU.",
                  ""]
    lines += ["Open-loop latencies run from each request's scheduled start (Poisson arrivals), so queueing in the "
              "client counts against the server (no coordinated omission).", ""]
    return "\n".join(lines)


def render_png(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    closed = [r for r in report["runs"] if r["mode"] == "closed"]
    opened = [r for r in report["runs"] if r["mode"] == "open"]
    panels = 2 + bool(opened)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5))
    cdf = axes[0]
    for run in report["runs"]:
        if run["cdf_ms"]:
            xs, ys = zip(*run["cdf_ms"])
            cdf.step(xs, ys, where="post", label=run["label"])
    cdf.set_xscale("log")
    cdf.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    cdf.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    cdf.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    cdf.set_xlabel("latency (ms, log)")
    cdf.set_ylabel("fraction of requests")
    cdf.set_title("latency CDF")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend(fontsize=8)

    tput = axes[1]
    if closed:
        cs = [r["concurrency"] for r in closed]
        tput.plot(cs, [r["throughput_rps"] for r in closed], "o-", color="tab:blue", label="throughput")
        tput.set_xscale("log", base=2)
        tput.set_xticks(cs, [str(c) for c in cs])
        p99 = tput.twinx()
        p99.plot(cs, [r["p99_ms"] or float("nan") for r in closed], "s--", color="tab:red", label="p99")
        p99.set_ylabel("p99 latency (ms)", color="tab:red")
        p99.set_ylim(bottom=0)
    tput.set_ylim(bottom=0)
    tput.set_xlabel("concurrent clients")
    tput.set_ylabel("throughput (req/s)", color="tab:blue")
    tput.set_title("throughput vs concurrency (closed loop)")
    tput.grid(True, alpha=0.3)

    if opened:
        ax = axes[2]
        rates = [r["offered_rate_rps"] for r in opened]
        ax.plot(rates, [r["throughput_rps"] for r in opened], "o-", label="achieved")
        ax.plot(rates, rates, "x:", color="grey", label="offered")
        ax.set_ylim(bottom=0)
        ax.set_xlim(0, max(rates) * 1.1)
        ax.set_xlabel("offered rate (req/s, Poisson)")
        ax.set_ylabel("throughput (req/s)")
        ax.set_title("open loop")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{report['config']['model']} @ {report['target'].get('url')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(report: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "bench.json", "markdown": out / "bench.md", "png": out / "bench.png"}
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["markdown"].write_text(render_markdown(report))
    render_png(report, paths["png"])
    return paths


# ---- running ------------------------------------------------------------------------------------
def run_benchmark(config: BenchConfig, url: str, token: Optional[str], payloads: Sequence[Payload], *,
                  progress: Optional[loadgen.ProgressFn] = print, workdir: Optional[Path] = None
                  ) -> tuple[list[LoadResult], dict[int, LoadResult]]:
    send = loadgen.HttpSender(url, payloads, token=token)
    ceilings: dict[int, LoadResult] = {}
    if config.ceiling:
        levels = set(config.concurrencies) | ({config.max_in_flight} if config.rates else set())
        if all(multiload.resolve(config.client_processes, level) == 1 for level in levels):
            ceilings = loadgen.client_ceiling(payloads, sorted(levels), duration=min(2.0, config.duration),
                                              workdir=workdir)
        else:  # the ceiling of the same number of load processes
            ceilings = multiload.client_ceilings(payloads, sorted(levels), config.client_processes,
                                                 duration=min(2.0, config.duration))
        if progress:
            progress("client ceiling: " + ", ".join(f"{r.label()} {r.throughput:.0f} req/s" for r in ceilings.values()))
    if config.warmup > 0:
        warm = max(config.concurrencies or (2,))
        loadgen.closed_loop(send, warm, duration=config.warmup)
    runs = []
    for concurrency in config.concurrencies:
        with GpuSampler() as gpus:  # NVML utilisation and memory while the run lasts (nothing without GPUs)
            if multiload.resolve(config.client_processes, concurrency) == 1:
                run = loadgen.closed_loop(send, concurrency, duration=config.duration, progress=progress)
            else:
                run = multiload.closed_loop_processes(url, payloads, concurrency, config.duration,
                                                      config.client_processes, token=token)
        run.gpu = gpus.usage()
        runs.append(run)
        if progress:
            progress(run.line())
    for rate in config.rates:
        with GpuSampler() as gpus:
            if multiload.resolve(config.client_processes, config.max_in_flight) == 1:
                run = loadgen.open_loop(send, rate, duration=config.duration, seed=config.seed,
                                        max_in_flight=config.max_in_flight, progress=progress)
            else:  # Poisson streams at shares of the rate, one per process
                run = multiload.open_loop_processes(url, payloads, rate, config.duration, config.client_processes,
                                                    max_in_flight=config.max_in_flight, seed=config.seed, token=token)
        run.gpu = gpus.usage()
        runs.append(run)
        if progress:
            progress(run.line())
    return runs, ceilings


# ---- a suite (torchserve_perf.tools.suite reads the file) into one report -----------------------------------------------------------------
def run_suite(suite: "Suite", out: Path, payloads: dict[str, list[Payload]], token: Optional[str] = None,
              progress: Optional[loadgen.ProgressFn] = print) -> dict:
    """Bench every model of the suite against one server (``token`` for a running one); returns the report."""
    target, server = suite.target, None
    if target is None:
        raise ValueError("the suite has no target; give --url or --model-store")
    if target.model_store:
        from torchserve_perf.tools import serving

        archives = [m.archive or f"{m.name}.mar" for m in suite.models]
        missing = [a for a in archives if not (target.model_store / a).is_file()]
        if missing:
            raise ValueError(f"target.model_store {target.model_store} has no {', '.join(missing)}; "
                             "build it with torchserve-perf archive or set archive: per model")
        workdir = out / "server"
        shutil.rmtree(workdir, ignore_errors=True)
        if progress:
            progress(f"starting TorchServe from {target.model_store} ({', '.join(archives)}) in {workdir} ...")
        server = serving.start(target.model_store, workdir, models=[f"{m.name}={a}" for m, a in
                                                                   zip(suite.models, archives)],
                               ready_models=[m.name for m in suite.models])
        url, token = server.inference_url, server.token.get("inference", {}).get("key")
        described = {"kind": "torchserve started by bench --suite", "url": url,
                     "model_store": str(target.model_store), "server_dir": str(workdir)}
    else:
        url = str(target.url)
        described = {"kind": "running server", "url": url, "token": "given" if token else "none"}
    reports = []
    try:
        for model in suite.models:
            load = model.load
            config = BenchConfig(model=model.name, concurrencies=load.concurrency, rates=load.rate,
                                 duration=load.duration, warmup=load.warmup, seed=load.seed,
                                 max_in_flight=load.max_in_flight, ceiling=load.ceiling)
            if progress:
                progress(f"[{model.name}] {url}{model.request_path}")
            runs, ceilings = run_benchmark(config, url + model.request_path, token, payloads[model.name],
                                           progress=progress, workdir=out)
            reports.append(build_report(config, {**described, "path": model.request_path},
                                        payloads[model.name], runs, ceilings))
    finally:
        if server is not None:
            server.stop()
    return {
        "tool": "torchserve-perf bench --suite",
        "suite": suite.name,
        "suite_file": str(suite.source),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "target": described,
        "models": reports,
    }


def render_suite_markdown(report: dict) -> str:
    lines = [f"# Benchmark suite: {report['suite']}", "",
             f"- from {report['suite_file']}, {report['created']}",
             f"- target: {report['target']['url']} ({report['target']['kind']})", "",
             "| model | run | ok | errors | req/s | p50 ms | p99 ms |", "|---|---|---:|---:|---:|---:|---:|"]
    for model in report["models"]:
        for run in model["runs"]:
            lines.append(f"| {model['config']['model']} | {run['label']} | {run['ok']} | {sum(run['errors'].values())} "
                         f"| {_num(run['throughput_rps'])} | {_num(run['p50_ms'])} | {_num(run['p99_ms'])} |")
    lines.append("")
    for model in report["models"]:
        # Each model's own section is bench's report, one heading level down.
        lines += ["#" + line if line.startswith("#") else line for line in render_markdown(model).splitlines()]
        lines.append("")
    return "\n".join(lines)


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def write_suite(report: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = {"json": out / "suite.json", "markdown": out / "suite.md"}
    written["json"].write_text(json.dumps(report, indent=2) + "\n")
    written["markdown"].write_text(render_suite_markdown(report))
    return written


def suite_main(args: argparse.Namespace) -> int:
    """``torchserve-perf bench --suite FILE``."""
    from torchserve_perf.tools.suite import load_suite, with_overrides

    try:
        suite = with_overrides(load_suite(args.suite), url=args.url, key_file=args.key_file, token=args.token,
                               model_store=args.model_store, duration=args.duration, warmup=args.warmup,
                               quick=args.quick)
        payloads = {m.name: [loadgen.load_payload(p, m.content_type) for p in m.payloads] for m in suite.models}
        token = suite.target.token or (loadgen.read_token(suite.target.key_file) if suite.target.key_file else None)
    except (ValueError, OSError) as exc:  # SuiteError, a payload or key file that cannot be read
        print(f"torchserve-perf bench: error: {exc}", file=sys.stderr)
        return 2
    progress = None if args.quiet else (lambda line: print(line, flush=True))
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


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = command_parser("bench", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    where = parser.add_argument_group("target")
    where.add_argument("--url", help="inference address of a running TorchServe, e.g. http://127.0.0.1:8080")
    where.add_argument("--key-file", type=Path, help="TorchServe's key_file.json (its inference key is used)")
    where.add_argument("--token", help="inference token (instead of --key-file)")
    where.add_argument("--model-store", type=Path, help="start a TorchServe from this store instead of --url")
    where.add_argument("--archive", action="append", default=[],
                       help="with --model-store: archive(s) to load (default: <model>.mar)")
    where.add_argument("--model", help="model name (default: resnet18)")
    where.add_argument("--path", help="request path (default: /predictions/<model>)")
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
    load.add_argument("--client-processes", default="auto", type=lambda v: v if v == "auto" else int(v),
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


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.suite:
        return suite_main(args)
    try:
        config = BenchConfig(model=args.model, concurrencies=tuple(args.concurrency), rates=tuple(args.rate),
                             duration=args.duration, warmup=args.warmup, seed=args.seed,
                             max_in_flight=args.max_in_flight, ceiling=not args.no_ceiling,
                             client_processes=args.client_processes, gpu_limits=args.gpu_limits)
        if args.payload:
            payloads = [loadgen.load_payload(p, args.content_type) for p in args.payload]
        else:
            payloads = [Payload(loadgen.sample_image(), args.content_type or "image/jpeg", "generated-640x480.jpg")]
    except (ValueError, OSError) as exc:
        print(f"torchserve-perf bench: error: {exc}", file=sys.stderr)
        return 2
    progress = None if args.quiet else (lambda line: print(line, flush=True))
    path = args.path or f"/predictions/{args.model}"

    gpu_limits = None
    if config.gpu_limits:  # before any server: the GPU must be the benchmark's alone
        from torchserve_perf.tools.gpu_report import limits_in_child

        args.out.mkdir(parents=True, exist_ok=True)
        gpu_limits = limits_in_child(args.quick, args.out / "gpu_limits.json")
    server = None
    if args.model_store:
        from torchserve_perf.tools import serving

        archives = args.archive or [f"{args.model}.mar"]
        missing = [a for a in archives if "://" not in a and not (Path(args.model_store) / a).exists()]
        if missing:  # TorchServe would only log it and never become ready
            print(f"torchserve-perf bench: error: {args.model_store} has no {', '.join(missing)}; build it with "
                  "`make model-store` (the demo's models) or `torchserve-perf archive`, or give --archive",
                  file=sys.stderr)
            return 2
        workdir = args.out / "server"  # its logs stay here for a look afterwards
        shutil.rmtree(workdir, ignore_errors=True)
        if progress:
            progress(f"starting TorchServe from {args.model_store} ({', '.join(archives)}) in {workdir} ...")
        server = serving.start(args.model_store, workdir, models=archives, ready_models=[args.model])
        url, token = server.inference_url, server.token.get("inference", {}).get("key")
        target = {"kind": "torchserve started by bench", "url": url, "model_store": str(args.model_store),
                  "archives": archives, "server_dir": str(workdir)}
    else:
        url = args.url.rstrip("/")
        try:
            token = args.token or (loadgen.read_token(args.key_file) if args.key_file else None)
        except (ValueError, OSError) as exc:
            print(f"bench: {exc}", file=sys.stderr)
            return 2
        target = {"kind": "running server", "url": url, "token": "given" if token else "none"}
    target["path"] = path
    try:
        runs, ceilings = run_benchmark(config, url + path, token, payloads, progress=progress, workdir=args.out)
    finally:
        if server is not None:
            server.stop()
    report = build_report(config, target, payloads, runs, ceilings)
    if gpu_limits is not None:
        report["gpu_limits"] = gpu_limits
    paths = write_outputs(report, args.out)
    print()
    print(render_markdown(report))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    failed = all(not r.latencies for r in runs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
