#!/usr/bin/env python3
"""The same ResNet-18 (seeded weights, 224x224, top-5) served by LitServe, for side-by-side runs.

LitServe decodes JSON by default, so a request is ``{"image": "<base64 JPEG/PNG>"}`` on
``POST /predict``. Batching is LitServe's own dynamic batching (``max_batch_size`` and
``batch_timeout`` on the LitAPI, as its documentation recommends); decoding and resizing happen
per request in ``decode_request``, the tensors are stacked by LitServe's default ``batch``.

    .venv/bin/python scripts/litserve_app.py --port 8000 --max-batch-size 8 --batch-timeout 0.01
"""

from __future__ import annotations

import argparse
import base64
import io
import sys
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import litserve as ls  # noqa: E402
import torch  # noqa: E402

RESIZE, CROP = 256, 224
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def preprocess(raw: bytes) -> "Any":
    """JPEG/PNG bytes -> normalised 3x224x224 tensor (resize the short side to 256, centre crop)."""
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(raw)).convert("RGB")
    width, height = image.size
    scale = RESIZE / min(width, height)
    image = image.resize((max(CROP, round(width * scale)), max(CROP, round(height * scale))), Image.BILINEAR)
    width, height = image.size
    left, top = (width - CROP) // 2, (height - CROP) // 2
    array = np.asarray(image.crop((left, top, left + CROP, top + CROP)), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    return (tensor - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)


class ResNet18API(ls.LitAPI):
    """Module-level so that LitServe's spawned workers can unpickle it."""

    def setup(self, device: str) -> None:
        from models.resnet18 import ResNet18
        from scripts.build_model_store import seeded_state_dict

        self.model = ResNet18().eval()
        self.model.load_state_dict(seeded_state_dict(ResNet18))

    def decode_request(self, request):  # unannotated: LitServe then parses the JSON body  # noqa: ANN001
        return preprocess(base64.b64decode(request["image"]))

    def predict(self, batch: Any) -> Any:
        with torch.inference_mode():
            if batch.dim() == 3:  # max_batch_size 1: no batching, one image
                batch = batch.unsqueeze(0)
            values, indices = torch.softmax(self.model(batch), dim=1).topk(5, dim=1)
        return [{str(int(i)): float(v) for v, i in zip(vs, ix)} for vs, ix in zip(values, indices)]

    def unbatch(self, output: Any) -> Any:
        return output

    def encode_response(self, output: Any) -> Any:
        return output[0] if isinstance(output, list) and len(output) == 1 else output


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-timeout", type=float, default=0.01, help="seconds to wait for a batch to fill")
    parser.add_argument("--workers-per-device", type=int, default=1)
    args = parser.parse_args(argv)

    api = ResNet18API(max_batch_size=args.max_batch_size, batch_timeout=args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu",
                          workers_per_device=args.workers_per_device, timeout=120)
    server.run(host=args.host, port=args.port, generate_client_file=False, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
