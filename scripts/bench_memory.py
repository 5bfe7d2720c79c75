#!/usr/bin/env python3
"""Worker memory, ours against stock TorchServe, on ResNet-18: RSS per worker side by side in one run.

In one run, one server after another (so each has the machine's memory and cores to itself), each
with 2 workers, after --seconds at --clients closed-loop clients:
  * ``stock``: the model behind TorchServe's own BaseHandler, one thread per worker (OMP_NUM_THREADS=1);
  * ``ours``: our archive as shipped (``auto`` picks the runtime);
  * ``ours_ort_copies``: ONNX Runtime, each session with its own weights and arena (as before sharing);
  * ``ours_ort_shared``: ONNX Runtime with its defaults (sessions share weights and arena);
  * ``ours_int8``: our archive as shipped plus ``--calibration`` (64 synthetic JPEGs): auto may keep int8.
It prints each worker's RSS, PSS and USS and the breakdown our workers log at load, then, in this
process, the ONNX Runtime sessions' cost and speed with and without sharing (timed in alternation,
so both see the same noise) and the time to reload the eager model from its archive files.

``--speed``: then stock, ours with a copy per session and ours as shipped all up at once, the load at
1, 4 and 8 clients taken in turns (``--rounds`` slices, as ``compare --rounds`` does), so sharing's
effect on throughput and p99 is measured side by side in one run, with each server's RSS read after.
Results go to results/bench_memory/summary.json.

    .venv/bin/python scripts/bench_memory.py --quick     # checks it works end to end (~3 minutes)
    .venv/bin/python scripts/bench_memory.py             # the numbers
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import torch

from torchserve_perf.models.resnet18 import ResNet18
from torchserve_perf.models.seeded import seeded_state_dict
from torchserve_perf.tools import paths, serving, worker_memory
from torchserve_perf.tools.calibration_images import write_jpegs
from torchserve_perf.tools.loadgen import closed_loop, sample_image
from torchserve_perf.tools.model_store import build_archive, build_stock_archive, default_specs

WORKERS = 2
VARIANTS = ("stock", "ours", "ours_ort_copies", "ours_ort_shared", "ours_int8")


def ours_config(optimizations: Optional[dict]) -> dict:
    config = json.loads(json.dumps(default_specs()[0].model_config))
    config.update(minWorkers=WORKERS, maxWorkers=WORKERS)
    if optimizations is not None:
        config["handler"]["optimizations"] = optimizations
    return config


def build(store: Path) -> dict[str, dict[str, Any]]:
    """Each variant's archive and server environment."""
    spec = default_specs()[0]
    build_stock_archive(store, name="stock", model_config={"minWorkers": WORKERS, "maxWorkers": WORKERS,
                                                           "responseTimeout": 120})
    build_archive(spec, store, name="ours", model_config=ours_config(None))
    build_archive(spec, store, name="ours_ort_copies", model_config=ours_config(
        {"chain": ["onnxruntime"], "onnxruntime": {"share_weights": False, "shared_arena": False}}))
    build_archive(spec, store, name="ours_ort_shared", model_config=ours_config({"chain": ["onnxruntime"]}))
    build_archive(spec, store, name="ours_int8", model_config=ours_config(None),
                  calibration=write_jpegs(store.parent / "calibration"))
    shutil.copy2(paths.metrics_yaml(), store / "metrics.yaml")
    return {"stock": {"OMP_NUM_THREADS": "1"}, "ours": {}, "ours_ort_copies": {}, "ours_ort_shared": {}, "ours_int8": {}}


def serve_and_measure(name: str, store: Path, work: Path, env: dict[str, str], clients: int,
                      seconds: float) -> dict[str, Any]:
    server = serving.start(store, Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work)), models=[f"{name}={name}.mar"],
                           ready_models=[name],
                           env={"PYTHONPATH": "", **env})
    try:
        result = closed_loop(server.sender(name, sample_image()), clients, duration=seconds, warmup=4)
        workers = worker_memory.server_workers(server)
        loaded = worker_memory.parse_load_lines(server.read_log())
        chose = [line.split("MODEL_LOG - ", 1)[-1] for line in server.read_log().splitlines()
                 if "optimizations for" in line]
    finally:
        server.stop()
    return {"load": result.summary(), "workers": workers, "summary": worker_memory.summary(workers),
            "at_load": loaded, "optimizations": chose[-WORKERS:]}


