"""Elastic intra-op threads on a real TorchServe: all cores for a lone batch, a share when the
model's workers are busy together, a worker killed mid-batch not counted, the metric per batch."""

from __future__ import annotations

import mmap
import os
import re
import signal
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import class_from_file
from torchserve_perf.plugins.elastic import SIZE, SLOTS, board_path
from torchserve_perf.plugins.threads import allowed_cores, physical_cores
from torchserve_perf.tools import paths
from torchserve_perf.tools.model_store import ArchiveSpec, build_archive, write_server_config

PHYSICAL = physical_cores(allowed_cores())
pytestmark = pytest.mark.skipif(PHYSICAL < 2, reason="elastic threads need two cores to share")

SLOW_PROBE = '''
import time
import torch
from torch import nn


class SlowProbe(nn.Module):
    """Answers, per row, the intra-op threads its batch ran with; holds the worker busy a while."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, x):
        time.sleep(float(x[0, 0]))  # the first value: seconds to stay busy
        return torch.full((x.shape[0], 1), float(torch.get_num_threads())) + 0 * self.linear(x)
'''


def config(**threads: Any) -> dict:
    return {"minWorkers": 2, "maxWorkers": 2, "batchSize": 1, "maxBatchDelay": 1, "responseTimeout": 60,
            "handler": {"tensor": {"input_shape": [4]}, "threads": threads}}


@pytest.fixture(scope="module")
def server(tmp_path_factory, torchserve_factory):
    root = tmp_path_factory.mktemp("elastic")
    model_file = root / "slow_probe.py"
    model_file.write_text(SLOW_PROBE)
    spec = ArchiveSpec(name="elastic", model_file=model_file, make_model=class_from_file(model_file, "SlowProbe"),
                       handler=paths.handlers_dir() / "tensor_handler.py", labels=[])
    store = root / "store"
    # The host check off: other work on this shared machine must not hold a lone batch back here.
    build_archive(spec, store, model_config=config(elastic_check_host=False))
    build_archive(spec, store, name="static", model_config=config(elastic=False))
    write_server_config(store)
    return torchserve_factory(store, models=["elastic=elastic.mar", "static=static.mar"],
                              ready_models=["elastic", "static"])


def threads_of(server, model: str, busy_s: float = 0.0) -> int:
    response = requests.post(f"{server.inference_url}/predictions/{model}", json=[busy_s, 0.0, 0.0, 0.0],
                             headers=server._headers("inference"), timeout=60)
    assert response.status_code == 200, response.text
    return int(response.json()[0])


def together(server, model: str, count: int, busy_s: float) -> list[int]:
    answers: list[int] = []
    calls = [threading.Thread(target=lambda: answers.append(threads_of(server, model, busy_s))) for _ in range(count)]
    for call in calls:
        call.start()
    for call in calls:
        call.join(timeout=60)
    return answers


def busy_pids(server, model: str) -> list[int]:
    """Read the model's board the way the workers do: (pid, busy_since) per slot."""
    path = board_path(model, "1.0", Path(server.env["TMPDIR"]))
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), SIZE, access=mmap.ACCESS_READ) as board:
        cells = struct.unpack(f"{2 * SLOTS}q", board[:SIZE])
    return [cells[2 * i] for i in range(SLOTS) if cells[2 * i + 1]]


def test_a_lone_batch_uses_every_core_and_busy_workers_share_them(server):
    assert [threads_of(server, "elastic") for _ in range(4)] == [PHYSICAL] * 4  # alone, whichever worker
    shared = together(server, "elastic", 2, busy_s=1.0)
    assert len(shared) == 2 and min(shared) == max(1, PHYSICAL // 2), shared  # the second saw both busy
    assert threads_of(server, "elastic") == PHYSICAL  # and all cores again once alone
    assert [threads_of(server, "static") for _ in range(3)] == [max(1, PHYSICAL // 2)] * 3  # elastic: false
    log = server.read_log()
    assert len(re.findall(r"W-\d+-elastic_1\.0 elastic threads over \d+ cores", log)) == 2
    assert len(re.findall(r"W-\d+-static_1\.0 elastic threads off \(threads.elastic is false\)", log)) == 2


def test_threads_per_batch_are_in_the_metrics(server):
    scrape = server.scrape()
    values = {}
    for model in ("elastic", "static"):
        for kind in ("sum", "count"):
            found = [float(v) for v in re.findall(
                rf'^ts_perf_batch_threads_{kind}{{[^}}]*ModelName="{model}"[^}}]*}} ([\d.e+]+)$', scrape, re.M)]
            assert found, scrape[-2000:]
            values[model, kind] = sum(found)
    assert values["static", "sum"] == values["static", "count"] * max(1, PHYSICAL // 2)
    assert values["elastic", "count"] >= 7 and values["elastic", "sum"] > values["elastic", "count"]


def test_a_worker_killed_mid_batch_is_not_counted_as_busy(server):
    answers: list = []
    slow = threading.Thread(target=lambda: answers.append(
        requests.post(f"{server.inference_url}/predictions/elastic", json=[5.0, 0.0, 0.0, 0.0],
                      headers=server._headers("inference"), timeout=60)))
    slow.start()
    deadline = time.monotonic() + 10
    while not (busy := busy_pids(server, "elastic")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(busy) == 1, busy
    os.kill(busy[0], signal.SIGKILL)  # dies with its busy mark on the board
    slow.join(timeout=60)
    assert answers and answers[0].status_code >= 500
    # The surviving worker serves while TorchServe restarts the other: the dead mark counts for nothing.
    assert threads_of(server, "elastic") == PHYSICAL
    deadline = time.monotonic() + 90
    while not server.workers_ready("elastic") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [threads_of(server, "elastic") for _ in range(3)] == [PHYSICAL] * 3
    assert busy_pids(server, "elastic") == []  # the restarted worker reclaimed the dead worker's slot
