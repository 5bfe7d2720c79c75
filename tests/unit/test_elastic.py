"""Elastic intra-op threads: the share table, the plan, and a board really shared by processes."""


import os

import pytest
import torch

from torchserve_perf.plugins.elastic import SLOTS, BusyBoard, ElasticThreads, board_path, plan, share


@pytest.mark.parametrize("cores, busy, rank, threads", [
    (2, 1, 0, 2),    # alone: every core
    (2, 2, 0, 1),    # both busy: one each
    (2, 2, 1, 1),
    (2, 3, 2, 1),    # more busy workers than cores: never 0
    (3, 2, 0, 2),    # the remainder goes to the lowest slot
    (3, 2, 1, 1),
    (16, 4, 3, 4),
    (16, 0, 0, 16),  # a board that counts nobody still yields all cores
])
def test_share_table(cores, busy, rank, threads):
    assert share(cores, busy, rank) == threads


@pytest.mark.parametrize("kwargs, enabled, reason", [
    ({}, True, ""),
    ({"elastic": False}, False, "threads.elastic is false"),
    ({"intra_op_auto": False}, False, "threads.intra_op is set"),
    ({"pinned": True}, False, "pinned"),
    ({"device": "cuda:0"}, False, "cuda:0"),
    ({"physical": 1}, False, "one core"),
])
def test_plan_table(kwargs, enabled, reason):
    args = {"elastic": True, "intra_op_auto": True, "pinned": False, "device": "cpu", "physical": 4, **kwargs}
    result = plan(**args)
    assert result.enabled is enabled and reason in result.reason
    assert result.cores == args["physical"]


def test_board_path_is_per_model_and_tmpdir(tmp_path):
    a = board_path("resnet/18", "1.0", tmp_path)
    assert a.parent == tmp_path and "/" not in a.name and "resnet_18_1.0" in a.name
    assert a != board_path("text", "1.0", tmp_path)


def test_a_stale_mark_is_ignored_and_slots_run_out_loudly(tmp_path):
    path = board_path("m", "1", tmp_path)
    ghost = BusyBoard(path, pid=os.getppid(), stale_s=1.0)   # a live pid that never leaves
    ghost.enter(now_ns=1)
    me = BusyBoard(path, stale_s=1.0)
    assert me.enter(now_ns=int(0.5e9)) == (2, 1)
    assert me.enter(now_ns=int(5e9)) == (1, 0)               # marked 5 s ago: stale
    boards = [BusyBoard(path, pid=os.getppid(), alive=lambda pid: True)]  # same pid: same slot
    assert boards[0].slot == ghost.slot
    others = []
    with pytest.raises(RuntimeError, match="slots"):
        for i in range(SLOTS):
            others.append(BusyBoard(path, pid=10**7 + i, alive=lambda pid: True))
    assert len(others) == SLOTS - 2


def test_elastic_threads_switch_only_when_the_number_changes(tmp_path):
    path = board_path("m", "1", tmp_path)
    calls = []
    elastic = ElasticThreads(BusyBoard(path), cores=4, set_threads=calls.append, current=2, others_running=lambda: (0, 0.0))
    with elastic.batch() as threads:
        assert threads == 4
    with elastic.batch() as threads:
        assert threads == 4
    other = BusyBoard(path, pid=os.getppid())
    other.enter()
    with elastic.batch() as threads:
        assert threads == 2
    assert calls == [4, 2] and elastic.switches == 2
    assert elastic.board.busy_pids() == [other.pid]          # its own mark is cleared after the batch
    elastic.close()


