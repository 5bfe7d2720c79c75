"""The image families defined in this repository, each with seeded weights, by name.

Seeded weights straight from the initialisers leave batch norm's running statistics at their
defaults (mean 0, variance 1), and through a deep untrained network the activations then shrink to
nothing or grow without bound: logits would be all but equal. :func:`family_state_dict` therefore
also sets those statistics from one seeded batch, as training would, so the outputs differ between
inputs and between classes like a real model's do. Everything stays deterministic per seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

CALIBRATION_BATCH = 4  # seeded images whose statistics the batch norms take


@dataclass(frozen=True)
class Family:
    """One image family: its name, the model file that defines it and how to build it."""

    name: str
    file: str  # in torchserve_perf/models/
    class_name: str
    published_parameters: int  # the parameter count its paper or torchvision's documentation gives
    description: str

    def make(self) -> nn.Module:
        import importlib

        module = importlib.import_module(f"torchserve_perf.models.{self.file.removesuffix('.py')}")
        return getattr(module, self.class_name)()

    @property
    def path(self) -> str:
        return os.path.join(os.path.dirname(os.path.abspath(__file__)), self.file)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("resnet50", "resnet50.py", "ResNet50", 25_557_032, "ResNet-50: bottleneck residuals, wide late stages"),
    Family("mobilenet_v3_large", "mobilenet_v3.py", "MobileNetV3Large", 5_483_032,
           "MobileNetV3-Large: depthwise convolutions, squeeze-excite, hard-swish"),
    Family("efficientnet_b0", "efficientnet_b0.py", "EfficientNetB0", 5_288_548,
           "EfficientNet-B0: MBConv with depthwise convolutions, squeeze-excite, SiLU"),
    Family("vit_b16", "vit_b16.py", "VisionTransformerB16", 86_567_656,
           "ViT-B/16: 197 tokens through 12 layers of 12-head self-attention"),
)}


def find_family(name: str) -> Family:
    if name not in FAMILIES:
        raise KeyError(f"unknown image family {name!r}; choose from {sorted(FAMILIES)}")
    return FAMILIES[name]


def calibrate_batch_norms(model: nn.Module, images: torch.Tensor) -> nn.Module:
    """Set every batch norm's running statistics to those of ``images`` passing through ``model``
    (one forward pass in training mode with a cumulative average); returns the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: one batch sets the statistics outright
    model.train()
    with torch.no_grad():
        model(images)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return model.eval()


def family_state_dict(make_model: Callable[[], nn.Module], seed: int = 0, size: int = 224) -> dict:
    """The state dict of ``make_model()`` initialised under ``torch.manual_seed(seed)``, its batch norms
    calibrated on seeded images (models without batch norm are left as initialised)."""
    torch.manual_seed(seed)
    model = make_model()
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        images = torch.randn(CALIBRATION_BATCH, 3, size, size, generator=torch.Generator().manual_seed(seed))
        calibrate_batch_norms(model, images)
    return model.eval().state_dict()
