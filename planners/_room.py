"""Whether linear parameter constraints leave a design room to sample, decided exactly.

A constraint no point within the bounds can meet, constraints that conflict only together,
or float constraints that leave no volume (an equality written as two inequalities) make
every design draw fail, or return one point again and again. One constraint's largest
slack over the bounds is exact and cheap; several are checked together by one small linear
program (SciPy's HiGHS, imported only then), without sampling and without torch, so
``closedloop validate`` stays light. Nonlinear constraints, and constraints over whole
numbers, are judged by drawing (:class:`planners.PositionalDesign`).

The one check for a campaign file (the loader names the constraint's line) and for a
script: :func:`planners.make_planner` runs it too, so a ``Space`` built in Python with
``x + y <= 1`` and ``x + y >= 1`` is refused as a file is (it proposed ``{x: 1, y: 0}``
three times; found in review).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from planners._constraints import ParameterConstraint
from planners._space import FloatParameter

if TYPE_CHECKING:
    from planners._space import Space


class ConstraintsLeaveNoRoom(ValueError):
    """Linear parameter constraints that no point meets, or that leave float parameters
    no volume to sample.

    Attributes:
        problem: what is wrong, naming the constraints (``constraints[1] 'x + y >= 1'``).
        index: the position in the space's constraints where the fix most likely goes.
        fix: what to do about it.
    """

    def __init__(self, problem: str, *, index: int, fix: str) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.index = index
        self.fix = fix


def check_room(space: Space) -> None:
    """Raise :class:`ConstraintsLeaveNoRoom` if the space's linear constraints cannot all
    hold within the bounds, or leave its float parameters no room.

    Decided once per ``Space`` (the loader and then the planner built from it ask).
    """
    if space.room_checked:
        return
    ranges: dict[str, tuple[float, float]] = {}
    for p in space.parameters:
        bounds = getattr(p, "bounds", None)
        values = getattr(p, "values", None)
        if bounds is not None:
            ranges[p.name] = (float(bounds[0]), float(bounds[1]))
        elif values is not None and all(_is_number(v) for v in values):
            ranges[p.name] = (float(min(values)), float(max(values)))
    for constraint in space.constraints:
        if not constraint.is_linear or any(n not in ranges for n in constraint.coefficients):
            continue
        best = constraint.constant
        scale = 1.0 + abs(constraint.constant)
        for name, c in constraint.coefficients.items():
            lo, hi = ranges[name]
            best += c * (hi if c > 0 else lo)
            scale += abs(c) * max(abs(lo), abs(hi))
        if best >= -1e-9 * scale:  # the planners' rounding tolerance, roughly
            continue
        within = [f"{n} in [{ranges[n][0]:g}, {ranges[n][1]:g}]" for n in constraint.coefficients]
        if len(within) > _BOUNDS_SHOWN:
            within[_BOUNDS_SHOWN - 1 :] = [f"and {len(within) - _BOUNDS_SHOWN + 1} more"]
        raise ConstraintsLeaveNoRoom(
            f"{_constraint_shown(constraint)} can never hold: no point within the bounds "
            f"({', '.join(within)}) meets it (it misses by {-best:.6g} at best)",
            index=constraint.index,
            fix="check the constraint's direction (<= or >=) and numbers against the "
            "parameters' bounds, or widen the bounds",
        )
    linear = [
        c
        for c in space.constraints
        if c.is_linear and c.coefficients and all(n in ranges for n in c.coefficients)
    ]
    floats = {p.name for p in space.parameters if isinstance(p, FloatParameter)}
    if linear:
        _check_jointly(linear, ranges, floats)
    space.room_checked = True


#: The most parameters' bounds an infeasible constraint's message lists, and the most
#: characters of a constraint it quotes: a 40-term sum was quoted whole, with every
#: parameter's bounds (found in review); the line number finds the rest.
_BOUNDS_SHOWN = 8
_CONSTRAINT_CHARS = 80


def _constraint_shown(constraint: ParameterConstraint) -> str:
    """``constraints[2] 'x1 + x2 <= 1'`` for a message, its text cut to a readable length
    (``repr`` cut with "…", as messages elsewhere cut a long value)."""
    text = repr(constraint.text)
    if len(text) > _CONSTRAINT_CHARS:
        text = f"{text[: _CONSTRAINT_CHARS - 1]}… ({len(constraint.text)} characters)"
    return f"constraints[{constraint.index}] {text}"


def _check_jointly(
    constraints: Sequence[ParameterConstraint],
    ranges: Mapping[str, tuple[float, float]],
    floats: set[str],
) -> None:
    """Linear constraints that conflict only together, or that squeeze float parameters
    into a region of no volume.

    ``_room`` gives the largest margin by which every constraint can hold at once, in units
    of the box (each parameter scaled to [0, 1], each constraint to a unit normal): below
    zero nothing meets them all; zero means the feasible points form a surface, which no
    design or optimiser of float parameters can sample (``x + y <= 3`` and ``x + y >= 3``).
    Over integer or choice parameters a surface may still hold whole points, so only a
    conflict is refused there, and the floats' room is judged with the constraints over no
    float held as they are, with no margin asked of them: an integer equality
    (``n + m <= 7``, ``n + m >= 7``) squeezes no float, and beside an unrelated
    ``x <= 0.9`` it was refused as leaving "the float parameters no room" (found in
    review). Such constraints still count where they push a float's constraint to its
    edge (``n >= 5`` with ``x + n <= 5``, x in [0, 1]: x = 0). The smallest offending group
    is named: a pair if one is at fault, else all of them, leaving out one at a time each
    constraint without which the rest are still at fault (an unrelated one is not named).
    """
    room = _room(constraints, ranges)
    if room > _ROOM_TOLERANCE:
        return
    conflict = room < -_ROOM_TOLERANCE

    def at_fault(group: Sequence[ParameterConstraint]) -> bool:
        if conflict:
            return _room(group, ranges) < -_ROOM_TOLERANCE
        squeezing = [c for c in group if set(c.coefficients) & floats]
        held = [c for c in group if not set(c.coefficients) & floats]
        return bool(squeezing) and _room(squeezing, ranges, held=held) <= _ROOM_TOLERANCE

    smaller = [[c] for c in constraints] if not conflict else []  # singles: checked above
    smaller += [[a, b] for i, a in enumerate(constraints) for b in constraints[i + 1 :]]
    group = next((g for g in smaller if at_fault(g)), None)
    if group is None:
        group = list(constraints)
        if not at_fault(group):
            return  # a surface through integer points: the planners can search it
        for c in list(group):  # leave out every constraint the rest are at fault without
            if len(group) > 1 and at_fault(rest := [g for g in group if g is not c]):
                group = rest
    texts = " and ".join(_constraint_shown(c) for c in group)
    index = group[-1].index  # where the fix goes: the last of them
    if conflict:
        raise ConstraintsLeaveNoRoom(
            f"{texts} can never hold together: no point within the bounds meets all of them",
            index=index,
            fix="check their directions (<= or >=) and numbers against each other and the "
            "parameters' bounds",
        )
    them = "it" if len(group) == 1 else "them"
    raise ConstraintsLeaveNoRoom(
        f"{texts} leave{'s' * (len(group) == 1)} the float parameters no room: the points "
        f"that meet {them} lie on a surface or at a corner (an equality), which no design "
        "or optimiser can sample",
        index=index,
        fix="for an equality, fix one parameter with `type: fixed`, or express one parameter "
        "through the others in your instrument; or give the constraints some slack",
    )


#: Margin (in box units) below which constraints are taken to leave no room: far above
#: the LP solver's rounding, far below any region a design could sample.
_ROOM_TOLERANCE = 1e-9


def _room(
    constraints: Sequence[ParameterConstraint],
    ranges: Mapping[str, tuple[float, float]],
    held: Sequence[ParameterConstraint] = (),
) -> float:
    """The largest ``t`` such that every constraint holds with slack ``t``, each parameter
    scaled to [0, 1] and each constraint's normal to unit length (capped at 1), while
    every ``held`` constraint holds with no slack asked of it (below zero if they cannot
    all hold: then nothing meets them, which the check of all constraints judges)."""
    import numpy as np

    names = sorted({n for c in [*constraints, *held] for n in c.coefficients})
    rows, limits = [], []
    for c, weight in [(c, 1.0) for c in constraints] + [(c, 0.0) for c in held]:
        # slack = constant + sum(coef * x) >= t with x = lo + (hi - lo) * u, i.e.
        # -a.u + |a| t <= constant + sum(coef * lo)
        a = np.array([c.coefficients.get(n, 0.0) * (ranges[n][1] - ranges[n][0]) for n in names])
        offset = c.constant + sum(c.coefficients.get(n, 0.0) * ranges[n][0] for n in names)
        norm = float(np.linalg.norm(a))
        if norm == 0.0:  # a parameter with bounds [v, v]: the single check judged it
            continue
        rows.append(np.append(-a / norm, weight))  # weight 0: no slack asked of it
        limits.append(offset / norm)
    if not rows:
        return 1.0
    if len(rows) == 1 and not held:  # max over the box of (offset + a.u) / |a|: no solver
        row, limit = rows[0], limits[0]
        return min(1.0, limit + float(np.clip(-row[:-1], 0.0, None).sum()))
    objective = np.zeros(len(names) + 1)
    objective[-1] = -1.0  # maximise t
    bounds = [(0.0, 1.0)] * len(names) + [(None, 1.0)]
    from scipy.optimize import linprog  # only here: `validate` of most files never needs it

    result = linprog(objective, A_ub=np.array(rows), b_ub=np.array(limits), bounds=bounds)
    if result.status == 2 and held:  # the held constraints cannot all hold
        return -1.0
    if result.status != 0:  # pragma: no cover - the LP is always feasible and bounded
        return 1.0  # cannot tell: let the planner find out, as before
    return float(result.x[-1])


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
