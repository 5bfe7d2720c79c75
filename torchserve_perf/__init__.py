"""torchserve-perf: TorchServe handlers with the performance checklist built in.

Everything lives under this one namespace, installed, bundled in a .mar or in a checkout:

- :mod:`torchserve_perf.handlers`: the BaseHandler subclasses given to ``--handler``;
- :mod:`torchserve_perf.plugins`: what they compose (threads, optimizations, profiler, metrics);
- :mod:`torchserve_perf.ts_compat`: every use of TorchServe's internals, behind one version check;
- :mod:`torchserve_perf.models`: the demo models, defined here with seeded weights;
- :mod:`torchserve_perf.tools`: the library behind the ``torchserve-perf`` command (archive,
  bench, tune, compare, traces, metrics) and the model-store build;
- :mod:`torchserve_perf.fixtures`: the comparison fixtures (stock handler, LitServe app).

Importing this package does nothing else: no side effects at import.
"""

__version__ = "0.2.0"
