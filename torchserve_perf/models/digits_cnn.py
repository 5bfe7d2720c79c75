"""A small CNN for scikit-learn's handwritten digits (8x8 grey images, 10 classes).

Small enough to train in seconds on two cores, real enough that quantization can cost accuracy:
the model the int8 accuracy tests and benchmarks train and measure.
"""

import torch
from torch import nn

CLASSES = 10
SIDE = 8


class DigitsCNN(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(2 * width, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, 1, 8, 8] float32, pixels scaled to 0..1."""
        return self.fc(torch.flatten(self.features(x), 1))
