"""Where a quantized model is found: in the archive (quantized when it was built), else in the host's
cache (quantized by the first worker on this host), else it is built now and written to that cache.

Both places share one layout, ``<plugin>/<key><suffix>``, so ``torchserve-perf archive --calibration``
fills the archive's folder (:data:`ARCHIVE_DIR`, at the archive's root, the worker's folder) by running
the very code a worker runs, with that folder as its cache. The key (calibration.artefact_key) names
the model's weights, the calibration file, the library versions and the quantizer's settings: an
artefact built for anything else is never found, and the worker quantizes as it did before.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from torchserve_perf.plugins.optimizations.auto_cache import ChoiceCache

ARCHIVE_DIR = "quantized"  # relative to the worker's folder, the model's (archive root)

log = logging.getLogger("torchserve_perf.plugins.optimizations")

T = TypeVar("T")


@dataclass(frozen=True)
class QuantizedStore:
    """One quantized artefact of ``plugin``: ``key`` plus each of ``suffixes`` (the first is the one read)."""

    plugin: str
    key: str
    suffixes: tuple[str, ...]
    cache_dir: Optional[str]  # the host's runtime cache dir; None: no cache (built at every load)
    archive_dir: str = ARCHIVE_DIR

    def _complete(self, folder: Path) -> Optional[Path]:
        files = [folder / self.plugin / f"{self.key}{suffix}" for suffix in self.suffixes]
        return files[0] if all(f.is_file() for f in files) else None

    def archived(self) -> Optional[Path]:
        """The artefact the archive carries (every suffix present), or None."""
        return self._complete(Path(self.archive_dir))

    def get(self, build: Callable[[], T], read: Callable[[Path], T], write: Callable[[T, Path], Any]) -> T:
        """The archive's artefact, the cached one, or ``build()`` (then written with ``write``, whose
        path argument names the first suffix's file: it writes every suffix's file beside it)."""
        archived = self.archived()
        if archived is not None:
            log.info("%s: using the model quantized at archive time, %s", self.plugin, archived)
            return read(archived)
        if not self.cache_dir:
            return build()
        cache = ChoiceCache(Path(self.cache_dir) / self.plugin)
        with cache.locked(self.key):  # the model's other workers wait instead of quantizing too
            cached = self._complete(Path(self.cache_dir))
            if cached is not None:
                log.info("%s: read the quantized model from the cache, %s", self.plugin, cached)
                return read(cached)
            value = build()
            target = cache.directory / f"{self.key}{self.suffixes[0]}"
            with tempfile.TemporaryDirectory(dir=cache.directory) as tmp:  # whole files appear, or none
                staged = Path(tmp) / target.name
                write(value, staged)
                for suffix in reversed(self.suffixes):  # the first suffix last: readers look for it
                    os.replace(Path(tmp) / f"{self.key}{suffix}", cache.directory / f"{self.key}{suffix}")
            return value
