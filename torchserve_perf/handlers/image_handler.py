"""Image classifier: JPEG/PNG bytes, base64 in JSON, or .npy in; top-k labels out."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from torchserve_perf.handlers import imaging, v2
from torchserve_perf.handlers.base import PerfHandler
from torchserve_perf.handlers.batch import Decoded
from torchserve_perf.handlers.device_imaging import DeviceImages
from torchserve_perf.handlers.errors import RequestError
from torchserve_perf.handlers.labels import load_labels, top_k
from torchserve_perf.handlers.options import ImageOptions
from torchserve_perf.handlers.payloads import as_bytes, as_json, b64decode, is_npy, load_npy, looks_like_json
from torchserve_perf.handlers.validation import check_request_size, non_finite_error


class ImageClassifierHandler(PerfHandler[ImageOptions]):
    options_section = "image"
    options_class = ImageOptions

    def initialize(self, context: Any) -> None:
        self.labels = load_labels(context.system_properties["model_dir"])
        super().initialize(context)
        opts = self.settings.options
        self.normalise = imaging.Normaliser(opts.mean, opts.std)
        # uint8 to the device, resized there (handler.decode.on_device, auto: on CUDA); None: Pillow only.
        self.device_images = DeviceImages.for_handler(self.settings.decode, opts, self.device)

    def decode_all(self, bodies: list[Any]) -> list[Any]:
        device_images = getattr(self, "device_images", None)  # None: Pillow only (or not initialized yet)
        if device_images is None:
            return super().decode_all(bodies)
        # The same limits run first; .npy, JSON, v2 and 16-bit images take the Pillow path (decode_request).
        return device_images.decode_all(bodies, self.decode_request, self.decode_pool)

    def example_input(self) -> Optional[torch.Tensor]:
        crop = self.settings.options.crop
        return torch.randn(1, 3, crop, crop, generator=torch.Generator().manual_seed(0))

    def decode(self, body: Any, idx: int) -> torch.Tensor:
        opts = self.settings.options
        if isinstance(body, (bytes, bytearray)):
            check_request_size(len(body), opts.max_request_mb)
        if is_npy(body):
            return self._from_array(load_npy(bytes(body), opts.max_pixels * 3))
        if looks_like_json(body):
            payload = as_json(body)
            field = next((k for k in ("image", "data", "b64") if isinstance(payload, dict) and k in payload), None)
            if field is None:
                raise RequestError("JSON image requests need a base64 string under 'image' (or 'data' / 'b64')")
            raw = b64decode(payload[field], field)
            check_request_size(len(raw), opts.max_request_mb)
            return self._from_image_bytes(raw)
        return self._from_image_bytes(as_bytes(body))

    def _from_image_bytes(self, raw: bytes) -> torch.Tensor:
        opts = self.settings.options
        image = imaging.open_image(raw, opts.formats)  # the header only: limits are checked before decoding
        target = imaging.target_for(image.size, opts)
        image = imaging.decode(image, target)
        return self.normalise(imaging.resize_crop_pixels(image, target, opts.crop))

    def _from_array(self, array: np.ndarray) -> torch.Tensor:
        opts = self.settings.options
        crop = opts.crop
        if array.dtype == np.uint8 and array.ndim == 3 and array.shape[-1] == 3:
            target = imaging.target_for((array.shape[1], array.shape[0]), opts)
            return self.normalise(imaging.resize_crop_pixels(Image.fromarray(array, "RGB"), target, crop))
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4 or tuple(array.shape[1:]) != (3, crop, crop) or array.dtype.kind != "f":
            raise RequestError(
                f".npy input must be a normalised float array of shape [3, {crop}, {crop}] or "
                f"[N, 3, {crop}, {crop}] (or a uint8 HxWx3 image); got {array.dtype.name} {list(array.shape)}", 422)
        if not opts.allow_non_finite and (error := non_finite_error(array, "input")):
            raise error
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    def collate(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        batch = torch.cat(tensors, dim=0)
        if self.settings.options.channels_last_input:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def format_output(self, output: torch.Tensor, request: Decoded) -> Any:
        opts = self.settings.options
        digits = None if opts.response == "stock" else 6
        predictions = [top_k(row, self.labels, opts.topk, digits) for row in output]
        return predictions[0] if len(predictions) == 1 else predictions

    def v2_bytes(self, element: bytes) -> bytes:
        return v2.b64_or_raw(element)  # JSON can carry an image only as base64 text

    def format_v2(self, output: torch.Tensor, request: Decoded) -> list[v2.V2Output]:
        return v2.classification_outputs([top_k(row, self.labels, self.settings.options.topk) for row in output])
