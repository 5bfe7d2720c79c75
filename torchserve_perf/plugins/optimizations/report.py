"""How the optimization steps talk: one WARNING per dropped step, one INFO summary per load.

TorchServe's worker logs everything to stdout with the bare message, and its frontend files
stdout lines as INFO and stderr lines as WARN in model_log.log. So inside a worker our WARNINGs
go to stderr: they show up as WARN there, which is what an operator greps for.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterator

from torchserve_perf import ts_compat

log = logging.getLogger("torchserve_perf.plugins.optimizations")

# Loggers that narrate export/compile at INFO/WARNING (missing torchvision ops, graph breaks,
# initializer passes...). During a step that is noise next to our single WARNING, which carries the reason.
NOISY_LOGGERS = ("torch.onnx", "torch._dynamo", "torch._inductor", "torch.export", "torch.fx.experimental",
                 "torch._export", "torch.jit", "onnxscript", "onnx_ir", "onnx")


def route_worker_warnings() -> None:
    """In a TorchServe worker, send our WARNINGs to stderr (see ts_compat.route_warnings_to_stderr)."""
    ts_compat.route_warnings_to_stderr(log)


@contextlib.contextmanager
def quiet_torch() -> Iterator[list[str]]:
    """Hold back torch's own warnings during a step; they are logged at DEBUG and returned."""
    saved = {}
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = logger.level
        logger.setLevel(logging.ERROR)
    messages: list[str] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield messages
        for item in caught:
            messages.append(f"{item.category.__name__}: {item.message}")
            log.debug("during optimization: %s: %s", item.category.__name__, item.message)
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
