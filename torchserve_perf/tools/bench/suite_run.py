"""Running a suite (:mod:`torchserve_perf.tools.bench.suite` reads the file) into one report: suite.json, suite.md."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Optional

from torchserve_perf.tools.bench.config import BenchConfig
from torchserve_perf.tools.bench.render import render_markdown
from torchserve_perf.tools.bench.report import build_report
from torchserve_perf.tools.bench.run import run_benchmark, server_dir, start_server
from torchserve_perf.tools.bench.suite import Suite
from torchserve_perf.tools.loadgen import Payload, ProgressFn


def run_suite(suite: Suite, out: Path, payloads: dict[str, list[Payload]], token: Optional[str] = None,
              progress: Optional[ProgressFn] = print) -> dict:
    """Bench every model of the suite against one server (``token`` for a running one); returns the report."""
    target, server = suite.target, None
    if target is None:
        raise ValueError("the suite has no target; give --url or --model-store")
    if target.model_store:
        archives = [m.archive or f"{m.name}.mar" for m in suite.models]
        missing = [a for a in archives if not (target.model_store / a).is_file()]
        if missing:
            raise ValueError(f"target.model_store {target.model_store} has no {', '.join(missing)}; "
                             "build it with torchserve-perf archive or set archive: per model")
        server = start_server(target.model_store, out, [f"{m.name}={a}" for m, a in zip(suite.models, archives)],
                              [m.name for m in suite.models], progress)
        url, token = server.inference_url, server.key()
        described = {"kind": "torchserve started by bench --suite", "url": url,
                     "model_store": str(target.model_store), "server_dir": str(server_dir(out))}
    else:
        url = str(target.url)
        described = {"kind": "running server", "url": url, "token": "given" if token else "none"}
    reports = []
    try:
        for model in suite.models:
            load = model.load
            config = BenchConfig(model=model.name, concurrencies=load.concurrency, rates=load.rate,
                                 duration=load.duration, warmup=load.warmup, seed=load.seed,
                                 max_in_flight=load.max_in_flight, ceiling=load.ceiling)
            if progress:
                progress(f"[{model.name}] {url}{model.request_path}")
            runs, ceilings = run_benchmark(config, url + model.request_path, token, payloads[model.name],
                                           progress=progress)
            reports.append(build_report(config, {**described, "path": model.request_path},
                                        payloads[model.name], runs, ceilings))
    finally:
        if server is not None:
            server.stop()
    return {
        "tool": "torchserve-perf bench --suite",
        "suite": suite.name,
        "suite_file": str(suite.source),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "target": described,
        "models": reports,
    }


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def render_suite_markdown(report: dict) -> str:
    lines = [f"# Benchmark suite: {report['suite']}", "",
             f"- from {report['suite_file']}, {report['created']}",
             f"- target: {report['target']['url']} ({report['target']['kind']})", "",
             "| model | run | ok | errors | req/s | p50 ms | p99 ms |", "|---|---|---:|---:|---:|---:|---:|"]
    for model in report["models"]:
        for run in model["runs"]:
            lines.append(f"| {model['config']['model']} | {run['label']} | {run['ok']} | {sum(run['errors'].values())} "
                         f"| {_num(run['throughput_rps'])} | {_num(run['p50_ms'])} | {_num(run['p99_ms'])} |")
    lines.append("")
    for model in report["models"]:
        # Each model's own section is bench's report, one heading level down.
        lines += ["#" + line if line.startswith("#") else line for line in render_markdown(model).splitlines()]
        lines.append("")
    return "\n".join(lines)


def write_suite(report: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = {"json": out / "suite.json", "markdown": out / "suite.md"}
    written["json"].write_text(json.dumps(report, indent=2) + "\n")
    written["markdown"].write_text(render_suite_markdown(report))
    return written
