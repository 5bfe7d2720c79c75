"""Python gRPC stubs for TorchServe's own protos, generated on first use from the installed frontend.

TorchServe's ``ts/frontend/model-server.jar`` carries ``inference.proto`` (the ``Predictions``
service), ``open_inference_grpc.proto`` (the Open Inference Protocol's ``GRPCInferenceService``)
and the ``google/`` protos they import. :func:`load` copies those into a cache folder keyed by
the jar's size and time, under a package name of our own (so the generated modules and the
protobuf descriptor pool never meet another copy of the same files), runs ``grpc_tools.protoc``
in this process and imports the result. Needs the ``grpc`` extra (``grpcio``, ``grpcio-tools``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import re
import shutil
import sys
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Optional

PACKAGE = "torchserve_grpc_protos"  # the generated modules' import package (a folder in the cache)
PROTOS = ("inference.proto", "open_inference_grpc.proto")
LAYOUT = 2  # the cache folder's layout: a new one when what generate() writes changes
_IMPORT = re.compile(r'^\s*import\s+(?:public\s+|weak\s+)?"([^"]+)"\s*;', re.MULTILINE)
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Stubs:
    """The generated modules: messages (``*_pb2``) and services (``*_pb2_grpc``)."""

    inference: ModuleType       # PredictionsRequest, PredictionResponse
    inference_grpc: ModuleType  # InferenceAPIsServiceStub
    oip: ModuleType             # ModelInferRequest, ServerLiveRequest, ...
    oip_grpc: ModuleType        # GRPCInferenceServiceStub


class StubsUnavailable(RuntimeError):
    """The stubs cannot be made here: the extra is not installed, or TorchServe's jar is missing."""


def frontend_jar() -> Path:
    """The installed TorchServe's frontend jar."""
    try:
        import ts
    except ImportError:
        raise StubsUnavailable("TorchServe is not installed (pip install torchserve)") from None
    jar = Path(os.path.dirname(os.path.abspath(ts.__file__))) / "frontend" / "model-server.jar"
    if not jar.is_file():
        raise StubsUnavailable(f"TorchServe's frontend jar is missing: {jar}")
    return jar


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "torchserve-perf" / "grpc"


def proto_closure(names: dict[str, str], roots: tuple[str, ...]) -> list[str]:
    """The protos ``roots`` need, themselves included, given each proto's text by path; imports that
    are not in ``names`` are left to protoc's own include folder (``google/protobuf/*``)."""
    needed: list[str] = []
    pending = list(roots)
    while pending:
        path = pending.pop()
        if path in needed or path not in names:
            continue
        needed.append(path)
        pending.extend(_IMPORT.findall(names[path]))
    return sorted(needed)


def _jar_protos(jar: Path) -> dict[str, str]:
    with zipfile.ZipFile(jar) as archive:
        return {info.filename: archive.read(info).decode("utf-8") for info in archive.infolist()
                if info.filename.endswith(".proto") and not info.filename.startswith("proto/")}


def _prefixed(text: str, own: set[str]) -> str:
    """Rewrite imports of the protos we write to their place under :data:`PACKAGE`."""
    return _IMPORT.sub(lambda m: m.group(0).replace(f'"{m.group(1)}"', f'"{PACKAGE}/{m.group(1)}"')
                       if m.group(1) in own else m.group(0), text)


def generate(jar: Path, target: Path) -> Path:
    """Write the protos and their generated Python modules under ``target``; returns ``target``."""
    try:
        from grpc_tools import protoc
    except ImportError:
        raise StubsUnavailable("gRPC needs the grpc extra: pip install 'torchserve-perf[grpc]' "
                               "(grpcio and grpcio-tools)") from None
    texts = _jar_protos(jar)
    missing = [p for p in PROTOS if p not in texts]
    if missing:
        raise StubsUnavailable(f"{jar} has no {', '.join(missing)}: TorchServe 0.12 or later is needed")
    needed = proto_closure(texts, PROTOS)
    # Every proto we write goes under PACKAGE (google/rpc/status.proto too), so the generated modules
    # import one another from that one package and no top-level folder has to be importable.
    own = {p for p in needed if not p.startswith("google/protobuf/")}
    source = target / "proto"
    for path in needed:
        if path.startswith("google/protobuf/"):
            continue  # protoc's own copies, the ones the installed protobuf runtime was built from
        # Our own protos go under PACKAGE, so the generated modules import one another from there.
        dest = source / (f"{PACKAGE}/{path}" if path in own else path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(_prefixed(texts[path], own) if path in own else texts[path])
    out = target / "python"
    out.mkdir(parents=True, exist_ok=True)
    include = Path(os.path.dirname(os.path.abspath(protoc.__file__))) / "_proto"
    files = [f"{PACKAGE}/{p}" if p in own else p for p in needed if not p.startswith("google/protobuf/")]
    code = protoc.main(["grpc_tools.protoc", f"-I{source}", f"-I{include}", f"--python_out={out}",
                        f"--grpc_python_out={out}", *files])
    if code != 0:
        raise StubsUnavailable(f"grpc_tools.protoc failed ({code}) on the protos from {jar}")
    (out / PACKAGE / "__init__.py").write_text("")
    return target


def _cache_key(jar: Path) -> str:
    stat = jar.stat()
    try:
        from grpc_tools import protoc  # the generated code follows the generator's version
        generator = getattr(protoc, "__file__", "")
    except ImportError:
        generator = ""
    text = f"{LAYOUT}|{jar.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{generator}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def _load(cache: Path) -> Stubs:
    jar = frontend_jar()
    target = cache / _cache_key(jar)
    with _LOCK:
        if not (target / "python" / PACKAGE / "__init__.py").is_file():
            # Generated aside and renamed into place: client processes may start at the same time.
            scratch = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}")
            shutil.rmtree(scratch, ignore_errors=True)
            generate(jar, scratch)
            try:
                os.replace(scratch, target)
            except OSError:  # another process got there first: its copy is as good as ours
                shutil.rmtree(scratch, ignore_errors=True)
        package = target / "python" / PACKAGE
        # The generated modules import one another as PACKAGE.x: the package is registered by its
        # location (no sys.path entry), and its submodules are then found through its __path__.
        if PACKAGE not in sys.modules:
            spec = importlib.util.spec_from_file_location(PACKAGE, package / "__init__.py",
                                                          submodule_search_locations=[str(package)])
            if spec is None or spec.loader is None:
                raise StubsUnavailable(f"cannot import the generated stubs from {package}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[PACKAGE] = module
            spec.loader.exec_module(module)
        modules = [importlib.import_module(f"{PACKAGE}.{name}") for name in
                   ("inference_pb2", "inference_pb2_grpc", "open_inference_grpc_pb2", "open_inference_grpc_pb2_grpc")]
    return Stubs(*modules)


def load(cache: Optional[Path] = None) -> Stubs:
    """The stubs for the installed TorchServe, generated once per jar into ``cache``."""
    return _load(Path(cache or default_cache()).resolve())
