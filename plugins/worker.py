"""Who this worker is: model, version, TorchServe's worker name, port, device and worker count.

TorchServe does not hand the worker its index. The frontend names each worker
``W-<port>-<model>_<version>`` and starts it with that port in its argv
(``--sock-name .../.ts.sock.<port>`` for unix sockets, ``--port <port>`` for TCP).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

_SOCK_PORT = re.compile(r"\.ts\.sock\.(\d+)$")


def port_from_argv(argv: Sequence[str]) -> Optional[int]:
    """The worker's port, read from its command line; None outside a TorchServe worker."""
    for i, arg in enumerate(argv):
        value = None
        if arg in ("--sock-name", "--port") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(("--sock-name=", "--port=")):
            value = arg.split("=", 1)[1]
        if value is None:
            continue
        match = _SOCK_PORT.search(value)
        if match:
            return int(match.group(1))
        if value.isdigit():
            return int(value)
    return None


@dataclass(frozen=True)
class WorkerIdentity:
    model_name: str
    model_version: str
    port: Optional[int]
    gpu_id: Optional[int]
    workers: int
    pid: int

    @property
    def name(self) -> str:
        """TorchServe's own worker name, as in its WorkerLoadTime metric."""
        port = self.port if self.port is not None else f"pid{self.pid}"
        return f"W-{port}-{self.model_name}_{self.model_version}"

    @property
    def index(self) -> int:
        """A stable slot in ``range(workers)``; ports are handed out consecutively per model."""
        return (self.port or 0) % max(1, self.workers)

    @classmethod
    def from_context(cls, context: Any, argv: Optional[Sequence[str]] = None,
                     environ: Optional[Mapping[str, str]] = None) -> "WorkerIdentity":
        argv = sys.argv if argv is None else argv
        environ = os.environ if environ is None else environ
        manifest = getattr(context, "manifest", None) or {}
        version = str((manifest.get("model") or {}).get("modelVersion") or "1.0")
        gpu_id = context.system_properties.get("gpu_id")
        return cls(
            model_name=context.model_name,
            model_version=version,
            port=port_from_argv(argv),
            gpu_id=int(gpu_id) if gpu_id is not None else None,
            workers=configured_workers(getattr(context, "model_yaml_config", None) or {}, environ),
            pid=os.getpid(),
        )


def configured_workers(model_yaml_config: Mapping[str, Any], environ: Mapping[str, str]) -> int:
    """Workers TorchServe starts for this model: model-config minWorkers, else the server default."""
    value = model_yaml_config.get("minWorkers")
    if value:
        return max(1, int(value))
    # TorchServe's default_workers_per_model, if the server was started with it as env config.
    env_default = environ.get("TS_DEFAULT_WORKERS_PER_MODEL", "")
    if env_default.isdigit() and int(env_default) > 0:
        return int(env_default)
    return max(1, os.cpu_count() or 1)
