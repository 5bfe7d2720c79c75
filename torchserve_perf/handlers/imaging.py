"""Image bytes -> cropped pixels (8-bit RGB, or [0, 1] floats for 16-bit and float modes), then
normalised; every allocation is bounded before it happens.

The header is read first (``Image.open`` decodes nothing): the declared pixels, the aspect ratio
and the size after the resize are checked there, so a 100-byte PNG that declares 1x6000 pixels
(256x1,536,000 once its short side is resized to 256) or 12000x12000 is refused before any
large buffer exists. JPEGs are decoded at 1/2, 1/4 or 1/8 scale (``draft``) when that still
covers the resize target. Every Pillow mode is scaled to [0, 1] by its own range, so a 16-bit
image gives the same answer as its 8-bit equivalent instead of being clipped to white.
"""

from __future__ import annotations

import io
import warnings
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from torchserve_perf.handlers.errors import RequestError
from torchserve_perf.handlers.options import ImageOptions
from torchserve_perf.handlers.validation import safe_reason

# Pillow modes whose numbers are not 0..255, and the value that means full intensity:
# 16-bit files open as I;16* (older Pillow: I); F is taken as 0..1 floats.
GRAY_RANGES = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}
READABLE = "a readable JPEG or PNG image"
# A downscale by 3x or more first shrinks by a whole factor with Image.reduce (cheap, small buffers),
# then resamples; below 3x the resize is exact as before (Pillow: indistinguishable at 3.0).
REDUCING_GAP = 3.0


def open_image(raw: bytes, formats: Sequence[str]) -> Image.Image:
    """Parse the header only. Pillow's messages quote the file object, so they are replaced."""
    try:
        with warnings.catch_warnings():  # our own, lower pixel limit answers below; hostile files
            warnings.simplefilter("ignore")  # would fill the model log with Pillow's parser warnings
            return Image.open(io.BytesIO(raw), formats=list(formats))
    except Image.DecompressionBombError:
        raise RequestError("the image declares more pixels than this model accepts", 413) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        kind = "its format is not recognised" if isinstance(exc, UnidentifiedImageError) else safe_reason(exc)
        raise RequestError(f"the payload is not {READABLE} ({', '.join(formats)} accepted): {kind}", 400) from None


def resize_target(size: tuple[int, int], resize: int, crop: int, max_pixels: int, max_aspect_ratio: float,
                  max_resized_pixels: int) -> tuple[int, int]:
    """The size the short side -> ``resize`` step makes; refuses what is over the limits."""
    width, height = size
    if width < 1 or height < 1:
        raise RequestError(f"the image declares {width}x{height} pixels", 400)
    if width * height > max_pixels:
        raise RequestError(f"the image is {width}x{height} = {width * height} pixels, over this model's limit "
                           f"of {max_pixels} (max_pixels)", 413)
    ratio = max(width, height) / min(width, height)
    if ratio > max_aspect_ratio:
        raise RequestError(f"the image is {width}x{height}, an aspect ratio of {ratio:.0f}:1, over this model's "
                           f"limit of {max_aspect_ratio:g}:1 (max_aspect_ratio)", 422)
    scale = resize / min(width, height)
    target = (max(crop, round(width * scale)), max(crop, round(height * scale)))
    if target[0] * target[1] > max_resized_pixels:
        raise RequestError(f"resizing the {width}x{height} image gives {target[0]}x{target[1]} pixels, over this "
                           f"model's limit of {max_resized_pixels} (max_resized_pixels)", 422)
    return target


def target_for(size: tuple[int, int], options: ImageOptions) -> tuple[int, int]:
    """:func:`resize_target` with a handler's ``image:`` limits."""
    return resize_target(size, options.resize, options.crop, options.max_pixels, options.max_aspect_ratio,
                         options.max_resized_pixels)


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: 1, L, P, LA, PA, RGBA, CMYK, YCbCr... convert exactly (alpha is dropped)."""
    try:
        return image if image.mode == "RGB" else image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise RequestError(f"images in mode {image.mode} are not supported: {safe_reason(exc)}", 422) from None


def decode(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Decode the pixels, at a reduced JPEG scale when that still covers ``target``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if image.format == "JPEG":
                image.draft(image.mode, target)  # 1/2, 1/4 or 1/8 of the pixels, never below target
            image.load()
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, Image.DecompressionBombError) as exc:
        raise RequestError(f"the payload is not {READABLE}: {safe_reason(exc)}", 400) from None
    return image


def source_box(size: tuple[int, int], target: tuple[int, int], crop: int) -> tuple[float, float, float, float]:
    """The region of the source image that the centre ``crop`` of an image resized to ``target`` covers.

    Resizing only that region straight to ``crop`` x ``crop`` computes the same filter at the same
    centres (Pillow's window still reads pixels outside the box), without the ~40% of the resized
    pixels the crop throws away; a value differs from resize-then-crop by at most one 8-bit level."""
    left, top = (target[0] - crop) // 2, (target[1] - crop) // 2
    scale_x, scale_y = size[0] / target[0], size[1] / target[1]
    return (left * scale_x, top * scale_y, (left + crop) * scale_x, (top + crop) * scale_y)


def resize_crop_pixels(image: Image.Image, target: tuple[int, int], crop: int) -> np.ndarray:
    """``crop`` x ``crop`` x 3 of the image resized to ``target`` and centre-cropped: uint8 for 8-bit
    images, float32 in [0, 1] for the modes of ``GRAY_RANGES``."""
    box = source_box(image.size, target, crop)
    if image.mode in GRAY_RANGES:
        # Scaled by the mode's range in float: convert("RGB") would clip 16-bit values to 255 (white).
        gray = np.asarray(image, dtype=np.float32) / GRAY_RANGES[image.mode]
        plane = Image.fromarray(np.clip(gray, 0.0, 1.0), "F").resize(
            (crop, crop), Image.Resampling.BILINEAR, box=box, reducing_gap=REDUCING_GAP)
        return np.repeat(np.asarray(plane, dtype=np.float32)[:, :, None], 3, axis=2)
    return np.asarray(to_rgb(image).resize((crop, crop), Image.Resampling.BILINEAR, box=box,
                                           reducing_gap=REDUCING_GAP))


class Normaliser:
    """HxWx3 pixels -> a normalised 1x3xHxW float32 tensor, ``((x / 255) - mean) / std`` per channel.

    8-bit pixels go through a 256-entry table per channel, computed with the same float32 steps as
    the arithmetic path, so both give identical values; the table skips four passes over the image."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
        levels = np.arange(256, dtype=np.float32)[None, :] / np.float32(255.0)
        self.table = (levels - self.mean.reshape(3, 1)) / self.std.reshape(3, 1)

    def __call__(self, hwc: np.ndarray) -> torch.Tensor:
        if hwc.dtype == np.uint8:
            chw = np.empty((3, hwc.shape[0], hwc.shape[1]), dtype=np.float32)
            for channel in range(3):
                np.take(self.table[channel], hwc[:, :, channel], out=chw[channel])
        else:
            chw = (np.ascontiguousarray(hwc.transpose(2, 0, 1), dtype=np.float32) - self.mean) / self.std
        return torch.from_numpy(chw).unsqueeze(0)
