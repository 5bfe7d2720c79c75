"""Goals for the compare report: claims about measured ratios, read from a YAML file and judged by pure
functions. The report holds no goals of its own; ``torchserve-perf compare --goals FILE`` brings them.

A goals file::

    goals:
      - description: ours tuned vs stock defaults, throughput
        system: ours_tuned        # the system judged
        against: stock_default    # a system; a list (the one with the most throughput at that point);
                                  # or raw (the in-process limit, throughput only)
        at: 4                     # the measured concurrency nearest 4; each (a row per concurrency);
                                  # best (each system at its own best-throughput concurrency)
        comparison: ">="          # the ratio system / against, checked against threshold: >=, >, <=, <
        threshold: 4
        metric: throughput_rps    # optional: throughput_rps (default) or p99_ms
        p99_no_worse: false       # optional: also require the system's p99 <= the other's
        min_clients: 1            # optional, with at: each: only concurrencies in [min, max]
        max_clients: 8

A description may name ``{against}`` (the other system's title), ``{system_p99}`` and
``{against_p99}`` (ms at that point) and ``{limit_variant}`` (the in-process limit's variant).
Unknown keys and bad values are rejected when the file is loaded, with the fix.
"""

from __future__ import annotations

import dataclasses
import operator
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from torchserve_perf.tools.compare.analysis import metric, number, ratio
from torchserve_perf.tools.compare.config import SERVERS, SYSTEMS, TITLES
from torchserve_perf.tools.compare.results import SystemResult
from torchserve_perf.tools.yaml_files import read_yaml, reject_unknown

COMPARISONS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, ">": operator.gt, "<=": operator.le,
                                                          "<": operator.lt}
METRICS = ("throughput_rps", "p99_ms")
LIMIT = "raw"  # the in-process limit: one throughput, no concurrency, no p99
POINTS = ("each", "best")
PLACEHOLDERS = ("against", "system_p99", "against_p99", "limit_variant")


class GoalsError(ValueError):
    """A bad goal or goals file; the message is one line that names the key and the fix."""


@dataclass(frozen=True)
class Goal:
    description: str
    system: str
    against: tuple[str, ...]
    at: Union[int, str]  # a concurrency (the nearest measured one), "each" or "best"
    comparison: str
    threshold: float
    metric: str = "throughput_rps"
    p99_no_worse: bool = False
    min_clients: int = 1
    max_clients: Optional[int] = None

    def __post_init__(self) -> None:
        if self.system not in SERVERS:
            raise GoalsError(f"system: {self.system!r} is not a server; choose from {list(SERVERS)}")
        unknown = [k for k in self.against if k not in SYSTEMS]
        if not self.against or unknown:
            raise GoalsError(f"against: {unknown or 'nothing'} is not a system; choose from {list(SYSTEMS)}")
        if LIMIT in self.against and (len(self.against) > 1 or self.metric != "throughput_rps" or self.p99_no_worse):
            raise GoalsError("against: raw (the in-process limit) stands alone and has only a throughput; "
                             "drop the other systems, metric and p99_no_worse")
        if isinstance(self.at, bool) or not (self.at in POINTS or (isinstance(self.at, int) and self.at >= 1)):
            raise GoalsError(f"at: {self.at!r}; give a concurrency >= 1, each or best")
        if self.at != "each" and (self.min_clients != 1 or self.max_clients is not None):
            raise GoalsError("min_clients/max_clients apply only with at: each")
        if self.comparison not in COMPARISONS:
            raise GoalsError(f"comparison: {self.comparison!r}; choose from {list(COMPARISONS)}")
        if self.metric not in METRICS:
            raise GoalsError(f"metric: {self.metric!r}; choose from {list(METRICS)}")
        if self.threshold <= 0:
            raise GoalsError(f"threshold: {self.threshold:g} must be > 0 (a ratio)")
        try:
            named = {name for _, name, _, _ in string.Formatter().parse(self.description) if name is not None}
        except ValueError as exc:
            raise GoalsError(f"description: {exc}; write {{{{ and }}}} for literal braces") from None
        if named - set(PLACEHOLDERS):
            raise GoalsError(f"description: unknown placeholder {sorted(named - set(PLACEHOLDERS))}; "
                             f"use {', '.join('{' + p + '}' for p in PLACEHOLDERS)} (or {{{{ }}}} for braces)")

    @property
    def target(self) -> str:
        """The target as the report prints it, e.g. ``>= 1.3x, p99 <=``."""
        return f"{self.comparison} {self.threshold:g}x" + (", p99 <=" if self.p99_no_worse else "")


# ---- judging ----------------------------------------------------------------------------------------
Point = Union[int, str]  # a concurrency, or "best"


def points(goal: Goal, concurrencies: Sequence[int]) -> list[Point]:
    """Where ``goal`` is judged among the measured ``concurrencies``."""
    if goal.at == "best":
        return ["best"]
    if goal.at == "each":
        return [c for c in concurrencies if c >= goal.min_clients and (goal.max_clients is None
                                                                        or c <= goal.max_clients)]
    at = goal.at
    return [min(concurrencies, key=lambda c: abs(c - int(at)))] if concurrencies else []


