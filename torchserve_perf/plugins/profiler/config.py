"""The profiler's settings: ``handler: profiler:`` in model-config.yaml."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from torchserve_perf.plugins.config import ConfigValueError

# Stock TorchServe's fixed location. /tmp is shared, which is why traces.make_private_dir creates it
# 0700, tightens an open one of ours, and warns about an open one that another user owns.
DEFAULT_ROOT = "/tmp/pytorch_profiler"  # noqa: S108


@dataclass(frozen=True)
class ScheduleConfig:
    """Which handled batches are profiled, counted from the worker's first batch (batch 0).

    After ``skip_first`` batches, each cycle is ``wait`` idle batches, ``warmup`` batches with the
    profiler started but discarding, then ``active`` recorded batches saved as one trace.
    ``repeat`` cycles run (0: no limit; unset: 1, or no limit when ``every_n`` is set).
    """

    skip_first: int = 3
    wait: int = 0
    warmup: int = 1
    active: int = 2
    repeat: Optional[int] = None

    def __post_init__(self) -> None:
        for name in ("skip_first", "wait", "warmup", "active"):
            if getattr(self, name) < 0:
                raise ConfigValueError(name, f"{getattr(self, name)} is negative", "give 0 or more batches")
        if self.repeat is not None and self.repeat < 0:
            raise ConfigValueError("repeat", f"{self.repeat} is negative", "give 0 (no limit) or a number of windows")


@dataclass(frozen=True)
class Schedule:
    """The resolved schedule :func:`torchserve_perf.plugins.profiler.schedule.action_for` reads."""

    skip_first: int
    wait: int
    warmup: int
    active: int
    windows: int  # 0: no limit
    window_first: bool = False  # cycles start with the window, not the wait (every_n)

    @property
    def period(self) -> int:
        return self.wait + self.warmup + self.active


@dataclass(frozen=True)
class ProfilerConfig:
    enabled: bool = False
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    # A window starts right after skip_first and then every N handled batches; 0: use wait.
    every_n: int = 0
    activities: tuple[Literal["cpu", "cuda"], ...] = ("cpu", "cuda")  # cuda only where available
    record_shapes: bool = True
    profile_memory: bool = False
    with_stack: bool = False
    # "" -> /tmp/pytorch_profiler/{model_name}, like stock; {model_name} and {model_version} are filled in.
    output_dir: str = ""
    max_traces: int = 10  # per worker; 0: no limit
    max_mb: float = 100.0  # per worker; 0: no limit
    header: bool = True  # honour the X-Torch-Profile request header (only while enabled)

    def __post_init__(self) -> None:
        if self.every_n < 0:
            raise ConfigValueError("every_n", f"{self.every_n} is negative", "give 0 (off) or a number of batches")
        if self.every_n:
            window = self.schedule.warmup + self.schedule.active
            if self.schedule.wait:
                raise ConfigValueError("every_n", "both every_n and schedule.wait are set",
                                       "give one of them: every_n sets the wait for you")
            if self.every_n < window:
                raise ConfigValueError("every_n", f"{self.every_n} is shorter than warmup + active ({window})",
                                       f"give every_n >= {window}, or shorten the window")
        if "cpu" not in self.activities and "cuda" not in self.activities:
            raise ConfigValueError("activities", "no activity to record", "list cpu, cuda or both")
        if self.max_traces < 0:
            raise ConfigValueError("max_traces", f"{self.max_traces} is negative", "give 0 (no limit) or more")
        if self.max_mb < 0:
            raise ConfigValueError("max_mb", f"{self.max_mb} is negative", "give 0 (no limit) or more")

    def resolved_schedule(self) -> Schedule:
        s = self.schedule
        wait = self.every_n - s.warmup - s.active if self.every_n else s.wait
        windows = s.repeat if s.repeat is not None else (0 if self.every_n else 1)
        return Schedule(skip_first=s.skip_first, wait=wait, warmup=s.warmup, active=s.active, windows=windows,
                        window_first=bool(self.every_n))

    def directory(self, model_name: str, model_version: str) -> str:
        template = self.output_dir or f"{DEFAULT_ROOT}/{{model_name}}"
        return template.replace("{model_name}", model_name).replace("{model_version}", model_version)
