"""v2 (Open Inference Protocol) on a real TorchServe configured as KServe configures it
(service_envelope=kservev2), batch size 4 with a delay, driven by clients nobody here wrote:
Triton's tritonclient.http and kserve's InferenceRESTClient."""

from __future__ import annotations

import base64
import json
import subprocess
from urllib.parse import urlparse

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.conftest import REPO, png_bytes
from tests.integration.test_metrics_server import Scrape
from torchserve_perf.tools import serving

TEXT, IMAGE = "text_classifier", "resnet18"
KSERVE_PYTHON = REPO / ".venv-kserve" / "bin" / "python"


@pytest.fixture(scope="module")
def client(kserve_served: serving.TorchServe):
    client = triton.InferenceServerClient(urlparse(kserve_served.inference_url).netloc, concurrency=8,
                                          connection_timeout=120, network_timeout=120)
    yield client
    client.close()


@pytest.fixture(scope="module")
def auth(kserve_served: serving.TorchServe) -> dict:
    return {"Authorization": f"Bearer {kserve_served.token['inference']['key']}"}


def bytes_input(name: str, values: list[str]) -> triton.InferInput:
    data = triton.InferInput(name, [len(values)], "BYTES")
    return data.set_data_from_numpy(np.array(values, dtype=object), binary_data=False)


def requested(*names: str) -> list[triton.InferRequestedOutput]:
    return [triton.InferRequestedOutput(name, binary_data=False) for name in names]


def batches(server: serving.TorchServe, model: str) -> tuple[float, float]:
    scrape = Scrape(server.scrape())
    return scrape.total("ts_perf_batch_size_count", model), scrape.total("ts_perf_batch_size_sum", model)


def wait_for_requests(server: serving.TorchServe, model: str, before: tuple[float, float], sent: int) -> tuple[float, float]:
    import time

    deadline = time.monotonic() + 20  # metrics travel on the worker's stdout, apart from the responses
    while True:
        count, total = batches(server, model)
        if total - before[1] >= sent or time.monotonic() > deadline:
            return count - before[0], total - before[1]
        time.sleep(0.3)


def test_concurrent_v2_requests_share_a_batch_and_each_gets_its_own_answer(kserve_served, client, auth):
    texts = ["Where is my parcel?", "Thanks, the refund arrived quickly and the staff were kind.", "   ",
             "It broke after two days."]
    before = batches(kserve_served, TEXT)
    pending = [client.async_infer(TEXT, [bytes_input("text", [text])], request_id=f"r{i}", headers=auth,
                                  outputs=requested("labels", "probabilities"))
               for i, text in enumerate(texts)]
    results = []
    for handle in pending:
        try:
            results.append(handle.get_result())
        except InferenceServerException as exc:
            results.append(exc)

    # All four rode in one batch (batch size 4, 300 ms delay) rather than the envelope's first one only.
    count, total = wait_for_requests(kserve_served, TEXT, before, len(texts))
    assert total == len(texts) and count == 1, (count, total)

    # The empty text fails alone, with a v2 error and its own 400; the other three are served.
    bad = results[2]
    assert isinstance(bad, InferenceServerException) and bad.status() == "400" and "empty" in bad.message()
    plain = {i: kserve_served.predict(TEXT, texts[i].encode()).json() for i in (0, 1, 3)}
    for i in (0, 1, 3):
        result = results[i]
        assert not isinstance(result, Exception), result
        response = result.get_response()
        assert response["model_name"] == TEXT and response["id"] == f"r{i}"
        labels, probabilities = result.as_numpy("labels"), result.as_numpy("probabilities")
        assert labels.shape == (1, 3) and probabilities.shape == (1, 3) and probabilities.dtype == np.float32
        # Each request's own answer: the same top 3 as the plain request for the same text.
        assert [str(v) for v in labels[0]] == list(plain[i])
        np.testing.assert_allclose(probabilities[0], list(plain[i].values()), atol=1e-5)
    assert len({tuple(results[i].as_numpy("probabilities")[0]) for i in (0, 1, 3)}) == 3


