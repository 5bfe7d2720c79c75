"""The child process of :func:`~torchserve_perf.tools.archive.verify.verify_model`: it loads the
model as a worker does (and runs one row when the input shape is known), then prints one JSON line,
``{"ok": ...}`` or ``{"error": ...}``::

    python -m torchserve_perf.tools.archive.load_check REQUEST_JSON
"""

from __future__ import annotations

import json
import sys
from typing import Optional, Sequence


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else ""


def load_check(request: dict) -> dict[str, str]:
    """``{"ok": what worked}`` or ``{"error": what failed and its fix}`` for one verify request."""
    import torch

    from torchserve_perf.handlers.loading import eval_mode, load_archived_model

    input_shape = request["input_shape"]
    try:
        model = eval_mode(load_archived_model(request["model_dir"], request["manifest"], torch.device("cpu")))
    except Exception as exc:  # anything a worker would die of, told at build time instead
        return {"error": f"the model does not load: {type(exc).__name__}: {_first_line(exc)} "
                         "(fix the model, or give --no-verify to archive it anyway)"}
    if not input_shape:
        return {"ok": "loads"}
    dtypes = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "int32": torch.int32}
    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, *input_shape, dtype=dtypes[request["dtype"]]))
    except Exception as exc:
        hint = "fix --input-shape, or give --no-verify"
        if request["kind"] == "export":  # the usual cause: a batch size fixed at export time
            hint = ("export with a dynamic batch dimension, e.g. dynamic_shapes={'x': {0: torch.export.Dim("
                    "'batch')}}, or fix --input-shape")
        return {"error": f"the model fails on one row of shape {input_shape}: {type(exc).__name__}: "
                         f"{_first_line(exc)} ({hint})"}
    shape = list(out.shape) if hasattr(out, "shape") else type(out).__name__
    return {"ok": f"loads; one row of {input_shape} -> {shape}"}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    print(json.dumps(load_check(json.loads(args[0]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
