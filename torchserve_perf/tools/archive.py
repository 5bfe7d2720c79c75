"""Build a .mar for your own model with our handler bundled: ``torchserve-perf archive``.

Three ways in, one archive out:

- eager:       ``--model-file net.py --weights net.pt`` (one nn.Module class, its state dict)
- TorchScript: ``--torchscript net.ts.pt``
- torch.export: ``--exported net.pt2``

The archive carries the handler (``--handler image|text|tensor`` or your own file), the
``torchserve_perf`` namespace (unless ``--no-bundle``: then the server needs the package
installed), a ``model-config.yaml`` of sensible defaults with a ``handler:`` section, labels and
your extra files. It wraps the real ``torch-model-archiver``. For example::

    torchserve-perf archive --name mlp --model-file mlp.py --weights mlp.pt --input-shape 16
    torchserve-perf archive --name resnet --torchscript resnet.ts.pt --handler image \\
        --labels index_to_name.json --export-path model_store --force
    torchserve-perf archive --name mlp --exported mlp.pt2 --layout kserve --export-path kserve/

``--layout kserve`` writes ``model-store/NAME.mar`` and ``config/config.properties`` (what
KServe's TorchServe runtime mounts) under the export path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from torchserve_perf.tools import paths
from torchserve_perf.tools.argparsing import command_parser

# handler kind -> (file in torchserve_perf/handlers, its options section in model-config.yaml)
HANDLERS: dict[str, tuple[str, str]] = {
    "image": ("image_handler.py", "image"),
    "text": ("text_handler.py", "text"),
    "tensor": ("tensor_handler.py", "tensor"),
}
KINDS = ("eager", "torchscript", "export")
LAYOUTS = ("mar", "folder", "kserve")
# Where KServe's TorchServe runtime mounts the storage URI's content.
KSERVE_MOUNT = "/mnt/models"
# Top-level model-config.yaml keys that must be positive integers.
POSITIVE_INT_KEYS = ("minWorkers", "maxWorkers", "batchSize", "responseTimeout")


class ArchiveError(Exception):
    """A bad input; the message says what is wrong and how to fix it (the command exits 2)."""


@dataclass(frozen=True)
class ModelSource:
    """The user's model: eager (class file + state dict), TorchScript or torch.export."""

    kind: str
    serialized_file: Path
    model_file: Optional[Path] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ArchiveError(f"unknown model kind {self.kind!r}; use one of {list(KINDS)}")
        if (self.kind == "eager") != (self.model_file is not None):
            raise ArchiveError("an eager model needs --model-file (the nn.Module class) with --weights (its state "
                               "dict); TorchScript and torch.export files need no model file")


@dataclass(frozen=True)
class ArchivePlan:
    """Everything one archive is built from; :func:`create_archive` turns it into a .mar."""

    name: str
    source: ModelSource
    handler: Path
    export_path: Path
    model_config: Mapping[str, Any]
    version: str = "1.0"
    labels: Optional[Mapping[str, str]] = None  # index_to_name.json
    extra_files: tuple[Path, ...] = ()
    bundle: bool = True
    layout: str = "mar"
    force: bool = False

    def __post_init__(self) -> None:
        if not self.name or not all(c.isalnum() or c in "_-." for c in self.name) or self.name[0] in "-.":
            raise ArchiveError(f"--name {self.name!r}: use letters, digits, '_', '-' or '.' (no leading '-' or '.')")
        if self.layout not in LAYOUTS:
            raise ArchiveError(f"--layout {self.layout!r}: use one of {list(LAYOUTS)}")

    @property
    def store(self) -> Path:
        """The folder the .mar goes into (KServe wants it in model-store/)."""
        return self.export_path / "model-store" if self.layout == "kserve" else self.export_path

    @property
    def output(self) -> Path:
        return self.store / (self.name if self.layout == "folder" else f"{self.name}.mar")


