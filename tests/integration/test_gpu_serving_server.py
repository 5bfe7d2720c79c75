"""The decode pool and the device-side image path on a real TorchServe (CPU here; the same code
serves on CUDA). One server, two archives of the same seeded tiny CNN: one decodes on a 2-thread
pool and resizes with torch (decode.on_device: always), the other inline with Pillow. A batch of
four (three images and a broken body) must get the same answers from both, the broken one a 400."""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import pytest

from tests.conftest import png_bytes
from tests.handler_fixtures import TINY_CNN
from torchserve_perf.tools import paths, serving
from torchserve_perf.tools.loadgen import sample_image
from torchserve_perf.tools.model_store import ArchiveSpec, build_archive

BATCH_DELAY_MS = 1500  # long enough that four concurrent requests share one batch


def model_config(decode: dict) -> dict:
    return {"minWorkers": 1, "maxWorkers": 1, "batchSize": 4, "maxBatchDelay": BATCH_DELAY_MS, "responseTimeout": 60,
            "handler": {"image": {"resize": 40, "crop": 32, "topk": 2}, "decode": decode}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory,
           torchserve_factory: Callable[..., serving.TorchServe]) -> serving.TorchServe:
    root = tmp_path_factory.mktemp("gpu_serving")
    model_file = root / "tiny_cnn.py"
    model_file.write_text(TINY_CNN)
    spec = importlib.util.spec_from_file_location("tiny_cnn_for_gpu_serving", model_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    archive = ArchiveSpec(name="tiny_cnn", model_file=model_file, make_model=module.TinyCNN,
                          handler=paths.handlers_dir() / "image_handler.py", labels=["zero", "one", "two", "three"])
    store = root / "store"
    store.mkdir()
    build_archive(archive, store, name="pooled", model_config=model_config({"threads": 2, "on_device": "always"}))
    build_archive(archive, store, name="inline", model_config=model_config({"threads": 1, "on_device": "never"}))
    return torchserve_factory(store, ready_models=["pooled", "inline"])


def batch_of_four(server: serving.TorchServe, model: str) -> list[tuple[int, object]]:
    bodies = [sample_image(), png_bytes((64, 48), (10, 200, 30)), b"\xff\xd8 not really a JPEG",
              sample_image(width=300, height=500, seed=4)]

    def send(body: bytes) -> tuple[int, object]:
        response = server.predict(model, body)
        return response.status_code, response.json()

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, bodies))


def test_pooled_device_path_serves_the_same_answers_as_pillow(server: serving.TorchServe):
    pooled = batch_of_four(server, "pooled")
    inline = batch_of_four(server, "inline")
    assert [status for status, _ in pooled] == [200, 200, 400, 200], pooled
    assert pooled[2] == inline[2]  # the same 400 body
    for (_, got), (_, want) in zip(pooled[:2] + pooled[3:], inline[:2] + inline[3:]):
        assert list(got) == list(want)  # the same top-2 labels, in order
        assert all(abs(got[k] - want[k]) < 1e-3 for k in want)  # pixels differ by one 8-bit step at most
    assert "not a readable JPEG or PNG" in pooled[2][1]["error"]["message"]
    log = server.read_log("model_log.log")
    assert "images resized on cpu" in log  # the pooled model took the device path
    # Both answered the four requests as one batch (the broken one rejected alone inside it).
    assert log.count("batch of 4: served 3") >= 2
