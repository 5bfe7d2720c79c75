"""``archive --from``: an archive built the way TorchServe's image classifier example builds it
(model.py + index_to_name.json + seeded weights, ``--handler image_classifier``), converted, and
both served by one real TorchServe; the converted one answers what stock answers."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import torch
from PIL import Image

from torchserve_perf.models.resnet18 import ResNet18
from torchserve_perf.models.seeded import seeded_state_dict
from torchserve_perf.tools import paths, serving
from torchserve_perf.tools.loadgen import sample_image

COMMAND = str(Path(sys.executable).with_name("torchserve-perf"))
SHIMS = Path(__file__).with_name("stock_shims")  # torchvision.transforms and captum stand-ins (README.md there)
TOLERANCE = 2e-3  # probability; the two decode paths differ by at most an 8-bit level per pixel


def _png(width: int, height: int) -> bytes:
    image = Image.open(io.BytesIO(sample_image(width, height, seed=3))).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[serving.TorchServe]:
    work = tmp_path_factory.mktemp("convert")
    example, store = work / "example", work / "store"
    example.mkdir()
    store.mkdir()
    shutil.copy2(paths.models_dir() / "resnet18.py", example / "model.py")
    torch.save(seeded_state_dict(ResNet18), example / "model.pth")
    (example / "index_to_name.json").write_text(json.dumps({str(i): [f"n{i:08d}", f"class_{i}"] for i in range(1000)}))
    (example / "model-config.yaml").write_text("minWorkers: 1\nmaxWorkers: 1\n")
    subprocess.run([paths.console_script("torch-model-archiver"), "--model-name", "stock", "--version", "1.0",
                    "--model-file", str(example / "model.py"), "--serialized-file", str(example / "model.pth"),
                    "--handler", "image_classifier", "--extra-files", str(example / "index_to_name.json"),
                    "--config-file", str(example / "model-config.yaml"), "--export-path", str(store)],
                   check=True, capture_output=True, timeout=120)
    # One worker and eager, so the comparison and the test's time do not depend on auto's search.
    done = subprocess.run([COMMAND, "archive", "--from", str(store / "stock.mar"), "--name", "converted",
                           "--workers", "1", "--optimizations", "none", "--export-path", str(store)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "handler image_classifier -> image" in done.stdout
    ts = serving.start(store, work / "server", models=["stock.mar", "converted.mar"],
                       ready_models=["stock", "converted"], env={"PYTHONPATH": str(SHIMS)})
    try:
        yield ts
    finally:
        ts.stop()


@pytest.mark.parametrize("payload", [sample_image(), _png(300, 500)], ids=["jpeg-640x480", "png-300x500"])
def test_converted_answers_as_stock(server: serving.TorchServe, payload: bytes) -> None:
    stock = server.predict("stock", payload)
    converted = server.predict("converted", payload)
    assert stock.status_code == 200, stock.text
    assert converted.status_code == 200, converted.text
    want, got = stock.json(), converted.json()
    assert isinstance(got, dict) and len(got) == 5
    assert list(got) == list(want)  # the same labels, likeliest first
    for label, probability in want.items():
        assert abs(got[label] - probability) <= TOLERANCE, (label, got[label], probability)
