"""The transports comparison's Markdown: per workload, req/s and latency per protocol side by side,
and each protocol's throughput and p99 against the first protocol's."""

from __future__ import annotations

from typing import Any, Optional

TITLES = {"http": "HTTP/1.1 /predictions", "v2": "HTTP/1.1 v2 JSON", "grpc": "gRPC Predictions",
          "v2-grpc": "OIP gRPC ModelInfer"}


def _num(value: Optional[float], digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    """``value / base``, or None when either is missing or the base is zero. Pure."""
    if value is None or base is None or base == 0:
        return None
    return value / base


def workload_table(workload: dict, protocols: list[str], concurrencies: list[int]) -> list[str]:
    """One row per protocol and client count: req/s, p50, p99, client CPU, errors; then the ratios
    against the first protocol measured."""
    measured = [p for p in protocols if p in workload["protocols"]]
    lines = ["| protocol | clients | req/s | p50 ms | p99 ms | client CPU ms/req | errors |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for protocol in measured:
        for c in concurrencies:
            s = workload["protocols"][protocol].get(str(c))
            if s is None:
                continue
            errors = sum(s["errors"].values())
            lines.append(f"| {TITLES.get(protocol, protocol)} | {c} | {_num(s['throughput_rps'])} | "
                         f"{_num(s['p50_ms'], 2)} | {_num(s['p99_ms'], 2)} | "
                         f"{_num(s['client_cpu_ms_per_request'], 2)} | {errors} |")
    if len(measured) > 1:
        base = measured[0]
        lines += ["", f"Against {TITLES.get(base, base)} (req/s ratio; p99 ratio, below 1 is faster):", "",
                  "| protocol | " + " | ".join(f"{c} client{'s' * (c > 1)}" for c in concurrencies) + " |",
                  "|---|" + "---:|" * len(concurrencies)]
        for protocol in measured[1:]:
            cells = []
            for c in concurrencies:
                mine, theirs = workload["protocols"][protocol].get(str(c)), workload["protocols"][base].get(str(c))
                if mine is None or theirs is None:
                    cells.append("n/a")
                    continue
                rps, p99 = ratio(mine["throughput_rps"], theirs["throughput_rps"]), ratio(mine["p99_ms"], theirs["p99_ms"])
                cells.append(f"{_num(rps, 2)}x · p99 {_num(p99, 2)}x")
            lines.append(f"| {TITLES.get(protocol, protocol)} | " + " | ".join(cells) + " |")
    return lines


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = ["# Transports side by side", "",
             f"{m['cpu']}, {m['cores']} cores; {report['seconds']:g} s per point after {report['warmup']:g} s of "
             f"warm-up, closed loop, one client process on the same machine as the server"
             + (" (quick run: indicative only)" if report.get("quick") else "") + ".", ""]
    for key, workload in report["workloads"].items():
        lines += [f"## {key}: {workload['description']}", ""]
        lines += workload_table(workload, report["protocols"], report["concurrencies"])
        for protocol, error in workload["errors"].items():
            lines.append(f"\n{TITLES.get(protocol, protocol)}: not measured ({error})")
        lines.append("")
    return "\n".join(lines)
