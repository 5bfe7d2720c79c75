"""Text classifier: UTF-8 text or JSON with a text field in; top-k labels out. Batches are padded."""

from __future__ import annotations

from typing import Any, Optional

import torch

from torchserve_perf.handlers import v2
from torchserve_perf.handlers.base import PerfHandler
from torchserve_perf.handlers.batch import Decoded
from torchserve_perf.handlers.labels import load_labels, top_k
from torchserve_perf.handlers.options import TextOptions
from torchserve_perf.handlers.text_input import read_text
from torchserve_perf.handlers.tokenizer import PAD_ID, tokenize


class TextClassifierHandler(PerfHandler[TextOptions]):
    options_section = "text"
    options_class = TextOptions
    v2_datatypes = frozenset({"BYTES"})  # v2: one text per BYTES element

    def initialize(self, context: Any) -> None:
        self.labels = load_labels(context.system_properties["model_dir"])
        super().initialize(context)

    def example_input(self) -> Optional[torch.Tensor]:
        opts = self.settings.options
        ids = tokenize("a representative sentence to warm the model up", opts.vocab_size, opts.max_length)
        return torch.tensor([ids + [PAD_ID] * (_round_up(len(ids), opts.pad_to_multiple) - len(ids))])

    def decode(self, body: Any, idx: int) -> torch.Tensor:
        opts = self.settings.options
        text = read_text(body, opts.text_field, opts.max_request_mb)
        return torch.tensor([tokenize(text, opts.vocab_size, opts.max_length)], dtype=torch.long)

    def collate(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        opts = self.settings.options
        length = min(opts.max_length, _round_up(max(t.shape[1] for t in tensors), opts.pad_to_multiple))
        batch = torch.full((sum(t.shape[0] for t in tensors), length), PAD_ID, dtype=torch.long)
        row = 0
        for t in tensors:
            batch[row:row + t.shape[0], :t.shape[1]] = t[:, :length]
            row += t.shape[0]
        return batch

    def format_output(self, output: torch.Tensor, request: Decoded) -> Any:
        return top_k(output[0], self.labels, self.settings.options.topk)

    def format_v2(self, output: torch.Tensor, request: Decoded) -> list[v2.V2Output]:
        return v2.classification_outputs([top_k(row, self.labels, self.settings.options.topk) for row in output])


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