def speed_side_by_side(names: list[str], store: Path, work: Path, envs: dict[str, dict[str, str]],
                       concurrencies: tuple[int, ...], seconds: float, rounds: int) -> dict[str, Any]:
    """``names``' servers up at once, each point's load in turns; per server its runs and worker RSS."""
    from torchserve_perf.tools.compare.runs import interleave
    from torchserve_perf.tools.loadgen import merge

    servers: dict[str, serving.TorchServe] = {}
    try:
        for name in names:
            servers[name] = serving.start(store, Path(tempfile.mkdtemp(prefix=f"speed-{name}-", dir=work)),
                                          models=[f"{name}={name}.mar"], ready_models=[name],
                                          env={"PYTHONPATH": "", **envs[name]})
        senders = {name: server.sender(name, sample_image()) for name, server in servers.items()}
        for send in senders.values():
            closed_loop(send, max(concurrencies), duration=4)
        parts = interleave(senders, concurrencies, seconds, rounds)
        return {name: {"runs": {str(c): merge(parts[(name, c)]).summary() for c in concurrencies},
                       "memory": worker_memory.summary(worker_memory.server_workers(server))}
                for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()


def ort_in_process(rounds: int) -> dict[str, Any]:
    """ONNX Runtime sessions for 1, 2 and 4 threads, with and without sharing: RSS each adds, and speed."""
    from torchserve_perf.plugins import memory
    from torchserve_perf.plugins.optimizations import Runtime, StepContext
    from torchserve_perf.plugins.optimizations.onnx_runtime import OnnxRuntimeOptions, apply, export

    model = ResNet18()
    model.load_state_dict(seeded_state_dict(ResNet18))
    model.eval()
    inputs = (torch.randn(1, 3, 224, 224), torch.randn(2, 3, 224, 224))
    runtime = Runtime(device=torch.device("cpu"), intra_op_threads=1, inter_op_threads=1, batch_size=2,
                      intra_op_max=4, cache_dir=tempfile.mkdtemp(prefix="bench-memory-cache-"))
    out: dict[str, Any] = {}
    runners = {}
    # The exporter's one-time cost (torch.onnx's modules) paid first, so neither variant carries it.
    export(model, StepContext(runtime, OnnxRuntimeOptions(), inputs, inputs[-1]), "torchscript", None)
    for label, share in (("copies", False), ("shared", True)):
        options = OnnxRuntimeOptions(exporter="torchscript", share_weights=share, shared_arena=share)
        before = memory.resident_bytes()
        runners[label] = apply(model, StepContext(runtime, options, inputs, inputs[-1]))
        parts = memory.reported_parts(runners[label])
        out[label] = {"rss_added_mib": round((memory.resident_bytes() - before) / memory.MIB, 1),
                      "parts_mib": {k: round(v / memory.MIB, 1) for k, v in parts.items()}}
    times: dict[str, list[float]] = {label: [] for label in runners}
    x = inputs[-1]
    with torch.inference_mode():
        reference = model(x)
        for label, runner in runners.items():
            out[label]["max_abs_diff_vs_eager"] = float((runner(x) - reference).abs().max())
        for _ in range(rounds):  # alternate, so a burst of load from elsewhere hits both alike
            for label, runner in runners.items():
                started = time.perf_counter()
                for _ in range(5):
                    runner(x)
                times[label].append((time.perf_counter() - started) / 5 * 1000)
    for label, samples in times.items():
        out[label]["ms_per_batch2_median"] = round(statistics.median(samples), 2)
        out[label]["ms_per_batch2_min"] = round(min(samples), 2)
    return out


def eager_reload_seconds(repeats: int) -> float:
    """What the fallback pays the first time it needs the released eager model: the archive's files read back."""
    from torchserve_perf.handlers.loading import load_archived_model

    spec = default_specs()[0]
    with tempfile.TemporaryDirectory() as folder:
        shutil.copy2(spec.model_file, Path(folder) / spec.model_file.name)
        torch.save(seeded_state_dict(ResNet18), Path(folder) / "weights.pt")
        manifest = {"model": {"modelFile": spec.model_file.name, "serializedFile": "weights.pt"}}
        taken = []
        for _ in range(repeats):
            started = time.perf_counter()
            load_archived_model(folder, manifest, torch.device("cpu")).eval()
            taken.append(time.perf_counter() - started)
    return round(statistics.median(taken), 3)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0, help="load before the workers' memory is read")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="servers to run, in this order (one named twice runs twice)")
    parser.add_argument("--quick", action="store_true", help="short runs, to check the script works")
    parser.add_argument("--speed", action="store_true", help="also stock, copies and shipped side by side at 1/4/8")
    parser.add_argument("--rounds", type=int, default=2, help="--speed: slices per point, servers in turn")
    parser.add_argument("--out", type=Path, default=paths.results_dir("bench_memory"))
    args = parser.parse_args(argv)
    seconds = 3.0 if args.quick else args.seconds

    shutil.rmtree(args.out, ignore_errors=True)
    store, work = args.out / "store", args.out / "servers"
    print("building archives ...", flush=True)
    envs = build(store)
    servers: dict[str, Any] = {}
    work.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(args.variants):  # a variant named twice runs twice (ONNX Runtime's cache warm)
        key = name if name not in servers else f"{name}#{index}"
        print(f"[{key}] starting, then {seconds:g} s at {args.clients} clients ...", flush=True)
        servers[key] = serve_and_measure(name, store, work, envs[name], args.clients, seconds)
        s = servers[key]
        print(f"  {s['load']['throughput_rps']:.1f} req/s, p99 {s['load']['p99_ms']} ms; workers: "
              + ", ".join(f"RSS {w['rss_mib']:.0f} / PSS {w.get('pss_mib', 0):.0f} / USS {w.get('uss_mib', 0):.0f} MiB"
                          for w in s["workers"]), flush=True)
        for entry in s["at_load"][-WORKERS:]:
            print(f"  at load: {entry['worker']} RSS {entry['rss_mib']:.0f} MiB = "
                  + ", ".join(f"{k} {v:+.1f}" for k, v in entry["parts_mib"].items()) + f" ({entry['named_pct']}% named)")
    print("\nin process: ONNX Runtime sessions for 1, 2, 4 threads ...", flush=True)
    in_process = ort_in_process(rounds=4 if args.quick else 12)
    for label, numbers in in_process.items():
        print(f"  {label:<7} +{numbers['rss_added_mib']:.1f} MiB {numbers['parts_mib']}; batch of 2: median "
              f"{numbers['ms_per_batch2_median']} ms, best {numbers['ms_per_batch2_min']} ms; "
              f"max |diff| vs eager {numbers['max_abs_diff_vs_eager']:.2e}")
    reload_s = eager_reload_seconds(3)
    print(f"  eager model reload from the archive's files: {reload_s} s (median of 3)")

    stock = servers.get("stock", {}).get("summary", {}).get("mean_rss_mib")
    print(f"\n{'variant':<16} {'RSS per worker (MiB)':<24} {'vs stock':>8} {'req/s':>7}")
    for name, s in servers.items():
        mean = s["summary"].get("mean_rss_mib")
        ratio = f"{mean / stock:.2f}x" if mean and stock else "-"
        print(f"{name:<16} {', '.join(f'{r:.0f}' for r in s['summary']['rss_mib']):<24} {ratio:>8} "
              f"{s['load']['throughput_rps']:>7.1f}")
    speed: dict[str, Any] = {}
    if args.speed:
        concurrencies = (1, 4, 8)
        print(f"\nside by side: stock, ours_ort_copies, ours up at once; {seconds:g} s per point at {concurrencies}",
              flush=True)
        speed = speed_side_by_side(["stock", "ours_ort_copies", "ours"], store, work, envs, concurrencies, seconds,
                                   1 if args.quick else args.rounds)
        print(f"\n{'server':<16} {'RSS per worker':<16} " + " ".join(f"{f'{c} clients: req/s, p99':>26}"
                                                                     for c in concurrencies))
        for name, result in speed.items():
            cells = [f"{r['throughput_rps']:.1f} req/s, {r['p99_ms']:.0f} ms" for r in result["runs"].values()]
            rss = ", ".join(f"{r:.0f}" for r in result["memory"].get("rss_mib", []))
            print(f"{name:<16} {rss:<16} " + " ".join(f"{cell:>26}" for cell in cells))
    summary = {"machine": platform.platform(), "workers": WORKERS, "clients": args.clients, "seconds": seconds,
               "servers": servers, "in_process": in_process, "eager_reload_s": reload_s, "speed": speed}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    shutil.rmtree(store, ignore_errors=True)
    print(f"\nwrote {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
