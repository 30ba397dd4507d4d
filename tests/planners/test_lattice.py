"""Designs of whole-number spaces that linear constraints leave narrow (``planners._lattice``).

"At most 3 of 30 additives" (30 ``int [0, 1]`` columns, ``a0 + ... + a29 <= 3``: 4525 of
2^30 points) was refused as if its constraint were wrong: the design's 2^16 rejection draws
held no feasible point (found in review).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pytest

from planners import (
    BoTorchPlanner,
    FloatParameter,
    InitialDesign,
    IntParameter,
    Objective,
    Observation,
    PlannerConfig,
    Space,
)
from planners._baselines import PositionalDesign, _narrow_polytope
from planners._constraints import InfeasibleSpaceError
from planners._lattice import Lattice

KINDS = ("sobol", "random")


def _additives(n: int = 30, most: int = 3) -> Space:
    columns = [IntParameter(name=f"a{i}", bounds=(0, 1)) for i in range(n)]
    return Space(columns, constraints=[" + ".join(c.name for c in columns) + f" <= {most}"])


PICK3 = _additives()


@pytest.mark.parametrize("kind", KINDS)
def test_at_most_three_of_thirty_gets_a_spread_design(kind: Any) -> None:
    points = PositionalDesign(PICK3, 0, kind).points(0, 40)
    assert all(PICK3.contains(p) for p in points)
    assert len({tuple(p.values()) for p in points}) >= 38
    # Uniform over the 4525 feasible points: 4060 of them hold three additives.
    sizes = Counter(sum(p.values()) for p in points)
    assert sizes[3] >= 28, sizes
    # Every additive comes up (120 picks over 30 additives, ~4 each).
    used = Counter(name for p in points for name, v in p.items() if v)
    assert len(used) >= 25, used


@pytest.mark.parametrize("kind", KINDS)
def test_the_lattice_design_is_positional(kind: Any) -> None:
    at_once = PositionalDesign(PICK3, 2, kind).points(0, 12)
    design = PositionalDesign(PICK3, 2, kind)
    assert [design.points(k, 1)[0] for k in range(12)] == at_once
    assert PositionalDesign(PICK3, 2, kind).points(7, 5) == at_once[7:]  # resumed at 7
    assert PositionalDesign(PICK3, 3, kind).points(0, 3) != at_once[:3]


def test_an_integer_sum_fixed_by_two_inequalities_still_moves() -> None:
    """``sum == 20`` pins each column given the others; the chains' pair moves keep the sum
    and move (moves of one column alone would return the start every time)."""
    columns = [IntParameter(name=f"n{i}", bounds=(0, 20)) for i in range(12)]
    total = " + ".join(c.name for c in columns)
    space = Space(columns, constraints=[f"{total} <= 20", f"{total} >= 20"])
    assert isinstance(_narrow_polytope(space), Lattice)
    points = PositionalDesign(space, 1, "sobol").points(0, 20)
    assert all(space.contains(p) and sum(p.values()) == 20 for p in points)
    assert len({tuple(p.values()) for p in points}) == 20
    assert max(p["n0"] for p in points) >= 4  # not stuck at a corner


@pytest.mark.parametrize(
    ("constraints", "kept"),
    [
        (["n0 + 2 * n1 + 3 * n2 + 4 * n3 <= 40", "n0 + 2 * n1 + 3 * n2 + 4 * n3 >= 40"], None),
        (["n0 - n1 <= 0", "n0 - n1 >= 0", "n2 + n3 <= 3"], "n0 == n1"),
    ],
    ids=["weighted-sum", "equal-columns"],
)
def test_equalities_with_other_weights_still_move(constraints: list[str], kept: str) -> None:
    """Moves along ``e_i - e_j`` keep only sums with equal weights: a weighted sum, or
    ``n0 == n1``, gave the chains' start at every position, five identical trials (found
    in review). Pair moves now keep the equality they are in."""
    space = Space([IntParameter(name=f"n{i}", bounds=(0, 1000)) for i in range(4)], constraints)
    assert isinstance(_narrow_polytope(space), Lattice)
    points = PositionalDesign(space, 0, "sobol").points(0, 12)
    assert all(space.contains(p) for p in points)
    assert len({tuple(p.values()) for p in points}) >= 11
    if kept == "n0 == n1":
        assert all(p["n0"] == p["n1"] for p in points)
        assert len({p["n0"] for p in points}) >= 10


def test_chains_that_cannot_move_are_refused_as_rejection_refuses() -> None:
    """Two equalities whose only common move takes three columns: no move here keeps
    both, so the chains would stay at their start; the design says the region is too
    narrow rather than proposing one point N times."""
    space = Space(
        [IntParameter(name=f"n{i}", bounds=(0, 1000)) for i in range(3)],
        [
            "n0 + 2 * n1 + 3 * n2 <= 20",
            "n0 + 2 * n1 + 3 * n2 >= 20",
            "n0 + n1 + n2 <= 10",
            "n0 + n1 + n2 >= 10",
        ],
    )
    assert _narrow_polytope(space) is None
    with pytest.raises(InfeasibleSpaceError, match="leave almost no room"):
        PositionalDesign(space, 0, "sobol").points(0, 2)


def test_floats_beside_integers_in_one_constraint() -> None:
    """A log float, an int on a log scale and a linear float in one narrow constraint, and a
    free column: each on its own grid or interval, and every point feasible."""
    space = Space(
        [
            FloatParameter(name="x", bounds=(1e-3, 10.0), log=True),
            IntParameter(name="k", bounds=(1, 1000), log=True),
            IntParameter(name="m", bounds=(0, 5000)),
            IntParameter(name="j", bounds=(0, 5000)),
            FloatParameter(name="T", bounds=(300.0, 400.0)),
        ],
        constraints=["x + k + m + j <= 3.5"],
    )
    assert isinstance(_narrow_polytope(space), Lattice)
    points = PositionalDesign(space, 0, "sobol").points(0, 24)
    assert all(space.contains(p) for p in points)
    assert {p["k"] for p in points} <= {1, 2, 3} and len({p["k"] for p in points}) >= 2
    assert len({p["x"] for p in points}) == 24
    T = [p["T"] for p in points]
    assert min(T) < 320 and max(T) > 380  # the free column is the design's own


def test_no_whole_number_point_is_the_designs_clear_error() -> None:
    space = Space(
        [IntParameter(name=f"n{i}", bounds=(0, 10**6)) for i in range(3)],
        constraints=["2 * n0 + 2 * n1 + 2 * n2 <= 7", "2 * n0 + 2 * n1 + 2 * n2 >= 7"],
    )
    assert _narrow_polytope(space) is None
    with pytest.raises(InfeasibleSpaceError, match="leave almost no room"):
        PositionalDesign(space, 0, "sobol").points(0, 1)


@pytest.mark.slow  # 22 model proposals with the default settings: ~12 s
def test_the_botorch_planner_proposes_within_the_lattice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The model's optimiser starts from the same design (its raw samples), and proposes
    after it (it refused the space before), each time a point not measured yet: it
    proposed measured ones again, each swapped for a random design point (three of 30
    trials; found in review)."""
    space = _additives(25)
    planner = BoTorchPlanner(
        space, [Objective(name="y")], PlannerConfig(initial=InitialDesign(n=8)), 0
    )
    weights = {"a3": 1.0, "a11": 0.8, "a17": 0.7}  # 2.5 at the three of them
    seen = set()
    with caplog.at_level(logging.INFO, logger="planners"):
        for _ in range(30):
            (point,) = planner.suggest(1)
            assert space.contains(point) and sum(point.values()) <= 3
            assert all(isinstance(v, int) and v in (0, 1) for v in point.values())
            assert tuple(point.values()) not in seen
            seen.add(tuple(point.values()))
            y = sum(weights.get(name, -0.05) * v for name, v in point.items())
            planner.ingest([Observation(parameters=point, outputs={"y": y})])
    assert "repeats a pending or measured point" not in caplog.text  # 4 of 22 before
