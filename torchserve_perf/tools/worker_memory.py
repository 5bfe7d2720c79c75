"""The memory of a running TorchServe's model workers, as reports show it.

Per worker process: RSS (what the issue trackers and ``top`` call a worker's memory), PSS (RSS
with each page shared between processes split among them: weights memory-mapped by several
workers count once in the sum) and USS (pages only this worker holds). And the breakdown each of
our workers logs at load (plugins/memory.py), read back from the model log.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Optional, Sequence

import psutil

if TYPE_CHECKING:
    from torchserve_perf.tools.serving import TorchServe

MIB = 1024 * 1024
WORKER_MARK = "model_service_worker"  # in every TorchServe Python worker's command line
# "<worker> memory at load: RSS 412.3 MiB at load = process before load +301.2, eager model +44.9 MiB (97% named)"
LOAD_LINE = re.compile(r"(?P<worker>\S+) memory at load: RSS (?P<rss>[\d.]+) MiB at load = (?P<parts>.*) MiB "
                       r"\((?P<named>\d+)% named\)")
PART = re.compile(r"(?P<name>[^,]+?) (?P<mib>[+-][\d.]+)(?:,|$)")


def worker_processes(processes: Sequence[psutil.Process]) -> list[psutil.Process]:
    """The Python model workers among a server's processes (not the Java frontend)."""
    found = []
    for proc in processes:
        try:
            if any(WORKER_MARK in part for part in proc.cmdline()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def process_memory(proc: psutil.Process) -> Optional[dict[str, Any]]:
    """RSS, PSS and USS of one process in MiB (PSS and USS where the system reports them), or None if it is gone."""
    try:
        info = proc.memory_full_info()
    except psutil.AccessDenied:
        try:
            return {"pid": proc.pid, "rss_mib": round(proc.memory_info().rss / MIB, 1)}
        except psutil.Error:
            return None
    except psutil.Error:
        return None
    out: dict[str, Any] = {"pid": proc.pid, "rss_mib": round(info.rss / MIB, 1)}
    for field in ("pss", "uss"):
        if hasattr(info, field):
            out[f"{field}_mib"] = round(getattr(info, field) / MIB, 1)
    return out


def server_workers(server: TorchServe) -> list[dict[str, Any]]:
    """Each model worker of ``server``: its memory now, ordered by pid."""
    rows = [process_memory(p) for p in worker_processes(server.processes())]
    return sorted((r for r in rows if r is not None), key=lambda r: r["pid"])


def parse_load_lines(log_text: str) -> list[dict[str, Any]]:
    """The memory breakdowns our workers logged at load, oldest first. Pure: see test_worker_memory_log_table."""
    found = []
    for line in log_text.splitlines():
        match = LOAD_LINE.search(line)
        if not match:
            continue
        parts = {m.group("name").strip(): float(m.group("mib")) for m in PART.finditer(match.group("parts"))}
        found.append({"worker": match.group("worker"), "rss_mib": float(match.group("rss")), "parts_mib": parts,
                      "named_pct": int(match.group("named"))})
    return found


def summary(workers: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a report's memory column shows: the workers' RSS each, and their mean. Pure."""
    rss = [w["rss_mib"] for w in workers if "rss_mib" in w]
    out: dict[str, Any] = {"workers": len(rss), "rss_mib": rss}
    if rss:
        out["mean_rss_mib"] = round(sum(rss) / len(rss), 1)
    pss = [w["pss_mib"] for w in workers if "pss_mib" in w]
    if pss:
        out["mean_pss_mib"] = round(sum(pss) / len(pss), 1)
    return out


def column(memory: Optional[dict[str, Any]]) -> str:
    """The report cell: "412 MiB (2 workers)", or "-" when not measured. Pure."""
    if not memory or "mean_rss_mib" not in memory:
        return "-"
    return f"{memory['mean_rss_mib']:.0f} MiB ({memory['workers']} worker{'s' if memory['workers'] != 1 else ''})"