def test_elastic_threads_set_torch_for_real(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        elastic = ElasticThreads(BusyBoard(board_path("m", "1", tmp_path)), cores=2, others_running=lambda: (None, None))
        with elastic.batch():
            assert torch.get_num_threads() == 2
        elastic.close()
    finally:
        torch.set_num_threads(before)


def test_thread_settings_take_elastic_from_config_and_env():
    from torchserve_perf.handlers.settings import load_settings

    assert load_settings({}, {}).threads.elastic is True
    assert load_settings({"handler": {"threads": {"elastic": False}}}, {}).threads.elastic is False
    assert load_settings({}, {"TS_PERF_ELASTIC_THREADS": "0"}).threads.elastic is False
    assert load_settings({"handler": {"threads": {"elastic": False}}}, {"TS_PERF_ELASTIC_THREADS": "on"}).threads.elastic


@pytest.mark.parametrize("want, floor, cores, reading, threads", [
    (2, 1, 2, (0, 0.5), 2),        # quiet host: every core
    (2, 1, 2, (3, 1.5), 2),        # runnable threads right now are not counted (TorchServe's own, often)
    (2, 1, 2, (0, 3.2), 2),        # a minute of our own load (busy workers, TorchServe, clients): expand
    (2, 1, 2, (0, 5.0), 1),        # loaded beyond that (>= 2 x cores + 1): keep the static share
    (2, 1, 2, (None, None), 2),    # no probe (not Linux): as if quiet
    (16, 4, 16, (0, 20.0), 16),
    (16, 4, 16, (0, 33.0), 4),     # never below the static share
    (1, 1, 2, (9, 9.0), 1),        # nothing to expand
])
def test_expand_unless_the_host_is_loaded(want, floor, cores, reading, threads):
    from torchserve_perf.plugins.elastic import expand_to

    assert expand_to(want, floor, cores, reading) == threads


def test_a_busy_host_keeps_the_static_share(tmp_path):
    reading = [(0, 0.2)]
    calls = []
    elastic = ElasticThreads(BusyBoard(board_path("m", "1", tmp_path)), cores=2, floor=1, set_threads=calls.append,
                             current=1, others_running=lambda: reading[0])
    with elastic.batch() as threads:
        assert threads == 2                      # idle host: expand
    reading[0] = (5, 6.0)                        # a noisy neighbour for a minute
    with elastic.batch() as threads:
        assert threads == 1 and elastic.held_back == 1
    assert calls == [2, 1]
    elastic.close()


def test_the_runnable_probe_reads_this_host():
    from torchserve_perf.plugins.elastic import RunnableProbe

    probe = RunnableProbe()
    others, load = probe()
    assert others is None or (others >= 0 and load >= 0)
    probe.close()
    assert RunnableProbe("/nonexistent/loadavg")() == (None, None)


def test_recent_busy_table():
    from torchserve_perf.plugins.elastic import STEADY_BUSY, recent_busy

    value = 0.0
    for _ in range(4):                          # 4 clients on 2 workers: the other is busy at every start
        value = recent_busy(value, 1)
    assert value >= STEADY_BUSY                 # -> the share, even in a gap where the other looks idle
    for _ in range(4):                          # the load drops to 1 client
        value = recent_busy(value, 0)
    assert value < STEADY_BUSY                  # -> all cores again after a few batches
    assert recent_busy(0.0, 0) == 0.0 and recent_busy(0.0, 3) == pytest.approx(0.6)


def test_a_worker_that_keeps_meeting_busy_peers_stays_at_its_share_in_their_gaps(tmp_path):
    path = board_path("m", "1", tmp_path)
    calls = []
    elastic = ElasticThreads(BusyBoard(path), cores=2, floor=1, set_threads=calls.append, current=1,
                             others_running=lambda: (0, 0.0))
    peer = BusyBoard(path, pid=os.getppid())
    for _ in range(4):                          # the peer is busy at each of our batch starts
        peer.enter()
        with elastic.batch() as threads:
            assert threads == 1
        peer.leave()
    with elastic.batch() as threads:            # a gap: the peer looks idle, but it was busy lately
        assert threads == 1
    for _ in range(4):
        with elastic.batch():
            pass
    with elastic.batch() as threads:            # idle for a while: all cores
        assert threads == 2
    elastic.close()

