"""Measure candidates on a real TorchServe that the tuner starts on loopback.

The model is built once as an unpacked model folder (``--archive-format no-archive``). Each
candidate gets a copy of it (weights hard-linked) whose ``model-config.yaml`` carries the
candidate's workers, batching, threads and optimization chain; the previous candidate is
unregistered and the new one registered through the management API (``synchronous=true``),
warmed up, then measured with the closed-loop load generator.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import requests

from torchserve_perf.tools import serving
from torchserve_perf.tools.loadgen import closed_loop
from torchserve_perf.tools.model_store import ArchiveSpec, build_archive
from torchserve_perf.tools.tuning.objective import Measurement, weakest
from torchserve_perf.tools.tuning.space import Candidate

log = logging.getLogger(__name__)

RESPONSE_TIMEOUT_S = 120


@dataclass(frozen=True)
class LoadSettings:
    concurrency: int = 4
    duration_s: float = 5.0
    warmup_s: float = 1.5
    register_timeout_s: float = 300.0
    # Several: each candidate is measured at each, and scored by its weakest one (objective.weakest).
    concurrencies: tuple[int, ...] = ()

    @property
    def levels(self) -> tuple[int, ...]:
        return self.concurrencies or (self.concurrency,)


# Decode paths the search can choose, written like plugins in an optimization choice
# ("fp16+decode_cpu"): they set handler.decode instead of joining the chain.
DECODE_CHOICES: dict[str, dict] = {
    "decode_cpu": {"on_device": "never"},  # Pillow decodes and resizes on the CPU
    "decode_device": {"on_device": "always", "nvjpeg": "off"},  # CPU decode, resize on the model's device
    "decode_nvjpeg": {"on_device": "always", "nvjpeg": "auto"},  # JPEGs decoded on the GPU
}


def split_decode(choice: Sequence[str]) -> tuple[list[str], dict]:
    """An optimization choice -> (the plugin chain, the handler.decode settings its decode_* names set)."""
    decode: dict = {}
    for name in (n for n in choice if n in DECODE_CHOICES):
        decode.update(DECODE_CHOICES[name])
    return [n for n in choice if n not in DECODE_CHOICES], decode


def model_config(base: dict, c: Candidate) -> dict:
    """The model-config.yaml for one candidate: the spec's own settings with the tuned ones on top."""
    config = copy.deepcopy(base)
    config.update(minWorkers=c.workers, maxWorkers=c.workers, batchSize=c.batch_size, maxBatchDelay=c.max_batch_delay_ms,
                  responseTimeout=config.get("responseTimeout", RESPONSE_TIMEOUT_S))
    handler = dict(config.get("handler") or {})
    threads = dict(handler.get("threads") or {})
    threads["intra_op"] = c.threads or "auto"  # 0: the handler's elastic threads
    threads["elastic"] = not c.threads
    handler["threads"] = threads
    handler["optimizations"], decode = split_decode(c.optimization)
    if decode:
        handler["decode"] = {**dict(handler.get("decode") or {}), **decode}
    config["handler"] = handler
    if c.gpus:
        config["deviceType"] = "gpu"
        config["deviceIds"] = list(range(c.gpus))
    return config


def payload_digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:16]


