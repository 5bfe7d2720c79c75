"""The transports, without a server: how a request's transport is told from its headers, what each
transport changes on the way in and out, the gRPC clients' checks, and a payload in each protocol."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from torchserve_perf.handlers import transport, v2
from torchserve_perf.handlers.errors import RequestError
from torchserve_perf.handlers.transport import Transport
from torchserve_perf.tools.loadgen.grpc_client import (
    bytes_output,
    error_status,
    parse_url,
    prediction_status,
    status_of_code,
)
from torchserve_perf.tools.loadgen.payloads import Payload
from torchserve_perf.tools.loadgen.protocols import (
    V2Tensor,
    payloads_for,
    protocol_of,
    server_properties,
    target_url,
    v2_json,
    v2_tensor,
)

HTTP_HEADERS = {"body": {"content-type": ""}, "Host": "127.0.0.1:8080", "Content-Length": "5", "explain": "False"}
OIP_HEADERS = {"body": {"content-type": "application/json"}}
PREDICTIONS_HEADERS = {"data": {"content-type": ""}}


# ---- telling the transport ---------------------------------------------------------------------------
@pytest.mark.parametrize("headers,expected", [
    (HTTP_HEADERS, Transport.HTTP),  # /predictions: the HTTP request's headers are strings
    ({"body": {"content-type": "application/json"}, "Content-Type": "application/json", "Host": "h"},
     Transport.HTTP),  # /v2/models/<m>/infer: the same JSON parameter as ModelInfer, plus HTTP headers
    (OIP_HEADERS, Transport.OIP_GRPC),
    (PREDICTIONS_HEADERS, Transport.GRPC),
    ({"body": {"content-type": ""}}, Transport.GRPC),  # Predictions with an input called "body"
    ({"data": {"content-type": ""}, "image": {"content-type": ""}}, Transport.GRPC),
    ({"body": {"content-type": "application/json"}, "data": {"content-type": ""}}, Transport.GRPC),
    ({}, Transport.HTTP),  # no headers at all: a handler driven by hand, answered as it always was
    ({"x-torch-profile": "1"}, Transport.HTTP),
])
def test_classify(headers, expected):
    assert transport.classify(headers) is expected


class Context:
    """TorchServe's Context as far as the transport needs it."""

    def __init__(self, headers: list[dict]) -> None:
        self.headers = headers

    def get_all_request_header(self, idx: int) -> dict:
        return self.headers[idx]


@pytest.mark.parametrize("context,expected", [
    (Context([OIP_HEADERS]), Transport.OIP_GRPC),
    (None, Transport.HTTP),
    (Context([]), Transport.HTTP),  # no such request
    (object(), Transport.HTTP),  # no get_all_request_header
])
def test_of_request(context, expected):
    assert transport.of_request(context, 0) is expected


# ---- in: BYTES as the client sent them ------------------------------------------------------------
def oip_body(*elements: bytes, datatype: str = "BYTES", request_id: str = "") -> dict:
    """The v2 body TorchServe's frontend builds from a ModelInfer message."""
    data = [base64.b64encode(e).decode() for e in elements] if datatype == "BYTES" else list(elements)
    return {"id": request_id, "model_name": "m",
            "inputs": [{"name": "x", "shape": [len(elements)], "datatype": datatype, "data": data}]}


@pytest.mark.parametrize("elements", [[b"Hello there"], ["écrit à la main".encode()], [b"\xff\xd8\xff\xe0 jpeg"],
                                      [b"one", b"two"], [b""]])
def test_oip_bytes_reach_the_handler_as_the_client_sent_them(elements):
    request = transport.as_sent(v2.parse(oip_body(*elements)), Context([OIP_HEADERS]), 0)
    assert request.inputs[0].data == tuple(elements)


def test_bytes_over_http_and_numbers_over_oip_stay_as_they_are():
    http = {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["SGVsbG8="]}]}
    assert transport.as_sent(v2.parse(http), Context([HTTP_HEADERS]), 0).inputs[0].data == (b"SGVsbG8=",)
    numbers = transport.as_sent(v2.parse(oip_body(0.5, 1.25, datatype="FP32")), Context([OIP_HEADERS]), 0)
    np.testing.assert_array_equal(numbers.inputs[0].data, np.array([0.5, 1.25], dtype=np.float32))
    assert transport.as_sent(None, Context([OIP_HEADERS]), 0) is None


def test_oip_bytes_that_are_not_base64_are_a_request_error():
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["not base64!"]}]}
    with pytest.raises(RequestError, match="input 'x'"):
        transport.as_sent(v2.parse(body), Context([OIP_HEADERS]), 0)


