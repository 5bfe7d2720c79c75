"""``torchserve-perf``: one command for the tools. Each subcommand lives in its own module, imported
only when it runs, so ``torchserve-perf --help`` stays fast and imports no torch."""

from __future__ import annotations

import importlib
import sys
from typing import Optional, Sequence

from torchserve_perf import __version__

# name -> (module with main(argv), one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "archive": ("torchserve_perf.tools.archive",
                "build a .mar for your own model (state dict, TorchScript or torch.export) with our handler"),
    "bench": ("torchserve_perf.tools.bench",
              "benchmark a model: closed loop at N clients or Poisson open loop; or a YAML suite (--suite)"),
    "tune": ("torchserve_perf.tools.tuning.cli",
             "find workers/threads/batch/delay/optimizations with the most throughput under a p99 target"),
    "compare": ("torchserve_perf.tools.compare",
                "side by side: in-process limit, stock TorchServe, ours (defaults and tuned), LitServe"),
    "traces": ("torchserve_perf.tools.traces", "summarise Kineto traces: where the time goes, per phase and worker"),
    "metrics": ("torchserve_perf.tools.metrics_cli", "the metrics YAML: path | merge | check"),
    "model-store": ("torchserve_perf.tools.model_store", "build the demo model store (ResNet-18, text classifier)"),
    "demo": ("torchserve_perf.tools.demo", "serve the demo model store under load and show what to look at"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: torchserve-perf COMMAND [options]   (torchserve-perf COMMAND --help for each)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.stderr.write(f"torchserve-perf: error: give a command: {', '.join(COMMANDS)} (see --help)\n")
        return 2
    if args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] == "--version":
        print(f"torchserve-perf {__version__}")
        return 0
    name = args[0]
    if name not in COMMANDS:
        sys.stderr.write(f"torchserve-perf: error: unknown command {name!r}; choose from {', '.join(COMMANDS)} "
                         "(see --help)\n")
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(args[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
