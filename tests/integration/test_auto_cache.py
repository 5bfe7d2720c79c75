"""test_auto_cache: the tests that start real processes (TorchServe, the archiver, load clients)."""

import subprocess
import sys
import textwrap
import threading
import time

from torchserve_perf.plugins.optimizations.auto_cache import ChoiceCache

HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from torchserve_perf.plugins.optimizations.auto_cache import ChoiceCache
    cache = ChoiceCache(Path(sys.argv[1]))
    with cache.locked("k"):
        print("locked", flush=True)
        sys.stdin.readline()
        cache.write("k", ["faster"], "decided by the first worker")
""")


def test_a_second_worker_waits_for_the_first_and_reads_its_choice(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cache, seen = ChoiceCache(tmp_path), {}

        def second_worker():
            with cache.locked("k") as waited:
                seen["waited"], seen["choice"] = waited, cache.read("k")

        thread = threading.Thread(target=second_worker)
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive()  # blocked on the first worker's lock
        holder.stdin.write("\n")
        holder.stdin.flush()
        thread.join(timeout=30)
        assert seen["waited"] >= 0.4 and seen["choice"]["chain"] == ["faster"]
    finally:
        holder.kill()
        holder.wait()

