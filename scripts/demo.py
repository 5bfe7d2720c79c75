#!/usr/bin/env python3
"""The demo: a real TorchServe with our handlers, a short real load, and what to look at next.

Starts TorchServe on free loopback ports (token auth on) with model_store/, profiles with
ENABLE_TORCH_PROFILER (sampled), sends a few seconds of load to both models at 4 concurrent
clients, prints throughput and p50/p90/p99, then stops the server.
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import threading
from pathlib import Path
from typing import Callable, Optional

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts import serving  # noqa: E402
from scripts.loadgen import closed_loop  # noqa: E402


def sample_image() -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (320, 240), (30, 90, 160))
    draw = ImageDraw.Draw(image)
    draw.ellipse((80, 40, 240, 200), fill=(240, 200, 40))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


def sender(server: serving.TorchServe, model: str, body: bytes) -> Callable[[], int]:
    local = threading.local()
    url = f"{server.inference_url}/predictions/{model}"
    headers = server._headers("inference")

    def send() -> int:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        return local.session.post(url, data=body, headers=headers, timeout=60).status_code

    return send


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=REPO / "model_store")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--out", type=Path, default=REPO / "results" / "demo")
    args = parser.parse_args(argv)

    if not (args.store / "resnet18.mar").is_file():
        print(f"{args.store} has no archives: run `make model-store` first", file=sys.stderr)
        return 2
    shutil.rmtree(args.out, ignore_errors=True)
    traces = args.out / "traces"
    env = {"ENABLE_TORCH_PROFILER": "1", "TS_PERF_PROFILER_DIR": str(traces)}
    print("starting TorchServe (token auth on) with model_store/ ...", flush=True)
    server = serving.start(args.store, args.out / "server", env=env, ready_models=["resnet18", "text_classifier"])
    try:
        loads = {
            "resnet18": sender(server, "resnet18", sample_image()),
            "text_classifier": sender(server, "text_classifier", b"The delivery was late but the support team fixed it."),
        }
        print(f"\n{args.concurrency} concurrent clients, {args.seconds:.0f} s per model\n")
        print(f"{'model':<16} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for model, send in loads.items():
            result = closed_loop(send, args.concurrency, duration=args.seconds, warmup=4)
            s = result.summary()
            print(f"{model:<16} {s['throughput_rps']:>8.1f} {s['p50_ms']:>8.1f} {s['p90_ms']:>8.1f} "
                  f"{s['p99_ms']:>8.1f} {sum(result.errors.values()):>7}")
        scrape = server.scrape()
        ours = sorted({line.split("{")[0] for line in scrape.splitlines() if line.startswith("ts_perf_")})
        print(f"\nmetrics:  {server.metrics_url}/metrics  ({len(ours)} torchserve-perf series while it ran: "
              f"{', '.join(ours[:6]) or 'none'})")
    finally:
        server.stop()
    trace_files = sorted(traces.rglob("*.json*")) if traces.exists() else []
    print(f"traces:   {traces}  ({len(trace_files)} Kineto trace files)")
    print(f"open them: {REPO / '.venv/bin/tensorboard'} --logdir {traces}")
    print(f"logs:     {args.out / 'server' / 'logs'}")
    print("server stopped; nothing left running.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
