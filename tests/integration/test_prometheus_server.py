"""A real Prometheus (Debian's package) scraping a real TorchServe: every query of the Grafana dashboard, of
the Prometheus adapter's autoscaling rules and of the KServe autoscaling metric returns data through
Prometheus's HTTP API."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import pytest
import requests
import yaml

from tests.conftest import REPO, png_bytes
from torchserve_perf.plugins.metrics import catalog
from torchserve_perf.tools import serving

DASHBOARD = REPO / "deploy" / "grafana" / "torchserve-perf.json"
ADAPTER = REPO / "deploy" / "k8s" / "prometheus-adapter.yaml"
HPA = REPO / "deploy" / "k8s" / "hpa.yaml"
ISVC = REPO / "deploy" / "kserve" / "inferenceservice.yaml"
# What the cluster's scrape config (deploy/prometheus/kubernetes.yml) adds to every series.
POD_LABELS = {"namespace": "serving", "pod": "torchserve-perf-0"}
MODEL = "text_classifier"
# Grafana's interval variables, for a 1 s scrape interval.
GRAFANA_INTERVALS = {"$__rate_interval": "10s", "$__range": "1m"}


class Prometheus:
    """A Prometheus server on a free loopback port with its own config and data directory."""

    def __init__(self, workdir: Path, targets: list[str]) -> None:
        binary = shutil.which("prometheus")
        if not binary:
            pytest.fail("prometheus is missing: run scripts/ensure_prometheus.sh (make venv does)")
        workdir.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "torchserve", "metrics_path": "/metrics",
                                "static_configs": [{"targets": targets, "labels": POD_LABELS}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{serving.free_port()}"
        self.log = open(workdir / "prometheus.log", "wb")
        self.process = subprocess.Popen(
            [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address={urlparse(self.url).netloc}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.workdir = workdir
        deadline = time.monotonic() + 30
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Prometheus did not start:\n{(workdir / 'prometheus.log').read_text()}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/-/ready", timeout=2).ok
        except requests.RequestException:
            return False

    def query(self, expr: str) -> list[dict]:
        response = requests.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert response.ok and body["status"] == "success", f"{expr}\n{body}"
        return body["data"]["result"]

    def series(self, selector: str) -> list[dict]:
        response = requests.get(f"{self.url}/api/v1/series", params={"match[]": selector}, timeout=10)
        assert response.ok, response.text
        return response.json()["data"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def prometheus(kserve_served: serving.TorchServe, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    server = Prometheus(tmp_path_factory.mktemp("prometheus"), [urlparse(kserve_served.metrics_url).netloc])
    yield server
    server.stop()
    assert server.process.poll() is not None, "Prometheus still running"


@pytest.fixture(scope="module")
def traffic(kserve_served: serving.TorchServe) -> Iterator[dict]:
    """Requests to both models from three senders in the background while the queries run (bounded in
    count and time), so batches fill and every rate window holds requests."""
    stop, sent, lock = threading.Event(), {"ok": 0, "failed": 0}, threading.Lock()
    image = png_bytes()

    def send(model: str, body: bytes) -> None:
        deadline = time.monotonic() + 90
        for _ in range(1000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                ok = kserve_served.predict(model, body, timeout=30).status_code == 200
            except requests.RequestException:
                ok = False
            with lock:
                sent["ok" if ok else "failed"] += 1
            time.sleep(0.05)

    threads = [threading.Thread(target=send, args=args, daemon=True)
               for args in ((MODEL, b"Where is my parcel?"), (MODEL, b"Thanks, it works."), ("resnet18", image))]
    for thread in threads:
        thread.start()
    yield sent
    stop.set()
    for thread in threads:
        thread.join(timeout=60)


def wait_for_data(prometheus: Prometheus, expr: str, timeout: float = 40, positive: bool = False) -> list[dict]:
    """The query's result once it has a finite (or positive) value: the first scrapes and rate windows
    need a moment."""
    deadline = time.monotonic() + timeout
    while True:
        result = prometheus.query(expr)
        numbers = [float(r["value"][1]) for r in result]
        if any(math.isfinite(v) and (v > 0 or not positive) for v in numbers) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def label_values(prometheus: Prometheus, query: str) -> list[str]:
    """Grafana's label_values(selector, label), which is not PromQL, through the series API."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
    assert match, query
    return sorted({s[match.group(2)] for s in prometheus.series(match.group(1)) if match.group(2) in s})


