"""The tools' library: load generation, server control, model-store build, bench, tune, compare, traces.

Used by the ``torchserve-perf`` command (:mod:`torchserve_perf.cli`) and by the test suite. Nothing
here is needed inside a TorchServe worker, so archives do not bundle it.
"""
