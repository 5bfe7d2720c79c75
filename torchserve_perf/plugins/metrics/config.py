"""The ``handler: metrics:`` section of model-config.yaml."""

from __future__ import annotations

from dataclasses import dataclass

from torchserve_perf.plugins.config import ConfigValueError

# Below this the sampler thread starts to show up next to a busy worker; gauges are for trends.
MIN_SAMPLE_INTERVAL_S = 0.5


@dataclass(frozen=True)
class MetricsConfig:
    """What a worker reports through TorchServe's metrics API.

    ``enabled``: every metric on or off (env ``TS_PERF_METRICS``).
    ``sample_interval_s``: seconds between two samples of the resource gauges (memory, CPU,
    threads, cores, GPU); 0 turns the sampler off. Latency histograms and counters are
    recorded per batch regardless.
    ``gpu``: sample GPU utilisation and memory through NVML when the worker has a GPU.
    """

    enabled: bool = True
    sample_interval_s: float = 5.0
    gpu: bool = True

    def __post_init__(self) -> None:
        interval = self.sample_interval_s
        if interval != interval or interval < 0:  # NaN or negative
            raise ConfigValueError("sample_interval_s", f"{interval!r} is not a duration",
                                   "give seconds between samples, or 0 to turn the sampler off")
        if 0 < interval < MIN_SAMPLE_INTERVAL_S:
            raise ConfigValueError("sample_interval_s", f"{interval} s is too often to sample resource gauges",
                                   f"use at least {MIN_SAMPLE_INTERVAL_S} s, or 0 to turn the sampler off")
