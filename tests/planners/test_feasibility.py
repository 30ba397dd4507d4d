"""No proposal ever breaks a rule: property tests over random spaces and constraints, and
the constrained optimiser's behaviour on problems with a known constrained optimum."""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planners import (
    BoTorchPlanner,
    BoTorchSettings,
    ChoiceParameter,
    FixedParameter,
    FloatParameter,
    InitialDesign,
    IntParameter,
    Objective,
    Observation,
    PlannerConfig,
    PositionalDesign,
    RandomPlanner,
    SobolPlanner,
    Space,
)
from planners._baselines import point_key

SMALL = BoTorchSettings(
    mc_samples=16,
    raw_samples=32,
    num_restarts=2,
    maxiter=15,
    maxiter_alternating=2,
    warm_start=False,
    # a start that converges takes 2-14 SLSQP iterations; the ones that crawl along a
    # constraint's edge to the product's cap of 30 were most of this file's time, and
    # these tests check feasibility, not how far the optimiser gets
    slsqp_maxiter=10,
)


def _numeric(p: Any) -> bool:
    if p.type in ("float", "int"):
        return True
    if p.type == "choice":
        return p.ordered and all(isinstance(v, int | float) for v in p.values)
    return False


def _extent(p: Any) -> tuple[float, float]:
    if p.type == "choice":
        return float(min(p.values)), float(max(p.values))
    return float(p.bounds[0]), float(p.bounds[1])


@st.composite
def constrained_spaces(draw: Any, rich_spaces: Any, members: Any) -> tuple[Space, dict[str, Any]]:
    """A random space with 1-3 random constraints that all hold at a known point ``x0``.

    Linear ones ``a . x <= a . x0 + margin``; nonlinear ones a ball around ``x0`` in
    range-normalised raw units, and a product bound, so log parameters and ordered levels
    are exercised in both kinds.
    """
    base: Space = draw(rich_spaces)
    numeric = [p for p in base.columns if _numeric(p)]
    if not numeric:
        numeric_param = FloatParameter(name="q", bounds=(-2.0, 3.0))
        base = Space([*base.parameters, numeric_param])
        numeric = [numeric_param]
    x0 = base.validate(draw(members(base)))
    constraints: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        used = draw(
            st.lists(st.sampled_from(numeric), min_size=1, max_size=3, unique_by=lambda p: p.name)
        )
        kind = draw(st.sampled_from(["linear", "ball", "product"]))
        if kind == "linear":
            coefs = [draw(st.sampled_from([-3.0, -1.0, -0.5, 0.5, 1.0, 2.0])) for _ in used]
            spread = sum(
                abs(a) * (_extent(p)[1] - _extent(p)[0]) for a, p in zip(coefs, used, strict=True)
            )
            rhs = sum(a * float(x0[p.name]) for a, p in zip(coefs, used, strict=True))
            # A margin > 0: with x0 in a corner, a margin of 0 leaves a feasible set of zero
            # volume (one face or one point), which the planners rightly refuse as infeasible.
            rhs += draw(st.floats(0.05, 0.5)) * spread
            lhs = " + ".join(f"({a!r}) * {p.name}" for a, p in zip(coefs, used, strict=True))
            constraints.append(f"{lhs} <= {rhs!r}")
        elif kind == "ball":
            r = draw(st.floats(0.3, 0.8))
            terms = []
            for p in used:
                lo, hi = _extent(p)
                terms.append(f"(({p.name} - ({float(x0[p.name])!r})) / {hi - lo!r}) ** 2")
            constraints.append(f"{' + '.join(terms)} <= {r * r!r}")
        else:
            # A product of shifted, positive factors, bounded above by its value at x0 with
            # some room; curved in every parameter.
            factors = []
            value = 1.0
            for p in used:
                lo, hi = _extent(p)
                factors.append(f"({p.name} - ({lo!r}) + {hi - lo!r})")
                value *= float(x0[p.name]) - lo + (hi - lo)
            room = 1 + draw(st.floats(0.05, 1.0))  # > 1 for the same reason
            constraints.append(f"{' * '.join(factors)} <= {value * room!r}")
    space = Space(list(base.parameters), constraints=constraints)
    assert space.contains(x0), (constraints, x0)
    return space, x0


def _response(space: Space, point: dict[str, Any]) -> float:
    """A smooth response on the encoded point, largest in a corner (often outside the
    constraints, so the optimiser pushes against them)."""
    x = space.encode([point])[0]
    return float(x.sum() + 0.1 * math.sin(5 * float(x[0])))


