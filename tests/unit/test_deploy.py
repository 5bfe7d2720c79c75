"""deploy/ checked offline: Kubernetes schemas (kubernetes-validate), the manifests agreeing with each other,
and TorchServe's management API kept out of the cluster's reach (no Service, container port, environment
override or NetworkPolicy rule reaches it; the KServe layout's config binds it to loopback only)."""


from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO

DEPLOY = REPO / "deploy"


K8S_VERSION = "1.30.0"  # a version kubernetes-validate ships; autoscaling/v2 and apps/v1 are stable there


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
def test_kubernetes_manifests_match_the_schemas(path: Path) -> None:
    docs = documents(path)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # strict: unknown fields fail


def test_the_validator_does_fail_on_a_bad_manifest() -> None:
    deployment = json.loads(json.dumps(manifests()["Deployment/torchserve-perf"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/ping"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_manifests_agree_with_each_other() -> None:
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


def test_adapter_rules_are_well_formed() -> None:
    for rule in adapter_rules():
        assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*\{[^}]*\}", rule["seriesQuery"]), rule["seriesQuery"]
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
        assert re.search(rule["name"]["matches"], rule["seriesQuery"].split("{")[0])
        assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]


def test_kubernetes_scrape_config_labels_what_the_adapter_maps() -> None:
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


# ---- who can reach what: management stays inside the pod -----------------------------------------
# Settings a pod's environment could use to override the config (enable_envvars_config=true).
OVERRIDES = ("TS_MANAGEMENT_ADDRESS", "TS_GRPC_MANAGEMENT_ADDRESS", "TS_ENABLE_MODEL_API", "TS_ALLOWED_URLS")


def kserve_config() -> dict[str, str]:
    from torchserve_perf.tools.archive import kserve_properties

    text = kserve_properties({"m": {}})
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


def listeners(props: dict[str, str]) -> dict[int, tuple[str, str]]:
    """port -> (API, host it binds), for every API in a config.properties (TorchServe's gRPC default is loopback)."""
    bound = {}
    for api in ("inference", "management", "metrics"):
        url = urlsplit(props[f"{api}_address"])
        assert url.port and url.hostname, props[f"{api}_address"]
        bound[url.port] = (api, url.hostname)
    for api in ("inference", "management"):
        bound[int(props[f"grpc_{api}_port"])] = (f"grpc_{api}", props.get(f"grpc_{api}_address", "127.0.0.1"))
    return bound


def is_loopback(host: str) -> bool:
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def management_ports(props: dict[str, str]) -> set[int]:
    return {port for port, (api, _) in listeners(props).items() if "management" in api}


def containers(doc: dict) -> list[dict]:
    if doc["kind"] == "InferenceService":
        return [doc["spec"]["predictor"]["model"]]
    return doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])


def exposure_problems(found: dict[str, dict], props: dict[str, str]) -> list[str]:
    """Every Service port, container port or env setting that would put management within the cluster's reach."""
    problems = []
    closed = management_ports(props)
    bound = listeners(props)
    pods = [doc for doc in found.values() if doc["kind"] == "Deployment"]
    for name, doc in found.items():
        for container in containers(doc):
            for port in container.get("ports", []):
                if port["containerPort"] in closed:
                    problems.append(f"{name}: declares management port {port['containerPort']}")
            for env in container.get("env", []):
                if env["name"] in OVERRIDES:
                    problems.append(f"{name}: {env['name']} overrides config.properties")
            if "--enable-model-api" in container.get("args", []):
                problems.append(f"{name}: --enable-model-api")
        if doc["kind"] != "Service":
            continue
        selected = [c for pod in pods for c in containers(pod)
                    if doc["spec"]["selector"].items() <= pod["spec"]["template"]["metadata"]["labels"].items()]
        named = {p["name"]: p["containerPort"] for c in selected for p in c.get("ports", [])}
        for port in doc["spec"]["ports"]:
            target = named.get(port.get("targetPort"), port.get("targetPort", port["port"]))
            api, host = bound.get(target, ("nothing", ""))
            if target in closed or "management" in api:
                problems.append(f"{name}: port {port['name']} reaches management ({target})")
            elif api == "nothing" or is_loopback(host):
                problems.append(f"{name}: port {port['name']} reaches no listener on the pod's address ({target})")
    return problems


def test_kserve_config_keeps_management_inside_the_pod() -> None:
    props = kserve_config()
    bound = listeners(props)
    assert len(bound) == 5, "every API has a port of its own"
    assert {api: is_loopback(host) for api, host in bound.values()} == {
        "inference": False, "metrics": False, "management": True, "grpc_inference": True, "grpc_management": True}
    assert props["enable_model_api"] == "false"
    assert props["allowed_urls"] == ""
    assert "disable_token_authorization" not in props  # token auth is turned off by the pod, where it must be


