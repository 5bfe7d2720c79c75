#!/usr/bin/env python3
"""Where the time goes, without TensorBoard: a markdown table and a PNG from Kineto traces.

Reads every ``*.pt.trace.json[.gz]`` under a directory (as written by our handlers with
ENABLE_TORCH_PROFILER), and reports per worker the mean time per profiled batch in
preprocess / inference / postprocess, then the operators with the most self time.

    torchserve-perf traces results/demo/traces [--out DIR] [--top 15]
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from torchserve_perf.plugins.profiler.traces import PHASES, STEP_PREFIX, find_traces, read_trace
from torchserve_perf.tools.argparsing import command_parser


@dataclass
class WorkerSummary:
    worker: str
    traces: int = 0
    steps: int = 0
    step_us: float = 0.0
    phase_us: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    batch_sizes: list[int] = field(default_factory=list)

    def mean_ms(self, value_us: float) -> float:
        return value_us / max(1, self.steps) / 1000


@dataclass
class OperatorSummary:
    calls: int = 0
    total_us: float = 0.0
    self_us: float = 0.0


def worker_of(path: Path, trace: dict) -> str:
    meta = trace.get("ts_perf") or {}
    if meta.get("worker"):
        return str(meta["worker"])
    return path.name.split(".pt.trace.json")[0].rsplit(".", 1)[0]


def complete_events(trace: dict) -> list[dict]:
    return [e for e in trace.get("traceEvents") or [] if e.get("ph") == "X" and "ts" in e and "dur" in e]


def add_self_times(events: Iterable[dict], operators: dict[str, OperatorSummary]) -> None:
    """Self time = own duration minus that of nested operators on the same thread."""
    by_thread: dict[tuple, list[dict]] = defaultdict(list)
    for event in events:
        if event.get("cat") == "cpu_op":
            by_thread[(event.get("pid"), event.get("tid"))].append(event)
    for ops in by_thread.values():
        ops.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack: list[tuple[dict, float]] = []  # (event, end)
        own: dict[int, float] = {}
        for op in ops:
            end = op["ts"] + op["dur"]
            while stack and stack[-1][1] <= op["ts"]:
                stack.pop()
            if stack:
                parent = stack[-1][0]
                own[id(parent)] -= op["dur"]
            own[id(op)] = op["dur"]
            stack.append((op, end))
        for op in ops:
            summary = operators[op["name"]]
            summary.calls += 1
            summary.total_us += op["dur"]
            summary.self_us += max(0.0, own[id(op)])


Operators = dict[str, dict[str, OperatorSummary]]  # model -> operator -> summary


def model_of(worker: str, trace: dict) -> str:
    meta = trace.get("ts_perf") or {}
    if meta.get("model_name"):
        return str(meta["model_name"])
    parts = worker.split("-", 2)  # W-<port>-<model>_<version>
    return parts[2].rsplit("_", 1)[0] if len(parts) == 3 else worker


def summarize(paths: Iterable[Path]) -> tuple[dict[str, WorkerSummary], Operators]:
    workers: dict[str, WorkerSummary] = {}
    operators: Operators = defaultdict(lambda: defaultdict(OperatorSummary))
    for path in paths:
        try:
            trace = read_trace(path)
        except (OSError, ValueError) as exc:
            print(f"skipping {path}: {exc}", file=sys.stderr)
            continue
        events = complete_events(trace)
        name = worker_of(path, trace)
        summary = workers.setdefault(name, WorkerSummary(name))
        summary.traces += 1
        for event in events:
            if str(event.get("name", "")).startswith(STEP_PREFIX):
                summary.steps += 1
                summary.step_us += event["dur"]
            elif event.get("cat") == "user_annotation" and event.get("name") in PHASES:
                summary.phase_us[event["name"]] += event["dur"]
                if event["name"] == "preprocess" and "batch_size" in (event.get("args") or {}):
                    summary.batch_sizes.append(int(event["args"]["batch_size"]))
        add_self_times(events, operators[model_of(name, trace)])
    return workers, operators


def markdown(workers: dict[str, WorkerSummary], operators: Operators, top: int,
             source: Path) -> str:
    lines = [f"# Where the time goes ({source})", "",
             "Mean milliseconds per profiled batch (`ProfilerStep`), by phase; *other* is the rest of the batch "
             "(collation, response building, profiler bookkeeping).", "",
             "| worker | traces | batches | mean batch size | " + " | ".join(PHASES) + " | other | batch total |",
             "|---|---:|---:|---:|" + "---:|" * (len(PHASES) + 2)]
    for name in sorted(workers):
        w = workers[name]
        phases = [w.mean_ms(w.phase_us.get(p, 0.0)) for p in PHASES]
        total = w.mean_ms(w.step_us)
        other = max(0.0, total - sum(phases))
        size = f"{sum(w.batch_sizes) / len(w.batch_sizes):.1f}" if w.batch_sizes else "-"
        cells = " | ".join(f"{v:.2f} ({100 * v / total:.0f}%)" if total else f"{v:.2f}" for v in phases)
        lines.append(f"| {name} | {w.traces} | {w.steps} | {size} | {cells} | {other:.2f} | {total:.2f} |")
    for model in sorted(operators):
        ops = operators[model]
        ranked = sorted(ops.items(), key=lambda kv: kv[1].self_us, reverse=True)[:top]
        all_self = sum(o.self_us for o in ops.values()) or 1.0
        lines += ["", f"## {model}: top {len(ranked)} operators by self time", "",
                  "| operator | calls | self ms | self % | total ms |", "|---|---:|---:|---:|---:|"]
        for name, op in ranked:
            lines.append(f"| `{name}` | {op.calls} | {op.self_us / 1000:.2f} | {100 * op.self_us / all_self:.1f} | "
                         f"{op.total_us / 1000:.2f} |")
    return "\n".join(lines) + "\n"


def chart(workers: dict[str, WorkerSummary], operators: Operators, top: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(workers)
    several = len(operators) > 1
    flat = {(f"{op} ({model})" if several else op): summary
            for model, ops in operators.items() for op, summary in ops.items()}
    ranked = sorted(flat.items(), key=lambda kv: kv[1].self_us, reverse=True)[:top][::-1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, max(3.0, 0.5 * max(len(names), len(ranked)) + 1.5)))
    offsets = [0.0] * len(names)
    for phase in (*PHASES, "other"):
        values = []
        for name in names:
            w = workers[name]
            if phase == "other":
                values.append(max(0.0, w.mean_ms(w.step_us) - sum(w.mean_ms(w.phase_us.get(p, 0.0)) for p in PHASES)))
            else:
                values.append(w.mean_ms(w.phase_us.get(phase, 0.0)))
        left.barh(names, values, left=offsets, label=phase)
        offsets = [a + b for a, b in zip(offsets, values)]
    left.set_xlabel("ms per profiled batch")
    left.set_title("Phases per worker")
    left.legend(loc="lower right", fontsize="small")
    right.barh([n for n, _ in ranked], [o.self_us / 1000 for _, o in ranked], color="tab:gray")
    right.set_xlabel("self time, ms (sum over traces)")
    right.set_title(f"Top {len(ranked)} operators")
    right.tick_params(axis="y", labelsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Optional[list[str]] = None) -> int:
    parser = command_parser("traces", description=__doc__.splitlines()[0])
    parser.add_argument("traces", type=Path, help="directory searched recursively for *.pt.trace.json[.gz]")
    parser.add_argument("--out", type=Path, help="where summary.md and summary.png go (default: the traces directory)")
    parser.add_argument("--top", type=int, default=15, help="operators to list")
    args = parser.parse_args(argv)
    paths = list(find_traces(args.traces)) if args.traces.is_dir() else []
    if not paths:
        print(f"no *.pt.trace.json files under {args.traces}", file=sys.stderr)
        return 1
    workers, operators = summarize(paths)
    out = args.out or args.traces
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(workers, operators, args.top, args.traces)
    (out / "summary.md").write_text(text)
    chart(workers, operators, args.top, out / "summary.png")
    print(text)
    print(f"wrote {out / 'summary.md'} and {out / 'summary.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
