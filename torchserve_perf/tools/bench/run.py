"""Running a benchmark: the client's ceiling, a warm-up, then each load while the GPUs are sampled."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Sequence

from torchserve_perf.tools.bench.config import BenchConfig
from torchserve_perf.tools.gpu_report import GpuSampler
from torchserve_perf.tools.loadgen import LoadResult, Payload, ProgressFn, Target, client_ceiling, run_load

if TYPE_CHECKING:
    from torchserve_perf.tools.serving import TorchServe


def run_benchmark(config: BenchConfig, url: str, token: Optional[str], payloads: Sequence[Payload], *,
                  progress: Optional[ProgressFn] = print,
                  after_run: Optional[Callable[[LoadResult], None]] = None) -> tuple[list[LoadResult],
                                                                                     dict[int, LoadResult]]:
    """The runs of ``config`` against ``url``, and the client's ceilings (empty unless ``config.ceiling``).
    ``after_run`` sees each run as it ends, while the server still holds what the run made it hold."""
    target = Target.of(url, payloads, token=token)
    ceilings: dict[int, LoadResult] = {}
    if config.ceiling:  # measured with as many client processes as the runs use
        ceilings = client_ceiling(payloads, config.ceiling_levels(), duration=min(2.0, config.duration),
                                  processes=config.client_processes)
        if progress:
            progress("client ceiling: " + ", ".join(f"{r.label()} {r.throughput:.0f} req/s" for r in ceilings.values()))
    warmup = config.warmup_load()
    if warmup is not None:
        run_load(target, warmup, config.client_processes)
    runs = []
    for load in config.loads():
        with GpuSampler() as gpus:  # NVML utilisation and memory while the run lasts (nothing without GPUs)
            run = run_load(target, load, config.client_processes, progress=progress)
        run.gpu = gpus.usage()
        runs.append(run)
        if after_run is not None:
            after_run(run)
        if progress:
            progress(run.line())
    return runs, ceilings


def server_dir(out: Path) -> Path:
    """Where a server started by bench works; its logs stay there for a look afterwards."""
    return out / "server"


def start_server(model_store: Path, out: Path, models: Sequence[str], ready_models: Sequence[str],
                 progress: Optional[ProgressFn], properties: Optional[Mapping[str, str]] = None) -> TorchServe:
    """A TorchServe serving ``models`` from ``model_store``, working in :func:`server_dir`."""
    from torchserve_perf.tools import serving

    workdir = server_dir(out)
    shutil.rmtree(workdir, ignore_errors=True)
    if progress:
        archives = ", ".join(m.rpartition("=")[2] for m in models)  # a model is NAME=ARCHIVE or ARCHIVE
        progress(f"starting TorchServe from {model_store} ({archives}) in {workdir} ...")
    return serving.start(model_store, workdir, models=list(models), ready_models=list(ready_models),
                         properties=properties)
