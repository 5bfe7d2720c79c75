"""The KServe layout's config.properties on a real TorchServe, in a network namespace of its own (as a
pod is): management answers on the pod's loopback and nowhere else, while inference, metrics and the
Deployment's probes answer on the pod's address.

The server runs as ``deploy/k8s/torchserve.yaml`` runs it (its arguments, token auth off) with the
config that ``create_archive`` writes for ``--layout kserve``, unchanged but for the mount point. The
namespace gets a veth pair (the pod's address, 198.18.0.0/15, a range reserved for tests) so another
"pod" (this test process) can try every port. Without ``ip netns`` (needs root), the test skips.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import urlsplit

import psutil
import pytest
import requests
import torch
import yaml

from tests.conftest import REPO
from torchserve_perf.tools import serving
from torchserve_perf.tools.archive import ArchivePlan, ModelSource, create_archive
from torchserve_perf.tools.archive.kserve import KSERVE_MOUNT
from torchserve_perf.tools.model_store import find_spec, seeded_state_dict

MODEL = "text_classifier"  # the smallest demo model: one worker, loads in seconds
IP = shutil.which("ip")
_names = itertools.count()

# Run inside the namespace: one HTTP request with urllib (no proxies), the outcome as JSON.
REQUEST = """
import json, sys, urllib.error, urllib.request
method, url = sys.argv[1], sys.argv[2]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(urllib.request.Request(url, method=method), timeout=10) as r:
        print(json.dumps({"status": r.status, "body": r.read().decode(errors="replace")}))
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "body": e.read().decode(errors="replace")}))
except OSError as e:
    print(json.dumps({"error": type(getattr(e, "reason", e)).__name__}))
"""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    assert IP
    return subprocess.run([IP, *args], capture_output=True, text=True, timeout=30, check=check)


@dataclass(frozen=True)
class Pod:
    """A network namespace with loopback and one veth address, as a pod has."""

    netns: str
    address: str  # the pod's address, seen from the host (another pod)
    host_link: str

    def exec_prefix(self) -> list[str]:
        assert IP
        return [IP, "netns", "exec", self.netns]

    def request_inside(self, method: str, url: str) -> dict:
        """A request made by a process inside the pod."""
        done = subprocess.run([*self.exec_prefix(), sys.executable, "-c", REQUEST, method, url],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def _free_slash30() -> int:
    """A /30 of 198.18.0.0/15 with no address on this host yet."""
    taken = _ip("-4", "-o", "addr", "show").stdout
    for n in range(os.getpid() % 250, os.getpid() % 250 + 250):
        if f"198.18.{n % 250}." not in taken:
            return n % 250
    pytest.skip("no free /30 in 198.18.0.0/15 for the test namespace")


@pytest.fixture
def pod() -> Iterator[Pod]:
    if not IP or not sys.platform.startswith("linux"):
        pytest.skip("needs Linux and iproute2 (ip netns) for a pod-like network namespace")
    n = next(_names)
    netns, host_link, pod_link = f"tsperf-{os.getpid()}-{n}", f"tsp{os.getpid() % 100000}h{n}", f"tsp{os.getpid() % 100000}p{n}"
    made = _ip("netns", "add", netns, check=False)
    if made.returncode != 0:
        pytest.skip(f"ip netns add is not permitted here ({made.stderr.strip()}); it needs root or CAP_NET_ADMIN")
    try:
        subnet = _free_slash30()
        host_ip, pod_ip = f"198.18.{subnet}.1", f"198.18.{subnet}.2"
        _ip("link", "add", host_link, "type", "veth", "peer", "name", pod_link)
        _ip("link", "set", pod_link, "netns", netns)
        _ip("addr", "add", f"{host_ip}/30", "dev", host_link)
        _ip("link", "set", host_link, "up")
        for command in (("addr", "add", f"{pod_ip}/30", "dev", pod_link), ("link", "set", pod_link, "up"),
                        ("link", "set", "lo", "up")):
            _ip("netns", "exec", netns, IP, *command)
        yield Pod(netns, pod_ip, host_link)
    finally:
        for pid in _ip("netns", "pids", netns, check=False).stdout.split():  # only what ran in our namespace
            try:
                psutil.Process(int(pid)).kill()
            except psutil.NoSuchProcess:
                pass
        _ip("link", "del", host_link, check=False)
        _ip("netns", "del", netns, check=False)


@pytest.fixture
def kserve_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``--layout kserve`` for one model, through the archive tool's own path."""
    export = tmp_path_factory.mktemp("kserve_layout")
    spec = find_spec(MODEL)
    with tempfile.TemporaryDirectory(prefix="weights-") as tmp:
        weights = Path(tmp) / f"{MODEL}.pt"
        torch.save(seeded_state_dict(spec.make_model), weights)
        create_archive(ArchivePlan(name=MODEL, source=ModelSource("eager", weights, spec.model_file),
                                   handler=spec.handler, export_path=export, model_config=spec.model_config,
                                   labels={str(i): label for i, label in enumerate(spec.labels)}, layout="kserve"))
    return export


