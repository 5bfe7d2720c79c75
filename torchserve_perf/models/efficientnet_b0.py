"""EfficientNet-B0 (Tan and Le, 2019), defined here so that nothing is downloaded or imported from
torchvision: mobile inverted bottlenecks (MBConv) with depthwise convolutions, squeeze-and-excitation
in every block and SiLU activations.

A --model-file must define exactly one class, so the blocks are ModuleDicts and Sequentials built by
functions. The parameter names match torchvision's ``efficientnet_b0`` (``features.2.0.block.0.0``
...), so its state dicts are meant to load into this class. Stochastic depth only
acts in training, so serving leaves it out.
"""

from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

# expansion, kernel, stride, input channels, output channels, blocks
STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
          (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))
HEAD_CHANNELS = 1280


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(out_ch)]
    return nn.Sequential(*layers, nn.SiLU()) if act else nn.Sequential(*layers)


def _mbconv(expansion: int, kernel: int, stride: int, in_ch: int, out_ch: int) -> nn.ModuleDict:
    expanded = in_ch * expansion
    layers: list[nn.Module] = []
    if expanded != in_ch:
        layers.append(_conv(in_ch, expanded, 1))
    layers.append(_conv(expanded, expanded, kernel, stride, groups=expanded))
    squeezed = max(1, in_ch // 4)  # from the block's input width, not the expanded one
    layers.append(nn.ModuleDict({"fc1": nn.Conv2d(expanded, squeezed, 1), "fc2": nn.Conv2d(squeezed, expanded, 1)}))
    layers.append(_conv(expanded, out_ch, 1, act=False))
    return nn.ModuleDict({"block": nn.Sequential(*layers)})


def _stage(expansion: int, kernel: int, stride: int, in_ch: int, out_ch: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*(_mbconv(expansion, kernel, stride if i == 0 else 1, in_ch if i == 0 else out_ch, out_ch)
                           for i in range(blocks)))


class EfficientNetB0(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self.features = nn.Sequential(_conv(3, STAGES[0][3], 3, 2), *(_stage(*stage) for stage in STAGES),
                                      _conv(STAGES[-1][4], HEAD_CHANNELS, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout, inplace=True), nn.Linear(HEAD_CHANNELS, num_classes))
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / module.out_features ** 0.5
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features[0](x)
        for stage in cast(nn.Sequential, self.features[1:-1]):
            for module in cast(nn.Sequential, stage):
                out = x
                for layer in cast(nn.Sequential, cast(nn.ModuleDict, module)["block"]):
                    if isinstance(layer, nn.ModuleDict):  # squeeze-and-excitation: a per-channel gate
                        scale = F.silu(layer["fc1"](F.adaptive_avg_pool2d(out, 1)))
                        out = out * torch.sigmoid(layer["fc2"](scale))
                    else:
                        out = layer(out)
                # a residual where the shape is kept (stride 1, same width)
                x = out + x if out.shape == x.shape else out
        x = self.features[-1](x)
        return self.classifier(torch.flatten(self.avgpool(x), 1))
