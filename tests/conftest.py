"""Shared fixtures: tiny seeded models, TorchServe's real Context, and real TorchServe servers."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest
import torch

from torchserve_perf.tools import paths, serving
from torchserve_perf.tools.model_store import build_archive, default_specs, write_server_config

REPO = Path(__file__).resolve().parents[1]
# Handler fixtures shared by several modules (tensor_handler, text_handler, image_handler, ...).
pytest_plugins = ["tests.handler_fixtures"]
TS_METRICS_YAML = paths.metrics_yaml()


# ---- in-process ---------------------------------------------------------------------------------
class RequestContext:
    """Builds TorchServe's real ts.context.Context around a model directory."""

    def __init__(self, model_dir: Path, manifest: dict, model_yaml_config: Optional[dict] = None,
                 model_name: str = "tiny", batch_size: int = 4) -> None:
        from ts.context import Context
        from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

        self.metrics = MetricsCacheYamlImpl(str(TS_METRICS_YAML))
        self.metrics.initialize_cache()
        self.context = Context(model_name, str(model_dir), manifest, batch_size, None, "0.12.0",
                               metrics=self.metrics, model_yaml_config=model_yaml_config or {})

    def for_batch(self, headers: Optional[list[dict]] = None, size: int = 1) -> Any:
        from ts.context import RequestProcessor

        headers = headers or [{} for _ in range(size)]
        self.context.request_processor = [RequestProcessor(dict(h)) for h in headers]
        self.context.request_ids = {i: f"req-{i}" for i in range(len(headers))}
        self.metrics.set_request_ids(self.context.request_ids)
        return self.context


def write_model_dir(target: Path, model_file: Path, model: torch.nn.Module, handler_name: str = "handler.py",
                    extra: Optional[dict[str, Any]] = None) -> dict:
    """Lay out an unpacked archive: model file, state dict, manifest. Returns the manifest."""
    target.mkdir(parents=True, exist_ok=True)
    (target / model_file.name).write_text(model_file.read_text())
    torch.save(model.state_dict(), target / "weights.pt")
    for name, content in (extra or {}).items():
        (target / name).write_text(content if isinstance(content, str) else json.dumps(content))
    return {"model": {"modelName": "tiny", "modelVersion": "1.0", "serializedFile": "weights.pt",
                      "modelFile": model_file.name, "handler": handler_name}}


@pytest.fixture
def make_context() -> Callable[..., RequestContext]:
    return RequestContext


def png_bytes(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30), fmt: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, fmt)
    return buffer.getvalue()


# ---- real TorchServe ----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo archives (bundled), built once per test session with torch-model-archiver."""
    store = tmp_path_factory.mktemp("model_store")
    for spec in default_specs():
        build_archive(spec, store)
    write_server_config(store)
    return store


@pytest.fixture(scope="session")
def torchserve_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., serving.TorchServe]]:
    """Starts isolated real TorchServe servers; on teardown stops them and checks nothing is left."""
    servers: list[serving.TorchServe] = []

    def start(model_store: Path, **kwargs: Any) -> serving.TorchServe:
        server = serving.start(model_store, tmp_path_factory.mktemp("torchserve"), **kwargs)
        servers.append(server)
        return server

    yield start
    leftovers = []
    for server in servers:
        server.stop()
        leftovers += server.processes()
    assert not leftovers, f"TorchServe processes left running: {leftovers}"


@pytest.fixture(scope="session")
def served(model_store: Path, torchserve_factory: Callable[..., serving.TorchServe]) -> serving.TorchServe:
    """One real TorchServe serving both demo archives, shared by the end-to-end tests."""
    return torchserve_factory(model_store, ready_models=["resnet18", "text_classifier"])


# Batch 4 with a delay, so concurrent requests share a batch; one worker each keeps the server small.
KSERVE_MODEL_CONFIG = {"minWorkers": 1, "maxWorkers": 1, "batchSize": 4, "maxBatchDelay": 300, "responseTimeout": 120}


@pytest.fixture(scope="session")
def kserve_served(tmp_path_factory: pytest.TempPathFactory,
                  torchserve_factory: Callable[..., serving.TorchServe]) -> serving.TorchServe:
    """Both demo archives on a TorchServe configured as KServe configures it for v2
    (service_envelope=kservev2), batching on, one worker each; shared by the v2 and Prometheus tests."""
    store = tmp_path_factory.mktemp("kserve_store")
    for spec in default_specs():
        handler_section = {"handler": spec.model_config["handler"]} if "handler" in spec.model_config else {}
        build_archive(spec, store, model_config={**KSERVE_MODEL_CONFIG, **handler_section})
    write_server_config(store)
    return torchserve_factory(store, ready_models=[s.name for s in default_specs()],
                              properties={"service_envelope": "kservev2"})
