"""One text request's body -> its text: plain UTF-8, or JSON with the text under a field."""

from __future__ import annotations

from typing import Any

from torchserve_perf.handlers.errors import RequestError
from torchserve_perf.handlers.payloads import as_bytes, as_json, looks_like_json, utf8_problem
from torchserve_perf.handlers.validation import check_request_size


def read_text(body: Any, text_field: str, max_request_mb: float) -> str:
    """The request's text; a RequestError (JSON 4xx) names what is wrong with it."""
    if isinstance(body, (bytes, bytearray)):
        check_request_size(len(body), max_request_mb)
    if looks_like_json(body):
        payload = as_json(body)
        if not isinstance(payload, dict) or not isinstance(payload.get(text_field), str):
            raise RequestError(f"JSON text requests need a string under '{text_field}'")
        text = payload[text_field]
    else:
        try:
            text = as_bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(f"the body is not UTF-8 text: {utf8_problem(exc)}") from None
    try:  # JSON's \ud800 escapes decode to lone surrogates, which have no UTF-8 form to tokenize
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RequestError(f"the text has an unpaired surrogate at character {exc.start}") from None
    if not text.strip():
        raise RequestError("the text is empty")
    return text
