"""``torchserve-perf bench --suite suite.yaml``: several models, payloads and loads into one report.

The suite file (paths in it are relative to the file)::

    name: nightly                  # optional; the report's title
    target:                        # a running server ...
      url: http://127.0.0.1:8080
      key_file: key_file.json      # or token: ...
    # target: {model_store: model_store}   # ... or one started from a store (archives: optional)
    defaults:                      # optional; each model may override any of these
      concurrency: [1, 4]
      rate: []                     # Poisson open loop, req/s
      duration: 10                 # seconds per run
      warmup: 2
      ceiling: false               # measure the client's own ceiling first
    models:
      - name: resnet18
        payloads: [cat.jpg]
      - name: mlp
        payloads: [row.json]
        concurrency: [1, 2, 8]
        rate: [50]

This module is the file format (validation, command-line overrides); bench runs it.
Command-line ``--url``/``--key-file``/``--token``/``--model-store`` replace the suite's target,
and ``--duration``/``--warmup``/``--quick`` every model's timings. Unknown keys are rejected with
the closest known one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from torchserve_perf.tools.yaml_files import read_yaml, reject_unknown


class SuiteError(ValueError):
    """A bad suite file; the message names the key and the fix."""


@dataclass(frozen=True)
class LoadSettings:
    concurrency: tuple[int, ...] = (1, 4)
    rate: tuple[float, ...] = ()
    duration: float = 10.0
    warmup: float = 2.0
    seed: int = 0
    max_in_flight: int = 64
    ceiling: bool = False


@dataclass(frozen=True)
class SuiteModel:
    name: str
    payloads: tuple[Path, ...]
    load: LoadSettings
    content_type: Optional[str] = None
    path: Optional[str] = None  # default /predictions/<name>
    archive: Optional[str] = None  # with a model store; default <name>.mar

    @property
    def request_path(self) -> str:
        return self.path or f"/predictions/{self.name}"


@dataclass(frozen=True)
class SuiteTarget:
    url: Optional[str] = None
    key_file: Optional[Path] = None
    token: Optional[str] = None
    model_store: Optional[Path] = None

    def __post_init__(self) -> None:
        if bool(self.url) == bool(self.model_store):
            raise SuiteError("target: give url (a running TorchServe) or model_store (start one), exactly one")
        if self.model_store and (self.key_file or self.token):
            raise SuiteError("target: a model_store server makes its own token; drop key_file/token")
        if self.key_file and self.token:
            raise SuiteError("target: give key_file or token, not both")


@dataclass(frozen=True)
class Suite:
    name: str
    target: Optional[SuiteTarget]  # None: given on the command line
    models: tuple[SuiteModel, ...]
    source: Path


LOAD_KEYS = {f.name for f in dataclasses.fields(LoadSettings)}
MODEL_KEYS = {"name", "payloads", "content_type", "path", "archive"} | LOAD_KEYS
TARGET_KEYS = {"url", "key_file", "token", "model_store"}
TOP_KEYS = {"name", "target", "defaults", "models"}


def _reject_unknown(where: str, data: Mapping[str, Any], known: set[str]) -> None:
    reject_unknown(where, data, known, SuiteError)


def _mapping(where: str, value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SuiteError(f"{where}: expected a mapping of keys, got {value!r}")
    return value


def _numbers(where: str, value: Any, kind: type, minimum: float, strict: bool) -> tuple:
    values = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not float(v).is_integer()):
            raise SuiteError(f"{where}: {v!r} is not a number; give e.g. {where.rsplit('.', 1)[-1]}: [1, 4]")
        if v < minimum or (strict and v == minimum):
            raise SuiteError(f"{where}: {v!r} must be {'>' if strict else '>='} {minimum:g}")
        out.append(kind(v))
    return tuple(out)


def _load_settings(where: str, data: Mapping[str, Any], base: LoadSettings) -> LoadSettings:
    changes: dict[str, Any] = {}
    for key in LOAD_KEYS & set(data):
        value, at = data[key], f"{where}.{key}"
        if key == "concurrency":
            changes[key] = _numbers(at, value, int, 1, False)
        elif key == "rate":
            changes[key] = _numbers(at, value, float, 0, True)
        elif key in ("duration",):
            changes[key] = _numbers(at, value, float, 0, True)[0]
        elif key == "warmup":
            changes[key] = _numbers(at, value, float, 0, False)[0]
        elif key in ("seed",):
            changes[key] = _numbers(at, value, int, 0, False)[0]
        elif key == "max_in_flight":
            changes[key] = _numbers(at, value, int, 1, False)[0]
        elif key == "ceiling":
            if not isinstance(value, bool):
                raise SuiteError(f"{at}: {value!r} is not true or false")
            changes[key] = value
    settings = dataclasses.replace(base, **changes)
    if not settings.concurrency and not settings.rate:
        raise SuiteError(f"{where}: no load; give concurrency: [1, 4] and/or rate: [20]")
    return settings


def _path(base: Path, value: Any, where: str) -> Path:
    if not isinstance(value, str) or not value:
        raise SuiteError(f"{where}: expected a path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def parse_suite(data: Any, source: Path) -> Suite:
    """Validate a loaded suite YAML; relative paths are taken from the suite file's folder."""
    top = _mapping("suite", data)
    _reject_unknown("suite", top, TOP_KEYS)
    base = source.parent
    target_data = _mapping("target", top.get("target"))
    _reject_unknown("target", target_data, TARGET_KEYS)
    target = SuiteTarget(
        url=str(target_data["url"]).rstrip("/") if target_data.get("url") else None,
        key_file=_path(base, target_data["key_file"], "target.key_file") if target_data.get("key_file") else None,
        token=str(target_data["token"]) if target_data.get("token") else None,
        model_store=_path(base, target_data["model_store"], "target.model_store")
        if target_data.get("model_store") else None,
    ) if target_data else None
    defaults_data = _mapping("defaults", top.get("defaults"))
    _reject_unknown("defaults", defaults_data, LOAD_KEYS)
    defaults = _load_settings("defaults", defaults_data, LoadSettings())
    raw_models = top.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise SuiteError("models: give a list of models, each with a name and payloads")
    models, seen = [], set()
    for i, raw in enumerate(raw_models):
        where = f"models[{i}]"
        entry = _mapping(where, raw)
        _reject_unknown(where, entry, MODEL_KEYS)
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise SuiteError(f"{where}: give the model's name (name: resnet18)")
        if name in seen:
            raise SuiteError(f"{where}: {name!r} is listed twice; merge the entries")
        seen.add(name)
        payloads = entry.get("payloads")
        if isinstance(payloads, str):
            payloads = [payloads]
        if not isinstance(payloads, list) or not payloads:
            raise SuiteError(f"{where}.payloads: give a list of request body files (payloads: [cat.jpg])")
        files = tuple(_path(base, p, f"{where}.payloads") for p in payloads)
        for file in files:
            if not file.is_file():
                raise SuiteError(f"{where}.payloads: {file} does not exist")
        models.append(SuiteModel(name=name, payloads=files, load=_load_settings(where, entry, defaults),
                                 content_type=entry.get("content_type"), path=entry.get("path"),
                                 archive=entry.get("archive")))
    title = top.get("name") or source.stem
    return Suite(name=str(title), target=target, models=tuple(models), source=source)


