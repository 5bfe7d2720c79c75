#!/usr/bin/env python3
"""Measurements beside the compare table: what elastic threads cost per batch, and how
long a ResNet-18 worker takes to load with optimizations on, cold (auto searches) and warm (a
worker restarted by TorchServe after SIGKILL reads auto's cached choice): the shipped archive, and
the same built with ``--calibration`` (64 synthetic JPEGs), where auto may keep a gated int8 path.

    .venv/bin/python scripts/bench_elastic.py [--out results/bench-elastic]   # about a minute

Prints the numbers and writes report.json. The server run uses a fresh cache folder
(XDG_CACHE_HOME), so "cold" really is the first load on this host.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

from torchserve_perf.plugins.elastic import BusyBoard, ElasticThreads, RunnableProbe, board_path
from torchserve_perf.tools import paths, serving
from torchserve_perf.tools.calibration_images import write_jpegs
from torchserve_perf.tools.model_store import build_archive, default_specs, write_server_config


def load_line(name: str) -> re.Pattern:
    return re.compile(rf"(W-\d+-{name}_1\.0).*optimizations for {name}: applied (.*?); load ([\d.]+) s")


def per_batch_cost(rounds: int = 20000) -> dict:
    """Microseconds per batch: board enter/leave with the host probe, and a thread-count switch."""
    with tempfile.TemporaryDirectory() as tmp:
        board = BusyBoard(board_path("bench", "1", Path(tmp)))
        probe = RunnableProbe()
        started = time.perf_counter()
        for _ in range(rounds):
            board.enter()
            probe()
            board.leave()
        board_us = (time.perf_counter() - started) / rounds * 1e6
        before = torch.get_num_threads()
        started = time.perf_counter()
        for i in range(rounds // 10):
            torch.set_num_threads(1 + i % 2)
        switch_us = (time.perf_counter() - started) / (rounds // 10) * 1e6
        torch.set_num_threads(before)
        elastic = ElasticThreads(board, cores=2, set_threads=lambda n: None, current=1)
        started = time.perf_counter()
        for _ in range(rounds):
            elastic.begin()
            elastic.end()
        begin_end_us = (time.perf_counter() - started) / rounds * 1e6
        probe.close()
        board.close()
    return {"board_and_probe_us": round(board_us, 2), "set_num_threads_switch_us": round(switch_us, 2),
            "begin_end_us": round(begin_end_us, 2)}


def load_times(name: str, calibrated: bool, restarts: int = 3) -> dict:
    """Cold start of two workers, then a worker killed and restarted by TorchServe (warm), ``restarts`` times."""
    work = Path(tempfile.mkdtemp(prefix="bench-elastic-"))
    store = work / "store"
    calibration = write_jpegs(work / "calibration") if calibrated else None
    built = time.perf_counter()
    build_archive(default_specs()[0], store, name=name, calibration=calibration)
    build_s = time.perf_counter() - built
    write_server_config(store)
    env = {"XDG_CACHE_HOME": str(work / "cache")}
    line = load_line(name)
    began = time.perf_counter()
    server = serving.start(store, work / "server", models=[f"{name}={name}.mar"], ready_models=[name],
                           env=env, timeout=600)
    cold_ready_s = time.perf_counter() - began
    try:
        cold = line.findall(server.read_log())
        ready_s: list[float] = []
        warm: list[float] = []
        for _ in range(restarts):  # one restart is one sample of a few tenths: take several
            seen = len(line.findall(server.read_log()))
            workers = server.manage("GET", f"models/{name}").json()[0]["workers"]
            os.kill(int(workers[0]["pid"]), signal.SIGKILL)
            began = time.perf_counter()
            deadline = began + 300
            time.sleep(1.0)
            while time.perf_counter() < deadline:
                if server.workers_ready(name) and len(line.findall(server.read_log())) > seen:
                    break
                time.sleep(0.2)
            ready_s.append(round(time.perf_counter() - began, 1))
            warm += [float(x[2]) for x in line.findall(server.read_log())[seen:]]
        reused = server.read_log().count("auto reused its cached choice")
    finally:
        server.stop()
    return {"archive_build_s": round(build_s, 1), "cold_server_ready_s": round(cold_ready_s, 1),
            "cold_worker_load_s": [float(x[2]) for x in cold],
            "chain": cold[0][1] if cold else None,
            "restarted_worker_ready_s": ready_s,
            "warm_worker_load_s": warm,
            "warm_used_cache": reused >= restarts}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=paths.results_dir("bench-elastic"))
    args = parser.parse_args(argv)
    report = {"per_batch": per_batch_cost()}
    print(f"per batch: board enter/leave + host probe {report['per_batch']['board_and_probe_us']} us; "
          f"elastic begin/end {report['per_batch']['begin_end_us']} us; a torch.set_num_threads switch "
          f"{report['per_batch']['set_num_threads_switch_us']} us", flush=True)
    for key, name, calibrated in (("load", "resnet18", False), ("load_int8", "resnet18_int8", True)):
        report[key] = load = load_times(name, calibrated)
        print(f"{name} with optimizations on ({load['chain']}; archive built in {load['archive_build_s']} s): cold worker loads {load['cold_worker_load_s']} s "
              f"(server ready in {load['cold_server_ready_s']} s); a worker killed and restarted: load "
              f"{load['warm_worker_load_s']} s, ready in {load['restarted_worker_ready_s']} s (each restart) "
              f"({'auto reused its cached choice' if load['warm_used_cache'] else 'NO cache hit'})", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
