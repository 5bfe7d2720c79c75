"""Per-handler settings: the image:, text:, transformers: and tensor: sections under handler: in model-config.yaml.

They live apart from the handler files because a file given to --handler may define one class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from torchserve_perf.plugins.config import ConfigValueError

MIB = 1024 * 1024


def _check_limits(max_request_mb: float) -> None:
    if not 0 < max_request_mb <= 1024:
        raise ConfigValueError("max_request_mb", f"{max_request_mb} is outside (0, 1024]",
                               "give the largest request body in MiB, e.g. 16")


@dataclass(frozen=True)
class ImageOptions:
    resize: int = 256
    crop: int = 224
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    topk: int = 5
    channels_last_input: bool = False
    # Limits checked from the image header, before anything is decoded or resized (a 100-byte PNG can
    # declare 1x6000 pixels, and resizing its short side to 256 would make 256x1,536,000).
    max_pixels: int = 24_000_000  # decoded width x height; Pillow's own bomb limit is ~89 M (JSON 413 above)
    max_aspect_ratio: float = 20.0  # long side / short side (JSON 422 above)
    max_resized_pixels: int = 4_000_000  # the resized image before the crop (JSON 422 above)
    max_request_mb: float = 16.0  # one request body (JSON 413 above); also sets TorchServe's max_request_size
    # Pillow decoders a request may reach; fewer formats, fewer decoders exposed to hostile bytes.
    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
    allow_non_finite: bool = False  # NaN/Inf in a .npy input or in the output: JSON 422 unless true
    # stock: TorchServe's image_classifier answer, {label: probability} of the top k with the
    # probabilities unrounded, so clients written against it keep working; ours: rounded to 6 places.
    response: Literal["ours", "stock"] = "ours"

    def __post_init__(self) -> None:
        _check_limits(self.max_request_mb)
        if self.response not in ("ours", "stock"):
            raise ConfigValueError("response", f"{self.response!r} is neither ours nor stock",
                                   "give response: stock (TorchServe image_classifier's answer) or ours")
        if self.max_pixels < 1:
            raise ConfigValueError("max_pixels", f"{self.max_pixels} is below 1", "give a pixel count, e.g. 24000000")
        if self.max_resized_pixels < self.resize * self.resize:
            raise ConfigValueError("max_resized_pixels", f"{self.max_resized_pixels} is below one "
                                   f"{self.resize}x{self.resize} resized image", f"give at least {self.resize ** 2}")
        if not self.formats:
            raise ConfigValueError("formats", "no image format is accepted", "list formats, e.g. [JPEG, PNG]")
        if self.max_aspect_ratio < 1:
            raise ConfigValueError("max_aspect_ratio", f"{self.max_aspect_ratio} is below 1", "give 1 or more, e.g. 20")
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
    max_request_mb: float = 1.0  # one request body (JSON 413 above); also sets TorchServe's max_request_size
    allow_non_finite: bool = False  # NaN/Inf in the output: JSON 422 unless true

    def __post_init__(self) -> None:
        _check_limits(self.max_request_mb)
        if self.max_length < 2:
            raise ConfigValueError("max_length", f"{self.max_length} is below 2", "give at least 2")
        if self.vocab_size < 4:
            raise ConfigValueError("vocab_size", f"{self.vocab_size} is below 4", "match the model's vocabulary")
        if self.topk < 1 or self.pad_to_multiple < 1:
            raise ConfigValueError("topk", "topk and pad_to_multiple must be positive", "give positive numbers")

@dataclass(frozen=True)
class TransformersOptions:
    max_length: int = 0  # tokens, special ones included; 0: the model's own maximum
    topk: int = 3  # sequence classification: labels returned per text
    text_field: str = "text"
    # Each batch is padded to its longest text rounded up to this, so compiled graphs see few shapes.
    pad_to_multiple: int = 8
    # Split a batch into groups of similar length when the padding saved outweighs one more model
    # call, costed as this many padded tokens (handlers/text_batching.py); 0 turns grouping off.
    group_call_tokens: int = 64
    max_request_mb: float = 1.0  # one request body (JSON 413 above); also sets TorchServe's max_request_size
    allow_non_finite: bool = False  # NaN/Inf in the output: JSON 422 unless true

    def __post_init__(self) -> None:
        _check_limits(self.max_request_mb)
        if self.max_length < 0 or self.max_length == 1:
            raise ConfigValueError("max_length", f"{self.max_length} is not 0 or at least 2",
                                   "give 0 (the model's own) or a token count such as 128")
        if self.topk < 1 or self.pad_to_multiple < 1:
            raise ConfigValueError("topk", "topk and pad_to_multiple must be positive", "give positive numbers")
        if self.group_call_tokens < 0:
            raise ConfigValueError("group_call_tokens", f"{self.group_call_tokens} is below 0",
                                   "give 0 (no grouping) or a token count such as 64")


@dataclass(frozen=True)
class TensorOptions:
    # Shape of one row, without the batch dimension; checked on every request when given.
    input_shape: Optional[tuple[int, ...]] = None
    dtype: Literal["float32", "float64", "int64", "int32"] = "float32"
    input_field: str = "inputs"
    # Shape of one row used only for warm-up and optimization checks, for models whose inputs vary.
    example_shape: Optional[tuple[int, ...]] = None
    max_request_mb: float = 16.0  # one request body (JSON 413 above); also sets TorchServe's max_request_size
    max_elements: int = 16_000_000  # numbers in one request (JSON 413 above), checked before converting
    allow_non_finite: bool = False  # NaN/Inf in the input or the output: JSON 422 unless true

    def __post_init__(self) -> None:
        _check_limits(self.max_request_mb)
        if self.max_elements < 1:
            raise ConfigValueError("max_elements", f"{self.max_elements} is below 1", "give a positive count")
        if self.example_shape is not None and self.input_shape is not None:
            raise ConfigValueError("example_shape", "both input_shape and example_shape are set",
                                   "give input_shape (checked on every request) or example_shape (warm-up only)")
        if self.example_shape is not None and any(d < 1 for d in self.example_shape):
            raise ConfigValueError("example_shape", f"{list(self.example_shape)} has a dimension below 1",
                                   "give positive sizes, e.g. example_shape: [16]")
        if self.input_shape is not None and any(d < 1 for d in self.input_shape):
            raise ConfigValueError("input_shape", f"{list(self.input_shape)} has a dimension below 1",
                                   "give positive sizes, e.g. input_shape: [16]")


OPTIONS = {"image": ImageOptions, "text": TextOptions, "tensor": TensorOptions, "transformers": TransformersOptions}
# Room for a multipart form's framing and for base64 in JSON (4 bytes carry 3).
FRAMING_BYTES = 64 * 1024


def max_request_size(model_configs: list[dict]) -> int:
    """TorchServe's ``max_request_size`` (bytes) for models with these model-config.yaml contents.

    The largest ``max_request_mb`` of their image:, text: and tensor: sections (defaults where
    absent), as base64 in JSON, plus framing: the frontend then refuses only bodies no handler
    would accept (with a 413 and an empty body); smaller ones over a model's own limit get the
    handler's JSON 413.
    """
    from torchserve_perf.plugins.config import build

    largest = 0.0
    for config in model_configs:
        section = (config or {}).get("handler") or {}
        present = [name for name in OPTIONS if name in section] or list(OPTIONS)
        for name in present:
            largest = max(largest, build(OPTIONS[name], section.get(name), name).max_request_mb)
    return int(largest * MIB * 4 / 3) + FRAMING_BYTES
