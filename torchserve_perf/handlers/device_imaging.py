"""Images resized, cropped and normalised on the model's device, from uint8 pixels.

The Pillow path (handlers/imaging.py) decodes, resizes and normalises every image on the CPU and
sends float32 to the device: 4 bytes a pixel, and the resize is the CPU's most expensive step
after the decode. Here the CPU only decodes (on the decode pool's threads, with the same limits
in front and the same JPEG draft), the uint8 pixels go to the device in one copy from one pinned
buffer (non-blocking on CUDA), and the resize (bilinear with antialias, as Pillow does it), the
centre crop and the normalisation run there with torch ops, images of one size as one batch.

With ``nvjpeg``, JPEGs skip the CPU decode too: their headers are checked on the CPU, then
torchvision decodes the batch on the GPU. An image nvjpeg cannot decode takes the CPU path alone.

Tolerance: on CPU the result matches the Pillow path within 2/255 of the [0, 1] range on every
pixel before normalisation (both round the resized pixels to 8 bits, and Pillow resizes only the
crop's source box, which moves a rare value by one more level), tested in
tests/unit/test_device_imaging.py. nvjpeg decodes at full scale where Pillow
uses a JPEG draft, and its IDCT differs from libjpeg's, so its pixels differ more: see the GPU test.
torchvision is imported only here, only when nvjpeg is asked for on a CUDA device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from torchserve_perf.handlers import imaging
from torchserve_perf.handlers.options import ImageOptions
from torchserve_perf.handlers.payloads import is_npy, looks_like_json
from torchserve_perf.handlers.validation import check_request_size
from torchserve_perf.plugins.decode_pool import DecodeConfig, DecodePool

log = logging.getLogger(__name__)

Decode = Callable[[Any, int], Any]


@dataclass(frozen=True)
class Pixels:
    """One decoded image, not yet resized: HxWx3 uint8 on the host (or 3xHxW on the device, from nvjpeg)."""

    data: Union[np.ndarray, torch.Tensor]
    target: tuple[int, int]  # (width, height) after the resize step, from the image's declared size


@dataclass(frozen=True)
class Jpeg:
    """A JPEG whose header passed the limits, left for nvjpeg to decode."""

    raw: bytes
    target: tuple[int, int]


# ---- the CPU half: limits, then decode to uint8 ---------------------------------------------------
def raw_image(body: Any) -> Optional[bytes]:
    """The body's bytes when it is an encoded image; None for .npy and JSON (the Pillow path's)."""
    if not isinstance(body, (bytes, bytearray)) or is_npy(body) or looks_like_json(body):
        return None
    return bytes(body)


def header_target(raw: bytes, options: ImageOptions) -> tuple[Any, tuple[int, int]]:
    """The image's header checked against the limits (nothing decoded yet) and its resize target."""
    check_request_size(len(raw), options.max_request_mb)
    image = imaging.open_image(raw, options.formats)
    return image, imaging.target_for(image.size, options)


def decode_pixels(raw: bytes, options: ImageOptions) -> Optional[Pixels]:
    """Encoded bytes -> uint8 RGB pixels; None for modes the Pillow path scales by their own range."""
    image, target = header_target(raw, options)
    image = imaging.decode(image, target)
    if image.mode in imaging.GRAY_RANGES:  # 16-bit and float gray: imaging.resize_crop_pixels scales them
        return None
    return Pixels(np.asarray(imaging.to_rgb(image)), target)


# ---- the device half --------------------------------------------------------------------------------
def uses_pinned_memory(device: torch.device) -> bool:
    """Pinned host memory makes the copy asynchronous; only CUDA has it."""
    return device.type == "cuda"


def stage(arrays: Sequence[np.ndarray], device: torch.device, pinned: Optional[bool] = None) -> list[torch.Tensor]:
    """HxWx3 uint8 arrays -> 3xHxW uint8 tensors on ``device``: one host buffer (pinned on CUDA), one copy."""
    pinned = uses_pinned_memory(device) if pinned is None else pinned
    sizes = [int(a.size) for a in arrays]
    host = torch.empty(sum(sizes), dtype=torch.uint8, pin_memory=pinned)
    flat, offset = host.numpy(), 0  # written through numpy: Pillow's arrays are read-only, torch warns on them
    for array, size in zip(arrays, sizes):
        flat[offset:offset + size] = array.reshape(-1)
        offset += size
    moved = host.to(device, non_blocking=pinned)
    views, offset = [], 0
    for array, size in zip(arrays, sizes):
        height, width = array.shape[:2]
        views.append(moved[offset:offset + size].view(height, width, 3).permute(2, 0, 1))
        offset += size
    return views


