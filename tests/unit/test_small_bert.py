"""The demo's small BERT is made offline and the same at every run: the shipped corpus tokenizer
(trained once with ``tokenizers``) and seeded weights."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from torchserve_perf.models.small_bert import SmallBertConfig, corpus_tokenizer, read_corpus, write_small_bert


def test_two_folders_written_apart_are_byte_for_byte_the_same(tmp_path):
    config = SmallBertConfig(max_length=64)
    first, second = write_small_bert(tmp_path / "a", config), write_small_bert(tmp_path / "b", config)
    for name in ("tokenizer.json", "model.safetensors", "config.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_the_shipped_tokenizer_covers_the_corpus_without_unknown_tokens():
    tokenizer = corpus_tokenizer(2000, 128)
    unknown = tokenizer.convert_tokens_to_ids("[UNK]")
    ids = tokenizer([sentence for _, sentence in read_corpus()])["input_ids"]
    assert all(unknown not in row for row in ids)
    assert tokenizer.convert_ids_to_tokens(tokenizer("Where IS my Order?")["input_ids"]) == \
        ["[CLS]", "where", "is", "my", "order", "?", "[SEP]"]


def test_a_vocabulary_smaller_than_the_shipped_one_is_trained_to_that_size():
    assert len(corpus_tokenizer(200, 64)) <= 200
