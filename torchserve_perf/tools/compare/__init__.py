"""``torchserve-perf compare``: ResNet-18 through the in-process limit, stock TorchServe, our handlers
(defaults and tuned) and LitServe, on this machine, in one report.

- :mod:`.config`: the systems and the run's frozen config;
- :mod:`.systems`: what each server is (archive, model-config, environment) and how it starts;
- :mod:`.limit`: the in-process limit, run as a child process;
- :mod:`.runs`: the load, one system at a time or interleaved rounds;
- :mod:`.analysis`: ratios; :mod:`.goals`: goals files and how a goal is judged;
- :mod:`.report`: ``report.json`` and ``report.md``;
- :mod:`.cli`: the command line.
"""

from torchserve_perf.tools.compare.analysis import defaults_ratios, ratios
from torchserve_perf.tools.compare.cli import main
from torchserve_perf.tools.compare.config import SYSTEMS, TITLES, CompareConfig
from torchserve_perf.tools.compare.goals import Goal, GoalsError, evaluate, load_goals
from torchserve_perf.tools.compare.report import build_report, render
from torchserve_perf.tools.compare.results import SystemResult
from torchserve_perf.tools.compare.systems import (
    FALLBACK_TUNED,
    describe_model_config,
    tuned_model_config,
    tuned_settings,
)

__all__ = ["FALLBACK_TUNED", "SYSTEMS", "TITLES", "CompareConfig", "Goal", "GoalsError", "SystemResult", "build_report",
           "defaults_ratios", "describe_model_config", "evaluate", "load_goals", "main", "ratios", "render",
           "tuned_model_config", "tuned_settings"]
