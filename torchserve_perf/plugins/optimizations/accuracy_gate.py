"""The accuracy gate of lossy paths (int8, bf16): do they still give the answers fp32 gives?

Parity (parity.py) bounds how far outputs may move; a quantized model moves them on purpose, so
what matters is whether the *labels* stay the same. The gate compares, on held-out samples, the
ranked labels of the reference (fp32) with those of the candidate:

- top-1 agreement: the share of samples whose best label is the same;
- top-k overlap: the mean share of the reference's k best labels that are among the candidate's k best.

A candidate passes when top-1 agreement reaches ``threshold`` and the top-k overlap reaches
``min_topk_overlap``. The functions work on any ranked labels (class indices from logits, label
strings from a text model): :func:`ranked` makes them from a batch of scores.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import torch

from torchserve_perf.plugins.config import ConfigValueError, at_least_one
from torchserve_perf.plugins.optimizations.interface import Unavailable

log = logging.getLogger("torchserve_perf.plugins.optimizations")


@dataclass(frozen=True)
class GateConfig:
    threshold: float = 0.99  # least top-1 agreement with fp32 on the held-out samples
    topk: int = 5  # how many best labels the overlap compares (fewer when there are fewer classes)
    min_topk_overlap: float = 0.8  # least mean share of fp32's top-k found in the candidate's top-k
    min_samples: int = 8  # fewer held-out samples than this cannot judge a model

    def __post_init__(self) -> None:
        for name in ("threshold", "min_topk_overlap"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigValueError(name, f"{value} is not a share between 0 and 1", "give e.g. 0.99")
        at_least_one(self, "topk", "min_samples")


@dataclass(frozen=True)
class Agreement:
    """How a candidate's labels compare with the reference's on ``samples`` held-out samples."""

    samples: int
    top1: float  # share of samples with the same best label
    topk_overlap: float  # mean share of the reference's top-k among the candidate's top-k
    k: int

    def describe(self) -> str:
        return (f"top-1 agreement {self.top1:.4f}, top-{self.k} overlap {self.topk_overlap:.4f} "
                f"on {self.samples} held-out samples")

    def as_metrics(self) -> dict[str, float]:
        return {"top1_agreement": self.top1, "topk_overlap": self.topk_overlap, "samples": float(self.samples)}


@dataclass(frozen=True)
class Verdict:
    agreement: Agreement
    passed: bool
    reason: str  # what was measured, against which thresholds


def agreement(reference: Sequence[Sequence[Hashable]], candidate: Sequence[Sequence[Hashable]],
              k: int) -> Agreement:
    """Compare ranked labels (best first), sample by sample. Pure: see its table test."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference samples but {len(candidate)} candidate samples")
    if not reference:
        return Agreement(samples=0, top1=0.0, topk_overlap=0.0, k=k)
    same, overlap = 0, 0.0
    width = k
    for ref, got in zip(reference, candidate):
        width = min(k, len(ref)) or 1
        same += bool(ref) and bool(got) and ref[0] == got[0]
        overlap += len(set(ref[:width]) & set(got[:width])) / width
    n = len(reference)
    return Agreement(samples=n, top1=same / n, topk_overlap=overlap / n, k=width)


def judge(measured: Agreement, config: GateConfig) -> Verdict:
    """Pass or fail, with the reason in words. Pure: see its table test."""
    limits = (f"needs top-1 >= {config.threshold:g} and top-{measured.k} overlap >= {config.min_topk_overlap:g}")
    if measured.samples < config.min_samples:
        return Verdict(measured, False, f"{measured.samples} held-out samples, fewer than the "
                                        f"{config.min_samples} the gate needs; give more calibration samples")
    passed = measured.top1 >= config.threshold and measured.topk_overlap >= config.min_topk_overlap
    word = "passed" if passed else "failed"
    return Verdict(measured, passed, f"accuracy gate {word}: {measured.describe()} ({limits})")


def ranked(scores: torch.Tensor, k: int) -> list[list[int]]:
    """The ``k`` best class indices of each row of a [N, classes] (or [N, ...]) batch of scores."""
    flat = scores.detach().float().reshape(scores.shape[0], -1)
    return flat.topk(min(k, flat.shape[1]), dim=1).indices.tolist()


def first_output(value: Any) -> torch.Tensor:
    """The scores of a model's output: the tensor itself, or the first tensor of a tuple/list/dict."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise TypeError(f"cannot rank labels from a {type(value).__name__} output")


def scores(model: Callable[..., Any], samples: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """``model``'s scores (its first output, as float32) on ``samples``, ``batch`` rows per call."""
    chunks = []
    with torch.inference_mode():
        for start in range(0, samples.shape[0], batch):
            chunks.append(first_output(model(samples[start:start + batch])).detach().float().cpu())
    return torch.cat(chunks, dim=0)


def compare_scores(reference: torch.Tensor, candidate: Callable[..., Any], samples: torch.Tensor,
                   config: GateConfig, batch: int = 16) -> Verdict:
    """Judge ``candidate`` on ``samples`` against the reference's scores on the same samples."""
    got = scores(candidate, samples, batch)
    return judge(agreement(ranked(reference, config.topk), ranked(got, config.topk), config.topk), config)


def compare_models(reference: Callable[..., Any], candidate: Callable[..., Any], samples: torch.Tensor,
                   config: GateConfig, batch: int = 16) -> Verdict:
    """Run the held-out ``samples`` through both models, ``batch`` rows at a time, and judge."""
    return compare_scores(scores(reference, samples, batch), candidate, samples, config, batch)


def gate_batch(step: Any) -> int:
    """The rows per call a gate runs: the largest warm-up input's (the serving batch size), so the
    runtimes size their buffers for what they will serve, not for the gate."""
    return max(1, int(step.example.shape[0]))


def accepted(verdict: Verdict, name: str) -> dict[str, float]:
    """What a gated plugin keeps of a verdict that passed: what it measured (and a log line saying
    so). Raises GateRejected, with the measurements, when it failed."""
    if not verdict.passed:
        raise GateRejected(verdict)
    log.info("%s: %s", name, verdict.reason)
    return verdict.agreement.as_metrics()


def gate_held_out(name: str, reference: torch.Tensor, candidate: Callable[..., Any], holdout: torch.Tensor,
                  config: GateConfig, step: Any) -> dict[str, float]:
    """The gate on the held-out calibration samples against fp32's scores on them (``reference``;
    calibration.reference_scores), at the serving batch size: at 16 rows a runtime would keep
    buffers sized for 16 (tens of MiB). :func:`accepted` of the verdict."""
    return accepted(compare_scores(reference, candidate, holdout, config, batch=gate_batch(step)), name)


class GateRejected(Unavailable):
    """A lossy path measured and refused; ``measured`` carries what the gate saw (for the load report)."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reason)
        self.measured = verdict.agreement.as_metrics()
