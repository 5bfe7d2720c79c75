"""Turning request bodies into bytes, text, JSON and arrays, with a RequestError for anything malformed."""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any

import numpy as np

from torchserve_perf.handlers.errors import RequestError

NPY_MAGIC = b"\x93NUMPY"


def as_bytes(body: Any) -> bytes:
    if body is None:
        raise RequestError("the request has no body; send the payload as the request body or a 'data' form field")
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    raise RequestError(f"expected a raw payload, got JSON {type(body).__name__}")


def as_json(body: Any) -> Any:
    """TorchServe already parses application/json bodies; parse raw bytes that look like JSON."""
    if isinstance(body, (dict, list, int, float)):  # TorchServe parsed an application/json body already
        return body
    raw = as_bytes(body).strip()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"the body is not valid JSON: {exc}") from None


def looks_like_json(body: Any) -> bool:
    if isinstance(body, (dict, list)):
        return True
    if isinstance(body, (bytes, bytearray, str)):
        head = bytes(body[:1]) if not isinstance(body, str) else body[:1].encode()
        return head in (b"{", b"[")
    return False


def is_npy(body: Any) -> bool:
    return isinstance(body, (bytes, bytearray)) and bytes(body[:6]) == NPY_MAGIC


def load_npy(body: bytes) -> np.ndarray:
    try:
        # allow_pickle=False: a request must never run code.
        return np.load(io.BytesIO(body), allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise RequestError(f"the .npy payload could not be read: {exc}") from None


def b64decode(text: Any, field: str) -> bytes:
    if not isinstance(text, str):
        raise RequestError(f"'{field}' must be a base64 string")
    try:
        return base64.b64decode(text.split(",", 1)[-1] if text.startswith("data:") else text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"'{field}' is not valid base64: {exc}") from None
