"""Search strategies over a :class:`SearchSpace`, generic over how a point is measured.

:func:`neighbourhood_search` starts from the guide's heuristic and expands, best first, the
neighbourhoods of the best points found so far (one step along each axis), until no point
within a margin of the best is left unexpanded. Points that are dominated by construction are
never measured (:class:`Pruner`). :func:`grid_search` measures everything, for comparison.
:func:`confirm` re-measures the best few, because one short measurement on a busy machine can
mislead, and the winner is chosen on the repeats.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Sequence

from torchserve_perf.tools.tuning.objective import Aggregate, Measurement, Objective, rank
from torchserve_perf.tools.tuning.space import Candidate, SearchSpace, optimization_label
from torchserve_perf.tools.tuning.state import TuneState

log = logging.getLogger(__name__)

Measure = Callable[[Candidate], Measurement]


class BudgetExhausted(Exception):
    pass


@dataclass
class Budget:
    """Wall-clock seconds for this run and a cap on distinct points measured (resumed ones count)."""

    seconds: float = float("inf")
    max_points: Optional[int] = None
    first_estimate_s: float = 15.0  # cost guess before anything was measured
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=float("nan"))
    costs: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.started != self.started:  # NaN: start now
            self.started = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def remaining(self) -> float:
        return self.seconds - self.elapsed()

    def estimate(self) -> float:
        return max(self.costs[-5:]) if self.costs else self.first_estimate_s

    def allows(self, *, new_point: bool, points: int) -> bool:
        if new_point and self.max_points is not None and points >= self.max_points:
            return False
        return self.remaining() >= self.estimate()


@dataclass
class Pruner:
    """Rules that mark a point dominated without measuring it.

    - batch sizes above the client concurrency: a closed loop never has more requests in flight,
      so such a batch never fills and every batch waits out the full delay; the largest batch
      size at or under the concurrency does the same work without the wait;
    - more threads in total than ``oversubscription`` x physical cores: workers then fight over
      cores, and the same layout with fewer threads per worker does no worse;
    - optimization chains that failed to load (a plugin missing or refusing the model): the
      chain is dropped for the rest of the run.
    """

    concurrency: Optional[int] = None
    physical_cores: Optional[int] = None
    oversubscription: float = 2.0
    failed_chains: set = field(default_factory=set)

    def reason(self, c: Candidate, space: SearchSpace) -> Optional[str]:
        if c.optimization in self.failed_chains:
            return f"optimization {optimization_label(c.optimization)} failed to load earlier"
        if self.concurrency:
            fitting = [b for b in space.batch_sizes if b <= self.concurrency]
            if fitting and c.batch_size > max(fitting):
                return f"batch size {c.batch_size} > concurrency {self.concurrency} never fills"
        if self.physical_cores and c.threads > space.threads[0] and \
                c.workers * c.threads > self.oversubscription * self.physical_cores:
            return f"{c.workers}x{c.threads} threads oversubscribe {self.physical_cores} cores"
        return None

    def learn(self, c: Candidate, m: Measurement) -> None:
        if m.error and c.optimization:
            if c.optimization not in self.failed_chains:
                log.warning("optimization %s failed to load (%s); skipping it from now on",
                            optimization_label(c.optimization), m.error)
            self.failed_chains.add(c.optimization)


@dataclass
class Session:
    """Measures points through the state record (cached points are free) within the budget."""

    space: SearchSpace
    objective: Objective
    measure: Measure
    state: TuneState
    budget: Budget
    pruner: Pruner = field(default_factory=Pruner)
    on_result: Optional[Callable[[Candidate, Aggregate, str], None]] = None
    measured: int = 0  # real measurements made by this run (not from the record)

    def evaluate(self, c: Candidate, *, repeat: int = 0, phase: str = "search") -> Aggregate:
        """The candidate's aggregate once it has at least ``repeat + 1`` measurements."""
        have = self.state.measurements(c)
        if len(have) <= repeat:
            new_point = not have
            if not self.budget.allows(new_point=new_point, points=len(self.state.candidates())):
                raise BudgetExhausted()
            began = self.budget.clock()
            m = self.measure(c)
            self.budget.costs.append(self.budget.clock() - began)
            self.measured += 1
            self.state.record(c, m, phase)
            self.pruner.learn(c, m)
            if self.on_result:
                self.on_result(c, self.state.aggregate(c), phase)
        return self.state.aggregate(c)

    def results(self) -> dict[Candidate, Aggregate]:
        return self.state.results()

    def pruned(self, c: Candidate) -> Optional[str]:
        return self.pruner.reason(c, self.space)


