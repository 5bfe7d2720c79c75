"""The four ways a client reaches TorchServe, and a payload in each one's form.

* ``http``: the payload's bytes POSTed to ``/predictions/<model>``.
* ``v2``: a v2 (Open Inference Protocol) JSON request POSTed to ``/v2/models/<model>/infer``.
* ``grpc``: TorchServe's ``InferenceAPIsService.Predictions``, the bytes as the ``data`` input.
* ``v2-grpc``: the Open Inference Protocol's ``GRPCInferenceService.ModelInfer`` (TorchServe's
  ``ts_open_inference_protocol=true``), the payload as one input tensor.

A payload becomes one v2 input (:func:`v2_tensor`): a ``.npy`` body its numbers, a JSON array
its numbers, text a ``BYTES`` element of its UTF-8, anything else (an image) a ``BYTES`` element of
its bytes, which v2's JSON form carries as base64 text.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from typing import Any, Sequence
from urllib.parse import urlsplit

import numpy as np

from torchserve_perf.tools.loadgen.payloads import Payload

HTTP, V2, GRPC, V2_GRPC = "http", "v2", "grpc", "v2-grpc"
PROTOCOLS = (HTTP, V2, GRPC, V2_GRPC)
GRPC_SCHEME = "grpc"
NPY_MAGIC = b"\x93NUMPY"
# numpy kind and size -> the v2 datatype that carries it
_DATATYPES = {("f", 2): "FP16", ("f", 4): "FP32", ("f", 8): "FP64", ("i", 1): "INT8", ("i", 2): "INT16",
              ("i", 4): "INT32", ("i", 8): "INT64", ("u", 1): "UINT8", ("u", 2): "UINT16", ("u", 4): "UINT32",
              ("u", 8): "UINT64", ("b", 1): "BOOL"}


@dataclass(frozen=True)
class V2Tensor:
    """One v2 input, before it is written as JSON or protobuf."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: tuple[Any, ...]  # flat: bytes elements for BYTES, numbers otherwise
    text: bool = False  # BYTES elements that are UTF-8 text (v2 JSON carries them as strings, not base64)

    @property
    def is_bytes(self) -> bool:
        return self.datatype == "BYTES"


def v2_tensor(payload: Payload) -> V2Tensor:
    """``payload`` as one v2 input (see the module's text). Raises ValueError for what v2 cannot carry."""
    body, content_type = payload.body, payload.content_type.split(";", 1)[0].strip().lower()
    if body[:6] == NPY_MAGIC:
        return _numeric("input", np.load(io.BytesIO(body), allow_pickle=False))
    if content_type == "application/json":
        parsed = json.loads(body)
        if isinstance(parsed, dict) and len(parsed) == 1:  # {"inputs": [...]}, the tensor handler's own form
            parsed = next(iter(parsed.values()))
        if not isinstance(parsed, list):
            raise ValueError(f"{payload.name}: a JSON payload must be an array of numbers to travel as a v2 tensor")
        return _numeric("input", np.asarray(parsed))
    if content_type.startswith("text/"):
        return V2Tensor("text", "BYTES", (1,), (body,), text=True)
    return V2Tensor("image" if content_type.startswith("image/") else "input", "BYTES", (1,), (body,))


def _numeric(name: str, array: np.ndarray) -> V2Tensor:
    if array.dtype.kind == "f" and array.dtype.itemsize == 8:
        array = array.astype(np.float32)  # JSON numbers: the tensor handler's default dtype
    datatype = _DATATYPES.get((array.dtype.kind, array.dtype.itemsize))
    if datatype is None:
        raise ValueError(f"a {array.dtype} array has no v2 datatype")
    return V2Tensor(name, datatype, tuple(int(d) for d in array.shape), tuple(array.reshape(-1).tolist()))


def v2_json(tensor: V2Tensor) -> dict[str, Any]:
    """The v2 JSON request carrying ``tensor``; BYTES as text when it is UTF-8 text, else base64."""
    if tensor.is_bytes:
        data: list[Any] = [_text(v) if tensor.text else base64.b64encode(v).decode("ascii")
                           for v in tensor.values]
    else:
        data = list(tensor.values)
    return {"inputs": [{"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape), "data": data}]}


def _text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("a text payload must be UTF-8 to travel in v2 JSON") from None


def v2_payload(payload: Payload) -> Payload:
    """``payload`` as a v2 JSON request body."""
    body = json.dumps(v2_json(v2_tensor(payload))).encode()
    return Payload(body, "application/json", f"{payload.name} (v2 JSON)")


def payloads_for(protocol: str, payloads: Sequence[Payload]) -> list[Payload]:
    """What a sender of ``protocol`` sends: v2 JSON bodies for ``v2``; the payloads themselves otherwise
    (the gRPC senders build their messages from them)."""
    check(protocol)
    return [v2_payload(p) for p in payloads] if protocol == V2 else list(payloads)


def check(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    return protocol


def target_url(protocol: str, model: str, http_url: str, grpc_address: str) -> str:
    """Where a ``protocol`` request for ``model`` goes. gRPC targets read as ``grpc://HOST:PORT/`` plus
    the HTTP path of the same call, so one string names the service and the model."""
    paths = {HTTP: f"/predictions/{model}", V2: f"/v2/models/{model}/infer",
             GRPC: f"/predictions/{model}", V2_GRPC: f"/v2/models/{model}/infer"}
    path = paths[check(protocol)]
    if protocol in (GRPC, V2_GRPC):
        return f"{GRPC_SCHEME}://{grpc_address}{path}"
    return http_url.rstrip("/") + path


def server_properties(protocol: str) -> dict[str, str]:
    """What a TorchServe started for ``protocol`` needs in config.properties: the Open Inference
    Protocol's gRPC service is off unless ``ts_open_inference_protocol`` is true."""
    return {"ts_open_inference_protocol": "true"} if check(protocol) == V2_GRPC else {}


def grpc_address_for(http_url: str, port: int = 7070) -> str:
    """TorchServe's default gRPC inference address on the host of ``http_url``."""
    return f"{urlsplit(http_url).hostname or '127.0.0.1'}:{port}"


def protocol_of(url: str) -> str:
    """Which protocol a target URL (as :func:`target_url` writes it) speaks."""
    parts = urlsplit(url)
    v2_path = parts.path.startswith("/v2/")
    if parts.scheme == GRPC_SCHEME:
        return V2_GRPC if v2_path else GRPC
    return V2 if v2_path else HTTP
