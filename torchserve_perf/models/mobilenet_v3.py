"""MobileNetV3-Large (Howard et al., 2019), defined here so that nothing is downloaded or imported
from torchvision: inverted residuals with depthwise convolutions, squeeze-and-excitation in some
blocks, hard-swish in the later ones.

A --model-file must define exactly one class, so the blocks are ModuleDicts and Sequentials built by
functions. The parameter names match torchvision's ``mobilenet_v3_large`` (``features.4.block.2.fc1``
...), so its state dicts are meant to load into this class.
"""

from functools import partial
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

# input channels, kernel, expanded channels, output channels, squeeze-excite, hard-swish, stride
BLOCKS = (
    (16, 3, 16, 16, False, False, 1), (16, 3, 64, 24, False, False, 2), (24, 3, 72, 24, False, False, 1),
    (24, 5, 72, 40, True, False, 2), (40, 5, 120, 40, True, False, 1), (40, 5, 120, 40, True, False, 1),
    (40, 3, 240, 80, False, True, 2), (80, 3, 200, 80, False, True, 1), (80, 3, 184, 80, False, True, 1),
    (80, 3, 184, 80, False, True, 1), (80, 3, 480, 112, True, True, 1), (112, 3, 672, 112, True, True, 1),
    (112, 5, 672, 160, True, True, 2), (160, 5, 960, 160, True, True, 1), (160, 5, 960, 160, True, True, 1),
)
LAST_CHANNELS = 1280
BatchNorm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


def _divisible(value: float, divisor: int = 8) -> int:
    """``value`` rounded to a multiple of ``divisor``, never more than 10% below it (the paper's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
          activation: type[nn.Module] | None = nn.ReLU) -> nn.Sequential:
    layers = [nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False), BatchNorm(out_ch)]
    return nn.Sequential(*layers, activation()) if activation is not None else nn.Sequential(*layers)


def _inverted_residual(in_ch: int, kernel: int, expanded: int, out_ch: int, squeeze: bool, hard_swish: bool,
                       stride: int) -> nn.ModuleDict:
    activation: type[nn.Module] = nn.Hardswish if hard_swish else nn.ReLU
    layers: list[nn.Module] = []
    if expanded != in_ch:
        layers.append(_conv(in_ch, expanded, 1, activation=activation))
    layers.append(_conv(expanded, expanded, kernel, stride, groups=expanded, activation=activation))
    if squeeze:
        middle = _divisible(expanded // 4)
        layers.append(nn.ModuleDict({"fc1": nn.Conv2d(expanded, middle, 1), "fc2": nn.Conv2d(middle, expanded, 1)}))
    layers.append(_conv(expanded, out_ch, 1, activation=None))
    return nn.ModuleDict({"block": nn.Sequential(*layers)})


class MobileNetV3Large(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        last_block = BLOCKS[-1][3]
        self.features = nn.Sequential(
            _conv(3, BLOCKS[0][0], 3, 2, activation=nn.Hardswish),
            *(_inverted_residual(*config) for config in BLOCKS),
            _conv(last_block, 6 * last_block, 1, activation=nn.Hardswish))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(6 * last_block, LAST_CHANNELS), nn.Hardswish(),
                                        nn.Dropout(dropout), nn.Linear(LAST_CHANNELS, num_classes))
        self.residual = [config[6] == 1 and config[0] == config[3] for config in BLOCKS]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features[0](x)
        for index, residual in enumerate(self.residual, start=1):
            out = x
            for layer in cast(nn.Sequential, cast(nn.ModuleDict, self.features[index])["block"]):
                if isinstance(layer, nn.ModuleDict):  # squeeze-and-excitation: a per-channel gate
                    scale = F.relu(layer["fc1"](F.adaptive_avg_pool2d(out, 1)))
                    out = out * F.hardsigmoid(layer["fc2"](scale))
                else:
                    out = layer(out)
            x = out + x if residual else out
        x = self.features[-1](x)
        return self.classifier(torch.flatten(self.avgpool(x), 1))