def neighbourhood_search(session: Session, start: Candidate, *, margin: float = 0.05, patience: int = 2,
                         hopeless_drop: float = 0.15, expanded: Optional[set] = None) -> Candidate:
    """Best-first search from ``start``; returns the best point found.

    Expanding a point measures all its neighbours (one step along each axis, the coupled
    workers/threads move, the other optimization choices) that are neither measured nor pruned.
    The next point expanded is the best one not yet expanded, as long as it meets the target
    with throughput within ``margin`` of the best: near-ties are expanded too, because on a
    noisy machine either may hide the real optimum next door. While nothing meets the target,
    the point with the lowest p99 is expanded, which walks towards the target. The search stops
    when no such point is left, or after ``patience`` expansions in a row found nothing better.

    A move that already cost more than ``hopeless_drop`` of the throughput every time it was
    measured elsewhere (say threads 2 -> 1 on one worker) is not tried again from another point.
    ``expanded`` carries the expanded points over to a later call, which then goes on from there.
    """
    space, objective = session.space, session.objective
    start = space.canonical(start)
    session.evaluate(start)
    expanded = set() if expanded is None else expanded
    best, stale = rank(session.results(), objective)[0], 0
    while stale < patience:
        nxt = _next_to_expand(session, expanded, margin, start)
        if nxt is None:
            break
        expanded.add(nxt)
        log.debug("expanding %s", nxt.label())
        for n in space.neighbours(nxt):
            if session.state.measurements(n) or session.pruned(n):
                continue
            if hopeless_drop and _hopeless(session.results(), nxt, n, hopeless_drop):
                log.info("skipping %s: the same move lost over %.0f%% wherever it was measured", n.label(),
                         hopeless_drop * 100)
                continue
            session.evaluate(n)
        combined = _combine_improvements(session, nxt)
        if combined is not None and not session.state.measurements(combined) and not session.pruned(combined):
            log.debug("trying the improving moves together: %s", combined.label())
            session.evaluate(combined)
        leader = rank(session.results(), objective)[0]
        best, stale = (leader, 0) if leader != best else (best, stale + 1)
    return best


def _combine_improvements(session: Session, base: Candidate) -> Optional[Candidate]:
    """``base`` with every move that beat it applied at once (the best one per field), when there are two or more.

    Moves along different axes that each help usually help together, so the search jumps there
    instead of walking one step at a time (a Hooke-Jeeves pattern move).
    """
    results = session.results()
    if base not in results:
        return None
    best_move: dict[tuple, tuple[tuple, Aggregate]] = {}
    for n in session.space.neighbours(base):
        if n in results and session.objective.better(results[n], results[base]):
            move = _change(base, n)
            fields = tuple(f for f, _, _ in move)
            held = best_move.get(fields)
            if held is None or session.objective.better(results[n], held[1]):
                best_move[fields] = (move, results[n])
    chosen: dict[str, Any] = {}  # Candidate field -> its new value, each field with its own type
    for fields in sorted(best_move, key=lambda f: session.objective.score(best_move[f][1]), reverse=True):
        if any(f in chosen for f in fields):
            continue  # overlaps a better move (split vs workers, say)
        chosen.update({f: to for f, _, to in best_move[fields][0]})
    if len({f for f in chosen}) < 2 or len(best_move) < 2:
        return None
    point = session.space.canonical(replace(base, **chosen))
    return point if session.space.contains(point) else None


def _change(a: Candidate, b: Candidate) -> tuple:
    """What differs from ``a`` to ``b``: ((field, from, to), ...)."""
    return tuple((f, getattr(a, f), getattr(b, f)) for f in Candidate.__dataclass_fields__
                 if getattr(a, f) != getattr(b, f))


