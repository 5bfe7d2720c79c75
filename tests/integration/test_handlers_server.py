"""The handlers on one real TorchServe, bundled in their .mar files, with nothing of ours installed.

One server serves several small archives at once: a seeded eager probe model behind the tensor
handler (its output also reports the batch's row count and torch's thread counts, so batching
and the thread policy are seen from inside the worker), TorchScript and torch.export programs,
and the text classifier with a long batch delay. A bad ``handler:`` config is registered through
the management API against the same server.
"""

from __future__ import annotations

import importlib.util
import io
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
import psutil
import pytest
import requests
import torch
import yaml

from tests.conftest import REPO
from torchserve_perf.handlers.labels import top_k
from torchserve_perf.handlers.tokenizer import tokenize
from torchserve_perf.models.text_classifier import TextClassifier
from torchserve_perf.plugins.threads import allowed_cores, physical_cores
from torchserve_perf.tools import paths
from torchserve_perf.tools.model_store import (
    ARCHIVER,
    TEXT_LABELS,
    ArchiveSpec,
    build_archive,
    default_specs,
    seeded_state_dict,
    stage_packages,
)

# Batches wait this long for more requests: long enough that concurrent requests share one batch.
BATCH_DELAY_MS = 1500

PROBE_SOURCE = '''
import torch
from torch import nn


class Probe(nn.Module):
    """Linear(4, 3), plus columns that report the batch's rows and torch's thread pools."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        n = x.shape[0]
        info = torch.tensor([float(n), float(torch.get_num_threads()), float(torch.get_num_interop_threads())])
        return torch.cat([self.linear(x), info.expand(n, 3)], dim=1)
'''


def load_probe_class(path: Path) -> type:
    spec = importlib.util.spec_from_file_location("probe_model_for_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Probe


def archive_program(store: Path, name: str, program: Path, config: dict) -> Path:
    """An archive with only a --serialized-file (TorchScript or .pt2), no --model-file, packages bundled."""
    work = store.parent / f"stage-{name}"
    extra = work / "extra"
    extra.mkdir(parents=True)
    stage_packages(extra)
    config_path = work / "model-config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    subprocess.run([ARCHIVER, "--model-name", name, "--version", "1.0", "--serialized-file", str(program),
                    "--handler", str(paths.handlers_dir() / "tensor_handler.py"), "--extra-files", str(extra),
                    "--config-file", str(config_path), "--export-path", str(store), "--force"], check=True)
    return store / f"{name}.mar"


def tensor_config(workers: int = 1, batch: int = 4, delay: int = BATCH_DELAY_MS, **handler: Any) -> dict:
    return {"minWorkers": workers, "maxWorkers": workers, "batchSize": batch, "maxBatchDelay": delay,
            "responseTimeout": 60, "handler": {"tensor": {"input_shape": [4]}, **handler}}


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.probe_file = root.parent / "probe_model.py"
        self.probe_file.write_text(PROBE_SOURCE)
        self.probe_class = load_probe_class(self.probe_file)
        self.linear = torch.nn.Linear(4, 3)  # the TorchScript and torch.export programs, seeded below


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    root = tmp_path_factory.mktemp("handler_store") / "store"
    root.mkdir()
    s = Store(root)
    probe = ArchiveSpec(name="probe", model_file=s.probe_file, make_model=s.probe_class,
                        handler=paths.handlers_dir() / "tensor_handler.py", labels=[])
    build_archive(probe, root, model_config=tensor_config())
    build_archive(probe, root, name="threads2", model_config=tensor_config(workers=2, threads={"pin_cores": True}))
    build_archive(probe, root, name="badcfg", model_config=tensor_config(threads={"intra_ops": 2}))
    text = default_specs()[1]
    build_archive(text, root, name="text_batch",
                  model_config={"minWorkers": 1, "maxWorkers": 1, "batchSize": 4, "maxBatchDelay": BATCH_DELAY_MS,
                                "responseTimeout": 60, "handler": {"text": {"topk": 3}}})
    torch.manual_seed(1)
    s.linear = torch.nn.Linear(4, 3).eval()
    example = (torch.randn(2, 4),)
    torchscript = root.parent / "linear_ts.pt"
    torch.jit.trace(s.linear, example).save(str(torchscript))
    archive_program(root, "tensor_ts", torchscript, tensor_config(delay=500))
    exported = root.parent / "linear.pt2"
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.export.save(torch.export.export(s.linear, example, dynamic_shapes=({0: batch},)), str(exported))
    archive_program(root, "tensor_pt2", exported, tensor_config(delay=500))
    return s


SERVED = ["probe", "threads2", "text_batch", "tensor_ts", "tensor_pt2"]


@pytest.fixture(scope="module")
def server(store: Store, torchserve_factory: Callable[..., Any]) -> Any:
    # PYTHONPATH emptied: the workers can only find handlers/ and plugins/ inside each .mar.
    return torchserve_factory(store.root, models=[f"{m}={m}.mar" for m in SERVED], ready_models=SERVED,
                              properties={"enable_model_api": "true"}, env={"PYTHONPATH": ""}, timeout=150)