def deployment_container() -> dict:
    docs = [d for d in yaml.safe_load_all((REPO / "deploy" / "k8s" / "torchserve.yaml").read_text()) if d]
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]["containers"][0]


def properties(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))


def start_in_pod(pod: Pod, layout: Path, workdir: Path) -> serving.TorchServe:
    """TorchServe with the Deployment's arguments, the layout mounted where the config expects it."""
    config = layout / "config" / "config.properties"
    config.write_text(config.read_text().replace(KSERVE_MOUNT, str(layout)))  # what KServe's mount does
    container = deployment_container()
    args = [arg.replace(KSERVE_MOUNT, str(layout)) for arg in container["args"]]
    assert args[0] == "torchserve"
    tmp = workdir / "tmp"
    tmp.mkdir(parents=True)
    env = {**os.environ, **{e["name"]: e["value"] for e in container.get("env", [])},
           "TMPDIR": str(tmp), "TEMP": str(tmp), "TMP": str(tmp), "LOG_LOCATION": str(workdir / "logs"),
           "METRICS_LOCATION": str(workdir / "logs"), "TS_PERF_SERVER_ID": f"{os.getpid()}-{pod.netns}"}
    env.pop("TS_CONFIG_FILE", None)
    with open(workdir / "torchserve.out", "ab") as out:
        process = subprocess.Popen([*pod.exec_prefix(), serving.TORCHSERVE, *args[1:]], cwd=workdir, env=env,
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    props = properties(config)
    return serving.TorchServe(workdir=workdir, model_store=layout / "model-store",
                              inference_url=props["inference_address"], management_url=props["management_address"],
                              metrics_url=props["metrics_address"], process=process, env=env)


def wait_ready(pod: Pod, server: serving.TorchServe, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"torchserve exited with {server.process.returncode}; see {server.log_path()}")
        answer = pod.request_inside("GET", f"{server.management_url}/models/{MODEL}")
        if answer.get("status") == 200:
            workers = json.loads(answer["body"])[0]["workers"]
            if workers and all(w["status"] == "READY" for w in workers):
                return answer
        time.sleep(0.5)
    raise TimeoutError(f"{MODEL} not ready within {timeout:.0f}s\n{server.log_tail('ts_log.log')}")


def on(address: str, url: str) -> str:
    """``url`` with its host replaced by ``address`` (the same port)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{address}:{parts.port}"


def connect(address: str, port: int) -> Optional[str]:
    """None when a TCP connection opens, else the error's name (ConnectionRefusedError, ...)."""
    try:
        with socket.create_connection((address, port), timeout=5):
            return None
    except OSError as exc:
        return type(exc).__name__


def test_management_answers_on_the_pods_loopback_only(pod: Pod, kserve_layout: Path, tmp_path: Path) -> None:
    props = properties(kserve_layout / "config" / "config.properties")
    management = urlsplit(props["management_address"])
    assert management.hostname == "127.0.0.1"
    server = start_in_pod(pod, kserve_layout, tmp_path)
    try:
        # Inside the pod, on loopback: management answers (KServe's model server asks it this way).
        assert wait_ready(pod, server)["status"] == 200
        # ... but not on the pod's own address, even from inside the pod, nor on another loopback address.
        for address in (pod.address, "127.0.0.2"):
            assert pod.request_inside("GET", f"{on(address, server.management_url)}/models") == \
                {"error": "ConnectionRefusedError"}, address
        # Nothing can be registered or unregistered, even on loopback: the model API is off.
        refused = pod.request_inside("POST", f"{server.management_url}/models?url=file:///{MODEL}.mar")
        assert refused["status"] == 405, refused
        assert pod.request_inside("DELETE", f"{server.management_url}/models/{MODEL}")["status"] == 405

        # From another pod (this process, outside the namespace): management and gRPC are refused ...
        assert connect(pod.address, management.port or 0) == "ConnectionRefusedError"
        for key in ("grpc_inference_port", "grpc_management_port"):
            assert connect(pod.address, int(props[key])) == "ConnectionRefusedError", key
        # ... while inference, metrics and the Deployment's probes answer on the same address, without a key.
        session = requests.Session()
        session.trust_env = False  # no proxy between two local namespaces
        inference, metrics = on(pod.address, server.inference_url), on(pod.address, server.metrics_url)
        answer = session.post(f"{inference}/predictions/{MODEL}", data="Where is my parcel?", timeout=60)
        assert answer.status_code == 200 and answer.json(), answer.text
        assert "ts_inference_requests_total" in session.get(f"{metrics}/metrics", timeout=30).text
        container = deployment_container()
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("readinessProbe", "startupProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            port = ports.get(get["port"], get["port"])
            assert port != management.port
            assert session.get(f"http://{pod.address}:{port}{get['path']}", timeout=10).status_code == 200, probe
        session.close()
    finally:
        server.stop()
    assert not server.processes(), "TorchServe processes left running"
    log = server.read_log("ts_log.log")
    assert f"Management API bind to: {props['management_address']}" in log
    assert "Model API enabled: false" in log
