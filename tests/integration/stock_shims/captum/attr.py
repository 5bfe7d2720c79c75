"""Stock's VisionHandler builds an IntegratedGradients at load; explanations are never asked for here."""

from typing import Any


class IntegratedGradients:
    def __init__(self, model: Any) -> None:
        self.model = model
