"""Drop-in way (a): the package pip-installed into the server's environment, archives without it.

The archives are built with ``bundle=False`` (only the handler file, model and weights), the
package is installed with pip into a private target folder, and only that folder is on the
server's PYTHONPATH. (Way (b), bundled archives with nothing installed, is
tests/test_handlers_server.py and tests/test_end_to_end.py.)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable

import pytest

from torchserve_perf.tools.model_store import build_archive, default_specs
from tests.conftest import REPO, png_bytes

MODELS = ["resnet18_installed", "text_installed"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install --no-deps --target`` of a clean copy of the repo's package (no build files left in the repo)."""
    root = tmp_path_factory.mktemp("installed")
    source = root / "src"
    source.mkdir()
    shutil.copy2(REPO / "setup.py", source / "setup.py")
    for folder in ("torchserve_perf", "handlers", "plugins", "models", "scripts/fixtures"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True)
    assert (target / "torchserve_perf" / "handlers" / "base.py").is_file()
    assert (target / "torchserve_perf" / "plugins" / "threads.py").is_file()
    assert not (target / "handlers").exists() and not (target / "plugins").exists()  # no generic top-level names
    return target


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("unbundled_store")
    image, text = default_specs()
    one_worker = {"minWorkers": 1, "maxWorkers": 1, "batchSize": 4, "maxBatchDelay": 10, "responseTimeout": 60}
    build_archive(image, store, bundle=False, name=MODELS[0], model_config={**one_worker, **{"handler": {"image": {"topk": 3}}}})
    build_archive(text, store, bundle=False, name=MODELS[1], model_config=one_worker)
    return store


def test_unbundled_archives_carry_only_the_handler_file(store):
    for model in MODELS:
        names = zipfile.ZipFile(store / f"{model}.mar").namelist()
        assert not [n for n in names if n.startswith(("torchserve_perf/", "handlers/", "plugins/"))], names


@pytest.fixture(scope="module")
def server(store: Path, site: Path, torchserve_factory: Callable[..., Any]) -> Any:
    return torchserve_factory(store, models=[f"{m}={m}.mar" for m in MODELS], ready_models=MODELS,
                              env={"PYTHONPATH": str(site)}, timeout=150)


def test_installed_package_serves_unbundled_archives(server, site):
    image = server.predict(MODELS[0], png_bytes((300, 200), fmt="JPEG"))
    assert image.status_code == 200, image.text
    assert len(image.json()) == 3 and all(label.startswith("class_") for label in image.json())
    text = server.predict(MODELS[1], b"Quick delivery, friendly staff.")
    assert text.status_code == 200, text.text
    assert set(text.json()) <= {"negative", "neutral", "positive", "question"}
    # Each worker logged where its handlers came from: the pip target, not the repo or the archive.
    sources = dict(re.findall(r"(W-\d+-\w+?_1\.0) thread policy: .*; handlers from (\S+)", server.read_log()))
    assert len(sources) == 2, server.read_log()[-2000:]
    assert set(sources.values()) == {str(site / "torchserve_perf" / "handlers")}


def test_installed_package_returns_per_request_errors(server):
    bad = server.predict(MODELS[0], b"not an image at all")
    assert bad.status_code == 400 and "not a readable JPEG or PNG" in bad.json()["error"]["message"]
    assert server.predict(MODELS[0], png_bytes()).status_code == 200
