
from types import SimpleNamespace

import pytest

from torchserve_perf.plugins.worker import WorkerIdentity, configured_workers, port_from_argv


@pytest.mark.parametrize("argv, port", [
    (["ts/model_service_worker.py", "--sock-type", "unix", "--sock-name", "/tmp/.ts.sock.9003"], 9003),
    (["w.py", "--sock-type", "tcp", "--port", "9010", "--host", "127.0.0.1"], 9010),
    (["w.py", "--sock-name=/x/.ts.sock.9001"], 9001),
    (["pytest", "-q"], None),
])
def test_port_is_read_from_the_worker_argv(argv, port):
    assert port_from_argv(argv) == port


def test_worker_name_matches_torchserve_naming():
    context = SimpleNamespace(model_name="resnet18", manifest={"model": {"modelVersion": "1.0"}},
                              system_properties={"gpu_id": None}, model_yaml_config={"minWorkers": 2})
    worker = WorkerIdentity.from_context(context, argv=["w", "--sock-name", "/t/.ts.sock.9001"], environ={})
    assert worker.name == "W-9001-resnet18_1.0"
    assert worker.workers == 2 and worker.index == 1 and worker.gpu_id is None


def test_worker_count_falls_back_to_torchserve_default(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    assert configured_workers({}, {}) == 6  # the frontend's default: one per CPU it may use
    assert configured_workers({}, {}, gpus=2) == 2  # ... or one per GPU
    assert configured_workers({}, {"TS_DEFAULT_WORKERS_PER_MODEL": "3"}) == 3
    assert configured_workers({"minWorkers": 4}, {"TS_DEFAULT_WORKERS_PER_MODEL": "3"}) == 4

