"""Image classifier: JPEG/PNG bytes, base64 in JSON, or .npy in; top-k labels out."""

from __future__ import annotations

import io
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from torchserve_perf.handlers.base import PerfHandler
from torchserve_perf.handlers.batch import Decoded
from torchserve_perf.handlers.options import ImageOptions
from torchserve_perf.handlers.errors import RequestError
from torchserve_perf.handlers.labels import load_labels, top_k
from torchserve_perf.handlers.payloads import as_bytes, as_json, b64decode, is_npy, load_npy, looks_like_json


class ImageClassifierHandler(PerfHandler):
    options_section = "image"
    options_class = ImageOptions

    def initialize(self, context: Any) -> None:
        self.labels = load_labels(context.system_properties["model_dir"])
        super().initialize(context)
        opts: ImageOptions = self.settings.options
        self._mean = torch.tensor(opts.mean).view(3, 1, 1)
        self._std = torch.tensor(opts.std).view(3, 1, 1)

    def example_input(self) -> Optional[torch.Tensor]:
        crop = self.settings.options.crop
        return torch.randn(1, 3, crop, crop, generator=torch.Generator().manual_seed(0))

    def decode(self, body: Any, idx: int) -> torch.Tensor:
        if is_npy(body):
            return self._from_array(load_npy(bytes(body)))
        if looks_like_json(body):
            payload = as_json(body)
            field = next((k for k in ("image", "data", "b64") if isinstance(payload, dict) and k in payload), None)
            if field is None:
                raise RequestError("JSON image requests need a base64 string under 'image' (or 'data' / 'b64')")
            return self._from_image_bytes(b64decode(payload[field], field))
        return self._from_image_bytes(as_bytes(body))

    def _from_image_bytes(self, raw: bytes) -> torch.Tensor:
        try:
            image = Image.open(io.BytesIO(raw))
            image = image.convert("RGB")
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise RequestError(f"the payload is not a readable JPEG or PNG image: {exc}", 400) from None
        return self._normalise(self._resize_crop(image))

    def _resize_crop(self, image: Image.Image) -> torch.Tensor:
        opts: ImageOptions = self.settings.options
        width, height = image.size
        scale = opts.resize / min(width, height)
        image = image.resize((max(opts.crop, round(width * scale)), max(opts.crop, round(height * scale))),
                             Image.BILINEAR)
        width, height = image.size
        left, top = (width - opts.crop) // 2, (height - opts.crop) // 2
        image = image.crop((left, top, left + opts.crop, top + opts.crop))
        array = np.asarray(image, dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1)

    def _normalise(self, chw: torch.Tensor) -> torch.Tensor:
        return ((chw - self._mean) / self._std).unsqueeze(0)

    def _from_array(self, array: np.ndarray) -> torch.Tensor:
        crop = self.settings.options.crop
        if array.dtype == np.uint8 and array.ndim == 3 and array.shape[-1] == 3:
            return self._normalise(self._resize_crop(Image.fromarray(array, "RGB")))
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or tuple(array.shape[1:]) != (3, crop, crop) or array.dtype.kind != "f":
            raise RequestError(
                f".npy input must be a normalised float array of shape [3, {crop}, {crop}] or "
                f"[N, 3, {crop}, {crop}] (or a uint8 HxWx3 image); got {array.dtype} {list(array.shape)}", 422)
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    def collate(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        batch = torch.cat(tensors, dim=0)
        if self.settings.options.channels_last_input:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def format_output(self, output: torch.Tensor, request: Decoded) -> Any:
        predictions = [top_k(row, self.labels, self.settings.options.topk) for row in output]
        return predictions[0] if len(predictions) == 1 else predictions
