from setuptools import find_packages, setup

setup(
    name="torchserve-perf",
    version="0.1.0",
    description="TorchServe handlers with per-worker thread policy, verified runtime optimizations, "
    "sampled Kineto profiling and per-worker Prometheus metrics.",
    python_requires=">=3.9",
    packages=find_packages(include=["handlers", "handlers.*", "plugins", "plugins.*"]),
    package_data={"plugins": ["metrics/*.yaml"]},
    install_requires=[
        "torch>=2.1,<3",
        "torchserve>=0.11,<0.13",
        "torch-model-archiver>=0.11,<0.13",
        "torch-tb-profiler",
        "psutil",
        "nvidia-ml-py",
        "pyyaml",
        "numpy",
        "pillow",
    ],
    extras_require={"onnx": ["onnx", "onnxscript", "onnxruntime"]},
    entry_points={"torchserve_perf.optimizations": []},
)
