#!/usr/bin/env python3
"""Speedup of each optimization plugin on ResNet-18 and the text model, in process and served.

For every model and chain, in one run:
  * in process: the chain is applied with ``plugins.optimizations.optimize`` (parity-checked, as
    in a worker), then batches of ``--batch`` rows run back to back for ``--seconds``, with the
    thread count a single worker gets; throughput is rows/s, speedup is against eager measured
    in the same run;
  * served: the same chain in a model-config.yaml, registered on one real TorchServe (one model
    at a time, one worker, batchSize = ``--batch``), driven by a closed loop of one-row requests
    (``.npy`` tensors for ResNet-18, so image decoding does not hide the model; text for the
    text model), for ``--served-seconds``.
It reports speedups, and served/in-process for each chain.

    .venv/bin/python scripts/bench_optimizations.py --quick      # checks it works (a few minutes)
    .venv/bin/python scripts/bench_optimizations.py              # the full table, compile included
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from torchserve_perf.handlers.options import TextOptions
from torchserve_perf.handlers.tokenizer import PAD_ID, tokenize
from torchserve_perf.plugins import threads
from torchserve_perf.plugins.config import build
from torchserve_perf.plugins.optimizations import OptimizationConfig, Runtime, optimize, standard_registry
from torchserve_perf.tools import loadgen, paths, serving
from torchserve_perf.tools.model_store import ArchiveSpec, build_archive, default_specs, seeded_state_dict

FULL_CHAINS = ["eager", "channels_last", "torchscript", "channels_last+torchscript", "quantize_dynamic",
               "onnxruntime", "bf16", "fp16", "ipex", "tensorrt", "compile", "channels_last+compile"]
QUICK_CHAINS = ["eager", "channels_last", "torchscript", "onnxruntime", "bf16"]
TEXTS = [
    "The service was quick and the staff were friendly.",
    "Is this thing on? I have been waiting for the delivery since Tuesday and nobody answers.",
    "Terrible experience, the order arrived late and cold.",
    "Would you recommend the blue one or the red one for a long hike in the mountains?",
    "Great value for the price, I would buy it again without thinking twice about it.",
    "Not sure what to make of it yet.",
]


@dataclass
class Bench:
    name: str
    spec: ArchiveSpec
    batches: list[torch.Tensor]  # in-process inputs, as the handler would collate them
    payloads: list[loadgen.Payload]  # one row per request, served
    rows_per_batch: int


def image_bench(batch: int) -> Bench:
    spec = next(s for s in default_specs() if s.name == "resnet18")
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randn(1, 3, 224, 224, generator=generator) for _ in range(max(batch, 4))]
    payloads = []
    for i, row in enumerate(rows):
        buffer = io.BytesIO()
        np.save(buffer, row.numpy())
        payloads.append(loadgen.Payload(buffer.getvalue(), "application/octet-stream", f"row{i}.npy"))
    batches = [torch.cat([rows[(b + i) % len(rows)] for i in range(batch)]) for b in range(3)]
    return Bench("resnet18", spec, batches, payloads, batch)


def text_bench(batch: int) -> Bench:
    spec = next(s for s in default_specs() if s.name == "text_classifier")
    opts = TextOptions()
    ids = [tokenize(text, opts.vocab_size, opts.max_length) for text in TEXTS]
    batches = []
    for b in range(3):
        rows = [ids[(b + i) % len(ids)] for i in range(batch)]
        length = -(-max(map(len, rows)) // opts.pad_to_multiple) * opts.pad_to_multiple
        batches.append(torch.tensor([r + [PAD_ID] * (length - len(r)) for r in rows], dtype=torch.long))
    payloads = [loadgen.Payload(text.encode(), "text/plain", f"text{i}") for i, text in enumerate(TEXTS)]
    return Bench("text", spec, batches, payloads, batch)


def worker_threads() -> threads.ThreadDecision:
    """What the thread policy gives a model's only worker on this machine."""
    return threads.decide(threads.ThreadConfig(), physical=threads.physical_cores(), cores=threads.allowed_cores(),
                          workers=1, worker_index=0)


def chain_config(chain: str) -> dict[str, Any]:
    return {} if chain == "eager" else {"chain": chain.split("+")}


