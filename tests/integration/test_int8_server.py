"""int8 on a real TorchServe: an archive built with ``--calibration`` serves int8 and reports its
accuracy-gate agreement (log and metric); one whose calibration fails the gate serves fp32 and says why.

The model is a CNN trained here on scikit-learn's digits, served by the tensor handler; one server
holds both archives (one worker each)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from torchserve_perf.tools import paths
from torchserve_perf.tools.archive.cli import main as archive

pytest.importorskip("sklearn")
pytest.importorskip("onnxruntime")

from torchserve_perf.models.digits_training import load_digits_data, train_digits_cnn

SAMPLES = 64


def _write_bodies(folder: Path, rows: torch.Tensor) -> Path:
    folder.mkdir(parents=True)
    for i, row in enumerate(rows):  # sorted names keep the order: every 4th sample is held out
        np.save(folder / f"{i:03d}.npy", row.numpy())
    return folder


def _archive(work: Path, store: Path, name: str, calibration: Path, optimizations: str) -> None:
    code = archive(["--name", name, "--model-file", str(work / "digits_cnn.py"), "--weights", str(work / "digits.pt"),
                    "--handler", "tensor", "--input-shape", "1", "8", "8", "--workers", "1", "--batch-size", "1",
                    "--max-batch-delay", "1", "--optimizations", optimizations, "--calibration", str(calibration),
                    "--export-path", str(store), "--no-verify"])
    assert code == 0


@pytest.fixture(scope="module")
def digits_server(tmp_path_factory, torchserve_factory):
    work = tmp_path_factory.mktemp("int8_work")
    data = load_digits_data()
    model = train_digits_cnn(data)
    shutil.copy2(paths.models_dir() / "digits_cnn.py", work / "digits_cnn.py")
    torch.save(model.state_dict(), work / "digits.pt")
    good = _write_bodies(work / "good", data.train_x[:SAMPLES])
    # The quantizer sees blank images, the gate real digits: int8 saturates, and the gate refuses it.
    bad_rows = torch.zeros(SAMPLES, 1, 8, 8)
    held = [i for i in range(SAMPLES) if i % 4 == 3]
    bad_rows[held] = data.test_x[:len(held)]
    bad = _write_bodies(work / "bad", bad_rows)
    store = tmp_path_factory.mktemp("int8_store")
    _archive(work, store, "digits_int8", good, "int8")
    _archive(work, store, "digits_refused", bad, "auto")
    from torchserve_perf.tools.model_store import write_server_config

    write_server_config(store)
    # A cache of its own: the first load decides and quantizes, whatever earlier runs left in ~/.cache.
    cache = tmp_path_factory.mktemp("int8_cache")
    server = torchserve_factory(store, ready_models=["digits_int8", "digits_refused"],
                                env={"XDG_CACHE_HOME": str(cache)}, properties={"enable_model_api": "true"})
    return server, model, data


def test_an_archive_with_calibration_serves_int8_and_reports_its_agreement(digits_server):
    server, model, data = digits_server
    rows = data.test_x[:12]
    expected = model(rows).argmax(dim=1).tolist()
    got = []
    for row in rows:
        response = server.predict("digits_int8", json_body={"inputs": row.unsqueeze(0).tolist()})
        assert response.status_code == 200, response.text
        got.append(int(np.argmax(response.json()[0])))
    assert got == expected
    log = [line for line in server.read_log("model_log.log").splitlines() if "digits_int8" in line]
    summary = [line for line in log if "optimizations for digits_int8:" in line]
    assert summary and "applied int8" in summary[0] and "int8 top-1 agreement with fp32" in summary[0], log[-20:]
    assert any("int8: accuracy gate passed: top-1 agreement" in line for line in log)
    metric = [line for line in server.scrape().splitlines()
              if line.startswith("ts_perf_optimization_agreement") and "digits_int8" in line and 'int8"' in line]
    assert metric and float(metric[0].rsplit(" ", 1)[1]) >= 0.99, metric


def test_calibration_that_fails_the_gate_serves_fp32_and_says_why(digits_server):
    server, model, data = digits_server
    response = server.predict("digits_refused", json_body={"inputs": data.test_x[:1].tolist()})
    assert response.status_code == 200, response.text
    assert int(np.argmax(response.json()[0])) == int(model(data.test_x[:1]).argmax())
    log = [line for line in server.read_log("model_log.log").splitlines() if "digits_refused" in line]
    chosen = [line for line in log if "auto chose" in line or "auto kept eager" in line]
    assert chosen and "int8 dropped: accuracy gate failed: top-1 agreement" in chosen[0], log[-20:]
    summary = [line for line in log if "optimizations for digits_refused:" in line]
    assert summary and "applied int8" not in summary[0] and "int8 top-1 agreement with fp32" in summary[0]


def test_workers_use_the_graph_quantized_at_archive_time(digits_server):
    import zipfile

    server, _, _ = digits_server
    names = zipfile.ZipFile(server.model_store / "digits_int8.mar").namelist()
    assert any(n.startswith("quantized/int8/") and n.endswith(".onnx") for n in names), names
    assert any(n.startswith("quantized/references/") for n in names), names
    log = [line for line in server.read_log("model_log.log").splitlines() if "digits_int8" in line]
    assert any("int8: using the model quantized at archive time" in line for line in log), log[-20:]
    assert not any("read the quantized model from the cache" in line for line in log)


def test_a_restarted_int8_worker_reads_the_quantized_graph_and_is_ready_in_seconds(digits_server):
    server, model, data = digits_server
    assert server.manage("DELETE", "models/digits_int8").status_code == 200
    started = time.perf_counter()
    response = server.manage("POST", "models", url="digits_int8.mar", synchronous="true", initial_workers=1)
    assert response.status_code == 200, response.text
    ready_s = time.perf_counter() - started
    answer = server.predict("digits_int8", json_body={"inputs": data.test_x[:1].tolist()})
    assert answer.status_code == 200 and int(np.argmax(answer.json()[0])) == int(model(data.test_x[:1]).argmax())
    log = server.read_log("model_log.log").splitlines()
    assert sum("int8: using the model quantized at archive time" in line for line in log if "digits_int8" in line) == 2
    summaries = [line for line in log if "optimizations for digits_int8:" in line]
    assert len(summaries) == 2 and "applied int8" in summaries[-1]
    assert ready_s < 30, f"restart took {ready_s:.1f} s"
