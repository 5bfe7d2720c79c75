"""test_bench: the tests that start real processes (TorchServe, the archiver, load clients)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import png_bytes
from tests.unit.test_bench import _run, load_bench
from torchserve_perf.tools import serving
from torchserve_perf.tools.loadgen import Payload

REPO = Path(__file__).resolve().parents[2]


# The console script pip installed beside this interpreter (an editable install in a checkout).
COMMAND = str(Path(sys.executable).with_name("torchserve-perf"))


def run_bench(*args: Any, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([COMMAND, "bench", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def check_outputs(out: Path, runs: int) -> dict:
    """bench.json parses and is complete, bench.md has a row per run, bench.png is a real PNG."""
    from PIL import Image

    report = json.loads((out / "bench.json").read_text())
    assert len(report["runs"]) == runs
    for run in report["runs"]:
        ps = [run[k] for k in ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "p99.9_ms")]
        assert all(p is not None and p > 0 for p in ps) and ps == sorted(ps), run
        assert run["cdf_ms"][-1][1] == 1.0
    markdown = (out / "bench.md").read_text()
    assert "| run | requests | ok | errors | req/s | p50 ms | p90 ms | p95 ms | p99 ms | p99.9 ms |" in markdown
    assert all(f"| {run['label']} |" in markdown for run in report["runs"])
    with Image.open(out / "bench.png") as image:
        assert image.format == "PNG" and image.size[0] > 600
    return report


@pytest.fixture(scope="module")
def text_payload(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("payloads") / "review.txt"
    path.write_text("The delivery was late but the support team fixed it quickly.")
    return path


def test_bench_closed_and_open_loop_with_key_file(served: serving.TorchServe, text_payload: Path,
                                                  tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_bench("--url", served.inference_url, "--key-file", served.workdir / "key_file.json",
                     "--model", "text_classifier", "--payload", text_payload, "-c", 1, 3, "--rate", 20,
                     "--duration", 1.5, "--warmup", 0.5, "--out", out)
    assert done.returncode == 0, done.stderr + done.stdout
    report = check_outputs(out, runs=3)
    closed, opened = report["runs"][:2], report["runs"][2]
    assert [r["concurrency"] for r in closed] == [1, 3] and all(r["mode"] == "closed" for r in closed)
    assert all(r["errors"] == {} and r["ok"] > 3 for r in report["runs"])
    assert opened["mode"] == "open" and opened["offered_rate_rps"] == 20 and opened["start_lag_p99_ms"] is not None
    assert report["payloads"] == [{"name": "review.txt", "content_type": "text/plain", "bytes": text_payload.stat().st_size}]
    # the client measured its own ceiling at each closed-loop concurrency and at the open loop's client count
    assert set(report["client_ceiling"]) == {"1", "3", "64"}
    assert all(c["throughput_rps"] > 0 for c in report["client_ceiling"].values())
    assert "req/s" in done.stdout and "[c=" not in done.stderr  # progress and table on stdout


def test_bench_image_payload_with_token_flag(served: serving.TorchServe, tmp_path: Path) -> None:
    image = tmp_path / "red.png"
    image.write_bytes(png_bytes((256, 200)))
    out = tmp_path / "out"
    done = run_bench("--url", served.inference_url, f"--token={served.token['inference']['key']}", "--model", "resnet18",
                     "--payload", image, "-c", 2, "--duration", 1.5, "--warmup", 0.5, "--no-ceiling", "--out", out)
    assert done.returncode == 0, done.stderr + done.stdout
    report = check_outputs(out, runs=1)
    assert report["runs"][0]["ok"] >= 2 and report["client_ceiling"] == {}


def test_bench_wrong_token_is_reported_as_client_errors(served: serving.TorchServe, text_payload: Path,
                                                     tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_bench("--url", served.inference_url, "--token=not-the-token", "--model", "text_classifier",
                     "--payload", text_payload, "-c", 1, "--duration", 0.5, "--warmup", 0, "--no-ceiling", "--out", out)
    assert done.returncode == 1
    run = json.loads((out / "bench.json").read_text())["runs"][0]
    # TorchServe 0.12 answers a bad token with 400 ("Token Authorization failed")
    assert run["ok"] == 0 and run["errors"] and all(400 <= int(code) < 500 for code in run["errors"])
    assert run["p99_ms"] is None


def test_bench_starts_its_own_server_from_a_model_store(model_store: Path, text_payload: Path, tmp_path: Path) -> None:
    store = serving.copy_archives(["text_classifier.mar"], model_store, tmp_path / "store")
    out = tmp_path / "out"
    done = run_bench("--model-store", store, "--model", "text_classifier", "--payload", text_payload, "-c", 2,
                     "--duration", 1, "--warmup", 0.5, "--no-ceiling", "--out", out, timeout=300)
    assert done.returncode == 0, done.stderr + done.stdout
    report = check_outputs(out, runs=1)
    assert report["target"]["kind"] == "torchserve started by bench" and report["runs"][0]["errors"] == {}
    # the server it started is gone: no process carries its server id (torchserve_perf.tools.serving tags them)
    server_dir = Path(report["target"]["server_dir"])
    assert (server_dir / "logs").is_dir()
    assert not _processes_of(server_dir)


def _processes_of(server_dir: Path) -> list:
    """Processes that torchserve_perf.tools.serving started for the server in ``server_dir`` (it sets their TMPDIR)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["environ"]):
        try:
            environ = proc.info.get("environ") or {}
            if environ.get("TS_PERF_SERVER_ID") and environ.get("TMPDIR") == str(server_dir.resolve() / "tmp"):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_report_renders_without_a_server(tmp_path: Path) -> None:
    bench = load_bench()
    config = bench.BenchConfig("demo", (1, 4), (5.0,), 10, 1, 0, 8, True)
    runs = [_run(1, 20), _run(4, 50), _run(8, 5, mode="open", offered_rate=5.0)]
    runs[2].start_lags = [0.001] * len(runs[2].latencies)
    report = bench.build_report(config, {"kind": "running server", "url": "http://127.0.0.1:1"},
                                [Payload(b"x", "text/plain", "x.txt")], runs, {1: _run(1, 3000), 4: _run(4, 4000)})
    paths = bench.write_outputs(report, tmp_path)
    assert json.loads(paths["json"].read_text())["runs"][1]["throughput_rps"] == 50
    assert "not the bottleneck" in paths["markdown"].read_text()
    assert paths["png"].stat().st_size > 10_000

