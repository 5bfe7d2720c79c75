"""The gRPC side of the load generator: senders for TorchServe's two gRPC services, and how a reply
tells an answer from an error.

Like :class:`~torchserve_perf.tools.loadgen.client.HttpSender`, a sender is a ``send() -> status``
callable that keeps one connection per calling thread (its own channel, with a subchannel pool of
its own, so threads never share a connection) and returns an HTTP-style status, so the loops and
the report treat every transport alike.

TorchServe's gRPC frontend does not carry a handler's per-request status (docs/transports.md), so
a reply can be ``OK`` and still be an error; :func:`prediction_status` and :func:`infer_status` are
the client-side checks that find it.
"""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence
from urllib.parse import urlsplit

from torchserve_perf.tools.loadgen.payloads import Payload
from torchserve_perf.tools.loadgen.protocols import GRPC_SCHEME, V2Tensor, v2_tensor

# gRPC status code name -> the HTTP status TorchServe's frontend maps to it (GRPCUtils), so that
# errors count alike over every transport.
HTTP_STATUS = {
    "OK": 200, "INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
    "ABORTED": 409, "OUT_OF_RANGE": 416, "FAILED_PRECONDITION": 422, "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499, "INTERNAL": 500, "UNKNOWN": 500, "UNIMPLEMENTED": 501, "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
ERROR_OUTPUT, ERROR_CODE_OUTPUT = "error", "error_code"  # how our handlers mark a rejected ModelInfer request
CHANNEL_OPTIONS = (("grpc.use_local_subchannel_pool", 1),  # a connection per channel, as HTTP's per thread
                   ("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1))


# ---- telling an answer from an error ----------------------------------------------------------------
def status_of_code(code_name: str) -> int:
    """The HTTP status for a gRPC status code's name (500 for one TorchServe never sends)."""
    return HTTP_STATUS.get(code_name, 500)


def error_status(body: Any) -> Optional[int]:
    """The status of an error body (ours: ``{"error": {"code": N, ...}}``; a v2 error:
    ``{"error": "...", "code": N}``), or None for an answer."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        return code if isinstance(code, int) else 500
    if isinstance(error, str):
        code = body.get("code")
        return code if isinstance(code, int) else 500
    return None  # e.g. a top-k answer that has a label called "error": its value is a number


def prediction_status(prediction: bytes) -> int:
    """A ``Predictions`` reply's status: the frontend answers ``OK`` for a request the handler rejected
    in a batch, with the error body as the prediction."""
    if b'"error"' not in prediction[:64]:  # an error body begins with it: most answers stop here
        return 200
    try:
        body = json.loads(prediction)
    except (ValueError, RecursionError):
        return 200
    return error_status(body) or 200


def infer_status(response: Any) -> int:
    """A ``ModelInfer`` reply's status: a request our handlers rejected in a batch comes back ``OK``
    with the outputs ``error`` and ``error_code``."""
    names = [o.name for o in response.outputs]
    if ERROR_OUTPUT not in names:
        return 200
    for output in response.outputs:
        if output.name == ERROR_CODE_OUTPUT:
            codes = list(output.contents.int64_contents) or list(output.contents.int_contents)
            if codes:
                return int(codes[0])
    return 500


def bytes_output(element: bytes) -> str:
    """One element of a ``BYTES`` output as the handler wrote it: the frontend sends each element's
    JSON text (a string arrives quoted)."""
    text = element.decode("utf-8")
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


# ---- requests -------------------------------------------------------------------------------------------
def parse_url(url: str) -> tuple[str, str, str]:
    """``grpc://HOST:PORT/predictions/MODEL`` or ``grpc://HOST:PORT/v2/models/MODEL/infer`` ->
    (address, "predictions" or "infer", model)."""
    parts = urlsplit(url)
    if parts.scheme != GRPC_SCHEME or not parts.netloc:
        raise ValueError(f"not a gRPC target: {url!r} (grpc://HOST:PORT/predictions/MODEL)")
    path = [p for p in parts.path.split("/") if p]
    if len(path) == 2 and path[0] == "predictions":
        return parts.netloc, "predictions", path[1]
    if len(path) == 4 and path[:2] == ["v2", "models"] and path[3] == "infer":
        return parts.netloc, "infer", path[2]
    raise ValueError(f"{url!r}: the path must be /predictions/MODEL or /v2/models/MODEL/infer")


def infer_request(stubs: Any, model: str, tensor: V2Tensor, request_id: str = "") -> Any:
    """A ``ModelInferRequest`` carrying ``tensor``."""
    field = {"BYTES": "bytes_contents", "FP32": "fp32_contents", "FP64": "fp64_contents",
             "INT64": "int64_contents", "INT32": "int_contents", "INT16": "int_contents", "INT8": "int_contents",
             "UINT64": "uint64_contents", "UINT32": "uint_contents", "UINT16": "uint_contents",
             "UINT8": "uint_contents", "BOOL": "bool_contents"}.get(tensor.datatype)
    if field is None:
        raise ValueError(f"TorchServe's ModelInfer cannot carry {tensor.datatype} inputs")
    contents = stubs.oip.InferTensorContents(**{field: list(tensor.values)})
    item = stubs.oip.ModelInferRequest.InferInputTensor(name=tensor.name, datatype=tensor.datatype,
                                                        shape=list(tensor.shape), contents=contents)
    return stubs.oip.ModelInferRequest(model_name=model, id=request_id, inputs=[item])


def predictions_request(stubs: Any, model: str, payload: Payload, input_name: str = "data") -> Any:
    return stubs.inference.PredictionsRequest(model_name=model, input={input_name: payload.body})


class GrpcSender:
    """``send()`` makes the next call to ``url`` (see :func:`parse_url`); one channel per calling thread."""

    def __init__(self, url: str, payloads: Sequence[Payload], *, token: Optional[str] = None,
                 headers: Optional[Mapping[str, str]] = None, timeout: float = 120.0) -> None:
        from torchserve_perf.tools import grpc_stubs

        if not payloads:
            raise ValueError("at least one payload is needed")
        self.address, self.kind, self.model = parse_url(url)
        self.stubs = grpc_stubs.load()
        self.timeout = timeout
        metadata = [(k.lower(), v) for k, v in (headers or {}).items()]
        if token:
            metadata.append(("authorization", f"Bearer {token}"))
        self.metadata = tuple(metadata)
        if self.kind == "infer":
            self.messages = [infer_request(self.stubs, self.model, v2_tensor(p)) for p in payloads]
        else:
            self.messages = [predictions_request(self.stubs, self.model, p) for p in payloads]
        self.local = threading.local()
        self.turn = itertools.count()

    def _state(self) -> tuple[Callable[..., Any], Iterator[Any]]:
        local = self.local
        if not hasattr(local, "call"):
            import grpc

            start = next(self.turn) % len(self.messages)  # threads start on different payloads
            local.cycle = itertools.cycle(self.messages[start:] + self.messages[:start])
            local.channel = grpc.insecure_channel(self.address, options=list(CHANNEL_OPTIONS))
            if self.kind == "infer":
                local.call = self.stubs.oip_grpc.GRPCInferenceServiceStub(local.channel).ModelInfer
            else:
                local.call = self.stubs.inference_grpc.InferenceAPIsServiceStub(local.channel).Predictions
        return local.call, local.cycle

    def __call__(self) -> int:
        import grpc

        call, cycle = self._state()
        try:
            reply = call(next(cycle), metadata=self.metadata, timeout=self.timeout)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            return status_of_code(code.name if code is not None else "UNKNOWN")
        if self.kind == "infer":
            return infer_status(reply)
        return prediction_status(reply.prediction)

    def close(self) -> None:
        channel = getattr(self.local, "channel", None)
        if channel is not None:
            channel.close()


def make_sender(url: str, payloads: Sequence[Payload], *, token: Optional[str] = None,
                headers: Optional[Mapping[str, str]] = None, timeout: float = 120.0) -> Callable[[], int]:
    """The sender for ``url``: gRPC for ``grpc://`` targets, HTTP otherwise."""
    if urlsplit(url).scheme == GRPC_SCHEME:
        return GrpcSender(url, payloads, token=token, headers=headers, timeout=timeout)
    from torchserve_perf.tools.loadgen.client import HttpSender

    return HttpSender(url, payloads, token=token, headers=headers, timeout=timeout)
