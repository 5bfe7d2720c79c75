"""Per-worker metrics through TorchServe's metrics API, for Prometheus and Grafana.

The base handler builds one :class:`WorkerMetrics` per worker from ``handler: metrics:``
(:class:`MetricsConfig`) and ``context.metrics``. Every metric is declared in the shipped
``metrics.yaml`` (see :mod:`torchserve_perf.plugins.metrics.catalog`), which TorchServe must be started with.
"""

from torchserve_perf.plugins.metrics.config import MetricsConfig
from torchserve_perf.plugins.metrics.declarations import SHIPPED as METRICS_YAML
from torchserve_perf.plugins.metrics.worker_metrics import WorkerMetrics

__all__ = ["MetricsConfig", "WorkerMetrics", "METRICS_YAML"]
