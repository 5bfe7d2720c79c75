"""Every transport on one real TorchServe: HTTP ``/predictions``, HTTP v2, gRPC ``Predictions`` and
the Open Inference Protocol's gRPC ``ModelInfer`` (``ts_open_inference_protocol=true``), driven by
``grpcio`` clients generated from TorchServe's own protos, against the image, text and tensor
handlers. One server serves all three models with batching and a delay, so concurrent requests
share a batch."""

from __future__ import annotations

import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import pytest
import requests

from torchserve_perf.tools import paths, serving
from torchserve_perf.tools.loadgen import sample_image
from torchserve_perf.tools.loadgen.grpc_client import (
    CHANNEL_OPTIONS,
    bytes_output,
    infer_request,
    infer_status,
    prediction_status,
)
from torchserve_perf.tools.loadgen.payloads import Payload
from torchserve_perf.tools.loadgen.protocols import V2Tensor, v2_json, v2_tensor
from torchserve_perf.tools.model_store import ArchiveSpec, build_archive, default_specs

grpc = pytest.importorskip("grpc")
pytest.importorskip("grpc_tools")

IMAGE, TEXT, TENSOR = "resnet18", "text_classifier", "tiny_mlp"
# Batches wait this long for more requests: concurrent requests share one batch, a lone one is alone.
BATCHING = {"minWorkers": 1, "maxWorkers": 1, "batchSize": 4, "maxBatchDelay": 500, "responseTimeout": 120}
SENTENCE = "The delivery was late but the support team fixed it."


@pytest.fixture(scope="module")
def oip_served(tmp_path_factory: pytest.TempPathFactory,
               torchserve_factory: Callable[..., serving.TorchServe]) -> serving.TorchServe:
    from torchserve_perf.models.tiny_mlp import TinyMLP

    store = tmp_path_factory.mktemp("transports_store")
    specs = {spec.name: spec for spec in default_specs()}
    image, text = specs[IMAGE], specs[TEXT]
    # No optimizations: the workers start quickly, and every transport meets the same model.
    build_archive(image, store, model_config={**BATCHING, "handler": {"image": {"topk": 5}}})
    build_archive(text, store, model_config={**BATCHING, "handler": {"text": {"topk": 3}}})
    tensor = ArchiveSpec(name=TENSOR, model_file=paths.models_dir() / "tiny_mlp.py", make_model=TinyMLP,
                         handler=paths.handlers_dir() / "tensor_handler.py", labels=[])
    build_archive(tensor, store, model_config={**BATCHING, "handler": {"tensor": {"input_shape": [64]}}})
    models = [IMAGE, TEXT, TENSOR]
    return torchserve_factory(store, models=[f"{m}={m}.mar" for m in models], ready_models=models,
                              properties={"ts_open_inference_protocol": "true"})


class Clients:
    """The four transports to one server."""

    def __init__(self, server: serving.TorchServe) -> None:
        from torchserve_perf.tools import grpc_stubs

        self.server = server
        self.stubs = grpc_stubs.load()
        self.token = server.token["inference"]["key"]
        self.metadata = (("authorization", f"Bearer {self.token}"),)
        self.channel = grpc.insecure_channel(server.grpc_inference_address, options=list(CHANNEL_OPTIONS))
        self.predictions = self.stubs.inference_grpc.InferenceAPIsServiceStub(self.channel)
        self.oip = self.stubs.oip_grpc.GRPCInferenceServiceStub(self.channel)

    def http(self, model: str, body: bytes) -> requests.Response:
        return requests.post(f"{self.server.inference_url}/predictions/{model}", data=body,
                             headers={"Authorization": f"Bearer {self.token}"}, timeout=120)

    def http_v2(self, model: str, tensor: V2Tensor) -> requests.Response:
        return requests.post(f"{self.server.inference_url}/v2/models/{model}/infer", json=v2_json(tensor),
                             headers={"Authorization": f"Bearer {self.token}"}, timeout=120)

    def grpc_predict(self, model: str, body: bytes) -> Any:
        request = self.stubs.inference.PredictionsRequest(model_name=model, input={"data": body})
        return self.predictions.Predictions(request, metadata=self.metadata, timeout=120)

    def model_infer(self, model: str, tensor: V2Tensor, request_id: str = "") -> Any:
        return self.oip.ModelInfer(infer_request(self.stubs, model, tensor, request_id), metadata=self.metadata,
                                   timeout=120)


@pytest.fixture(scope="module")
def clients(oip_served: serving.TorchServe) -> Clients:
    clients = Clients(oip_served)
    yield clients
    clients.channel.close()


