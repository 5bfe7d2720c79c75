"""What auto's search leaves behind: TorchScript's global functions are released when nothing served uses them."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from torchserve_perf.plugins.optimizations.auto import uses_torchscript


class Wrapper(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner


class Runner:  # a plain object that holds the served model, as the ORT / OpenVINO runners do
    def __init__(self, model: object) -> None:
        self.model = model


def _scripted() -> torch.jit.ScriptModule:
    return torch.jit.trace(nn.Linear(2, 2).eval(), torch.zeros(1, 2), _compilation_unit=torch._C.CompilationUnit())


@pytest.mark.parametrize("eager, chosen, expected", [
    ("module", "module", False),
    ("module", "runner", False),
    ("module", "script", True),
    ("module", "wrapped script", True),
    ("module", "runner of script", True),
    ("script", "module", True),
])
def test_uses_torchscript(eager: str, chosen: str, expected: bool) -> None:
    make = {"module": lambda: nn.Linear(2, 2), "runner": lambda: Runner(object()), "script": _scripted,
            "wrapped script": lambda: Wrapper(_scripted()), "runner of script": lambda: Runner(_scripted())}
    assert uses_torchscript(make[eager](), make[chosen]()) is expected


SEARCH = textwrap.dedent("""
    import torch
    from torch import nn
    from torchserve_perf.plugins.optimizations import Runtime, standard_registry
    from torchserve_perf.plugins.optimizations.auto import search, torchscript_functions
    from torchserve_perf.plugins.optimizations.config import OptimizationConfig
    from torchserve_perf.plugins.optimizations.parity import Reference

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(2, 8)
    min_speedup = float({min_speedup})
    config = OptimizationConfig.from_mapping({{"chain": ["auto"], "auto": {{"candidates": ["torchscript"],
                                             "cache": False, "min_speedup": min_speedup}}}})
    runtime = Runtime(device=torch.device("cpu"), intra_op_threads=1, inter_op_threads=1)
    outcome = search(model, config, Reference.capture(model, [x[:1], x]), runtime, standard_registry(entry_points=False))
    print(outcome.chain.applied, torchscript_functions())
""")


@pytest.mark.parametrize("min_speedup, applied, left", [
    (1000, "[]", lambda n: n == 0),          # eager kept: the candidate's trace is released
    (0.001, "['torchscript']", lambda n: n > 0),  # TorchScript serves: its functions stay
])
def test_search_releases_torchscript_only_when_nothing_served_uses_it(min_speedup, applied, left) -> None:
    # A process of its own: the release empties a process-wide table, and this one's tests fill it.
    done = subprocess.run([sys.executable, "-c", SEARCH.format(min_speedup=min_speedup)], capture_output=True,
                          text=True, timeout=240, check=True)
    got_applied, count = done.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert got_applied == applied and left(int(count))
