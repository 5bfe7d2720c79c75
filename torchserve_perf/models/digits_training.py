"""Train :class:`DigitsCNN` on scikit-learn's digits: a real classifier to measure quantization on.

Deterministic (seeded split and initialisation); a few seconds on two cores. Needs scikit-learn.
"""

from dataclasses import dataclass

import torch
from torch import nn

from torchserve_perf.models.digits_cnn import SIDE, DigitsCNN


@dataclass(frozen=True)
class DigitsData:
    train_x: torch.Tensor  # [N, 1, 8, 8] float32 in 0..1
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_digits_data(test_share: float = 0.3, seed: int = 0) -> DigitsData:
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).reshape(-1, 1, SIDE, SIDE) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    cut = int(x.shape[0] * (1 - test_share))
    train, test = order[:cut], order[cut:]
    return DigitsData(x[train], y[train], x[test], y[test])


def train_digits_cnn(data: DigitsData, epochs: int = 12, seed: int = 0) -> DigitsCNN:
    """One intra-op thread: as fast for a model this small, and steady on a machine shared with
    other processes (a second thread's barrier waits on a busy core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(data, epochs, seed)
    finally:
        torch.set_num_threads(threads)


def _train(data: DigitsData, epochs: int, seed: int) -> DigitsCNN:
    torch.manual_seed(seed)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(data.train_x.shape[0], generator=generator).split(64):
            optimizer.zero_grad()
            loss_fn(model(data.train_x[batch]), data.train_y[batch]).backward()
            optimizer.step()
    return model.eval()


def accuracy(model: object, x: torch.Tensor, y: torch.Tensor, batch: int = 64) -> float:
    """Share of ``x`` that ``model`` (any callable returning logits) labels as ``y``."""
    right = 0
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch):
            logits = model(x[start:start + batch])  # type: ignore[operator]
            right += int((logits.argmax(dim=1) == y[start:start + batch]).sum())
    return right / max(1, x.shape[0])