# ---- out: answers and errors the frontend can carry ----------------------------------------------------
def v2_answer(request_id: str = "r") -> dict:
    return v2.response("m", "1.0", request_id, [v2.tensor_output("output", np.zeros((1, 2), np.float32))])


def fit(responses: list, rejected: dict, headers: list[dict], data: list | None = None, version: Any = "1.0") -> list:
    return transport.fit_responses(responses, rejected, data or [{} for _ in responses], Context(headers), "m", version)


def test_http_batches_are_left_alone():
    error = RequestError("the text is empty")
    responses = [{"a": 1.0}, error.body()]
    assert fit(responses, {1: error}, [HTTP_HEADERS, HTTP_HEADERS]) is responses


@pytest.mark.parametrize("headers,status,code", [(OIP_HEADERS, 400, 400), (PREDICTIONS_HEADERS, 422, 422),
                                                 (PREDICTIONS_HEADERS, 413, 413)])
def test_a_lone_rejected_grpc_request_fails_its_batch_with_its_status(headers, status, code):
    from ts.utils.util import PredictionException

    error = RequestError("the text is empty", status)
    with pytest.raises(PredictionException) as raised:
        fit([error.body()], {0: error}, [headers])
    assert raised.value.error_code == code and raised.value.message.startswith(f"{status} ")
    assert raised.value.message.endswith(": the text is empty")


def test_in_a_batch_a_rejected_oip_request_gets_a_v2_response_with_error_outputs():
    error = v2.V2Error("the text is empty")
    data = [{"body": oip_body(b"ok", request_id="a")}, {"body": oip_body(b" ", request_id="b")}]
    answer, rejected = fit([v2_answer("a"), error.body()], {1: error}, [OIP_HEADERS, OIP_HEADERS], data)
    assert answer == v2_answer("a")
    assert rejected == {"id": "b", "model_name": "m", "model_version": "1.0", "outputs": [
        {"name": "error", "datatype": "BYTES", "shape": [1, 1], "data": ["the text is empty"]},
        {"name": "error_code", "datatype": "INT64", "shape": [1, 1], "data": [400]}]}


@pytest.mark.parametrize("body,expected", [
    # every field the frontend reads is there, even without a model version
    ({"model_name": "m", "id": "r", "outputs": []}, {"model_name": "m", "id": "r", "model_version": "", "outputs": []}),
    # a handler's own answer (not v2) travels as JSON in one BYTES output
    ([[1.0, 2.0]], {"id": "", "model_name": "m", "model_version": "",
                    "outputs": [{"name": "output", "datatype": "BYTES", "shape": [1, 1], "data": ["[[1.0, 2.0]]"]}]}),
])
def test_a_served_oip_request_carries_every_field_the_frontend_reads(body, expected):
    served = fit([body, {"other": 1}], {}, [OIP_HEADERS, HTTP_HEADERS], version=None)
    assert served == [expected, {"other": 1}]


@pytest.mark.parametrize("error,expected", [
    (v2.V2Error("bad shape", 422), {"error": "bad shape", "code": 422}),  # v2's error gains its status
    (RequestError("bad shape", 422), {"error": {"code": 422, "type": "Unprocessable Entity", "message": "bad shape"}}),
])
def test_in_a_batch_a_rejected_predictions_request_carries_its_status(error, expected):
    served = fit([{"a": 1.0}, error.body()], {1: error}, [PREDICTIONS_HEADERS, PREDICTIONS_HEADERS])
    assert served == [{"a": 1.0}, expected]
    assert prediction_status(json.dumps(served[1], indent=2).encode()) == 422


@pytest.mark.parametrize("row,expected", [({"body": {"id": "r7"}}, "r7"), ({"body": b'{"id": "r8"}'}, "r8"),
                                          ({"body": {"id": 5}}, ""), ({"body": b"not json"}, ""), (None, "")])
def test_client_request_id(row, expected):
    assert transport.client_request_id(row) == expected


# ---- the gRPC clients' checks -------------------------------------------------------------------------
@pytest.mark.parametrize("body,expected", [
    ({"class_0001": 0.9, "class_0002": 0.1}, None),
    ({"error": 0.7, "neutral": 0.3}, None),  # a label called "error": an answer, not an error
    ({"error": {"code": 400, "type": "Bad Request", "message": "m"}}, 400),
    ({"error": "v2 message", "code": 413}, 413),
    ({"error": "a v2 error without a status"}, 500),
    ([[1.0, 2.0]], None),
])
def test_error_status(body, expected):
    assert error_status(body) == expected


@pytest.mark.parametrize("prediction,expected", [
    (b'{\n  "class_0001": 0.9\n}', 200), (b'{\n  "error": {\n    "code": 400\n  }\n}', 400),
    (b"[[1.0, 2.0]]", 200), (b'{"error": not json', 200),
])
def test_prediction_status(prediction, expected):
    assert prediction_status(prediction) == expected


