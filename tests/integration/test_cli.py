"""The real ``torchserve-perf`` console script: every subcommand has --help, and a usage error is
one line on stderr with exit code 2. Runs the installed script as a subprocess (several at once)."""


from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from torchserve_perf.cli import COMMANDS

COMMAND = str(Path(sys.executable).with_name("torchserve-perf"))


# argv -> the start of the one error line. Each is a usage error the subcommand itself detects.
USAGE_ERRORS: dict[tuple[str, ...], str] = {
    (): "torchserve-perf: error: give a command: archive, bench",
    ("no-such-command",): "torchserve-perf: error: unknown command 'no-such-command'",
    ("archive", "--name", "m"): "torchserve-perf archive: error: give one model",
    ("archive", "--name", "m", "--model-file", "m.py"): "torchserve-perf archive: error: --model-file needs --weights",
    ("archive", "--name", "m", "--torchscript", "m.pt", "--topk", "3"): "torchserve-perf archive: error: --topk",
    ("bench",): "torchserve-perf bench: error: give --url",
    ("bench", "--suite", "s.yaml", "--rate", "5"): "torchserve-perf bench: error: --rate: with --suite",
    ("bench", "--suite", "missing-suite.yaml", "--url", "http://127.0.0.1:9"): "torchserve-perf bench: error: ",
    # an archive missing from --model-store: TorchServe would only log it and never become ready
    ("bench", "--model-store", ".", "--model", "nothere"): "torchserve-perf bench: error: . has no nothere.mar",
    ("tune", "--bogus"): "torchserve-perf tune: error: unrecognized arguments: --bogus",
    ("tune", "compare"): "torchserve-perf tune compare: error:",
    ("compare", "--systems", "nope"): "torchserve-perf compare: error: argument --systems",
    ("traces",): "torchserve-perf traces: error: the following arguments are required: traces",
    ("metrics",): "torchserve-perf metrics: error:",
    ("metrics", "merge"): "torchserve-perf metrics merge: error:",
    ("model-store", "--bogus"): "torchserve-perf model-store: error: unrecognized arguments",
    ("demo", "--seconds", "x"): "torchserve-perf demo: error: argument --seconds",
}


def _run(argv: tuple[str, ...], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([COMMAND, *argv], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, ...], subprocess.CompletedProcess]:
    """Every --help and every usage error above, run in parallel (most import torch: ~2 s each)."""
    cwd = tmp_path_factory.mktemp("cli")
    runs = [(name, "--help") for name in COMMANDS] + [("--help",), ("metrics", "merge", "--help"),
                                                       ("tune", "compare", "--help")] + list(USAGE_ERRORS)
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(runs, pool.map(lambda argv: _run(argv, cwd), runs)))


def test_top_level_help_lists_every_command(results: dict) -> None:
    done = results[("--help",)]
    assert done.returncode == 0
    for name, (_, summary) in COMMANDS.items():
        assert f"  {name}" in done.stdout and summary in done.stdout


@pytest.mark.parametrize("argv", [("metrics", "merge", "--help"), ("tune", "compare", "--help")])
def test_nested_subcommands_have_help(results: dict, argv: tuple[str, ...]) -> None:
    done = results[argv]
    assert done.returncode == 0 and done.stdout.startswith(f"usage: torchserve-perf {' '.join(argv[:-1])}")


@pytest.mark.parametrize("argv", list(USAGE_ERRORS), ids=lambda argv: " ".join(argv) or "(nothing)")
def test_usage_error_is_one_line_and_exit_2(results: dict, argv: tuple[str, ...]) -> None:
    done = results[argv]
    assert done.returncode == 2, (done.returncode, done.stdout[-500:], done.stderr[-500:])
    assert done.stdout == "", done.stdout[-500:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(USAGE_ERRORS[argv]), lines[0]

@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_subcommand_has_help(results: dict, name: str) -> None:
    done = results[(name, "--help")]
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: torchserve-perf {name}"), done.stdout[:200]
    assert len(done.stdout.splitlines()) > 3 and not done.stderr.strip(), done.stderr


def test_version() -> None:
    from torchserve_perf import __version__

    done = _run(("--version",), Path.cwd())
    assert done.returncode == 0 and done.stdout.strip() == f"torchserve-perf {__version__}"

