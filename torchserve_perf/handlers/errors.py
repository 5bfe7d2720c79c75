"""Per-request errors: one bad request gets its own 4xx, the rest of the batch is served."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Optional


class RequestError(Exception):
    """Raise from ``decode`` (or any per-request step) to fail that request alone."""

    def __init__(self, message: str, status: int = HTTPStatus.BAD_REQUEST, detail: Optional[dict] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = int(status)
        self.detail = detail or {}

    @property
    def phrase(self) -> str:
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return "Error"

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.status, "type": self.phrase, "message": self.message}
        if self.detail:
            error["detail"] = self.detail
        return {"error": error}
