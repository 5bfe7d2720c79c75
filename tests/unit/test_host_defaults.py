"""Host-derived defaults: a pure function tested as a table."""

import pytest

from torchserve_perf.plugins.host_defaults import detect, fill_model_config, host_defaults


@pytest.mark.parametrize("cores, gpus, models, latency, workers, batch, delay, intra, ngpu", [
    (2, 0, 1, None, 2, 2, 1, 1, 0),       # this machine, latency unknown: (almost) no wait for batch-mates
    (2, 0, 1, 40.0, 2, 2, 2, 1, 0),       # ResNet-18 at ~40 ms per image: 2 per batch, 2 ms delay
    (2, 0, 1, 2.0, 2, 8, 1, 1, 0),        # a tiny model: batches up to the cap, 1 ms (0 means 100 ms to TorchServe)
    (2, 0, 1, 500.0, 2, 1, 5, 1, 0),      # a slow model: no batching, the delay is capped
    (2, 0, 2, None, 1, 2, 1, 1, 0),       # two models share two cores
    (2, 0, 4, None, 1, 2, 1, 1, 0),       # never below one worker
    (16, 0, 1, None, 16, 2, 1, 1, 0),
    (16, 1, 1, None, 16, 16, 1, 1, 1),    # an H100 host: a worker per core feeding one GPU
    (16, 8, 2, 10.0, 8, 16, 1, 1, 4),     # number_of_gpu = GPUs / models
    (16, 1, 4, None, 4, 16, 1, 1, 1),     # more models than GPUs: they share it
    (0, 0, 0, None, 1, 2, 1, 1, 0),       # nonsense in, still a valid setting
])
def test_host_defaults_table(cores, gpus, models, latency, workers, batch, delay, intra, ngpu):
    s = host_defaults(cores, gpus, models, latency)
    assert (s.workers, s.batch_size, s.max_batch_delay_ms, s.intra_op, s.number_of_gpu) == \
        (workers, batch, delay, intra, ngpu)
    assert f"{max(1, cores)} physical cores" in s.reason


def test_user_settings_win_and_the_rest_come_from_the_host():
    s = host_defaults(4, 0, 1, None)
    filled = fill_model_config({"batchSize": 8, "handler": {"image": {"topk": 5}}}, s)
    assert filled == {"batchSize": 8, "handler": {"image": {"topk": 5}}, "minWorkers": 4, "maxWorkers": 4,
                      "maxBatchDelay": 1}


def test_detect_reads_this_machine():
    import os

    s = detect()
    assert 1 <= s.workers <= (os.cpu_count() or 1)
