#!/usr/bin/env python3
"""Measurements beside the compare table: what elastic threads cost per batch, and how
long a ResNet-18 worker takes to load with optimizations on, cold (auto searches) and warm (a
worker restarted by TorchServe after SIGKILL reads auto's cached choice).

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
from torchserve_perf.tools.model_store import build_archive, default_specs, write_server_config

LOAD_LINE = re.compile(r"(W-\d+-resnet18_1\.0).*optimizations for resnet18: applied (.*?); load ([\d.]+) s")


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


def load_times(out: Path) -> dict:
    """Cold start of two workers, then one worker killed and restarted by TorchServe (warm)."""
    work = Path(tempfile.mkdtemp(prefix="bench-elastic-"))
    store = work / "store"
    build_archive(default_specs()[0], store)
    write_server_config(store)
    env = {"XDG_CACHE_HOME": str(work / "cache")}
    began = time.perf_counter()
    server = serving.start(store, work / "server", models=["resnet18=resnet18.mar"], ready_models=["resnet18"],
                           env=env, timeout=600)
    cold_ready_s = time.perf_counter() - began
    try:
        cold = LOAD_LINE.findall(server.read_log())
        workers = server.manage("GET", "models/resnet18").json()[0]["workers"]
        victim = int(workers[0]["pid"])
        os.kill(victim, signal.SIGKILL)
        began = time.perf_counter()
        deadline = began + 300
        time.sleep(1.0)
        while time.perf_counter() < deadline:
            if server.workers_ready("resnet18") and len(LOAD_LINE.findall(server.read_log())) > len(cold):
                break
            time.sleep(0.2)
        warm_ready_s = time.perf_counter() - began
        lines = LOAD_LINE.findall(server.read_log())
        reused = "auto reused its cached choice" in server.read_log()
    finally:
        server.stop()
    return {"cold_server_ready_s": round(cold_ready_s, 1),
            "cold_worker_load_s": [float(x[2]) for x in cold],
            "chain": cold[0][1] if cold else None,
            "restarted_worker_ready_s": round(warm_ready_s, 1),
            "warm_worker_load_s": [float(x[2]) for x in lines[len(cold):]],
            "warm_used_cache": reused}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=paths.results_dir("bench-elastic"))
    args = parser.parse_args(argv)
    report = {"per_batch": per_batch_cost()}
    print(f"per batch: board enter/leave + host probe {report['per_batch']['board_and_probe_us']} us; "
          f"elastic begin/end {report['per_batch']['begin_end_us']} us; a torch.set_num_threads switch "
          f"{report['per_batch']['set_num_threads_switch_us']} us", flush=True)
    report["load"] = load_times(args.out)
    load = report["load"]
    print(f"ResNet-18 with optimizations on ({load['chain']}): cold worker loads {load['cold_worker_load_s']} s "
          f"(server ready in {load['cold_server_ready_s']} s); a worker killed and restarted: load "
          f"{load['warm_worker_load_s']} s, ready in {load['restarted_worker_ready_s']} s "
          f"({'auto reused its cached choice' if load['warm_used_cache'] else 'NO cache hit'})")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
