"""``auto``'s choice, cached on disk and shared by a model's workers and their restarts.

``auto`` times every candidate chain at load: tens of seconds per worker, paid again by every
worker and after every restart. The first worker to load a model decides (holding a file lock,
so the model's other workers wait instead of timing candidates at the same time on the same
cores) and writes its choice; the others, and any restarted worker, read it and only apply that
chain (still parity-checked), which takes seconds.

The key is the model (a digest of its class and weights), the torch version, the host (name,
CPU model, physical cores), the worker's threads, batch size and device, the warm-up input's
shape and the auto settings: change any of them and auto searches again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import torch

VERSION = 1  # bump when the stored format changes


def default_dir() -> Path:
    """``$XDG_CACHE_HOME/torchserve_perf/auto`` (``~/.cache/...``): survives worker and server restarts."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "torchserve_perf" / "auto"


def shared_dir() -> Optional[str]:
    """The worker's runtime cache dir (``torchserve_perf`` under the user's cache dir), or None when
    it cannot be created (a read-only home): auto then searches at every load, as without a cache."""
    folder = default_dir().parent
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return None
    return str(folder) if os.access(folder, os.W_OK) else None


# model -> (what its tensors were when hashed, the digest): a load hashes one model for auto's key and
# for each gated plugin's artefacts; weakly held, so a model dropped after the load is not kept.
_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature(state: Mapping[str, Any]) -> tuple:
    """Where each tensor lives and its version counter: an in-place write or a new tensor changes it."""
    return tuple((name, t.data_ptr(), t._version, tuple(t.shape), str(t.dtype))
                 for name, t in sorted(state.items()) if isinstance(t, torch.Tensor))


def model_digest(model: Any) -> str:
    """The model's class and every parameter and buffer (name, dtype, shape, bytes)."""
    state = model.state_dict() if hasattr(model, "state_dict") else {}
    try:
        signature = _signature(state)
        known = _DIGESTS.get(model)
    except (TypeError, RuntimeError):  # not weakly referenceable, or inference tensors (no version counter)
        return _hash_state(model, state)
    if known is not None and known[0] == signature:
        return known[1]
    value = _hash_state(model, state)
    _DIGESTS[model] = (signature, value)
    return value


def _hash_state(model: Any, state: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, tensor in sorted(state.items()):
        if not isinstance(tensor, torch.Tensor):
            continue
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():  # reshape: 0-dim buffers (BatchNorm's num_batches_tracked) cannot be viewed as bytes
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def host_id() -> str:
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        cpu = platform.processor()
    from torchserve_perf.plugins.threads import physical_cores

    return f"{platform.node()}|{cpu}|{physical_cores()} cores"


def choice_key(model: Any, *, shape: tuple[int, ...], runtime: Any, settings: Mapping[str, Any]) -> str:
    parts = {
        "format": VERSION, "model": model_digest(model), "torch": torch.__version__, "host": host_id(),
        "shape": list(shape), "device": str(runtime.device), "intra_op": runtime.intra_op_threads,
        "inter_op": runtime.inter_op_threads, "intra_op_max": runtime.intra_op_max,
        "batch_size": runtime.batch_size, "auto": dict(settings),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


class ChoiceCache:
    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    @contextlib.contextmanager
    def locked(self, key: str) -> Iterator[float]:
        """Exclusive per key across processes; yields the seconds spent waiting for it."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        started = time.perf_counter()
        with open(self.directory / f"{key}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield time.perf_counter() - started
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self, key: str) -> Optional[dict]:
        try:
            data = json.loads(self.path(key).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("chain"), list):
            return None
        return data

    def write(self, key: str, chain: list[str], reason: str) -> Path:
        """Atomic: a reader sees the old file or the whole new one."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = {"chain": list(chain), "reason": reason, "torch": torch.__version__, "written": time.time()}
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{key}.", suffix=".tmp")
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, self.path(key))
        return self.path(key)
