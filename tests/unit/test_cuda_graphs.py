"""Batch-size buckets, padding and slicing (pure, on CPU), the cuda_graphs plugin (captured only on
CUDA), and the default GPU chain (channels_last + fp16 + cuda_graphs when the device is CUDA)."""

from __future__ import annotations

import pytest
import torch

from torchserve_perf.handlers.settings import load_settings
from torchserve_perf.plugins.config import HandlerConfigError
from torchserve_perf.plugins.optimizations import OptimizationConfig, Runtime, optimize, standard_registry
from torchserve_perf.plugins.optimizations.buckets import (
    BucketedRunner,
    bucket_for,
    checked_buckets,
    chunks,
    default_buckets,
    join_rows,
    pad_rows,
    slice_rows,
)
from torchserve_perf.plugins.optimizations.cuda_graphs import CudaGraphOptions, build_runner, replay_mismatch
from torchserve_perf.plugins.optimizations.gpu_defaults import (
    IMAGE_CHAIN,
    OTHER_CHAIN,
    default_chain,
    with_gpu_defaults,
)

CUDA = torch.cuda.is_available()


@pytest.mark.parametrize("batch_size, expected", [
    (1, (1,)), (2, (1, 2)), (8, (1, 2, 4, 8)), (12, (1, 2, 4, 8, 12)),
    (128, (1, 2, 4, 8, 16, 32, 64, 128)), (0, (1,))])
def test_default_buckets(batch_size, expected):
    assert default_buckets(batch_size) == expected


def test_configured_buckets_are_sorted_and_cover_the_batch_size():
    assert checked_buckets((8, 1, 4, 4), 8) == (1, 4, 8)
    assert checked_buckets((1, 2), 16) == (1, 2, 16)  # a full batch must not always run in chunks
    assert checked_buckets((), 4) == (1, 2, 4)
    with pytest.raises(ValueError):
        checked_buckets((0, 2), 2)


@pytest.mark.parametrize("rows, expected", [(1, 1), (2, 2), (3, 4), (5, 8), (8, 8), (9, 16), (16, 16), (40, 16)])
def test_bucket_for(rows, expected):
    assert bucket_for(rows, (1, 2, 4, 8, 16)) == expected


def test_chunks_cover_every_row_once():
    assert chunks(5, 8) == [(0, 5)]
    assert chunks(20, 8) == [(0, 8), (8, 16), (16, 20)]
    assert chunks(16, 8) == [(0, 8), (8, 16)]


def test_pad_repeats_the_last_row_and_slice_takes_the_rows_back():
    x = torch.arange(12.0).view(3, 4)
    padded = pad_rows(x, 8)
    assert padded.shape == (8, 4) and torch.equal(padded[:3], x)
    assert all(torch.equal(row, x[-1]) for row in padded[3:])
    assert pad_rows(x, 3) is x
    out = {"logits": padded * 2, "extra": (padded, padded.sum(1)), "scalar": torch.tensor(1.0), "name": "k"}
    sliced = slice_rows(out, 3)
    assert torch.equal(sliced["logits"], x * 2) and torch.equal(sliced["extra"][0], x)
    assert sliced["extra"][1].shape == (3,) and sliced["scalar"].dim() == 0 and sliced["name"] == "k"
    assert torch.equal(join_rows([x[:1], x[1:]]), x)
    assert torch.equal(join_rows([(x[:2], x[:2]), (x[2:], x[2:])])[1], x)


class Recording:
    """A bucket runner that insists on its own batch size and records what it ran."""

    def __init__(self, model: torch.nn.Module, size: int, calls: list) -> None:
        self.model, self.size, self.calls = model, size, calls

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[0] == self.size, f"bucket {self.size} got {x.shape[0]} rows"
        self.calls.append(self.size)
        return self.model(x)


def seeded_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).eval()


def test_bucketed_runner_pads_slices_and_chunks_to_the_eager_answer():
    model = seeded_model()
    calls: list[int] = []
    runner = BucketedRunner({b: Recording(model, b, calls) for b in (1, 2, 4, 8)}, (6,), torch.float32,
                            torch.device("cpu"), fallback=model)
    torch.manual_seed(1)
    with torch.inference_mode():
        for rows, used in [(1, [1]), (3, [4]), (8, [8]), (19, [8, 8, 4])]:
            calls.clear()
            x = torch.randn(rows, 6)
            out = runner(x)
            assert out.shape == (rows, 3) and calls == used
            assert torch.allclose(out, model(x), atol=1e-6)  # a row's answer does not depend on its batch-mates


def test_bucketed_runner_sends_other_shapes_and_dtypes_to_the_model():
    model = seeded_model()
    calls: list[int] = []
    runner = BucketedRunner({1: Recording(model, 1, calls)}, (6,), torch.float32, torch.device("cpu"),
                            fallback=lambda x: ("fallback", x.shape))
    assert runner(torch.zeros(2, 7)) == ("fallback", (2, 7))
    assert runner(torch.zeros(2, 6, dtype=torch.float64)) == ("fallback", (2, 6))
    assert runner(torch.zeros(0, 6)) == ("fallback", (0, 6))
    assert calls == []


