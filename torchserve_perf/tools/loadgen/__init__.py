"""Load generation: closed and open (Poisson) loops over one or more client processes.

Used by ``torchserve-perf bench``, ``compare``, ``tune`` and ``demo``, and by the scripts.

* :mod:`.stats`: percentiles, the latency CDF, :class:`LoadResult` and :func:`merge`.
* :mod:`.loops`: :func:`closed_loop` and :func:`open_loop` in this process, on a ``send()``.
* :mod:`.payloads`: request bodies (:class:`Payload`, :func:`load_payload`, :func:`sample_image`).
* :mod:`.client`: :class:`HttpSender` (a cheap keep-alive HTTP client) and :func:`read_token`.
* :mod:`.runner`: :func:`run_load`, a :class:`Load` against a :class:`Target` from N processes.
* :mod:`.trivial` and :mod:`.ceiling`: the client's own ceiling against a do-nothing endpoint.
* :mod:`.ports`: :func:`free_port`, :func:`free_ports`.
"""

from torchserve_perf.tools.loadgen.ceiling import ceiling, client_ceiling
from torchserve_perf.tools.loadgen.client import HttpSender, read_keys, read_token
from torchserve_perf.tools.loadgen.loops import ProgressFn, closed_loop, open_loop, poisson_schedule
from torchserve_perf.tools.loadgen.payloads import CONTENT_TYPES, SAMPLE_TEXT, Payload, load_payload, sample_image
from torchserve_perf.tools.loadgen.ports import free_port
from torchserve_perf.tools.loadgen.runner import (
    Load,
    Processes,
    Target,
    auto_processes,
    resolve,
    run_load,
    run_share,
    split,
)
from torchserve_perf.tools.loadgen.stats import (
    EXCEPTION,
    NOT_SENT,
    PERCENTILES,
    LoadResult,
    cdf_points,
    merge,
    percentile,
)
from torchserve_perf.tools.loadgen.trivial import TrivialServer

__all__ = [
    "CONTENT_TYPES", "EXCEPTION", "NOT_SENT", "PERCENTILES", "SAMPLE_TEXT", "HttpSender", "Load", "LoadResult",
    "Payload", "Processes", "ProgressFn", "Target", "TrivialServer", "auto_processes", "cdf_points", "ceiling",
    "client_ceiling", "closed_loop", "free_port", "load_payload", "merge", "open_loop", "percentile",
    "poisson_schedule", "read_keys", "read_token", "resolve", "run_load", "run_share", "sample_image", "split",
]
