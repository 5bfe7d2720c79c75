"""Generic tensor handler: JSON nested lists or .npy in, JSON out.

Loads eager models (--model-file + state dict), TorchScript and torch.export programs.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

from torchserve_perf.handlers.base import PerfHandler
from torchserve_perf.handlers.batch import Decoded
from torchserve_perf.handlers.errors import RequestError
from torchserve_perf.handlers.options import TensorOptions
from torchserve_perf.handlers.payloads import as_json, is_npy, load_npy
from torchserve_perf.handlers.validation import check_request_size, non_finite_error, safe_reason

DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "int32": torch.int32}


class TensorHandler(PerfHandler[TensorOptions]):
    options_section = "tensor"
    options_class = TensorOptions

    def example_input(self) -> Optional[torch.Tensor]:
        opts = self.settings.options
        shape = opts.input_shape or opts.example_shape
        if shape is None:
            return None
        generator = torch.Generator().manual_seed(0)
        if DTYPES[opts.dtype].is_floating_point:
            return torch.randn(1, *shape, generator=generator).to(DTYPES[opts.dtype])
        return torch.randint(0, 2, (1, *shape), generator=generator).to(DTYPES[opts.dtype])

    def decode(self, body: Any, idx: int) -> Decoded:
        opts = self.settings.options
        if isinstance(body, (bytes, bytearray)):
            check_request_size(len(body), opts.max_request_mb)
        if is_npy(body):
            array = load_npy(bytes(body), opts.max_elements)
        else:
            payload = as_json(body)
            if isinstance(payload, dict):
                if opts.input_field not in payload:
                    raise RequestError(f"JSON requests need the tensor under '{opts.input_field}', or a bare list")
                payload = payload[opts.input_field]
            try:
                array = np.asarray(payload)
            except (ValueError, TypeError, OverflowError, RecursionError) as exc:
                raise RequestError(f"the nested lists are not a tensor (ragged or mixed): {safe_reason(exc)}") from None
        if array.dtype.kind not in "biuf":
            raise RequestError(f"expected numbers, got {_kind(array.dtype)}")
        if array.ndim == 0:  # checked before ascontiguousarray, which makes a scalar 1-d
            raise RequestError("expected a tensor with a batch dimension, got a scalar", 422)
        if array.size > opts.max_elements:
            raise RequestError(f"the request holds {array.size} numbers, over this model's limit of "
                               f"{opts.max_elements} (max_elements)", 413)
        if not opts.allow_non_finite and (error := non_finite_error(array, "input")):
            raise error
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(DTYPES[opts.dtype])
        if not opts.allow_non_finite and (error := non_finite_error(tensor, f"input (as {opts.dtype})")):
            raise error  # finite float64 numbers can overflow float32
        if opts.input_shape is not None:
            row = tuple(opts.input_shape)
            if tuple(tensor.shape) == row:
                # A bare row comes back bare: postprocess reads this from the request, not the handler.
                return Decoded(idx, tensor.unsqueeze(0), {"bare_row": True})
            elif tuple(tensor.shape[1:]) != row:
                raise RequestError(f"expected shape {list(row)} or [N, {', '.join(map(str, row))}], "
                                   f"got {list(tensor.shape)}", 422)
        return Decoded(idx, tensor)

    def format_output(self, output: torch.Tensor, request: Decoded) -> Any:
        return output[0].tolist() if request.meta.get("bare_row") else output.tolist()


def _kind(dtype: np.dtype) -> str:
    """A dtype's kind in words (numpy's str(dtype) for strings would echo their width)."""
    return {"U": "strings", "S": "bytes", "O": "objects (mixed types)", "c": "complex numbers",
            "M": "dates", "m": "time deltas", "V": "records"}.get(dtype.kind, "non-numbers")