def concurrently(calls: list[Callable[[], Any]]) -> list[Any]:
    """All calls at once (so they share a batch); an exception is returned in the call's place."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        try:
            return call()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def oip_outputs(response: Any) -> dict[str, list]:
    """A ModelInfer response's outputs by name: BYTES elements unquoted, numbers as numbers."""
    out: dict[str, list] = {}
    for o in response.outputs:
        c = o.contents
        out[o.name] = ([bytes_output(v) for v in c.bytes_contents] if o.datatype == "BYTES"
                       else list(c.fp32_contents) or list(c.int64_contents) or list(c.fp64_contents))
    return out


def v2_outputs(body: dict) -> dict[str, list]:
    return {o["name"]: o["data"] for o in body["outputs"]}


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


# ---- the same answer over every transport ------------------------------------------------------------
@pytest.mark.parametrize("model,payload", [
    (IMAGE, Payload(sample_image(320, 240, seed=3), "image/jpeg", "photo.jpg")),
    (TEXT, Payload(SENTENCE.encode(), "text/plain", "sentence.txt")),
])
def test_classifiers_answer_alike_over_the_four_transports(clients, model, payload):
    tensor = v2_tensor(payload)
    http = clients.http(model, payload.body)
    assert http.status_code == 200, http.text
    expected = http.json()  # label -> probability, best first
    labels, probabilities = list(expected), list(expected.values())

    by_grpc = clients.grpc_predict(model, payload.body)
    assert prediction_status(by_grpc.prediction) == 200
    assert json.loads(by_grpc.prediction) == expected

    v2 = clients.http_v2(model, tensor)
    assert v2.status_code == 200, v2.text
    outputs = v2_outputs(v2.json())
    assert outputs["labels"] == labels
    np.testing.assert_allclose(outputs["probabilities"], probabilities, atol=1e-6)

    reply = clients.model_infer(model, tensor, request_id="same-answer")
    assert infer_status(reply) == 200 and reply.id == "same-answer" and reply.model_name == model
    outputs = oip_outputs(reply)
    # BYTES outputs come back JSON-quoted from the frontend: bytes_output reads them.
    assert outputs["labels"] == labels
    np.testing.assert_allclose(outputs["probabilities"], probabilities, atol=1e-6)


def test_tensor_handler_answers_alike_over_the_four_transports(clients):
    row = np.random.default_rng(5).standard_normal((2, 64)).astype(np.float32)
    payload = Payload(npy(row), "application/octet-stream", "rows.npy")
    http = clients.http(TENSOR, payload.body)
    assert http.status_code == 200, http.text
    expected = np.asarray(http.json(), dtype=np.float32)
    assert expected.shape == (2, 8)

    by_grpc = clients.grpc_predict(TENSOR, payload.body)
    np.testing.assert_allclose(json.loads(by_grpc.prediction), expected, atol=1e-6)

    tensor = v2_tensor(payload)
    assert tensor.datatype == "FP32" and tensor.shape == (2, 64)
    v2 = clients.http_v2(TENSOR, tensor)
    assert v2.status_code == 200, v2.text
    (output,) = v2.json()["outputs"]
    assert output["shape"] == [2, 8]
    np.testing.assert_allclose(np.reshape(output["data"], (2, 8)), expected, atol=1e-6)

    reply = clients.model_infer(TENSOR, tensor)
    (out,) = reply.outputs
    assert out.datatype == "FP32" and list(out.shape) == [2, 8]
    np.testing.assert_allclose(np.reshape(out.contents.fp32_contents, (2, 8)), expected, atol=1e-6)


def test_text_over_oip_grpc_is_read_as_text_not_as_its_base64(clients):
    # Text whose base64 is also text: read wrongly, it would classify "SGVsbG8..." instead.
    for sentence in ["Hello there, where is my parcel?", "Thanks!", "It broke after two days.", "Great value"]:
        expected = clients.http(TEXT, sentence.encode()).json()
        reply = clients.model_infer(TEXT, V2Tensor("text", "BYTES", (1,), (sentence.encode(),)))
        assert oip_outputs(reply)["labels"] == list(expected)


