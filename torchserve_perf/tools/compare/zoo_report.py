"""The ``compare --zoo`` report: a table per family, its goals judged, and Markdown to read it."""

from __future__ import annotations

import datetime as _dt
from typing import Any, Mapping, Optional, Sequence

from torchserve_perf.tools import machine, worker_memory
from torchserve_perf.tools.compare.analysis import defaults_ratios, number
from torchserve_perf.tools.compare.config import TITLES
from torchserve_perf.tools.compare.goals import Goal, evaluate
from torchserve_perf.tools.compare.worker_report import describe
from torchserve_perf.tools.compare.zoo_config import ZooConfig
from torchserve_perf.tools.int8_accuracy import describe as accuracy_line


def build_zoo_report(cfg: ZooConfig, families: Sequence[Mapping[str, Any]], *, command: str, wall_s: float,
                     goals: Sequence[Goal] = (), int8_accuracy: Optional[dict] = None) -> dict:
    """Everything measured, per family; what ``zoo.json`` holds."""
    rows = []
    for family in families:
        results = family["results"]
        judged = evaluate(goals, results, None, cfg.concurrencies)
        rows.append({key: family[key] for key in ("family", "description", "parameters", "systems", "memory", "loads")}
                    | {"ratios": defaults_ratios(results, cfg.concurrencies), "goals": judged,
                       "met": all(g["passed"] for g in judged) if judged else None})
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "quick": cfg.quick, "seconds": cfg.seconds, "warmup": cfg.warmup, "rounds": cfg.rounds,
        "concurrencies": list(cfg.concurrencies), "systems": list(cfg.systems), "families": rows,
        "int8_accuracy": int8_accuracy, "command": command, "wall_s": wall_s,
    }


def _point(run: Any) -> str:
    if not run:
        return "n/a"
    errors = sum(run.get("errors", {}).values())
    return (f"{number(run.get('throughput_rps'))} · {number(run.get('p50_ms'), 0)} · {number(run.get('p99_ms'), 0)}"
            + (f" ({errors} errors)" if errors else ""))


def _clients(c: int) -> str:
    return f"{c} client{'s' * (c > 1)}"


def _family_lines(row: Mapping[str, Any], cs: Sequence[int]) -> list[str]:
    lines = [f"## {row['family']}", "", f"{row['description']}; {row['parameters'] / 1e6:.1f} M parameters.", "",
             "| system | settings | RSS per worker | " + " | ".join(f"{_clients(c)}: req/s · p50 · p99 (ms)" for c in cs)
             + " |", "|---|---|---:|" + "---:|" * len(cs)]
    for key, system in row["systems"].items():
        memory = row["memory"].get(key) or {}
        rss = worker_memory.column(memory)
        cells = [system["error"]] * len(cs) if system["error"] else [_point(system["runs"].get(str(c))) for c in cs]
        lines.append(f"| {TITLES[key]} | {system['settings']} | {rss} | " + " | ".join(cells) + " |")
    lines += ["", "Ours / stock (throughput, p99): " + "; ".join(
        f"{TITLES[other]}: " + ", ".join(f"{c}: {number(r[str(c)]['throughput'], 2)}x, "
                                         f"{number(r[str(c)]['p99'], 2)}x" for c in cs)
        for other, r in row["ratios"].items()), ""]
    # auto's choice, the gates' agreement and where the handler's time goes: what to read when a goal is missed
    lines += [f"- {TITLES[key]}: {describe(load)}" for key, load in row["loads"].items()]
    if row["goals"]:  # judged only when the run was given --goals
        lines += ["", "| goal | clients | value | target | passed |", "|---|---:|---:|---|---|"]
        lines += [f"| {g['goal']} | {g['concurrency']} | {number(g['value'], 2)}x | {g['target']} | "
                  f"{'yes' if g['passed'] else 'NO'} |" for g in row["goals"]]
    return lines + [""]


def render_zoo(report: Mapping[str, Any]) -> str:
    cs = report["concurrencies"]
    m = report["machine"]
    lines = ["# Image families: stock TorchServe against ours", "",
             f"{report['created']}; {m['cpu']}, {m['cores']} cores; `{report['command']}`; "
             f"{report['seconds']:g} s per point in {report['rounds']} round(s), {report['warmup']:g} s warm-up"
             + (" (quick: a check that it runs, not a measurement)" if report["quick"] else "") + ".", "",
             "Every family's three servers run at once and the load alternates between them; the same 640x480 "
             "JPEG, closed-loop clients.", ""]
    if report.get("int8_accuracy"):
        lines += [f"int8's real accuracy (beside every ours_int8 figure), {accuracy_line(report['int8_accuracy'])}.", ""]
    for row in report["families"]:
        lines += _family_lines(row, cs)
    return "\n".join(lines)
