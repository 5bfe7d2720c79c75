"""The eager model after load: released once an optimized model serves in its place, read back when needed.

Once the optimization chain's model passed its parity check, the eager model only stands by for
the fallback (a batch the optimized model fails on is rerun eagerly) and for handler code that
calls ``self.model`` itself. Keeping it costs a second copy of the weights in every worker, so it
is dropped, and :class:`ReloadableEager` loads it again from the archive the first time anything
calls it (one INFO line says how long that took).

It is kept when dropping it would free nothing: when the optimized model still holds the eager
model's tensors (TorchScript tracing, channels_last, torch.compile wrap the same parameters).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterator, Optional

import torch

log = logging.getLogger(__name__)

SEARCH_DEPTH = 4  # how deep into a wrapper's attributes to look for the eager model's tensors


class ReloadableEager:
    """Stands in for the released eager model: calls and attribute reads load it first, once."""

    def __init__(self, load: Callable[[], Any], name: str = "model") -> None:
        self._load = load
        self._name = name
        self._model: Optional[Any] = None
        self._lock = threading.Lock()
        self.reload_seconds: Optional[float] = None  # set by the first reload

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def model(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    started = time.perf_counter()
                    self._model = self._load()
                    self.reload_seconds = time.perf_counter() - started
                    log.info("%s: eager model reloaded from the archive in %.2f s (it had been released after load)",
                             self._name, self.reload_seconds)
        return self._model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # our own fields before __init__ set them, and dunder lookups
            raise AttributeError(name)
        return getattr(self.model, name)

    def __repr__(self) -> str:
        return f"ReloadableEager({self._name}, {'loaded' if self.loaded else 'released'})"


def _tensors(obj: Any, depth: int, seen: set[int]) -> Iterator[torch.Tensor]:
    """The tensors ``obj`` holds: a module's parameters and buffers, and those of what its attributes hold."""
    if id(obj) in seen or depth < 0:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
        return
    if isinstance(obj, torch.nn.Module):
        try:
            yield from (t for t in obj.state_dict(keep_vars=True).values() if isinstance(t, torch.Tensor))
        except Exception:  # a module whose state_dict cannot be read: look at its attributes instead
            log.debug("no state_dict for %s", type(obj).__name__, exc_info=True)
    children: Any
    if isinstance(obj, dict):
        children = obj.values()
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children = obj
    else:
        children = getattr(obj, "__dict__", {}).values()
    for child in children:
        if isinstance(child, (str, bytes, int, float, bool, type(None))):
            continue
        yield from _tensors(child, depth - 1, seen)


def holds_weights_of(optimized: Any, eager: Any) -> bool:
    """Whether ``optimized`` keeps the eager model itself, or any tensor sharing memory with its weights."""
    own = {t.data_ptr() for t in _tensors(eager, 0, set()) if t.numel()}
    if not own:
        return False
    for tensor in _tensors(optimized, SEARCH_DEPTH, set()):
        if tensor.numel() and tensor.data_ptr() in own:
            return True
    return False


def release(runner: Any, eager: Any, applied: list[str], load: Callable[[], Any], name: str) -> Any:
    """What the handler keeps as ``self.model``: ``eager`` itself, or a :class:`ReloadableEager`
    when an optimized model serves in its place and does not hold its weights. ``runner`` (what
    inference calls) gets the same stand-in for its fallback."""
    if not applied:  # the eager model is what serves
        return eager
    optimized = getattr(runner, "optimized", runner)
    if optimized is eager or holds_weights_of(optimized, eager):
        log.info("%s: eager model kept: the optimized model (%s) uses its weights", name, "+".join(applied))
        return eager
    stand_in = ReloadableEager(load, name)
    if hasattr(runner, "eager"):  # the fallback runner reruns failed batches on it
        runner.eager = stand_in
    return stand_in
