"""test_worker: the tests that start real processes (TorchServe, the archiver, load clients)."""

from types import SimpleNamespace

from torchserve_perf.plugins.worker import WorkerIdentity


def test_gpu_id_comes_from_torchserve():
    context = SimpleNamespace(model_name="m", manifest={}, system_properties={"gpu_id": 1},
                              model_yaml_config={"minWorkers": 2})
    worker = WorkerIdentity.from_context(context, argv=["w", "--port", "9000"], environ={})
    assert worker.gpu_id == 1 and worker.index == 0 and worker.name == "W-9000-m_1.0"

