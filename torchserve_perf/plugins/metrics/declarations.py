"""The metrics YAML that TorchServe reads: our declarations, merged into any existing file.

TorchServe drops a custom metric silently unless the YAML given as ``metrics_config`` declares
it under ``model_metrics`` with the dimensions it is emitted with. :func:`merge` adds ours to a
deployment's own file; :func:`problems` says what a file lacks.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping, Union

import yaml

from torchserve_perf.plugins.metrics import catalog

SHIPPED = Path(__file__).resolve().with_name("metrics.yaml")


def read(path: Union[str, Path]) -> dict:
    with open(path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle) or {}
    if not isinstance(document, dict):
        raise ValueError(f"{path}: a metrics config must be a YAML mapping")
    return document


def declared(document: Mapping[str, Any], section: str = "model_metrics") -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (kind, dimensions) for one section of a metrics YAML."""
    found = {}
    for kind, entries in (document.get(section) or {}).items():
        for entry in entries or []:
            found[entry["name"]] = (kind, tuple(entry.get("dimensions") or ()))
    return found


def merge(document: Mapping[str, Any]) -> dict:
    """A copy of ``document`` with every catalog metric declared under ``model_metrics``.

    An entry of the same name is replaced (its type or dimensions may be stale); everything
    else in the file is kept as it is.
    """
    merged = copy.deepcopy(dict(document))
    models = merged.get("model_metrics") or {}
    ours = {spec.name for spec in catalog.ALL}
    for kind in list(models):
        models[kind] = [entry for entry in models[kind] or [] if entry.get("name") not in ours]
    for spec in catalog.ALL:
        models.setdefault(spec.kind, []).append(
            {"name": spec.name, "unit": spec.unit, "dimensions": list(spec.dimensions)})
    merged["model_metrics"] = {kind: entries for kind, entries in models.items() if entries}
    return merged


def problems(document: Mapping[str, Any]) -> list[str]:
    """What keeps our metrics from reaching TorchServe's endpoint with this file (empty: nothing)."""
    found = declared(document)
    issues = []
    for spec in catalog.ALL:
        if spec.name not in found:
            issues.append(f"{spec.name} is not declared under model_metrics (TorchServe would drop it)")
            continue
        kind, dimensions = found[spec.name]
        if kind != spec.kind:
            issues.append(f"{spec.name} is declared as a {kind}, we emit a {spec.kind}")
        if dimensions != spec.dimensions:
            issues.append(f"{spec.name} is declared with dimensions {list(dimensions)}, "
                          f"we emit {list(spec.dimensions)} (matched by position)")
    return issues


def dump(document: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=None, width=120)
