"""docs/handlers.md, "Your own handler on top of ours", followed to the letter: its files are taken
from the page as written and loaded by TorchServe's own model loader, with TorchServe's Context."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
import yaml

from tests.conftest import REPO, TS_METRICS_YAML, write_model_dir
from tests.handler_fixtures import TINY_MODEL, tiny_linear

DOC = REPO / "docs" / "handlers.md"
FILES = {"csv_options.py": "python", "csv_handler.py": "python", "model-config.yaml": "yaml"}


def documented(name: str) -> str:
    """The fenced block the page introduces with `name`:."""
    text = DOC.read_text()
    found = re.findall(rf"^`{re.escape(name)}`[^\n]*:\n\n```{FILES[name]}\n(.*?)^```", text, re.S | re.M)
    assert len(found) == 1, f"docs/handlers.md should show {name} once, found {len(found)}"
    return found[0]


@pytest.fixture
def unload_modules() -> Iterator[None]:
    yield
    for name in ("csv_handler", "csv_options"):
        sys.modules.pop(name, None)


def load(tmp_path: Path, monkeypatch, model_config: str) -> Any:
    """An unpacked archive of the documented files, loaded as a worker loads it."""
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
    from ts.model_loader import TsModelLoader

    model_dir = tmp_path / "model"
    model_file = tmp_path / "tiny_model.py"
    model_file.write_text(TINY_MODEL)
    model = torch.nn.Module()
    model.linear = tiny_linear()
    manifest = write_model_dir(model_dir, model_file, model, handler_name="csv_handler.py")
    manifest["model"]["configFile"] = "model-config.yaml"
    for name in ("csv_options.py", "csv_handler.py"):
        (model_dir / name).write_text(documented(name))
    (model_dir / "model-config.yaml").write_text(model_config)
    (model_dir / "MAR-INF").mkdir()
    (model_dir / "MAR-INF" / "MANIFEST.json").write_text(json.dumps(manifest))
    monkeypatch.syspath_prepend(str(model_dir))  # a worker has its model directory on sys.path
    metrics = MetricsCacheYamlImpl(str(TS_METRICS_YAML))
    metrics.initialize_cache()
    return TsModelLoader().load("csv", str(model_dir), "csv_handler.py", None, 4, None, True, metrics)


def handle(service: Any, bodies: list[bytes]) -> tuple[list, list[int]]:
    from ts.context import RequestProcessor

    context = service.context
    context.request_processor = [RequestProcessor({}) for _ in bodies]
    context.request_ids = {i: f"req-{i}" for i in range(len(bodies))}
    context.metrics.set_request_ids(context.request_ids)
    outputs = service._entry_point([{"body": b} for b in bodies], context)
    return outputs, [context.get_response_status(i)[0] or 200 for i in range(len(bodies))]


def test_the_documented_files_define_one_class_each():
    for name in ("csv_options.py", "csv_handler.py"):
        assert len(re.findall(r"^class ", documented(name), re.M)) == 1  # TorchServe's rule for --handler
    assert yaml.safe_load(documented("model-config.yaml"))["handler"] == {"csv": {"features": 4}}


def test_the_documented_handler_serves_a_batch_and_rejects_a_bad_request_alone(tmp_path, monkeypatch,
                                                                              unload_modules):
    service = load(tmp_path, monkeypatch, documented("model-config.yaml"))
    handler = service._entry_point.__self__
    assert type(handler).__name__ == "CsvHandler" and handler.initialized
    assert type(handler.settings.options).__name__ == "CsvOptions" and handler.settings.options.features == 4

    two_rows, one_row = [[1.0, 2.0, 3.0, 4.0], [0.0, -1.0, 0.5, 2.0]], [[0.5, 0.5, 0.5, 0.5]]
    bodies = ["\n".join(",".join(str(v) for v in row) for row in rows).encode() for rows in (two_rows, one_row)]
    outputs, statuses = handle(service, [bodies[0], b"1,2,3", bodies[1], b"1,x,3,4"])
    assert statuses == [200, 422, 200, 400]
    assert outputs[1]["error"]["message"] == "send lines of 4 numbers"
    assert outputs[3]["error"]["message"] == "every value must be a number"
    with torch.no_grad():
        expected = [tiny_linear()(torch.tensor(rows)) for rows in (two_rows, one_row)]
    for answer, logits in zip((outputs[0], outputs[2]), expected):
        assert [a["class"] for a in answer] == logits.argmax(1).tolist()
        assert [a["score"] for a in answer] == pytest.approx(logits.max(1).values.tolist(), abs=1e-4)


def test_a_mistake_in_the_documented_section_fails_the_load_naming_the_key(tmp_path, monkeypatch, unload_modules):
    from torchserve_perf.plugins.config import HandlerConfigError

    config = documented("model-config.yaml").replace("features: 4", "featurs: 4")
    with pytest.raises(HandlerConfigError, match=r"handler\.csv\.featurs"):
        load(tmp_path, monkeypatch, config)
