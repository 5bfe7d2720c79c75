"""A batch's answers: one response per request, in TorchServe's order, each rejected request with
its own status; and the errors a request gets when the model, not its body, refuses it."""

from __future__ import annotations

import logging
from typing import Any

from torchserve_perf.handlers import v2
from torchserve_perf.handlers.batch import Decoded, Served
from torchserve_perf.handlers.errors import RequestError
from torchserve_perf.handlers.validation import safe_text

log = logging.getLogger(__name__)


def respond(served: Served, context: Any, worker_name: str) -> list:
    """One response per request, in batch order; a rejected request's status is set on ``context``
    (TorchServe's per-request status), and the batch's rejections are logged in one line."""
    answers = []
    for idx in range(served.size):
        error = served.rejected.get(idx)
        if error is None and idx not in served.outputs:  # only if a step lost a request: answer it anyway
            error = RequestError("the request was not processed", 500)
        if error is not None:
            context.set_response_status(error.status, error.phrase, idx)
            answers.append(error.body())
        else:
            answers.append(served.outputs[idx])
    if served.rejected:
        # Names the batch, so a rejected request can be told apart from a failed batch in the log.
        log.warning("%s batch of %d: served %d, rejected %s", worker_name, served.size, len(served.outputs),
                    "; ".join(f"request {i}: {e.status} {e.message}" for i, e in sorted(served.rejected.items())))
    return answers


def for_request(error: RequestError, request: Decoded) -> RequestError:
    """A v2 request's error is v2-shaped (``{"error": ...}``); others keep ours."""
    return v2.as_v2_error(error) if v2.META_KEY in request.meta else error


def model_error(exc: Exception) -> RequestError:
    """A request the model could not run alone: 422, with the model's complaint (shapes, dtypes)."""
    text = str(exc).strip()
    # safe_text: a model's own message may quote the values it refused; shapes and dtypes stay.
    message = safe_text(text.splitlines()[0]) if text else ""
    return RequestError(f"the model could not process this input: {type(exc).__name__}"
                        + (f": {message}" if message else ""), 422)