# ---- in process -------------------------------------------------------------------------------
def in_process(bench: Bench, chain: str, seconds: float, decision: threads.ThreadDecision) -> dict[str, Any]:
    torch.set_num_threads(decision.intra_op)
    torch.manual_seed(0)
    model = bench.spec.make_model()
    model.load_state_dict(seeded_state_dict(bench.spec.make_model))
    model.eval()
    runtime = Runtime(device=torch.device("cpu"), intra_op_threads=decision.intra_op,
                      inter_op_threads=decision.inter_op, model_name=bench.name, batch_size=bench.rows_per_batch)
    config = build(OptimizationConfig, chain_config(chain), "optimizations")
    result = optimize(model, config, bench.batches[0][:1], runtime, standard_registry())
    runner = result.model
    with torch.inference_mode():
        warm_until = time.perf_counter() + min(1.0, seconds / 2)  # caches, allocator, thread pools
        for i in range(1000):
            runner(bench.batches[i % len(bench.batches)])
            if i >= 2 and time.perf_counter() > warm_until:
                break
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            runner(bench.batches[calls % len(bench.batches)])
            calls += 1
        elapsed = time.perf_counter() - started
    return {"rows_per_s": calls * bench.rows_per_batch / elapsed, "applied": result.applied,
            "skipped": result.skipped, "load_s": round(result.load_seconds, 2)}


# ---- served -----------------------------------------------------------------------------------
def served(server: serving.TorchServe, store: Path, bench: Bench, chain: str, seconds: float,
           concurrency: int) -> dict[str, Any]:
    name = f"{bench.name}_{chain.replace('+', '_')}"
    handler = dict(bench.spec.model_config.get("handler") or {})
    if chain != "eager":
        handler["optimizations"] = chain_config(chain)
    config = {"minWorkers": 1, "maxWorkers": 1, "batchSize": bench.rows_per_batch, "maxBatchDelay": 5,
              "responseTimeout": 600, "startupTimeout": 900, "handler": handler}
    build_archive(bench.spec, store, name=name, model_config=config)
    registered = server.manage("POST", "models", url=f"{name}.mar", initial_workers=1, synchronous="true",
                               timeout=900)
    if not registered.ok:
        return {"error": f"registration failed: {registered.status_code} {registered.text[:300]}"}
    try:
        sender = loadgen.HttpSender(f"{server.inference_url}/predictions/{name}", bench.payloads,
                                    token=server.key())
        loadgen.closed_loop(sender, concurrency, duration=min(2.0, seconds))  # warm connections and batching
        result = loadgen.closed_loop(sender, concurrency, duration=seconds)
        sender.close()
        return {"rows_per_s": result.throughput, "errors": result.error_count,
                "p50_ms": result.summary()["p50_ms"], "applied_in_worker": _applied_in_log(server, name)}
    finally:
        server.manage("DELETE", f"models/{name}")


def _applied_in_log(server: serving.TorchServe, name: str) -> Optional[str]:
    marker = f"optimizations for {name}: "
    lines = [line for line in server.read_log("model_log.log").splitlines() if marker in line]
    return lines[-1].split(marker, 1)[1] if lines else None


