"""TorchServe internals behind one module (torchserve_perf/ts_compat.py): the version gate as a table,
and each use against the installed TorchServe, once per supported release and once on an unknown one."""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path
from typing import Any, Optional

import pytest

from torchserve_perf import ts_compat

SUPPORTED_RELEASES = [f"{release}.0" for release in ts_compat.SUPPORTED]
UNKNOWN = "0.13.0"


# ---- the version gate ---------------------------------------------------------------------------
@pytest.mark.parametrize("version, release, supported", [
    ("0.11.0", "0.11", True),
    ("0.11.1", "0.11", True),
    ("0.12.0", "0.12", True),
    ("0.12.1", "0.12", True),
    ("0.12.0rc1", "0.12", True),
    ("0.12.0.dev20240101", "0.12", True),
    (" 0.12.0\n", "0.12", True),  # as read from a version.txt
    ("0.10.0", "0.10", False),
    ("0.13.0", "0.13", False),
    ("0.120.0", "0.120", False),
    ("1.0.0", "1.0", False),
    ("0", None, False),
    ("v0.12.0", None, False),
    ("", None, False),
    (None, None, False),
])
def test_the_supported_releases_as_a_table(version: Optional[str], release: Optional[str], supported: bool):
    assert ts_compat.release(version) == release
    assert ts_compat.is_supported(version) is supported


def test_the_installed_torchserve_is_a_supported_release():
    import ts

    assert ts_compat.installed_version() == ts.__version__
    assert ts_compat.is_supported(ts_compat.installed_version())


@pytest.mark.parametrize("version", SUPPORTED_RELEASES)
def test_a_supported_release_uses_the_internals_quietly(version: str, caplog):
    with caplog.at_level(logging.WARNING, logger="torchserve_perf.ts_compat"):
        assert ts_compat.internals_usable("something", "the safe path", version)
    assert caplog.records == []


@pytest.mark.parametrize("version, shown", [(UNKNOWN, UNKNOWN), ("garbage", "garbage")])
def test_an_unknown_release_warns_and_names_the_fallback(version: str, shown: str, caplog):
    with caplog.at_level(logging.WARNING, logger="torchserve_perf.ts_compat"):
        assert not ts_compat.internals_usable("the thing", "the safe path is taken", version)
    [record] = caplog.records
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert f"TorchServe {shown} is not a release" in message and "0.11, 0.12" in message
    assert "the thing is off; the safe path is taken" in message


def test_no_torchserve_at_all_reads_as_an_unknown_version(monkeypatch):
    monkeypatch.setitem(sys.modules, "ts", None)  # import ts raises ImportError
    assert ts_compat.installed_version() is None
    assert not ts_compat.internals_usable("the thing", "the safe path", None)


# ---- the kservev2 envelope, through TorchServe's own model loader ---------------------------------
ECHO_HANDLER = textwrap.dedent('''
    from torchserve_perf import ts_compat

    VERSION = None  # set by the test: the TorchServe release take_over_envelope believes it runs on


    class EchoHandler:
        def initialize(self, context):
            self.taken_over = ts_compat.take_over_envelope(context, self.handle, VERSION)

        def handle(self, data, context):
            return [row for row in data]
''')


def load_echo(tmp_path: Path, monkeypatch, envelope: Optional[str], version: Optional[str]) -> tuple[Any, Any]:
    """TorchServe's real loader wraps the handler in the envelope and calls its initialize."""
    from ts.model_loader import TsModelLoader

    name = f"echo_handler_{abs(hash((envelope, version)))}"
    (tmp_path / f"{name}.py").write_text(ECHO_HANDLER.replace("VERSION = None", f"VERSION = {version!r}"))
    monkeypatch.syspath_prepend(str(tmp_path))
    service = TsModelLoader().load("echo", str(tmp_path), f"{name}.py", None, 4, envelope)
    monkeypatch.delitem(sys.modules, name)
    owner = service._entry_point.__self__
    return service, owner._handle_fn.__self__ if hasattr(owner, "_handle_fn") else owner  # an envelope's


def v2_row(value: float) -> dict:
    return {"body": {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [value]}]}}


