"""Per-handler settings: the image:, text: and tensor: sections under handler: in model-config.yaml.

They live apart from the handler files because a file given to --handler may define one class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from torchserve_perf.plugins.config import ConfigValueError

@dataclass(frozen=True)
class ImageOptions:
    resize: int = 256
    crop: int = 224
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    topk: int = 5
    channels_last_input: bool = False

    def __post_init__(self) -> None:
        if self.crop < 1 or self.resize < self.crop:
            raise ConfigValueError("resize", f"resize={self.resize} must be at least crop={self.crop} (> 0)",
                                   "make resize >= crop")
        for name in ("mean", "std"):
            if len(getattr(self, name)) != 3:
                raise ConfigValueError(name, "needs three values (R, G, B)", f"give {name}: [r, g, b]")
        if self.topk < 1:
            raise ConfigValueError("topk", f"{self.topk} is below 1", "give a positive number")

@dataclass(frozen=True)
class TextOptions:
    max_length: int = 128
    vocab_size: int = 8192
    topk: int = 3
    text_field: str = "text"
    # Pad every batch to a multiple of this, so compiled or exported graphs see few shapes.
    pad_to_multiple: int = 8

    def __post_init__(self) -> None:
        if self.max_length < 2:
            raise ConfigValueError("max_length", f"{self.max_length} is below 2", "give at least 2")
        if self.vocab_size < 4:
            raise ConfigValueError("vocab_size", f"{self.vocab_size} is below 4", "match the model's vocabulary")
        if self.topk < 1 or self.pad_to_multiple < 1:
            raise ConfigValueError("topk", "topk and pad_to_multiple must be positive", "give positive numbers")

@dataclass(frozen=True)
class TensorOptions:
    # Shape of one row, without the batch dimension; checked on every request when given.
    input_shape: Optional[tuple[int, ...]] = None
    dtype: Literal["float32", "float64", "int64", "int32"] = "float32"
    input_field: str = "inputs"

    def __post_init__(self) -> None:
        if self.input_shape is not None and any(d < 1 for d in self.input_shape):
            raise ConfigValueError("input_shape", f"{list(self.input_shape)} has a dimension below 1",
                                   "give positive sizes, e.g. input_shape: [16]")
