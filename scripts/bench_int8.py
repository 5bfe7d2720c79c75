#!/usr/bin/env python3
"""int8, OpenVINO and bf16 side by side, in process: speed per image with accuracy beside every int8 figure.

For each model (ResNet-18 and ResNet-50 with seeded weights), one run measures:
  * eager fp32, ONNX Runtime fp32 (the onnxruntime plugin), OpenVINO fp32 and, where the CPU has
    bf16, OpenVINO bf16 and torch autocast bf16;
  * int8 through every quantizer: ONNX Runtime static QDQ per-channel (the int8 plugin), OpenVINO
    NNCF (openvino_int8) and, with ``--pt2e``, PyTorch PT2E with the x86 Inductor quantizer
    (torchao; compiled by Inductor, minutes on a small machine);
each at ``--threads`` intra-op threads and batch ``--batch``, best of ``--rounds`` rounds of
``--seconds`` each (the machine may be shared: the best round is the least disturbed).

Seeded weights classify nothing, so for the ResNets the accuracy column is the accuracy gate's
top-1 agreement with fp32 on held-out synthetic images (the calibration set's held-out quarter).
The real accuracy comes from a small CNN trained here on scikit-learn's digits: its held-out
accuracy in fp32 and through each quantizer is printed beside the int8 figures.

    .venv/bin/python scripts/bench_int8.py --quick          # ResNet-18 only, short rounds
    .venv/bin/python scripts/bench_int8.py --pt2e           # everything (several minutes)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from torchserve_perf.models.resnet18 import ResNet18
from torchserve_perf.models.resnet50 import ResNet50
from torchserve_perf.models.seeded import seeded_state_dict
from torchserve_perf.plugins.optimizations import Runtime, StepContext, standard_registry
from torchserve_perf.plugins.optimizations import calibration as calibration_file
from torchserve_perf.plugins.optimizations.accuracy_gate import compare_models
from torchserve_perf.tools import int8_accuracy
from torchserve_perf.tools.int8_accuracy import QUANTIZERS, build_quantized, quantizer_options

MODELS: dict[str, Callable[[], torch.nn.Module]] = {"resnet18": ResNet18, "resnet50": ResNet50}
INT8 = ("int8", "openvino_int8", "pt2e")


def synthetic_images(count: int, side: int, seed: int = 0) -> torch.Tensor:
    """Smooth random pictures, normalised like ImageNet inputs: closer to photos than white noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 8, 8, generator=generator)
    pixels = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    pixels = (pixels + 0.1 * torch.rand(count, 3, side, side, generator=generator)).clamp(0, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (pixels - mean) / std


def per_image_ms(model: Callable[..., Any], x: torch.Tensor, seconds: float, rounds: int) -> float:
    best = float("inf")
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        for _ in range(rounds):
            calls, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                model(x)
                calls += 1
            best = min(best, (time.perf_counter() - started) / calls / x.shape[0])
    return best * 1e3


def build_pt2e(model: torch.nn.Module, example: torch.Tensor, samples: torch.Tensor) -> Callable[..., Any]:
    import torch._inductor.config as inductor_config
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq  # type: ignore[import-untyped]
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e  # type: ignore[import-untyped]

    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(model, (example,), dynamic_shapes=({0: batch},)).module()
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for i in range(0, samples.shape[0], 8):
            prepared(samples[i:i + 8])
    converted = convert_pt2e(prepared)
    inductor_config.freezing = True
    compiled = torch.compile(converted)
    with torch.no_grad():
        compiled(example)
    return compiled


def build_path(name: str, model: torch.nn.Module, step: StepContext, samples: calibration_file.CalibrationSet,
               registry: Any) -> Callable[..., Any]:
    if name == "eager":
        return model
    if name == "pt2e":
        return build_pt2e(model, step.example, samples.calibrate)
    return build_quantized(name, model, step, registry)


def options_for(name: str, registry: Any, calibration: Path) -> Any:
    if name in ("int8", "openvino_int8"):
        return quantizer_options(name, registry, calibration)
    spec = registry.get(name) if name in registry else None
    return spec.options_class() if spec is not None and spec.options_class is not None else None


def bench_model(label: str, paths: list[str], args: argparse.Namespace, registry: Any) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    model = MODELS[label]()
    model.load_state_dict(seeded_state_dict(MODELS[label]))
    model.eval()
    side = 224
    example = synthetic_images(args.batch, side, seed=99)
    runtime = Runtime(device=torch.device("cpu"), intra_op_threads=args.threads, inter_op_threads=1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = calibration_file.save(synthetic_images(args.samples, side), Path(tmp) / "calibration.pt")
        samples = calibration_file.load(path, 4, example)
        for name in paths:
            step = StepContext(runtime=runtime, options=options_for(name, registry, path),
                               inputs=(example[:1], example), example=example)
            started = time.perf_counter()
            try:
                built = build_path(name, model, step, samples, registry)
            except Exception as exc:
                rows.append({"model": label, "path": name, "error": f"{type(exc).__name__}: {str(exc)[:160]}"})
                print(f"{label} {name}: not measured ({rows[-1]['error']})", flush=True)
                continue
            build_s = time.perf_counter() - started
            ms = per_image_ms(built, example, args.seconds, args.rounds)
            row: dict[str, Any] = {"model": label, "path": name, "ms_per_image": round(ms, 2),
                                   "build_s": round(build_s, 1)}
            if name in INT8 or "bf16" in name:
                verdict = compare_models(model, built, samples.holdout, int8_accuracy.open_gate())
                row["top1_agreement"] = round(verdict.agreement.top1, 4)
                row["top5_overlap"] = round(verdict.agreement.topk_overlap, 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def digits_accuracy(paths: list[str], registry: Any) -> dict[str, float]:
    """Held-out accuracy of the trained digits CNN in fp32 and through each int8 path (PT2E here, the
    shipped quantizers through torchserve_perf.tools.int8_accuracy)."""
    shipped = [p for p in paths if p in QUANTIZERS]
    found = {k: v for k, v in int8_accuracy.digits_accuracy(shipped, registry).items() if isinstance(v, float)}
    if "pt2e" in paths:
        from torchserve_perf.models.digits_training import accuracy, load_digits_data, train_digits_cnn

        data = load_digits_data()
        model = train_digits_cnn(data)
        example = data.test_x[:2]
        with tempfile.TemporaryDirectory() as tmp:
            samples = calibration_file.load(calibration_file.save(data.train_x[:256], Path(tmp) / "c.pt"), 4, example)
            try:
                found["pt2e"] = accuracy(build_pt2e(model, example, samples.calibrate), data.test_x, data.test_y)
            except Exception as exc:  # PT2E's compiled graph may refuse a batch size it was not built for
                print(f"digits pt2e: not measured ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})", flush=True)
    return found


def table(rows: list[dict[str, Any]], digits: dict[str, float]) -> str:
    lines = ["| model | path | ms / image | vs eager | vs ORT fp32 | build s | top-1 agreement (gate) | "
             "digits CNN held-out acc. (fp32 -> path) |", "|---|---|---:|---:|---:|---:|---:|---|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        base = {r["path"]: r.get("ms_per_image") for r in mine}
        for r in mine:
            if "error" in r:
                lines.append(f"| {model} | {r['path']} | not measured: {r['error']} | | | | | |")
                continue
            ms = r["ms_per_image"]
            vs_eager = f"{base['eager'] / ms:.2f}x" if base.get("eager") else ""
            vs_ort = f"{base['onnxruntime'] / ms:.2f}x" if base.get("onnxruntime") else ""
            agree = f"{r['top1_agreement']:.3f}" if "top1_agreement" in r else ""
            acc = (f"{digits['fp32'] * 100:.2f}% -> {digits[r['path']] * 100:.2f}%"
                   if r["path"] in digits else "")
            lines.append(f"| {model} | {r['path']} | {ms:.2f} | {vs_eager} | {vs_ort} | {r['build_s']} | {agree} | "
                         f"{acc} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--samples", type=int, default=64, help="calibration images (a quarter held out)")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pt2e", action="store_true", help="also PT2E + X86InductorQuantizer (torchao; slow)")
    parser.add_argument("--quick", action="store_true", help="ResNet-18 only, short rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.seconds, args.rounds, args.samples = ["resnet18"], 1.0, 2, 32
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    registry = standard_registry(entry_points=False)
    paths = ["eager", "onnxruntime", "openvino", "openvino_bf16", "bf16", "int8", "openvino_int8"]
    paths += ["pt2e"] if args.pt2e else []
    rows = [row for model in args.models for row in bench_model(model, paths, args, registry)]
    digits = digits_accuracy([p for p in paths if p in INT8], registry)
    print(f"\nthreads {args.threads}, batch {args.batch}, best of {args.rounds} x {args.seconds:g} s; "
          f"torch {torch.__version__}\n")
    print(table(rows, digits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
