"""A Hugging Face Transformers model and its fast tokenizer, built from the archive's own folder.

The archive holds a ``save_pretrained`` folder (config.json, weights, tokenizer files) at its
root; nothing is downloaded. The model is wrapped so that it takes one tensor, the padded token
ids, like every other model here: the optimization chain (int8, compile, ONNX) and the parity
check then work on it unchanged. The attention mask is the ids that are not padding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

EXTRA = "torchserve-perf[hf]"
# config.architectures suffix -> (task, the Auto class that builds it)
TASKS: Mapping[str, tuple[str, str]] = {
    "ForSequenceClassification": ("sequence-classification", "AutoModelForSequenceClassification"),
    "ForTokenClassification": ("token-classification", "AutoModelForTokenClassification"),
}


class TransformersLoadError(RuntimeError):
    """The archive's Transformers folder cannot be served; the message names the fix."""


@dataclass(frozen=True)
class TransformersText:
    """What serving needs besides the model: the tokenizer, the task and its labels."""

    tokenizer: Any
    task: str
    labels: Mapping[int, str]
    max_length: int  # the longest sequence the model takes, special tokens included
    pad_id: int


@dataclass(frozen=True)
class TransformersModel(TransformersText):
    """What the handler needs from the folder: the wrapped model, its tokenizer, task and labels."""

    module: nn.Module

    def text(self) -> TransformersText:
        """This without the model. A handler keeps only this, so that once an optimized model serves
        in the eager model's place, nothing holds the eager weights and they can be released."""
        return TransformersText(self.tokenizer, self.task, self.labels, self.max_length, self.pad_id)


class IdsOnly(nn.Module):
    """A Transformers model that takes the padded ids alone and returns its logits."""

    def __init__(self, model: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.model = model
        self.pad_id = pad_id

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (input_ids != self.pad_id).to(torch.long)
        return self.model(input_ids=input_ids, attention_mask=mask).logits


def is_transformers_folder(model_dir: str) -> bool:
    return os.path.isfile(os.path.join(model_dir, "config.json")) and any(
        os.path.isfile(os.path.join(model_dir, name)) for name in ("tokenizer.json", "vocab.txt"))


def task_of(config: Any) -> tuple[str, str]:
    """(task, Auto class name) from ``config.architectures``; any other task is a load error naming ours."""
    architectures = list(getattr(config, "architectures", None) or [])
    for architecture in architectures:
        for suffix, task in TASKS.items():
            if architecture.endswith(suffix):
                return task
    supported = ", ".join(f"*{suffix}" for suffix in TASKS)
    raise TransformersLoadError(
        f"config.json names architectures {architectures or 'none'}; this handler serves {supported} "
        "(sequence classification, token classification). Save one of those with save_pretrained")


def load_transformers(model_dir: str, device: torch.device, max_length: int = 0) -> TransformersModel:
    """The folder's model (SDPA attention) and fast tokenizer, offline. ``max_length`` 0: the model's own."""
    try:
        import transformers
    except ImportError:
        raise TransformersLoadError(f"serving a Transformers model needs transformers and tokenizers: "
                                    f"pip install '{EXTRA}' where TorchServe runs") from None
    if not is_transformers_folder(model_dir):
        raise TransformersLoadError(f"{model_dir} has no config.json and tokenizer files; archive a save_pretrained "
                                    "folder with torchserve-perf archive --hf-model DIR")
    transformers.utils.logging.disable_progress_bar()  # a bar per load would fill the worker's log
    config = transformers.AutoConfig.from_pretrained(model_dir, local_files_only=True)
    task, auto_class = task_of(config)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True, use_fast=True)
    if not getattr(tokenizer, "is_fast", False):
        raise TransformersLoadError("the folder's tokenizer has no fast (Rust) version: save it with tokenizer.json")
    model = getattr(transformers, auto_class).from_pretrained(
        model_dir, local_files_only=True, attn_implementation="sdpa", dtype=torch.float32).eval().to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    limit = model_limit(config, tokenizer)
    return TransformersModel(module=IdsOnly(model, pad_id).eval(), tokenizer=tokenizer, task=task,
                             labels={int(k): str(v) for k, v in (config.id2label or {}).items()},
                             max_length=min(max_length, limit) if max_length else limit, pad_id=pad_id)


def model_limit(config: Any, tokenizer: Any) -> int:
    """The longest input the model takes: its position table, capped by the tokenizer's own limit."""
    limit = int(getattr(config, "max_position_embeddings", 0) or 512)
    declared = int(getattr(tokenizer, "model_max_length", 0) or 0)
    return min(limit, declared) if 0 < declared < 1_000_000 else limit
