"""Trace files: names, private directories, post-processing and per-worker retention.

Names follow torch-tb-profiler's ``<worker>.<span>.pt.trace.json`` pattern, with TorchServe's
worker name (``W-<port>-<model>_<version>``) as the worker and a millisecond timestamp as the
span, so TensorBoard lists each worker with its windows in time order.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

log = logging.getLogger(__name__)

SUFFIXES = (".pt.trace.json", ".pt.trace.json.gz")
PHASES = ("preprocess", "inference", "postprocess")
STEP_PREFIX = "ProfilerStep#"


_WARNED_OPEN: set[str] = set()


def make_private_dir(path: Path) -> Path:
    """Create ``path`` and any missing parents with mode 0700.

    An existing ``path`` that others can read or write (e.g. 0777, made by someone else's umask or
    an earlier tool) is tightened to 0700 when this user owns it; otherwise one WARNING per process
    says so. Traces hold shapes, timings and stack frames: they are not for every local user.
    Existing parents are left alone (``/tmp`` must stay as it is).
    """
    path = Path(path).absolute()
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:  # another worker made it first
            continue
        os.chmod(directory, 0o700)  # mkdir's mode is narrowed by the umask, never widened
    if path not in missing:
        tighten(path)
    return path


def tighten(directory: Path) -> None:
    """Make an existing trace directory 0700, or warn once where that is not possible."""
    try:
        info = directory.stat()
    except FileNotFoundError:
        return
    if not info.st_mode & 0o077:
        return
    if info.st_uid == os.geteuid():
        try:
            os.chmod(directory, 0o700)
            log.info("trace directory %s was mode %o; tightened to 700", directory, info.st_mode & 0o777)
            return
        except OSError:
            pass
    if str(directory) not in _WARNED_OPEN:
        _WARNED_OPEN.add(str(directory))
        log.warning("trace directory %s is mode %o and not ours to change: other local users can read or "
                    "replace its traces; give the profiler an output_dir of its own", directory,
                    info.st_mode & 0o777)


def trace_name(worker_name: str, now_ms: int) -> str:
    return f"{worker_name}.{now_ms}{SUFFIXES[0]}"


def new_trace_path(directory: Path, worker_name: str) -> Path:
    now_ms = int(time.time() * 1000)
    while (directory / trace_name(worker_name, now_ms)).exists():
        now_ms += 1
    return directory / trace_name(worker_name, now_ms)


def worker_traces(directory: Path, worker_name: str) -> list[Path]:
    """This worker's trace files, oldest first."""
    prefix = f"{worker_name}."
    try:
        entries = [p for p in directory.iterdir() if p.name.startswith(prefix) and p.name.endswith(SUFFIXES)]
    except FileNotFoundError:
        return []
    return sorted(entries, key=lambda p: (_mtime(p), p.name))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def enforce_retention(directory: Path, worker_name: str, max_traces: int, max_mb: float) -> list[Path]:
    """Remove this worker's oldest traces until at most ``max_traces`` and ``max_mb`` remain.

    The newest trace is always kept, even when it alone is over ``max_mb``. Returns the removed paths.
    """
    traces = worker_traces(directory, worker_name)
    sizes = {p: _size(p) for p in traces}
    total = sum(sizes.values())
    removed = []
    while len(traces) > 1 and ((max_traces and len(traces) > max_traces) or (max_mb and total > max_mb * 1e6)):
        oldest = traces.pop(0)
        try:
            oldest.unlink()
        except FileNotFoundError:
            pass
        total -= sizes[oldest]
        removed.append(oldest)
    return removed


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@dataclass(frozen=True)
class PhaseMark:
    step: int
    name: str
    batch_size: int


def annotate(trace: dict, marks: Sequence[PhaseMark], metadata: Mapping[str, Any]) -> dict:
    """Add batch sizes to the phase ranges, HTA's ``distributedInfo`` and our own metadata.

    ``record_function``'s args string does not reach Kineto's JSON, so each phase range gets its
    batch size here, matched by step and by order within the step.
    """
    events = trace.get("traceEvents") or []
    steps = sorted((_step_number(e), e["ts"], e["ts"] + e.get("dur", 0)) for e in events if _step_number(e) is not None)
    pending: dict[tuple[int, str], list[int]] = {}
    for mark in marks:
        pending.setdefault((mark.step, mark.name), []).append(mark.batch_size)
    phase_events = [e for e in events if e.get("cat") == "user_annotation" and e.get("name") in PHASES and "ts" in e]
    for event in sorted(phase_events, key=lambda e: e["ts"]):
        step = next((n for n, start, end in steps if start <= event["ts"] <= end), None)
        sizes = pending.get((step, event["name"])) if step is not None else None
        if sizes:
            event.setdefault("args", {})["batch_size"] = sizes.pop(0)
            event["args"]["step"] = step
    # HTA refuses a trace without distributedInfo.rank; a TorchServe worker is a single process.
    trace.setdefault("distributedInfo", {"backend": "none", "rank": 0, "world_size": 1})
    trace["ts_perf"] = dict(metadata)
    return trace


def _step_number(event: Mapping[str, Any]) -> Any:
    name = event.get("name")
    if event.get("ph") == "X" and isinstance(name, str) and name.startswith(STEP_PREFIX) and "ts" in event:
        suffix = name[len(STEP_PREFIX):]
        return int(suffix) if suffix.isdigit() else None
    return None


def write_json(trace: dict, path: Path) -> None:
    """Write atomically (TensorBoard may be scanning the directory) with owner-only permissions.

    Laid out like Kineto's own files: metadata first (``distributedInfo`` leading, as HTA finds the
    rank with a ``"rank": N`` search of the first lines), then one event per line.
    """
    try:
        text = _layout(trace)
    except ValueError:  # NaN/inf are not JSON; Chrome and Perfetto reject them
        text = _layout(_finite(trace))
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(partial, path)


def _layout(trace: Mapping[str, Any]) -> str:
    head = sorted((k for k in trace if k != "traceEvents"), key=lambda k: k != "distributedInfo")
    lines = ["{"]
    lines += [f"  {json.dumps(k)}: {json.dumps(trace[k], allow_nan=False)}," for k in head]
    events = trace.get("traceEvents") or []
    lines.append('  "traceEvents": [')
    lines.append(",\n".join(f"    {json.dumps(e, allow_nan=False)}" for e in events))
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def read_trace(path: Path) -> dict:
    if path.name.endswith(".gz"):
        import gzip

        with gzip.open(path, "rt") as handle:
            return json.load(handle)
    with open(path) as handle:
        return json.load(handle)


def find_traces(root: Path) -> Iterable[Path]:
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.name.endswith(SUFFIXES))