def test_no_manifest_exposes_management() -> None:
    props = kserve_config()
    found = manifests()
    found.update({f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in documents(DEPLOY / "kserve" / "inferenceservice.yaml")})
    assert exposure_problems(found, props) == []


@pytest.mark.parametrize("change, problem", [
    (lambda svc, dep, env: svc["spec"]["ports"].append({"name": "mgmt", "port": 8081, "targetPort": 8086}),
     "port mgmt reaches management (8086)"),
    (lambda svc, dep, env: svc["spec"]["ports"].append({"name": "grpc", "port": 7070, "targetPort": 7070}),
     "port grpc reaches no listener on the pod's address (7070)"),
    (lambda svc, dep, env: dep["ports"].append({"name": "mgmt", "containerPort": 8086}), "declares management port 8086"),
    (lambda svc, dep, env: env.append({"name": "TS_MANAGEMENT_ADDRESS", "value": "http://0.0.0.0:8086"}),
     "TS_MANAGEMENT_ADDRESS overrides config.properties"),
    (lambda svc, dep, env: env.append({"name": "TS_ENABLE_MODEL_API", "value": "true"}),
     "TS_ENABLE_MODEL_API overrides config.properties"),
], ids=["service-to-management", "service-to-loopback-grpc", "container-port", "env-address", "env-model-api"])
def test_the_exposure_check_does_fail_on_a_regression(change: Callable[[dict, dict, list], object],
                                                       problem: str) -> None:
    found = json.loads(json.dumps(manifests()))
    container = found["Deployment/torchserve-perf"]["spec"]["template"]["spec"]["containers"][0]
    change(found["Service/torchserve-perf"], container, container.setdefault("env", []))
    assert any(problem in p for p in exposure_problems(found, kserve_config())), exposure_problems(found, kserve_config())


def admitted(policy: dict) -> dict[object, set[str]]:
    """port -> the namespaces a NetworkPolicy admits it from (matched by kubernetes.io/metadata.name)."""
    ports: dict[object, set[str]] = {}
    for rule in policy["spec"]["ingress"]:
        assert rule.get("ports") and rule.get("from"), f"a rule without ports or sources admits too much: {rule}"
        names: set[str] = set()
        for source in rule["from"]:
            assert set(source) == {"namespaceSelector"}, f"only whole namespaces, by name: {source}"
            (expression,) = source["namespaceSelector"]["matchExpressions"]
            assert expression["key"] == "kubernetes.io/metadata.name" and expression["operator"] == "In"
            names |= set(expression["values"])
        for port in rule["ports"]:
            ports.setdefault(port["port"], set()).update(names)
    return ports


def test_network_policy_admits_inference_and_metrics_only() -> None:
    found = manifests()
    policy, deployment = found["NetworkPolicy/torchserve-perf"], found["Deployment/torchserve-perf"]
    pod = deployment["spec"]["template"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ports = {p["name"]: p["containerPort"] for p in pod["spec"]["containers"][0]["ports"]}
    assert admitted(policy) == {"http": {"ingress-nginx"}, "metrics": {"monitoring"}}
    assert set(admitted(policy)) <= set(ports)  # named ports the container has
    # Prometheus scrapes the port the pods are annotated with, from the namespace the policy admits.
    assert int(pod["metadata"]["annotations"]["prometheus.io/port"]) == ports["metrics"]
    assert not {ports[name] for name in admitted(policy)} & management_ports(kserve_config())


def test_kserve_network_policy_matches_the_schema_and_the_runtimes_ports() -> None:
    (policy,) = documents(DEPLOY / "kserve" / "networkpolicy.yaml")
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    (isvc,) = documents(DEPLOY / "kserve" / "inferenceservice.yaml")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
    # KServe's model server (8080) from the ingress; TorchServe's metrics from Prometheus; nothing else.
    props = kserve_config()
    assert admitted(policy) == {8080: {"istio-system"}, 8082: {"monitoring"}}
    assert urlsplit(props["metrics_address"]).port == 8082
    assert urlsplit(props["inference_address"]).port not in admitted(policy)  # only via the model server
    assert not set(admitted(policy)) & management_ports(props)
    # The model server sends no key, so the pod turns token auth off (and only that).
    env = {e["name"]: e["value"] for e in isvc["spec"]["predictor"]["model"].get("env", [])}
    assert env == {"TS_DISABLE_TOKEN_AUTHORIZATION": "true"}


def test_the_validator_does_fail_on_a_bad_network_policy() -> None:
    policy = json.loads(json.dumps(manifests()["NetworkPolicy/torchserve-perf"]))
    policy["spec"]["ingress"][0]["from"][0]["namespaceSelecter"] = policy["spec"]["ingress"][0]["from"][0].pop(
        "namespaceSelector")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
