"""``torchserve-perf bench --suite``: the YAML's validation, and one report for several models
from a real TorchServe (the shared ``served`` fixture, through the real console script)."""


from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import png_bytes
from torchserve_perf.tools.bench.suite import LoadSettings, SuiteError, load_suite, parse_suite, with_overrides


def write_payloads(folder: Path) -> Path:
    """The payload files GOOD names, in ``folder``."""
    (folder / "review.txt").write_text("The delivery was late but the support team fixed it quickly.")
    (folder / "red.png").write_bytes(png_bytes((120, 90)))
    return folder


@pytest.fixture
def payloads(tmp_path: Path) -> Path:
    return write_payloads(tmp_path)


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

