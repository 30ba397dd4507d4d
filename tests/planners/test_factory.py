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
    check_planner,
    make_planner,
)
from planners._config import PlannerSettingError

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


@pytest.mark.parametrize(
    ("settings", "key", "message"),
    [
        (
            {"kind": "ax", "acquisition": "qUpperConfidenceBound"},
            ("acquisition",),
            "planner.acquisition applies to kind: botorch only (Ax picks its own)",
        ),
        (
            {"kind": "sobol", "acquisition": "qLogNoisyExpectedImprovement"},
            ("acquisition",),
            "kind sobol uses no model",
        ),
        (
            {"kind": "ax", "prior_mean": "constant"},
            ("prior_mean",),
            "planner.prior_mean applies to kind: botorch only (Ax picks its own)",
        ),
        (
            {"kind": "random", "prior_mean": "quadratic"},
            ("prior_mean",),
            "planner.prior_mean applies to kind: botorch only (kind random uses no model)",
        ),
        (
            {"kind": "random", "initial": {"kind": "sobol", "n": 3}},
            ("initial", "kind"),
            "planner.initial.kind: sobol does not apply to kind: random",
        ),
        (
            {"kind": "sobol", "initial": {"n": 3, "centre": True}},
            ("initial", "centre"),
            "planner.initial.centre: true does not apply to kind: sobol",
        ),
    ],
)
def test_settings_another_kind_would_follow_are_refused(
    settings: dict[str, object], key: tuple[str, ...], message: str
) -> None:
    """They were silently ignored (a campaign asked for UCB and got Ax's default)."""
    with pytest.raises(PlannerSettingError, match="remove it") as info:
        check_planner(SPACE, [Objective(name="y")], PlannerConfig.model_validate(settings))
    assert message in str(info.value)
    assert info.value.key == key


@pytest.mark.parametrize(
    "settings",
    [
        {"kind": "botorch", "acquisition": "qUpperConfidenceBound", "initial": {"kind": "random"}},
        {"kind": "botorch", "prior_mean": "constant"},
        {"kind": "botorch", "prior_mean": "quadratic"},
        {"kind": "ax", "initial": {"kind": "sobol", "n": 3, "centre": True}, "batch_size": 2},
        {"kind": "sobol", "initial": {"kind": "sobol", "n": 5, "centre": False}},
        {"kind": "random", "initial": {"kind": "random", "n": 5}, "batch_size": 3},
    ],
)
def test_settings_that_describe_what_the_kind_does_are_kept(settings: dict[str, object]) -> None:
    """A campaign switched to another kind keeps its valid settings (``initial.n`` paces the
    loop for every kind)."""
    check_planner(SPACE, [Objective(name="y")], PlannerConfig.model_validate(settings))


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("choice", "an unordered choice parameter"),
        ("objectives", "several objectives"),
        ("outcome_constraint", "an outcome constraint"),
    ],
)
def test_a_quadratic_mean_where_the_model_keeps_a_constant_one_is_refused(
    case: str, why: str
) -> None:
    """``prior_mean: quadratic`` would be ignored there (``quadratic_mean_applies``), so it
    is refused at its key; ``constant`` is what such a model has anyway, and is kept."""
    from planners import ChoiceParameter, OutcomeConstraint

    space = Space([*SPACE.parameters, ChoiceParameter(name="c", values=("a", "b"))])
    objectives = [Objective(name="y")]
    constraints: list[OutcomeConstraint] = []
    if case != "choice":
        space = SPACE
    if case == "objectives":
        objectives.append(Objective(name="z"))
    if case == "outcome_constraint":
        constraints.append(OutcomeConstraint(name="z", op="<=", bound=1.0))
    quadratic = PlannerConfig(prior_mean="quadratic")
    with pytest.raises(PlannerSettingError, match="remove it") as info:
        check_planner(space, objectives, quadratic, outcome_constraints=constraints)
    assert f"this campaign has {why}" in str(info.value)
    assert info.value.key == ("prior_mean",)
    with pytest.raises(PlannerSettingError):  # the planner itself refuses it too
        BoTorchPlanner(space, objectives, quadratic, outcome_constraints=constraints)
    constant = PlannerConfig(prior_mean="constant")
    check_planner(space, objectives, constant, outcome_constraints=constraints)
