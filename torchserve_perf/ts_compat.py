"""TorchServe internals, in one place: what the handlers and plugins take from TorchServe beyond its
public handler API (``BaseHandler``, ``Context``, the metrics cache).

No TorchServe release promises any of this, so each use that changes TorchServe's objects is
checked against the releases it was written and tested for (:data:`SUPPORTED`). On any other
release, or when the version cannot be read, it logs a warning that says what it leaves out and
takes the safe path: TorchServe's own behaviour.

- :func:`take_over_envelope`: with ``service_envelope=kservev2`` TorchServe's envelope reads only
  the first request of a batch and answers the whole batch with one response. Our handlers speak
  v2 per request instead, by pointing TorchServe's ``Service`` back at the handler's ``handle``.
  Safe path: the envelope stays.
- :func:`route_warnings_to_stderr`: a worker logs everything through one bare-message stdout
  handler on the root logger, and the frontend files stdout lines as INFO and stderr lines as
  WARN in model_log.log; so a WARNING must go to stderr to be filed as one. Safe path: logging
  is left as it is (our warnings show as INFO).
- :func:`port_from_argv`: the frontend does not tell a worker its number; it names the worker
  ``W-<port>-<model>_<version>`` and passes that port on the worker's command line. Reading argv
  changes nothing, so it is not gated: a command line it does not recognise gives None.
"""

from __future__ import annotations

import logging
import re
import sys
from types import FrameType
from typing import Any, Callable, Optional, Sequence

log = logging.getLogger(__name__)

# The TorchServe releases (major.minor) whose internals this module was written against.
SUPPORTED: tuple[str, ...] = ("0.11", "0.12")
_RELEASE = re.compile(r"(\d+)\.(\d+)(?![\d])")
_SOCK_PORT = re.compile(r"\.ts\.sock\.(\d+)$")
_BARE_MESSAGE = "%(message)s"


# ---- which TorchServe ---------------------------------------------------------------------------
def release(version: Optional[str]) -> Optional[str]:
    """The ``major.minor`` of a version string (``"0.12.0rc1"`` -> ``"0.12"``); None if unreadable."""
    match = _RELEASE.match((version or "").strip())
    return f"{int(match[1])}.{int(match[2])}" if match else None


def is_supported(version: Optional[str]) -> bool:
    """Whether ``version`` is a TorchServe release whose internals this module knows."""
    return release(version) in SUPPORTED


def installed_version() -> Optional[str]:
    """The version of the TorchServe this process imports; None without one."""
    try:
        import ts
    except ImportError:
        return None
    return str(getattr(ts, "__version__", "") or "") or None


def internals_usable(what: str, fallback: str, version: Optional[str] = None) -> bool:
    """Whether ``what`` may reach into TorchServe's internals on ``version`` (default: the installed
    one). When not, says so in one warning that names the ``fallback`` taken instead."""
    version = installed_version() if version is None else version
    if is_supported(version):
        return True
    log.warning("TorchServe %s is not a release torchserve-perf was checked against (%s): %s is off; %s",
                version or "(version unknown)", ", ".join(SUPPORTED), what, fallback)
    return False


# ---- the kservev2 envelope ----------------------------------------------------------------------
def take_over_envelope(context: Any, handle: Callable[..., Any], version: Optional[str] = None) -> Optional[str]:
    """Serve in place of TorchServe's kservev2 envelope; call it from the handler's ``initialize``.

    TorchServe's model loader wraps the handler's ``handle`` in the envelope and builds a
    ``Service`` (whose ``context`` is the one ``initialize`` gets) before it calls ``initialize``;
    this finds that Service in a calling frame and points it back at ``handle``. Returns the
    envelope's name when one was taken over; None when there is none, when it is another envelope
    (json, body, kserve v1: left alone), or on a TorchServe release not in :data:`SUPPORTED`."""
    frame: Optional[FrameType] = sys._getframe(1)
    while frame is not None:
        service: Any = frame.f_locals.get("service")
        if getattr(service, "context", None) is context and hasattr(service, "_entry_point"):
            envelope = getattr(service._entry_point, "__self__", None)
            wrapped = getattr(envelope, "_handle_fn", None)
            name = type(envelope).__module__.rsplit(".", 1)[-1] if envelope is not None else ""
            if name != "kservev2" or getattr(wrapped, "__self__", None) is not getattr(handle, "__self__", None):
                return None
            if not internals_usable("the kservev2 envelope take-over", "TorchServe's envelope answers v2 "
                                    "requests, reading only the first request of each batch", version):
                return None
            service._entry_point = handle
            log.info("kservev2 envelope taken over: v2 requests are answered per request, batching included")
            return name
        frame = frame.f_back
    return None


# ---- the worker's logging -----------------------------------------------------------------------
class _Below(logging.Filter):
    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level


def is_worker_logging(root: logging.Logger) -> bool:
    """``root`` is set up as TorchServe's worker sets it: one handler, on stdout, bare messages."""
    if len(root.handlers) != 1:
        return False
    handler = root.handlers[0]
    formatter = handler.formatter
    return (isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is sys.stdout
            and formatter is not None and formatter._fmt == _BARE_MESSAGE)


def route_warnings_to_stderr(logger: logging.Logger, root: Optional[logging.Logger] = None,
                             version: Optional[str] = None) -> bool:
    """Inside a TorchServe worker, give ``logger`` handlers of its own: below WARNING to stdout as
    bare messages (as the worker would), WARNING and above to stderr with the level name, so the
    frontend files them as WARN. Does nothing outside a worker, when ``logger`` already has
    handlers, or on a release not in :data:`SUPPORTED`. Returns whether it rerouted."""
    root = logging.getLogger() if root is None else root
    if logger.handlers or not is_worker_logging(root):
        return False
    if not internals_usable("routing warnings to stderr", "warnings go to stdout, which the frontend "
                            "files as INFO", version):
        return False
    below = logging.StreamHandler(sys.stdout)
    below.addFilter(_Below(logging.WARNING))
    below.setFormatter(logging.Formatter(_BARE_MESSAGE))
    above = logging.StreamHandler(sys.stderr)
    above.setLevel(logging.WARNING)
    above.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(below)
    logger.addHandler(above)
    logger.propagate = False
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    return True


# ---- the worker's number ------------------------------------------------------------------------
def port_from_argv(argv: Sequence[str]) -> Optional[int]:
    """The worker's port, read from its command line (``--sock-name .../.ts.sock.<port>`` for unix
    sockets, ``--port <port>`` for TCP); None outside a TorchServe worker."""
    for i, arg in enumerate(argv):
        value = None
        if arg in ("--sock-name", "--port") and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(("--sock-name=", "--port=")):
            value = arg.split("=", 1)[1]
        if value is None:
            continue
        match = _SOCK_PORT.search(value)
        if match:
            return int(match.group(1))
        if value.isdigit():
            return int(value)
    return None
