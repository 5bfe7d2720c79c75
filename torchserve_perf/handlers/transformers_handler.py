"""Transformers text handler: a Hugging Face ``save_pretrained`` folder in the archive, served.

Text in (plain UTF-8, JSON with a text field, or v2 BYTES: one text per element); out, by the
model's task (config.architectures):

- sequence classification: ``{"labels": {label: probability, ...top-k}, "truncated": bool}``;
- token classification: ``{"entities": [{"entity", "start", "end", "text", "score"}], "truncated": bool}``,
  character spans taken from the tokenizer's offsets.

The batch's texts go through the fast tokenizer in one call, truncated at the model's maximum
(``truncated`` says so). Each batch is padded to its longest text rounded up to
``pad_to_multiple``, and split into groups of similar length when that saves more padding than
another model call costs (handlers/text_batching.py).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from torchserve_perf.handlers import v2
from torchserve_perf.handlers.base import PerfHandler
from torchserve_perf.handlers.batch import Decoded
from torchserve_perf.handlers.errors import RequestError
from torchserve_perf.handlers.hf_model import TransformersText, load_transformers
from torchserve_perf.handlers.labels import top_k
from torchserve_perf.handlers.options import TransformersOptions
from torchserve_perf.handlers.text_batching import length_groups, padded_length
from torchserve_perf.handlers.text_input import read_text
from torchserve_perf.handlers.token_entities import entities

EXAMPLE_TEXT = "a representative sentence to warm the model up"
ENTITY_TASK = "token-classification"


class TransformersTextHandler(PerfHandler[TransformersOptions]):
    options_section = "transformers"
    options_class = TransformersOptions
    v2_datatypes = frozenset({"BYTES"})  # v2: one text per BYTES element

    hf: TransformersText  # not the model: self.model holds it, and is what releases it (eager_release)

    # ---- load -------------------------------------------------------------------------------
    def load_model(self, context: Any) -> torch.nn.Module:
        loaded = load_transformers(context.system_properties["model_dir"], self.device,
                                   self.settings.options.max_length)
        self.hf = loaded.text()
        return loaded.module

    def example_input(self) -> Optional[torch.Tensor]:
        ids = self.hf.tokenizer([EXAMPLE_TEXT], truncation=True, max_length=self.hf.max_length)["input_ids"]
        return self.pad([torch.tensor(ids)])

    # ---- preprocess: texts read one by one, tokenized together --------------------------------
    def decode(self, body: Any, idx: int) -> Decoded:
        opts = self.settings.options
        text = read_text(body, opts.text_field, opts.max_request_mb)
        return Decoded(idx, torch.empty((1, 0), dtype=torch.long), {"texts": (text,)})

    def decode_v2(self, request: v2.V2Request, idx: int) -> Decoded:
        item = request.input(self.v2_input)
        if item.datatype != v2.BYTES or not isinstance(item.data, tuple):
            raise RequestError(f"input '{item.name}': this model takes ['BYTES'] (one text per element), "
                               f"got {item.datatype}")
        if not item.data:
            raise RequestError(f"input '{item.name}' holds no elements")
        opts = self.settings.options
        texts = tuple(read_text(bytes(e), opts.text_field, opts.max_request_mb) for e in item.data)
        return Decoded(idx, torch.empty((len(texts), 0), dtype=torch.long), {"texts": texts, v2.META_KEY: request})

    def decode_all(self, bodies: list[Any]) -> list[Any]:
        """Each body read to its texts, then every accepted text tokenized in one call."""
        decoded = super().decode_all(bodies)
        accepted = [d for d in decoded if isinstance(d, Decoded)]
        texts = [text for d in accepted for text in d.meta["texts"]]
        if not texts:
            return decoded
        encoded = self.hf.tokenizer(texts, truncation=True, max_length=self.hf.max_length,
                                    return_offsets_mapping=self.hf.task == ENTITY_TASK)
        rows = iter(range(len(texts)))
        tokenized: dict[int, Decoded] = {}
        for d in accepted:
            mine = [next(rows) for _ in d.meta["texts"]]
            meta = {**d.meta, "truncated": tuple(bool(encoded.encodings[i].overflowing) for i in mine),
                    "lengths": tuple(len(encoded["input_ids"][i]) for i in mine)}
            if self.hf.task == ENTITY_TASK:
                meta["offsets"] = tuple(tuple(map(tuple, encoded["offset_mapping"][i])) for i in mine)
            ids = [torch.tensor(encoded["input_ids"][i]) for i in mine]
            tokenized[d.index] = Decoded(d.index, self.pad(ids), meta)
        return [tokenized[d.index] if isinstance(d, Decoded) else d for d in decoded]

    def collate(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        return self.pad([row for t in tensors for row in t])

    def pad(self, rows: list[torch.Tensor]) -> torch.Tensor:
        """Rows of ids -> [rows, length]: the longest rounded up to ``pad_to_multiple``, pad ids after."""
        length = padded_length(max(int(r.shape[-1]) for r in rows), self.settings.options.pad_to_multiple,
                               self.hf.max_length)
        batch = torch.full((len(rows), length), self.hf.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            batch[i, :row.shape[-1]] = row.reshape(-1)[:length]
        return batch

    # ---- inference: by length groups ---------------------------------------------------------
    def inference(self, model_input: Any, *args: Any, **kwargs: Any) -> Any:
        opts = self.settings.options
        lengths = (model_input != self.hf.pad_id).sum(dim=1).tolist()
        groups = [tuple(range(len(lengths)))]
        if opts.group_call_tokens and len(lengths) > 1:
            groups = length_groups(lengths, opts.pad_to_multiple, self.hf.max_length, opts.group_call_tokens)
        if len(groups) == 1:
            return super().inference(model_input, *args, **kwargs)
        output: Optional[torch.Tensor] = None
        for group in groups:
            rows = torch.tensor(group, device=model_input.device)
            length = padded_length(max(lengths[i] for i in group), opts.pad_to_multiple, model_input.shape[1])
            part = super().inference(model_input[rows, :length], *args, **kwargs)
            part = part[0] if isinstance(part, (tuple, list)) else part
            if output is None:  # token outputs keep the batch's length: the rest of a row stays zero
                shape = (len(lengths), *part.shape[1:]) if part.dim() == 2 else (len(lengths), model_input.shape[1],
                                                                                 *part.shape[2:])
                output = part.new_zeros(shape)
            if part.dim() == 2:
                output[rows] = part
            else:
                output[rows, :length] = part
        return output

    # ---- postprocess -------------------------------------------------------------------------
    def results(self, output: torch.Tensor, request: Decoded) -> list[dict[str, Any]]:
        """One answer per text of the request (one row each)."""
        answers = []
        for row, text in enumerate(request.meta["texts"]):
            truncated = request.meta["truncated"][row]
            if self.hf.task == ENTITY_TASK:
                length = request.meta["lengths"][row]
                found = entities(output[row, :length], request.meta["offsets"][row], self.hf.labels, text)
                answers.append({"entities": found, "truncated": truncated})
            else:
                answers.append({"labels": top_k(output[row], self.hf.labels, self.settings.options.topk),
                                "truncated": truncated})
        return answers

    def format_output(self, output: torch.Tensor, request: Decoded) -> Any:
        return self.results(output, request)[0]

    def format_v2(self, output: torch.Tensor, request: Decoded) -> list[v2.V2Output]:
        answers = self.results(output, request)
        truncated = v2.tensor_output("truncated", torch.tensor([a["truncated"] for a in answers]).numpy())
        if self.hf.task == ENTITY_TASK:
            import json

            return [v2.bytes_output("entities", [[json.dumps(a["entities"])] for a in answers]), truncated]
        return [*v2.classification_outputs([a["labels"] for a in answers]), truncated]