def _best_concurrency(results: Mapping[str, SystemResult], key: str) -> Optional[int]:
    system = results.get(key)
    measured = [(run["throughput_rps"], c) for c, run in system.runs.items()] if system else []
    return max(measured)[1] if measured else None


def _value(results: Mapping[str, SystemResult], raw: Optional[dict], key: Optional[str], at: Point,
           name: str) -> Optional[float]:
    """System ``key``'s ``name`` at ``at`` clients (its best point for "best"); None when not measured."""
    if key is None:
        return None
    if key == LIMIT:
        return raw["limit"]["images_per_s"] if raw and name == "throughput_rps" else None
    c = _best_concurrency(results, key) if at == "best" else at
    return metric(results, key, int(c), name) if c is not None else None


def _other(goal: Goal, results: Mapping[str, SystemResult], at: Point) -> Optional[str]:
    """The system the goal is judged against here: its only one, or the one with the most throughput."""
    if len(goal.against) == 1:
        return goal.against[0]
    measured = [(t, key) for key in goal.against if (t := _value(results, None, key, at, "throughput_rps")) is not None]
    return max(measured)[1] if measured else None


def judge(goal: Goal, results: Mapping[str, SystemResult], raw: Optional[dict], at: Point) -> dict:
    """One row of the Goals table: the ratio at ``at``, the target and whether it was met (None: not measured)."""
    other = _other(goal, results, at)
    value = ratio(_value(results, raw, goal.system, at, goal.metric), _value(results, raw, other, at, goal.metric))
    passed = None if value is None else COMPARISONS[goal.comparison](value, goal.threshold)
    ours_p99, their_p99 = _value(results, raw, goal.system, at, "p99_ms"), _value(results, raw, other, at, "p99_ms")
    if goal.p99_no_worse:
        passed = None if passed is None or ours_p99 is None or their_p99 is None else passed and ours_p99 <= their_p99
    title = TITLES[other] if other else " or ".join(TITLES[k] for k in goal.against)
    text = goal.description.format(against=title, system_p99=number(ours_p99, 0), against_p99=number(their_p99, 0),
                                   limit_variant=raw["limit"]["variant"] if raw else "n/a")
    return {"goal": text, "value": value, "target": goal.target, "passed": passed, "concurrency": at,
            "against": other}


def evaluate(goals: Sequence[Goal], results: Mapping[str, SystemResult], raw: Optional[dict],
             concurrencies: Sequence[int]) -> list[dict]:
    """Every goal's rows, in order. A goal whose system was not run, or that is against an in-process
    limit that was not run, has none."""
    return [judge(goal, results, raw, at) for goal in goals
            if goal.system in results and not (goal.against == (LIMIT,) and raw is None)
            for at in points(goal, concurrencies)]


# ---- the file ---------------------------------------------------------------------------------------
FIELDS = {f.name: f for f in dataclasses.fields(Goal)}
REQUIRED = [name for name, f in FIELDS.items() if f.default is dataclasses.MISSING]


def _typed(where: str, key: str, value: Any) -> Any:
    """``value`` of goal field ``key`` in the type the Goal holds; GoalsError naming the fix when it is not."""
    if key == "against":
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) for v in items):
            raise GoalsError(f"{where}.against: give a system or a list of systems, e.g. [stock_default, stock_guided]")
        return tuple(items)
    if key in ("description", "system", "comparison", "metric"):
        if not isinstance(value, str):
            raise GoalsError(f"{where}.{key}: {value!r} is not text; quote it so YAML reads it as text")
        return value
    if key == "p99_no_worse":
        if not isinstance(value, bool):
            raise GoalsError(f"{where}.p99_no_worse: {value!r}; give true or false")
        return value
    if key == "at" and isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (key != "threshold" and value % 1):
        kind = "a number" if key == "threshold" else "a whole number" + (", each or best" if key == "at" else "")
        raise GoalsError(f"{where}.{key}: {value!r}; give {kind}")
    return float(value) if key == "threshold" else int(value)


def parse_goal(where: str, data: Any) -> Goal:
    """One goal from its mapping in a goals file."""
    if not isinstance(data, Mapping):
        raise GoalsError(f"{where}: expected a mapping of {', '.join(REQUIRED)}, got {data!r}")
    reject_unknown(where, data, FIELDS, GoalsError)
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise GoalsError(f"{where}: missing {', '.join(missing)}")
    values = {key: _typed(where, key, value) for key, value in data.items()}
    try:
        return Goal(**values)
    except GoalsError as exc:
        raise GoalsError(f"{where}.{exc}") from None


def load_goals(path: Path) -> tuple[Goal, ...]:
    """The goals in a YAML file (``goals:`` and a list), validated; GoalsError with a one-line message."""
    data = read_yaml(path, GoalsError)
    if not isinstance(data, Mapping):
        raise GoalsError(f"{path}: expected a mapping with a goals: list")
    reject_unknown(str(path), data, ["goals"], GoalsError)
    items = data.get("goals")
    if not isinstance(items, list):
        raise GoalsError(f"{path}: goals: expected a list of goals")
    return tuple(parse_goal(f"{path}: goals[{i}]", item) for i, item in enumerate(items))
