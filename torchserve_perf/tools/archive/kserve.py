"""The KServe layout: ``model-store/NAME.mar`` and ``config/config.properties`` under one export path,
what KServe's TorchServe runtime mounts from its storage URI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping

from torchserve_perf.tools import paths
from torchserve_perf.tools.archive.plan import ArchivePlan

# Where KServe's TorchServe runtime mounts the storage URI's content.
KSERVE_MOUNT = "/mnt/models"

# Addresses inside the pod. KServe's model server runs in the same container on 8080 (REST) and
# 8081 (gRPC) and reads TorchServe's inference and management addresses from this file; older
# model servers always call inference on 8085, and the runtime tells Prometheus to scrape 8082.
INFERENCE_ADDRESS = "http://0.0.0.0:8085"  # the Service, and KServe's model server
METRICS_ADDRESS = "http://0.0.0.0:8082"  # Prometheus scrapes each pod on its own address
# Management unregisters models, scales their workers and shows their configuration: loopback only,
# so that only processes inside the pod (KServe's model server asking whether workers are ready, or
# `kubectl port-forward`) can reach it. 8081 is taken by KServe's model server.
MANAGEMENT_ADDRESS = "http://127.0.0.1:8086"
GRPC_ADDRESS = "127.0.0.1"  # TorchServe's default for both gRPC APIs, written out so it can be checked


def kserve_properties(models: Mapping[str, Mapping[str, Any]], mount: str = KSERVE_MOUNT) -> str:
    """config/config.properties for KServe's TorchServe runtime, serving ``models`` (name -> model-config)."""
    snapshot = {"name": "startup.cfg", "modelCount": len(models), "models": {
        name: {"1.0": {"defaultVersion": True, "marName": f"{name}.mar",
                       "minWorkers": cfg.get("minWorkers", 1), "maxWorkers": cfg.get("maxWorkers", 1),
                       "batchSize": cfg.get("batchSize", 1), "maxBatchDelay": cfg.get("maxBatchDelay", 10),
                       "responseTimeout": cfg.get("responseTimeout", 120)}}
        for name, cfg in sorted(models.items())}}
    props = {
        "inference_address": INFERENCE_ADDRESS,
        "management_address": MANAGEMENT_ADDRESS,
        "metrics_address": METRICS_ADDRESS,
        "grpc_inference_address": GRPC_ADDRESS,
        "grpc_inference_port": "7070",
        "grpc_management_address": GRPC_ADDRESS,
        "grpc_management_port": "7071",
        # The models come from model_snapshot: nothing is registered at run time, from any URL
        # (an empty allowed_urls matches none; archives in the model store still load).
        "enable_model_api": "false",
        "allowed_urls": "",
        "enable_metrics_api": "true",
        "metrics_mode": "prometheus",
        "metrics_config": f"{mount}/config/metrics.yaml",  # our metrics are dropped unless declared
        "enable_envvars_config": "true",  # KServe's runtime sets TS_SERVICE_ENVELOPE for v2
        # The Open Inference Protocol's health (/v2/health/live, /v2/health/ready), server metadata (/v2)
        # and gRPC service (ModelInfer, ModelReady, ...; docs/transports.md): off unless asked for.
        "ts_open_inference_protocol": "true",
        "install_py_dep_per_model": "false",
        "model_store": f"{mount}/model-store",
        "model_snapshot": json.dumps(snapshot, separators=(",", ":")),
    }
    return "# Written by torchserve-perf archive --layout kserve\n" + "".join(f"{k}={v}\n" for k, v in props.items())


def write_kserve_config(plan: ArchivePlan) -> Path:
    """config/config.properties listing every model archived into this layout so far, plus metrics.yaml."""
    config_dir = plan.export_path / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "config.properties"
    models: dict[str, Mapping[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.startswith("model_snapshot="):
                for name, versions in json.loads(line.split("=", 1)[1]).get("models", {}).items():
                    models[name] = next(iter(versions.values()))
    models[plan.name] = plan.model_config
    path.write_text(kserve_properties(models))
    shutil.copy2(paths.metrics_yaml(), config_dir / "metrics.yaml")
    return path
