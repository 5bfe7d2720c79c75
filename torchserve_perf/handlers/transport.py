"""How each request reached the handler (HTTP, gRPC ``Predictions`` or the Open Inference Protocol's
gRPC ``ModelInfer``), and what that changes on the way in and on the way out.

TorchServe's frontend hands a worker the same rows whatever the transport, but leaves signs:

* Over HTTP (``/predictions/<model>`` and ``/v2/models/<model>/infer``) a request's headers carry
  the HTTP request's own headers (``Host``, ``Content-Length``, ...) as strings, beside one entry per
  body parameter (``{"body": {"content-type": ...}}``). A request with a body has at least a
  ``Content-Length`` or ``Transfer-Encoding`` header, so a string-valued header is always there.
* Over gRPC neither service passes headers: only the parameters' entries (dicts) remain.
  ``Predictions`` passes the client's input map as parameters without a content type;
  ``ModelInfer`` passes one parameter, ``body``, typed ``application/json``: the v2 request the
  frontend builds from the protobuf message.

What the frontend does to gRPC traffic, and what this module does about it:

* ``ModelInfer`` base64-encodes every ``BYTES`` element before the handler sees it;
  :func:`as_sent` decodes them, so a handler reads the client's own bytes as over HTTP.
* Neither gRPC service reads the per-request status a handler sets: ``Predictions`` answers ``OK``
  with the body, and ``ModelInfer`` parses the body as a v2 response; a body without ``id``,
  ``model_name``, ``model_version`` and ``outputs`` makes the frontend's worker thread fail and
  restarts the worker. :func:`fit_responses` therefore raises TorchServe's PredictionException when
  a gRPC request is rejected alone in its batch (the frontend maps its status to a gRPC code:
  400 ``INVALID_ARGUMENT``, 413 ``RESOURCE_EXHAUSTED``, other 4xx ``FAILED_PRECONDITION``), and in a
  batch with others answers a rejected ``ModelInfer`` request with a v2 response whose outputs are
  ``error`` (the message) and ``error_code`` (the status), and a rejected ``Predictions`` request
  with an error body that carries its status (``code``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from enum import Enum
from typing import Any, Mapping, Optional, Sequence

from torchserve_perf.handlers import v2
from torchserve_perf.handlers.errors import RequestError

OIP_BODY = "body"  # the one parameter the frontend gives a ModelInfer request
JSON_TYPE = "application/json"
ERROR_OUTPUT, ERROR_CODE_OUTPUT = "error", "error_code"  # a rejected ModelInfer request's outputs


class Transport(Enum):
    HTTP = "http"
    GRPC = "grpc"          # InferenceAPIsService.Predictions
    OIP_GRPC = "oip-grpc"  # GRPCInferenceService.ModelInfer

    @property
    def is_grpc(self) -> bool:
        return self is not Transport.HTTP


def classify(headers: Mapping[str, Any]) -> Transport:
    """The transport a request came by, from its headers as TorchServe hands them over. Unknown
    (no headers at all, e.g. a handler driven by hand) reads as HTTP: answered as it always was."""
    if not headers or any(isinstance(value, str) for value in headers.values()):
        return Transport.HTTP
    parameters = {name: (value.get("content-type") or "") for name, value in headers.items()
                  if isinstance(value, Mapping)}
    if parameters == {OIP_BODY: JSON_TYPE}:
        return Transport.OIP_GRPC
    return Transport.GRPC


def of_request(context: Any, idx: int) -> Transport:
    """The transport of request ``idx`` of the batch in TorchServe's ``context``."""
    try:
        headers = context.get_all_request_header(idx) if context is not None else None
    except (AttributeError, IndexError, KeyError, TypeError):
        headers = None
    return classify(headers if isinstance(headers, Mapping) else {})


# ---- in -----------------------------------------------------------------------------------------
def client_bytes(request: v2.V2Request) -> v2.V2Request:
    """A ModelInfer request's BYTES elements as the client sent them (the frontend base64-encoded them)."""
    if not any(item.is_bytes for item in request.inputs):
        return request
    return dataclasses.replace(request, inputs=tuple(
        dataclasses.replace(item, data=tuple(_unbase64(e, item.name) for e in item.data)) if item.is_bytes else item
        for item in request.inputs))


