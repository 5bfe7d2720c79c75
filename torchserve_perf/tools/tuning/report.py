"""What a tuning run leaves behind: best.json, report.md/json, tune.png, and the winning config files."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from torchserve_perf.tools.tuning.evaluate import RESPONSE_TIMEOUT_S, model_config, split_decode
from torchserve_perf.tools.tuning.objective import Aggregate, Objective, rank
from torchserve_perf.tools.tuning.space import Candidate, SearchSpace, optimization_label
from torchserve_perf.tools.tuning.state import TuneState


@dataclass
class RunInfo:
    model: str
    strategy: str
    space: SearchSpace
    objective: Objective
    concurrency: int
    duration_s: float
    warmup_s: float
    start: Candidate
    best: Optional[Candidate]
    confirmed: Sequence[Candidate]
    stopped_by_budget: bool
    elapsed_s: float
    measured_this_run: int
    base_model_config: dict
    physical_cores: int


def _num(x: float, digits: int = 1) -> Optional[float]:
    return round(x, digits) if isinstance(x, (int, float)) and math.isfinite(x) else None


def row(c: Candidate, a: Aggregate, objective: Objective) -> dict[str, Any]:
    return {
        **c.to_dict(),
        "key": c.key,
        "throughput_rps": _num(a.throughput_rps, 2),
        "p50_ms": _num(a.p50_ms),
        "p99_ms": _num(a.p99_ms),
        "feasible": objective.feasible(a),
        "measurements": len(a.measurements),
        "spread": round(a.spread, 3),
        "error": a.error,
    }


def summarize(state: TuneState, info: RunInfo) -> dict[str, Any]:
    results = state.results()
    ordered = rank(results, info.objective)
    grid_size = info.space.size()
    points = len(results)
    measurements = len(state.entries)
    best = info.best
    summary: dict[str, Any] = {
        "model": info.model,
        "strategy": info.strategy,
        "p99_target_ms": info.objective.p99_target_ms,
        "concurrency": info.concurrency,
        "duration_s": info.duration_s,
        "warmup_s": info.warmup_s,
        "physical_cores": info.physical_cores,
        "space": info.space.to_dict(),
        "grid_size": grid_size,
        "points_evaluated": points,
        "measurements": measurements,
        "fraction_of_grid": round(points / grid_size, 3) if grid_size else None,
        "start": info.start.to_dict(),
        "stopped_by_budget": info.stopped_by_budget,
        "elapsed_s": round(info.elapsed_s, 1),
        "measured_this_run": info.measured_this_run,
        "confirmed": [c.key for c in info.confirmed],
        "best": row(best, results[best], info.objective) if best else None,
        "ranking": [row(c, results[c], info.objective) for c in ordered],
        "trace": [{"key": e["key"], "phase": e["phase"], **{k: e["measurement"].get(k) for k in
                                                             ("throughput_rps", "p99_ms", "error", "cost_s")}}
                  for e in state.entries],
    }
    return summary


def best_json(summary: dict[str, Any], best: Candidate, a: Aggregate) -> dict[str, Any]:
    """The fields other tools read (torchserve-perf compare), plus where the numbers came from."""
    return {
        "model": summary["model"],
        "workers": best.workers,
        "intra_op_threads": best.threads,
        "batch_size": best.batch_size,
        "max_batch_delay_ms": best.max_batch_delay_ms,
        "optimizations": split_decode(best.optimization)[0],
        "decode": split_decode(best.optimization)[1],  # handler.decode (the decode path), {}: the handler's default
        "number_of_gpu": best.gpus,
        "p99_target_ms": summary["p99_target_ms"],
        "concurrency": summary["concurrency"],
        "throughput_rps": _num(a.throughput_rps, 2),
        "p99_ms": _num(a.p99_ms),
        "p50_ms": _num(a.p50_ms),
        "meets_target": bool(summary["best"] and summary["best"]["feasible"]),
        "measurements": len(a.measurements),
        "strategy": summary["strategy"],
        "points_evaluated": summary["points_evaluated"],
        "grid_size": summary["grid_size"],
    }


def config_properties(model: str, best: Candidate, base_config: dict) -> str:
    """A server config that serves the winner: the model's settings under ``models=`` and ``number_of_gpu``."""
    settings = {model: {"1.0": {
        "defaultVersion": True, "marName": f"{model}.mar", "minWorkers": best.workers, "maxWorkers": best.workers,
        "batchSize": best.batch_size, "maxBatchDelay": best.max_batch_delay_ms,
        "responseTimeout": base_config.get("responseTimeout", RESPONSE_TIMEOUT_S)}}}
    lines = [
        f"# Written by torchserve-perf tune: the best settings found for {model} ({best.label()}).",
        "# Archive the model with the model-config.yaml next to this file (it carries the thread and",
        "# optimization settings), put the .mar in model_store/, then: torchserve --start --ts-config config.properties",
        "inference_address=http://127.0.0.1:8080",
        "management_address=http://127.0.0.1:8081",
        "metrics_address=http://127.0.0.1:8082",
        "metrics_mode=prometheus",
        "model_store=model_store",
        f"load_models={model}.mar",
        f"number_of_gpu={best.gpus}",
        f"default_workers_per_model={best.workers}",
        f"models={json.dumps(settings, separators=(',', ':'))}",
        "install_py_dep_per_model=false",
    ]
    return "\n".join(lines) + "\n"


