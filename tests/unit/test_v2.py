"""The v2 protocol module in process: parsing, responses and errors (the envelope take-over: test_ts_compat.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from torchserve_perf.handlers import v2
from torchserve_perf.handlers.errors import RequestError


def request(*inputs: dict, **extra) -> dict:
    return {"inputs": list(inputs), **extra}


def fp32(name="x", shape=(2, 3), data=None) -> dict:
    data = list(range(int(np.prod(shape)))) if data is None else data
    return {"name": name, "shape": list(shape), "datatype": "FP32", "data": data}


# ---- parse --------------------------------------------------------------------------------------
def test_parses_numeric_input_into_an_array_of_its_shape_and_datatype():
    parsed = v2.parse(request(fp32(), id="abc", outputs=[{"name": "y"}]))
    assert parsed is not None and parsed.id == "abc" and parsed.outputs == ("y",)
    x = parsed.input()
    assert x.name == "x" and x.shape == (2, 3) and x.data.dtype == np.float32
    np.testing.assert_array_equal(x.data, np.arange(6, dtype=np.float32).reshape(2, 3))


def test_nested_data_is_read_in_row_major_order_and_raw_json_bytes_are_parsed():
    body = json.dumps(request({"name": "ids", "shape": [2, 2], "datatype": "INT64", "data": [[1, 2], [3, 4]]}))
    x = v2.parse(body.encode()).input("ids")
    assert x.data.dtype == np.int64 and x.data.tolist() == [[1, 2], [3, 4]]


def test_bytes_elements_come_back_as_byte_strings():
    x = v2.parse(request({"name": "text", "shape": [2], "datatype": "BYTES", "data": ["héllo", "world"]})).input()
    assert x.is_bytes and x.data == ("héllo".encode(), b"world")


@pytest.mark.parametrize("body", [
    b"\x89PNG\r\n", b"plain text", {"text": "hi"}, {"inputs": [[1.0, 2.0]]}, [1, 2], b"{not json", None,
])
def test_bodies_that_are_not_v2_are_left_to_the_handler(body):
    assert v2.parse(body) is None


@pytest.mark.parametrize("inp, words", [
    ({"shape": [1], "datatype": "FP32", "data": [1]}, "'name'"),
    ({"name": "x", "shape": [1], "datatype": "FLOAT", "data": [1]}, "datatype"),
    ({"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}, "non-negative"),
    ({"name": "x", "shape": [2], "datatype": "FP32", "data": [1]}, "needs 2 elements"),
    ({"name": "x", "shape": [1], "datatype": "FP32"}, "'data' is missing"),
    ({"name": "x", "shape": [2], "datatype": "FP32", "data": [1, "a"]}, "must be numbers"),
    ({"name": "x", "shape": [1], "datatype": "INT64", "data": [1.5]}, "must hold integers"),
    ({"name": "x", "shape": [1], "datatype": "UINT8", "data": [300]}, "outside UINT8"),
    ({"name": "x", "shape": [1], "datatype": "BYTES", "data": [3]}, "must be strings"),
    ({"name": "x", "shape": [1], "datatype": "FP32", "data": [1], "parameters": {"binary_data_size": 4}},
     "binary tensor extension"),
])
def test_a_malformed_input_is_a_400_that_names_it(inp, words):
    with pytest.raises(RequestError) as raised:
        v2.parse(request(inp))
    assert raised.value.status == 400 and words in raised.value.message


def test_a_shape_too_large_is_refused_before_allocating():
    with pytest.raises(RequestError) as raised:
        v2.parse(request({"name": "x", "shape": [100000, 100000], "datatype": "FP32", "data": []}))
    assert raised.value.status == 413


def test_picking_an_input_names_what_the_request_has():
    parsed = v2.parse(request(fp32("a"), fp32("b")))
    with pytest.raises(RequestError, match="one input"):
        parsed.input()
    with pytest.raises(RequestError, match=r"\['a', 'b'\]"):
        parsed.input("c")
    assert parsed.input("b").name == "b"


# ---- responses and errors -----------------------------------------------------------------------
def test_response_carries_name_version_id_and_typed_outputs():
    body = v2.response("m", "1.0", "r1", [v2.tensor_output("y", np.ones((2, 2), np.float32)),
                                         v2.tensor_output("n", np.array([3], np.int64))])
    assert body["model_name"] == "m" and body["model_version"] == "1.0" and body["id"] == "r1"
    assert body["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [2, 2], "data": [1.0] * 4},
                               {"name": "n", "datatype": "INT64", "shape": [1], "data": [3]}]
    json.dumps(body)  # JSON-able as is


def test_response_returns_only_the_requested_outputs_and_refuses_unknown_ones():
    outputs = [v2.tensor_output("a", np.zeros(1, np.float32)), v2.tensor_output("b", np.zeros(1, np.float32))]
    assert [o["name"] for o in v2.response("m", None, None, outputs, ["b"])["outputs"]] == ["b"]
    with pytest.raises(RequestError, match="no output 'c'"):
        v2.response("m", None, None, outputs, ["c"])


def test_torch_tensors_and_classification_results_become_outputs():
    import torch

    assert v2.tensor_output("t", torch.zeros(1, 3)).datatype == "FP32"
    labels, probs = v2.classification_outputs([{"cat": 0.7, "dog": 0.2}, {"dog": 0.6, "cat": 0.3}])
    assert labels.as_json() == {"name": "labels", "datatype": "BYTES", "shape": [2, 2],
                                "data": ["cat", "dog", "dog", "cat"]}
    assert probs.shape == (2, 2) and probs.datatype == "FP32"


def test_v2_errors_are_shaped_as_the_protocol_says_and_keep_their_status():
    error = v2.as_v2_error(RequestError("bad input", 422))
    assert error.body() == {"error": "bad input"} and error.status == 422
    assert v2.as_v2_error(error) is error


def test_binary_tensor_data_after_the_json_is_recognised_and_refused():
    head = json.dumps(request({"name": "x", "shape": [1], "datatype": "BYTES",
                               "parameters": {"binary_data_size": 6}})).encode()
    with pytest.raises(RequestError, match="binary tensor extension"):
        v2.parse(head + b"\x02\x00\x00\x00\xff\xfe")
