"""The HTTP side of the load generator: :class:`HttpSender` and TorchServe's key file.

:class:`HttpSender` keeps one keep-alive ``http.client`` connection per client thread, far
cheaper per request than ``requests``: the client shares the machine's cores with the server.
"""

from __future__ import annotations

import http.client
import itertools
import json
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence
from urllib.parse import urlsplit

from torchserve_perf.tools.loadgen.payloads import Payload


def read_keys(key_file: Path) -> dict[str, Any]:
    """The key_file.json TorchServe writes into its working directory: API name -> {"key": ..., ...}.

    Raises ``json.JSONDecodeError`` while TorchServe is still writing it."""
    data = json.loads(Path(key_file).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{key_file} is not a key file (a JSON object of API keys)")
    return data


def read_token(key_file: Path, api: str = "inference") -> str:
    """The ``api`` key from the key_file.json TorchServe writes into its working directory."""
    data = read_keys(key_file)
    try:
        return data[api]["key"]
    except (KeyError, TypeError):
        raise ValueError(f"{key_file} has no '{api}' key (keys: {sorted(data)})") from None


class HttpSender:
    """``send()`` POSTs the next payload to ``url``; one keep-alive connection per calling thread."""

    def __init__(self, url: str, payloads: Sequence[Payload], *, token: Optional[str] = None,
                 headers: Optional[Mapping[str, str]] = None, timeout: float = 120.0) -> None:
        if not payloads:
            raise ValueError("at least one payload is needed")
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"only http:// URLs are supported, got {url!r}")
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.timeout = timeout
        base = dict(headers or {})
        if token:
            base["Authorization"] = f"Bearer {token}"
        self.requests = [(p.body, {**base, "Content-Type": p.content_type}) for p in payloads]
        self.local = threading.local()
        self.turn = itertools.count()

    def _state(self) -> tuple[Optional[http.client.HTTPConnection], Iterator[tuple[bytes, dict[str, str]]]]:
        local = self.local
        if not hasattr(local, "cycle"):
            start = next(self.turn) % len(self.requests)  # threads start on different payloads
            local.cycle = itertools.cycle(self.requests[start:] + self.requests[:start])
            local.conn = None
        return local.conn, local.cycle

    def __call__(self) -> int:
        conn, cycle = self._state()
        body, headers = next(cycle)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", self.path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
        except Exception:
            conn.close()
            self.local.conn = None
            raise
        if response.will_close:
            conn.close()
            self.local.conn = None
        return response.status

    def close(self) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            conn.close()
