"""The real accuracy of the shipped int8 quantizers: a small CNN trained on scikit-learn's digits, its
held-out accuracy in fp32 and through each quantizer. Seeded weights classify nothing, so the gate's
agreement on them shows only that int8 tracks fp32; this is what benchmarks print beside int8 speed."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

QUANTIZERS = ("openvino_int8", "int8")  # the shipped ones (docs/int8.md)


def open_gate() -> Any:
    """A gate that measures and never refuses (built on call: importing this module imports no torch)."""
    from torchserve_perf.plugins.optimizations.accuracy_gate import GateConfig

    return GateConfig(threshold=0.0, min_topk_overlap=0.0, min_samples=1)


def quantizer_options(name: str, registry: Any, calibration: Path) -> Any:
    """``name``'s options calibrated on ``calibration`` with a gate that never refuses (this measures)."""
    spec = registry.get(name)
    extra = {"cache": False, "prebuilt": ""} if name == "int8" else {}
    return spec.options_class(calibration=str(calibration), gate=open_gate(), **extra)


def build_quantized(name: str, model: Any, step: Any, registry: Any) -> Callable[..., Any]:
    """``model`` through quantizer ``name``; RuntimeError with the reason when it cannot run here."""
    spec = registry.get(name)
    reason = spec.unavailable(model, step)
    if reason:
        raise RuntimeError(reason)
    return spec.apply(model, step)


def digits_accuracy(names: Sequence[str] = QUANTIZERS, registry: Optional[Any] = None) -> dict[str, Any]:
    """Held-out accuracy (0..1) of the trained digits CNN: ``fp32`` and each quantizer of ``names``; a
    quantizer that cannot run here maps to its reason (text)."""
    import torch

    from torchserve_perf.models.digits_training import accuracy, load_digits_data, train_digits_cnn
    from torchserve_perf.plugins.optimizations import Runtime, StepContext, standard_registry
    from torchserve_perf.plugins.optimizations import calibration as calibration_file

    registry = registry if registry is not None else standard_registry(entry_points=False)
    data = load_digits_data()
    model = train_digits_cnn(data)
    runtime = Runtime(device=torch.device("cpu"), intra_op_threads=1, inter_op_threads=1)
    example = data.test_x[:2]
    found: dict[str, Any] = {"fp32": accuracy(model, data.test_x, data.test_y), "held_out": int(len(data.test_y))}
    with tempfile.TemporaryDirectory() as tmp:
        path = calibration_file.save(data.train_x[:256], Path(tmp) / "calibration.pt")
        for name in names:
            step = StepContext(runtime=runtime, options=quantizer_options(name, registry, path),
                               inputs=(example[:1], example), example=example)
            try:
                found[name] = accuracy(build_quantized(name, model, step, registry), data.test_x, data.test_y)
            except Exception as exc:  # a quantizer whose package is missing here: its reason instead
                found[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    return found


def describe(found: dict[str, Any]) -> str:
    """One line: fp32 -> each quantizer, in points of held-out accuracy."""
    fp32 = found["fp32"]
    parts = [f"{name} {value * 100:.2f}% ({(value - fp32) * 100:+.2f} points)" if isinstance(value, float)
             else f"{name}: not measured ({value})" for name, value in found.items() if name not in ("fp32", "held_out")]
    return (f"digits CNN held-out accuracy ({found['held_out']} images): fp32 {fp32 * 100:.2f}%, "
            + ", ".join(parts))
