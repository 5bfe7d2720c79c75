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
5. ``ours_tuned``: our handlers with ``results/tune/resnet18/best.json`` (torchserve-perf tune), or a
   documented fallback when there is none.
6. ``litserve``: LitServe serving the same model with its dynamic batching (scripts/fixtures/litserve_app.py).

Each server gets the same JPEG at 1, 4 and 8 concurrent closed-loop clients. Writes
``results/compare/report.md`` and ``report.json``.

    torchserve-perf compare              # full run (about 10-15 minutes)
    torchserve-perf compare --quick      # a few seconds per point, to check it works
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from torchserve_perf.tools import loadgen, machine, paths
from torchserve_perf.tools.gpu_report import GpuSampler, limits_in_child, render_lines
from torchserve_perf.tools.loadgen import LoadResult, Payload
from torchserve_perf.tools.argparsing import command_parser

SYSTEMS = ("raw", "stock_default", "stock_guided", "ours_default", "ours_tuned", "litserve")
TITLES = {
    "raw": "in-process limit (model only)",
    "stock_default": "stock TorchServe, defaults",
    "stock_guided": "stock TorchServe, 1 thread/worker",
    "ours_default": "ours, defaults",
    "ours_tuned": "ours, tuned",
    "litserve": "LitServe, batching",
}
HEADLINE_CONCURRENCY = 4  # the reference point
TUNE_BEST = paths.results_dir("tune", "resnet18", "best.json")
# Used when torchserve-perf tune has not written best.json: the guide's heuristic, which is also where
# the tuner starts (one worker per physical core, one intra-op thread each), with batching.
FALLBACK_TUNED = {"workers": 2, "intra_op_threads": 1, "batch_size": 4, "max_batch_delay_ms": 5, "optimizations": []}
LITSERVE_BATCHING = {"max_batch_size": 8, "batch_timeout": 0.01}


@dataclass(frozen=True)
class CompareConfig:
    seconds: float
    warmup: float
    concurrencies: tuple[int, ...]
    systems: tuple[str, ...]
    out: Path
    quick: bool
    compile: bool
    tune_best: Path
    work: Path  # archives and server folders (logs); removed at the end unless something failed
    # > 1: every TorchServe system runs at once and the load alternates between them, each point
    # split into this many slices (the order rotates), so a noisy neighbour hits all of them alike.
    rounds: int = 1

    def __post_init__(self) -> None:
        unknown = sorted(set(self.systems) - set(SYSTEMS))
        if unknown:
            raise ValueError(f"unknown systems {unknown}; choose from {list(SYSTEMS)}")
        if self.rounds < 1:
            raise ValueError("--rounds must be >= 1")
        if self.seconds <= 0 or self.warmup < 0 or not self.concurrencies or min(self.concurrencies) < 1:
            raise ValueError("--seconds must be > 0, --warmup >= 0, concurrencies >= 1")


@dataclass
class SystemResult:
    key: str
    settings: str
    runs: dict[int, dict] = field(default_factory=dict)  # concurrency -> LoadResult.summary()
    error: Optional[str] = None
    startup_s: Optional[float] = None

    def run(self, concurrency: int) -> Optional[dict]:
        return self.runs.get(concurrency)

    def as_dict(self) -> dict:
        return {"key": self.key, "title": TITLES[self.key], "settings": self.settings, "error": self.error,
                "startup_s": self.startup_s, "runs": {str(c): r for c, r in sorted(self.runs.items())}}


# ---- 1. the raw in-process limit (runs in a child process: own threads, own compile workers) -----
def measure_forward(model: Callable, batch: int, seconds: float) -> float:
    """Images per second of ``model`` on random ``batch``x3x224x224 input, after warm-up."""
    import torch

    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds or done == 0:
            model(x)
            done += batch
    return done / (time.perf_counter() - began)