# ---- report -----------------------------------------------------------------------------------
def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'model':<9} {'chain':<26} {'load s':>7} {'in-proc rows/s':>15} {'speedup':>8} "
            f"{'served rows/s':>14} {'speedup':>8} {'served/in-proc':>15}  notes")
    lines = [head, "-" * len(head)]

    def num(row: dict[str, Any], key: str, fmt: str) -> str:
        value = row.get(key)
        width = int(fmt.split(".")[0])
        return format(value, fmt) if isinstance(value, (int, float)) else "-".rjust(width)

    for r in rows:
        lines.append(f"{r['model']:<9} {r['chain']:<26} {num(r, 'load_s', '7.1f')} {num(r, 'in_process', '15.1f')} "
                     f"{num(r, 'speedup', '8.2f')} {num(r, 'served', '14.1f')} {num(r, 'served_speedup', '8.2f')} "
                     f"{num(r, 'served_ratio', '15.2f')}  {r.get('note', '')}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    decision = worker_threads()
    benches = {"resnet18": image_bench, "text": text_bench}
    rows: list[dict[str, Any]] = []
    server = None
    workdir = Path(tempfile.mkdtemp(prefix="bench-optimizations-"))
    store = workdir / "store"
    store.mkdir()
    try:
        if not args.no_served:
            server = serving.start(store, workdir / "server", models=(), properties={"enable_model_api": "true"})
        for model_name in args.models:
            bench = benches[model_name](args.batch)
            eager_in, eager_served = None, None
            for chain in args.chains:
                row: dict[str, Any] = {"model": model_name, "chain": chain}
                print(f"[{model_name}] {chain}: in process ...", flush=True)
                result = in_process(bench, chain, args.seconds, decision)
                applied = "+".join(result["applied"]) or "eager"
                row.update(load_s=result["load_s"], in_process=result["rows_per_s"], applied=result["applied"],
                           skipped=result["skipped"])
                if chain != "eager" and applied != chain:
                    row["dropped"] = True
                    row["note"] = f"applied: {applied}; " + "; ".join(f"{k}: {v[:90]}" for k, v in
                                                                      result["skipped"].items())
                    rows.append(row)
                    continue  # nothing (new) to serve: the worker would drop the same steps
                if chain == "eager":
                    eager_in = result["rows_per_s"]
                if server is not None:
                    print(f"[{model_name}] {chain}: served ...", flush=True)
                    out = served(server, store, bench, chain, args.served_seconds, args.concurrency)
                    if "error" in out:
                        row["note"] = out["error"]
                    else:
                        if chain == "eager":
                            eager_served = out["rows_per_s"]
                        row.update(served=out["rows_per_s"], served_errors=out["errors"],
                                   served_p50_ms=out["p50_ms"], served_log=out["applied_in_worker"])
                        row["served_speedup"] = out["rows_per_s"] / eager_served if eager_served else None
                        row["served_ratio"] = out["rows_per_s"] / result["rows_per_s"]
                        if out["errors"]:
                            row["note"] = f"{out['errors']} errors"
                rows.append(row)
                print(table([row]).splitlines()[-1], flush=True)
            # Eager once more at the end, the better of the two kept: the first run of a model in a
            # process is the one most disturbed (page faults, a server still settling).
            again = in_process(bench, "eager", args.seconds, decision)["rows_per_s"]
            model_rows = [r for r in rows if r["model"] == model_name]
            model_rows[0]["in_process_again"] = again
            eager_in = max(eager_in or 0.0, again)
            for r in model_rows:
                if not r.get("dropped"):
                    r["speedup"] = r["in_process"] / eager_in
                if r["chain"] == "eager" and r.get("served"):
                    r["served_ratio"] = r["served"] / eager_in
    finally:
        if server is not None:
            server.stop()
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="short runs, no compile: checks that everything works, not a measurement")
    parser.add_argument("--models", nargs="+", choices=["resnet18", "text"], default=["resnet18", "text"])
    parser.add_argument("--chains", nargs="+", help=f"chains to measure, '+'-joined (default: {FULL_CHAINS})")
    parser.add_argument("--batch", type=int, default=8, help="rows per batch, in process and as batchSize")
    parser.add_argument("--seconds", type=float, default=15.0, help="in-process measurement per chain")
    parser.add_argument("--served-seconds", type=float, default=20.0, help="served measurement per chain")
    parser.add_argument("--concurrency", type=int, help="served clients (default: 2 x batch, to fill batches)")
    parser.add_argument("--no-served", action="store_true", help="in process only")
    parser.add_argument("--out", type=Path, default=paths.results_dir("bench_optimizations.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.chains = args.chains or QUICK_CHAINS
        args.seconds, args.served_seconds = min(args.seconds, 2.0), min(args.served_seconds, 3.0)
        args.batch = min(args.batch, 4)
    args.chains = args.chains or FULL_CHAINS
    if "eager" not in args.chains:
        args.chains = ["eager"] + args.chains
    else:
        args.chains = ["eager"] + [c for c in args.chains if c != "eager"]
    args.concurrency = args.concurrency or 2 * args.batch
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    rows = run(args)
    report = table(rows)
    print("\n" + report)
    ratios = [r["served_ratio"] for r in rows if r.get("served_ratio") and r["chain"] != "eager"]
    if ratios:
        print(f"\nserved / in-process for optimized chains: min {min(ratios):.2f}, max {max(ratios):.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": threads.physical_cores(),
                    "torch": torch.__version__},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "rows": rows,
    }, indent=2, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
