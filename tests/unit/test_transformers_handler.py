"""The Transformers text handler in process, on TorchServe's real Context, with small BERTs made offline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

pytest.importorskip("transformers")

from tests.conftest import RequestContext
from tests.handler_fixtures import run
from torchserve_perf.handlers.hf_model import TransformersLoadError, task_of
from torchserve_perf.handlers.text_batching import length_groups, padded_length
from torchserve_perf.handlers.token_entities import entities, entity_type
from torchserve_perf.handlers.transformers_handler import TransformersTextHandler
from torchserve_perf.models.small_bert import SmallBertConfig, write_small_bert

LONG = " ".join(["the parcel arrived broken and the refund was slow"] * 30)
TEXTS = ["Fine.", "Where is my order? It was due on Tuesday and the tracking page says nothing at all.", "ok"]


def hf_dir(tmp_path: Path, task: str) -> Path:
    folder = write_small_bert(tmp_path / "model", SmallBertConfig(task=task, max_length=64))
    return folder


def make_handler(folder: Path, options: dict[str, Any] | None = None) -> tuple[TransformersTextHandler, RequestContext]:
    manifest = {"model": {"modelName": "bert", "modelVersion": "1.0", "serializedFile": "model.safetensors",
                          "handler": "transformers_handler.py"}}
    ctx = RequestContext(folder, manifest, {"handler": {"transformers": options or {},
                                                        "optimizations": {"chain": []}}}, model_name="bert")
    handler = TransformersTextHandler()
    handler.initialize(ctx.context)
    return handler, ctx


@pytest.fixture(scope="module")
def sequence(tmp_path_factory) -> tuple[TransformersTextHandler, RequestContext]:
    return make_handler(hf_dir(tmp_path_factory.mktemp("seq"), "sequence"), {"topk": 4})


@pytest.fixture(scope="module")
def token(tmp_path_factory) -> tuple[TransformersTextHandler, RequestContext]:
    return make_handler(hf_dir(tmp_path_factory.mktemp("tok"), "token"))


def alone(handler: TransformersTextHandler, text: str) -> torch.Tensor:
    """The eager model on one text, tokenized alone with no padding: the reference."""
    ids = handler.hf.tokenizer([text], truncation=True, max_length=handler.hf.max_length, return_tensors="pt")
    with torch.inference_mode():
        return handler.model(ids["input_ids"])[0]


def test_batch_matches_each_text_alone_and_a_bad_request_fails_alone(sequence):
    handler, ctx = sequence
    outputs, statuses = run(handler, ctx, [TEXTS[0].encode(), {"text": TEXTS[1]}, b"\xff\xfe", TEXTS[2]])
    assert statuses == [200, 200, 400, 200]
    assert "UTF-8" in outputs[2]["error"]["message"]
    for text, got in zip([TEXTS[0], TEXTS[1], TEXTS[2]], [outputs[0], outputs[1], outputs[3]]):
        probs = torch.softmax(alone(handler, text), -1)
        expected = {handler.hf.labels[i]: float(probs[i]) for i in range(4)}
        assert got["truncated"] is False and set(got["labels"]) == set(expected)
        for label, p in got["labels"].items():
            assert p == pytest.approx(expected[label], abs=1e-5)


def test_plain_json_and_v2_bytes_give_the_same_answer(sequence):
    handler, ctx = sequence
    text = TEXTS[1]
    v2_body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]}]}
    outputs, statuses = run(handler, ctx, [text.encode(), json.dumps({"text": text}).encode(), v2_body])
    assert statuses == [200, 200, 200]
    assert outputs[0] == outputs[1]
    by_name = {o["name"]: o["data"] for o in outputs[2]["outputs"]}
    assert by_name["labels"] == list(outputs[0]["labels"])
    assert by_name["probabilities"] == pytest.approx(list(outputs[0]["labels"].values()), abs=1e-6)
    assert by_name["truncated"] == [False]


def test_a_long_text_is_truncated_at_the_model_maximum_and_says_so(sequence):
    handler, ctx = sequence
    outputs, statuses = run(handler, ctx, [LONG, "short"])
    assert statuses == [200, 200]
    assert outputs[0]["truncated"] is True and outputs[1]["truncated"] is False


def test_one_tokenizer_call_per_batch_and_padding_to_a_multiple_of_8(sequence, monkeypatch):
    handler, _ = sequence
    calls = []
    tokenizer = handler.hf.tokenizer
    original = type(tokenizer).__call__
    monkeypatch.setattr(type(tokenizer), "__call__", lambda self, *a, **k: calls.append(a) or original(self, *a, **k))
    batch = handler.read_batch([{"body": t.encode()} for t in TEXTS])
    assert len(calls) == 1 and len(calls[0][0]) == 3
    longest = max(len(tokenizer(t)["input_ids"]) for t in TEXTS)
    assert batch.inputs.shape == (3, -(-longest // 8) * 8)


def test_length_groups_give_the_same_answer_as_one_padded_batch(tmp_path):
    folder = hf_dir(tmp_path, "sequence")
    grouped, _ = make_handler(folder, {"group_call_tokens": 1})
    plain, _ = make_handler(folder, {"group_call_tokens": 0})
    batch = grouped.read_batch([{"body": t.encode()} for t in [LONG, "a", "b c", TEXTS[1]]])
    assert len(length_groups((batch.inputs != 0).sum(1).tolist(), 8, 64, 1)) > 1
    torch.testing.assert_close(grouped.inference(batch.inputs), plain.inference(batch.inputs), rtol=1e-4, atol=1e-5)


def test_token_classification_spans_come_from_the_tokenizer_offsets(token):
    handler, ctx = token
    text = "Where is the parcel? The laptop arrived broken."
    outputs, statuses = run(handler, ctx, [text, "Fine."])
    assert statuses == [200, 200]
    encoded = handler.hf.tokenizer(text, return_offsets_mapping=True)
    offsets = [tuple(o) for o in encoded["offset_mapping"] if o[0] != o[1]]
    starts, ends = {s for s, _ in offsets}, {e for _, e in offsets}
    assert outputs[0]["truncated"] is False
    for entity in outputs[0]["entities"]:
        assert entity["start"] in starts and entity["end"] in ends
        assert entity["text"] == text[entity["start"]:entity["end"]]
    expected = entities(alone(handler, text)[:len(encoded["input_ids"])], encoded["offset_mapping"],
                        handler.hf.labels, text)
    assert [(e["entity"], e["start"], e["end"]) for e in outputs[0]["entities"]] == \
        [(e["entity"], e["start"], e["end"]) for e in expected]


def test_an_unsupported_task_is_a_load_error_that_names_the_supported_ones():
    class Config:
        architectures = ["BertForMaskedLM"]

    with pytest.raises(TransformersLoadError, match="ForSequenceClassification.*ForTokenClassification"):
        task_of(Config())


@pytest.mark.parametrize("lengths, cost, expected", [
    ([], 64, []),
    ([10, 11, 12], 64, [(0, 1, 2)]),
    ([10, 120, 12, 9], 64, [(3, 0, 2), (1,)]),
    ([10, 120, 12, 9], 10_000, [(3, 0, 2, 1)]),
    ([5, 5], 0, [(0, 1)]),
])
def test_length_groups(lengths, cost, expected):
    assert length_groups(lengths, 8, 128, cost) == expected


@pytest.mark.parametrize("longest, multiple, cap, expected", [(1, 8, 128, 8), (9, 8, 128, 16), (127, 8, 128, 128),
                                                              (130, 8, 128, 128), (0, 8, 128, 8)])
def test_padded_length(longest, multiple, cap, expected):
    assert padded_length(longest, multiple, cap) == expected


@pytest.mark.parametrize("labels, expected", [
    (["O", "B-ITEM", "I-ITEM"], [("ITEM", 4, 13, "parcel ok")]),
    (["B-ITEM", "B-ITEM", "O"], [("ITEM", 0, 3, "the"), ("ITEM", 4, 10, "parcel")]),
    (["I-ITEM", "I-ITEM", "I-ITEM"], [("ITEM", 0, 13, "the parcel ok")]),
    (["B-ITEM", "O", "I-ITEM"], [("ITEM", 0, 3, "the"), ("ITEM", 11, 13, "ok")]),
    (["O", "O", "O"], []),
])
def test_entities_from_bio_labels(labels, expected):
    names = {0: "O", 1: "B-ITEM", 2: "I-ITEM"}
    ids = {v: k for k, v in names.items()}
    # [CLS] the parcel ok [SEP]: special tokens (offsets (0, 0)) belong to no entity, whatever their label
    offsets = [(0, 0), (0, 3), (4, 10), (11, 13), (0, 0)]
    logits = torch.full((5, 3), -10.0)
    logits[0, 1] = logits[4, 1] = 10.0
    for i, label in enumerate(labels):
        logits[i + 1, ids[label]] = 10.0
    found = entities(logits, offsets, names, "the parcel ok")
    assert [(e["entity"], e["start"], e["end"], e["text"]) for e in found] == expected
    assert all(e["score"] == pytest.approx(1.0) for e in found)


@pytest.mark.parametrize("label, kind", [("B-PER", "PER"), ("I-LOC", "LOC"), ("MISC", "MISC")])
def test_entity_type(label, kind):
    assert entity_type(label) == kind


def test_a_batch_the_model_fails_on_is_served_one_by_one_with_the_same_answers(sequence, monkeypatch):
    handler, ctx = sequence
    expected, _ = run(handler, ctx, [TEXTS[0], TEXTS[1]])
    runner = handler.runner

    def fails_on_batches(ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[0] > 1:
            raise RuntimeError("a whole-batch failure")
        return runner(ids)

    monkeypatch.setattr(handler, "runner", fails_on_batches)
    outputs, statuses = run(handler, ctx, [TEXTS[0], TEXTS[1]])
    assert statuses == [200, 200]
    for got, want in zip(outputs, expected):
        assert got["labels"] == pytest.approx(want["labels"], abs=1e-5) and got["truncated"] == want["truncated"]
