"""Token classification -> entities with character spans, from the tokenizer's offsets."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

OUTSIDE = "O"


def entity_type(label: str) -> str:
    """``B-PER`` / ``I-PER`` -> ``PER``; a label without a BIO prefix is its own type."""
    return label[2:] if label[:2] in ("B-", "I-") else label


def entities(logits: torch.Tensor, offsets: Sequence[tuple[int, int]], labels: Mapping[int, str],
             text: str) -> list[dict[str, Any]]:
    """One text's entities: runs of tokens of one type (a ``B-`` label starts a new run), each with
    its character span ``[start, end)`` in ``text``, the text itself and the mean token score.

    ``logits`` [tokens, labels] for the text's own tokens; special tokens (offsets (0, 0)) and
    ``O`` tokens end a run and belong to none.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    scores, ids = probs.max(dim=-1)
    found: list[dict[str, Any]] = []
    run: dict[str, Any] | None = None
    for (start, end), label_id, score in zip(offsets, ids.tolist(), scores.tolist()):
        label = labels.get(label_id, str(label_id))
        if start == end or label == OUTSIDE:
            run = None
            continue
        kind = entity_type(label)
        if run is not None and run["entity"] == kind and not label.startswith("B-"):
            run["end"], run["scores"] = end, run["scores"] + [score]
            continue
        run = {"entity": kind, "start": start, "end": end, "scores": [score]}
        found.append(run)
    return [{"entity": r["entity"], "start": r["start"], "end": r["end"], "text": text[r["start"]:r["end"]],
             "score": round(sum(r["scores"]) / len(r["scores"]), 6)} for r in found]
