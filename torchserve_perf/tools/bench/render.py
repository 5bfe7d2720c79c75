"""A benchmark report as text and pictures: bench.md, bench.png, bench.json."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from torchserve_perf.tools import worker_memory
from torchserve_perf.tools.bench.report import CEILING_WARN_SHARE, CLIENT_CPU_WARN_SHARE
from torchserve_perf.tools.gpu_report import render_lines


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def gpu_lines(report: dict) -> list[str]:
    """GPU utilisation per run, and the GPU's in-process limits, where they were measured."""
    return render_lines([(run["label"], run) for run in report["runs"]], report.get("gpu_limits"))


def memory_lines(report: dict) -> list[str]:
    """Each worker's memory breakdown at load, as our workers logged it (a server bench started)."""
    loaded = (report.get("worker_memory") or {}).get("at_load") or []
    if not loaded:
        return []
    lines = ["Worker memory at load (MiB; docs/memory.md):", ""]
    for entry in loaded:
        parts = ", ".join(f"{name} {mib:+.1f}" for name, mib in entry["parts_mib"].items())
        lines.append(f"- {entry['worker']}: RSS {entry['rss_mib']:.1f} = {parts}")
    return lines + [""]


def render_markdown(report: dict) -> str:
    cfg, target = report["config"], report["target"]
    lines = [
        f"# Benchmark: {cfg['model']}",
        "",
        f"- target: {target.get('url')} ({target.get('kind')}), {report['created']}"
        + (f"; protocol {target['protocol']} ({target.get('path')})" if target.get("protocol", "http") != "http" else ""),
        f"- machine: {report['machine']['cores']} cores, {report['machine']['cpu']}",
        "- payloads: " + ", ".join(f"{p['name']} ({p['content_type']}, {p['bytes']} B)" for p in report["payloads"]),
        f"- {cfg['duration_s']:g} s per run after {cfg['warmup_s']:g} s of warm-up; open-loop seed {cfg['seed']}",
        "",
        "| run | requests | ok | errors | req/s | p50 ms | p90 ms | p95 ms | p99 ms | p99.9 ms | client CPU ms/req "
        "| worker RSS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    memory = (report.get("worker_memory") or {}).get("runs", {})
    for run in report["runs"]:
        errors = sum(run["errors"].values())
        lines.append(f"| {run['label']} | {run['requests']} | {run['ok']} | {errors} | {_fmt(run['throughput_rps'])} | "
                     f"{_fmt(run['p50_ms'])} | {_fmt(run['p90_ms'])} | {_fmt(run['p95_ms'])} | {_fmt(run['p99_ms'])} | "
                     f"{_fmt(run['p99.9_ms'])} | {_fmt(run['client_cpu_ms_per_request'], 3)} "
                     f"| {worker_memory.column(memory.get(run['label']))} |")
    lines.append("")
    lines += memory_lines(report)
    if report["client_ceiling"]:
        parts = [f"{c['label']}: {_fmt(c['throughput_rps'], 0)} req/s "
                 f"({_fmt(c['client_cpu_ms_per_request'], 3)} ms CPU/req)" for c in report["client_ceiling"].values()]
        lines += ["Client ceiling (same client and payloads against a trivial loopback endpoint): " + "; ".join(parts)
                  + ".", ""]
    lines += gpu_lines(report)
    if report["notes"]:
        lines += ["**Notes**", ""] + [f"- {note}" for note in report["notes"]] + [""]
    else:
        lines += ["The client was not the bottleneck: every run stayed below "
                  f"{CEILING_WARN_SHARE:.0%} of the client's ceiling and {CLIENT_CPU_WARN_SHARE:.0%} of the machine's CPU.",
                  ""]
    lines += ["Open-loop latencies run from each request's scheduled start (Poisson arrivals), so queueing in the "
              "client counts against the server (no coordinated omission).", ""]
    return "\n".join(lines)


def render_png(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    closed = [r for r in report["runs"] if r["mode"] == "closed"]
    opened = [r for r in report["runs"] if r["mode"] == "open"]
    panels = 2 + bool(opened)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5))
    cdf = axes[0]
    for run in report["runs"]:
        if run["cdf_ms"]:
            xs, ys = zip(*run["cdf_ms"])
            cdf.step(xs, ys, where="post", label=run["label"])
    cdf.set_xscale("log")
    cdf.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    cdf.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    cdf.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    cdf.set_xlabel("latency (ms, log)")
    cdf.set_ylabel("fraction of requests")
    cdf.set_title("latency CDF")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend(fontsize=8)

    tput = axes[1]
    if closed:
        cs = [r["concurrency"] for r in closed]
        tput.plot(cs, [r["throughput_rps"] for r in closed], "o-", color="tab:blue", label="throughput")
        tput.set_xscale("log", base=2)
        tput.set_xticks(cs, [str(c) for c in cs])
        p99 = tput.twinx()
        p99.plot(cs, [r["p99_ms"] or float("nan") for r in closed], "s--", color="tab:red", label="p99")
        p99.set_ylabel("p99 latency (ms)", color="tab:red")
        p99.set_ylim(bottom=0)
    tput.set_ylim(bottom=0)
    tput.set_xlabel("concurrent clients")
    tput.set_ylabel("throughput (req/s)", color="tab:blue")
    tput.set_title("throughput vs concurrency (closed loop)")
    tput.grid(True, alpha=0.3)

    if opened:
        ax = axes[2]
        rates = [r["offered_rate_rps"] for r in opened]
        ax.plot(rates, [r["throughput_rps"] for r in opened], "o-", label="achieved")
        ax.plot(rates, rates, "x:", color="grey", label="offered")
        ax.set_ylim(bottom=0)
        ax.set_xlim(0, max(rates) * 1.1)
        ax.set_xlabel("offered rate (req/s, Poisson)")
        ax.set_ylabel("throughput (req/s)")
        ax.set_title("open loop")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{report['config']['model']} @ {report['target'].get('url')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(report: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = {"json": out / "bench.json", "markdown": out / "bench.md", "png": out / "bench.png"}
    written["json"].write_text(json.dumps(report, indent=2) + "\n")
    written["markdown"].write_text(render_markdown(report))
    render_png(report, written["png"])
    return written
