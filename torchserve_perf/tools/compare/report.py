"""The report: every number as one JSON-ready dict (:func:`build_report`), and its Markdown (:func:`render`)."""

from __future__ import annotations

import datetime as _dt
from typing import Any, Optional, Sequence

from torchserve_perf.tools import machine, worker_memory
from torchserve_perf.tools.compare.analysis import client_notes, defaults_ratios, number, ratios
from torchserve_perf.tools.compare.config import SERVERS, TITLES, CompareConfig
from torchserve_perf.tools.compare.goals import Goal, evaluate
from torchserve_perf.tools.compare.results import SystemResult
from torchserve_perf.tools.compare.worker_report import describe
from torchserve_perf.tools.gpu_report import render_lines
from torchserve_perf.tools.int8_accuracy import describe as accuracy_line
from torchserve_perf.tools.loadgen import LoadResult, Payload

RATIO_NAMES = {"stock_default": TITLES["stock_default"], "stock_guided": TITLES["stock_guided"],
               "ours_default": TITLES["ours_default"], "litserve": TITLES["litserve"],
               "raw_optimized": "in-process limit (fastest variant)", "raw_eager": "in-process limit, eager"}
RATIO_LEGEND = "Throughput ratio (and p99 ratio: below 1 means ours answers faster) per concurrency."


def build_report(cfg: CompareConfig, *, payload: Payload, tuned: dict, tuned_source: str, raw: Optional[dict],
                 gpu_limits: Optional[dict], results: dict[str, SystemResult], ceilings: dict[int, LoadResult],
                 command: str, wall_s: float, goals: Sequence[Goal] = (),
                 int8_accuracy: Optional[dict] = None) -> dict:
    """Everything measured, the ratios and the rows of ``goals``; what ``report.json`` holds."""
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "quick": cfg.quick, "seconds": cfg.seconds, "warmup": cfg.warmup, "concurrencies": list(cfg.concurrencies),
        "payload": {"name": payload.name, "bytes": len(payload.body), "content_type": payload.content_type},
        "tuned": tuned, "tuned_source": tuned_source,
        "raw": raw,
        "gpu_limits": gpu_limits,
        "systems": {k: r.as_dict() for k, r in results.items()},
        "ratios": ratios(results, raw, cfg.concurrencies),
        "defaults_ratios": defaults_ratios(results, cfg.concurrencies) if "ours_default" in results else {},
        "goals": evaluate(goals, results, raw, cfg.concurrencies),
        "client_ceiling": {str(c): r.summary() for c, r in sorted(ceilings.items())},
        "client_notes": client_notes(results, ceilings),
        "command": command,
        "wall_s": wall_s,
        "int8_accuracy": int8_accuracy,  # the digits CNN's held-out accuracy (tools/int8_accuracy.py), with ours_int8
    }


def _clients(c: int) -> str:
    return f"{c} client{'s' * (c > 1)}"


def _threads(n: int) -> str:
    return f"{n} thread{'s' * (n > 1)}"


def _systems_table(report: dict, cs: Sequence[int]) -> list[str]:
    lines = ["| system | settings | " + " | ".join(f"{_clients(c)}: req/s · p50 · p99 (ms)" for c in cs)
             + " | worker RSS |", "|---|---|" + "---:|" * (len(cs) + 1)]
    raw = report.get("raw")
    if raw:
        e, o = raw["best_eager"], raw["best_optimized"]
        settings = f"eager: {_threads(e['threads'])}, batch {e['batch']}"
        numbers = f"no clients: eager **{e['images_per_s']:.1f}** img/s"
        if o:
            settings += f"; torch.compile: {_threads(o['threads'])}, batch {o['batch']}"
            numbers += f", compiled **{o['images_per_s']:.1f}** img/s"
        lines.append(f"| {TITLES['raw']} | {settings} | "
                     + " | ".join(numbers if i == 0 else "—" for i, _ in enumerate(cs)) + " | — |")
    for key in SERVERS:
        system = report["systems"].get(key)
        if system is None:
            continue
        if system["error"]:
            lines.append(f"| {system['title']} | {system['settings']} | " + " | ".join(
                f"failed: {system['error']}" if i == 0 else "" for i, _ in enumerate(cs)) + " | — |")
            continue
        cells = [_point(system["runs"].get(str(c))) for c in cs]
        lines.append(f"| {system['title']} | {system['settings']} | " + " | ".join(cells)
                     + f" | {worker_memory.column(system.get('memory'))} |")
    loads = [f"- {s['title']}: {describe(s['load'])}" for s in report["systems"].values() if s.get("load")]
    if report.get("int8_accuracy"):
        loads.append(f"- int8's real accuracy, {accuracy_line(report['int8_accuracy'])}")
    return lines + (["", "What our workers chose at load, and where their handler time went:", "", *loads] if loads else [])


