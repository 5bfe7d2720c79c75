"""test_cli_archive: the tests that start real processes (TorchServe, the archiver, load clients)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import torch
import yaml

from tests.archive_fixtures import EAGER, _error, plain_class
from torchserve_perf.plugins.host_defaults import auto_optimizations
from torchserve_perf.tools import archive

COMMAND = str(Path(sys.executable).with_name("torchserve-perf"))


MODEL = '''import torch
from torch import nn

from handlers import SCALE          # the user's own handlers/ package, not ours
from plugins.shift import shift     # the user's own plugins/ package


class Affine(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return shift(self.linear(x)) * SCALE
'''


ROWS = [[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, -1.0, 2.0]]


def _linear(seed: int) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 2).eval()


def cli(*args: Any, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([COMMAND, "archive", *map(str, args)], capture_output=True, text=True, timeout=180, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("user_project")
    # The user's own packages named like ours, with unrelated content.
    (work / "handlers").mkdir()
    (work / "handlers" / "__init__.py").write_text("SCALE = 3.0\nclass PerfHandler:  # unrelated to ours\n    pass\n")
    (work / "plugins").mkdir()
    (work / "plugins" / "__init__.py").write_text("")
    (work / "plugins" / "shift.py").write_text("def shift(x):\n    return x + 1.0\n")
    (work / "affine.py").write_text(MODEL)
    torch.save({f"linear.{k}": v for k, v in _linear(1).state_dict().items()}, work / "affine.pt")
    common = ["--input-shape", "4", "--workers", "1", "--batch-size", "2", "--max-batch-delay", "5",
              "--export-path", "store"]
    built = cli("--name", "dropin", "--model-file", "affine.py", "--weights", "affine.pt",
                "--extra-files", "handlers", "plugins", *common, cwd=work)
    # verified in a model directory like the worker's: the model file's own imports resolve there
    assert "verified: loads; one row of [4] -> [1, 2]" in built.stdout
    assert "eager, handler tensor_handler.py, torchserve_perf bundled" in built.stdout

    plain = plain_class(work)().eval()
    plain.linear.load_state_dict(_linear(2).state_dict())
    torch.jit.save(torch.jit.trace(plain, torch.zeros(2, 4)), work / "plain.ts.pt")
    program = torch.export.export(plain, (torch.zeros(2, 4),), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    torch.export.save(program, work / "plain.pt2")
    assert "verified: loads; one row of [4] -> [1, 2]" in cli("--name", "scripted", "--torchscript", "plain.ts.pt",
                                                               *common, cwd=work).stdout
    cli("--name", "exported", "--exported", "plain.pt2", *common, cwd=work)
    return work / "store"


def test_the_archive_carries_both_namespaces_and_the_config(store: Path) -> None:
    names = zipfile.ZipFile(store / "dropin.mar").namelist()
    assert {"handlers/__init__.py", "plugins/shift.py", "torchserve_perf/handlers/base.py",
            "torchserve_perf/plugins/threads.py", "affine.py", "affine.pt", "tensor_handler.py"} <= set(names), names
    assert not [n for n in names if n.startswith("torchserve_perf/tools/")]  # the tools stay out of workers
    config = yaml.safe_load(zipfile.ZipFile(store / "dropin.mar").read("model-config.yaml"))
    # what the command line said, written where TorchServe and our handler read it
    assert {k: config[k] for k in ("minWorkers", "maxWorkers", "batchSize", "maxBatchDelay")} == \
        {"minWorkers": 1, "maxWorkers": 1, "batchSize": 2, "maxBatchDelay": 5}
    assert config["handler"]["tensor"] == {"input_shape": [4]} and config["responseTimeout"] == 120
    # optimizations on by default: auto among the lossless chains that follow elastic threads
    assert config["handler"]["optimizations"] == auto_optimizations()


@pytest.fixture(scope="module")
def server(store: Path, torchserve_factory: Callable[..., Any]) -> Any:
    models = ["dropin", "scripted", "exported"]
    return torchserve_factory(store, models=[f"{m}.mar" for m in models], ready_models=models, timeout=120)


def test_drop_in_beside_the_users_own_handlers_and_plugins(server: Any) -> None:
    linear = _linear(1)
    with torch.inference_mode():
        expected = (linear(torch.tensor(ROWS)) + 1.0) * 3.0
    response = server.predict("dropin", json_body={"inputs": ROWS})
    assert response.status_code == 200, response.text
    torch.testing.assert_close(torch.tensor(response.json()), expected)
    one = server.predict("dropin", json_body={"inputs": ROWS[0]})  # one row, no batch dimension
    assert one.status_code == 200, one.text
    torch.testing.assert_close(torch.tensor(one.json()), expected[0])
    # our handler still answers a bad request with its own JSON 4xx (the user's handlers/ did not shadow ours)
    bad = server.predict("dropin", json_body={"inputs": [1.0, 2.0]})
    assert bad.status_code == 422 and "expected shape [4]" in json.dumps(bad.json())


@pytest.mark.parametrize("model", ["scripted", "exported"])
def test_torchscript_and_exported_programs_serve(server: Any, model: str) -> None:
    with torch.inference_mode():
        expected = _linear(2)(torch.tensor(ROWS)) * 2.0
    response = server.predict(model, json_body={"inputs": ROWS})
    assert response.status_code == 200, response.text
    torch.testing.assert_close(torch.tensor(response.json()), expected)


@pytest.mark.parametrize("argv, message", [
    (EAGER + ("--input-shape", "5"), "the model fails on one row of shape [5]"),
    (("--name", "m", "--torchscript", "plain.pt"), "is not a TorchScript file; save it with torch.jit.save"),
    (("--name", "m", "--exported", "plain.pt"), "is not a torch.export program"),
    (("--name", "m", "--model-file", "plain.py", "--weights", "nope.pt"), "nope.pt: no such file"),
    (EAGER + ("--handler", "imagee"), "give image, text, tensor or the path of your handler file"),
    (EAGER + ("--extra-files", "plain.py"), "is already the model file; rename it"),
    (EAGER + ("--extra-files", "missing.txt"), "--extra-files missing.txt: no such file or folder"),
    (("--name", "../m") + EAGER[2:], "--name '../m': use letters, digits"),
    (EAGER + ("--labels", "plain.py"), None),  # a text file of labels is fine; checked below
    (EAGER + ("--input-shape", "4", "--optimizations", "channels_lst"), "channels_lst"),
    (EAGER + ("--input-shape", "4", "--optimizations", "auto,torchscript"), "give auto, none, or plugin names"),
])
def test_bad_inputs_are_one_line_errors_that_name_the_fix(project: Path, capsys: pytest.CaptureFixture,
                                                          argv: tuple, message: Optional[str]) -> None:
    if message is None:
        assert archive.read_labels(Path("plain.py"))["0"] == "import torch"
        return
    assert message in _error(capsys, *argv, "--export-path", "store")
    assert not (project / "store" / "m.mar").exists()


def test_existing_archive_needs_force_and_kserve_layout(project: Path, capsys: pytest.CaptureFixture) -> None:
    assert archive.main([*EAGER, "--input-shape", "4", "--workers", "1", "--layout", "kserve", "--export-path", "ks",
                         "--labels", "plain.py"]) == 0
    assert (project / "ks" / "model-store" / "m.mar").is_file()
    props = (project / "ks" / "config" / "config.properties").read_text()
    assert "model_store=/mnt/models/model-store" in props and "metrics_config=/mnt/models/config/metrics.yaml" in props
    snapshot = json.loads(next(line for line in props.splitlines() if line.startswith("model_snapshot=")).split("=", 1)[1])
    assert snapshot["models"]["m"]["1.0"]["marName"] == "m.mar" and snapshot["models"]["m"]["1.0"]["minWorkers"] == 1
    assert (project / "ks" / "config" / "metrics.yaml").is_file()
    assert "exists; give --force" in _error(capsys, *EAGER, "--layout", "kserve", "--export-path", "ks")
    # a second model joins the same config.properties
    assert archive.main(["--name", "m2", *EAGER[2:], "--kserve-layout", "--export-path", "ks", "--no-verify"]) == 0
    props = (project / "ks" / "config" / "config.properties").read_text()
    assert '"modelCount":2' in props
    labels = json.loads(zipfile.ZipFile(project / "ks" / "model-store" / "m.mar").read("index_to_name.json"))
    assert labels["0"] == "import torch"

