"""ResNet-50 (He et al., 2015; the v1.5 variant that strides in the 3x3 convolution), defined here so
that nothing is downloaded or imported from torchvision.

A --model-file must define exactly one class, so the bottleneck blocks are ModuleDicts built by a
function. The parameter names match torchvision's ``resnet50`` (``layer1.0.conv1.weight`` ...), so
its state dicts are meant to load into this class.
"""

from typing import cast

import torch
from torch import nn

EXPANSION = 4
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # width, blocks, stride of the first block


def _bottleneck(in_ch: int, width: int, stride: int) -> nn.ModuleDict:
    out_ch = width * EXPANSION
    block = nn.ModuleDict({
        "conv1": nn.Conv2d(in_ch, width, 1, bias=False), "bn1": nn.BatchNorm2d(width),
        "conv2": nn.Conv2d(width, width, 3, stride, 1, bias=False), "bn2": nn.BatchNorm2d(width),
        "conv3": nn.Conv2d(width, out_ch, 1, bias=False), "bn3": nn.BatchNorm2d(out_ch),
    })
    if stride != 1 or in_ch != out_ch:
        block["downsample"] = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
    return block


def _stage(in_ch: int, width: int, blocks: int, stride: int) -> nn.Sequential:
    first = _bottleneck(in_ch, width, stride)
    return nn.Sequential(first, *(_bottleneck(width * EXPANSION, width, 1) for _ in range(blocks - 1)))


class ResNet50(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        in_ch = 64
        for index, (width, blocks, stride) in enumerate(STAGES, start=1):
            setattr(self, f"layer{index}", _stage(in_ch, width, blocks, stride))
            in_ch = width * EXPANSION
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for index in range(1, len(STAGES) + 1):
            for module in cast(nn.Sequential, getattr(self, f"layer{index}")):
                block = cast(nn.ModuleDict, module)  # a Sequential yields Modules; these are _bottleneck's
                identity = block["downsample"](x) if "downsample" in block else x
                out = torch.relu(block["bn1"](block["conv1"](x)))
                out = torch.relu(block["bn2"](block["conv2"](out)))
                out = block["bn3"](block["conv3"](out))
                x = torch.relu(out + identity)
        return self.fc(torch.flatten(self.avgpool(x), 1))
