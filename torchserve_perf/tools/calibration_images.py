"""Seeded synthetic photos as JPEG request bodies: the ``--calibration`` folder of int8 benchmarks.

Seeded weights classify nothing, so no real data set would calibrate them better; what matters is
that the images go through the handler's own decode and preprocessing, as traffic would. Smooth
pictures (a coarse random grid, upsampled, with a little grain) are closer to photos than noise.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_COUNT = 64  # a quarter held out for the gate: 16 samples, above its min_samples (8)
SETTINGS = f"calibration: {DEFAULT_COUNT} synthetic JPEGs"  # how reports name a server built with them


def write_jpegs(directory: Path, count: int = DEFAULT_COUNT, *, size: tuple[int, int] = (320, 240),
                seed: int = 0) -> Path:
    """``count`` JPEGs of ``size`` (width, height) in ``directory``, made from ``seed``; returns ``directory``."""
    import numpy as np
    from PIL import Image

    if count < 1:
        raise ValueError(f"count {count}: give at least one image")
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
        grain = rng.normal(0.0, 12.0, size=smooth.shape)
        pixels = np.clip(smooth + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(directory / f"calibration_{index:04d}.jpg", quality=90)
    return directory
