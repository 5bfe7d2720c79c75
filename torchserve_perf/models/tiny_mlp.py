"""A small multilayer perceptron behind the tensor handler: a small-tensor request whose cost is
mostly transport, for comparing the ways a client reaches the server."""

import torch
from torch import nn

INPUT_SIZE = 64
OUTPUT_SIZE = 8


class TinyMLP(nn.Module):
    def __init__(self, input_size: int = INPUT_SIZE, hidden: int = 32, output_size: int = OUTPUT_SIZE) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(input_size, hidden), nn.ReLU(), nn.Linear(hidden, output_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, input_size] float32."""
        return self.layers(x)
