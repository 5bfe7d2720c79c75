"""``torchserve-perf bench --suite``: the YAML's validation, and one report for several models
from a real TorchServe (the shared ``served`` fixture, through the real console script)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from torchserve_perf.tools import serving
from torchserve_perf.tools.suite import LoadSettings, SuiteError, load_suite, parse_suite, with_overrides
from tests.conftest import png_bytes

COMMAND = str(Path(sys.executable).with_name("torchserve-perf"))


@pytest.fixture
def payloads(tmp_path: Path) -> Path:
    (tmp_path / "review.txt").write_text("The delivery was late but the support team fixed it quickly.")
    (tmp_path / "red.png").write_bytes(png_bytes((120, 90)))
    return tmp_path


def write(folder: Path, data: object) -> Path:
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


GOOD = {"name": "two", "target": {"url": "http://127.0.0.1:9"},
        "defaults": {"concurrency": [1, 2], "duration": 1, "warmup": 0},
        "models": [{"name": "text_classifier", "payloads": ["review.txt"]},
                   {"name": "resnet18", "payloads": ["red.png"], "rate": [5], "concurrency": []}]}


def test_a_suite_file_becomes_frozen_validated_settings(payloads: Path) -> None:
    suite = load_suite(write(payloads, GOOD))
    text, image = suite.models
    assert suite.name == "two" and suite.target.url == "http://127.0.0.1:9"
    assert text.payloads == (payloads / "review.txt",)  # relative to the suite file
    assert text.load == LoadSettings(concurrency=(1, 2), rate=(), duration=1.0, warmup=0.0)
    assert image.load.concurrency == () and image.load.rate == (5.0,) and image.request_path == "/predictions/resnet18"
    quick = with_overrides(suite, url=None, key_file=None, token=None, model_store=None, duration=None, warmup=None,
                           quick=True)
    assert quick.models[0].load.duration == 1.0 and quick.target == suite.target
    other = with_overrides(suite, url="http://h:1/", key_file=None, token="t", model_store=None, duration=7.0,
                           warmup=None, quick=False)
    assert other.target.url == "http://h:1" and other.target.token == "t"
    assert {m.load.duration for m in other.models} == {7.0}


@pytest.mark.parametrize("change, message", [
    ({"modles": []}, "unknown key 'modles'; did you mean 'models'?"),
    ({"defaults": {"concurency": [1]}}, "defaults: unknown key 'concurency'; did you mean 'concurrency'?"),
    ({"target": {"url": "http://x", "model_store": "s"}}, "exactly one"),
    ({"target": {"adress": "http://x"}}, "target: unknown key 'adress'"),
    ({"defaults": {"concurrency": [0]}}, "defaults.concurrency: 0 must be >= 1"),
    ({"defaults": {"rate": [-1]}}, "defaults.rate: -1 must be > 0"),
    ({"defaults": {"duration": "long"}}, "defaults.duration: 'long' is not a number"),
    ({"defaults": {"concurrency": [], "rate": []}}, "no load"),
    ({"models": [{"name": "a", "payloads": ["missing.bin"]}]}, "missing.bin does not exist"),
    ({"models": [{"name": "a", "payload": ["review.txt"]}]}, "did you mean 'payloads'?"),
    ({"models": [{"payloads": ["review.txt"]}]}, "give the model's name"),
    ({"models": [{"name": "a", "payloads": ["review.txt"]}, {"name": "a", "payloads": ["review.txt"]}]},
     "listed twice"),
    ({"models": []}, "give a list of models"),
])
def test_bad_suites_are_rejected_with_the_fix(payloads: Path, change: dict, message: str) -> None:
    data = {**GOOD, **change}
    with pytest.raises(SuiteError) as exc:
        parse_suite(data, payloads / "suite.yaml")
    assert message in str(exc.value)


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