def test_build_runner_makes_every_bucket_at_load_largest_first_and_checks_replays():
    model = seeded_model()
    made: list[int] = []

    def make(x: torch.Tensor):
        made.append(x.shape[0])
        return lambda y: model(y)

    example = torch.randn(8, 6)
    runner = build_runner(model, example, (1, 2, 4, 8), make)
    assert made == [8, 4, 2, 1] and runner.buckets == (1, 2, 4, 8)
    assert replay_mismatch(runner, model, example) is None
    broken = build_runner(model, example, (1, 2), lambda x: (lambda y: model(y) + (y.shape[0] == 2)))
    assert "bucket 2" in replay_mismatch(broken, model, example)


def test_cuda_graphs_is_dropped_on_cpu_with_the_reason():
    model = seeded_model()
    config = OptimizationConfig(chain=("cuda_graphs",))
    result = optimize(model, config, torch.randn(1, 6), Runtime(torch.device("cpu"), 1, 1, batch_size=4),
                      standard_registry())
    assert result.applied == [] and "need a CUDA device" in result.skipped["cuda_graphs"]


def test_cuda_graphs_options_are_validated():
    built = load_settings({"handler": {"optimizations": {"cuda_graphs": {"buckets": [1, 8, 64],
                                                                          "capture": "compile"}}}}, {})
    assert built.optimizations.builtin_options["cuda_graphs"] == CudaGraphOptions(buckets=(1, 8, 64), capture="compile")
    with pytest.raises(HandlerConfigError, match="cuda_graphs.buckets"):
        load_settings({"handler": {"optimizations": {"cuda_graphs": {"buckets": [0, 2]}}}}, {})
    with pytest.raises(HandlerConfigError, match="cuda_graphs.capture"):
        load_settings({"handler": {"optimizations": {"cuda_graphs": {"capture": "always"}}}}, {})


# ---- the default GPU chain ----------------------------------------------------------------------------
@pytest.mark.parametrize("device, example, expected", [
    ("cuda", torch.zeros(1, 3, 8, 8), IMAGE_CHAIN), ("cuda:1", torch.zeros(1, 16), OTHER_CHAIN),
    ("cpu", torch.zeros(1, 3, 8, 8), ()), ("cuda", None, ())])
def test_default_chain(device, example, expected):
    assert default_chain(torch.device(device), example) == expected


def test_gpu_defaults_only_fill_an_empty_chain_and_can_be_turned_off():
    image = torch.zeros(1, 3, 8, 8)
    cuda = torch.device("cuda")
    assert with_gpu_defaults(OptimizationConfig(), cuda, image).chain == IMAGE_CHAIN
    assert with_gpu_defaults(OptimizationConfig(chain=("compile",)), cuda, image).chain == ("compile",)
    assert with_gpu_defaults(OptimizationConfig(gpu_defaults=False), cuda, image).chain == ()
    assert with_gpu_defaults(OptimizationConfig(chain=("none",)), cuda, image).chain == ()  # TS_PERF_OPTIMIZATIONS=none
    assert with_gpu_defaults(OptimizationConfig(), torch.device("cpu"), image).chain == ()
    # auto's candidates are for CPU workers: on CUDA an archive's [auto] gets the GPU chain, unless turned off
    assert with_gpu_defaults(OptimizationConfig(chain=("auto",)), cuda, image).chain == IMAGE_CHAIN
    assert with_gpu_defaults(OptimizationConfig(chain=("auto",)), torch.device("cpu"), image).chain == ("auto",)
    assert with_gpu_defaults(OptimizationConfig(chain=("auto",), gpu_defaults=False), cuda, image).chain == ("auto",)
    off = load_settings({"handler": {"optimizations": {"gpu_defaults": False}}}, {}).optimizations
    assert off.gpu_defaults is False


def test_cpu_workers_keep_eager_by_default():
    model = seeded_model()
    result = optimize(model, OptimizationConfig(), torch.randn(1, 6),
                      Runtime(torch.device("cpu"), 1, 1, batch_size=4), standard_registry())
    assert result.model is model and result.applied == []


# ---- on a GPU -------------------------------------------------------------------------------------------
def tiny_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_default_gpu_chain_applies_and_matches_eager():
    model = tiny_cnn().cuda()
    example = torch.randn(1, 3, 32, 32, device="cuda")
    result = optimize(model, OptimizationConfig(), example, Runtime(torch.device("cuda"), 1, 1, batch_size=16),
                      standard_registry())
    assert result.applied == list(IMAGE_CHAIN), result.skipped
    with torch.inference_mode():
        for rows in (1, 3, 16, 21):
            x = torch.randn(rows, 3, 32, 32, device="cuda")
            assert torch.allclose(result.model(x).float(), model(x), rtol=5e-2, atol=1e-2)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("capture", ["graphs", "compile"])
def test_cuda_graphs_capture_every_bucket(capture):
    model = tiny_cnn().cuda()
    config = OptimizationConfig(chain=("cuda_graphs",), builtin_options={"cuda_graphs": CudaGraphOptions(capture=capture)})
    result = optimize(model, config, torch.randn(1, 3, 32, 32, device="cuda"),
                      Runtime(torch.device("cuda"), 1, 1, batch_size=8), standard_registry())
    assert result.applied == ["cuda_graphs"], result.skipped
    with torch.inference_mode():
        x = torch.randn(5, 3, 32, 32, device="cuda")
        assert torch.allclose(result.model(x), model(x), rtol=1e-3, atol=1e-4)