def test_every_dashboard_query_returns_data_from_a_real_prometheus(prometheus, traffic):
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)}

    # The variables first, as Grafana resolves them: model, then worker (which depends on model).
    deadline = time.monotonic() + 40
    while MODEL not in label_values(prometheus, variables["model"]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert MODEL in label_values(prometheus, variables["model"])
    workers = label_values(prometheus, variables["worker"].replace("$model", MODEL))
    assert len(workers) == 1 and workers[0].endswith(f"-{MODEL}_1.0"), workers
    values = {"$model": MODEL, "$worker": workers[0], **GRAFANA_INTERVALS}

    gpu_only, gated_only, empty = [], [], []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for name, value in values.items():
                expr = expr.replace(name, value)
            assert "$" not in expr, f"a variable left in {expr}"
            if set(re.findall(r"ts_perf_\w+", expr)) & catalog.GPU_ONLY:
                gpu_only.append(panel["title"])  # no GPU here: NVML reports nothing to sample
                continue
            if set(re.findall(r"ts_perf_\w+", expr)) & catalog.GATED_ONLY:
                gated_only.append(panel["title"])  # no archive here carries samples for a lossy path
                continue
            if not wait_for_data(prometheus, expr):
                empty.append(f"{panel['title']}: {expr}")
    assert not empty, "dashboard queries with no data:\n" + "\n".join(empty)
    assert set(gpu_only) == {"GPU utilisation", "GPU memory"}
    assert set(gated_only) == {"Accuracy gate: agreement with fp32"}
    assert traffic["ok"] > 0 and traffic["failed"] == 0, traffic


def adapter_query(rule: dict, matchers: dict[str, str]) -> str:
    """The query the Prometheus adapter runs for one pod, from the rule's template."""
    series = rule["seriesQuery"].split("{")[0]
    label_matchers = ",".join(f'{k}="{v}"' for k, v in matchers.items())
    return (rule["metricsQuery"].replace("<<.Series>>", series).replace("<<.LabelMatchers>>", label_matchers)
            .replace("<<.GroupBy>>", "pod"))


def test_autoscaling_rules_return_a_value_per_pod(prometheus, traffic):
    rules = {r["name"]["as"]: r for r in yaml.safe_load(
        next(d for d in yaml.safe_load_all(ADAPTER.read_text()) if d)["data"]["config.yaml"])["rules"]}
    hpa = next(d for d in yaml.safe_load_all(HPA.read_text()) if d)
    for metric in hpa["spec"]["metrics"]:
        name, selector = metric["pods"]["metric"]["name"], metric["pods"]["metric"]["selector"]["matchLabels"]
        # The HPA asks for its pods; its selector's labels are added to the rule's matchers.
        expr = adapter_query(rules[name], {**POD_LABELS, **selector})
        result = wait_for_data(prometheus, expr, positive=True)  # both signals are above 0 under load
        assert [r["metric"] for r in result] == [{"pod": POD_LABELS["pod"]}], (name, expr, result)
        value = float(result[0]["value"][1])
        assert math.isfinite(value) and value >= 0, (name, value)
        if name == "torchserve_worker_busy_ratio":
            assert 0 < value <= 1.05, value  # a share of wall time, per worker

    isvc = next(d for d in yaml.safe_load_all(ISVC.read_text()) if d)
    for metric in isvc["spec"]["predictor"]["autoScaling"]["metrics"]:
        expr = metric["podmetric"]["metric"]["query"]
        result = wait_for_data(prometheus, expr, positive=True)
        assert result and float(result[0]["value"][1]) > 0, (expr, result)
