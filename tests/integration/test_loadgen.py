"""test_loadgen: the tests that start real processes (TorchServe, the archiver, load clients)."""

from __future__ import annotations

from pathlib import Path

from torchserve_perf.tools import loadgen
from torchserve_perf.tools.loadgen import Payload


def test_http_sender_and_client_ceiling_against_the_trivial_endpoint(tmp_path: Path) -> None:
    payloads = [Payload(b"a" * 1000, "image/jpeg"), Payload(b"{}", "application/json")]
    with loadgen.TrivialServer() as server:
        send = loadgen.HttpSender(server.url, payloads, token="t0k")
        result = loadgen.closed_loop(send, 4, duration=0.5)
        assert result.errors == {} and len(result.latencies) > 100  # keep-alive, cheap client
        assert result.client_cpu_ms_per_request < 5
    ceilings = loadgen.client_ceiling(payloads, [1, 2], duration=0.3)
    assert sorted(ceilings) == [1, 2] and all(r.throughput > 100 for r in ceilings.values())
    assert not list(tmp_path.glob("*.port"))

