"""Sampled, bounded Kineto profiling of handled batches (see docs/profiling.md)."""

from torchserve_perf.plugins.profiler.config import ProfilerConfig, Schedule, ScheduleConfig
from torchserve_perf.plugins.profiler.profiler import BatchProfiler
from torchserve_perf.plugins.profiler.schedule import Action, action_for

__all__ = ["Action", "BatchProfiler", "ProfilerConfig", "Schedule", "ScheduleConfig", "action_for"]
