"""onnxruntime: export to ONNX and run an InferenceSession sized to the worker's threads.

ONNX Runtime keeps its own thread pools. Left alone, every worker's session takes every core and
spins between runs, so N workers fight over the machine; here each session gets the worker's
intra-/inter-op thread counts from the thread policy and does not spin by default.

A session's pool is fixed when it is made, while elastic threads (plugins/elastic.py) change
torch's intra-op threads per batch. So with elastic threads the worker keeps a few sessions, one
per thread count (:func:`session_threads`), and each batch runs on the largest one not above
torch's current count: it follows the cores the model's other workers leave idle, like torch does.
On the CPU those sessions share one optimized copy of the weights and one arena
(ort_shared_weights.py), so a session per thread count costs little memory.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional, Sequence, TypeVar

import numpy as np
import torch

from torchserve_perf.plugins import memory
from torchserve_perf.plugins.config import at_least_one
from torchserve_perf.plugins.optimizations.interface import AutoCandidate, OptimizationSpec, StepContext, Unavailable
from torchserve_perf.plugins.optimizations.ort_shared_weights import SharedWeights, prepare, register_shared_arena

log = logging.getLogger("torchserve_perf.plugins.optimizations")
T = TypeVar("T")

LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
          "all": "ORT_ENABLE_ALL"}


@dataclass(frozen=True)
class OnnxRuntimeOptions:
    # torchscript: torch.onnx's TorchScript-based exporter (about a second for ResNet-18), whose
    # graphs can pin shapes (attention reshapes); dynamo: the torch.export-based one (tens of
    # seconds, dynamic shapes done right); auto: torchscript, then dynamo if that graph fails
    # on a warm-up input.
    exporter: Literal["auto", "torchscript", "dynamo"] = "auto"
    opset: Optional[int] = None
    graph_optimization: Literal["disable", "basic", "extended", "all"] = "all"
    # Spinning threads keep a core busy between runs: faster alone, slower next to other workers.
    allow_spinning: bool = False
    provider: Optional[str] = None  # None: CUDA on a GPU worker when available, else CPU
    # Sessions kept to follow elastic threads; 1: one session at the worker's static share.
    max_sessions: int = 3
    # CPU: the graph is optimized once and saved to the runtime cache, and every session reads its
    # weights from that one read-only mapping (shared by the model's workers on this host too);
    # false: each session optimizes the graph into its own copy of the weights.
    share_weights: bool = True
    # CPU: the sessions allocate activations from one arena instead of one each (they never run at
    # the same time); false: an arena per session.
    shared_arena: bool = True

    def __post_init__(self) -> None:
        at_least_one(self, "max_sessions", fix="give at least 1 (1: one session at the worker's static thread share)")


def for_threads(by_threads: Sequence[tuple[int, T]], threads: int) -> T:
    """The entry made for the largest thread count not above ``threads`` (the smallest when all are
    above): ``by_threads`` is sorted by count, as the runners of every thread-following runtime keep it."""
    chosen = by_threads[0][1]
    for count, entry in by_threads:
        if count <= threads:
            chosen = entry
    return chosen


def session_threads(floor: int, ceiling: int, max_sessions: int) -> tuple[int, ...]:
    """The intra-op thread counts to make a session for: ``floor`` (the static share), ``ceiling``
    (all the cores elastic threads may take) and powers of two between, thinned evenly to
    ``max_sessions``. Pure: see test_onnxruntime_session_threads_table."""
    floor = max(1, floor)
    ceiling = max(floor, ceiling)
    counts = sorted({floor, ceiling} | {2 ** k for k in range(ceiling.bit_length()) if floor < 2 ** k < ceiling})
    if max_sessions <= 1:
        return (floor,)
    if len(counts) <= max_sessions:
        return tuple(counts)
    last = len(counts) - 1
    return tuple(sorted({counts[round(i * last / (max_sessions - 1))] for i in range(max_sessions)}))


class OnnxRuntimeModel:
    """Calls an InferenceSession like a module: tensors in, tensors out (on the worker's device).

    ``by_threads``: sessions keyed by their intra-op thread count; each call runs on the largest
    count not above ``torch.get_num_threads()`` (what elastic threads set for this batch)."""

    def __init__(self, session: Any, device: torch.device, by_threads: Optional[dict[int, Any]] = None,
                 shared: Optional[SharedWeights] = None) -> None:
        self.session = session
        self.device = device
        self.by_threads = sorted((by_threads or {}).items())
        self.shared = shared  # the weights every session reads (kept alive with them); None: each has its own
        # What building this runner added to the process, by part (plugins/memory.py reads it).
        self.memory_parts: dict[str, int] = {}
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    def session_for(self, threads: int) -> Any:
        return for_threads(self.by_threads, threads) if self.by_threads else self.session

    def __call__(self, *args: torch.Tensor) -> Any:
        return self.run(self.session_for(torch.get_num_threads()) if len(self.by_threads) > 1 else self.session, *args)

    def run(self, session: Any, *args: torch.Tensor) -> Any:
        feeds = {name: _numpy(arg) for name, arg in zip(self.input_names, args)}
        outputs = [torch.from_numpy(out).to(self.device) for out in session.run(self.output_names, feeds)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def __repr__(self) -> str:
        providers = self.session.get_providers()
        threads = f", sessions for {[count for count, _ in self.by_threads]} threads" if len(self.by_threads) > 1 else ""
        shared = ", shared weights" if self.shared is not None else ""
        return f"OnnxRuntimeModel(inputs={self.input_names}, providers={providers}{threads}{shared})"


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy())


def unavailable(model: Callable[..., Any], step: StepContext) -> Optional[str]:
    for package, pip in (("onnxruntime", "onnxruntime"), ("onnx", "onnx")):
        if importlib.util.find_spec(package) is None:
            return f"the {package} package is not installed (pip install {pip}, or torchserve-perf[onnx])"
    options: OnnxRuntimeOptions = step.options
    if options.exporter == "dynamo" and importlib.util.find_spec("onnxscript") is None:
        return "the dynamo exporter needs onnxscript (pip install onnxscript), or use exporter: torchscript"
    return None


def apply(model: Callable[..., Any], step: StepContext) -> Callable[..., Any]:
    import onnxruntime as ort

    options: OnnxRuntimeOptions = step.options
    exporters = ["torchscript", "dynamo"] if options.exporter == "auto" else [options.exporter]
    if importlib.util.find_spec("onnxscript") is None and len(exporters) > 1:
        exporters = exporters[:1]
    problems = []
    for exporter in exporters:
        try:
            return _runner(Exported(model, step, exporter, options.opset), options, step, ort)
        except Unavailable:
            raise
        except Exception as exc:
            problems.append(f"{exporter} exporter: {type(exc).__name__}: {_first_line(exc)}")
    raise RuntimeError("; ".join(problems))


class Exported:
    """The model as ONNX, exported when first asked for: a graph saved by an earlier load of the same
    model makes the export (seconds, and tens of MiB the exporter keeps) unneeded."""

    def __init__(self, model: Callable[..., Any], step: StepContext, exporter: str, opset: Optional[int]) -> None:
        self.model, self.step, self.exporter, self.opset = model, step, exporter, opset
        self._proto: Optional[bytes] = None

    def __call__(self) -> bytes:
        if self._proto is None:
            self._proto = export(self.model, self.step, self.exporter, self.opset)
        return self._proto

    def release(self) -> int:
        """Drop the serialized model once the sessions are made; its size in bytes (0: none was made)."""
        size = len(self._proto) if self._proto is not None else 0
        self._proto = None
        return size

    def key(self) -> str:
        """What the export depends on: the model's code and weights, the exporter, opset, torch and the shapes."""
        from torchserve_perf.plugins.optimizations.auto_cache import model_digest

        if not isinstance(self.model, torch.nn.Module):
            return ""
        example = self.step.example
        return "|".join(str(part) for part in (
            model_digest(self.model), _source_digest(self.model), self.exporter, self.opset, torch.__version__,
            tuple(example.shape), example.dtype, self.step.dynamic_dims))


def _source_digest(model: torch.nn.Module) -> str:
    """The model's code: the file its class is defined in (TorchScript: its compiled code)."""
    import hashlib
    import inspect

    code = getattr(model, "code", None)
    if isinstance(code, str):
        return hashlib.sha256(code.encode()).hexdigest()
    try:
        path = inspect.getsourcefile(type(model))
        with open(path or "", "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except (OSError, TypeError):
        return type(model).__qualname__


def _runner(exported: Exported, options: OnnxRuntimeOptions, step: StepContext, ort: Any) -> OnnxRuntimeModel:
    """The sessions, run once on every warm-up input, with what each part of them cost in RSS."""
    started = memory.resident_bytes()
    shared = _shared_weights(exported, options, step, ort)
    if shared is None:
        exported()  # the export, accounted apart from the sessions
    prepared = memory.resident_bytes()
    try:
        runner = _sessions(exported, options, step, ort, shared)
    except Exception as exc:
        if shared is None:
            raise
        log.warning("ONNX Runtime sessions keep a copy of the weights each: the shared graph did not load (%s: %s)",
                    type(exc).__name__, _first_line(exc))
        shared = None
        runner = _sessions(exported, options, step, ort, None)
    session = runner.session
    transient = exported.release()  # the sessions hold what they need; the serialized model goes
    if shared is not None:
        shared.drop_resident_pages()  # the runs below map back in the weights they read
    built = memory.resident_bytes()
    for x in step.inputs:  # a graph with a pinned shape fails here; parity comes after
        for _, each in runner.by_threads or [(0, session)]:
            runner.run(each, x)
    ran = memory.resident_bytes()
    sessions = len(runner.by_threads) or 1
    weights = shared.resident_bytes() if shared is not None else 0  # what the runs mapped back in
    runner.memory_parts = {
        # Exporting (none when a saved graph was found) and saving the optimized graph: what it left.
        "onnxruntime export": prepared - started - transient,
        "onnxruntime weights (mapped)": weights,
        f"onnxruntime sessions ({sessions})": built - prepared + transient,
        "onnxruntime arena and first runs": ran - built - weights,
    }
    return runner


def _sessions(exported: Exported, options: OnnxRuntimeOptions, step: StepContext, ort: Any,
              shared: Optional[SharedWeights]) -> OnnxRuntimeModel:
    source: bytes | str = shared.graph_path if shared is not None else exported()
    session = make_session(source, options, step, ort, step.runtime.intra_op_threads, shared)
    return OnnxRuntimeModel(session, step.runtime.device,
                            elastic_sessions(source, session, options, step, ort, shared), shared)


def _shared_weights(exported: Exported, options: OnnxRuntimeOptions, step: StepContext,
                    ort: Any) -> Optional[SharedWeights]:
    """The weights every session will read, or None (a GPU, sharing off, or it failed: logged, and
    each session then keeps its own copy)."""
    if not options.share_weights or _provider(options, step, ort) != "CPUExecutionProvider":
        return None
    from torchserve_perf.plugins.optimizations.auto_cache import host_id

    level = getattr(ort.GraphOptimizationLevel, LEVELS[options.graph_optimization])
    try:
        key = exported.key()
        if not key:  # not a module: the export says why
            exported()
        return prepare(exported, key, ort, level, options.graph_optimization, step.runtime.cache_dir, host_id())
    except Unavailable:
        raise
    except Exception as exc:
        log.warning("ONNX Runtime sessions keep a copy of the weights each: could not share them (%s: %s)",
                    type(exc).__name__, _first_line(exc))
        return None


def elastic_sessions(proto: bytes | str, session: Any, options: OnnxRuntimeOptions, step: StepContext,
                      ort: Any, shared: Optional[SharedWeights] = None) -> Optional[dict[int, Any]]:
    """Sessions per thread count when elastic threads may raise the worker's threads; else None."""
    runtime = step.runtime
    if runtime.device.type != "cpu" or runtime.intra_op_max <= runtime.intra_op_threads:
        return None
    counts = session_threads(runtime.intra_op_threads, runtime.intra_op_max, options.max_sessions)
    if len(counts) < 2:
        return None
    return {n: session if n == runtime.intra_op_threads else make_session(proto, options, step, ort, n, shared)
            for n in counts}


def make_session(proto: bytes | str, options: OnnxRuntimeOptions, step: StepContext, ort: Any, intra_op_threads: int,
             shared: Optional[SharedWeights] = None) -> Any:
    """A session on ``proto`` (the model's bytes, or the path of the graph saved with ``shared``)."""
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = max(1, intra_op_threads)
    session_options.inter_op_num_threads = max(1, step.runtime.inter_op_threads)
    session_options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if step.runtime.inter_op_threads > 1
                                      else ort.ExecutionMode.ORT_SEQUENTIAL)
    session_options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[options.graph_optimization])
    if shared is not None:  # the saved graph is optimized already: optimizing again would copy the weights
        session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        shared.add_to(session_options)
    provider = _provider(options, step, ort)
    if options.shared_arena and provider == "CPUExecutionProvider":
        register_shared_arena(ort)
        session_options.add_session_config_entry("session.use_env_allocators", "1")
    spin = "1" if options.allow_spinning else "0"
    session_options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    session_options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    # ORT logs a failed run at ERROR on stderr; the chain reports failures itself, once.
    session_options.log_severity_level = 4
    return ort.InferenceSession(proto, session_options, providers=[provider])


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""


