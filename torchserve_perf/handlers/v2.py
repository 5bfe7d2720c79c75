"""Open Inference Protocol (KServe v2) for our handlers: parse a request, build a response, shape an error.

TorchServe's own ``service_envelope=kservev2`` reads only the first request of a batch and answers
with one response for the whole batch (pytorch/serve#2158), so our handlers take the envelope's
place (``torchserve_perf.ts_compat.take_over_envelope``) and speak v2 per request: each request in
a batch is parsed on its own, gets its own response (``model_name``, ``id``, ``outputs``), and a
malformed one gets a v2-shaped error (``{"error": "..."}``) with its own 4xx while the others are served.

Only the JSON form of the protocol is spoken: the binary tensor extension (Triton's
``binary_data``) is refused with a 400 that says so.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from torchserve_perf.handlers.errors import RequestError

log = logging.getLogger(__name__)

# v2 datatype -> numpy dtype (BYTES is handled apart: its elements are byte strings).
NUMERIC: Mapping[str, np.dtype] = MappingProxyType({
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8), "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
})
BYTES = "BYTES"
DATATYPES = tuple(NUMERIC) + (BYTES,)
# Which numpy kinds a JSON array may hold for each family of datatypes (no silent float -> int).
_ACCEPTED_KINDS = {"b": "b", "u": "bui", "i": "bui", "f": "buif"}
META_KEY = "v2"  # where a request's V2Request travels in the handler's per-request metadata
MAX_ELEMENTS = 50_000_000  # a shape that claims more is refused before anything is allocated


# ---- requests -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class V2Input:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Union[np.ndarray, tuple[bytes, ...]]  # numeric: an array of ``shape``; BYTES: flat elements

    @property
    def is_bytes(self) -> bool:
        return self.datatype == BYTES


@dataclass(frozen=True)
class V2Request:
    inputs: tuple[V2Input, ...]
    id: Optional[str] = None
    outputs: tuple[str, ...] = ()  # the output names asked for; empty: all of them
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def input(self, name: Optional[str] = None) -> V2Input:
        """The input called ``name``, or the only one when the model takes one input."""
        if name is not None:
            for item in self.inputs:
                if item.name == name:
                    return item
            raise RequestError(f"this model reads the input '{name}'; the request has "
                               f"{[i.name for i in self.inputs]}")
        if len(self.inputs) != 1:
            raise RequestError(f"this model takes one input; the request has {len(self.inputs)} "
                               f"({[i.name for i in self.inputs]})")
        return self.inputs[0]


def parse(body: Any) -> Optional[V2Request]:
    """The v2 request in ``body`` (a parsed JSON dict, or raw JSON bytes), or None when the body is
    not a v2 request (so the handler reads it its own way). A malformed v2 request raises RequestError."""
    payload = _json_object(body)
    if payload is None:
        return None
    inputs = payload.get("inputs")
    # {"inputs": [[1, 2], ...]} is the tensor handler's own JSON form: v2 inputs are objects.
    if not isinstance(inputs, list) or not inputs or not isinstance(inputs[0], dict):
        return None
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError("'id' must be a string")
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError("'parameters' must be an object")
    return V2Request(inputs=tuple(_parse_input(item, i) for i, item in enumerate(inputs)),
                     id=request_id or None, outputs=_requested_outputs(payload.get("outputs")),
                     parameters=MappingProxyType(dict(parameters)))


def _json_object(body: Any) -> Optional[dict]:
    if isinstance(body, dict):
        return body
    if isinstance(body, (bytes, bytearray, str)):
        if body[:64].lstrip()[:1] not in (b"{", "{"):  # a slice: an image body is not copied whole
            return None  # an image, text or .npy body: not ours to read
        try:
            parsed = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            parsed = _json_head(body)  # binary tensor data after a JSON header, or malformed JSON
        return parsed if isinstance(parsed, dict) else None
    return None


def _json_head(body: Union[bytes, bytearray, str]) -> Any:
    """The JSON object at the start of a body whose tail is not JSON: the binary tensor extension
    sends the request's JSON and then raw tensor bytes; recognise it so that it gets a clear 400."""
    text = body if isinstance(body, str) else bytes(body).decode("utf-8", errors="replace")
    try:
        return json.JSONDecoder().raw_decode(text)[0]
    except (json.JSONDecodeError, RecursionError):
        return None  # the handler's own reader reports malformed JSON


def _parse_input(item: Any, position: int) -> V2Input:
    if not isinstance(item, dict):
        raise RequestError(f"inputs[{position}] must be an object with name, shape, datatype and data")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise RequestError(f"inputs[{position}] needs a 'name' string")
    where = f"input '{name}'"
    datatype = item.get("datatype")
    if datatype not in DATATYPES:
        raise RequestError(f"{where}: 'datatype' must be one of {list(DATATYPES)}, got {datatype!r}")
    shape = item.get("shape")
    if (not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                for d in shape)):
        raise RequestError(f"{where}: 'shape' must be a list of non-negative integers, got {shape!r}")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise RequestError(f"{where}: shape {shape} holds {count} elements, over the limit of {MAX_ELEMENTS}", 413)
    params = item.get("parameters") or {}
    if isinstance(params, dict) and "binary_data_size" in params:
        raise RequestError(f"{where}: the binary tensor extension is not supported; send the data as JSON "
                           "(tritonclient: set_data_from_numpy(..., binary_data=False))")
    if "data" not in item:
        raise RequestError(f"{where}: 'data' is missing")
    flat = _flatten(item["data"], where)
    if len(flat) != count:
        raise RequestError(f"{where}: shape {shape} needs {count} elements, 'data' has {len(flat)}")
    if datatype == BYTES:
        return V2Input(name, datatype, tuple(shape), tuple(_element_bytes(v, where) for v in flat))
    return V2Input(name, datatype, tuple(shape), _numeric(flat, datatype, tuple(shape), where))


