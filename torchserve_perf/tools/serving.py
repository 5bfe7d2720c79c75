"""Start, talk to and stop a real TorchServe on loopback, isolated from any other server.

Each server gets its own working directory, TMPDIR/TEMP (``torchserve --stop`` reads its pid
file from there), free ports and worker-port range, and reads its token from the
``key_file.json`` that TorchServe writes into its working directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import psutil
import requests

from torchserve_perf.tools import paths
from torchserve_perf.tools.loadgen.client import read_keys
from torchserve_perf.tools.loadgen.ports import free_port, free_ports

if TYPE_CHECKING:
    from torchserve_perf.tools.loadgen import HttpSender


TORCHSERVE = paths.console_script("torchserve")


def free_port_range(width: int = 32) -> int:
    """A base port with ``width`` free ports after it (worker sockets are numbered from it)."""
    for _ in range(200):
        base = free_port()
        if base + width >= 65535:
            continue
        try:
            holders = []
            for port in range(base, base + width):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                holders.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in holders:
                s.close()
    raise RuntimeError("no free port range on loopback")


@dataclass
class TorchServe:
    """A running TorchServe. Use :func:`start` to make one and :meth:`stop` (or ``with``) to end it."""

    workdir: Path
    model_store: Path
    inference_url: str
    management_url: str
    metrics_url: str
    process: subprocess.Popen
    env: dict
    token: dict = field(default_factory=dict)
    grpc_inference_address: str = ""  # HOST:PORT of the gRPC inference services (Predictions; ModelInfer with OIP on)
    session: requests.Session = field(default_factory=requests.Session)

    # ---- requests ---------------------------------------------------------------------------
    def key(self, api: str = "inference") -> Optional[str]:
        """The key this server made for ``api`` (inference or management); None without token auth."""
        return self.token.get(api, {}).get("key")

    def _headers(self, api: str, extra: Optional[Mapping[str, str]] = None) -> dict:
        headers = dict(extra or {})
        key = self.key(api)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def predict(self, model: str, body: Any = None, *, json_body: Any = None, headers: Optional[Mapping[str, str]] = None,
                timeout: float = 60) -> requests.Response:
        return self.session.post(f"{self.inference_url}/predictions/{model}", data=body, json=json_body,
                                 headers=self._headers("inference", headers), timeout=timeout)

    def sender(self, model: str, body: bytes, content_type: str = "application/octet-stream",
               timeout: float = 120.0) -> HttpSender:
        """A ``send()`` for load generators: POSTs ``body`` to the model over keep-alive connections."""
        from torchserve_perf.tools.loadgen import HttpSender, Payload

        return HttpSender(f"{self.inference_url}/predictions/{model}", [Payload(body, content_type, model)],
                          token=self.key(), timeout=timeout)

    def manage(self, method: str, path: str, timeout: float = 300, **params: Any) -> requests.Response:
        return self.session.request(method, f"{self.management_url}/{path.lstrip('/')}", params=params or None,
                                    headers=self._headers("management"), timeout=timeout)

    def scrape(self) -> str:
        return self.session.get(f"{self.metrics_url}/metrics", timeout=30).text

    def ping(self) -> bool:
        try:
            return self.session.get(f"{self.inference_url}/ping", headers=self._headers("inference"), timeout=5).ok
        except requests.RequestException:
            return False

    def wait_ready(self, models: Sequence[str], timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"torchserve exited with {self.process.returncode}; see {self.log_path()}")
            if not self.token:
                self._read_token()
            if self.token and self.ping() and all(self.workers_ready(m) for m in models):
                return
            time.sleep(0.5)
        raise TimeoutError(f"TorchServe not ready within {timeout:.0f}s; see {self.log_path()}\n{self.log_tail()}")

    def workers_ready(self, model: str) -> bool:
        try:
            response = self.manage("GET", f"models/{model}", timeout=10)
        except requests.RequestException:
            return False
        if not response.ok:
            return False
        workers = response.json()[0].get("workers", [])
        return bool(workers) and all(w.get("status") == "READY" for w in workers)

    def _read_token(self) -> None:
        path = self.workdir / "key_file.json"
        if path.is_file():
            try:
                self.token = read_keys(path)
            except json.JSONDecodeError:
                pass  # still being written

    # ---- logs -------------------------------------------------------------------------------
    def log_path(self) -> Path:
        return self.workdir / "logs"

    def log_tail(self, name: str = "model_log.log", lines: int = 40) -> str:
        path = self.workdir / "logs" / name
        if not path.is_file():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def read_log(self, name: str = "model_log.log") -> str:
        path = self.workdir / "logs" / name
        return path.read_text(errors="replace") if path.is_file() else ""

    # ---- stop -------------------------------------------------------------------------------
    def processes(self) -> list[psutil.Process]:
        """This server's Java frontend and Python workers, and nothing else's."""
        found = []
        for proc in psutil.process_iter(["pid", "environ"]):
            try:
                if (proc.info.get("environ") or {}).get("TS_PERF_SERVER_ID") == self.env["TS_PERF_SERVER_ID"]:
                    found.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return found

    def stop(self, timeout: float = 60) -> None:
        subprocess.run([TORCHSERVE, "--stop"], cwd=self.workdir, env=self.env, capture_output=True,  # noqa: S603
                       timeout=timeout)  # our installed torchserve script, an argument list, no shell
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.processes():
            time.sleep(0.3)
        for proc in self.processes():  # anything that ignored --stop
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(self.processes(), timeout=10)
        self.session.close()

    def __enter__(self) -> TorchServe:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start(model_store: Path, workdir: Path, *, models: Sequence[str] = ("all",), ready_models: Sequence[str] = (),
          properties: Optional[Mapping[str, Any]] = None, env: Optional[Mapping[str, str]] = None,
          metrics_config: Optional[Path] = None, timeout: float = 240) -> TorchServe:
    """Start TorchServe with ``model_store`` on free loopback ports, working in ``workdir``."""
    workdir = Path(workdir).resolve()
    tmp = workdir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    names = ("inference", "management", "metrics", "grpc_inference", "grpc_management")
    ports = dict(zip(names, free_ports(len(names))))
    props = {
        "inference_address": f"http://127.0.0.1:{ports['inference']}",
        "management_address": f"http://127.0.0.1:{ports['management']}",
        "metrics_address": f"http://127.0.0.1:{ports['metrics']}",
        "grpc_inference_port": ports["grpc_inference"],
        "grpc_management_port": ports["grpc_management"],
        "initial_worker_port": free_port_range(),
        "metrics_mode": "prometheus",
        "model_store": str(Path(model_store).resolve()),
        "install_py_dep_per_model": "false",
        "disable_system_metrics": "true",
    }
    if metrics_config is None:
        metrics_config = Path(model_store) / "metrics.yaml"
    if Path(metrics_config).is_file():
        props["metrics_config"] = str(Path(metrics_config).resolve())
    props.update(properties or {})
    config = workdir / "config.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    server_id = f"{os.getpid()}-{workdir.name}-{time.monotonic_ns()}"
    full_env = {**os.environ, **(env or {}), "TMPDIR": str(tmp), "TEMP": str(tmp), "TMP": str(tmp),
                "LOG_LOCATION": str(workdir / "logs"), "METRICS_LOCATION": str(workdir / "logs"),
                "TS_PERF_SERVER_ID": server_id}
    full_env.pop("TS_CONFIG_FILE", None)
    command = [TORCHSERVE, "--start", "--foreground", "--ncs", "--model-store", str(props["model_store"]),
               "--ts-config", str(config)]
    if models:
        command += ["--models", *models]
    with open(workdir / "torchserve.out", "ab") as out:
        # Our installed torchserve script with an argument list (no shell); model names are the caller's.
        process = subprocess.Popen(command, cwd=workdir, env=full_env, stdout=out,  # noqa: S603
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = TorchServe(
        workdir=workdir,
        model_store=Path(model_store),
        inference_url=str(props["inference_address"]),
        management_url=str(props["management_address"]),
        metrics_url=str(props["metrics_address"]),
        process=process,
        env=full_env,
        grpc_inference_address=f"127.0.0.1:{props['grpc_inference_port']}",
    )
    try:
        server.wait_ready(ready_models, timeout=timeout)
    except BaseException:
        server.stop()
        raise
    return server


def copy_archives(names: Sequence[str], source: Path, target: Path) -> Path:
    """A private model store holding copies of some archives (TorchServe may unpack into it)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(Path(source) / name, target / name)
    for extra in ("metrics.yaml",):
        if (Path(source) / extra).is_file():
            shutil.copy2(Path(source) / extra, target / extra)
    return target
