from dataclasses import dataclass

import pytest

from torchserve_perf.handlers.options import ImageOptions
from torchserve_perf.handlers.settings import load_settings
from torchserve_perf.plugins.config import HandlerConfigError, apply_env_overrides


def test_defaults_when_there_is_no_handler_section():
    settings = load_settings({}, {})
    assert settings.threads.intra_op == "auto" and settings.profiler.enabled is False
    assert settings.options is None


def test_unknown_key_names_the_key_and_the_fix():
    with pytest.raises(HandlerConfigError) as info:
        load_settings({"handler": {"threads": {"intra_ops": 2}}}, {})
    message = str(info.value)
    assert "handler.threads.intra_ops" in message and "did you mean 'intra_op'" in message


def test_unknown_section_is_rejected():
    with pytest.raises(HandlerConfigError, match=r"handler\.imgae.*did you mean 'image'"):
        load_settings({"handler": {"imgae": {}}}, {}, "image", ImageOptions)


def test_bad_values_are_rejected_with_the_key():
    with pytest.raises(HandlerConfigError, match=r"handler\.threads\.inter_op: 'two' is not an integer"):
        load_settings({"handler": {"threads": {"inter_op": "two"}}}, {})
    with pytest.raises(HandlerConfigError, match=r"handler\.image\.resize"):
        load_settings({"handler": {"image": {"resize": 100, "crop": 224}}}, {}, "image", ImageOptions)


def test_config_error_is_a_runtime_error_so_registration_fails_instead_of_crash_looping():
    assert issubclass(HandlerConfigError, RuntimeError) and not issubclass(HandlerConfigError, ValueError)


@pytest.mark.parametrize("value, enabled", [("1", True), ("TRUE", True), ("yes", True), ("anything", True),
                                            ("0", False), ("false", False), ("No", False), ("off", False)])
def test_enable_torch_profiler_values(value, enabled):
    settings = load_settings({"handler": {"profiler": {"enabled": not enabled}}}, {"ENABLE_TORCH_PROFILER": value})
    assert settings.profiler.enabled is enabled


def test_empty_environment_variable_counts_as_unset():
    assert apply_env_overrides({"threads": {"intra_op": 2}}, {"TS_PERF_INTRA_OP_THREADS": ""}) == {"threads": {"intra_op": 2}}


def test_env_overrides_do_not_mutate_the_model_config():
    section = {"threads": {"intra_op": 2}}
    apply_env_overrides(section, {"TS_PERF_INTRA_OP_THREADS": "4"})
    assert section == {"threads": {"intra_op": 2}}
    settings = load_settings({"handler": section}, {"TS_PERF_INTRA_OP_THREADS": "4"})
    assert settings.threads.intra_op == 4


def test_settings_are_frozen():
    settings = load_settings({}, {})
    with pytest.raises(Exception):
        settings.threads.intra_op = 3  # type: ignore[misc]


@dataclass(frozen=True)
class _Counts:
    sessions: int = 1
    models: int = 1


@pytest.mark.parametrize("sessions, models, refused", [
    (1, 1, None),
    (3, 2, None),
    (0, 1, "sessions"),
    (1, -2, "models"),
    (0, 0, "sessions"),  # the first one named
])
def test_at_least_one_table(sessions, models, refused):
    from torchserve_perf.plugins.config import ConfigValueError, at_least_one

    counts = _Counts(sessions, models)
    if refused is None:
        at_least_one(counts, "sessions", "models")
        return
    with pytest.raises(ConfigValueError) as info:
        at_least_one(counts, "sessions", "models", fix="give one or more")
    assert info.value.field == refused and "is below 1" in info.value.problem and info.value.fix == "give one or more"
