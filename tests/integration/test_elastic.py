"""test_elastic: the tests that start real processes (TorchServe, the archiver, load clients)."""

import os
import signal
import subprocess
import sys
import textwrap

from torchserve_perf.plugins.elastic import BusyBoard, board_path

PEER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from torchserve_perf.plugins.elastic import BusyBoard
    board = BusyBoard(Path(sys.argv[1]))
    print(board.slot, *board.enter(), flush=True)
    sys.stdin.readline()          # busy until told
    board.leave()
    print("left", flush=True)
    sys.stdin.readline()
    board.close()
""")


def _peer(path):
    process = subprocess.Popen([sys.executable, "-c", PEER, str(path)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    slot, busy, rank = map(int, process.stdout.readline().split())
    return process, slot, busy, rank


def test_two_processes_share_the_board_and_a_dead_worker_is_not_counted(tmp_path):
    path = board_path("m", "1", tmp_path)
    board = BusyBoard(path)
    peer, peer_slot, peer_busy, _ = _peer(path)
    try:
        assert peer_slot != board.slot
        assert peer_busy == 1                      # it was alone when it started its batch
        assert board.enter() == (2, int(board.slot > peer_slot))  # now both are busy
        board.leave()
        peer.stdin.write("\n")
        peer.stdin.flush()
        assert peer.stdout.readline().strip() == "left"
        assert board.enter() == (1, 0)             # the peer finished its batch
        board.leave()
        # A second batch in the peer, then it dies mid-batch (SIGKILL: no cleanup at all).
        peer.stdin.write("\n")
        peer.stdin.flush()
        peer.wait(timeout=30)
        peer, peer_slot, peer_busy, _ = _peer(path)
        assert board.enter()[0] == 2
        board.leave()
        os.kill(peer.pid, signal.SIGKILL)
        peer.wait(timeout=30)
        assert peer.pid in board.busy_pids()       # its mark is still on the board...
        assert board.enter() == (1, 0)             # ...but a dead pid is not counted
        board.leave()
        # A new worker reclaims the dead worker's slot instead of using up a fresh one.
        replacement = BusyBoard(path, pid=peer.pid + 10**6)
        assert replacement.slot == peer_slot
        replacement.close()
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait()
        board.close()

