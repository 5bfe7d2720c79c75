"""The tuner against the exhaustive grid (``make tune-grid``): both winners, the ratio, and the share of the grid.

Each run's own numbers come from its report.json. Because the grid's best is the maximum of
many noisy measurements (so it is biased upwards), ``--head-to-head N`` also starts one
TorchServe and measures the two winners alternately N times each, under the same conditions,
and reports that ratio too. The quality bar: the tuner within 5% of the grid's best while
evaluating at most 30% of the grid.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

from torchserve_perf.tools.argparsing import command_parser
from torchserve_perf.tools.tuning.space import Candidate

QUALITY_RATIO = 0.95
QUALITY_FRACTION = 0.30


def load(path: Path) -> dict[str, Any]:
    report = path / "report.json" if path.is_dir() else path
    if not report.is_file():
        raise SystemExit(f"{report} not found: run `torchserve-perf tune` first")
    return json.loads(report.read_text())


def describe(name: str, r: dict[str, Any]) -> str:
    b = r["best"]
    config = (f"w={b['workers']} t={b['threads']} b={b['batch_size']} d={b['max_batch_delay_ms']} "
              f"opt={'+'.join(b['optimization']) or 'none'}") if b else "none met the target"
    tp = f"{b['throughput_rps']:7.1f} req/s  p99 {b['p99_ms']:6.1f} ms" if b else ""
    return (f"{name:<7} {r['points_evaluated']:>3}/{r['grid_size']:<3} points ({100 * r['fraction_of_grid']:4.0f}%) "
            f"{r['measurements']:>3} meas. {r['elapsed_s'] / 60:5.1f} min | {config:<40} {tp}")


def head_to_head(grid: dict[str, Any], search: dict[str, Any], rounds: int) -> dict[str, Any]:
    from torchserve_perf.tools.model_store import default_payload, find_spec
    from torchserve_perf.tools.tuning.evaluate import LoadSettings, TorchServeEvaluator

    spec = find_spec(grid["model"])
    a, b = Candidate.from_dict(grid["best"]), Candidate.from_dict(search["best"])
    load_settings = LoadSettings(concurrency=grid["concurrency"], duration_s=grid["duration_s"] * 2,
                                 warmup_s=grid["warmup_s"])
    runs: dict[str, list[dict[str, float]]] = {"grid": [], "search": []}
    workdir = Path(tempfile.mkdtemp(prefix="tune-compare-"))
    try:
        with TorchServeEvaluator(spec, workdir, default_payload(spec), load_settings,
                                 progress=lambda m: print(m, flush=True)) as evaluator:
            for i in range(rounds):
                for name, c in (("grid", a), ("search", b)):
                    m = evaluator(c)
                    runs[name].append({"throughput_rps": m.throughput_rps, "p99_ms": m.p99_ms})
                    print(f"  round {i + 1}/{rounds} {name:<6} {c.label():<60} {m.throughput_rps:7.1f} req/s  "
                          f"p99 {m.p99_ms:7.1f} ms" + (f"  FAILED {m.error}" if m.failed else ""), flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    means = {k: statistics.fmean(r["throughput_rps"] for r in v) for k, v in runs.items()}
    p99s = {k: statistics.fmean(r["p99_ms"] for r in v) for k, v in runs.items()}
    return {"rounds": rounds, "runs": runs, "throughput_rps": means, "p99_ms": p99s,
            "ratio": means["search"] / means["grid"] if means["grid"] else None}


def main(argv: Optional[list[str]] = None) -> int:
    p = command_parser("tune compare", description=__doc__.splitlines()[0])
    p.add_argument("grid", type=Path, help="the grid run's folder (with report.json)")
    p.add_argument("search", type=Path, help="the tuner run's folder (with report.json)")
    p.add_argument("--head-to-head", type=int, default=0, metavar="ROUNDS",
                   help="also measure both winners alternately this many times each on one server")
    p.add_argument("--out", type=Path, help="write compare.json and compare.md here (default: next to the search run)")
    args = p.parse_args(argv)
    grid, search = load(args.grid), load(args.search)
    for key in ("model", "concurrency", "p99_target_ms", "duration_s", "space"):
        if grid[key] != search[key]:
            print(f"warning: the runs differ in {key}: grid {grid[key]!r}, search {search[key]!r}", file=sys.stderr)
    lines = [describe("grid", grid), describe("search", search)]
    result: dict[str, Any] = {"grid": grid["best"], "search": search["best"],
                              "fraction_of_grid": search["points_evaluated"] / grid["grid_size"]}
    if grid["best"] and search["best"]:
        ratio = search["best"]["throughput_rps"] / grid["best"]["throughput_rps"]
        result["ratio"] = ratio
        lines.append(f"search / grid throughput: {ratio:.3f} (each run's own measurements)")
        if args.head_to_head > 0:
            h2h = head_to_head(grid, search, args.head_to_head)
            result["head_to_head"] = h2h
            lines.append(f"head to head, {h2h['rounds']} alternating rounds: grid {h2h['throughput_rps']['grid']:.1f} "
                         f"req/s (p99 {h2h['p99_ms']['grid']:.0f} ms), search {h2h['throughput_rps']['search']:.1f} "
                         f"req/s (p99 {h2h['p99_ms']['search']:.0f} ms): ratio {h2h['ratio']:.3f}")
        judged = result.get("head_to_head", {}).get("ratio") or ratio
        result["passes"] = judged >= QUALITY_RATIO and result["fraction_of_grid"] <= QUALITY_FRACTION
        lines.append(f"quality bar (>= {QUALITY_RATIO:.2f} of the grid's best with <= {QUALITY_FRACTION:.0%} of the "
                     f"grid evaluated): {'PASS' if result['passes'] else 'FAIL'} "
                     f"(ratio {judged:.3f}, {100 * result['fraction_of_grid']:.0f}% of the grid)")
    else:
        result["passes"] = False
        lines.append("one of the runs found no configuration under the target")
    text = "\n".join(lines)
    print(text)
    out = args.out or (args.search if args.search.is_dir() else args.search.parent)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(result, indent=1))
    (out / "compare.md").write_text("# Tuner against the exhaustive grid\n\n```\n" + text + "\n```\n")
    return 0 if result["passes"] else 1