@pytest.mark.slow
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_every_design_and_model_proposal_satisfies_the_constraints(
    data: Any, rich_space_strategy: Any, member_strategy: Any
) -> None:
    space, _ = data.draw(constrained_spaces(rich_space_strategy, member_strategy))
    seed = data.draw(st.integers(0, 2**20))

    for design in (SobolPlanner(space, seed), RandomPlanner(space, seed)):
        proposals = design.suggest(6)
        assert all(space.contains(p) for p in proposals)
        design.ingest([Observation(parameters=p, outputs={"y": 0.0}) for p in proposals[:3]])
        if space.cardinality() == math.inf:  # finite spaces swap collisions within a batch
            assert design.suggest(2) == proposals[3:5]  # positional: resume continues it

    planner = BoTorchPlanner(
        space,
        [Objective(name="y")],
        PlannerConfig(initial=InitialDesign(n=3)),
        seed,
        settings=SMALL,
    )
    for _ in range(5):
        (p,) = planner.suggest(1)
        space.validate(p)
        planner.ingest([Observation(parameters=p, outputs={"y": _response(space, p)})])
    # A model proposal that repeats a measured point (of a finite space not yet covered, or
    # of any space while the outputs are noise-free, as here) is swapped for a design point,
    # and labelled so ("initial"): the response pushes proposals into a corner already
    # measured.
    assert planner.last_kinds in (["model"], ["initial"])
    pending = planner.suggest(1)
    batch = planner.suggest(2, pending=pending)
    for p in pending + batch:
        space.validate(p)
    if space.cardinality() > 20:
        assert len({point_key(space, p) for p in pending + batch}) == 3


def test_constrained_design_is_positional_across_rebuilds() -> None:
    space = Space(
        [FloatParameter(name="x", bounds=(0.0, 1.0)), FloatParameter(name="y", bounds=(0.0, 1.0))],
        constraints=["x ** 2 + y ** 2 <= 0.5"],
    )
    for kind in ("sobol", "random"):
        first = PositionalDesign(space, 3, kind).points(0, 12)  # type: ignore[arg-type]
        again = PositionalDesign(space, 3, kind).points(7, 5)  # type: ignore[arg-type]
        assert again == first[7:]
        assert all(space.contains(p) for p in first)


# ---------------------------------------------------------------------------- optimiser
TUNED = BoTorchSettings(raw_samples=128, num_restarts=4, maxiter=100, warm_start=False)


def _optimise(space: Space, f: Any, trials: int, seed: int = 0) -> list[dict[str, Any]]:
    planner = BoTorchPlanner(
        space, [Objective(name="y")], PlannerConfig(initial=InitialDesign(n=5)), seed, TUNED
    )
    points = []
    for _ in range(trials):
        (p,) = planner.suggest(1)
        space.validate(p)
        points.append(p)
        planner.ingest([Observation(parameters=p, outputs={"y": f(p)})])
    return points


@pytest.mark.slow
@pytest.mark.parametrize(
    ("constraint", "optimum"),
    [
        ("x + y <= 1", {"x": 0.0, "y": 1.0}),  # linear: a vertex
        ("x ** 2 + y ** 2 <= 1", {"x": 1 / 5**0.5, "y": 2 / 5**0.5}),  # nonlinear: tangent
    ],
)
def test_the_optimiser_finds_a_constrained_optimum_on_the_boundary(
    constraint: str, optimum: dict[str, float], caplog: pytest.LogCaptureFixture
) -> None:
    """Maximise x + 2y on the unit square: the unconstrained optimum (1, 1) is infeasible."""
    space = Space(
        [FloatParameter(name="x", bounds=(0.0, 1.0)), FloatParameter(name="y", bounds=(0.0, 1.0))],
        constraints=[constraint],
    )
    with caplog.at_level(logging.INFO, logger="planners._botorch"):
        points = _optimise(space, lambda p: p["x"] + 2 * p["y"], 12)
    best = max(points, key=lambda p: p["x"] + 2 * p["y"])
    assert best["x"] + 2 * best["y"] > optimum["x"] + 2 * optimum["y"] - 0.02
    assert "using the best feasible raw samples" not in caplog.text  # SLSQP's own answers


@pytest.mark.slow
def test_mixed_space_with_a_nonlinear_constraint_finds_the_best_integer() -> None:
    """Maximise x + n subject to x * n <= 2 (x in [0, 1], n in 1..5): best is n=5, x=0.4."""
    space = Space(
        [
            FloatParameter(name="x", bounds=(0.0, 1.0)),
            IntParameter(name="n", bounds=(1, 5)),
            ChoiceParameter(name="c", values=("A", "B")),
            FixedParameter(name="v", value=1.0),
        ],
        constraints=["x * n * v <= 2"],
    )
    points = _optimise(space, lambda p: p["x"] + p["n"] - 0.5 * (p["c"] == "B"), 14)
    best = max(points, key=lambda p: p["x"] + p["n"] - 0.5 * (p["c"] == "B"))
    assert best["n"] == 5 and best["c"] == "A"
    assert best["x"] == pytest.approx(0.4, abs=0.03)


def test_a_candidate_table_is_searched_row_by_row() -> None:
    rows = [{"x": i / 29, "y": ((7 * i) % 29) / 29, "s": "THF"} for i in range(30)]
    space = Space(
        [
            FloatParameter(name="x", bounds=(0.0, 1.0)),
            FloatParameter(name="y", bounds=(0.0, 1.0)),
            FixedParameter(name="s", value="THF"),
        ],
        candidates=rows,
    )
    planner = BoTorchPlanner(
        space, [Objective(name="y")], PlannerConfig(initial=InitialDesign(n=4)), 0, SMALL
    )
    seen: list[Any] = []
    for _ in range(10):
        batch = planner.suggest(2)
        for p in batch:
            assert p in rows
            seen.append(point_key(space, p))
        planner.ingest(
            [Observation(parameters=p, outputs={"y": p["x"] - (p["y"] - 0.5) ** 2}) for p in batch]
        )
    assert len(set(seen)) == 20  # never a row already measured
    assert planner.last_kinds == ["model", "model"]
