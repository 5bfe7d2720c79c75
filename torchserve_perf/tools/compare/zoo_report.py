"""The ``compare --zoo`` report: a table per family, its goals judged, and Markdown to read it."""

from __future__ import annotations

import datetime as _dt
from typing import Any, Mapping, Sequence

from torchserve_perf.tools import machine
from torchserve_perf.tools.compare.analysis import defaults_ratios, number
from torchserve_perf.tools.compare.config import TITLES
from torchserve_perf.tools.compare.goals import Goal, evaluate
from torchserve_perf.tools.compare.zoo_config import ZooConfig


def phase_shares(phases: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Mean ms per batch and share of the handler's time, per phase."""
    total = sum(p.get("sum", 0.0) for p in phases.values())
    return {name: {"mean_ms": round(1e3 * p["sum"] / p["count"], 2) if p.get("count") else 0.0,
                   "share": round(p.get("sum", 0.0) / total, 3) if total else 0.0} for name, p in phases.items()}


def build_zoo_report(cfg: ZooConfig, families: Sequence[Mapping[str, Any]], *, command: str, wall_s: float,
                     goals: Sequence[Goal] = ()) -> dict:
    """Everything measured, per family; what ``zoo.json`` holds."""
    rows = []
    for family in families:
        results = family["results"]
        judged = evaluate(goals, results, None, cfg.concurrencies)
        rows.append({key: family[key] for key in ("family", "description", "parameters", "systems", "memory", "auto")}
                    | {"ratios": defaults_ratios(results, cfg.concurrencies), "goals": judged,
                       "met": all(g["passed"] for g in judged) if judged else None,
                       "phases": phase_shares(family["phases"])})
    return {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "quick": cfg.quick, "seconds": cfg.seconds, "warmup": cfg.warmup, "rounds": cfg.rounds,
        "concurrencies": list(cfg.concurrencies), "families": rows, "command": command, "wall_s": wall_s,
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
             "| system | settings | worker RSS (MiB) | " + " | ".join(f"{_clients(c)}: req/s · p50 · p99 (ms)" for c in cs)
             + " |", "|---|---|---:|" + "---:|" * len(cs)]
    for key, system in row["systems"].items():
        memory = row["memory"].get(key) or {}
        rss = f"{memory['rss_mib']:.0f} ({memory['workers']} workers)" if memory.get("workers") else "n/a"
        cells = [system["error"]] * len(cs) if system["error"] else [_point(system["runs"].get(str(c))) for c in cs]
        lines.append(f"| {TITLES[key]} | {system['settings']} | {rss} | " + " | ".join(cells) + " |")
    lines += ["", "Ours / stock (throughput, p99): " + "; ".join(
        f"{TITLES[other]}: " + ", ".join(f"{c}: {number(r[str(c)]['throughput'], 2)}x, "
                                         f"{number(r[str(c)]['p99'], 2)}x" for c in cs)
        for other, r in row["ratios"].items()), ""]
    lines.append(f"auto: {row['auto'] or 'no choice logged (see the worker log)'}")
    lines += ["", "| goal | clients | value | target | passed |", "|---|---:|---:|---|---|"]
    lines += [f"| {g['goal']} | {g['concurrency']} | {number(g['value'], 2)}x | {g['target']} | "
              f"{'yes' if g['passed'] else 'NO'} |" for g in row["goals"]]
    if row["met"] is False and row["phases"]:
        lines += ["", "Where ours' time goes (handler metrics, per batch): " + ", ".join(
            f"{name} {p['mean_ms']:.1f} ms ({p['share']:.0%})" for name, p in row["phases"].items())]
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
    for row in report["families"]:
        lines += _family_lines(row, cs)
    return "\n".join(lines)
