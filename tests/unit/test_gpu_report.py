"""GPU measurement for bench/compare (tools/gpu_report.py): NVML samples summarised per GPU, the
sampler with a fake probe, the in-process limits on CPU (the GPU-only variants say why they fail)."""


from __future__ import annotations

import time

import pytest
import torch

from torchserve_perf.plugins.metrics.gpu import GpuSample
from torchserve_perf.tools.gpu_report import GpuSampler, host_limits, model_limits, summarise

MIB = 2 ** 20


def test_summarise_per_gpu():
    samples = [GpuSample("0", 10.0, 100 * MIB, 1000 * MIB), GpuSample("1", 50.0, 300 * MIB, 1000 * MIB),
               GpuSample("0", 90.0, 200 * MIB, 1000 * MIB), GpuSample("0", 50.0, 150 * MIB, 1000 * MIB)]
    first, second = summarise(samples)
    assert first.as_dict() == {"gpu": "0", "samples": 3, "util_mean_pct": 50.0, "util_max_pct": 90.0,
                               "memory_max_mib": 200, "memory_total_mib": 1000}
    assert second.samples == 1 and second.utilization_mean == 50.0
    assert summarise([]) == []


class FakeProbe:
    def __init__(self, gpu_id: int) -> None:
        self.gpu_id, self.calls = gpu_id, 0

    def sample(self):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("NVML hiccup")
        return GpuSample(str(self.gpu_id), 40.0 + self.gpu_id, (self.calls + 1) * MIB, 80 * MIB)


def test_sampler_samples_every_gpu_while_the_run_lasts():
    with GpuSampler([0, 1], interval_s=0.01, probe=FakeProbe) as gpus:
        time.sleep(0.2)
    usage = gpus.usage()
    assert [u["gpu"] for u in usage] == ["0", "1"]
    assert all(u["samples"] >= 3 for u in usage)  # the hiccup is skipped, sampling goes on
    assert usage[1]["util_mean_pct"] == 41.0
    calls = gpus.probes[0].calls
    time.sleep(0.05)
    assert gpus.probes[0].calls == calls  # stopped with the run


def test_sampler_without_gpus_reports_nothing():
    with GpuSampler([], probe=FakeProbe) as gpus:
        pass
    assert gpus.usage() == [] and gpus._thread is None


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