@pytest.mark.parametrize("code,status", [("OK", 200), ("INVALID_ARGUMENT", 400), ("FAILED_PRECONDITION", 422),
                                         ("RESOURCE_EXHAUSTED", 429), ("UNAVAILABLE", 503), ("DATA_LOSS", 500)])
def test_status_of_code(code, status):
    assert status_of_code(code) == status


@pytest.mark.parametrize("element,expected", [(b'"class_0238"', "class_0238"), (b'"caf\\u00e9"', "café"),
                                              (b"plain", "plain"), (b"12", "12")])
def test_bytes_output_reads_the_frontends_quoted_elements(element, expected):
    assert bytes_output(element) == expected


@pytest.mark.parametrize("url,expected", [
    ("grpc://127.0.0.1:7070/predictions/resnet18", ("127.0.0.1:7070", "predictions", "resnet18")),
    ("grpc://h:1/v2/models/m/infer", ("h:1", "infer", "m")),
])
def test_parse_url(url, expected):
    assert parse_url(url) == expected


@pytest.mark.parametrize("url", ["http://h:1/predictions/m", "grpc://h:1/models/m", "grpc:///predictions/m"])
def test_parse_url_refuses_what_is_not_a_grpc_target(url):
    with pytest.raises(ValueError):
        parse_url(url)


# ---- a payload in each protocol ----------------------------------------------------------------------
def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@pytest.mark.parametrize("payload,expected", [
    (Payload(b"\xff\xd8jpeg", "image/jpeg"), V2Tensor("image", "BYTES", (1,), (b"\xff\xd8jpeg",))),
    (Payload(b"hello", "text/plain; charset=utf-8"), V2Tensor("text", "BYTES", (1,), (b"hello",), text=True)),
    (Payload(npy(np.ones((1, 2), np.float32)), "application/octet-stream"), V2Tensor("input", "FP32", (1, 2), (1.0, 1.0))),
    (Payload(npy(np.arange(2, dtype=np.int64)), "application/octet-stream"), V2Tensor("input", "INT64", (2,), (0, 1))),
    (Payload(b"[[0.5, 1.5]]", "application/json"), V2Tensor("input", "FP32", (1, 2), (0.5, 1.5))),
    (Payload(b'{"inputs": [1, 2]}', "application/json"), V2Tensor("input", "INT64", (2,), (1, 2))),
])
def test_v2_tensor(payload, expected):
    assert v2_tensor(payload) == expected


def test_v2_json_carries_text_as_text_and_other_bytes_as_base64():
    assert v2_json(V2Tensor("text", "BYTES", (1,), (b"hi",), text=True))["inputs"][0]["data"] == ["hi"]
    assert v2_json(V2Tensor("image", "BYTES", (1,), (b"\xff",)))["inputs"][0]["data"] == ["/w=="]
    assert v2_json(V2Tensor("input", "FP32", (2,), (0.5, 1.0)))["inputs"][0] == {
        "name": "input", "datatype": "FP32", "shape": [2], "data": [0.5, 1.0]}


def test_a_v2_json_request_reads_back_as_the_payload():
    payload = Payload(b"a sentence", "text/plain")
    (body,) = payloads_for("v2", [payload])
    assert body.content_type == "application/json"
    assert v2.parse(json.loads(body.body)).inputs[0].data == (b"a sentence",)
    assert payloads_for("grpc", [payload]) == [payload]
    with pytest.raises(ValueError, match="unknown protocol"):
        payloads_for("http2", [payload])


@pytest.mark.parametrize("protocol,url", [
    ("http", "http://h:8080/predictions/m"), ("v2", "http://h:8080/v2/models/m/infer"),
    ("grpc", "grpc://h:7070/predictions/m"), ("v2-grpc", "grpc://h:7070/v2/models/m/infer"),
])
def test_target_url_and_back(protocol, url):
    assert target_url(protocol, "m", "http://h:8080/", "h:7070") == url
    assert protocol_of(url) == protocol


def test_only_oip_grpc_needs_the_property():
    assert server_properties("v2-grpc") == {"ts_open_inference_protocol": "true"}
    assert server_properties("grpc") == {} and server_properties("http") == {}


# ---- stubs from TorchServe's own protos --------------------------------------------------------------
@pytest.mark.parametrize("roots,expected", [
    (("a.proto",), ["a.proto", "b.proto"]),  # a imports b; c is not needed; d is protoc's own
    (("c.proto",), ["c.proto"]),
])
def test_proto_closure(roots, expected):
    from torchserve_perf.tools.grpc_stubs import proto_closure

    texts = {"a.proto": 'syntax = "proto3";\nimport "b.proto";\nimport "google/protobuf/empty.proto";',
             "b.proto": 'import public "d.proto";', "c.proto": ""}
    assert proto_closure(texts, roots) == expected


