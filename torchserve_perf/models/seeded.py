"""Seeded weights: every tool, fixture and archive that builds one of these models gets the same ones."""

from typing import Callable

import torch


def seeded_state_dict(make_model: Callable[[], torch.nn.Module], seed: int = 0) -> dict:
    """The state dict of ``make_model()`` initialised under ``torch.manual_seed(seed)``, in eval mode."""
    torch.manual_seed(seed)
    return make_model().eval().state_dict()
