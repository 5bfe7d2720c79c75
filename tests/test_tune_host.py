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