# ---- defaults and validation --------------------------------------------------------------------
def handler_file(handler: str) -> tuple[Path, Optional[str]]:
    """``image``/``text``/``tensor`` -> our handler file and its options section; else a path to your own."""
    if handler in HANDLERS:
        filename, section = HANDLERS[handler]
        return paths.handlers_dir() / filename, section
    path = Path(handler)
    if path.suffix != ".py" or not path.is_file():
        raise ArchiveError(f"--handler {handler!r} is neither one of {sorted(HANDLERS)} nor a .py file; "
                           "give image, text, tensor or the path of your handler file")
    return path, None


def optimizations_section(choice: Optional[str], ours: bool) -> Optional[dict[str, Any]]:
    """``--optimizations`` -> the ``handler: optimizations:`` section; None writes none.

    Default: auto (plugins/host_defaults.py) for our handlers, nothing for your own handler file."""
    from torchserve_perf.plugins.host_defaults import auto_optimizations

    if choice is None:
        return auto_optimizations() if ours else None
    if choice == "auto":
        return auto_optimizations()
    chain = [name.strip() for name in choice.split(",") if name.strip()]
    if not chain or "auto" in chain:
        raise ArchiveError(f"--optimizations {choice!r}: give auto, none, or plugin names joined by commas "
                           "(e.g. channels_last,torchscript)")
    return {"chain": ["none"]} if chain == ["none"] else {"chain": chain}


def default_model_config(section: Optional[str], options: Mapping[str, Any], *, workers: int, batch_size: int,
                         max_batch_delay: int, response_timeout: int,
                         optimizations: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The model-config.yaml we write: TorchServe's worker and batching keys plus our ``handler:`` section.

    Threads are left to the handler's default policy (``intra_op: auto`` splits the physical cores
    between the workers, elastic threads use idle ones), so the machine-specific choices here are
    the worker count and batching.
    """
    config: dict[str, Any] = {"minWorkers": workers, "maxWorkers": workers, "batchSize": batch_size,
                              "maxBatchDelay": max_batch_delay, "responseTimeout": response_timeout}
    handler: dict[str, Any] = {}
    if section and options:
        handler[section] = dict(options)
    if optimizations:
        handler["optimizations"] = dict(optimizations)
    if handler:
        config["handler"] = handler
    return config


def merge_model_config(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` (the user's --model-config file) wins key by key; ``handler:`` sections merge one level down."""
    merged = {**base, **{k: v for k, v in override.items() if k != "handler"}}
    handler = {k: dict(v) if isinstance(v, Mapping) else v for k, v in (base.get("handler") or {}).items()}
    for key, value in (override.get("handler") or {}).items():
        if isinstance(value, Mapping) and isinstance(handler.get(key), Mapping):
            handler[key] = {**handler[key], **value}
        else:
            handler[key] = value
    if handler:
        merged["handler"] = handler
    return merged


def check_model_config(config: Mapping[str, Any], section: Optional[str]) -> None:
    """TorchServe's keys are positive integers; our ``handler:`` section passes the handler's own validation."""
    for key in POSITIVE_INT_KEYS:
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ArchiveError(f"model-config {key}: {value!r} is not a positive integer; give e.g. {key}: 1")
    delay = config.get("maxBatchDelay")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int) or delay < 0):
        raise ArchiveError(f"model-config maxBatchDelay: {delay!r} is not a whole number of ms >= 0")
    if (config.get("minWorkers") or 1) > (config.get("maxWorkers") or config.get("minWorkers") or 1):
        raise ArchiveError("model-config minWorkers is above maxWorkers; make maxWorkers >= minWorkers")
    if section is None:
        return  # your own handler reads its own settings
    from torchserve_perf.handlers.options import ImageOptions, TensorOptions, TextOptions
    from torchserve_perf.handlers.settings import load_settings
    from torchserve_perf.plugins.config import HandlerConfigError
    from torchserve_perf.plugins.optimizations.registry import standard_registry

    options = {"image": ImageOptions, "text": TextOptions, "tensor": TensorOptions}[section]
    try:  # with the registry a worker loads, so a misspelt plugin fails here, not at serve time
        load_settings(config, {}, section, options, standard_registry())
    except HandlerConfigError as exc:
        raise ArchiveError(str(exc)) from None


