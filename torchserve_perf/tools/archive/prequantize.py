"""``--calibration``: the int8 models quantized while the archive is built, and carried in it.

Quantizing takes seconds to minutes (NNCF, ONNX Runtime's calibration), which a worker would
otherwise spend on its first load on every host. Here the archive tool runs the int8 plugins' own
quantizing code (plugins/optimizations/quantized_store.py) with the archive's ``quantized/`` folder
as their cache, and stores fp32's scores on the held-out samples beside them. A worker that finds
them only compiles the model and runs the accuracy gate on its own kernels; one whose key differs
(other weights, other library versions) quantizes at load as before.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from torchserve_perf.tools.archive.plan import ArchivePlan

# The packages each int8 plugin quantizes with: without them here, the workers quantize at load.
PACKAGES = {"openvino_int8": ("openvino", "nncf"), "int8": ("onnxruntime", "onnx")}


def int8_plugins(model_config: Mapping[str, Any]) -> tuple[str, ...]:
    """The int8 plugins a worker may run: those of an explicit chain, or those auto may try. Pure."""
    section = dict((model_config.get("handler") or {}).get("optimizations") or {})
    chain = [str(name) for name in section.get("chain") or []]
    if chain == ["auto"]:
        auto = dict(section.get("auto") or {})
        named = {str(n) for n in auto.get("allow") or []} | {str(n) for n in auto.get("candidates") or []}
        return tuple(name for name in PACKAGES if name in named)
    return tuple(name for name in PACKAGES if name in chain)


def _model(plan: ArchivePlan) -> torch.nn.Module:
    from torchserve_perf.handlers.loading import eval_mode, load_archived_model

    source = plan.source
    manifest = {"model": {"serializedFile": str(source.serialized_file.resolve()),
                          **({"modelFile": str(source.model_file.resolve())} if source.model_file else {})}}
    return eval_mode(load_archived_model("", manifest, torch.device("cpu")))


def prequantize(plan: ArchivePlan, samples_file: Path, folder: Path) -> dict[str, str]:
    """Fill ``folder`` (the archive's ``quantized/``) with the int8 models of ``plan``'s plugins and
    fp32's held-out scores. Returns, per plugin, what happened in words (for the archive's output)."""
    plugins = int8_plugins(plan.model_config)
    if not plugins or plan.source.kind == "hf":
        return {}
    model = _model(plan)
    with working_folder(folder.parent):  # where the plugins look for an archive's artefacts: none yet
        return _quantize_all(plan, model, samples_file, folder, plugins)


@contextlib.contextmanager
def working_folder(path: Path) -> Iterator[None]:
    """Run in ``path``: the plugins look for an archive's ``quantized/`` (and a ``prebuilt`` graph)
    relative to the working folder, which in a worker is the archive's; here it is the staging folder."""
    before = os.getcwd()
    path.mkdir(parents=True, exist_ok=True)
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _quantize_all(plan: ArchivePlan, model: torch.nn.Module, samples_file: Path, folder: Path,
                  plugins: tuple[str, ...]) -> dict[str, str]:
    from torchserve_perf.plugins.optimizations import calibration
    from torchserve_perf.plugins.optimizations.auto_cache import model_digest
    from torchserve_perf.plugins.optimizations.chain import step_context
    from torchserve_perf.plugins.optimizations.config import OptimizationConfig
    from torchserve_perf.plugins.optimizations.interface import Runtime
    from torchserve_perf.plugins.optimizations.parity import Reference, warmup_inputs
    from torchserve_perf.plugins.optimizations.registry import standard_registry

    section = (plan.model_config.get("handler") or {}).get("optimizations") or {}
    config = OptimizationConfig.from_mapping(section, "handler.optimizations")
    registry = standard_registry()
    runtime = Runtime(device=torch.device("cpu"), intra_op_threads=torch.get_num_threads(), inter_op_threads=1,
                      cache_dir=str(folder), batch_size=int(plan.model_config.get("batchSize", 1) or 1))
    digest = model_digest(model)
    rows = torch.load(samples_file, map_location="cpu", weights_only=True)["samples"]
    reference = Reference.capture(model, warmup_inputs(rows[:1], config.warmup, runtime))
    done: dict[str, str] = {}
    for name in plugins:
        missing = [p for p in PACKAGES[name] if importlib.util.find_spec(p) is None]
        if missing:
            done[name] = f"not quantized here ({missing[0]} is not installed): workers quantize at load"
            continue
        step = step_context(name, config, reference, runtime, registry)
        samples = calibration.load(samples_file, step.options.holdout_every, rows[:1])
        started = time.perf_counter()
        try:
            if name == "openvino_int8":
                from torchserve_perf.plugins.optimizations.openvino_runtime import quantized_model

                quantized_model(model, step, samples, samples_file, digest)
            else:
                from torchserve_perf.plugins.optimizations.onnx_int8 import quantized_graph

                quantized_graph(model, step, samples, samples_file, digest)
            calibration.reference_scores(model, digest, samples_file, samples, step, str(folder))
        except Exception as exc:  # the archive is still good: its workers quantize at load
            done[name] = f"not quantized here ({type(exc).__name__}: {exc}): workers quantize at load"
            continue
        done[name] = f"quantized in {time.perf_counter() - started:.1f} s"
    for lock in folder.rglob("*.lock"):
        lock.unlink()
    return done