def raw_limit(quick: bool, use_compile: bool, payload: bytes) -> dict:
    import torch

    from torchserve_perf.models.resnet18 import ResNet18
    from torchserve_perf.tools.model_store import seeded_state_dict
    from torchserve_perf.fixtures.litserve_app import preprocess

    cores = os.cpu_count() or 1
    seconds = 1.5 if quick else 4.0
    thread_options = sorted({1, cores}) if quick else list(range(1, cores + 1))
    batch_options = (1, 4, 8) if quick else (1, 2, 4, 8, 16)
    torch.set_num_interop_threads(1)
    model = ResNet18().eval()
    model.load_state_dict(seeded_state_dict(ResNet18))

    points = []
    for threads in thread_options:
        torch.set_num_threads(threads)
        for batch in batch_options:
            rate = measure_forward(model, batch, seconds)
            points.append({"variant": "eager", "threads": threads, "batch": batch, "images_per_s": round(rate, 2)})
            print(f"  raw eager   threads={threads} batch={batch:<2} {rate:7.1f} img/s", flush=True)
    best_eager = max(points, key=lambda p: p["images_per_s"])

    best_optimized = None
    if use_compile:
        torch.set_num_threads(best_eager["threads"])
        compiled = torch.compile(model)
        batches = [best_eager["batch"]] if quick else sorted({best_eager["batch"], max(1, best_eager["batch"] // 2),
                                                             best_eager["batch"] * 2})
        for batch in batches:
            began = time.perf_counter()
            measure_forward(compiled, batch, 0.0)  # compiles for this shape
            compile_s = time.perf_counter() - began
            rate = measure_forward(compiled, batch, seconds)
            point = {"variant": "compile", "threads": best_eager["threads"], "batch": batch,
                     "images_per_s": round(rate, 2), "compile_s": round(compile_s, 1)}
            points.append(point)
            print(f"  raw compile threads={point['threads']} batch={batch:<2} {rate:7.1f} img/s "
                  f"(compiled in {compile_s:.0f} s)", flush=True)
        best_optimized = max((p for p in points if p["variant"] == "compile"), key=lambda p: p["images_per_s"])
    # The limit the servers are held to: the fastest variant measured (compile can lose on some shapes).
    limit = max([best_eager] + ([best_optimized] if best_optimized else []), key=lambda p: p["images_per_s"])

    timings = []
    for _ in range(5 if quick else 20):
        began = time.perf_counter()
        preprocess(payload)
        timings.append(time.perf_counter() - began)
    return {"points": points, "best_eager": best_eager, "best_optimized": best_optimized, "limit": limit,
            "preprocess_ms_per_image": round(1000 * sorted(timings)[len(timings) // 2], 2)}


def run_raw(cfg: CompareConfig, payload_path: Path) -> dict:
    out = cfg.out / "raw.json"
    command = [sys.executable, "-m", "torchserve_perf", "compare", "--raw-only", str(out), "--payload", str(payload_path)]
    command += ["--quick"] if cfg.quick else []
    command += [] if cfg.compile else ["--no-compile"]
    subprocess.run(command, check=True)
    return json.loads(out.read_text())


# ---- 2-5. TorchServe ----------------------------------------------------------------------------
def tuned_settings(path: Path) -> tuple[dict, str]:
    """The tuner's winner, or the documented fallback; and a sentence saying which."""
    if path.is_file():
        try:
            best = json.loads(path.read_text())
            settings = {k: best[k] for k in FALLBACK_TUNED}
            return settings, (f"from {path} "
                              f"(p99 target {best.get('p99_target_ms')} ms; tuner measured "
                              f"{best.get('throughput_rps')} req/s, p99 {best.get('p99_ms')} ms)")
        except (KeyError, ValueError) as exc:
            return dict(FALLBACK_TUNED), f"FALLBACK: {path} is unreadable ({exc}); used the guide's heuristic"
    return dict(FALLBACK_TUNED), (f"FALLBACK: no {path.name} from torchserve-perf tune at {path}; used the guide's "
                                  "heuristic (the tuner's starting point)")


def tuned_model_config(base: dict, tuned: dict) -> dict:
    config = json.loads(json.dumps(base))
    config.update(minWorkers=tuned["workers"], maxWorkers=tuned["workers"], batchSize=tuned["batch_size"],
                  maxBatchDelay=tuned["max_batch_delay_ms"], responseTimeout=config.get("responseTimeout", 120))
    handler = dict(config.get("handler") or {})
    handler["threads"] = {**(handler.get("threads") or {}), "intra_op": tuned["intra_op_threads"] or "auto"}  # 0: elastic
    handler["optimizations"] = list(tuned["optimizations"])
    if tuned.get("decode"):  # the tuner's decode path (handler.decode)
        handler["decode"] = dict(tuned["decode"])
    config["handler"] = handler
    return config


def describe_model_config(config: dict) -> str:
    handler = config.get("handler") or {}
    thread_section = handler.get("threads") or {}
    threads = thread_section.get("intra_op", "auto")
    if threads == "auto" and thread_section.get("elastic", True):
        threads = "elastic"
    opts = handler.get("optimizations") or []
    if isinstance(opts, dict):  # {chain: [...], auto: {...}}
        opts = list(opts.get("chain") or [])
    workers = config.get("minWorkers", "default (= cores)")
    return (f"workers {workers}, batch {config.get('batchSize', 1)}, delay {config.get('maxBatchDelay', 100)} ms, "
            f"intra-op threads {threads}, optimizations {'+'.join(opts) if opts else 'none'}")


def build_store(cfg: CompareConfig, tuned: dict) -> tuple[Path, dict[str, dict]]:
    """The three archives, and what each server runs: archive, model name, env, settings text."""
    from torchserve_perf.tools.model_store import build_archive, build_stock_archive, default_specs

    store = cfg.work / "store"
    store.mkdir(parents=True, exist_ok=True)
    spec = default_specs()[0]
    need = set(cfg.systems)
    plans = {}
    if need & {"stock_default", "stock_guided"}:
        # No minWorkers/batchSize: TorchServe's defaults (workers = cores, batch 1, delay 100 ms).
        build_stock_archive(store, name="resnet18_stock", model_config={"responseTimeout": 120})
        plans["stock_default"] = {"archive": "resnet18_stock.mar", "model": "resnet18_stock", "env": {},
                                  "settings": "BaseHandler; TorchServe defaults: workers = cores, batch 1, "
                                              "no thread settings"}
        plans["stock_guided"] = {"archive": "resnet18_stock.mar", "model": "resnet18_stock",
                                 "env": {"OMP_NUM_THREADS": "1"},
                                 "settings": "BaseHandler; defaults plus OMP_NUM_THREADS=1 (one thread per worker)"}
    if "ours_default" in need:
        build_archive(spec, store)
        plans["ours_default"] = {"archive": "resnet18.mar", "model": "resnet18", "env": {},
                                 "settings": describe_model_config(spec.model_config)}
    if "ours_tuned" in need:
        config = tuned_model_config(spec.model_config, tuned)
        build_archive(spec, store, name="resnet18_tuned", model_config=config)
        plans["ours_tuned"] = {"archive": "resnet18_tuned.mar", "model": "resnet18_tuned", "env": {},
                               "settings": describe_model_config(config)}
    return store, plans


def measure(send: Callable[[], int], cfg: CompareConfig, label: str) -> dict[int, dict]:
    if cfg.warmup > 0:
        loadgen.closed_loop(send, max(cfg.concurrencies), duration=cfg.warmup)
    runs = {}
    for c in cfg.concurrencies:
        with GpuSampler() as gpus:  # NVML utilisation and memory while the run lasts (nothing without GPUs)
            result = loadgen.closed_loop(send, c, duration=cfg.seconds,
                                         progress=lambda line: print(line, flush=True), progress_every=10.0)
        result.gpu = gpus.usage()
        print(f"  {label:<14} {result.line()}", flush=True)
        runs[c] = result.summary()
    return runs


def run_torchserve(key: str, plan: dict, store: Path, cfg: CompareConfig, payload: Payload) -> SystemResult:
    from torchserve_perf.tools import serving

    result = SystemResult(key, plan["settings"])
    print(f"\n[{key}] {TITLES[key]}: {plan['settings']}", flush=True)
    began = time.perf_counter()
    try:
        server = serving.start(store, Path(tempfile.mkdtemp(prefix=f"{key}-", dir=cfg.work)), models=[plan["archive"]],
                               ready_models=[plan["model"]], env=plan["env"], timeout=600)
    except Exception as exc:  # the report says what failed and goes on with the other systems
        result.error = f"server did not start: {exc}".splitlines()[0]
        print(f"  {result.error}", flush=True)
        return result
    result.startup_s = round(time.perf_counter() - began, 1)
    try:
        send = loadgen.HttpSender(f"{server.inference_url}/predictions/{plan['model']}", [payload],
                                  token=server.token.get("inference", {}).get("key"))
        status = send()
        if status != 200:
            result.error = f"first request answered {status}"
            return result
        result.runs = measure(send, cfg, key)
    finally:
        server.stop()
    return result


def merge_results(parts: Sequence[LoadResult]) -> LoadResult:
    """One point measured in slices, as if measured at once: latencies and errors pooled, seconds summed."""
    first = parts[0]
    errors: dict[int, int] = {}
    for part in parts:
        for code, count in part.errors.items():
            errors[code] = errors.get(code, 0) + count
    return LoadResult(concurrency=first.concurrency, seconds=sum(p.seconds for p in parts),
                      latencies=[x for p in parts for x in p.latencies], errors=errors, mode=first.mode,
                      client_cpu_s=sum(p.client_cpu_s for p in parts), gpu=parts[-1].gpu)


def run_interleaved(keys: Sequence[str], plans: dict, store: Path, cfg: CompareConfig,
                    payload: Payload) -> dict[str, SystemResult]:
    """Every system's server up at once; each point measured in ``cfg.rounds`` slices taken in turn."""
    from torchserve_perf.tools import serving

    results: dict[str, SystemResult] = {}
    servers: dict[str, Any] = {}
    senders: dict[str, Callable[[], int]] = {}
    try:
        for key in keys:
            plan = plans[key]
            results[key] = result = SystemResult(key, plan["settings"])
            print(f"\n[{key}] {TITLES[key]}: {plan['settings']}", flush=True)
            began = time.perf_counter()
            try:
                servers[key] = server = serving.start(
                    store, Path(tempfile.mkdtemp(prefix=f"{key}-", dir=cfg.work)), models=[plan["archive"]],
                    ready_models=[plan["model"]], env=plan["env"], timeout=600)
            except Exception as exc:
                result.error = f"server did not start: {exc}".splitlines()[0]
                print(f"  {result.error}", flush=True)
                continue
            result.startup_s = round(time.perf_counter() - began, 1)
            send = loadgen.HttpSender(f"{server.inference_url}/predictions/{plan['model']}", [payload],
                                      token=server.token.get("inference", {}).get("key"))
            status = send()
            if status != 200:
                result.error = f"first request answered {status}"
                continue
            senders[key] = send
        for key, send in senders.items():
            if cfg.warmup > 0:
                loadgen.closed_loop(send, max(cfg.concurrencies), duration=cfg.warmup)
        parts: dict[tuple[str, int], list[LoadResult]] = {}
        order = list(senders)
        print(f"\n{cfg.rounds} rounds, {cfg.seconds / cfg.rounds:g} s per slice, systems in turn", flush=True)
        for r in range(cfg.rounds):
            for c in cfg.concurrencies:
                for key in order:
                    with GpuSampler() as gpus:
                        part = loadgen.closed_loop(senders[key], c, duration=cfg.seconds / cfg.rounds)
                    part.gpu = gpus.usage()
                    parts.setdefault((key, c), []).append(part)
                    print(f"  round {r + 1}/{cfg.rounds} {key:<14} {part.line()}", flush=True)
            order = order[1:] + order[:1]  # no system always goes first
        for (key, c), pieces in parts.items():
            merged = merge_results(pieces)
            results[key].runs[c] = merged.summary()
            print(f"  {key:<14} {merged.line()}", flush=True)
    finally:
        for server in servers.values():
            server.stop()
    return results


# ---- 6. LitServe --------------------------------------------------------------------------------
def run_litserve(cfg: CompareConfig, payload: Payload) -> SystemResult:
    import requests

    settings = (f"max_batch_size {LITSERVE_BATCHING['max_batch_size']}, batch_timeout "
                f"{LITSERVE_BATCHING['batch_timeout'] * 1000:g} ms, 1 worker, default torch threads; "
                "same JPEG sent base64 in JSON (LitServe's default request decoding)")
    result = SystemResult("litserve", settings)
    print(f"\n[litserve] {settings}", flush=True)
    from torchserve_perf.tools.serving import free_port

    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="litserve-", dir=cfg.work))
    command = [sys.executable, str(paths.fixtures_dir() / "litserve_app.py"), "--port", str(port),
               "--max-batch-size", str(LITSERVE_BATCHING["max_batch_size"]),
               "--batch-timeout", str(LITSERVE_BATCHING["batch_timeout"])]
    began = time.perf_counter()
    with open(workdir / "litserve.log", "wb") as log:
        process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                result.error = f"LitServe exited with {process.returncode}; see {workdir / 'litserve.log'}"
                return result
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).text.strip('"') == "ok":
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                result.error = "LitServe not healthy within 300 s"
                return result
            time.sleep(0.5)
        result.startup_s = round(time.perf_counter() - began, 1)
        send = loadgen.HttpSender(f"http://127.0.0.1:{port}/predict", [payload.as_json_base64("image")])
        status = send()
        if status != 200:
            result.error = f"first request answered {status}"
            return result
        result.runs = measure(send, cfg, "litserve")
    finally:
        _stop_group(process)
    return result


def _stop_group(process: subprocess.Popen) -> None:
    """Stop the server we started and the workers it spawned (its own process group)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


# ---- analysis -----------------------------------------------------------------------------------
def _get(results: dict[str, SystemResult], key: str, c: int, field_: str) -> Optional[float]:
    system = results.get(key)
    run = system.run(c) if system else None
    value = run.get(field_) if run else None
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return round(a / b, 2) if a is not None and b else None


def ratios(results: dict[str, SystemResult], raw: Optional[dict], concurrencies: Sequence[int]) -> dict:
    out: dict[str, dict] = {}
    for other in ("stock_default", "stock_guided", "ours_default", "litserve"):
        out[other] = {str(c): {"throughput": ratio(_get(results, "ours_tuned", c, "throughput_rps"),
                                                   _get(results, other, c, "throughput_rps")),
                               "p99": ratio(_get(results, "ours_tuned", c, "p99_ms"), _get(results, other, c, "p99_ms"))}
                      for c in concurrencies}
    if raw:
        limit = raw["limit"]["images_per_s"]
        out["raw_optimized"] = {str(c): {"throughput": ratio(_get(results, "ours_tuned", c, "throughput_rps"), limit)}
                                for c in concurrencies}
        out["raw_eager"] = {str(c): {"throughput": ratio(_get(results, "ours_tuned", c, "throughput_rps"),
                                                         raw["best_eager"]["images_per_s"])} for c in concurrencies}
    return out


def goals(results: dict[str, SystemResult], raw: Optional[dict], concurrencies: Sequence[int]) -> list[dict]:
    """The issue's goals, judged at the headline concurrency (or the nearest one measured)."""
    c = min(concurrencies, key=lambda x: abs(x - HEADLINE_CONCURRENCY))
    t = lambda key: _get(results, key, c, "throughput_rps")  # noqa: E731
    p = lambda key: _get(results, key, c, "p99_ms")  # noqa: E731
    best_tuned = max((r["throughput_rps"] for r in results["ours_tuned"].runs.values()), default=None) \
        if "ours_tuned" in results and results["ours_tuned"].runs else None

    def goal(name: str, value: Optional[float], target: str, passed: Optional[bool]) -> dict:
        return {"goal": name, "value": value, "target": target, "passed": passed, "concurrency": c}

    rows = []
    r = ratio(t("ours_tuned"), t("stock_default"))
    rows.append(goal("ours tuned vs stock defaults, throughput", r, ">= 4x", None if r is None else r >= 4))
    r = ratio(t("ours_tuned"), t("stock_guided"))
    p99_ok = None if p("ours_tuned") is None or p("stock_guided") is None else p("ours_tuned") <= p("stock_guided")
    rows.append(goal("ours tuned vs stock 1 thread/worker, throughput (at equal or lower p99)", r,
                     ">= 1.3x, p99 <=", None if r is None or p99_ok is None else (r >= 1.3 and p99_ok)))
    if raw:
        r = ratio(best_tuned, raw["limit"]["images_per_s"])
        rows.append({**goal(f"ours tuned (best concurrency) vs in-process limit ({raw['limit']['variant']})", r, ">= 0.95x",
                            None if r is None else r >= 0.95), "concurrency": "best"})
    r = ratio(t("ours_tuned"), t("litserve"))
    rows.append(goal("ours tuned vs LitServe, throughput", r, "> 1x", None if r is None else r > 1))
    return rows


STOCKS = ("stock_default", "stock_guided")


def better_stock(results: dict[str, SystemResult], c: int) -> Optional[str]:
    """The stock setting with more throughput at ``c`` clients (None when neither ran)."""
    measured = [(t, key) for key in STOCKS if (t := _get(results, key, c, "throughput_rps")) is not None]
    return max(measured)[1] if measured else None


def defaults_goals(results: dict[str, SystemResult], concurrencies: Sequence[int]) -> list[dict]:
    """Issue 11: ours with shipped defaults, at every concurrency. At 1 client >= 1.0x the better stock
    setting; at more, >= 1.3x stock with one thread per worker; p99 no worse in both."""
    rows = []
    for c in concurrencies:
        other = better_stock(results, c) if c == 1 else "stock_guided"
        target = 1.0 if c == 1 else 1.3
        ours_t, ours_p = _get(results, "ours_default", c, "throughput_rps"), _get(results, "ours_default", c, "p99_ms")
        their_t = _get(results, other, c, "throughput_rps") if other else None
        their_p = _get(results, other, c, "p99_ms") if other else None
        r = ratio(ours_t, their_t)
        p99_ok = None if ours_p is None or their_p is None else ours_p <= their_p
        name = f"ours defaults vs {TITLES[other] if other else 'stock'}" + (" (the better stock)" if c == 1 else "")
        rows.append({"goal": f"{name}, throughput (p99 {_f(ours_p, 0)} vs {_f(their_p, 0)} ms)", "value": r,
                     "target": f">= {target:g}x, p99 <=", "concurrency": c, "against": other,
                     "passed": None if r is None or p99_ok is None else (r >= target and p99_ok)})
    return rows


def defaults_ratios(results: dict[str, SystemResult], concurrencies: Sequence[int]) -> dict:
    """ours_default's throughput and p99 as ratios of each stock setting, per concurrency."""
    return {other: {str(c): {"throughput": ratio(_get(results, "ours_default", c, "throughput_rps"),
                                                 _get(results, other, c, "throughput_rps")),
                             "p99": ratio(_get(results, "ours_default", c, "p99_ms"), _get(results, other, c, "p99_ms"))}
                    for c in concurrencies} for other in STOCKS}


def client_notes(results: dict[str, SystemResult], ceilings: dict[int, LoadResult]) -> list[str]:
    notes = []
    for system in results.values():
        for c, run in system.runs.items():
            ceiling = ceilings.get(c)
            if ceiling and ceiling.throughput and run["throughput_rps"] >= 0.5 * ceiling.throughput:
                notes.append(f"{system.key} c={c}: {run['throughput_rps']} req/s is "
                             f"{run['throughput_rps'] / ceiling.throughput:.0%} of the client's ceiling")
    return notes


# ---- report -------------------------------------------------------------------------------------
def _f(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}{suffix}"


def render(report: dict) -> str:
    cs = report["concurrencies"]
    lines = [
        "# Side-by-side: ResNet-18 (224x224) on this machine",
        "",
        f"{report['created']}; {report['machine']['cores']} cores ({report['machine']['cpu']}); "
        f"{report['seconds']:g} s per point after {report['warmup']:g} s warm-up"
        + (" (**quick mode**: numbers are indicative only)" if report["quick"] else "") + "; "
        f"payload {report['payload']['name']} ({report['payload']['bytes']} B JPEG), closed-loop clients.",
        "",
        "| system | settings | " + " | ".join(f"{c} client{'s' * (c > 1)}: req/s · p50 · p99 (ms)" for c in cs) + " |",
        "|---|---|" + "---:|" * len(cs),
    ]
    raw = report.get("raw")
    if raw:
        e, o = raw["best_eager"], raw["best_optimized"]
        plural = lambda n: f"{n} thread{'s' * (n > 1)}"  # noqa: E731
        settings = f"eager: {plural(e['threads'])}, batch {e['batch']}"
        numbers = f"no clients: eager **{e['images_per_s']:.1f}** img/s"
        if o:
            settings += f"; torch.compile: {plural(o['threads'])}, batch {o['batch']}"
            numbers += f", compiled **{o['images_per_s']:.1f}** img/s"
        lines.append(f"| {TITLES['raw']} | {settings} | "
                     + " | ".join(numbers if i == 0 else "—" for i, _ in enumerate(cs)) + " |")
    for key in SYSTEMS[1:]:
        system = report["systems"].get(key)
        if system is None:
            continue
        if system["error"]:
            lines.append(f"| {system['title']} | {system['settings']} | " + " | ".join(
                f"failed: {system['error']}" if i == 0 else "" for i, _ in enumerate(cs)) + " |")
            continue
        cells = []
        for c in cs:
            run = system["runs"].get(str(c))
            cells.append("n/a" if not run else
                         f"**{_f(run['throughput_rps'])}** · {_f(run['p50_ms'], 0)} · {_f(run['p99_ms'], 0)}"
                         + (f" ({sum(run['errors'].values())} errors)" if run["errors"] else ""))
        lines.append(f"| {system['title']} | {system['settings']} | " + " | ".join(cells) + " |")

    if "ours_tuned" in report["systems"]:
        lines += ["", "## Ours (tuned) against the others", "",
                  "Throughput ratio (and p99 ratio: below 1 means ours answers faster) per concurrency.", "",
                  "| ours tuned vs | " + " | ".join(f"{c} client{'s' * (c > 1)}" for c in cs) + " |",
                  "|---|" + "---:|" * len(cs)]
    names = {"stock_default": TITLES["stock_default"], "stock_guided": TITLES["stock_guided"],
             "ours_default": TITLES["ours_default"], "litserve": TITLES["litserve"],
             "raw_optimized": "in-process limit (fastest variant)", "raw_eager": "in-process limit, eager"}
    for key, per_c in (report["ratios"] if "ours_tuned" in report["systems"] else {}).items():
        cells = []
        for c in cs:
            cell = per_c.get(str(c), {})
            text = _f(cell.get("throughput"), 2, "x")
            if "p99" in cell:
                text += f" (p99 {_f(cell.get('p99'), 2, 'x')})"
            cells.append(text)
        lines.append(f"| {names[key]} | " + " | ".join(cells) + " |")

    if report.get("defaults_ratios"):
        lines += ["", "## Ours (defaults) against stock", "",
                  "Throughput ratio (and p99 ratio: below 1 means ours answers faster) per concurrency.", "",
                  "| ours defaults vs | " + " | ".join(f"{c} client{'s' * (c > 1)}" for c in cs) + " |",
                  "|---|" + "---:|" * len(cs)]
        for key, per_c in report["defaults_ratios"].items():
            cells = [f"{_f(per_c.get(str(c), {}).get('throughput'), 2, 'x')} "
                     f"(p99 {_f(per_c.get(str(c), {}).get('p99'), 2, 'x')})" for c in cs]
            lines.append(f"| {TITLES[key]} | " + " | ".join(cells) + " |")
    lines += ["", "## Goals", "", "| goal | at | measured | target | met |", "|---|---|---:|---|---|"]
    for g in report["goals"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[g["passed"]]
        at = g["concurrency"] if g["concurrency"] == "best" else f"{g['concurrency']} clients"
        lines.append(f"| {g['goal']} | {at} | {_f(g['value'], 2, 'x')} | {g['target']} | {met} |")

    lines += ["", "## Notes", ""]
    lines.append(f"- Tuned settings: {report['tuned_source']}.")
    if raw:
        lines.append(f"- The in-process limit is the model alone on random tensors (best of threads x batch); the "
                     f"servers also decode and resize the JPEG (about {raw['preprocess_ms_per_image']} ms per image "
                     "here) and answer HTTP, on the same cores.")
    ceiling = report.get("client_ceiling") or {}
    if ceiling:
        lines.append("- Client ceiling (the same client against a trivial loopback endpoint): "
                     + ", ".join(f"{c} client{'s' * (int(c) > 1)} {v['throughput_rps']:.0f} req/s"
                                 for c, v in ceiling.items())
                     + f"; client CPU about {next(iter(ceiling.values()))['client_cpu_ms_per_request']} ms per request.")
    lines += [f"- {n}" for n in report["client_notes"]] or ["- No server came near the client's ceiling: the client "
                                                             "was not the bottleneck."]
    lines.append("- The client runs on the same machine and shares its cores with every server alike.")
    gpu_runs = [(f"{s['title']} c={c}", run) for s in report["systems"].values() for c, run in s["runs"].items()]
    gpu = render_lines(gpu_runs, report.get("gpu_limits"))
    lines += (["", "## GPU", ""] + gpu[2:]) if gpu else []
    lines += ["", f"Regenerate: `{report['command']}`", ""]
    return "\n".join(lines)


# ---- main ---------------------------------------------------------------------------------------
def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = command_parser("compare", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="3 s per point, 1 s warm-up, fewer raw points")
    parser.add_argument("--seconds", type=float, help="seconds per load point (default 20; 3 with --quick)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per server (default 5; 1 with --quick)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--rounds", type=int, default=1,
                        help="> 1: run the TorchServe systems at once and alternate the load between them in this "
                             "many slices per point (fair on a noisy machine)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile in the in-process limit")
    parser.add_argument("--tune-best", type=Path, default=TUNE_BEST, help="the tuner's best.json")
    parser.add_argument("--out", type=Path, default=paths.results_dir("compare"))
    parser.add_argument("--raw-only", type=Path, help=argparse.SUPPRESS)  # child process: write raw.json here
    parser.add_argument("--payload", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.raw_only:
        data = raw_limit(args.quick, not args.no_compile, args.payload.read_bytes())
        args.raw_only.write_text(json.dumps(data, indent=1))
        return 0
    try:
        cfg = CompareConfig(seconds=args.seconds or (3.0 if args.quick else 20.0),
                            warmup=args.warmup if args.warmup is not None else (1.0 if args.quick else 5.0),
                            concurrencies=tuple(args.concurrency), systems=tuple(args.systems), out=args.out.resolve(),
                            quick=args.quick, compile=not args.no_compile, tune_best=args.tune_best,
                            work=Path(tempfile.mkdtemp(prefix="compare-")), rounds=args.rounds)
    except ValueError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    cfg.out.mkdir(parents=True, exist_ok=True)
    payload_path = cfg.out / "payload.jpg"
    payload_path.write_bytes(loadgen.sample_image())
    payload = loadgen.load_payload(payload_path)
    tuned, tuned_source = tuned_settings(cfg.tune_best)
    print(f"tuned settings: {tuned} ({tuned_source})", flush=True)

    began = time.perf_counter()
    print("client ceiling ...", flush=True)
    ceilings = loadgen.client_ceiling([payload], cfg.concurrencies, duration=1.0 if cfg.quick else 2.0, workdir=cfg.out)
    raw = None
    if "raw" in cfg.systems:
        print("\n[raw] in-process limit (child process)", flush=True)
        raw = run_raw(cfg, payload_path)
    print("\nGPU limits (CUDA hosts only) ...", flush=True)
    gpu_limits = limits_in_child(cfg.quick, cfg.out / "gpu_limits.json")  # before any server holds the GPU
    store, plans = build_store(cfg, tuned)
    results: dict[str, SystemResult] = {}
    if cfg.rounds > 1:
        results.update(run_interleaved([k for k in SYSTEMS[1:] if k in cfg.systems and k != "litserve"], plans,
                                       store, cfg, payload))
    for key in SYSTEMS[1:]:
        if key not in cfg.systems or key in results:
            continue
        results[key] = run_litserve(cfg, payload) if key == "litserve" else run_torchserve(key, plans[key], store, cfg,
                                                                                           payload)

    cli = argv if argv is not None else sys.argv[1:]
    command = "torchserve-perf compare" + (" " + " ".join(cli) if cli else "  # or: make compare")
    report = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "cpu": machine.cpu_name(), "python": platform.python_version()},
        "quick": cfg.quick, "seconds": cfg.seconds, "warmup": cfg.warmup, "concurrencies": list(cfg.concurrencies),
        "payload": {"name": payload.name, "bytes": len(payload.body), "content_type": payload.content_type},
        "tuned": tuned, "tuned_source": tuned_source,
        "raw": raw,
        "gpu_limits": gpu_limits,
        "systems": {k: r.as_dict() for k, r in results.items()},
        "ratios": ratios(results, raw, cfg.concurrencies),
        "defaults_ratios": defaults_ratios(results, cfg.concurrencies) if "ours_default" in results else {},
        "goals": (goals(results, raw, cfg.concurrencies) if "ours_tuned" in results else [])
        + (defaults_goals(results, cfg.concurrencies) if "ours_default" in results else []),
        "client_ceiling": {str(c): r.summary() for c, r in sorted(ceilings.items())},
        "client_notes": client_notes(results, ceilings),
        "command": command,
        "wall_s": round(time.perf_counter() - began, 1),
    }
    (cfg.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    text = render(report)
    (cfg.out / "report.md").write_text(text)
    print("\n" + text)
    print(f"wrote {cfg.out / 'report.md'} and {cfg.out / 'report.json'} in {report['wall_s']:.0f} s")
    failed = [r.key for r in results.values() if r.error is not None]
    if failed:
        print(f"failed: {', '.join(failed)}; server folders and logs kept in {cfg.work}", file=sys.stderr)
        return 1
    shutil.rmtree(cfg.work, ignore_errors=True)
    return 0




if __name__ == "__main__":
    sys.exit(main())