def post(server: Any, model: str, body: Any = None, json_body: Any = None) -> requests.Response:
    # One connection per call: requests.Session is not shared across threads.
    return requests.post(f"{server.inference_url}/predictions/{model}", data=body, json=json_body,
                         headers=server._headers("inference"), timeout=60)


def concurrently(calls: list[Callable[[], requests.Response]]) -> list[requests.Response]:
    """Send all calls at once, so they land in one batch of the model's queue."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], requests.Response]) -> requests.Response:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def probe_expected(store: Store, rows: np.ndarray) -> np.ndarray:
    model = store.probe_class()
    model.load_state_dict(seeded_state_dict(store.probe_class))
    with torch.no_grad():
        return model.linear(torch.from_numpy(rows).float()).numpy()


def worker_pids(server: Any, model: str) -> dict[str, int]:
    """Worker name -> pid, matching the port in each worker's argv to TorchServe's worker names."""
    names = set(re.findall(rf"(W-\d+-{model}_1\.0) thread policy", server.read_log()))
    pids = {}
    for proc in server.processes():
        cmdline = " ".join(proc.cmdline())
        for name in names:
            port = name.split("-")[1]
            if re.search(rf"\.ts\.sock\.{port}(\s|$)", cmdline):
                pids[name] = proc.pid
    return pids


# ---- drop-in: bundled ---------------------------------------------------------------------------
def test_bundled_packages_serve_with_nothing_installed(server):
    assert importlib.util.find_spec("torchserve_perf.handlers").origin.startswith(str(REPO))  # the test process has the repo...
    log = server.read_log()
    sources = set(re.findall(r"thread policy: .*; handlers from (\S+)", log))
    assert sources, log[-2000:]
    for source in sources:  # ...the workers only the copy unpacked from their .mar
        assert not source.startswith(str(REPO)), source
        assert source.startswith(str(server.workdir)) and source.endswith("/torchserve_perf/handlers"), source
    for proc in server.processes():
        assert str(REPO) not in proc.environ().get("PYTHONPATH", "")


# ---- tensor handler: eager, TorchScript, torch.export; JSON and .npy ------------------------------
@pytest.mark.parametrize("model", ["tensor_ts", "tensor_pt2"])
def test_programs_serve_json_and_npy_and_batch_mixed_sizes(server, store, model):
    one = [0.5, -1.0, 2.0, 0.25]
    three = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    single, triple = concurrently([lambda: post(server, model, json_body={"inputs": one}),
                                   lambda: post(server, model, npy(three))])
    assert single.status_code == 200 and triple.status_code == 200, (single.text, triple.text)
    with torch.no_grad():
        expect_one = store.linear(torch.tensor([one])).numpy()[0]
        expect_three = store.linear(torch.from_numpy(three)).numpy()
    np.testing.assert_allclose(single.json(), expect_one, rtol=1e-5, atol=1e-5)  # a bare row comes back bare
    np.testing.assert_allclose(triple.json(), expect_three, rtol=1e-5, atol=1e-5)


def test_eager_batch_mixes_sizes_into_one_tensor_and_maps_rows_back(server, store):
    one = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)
    three = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    single, triple = concurrently([lambda: post(server, "probe", json_body=one.tolist()),
                                   lambda: post(server, "probe", npy(three))])
    assert single.status_code == 200 and triple.status_code == 200, (single.text, triple.text)
    single_out, triple_out = np.array(single.json()), np.array(triple.json())
    assert single_out.shape == (6,) and triple_out.shape == (3, 6)
    # Column 3 is the row count the model saw: both requests were one tensor of 1 + 3 rows.
    assert single_out[3] == 4 and set(triple_out[:, 3]) == {4}
    np.testing.assert_allclose(single_out[:3], probe_expected(store, one[None])[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(triple_out[:, :3], probe_expected(store, three), rtol=1e-5, atol=1e-5)


def test_text_batch_of_different_lengths_matches_one_at_a_time(server):
    texts = ["Great.", "The delivery was late but support fixed it quickly and politely.",
             "Is this thing on?", "I would not buy this again, the battery died after two days of light use."]
    responses = concurrently([lambda t=t: post(server, "text_batch", t.encode()) for t in texts])
    model = TextClassifier().eval()
    model.load_state_dict(seeded_state_dict(TextClassifier))
    labels = dict(enumerate(TEXT_LABELS))
    for text, response in zip(texts, responses):
        assert response.status_code == 200, response.text
        with torch.no_grad():  # alone and unpadded
            expected = top_k(model(torch.tensor([tokenize(text, 8192, 128)]))[0], labels, 3)
        got = response.json()
        assert set(got) == set(expected), (text, got, expected)
        for label, value in expected.items():
            assert got[label] == pytest.approx(value, abs=1e-4)
    log = server.read_log()
    assert not re.search(r"text_batch.*batch of \d+ failed as a whole", log)


# ---- per-request errors ---------------------------------------------------------------------------
def test_one_bad_request_in_a_batch_of_four_gets_its_own_4xx(server, store):
    rows = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    pids_before = worker_pids(server, "probe")
    calls = [lambda r=r: post(server, "probe", json_body={"inputs": [r.tolist()]}) for r in rows]
    calls.insert(2, lambda: post(server, "probe", json_body={"inputs": [[1.0, 2.0]]}))
    responses = concurrently(calls)
    bad = responses.pop(2)
    assert bad.status_code == 422, bad.text
    error = bad.json()["error"]
    assert error["code"] == 422 and "expected shape [4] or [N, 4], got [1, 2]" in error["message"]
    expected = probe_expected(store, rows)
    for row, response in zip(expected, responses):
        assert response.status_code == 200, response.text
        out = np.array(response.json())
        assert out.shape == (1, 6) and out[0, 3] == 3  # the three good rows ran as one tensor
        np.testing.assert_allclose(out[0, :3], row, rtol=1e-5, atol=1e-5)
    # The handler's log names the batch of four, and the same worker keeps serving.
    assert re.search(r"probe_1\.0 batch of 4: served 3, rejected request \d: 422 expected shape", server.read_log())
    assert post(server, "probe", json_body=[0.0, 0.0, 0.0, 1.0]).status_code == 200
    assert worker_pids(server, "probe") == pids_before


def test_undecodable_bodies_get_json_400s(server):
    not_json = post(server, "probe", b"{not json")
    assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]["message"]
    words = post(server, "probe", json_body={"inputs": [["a", "b", "c", "d"]]})
    assert words.status_code == 400 and "expected numbers" in words.json()["error"]["message"]
    empty = post(server, "text_batch", json_body={"text": "   "})
    assert empty.status_code == 400 and "empty" in empty.json()["error"]["message"]


# ---- thread policy on the real workers ------------------------------------------------------------
def test_workers_run_with_the_decided_thread_counts(server):
    physical = physical_cores(allowed_cores())
    single = np.array(post(server, "probe", json_body=[1.0, 2.0, 3.0, 4.0]).json())
    assert single[4] == physical and single[5] == 1  # one worker: all physical cores, inter-op 1
    log = server.read_log()
    decisions = re.findall(r"(W-\d+-threads2_1\.0) thread policy: intra_op=(\d+) inter_op=(\d+), "
                           r"pinned to cores \[([\d, ]+)\]", log)
    assert len(decisions) == 2 and len({d[0] for d in decisions}) == 2, log[-3000:]  # each worker, once
    for _, intra, inter, _ in decisions:
        assert (int(intra), int(inter)) == (max(1, physical // 2), 1)
    for _ in range(4):
        out = np.array(post(server, "threads2", json_body=[1.0, 2.0, 3.0, 4.0]).json())
        assert (out[4], out[5]) == (max(1, physical // 2), 1)
    # Pinned: each worker process really has its own, disjoint core set.
    pinned = {name: tuple(int(c) for c in cores.split(", ")) for name, _, _, cores in decisions}
    pids = worker_pids(server, "threads2")
    assert set(pids) == set(pinned)
    affinities = {name: tuple(sorted(psutil.Process(pid).cpu_affinity())) for name, pid in pids.items()}
    assert affinities == pinned
    first, second = affinities.values()
    assert not set(first) & set(second)


# ---- a bad handler: config -------------------------------------------------------------------------
def test_bad_handler_config_fails_registration_without_a_crash_loop(server):
    response = server.manage("POST", "models", url="badcfg.mar", synchronous="true", initial_workers=1,
                             timeout=120)
    assert response.status_code == 500, response.text
    assert "Failed to start workers for model badcfg" in response.json()["message"]
    log = server.read_log()
    # The model log names the key and the fix (HandlerConfigError is a RuntimeError: the worker answers 500).
    assert "model-config.yaml handler.threads.intra_ops: unknown key. Fix: did you mean 'intra_op'?" in log
    failures = log.count("Failed to load model badcfg")
    assert failures == 1
    time.sleep(5)  # a crash loop would keep starting workers that fail again
    assert server.read_log().count("Failed to load model badcfg") == failures
    # TorchServe 0.12 unregisters the model, then its worker clean-up re-adds an empty entry: no workers either way.
    listed = server.manage("GET", "models/badcfg")
    assert listed.status_code == 404 or (listed.json()[0]["workers"] == [] and listed.json()[0]["minWorkers"] == 0)
    assert not [p for p in server.processes() if ".ts.sock." in " ".join(p.cmdline())
                and p.pid not in {pid for m in SERVED for pid in worker_pids(server, m).values()}]
    assert all(server.workers_ready(m) for m in SERVED)
