"""Handlers in process on TorchServe's real Context, shared by several test modules: tiny seeded
models and the tensor, text and image handler fixtures (registered in conftest.py's pytest_plugins)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import REPO, RequestContext, write_model_dir
from torchserve_perf.handlers.image_handler import ImageClassifierHandler
from torchserve_perf.handlers.tensor_handler import TensorHandler
from torchserve_perf.handlers.text_handler import TextClassifierHandler
from torchserve_perf.models.text_classifier import TextClassifier

TINY_MODEL = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        if (x > 1e6).any():
            raise RuntimeError("value out of range")
        return self.linear(x)
'''


TINY_CNN = ("import torch\nfrom torch import nn\n\n\nclass TinyCNN(nn.Module):\n"
            "    def __init__(self):\n        super().__init__()\n"
            "        self.conv = nn.Conv2d(3, 4, 3)\n        self.pool = nn.AdaptiveAvgPool2d(1)\n\n"
            "    def forward(self, x):\n        return self.pool(self.conv(x)).flatten(1)\n")

# Linear(4, 3) plus sqrt of the first input: a negative first number makes a NaN output.
SQRT_MODEL = '''
import torch
from torch import nn


class SqrtProbe(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        return torch.cat([self.linear(x), torch.sqrt(x[:, :1])], dim=1)
'''


@pytest.fixture(autouse=True)  # every test: torch's thread count is process-wide
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def tiny_linear() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(4, 3).eval()


@pytest.fixture
def tensor_handler(tmp_path: Path) -> tuple[TensorHandler, RequestContext, torch.nn.Module]:
    model_file = tmp_path / "tiny_model.py"
    model_file.write_text(TINY_MODEL)
    linear = tiny_linear()
    model = torch.nn.Module()
    model.linear = linear
    manifest = write_model_dir(tmp_path / "model", model_file, model)
    ctx = RequestContext(tmp_path / "model", manifest, {"handler": {"tensor": {"input_shape": [4]}}})
    handler = TensorHandler()
    handler.initialize(ctx.context)
    return handler, ctx, linear


def run(handler: Any, ctx: RequestContext, bodies: list[Any]) -> tuple[list, list]:
    context = ctx.for_batch(size=len(bodies))
    outputs = handler.handle([{"body": b} for b in bodies], context)
    statuses = [context.get_response_status(i)[0] or 200 for i in range(len(bodies))]
    return outputs, statuses



@pytest.fixture
def text_handler(tmp_path: Path) -> tuple[TextClassifierHandler, RequestContext, torch.nn.Module]:
    torch.manual_seed(0)
    model = TextClassifier().eval()
    labels = {str(i): name for i, name in enumerate(["negative", "neutral", "positive", "question"])}
    manifest = write_model_dir(tmp_path / "model", REPO / "torchserve_perf" / "models" / "text_classifier.py", model,
                               extra={"index_to_name.json": labels})
    ctx = RequestContext(tmp_path / "model", manifest, {"handler": {"text": {"topk": 4}}})
    handler = TextClassifierHandler()
    handler.initialize(ctx.context)
    return handler, ctx, model


@pytest.fixture
def image_handler(tmp_path: Path) -> tuple[ImageClassifierHandler, RequestContext]:
    model_file = tmp_path / "tiny_cnn.py"
    model_file.write_text(TINY_CNN)
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.conv = torch.nn.Conv2d(3, 4, 3)
    manifest = write_model_dir(tmp_path / "model", model_file, model,
                               extra={"index_to_name.json": {"0": ["n0", "zero"], "1": "one", "2": "two", "3": "three"}})
    ctx = RequestContext(tmp_path / "model", manifest,
                         {"handler": {"image": {"resize": 40, "crop": 32, "topk": 2}}})
    handler = ImageClassifierHandler()
    handler.initialize(ctx.context)
    return handler, ctx


def tiny_image_handler(tmp_path: Path, handler_config: dict, batch_size: int = 4):
    """The image handler around a seeded tiny CNN, with TorchServe's real Context."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    model_file = tmp_path / "tiny_cnn.py"
    model_file.write_text(TINY_CNN)
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.conv = torch.nn.Conv2d(3, 4, 3)
    labels = {"0": "zero", "1": "one", "2": "two", "3": "three"}
    manifest = write_model_dir(tmp_path / "model", model_file, model, extra={"index_to_name.json": labels})
    config = {"handler": {"image": {"resize": 40, "crop": 32, "topk": 2}, **handler_config}}
    ctx = RequestContext(tmp_path / "model", manifest, config, batch_size=batch_size)
    handler = ImageClassifierHandler()
    handler.initialize(ctx.context)
    return handler, ctx