# ---- errors --------------------------------------------------------------------------------------------
def test_a_bad_request_among_good_ones_over_grpc_predictions(clients):
    texts = ["Where is my parcel?", "   ", "Thanks, the refund arrived quickly.", "It broke after two days."]
    replies = concurrently([lambda t=t: clients.grpc_predict(TEXT, t.encode()) for t in texts])
    statuses = [prediction_status(r.prediction) for r in replies]
    assert statuses == [200, 400, 200, 200], replies  # one batch: the frontend answers OK to all four
    error = json.loads(replies[1].prediction)["error"]
    assert error["code"] == 400 and "empty" in error["message"]
    for i in (0, 2, 3):
        assert json.loads(replies[i].prediction) == clients.http(TEXT, texts[i].encode()).json()


def test_a_bad_request_among_good_ones_over_oip_grpc(clients):
    texts = ["Where is my parcel?", "   ", "Thanks, the refund arrived quickly.", "It broke after two days."]
    tensors = [V2Tensor("text", "BYTES", (1,), (t.encode(),)) for t in texts]
    replies = concurrently([lambda i=i: clients.model_infer(TEXT, tensors[i], f"r{i}") for i in range(4)])
    assert not any(isinstance(r, Exception) for r in replies), replies  # the worker did not die
    assert [infer_status(r) for r in replies] == [200, 400, 200, 200]
    bad = oip_outputs(replies[1])
    assert replies[1].id == "r1" and bad["error_code"] == [400] and "empty" in bad["error"][0]
    for i in (0, 2, 3):
        assert replies[i].id == f"r{i}"
        assert oip_outputs(replies[i])["labels"] == list(clients.http(TEXT, texts[i].encode()).json())
    # The same worker answers on: a rejected request no longer restarts it.
    assert infer_status(clients.model_infer(TEXT, tensors[0])) == 200


def test_a_lone_bad_grpc_request_gets_a_client_error_code(clients):
    with pytest.raises(grpc.RpcError) as raised:
        clients.grpc_predict(TEXT, b"   ")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("400 Bad Request: the text is empty")
    with pytest.raises(grpc.RpcError) as raised:
        clients.model_infer(TEXT, V2Tensor("text", "BYTES", (1,), (b"   ",)))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as raised:  # a tensor of the wrong width: the model refuses it (422)
        clients.model_infer(TENSOR, V2Tensor("input", "FP32", (1, 3), (1.0, 2.0, 3.0)))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.details().startswith("422")


# ---- the Open Inference Protocol's health and metadata --------------------------------------------------
def test_oip_health_and_model_readiness(clients, oip_served):
    auth = {"Authorization": f"Bearer {clients.token}"}
    for path, key in (("/v2/health/live", "live"), ("/v2/health/ready", "ready")):
        response = requests.get(oip_served.inference_url + path, headers=auth, timeout=10)
        assert response.status_code == 200 and response.json() == {key: True}
    assert requests.get(oip_served.inference_url + "/v2", headers=auth, timeout=10).json()["name"] == "Torchserve"
    oip = clients.stubs.oip
    assert clients.oip.ServerLive(oip.ServerLiveRequest(), metadata=clients.metadata, timeout=10).live
    assert clients.oip.ServerReady(oip.ServerReadyRequest(), metadata=clients.metadata, timeout=10).ready
    for model in (IMAGE, TEXT, TENSOR):
        assert clients.oip.ModelReady(oip.ModelReadyRequest(name=model), metadata=clients.metadata, timeout=10).ready
    with pytest.raises(grpc.RpcError) as raised:
        clients.oip.ModelReady(oip.ModelReadyRequest(name="no_such_model"), metadata=clients.metadata, timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    metadata = clients.oip.ModelMetadata(oip.ModelMetadataRequest(name=TEXT), metadata=clients.metadata, timeout=30)
    assert metadata.name == TEXT and list(metadata.versions) == ["1.0"]


# ---- bench over each protocol ------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["v2", "grpc", "v2-grpc"])
def test_bench_measures_each_protocol(oip_served, protocol, tmp_path):
    from torchserve_perf.tools.bench import main

    payload = tmp_path / "sentence.txt"
    payload.write_text(SENTENCE)
    out = tmp_path / "out"
    code = main(["--url", oip_served.inference_url, f"--token={oip_served.token['inference']['key']}",
                 "--grpc-address", oip_served.grpc_inference_address, "--model", TEXT, "--protocol", protocol,
                 "--payload", str(payload), "-c", "2", "--duration", "1.5", "--warmup", "0", "--no-ceiling",
                 "--client-processes", "1", "--out", str(out), "--quiet"])
    report = json.loads((out / "bench.json").read_text())
    (run,) = report["runs"]
    assert code == 0 and report["target"]["protocol"] == protocol
    assert run["ok"] > 0 and not run["errors"], run
