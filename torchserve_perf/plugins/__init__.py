"""Capabilities the torchserve-perf handlers compose: thread policy, optimizations, profiler, metrics."""
