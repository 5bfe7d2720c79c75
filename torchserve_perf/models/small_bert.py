"""A small BERT in Hugging Face's ``save_pretrained`` format, made offline: a WordPiece tokenizer
trained with ``tokenizers`` on the shipped corpus (once: the trained file is shipped beside it), and
seeded weights (or a short training on it).

Nothing is downloaded: the folder this writes is what ``torchserve-perf archive --hf-model`` takes.
Needs the ``hf`` extra (transformers, tokenizers, safetensors).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

CORPUS = Path(__file__).with_name("corpus") / "reviews.tsv"
CORPUS_TOKENIZER = CORPUS.with_name("wordpiece.json")  # trained on CORPUS once, shipped (corpus_tokenizer)
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # ids 0..4, BERT's usual order
SPECIAL = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
TOKEN_LABELS = ("O", "B-ITEM", "I-ITEM")


@dataclass(frozen=True)
class SmallBertConfig:
    """A BERT small enough to train in seconds on two cores; the shape of BERT-base otherwise."""

    task: str = "sequence"  # "sequence" or "token" classification
    vocab_size: int = 2000
    hidden: int = 64
    layers: int = 2
    heads: int = 2
    intermediate: int = 128
    max_length: int = 128
    seed: int = 0


def read_corpus(path: Path = CORPUS) -> list[tuple[str, str]]:
    """(label, sentence) pairs, in file order; ``#`` lines are comments."""
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            label, sentence = line.split("\t", 1)
            pairs.append((label, sentence))
    return pairs


def corpus_labels(pairs: Sequence[tuple[str, str]]) -> list[str]:
    return sorted({label for label, _ in pairs})


def split_corpus(pairs: Sequence[tuple[str, str]], held_out: float = 0.25,
                 seed: int = 0) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """A seeded train / held-out split."""
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)  # noqa: S311 -- a reproducible split, not a secret
    cut = int(len(shuffled) * (1 - held_out))
    return shuffled[:cut], shuffled[cut:]


def train_tokenizer(sentences: Sequence[str], vocab_size: int, max_length: int) -> Any:
    """A lower-casing WordPiece tokenizer (BERT's pre-tokenization and [CLS] ... [SEP] template)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordPiece(unk_token=SPECIAL["unk_token"]))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS))
    tokenizer.train_from_iterator(sentences, trainer)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=max_length, **SPECIAL)


def write_corpus_tokenizer(path: Path = CORPUS_TOKENIZER) -> Path:
    """Train the WordPiece tokenizer on the shipped corpus and write it to ``path``, the file the
    repository ships. Run again only when the corpus changes (see :func:`corpus_tokenizer`)."""
    tokenizer = train_tokenizer([s for _, s in read_corpus()], 2000, 128)
    tokenizer.backend_tokenizer.save(str(path))
    return path


def corpus_tokenizer(vocab_size: int, max_length: int) -> Any:
    """The corpus's WordPiece tokenizer: the shipped one (trained once by :func:`write_corpus_tokenizer`),
    or a new training when ``vocab_size`` is below its vocabulary. ``tokenizers``' trainer breaks ties
    between equally frequent pairs differently from run to run (a few tokens of about 400 differ), so
    a tokenizer trained at every call would give every "seeded" model other ids; the shipped file
    gives every run the same ones."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    shipped = Tokenizer.from_file(str(CORPUS_TOKENIZER))
    if shipped.get_vocab_size() > vocab_size:
        return train_tokenizer([s for _, s in read_corpus()], vocab_size, max_length)
    return PreTrainedTokenizerFast(tokenizer_object=shipped, model_max_length=max_length, **SPECIAL)


def make_model(config: SmallBertConfig, labels: Sequence[str], vocab_size: int) -> Any:
    """The seeded model for ``config.task``, SDPA attention, labels in ``config.id2label``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

    torch.manual_seed(config.seed)
    bert = BertConfig(vocab_size=vocab_size, hidden_size=config.hidden, num_hidden_layers=config.layers,
                      num_attention_heads=config.heads, intermediate_size=config.intermediate,
                      max_position_embeddings=config.max_length, pad_token_id=0,
                      id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})
    cls = BertForSequenceClassification if config.task == "sequence" else BertForTokenClassification
    return cls(bert).eval()


def train(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], epochs: int = 8, seed: int = 0) -> Any:
    """A short fine-tuning of a sequence classifier on (label, sentence) pairs; returns it in eval mode."""
    import torch

    label2id = model.config.label2id
    generator = random.Random(seed)  # noqa: S311 -- a reproducible order, not a secret
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(epochs):
        order = list(pairs)
        generator.shuffle(order)
        for start in range(0, len(order), 16):
            chunk = order[start:start + 16]
            encoded = tokenizer([s for _, s in chunk], padding=True, return_tensors="pt")
            target = torch.tensor([label2id[label] for label, _ in chunk])
            loss = model(**encoded, labels=target).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def write_small_bert(folder: Path, config: Optional[SmallBertConfig] = None, trained: bool = False) -> Path:
    """Write a ``save_pretrained`` folder (config.json, model.safetensors, tokenizer files) to ``folder``.

    ``trained``: fine-tune a sequence classifier on the corpus's training split (seconds on CPU)."""
    config = config or SmallBertConfig()
    pairs = read_corpus()
    tokenizer = corpus_tokenizer(config.vocab_size, config.max_length)
    labels = corpus_labels(pairs) if config.task == "sequence" else list(TOKEN_LABELS)
    model = make_model(config, labels, len(tokenizer))
    if trained and config.task == "sequence":
        model = train(model, tokenizer, split_corpus(pairs)[0], seed=config.seed)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