def _hopeless(results: dict, base: Candidate, to: Candidate, drop: float) -> bool:
    """True when the move ``base -> to`` was measured elsewhere and lost over ``drop`` every time."""
    move = _change(base, to)
    ratios = []
    for a, ra in results.items():
        if ra.failed or not ra.throughput_rps:
            continue
        for b, rb in results.items():
            if a != base and _change(a, b) == move:
                ratios.append(rb.throughput_rps / ra.throughput_rps)
    return bool(ratios) and max(ratios) < 1 - drop


def _next_to_expand(session: Session, expanded: set, margin: float, start: Candidate) -> Optional[Candidate]:
    results = {c: a for c, a in session.results().items() if session.space.contains(c)}
    if start not in expanded:
        return start
    ordered = [c for c in rank(results, session.objective) if c not in expanded]
    feasible = [c for c in results if session.objective.feasible(results[c])]
    if feasible:
        top = max(results[c].throughput_rps for c in feasible)
        near = [c for c in ordered if session.objective.feasible(results[c])
                and results[c].throughput_rps >= top * (1 - margin)]
        return near[0] if near else None
    return ordered[0] if ordered else None


def grid_search(session: Session) -> None:
    """Every point of the grid, nothing pruned (the reference the tuner is judged against)."""
    for c in session.space.grid():
        session.evaluate(c, phase="grid")


def confirm(session: Session, top_k: int = 3, repeats: int = 1) -> list[Candidate]:
    """Re-measure the ``top_k`` best points ``repeats`` more times each; returns the ones re-measured."""
    confirmed: list[Candidate] = []
    results = session.results()
    ordered = [c for c in rank(results, session.objective) if not results[c].failed][:top_k]
    for c in ordered:
        try:
            for r in range(1, repeats + 1):
                session.evaluate(c, repeat=r, phase="confirm")
        except BudgetExhausted:
            break
        confirmed.append(c)
    return confirmed


def winner(session: Session, confirmed: Sequence[Candidate]) -> Optional[Candidate]:
    """The best re-measured point (a single lucky measurement cannot win over repeats); else the best."""
    results = session.results()
    pool = {c: results[c] for c in (confirmed or results)}
    ordered = rank(pool, session.objective)
    return ordered[0] if ordered and not pool[ordered[0]].failed else None


@dataclass
class Outcome:
    best: Optional[Candidate]
    confirmed: list[Candidate]
    stopped_by_budget: bool
    incumbent: Optional[Candidate] = None


def run(session: Session, strategy: str, start: Candidate, *, margin: float = 0.05, patience: int = 2,
        hopeless_drop: float = 0.15, top_k: int = 3, repeats: int = 1) -> Outcome:
    """Search (or sweep the grid), then confirm the top points, all within the session's budget.

    When the repeats change the leader, the search goes on around the new one (a few rounds at most).
    """
    stopped = False
    incumbent: Optional[Candidate] = None
    confirmed: list[Candidate] = []
    expanded: set[Candidate] = set()
    for _ in range(4):
        try:
            if strategy == "grid":
                grid_search(session)
            elif strategy == "search":
                before = len(expanded)
                incumbent = neighbourhood_search(session, start, margin=margin, patience=patience,
                                                 hopeless_drop=hopeless_drop, expanded=expanded)
                if confirmed and len(expanded) == before:
                    break  # the confirmed leader's neighbourhood is already explored
            else:
                raise ValueError(f"unknown strategy {strategy!r}: use 'search' or 'grid'")
        except BudgetExhausted:
            stopped = True
            log.warning("budget reached after %d points; reporting the best so far", len(session.state.candidates()))
        # Confirmation repeats are not new points, so a point cap does not stop them; the clock does.
        confirmed = confirm(session, top_k=top_k, repeats=repeats) if repeats > 0 else []
        if stopped or strategy == "grid" or not confirmed:
            break
        # Repeats may have knocked a lucky point off the top: search on around the new leader.
    return Outcome(best=winner(session, confirmed), confirmed=confirmed, stopped_by_budget=stopped,
                   incumbent=incumbent)
