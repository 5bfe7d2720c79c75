"""torchserve-perf: one namespace, ``torchserve_perf``, mapped from the repository's fixed layout.

The repository keeps ``handlers/``, ``plugins/``, ``models/`` and ``scripts/`` at its root; this
file maps them into the package, so no top-level ``handlers`` or ``plugins`` module is installed
and a user's archive with folders of those names cannot collide with ours.
"""

from setuptools import setup

PACKAGE_DIR = {
    "torchserve_perf": "torchserve_perf",
    "torchserve_perf.handlers": "handlers",
    "torchserve_perf.plugins": "plugins",
    "torchserve_perf.plugins.metrics": "plugins/metrics",
    "torchserve_perf.plugins.optimizations": "plugins/optimizations",
    "torchserve_perf.plugins.profiler": "plugins/profiler",
    "torchserve_perf.models": "models",
    "torchserve_perf.fixtures": "scripts/fixtures",
    "torchserve_perf.tools": "torchserve_perf/tools",
    "torchserve_perf.tools.tuning": "torchserve_perf/tools/tuning",
}

setup(
    name="torchserve-perf",
    version="0.2.0",
    description="TorchServe handlers with per-worker thread policy, verified runtime optimizations, "
    "sampled Kineto profiling and per-worker Prometheus metrics, plus the tools to benchmark and tune them.",
    python_requires=">=3.9",
    packages=list(PACKAGE_DIR),
    package_dir=PACKAGE_DIR,
    package_data={"torchserve_perf.plugins.metrics": ["*.yaml"]},
    install_requires=[
        # What the handlers and plugins import inside a TorchServe worker.
        "torch>=2.1,<3",
        "torchserve>=0.11,<0.13",
        "torch-model-archiver>=0.11,<0.13",
        "psutil",
        "nvidia-ml-py",
        "pyyaml",
        "numpy",
        "pillow",
        # What the torchserve-perf command imports for archive, bench, tune, compare, traces and metrics
        # (bench, tune and traces draw PNGs).
        "requests",
        "matplotlib",
    ],
    extras_require={
        "onnx": ["onnx", "onnxscript", "onnxruntime"],
        # Traces in TensorBoard, Prometheus parsing, and LitServe for compare's litserve system.
        "tools": ["torch-tb-profiler", "tensorboard", "prometheus_client", "litserve"],
        # A v2 (Open Inference Protocol) client and offline Kubernetes manifest checks (docs/kubernetes.md).
        "kubernetes": ["tritonclient[http]", "kubernetes-validate"],
        # The fuzzer (tests/test_fuzz.py, make fuzz) and the dependency audit (make audit).
        "reliability": ["hypothesis", "pip-audit"],
    },
    entry_points={
        "console_scripts": ["torchserve-perf = torchserve_perf.cli:main"],
        "torchserve_perf.optimizations": [],
    },
)