def export(model: Callable[..., Any], step: StepContext, exporter: str, opset: Optional[int]) -> bytes:
    """The model as serialized ONNX, with the dimensions that vary across warm-up inputs left dynamic."""
    if not isinstance(model, torch.nn.Module):
        raise Unavailable(f"cannot export a {type(model).__name__} to ONNX; put onnxruntime earlier in the chain")
    dims = step.dynamic_dims
    # The exporters warn about every traced Python branch and print whole graphs on failure.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            from torch.export import Dim

            program = torch.onnx.export(model, (step.example,), dynamo=True, opset_version=opset,
                                        dynamic_shapes=({d: Dim.DYNAMIC for d in dims},), verbose=False)
            if program is None:
                raise RuntimeError("the dynamo exporter returned no program")
            return program.model_proto.SerializeToString()
        buffer = io.BytesIO()
        kwargs: dict[str, Any] = {"dynamo": False} if _has_dynamo_flag() else {}
        if opset is not None:
            kwargs["opset_version"] = opset
        # torch writes to a file object as well as to a path; its annotation names paths only.
        torch.onnx.export(model, (step.example,), buffer, input_names=["input"],  # type: ignore[arg-type]
                          output_names=["output"],
                          dynamic_axes={"input": {d: f"dim{d}" for d in dims}, "output": {0: "dim0"}}, **kwargs)
        return buffer.getvalue()


def _has_dynamo_flag() -> bool:
    import inspect

    try:
        return "dynamo" in inspect.signature(torch.onnx.export).parameters
    except (TypeError, ValueError):
        return False


def _provider(options: OnnxRuntimeOptions, step: StepContext, ort: Any) -> str:
    available = ort.get_available_providers()
    if options.provider:
        if options.provider not in available:
            raise Unavailable(f"ONNX Runtime provider {options.provider} is not available here (have {available})")
        return options.provider
    if step.runtime.device.type == "cuda" and "CUDAExecutionProvider" in available:
        return "CUDAExecutionProvider"
    return "CPUExecutionProvider"


# Its sessions follow elastic threads, so our archives offer it to auto too. Tried first: it is the
# candidate that wins most often on CPU, and on a large model (ViT-B/16) auto's budget ran out on the
# torch-native candidates before it was reached (docs/zoo.md).
PLUGIN = OptimizationSpec(
    name="onnxruntime", description="ONNX export + ONNX Runtime InferenceSession with the worker's thread counts",
    options_class=OnnxRuntimeOptions, apply=apply, unavailable=unavailable,
    auto_candidates=(AutoCandidate("onnxruntime", order=5, in_archives=True),),
)