class TorchServeEvaluator:
    """Starts its own TorchServe (model API on) and measures one candidate per call."""

    def __init__(self, spec: ArchiveSpec, workdir: Path, payload: bytes, load: LoadSettings, *,
                 progress: Callable[[str], None] = print) -> None:
        self.spec = spec
        self.workdir = Path(workdir)
        self.payload = payload
        self.load = load
        self.progress = progress
        self.store = self.workdir / "store"
        self.base: Optional[Path] = None
        self.server: Optional[serving.TorchServe] = None
        self.server_gpus: Optional[int] = None
        self.registered: Optional[Path] = None
        self._idle_processes = 0
        # Several concurrencies: the first good measurement's req/s per concurrency (the start point).
        self.reference: Optional[dict[int, float]] = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> TorchServeEvaluator:
        shutil.rmtree(self.store, ignore_errors=True)
        self.base = build_archive(self.spec, self.store / "_base", name=self.spec.name, archive_format="no-archive",
                                  model_config=self.spec.model_config)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        shutil.rmtree(self.store, ignore_errors=True)

    def _server_for(self, gpus: int) -> serving.TorchServe:
        # number_of_gpu is a server setting: a candidate with another GPU count needs a restart.
        if self.server is not None and self.server_gpus == gpus:
            return self.server
        if self.server is not None:
            self.server.stop()
        self.progress(f"starting TorchServe (number_of_gpu={gpus}) ...")
        self.server = serving.start(self.store, self.workdir / f"server-g{gpus}", models=(),
                                    properties={"enable_model_api": "true", "number_of_gpu": gpus,
                                                "default_response_timeout": RESPONSE_TIMEOUT_S})
        self.server_gpus = gpus
        self.registered = None
        self._idle_processes = len(self.server.processes())
        return self.server

    # ---- one candidate ------------------------------------------------------------------------
    def __call__(self, c: Candidate) -> Measurement:
        began = time.monotonic()
        server = self._server_for(c.gpus)
        try:
            self.unregister()
            folder = self.prepare(c)
            log_offset = len(server.read_log("model_log.log"))
            loaded = time.monotonic()
            response = server.manage("POST", "models", timeout=self.load.register_timeout_s, url=folder.name,
                                     model_name=self.spec.name, initial_workers=c.workers, batch_size=c.batch_size,
                                     max_batch_delay=c.max_batch_delay_ms, response_timeout=RESPONSE_TIMEOUT_S,
                                     synchronous="true")
            self.registered = folder
            if not response.ok:
                return Measurement.failure(f"registration failed ({response.status_code}): {_message(response)}",
                                           time.monotonic() - began)
            load_s = time.monotonic() - loaded
            workers = self._wait_ready(server, c.workers)
            if workers != c.workers:
                tail = server.log_tail("model_log.log", lines=5).replace("\n", " | ")[-300:]
                return Measurement.failure(f"{workers} of {c.workers} workers ready after registration; "
                                           f"model_log: {tail}", time.monotonic() - began)
            notes = tuple(self._skipped_optimizations(server, c, log_offset)) + (f"registered in {load_s:.1f}s",)
            send = server.sender(self.spec.name, self.payload, timeout=RESPONSE_TIMEOUT_S)
            if self.load.warmup_s > 0:
                closed_loop(send, max(self.load.levels), duration=self.load.warmup_s)
            if len(self.load.levels) > 1:
                results = {c: closed_loop(send, c, duration=self.load.duration_s) for c in self.load.levels}
                return self.combine(results, notes, time.monotonic() - began)
            result = closed_loop(send, self.load.concurrency, duration=self.load.duration_s)
        except requests.RequestException as exc:
            return Measurement.failure(f"{type(exc).__name__}: {exc}", time.monotonic() - began)
        s = result.summary()
        errors = sum(result.errors.values())
        skipped = [n for n in notes if n.startswith("skipped")]
        return Measurement(throughput_rps=result.throughput, p50_ms=s["p50_ms"], p90_ms=s["p90_ms"],
                           p99_ms=s["p99_ms"], requests=result.requests, errors=errors, seconds=result.seconds,
                           cost_s=time.monotonic() - began, notes=notes,
                           error=f"optimization {skipped[0]}" if skipped else None)

    def combine(self, results: dict, notes: tuple, cost_s: float) -> Measurement:
        """Several concurrencies as one measurement: throughput is the weakest concurrency's ratio to the
        run's first good measurement (the start point) times that point's mean req/s; p99 the worst."""
        throughputs = {c: r.throughput for c, r in results.items()}
        errors = sum(sum(r.errors.values()) for r in results.values())
        if self.reference is None and not errors:
            self.reference = dict(throughputs)
        ratio, at = weakest(throughputs, self.reference or throughputs)
        scale = sum((self.reference or throughputs).values()) / len(throughputs)
        summaries = {c: r.summary() for c, r in results.items()}
        detail = "; ".join(f"c{c} {throughputs[c]:.1f} req/s p99 {summaries[c]['p99_ms']:.0f} ms" for c in results)
        skipped = [n for n in notes if n.startswith("skipped")]
        return Measurement(throughput_rps=ratio * scale, p50_ms=summaries[at]["p50_ms"] if at else float("nan"),
                           p90_ms=max(x["p90_ms"] for x in summaries.values()),
                           p99_ms=max(x["p99_ms"] for x in summaries.values()),
                           requests=sum(r.requests for r in results.values()), errors=errors,
                           seconds=sum(r.seconds for r in results.values()), cost_s=cost_s,
                           notes=notes + (f"{detail}; weakest c{at} at {ratio:.2f}x the start point",),
                           error=f"optimization {skipped[0]}" if skipped else None)

    def prepare(self, c: Candidate) -> Path:
        """A model folder for ``c`` in the store: the base's files linked, its own model-config.yaml."""
        import yaml

        if self.base is None:
            raise RuntimeError("prepare() runs inside `with TorchServeEvaluator(...)`, which builds the base archive")
        folder = self.store / f"{self.spec.name}__{c.key}"
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(self.base, folder, copy_function=_link_or_copy)
        config = folder / "model-config.yaml"
        config.unlink(missing_ok=True)  # a hard link to the base's: replace, never write through it
        config.write_text(yaml.safe_dump(model_config(self.spec.model_config, c), sort_keys=False))
        return folder

    def unregister(self) -> None:
        if self.server is None or self.registered is None:
            return
        self.server.manage("DELETE", f"models/{self.spec.name}", synchronous="true")
        # Wait for the old workers to exit, so they neither hold memory nor steal CPU from the next.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(self.server.processes()) > self._idle_processes:
            time.sleep(0.2)
        shutil.rmtree(self.registered, ignore_errors=True)
        self.registered = None

    def _wait_ready(self, server: serving.TorchServe, wanted: int, timeout: float = 120.0) -> int:
        """READY workers, waiting a while: on a busy machine a worker can still be starting when
        the synchronous registration returns."""
        deadline = time.monotonic() + timeout
        ready = self._ready_workers(server)
        while ready < wanted and time.monotonic() < deadline:
            time.sleep(0.5)
            ready = self._ready_workers(server)
        return ready

    def _ready_workers(self, server: serving.TorchServe) -> int:
        response = server.manage("GET", f"models/{self.spec.name}", timeout=30)
        if not response.ok:
            return 0
        return sum(1 for w in response.json()[0].get("workers", []) if w.get("status") == "READY")

    def _skipped_optimizations(self, server: serving.TorchServe, c: Candidate, offset: int) -> list[str]:
        """Optimizations the workers report as skipped (a plugin that was unavailable or refused the model).

        Such a candidate does not measure what its config says, so it is marked failed rather
        than allowed to win under a name it did not earn.
        """
        if not c.optimization:
            return []
        log_text = server.read_log("model_log.log")[offset:]  # this registration's lines only
        found = []
        lines = log_text.splitlines()
        # The plugins log "optimization 'x' dropped, continuing without it", "...; dropped x", or,
        # when the whole chain fails, "... dropped, serving the eager model".
        eager = [line for line in lines if "serving the eager model" in line]
        for name in c.optimization:
            word = re.escape(name)
            pattern = re.compile(rf"\b(skip\w*|dropped)\b[^:;]*\b{word}\b|['\"]{word}['\"]\s+(skip\w*|dropped)\b",
                                 re.IGNORECASE)
            hits = [line for line in lines if pattern.search(line)] or eager
            if hits:
                found.append(f"skipped {name}: {hits[-1].strip()[-200:]}")
        return found


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _message(response: requests.Response) -> str:
    try:
        return str(response.json().get("message", response.text))[:300]
    except ValueError:
        return response.text[:300]