def load_suite(path: Path) -> Suite:
    return parse_suite(read_yaml(path, SuiteError), path.resolve())


def with_overrides(suite: Suite, *, url: Optional[str], key_file: Optional[Path], token: Optional[str],
                   model_store: Optional[Path], duration: Optional[float], warmup: Optional[float],
                   quick: bool) -> Suite:
    """The command line's target and timings win over the file's."""
    target = suite.target
    if url or model_store:
        target = SuiteTarget(url=url.rstrip("/") if url else None, key_file=key_file, token=token,
                             model_store=model_store)
    elif target is None:
        raise SuiteError(f"{suite.source.name}: no target; add target: {{url: ...}} or {{model_store: ...}}, "
                         "or give --url / --model-store")
    elif key_file or token:
        target = dataclasses.replace(target, key_file=key_file, token=token)
    models = []
    for model in suite.models:
        load = model.load
        if duration is not None:
            load = dataclasses.replace(load, duration=duration)
        if warmup is not None:
            load = dataclasses.replace(load, warmup=warmup)
        if quick:
            load = dataclasses.replace(load, duration=min(load.duration, 3.0), warmup=min(load.warmup, 1.0))
        models.append(dataclasses.replace(model, load=load))
    return dataclasses.replace(suite, target=target, models=tuple(models))
