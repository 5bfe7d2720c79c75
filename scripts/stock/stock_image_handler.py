"""The incumbent, for side-by-side runs: TorchServe's own BaseHandler with a stock image preprocess.

TorchServe's bundled image_classifier handler needs torchvision, which does not import beside
this torch, so this file does the same resize/crop/normalise with Pillow and keeps everything
else stock: BaseHandler.initialize, BaseHandler.handle (and its ENABLE_TORCH_PROFILER path,
which profiles every batch), no thread settings.
"""

import io

import numpy as np
import torch
from PIL import Image
from ts.torch_handler.base_handler import BaseHandler

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


class StockImageHandler(BaseHandler):
    def preprocess(self, data):
        images = []
        for row in data:
            body = row.get("data") or row.get("body")
            image = Image.open(io.BytesIO(body)).convert("RGB")
            width, height = image.size
            scale = 256 / min(width, height)
            image = image.resize((round(width * scale), round(height * scale)), Image.BILINEAR)
            width, height = image.size
            left, top = (width - 224) // 2, (height - 224) // 2
            image = image.crop((left, top, left + 224, top + 224))
            tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
            images.append((tensor - MEAN) / STD)
        return torch.stack(images).to(self.device)

    def postprocess(self, data):
        probs = torch.softmax(data, dim=1)
        values, indices = probs.topk(5, dim=1)
        return [{str(int(i)): float(v) for v, i in zip(vs, ix)} for vs, ix in zip(values, indices)]
