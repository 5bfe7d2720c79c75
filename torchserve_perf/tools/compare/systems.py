"""What each compared server is, and how it is started and stopped.

The TorchServe systems differ only in their archive, model-config and environment (a
:class:`ServerPlan` each); LitServe is a separate process serving the same model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

from torchserve_perf.tools import paths
from torchserve_perf.tools.compare.config import CompareConfig

if TYPE_CHECKING:
    from torchserve_perf.tools.serving import TorchServe

# Used when torchserve-perf tune has not written best.json: the guide's heuristic, which is also where
# the tuner starts (one worker per physical core, one intra-op thread each), with batching.
FALLBACK_TUNED = {"workers": 2, "intra_op_threads": 1, "batch_size": 4, "max_batch_delay_ms": 5, "optimizations": []}
LITSERVE_BATCHING = {"max_batch_size": 8, "batch_timeout": 0.01}
LITSERVE_SETTINGS = (f"max_batch_size {LITSERVE_BATCHING['max_batch_size']}, batch_timeout "
                     f"{LITSERVE_BATCHING['batch_timeout'] * 1000:g} ms, 1 worker, default torch threads; "
                     "same JPEG sent base64 in JSON (LitServe's default request decoding)")
LITSERVE_READY_S = 300
TORCHSERVE_READY_S = 600


@dataclass(frozen=True)
class ServerPlan:
    """One TorchServe system: the archive it serves, the model's name, its environment, the report's text."""

    archive: str
    model: str
    settings: str
    env: Mapping[str, str] = field(default_factory=dict)


# ---- the tuned system -----------------------------------------------------------------------------
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
    """``base`` (the demo archive's model-config) with the tuner's workers, batching, threads and optimizations."""
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
    """The report's one-line summary of a model-config: workers, batching, threads, optimizations."""
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


# ---- the TorchServe systems -----------------------------------------------------------------------
def build_store(cfg: CompareConfig, tuned: dict) -> tuple[Path, dict[str, ServerPlan]]:
    """The archives the chosen TorchServe systems need, and each system's plan."""
    from torchserve_perf.tools.archive.calibration import with_int8
    from torchserve_perf.tools.model_store import build_archive, build_stock_archive, default_specs

    store = cfg.work / "store"
    store.mkdir(parents=True, exist_ok=True)
    shutil.copy2(paths.metrics_yaml(), store / "metrics.yaml")  # our metrics declared on every server (the report reads them)
    spec = default_specs()[0]
    need = set(cfg.systems)
    plans: dict[str, ServerPlan] = {}
    if need & {"stock_default", "stock_guided"}:
        # No minWorkers/batchSize: TorchServe's defaults (workers = cores, batch 1, delay 100 ms).
        build_stock_archive(store, name="resnet18_stock", model_config={"responseTimeout": 120})
        plans["stock_default"] = ServerPlan("resnet18_stock.mar", "resnet18_stock",
                                            "BaseHandler; TorchServe defaults: workers = cores, batch 1, "
                                            "no thread settings")
        plans["stock_guided"] = ServerPlan("resnet18_stock.mar", "resnet18_stock",
                                           "BaseHandler; defaults plus OMP_NUM_THREADS=1 (one thread per worker)",
                                           env={"OMP_NUM_THREADS": "1"})
    if "ours_default" in need:
        build_archive(spec, store)
        plans["ours_default"] = ServerPlan("resnet18.mar", "resnet18", describe_model_config(spec.model_config))
    if "ours_int8" in need:  # shipped defaults plus archive --calibration: auto may choose a gated int8 path
        from torchserve_perf.tools.calibration_images import SETTINGS, write_jpegs

        config = with_int8(spec.model_config)
        build_archive(spec, store, name="resnet18_int8", calibration=write_jpegs(cfg.work / "calibration"))
        plans["ours_int8"] = ServerPlan("resnet18_int8.mar", "resnet18_int8",
                                        f"{describe_model_config(config)}, {SETTINGS}")
    if "ours_tuned" in need:
        config = tuned_model_config(spec.model_config, tuned)
        build_archive(spec, store, name="resnet18_tuned", model_config=config)
        plans["ours_tuned"] = ServerPlan("resnet18_tuned.mar", "resnet18_tuned", describe_model_config(config))
    return store, plans


def start_torchserve(key: str, plan: ServerPlan, store: Path, work: Path) -> TorchServe:
    """``plan``'s TorchServe on free loopback ports, its folder (and logs) under ``work``; ready when it returns."""
    from torchserve_perf.tools import serving

    return serving.start(store, Path(tempfile.mkdtemp(prefix=f"{key}-", dir=work)), models=[plan.archive],
                         ready_models=[plan.model], env=dict(plan.env), timeout=TORCHSERVE_READY_S)


# ---- LitServe ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LitServe:
    """The LitServe fixture app running in its own process group; :meth:`stop` ends it and its workers."""

    process: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = LITSERVE_READY_S) -> Optional[str]:
        """None once /health answers ok; else why it never did."""
        import requests

        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                return f"LitServe exited with {self.process.returncode}; see {self.log}"
            try:
                if requests.get(f"{self.url}/health", timeout=2).text.strip('"') == "ok":
                    return None
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                return f"LitServe not healthy within {timeout:g} s"
            time.sleep(0.5)

    def stop(self) -> None:
        stop_group(self.process)


def start_litserve(work: Path) -> LitServe:
    """Start the LitServe fixture app on a free loopback port, logging into a folder under ``work``."""
    from torchserve_perf.tools.loadgen import free_port

    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="litserve-", dir=work))
    command = [sys.executable, str(paths.fixtures_dir() / "litserve_app.py"), "--port", str(port),
               "--max-batch-size", str(LITSERVE_BATCHING["max_batch_size"]),
               "--batch-timeout", str(LITSERVE_BATCHING["batch_timeout"])]
    log_path = workdir / "litserve.log"
    with open(log_path, "wb") as log:
        # its own process group, so that stopping it also stops the workers it spawns
        process = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,  # noqa: S603 (our fixture)
                                   start_new_session=True)
    return LitServe(process, port, log_path)


def stop_group(process: subprocess.Popen[Any]) -> None:
    """Stop a server we started and the workers it spawned (its own process group)."""
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