def test_stubs_are_generated_from_the_installed_jar(tmp_path: Path):
    pytest.importorskip("grpc_tools")
    from torchserve_perf.tools import grpc_stubs

    stubs = grpc_stubs.load(tmp_path)
    request = stubs.oip.ModelInferRequest(model_name="m", inputs=[stubs.oip.ModelInferRequest.InferInputTensor(
        name="x", datatype="BYTES", shape=[1], contents=stubs.oip.InferTensorContents(bytes_contents=[b"a"]))])
    assert stubs.oip.ModelInferRequest.FromString(request.SerializeToString()) == request
    assert stubs.inference.PredictionsRequest(model_name="m", input={"data": b"x"}).input["data"] == b"x"
    assert hasattr(stubs.inference_grpc, "InferenceAPIsServiceStub") and hasattr(stubs.oip_grpc, "GRPCInferenceServiceStub")
    assert grpc_stubs.load(tmp_path) is stubs  # once per process


# ---- bench --protocol and compare --transports -----------------------------------------------------
@pytest.mark.parametrize("argv,error", [
    (["--url", "http://h:8080", "--protocol", "grpc", "--path", "/x"], "leave out --path"),
    (["--suite", "s.yaml", "--protocol", "v2"], "leave out --path and --suite"),
    (["--url", "http://h:8080", "--protocol", "http2"], "invalid choice"),
])
def test_bench_protocol_usage_errors(argv, error, capsys):
    from torchserve_perf.tools.bench.cli import parse_args

    with pytest.raises(SystemExit):
        parse_args(argv)
    assert error in capsys.readouterr().err


def test_bench_protocol_defaults_to_http():
    from torchserve_perf.tools.bench.cli import parse_args

    assert parse_args(["--url", "http://h:8080"]).protocol == "http"
    args = parse_args(["--url", "http://h:8080", "--protocol", "v2-grpc", "--grpc-address", "h:9000"])
    assert (args.protocol, args.grpc_address) == ("v2-grpc", "h:9000")


@pytest.mark.parametrize("changes,error", [
    ({"protocols": ()}, "at least one protocol"),
    ({"protocols": ("http", "http")}, "repeat"),
    ({"protocols": ("http", "quic")}, "unknown protocol"),
    ({"concurrencies": (0,)}, "concurrencies"),
    ({"seconds": 0}, "seconds"),
    ({"workloads": ("audio",)}, "unknown workloads"),
])
def test_transports_config_is_validated(changes, error, tmp_path):
    from torchserve_perf.tools.transports.config import TransportsConfig

    base = {"protocols": ("http", "grpc"), "concurrencies": (1, 4, 8), "seconds": 1.0, "warmup": 0.0,
            "out": tmp_path, "work": tmp_path}
    assert not TransportsConfig(**base).needs_oip
    assert TransportsConfig(**{**base, "protocols": ("v2-grpc",)}).needs_oip
    with pytest.raises(ValueError, match=error):
        TransportsConfig(**{**base, **changes})


@pytest.mark.parametrize("value,base,expected", [(50.0, 100.0, 0.5), (None, 1.0, None), (1.0, 0.0, None),
                                                 (1.0, None, None)])
def test_ratio(value, base, expected):
    from torchserve_perf.tools.transports.report import ratio

    assert ratio(value, base) == expected


def test_transports_report_puts_the_protocols_side_by_side():
    from torchserve_perf.tools.transports.report import render

    def summary(rps: float, p99: float) -> dict:
        return {"throughput_rps": rps, "p50_ms": p99 / 2, "p99_ms": p99, "client_cpu_ms_per_request": 0.2,
                "errors": {}}

    report = {"machine": {"cpu": "cpu", "cores": 2}, "seconds": 3, "warmup": 1, "quick": True,
              "protocols": ["http", "grpc"], "concurrencies": [1, 4],
              "workloads": {"tensor": {"description": "small MLP", "errors": {"v2-grpc": "first request answered 500"},
                                       "protocols": {"http": {"1": summary(100, 10), "4": summary(200, 20)},
                                                     "grpc": {"1": summary(50, 20), "4": summary(300, 10)}}}}}
    text = render(report)
    assert "| gRPC Predictions | 4 | 300.0 | 5.00 | 10.00 | 0.20 | 0 |" in text
    assert "| gRPC Predictions | 0.50x · p99 2.00x | 1.50x · p99 0.50x |" in text
    assert "not measured (first request answered 500)" in text
