"""The tuner's space fitted to the host, and elastic threads (0) as a tuned value."""

import pytest

from torchserve_perf.tools.tuning.evaluate import model_config
from torchserve_perf.tools.tuning.space import Candidate, heuristic_start, host_space


@pytest.mark.parametrize("cores, gpus, workers, threads, batches, gpu_axis", [
    (1, 0, (1,), (0, 1), (1, 2, 4, 8), (0,)),
    (2, 0, (1, 2), (0, 1, 2), (1, 2, 4, 8), (0,)),
    (6, 0, (1, 2, 4, 6), (0, 1, 2, 4, 6), (1, 2, 4, 8), (0,)),
    (16, 0, (1, 2, 4, 8, 16), (0, 1, 2, 4, 8, 16), (1, 2, 4, 8), (0,)),   # reaches the 16-worker region
    (16, 1, (1, 2, 4, 8, 16), (0, 1, 2, 4, 8, 16), (1, 2, 4, 8, 16, 32, 64, 128), (1,)),  # and batch 16 on the H100 host
    (8, 2, (1, 2, 4, 8), (0, 1, 2, 4, 8), (1, 2, 4, 8, 16, 32, 64, 128), (1, 2)),
])
def test_host_space_table(cores, gpus, workers, threads, batches, gpu_axis):
    space = host_space(cores, gpus)
    assert (space.workers, space.threads, space.batch_sizes, space.gpus) == (workers, threads, batches, gpu_axis)
    assert space.delays_ms[0] == 1  # TorchServe reads 0 as its 100 ms default


def test_the_search_starts_from_the_shipped_defaults():
    start = heuristic_start(host_space(2), physical_cores=2, concurrency=4)
    assert (start.workers, start.threads, start.batch_size, start.max_batch_delay_ms) == (2, 0, 2, 1)
    assert "threads=elastic" in start.label()


def test_elastic_and_fixed_threads_in_the_model_config():
    base = {"handler": {"threads": {"pin_cores": False}}}
    elastic = model_config(base, Candidate(2, 0, 2, 1))
    assert elastic["handler"]["threads"] == {"pin_cores": False, "intra_op": "auto", "elastic": True}
    fixed = model_config(base, Candidate(2, 1, 2, 1))
    assert fixed["handler"]["threads"] == {"pin_cores": False, "intra_op": 1, "elastic": False}
    assert base["handler"]["threads"] == {"pin_cores": False}
    from torchserve_perf.handlers.settings import load_settings

    assert load_settings(elastic, {}).threads.elastic is True  # the handler accepts what the tuner writes


def test_decode_choices_set_handler_decode_not_the_chain():
    from torchserve_perf.handlers.settings import load_settings
    from torchserve_perf.tools.tuning.evaluate import split_decode

    c = Candidate(2, 1, 64, 1, ("fp16", "cuda_graphs", "decode_cpu"), 1)
    config = model_config({"handler": {"image": {"topk": 5}}}, c)
    assert config["handler"]["optimizations"] == ["fp16", "cuda_graphs"]
    assert config["handler"]["decode"] == {"on_device": "never"}
    settings = load_settings(config, {}, "image", __import__("torchserve_perf.handlers.options",
                                                             fromlist=["ImageOptions"]).ImageOptions)
    assert settings.decode.on_device == "never" and settings.optimizations.chain == ("fp16", "cuda_graphs")
    assert split_decode(("decode_nvjpeg",)) == ([], {"on_device": "always", "nvjpeg": "auto"})
    assert "decode" not in model_config({}, Candidate(1, 1, 1, 1, ("channels_last",)))["handler"]


@pytest.mark.parametrize("throughputs, reference, ratio, at", [
    ({1: 20.0, 4: 40.0, 8: 44.0}, {1: 20.0, 4: 40.0, 8: 44.0}, 1.0, 1),   # the start itself: 1.0 (ties: fewest clients)
    ({1: 30.0, 4: 36.0, 8: 50.0}, {1: 20.0, 4: 40.0, 8: 44.0}, 0.9, 4),   # great at 1 and 8, weakest at 4
    ({1: 10.0, 4: 80.0, 8: 88.0}, {1: 20.0, 4: 40.0, 8: 44.0}, 0.5, 1),   # a batch-heavy point that starves 1 client
    ({1: 10.0}, {4: 40.0}, 0.0, 0),                                       # nothing in common
])
def test_weakest_concurrency_table(throughputs, reference, ratio, at):
    from torchserve_perf.tools.tuning.objective import weakest

    assert weakest(throughputs, reference) == (pytest.approx(ratio), at)


def test_several_concurrencies_score_the_weakest_against_the_start(tmp_path):
    from torchserve_perf.tools.loadgen import LoadResult
    from torchserve_perf.tools.tuning.evaluate import LoadSettings, TorchServeEvaluator

    def results(rates, p99=0.1):
        return {c: LoadResult(concurrency=c, seconds=10, latencies=[p99] * int(rate * 10)) for c, rate in rates.items()}

    evaluator = TorchServeEvaluator(None, tmp_path, b"", LoadSettings(concurrencies=(1, 4, 8)))
    assert evaluator.load.levels == (1, 4, 8)
    start = evaluator.combine(results({1: 20.0, 4: 40.0, 8: 45.0}), (), 1.0)
    assert evaluator.reference == {1: 20.0, 4: 40.0, 8: 45.0}
    assert start.throughput_rps == pytest.approx(35.0) and "weakest c1 at 1.00x" in start.notes[-1]
    other = evaluator.combine(results({1: 30.0, 4: 36.0, 8: 60.0}, p99=0.3), (), 1.0)
    assert other.throughput_rps == pytest.approx(0.9 * 35.0) and other.p99_ms == pytest.approx(300.0)
    assert "c4 36.0 req/s p99 300 ms" in other.notes[-1]
    assert LoadSettings(concurrency=4).levels == (4,)
