"""GPU utilisation and memory of one device through NVML (pynvml, from nvidia-ml-py).

Where there is no NVML (no driver, no GPU, pynvml missing) the probe says so once and reports
nothing; it never raises into the sampler.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any, Optional

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuSample:
    device_id: str
    utilization_percent: float
    memory_used_bytes: int
    memory_total_bytes: int


class NvmlProbe:
    """Samples the NVML device that backs torch's ``cuda:<gpu_id>``."""

    def __init__(self, gpu_id: int, nvml: Any = None) -> None:
        self.gpu_id = gpu_id
        self._nvml = nvml
        self._handle: Any = None
        self.unavailable: Optional[str] = None  # why there are no samples

    def _open(self) -> bool:
        if self._handle is not None:
            return True
        if self.unavailable is not None:
            return False
        try:
            nvml = self._nvml
            if nvml is None:
                nvml = importlib.import_module("pynvml")  # nvidia-ml-py: imported only where it is used
            nvml.nvmlInit()
            self._nvml = nvml
            self._handle = self._device_handle(nvml)
            return True
        except Exception as exc:  # ImportError, NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.unavailable = f"{type(exc).__name__}: {exc}"
            log.info("GPU gauges off for cuda:%s: NVML is not available (%s)", self.gpu_id, self.unavailable)
            return False

    def _device_handle(self, nvml: Any) -> Any:
        # NVML numbers every GPU of the machine; torch only the visible ones. Match by UUID when torch knows it.
        uuid = _torch_uuid(self.gpu_id)
        if uuid:
            try:
                return nvml.nvmlDeviceGetHandleByUUID(uuid)
            except Exception:
                log.debug("NVML does not know GPU %s; falling back to index %d", uuid, self.gpu_id)
        return nvml.nvmlDeviceGetHandleByIndex(self.gpu_id)

    def sample(self) -> Optional[GpuSample]:
        if not self._open():
            return None
        nvml = self._nvml
        utilization = nvml.nvmlDeviceGetUtilizationRates(self._handle)
        memory = nvml.nvmlDeviceGetMemoryInfo(self._handle)
        return GpuSample(device_id=str(self.gpu_id), utilization_percent=float(utilization.gpu),
                         memory_used_bytes=int(memory.used), memory_total_bytes=int(memory.total))

    def close(self) -> None:
        if self._handle is not None:
            self._handle = None
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # closing is best effort: the worker is going away either way
                log.debug("NVML shutdown failed", exc_info=True)


def _torch_uuid(gpu_id: int) -> Optional[str]:
    try:
        import torch

        uuid = getattr(torch.cuda.get_device_properties(gpu_id), "uuid", None)
    except Exception:
        return None
    if uuid is None:
        return None
    text = str(uuid)
    return text if text.startswith("GPU-") else f"GPU-{text}"
