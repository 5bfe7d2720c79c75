"""Class-index -> label mapping from the archive's index_to_name.json, and top-k formatting."""

from __future__ import annotations

import json
import os
from typing import Mapping, Optional

import torch


def load_labels(model_dir: str, filename: str = "index_to_name.json") -> dict[int, str]:
    path = os.path.join(model_dir, filename)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    # Stock TorchServe archives also use {"0": ["n01440764", "tench"]}.
    return {int(k): (v[-1] if isinstance(v, list) else str(v)) for k, v in raw.items()}


def top_k(logits: torch.Tensor, labels: Mapping[int, str], k: int, digits: Optional[int] = 6) -> dict[str, float]:
    """The ``k`` likeliest labels and their probabilities, rounded to ``digits`` places (None: as computed)."""
    probs = torch.softmax(logits.float(), dim=-1)
    values, indices = probs.topk(min(k, probs.shape[-1]))
    return {labels.get(int(i), str(int(i))): float(v) if digits is None else round(float(v), digits)
            for v, i in zip(values, indices)}
