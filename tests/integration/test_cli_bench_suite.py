"""test_cli_bench_suite: the tests that start real processes (TorchServe, the archiver, load clients)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_cli_bench_suite import GOOD, write, write_payloads
from torchserve_perf.tools import serving

COMMAND = str(Path(sys.executable).with_name("torchserve-perf"))


@pytest.fixture
def payloads(tmp_path: Path) -> Path:
    return write_payloads(tmp_path)


def test_a_bad_suite_is_a_one_line_usage_error(payloads: Path) -> None:
    path = write(payloads, {**GOOD, "defaults": {"warmpu": 1}})
    done = subprocess.run([COMMAND, "bench", "--suite", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == ("torchserve-perf bench: error: defaults: unknown key 'warmpu'; did you mean "
                                   "'warmup'? known keys: ceiling, concurrency, duration, max_in_flight, rate, seed, "
                                   "warmup")


def test_suite_against_a_running_server_writes_one_report(served: serving.TorchServe, payloads: Path,
                                                          tmp_path: Path) -> None:
    suite = write(payloads, {k: v for k, v in GOOD.items() if k != "target"})  # the target from the command line
    out = tmp_path / "out"
    done = subprocess.run([COMMAND, "bench", "--suite", str(suite), "--url", served.inference_url,
                           "--key-file", str(served.workdir / "key_file.json"), "--out", str(out)],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((out / "suite.json").read_text())
    assert report["suite"] == "two" and report["target"]["kind"] == "running server"
    text, image = report["models"]
    assert text["config"]["model"] == "text_classifier" and [r["label"] for r in text["runs"]] == ["c=1", "c=2"]
    assert image["config"]["model"] == "resnet18" and [r["mode"] for r in image["runs"]] == ["open"]
    for model in report["models"]:
        assert all(r["ok"] > 0 and r["errors"] == {} and r["p99_ms"] > 0 for r in model["runs"]), model["runs"]
    markdown = (out / "suite.md").read_text()
    assert markdown.startswith("# Benchmark suite: two")
    assert "| text_classifier | c=2 |" in markdown and "| resnet18 | open 5/s |" in markdown
    assert "## Benchmark: resnet18" in markdown  # each model's full section follows the summary