def _point(run: Optional[dict]) -> str:
    if not run:
        return "n/a"
    return (f"**{number(run['throughput_rps'])}** · {number(run['p50_ms'], 0)} · {number(run['p99_ms'], 0)}"
            + (f" ({sum(run['errors'].values())} errors)" if run["errors"] else ""))


def _ratio_cell(cell: dict) -> str:
    text = number(cell.get("throughput"), 2, "x")
    if "p99" in cell:
        text += f" (p99 {number(cell.get('p99'), 2, 'x')})"
    return text


def _tuned_ratios(report: dict, cs: Sequence[int]) -> list[str]:
    if "ours_tuned" not in report["systems"]:
        return []
    lines = ["", "## Ours (tuned) against the others", "", RATIO_LEGEND, "",
             "| ours tuned vs | " + " | ".join(_clients(c) for c in cs) + " |", "|---|" + "---:|" * len(cs)]
    for key, per_c in report["ratios"].items():
        lines.append(f"| {RATIO_NAMES[key]} | " + " | ".join(_ratio_cell(per_c.get(str(c), {})) for c in cs) + " |")
    return lines


def _defaults_ratios(report: dict, cs: Sequence[int]) -> list[str]:
    if not report.get("defaults_ratios"):
        return []
    lines = ["", "## Ours (defaults) against stock", "", RATIO_LEGEND, "",
             "| ours defaults vs | " + " | ".join(_clients(c) for c in cs) + " |", "|---|" + "---:|" * len(cs)]
    for key, per_c in report["defaults_ratios"].items():
        cells = [f"{number(per_c.get(str(c), {}).get('throughput'), 2, 'x')} "
                 f"(p99 {number(per_c.get(str(c), {}).get('p99'), 2, 'x')})" for c in cs]
        lines.append(f"| {TITLES[key]} | " + " | ".join(cells) + " |")
    return lines


def _goals(report: dict) -> list[str]:
    if not report.get("goals"):
        return []
    lines = ["", "## Goals", "", "| goal | at | measured | target | met |", "|---|---|---:|---|---|"]
    for g in report["goals"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[g["passed"]]
        at = g["concurrency"] if g["concurrency"] == "best" else f"{g['concurrency']} clients"
        lines.append(f"| {g['goal']} | {at} | {number(g['value'], 2, 'x')} | {g['target']} | {met} |")
    return lines


def _notes(report: dict) -> list[str]:
    lines = ["", "## Notes", "", f"- Tuned settings: {report['tuned_source']}."]
    raw = report.get("raw")
    if raw:
        lines.append(f"- The in-process limit is the model alone on random tensors (best of threads x batch); the "
                     f"servers also decode and resize the JPEG (about {raw['preprocess_ms_per_image']} ms per image "
                     "here) and answer HTTP, on the same cores.")
    ceiling: dict[str, Any] = report.get("client_ceiling") or {}
    if ceiling:
        lines.append("- Client ceiling (the same client against a trivial loopback endpoint): "
                     + ", ".join(f"{_clients(int(c))} {v['throughput_rps']:.0f} req/s" for c, v in ceiling.items())
                     + f"; client CPU about {next(iter(ceiling.values()))['client_cpu_ms_per_request']} ms per request.")
    lines += [f"- {n}" for n in report["client_notes"]] or ["- No server came near the client's ceiling: the client "
                                                             "was not the bottleneck."]
    lines.append("- The client runs on the same machine and shares its cores with every server alike.")
    return lines


def _gpu(report: dict) -> list[str]:
    runs = [(f"{s['title']} c={c}", run) for s in report["systems"].values() for c, run in s["runs"].items()]
    gpu = render_lines(runs, report.get("gpu_limits"))
    return (["", "## GPU", ""] + gpu[2:]) if gpu else []


def render(report: dict) -> str:
    """``report.md``: the systems table, the ratio tables, the goals (when given), notes and GPU use."""
    cs = report["concurrencies"]
    header = [
        "# Side-by-side: ResNet-18 (224x224) on this machine",
        "",
        f"{report['created']}; {report['machine']['cores']} cores ({report['machine']['cpu']}); "
        f"{report['seconds']:g} s per point after {report['warmup']:g} s warm-up"
        + (" (**quick mode**: numbers are indicative only)" if report["quick"] else "") + "; "
        f"payload {report['payload']['name']} ({report['payload']['bytes']} B JPEG), closed-loop clients.",
        "",
    ]
    lines = header + _systems_table(report, cs) + _tuned_ratios(report, cs) + _defaults_ratios(report, cs)
    lines += _goals(report) + _notes(report) + _gpu(report)
    lines += ["", f"Regenerate: `{report['command']}`", ""]
    return "\n".join(lines)