def read_labels(path: Path) -> dict[str, str]:
    """index_to_name.json from a JSON mapping ({"0": "cat"}), a JSON list, or a text file of one label a line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ArchiveError(f"--labels {path}: {exc.strerror}; give an existing file") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchiveError(f"--labels {path}: not JSON ({exc.msg}, line {exc.lineno})") from None
        if isinstance(data, list):
            data = {str(i): label for i, label in enumerate(data)}
        if not isinstance(data, dict) or not all(str(k).isdigit() for k in data):
            raise ArchiveError(f"--labels {path}: give a list of labels or a mapping of class index to label")
        return {str(k): v if isinstance(v, (str, list)) else str(v) for k, v in data.items()}
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise ArchiveError(f"--labels {path} is empty; give one label a line or a JSON list")
    return {str(i): label for i, label in enumerate(labels)}


def split_extra_files(values: Sequence[str]) -> tuple[Path, ...]:
    """--extra-files takes paths one by one or comma-separated, as torch-model-archiver does."""
    found = []
    for value in values:
        for part in value.split(","):
            if part.strip():
                path = Path(part.strip())
                if not path.exists():
                    raise ArchiveError(f"--extra-files {path}: no such file or folder")
                found.append(path)
    return tuple(found)


def _check_extra_names(plan: ArchivePlan) -> None:
    """Extra files land at the archive's root by their own names: refuse names that clash."""
    taken = {"MAR-INF": "the archive's manifest", "model-config.yaml": "the generated model config",
             plan.handler.name: "the handler file", plan.source.serialized_file.name: "the serialized model"}
    if plan.source.model_file is not None:
        taken[plan.source.model_file.name] = "the model file"
    if plan.bundle:
        taken["torchserve_perf"] = "our bundled package (or give --no-bundle)"
    if plan.labels is not None:
        taken["index_to_name.json"] = "the --labels file"
    seen: set[str] = set()
    for path in plan.extra_files:
        if path.name in taken:
            raise ArchiveError(f"--extra-files {path}: the name {path.name!r} is already {taken[path.name]}; rename it")
        if path.name in seen:
            raise ArchiveError(f"--extra-files: two entries named {path.name!r}; each lands at the archive's root, "
                               "rename one")
        seen.add(path.name)


def check_plan(plan: ArchivePlan) -> None:
    """Cheap checks before the archiver runs; each failure names its fix."""
    source = plan.source
    if not source.serialized_file.is_file():
        raise ArchiveError(f"{source.serialized_file}: no such file")
    if source.model_file is not None and (source.model_file.suffix != ".py" or not source.model_file.is_file()):
        raise ArchiveError(f"--model-file {source.model_file}: give the .py file that defines your nn.Module class")
    if source.kind == "torchscript" and not _is_zip_with(source.serialized_file, ("constants.pkl", "/code/")):
        raise ArchiveError(f"--torchscript {source.serialized_file} is not a TorchScript file; save it with "
                           "torch.jit.save(torch.jit.script(model) or torch.jit.trace(model, x), path)")
    if source.kind == "export" and (source.serialized_file.suffix != ".pt2"
                                    or not _is_zip_with(source.serialized_file, ("",))):
        raise ArchiveError(f"--exported {source.serialized_file} is not a torch.export program; save it with "
                           "torch.export.save(torch.export.export(model, (x,)), 'model.pt2')")
    if not plan.handler.is_file():
        raise ArchiveError(f"--handler {plan.handler}: no such file")
    _check_extra_names(plan)
    if plan.output.exists() and not plan.force:
        raise ArchiveError(f"{plan.output} exists; give --force to overwrite it or another --name/--export-path")


def _is_zip_with(path: Path, markers: Sequence[str]) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(marker in name for name in archive.namelist() for marker in markers)
    except (zipfile.BadZipFile, OSError):
        return False


