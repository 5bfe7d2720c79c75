#!/usr/bin/env python3
"""The demo: a real TorchServe with our handlers, a short real load, and what to look at next.

Starts TorchServe on free loopback ports (token auth on) with model_store/, profiles with
ENABLE_TORCH_PROFILER (sampled), sends a few seconds of load to both models at 4 concurrent
clients, prints throughput and p50/p90/p99, then stops the server. Then a short side by side:
ResNet-18 behind stock TorchServe (its BaseHandler and defaults) against ours at 1 and 4 clients,
and where our time goes per phase, read from the traces the run wrote.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Callable, Optional

from torchserve_perf.tools import paths, serving
from torchserve_perf.tools.argparsing import command_parser
from torchserve_perf.tools.loadgen import SAMPLE_TEXT, closed_loop, sample_image
from torchserve_perf.tools.model_store import DEMO_TEXT


def main(argv: Optional[list[str]] = None) -> int:
    parser = command_parser("demo", description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("model_store"))
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, default=paths.results_dir("demo"))
    parser.add_argument("--side-by-side-seconds", type=float, default=5.0,
                        help="seconds per point of the stock comparison (0: skip it)")
    args = parser.parse_args(argv)

    if not (args.store / "resnet18.mar").is_file():
        print(f"{args.store} has no archives: run `make model-store` first", file=sys.stderr)
        return 2
    # The text model: the small BERT archived from its save_pretrained folder (model_store.build_demo_text);
    # a store built without the hf extra has only the hashed-token text_classifier.
    text = DEMO_TEXT if (args.store / f"{DEMO_TEXT}.mar").is_file() else "text_classifier"
    shutil.rmtree(args.out, ignore_errors=True)
    traces = args.out / "traces"
    # absolute: a worker resolves a relative directory against its own cwd, the unpacked archive
    env = {"ENABLE_TORCH_PROFILER": "1", "TS_PERF_PROFILER_DIR": str(traces.resolve())}
    print("starting TorchServe (token auth on) with model_store/ ...", flush=True)
    server = serving.start(args.store, args.out / "server", env=env, models=[f"{m}={m}.mar" for m in ("resnet18", text)],
                           ready_models=["resnet18", text])
    side: dict[str, dict[int, dict]] = {}
    try:
        loads = {
            "resnet18": server.sender("resnet18", sample_image()),
            text: server.sender(text, SAMPLE_TEXT),
        }
        answer = server.predict(text, body=SAMPLE_TEXT)
        print(f"\n{text} answers {SAMPLE_TEXT.decode()!r} with {json.dumps(answer.json()) if answer.ok else answer.text}")
        print(f"\n{args.concurrency} concurrent clients, {args.seconds:.0f} s per model\n")
        print(f"{'model':<16} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for model, send in loads.items():
            result = closed_loop(send, args.concurrency, duration=args.seconds, warmup=4)
            s = result.summary()
            print(f"{model:<16} {s['throughput_rps']:>8.1f} {s['p50_ms']:>8.1f} {s['p90_ms']:>8.1f} "
                  f"{s['p99_ms']:>8.1f} {sum(result.errors.values()):>7}")
        if args.side_by_side_seconds > 0:
            side["ours"] = points(loads["resnet18"], args.side_by_side_seconds)
        scrape = server.scrape()
        ours = sorted({line.split("{")[0] for line in scrape.splitlines() if line.startswith("ts_perf_")})
        print(f"\nmetrics:  {server.metrics_url}/metrics  ({len(ours)} torchserve-perf series while it ran: "
              f"{', '.join(ours[:6]) or 'none'})")
    finally:
        server.stop()
    trace_files = sorted(traces.rglob("*.json*")) if traces.exists() else []
    if args.side_by_side_seconds > 0:
        side["stock"] = stock_points(args.out / "stock", args.side_by_side_seconds)
        print_side_by_side(side)
    for line in where_the_time_goes(trace_files):
        print(line)
    print(f"traces:   {traces}  ({len(trace_files)} Kineto trace files)")
    print(f"open them: {Path(sys.executable).with_name('tensorboard')} --logdir {traces}")
    print(f"logs:     {args.out / 'server' / 'logs'}")
    print("server stopped; nothing left running.")
    return 0


SIDE_CLIENTS = (1, 4)


def points(send: Callable[[], int], seconds: float) -> dict[int, dict]:
    return {c: closed_loop(send, c, duration=seconds, warmup=1).summary() for c in SIDE_CLIENTS}


def stock_points(workdir: Path, seconds: float) -> dict[int, dict]:
    """ResNet-18 behind TorchServe's own BaseHandler with its defaults (workers = cores, batch 1)."""
    from torchserve_perf.tools.model_store import build_stock_archive

    store = workdir / "store"
    print("\nstarting stock TorchServe (BaseHandler, its defaults) for the side by side ...", flush=True)
    build_stock_archive(store, name="resnet18_stock", model_config={"responseTimeout": 120})
    stock = serving.start(store, workdir / "server", models=["resnet18_stock.mar"], ready_models=["resnet18_stock"])
    try:
        return points(stock.sender("resnet18_stock", sample_image()), seconds)
    finally:
        stock.stop()


def print_side_by_side(side: dict[str, dict[int, dict]]) -> None:
    print("\nResNet-18, same JPEG: stock TorchServe (defaults) vs ours (defaults, profiler sampling)")
    print(f"{'clients':>7} {'stock req/s':>12} {'p99 ms':>8} {'ours req/s':>11} {'p99 ms':>8} {'ours/stock':>11}")
    for c in SIDE_CLIENTS:
        s, o = side["stock"][c], side["ours"][c]
        ratio = o["throughput_rps"] / s["throughput_rps"] if s["throughput_rps"] else float("nan")
        print(f"{c:>7} {s['throughput_rps']:>12.1f} {s['p99_ms']:>8.0f} {o['throughput_rps']:>11.1f} "
              f"{o['p99_ms']:>8.0f} {ratio:>10.2f}x")


def where_the_time_goes(trace_files: list[Path]) -> list[str]:
    """One line per model: mean ms per profiled batch in each phase, from our own traces."""
    from torchserve_perf.plugins.profiler.traces import PHASES
    from torchserve_perf.tools.traces import model_of, summarize

    workers, _ = summarize(trace_files)
    by_model: dict[str, list] = {}
    for name, w in workers.items():
        by_model.setdefault(model_of(name, {}), []).append(w)
    lines = ["\nwhere the time goes (mean per profiled batch, from the traces):"] if by_model else []
    for model, ws in sorted(by_model.items()):
        steps = sum(w.steps for w in ws)
        if not steps:
            continue
        total = sum(w.step_us for w in ws) / steps / 1000
        phases = {p: sum(w.phase_us.get(p, 0.0) for w in ws) / steps / 1000 for p in PHASES}
        sizes = [b for w in ws for b in w.batch_sizes]
        size = f", batch {sum(sizes) / len(sizes):.1f}" if sizes else ""
        parts = ", ".join(f"{p} {v:.1f} ms ({100 * v / total:.0f}%)" for p, v in phases.items()) if total else ""
        lines.append(f"  {model:<16} {total:.1f} ms per batch{size}: {parts}, other {max(0.0, total - sum(phases.values())):.1f} ms")
    return lines


if __name__ == "__main__":
    sys.exit(main())
