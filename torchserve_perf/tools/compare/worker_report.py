"""What a running server's workers say about their load: auto's choice and the accuracy gates' agreement.

Read after a compare run from the workers' logs and a metrics scrape, for the report's ``load`` line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional

if TYPE_CHECKING:
    from torchserve_perf.tools.serving import TorchServe

AUTO_MARKERS = ("auto chose", "auto kept", "auto reused")  # the worker's one INFO line about auto's choice


def auto_choice(server: TorchServe) -> Optional[str]:
    """What auto chose and why, from the workers' log: the search's own line when a worker searched,
    else the reuse line with the reason stored in the choice cache; None when no worker said."""
    found: dict[str, str] = {}
    for log in sorted((server.workdir / "logs").glob("model_log*.log")):
        for line in log.read_text(errors="replace").splitlines():
            for marker in AUTO_MARKERS:
                if marker in line:
                    found[marker] = line[line.index(marker):].strip()
    searched = found.get("auto chose") or found.get("auto kept")
    if searched or "auto reused" not in found:
        return searched
    reused = found["auto reused"]
    cache = Path(reused[reused.rfind("(") + 1:].rstrip(")"))
    try:
        reason = json.loads(cache.read_text()).get("reason")
    except (OSError, ValueError, AttributeError):
        reason = None
    return f"{reused}; first decided as: {reason}" if reason else reused


def gate_agreement(metrics_text: str) -> dict[str, float]:
    """Each gated optimization's top-1 agreement with fp32 (``ts_perf_optimization_agreement``), the lowest
    over the workers, from a Prometheus scrape."""
    from torchserve_perf.plugins.metrics import catalog

    found: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if not line.startswith(catalog.OPTIMIZATION_AGREEMENT.name + "{"):
            continue
        labels, _, value = line.rpartition(" ")
        marker = 'Optimization="'
        if marker not in labels:
            continue
        name = labels[labels.index(marker) + len(marker):].split('"', 1)[0]
        try:
            found[name] = min(found.get(name, 1.0), float(value))
        except ValueError:
            continue
    return found


def phase_seconds(metrics_text: str) -> dict[str, dict[str, float]]:
    """Our handler's per-phase histograms (sum and count over all workers) from a Prometheus scrape."""
    from torchserve_perf.plugins.metrics import catalog

    totals: dict[str, dict[str, float]] = {}
    wanted = {f"{spec.name}_{part}": (phase, part) for phase, spec in catalog.PHASES.items()
              for part in ("sum", "count")}
    for line in metrics_text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted and not line.startswith("#"):
            phase, part = wanted[name]
            try:
                value = float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
            totals.setdefault(phase, {"sum": 0.0, "count": 0.0})[part] += value
    return totals


def phase_shares(phases: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean ms per batch and share of the handler's time, per phase."""
    total = sum(p.get("sum", 0.0) for p in phases.values())
    return {name: {"mean_ms": round(1e3 * p["sum"] / p["count"], 2) if p.get("count") else 0.0,
                   "share": round(p.get("sum", 0.0) / total, 3) if total else 0.0} for name, p in phases.items()}


def load_summary(server: TorchServe) -> dict[str, Any]:
    """auto's choice, the gates' agreement and where the handler's time went (per phase), for one of our
    servers after its runs; empty parts when it said nothing."""
    try:
        scrape = server.scrape()
    except Exception:  # the report goes on without it
        scrape = ""
    return {"auto": auto_choice(server), "agreement": gate_agreement(scrape),
            "phases": phase_shares(phase_seconds(scrape))}


def describe_phases(phases: Mapping[str, Mapping[str, float]]) -> str:
    return ", ".join(f"{name} {p['mean_ms']:.1f} ms ({p['share']:.0%})" for name, p in phases.items())


def describe(load: Optional[dict]) -> str:
    """The report's one line for ``load_summary``'s dict."""
    if not load:
        return "n/a"
    parts = [load.get("auto") or "no auto choice logged (see the worker log)"]
    parts += [f"{name} top-1 agreement with fp32 {value:.3f}" for name, value in sorted(load.get("agreement", {}).items())]
    if load.get("phases"):
        parts.append("handler time per batch: " + describe_phases(load["phases"]))
    return "; ".join(parts)