def verify_model(plan: ArchivePlan, input_shape: Optional[Sequence[int]], dtype: str = "float32") -> str:
    """Load the model the way a worker will (and run one row when the input shape is known).

    It runs in a child process whose model directory holds the model, its extra files and nothing
    else, with that directory importable as TorchServe makes it: a model file that imports its own
    sibling modules (``--extra-files``) loads here exactly when it will load in a worker.
    """
    source = plan.source
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        model_dir = Path(tmp)
        shutil.copy2(source.serialized_file, model_dir / source.serialized_file.name)
        manifest: dict[str, Any] = {"model": {"serializedFile": source.serialized_file.name}}
        if source.model_file is not None:
            shutil.copy2(source.model_file, model_dir / source.model_file.name)
            manifest["model"]["modelFile"] = source.model_file.name
        for path in plan.extra_files:
            if path.is_dir():
                shutil.copytree(path, model_dir / path.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(path, model_dir / path.name)
        request = json.dumps({"model_dir": str(model_dir), "manifest": manifest, "kind": source.kind,
                              "input_shape": list(input_shape) if input_shape else None, "dtype": dtype})
        code = "import sys; from torchserve_perf.tools.archive import _verify_child; _verify_child(sys.argv[1])"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(model_dir), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run([sys.executable, "-c", code, request], cwd=model_dir, env=env, capture_output=True,
                              text=True, timeout=600)
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if done.returncode != 0 or "error" in result or "ok" not in result:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ArchiveError(result.get("error") or f"the model check crashed: {tail[:300]} (give --no-verify to skip it)")
    return str(result["ok"])


def _verify_child(request_json: str) -> None:
    """The child of :func:`verify_model`: prints one JSON line, {"ok": ...} or {"error": ...}."""
    import torch

    from torchserve_perf.handlers.loading import eval_mode, load_archived_model

    request = json.loads(request_json)
    input_shape = request["input_shape"]

    def answer(**result: str) -> None:
        print(json.dumps(result), flush=True)

    try:
        model = eval_mode(load_archived_model(request["model_dir"], request["manifest"], torch.device("cpu")))
    except Exception as exc:  # anything a worker would die of, told at build time instead
        return answer(error=f"the model does not load: {type(exc).__name__}: {_first_line(exc)} "
                            "(fix the model, or give --no-verify to archive it anyway)")
    if not input_shape:
        return answer(ok="loads")
    dtypes = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "int32": torch.int32}
    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, *input_shape, dtype=dtypes[request["dtype"]]))
    except Exception as exc:
        hint = "fix --input-shape, or give --no-verify"
        if request["kind"] == "export":  # the usual cause: a batch size fixed at export time
            hint = ("export with a dynamic batch dimension, e.g. dynamic_shapes={'x': {0: torch.export.Dim("
                    "'batch')}}, or fix --input-shape")
        return answer(error=f"the model fails on one row of shape {input_shape}: {type(exc).__name__}: "
                            f"{_first_line(exc)} ({hint})")
    shape = list(out.shape) if hasattr(out, "shape") else type(out).__name__
    return answer(ok=f"loads; one row of {input_shape} -> {shape}")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else ""


# ---- building -----------------------------------------------------------------------------------
def archiver() -> str:
    """The torch-model-archiver beside this interpreter (a venv's), else the one on PATH."""
    found = paths.console_script("torch-model-archiver")
    if not Path(found).is_file():
        raise ArchiveError("torch-model-archiver is not installed; pip install torch-model-archiver")
    return found


