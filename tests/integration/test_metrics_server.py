"""Per-worker metrics on a real TorchServe: Prometheus mode (2 workers), log mode, and the shipped dashboard."""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, png_bytes
from torchserve_perf.plugins.metrics import catalog, declarations
from torchserve_perf.tools import serving

MODEL = "resnet18"  # 2 workers, batch size 4 in the demo archives
DASHBOARD = REPO / "deploy" / "grafana" / "torchserve-perf.json"
SCRAPE_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
TORCHSERVE_BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1.0", "2.5", "5.0",
                      "7.5", "10.0", "+Inf"]


class Scrape:
    """One /metrics page, parsed with prometheus_client's text parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {family.name: family for family in text_string_to_metric_families(text)}
        self.samples = [sample for family in self.families.values() for sample in family.samples]

    def names(self) -> set[str]:
        """Sample names as exposed, which Prometheus stores as they are (the parser adds _total to counters)."""
        return set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", self.text, flags=re.M))

    def per_worker(self, sample_name: str, model: str = MODEL, **labels: str) -> dict[str, float]:
        found: dict[str, float] = defaultdict(float)
        for sample in self.samples:
            if sample.name == sample_name and sample.labels.get("ModelName") == model and \
                    all(sample.labels.get(k) == v for k, v in labels.items()):
                found[sample.labels["WorkerName"]] += sample.value
        return dict(found)

    def total(self, sample_name: str, model: str = MODEL) -> float:
        return sum(self.per_worker(sample_name, model).values())


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {worker: value - before.get(worker, 0.0) for worker, value in after.items()}


def wait_for(server: serving.TorchServe, done: Callable[[Scrape], bool], timeout: float = 20) -> Scrape:
    # Metrics lines travel on the worker's stdout, apart from the response: give the frontend a moment.
    deadline = time.monotonic() + timeout
    while True:
        scrape = Scrape(server.scrape())
        if done(scrape) or time.monotonic() > deadline:
            return scrape
        time.sleep(0.3)


def test_two_workers_report_histograms_that_count_the_requests_sent(served):
    before = Scrape(served.scrape())
    image, sent_ok, sent_bad = png_bytes(), 32, 3
    with ThreadPoolExecutor(8) as pool:  # enough at once that both workers take batches
        codes = list(pool.map(lambda _: served.predict(MODEL, image).status_code, range(sent_ok)))
    codes += [served.predict(MODEL, b"not an image").status_code for _ in range(sent_bad)]
    assert codes.count(200) == sent_ok and codes.count(400) == sent_bad
    sent = sent_ok + sent_bad

    size_sum = "ts_perf_batch_size_sum"
    after = wait_for(served, lambda s: s.total(size_sum) - before.total(size_sum) >= sent)

    # Two distinct workers, named as TorchServe names them in its own WorkerLoadTime.
    handled = delta(after.per_worker("ts_perf_handler_seconds_count"), before.per_worker("ts_perf_handler_seconds_count"))
    busy = {worker for worker, count in handled.items() if count > 0}
    assert len(busy) == 2, handled
    load_time_workers = {s.labels["WorkerName"] for s in after.samples
                         if s.name == "WorkerLoadTime" and s.labels["WorkerName"].endswith(f"-{MODEL}_1.0")}
    assert busy == load_time_workers

    # Histogram counts match what was sent: batch sizes add up to the requests, one handler/phase sample per batch.
    requests_per_worker = delta(after.per_worker(size_sum), before.per_worker(size_sum))
    assert sum(requests_per_worker.values()) == sent
    batches = delta(after.per_worker("ts_perf_batch_size_count"), before.per_worker("ts_perf_batch_size_count"))
    assert batches == handled
    assert sent / 4 <= sum(batches.values()) <= sent  # batch size 4 in the archive
    assert delta(after.per_worker("ts_perf_preprocess_seconds_count"),
                 before.per_worker("ts_perf_preprocess_seconds_count")) == handled
    inference = delta(after.per_worker("ts_perf_inference_seconds_count"),
                      before.per_worker("ts_perf_inference_seconds_count"))
    assert inference == delta(after.per_worker("ts_perf_postprocess_seconds_count"),
                              before.per_worker("ts_perf_postprocess_seconds_count"))
    assert sum(inference.values()) >= sum(batches.values()) - sent_bad  # a batch of only bad requests skips the model
    assert after.total("ts_perf_rejected_requests_total") - before.total("ts_perf_rejected_requests_total") == sent_bad
    ts_requests = [s.value for s in after.samples if s.name == "ts_inference_requests_total"
                   and s.labels.get("model_name") == MODEL]
    assert ts_requests and ts_requests[0] >= sent  # TorchServe's own count agrees (earlier tests may add to it)

    # Real histograms in seconds, with TorchServe's fixed buckets; +Inf equals the count.
    for worker in busy:
        buckets = [s for s in after.samples if s.name == "ts_perf_handler_seconds_bucket"
                   and s.labels["WorkerName"] == worker]
        assert [s.labels["le"] for s in buckets] == TORCHSERVE_BUCKETS
        assert buckets[-1].value == after.per_worker("ts_perf_handler_seconds_count")[worker]
        mean = after.per_worker("ts_perf_handler_seconds_sum")[worker] / buckets[-1].value
        assert 0.0001 < mean < 10

    # Sampled gauges, per worker.
    for name, low in (("ts_perf_resident_memory_bytes", 50e6), ("ts_perf_intra_op_threads", 1),
                      ("ts_perf_inter_op_threads", 1), ("ts_perf_pinned_cores", 1), ("ts_perf_cpu_percent", 0)):
        values = after.per_worker(name)
        assert set(values) == busy, name
        assert all(value >= low for value in values.values()), (name, values)
    assert set(after.per_worker("ts_perf_optimization_applied")) == busy
    assert set(after.per_worker("ts_perf_load_seconds")) == busy


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [variable["query"]["query"] for variable in dashboard["templating"]["list"]
              if isinstance(variable.get("query"), dict)]
    return exprs


def queried_metrics(expr: str) -> set[str]:
    # Every selector in our dashboard carries a label matcher: metric{...}.
    names = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr))
    assert set(re.findall(r"ts_perf_\w+", expr)) <= names, f"a ts_perf_ metric without a selector in: {expr}"
    return names


def test_dashboard_and_scrape_config_match_a_real_scrape(served, model_store):
    assert served.predict(MODEL, png_bytes()).status_code == 200
    scrape = wait_for(served, lambda s: "ts_perf_handler_seconds_count" in s.names())
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    queried: set[str] = set()
    for expr in dashboard_queries():
        names = queried_metrics(expr)
        assert names, f"no metric in {expr!r}"
        queried |= names
    # Every ts_perf_ family of the catalog is on the dashboard.
    families = {name.rsplit("_bucket", 1)[0].rsplit("_count", 1)[0].rsplit("_sum", 1)[0] for name in queried}
    assert {spec.name for spec in catalog.ALL} <= families | queried
    declared = declarations.declared(declarations.read(REPO / "torchserve_perf" / "plugins" / "metrics" / "metrics.yaml"))
    import torch

    gpu_here = torch.cuda.is_available()
    missing = []
    for name in sorted(queried):
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        if base in catalog.GPU_ONLY and not gpu_here:
            assert declared[base][0] == "gauge"  # declared, and on the endpoint wherever NVML sees a GPU
            continue
        if base in catalog.GATED_ONLY:
            assert declared[base][0] == "gauge"  # declared, and on the endpoint where an accuracy gate ran
            continue
        if name not in scrape.names():
            missing.append(name)
    assert not missing, f"the dashboard queries metrics the server does not expose: {missing}"

    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    job = config["scrape_configs"][0]
    assert job["metrics_path"] == "/metrics"
    target = job["static_configs"][0]["targets"][0]
    properties = dict(line.split("=", 1) for line in (model_store / "config.properties").read_text().splitlines()
                      if "=" in line and not line.startswith("#"))
    assert properties["metrics_address"].endswith(target)
    assert properties["metrics_mode"] == "prometheus"
    assert Path(properties["metrics_config"]).name == "metrics.yaml"


LOG_LINE = re.compile(r" - (?P<name>ts_perf_\w+)\.(?P<unit>\w+):(?P<value>[0-9.E\-]+)\|#(?P<dims>[^|]*)\|#hostname:")


def test_log_mode_writes_per_worker_metrics_to_model_metrics_log(model_store, torchserve_factory, tmp_path):
    store = serving.copy_archives(["text_classifier.mar"], model_store, tmp_path / "store")
    server = torchserve_factory(store, models=["text_classifier=text_classifier.mar"], ready_models=["text_classifier"],
                                properties={"metrics_mode": "log"})
    sent = 4
    for _ in range(sent):
        assert server.predict("text_classifier", b"Is the order on its way?").status_code == 200

    def lines() -> list[dict]:
        found = []
        for match in LOG_LINE.finditer(server.read_log("model_metrics.log")):
            dims = dict(pair.split(":", 1) for pair in match["dims"].split(","))
            found.append({"name": match["name"], "value": float(match["value"]), "dims": dims})
        return found

    deadline = time.monotonic() + 20
    while sum(line["value"] for line in lines() if line["name"] == "ts_perf_batch_size") < sent and time.monotonic() < deadline:
        time.sleep(0.3)
    logged = lines()
    assert sum(line["value"] for line in logged if line["name"] == "ts_perf_batch_size") == sent
    handler = [line for line in logged if line["name"] == "ts_perf_handler_seconds"]
    assert 1 <= len(handler) <= sent and all(0 < line["value"] < 10 for line in handler)
    workers = {line["dims"]["WorkerName"] for line in logged}
    assert len(workers) == 1 and re.fullmatch(r"W-\d+-text_classifier_1\.0", workers.pop())
    assert all(line["dims"]["ModelName"] == "text_classifier" and line["dims"]["Level"] == "Model" for line in logged)
    names = {line["name"] for line in logged}
    assert {"ts_perf_resident_memory_bytes", "ts_perf_pinned_cores", "ts_perf_load_seconds"} <= names
    assert "ts_perf_" not in server.scrape()  # log mode: nothing on the Prometheus endpoint
