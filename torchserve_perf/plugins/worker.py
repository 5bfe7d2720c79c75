"""Who this worker is: model, version, TorchServe's worker name, port, device and worker count.

TorchServe does not hand the worker its index. The frontend names each worker
``W-<port>-<model>_<version>`` and starts it with that port in its argv, read by
:func:`torchserve_perf.ts_compat.port_from_argv` (TorchServe internals live there).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from torchserve_perf.ts_compat import port_from_argv


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
                     environ: Optional[Mapping[str, str]] = None) -> WorkerIdentity:
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
            workers=configured_workers(getattr(context, "model_yaml_config", None) or {}, environ,
                                       gpus=_gpu_count() if gpu_id is not None else 0),
            pid=os.getpid(),
        )


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # no usable CUDA runtime
        return 0


def configured_workers(model_yaml_config: Mapping[str, Any], environ: Mapping[str, str], gpus: int = 0) -> int:
    """Workers TorchServe starts for this model, as its frontend decides it.

    model-config ``minWorkers``; else the server's default_workers_per_model when it reaches the
    worker as TS_DEFAULT_WORKERS_PER_MODEL; else, like the frontend, one per GPU or one per CPU
    this process may use. A default_workers_per_model set only in config.properties is invisible
    to the worker: set minWorkers (or handler.threads.workers) when you rely on it.
    """
    value = model_yaml_config.get("minWorkers")
    if value:
        return max(1, int(value))
    env_default = str(environ.get("TS_DEFAULT_WORKERS_PER_MODEL", "")).strip()
    if env_default.isdigit() and int(env_default) > 0:
        return int(env_default)
    if gpus > 0:
        return gpus
    return max(1, len(_allowed_cpus()))


def _allowed_cpus() -> Sequence[int]:
    # The JVM's availableProcessors() honours the affinity mask; so does this.
    try:
        return tuple(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return tuple(range(os.cpu_count() or 1))
