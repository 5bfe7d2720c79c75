"""Hypothesis fuzzing of every decoder (image, tensor, text, JSON and base64) on TorchServe's real Context.

Each example is a batch of 1-3 hostile bodies handed to ``handle`` as TorchServe would. Nothing
may raise out of the handler, every request gets a 200 or a 4xx, every response is strict JSON
(no NaN), and no response repeats the marker planted in the input. The number of generated
inputs is printed. ``FUZZ_EXAMPLES`` sets the examples per decoder (``make fuzz`` runs more).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.conftest import REPO, RequestContext, write_model_dir
from tests.handler_fixtures import SQRT_MODEL, TINY_CNN
from torchserve_perf.handlers.image_handler import ImageClassifierHandler
from torchserve_perf.handlers.tensor_handler import TensorHandler
from torchserve_perf.handlers.text_handler import TextClassifierHandler
from torchserve_perf.models.text_classifier import TextClassifier

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "250"))
MARKER = "QZXMARK"
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])
COUNTS: dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def print_counts(request: pytest.FixtureRequest):
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    line = f"[fuzz] {sum(COUNTS.values())} generated inputs: " + ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items()))
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{line}")  # shown in a normal (captured) run too


def build(tmp: Path, handler_class: type, model_file_text: str, file_name: str, model: torch.nn.Module,
          config: dict, labels: Any = None) -> tuple[Any, RequestContext]:
    tmp.mkdir(parents=True, exist_ok=True)
    model_file = tmp / file_name
    model_file.write_text(model_file_text)
    manifest = write_model_dir(tmp / "model", model_file, model,
                               extra={"index_to_name.json": labels} if labels is not None else None)
    ctx = RequestContext(tmp / "model", manifest, {"handler": config})
    handler = handler_class()
    handler.initialize(ctx.context)
    return handler, ctx


@pytest.fixture(scope="module")
def handlers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, RequestContext]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    torch.manual_seed(0)
    cnn = torch.nn.Module()
    cnn.conv = torch.nn.Conv2d(3, 4, 3)
    probe = torch.nn.Module()
    probe.linear = torch.nn.Linear(4, 3)
    text_model = TextClassifier()
    return {
        "image": build(tmp / "image", ImageClassifierHandler, TINY_CNN, "tiny_cnn.py", cnn,
                       {"image": {"resize": 40, "crop": 32, "topk": 2}}, {"0": "a", "1": "b", "2": "c", "3": "d"}),
        "tensor": build(tmp / "tensor", TensorHandler, SQRT_MODEL, "sqrt_probe.py", probe,
                        {"tensor": {"input_shape": [4]}}),
        "text": build(tmp / "text", TextClassifierHandler, (REPO / "torchserve_perf" / "models" / "text_classifier.py").read_text(),
                      "text_classifier.py", text_model, {"text": {"topk": 2}},
                      {str(i): f"label{i}" for i in range(8)}),
    }


def check(handlers: dict, name: str, bodies: list[Any]) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + len(bodies)
    handler, ctx = handlers[name]
    context = ctx.for_batch(size=len(bodies))
    outputs = handler.handle([{"body": b} for b in bodies], context)  # must not raise
    assert len(outputs) == len(bodies)
    for idx, output in enumerate(outputs):
        status = context.get_response_status(idx)[0] or 200
        text = json.dumps(output, allow_nan=False)  # strict JSON: no NaN or Infinity
        assert status == 200 or 400 <= status < 500, (status, text)
        if status != 200:
            assert output["error"]["code"] == status and output["error"]["message"]
        assert MARKER not in text, text
        assert not re.search(r"(?<![0-9])0x[0-9a-fA-F]{6,}|object at", text), text  # no object addresses in errors


# ---- building blocks ---------------------------------------------------------------------------------
def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int, depth: int, colour: int, idat: bytes) -> bytes:
    """A PNG whose header declares any size and mode, with a valid CRC, and arbitrary image data."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def encoded(mode: str, size: tuple[int, int], fmt: str) -> bytes:
    buffer = io.BytesIO()
    image = Image.new(mode, size, 7 if mode not in ("RGB", "RGBA", "CMYK") else None)
    image.save(buffer, fmt)
    return buffer.getvalue()


SEEDS = [encoded("RGB", (20, 12), "PNG"), encoded("RGB", (20, 12), "JPEG"), encoded("L", (9, 30), "GIF"),
         encoded("RGB", (5, 5), "BMP"), encoded("I;16", (8, 8), "PNG"), encoded("CMYK", (6, 6), "TIFF"),
         encoded("RGBA", (7, 3), "WEBP"), encoded("F", (4, 4), "TIFF")]


