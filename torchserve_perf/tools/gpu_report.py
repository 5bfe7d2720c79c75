"""What a GPU host can do, for ``bench`` and ``compare``: the model's in-process limit per variant,
the decode ceilings, and GPU utilisation and memory sampled through NVML during each load run.

* :func:`model_limits`: ResNet-18 images per second in process, at batch 1, 8 and 128, for eager
  fp32, fp16 channels_last, fp16 channels_last with CUDA graphs (the bucketed capture the handler
  uses) and fp16 channels_last compiled. The served numbers are judged against these.
* :func:`host_limits`: those and :func:`decode_ceiling.measure` (CPU pool, device resize, nvjpeg);
  ``{"skipped": why}`` on a host without CUDA.
* :class:`GpuSampler`: a thread sampling every GPU through :class:`NvmlProbe` while a run lasts;
  :func:`summarise` turns the samples into mean/max utilisation and peak memory per GPU.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from torchserve_perf.plugins.metrics.gpu import GpuSample, NvmlProbe

BATCHES = (1, 8, 128)
VARIANTS = ("eager_fp32", "fp16_channels_last", "fp16_cuda_graphs", "fp16_compiled")


# ---- NVML during a run ------------------------------------------------------------------------------
@dataclass(frozen=True)
class GpuUsage:
    device_id: str
    samples: int
    utilization_mean: float
    utilization_max: float
    memory_max_bytes: int
    memory_total_bytes: int

    def as_dict(self) -> dict:
        return {"gpu": self.device_id, "samples": self.samples, "util_mean_pct": round(self.utilization_mean, 1),
                "util_max_pct": round(self.utilization_max, 1),
                "memory_max_mib": round(self.memory_max_bytes / 2 ** 20), "memory_total_mib":
                round(self.memory_total_bytes / 2 ** 20)}


def summarise(samples: Sequence[GpuSample]) -> list[GpuUsage]:
    """Per GPU: how busy it was on average and at most, and its peak memory. Pure."""
    by_gpu: dict[str, list[GpuSample]] = {}
    for sample in samples:
        by_gpu.setdefault(sample.device_id, []).append(sample)
    return [GpuUsage(gpu, len(s), sum(x.utilization_percent for x in s) / len(s),
                     max(x.utilization_percent for x in s), max(x.memory_used_bytes for x in s),
                     max(x.memory_total_bytes for x in s))
            for gpu, s in sorted(by_gpu.items())]


def gpu_count() -> int:
    """GPUs NVML sees on this host (the server's, when bench runs beside it); 0 without NVML.
    NVML rather than torch: the load client need not import torch."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # pynvml missing, no driver, no GPU
        return 0


class HostGpuProbe(NvmlProbe):
    """NVML's own numbering of the host's GPUs: the load client samples every GPU without importing
    torch (matching torch's numbering would create a CUDA context in the client, on the GPU it measures)."""

    def _device_handle(self, nvml: Any) -> Any:
        return nvml.nvmlDeviceGetHandleByIndex(self.gpu_id)


class GpuSampler:
    """``with GpuSampler() as gpus: run()`` then ``gpus.usage()``; samples nothing where NVML is absent."""

    def __init__(self, gpu_ids: Optional[Sequence[int]] = None, interval_s: float = 0.25,
                 probe: Callable[[int], Any] = HostGpuProbe) -> None:
        ids = list(range(gpu_count())) if gpu_ids is None else list(gpu_ids)
        self.probes = [probe(i) for i in ids]
        self.interval_s = interval_s
        self.samples: list[GpuSample] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _run(self) -> None:
        while True:
            for probe in self.probes:
                try:
                    sample = probe.sample()
                except Exception:  # a sampling hiccup must not end the run
                    sample = None
                if sample is not None:
                    self.samples.append(sample)
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> GpuSampler:
        if self.probes:
            self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def usage(self) -> list[dict]:
        return [u.as_dict() for u in summarise(self.samples)]


# ---- the model in process ---------------------------------------------------------------------------
def images_per_second(model: Callable[[Any], Any], x: Any, seconds: float, sync: Callable[[], None]) -> float:
    import torch

    with torch.inference_mode():
        for _ in range(3):
            model(x)
        sync()
        done, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds or done == 0:
            model(x)
            done += x.shape[0]
        sync()
    return done / (time.perf_counter() - began)


def variant(name: str, model: Any, device: Any, batch: int) -> tuple[Callable[[Any], Any], Any]:
    """The callable and input of one variant (built fresh, so variants never share state)."""
    import copy

    import torch

    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    if name == "eager_fp32":
        return model, x
    half = copy.deepcopy(model).half().to(memory_format=torch.channels_last)
    xh = x.half().contiguous(memory_format=torch.channels_last)
    if name == "fp16_channels_last":
        return half, xh
    if name == "fp16_cuda_graphs":
        from torchserve_perf.plugins.optimizations.cuda_graphs import CapturedGraph

        return CapturedGraph(half, xh, warmup_runs=3), xh
    if name == "fp16_compiled":
        return torch.compile(half, dynamic=False), xh
    raise ValueError(f"unknown variant {name!r}")


def model_limits(make_model: Callable[[], Any], device: Any, batches: Sequence[int] = BATCHES,
                 variants: Sequence[str] = VARIANTS, seconds: float = 2.0,
                 progress: Optional[Callable[[dict], None]] = None) -> list[dict]:
    """Images per second of the model in process, per variant and batch; a failing variant says why."""
    import torch

    sync = torch.cuda.synchronize if getattr(device, "type", str(device)) == "cuda" else (lambda: None)
    model = make_model().eval().to(device)
    points = []
    for name in variants:
        for batch in batches:
            point: dict[str, Any] = {"variant": name, "batch": batch}
            try:
                began = time.perf_counter()
                run, x = variant(name, model, device, batch)
                point["images_per_s"] = round(images_per_second(run, x, seconds, sync), 1)
                point["setup_s"] = round(time.perf_counter() - began - seconds, 1)
            except Exception as exc:  # e.g. fp16 on a CPU without it, a compile failure: reported, not fatal
                point["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            points.append(point)
            if progress:
                progress(point)
    return points


def resnet18() -> Any:
    from torchserve_perf.models.resnet18 import ResNet18
    from torchserve_perf.models.seeded import seeded_state_dict

    model = ResNet18()
    model.load_state_dict(seeded_state_dict(ResNet18))
    return model


def host_limits(quick: bool = False, progress: Optional[Callable[[str], None]] = None) -> dict:
    """On a CUDA host: ResNet-18's in-process limits and the decode ceilings; else why they are skipped."""
    import os

    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device: the GPU limits are measured on GPU hosts only"}
    from torchserve_perf.tools import decode_ceiling

    device = torch.device("cuda", 0)
    say = progress or (lambda line: None)
    seconds = 0.5 if quick else 2.0
    limits = model_limits(resnet18, device, seconds=seconds, progress=lambda p: say(
        f"  in process {p['variant']:<20} batch {p['batch']:<4} "
        + (f"{p['images_per_s']:9.0f} img/s" if "images_per_s" in p else p.get("error", ""))))
    cores = os.cpu_count() or 1
    threads = sorted({1, max(1, cores // 2), cores})
    decode = decode_ceiling.measure(threads, batch=16, seconds=seconds, device=device, progress=lambda p: say(
        f"  decode {p.path:<7} threads {p.threads:<3} {p.images_per_s:9.0f} img/s"))
    return {"gpu": torch.cuda.get_device_name(device), "model": "resnet18", "model_limits": limits,
            "decode": decode}


def render_lines(runs: Sequence[tuple[str, dict]], limits: Optional[dict]) -> list[str]:
    """Markdown bullets: GPU use per (label, run summary), then the in-process limits and decode ceilings."""
    lines = []
    for label, run in runs:
        for gpu in run.get("gpu") or []:
            lines.append(f"- {label}: GPU {gpu['gpu']} busy {gpu['util_mean_pct']:.0f}% on average "
                         f"(max {gpu['util_max_pct']:.0f}%), memory up to {gpu['memory_max_mib']} of "
                         f"{gpu['memory_total_mib']} MiB")
    limits = limits or {}
    if limits.get("skipped"):
        lines.append(f"- GPU limits: {limits['skipped']}")
    for point in limits.get("model_limits", []):
        value = f"{point['images_per_s']:.0f} img/s" if "images_per_s" in point else point.get("error", "")
        lines.append(f"- in process on {limits.get('gpu')}: {point['variant']} batch {point['batch']}: {value}")
    for point in (limits.get("decode") or {}).get("points", []):
        lines.append(f"- decode ceiling: {point['path']} with {point['threads']} threads: "
                     f"{point['images_per_s']:.0f} img/s")
    return (["**GPU**", ""] + lines + [""]) if lines else []


def limits_in_child(quick: bool, out: Path) -> dict:
    """:func:`host_limits` in a child process: the caller never holds a CUDA context while servers run."""
    import json
    import subprocess
    import sys

    command = [sys.executable, "-m", "torchserve_perf.tools.gpu_report", "--out", str(out)] + (["--quick"] if quick else [])
    done = subprocess.run(command)  # noqa: S603 - this interpreter and our own module, no shell
    if done.returncode != 0 or not out.is_file():
        return {"skipped": f"the GPU limits child failed (exit {done.returncode})"}
    return json.loads(out.read_text())


def main(argv: Optional[list[str]] = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(description="this host's GPU limits: model in process and decode ceilings")
    parser.add_argument("--out", type=Path, help="write the JSON here (default: print it)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    report = host_limits(args.quick, lambda line: print(line, flush=True))
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
