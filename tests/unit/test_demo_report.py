"""The demo's where-the-time-goes line, read from Kineto traces (no server)."""

import json

from torchserve_perf.tools.demo import print_side_by_side, where_the_time_goes


def _trace(path, worker, steps):
    events = []
    for i, (pre, inf, post, total, size) in enumerate(steps):
        t = i * 1_000_000
        events += [{"ph": "X", "name": f"ProfilerStep#{i}", "ts": t, "dur": total},
                   {"ph": "X", "cat": "user_annotation", "name": "preprocess", "ts": t, "dur": pre,
                    "args": {"batch_size": size}},
                   {"ph": "X", "cat": "user_annotation", "name": "inference", "ts": t + pre, "dur": inf},
                   {"ph": "X", "cat": "user_annotation", "name": "postprocess", "ts": t + pre + inf, "dur": post}]
    path.write_text(json.dumps({"traceEvents": events, "ts_perf": {"worker": worker}}))
    return path


def test_one_line_per_model_with_each_phase(tmp_path):
    files = [_trace(tmp_path / "a.pt.trace.json", "W-9000-resnet18_1.0", [(2000, 7000, 500, 10000, 2)]),
             _trace(tmp_path / "b.pt.trace.json", "W-9001-resnet18_1.0", [(4000, 13000, 500, 20000, 1)]),
             _trace(tmp_path / "c.pt.trace.json", "W-9002-text_classifier_1.0", [(100, 800, 50, 1000, 4)])]
    lines = where_the_time_goes(files)
    assert lines[0].startswith("\nwhere the time goes")
    resnet = next(line for line in lines if "resnet18" in line)
    assert "15.0 ms per batch, batch 1.5: preprocess 3.0 ms (20%), inference 10.0 ms (67%)" in resnet
    assert "other 1.5 ms" in resnet
    assert any("text_classifier" in line and "inference 0.8 ms (80%)" in line for line in lines)
    assert where_the_time_goes([]) == []


def test_side_by_side_table(capsys):
    run = lambda rps, p99: {"throughput_rps": rps, "p99_ms": p99}  # noqa: E731
    print_side_by_side({"stock": {1: run(20.0, 80.0), 4: run(10.0, 900.0)},
                        "ours": {1: run(25.0, 60.0), 4: run(30.0, 200.0)}})
    out = capsys.readouterr().out
    assert "      1         20.0       80        25.0       60       1.25x" in out
    assert "3.00x" in out