def create_archive(plan: ArchivePlan) -> Path:
    """Stage the plan's files and run torch-model-archiver; returns the .mar (or folder, layout 'folder')."""
    import yaml

    check_plan(plan)
    plan.store.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"stage-{plan.name}-") as tmp:
        work = Path(tmp)
        # One staging folder given to --extra-files: its content lands at the archive's root, so the
        # bundled torchserve_perf/ and your own folders stay packages under their own names.
        extra = work / "extra"
        extra.mkdir()
        if plan.bundle:
            stage_packages(extra)
        if plan.labels is not None:
            (extra / "index_to_name.json").write_text(json.dumps(dict(plan.labels)))
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for path in plan.extra_files:
            if path.is_dir():
                shutil.copytree(path, extra / path.name, ignore=ignore)
            else:
                shutil.copy2(path, extra / path.name)
        config_path = work / "model-config.yaml"
        config_path.write_text(yaml.safe_dump(dict(plan.model_config), sort_keys=False))
        command = [archiver(), "--model-name", plan.name, "--version", plan.version,
                   "--serialized-file", str(plan.source.serialized_file), "--handler", str(plan.handler),
                   "--config-file", str(config_path), "--export-path", str(plan.store),
                   "--archive-format", "no-archive" if plan.layout == "folder" else "default", "--force"]
        if plan.source.model_file is not None:
            command += ["--model-file", str(plan.source.model_file)]
        if any(extra.iterdir()):
            command += ["--extra-files", str(extra)]
        # The archiver stages in $TMPDIR/<model name>: a private TMPDIR lets builds run side by side.
        done = subprocess.run(command, env={**os.environ, "TMPDIR": tmp, "TEMP": tmp, "TMP": tmp},
                              capture_output=True, text=True)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise RuntimeError(f"torch-model-archiver failed ({done.returncode}): {detail[-1] if detail else ''}")
    if plan.layout == "kserve":
        write_kserve_config(plan)
    return plan.output


def stage_packages(target: Path) -> None:
    """Copy the ``torchserve_perf`` namespace a worker needs into ``target`` (an --extra-files folder).

    Only what a worker imports: the package's ``__init__``, ``handlers`` and ``plugins`` (not the tools).
    """
    import torchserve_perf

    root = target / "torchserve_perf"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(torchserve_perf.__file__, root / "__init__.py")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(paths.handlers_dir(), root / "handlers", ignore=ignore)
    shutil.copytree(paths.plugins_dir(), root / "plugins", ignore=ignore)


# ---- the KServe layout ----------------------------------------------------------------------------
def kserve_properties(models: Mapping[str, Mapping[str, Any]], mount: str = KSERVE_MOUNT) -> str:
    """config/config.properties for KServe's TorchServe runtime, serving ``models`` (name -> model-config)."""
    snapshot = {"name": "startup.cfg", "modelCount": len(models), "models": {
        name: {"1.0": {"defaultVersion": True, "marName": f"{name}.mar",
                       "minWorkers": cfg.get("minWorkers", 1), "maxWorkers": cfg.get("maxWorkers", 1),
                       "batchSize": cfg.get("batchSize", 1), "maxBatchDelay": cfg.get("maxBatchDelay", 10),
                       "responseTimeout": cfg.get("responseTimeout", 120)}}
        for name, cfg in sorted(models.items())}}
    props = {
        # KServe's TorchServe runtime talks to these ports inside the pod.
        "inference_address": "http://0.0.0.0:8085",
        "management_address": "http://0.0.0.0:8085",
        "metrics_address": "http://0.0.0.0:8082",
        "grpc_inference_port": "7070",
        "grpc_management_port": "7071",
        "enable_metrics_api": "true",
        "metrics_mode": "prometheus",
        "metrics_config": f"{mount}/config/metrics.yaml",  # our metrics are dropped unless declared
        "enable_envvars_config": "true",
        "install_py_dep_per_model": "false",
        "model_store": f"{mount}/model-store",
        "model_snapshot": json.dumps(snapshot, separators=(",", ":")),
    }
    return "# Written by torchserve-perf archive --layout kserve\n" + "".join(f"{k}={v}\n" for k, v in props.items())


