"""``torchserve-perf bench``: benchmark a model, or a suite of them, into reports.

* :mod:`.config`: :class:`BenchConfig`, what one benchmark runs.
* :mod:`.run`: running it (ceilings, warm-up, the loads) and starting a server for it.
* :mod:`.report`: the report dict and its notes on the client; :mod:`.render`: bench.md/.png/.json.
* :mod:`.suite`: the suite file; :mod:`.suite_run`: running a suite into one report.
* :mod:`.cli`: the command line.
"""

from torchserve_perf.tools.bench.cli import explain_usage_error, main, parse_args, suite_main
from torchserve_perf.tools.bench.config import BenchConfig
from torchserve_perf.tools.bench.render import gpu_lines, render_markdown, render_png, write_outputs
from torchserve_perf.tools.bench.report import (
    CEILING_WARN_SHARE,
    CLIENT_CPU_WARN_SHARE,
    build_report,
    ceiling_notes,
)
from torchserve_perf.tools.bench.run import run_benchmark, server_dir, start_server
from torchserve_perf.tools.bench.suite_run import render_suite_markdown, run_suite, write_suite

__all__ = [
    "CEILING_WARN_SHARE", "CLIENT_CPU_WARN_SHARE", "BenchConfig", "build_report", "ceiling_notes",
    "explain_usage_error", "gpu_lines", "main", "parse_args", "render_markdown", "render_png",
    "render_suite_markdown", "run_benchmark", "run_suite", "server_dir", "start_server", "suite_main",
    "write_outputs", "write_suite",
]