def as_sent(request: Optional[v2.V2Request], context: Any, idx: int) -> Optional[v2.V2Request]:
    """``request`` as its client sent it: BYTES decoded when it came by ModelInfer, else unchanged."""
    if request is None or of_request(context, idx) is not Transport.OIP_GRPC:
        return request
    return client_bytes(request)


def _unbase64(element: Any, name: str) -> bytes:
    try:
        return base64.b64decode(element, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise RequestError(f"input '{name}': a BYTES element is not the base64 TorchServe's gRPC frontend "
                           "sends") from None


# ---- out ----------------------------------------------------------------------------------------
def _prediction_exception() -> type:
    from ts.utils.util import PredictionException  # TorchServe's: its status reaches gRPC as a code

    return PredictionException


def lone_rejection(error: RequestError) -> Exception:
    """The exception that fails a batch of one rejected gRPC request with ``error``'s status, which the
    frontend turns into a gRPC code; the message carries the status too."""
    return _prediction_exception()(f"{error.status} {error.phrase}: {error.message}", error.status)


def oip_error_response(error: RequestError, request_id: str, model_name: str, model_version: str) -> dict[str, Any]:
    """A rejected ModelInfer request's answer in a batch: a v2 response the frontend can read, whose
    outputs say what went wrong (``error``: the message, ``error_code``: the HTTP status)."""
    return {"id": request_id, "model_name": model_name, "model_version": model_version,
            "outputs": [v2.bytes_output(ERROR_OUTPUT, [[error.message]]).as_json(),
                        v2.tensor_output(ERROR_CODE_OUTPUT, [[error.status]]).as_json()]}


def oip_response(body: Any, request_id: str, model_name: str, model_version: str) -> dict[str, Any]:
    """A served ModelInfer request's answer with every field the frontend reads; an answer that is not
    a v2 response (a handler's own shape) travels as one BYTES output, ``output``, holding its JSON."""
    if isinstance(body, dict) and isinstance(body.get("outputs"), list):
        return {**body, "id": str(body.get("id") or request_id), "model_name": str(body.get("model_name") or model_name),
                "model_version": str(body.get("model_version") or model_version)}
    return {"id": request_id, "model_name": model_name, "model_version": model_version,
            "outputs": [v2.bytes_output("output", [[json.dumps(body)]]).as_json()]}


def grpc_error_body(body: Any, error: RequestError) -> Any:
    """A rejected Predictions request's body, with its status: a v2 error (``{"error": "..."}``) gets
    ``code``; ours already carries it (``{"error": {"code": ...}}``)."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return {**body, "code": error.status}
    return body


def client_request_id(row: Any) -> str:
    """The id a ModelInfer client gave (the frontend's body carries it), or ""."""
    body = row.get(OIP_BODY) if isinstance(row, dict) else row
    if isinstance(body, (bytes, bytearray)):
        try:
            body = json.loads(body)
        except (ValueError, RecursionError):
            return ""
    value = body.get("id") if isinstance(body, dict) else None
    return value if isinstance(value, str) else ""


def fit_responses(responses: list, rejected: Mapping[int, RequestError], data: Sequence[Any], context: Any,
                  model_name: str, model_version: Optional[str]) -> list:
    """The batch's responses, each fitted to the transport its request came by (see the module's text).
    Raises TorchServe's PredictionException for a gRPC request rejected alone in its batch."""
    transports = [of_request(context, idx) for idx in range(len(responses))]
    if not any(t.is_grpc for t in transports):
        return responses
    if len(responses) == 1 and transports[0].is_grpc and 0 in rejected:
        raise lone_rejection(rejected[0])
    version = str(model_version or "")
    fitted = list(responses)
    for idx, transport in enumerate(transports):
        error = rejected.get(idx)
        if transport is Transport.OIP_GRPC:
            request_id = client_request_id(data[idx]) if idx < len(data) else ""
            fitted[idx] = (oip_error_response(error, request_id, model_name, version) if error is not None
                           else oip_response(fitted[idx], request_id, model_name, version))
        elif transport is Transport.GRPC and error is not None:
            fitted[idx] = grpc_error_body(fitted[idx], error)
    return fitted
