"""onnxruntime: export to ONNX and run an InferenceSession sized to the worker's threads.

ONNX Runtime keeps its own thread pools. Left alone, every worker's session takes every core and
spins between runs, so N workers fight over the machine; here each session gets the worker's
intra-/inter-op thread counts from the thread policy and does not spin by default.

A session's pool is fixed when it is made, while elastic threads (plugins/elastic.py) change
torch's intra-op threads per batch. So with elastic threads the worker keeps a few sessions, one
per thread count (:func:`session_threads`), and each batch runs on the largest one not above
torch's current count: it follows the cores the model's other workers leave idle, like torch does.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Literal, Optional

import numpy as np
import torch

from torchserve_perf.plugins.config import ConfigValueError
from torchserve_perf.plugins.optimizations.interface import OptimizationPlugin, StepContext, Unavailable

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
    # Sessions kept to follow elastic threads (each holds its own copy of the prepared weights);
    # 1: one session at the worker's static share.
    max_sessions: int = 3

    def __post_init__(self) -> None:
        if self.max_sessions < 1:
            raise ConfigValueError("max_sessions", f"{self.max_sessions} is below 1",
                                   "give at least 1 (1: one session at the worker's static thread share)")


def session_threads(floor: int, ceiling: int, max_sessions: int) -> tuple[int, ...]:
    """The intra-op thread counts to make a session for: ``floor`` (the static share), ``ceiling``
    (all the cores elastic threads may take) and powers of two between, thinned evenly to
    ``max_sessions``. Pure: see the table in tests/test_onnx_elastic.py."""
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

    def __init__(self, session: Any, device: torch.device, by_threads: Optional[dict[int, Any]] = None) -> None:
        self.session = session
        self.device = device
        self.by_threads = sorted((by_threads or {}).items())
        self.input_names = [i.name for i in session.get_inputs()]
        self.output_names = [o.name for o in session.get_outputs()]

    def session_for(self, threads: int) -> Any:
        chosen = self.by_threads[0][1] if self.by_threads else self.session
        for count, session in self.by_threads:
            if count <= threads:
                chosen = session
        return chosen

    def __call__(self, *args: torch.Tensor) -> Any:
        return self.run(self.session_for(torch.get_num_threads()) if len(self.by_threads) > 1 else self.session, *args)

    def run(self, session: Any, *args: torch.Tensor) -> Any:
        feeds = {name: _numpy(arg) for name, arg in zip(self.input_names, args)}
        outputs = [torch.from_numpy(out).to(self.device) for out in session.run(self.output_names, feeds)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def __repr__(self) -> str:
        providers = self.session.get_providers()
        threads = f", sessions for {[count for count, _ in self.by_threads]} threads" if len(self.by_threads) > 1 else ""
        return f"OnnxRuntimeModel(inputs={self.input_names}, providers={providers}{threads})"


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy())


class OnnxRuntime(OptimizationPlugin):
    name = "onnxruntime"
    description = "ONNX export + ONNX Runtime InferenceSession with the worker's thread counts"
    options_class = OnnxRuntimeOptions

    def unavailable(self, model: Callable[..., Any], step: StepContext) -> Optional[str]:
        for package, pip in (("onnxruntime", "onnxruntime"), ("onnx", "onnx")):
            if importlib.util.find_spec(package) is None:
                return f"the {package} package is not installed (pip install {pip}, or torchserve-perf[onnx])"
        options: OnnxRuntimeOptions = step.options
        if options.exporter == "dynamo" and importlib.util.find_spec("onnxscript") is None:
            return "the dynamo exporter needs onnxscript (pip install onnxscript), or use exporter: torchscript"
        return None

    def apply(self, model: Callable[..., Any], step: StepContext) -> Callable[..., Any]:
        import onnxruntime as ort

        options: OnnxRuntimeOptions = step.options
        exporters = ["torchscript", "dynamo"] if options.exporter == "auto" else [options.exporter]
        if importlib.util.find_spec("onnxscript") is None and len(exporters) > 1:
            exporters = exporters[:1]
        problems = []
        for exporter in exporters:
            try:
                proto = export(model, step, exporter, options.opset)
                session = self._session(proto, options, step, ort, step.runtime.intra_op_threads)
                runner = OnnxRuntimeModel(session, step.runtime.device, self._elastic_sessions(proto, session, options,
                                                                                           step, ort))
                for x in step.inputs:  # a graph with a pinned shape fails here; parity comes after
                    for _, each in runner.by_threads or [(0, session)]:
                        runner.run(each, x)
                return runner
            except Unavailable:
                raise
            except Exception as exc:
                problems.append(f"{exporter} exporter: {type(exc).__name__}: {_first_line(exc)}")
        raise RuntimeError("; ".join(problems))

    def _elastic_sessions(self, proto: bytes, session: Any, options: OnnxRuntimeOptions, step: StepContext,
                          ort: Any) -> Optional[dict[int, Any]]:
        """Sessions per thread count when elastic threads may raise the worker's threads; else None."""
        runtime = step.runtime
        if runtime.device.type != "cpu" or runtime.intra_op_max <= runtime.intra_op_threads:
            return None
        counts = session_threads(runtime.intra_op_threads, runtime.intra_op_max, options.max_sessions)
        if len(counts) < 2:
            return None
        return {n: session if n == runtime.intra_op_threads else self._session(proto, options, step, ort, n)
                for n in counts}

    def _session(self, proto: bytes, options: OnnxRuntimeOptions, step: StepContext, ort: Any,
                 intra_op_threads: int) -> Any:
        session_options = ort.SessionOptions()
        session_options.intra_op_num_threads = max(1, intra_op_threads)
        session_options.inter_op_num_threads = max(1, step.runtime.inter_op_threads)
        session_options.execution_mode = (ort.ExecutionMode.ORT_PARALLEL if step.runtime.inter_op_threads > 1
                                          else ort.ExecutionMode.ORT_SEQUENTIAL)
        session_options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                                           LEVELS[options.graph_optimization])
        spin = "1" if options.allow_spinning else "0"
        session_options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        session_options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        # ORT logs a failed run at ERROR on stderr; the chain reports failures itself, once.
        session_options.log_severity_level = 4
        return ort.InferenceSession(proto, session_options, providers=[_provider(options, step, ort)])


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
            return program.model_proto.SerializeToString()
        buffer = io.BytesIO()
        kwargs: dict[str, Any] = {"dynamo": False} if _has_dynamo_flag() else {}
        if opset is not None:
            kwargs["opset_version"] = opset
        torch.onnx.export(model, (step.example,), buffer, input_names=["input"], output_names=["output"],
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
