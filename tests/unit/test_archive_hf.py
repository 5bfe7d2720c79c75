"""archive --hf-model's pure parts: the TorchServe example's settings turned into ours, samples read,
auto's section with gated int8; and the dynamic int8 gate's per-token samples."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from torchserve_perf.plugins.optimizations.dynamic_int8 import per_sample_labels
from torchserve_perf.tools.archive.hf import (
    example_settings,
    gated_optimizations,
    read_samples,
    without_example_keys,
)
from torchserve_perf.tools.archive.plan import ArchiveError

SEQ = {"architectures": ["BertForSequenceClassification"], "id2label": {"0": "a", "1": "b"}}
TOK = {"architectures": ["BertForTokenClassification"], "id2label": {"0": "O", "1": "B-X", "2": "I-X"}}


@pytest.mark.parametrize("example, config, expected", [
    ({}, SEQ, {}),
    ({"mode": "sequence_classification", "max_length": "150", "num_labels": "2", "do_lower_case": True,
      "model_name": "bert-base-uncased", "save_mode": "pretrained"}, SEQ, {"max_length": 150}),
    ({"mode": "token_classification", "num_labels": 3}, TOK, {}),
])
def test_example_settings_become_ours(example, config, expected):
    assert example_settings(example, config) == expected


@pytest.mark.parametrize("example, config, words", [
    ({"mode": "question_answering"}, SEQ, "serves ['sequence_classification', 'token_classification']"),
    ({"mode": "token_classification"}, SEQ, "architectures are ['BertForSequenceClassification']"),
    ({"save_mode": "torchscript"}, SEQ, "archive the save_pretrained folder"),
    ({"num_labels": "3"}, SEQ, "config.json has 2 labels"),
])
def test_example_settings_that_do_not_fit_are_refused_with_the_fix(example, config, words):
    with pytest.raises(ArchiveError, match=words.replace("[", r"\[").replace("]", r"\]")):
        example_settings(example, config)


def test_the_example_keys_leave_a_model_config():
    config = {"batchSize": 4, "pt2": {"compile": {"enable": True}},
              "handler": {"model_name": "x", "mode": "sequence_classification", "transformers": {"topk": 2}}}
    assert without_example_keys(config) == {"batchSize": 4, "pt2": {"compile": {"enable": True}},
                                            "handler": {"transformers": {"topk": 2}}}
    assert without_example_keys({"handler": {"max_length": 64}}) == {}


@pytest.mark.parametrize("name, content, expected", [
    ("s.txt", "one\n\n two \n", ["one", " two "]),
    ("s.jsonl", '{"text": "a"}\n{"text": "b"}\n', ["a", "b"]),
    ("s.json", '["a", {"text": "b"}]', ["a", "b"]),
])
def test_samples_are_read_from_text_json_lines_or_a_json_list(tmp_path: Path, name, content, expected):
    path = tmp_path / name
    path.write_text(content)
    assert read_samples(path) == expected


def test_empty_samples_are_refused(tmp_path: Path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ArchiveError, match="holds no texts"):
        read_samples(tmp_path / "empty.txt")


def test_gated_int8_joins_auto_first_and_is_allowed():
    section = {"chain": ["auto"], "auto": {"budget_s": 30, "candidates": ["torchscript", "onnxruntime"]}}
    gated = gated_optimizations(section)
    assert gated["auto"]["candidates"] == ["int8_dynamic", "torchscript", "onnxruntime"]
    assert gated["auto"]["allow"] == ["int8_dynamic"] and gated["auto"]["budget_s"] == 30
    assert section["auto"]["candidates"] == ["torchscript", "onnxruntime"]  # the given section is left alone


def test_the_int8_gate_judges_each_token_of_a_token_output_and_each_row_otherwise():
    ids = torch.tensor([[2, 7, 3, 0], [2, 3, 0, 0]])
    per_token = torch.zeros(2, 4, 3)
    per_token[..., 1] = 1.0
    assert len(per_sample_labels(per_token, ids, pad_id=0, k=2)) == 5  # the non-padding tokens
    assert per_sample_labels(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), ids, pad_id=0, k=1) == [[1], [0]]


@pytest.mark.parametrize("options, field", [
    ({"max_length": 1}, "max_length"),
    ({"max_length": -2}, "max_length"),
    ({"topk": 0}, "topk"),
    ({"pad_to_multiple": 0}, "topk"),
    ({"group_call_tokens": -1}, "group_call_tokens"),
    ({"max_request_mb": 0}, "max_request_mb"),
])
def test_transformers_options_refuse_bad_values_naming_the_key(options, field):
    from torchserve_perf.handlers.options import TransformersOptions
    from torchserve_perf.plugins.config import ConfigValueError

    with pytest.raises(ConfigValueError, match=field):
        TransformersOptions(**options)


def test_without_transformers_the_load_error_names_the_extra(monkeypatch, tmp_path: Path):
    import sys

    from torchserve_perf.handlers.hf_model import TransformersLoadError, load_transformers

    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails as if not installed
    with pytest.raises(TransformersLoadError, match=r"pip install 'torchserve-perf\[hf\]'"):
        load_transformers(str(tmp_path), torch.device("cpu"))