def _flatten(data: Any, where: str) -> list:
    """v2 allows the data flat or nested in row-major order; either way, the elements in order."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(value, list) for value in data):
        return data  # already flat: the common case, and no copy
    flat: list = []
    stack = [iter(data)]
    while stack:  # iterative: a deeply nested body must not exhaust the stack
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            flat.append(value)
        else:
            stack.pop()
    return flat


def _element_bytes(value: Any, where: str) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    raise RequestError(f"{where}: BYTES elements must be strings, got {type(value).__name__}")


def _numeric(flat: list, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    target = NUMERIC[datatype]
    try:
        array = np.asarray(flat) if flat else np.zeros(0, dtype=target)
    except (ValueError, TypeError, OverflowError) as exc:
        raise RequestError(f"{where}: {datatype} data must be numbers ({type(exc).__name__})") from None
    if flat and array.dtype.kind not in "buif":  # strings, objects, None: numpy says so by the dtype
        raise RequestError(f"{where}: {datatype} data must be numbers")
    if flat and array.dtype.kind not in _ACCEPTED_KINDS[target.kind]:
        raise RequestError(f"{where}: {datatype} data must hold {_kind_words(target)}, got {_kind_words(array.dtype)}")
    if target.kind in "iu" and array.size:
        info = np.iinfo(target)
        if int(array.min()) < info.min or int(array.max()) > info.max:
            raise RequestError(f"{where}: a value is outside {datatype}'s range [{info.min}, {info.max}]")
    with np.errstate(over="ignore"):
        return array.astype(target).reshape(shape)


def npy_body(array: np.ndarray) -> bytes:
    """A numeric input as a .npy body, so it reaches a handler's ``decode`` by the path (and checks)
    that a .npy request takes."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def b64_or_raw(element: bytes) -> bytes:
    """A BYTES element that carries binary data: base64 text (what a JSON client must send) decoded,
    anything else as it is."""
    try:
        return base64.b64decode(element, validate=True)
    except (binascii.Error, ValueError):
        return element


def _kind_words(dtype: np.dtype) -> str:
    return {"b": "booleans", "u": "integers", "i": "integers", "f": "numbers"}.get(dtype.kind, str(dtype))


def _requested_outputs(outputs: Any) -> tuple[str, ...]:
    if outputs is None:
        return ()
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                for o in outputs):
        raise RequestError("'outputs' must be a list of objects with a 'name' string")
    for o in outputs:
        if (o.get("parameters") or {}).get("binary_data"):
            log.debug("output '%s' asked for binary data; answering in JSON", o["name"])
    return tuple(o["name"] for o in outputs)


# ---- responses ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class V2Output:
    name: str
    datatype: str
    shape: tuple[int, ...]
    data: tuple  # flat, row-major

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape), "data": list(self.data)}


def tensor_output(name: str, array: Any) -> V2Output:
    """A numeric output from a numpy array or a torch tensor."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    datatype = next((k for k, v in NUMERIC.items() if v == array.dtype), None)
    if datatype is None:
        raise RequestError(f"output '{name}' has dtype {array.dtype}, which v2 cannot carry", 500)
    return V2Output(name, datatype, tuple(array.shape), tuple(array.reshape(-1).tolist()))


def bytes_output(name: str, values: Sequence[Sequence[str]]) -> V2Output:
    """A BYTES output from rows of strings (all rows the same length)."""
    rows = [list(r) for r in values]
    width = len(rows[0]) if rows else 0
    if any(len(r) != width for r in rows):
        raise ValueError("BYTES rows must have the same length")
    return V2Output(name, BYTES, (len(rows), width), tuple(v for r in rows for v in r))


def classification_outputs(predictions: Sequence[Mapping[str, float]]) -> list[V2Output]:
    """Top-k predictions (label -> probability, best first) per row -> ``labels`` (BYTES [N, k]) and
    ``probabilities`` (FP32 [N, k])."""
    labels = [list(p.keys()) for p in predictions]
    probabilities = np.asarray([list(p.values()) for p in predictions], dtype=np.float32)
    return [bytes_output("labels", labels), tensor_output("probabilities", probabilities)]


def response(model_name: str, model_version: Optional[str], request_id: Optional[str],
             outputs: Sequence[V2Output], requested: Sequence[str] = ()) -> dict[str, Any]:
    """The v2 response for one request; ``requested`` picks outputs by name (all when empty)."""
    by_name = {o.name: o for o in outputs}
    unknown = [n for n in requested if n not in by_name]
    if unknown:
        raise RequestError(f"this model has no output {unknown[0]!r}; it answers {list(by_name)}")
    chosen = [by_name[n] for n in requested] if requested else list(outputs)
    body: dict[str, Any] = {"model_name": model_name}
    if model_version:
        body["model_version"] = str(model_version)
    if request_id:
        body["id"] = request_id
    body["outputs"] = [o.as_json() for o in chosen]
    return body


# ---- errors -------------------------------------------------------------------------------------
class V2Error(RequestError):
    """A RequestError whose body is the v2 error object, ``{"error": "<message>"}``."""

    def body(self) -> dict[str, Any]:
        return {"error": self.message}


def as_v2_error(error: RequestError) -> V2Error:
    if isinstance(error, V2Error):
        return error
    return V2Error(error.message, error.status, error.detail)
