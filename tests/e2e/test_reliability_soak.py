"""The 30-second soak (`make soak` runs 10 minutes): ResNet-18 on a real TorchServe at 8 clients with
sampled profiling and metrics on. Marked ``soak``: ``pytest -m soak`` runs it alone, ``-m "not soak"``
leaves it out. scripts/soak.py runs as `make soak` does and its JSON report is checked here.

Every check is hard: 0 errors, no worker replaced, each worker's RSS growth after warm-up under
5%, traces written and within the profiler's bound with private permissions, our metrics scraped.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.soak
def test_soak_30s_no_errors_no_growth_traces_within_bound(tmp_path, capsys):
    report_path = tmp_path / "soak.json"
    completed = subprocess.run([sys.executable, str(REPO / "scripts" / "soak.py"), "--duration", "30", "--warmup", "15",
                                "--workdir", str(tmp_path / "work"), "--json", str(report_path)],
                               capture_output=True, text=True, timeout=400)
    summary = completed.stdout[completed.stdout.find("soak:"):]
    with capsys.disabled():
        print(f"\n[soak 30 s]\n{summary}")
    assert report_path.is_file(), completed.stdout[-3000:] + completed.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["requests"] > 100, summary
    assert sum(report["errors"].values()) == 0, summary
    assert len(report["rss_mib"]) == 2 and not report["workers_restarted"], summary
    assert report["windows"] > 0 and 0 < report["trace_mb"] <= report["trace_bound_mb"], summary
    assert report["trace_permissions_ok"] and report["metrics_seen"], summary
    for rss in report["rss_mib"].values():
        assert rss["growth_pct"] < 5.0, summary
    assert completed.returncode == 0 and not report["failures"], summary
