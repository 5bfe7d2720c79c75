"""Our handlers speaking v2 in process, on TorchServe's real Context: v2 and plain requests in one batch,
each answered in its own protocol; a bad v2 request gets a v2 error for itself alone."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch

from tests.conftest import png_bytes
from tests.handler_fixtures import run


def v2_request(name: str, datatype: str, shape: list, data: list, **extra) -> dict:
    return {"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}], **extra}


def test_tensor_handler_answers_v2_and_plain_requests_in_one_batch(tensor_handler):
    handler, ctx, linear = tensor_handler
    rows = np.arange(8, dtype=np.float32).reshape(2, 4)
    bodies = [
        v2_request("x", "FP32", [2, 4], rows.tolist(), id="two-rows"),
        json.dumps(v2_request("x", "FP32", [4], [1, 2, 3, 4])).encode(),  # raw JSON bytes, as tritonclient sends
        {"inputs": [1.0, 2.0, 3.0, 4.0]},  # the handler's own JSON form, not v2
        v2_request("x", "INT64", [4], [1.5, 2, 3, 4]),  # a malformed v2 request
        v2_request("x", "FP32", [3], [1, 2, 3]),  # well-formed, the wrong shape for the model
        v2_request("x", "FP32", [4], [1, 2, 3, 4], outputs=[{"name": "nope"}]),
    ]
    outputs, statuses = run(handler, ctx, bodies)
    assert statuses == [200, 200, 200, 400, 422, 400]
    with torch.no_grad():
        expected = linear(torch.from_numpy(rows)).numpy()
        bare = linear(torch.tensor([1.0, 2.0, 3.0, 4.0])).numpy()
    first = outputs[0]
    assert first["model_name"] == "tiny" and first["model_version"] == "1.0" and first["id"] == "two-rows"
    (out,) = first["outputs"]
    assert out["name"] == "output" and out["datatype"] == "FP32" and out["shape"] == [2, 3]
    np.testing.assert_allclose(np.array(out["data"]).reshape(2, 3), expected, rtol=1e-6)
    assert outputs[1]["id"] == "req-1"  # no id sent: TorchServe's request id
    np.testing.assert_allclose(outputs[1]["outputs"][0]["data"], bare, rtol=1e-6)
    np.testing.assert_allclose(outputs[2], bare, rtol=1e-6)  # the plain request, answered plainly
    for i, words in ((3, "must hold integers"), (4, "expected shape [4]"), (5, "no output 'nope'")):
        assert set(outputs[i]) == {"error"} and words in outputs[i]["error"], outputs[i]


def test_a_v2_request_that_breaks_the_model_fails_alone_with_a_v2_error(tensor_handler):
    handler, ctx, _ = tensor_handler
    bodies = [v2_request("x", "FP32", [4], [1, 1, 1, 1]), v2_request("x", "FP32", [4], [1e9, 0, 0, 0]),
              [2.0, 2.0, 2.0, 2.0]]
    outputs, statuses = run(handler, ctx, bodies)
    assert statuses == [200, 422, 200]
    assert "value out of range" in outputs[1]["error"] and outputs[0]["outputs"][0]["shape"] == [1, 3]
    assert len(outputs[2]) == 3


def test_text_handler_reads_one_text_per_bytes_element(text_handler):
    handler, ctx, _ = text_handler
    texts = ["Fine.", "Why is the battery draining so fast?"]
    outputs, statuses = run(handler, ctx, [v2_request("text", "BYTES", [2], texts), texts[0].encode(), texts[1].encode(),
                                           v2_request("text", "FP32", [1], [1.0]),
                                           v2_request("text", "BYTES", [1], ["   "])])
    assert statuses == [200, 200, 200, 400, 400]
    labels, probabilities = outputs[0]["outputs"]
    assert labels["name"] == "labels" and labels["datatype"] == "BYTES" and labels["shape"] == [2, 4]
    assert probabilities["name"] == "probabilities" and probabilities["shape"] == [2, 4]
    for row, plain in enumerate(outputs[1:3]):  # each text as its plain request answers it
        got = dict(zip(labels["data"][row * 4:(row + 1) * 4], probabilities["data"][row * 4:(row + 1) * 4]))
        assert list(got) == list(plain)
        assert all(got[k] == pytest.approx(v, abs=1e-5) for k, v in plain.items())
    assert "takes ['BYTES'], got FP32" in outputs[3]["error"] and "empty" in outputs[4]["error"]


def test_image_handler_reads_base64_bytes_and_fp32_tensors(image_handler):
    handler, ctx = image_handler
    png = png_bytes()
    chw = np.random.default_rng(0).normal(size=(1, 3, 32, 32)).astype(np.float32)
    outputs, statuses = run(handler, ctx, [
        v2_request("image", "BYTES", [1], [base64.b64encode(png).decode()]),
        png,
        v2_request("image", "FP32", [1, 3, 32, 32], chw.reshape(-1).tolist()),
        v2_request("image", "BYTES", [1], [base64.b64encode(b"not an image").decode()]),
        v2_request("image", "FP32", [1, 3, 8, 8], [0.0] * 192),
    ])
    assert statuses == [200, 200, 200, 400, 422]
    labels, probabilities = outputs[0]["outputs"]
    assert labels["shape"] == [1, 2] and labels["data"] == list(outputs[1])  # same image, same top-2
    assert probabilities["data"] == pytest.approx(list(outputs[1].values()), abs=1e-5)
    assert outputs[2]["outputs"][0]["shape"] == [1, 2]
    assert "not a readable JPEG or PNG" in outputs[3]["error"] and "[3, 32, 32]" in outputs[4]["error"]
