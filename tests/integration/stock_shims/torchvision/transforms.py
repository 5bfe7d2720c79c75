"""The four transforms stock's image_classifier composes, on Pillow images, with torchvision's sizes:
Resize(n) scales the short side to n and the long side to int(n * long / short) (bilinear, which
Pillow antialiases as torchvision's Pillow path does); CenterCrop rounds its offsets."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image


class Compose:
    def __init__(self, steps: Sequence[Callable[[Any], Any]]) -> None:
        self.steps = list(steps)

    def __call__(self, value: Any) -> Any:
        for step in self.steps:
            value = step(value)
        return value


class Resize:
    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        short, long = min(width, height), max(width, height)
        new_long = int(self.size * long / short)
        size = (self.size, new_long) if width <= height else (new_long, self.size)
        return image.resize(size, Image.Resampling.BILINEAR)


class CenterCrop:
    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        top, left = int(round((height - self.size) / 2.0)), int(round((width - self.size) / 2.0))
        return image.crop((left, top, left + self.size, top + self.size))


class ToTensor:
    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


class Normalize:
    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        return (tensor - self.mean) / self.std
