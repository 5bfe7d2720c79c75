"""test_deploy: the tests that start real processes (TorchServe, the archiver, load clients)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.unit.test_deploy import DEPLOY

KSERVE_PYTHON = REPO / ".venv-kserve" / "bin" / "python"


def kserve_validate(path: Path) -> subprocess.CompletedProcess:
    if not KSERVE_PYTHON.exists():
        pytest.fail(f"{KSERVE_PYTHON} is missing: run scripts/ensure_kserve_env.sh (make venv does)")
    return subprocess.run([str(KSERVE_PYTHON), str(REPO / "tests" / "kserve_side.py"), "validate", str(path)],
                          capture_output=True, text=True, timeout=120)


def test_inference_service_matches_kserves_models():
    result = kserve_validate(DEPLOY / "kserve" / "inferenceservice.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    (isvc,) = json.loads(result.stdout)["checked"]
    assert isvc["model_format"] == "pytorch" and isvc["protocol_version"] == "v2"
    assert isvc["storage_uri"] and isvc["autoscaling_metrics"] == ["PodMetric"]


def test_kserve_check_does_fail_on_a_misspelt_field(tmp_path: Path):
    bad = tmp_path / "isvc.yaml"
    bad.write_text((DEPLOY / "kserve" / "inferenceservice.yaml").read_text().replace("storageUri", "storageURI"))
    result = kserve_validate(bad)
    assert result.returncode == 1 and "storageURI: not a field of V1beta1ModelSpec" in result.stdout


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool is missing: run scripts/ensure_prometheus.sh (make venv does)")
    return found


def test_prometheus_scrape_config_passes_promtool():
    result = subprocess.run([promtool(), "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

