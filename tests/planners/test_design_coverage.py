"""Initial designs of narrow polytopes (a composition beside free parameters) fill the space.

One hit-and-run chain, thinned by 20 steps, drew the whole point: on 12 fractions with
``sum <= 1`` beside a temperature in [300, 1500] K the 14-point design spanned 94-335 K of
the temperature and never passed 886 K (found in review, seeds 0-9), and a log-scale
fraction inside the constraint made the design give up with "0 feasible points".
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from planners import FloatParameter, IntParameter, Space
from planners._baselines import PositionalDesign, SobolPlanner, _narrow_polytope, _Polytope
from planners._lattice import Lattice

KINDS = ("sobol", "random")


def _composition(log_last: bool = False) -> Space:
    fractions = [FloatParameter(name=f"e{i}", bounds=(0.0, 1.0)) for i in range(1, 12)]
    if log_last:
        fractions.append(FloatParameter(name="e12", bounds=(1e-5, 0.1), log=True))
    else:
        fractions.append(FloatParameter(name="e12", bounds=(0.0, 1.0)))
    total = " + ".join(f"e{i}" for i in range(1, 13))
    return Space(
        [*fractions, FloatParameter(name="T", bounds=(300.0, 1500.0))],
        constraints=[f"{total} <= 1"],
    )


COMPOSITION = _composition()


@pytest.mark.parametrize("kind", KINDS)
def test_a_free_column_beside_a_composition_covers_its_range(kind: Any) -> None:
    # Sobol is balanced (one point in each eighth of T's range, roughly); random points
    # are independent uniform ones (14 of them miss the lowest eighth 15% of the time).
    low, high = (450, 1350) if kind == "sobol" else (600, 1200)
    for seed in range(3):
        points = PositionalDesign(COMPOSITION, seed, kind).points(0, 14)
        assert all(COMPOSITION.contains(p) for p in points)
        T = [p["T"] for p in points]
        assert min(T) < low and max(T) > high, (seed, min(T), max(T))
        # The fractions spread too: each of the first three reaches past 0.1 somewhere.
        for name in ("e1", "e2", "e3"):
            assert max(p[name] for p in points) > 0.1


def test_the_sobol_design_of_a_composition_is_the_sobol_sequence_mapped_onto_it() -> None:
    """Free columns are the unconstrained design's own (balanced) coordinates."""
    design = PositionalDesign(COMPOSITION, 5, "sobol")
    U = design.feasible_unit_points(0, 32)
    assert torch.equal(U[:, 12], design.unit_points(0, 32)[:, 12])
    assert torch.all(U[:, :12].sum(dim=-1) <= 1.0 + 1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("space", [COMPOSITION, _composition(log_last=True)], ids=["lin", "log"])
def test_designs_of_a_narrow_polytope_are_positional(kind: Any, space: Space) -> None:
    at_once = PositionalDesign(space, 2, kind).points(0, 12)
    design = PositionalDesign(space, 2, kind)
    one_by_one = [design.points(k, 1)[0] for k in range(12)]
    resumed = PositionalDesign(space, 2, kind).points(7, 5)  # a campaign resumed at 7
    assert one_by_one == at_once
    assert resumed == at_once[7:]
    assert PositionalDesign(space, 3, kind).points(0, 3) != at_once[:3]


def test_the_planner_resumes_the_same_design() -> None:
    first = SobolPlanner(COMPOSITION, seed=4).suggest(10)
    again = SobolPlanner(COMPOSITION, seed=4)
    again.ingest([])
    assert again.design.points(6, 4) == first[6:]


@pytest.mark.parametrize("kind", KINDS)
def test_a_log_column_inside_a_composition_gets_feasible_points(kind: Any) -> None:
    """It fell back on rejection sampling, which gave up after 2^16 draws. Drawn uniformly
    in value within the polytope (see ``_Polytope``)."""
    space = _composition(log_last=True)
    points = PositionalDesign(space, 0, kind).points(0, 20)
    assert all(space.contains(p) for p in points)
    assert all(1e-5 <= p["e12"] <= 0.1 for p in points)
    assert len({p["e12"] for p in points}) == 20
    T = [p["T"] for p in points]
    assert min(T) < 600 and max(T) > 1200
    # The campaign's own check (config validation) passes the same way.
    assert len(PositionalDesign(space, 0, "sobol").leading_feasible_unit_points(64)) == 64


@pytest.mark.parametrize("kind", KINDS)
def test_a_narrow_polytope_that_is_no_simplex_is_sampled_by_independent_chains(
    kind: Any,
) -> None:
    """An ordering ``x1 <= ... <= x9`` (a fraction 1/9! of the cube) beside a free T: one
    chain per position, so consecutive points are not near copies of each other."""
    xs = [FloatParameter(name=f"x{i}", bounds=(0.0, 1.0)) for i in range(1, 10)]
    space = Space(
        [*xs, FloatParameter(name="T", bounds=(300.0, 1500.0))],
        constraints=[f"x{i} <= x{i + 1}" for i in range(1, 9)],
    )
    polytope = _narrow_polytope(space)
    assert isinstance(polytope, _Polytope) and not polytope.groups
    points = PositionalDesign(space, 1, kind).points(0, 40)
    assert all(space.contains(p) for p in points)
    x5 = torch.tensor([p["x5"] for p in points])
    assert float(x5.std()) > 0.08  # ~0.15 for independent uniform points; one chain ~0.05
    steps = (x5[1:] - x5[:-1]).abs()
    assert float(steps.median()) > 0.05
    T = [p["T"] for p in points[:14]]
    assert max(T) - min(T) > 700
    assert PositionalDesign(space, 1, kind).points(30, 10) == points[30:]


def test_an_integer_in_a_narrow_constraint_is_drawn_on_its_grid() -> None:
    """Rounding a point of the relaxation can break the constraint, so an integer column
    is not a polytope's: the lattice's chains draw it (``planners._lattice``)."""
    space = Space(
        [
            FloatParameter(name="x", bounds=(0.0, 1.0)),
            IntParameter(name="n", bounds=(0, 1000)),
        ],
        constraints=["x + n <= 0.001"],
    )
    assert isinstance(_narrow_polytope(space), Lattice)
    points = PositionalDesign(space, 0, "sobol").points(0, 12)
    assert all(space.contains(p) and p["n"] == 0 for p in points)
    assert len({p["x"] for p in points}) == 12
