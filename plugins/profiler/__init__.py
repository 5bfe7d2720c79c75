"""Sampled, bounded Kineto profiling of handled batches (see docs/profiling.md)."""

from plugins.profiler.config import ProfilerConfig, Schedule, ScheduleConfig
from plugins.profiler.profiler import BatchProfiler
from plugins.profiler.schedule import Action, action_for

__all__ = ["Action", "BatchProfiler", "ProfilerConfig", "Schedule", "ScheduleConfig", "action_for"]
