"""TorchServe handlers with thread policy, verified optimizations, sampled profiling and per-worker metrics."""