@st.composite
def mutated(draw: Any, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "marker"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if action == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        else:
            data[at:at] = MARKER.encode()
    return bytes(data)


# Well-formed images of every mode and odd sizes (1 px, thin, smaller than the crop): the resize paths.
FORMATS = {"1": ["PNG", "BMP", "TIFF"], "L": ["PNG", "JPEG", "GIF", "TIFF"], "P": ["PNG", "GIF", "BMP"],
           "LA": ["PNG"], "RGB": ["PNG", "JPEG", "WEBP", "TIFF"], "RGBA": ["PNG", "WEBP", "TIFF"],
           "CMYK": ["JPEG", "TIFF"], "I;16": ["PNG", "TIFF"], "I": ["TIFF"], "F": ["TIFF"]}


@st.composite
def valid_images(draw: Any) -> bytes:
    mode = draw(st.sampled_from(sorted(FORMATS)))
    size = (draw(st.integers(1, 120)), draw(st.integers(1, 120)))
    fmt = draw(st.sampled_from(FORMATS[mode]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    h, w = size[1], size[0]
    if mode in ("I;16", "I", "F"):
        peak = {"I;16": 65535, "I": 2 ** 31 - 1, "F": 1e30}[mode]
        values = rng.uniform(0 if mode == "I;16" else -peak, peak, (h, w))
        image = Image.fromarray(values.astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
    elif mode in ("1", "L", "P"):
        image = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)).convert(mode)
    elif mode == "LA":
        image = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8)).convert("LA")
    else:
        image = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


declared_pngs = st.builds(png_declaring, st.integers(0, 2 ** 31 - 1), st.integers(0, 2 ** 31 - 1),
                          st.sampled_from([1, 2, 4, 8, 16]), st.sampled_from([0, 2, 3, 4, 6]),
                          st.binary(max_size=64))
raw_bytes = st.binary(max_size=512).map(lambda b: b + MARKER.encode())
image_bytes = st.one_of(mutated(SEEDS), declared_pngs, raw_bytes, valid_images())


def npy_with_header(descr: str, shape: str, fortran: str, data: bytes) -> bytes:
    header = f"{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}".encode("latin1", "replace")
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + data


npy_fields = st.one_of(st.sampled_from(["'<f4'", "'<f8'", "'|u1'", "'<i8'", "'|O'", "'<c8'", "'|b1'", "'<U3'", "'V8'"]),
                       st.text(max_size=12).map(lambda t: repr(t + MARKER)))
npy_shapes = st.one_of(st.lists(st.integers(-2, 70000), max_size=4).map(lambda s: repr(tuple(s))),
                       st.text(max_size=10).map(lambda t: t + MARKER))
hostile_npy = st.builds(npy_with_header, npy_fields, npy_shapes, st.sampled_from(["False", "True", MARKER]),
                        st.binary(max_size=256))
def _filled(shape: tuple, fill: float, dtype: Any) -> bytes:
    with np.errstate(all="ignore"):  # NaN or 1e300 cast to an integer or float16: whatever numpy makes of it
        return _npy_bytes(np.full(shape, fill).astype(dtype))


float_arrays = st.builds(
    _filled,
    st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple),
    st.sampled_from([0.0, 1.5, -1.0, float("nan"), float("inf"), -float("inf"), 1e300, 255]),
    st.sampled_from([np.float32, np.float64, np.uint8, np.int64, np.float16, np.complex64, np.bool_]))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True),
                         st.text(max_size=20).map(lambda t: t + MARKER))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                                   st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=30)
number_rows = st.lists(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                                          st.integers(-2 ** 40, 2 ** 40)), min_size=0, max_size=6), max_size=4)


def as_json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()  # NaN/Infinity literals included: Python's json writes them


# ---- the fuzz tests --------------------------------------------------------------------------------------
@FUZZ
@given(st.lists(st.one_of(image_bytes, hostile_npy, float_arrays,
                          st.builds(lambda b: {"image": base64.b64encode(b).decode()}, image_bytes),
                          st.builds(lambda t: {"image": t}, st.text(max_size=40).map(lambda t: t + MARKER)),
                          st.builds(lambda t: as_json_bytes({"b64": t}), st.text(max_size=40).map(lambda t: t + MARKER)),
                          json_values), min_size=1, max_size=3))
def test_fuzz_image_decoder(handlers, bodies):
    check(handlers, "image", bodies)


@FUZZ
@given(st.lists(st.one_of(hostile_npy, float_arrays, json_values, number_rows,
                          number_rows.map(lambda rows: as_json_bytes({"inputs": rows})),
                          number_rows.map(lambda rows: {"inputs": rows}),
                          json_values.map(as_json_bytes), raw_bytes,
                          st.text(max_size=60).map(lambda t: ("{\"inputs\": [" + t + MARKER).encode("utf-8", "surrogatepass"))),
                min_size=1, max_size=3))
def test_fuzz_tensor_decoder(handlers, bodies):
    check(handlers, "tensor", bodies)


@FUZZ
@given(st.lists(st.one_of(st.text(max_size=300).map(lambda t: (t + MARKER).encode()),
                          raw_bytes,
                          st.text(max_size=100).map(lambda t: {"text": t + MARKER}),
                          json_values,
                          st.text(max_size=40).map(lambda t: ('{"text": "\\ud800' + t + MARKER + '"}').encode()),
                          st.binary(max_size=64).map(lambda b: b"\xef\xbb\xbf" + b + MARKER.encode())),
                min_size=1, max_size=3))
def test_fuzz_text_decoder(handlers, bodies):
    check(handlers, "text", bodies)
