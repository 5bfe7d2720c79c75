"""Writes catalog metrics through TorchServe's metrics API (``context.metrics``).

Each metric is looked up once with ``get_metric`` and then updated with ``add_or_update``, which
prints one ``[METRICS]`` line that the frontend parses: into Prometheus families in
``metrics_mode=prometheus``, into ``logs/model_metrics.log`` in ``metrics_mode=log``.
"""

from __future__ import annotations

import logging
from typing import Any

from torchserve_perf.plugins.metrics import catalog
from torchserve_perf.plugins.metrics.catalog import MetricSpec

log = logging.getLogger(__name__)


class Emitter:
    def __init__(self, cache: Any, worker_name: str, model_name: str) -> None:
        from ts.metrics.metric_type_enum import MetricTypes

        self._common = [label(worker_name), label(model_name), catalog.LEVEL]
        self._metrics: dict[str, Any] = {}
        self.undeclared: list[str] = []
        for spec in catalog.ALL:
            try:
                metric = cache.get_metric(spec.name, MetricTypes(spec.kind))
            except Exception:
                self.undeclared.append(spec.name)
                continue
            if list(metric.dimension_names or ()) != list(spec.dimensions):
                log.warning("metrics config declares %s with dimensions %s; we emit %s, so it is left out",
                            spec.name, metric.dimension_names, list(spec.dimensions))
                self.undeclared.append(spec.name)
                continue
            self._metrics[spec.name] = metric
        if self.undeclared:
            # TorchServe would drop these silently; say it once, at load, with the fix.
            log.warning("%d of our metrics are not declared in the metrics config this TorchServe runs with "
                        "(%s); they are left out. Fix: start TorchServe with metrics_config=%s or merge it into "
                        "yours (torchserve-perf metrics merge ...), see docs/metrics.md",
                        len(self.undeclared), ", ".join(self.undeclared[:4]) + ("..." if len(self.undeclared) > 4 else ""),
                        _shipped())

    @property
    def active(self) -> bool:
        return bool(self._metrics)

    def emit(self, spec: MetricSpec, value: float, *labels: str) -> None:
        metric = self._metrics.get(spec.name)
        if metric is not None:
            metric.add_or_update(value, [*labels, *self._common], "")


def label(value: Any) -> str:
    """A dimension value the frontend parses back intact."""
    # The frontend splits a metrics line's dimensions on ',' and ':', and the line itself on '|'.
    text = str(value)
    for char in ",:|":
        text = text.replace(char, "_")
    return text


def seconds(value: float) -> float:
    # Microsecond resolution is plenty, keeps the line short, and never prints 'e+' (unparseable).
    return round(max(0.0, float(value)), 6)


def _shipped() -> str:
    from torchserve_perf.plugins.metrics.declarations import SHIPPED

    return str(SHIPPED)
