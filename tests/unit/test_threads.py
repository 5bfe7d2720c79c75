import os

import pytest
import torch

from torchserve_perf.plugins.threads import ThreadConfig, decide


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


def test_physical_cores_never_exceed_the_allowed_cpus():
    from torchserve_perf.plugins.threads import physical_cores

    assert physical_cores((0,)) == 1
    assert 1 <= physical_cores() <= (os.cpu_count() or 1)


def test_decision_names_the_device_and_the_reason():
    decision = decide(ThreadConfig(), physical=8, cores=tuple(range(8)), workers=4, worker_index=0, device="cuda:1")
    assert decision.describe() == "intra_op=2 inter_op=1 on cuda:1 (8 physical cores / 4 workers)"
    explicit = decide(ThreadConfig(intra_op=3, workers=2), physical=8, cores=(), workers=4, worker_index=0)
    assert "threads.intra_op set in model-config" in explicit.describe()


def test_apply_sets_torch_and_reports_what_torch_uses():
    from torchserve_perf.plugins.threads import ThreadDecision, apply

    before = torch.get_num_threads()
    try:
        applied = apply(ThreadDecision(intra_op=1, inter_op=torch.get_num_interop_threads(), cores=(), reason="test"))
        assert torch.get_num_threads() == 1 and applied.intra_op == 1
        # inter-op can only be set once per process: a refused change is reported, not hidden.
        other = torch.get_num_interop_threads() + 1
        refused = apply(ThreadDecision(intra_op=1, inter_op=other, cores=(), reason="test"))
        assert refused.inter_op == torch.get_num_interop_threads()
        assert refused.inter_op == other or "torch kept" in refused.reason
    finally:
        torch.set_num_threads(before)


def test_thread_settings_come_from_model_config_and_env():
    from torchserve_perf.handlers.settings import load_settings

    settings = load_settings({"handler": {"threads": {"intra_op": 3, "pin_cores": True, "workers": 2}}}, {})
    assert (settings.threads.intra_op, settings.threads.pin_cores, settings.threads.workers) == (3, True, 2)
    env = load_settings({}, {"TS_PERF_INTRA_OP_THREADS": "auto", "TS_PERF_PIN_CORES": "yes"})
    assert env.threads.intra_op == "auto" and env.threads.pin_cores is True
