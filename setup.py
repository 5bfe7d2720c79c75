"""torchserve-perf: one namespace, ``torchserve_perf``, whose import paths are its file paths.

Every module lives under ``torchserve_perf/`` (``torchserve_perf/handlers/base.py`` is
``torchserve_perf.handlers.base``), so static tools resolve imports from a plain checkout. The
repository's ``handlers`` and ``plugins`` at the root are symbolic links into the package, kept for
the project's fixed layout; the wheel installs no top-level ``handlers`` or ``plugins``.
"""

from setuptools import find_packages, setup

setup(
    name="torchserve-perf",
    version="0.2.0",
    description="TorchServe handlers with per-worker thread policy, verified runtime optimizations, "
    "sampled Kineto profiling and per-worker Prometheus metrics, plus the tools to benchmark and tune them.",
    python_requires=">=3.9",
    packages=find_packages(include=["torchserve_perf", "torchserve_perf.*"]),
    package_data={"torchserve_perf.plugins.metrics": ["*.yaml"], "torchserve_perf.models": ["corpus/*.tsv", "corpus/*.json"]},
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
        # OpenVINO fp32/bf16 and NNCF int8 (plugins/optimizations/openvino_runtime.py; docs/int8.md).
        "openvino": ["openvino", "nncf"],
        # The digits CNN trained to measure what int8 costs in accuracy (models/digits_training.py).
        "accuracy": ["scikit-learn"],
        # Traces in TensorBoard, Prometheus parsing, and LitServe for compare's litserve system.
        "tools": ["torch-tb-profiler", "tensorboard", "prometheus_client", "litserve"],
        # A v2 (Open Inference Protocol) client and offline Kubernetes manifest checks (docs/kubernetes.md).
        "kubernetes": ["tritonclient[http]", "kubernetes-validate"],
        # The fuzzer (tests/e2e/test_fuzz.py, make fuzz) and the dependency audit (make audit).
        "reliability": ["hypothesis", "pip-audit"],
        # gRPC clients for bench --protocol grpc|v2-grpc and compare --transports (docs/transports.md).
        "grpc": ["grpcio", "grpcio-tools"],
        # Hugging Face Transformers models (handlers/transformers_handler.py, archive --hf-model; docs/transformers.md).
        "hf": ["transformers>=4.40", "tokenizers", "safetensors"],
    },
    entry_points={
        "console_scripts": ["torchserve-perf = torchserve_perf.cli:main"],
        "torchserve_perf.optimizations": [],
    },
)
