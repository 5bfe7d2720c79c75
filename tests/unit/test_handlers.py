"""The handlers in-process, on TorchServe's real Context: decoding, batching, per-request errors, loading."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import RequestContext, png_bytes, write_model_dir
from tests.handler_fixtures import TINY_MODEL, npy, run, tiny_linear
from torchserve_perf.handlers.loading import eval_mode, load_archived_model
from torchserve_perf.handlers.tensor_handler import TensorHandler
from torchserve_perf.handlers.tokenizer import tokenize


def test_tensor_batch_mixes_sizes_and_formats_and_maps_rows_back(tensor_handler):
    handler, ctx, linear = tensor_handler
    three = np.arange(12, dtype=np.float32).reshape(3, 4)
    one = [1.0, 2.0, 3.0, 4.0]
    outputs, statuses = run(handler, ctx, [npy(three), json.dumps({"inputs": one}).encode(), {"inputs": [one, one]}])
    assert statuses == [200, 200, 200]
    with torch.no_grad():
        np.testing.assert_allclose(outputs[0], linear(torch.from_numpy(three)).numpy(), rtol=1e-6)
        np.testing.assert_allclose(outputs[1], linear(torch.tensor(one)).numpy(), rtol=1e-6)  # bare row -> bare row
        assert np.array(outputs[2]).shape == (2, 3)
    batch = handler.read_batch([{"body": b} for b in [npy(three), json.dumps({"inputs": one}).encode(),
                                                      {"inputs": [one, one]}]])
    assert batch.rows == (3, 1, 2) and batch.indices == (0, 1, 2) and tuple(batch.inputs.shape) == (6, 4)


@pytest.mark.parametrize("body, status, words", [
    (b"{broken", 400, "not valid JSON"),
    ({"values": [1, 2, 3, 4]}, 400, "under 'inputs'"),
    ({"inputs": [[1, 2], [3]]}, 400, "ragged"),
    ({"inputs": ["a", "b", "c", "d"]}, 400, "expected numbers"),
    ({"inputs": [1.0, 2.0]}, 422, "expected shape [4] or [N, 4], got [2]"),
    (npy(np.zeros((2, 5), np.float32)), 422, "got [2, 5]"),
    (b"\x93NUMPY garbage", 400, ".npy payload could not be read"),
])
def test_one_bad_request_gets_its_own_status_and_json_body(tensor_handler, body, status, words):
    handler, ctx, linear = tensor_handler
    good = [0.5, 0.5, 0.5, 0.5]
    outputs, statuses = run(handler, ctx, [good, body, good, good])
    assert statuses == [200, status, 200, 200]
    assert outputs[1]["error"]["code"] == status and words in outputs[1]["error"]["message"]
    with torch.no_grad():
        expected = linear(torch.tensor(good)).numpy()
    for i in (0, 2, 3):
        np.testing.assert_allclose(outputs[i], expected, rtol=1e-6)


def test_a_request_that_breaks_the_model_fails_alone(tensor_handler):
    handler, ctx, _ = tensor_handler
    outputs, statuses = run(handler, ctx, [[1.0, 1.0, 1.0, 1.0], [1e9, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    assert statuses == [200, 422, 200]
    assert "value out of range" in outputs[1]["error"]["message"]
    assert len(outputs[0]) == 3 and len(outputs[2]) == 3


def test_tensor_handler_without_input_shape_loads_and_serves(tmp_path):
    model_file = tmp_path / "tiny_model.py"
    model_file.write_text(TINY_MODEL)
    model = torch.nn.Module()
    model.linear = tiny_linear()
    manifest = write_model_dir(tmp_path / "model", model_file, model)
    ctx = RequestContext(tmp_path / "model", manifest, {})
    handler = TensorHandler()
    handler.initialize(ctx.context)  # no example input: must still load
    outputs, statuses = run(handler, ctx, [[[1.0, 2.0, 3.0, 4.0]], 5.0, b"7"])
    assert statuses == [200, 422, 422] and np.array(outputs[0]).shape == (1, 3)


@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_programs_load_without_a_model_file(tmp_path, kind):
    linear = tiny_linear()
    example = torch.randn(2, 4)
    if kind == "torchscript":
        name = "model.pt"
        torch.jit.trace(linear, example).save(str(tmp_path / name))
    else:
        name = "model.pt2"
        batch = torch.export.Dim("batch", min=1, max=64)
        torch.export.save(torch.export.export(linear, (example,), dynamic_shapes=({0: batch},)), str(tmp_path / name))
    loaded = eval_mode(load_archived_model(str(tmp_path), {"model": {"serializedFile": name}}, torch.device("cpu")))
    x = torch.randn(5, 4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), linear(x))


def test_a_state_dict_without_model_file_is_refused_with_the_fix(tmp_path):
    torch.save(tiny_linear().state_dict(), tmp_path / "weights.pt")
    with pytest.raises(RuntimeError, match="needs --model-file"):
        load_archived_model(str(tmp_path), {"model": {"serializedFile": "weights.pt"}}, torch.device("cpu"))


def test_eager_weights_load_with_weights_only(tmp_path):
    model_file = tmp_path / "tiny_model.py"
    model_file.write_text(TINY_MODEL)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tiny_model.py").write_text(TINY_MODEL)
    # A pickled object that is not a plain state dict is refused by weights_only=True.
    torch.save({"linear.weight": torch.zeros(3, 4), "linear.bias": torch.zeros(3), "x": Path("/")},
               tmp_path / "model" / "weights.pt")
    with pytest.raises(Exception, match="(?i)weights only|weights_only|unsupported global"):
        load_archived_model(str(tmp_path / "model"),
                            {"model": {"serializedFile": "weights.pt", "modelFile": "tiny_model.py"}},
                            torch.device("cpu"))


# ---- text ---------------------------------------------------------------------------------------
def test_text_batch_pads_different_lengths_and_matches_one_at_a_time(text_handler):
    handler, ctx, model = text_handler
    texts = ["Fine.", "The parcel came two days late, but the refund was quick and the staff were kind.",
             "Why is the battery draining so fast?"]
    outputs, statuses = run(handler, ctx, [texts[0].encode(), {"text": texts[1]}, texts[2]])
    assert statuses == [200, 200, 200]
    for text, got in zip(texts, outputs):
        with torch.no_grad():
            probs = torch.softmax(model(torch.tensor([tokenize(text, 8192, 128)]))[0], -1)
        expected = {name: float(p) for name, p in zip(["negative", "neutral", "positive", "question"], probs)}
        assert set(got) == set(expected)
        for label, value in got.items():
            assert value == pytest.approx(expected[label], abs=1e-5)


def test_text_errors_are_per_request(text_handler):
    handler, ctx, _ = text_handler
    outputs, statuses = run(handler, ctx, [b"\xff\xfe bad utf8", b"ok then", {"txt": "wrong field"}, b"   "])
    assert statuses == [400, 200, 400, 400]
    assert "not UTF-8" in outputs[0]["error"]["message"]
    assert "under 'text'" in outputs[2]["error"]["message"] and "empty" in outputs[3]["error"]["message"]


# ---- image --------------------------------------------------------------------------------------
def test_image_accepts_png_jpeg_base64_and_npy_in_one_batch(image_handler):
    handler, ctx = image_handler
    png = png_bytes((64, 48))
    chw = np.random.default_rng(0).normal(size=(3, 32, 32)).astype(np.float32)
    bodies = [png, png_bytes((50, 70), fmt="JPEG"), {"image": base64.b64encode(png).decode()}, npy(chw),
              npy(np.zeros((48, 64, 3), np.uint8))]
    outputs, statuses = run(handler, ctx, bodies)
    assert statuses == [200] * 5
    for out in outputs:
        assert len(out) == 2 and set(out) <= {"zero", "one", "two", "three"}
    assert outputs[0] == outputs[2]  # raw and base64 of the same image agree


def test_image_errors_are_per_request(image_handler):
    handler, ctx = image_handler
    bodies = [b"not an image", png_bytes(), {"image": "!!!"}, {"picture": "x"}, npy(np.zeros((3, 8, 8), np.float32))]
    outputs, statuses = run(handler, ctx, bodies)
    assert statuses == [400, 200, 400, 400, 422]
    assert "not a readable JPEG or PNG" in outputs[0]["error"]["message"]
    assert "not valid base64" in outputs[2]["error"]["message"]
    assert "[3, 32, 32]" in outputs[4]["error"]["message"]