@pytest.mark.parametrize("version", SUPPORTED_RELEASES + [None])  # None: the installed TorchServe
def test_the_kservev2_envelope_is_taken_over_on_each_supported_release(tmp_path, monkeypatch, version):
    service, handler = load_echo(tmp_path, monkeypatch, "kservev2", version)
    assert handler.taken_over == "kservev2" and service._entry_point == handler.handle
    rows = [v2_row(i) for i in range(3)]
    assert service._entry_point(rows, service.context) == rows  # all three, not the first one's inputs


@pytest.mark.parametrize("envelope", [None, "json"])
def test_no_envelope_or_another_one_is_left_alone(tmp_path, monkeypatch, envelope):
    service, handler = load_echo(tmp_path, monkeypatch, envelope, None)
    assert handler.taken_over is None
    if envelope is None:
        assert service._entry_point == handler.handle
    else:
        assert service._entry_point != handler.handle  # still TorchServe's envelope


def test_an_unknown_release_keeps_torchserves_envelope(tmp_path, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING, logger="torchserve_perf.ts_compat"):
        service, handler = load_echo(tmp_path, monkeypatch, "kservev2", UNKNOWN)
    assert handler.taken_over is None
    envelope = service._entry_point.__self__
    assert type(envelope).__module__.endswith("kservev2") and envelope._handle_fn == handler.handle
    assert "the kservev2 envelope take-over is off" in caplog.text


def test_outside_torchserves_loader_there_is_nothing_to_take_over():
    class Handler:
        def handle(self, data: Any, context: Any) -> Any:
            return data

    assert ts_compat.take_over_envelope(object(), Handler().handle) is None


# ---- the worker's logging -----------------------------------------------------------------------
def worker_root() -> logging.Logger:
    """A root logger set up as TorchServe's worker sets it up: one bare-message stdout handler."""
    root = logging.Logger("worker-root")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    return root


@pytest.mark.parametrize("version", SUPPORTED_RELEASES + [None])
def test_in_a_worker_warnings_go_to_stderr_on_each_supported_release(version, capsys):
    logger = logging.Logger(f"ours-{version}")
    assert ts_compat.route_warnings_to_stderr(logger, worker_root(), version)
    logger.info("loaded")
    logger.warning("step dropped")
    out, err = capsys.readouterr()
    assert out == "loaded\n" and err == "WARNING step dropped\n"
    assert logger.propagate is False and logger.level == logging.INFO
    assert not ts_compat.route_warnings_to_stderr(logger, worker_root(), version)  # once: it has handlers now


def test_outside_a_worker_logging_is_left_alone():
    plain = logging.Logger("plain-root")
    plain.addHandler(logging.StreamHandler(sys.stderr))
    formatted = worker_root()
    formatted.handlers[0].setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    for root in (plain, formatted, logging.Logger("no-handlers")):
        logger = logging.Logger("ours")
        assert not ts_compat.is_worker_logging(root)
        assert not ts_compat.route_warnings_to_stderr(logger, root)
        assert logger.handlers == [] and logger.propagate


def test_an_unknown_release_leaves_the_worker_logging_as_it_is(caplog):
    logger = logging.Logger("ours")
    with caplog.at_level(logging.WARNING, logger="torchserve_perf.ts_compat"):
        assert not ts_compat.route_warnings_to_stderr(logger, worker_root(), UNKNOWN)
    assert logger.handlers == [] and "routing warnings to stderr is off" in caplog.text


def test_the_worker_process_sets_up_logging_as_checked():
    """TorchServe's own worker entry point configures the root logger the way is_worker_logging reads it."""
    import inspect

    import ts.model_service_worker as worker

    source = inspect.getsource(worker)
    assert 'logging.basicConfig(stream=sys.stdout, format="%(message)s", level=logging.INFO)' in source


# ---- the worker's port --------------------------------------------------------------------------
@pytest.mark.parametrize("argv, port", [
    (["model_service_worker.py", "--sock-type", "unix", "--sock-name", "/tmp/.ts.sock.9001"], 9001),
    (["model_service_worker.py", "--sock-name=/tmp/.ts.sock.9002"], 9002),
    (["model_service_worker.py", "--sock-type", "tcp", "--port", "9003"], 9003),
    (["model_service_worker.py", "--port=9004"], 9004),
    (["pytest", "-q"], None),
    (["model_service_worker.py", "--sock-name"], None),
])
def test_the_port_comes_from_the_worker_command_line(argv: list[str], port: Optional[int]):
    assert ts_compat.port_from_argv(argv) == port
