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
pytest_plugins = ["tests.handler_fixtures", "tests.archive_fixtures"]
# The tiers are folders; each test is marked with its folder's tier, so `-m unit` and `tests/unit` agree.
TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = next((t for t in TIERS if f"tests/{t}/" in item.nodeid), None)
        if tier is None:
            raise pytest.UsageError(f"{item.nodeid}: every test lives in tests/unit, tests/integration or tests/e2e")
        item.add_marker(getattr(pytest.mark, tier))
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


def class_from_file(path: Path, name: str) -> Any:
    """The class ``name`` of the model file at ``path``, imported the way TorchServe imports a --model-file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


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


class ServerPool:
    """The real TorchServe servers the tests started. A server a module starts is stopped when that
    module ends (an idle server still costs the 2 cores: its frontend and its workers' samplers run);
    the session-wide ones (``served``, ``kserve_served``) when the session ends. Stops run in parallel."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.running: list[tuple[serving.TorchServe, bool]] = []

    def start(self, model_store: Path, *, session_wide: bool = False, **kwargs: Any) -> serving.TorchServe:
        server = serving.start(model_store, self.tmp_path_factory.mktemp("torchserve"), **kwargs)
        self.running.append((server, session_wide))
        return server

    def stop(self, *, session_wide_too: bool) -> list[Any]:
        """Stop the module's servers (and the session's with ``session_wide_too``); returns leftovers."""
        from concurrent.futures import ThreadPoolExecutor

        stopping = [server for server, session_wide in self.running if session_wide_too or not session_wide]
        self.running = [(server, keep) for server, keep in self.running if server not in stopping]
        if not stopping:
            return []
        with ThreadPoolExecutor(max_workers=len(stopping)) as pool:
            list(pool.map(lambda server: server.stop(), stopping))
        return [proc for server in stopping for proc in server.processes()]


@pytest.fixture(scope="session")
def server_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPool]:
    pool = ServerPool(tmp_path_factory)
    yield pool
    leftovers = pool.stop(session_wide_too=True)
    assert not leftovers, f"TorchServe processes left running: {leftovers}"


POOL = pytest.StashKey[ServerPool]()


@pytest.fixture(scope="module", autouse=True)
def stop_module_servers(request: pytest.FixtureRequest) -> Iterator[None]:
    """At the end of each module, stop the servers it started (the pool exists once a test needed one)."""
    yield
    pool = request.config.stash.get(POOL, None)
    if pool is not None:
        leftovers = pool.stop(session_wide_too=False)
        assert not leftovers, f"TorchServe processes left running: {leftovers}"


@pytest.fixture(scope="session")
def torchserve_factory(request: pytest.FixtureRequest, server_pool: ServerPool) -> Callable[..., serving.TorchServe]:
    """Starts isolated real TorchServe servers; each is stopped at the end of the module that started
    it (``session_wide=True``: at the end of the session), and nothing may be left running."""
    request.config.stash[POOL] = server_pool  # for stop_module_servers
    return server_pool.start


@pytest.fixture(scope="session")
def served(model_store: Path, torchserve_factory: Callable[..., serving.TorchServe]) -> serving.TorchServe:
    """One real TorchServe serving both demo archives, shared by the end-to-end tests."""
    return torchserve_factory(model_store, ready_models=["resnet18", "text_classifier"], session_wide=True)


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
                              properties={"service_envelope": "kservev2"}, session_wide=True)