def resize_crop_normalise(images: torch.Tensor, target: tuple[int, int], crop: int, mean: torch.Tensor,
                          std: torch.Tensor) -> torch.Tensor:
    """Nx3xHxW uint8 -> Nx3xCxC float32: resized to ``target`` (w, h), centre-cropped, normalised.

    The resized pixels are rounded to 8 bits, as Pillow's resize of an 8-bit image rounds them, so
    both paths feed the model the same numbers (within one step of rounding)."""
    width, height = target
    left, top = (width - crop) // 2, (height - crop) // 2
    if images.device.type == "cpu":
        # CPU has a uint8 kernel (channels-last, as staged): Pillow's own rounding, several times faster.
        resized = F.interpolate(images, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        cropped = resized[:, :, top:top + crop, left:left + crop].float()
    else:
        resized = F.interpolate(images.float(), size=(height, width), mode="bilinear", antialias=True,
                                align_corners=False)
        cropped = resized[:, :, top:top + crop, left:left + crop].round_().clamp_(0, 255)
    return (cropped / 255.0 - mean) / std


def transform(images: Sequence[tuple[torch.Tensor, tuple[int, int]]], crop: int, mean: torch.Tensor,
              std: torch.Tensor) -> list[torch.Tensor]:
    """Each (3xHxW uint8, target) -> 1x3xCxC; images of one size and target go through as one batch."""
    groups: dict[tuple, list[int]] = {}
    for i, (image, target) in enumerate(images):
        groups.setdefault((tuple(image.shape), target), []).append(i)
    out: list[Optional[torch.Tensor]] = [None] * len(images)
    for (_, target), members in groups.items():
        batch = torch.stack([images[i][0] for i in members])
        for i, row in zip(members, resize_crop_normalise(batch, target, crop, mean, std).split(1)):
            out[i] = row
    return out  # type: ignore[return-value]


# ---- nvjpeg -----------------------------------------------------------------------------------------
class Nvjpeg:
    """Batch JPEG decode on the GPU; any image the batch call fails on is retried alone."""

    def __init__(self, decode_batch: Callable[[list[torch.Tensor]], list[torch.Tensor]]) -> None:
        self._decode_batch = decode_batch

    @classmethod
    def load(cls, device: torch.device) -> tuple[Optional[Nvjpeg], str]:
        """The decoder, or None and why not (no CUDA, no torchvision): those hosts decode on the CPU."""
        if device.type != "cuda":
            return None, f"the device is {device}, not CUDA"
        try:  # lazily: torchvision is never a dependency of CPU installs
            from torchvision.io import ImageReadMode, decode_jpeg
        except Exception as exc:  # ImportError, or a torchvision built against another torch
            return None, f"torchvision.io is not importable ({type(exc).__name__})"
        return cls(lambda data: decode_jpeg(data, mode=ImageReadMode.RGB, device=device)), "torchvision nvjpeg"

    def decode(self, raws: Sequence[bytes]) -> list[Union[torch.Tensor, Exception]]:
        """3xHxW uint8 on the GPU per JPEG, or the exception that one raised."""
        data = [torch.frombuffer(bytearray(raw), dtype=torch.uint8) for raw in raws]
        try:
            return list(self._decode_batch(data))
        except Exception:  # one bad image fails the whole call: find it, decode the rest
            log.debug("nvjpeg failed on a batch of %d; decoding them one by one", len(data), exc_info=True)
        decoded: list[Union[torch.Tensor, Exception]] = []
        for one in data:
            try:
                decoded.append(self._decode_batch([one])[0])
            except Exception as exc:
                decoded.append(exc)
        return decoded


# ---- the whole path ---------------------------------------------------------------------------------
def wanted(config: DecodeConfig, device: torch.device) -> bool:
    """Whether the images go to the device as uint8: ``on_device`` auto means on CUDA."""
    return config.on_device == "always" or (config.on_device == "auto" and device.type == "cuda")


class DeviceImages:
    """A batch of image requests: uint8 decode on the pool, resize/crop/normalise on ``device``.

    ``pillow`` is the handler's own decode (Pillow, float32): .npy, JSON, 16-bit images and any
    image the device path cannot take go there, one by one, so every request gets an answer."""

    def __init__(self, options: ImageOptions, device: torch.device, nvjpeg: Optional[Nvjpeg] = None) -> None:
        self.options = options
        self.device = device
        self.nvjpeg = nvjpeg
        self.mean = torch.tensor(options.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(options.std, device=device).view(1, 3, 1, 1)

    @classmethod
    def for_handler(cls, config: DecodeConfig, options: ImageOptions, device: torch.device) -> Optional[DeviceImages]:
        if not wanted(config, device):
            return None
        nvjpeg, why = Nvjpeg.load(device) if config.nvjpeg == "auto" else (None, "decode.nvjpeg is off")
        log.info("images resized on %s; JPEGs decoded %s", device,
                 "on the GPU (nvjpeg)" if nvjpeg else f"on the CPU ({why})")
        return cls(options, device, nvjpeg)

    def describe(self) -> str:
        return f"on {self.device}" + (" with nvjpeg" if self.nvjpeg else "")

    def decode_all(self, bodies: Sequence[Any], pillow: Decode, pool: DecodePool) -> list[Any]:
        first = pool.map(lambda body, idx: self._first_pass(body, idx, pillow), bodies)
        jpegs = [i for i, item in enumerate(first) if isinstance(item, Jpeg)]
        if jpegs:
            if self.nvjpeg is None:  # _first_pass sets JPEGs aside only for nvjpeg
                raise RuntimeError("JPEG bodies were set aside for nvjpeg, which is not loaded")
            for i, image in zip(jpegs, self.nvjpeg.decode([first[i].raw for i in jpegs])):
                first[i] = Pixels(image, first[i].target) if isinstance(image, torch.Tensor) else None
            missed = [i for i in jpegs if first[i] is None]  # nvjpeg could not: Pillow decodes them
            if missed:
                log.info("nvjpeg could not decode %d of %d JPEGs; decoded on the CPU", len(missed), len(jpegs))
                # pool.map numbers the bodies it is given: map that back to their places in the batch.
                for i, item in zip(missed, pool.map(lambda body, k: self._cpu_pixels(body, missed[k], pillow),
                                                    [bodies[i] for i in missed])):
                    first[i] = item
        return self._finish(first, bodies, pillow)

    def _first_pass(self, body: Any, idx: int, pillow: Decode) -> Any:
        raw = raw_image(body)
        if raw is None:
            return pillow(body, idx)
        if self.nvjpeg is not None:
            image, target = header_target(raw, self.options)
            if image.format == "JPEG":
                return Jpeg(raw, target)
        return self._cpu_pixels(body, idx, pillow)

    def _cpu_pixels(self, body: Any, idx: int, pillow: Decode) -> Any:
        pixels = decode_pixels(bytes(body), self.options)
        return pillow(body, idx) if pixels is None else pixels

    def _finish(self, items: list[Any], bodies: Sequence[Any], pillow: Decode) -> list[Any]:
        host = [i for i, item in enumerate(items) if isinstance(item, Pixels) and isinstance(item.data, np.ndarray)]
        on_device = dict(zip(host, stage([items[i].data for i in host], self.device))) if host else {}
        images = [i for i, item in enumerate(items) if isinstance(item, Pixels)]
        ready = transform([(on_device.get(i, items[i].data), items[i].target) for i in images],
                          self.options.crop, self.mean, self.std)
        out = list(items)
        for i, tensor in zip(images, ready):
            out[i] = tensor
        for i, item in enumerate(out):  # the Pillow path's answers (.npy, JSON, 16-bit) join on the device
            if isinstance(item, torch.Tensor) and item.device != self.device:
                out[i] = item.to(self.device)
        return out
