"""One copy of an ONNX model's weights for all of a worker's ONNX Runtime sessions, and for its siblings.

An InferenceSession optimizes its graph when it is made: it folds and fuses nodes and reorders
convolution weights into the CPU's blocked layout, each session into its own new copy. So the
graph is optimized once here, by a first session that saves the result (graph in one file, weights
in another, page-aligned), and every session the worker keeps is then made from the saved graph
with graph optimizations off and each saved weight handed over as an OrtValue
(``SessionOptions.add_initializer``): they all read the same bytes.

Those bytes are the weights file memory-mapped read-only, so the workers of one model on one
host, which save to the same place in the runtime cache (keyed by the model's code and weights,
the export's settings and shapes, the ONNX Runtime version, the optimization level and the host),
share the pages through the page cache; a worker that finds the files does not export the model.
The cache keeps one folder per such key and is never pruned: delete it to reclaim the disk.

Sessions also share one arena for their activations (``session.use_env_allocators``): only one
runs at a time in a worker, so one arena's worth of scratch space is enough for all of them.
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

log = logging.getLogger("torchserve_perf.plugins.optimizations")

GRAPH_FILE = "model.onnx"
WEIGHTS_FILE = "weights.bin"
FORMAT = 1  # bump when the saved layout changes
INLINE_BELOW_BYTES = 1024  # smaller constants stay in the graph file (shape inference reads them)


@dataclass(frozen=True)
class SharedWeights:
    """The saved optimized graph and its weights as OrtValues over one read-only mapping."""

    graph_path: str
    values: tuple[tuple[str, Any], ...]  # initializer name -> OrtValue (views of ``mapping``)
    mapping: Any  # the numpy memmap the values read from; kept alive with them
    nbytes: int

    def add_to(self, session_options: Any) -> None:
        for name, value in self.values:
            session_options.add_initializer(name, value)

    def drop_resident_pages(self) -> None:
        """Let go of the mapped pages (they stay in the page cache). The next runs fault back in
        only the weights they read: kernels that packed a weight into a layout of their own at
        session creation (MatMul/Gemm) never read the original again, so it leaves the RSS."""
        advise = getattr(getattr(self.mapping, "_mmap", None), "madvise", None)
        if self.nbytes and advise is not None and hasattr(mmap, "MADV_DONTNEED"):  # not on Windows
            try:
                advise(mmap.MADV_DONTNEED)
            except OSError:  # only the RSS accounting loses: the pages stay mapped
                log.debug("could not let go of the mapped weights' pages", exc_info=True)

    def resident_bytes(self) -> int:
        """How much of the weights file this process has mapped in now (its RSS share of it)."""
        return mapped_resident(self.weights_path)

    @property
    def weights_path(self) -> str:
        return str(Path(self.graph_path).with_name(WEIGHTS_FILE))


def cache_key(export_key: str, ort_version: str, level: str, host: str) -> str:
    """Where a saved graph lives: the same export (model, exporter, shapes), ONNX Runtime, optimization
    level and host find the same one. Pure: see test_ort_cache_key_table."""
    digest = hashlib.sha256(f"{FORMAT}|{export_key}|{ort_version}|{level}|{host}".encode())
    return digest.hexdigest()[:32]


def weights_dir(cache_dir: Optional[str]) -> Path:
    """The runtime cache's ``onnxruntime`` folder, or one under the temp dir when there is no cache."""
    base = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / f"torchserve_perf-{os.getuid()}"
    return base / "onnxruntime"


def prepare(make_proto: Callable[[], bytes], export_key: str, ort: Any, level: Any, level_name: str,
            cache_dir: Optional[str], host: str) -> SharedWeights:
    """The optimized graph saved once (or found saved by a sibling worker or an earlier start: then
    the model is not even exported, ``make_proto`` is not called) and its weights mapped."""
    folder = weights_dir(cache_dir) / cache_key(export_key, ort.__version__, level_name, host)
    if not (folder / GRAPH_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        _save_optimized(make_proto(), ort, level, folder)
    return load(folder)


def _save_optimized(proto: bytes, ort: Any, level: Any, folder: Path) -> None:
    """Optimize the graph in a throwaway session that writes it out, then move it into place;
    a sibling that got there first wins and this copy is dropped."""
    folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch = Path(tempfile.mkdtemp(prefix=".saving-", dir=folder.parent))
    try:
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        options.log_severity_level = 4
        options.optimized_model_filepath = str(scratch / GRAPH_FILE)
        options.add_session_config_entry("session.optimized_model_external_initializers_file_name", WEIGHTS_FILE)
        # Small constants (shapes, axes) stay in the graph, where shape inference reads them.
        options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes",
                                         str(INLINE_BELOW_BYTES))
        ort.InferenceSession(proto, options, providers=["CPUExecutionProvider"])
        (scratch / WEIGHTS_FILE).touch()  # a model whose weights are all small constants writes none
        try:
            os.rename(scratch, folder)
        except OSError:  # a sibling worker saved the same graph first: use theirs
            if not (folder / GRAPH_FILE).is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def load(folder: Path) -> SharedWeights:
    """The saved graph's external initializers as OrtValues over the memory-mapped weights file."""
    import onnx
    import onnxruntime as ort
    from onnx import helper
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    graph_path = folder / GRAPH_FILE
    model = onnx.load(str(graph_path), load_external_data=False)
    weights = folder / WEIGHTS_FILE
    # numpy cannot map an empty file: a model without large weights has nothing to share.
    mapping = np.memmap(weights, dtype=np.uint8, mode="r") if weights.stat().st_size else np.zeros(0, np.uint8)
    values = []
    for init in model.graph.initializer:
        if not uses_external_data(init):
            continue
        info = ExternalDataInfo(init)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type))
        count = int(np.prod(init.dims)) if len(init.dims) else 1
        offset = int(info.offset or 0)
        if info.location != WEIGHTS_FILE or offset + count * dtype.itemsize > mapping.size:
            raise ValueError(f"saved weights in {folder} do not match their graph (initializer {init.name})")
        array = np.frombuffer(mapping, dtype=dtype, count=count, offset=offset).reshape(tuple(init.dims))
        values.append((init.name, ort.OrtValue.ortvalue_from_numpy(array)))
    return SharedWeights(str(graph_path), tuple(values), mapping, int(mapping.size))


def mapped_resident(path: str) -> int:
    """Bytes of ``path`` resident in this process's mappings (its ``Rss`` lines in /proc/self/smaps); 0 elsewhere."""
    total, inside = 0, False
    try:
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                head = line.split(None, 1)[0] if line.strip() else ""
                if "-" in head and not head.endswith(":"):  # a mapping's header line: range perms offset dev inode path
                    inside = line.rstrip("\n").endswith(" " + path) or line.rstrip("\n").endswith("\t" + path)
                elif inside and head == "Rss:":
                    total += int(line.split()[1]) * 1024
    except OSError:
        return 0
    return total


_ARENA_REGISTERED: set[str] = set()  # mirrors ONNX Runtime's process-wide environment


def register_shared_arena(ort: Any) -> None:
    """One CPU arena in ONNX Runtime's process-wide environment, for the sessions that ask for it
    (``session.use_env_allocators``); registered once per process."""
    if ort.__version__ in _ARENA_REGISTERED:
        return
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    # kSameAsRequested (1) grows the arena by what a run asks for, not to the next power of two.
    ort.create_and_register_allocator(info, ort.OrtArenaCfg({"arena_extend_strategy": 1}))
    _ARENA_REGISTERED.add(ort.__version__)
