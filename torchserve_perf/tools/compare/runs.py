"""Running the load: one system after another, or every TorchServe system at once in interleaved rounds."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Protocol, Sequence

from torchserve_perf.tools import loadgen, worker_memory
from torchserve_perf.tools.compare.config import TITLES, CompareConfig
from torchserve_perf.tools.compare.results import SystemResult
from torchserve_perf.tools.compare.systems import LITSERVE_SETTINGS, ServerPlan, start_litserve, start_torchserve
from torchserve_perf.tools.compare.worker_report import load_summary
from torchserve_perf.tools.gpu_report import GpuSampler
from torchserve_perf.tools.loadgen import LoadResult, Payload

if TYPE_CHECKING:
    from torchserve_perf.tools.serving import TorchServe


def say(line: str) -> None:
    print(line, flush=True)


# ---- the in-process limit ---------------------------------------------------------------------------
def run_limit(cfg: CompareConfig, payload_path: Path) -> dict:
    """The in-process limit, measured in a child process (see :mod:`torchserve_perf.tools.compare.limit`)."""
    out = cfg.out / "raw.json"
    command = [sys.executable, "-m", "torchserve_perf.tools.compare.limit", "--out", str(out),
               "--payload", str(payload_path)]
    command += ["--quick"] if cfg.quick else []
    command += [] if cfg.compile else ["--no-compile"]
    subprocess.run(command, check=True)  # noqa: S603 (this interpreter, our module, our own arguments)
    return json.loads(out.read_text())


# ---- one system at a time ---------------------------------------------------------------------------
def measure(send: Callable[[], int], cfg: CompareConfig, label: str) -> dict[int, dict]:
    """A warm-up at the highest concurrency, then one closed-loop run per concurrency: their summaries."""
    if cfg.warmup > 0:
        loadgen.closed_loop(send, max(cfg.concurrencies), duration=cfg.warmup)
    runs = {}
    for c in cfg.concurrencies:
        with GpuSampler() as gpus:  # NVML utilisation and memory while the run lasts (nothing without GPUs)
            result = loadgen.closed_loop(send, c, duration=cfg.seconds, progress=say, progress_every=10.0)
        result.gpu = gpus.usage()
        say(f"  {label:<14} {result.line()}")
        runs[c] = result.summary()
    return runs


def _start(key: str, plan: ServerPlan, store: Path, work: Path) -> tuple[SystemResult, Optional[TorchServe]]:
    """The server of ``key`` started (its folder under ``work``), or None and a result that says why it did not start."""
    say(f"\n[{key}] {TITLES[key]}: {plan.settings}")
    began = time.perf_counter()
    try:
        server = start_torchserve(key, plan, store, work)
    except Exception as exc:  # the report says what failed and goes on with the other systems
        error = f"server did not start: {exc}".splitlines()[0]
        say(f"  {error}")
        return SystemResult(key, plan.settings, error=error), None
    return SystemResult(key, plan.settings, startup_s=round(time.perf_counter() - began, 1)), server


def _first_answer(send: Callable[[], int]) -> Optional[str]:
    """None when one request is answered 200; else the error the report shows."""
    status = send()
    return None if status == 200 else f"first request answered {status}"


def run_torchserve(key: str, plan: ServerPlan, store: Path, cfg: CompareConfig, payload: Payload) -> SystemResult:
    result, server = _start(key, plan, store, cfg.work)
    if server is None:
        return result
    try:
        send = server.sender(plan.model, payload.body, payload.content_type)
        error = _first_answer(send)
        if error is not None:
            return dataclasses.replace(result, error=error)
        runs = measure(send, cfg, key)
        return dataclasses.replace(result, runs=runs, memory=worker_memory.summary(worker_memory.server_workers(server)),
                                   load=load_summary(server) if key.startswith("ours") else None)
    finally:
        server.stop()


def run_litserve(cfg: CompareConfig, payload: Payload) -> SystemResult:
    result = SystemResult("litserve", LITSERVE_SETTINGS)
    say(f"\n[litserve] {LITSERVE_SETTINGS}")
    began = time.perf_counter()
    server = start_litserve(cfg.work)
    try:
        error = server.wait_ready()
        if error is not None:
            return dataclasses.replace(result, error=error)
        result = dataclasses.replace(result, startup_s=round(time.perf_counter() - began, 1))
        send = loadgen.HttpSender(f"{server.url}/predict", [payload.as_json_base64("image")])
        error = _first_answer(send)
        if error is not None:
            return dataclasses.replace(result, error=error)
        return dataclasses.replace(result, runs=measure(send, cfg, "litserve"))
    finally:
        server.stop()


# ---- every TorchServe system at once ----------------------------------------------------------------
def interleave(senders: dict[str, Callable[[], int]], concurrencies: Sequence[int], seconds: float,
               rounds: int) -> dict[tuple[str, int], list[LoadResult]]:
    """Each point's ``seconds`` in ``rounds`` slices, the systems in turn; the order rotates every round."""
    parts: dict[tuple[str, int], list[LoadResult]] = {}
    order = list(senders)
    say(f"\n{rounds} rounds, {seconds / rounds:g} s per slice, systems in turn")
    for r in range(rounds):
        for c in concurrencies:
            for key in order:
                with GpuSampler() as gpus:
                    part = loadgen.closed_loop(senders[key], c, duration=seconds / rounds)
                part.gpu = gpus.usage()
                parts.setdefault((key, c), []).append(part)
                say(f"  round {r + 1}/{rounds} {key:<14} {part.line()}")
        order = order[1:] + order[:1]  # no system always goes first
    return parts


class LoadSchedule(Protocol):
    """What the interleaved runs read from a run's config (CompareConfig and ZooConfig both have it)."""

    @property
    def warmup(self) -> float: ...
    @property
    def concurrencies(self) -> tuple[int, ...]: ...
    @property
    def seconds(self) -> float: ...
    @property
    def rounds(self) -> int: ...


def run_interleaved(keys: Sequence[str], plans: dict[str, ServerPlan], store: Path, work: Path,
                    schedule: LoadSchedule, payload: Payload) -> dict[str, SystemResult]:
    """Every system's server up at once (their folders under ``work``); each point measured in
    ``schedule.rounds`` slices taken in turn. Each started server's memory, and for ours what their
    workers chose at load, are read after every run."""
    results: dict[str, SystemResult] = {}
    senders: dict[str, Callable[[], int]] = {}
    started: dict[str, TorchServe] = {}
    try:
        for key in keys:
            results[key], server = _start(key, plans[key], store, work)
            if server is None:
                continue
            started[key] = server
            send = server.sender(plans[key].model, payload.body, payload.content_type)
            error = _first_answer(send)
            if error is not None:
                results[key] = dataclasses.replace(results[key], error=error)
                continue
            senders[key] = send
        for warm in senders.values():
            if schedule.warmup > 0:
                loadgen.closed_loop(warm, max(schedule.concurrencies), duration=schedule.warmup)
        for (key, c), pieces in interleave(senders, schedule.concurrencies, schedule.seconds, schedule.rounds).items():
            merged = loadgen.merge(pieces)
            results[key].runs[c] = merged.summary()
            say(f"  {key:<14} {merged.line()}")
        for key, server in started.items():  # after every run, while each server still holds what the load made it hold
            results[key] = dataclasses.replace(results[key], memory=worker_memory.summary(
                worker_memory.server_workers(server)), load=load_summary(server) if key.startswith("ours") else None)
    finally:
        for server in started.values():
            server.stop()
    return results
