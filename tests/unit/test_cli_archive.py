"""``torchserve-perf archive``'s checks and pure pieces, in process: no archiver run, no server.

The archives built and served on a real TorchServe are in tests/integration/test_cli_archive.py.
"""


from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.archive_fixtures import EAGER, _error
from torchserve_perf.plugins.host_defaults import auto_optimizations
from torchserve_perf.tools import archive
from torchserve_perf.tools.archive.build import archiver_command
from torchserve_perf.tools.archive.model_config import merge_model_config
from torchserve_perf.tools.archive.plan import ArchivePlan, ModelSource

# ---- input checks, in process --------------------------------------------------------------------


@pytest.mark.parametrize("choice, ours, section", [
    (None, True, auto_optimizations()),        # our handlers: auto by default
    (None, False, None),                       # your own handler file: nothing written
    ("auto", False, auto_optimizations()),
    ("none", True, {"chain": ["none"]}),
    ("channels_last, torchscript", True, {"chain": ["channels_last", "torchscript"]}),
])
def test_optimizations_option(choice: Any, ours: bool, section: Any) -> None:
    assert archive.optimizations_section(choice, ours) == section


def test_model_config_is_validated_with_the_handlers_own_rules(project: Path, capsys: pytest.CaptureFixture) -> None:
    (project / "cfg.yaml").write_text("batchSize: 8\nhandler:\n  threads:\n    intra_ops: 2\n")
    line = _error(capsys, *EAGER, "--model-config", "cfg.yaml")
    assert "handler.threads" in line and "intra_ops" in line
    (project / "cfg.yaml").write_text("minWorkers: 0\n")
    assert "minWorkers: 0 is not a positive integer" in _error(capsys, *EAGER, "--model-config", "cfg.yaml")


@pytest.mark.parametrize("base, override, merged", [
    ({"batchSize": 2}, {"batchSize": 8, "maxBatchDelay": 5}, {"batchSize": 8, "maxBatchDelay": 5}),
    # handler sections merge one level down: the user's keys win, ours stay
    ({"handler": {"tensor": {"input_shape": [4], "dtype": "float32"}}}, {"handler": {"tensor": {"dtype": "int64"}}},
     {"handler": {"tensor": {"input_shape": [4], "dtype": "int64"}}}),
    ({"handler": {"optimizations": {"chain": ["none"]}}}, {"handler": {"threads": {"intra_op": 2}}},
     {"handler": {"optimizations": {"chain": ["none"]}, "threads": {"intra_op": 2}}}),
    ({"handler": {"optimizations": {"chain": ["none"]}}}, {"handler": {"optimizations": "auto"}},
     {"handler": {"optimizations": "auto"}}),
    ({"minWorkers": 1}, {}, {"minWorkers": 1}),
])
def test_model_config_merges_key_by_key(base: dict, override: dict, merged: dict) -> None:
    assert merge_model_config(base, override) == merged


@pytest.mark.parametrize("layout, store, archive_format", [
    ("mar", "out", "default"),
    ("folder", "out", "no-archive"),
    ("kserve", "out/model-store", "default"),  # KServe's runtime reads the archives from model-store/
])
def test_archiver_command_follows_the_layout(tmp_path: Path, layout: str, store: str, archive_format: str) -> None:
    plan = ArchivePlan(name="m", source=ModelSource("eager", Path("m.pt"), Path("m.py")), handler=Path("h.py"),
                       export_path=Path("out"), model_config={}, layout=layout)
    extra = tmp_path / "extra"
    extra.mkdir()
    command = archiver_command(plan, tmp_path / "model-config.yaml", extra)
    def value(flag: str) -> str:
        return command[command.index(flag) + 1]

    assert value("--export-path") == store and value("--archive-format") == archive_format
    assert value("--model-file") == "m.py" and value("--serialized-file") == "m.pt" and "--force" in command
    assert "--extra-files" not in command  # an empty staging folder is left out
    (extra / "vocab.txt").write_text("a\n")
    assert archiver_command(plan, tmp_path / "model-config.yaml", extra)[-2:] == ["--extra-files", str(extra)]