def markdown(summary: dict[str, Any], top: int) -> str:
    best = summary["best"]
    lines = [f"# Tuning {summary['model']}: most throughput with p99 <= {summary['p99_target_ms']:g} ms",
             "",
             f"- strategy: **{summary['strategy']}**, {summary['points_evaluated']} of {summary['grid_size']} grid points "
             f"evaluated ({100 * (summary['fraction_of_grid'] or 0):.0f}%), {summary['measurements']} measurements, "
             f"{summary['elapsed_s']:.0f} s" + (" (stopped by the budget)" if summary["stopped_by_budget"] else ""),
             f"- load: closed loop, {summary['concurrency']} clients, {summary['duration_s']:g} s per measurement "
             f"after {summary['warmup_s']:g} s warm-up; {summary['physical_cores']} physical cores",
             f"- space: {summary['space']}",
             ""]
    if best and not best["feasible"]:
        lines += ["**No configuration met the target**; the one closest to it is below. Raise --p99-ms, "
                  "lower --concurrency, or widen the space.", ""]
    if best:
        lines += [f"**Best:** workers={best['workers']} threads={best['threads']} batch={best['batch_size']} "
                  f"delay={best['max_batch_delay_ms']} ms optimizations={optimization_label(best['optimization'])} "
                  f"-> {best['throughput_rps']} req/s, p99 {best['p99_ms']} ms "
                  f"({best['measurements']} measurements)", ""]
    else:
        lines += ["**Every configuration failed**; see the errors below.", ""]
    lines += ["| # | workers | threads | batch | delay ms | optimizations | req/s | p50 ms | p99 ms | meets p99 | runs | spread |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(summary["ranking"][:top], 1):
        meets = "yes" if r["feasible"] else ("error" if r["error"] else "no")
        lines.append(f"| {i} | {r['workers']} | {r['threads']} | {r['batch_size']} | {r['max_batch_delay_ms']} | "
                     f"{optimization_label(r['optimization'])} | {r['throughput_rps']} | {r['p50_ms']} | {r['p99_ms']} | "
                     f"{meets} | {r['measurements']} | {100 * r['spread']:.0f}% |")
    failures = [r for r in summary["ranking"] if r["error"]]
    if failures:
        lines += ["", "Failed candidates:", ""] + [f"- `{r['key']}`: {r['error']}" for r in failures]
    lines += ["", "Plots: `tune.png` (throughput against p99 for every point, and the search trace).", ""]
    return "\n".join(lines)


def plot(summary: dict[str, Any], path: Path, top: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranking = summary["ranking"]
    target = summary["p99_target_ms"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    ok = [r for r in ranking if not r["error"] and r["p99_ms"] is not None]
    for feasible, color, label in ((True, "tab:green", "meets p99"), (False, "tab:red", "misses p99")):
        pts = [r for r in ok if r["feasible"] == feasible]
        left.scatter([r["p99_ms"] for r in pts], [r["throughput_rps"] for r in pts], c=color, label=label, alpha=0.7)
    for i, r in enumerate(ok[:top], 1):
        left.annotate(f"{i}", (r["p99_ms"], r["throughput_rps"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if summary["best"]:
        b = summary["best"]
        left.scatter([b["p99_ms"]], [b["throughput_rps"]], marker="*", s=300, c="gold", edgecolors="k", label="best")
    left.axvline(target, color="k", ls="--", lw=1, label=f"p99 target {target:g} ms")
    left.set_xlabel("p99 latency (ms)")
    left.set_ylabel("throughput (req/s)")
    left.set_title(f"{summary['model']}: {len(ranking)} points, numbers = rank")
    left.legend(fontsize=8)

    trace = summary["trace"]
    xs = list(range(1, len(trace) + 1))
    ys = [t["throughput_rps"] or 0.0 for t in trace]
    feasible_keys = {r["key"] for r in ranking if r["feasible"]}
    colors = ["tab:green" if t["key"] in feasible_keys else "tab:red" for t in trace]
    right.scatter(xs, ys, c=colors, s=18)
    best_so_far, running = [], 0.0
    for t, y in zip(trace, ys):
        if t["key"] in feasible_keys and t["phase"] != "confirm":
            running = max(running, y)
        best_so_far.append(running)
    right.step(xs, best_so_far, where="post", color="k", label="best feasible so far")
    confirms = [x for x, t in zip(xs, trace) if t["phase"] == "confirm"]
    if confirms:
        right.axvspan(min(confirms) - 0.5, max(confirms) + 0.5, color="0.9", label="re-measured top points")
    right.set_xlabel("measurement #")
    right.set_ylabel("throughput (req/s)")
    right.set_title(f"{summary['strategy']}: {summary['points_evaluated']}/{summary['grid_size']} grid points")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(out: Path, state: TuneState, info: RunInfo, *, top: int = 10) -> dict[str, Any]:
    """Writes every output file into ``out``; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(state, info)
    (out / "report.json").write_text(json.dumps(summary, indent=1))
    (out / "report.md").write_text(markdown(summary, top))
    plot(summary, out / "tune.png", top)
    for stale in ("best.json", "config.properties", "model-config.yaml"):
        (out / stale).unlink(missing_ok=True)  # never leave an older run's winner behind
    if info.best is not None:
        a = state.aggregate(info.best)
        (out / "best.json").write_text(json.dumps(best_json(summary, info.best, a), indent=1))
        (out / "config.properties").write_text(config_properties(info.model, info.best, info.base_model_config))
        (out / "model-config.yaml").write_text(
            "# Written by torchserve-perf tune: pass to torch-model-archiver --config-file\n"
            + yaml.safe_dump(model_config(info.base_model_config, info.best), sort_keys=False))
    return summary
