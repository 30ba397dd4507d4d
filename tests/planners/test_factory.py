"""make_planner: one entry point, checked at construction."""

from __future__ import annotations

import pytest

from planners import (
    BoTorchPlanner,
    FloatParameter,
    Objective,
    Planner,
    PlannerConfig,
    RandomPlanner,
    SobolPlanner,
    Space,
    make_planner,
)

SPACE = Space([FloatParameter(name="x", bounds=(0.0, 1.0))])


@pytest.mark.parametrize(
    ("kind", "cls"),
    [("botorch", BoTorchPlanner), ("sobol", SobolPlanner), ("random", RandomPlanner)],
)
def test_kinds(kind: str, cls: type) -> None:
    planner = make_planner(SPACE, [Objective(name="y")], PlannerConfig(kind=kind), seed=1)  # type: ignore[arg-type]
    assert isinstance(planner, cls)
    assert isinstance(planner, Planner)
    (p,) = planner.suggest(1)
    assert SPACE.contains(p)


def test_same_seed_same_first_proposal_for_all_kinds() -> None:
    """The BoTorch planner's initial design is the Sobol planner's sequence."""
    first = {
        kind: make_planner(SPACE, [Objective(name="y")], PlannerConfig(kind=kind), seed=9).suggest(
            3
        )  # type: ignore[arg-type]
        for kind in ("botorch", "sobol")
    }
    assert first["botorch"] == first["sobol"]


def test_unsupported_campaigns_fail_at_construction() -> None:
    with pytest.raises(ValueError):
        make_planner(SPACE, [], PlannerConfig(), seed=0)
    five = [Objective(name=f"y{i}") for i in range(5)]
    with pytest.raises(ValueError, match="1 to 4 objectives"):
        make_planner(SPACE, five, PlannerConfig(), seed=0)
    # Baselines ignore the objectives, so any number is fine for them.
    make_planner(SPACE, five, PlannerConfig(kind="sobol"), seed=0)