def test_images_as_base64_bytes_and_as_an_fp32_tensor(kserve_served, client, auth):
    png = png_bytes((96, 80), (20, 140, 60))
    image = triton.InferInput("image", [1], "BYTES").set_data_from_numpy(
        np.array([base64.b64encode(png)], dtype=object), binary_data=False)
    tensor = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    as_tensor = triton.InferInput("image", list(tensor.shape), "FP32").set_data_from_numpy(tensor, binary_data=False)
    not_image = triton.InferInput("image", [1], "BYTES").set_data_from_numpy(
        np.array([base64.b64encode(b"not an image")], dtype=object), binary_data=False)
    pending = [client.async_infer(IMAGE, [inp], headers=auth, outputs=requested("labels", "probabilities"))
               for inp in (image, as_tensor, not_image)]
    first, second = pending[0].get_result(), pending[1].get_result()
    with pytest.raises(InferenceServerException) as raised:
        pending[2].get_result()
    assert raised.value.status() == "400" and "not a readable JPEG or PNG" in raised.value.message()

    expected = kserve_served.predict(IMAGE, png).json()  # top 5 of the same image sent plainly
    assert [str(v) for v in first.as_numpy("labels")[0]] == list(expected)
    assert first.get_response()["id"]  # TorchServe's request id when the client sends none
    assert second.as_numpy("labels").shape == (1, 5) and second.as_numpy("probabilities").shape == (1, 5)


@pytest.mark.parametrize("make, words", [
    (lambda: [triton.InferInput("text", [1], "FP32").set_data_from_numpy(np.ones(1, np.float32), binary_data=False)],
     "takes ['BYTES'], got FP32"),
    (lambda: [bytes_input("a", ["x"]), bytes_input("b", ["y"])], "one input"),
])
def test_bad_v2_requests_get_v2_errors_while_a_good_one_in_the_batch_is_served(kserve_served, client, auth,
                                                                              make, words):
    good = client.async_infer(TEXT, [bytes_input("text", ["Is it in stock?"])], headers=auth)
    bad = client.async_infer(TEXT, make(), headers=auth)
    with pytest.raises(InferenceServerException) as raised:
        bad.get_result()
    assert raised.value.status() == "400" and words in raised.value.message(), raised.value.message()
    assert good.get_result().as_numpy("labels").shape == (1, 3)


def test_the_binary_tensor_extension_is_refused_with_a_clear_400(kserve_served, client, auth):
    # What tritonclient sends for binary_data=True: the JSON, then the raw tensor bytes (sent by hand:
    # this tritonclient release puts an int header value that the HTTP layer refuses).
    data = triton.InferInput("text", [1], "BYTES").set_data_from_numpy(np.array([b"hi"], dtype=object))
    head = json.dumps({"inputs": [data._get_tensor()]}).encode()
    response = kserve_served.session.post(
        f"{kserve_served.inference_url}/v2/models/{TEXT}/infer", data=head + data._get_binary_data(),
        headers={**auth, "Inference-Header-Content-Length": str(len(head)), "Content-Type": "application/octet-stream"},
        timeout=60)
    assert response.status_code == 400 and "binary tensor extension is not supported" in response.json()["error"]


def test_unknown_output_and_malformed_body_answer_in_v2_shape(kserve_served, client, auth):
    with pytest.raises(InferenceServerException, match="no output 'scores'"):
        client.infer(TEXT, [bytes_input("text", ["hello"])], headers=auth, outputs=requested("scores"))
    response = kserve_served.session.post(
        f"{kserve_served.inference_url}/v2/models/{TEXT}/infer", headers={**auth, "Content-Type": "application/json"},
        data=json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "data": ["x"]}]}), timeout=60)
    assert response.status_code == 400 and set(response.json()) == {"error"}
    assert "'shape' must be a list" in response.json()["error"]
    # The envelope is ours now: plain requests to the same model still work on this server.
    assert kserve_served.predict(TEXT, b"plain text still works").status_code == 200


def test_kserve_inference_rest_client(kserve_served, auth):
    if not KSERVE_PYTHON.exists():
        pytest.fail(f"{KSERVE_PYTHON} is missing: run scripts/ensure_kserve_env.sh (make venv does)")
    result = subprocess.run([str(KSERVE_PYTHON), str(REPO / "tests" / "kserve_side.py"), "infer",
                             kserve_served.inference_url, TEXT, kserve_served.token["inference"]["key"],
                             "Can I change my delivery address?"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    response = json.loads(result.stdout)
    assert response["model_name"] == TEXT and response["id"] == "kserve-client-1"
    outputs = {o["name"]: o for o in response["outputs"]}
    assert outputs["labels"]["shape"] == [1, 3] and outputs["probabilities"]["datatype"] == "FP32"
    expected = kserve_served.predict(TEXT, b"Can I change my delivery address?").json()
    assert outputs["labels"]["data"] == list(expected)
