import pytest

from plugins.threads import ThreadConfig, decide


@pytest.mark.parametrize("config, physical, workers, index, intra, cores", [
    (ThreadConfig(), 2, 2, 0, 1, ()),
    (ThreadConfig(), 2, 1, 0, 2, ()),
    (ThreadConfig(), 8, 3, 0, 2, ()),
    (ThreadConfig(), 2, 4, 3, 1, ()),                       # more workers than cores: never 0
    (ThreadConfig(intra_op=3), 2, 2, 0, 3, ()),             # explicit wins
    (ThreadConfig(workers=1), 4, 4, 0, 4, ()),              # config overrides the worker count
    (ThreadConfig(pin_cores=True), 4, 2, 0, 2, (0, 1)),
    (ThreadConfig(pin_cores=True), 4, 2, 1, 2, (2, 3)),
    (ThreadConfig(pin_cores=True), 4, 2, 3, 2, (2, 3)),     # index wraps
    (ThreadConfig(pin_cores=True), 2, 4, 2, 1, (0,)),       # more workers than cores: shared slices
])
def test_decision_table(config, physical, workers, index, intra, cores):
    decision = decide(config, physical=physical, cores=tuple(range(physical)), workers=workers, worker_index=index)
    assert (decision.intra_op, decision.inter_op, decision.cores) == (intra, 1, cores)
