"""A pure function of the batch number: what the profiler does around that batch."""

from __future__ import annotations

import enum

from torchserve_perf.plugins.profiler.config import Schedule


class Action(enum.Enum):
    NONE = "none"  # profiler off for this batch
    WARMUP = "warmup"  # profiler prepared, events discarded
    RECORD = "record"  # batch recorded
    RECORD_AND_SAVE = "record_and_save"  # batch recorded, then the window is written out


def action_for(batch: int, schedule: Schedule) -> Action:
    """The action for handled batch number ``batch`` (0 is the worker's first batch)."""
    if batch < schedule.skip_first or schedule.active == 0:
        return Action.NONE
    offset = batch - schedule.skip_first
    if schedule.window_first:  # every_n: the window opens each cycle, the wait closes it
        offset += schedule.wait
    cycle, position = divmod(offset, schedule.period)
    if schedule.windows and cycle >= schedule.windows:
        return Action.NONE
    if position < schedule.wait:
        return Action.NONE
    if position < schedule.wait + schedule.warmup:
        return Action.WARMUP
    if position < schedule.period - 1:
        return Action.RECORD
    return Action.RECORD_AND_SAVE