def write_kserve_config(plan: ArchivePlan) -> Path:
    """config/config.properties listing every model archived into this layout so far, plus metrics.yaml."""
    config_dir = plan.export_path / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "config.properties"
    models: dict[str, Mapping[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.startswith("model_snapshot="):
                for name, versions in json.loads(line.split("=", 1)[1]).get("models", {}).items():
                    models[name] = next(iter(versions.values()))
    models[plan.name] = plan.model_config
    path.write_text(kserve_properties(models))
    shutil.copy2(paths.metrics_yaml(), config_dir / "metrics.yaml")
    return path


# ---- the command ----------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = command_parser("archive", description=__doc__.splitlines()[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--name", required=True, help="model name (the URL is /predictions/NAME)")
    parser.add_argument("--version", default="1.0", help="model version (default 1.0)")
    model = parser.add_argument_group("the model (one of)")
    model.add_argument("--model-file", type=Path, help="eager: the .py file defining one nn.Module class")
    model.add_argument("--weights", type=Path, help="eager: its state dict (torch.save(model.state_dict(), path))")
    model.add_argument("--torchscript", type=Path, help="a TorchScript file (torch.jit.save)")
    model.add_argument("--exported", type=Path, help="a torch.export program (.pt2, torch.export.save)")
    handler = parser.add_argument_group("handler and its settings")
    handler.add_argument("--handler", default="tensor",
                         help="image, text, tensor (default) or the path of your own handler file")
    handler.add_argument("--input-shape", type=int, nargs="+", metavar="N",
                         help="tensor: shape of one row without the batch dimension (checked on every request)")
    handler.add_argument("--dtype", choices=("float32", "float64", "int64", "int32"), help="tensor: input dtype")
    handler.add_argument("--topk", type=int, help="image/text: labels returned per request")
    handler.add_argument("--labels", type=Path, help="index_to_name.json, a JSON list or a text file of one label a line")
    serve = parser.add_argument_group("serving defaults (written to model-config.yaml)")
    serve.add_argument("--workers", type=int, help="workers (default: the physical cores of this machine, one "
                                                   "intra-op thread each)")
    serve.add_argument("--batch-size", type=int, help="max batch size (default: from the host, see plugins/host_defaults.py)")
    serve.add_argument("--max-batch-delay", type=int,
                       help="ms to wait to fill a batch (default: from the host, 1 ms; TorchServe reads 0 as 100 ms)")
    serve.add_argument("--response-timeout", type=int, default=120, help="seconds (default 120)")
    serve.add_argument("--optimizations", metavar="auto|none|CHAIN",
                       help="auto (the default for our handlers): at load, the fastest lossless chain that "
                            "passes parity, cached per host; none: eager; or a chain such as "
                            "channels_last,torchscript (docs/optimizations.md)")
    serve.add_argument("--model-config", type=Path,
                       help="your own model-config.yaml, merged over the defaults (its handler: sections too)")
    out = parser.add_argument_group("output")
    out.add_argument("--extra-files", nargs="+", default=[], metavar="PATH",
                     help="files or folders put at the archive's root (comma-separated also works)")
    out.add_argument("--export-path", type=Path, default=Path("model_store"), help="default: model_store/")
    out.add_argument("--layout", choices=LAYOUTS, default="mar",
                     help="mar (default), folder (unpacked, --archive-format no-archive) or kserve "
                          "(model-store/NAME.mar + config/config.properties)")
    out.add_argument("--kserve-layout", dest="layout", action="store_const", const="kserve",
                     help="the same as --layout kserve")
    out.add_argument("--force", action="store_true", help="overwrite an existing archive")
    out.add_argument("--no-bundle", action="store_true",
                     help="leave torchserve_perf out (the server must have torchserve-perf installed)")
    out.add_argument("--no-verify", action="store_true", help="do not load the model before archiving")
    args = parser.parse_args(argv)
    given = [k for k in ("model_file", "torchscript", "exported") if getattr(args, k)]
    if len(given) != 1:
        parser.error("give one model: --model-file with --weights (eager), --torchscript FILE or --exported FILE.pt2")
    if args.model_file and not args.weights:
        parser.error("--model-file needs --weights (the state dict saved with torch.save(model.state_dict(), path))")
    if args.weights and not args.model_file:
        parser.error("--weights needs --model-file (the .py file with the nn.Module class)")
    kind = HANDLERS.get(args.handler, (None, None))[1]
    if args.input_shape is not None and kind != "tensor" or args.dtype and kind != "tensor":
        parser.error("--input-shape and --dtype are tensor handler settings; give --handler tensor or drop them")
    if args.topk is not None and kind not in ("image", "text"):
        parser.error("--topk is an image/text handler setting; give --handler image or text, or drop it")
    for key in ("workers", "batch_size", "response_timeout", "topk"):
        if getattr(args, key) is not None and getattr(args, key) < 1:
            parser.error(f"--{key.replace('_', '-')} must be at least 1")
    if args.max_batch_delay is not None and args.max_batch_delay < 0:
        parser.error("--max-batch-delay must be >= 0")
    return args


def plan_from_args(args: argparse.Namespace) -> tuple[ArchivePlan, Optional[str]]:
    import yaml

    if args.model_file:
        source = ModelSource("eager", args.weights, args.model_file)
    elif args.torchscript:
        source = ModelSource("torchscript", args.torchscript)
    else:
        source = ModelSource("export", args.exported)
    handler, section = handler_file(args.handler)
    options: dict[str, Any] = {}
    if args.input_shape:
        options["input_shape"] = list(args.input_shape)
    if args.dtype:
        options["dtype"] = args.dtype
    if args.topk is not None:
        options["topk"] = args.topk
    from torchserve_perf.plugins.host_defaults import detect

    host = detect()  # what the user leaves out comes from this host's cores and GPUs
    workers = args.workers if args.workers is not None else host.workers
    batch_size = args.batch_size if args.batch_size is not None else host.batch_size
    delay = args.max_batch_delay if args.max_batch_delay is not None else host.max_batch_delay_ms
    config = default_model_config(section, options, workers=workers, batch_size=batch_size,
                                  max_batch_delay=delay, response_timeout=args.response_timeout,
                                  optimizations=optimizations_section(args.optimizations, args.handler in HANDLERS))
    if args.model_config:
        try:
            override = yaml.safe_load(args.model_config.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ArchiveError(f"--model-config {args.model_config}: {exc}".splitlines()[0]) from None
        if not isinstance(override, dict):
            raise ArchiveError(f"--model-config {args.model_config}: expected a mapping of keys such as batchSize")
        config = merge_model_config(config, override)
    check_model_config(config, section)
    plan = ArchivePlan(name=args.name, version=args.version, source=source, handler=handler,
                       export_path=args.export_path, model_config=config,
                       labels=read_labels(args.labels) if args.labels else None,
                       extra_files=split_extra_files(args.extra_files), bundle=not args.no_bundle,
                       layout=args.layout, force=args.force)
    return plan, section


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        plan, section = plan_from_args(args)
        check_plan(plan)
        if not args.no_verify:
            shape = plan.model_config.get("handler", {}).get("tensor", {}).get("input_shape") \
                if section == "tensor" else None
            dtype = plan.model_config.get("handler", {}).get("tensor", {}).get("dtype", "float32")
            print(f"verified: {verify_model(plan, shape, dtype)}", flush=True)
        path = create_archive(plan)
    except ArchiveError as exc:
        sys.stderr.write(f"torchserve-perf archive: error: {exc}\n")
        return 2
    except (RuntimeError, OSError) as exc:  # the archiver itself failed, or the disk did
        sys.stderr.write(f"torchserve-perf archive: {exc}\n")
        return 1
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size
    print(f"built {path} ({size / 1e6:.1f} MB; {plan.source.kind}, handler {plan.handler.name}"
          f"{', torchserve_perf bundled' if plan.bundle else ''})")
    if plan.layout == "kserve":
        print(f"wrote {plan.export_path / 'config' / 'config.properties'} (KServe: storageUri -> {plan.export_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
