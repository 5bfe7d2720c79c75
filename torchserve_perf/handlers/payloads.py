"""Turning request bodies into bytes, text, JSON and arrays, with a RequestError for anything malformed.

The errors say what is wrong and where, never what the bytes were: the messages of numpy, json,
base64 and the codecs quote the input, so they are rebuilt here (see handlers/validation.py).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any, Optional

import numpy as np

from torchserve_perf.handlers.errors import RequestError
from torchserve_perf.handlers.validation import safe_reason

NPY_MAGIC = b"\x93NUMPY"


def request_body(row: Any) -> Any:
    """The payload TorchServe put in one batch row (form field, raw body or JSON)."""
    if isinstance(row, dict):
        for key in ("data", "body"):
            if row.get(key) is not None:
                return row[key]
        return None
    return row


def as_bytes(body: Any) -> bytes:
    if body is None:
        raise RequestError("the request has no body; send the payload as the request body or a 'data' form field")
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    raise RequestError(f"expected a raw payload, got JSON {_json_kind(body)}")


def as_json(body: Any) -> Any:
    """TorchServe already parses application/json bodies; parse raw bytes that look like JSON."""
    if isinstance(body, (dict, list, int, float)):  # TorchServe parsed an application/json body already
        return body
    raw = as_bytes(body).strip()
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:  # .msg is a fixed phrase; the document itself is left out
        raise RequestError(f"the body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError as exc:
        raise RequestError(f"the body is not valid JSON: not UTF-8 {utf8_problem(exc)}") from None
    except (ValueError, RecursionError) as exc:  # nesting too deep, numbers too long
        raise RequestError(f"the body is not valid JSON: {safe_reason(exc)}") from None


def utf8_problem(exc: UnicodeDecodeError) -> str:
    """Where the UTF-8 broke and why, without the offending bytes (str(exc) quotes them)."""
    return f"at byte {exc.start} ({exc.reason})"


def _json_kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(type(value), "number")


def looks_like_json(body: Any) -> bool:
    if isinstance(body, (dict, list)):
        return True
    if isinstance(body, (bytes, bytearray, str)):
        head = bytes(body[:1]) if not isinstance(body, str) else body[:1].encode()
        return head in (b"{", b"[")
    return False


def is_npy(body: Any) -> bool:
    return isinstance(body, (bytes, bytearray)) and bytes(body[:6]) == NPY_MAGIC


def load_npy(body: bytes, max_elements: Optional[int] = None) -> np.ndarray:
    """Parse a .npy body without trusting its header: the shape must match the bytes that follow.

    ``np.load`` allocates the array the header declares before reading the data, so a 100-byte
    body declaring 10^10 numbers would ask for 80 GB; here the data is viewed in place instead.
    """
    stream = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
    except Exception as exc:  # header parsing is pure Python: anything it raises means a malformed header
        # numpy's messages quote the header (dtype strings, shapes): say which part failed instead.
        raise RequestError(f"the .npy payload could not be read: {_npy_problem(exc)}") from None
    if dtype.hasobject:  # allow_pickle stays off: a request must never run code
        raise RequestError("the .npy payload could not be read: object arrays are refused")
    count = 1
    for dim in shape:
        count *= int(dim)
    if max_elements is not None and count > max_elements:
        raise RequestError(f"the .npy payload declares {count} numbers, over this model's limit of {max_elements} "
                           "(max_elements)", 413)
    data = memoryview(body)[stream.tell():]
    if count * dtype.itemsize != len(data):
        raise RequestError(f"the .npy payload could not be read: its header declares {count * dtype.itemsize} "
                           f"bytes of data and {len(data)} follow")
    array = np.frombuffer(data, dtype=dtype, count=count).reshape(shape, order="F" if fortran_order else "C")
    return array.copy()  # writable and C-ordered: torch.from_numpy warns on a read-only buffer


def _npy_problem(exc: BaseException) -> str:
    text = str(exc).lower()
    if "pickle" in text or "object arrays" in text:
        return "object arrays are refused (allow_pickle is off)"
    if "descr" in text or "dtype" in text or "data type" in text:
        return "its header names a dtype numpy does not accept"
    if "shape" in text or "fortran_order" in text:
        return "its header has an invalid shape or order"
    return "its header is malformed"


def b64decode(text: Any, field: str) -> bytes:
    if not isinstance(text, str):
        raise RequestError(f"'{field}' must be a base64 string")
    try:
        return base64.b64decode(text.split(",", 1)[-1] if text.startswith("data:") else text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"'{field}' is not valid base64: {_base64_problem(exc)}") from None


def _base64_problem(exc: BaseException) -> str:
    text = str(exc)
    if "ASCII" in text:
        return "it has non-ASCII characters"
    if "padding" in text.lower() or "multiple of 4" in text:
        return "its length or padding is wrong"
    return "it has characters outside the base64 alphabet"
