"""The profiler's schedule as a table (batch number -> action) and its configuration."""

from __future__ import annotations

import pytest

from torchserve_perf.handlers.settings import load_settings
from torchserve_perf.plugins.config import HandlerConfigError, build
from torchserve_perf.plugins.profiler import Action, ProfilerConfig, action_for

N, W, R, S = Action.NONE, Action.WARMUP, Action.RECORD, Action.RECORD_AND_SAVE


def actions(config: dict, batches: int) -> list[Action]:
    schedule = build(ProfilerConfig, config, "profiler").resolved_schedule()
    return [action_for(n, schedule) for n in range(batches)]


@pytest.mark.parametrize("config, expected", [
    # default: skip 3, warm up 1, record 2, one window only
    ({}, [N, N, N, W, R, S, N, N, N, N]),
    ({"schedule": {"skip_first": 0, "warmup": 0, "active": 1}}, [S, N, N, N]),
    ({"schedule": {"skip_first": 1, "wait": 1, "warmup": 1, "active": 2, "repeat": 2}},
     [N, N, W, R, S, N, W, R, S, N, N, N]),
    ({"schedule": {"skip_first": 0, "wait": 2, "warmup": 0, "active": 1, "repeat": 0}},
     [N, N, S, N, N, S, N, N, S]),
    # every_n: a window every N batches, without a limit unless repeat says so
    ({"every_n": 4, "schedule": {"skip_first": 0, "warmup": 1, "active": 1}}, [W, S, N, N, W, S, N, N, W, S, N, N]),
    ({"every_n": 3, "schedule": {"skip_first": 2, "warmup": 0, "active": 1, "repeat": 2}},
     [N, N, S, N, N, S, N, N, N, N, N, N]),
    ({"every_n": 3, "schedule": {"skip_first": 1, "warmup": 1, "active": 2}}, [N, W, R, S, W, R, S, W]),
    ({"schedule": {"skip_first": 0, "warmup": 0, "active": 3}}, [R, R, S, N, N]),
    # active 0: only the X-Torch-Profile header records
    ({"schedule": {"skip_first": 0, "active": 0}}, [N, N, N, N]),
])
def test_schedule_table(config, expected):
    assert actions(config, len(expected)) == expected


def test_schedule_far_into_a_long_run():
    schedule = build(ProfilerConfig, {"every_n": 1000}, "profiler").resolved_schedule()
    assert [action_for(n, schedule) for n in (2, 3, 4, 5, 6)] == [N, W, R, S, N]
    assert [action_for(n, schedule) for n in (1002, 1003, 1004, 1005, 1006)] == [N, W, R, S, N]
    assert action_for(10**9 + 3, schedule) is W


@pytest.mark.parametrize("config, key", [
    ({"every_n": 5, "schedule": {"wait": 2}}, "profiler.every_n"),
    ({"every_n": 2, "schedule": {"warmup": 1, "active": 2}}, "profiler.every_n"),
    ({"schedule": {"active": -1}}, "profiler.schedule.active"),
    ({"schedule": {"repeat": -2}}, "profiler.schedule.repeat"),
    ({"schedule": {"activ": 2}}, "profiler.schedule.activ"),
    ({"activities": ["tpu"]}, "profiler.activities[0]"),
    ({"max_traces": -1}, "profiler.max_traces"),
    ({"max_mb": "lots"}, "profiler.max_mb"),
])
def test_bad_profiler_settings_name_the_key(config, key):
    with pytest.raises(HandlerConfigError) as error:
        build(ProfilerConfig, config, "profiler")
    assert error.value.key == key


@pytest.mark.parametrize("value, enabled", [
    ("1", True), ("true", True), ("on", True), ("anything", True),
    ("0", False), ("false", False), ("No", False), ("OFF", False), ("", False),
])
def test_enable_torch_profiler_variable(value, enabled):
    settings = load_settings({}, {"ENABLE_TORCH_PROFILER": value})
    assert settings.profiler.enabled is enabled


def test_environment_overrides_model_config_and_sets_the_directory(tmp_path):
    yaml_config = {"handler": {"profiler": {"enabled": True, "output_dir": "/somewhere"}}}
    settings = load_settings(yaml_config, {"ENABLE_TORCH_PROFILER": "off", "TS_PERF_PROFILER_DIR": str(tmp_path)})
    assert settings.profiler.enabled is False
    assert settings.profiler.directory("m", "1.0") == str(tmp_path)


def test_default_directory_is_stocks():
    config = ProfilerConfig()
    assert config.directory("resnet18", "1.0") == "/tmp/pytorch_profiler/resnet18"
    assert ProfilerConfig(output_dir="/t/{model_name}-{model_version}").directory("a", "2") == "/t/a-2"
