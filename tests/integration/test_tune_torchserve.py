"""torchserve-perf tune's evaluator on a real TorchServe: re-registers candidates through the management API."""

from __future__ import annotations

import json

from tests.conftest import png_bytes
from torchserve_perf.tools.model_store import default_specs
from torchserve_perf.tools.tuning import report
from torchserve_perf.tools.tuning.evaluate import LoadSettings, TorchServeEvaluator
from torchserve_perf.tools.tuning.objective import Objective
from torchserve_perf.tools.tuning.space import Candidate, SearchSpace
from torchserve_perf.tools.tuning.state import TuneState
from torchserve_perf.tools.tuning.strategy import Budget, Pruner, Session, run


def test_tuner_re_registers_candidates_and_writes_the_winner(tmp_path):
    spec = next(s for s in default_specs() if s.name == "resnet18")
    space = SearchSpace(workers=(1, 2), threads=(1,), batch_sizes=(1, 2), delays_ms=(5,), optimizations=((),))
    objective = Objective(p99_target_ms=60_000)  # a loaded test machine must still meet it
    load = LoadSettings(concurrency=2, duration_s=1.0, warmup_s=0.3)
    state = TuneState.open(tmp_path / "out" / "state.json", {"model": spec.name})
    start = Candidate(1, 1, 2, 5)
    with TorchServeEvaluator(spec, tmp_path / "work", png_bytes((320, 240), fmt="JPEG"), load,
                             progress=lambda _: None) as evaluator:
        session = Session(space, objective, evaluator, state, Budget(seconds=600, max_points=2), Pruner())
        outcome = run(session, "search", start, top_k=1, repeats=0)
        server = evaluator.server
        assert server is not None
        # The last candidate is what the management API now reports: its workers and batch size.
        described = server.manage("GET", f"models/{spec.name}").json()[0]
        last = state.candidates()[-1]
        assert len(described["workers"]) == last.workers and described["batchSize"] == last.batch_size
        access_log = server.read_log("access_log.log")
    assert server.processes() == []  # the evaluator stopped its server and every worker

    measured = state.candidates()
    assert len(measured) == 2 and {c.workers for c in measured} == {1, 2}
    for c in measured:
        a = state.aggregate(c)
        assert not a.failed, a.error
        assert a.throughput_rps > 0 and a.measurements[0].requests > 0
    registrations = [line for line in access_log.splitlines() if '"POST /models?' in line and '" 200 ' in line]
    assert len(registrations) == 2 and all("synchronous=true" in line for line in registrations)
    assert access_log.count('"DELETE /models/resnet18') >= 1  # the first candidate was unregistered

    info = report.RunInfo(model=spec.name, strategy="search", space=space, objective=objective, concurrency=2,
                          duration_s=1.0, warmup_s=0.3, start=start, best=outcome.best, confirmed=outcome.confirmed,
                          stopped_by_budget=outcome.stopped_by_budget, elapsed_s=1.0,
                          measured_this_run=session.measured, base_model_config=spec.model_config, physical_cores=2)
    out = tmp_path / "out"
    report.write(out, state, info)
    best = json.loads((out / "best.json").read_text())
    assert best["workers"] == outcome.best.workers and best["meets_target"]
    assert best["throughput_rps"] > 0 and best["optimizations"] == []
    assert "minWorkers" in (out / "model-config.yaml").read_text()
    assert (out / "config.properties").is_file() and (out / "tune.png").is_file()
