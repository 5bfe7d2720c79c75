"""Done-when: a wheel of this repository, installed into a fresh venv beside TorchServe, runs
``torchserve-perf archive``, ``bench``, ``tune --quick``, ``compare --quick``, ``traces`` and
``metrics`` end to end against a real TorchServe, from a folder that is not the checkout.

The venv sees torch, TorchServe and the other heavy dependencies through a ``.pth`` line naming
this interpreter's site-packages (no reinstall). A plain path line does not run that folder's own
``.pth`` files, so the checkout's editable install stays invisible: ``torchserve_perf`` is only
importable there once the wheel is installed (checked before and after).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, class_from_file

MLP = '''import torch
from torch import nn


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
'''
ROW = [0.5, -1.0, 0.25, 2.0, 0.0, 1.5, -0.5, 1.0]


class Venv:
    """The fresh venv, and a runner for its commands with the cwd in tmp."""

    def __init__(self, root: Path) -> None:
        self.root, self.bin = root, root / "venv" / "bin"
        self.work = root / "work"
        self.work.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        self.env = {**env, "VIRTUAL_ENV": str(root / "venv"), "MPLBACKEND": "Agg"}

    def run(self, *args: Any, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(self.bin / "torchserve-perf"), *map(str, args)], cwd=self.work, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        if check:
            assert done.returncode == 0, f"torchserve-perf {' '.join(map(str, args))}: rc {done.returncode}\n" \
                                         f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    def python(self, code: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / "python"), "-c", code], cwd=self.work, env=self.env,
                              capture_output=True, text=True, timeout=120)


def _copy_sources(target: Path) -> None:
    """What ``pip wheel .`` of this working tree packages: every file git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(source.read_bytes())


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    root = tmp_path_factory.mktemp("wheel")
    source, dist = root / "src", root / "dist"
    _copy_sources(source)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "-w", str(dist), str(source)], check=True, cwd=root)
    wheels = list(dist.glob("torchserve_perf-*.whl"))
    assert len(wheels) == 1, list(dist.iterdir())

    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True)
    env = Venv(root)
    site = Path(env.python("import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip())
    (site / "_heavy_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # Before the wheel: torch is visible, our package is not (the checkout's editable .pth did not run).
    probe = env.python("import torch, ts\ntry:\n import torchserve_perf\nexcept ImportError:\n print('absent')")
    assert probe.stdout.strip() == "absent", probe.stdout + probe.stderr
    # TorchServe's console scripts, as pip would have written them had it installed TorchServe here:
    # the workers run under the interpreter of the `torchserve` that started them, this venv's.
    for name, target in (("torchserve", "ts.model_server:start"),
                         ("torch-model-archiver", "model_archiver.model_packaging:generate_model_archive")):
        module, function = target.split(":")
        script = env.bin / name
        script.write_text(f"#!{env.bin / 'python'}\nimport sys\nfrom {module} import {function}\n"
                          f"sys.exit({function}())\n")
        script.chmod(0o755)
    subprocess.run([str(env.bin / "python"), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--disable-pip-version-check", str(wheels[0])], check=True, env=env.env)
    assert (env.bin / "torchserve-perf").is_file()
    return env


def test_only_the_namespace_is_installed(venv: Venv) -> None:
    done = venv.python(
        "import importlib, json, sys, torchserve_perf.handlers as h, torchserve_perf.tools.archive as a\n"
        "found = {}\n"
        "for name in ('handlers', 'plugins', 'models', 'tools', 'scripts'):\n"
        "    try:\n        importlib.import_module(name); found[name] = 'importable'\n"
        "    except ImportError:\n        found[name] = 'absent'\n"
        "print(json.dumps({'handlers': h.__file__, 'archive': a.__file__, 'top': found, 'prefix': sys.prefix}))")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    venv_dir = str(venv.root / "venv")
    assert info["prefix"] == venv_dir
    assert info["handlers"].startswith(venv_dir) and info["archive"].startswith(venv_dir), info
    assert info["top"] == dict.fromkeys(("handlers", "plugins", "models", "tools", "scripts"), "absent"), info


@pytest.fixture(scope="module")
def user_model(venv: Venv) -> dict[str, Path]:
    """The user's own model: a class file and its state dict, a payload, and a suite file."""
    import torch

    work = venv.work
    (work / "tiny_mlp.py").write_text(MLP)
    torch.manual_seed(0)
    model = class_from_file(work / "tiny_mlp.py", "TinyMLP")().eval()
    torch.save(model.state_dict(), work / "tiny_mlp.pt")
    (work / "row.json").write_text(json.dumps({"inputs": ROW}))
    with torch.inference_mode():
        expected = model(torch.tensor([ROW])).tolist()[0]
    traces = work / "traces"
    (work / "profiled.yaml").write_text(
        "handler:\n  profiler:\n    enabled: true\n"
        f"    output_dir: {traces}\n    schedule: {{skip_first: 1, warmup: 1, active: 2}}\n")
    (work / "suite.yaml").write_text(
        "name: wheel\ntarget: {model_store: store}\ndefaults: {concurrency: [2], duration: 1.5, warmup: 0.5}\n"
        "models:\n  - name: mlp\n    payloads: [row.json]\n  - name: mlp_installed\n    payloads: [row.json]\n"
        "    rate: [15]\n")
    return {"expected": expected, "traces": traces}


def test_archive_bench_and_traces(venv: Venv, user_model: dict) -> None:
    common = ["--model-file", "tiny_mlp.py", "--weights", "tiny_mlp.pt", "--input-shape", "8", "--workers", "1",
              "--export-path", "store"]
    built = venv.run("archive", "--name", "mlp", *common, "--model-config", "profiled.yaml")
    assert "verified: loads; one row of [8] -> [1, 3]" in built.stdout
    venv.run("archive", "--name", "mlp_installed", *common, "--no-bundle")
    import zipfile

    bundled = zipfile.ZipFile(venv.work / "store" / "mlp.mar").namelist()
    assert "torchserve_perf/handlers/base.py" in bundled and "torchserve_perf/tools/bench/cli.py" not in bundled
    assert not [n for n in zipfile.ZipFile(venv.work / "store" / "mlp_installed.mar").namelist()
                if n.startswith("torchserve_perf/")]

    done = venv.run("bench", "--suite", "suite.yaml", "--out", "bench")
    report = json.loads((venv.work / "bench" / "suite.json").read_text())
    by_model = {m["config"]["model"]: m["runs"] for m in report["models"]}
    assert set(by_model) == {"mlp", "mlp_installed"}, done.stdout
    for runs in by_model.values():
        assert all(r["ok"] > 0 and r["errors"] == {} for r in runs), runs
    assert [r["mode"] for r in by_model["mlp_installed"]] == ["closed", "open"]
    assert "| mlp_installed | open 15/s |" in (venv.work / "bench" / "suite.md").read_text()
    # The unbundled archive's worker imported our handlers from the wheel's install in this venv.
    log = (venv.work / "bench" / "server" / "logs" / "model_log.log").read_text(errors="replace")
    sources = dict(re.findall(r"W-\d+-(\w+?)_1\.0 thread policy: .*; handlers from (\S+)", log))
    assert sources.get("mlp_installed", "").startswith(str(venv.root / "venv")), sources

    summary = venv.run("traces", user_model["traces"], "--out", "trace_summary")
    assert list(user_model["traces"].rglob("*.pt.trace.json*")), "the profiled run wrote no trace"
    text = (venv.work / "trace_summary" / "summary.md").read_text()
    # a row for the profiled worker with traces and batches counted, and the model's operators
    assert re.search(r"^\| W-\d+-mlp_1\.0 \| [1-9]\d* \| [1-9]", text, re.M), summary.stdout[-2000:]
    assert "`aten::" in text, text[-2000:]


def test_metrics_path_check_merge(venv: Venv) -> None:
    shipped = Path(venv.run("metrics", "path").stdout.strip())
    assert shipped.is_file() and str(shipped).startswith(str(venv.root / "venv"))
    venv.run("metrics", "check", shipped)
    own = venv.work / "own_metrics.yaml"
    own.write_text("dimensions:\n  - &model_name \"ModelName\"\nmodel_metrics:\n  counter:\n"
                   "    - name: MyRequests\n      unit: Count\n      dimensions: [*model_name]\n")
    lacking = venv.run("metrics", "check", own, check=False)
    assert lacking.returncode == 1 and lacking.stdout.strip()
    venv.run("metrics", "merge", own, "-o", venv.work / "merged.yaml")
    merged = (venv.work / "merged.yaml").read_text()
    assert "MyRequests" in merged
    venv.run("metrics", "check", venv.work / "merged.yaml")


def test_tune_quick(venv: Venv) -> None:
    venv.run("tune", "--quick", "--model", "text_classifier", "--max-points", "2", "--confirm-top", "0",
             "--out", "tune", timeout=300, check=False)
    best = json.loads((venv.work / "tune" / "text_classifier" / "best.json").read_text())
    assert best["throughput_rps"] > 0, best


def test_compare_quick(venv: Venv) -> None:
    venv.run("compare", "--quick", "--systems", "ours_default", "--concurrency", "1", "--seconds", "1",
             "--warmup", "0.5", "--out", "compare", timeout=300)
    report = json.loads((venv.work / "compare" / "report.json").read_text())
    run = report["systems"]["ours_default"]["runs"]["1"]
    assert report["systems"]["ours_default"]["error"] is None and run["ok"] > 0, report["systems"]
