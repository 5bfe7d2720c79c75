"""Checks that keep hostile input out of responses and logs: safe error text and finite numbers.

Exception messages from numpy, Pillow, json, base64 and the codecs quote the input they choke on
(a .npy header, a byte, a file object's repr), and error bodies and the model log must never
carry request bytes. :func:`safe_reason` keeps the kind of problem and drops anything quoted.
NaN and Inf are not JSON: :func:`non_finite_error` turns them into a 422 instead of a body that
no client can parse.
"""

from __future__ import annotations

import re
from typing import Any, Optional

import numpy as np
import torch

from torchserve_perf.handlers.errors import RequestError

MAX_REASON = 160
# Anything a message may have copied from the input: quoted strings (plain or bytes), object reprs
# with addresses, and long hex or digit runs.
_QUOTED = re.compile(r"""b?'(?:[^'\\]|\\.)*'|b?"(?:[^"\\]|\\.)*"|<[^<>]*\bat 0x[0-9a-fA-F]+>|\{[^{}]*\}""")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def safe_reason(exc: BaseException) -> str:
    """``exc``'s message without anything that could have come from the request, shortened."""
    return safe_text(str(exc)) or type(exc).__name__


def safe_text(text: str) -> str:
    """``text`` without quoted strings, object reprs, addresses or unprintable characters, shortened."""
    text = _QUOTED.sub("…", text)
    text = _ADDRESS.sub("…", text)
    text = _UNPRINTABLE.sub("", text.replace("…", "...")).strip().rstrip(":").strip()
    if len(text) > MAX_REASON:
        text = text[:MAX_REASON - 3].rstrip() + "..."
    return text


def non_finite_count(values: Any) -> int:
    """How many NaN/Inf numbers ``values`` (a tensor, an array, or a tuple/list of them) holds."""
    if isinstance(values, torch.Tensor):
        if not (values.is_floating_point() or values.is_complex()):
            return 0
        return int((~torch.isfinite(values)).sum().item())
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "fc":
            return 0
        return int(values.size - np.count_nonzero(np.isfinite(values)))
    if isinstance(values, (tuple, list)):
        return sum(non_finite_count(v) for v in values)
    return 0


def non_finite_error(values: Any, where: str) -> Optional[RequestError]:
    """A 422 naming ``where`` ("input" / "output") when ``values`` holds NaN or Inf, else None."""
    count = non_finite_count(values)
    if not count:
        return None
    return RequestError(f"the {where} holds {count} non-finite value(s) (NaN or Inf), which JSON cannot carry; "
                        "set allow_non_finite: true under this handler's section if the model expects them", 422)


def allows_non_finite(options: Any) -> bool:
    return bool(getattr(options, "allow_non_finite", False))


def check_request_size(size: int, max_request_mb: float) -> None:
    """A JSON 413 for a body over the handler's limit (TorchServe's own limit answers 413 with no body)."""
    limit = int(max_request_mb * 1024 * 1024)
    if size > limit:
        raise RequestError(f"the request body is {size} bytes, over this model's limit of {limit} bytes "
                           "(max_request_mb)", 413)


def json_safe(value: Any) -> Any:
    """``value`` with NaN and ±Inf as null: what a model allowed to emit them answers (``NaN`` is not JSON)."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