def test_model_limits_on_cpu_measure_or_say_why():
    points = model_limits(tiny, torch.device("cpu"), batches=(1, 2), variants=("eager_fp32", "fp16_cuda_graphs"),
                          seconds=0.05)
    assert [(p["variant"], p["batch"]) for p in points] == [("eager_fp32", 1), ("eager_fp32", 2),
                                                             ("fp16_cuda_graphs", 1), ("fp16_cuda_graphs", 2)]
    assert all(p["images_per_s"] > 0 for p in points[:2])
    assert all("error" in p and "images_per_s" not in p for p in points[2:])  # CUDA graphs need CUDA


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only answer")
def test_host_limits_are_skipped_without_cuda():
    assert "no CUDA" in host_limits()["skipped"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_host_limits_on_a_gpu():
    report = host_limits(quick=True)
    variants = {p["variant"] for p in report["model_limits"] if "images_per_s" in p}
    assert {"eager_fp32", "fp16_channels_last", "fp16_cuda_graphs"} <= variants
    assert {p["path"] for p in report["decode"]["points"]} >= {"pillow", "device"}


def test_bench_markdown_shows_gpu_use_and_limits():
    from torchserve_perf.tools.bench import gpu_lines

    report = {"runs": [{"label": "c=64", "gpu": [{"gpu": "0", "samples": 9, "util_mean_pct": 71.5, "util_max_pct": 99.0,
                                                  "memory_max_mib": 5120, "memory_total_mib": 81559}]},
                       {"label": "c=1"}],
              "gpu_limits": {"gpu": "NVIDIA H100", "model_limits": [
                  {"variant": "fp16_cuda_graphs", "batch": 128, "images_per_s": 40123.4},
                  {"variant": "fp16_compiled", "batch": 1, "error": "RuntimeError: boom"}],
                  "decode": {"points": [{"path": "nvjpeg", "threads": 8, "images_per_s": 9876.0}]}}}
    text = "\n".join(gpu_lines(report))
    assert "c=64: GPU 0 busy 72% on average (max 99%), memory up to 5120 of 81559 MiB" in text
    assert "fp16_cuda_graphs batch 128: 40123 img/s" in text and "RuntimeError: boom" in text
    assert "nvjpeg with 8 threads: 9876 img/s" in text
    assert gpu_lines({"runs": [{"label": "c=1"}]}) == []
    assert "no CUDA" in "\n".join(gpu_lines({"runs": [], "gpu_limits": {"skipped": "no CUDA device"}}))


def test_compare_report_has_a_gpu_section_when_gpus_were_sampled():
    from tests.unit.test_bench_compare import RAW, _results
    from torchserve_perf.tools import compare

    results = _results()
    results["ours_tuned"].runs[8]["gpu"] = [{"gpu": "0", "samples": 40, "util_mean_pct": 88.0, "util_max_pct": 100.0,
                                             "memory_max_mib": 9000, "memory_total_mib": 81559}]
    report = {
        "created": "now", "machine": {"cores": 16, "cpu": "cpu"}, "quick": False, "seconds": 20, "warmup": 5,
        "concurrencies": [1, 4, 8], "payload": {"name": "payload.jpg", "bytes": 1000}, "raw": RAW,
        "systems": {k: r.as_dict() for k, r in results.items()}, "ratios": compare.ratios(results, RAW, (1, 4, 8)),
        "goals": [], "tuned_source": "x", "client_ceiling": {}, "client_notes": [], "command": "make compare",
        "gpu_limits": {"skipped": "no CUDA device"},
    }
    text = compare.render(report)
    assert "## GPU" in text and "c=8: GPU 0 busy 88% on average (max 100%), memory up to 9000 of 81559 MiB" in text
    assert "GPU limits: no CUDA device" in text
    report["gpu_limits"] = None
    del results["ours_tuned"].runs[8]["gpu"]
    report["systems"] = {k: r.as_dict() for k, r in results.items()}
    assert "## GPU" not in compare.render(report)


def test_host_probe_uses_nvml_numbering_without_torch():
    from torchserve_perf.tools.gpu_report import HostGpuProbe

    class FakeNvml:
        def nvmlInit(self):
            pass

        def nvmlDeviceGetHandleByIndex(self, index):
            return f"handle-{index}"

        def nvmlDeviceGetHandleByUUID(self, uuid):  # pragma: no cover - must not be used
            raise AssertionError("looked up by torch's UUID")

        def nvmlDeviceGetUtilizationRates(self, handle):
            return type("U", (), {"gpu": 64})()

        def nvmlDeviceGetMemoryInfo(self, handle):
            return type("M", (), {"used": 5 * MIB, "total": 80 * MIB})()

    sample = HostGpuProbe(1, nvml=FakeNvml()).sample()
    assert sample == GpuSample("1", 64.0, 5 * MIB, 80 * MIB)


def test_decode_ceilings_measure_every_path_and_pool_size():
    from torchserve_perf.tools import decode_ceiling

    before = torch.get_num_threads()
    report = decode_ceiling.measure((1, 2), batch=2, seconds=0.05, device=torch.device("cpu"))
    assert torch.get_num_threads() == before  # restored
    assert [(p["path"], p["threads"]) for p in report["points"]] == [("pillow", 1), ("device", 1), ("pillow", 2),
                                                                      ("device", 2)]
    assert all(p["images_per_s"] > 0 for p in report["points"]) and "not CUDA" in report["nvjpeg"]

