"""ResNet-18 (He et al., 2015), defined here so that no weights are downloaded.

A --model-file must define exactly one nn.Module class, so the residual blocks are plain
ModuleDicts built by a function rather than classes of their own.
"""

from typing import cast

import torch
from torch import nn


def _block(in_ch: int, out_ch: int, stride: int) -> nn.ModuleDict:
    block = nn.ModuleDict({
        "conv1": nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False),
        "bn1": nn.BatchNorm2d(out_ch),
        "conv2": nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False),
        "bn2": nn.BatchNorm2d(out_ch),
    })
    if stride != 1 or in_ch != out_ch:
        block["downsample"] = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
    return block


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        widths = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
        self.blocks = nn.ModuleList()
        for in_ch, out_ch, stride in widths:
            self.blocks.append(_block(in_ch, out_ch, stride))
            self.blocks.append(_block(out_ch, out_ch, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for module in self.blocks:
            block = cast(nn.ModuleDict, module)  # a ModuleList yields Modules; these are _block's ModuleDicts
            identity = block["downsample"](x) if "downsample" in block else x
            out = torch.relu(block["bn1"](block["conv1"](x)))
            out = block["bn2"](block["conv2"](out))
            x = torch.relu(out + identity)
        return self.fc(torch.flatten(self.pool(x), 1))
