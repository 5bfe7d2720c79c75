"""deploy/ checked offline: Kubernetes schemas (kubernetes-validate), the InferenceService against kserve's
own models (.venv-kserve), Prometheus configs with promtool, and the manifests agreeing with each other."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO

DEPLOY = REPO / "deploy"
K8S_VERSION = "1.30.0"  # a version kubernetes-validate ships; autoscaling/v2 and apps/v1 are stable there
KSERVE_PYTHON = REPO / ".venv-kserve" / "bin" / "python"


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> dict[str, dict]:
    found = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in documents(path):
            found[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return found


def adapter_rules() -> list[dict]:
    config = manifests()["ConfigMap/torchserve-perf-adapter-rules"]["data"]["config.yaml"]
    return yaml.safe_load(config)["rules"]


@pytest.mark.parametrize("path", sorted((DEPLOY / "k8s").glob("*.yaml")), ids=lambda p: p.name)
def test_kubernetes_manifests_match_the_schemas(path: Path):
    docs = documents(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # strict: unknown fields fail


def test_the_validator_does_fail_on_a_bad_manifest():
    deployment = json.loads(json.dumps(manifests()["Deployment/torchserve-perf"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/ping"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_manifests_agree_with_each_other():
    found = manifests()
    deployment, service, hpa = (found["Deployment/torchserve-perf"], found["Service/torchserve-perf"],
                                found["HorizontalPodAutoscaler/torchserve-perf"])
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == ports["metrics"]
    # TorchServe's inference port in the archive tool's KServe layout, which the Deployment mounts.
    from torchserve_perf.tools.archive import kserve_properties

    props = dict(line.split("=", 1) for line in kserve_properties({"m": {}}).splitlines() if "=" in line)
    assert props["inference_address"].endswith(f":{ports['http']}")
    assert props["metrics_address"].endswith(f":{ports['metrics']}")
    mount = container["volumeMounts"][0]["mountPath"]
    assert any(arg == f"--ts-config={mount}/config/config.properties" for arg in container["args"])
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    # Every metric the autoscaler asks for is served by a rule of the adapter.
    served = {rule["name"]["as"] for rule in adapter_rules()}
    asked = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    assert asked and asked <= served


def test_adapter_rules_are_well_formed():
    for rule in adapter_rules():
        assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*\{[^}]*\}", rule["seriesQuery"]), rule["seriesQuery"]
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
        assert re.search(rule["name"]["matches"], rule["seriesQuery"].split("{")[0])
        assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]


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


def test_kubernetes_scrape_config_labels_what_the_adapter_maps():
    # Debian's promtool is built without Kubernetes service discovery, so this one is checked by hand.
    config = yaml.safe_load((DEPLOY / "prometheus" / "kubernetes.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    targets = {r.get("target_label") for r in job["relabel_configs"]}
    assert {"namespace", "pod", "__address__", "__metrics_path__"} <= targets
    for relabel in job["relabel_configs"]:
        re.compile(relabel.get("regex", ".*"))
    address = next(r for r in job["relabel_configs"] if r.get("target_label") == "__address__")
    joined = "10.0.0.7:8085;8082"
    assert re.sub(f"^(?:{address['regex']})$", address["replacement"].replace("$", "\\"), joined) == "10.0.0.7:8082"
