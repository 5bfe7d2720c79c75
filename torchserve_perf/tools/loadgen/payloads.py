"""Request bodies: payload files, their content types, and generated samples."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

CONTENT_TYPES = {
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
    ".txt": "text/plain", ".json": "application/json", ".npy": "application/octet-stream",
}

# The text payload of the demo, the tuner and the benchmarks.
SAMPLE_TEXT = b"The delivery was late but the support team fixed it."


@dataclass(frozen=True)
class Payload:
    body: bytes
    content_type: str
    name: str = "payload"

    def as_json_base64(self, key: str = "image") -> Payload:
        """The same bytes, base64 under ``key`` in a JSON object (for JSON-only servers)."""
        body = json.dumps({key: base64.b64encode(self.body).decode("ascii")}).encode()
        return Payload(body, "application/json", f"{self.name} (base64 JSON)")


def load_payload(path: Path, content_type: Optional[str] = None) -> Payload:
    """A payload file; the content type comes from the extension unless given."""
    path = Path(path)
    if content_type is None:
        content_type = CONTENT_TYPES.get(path.suffix.lower())
        if content_type is None:
            raise ValueError(f"cannot tell the content type of {path.name}: give it explicitly "
                             f"(known extensions: {', '.join(sorted(CONTENT_TYPES))})")
    return Payload(path.read_bytes(), content_type, path.name)


def sample_image(width: int = 640, height: int = 480, seed: int = 0, quality: int = 90) -> bytes:
    """A photo-like JPEG (gradients, shapes and noise), so decoding costs what a real photo costs."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x / width * 200, y / height * 180, (x + y) / (width + height) * 255], axis=-1)
    noisy = np.clip(base + rng.normal(0, 18, base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(noisy, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        size = int(rng.integers(20, 160))
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.ellipse((x0, y0, x0 + size, y0 + size), fill=color)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
