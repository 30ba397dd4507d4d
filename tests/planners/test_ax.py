"""The Ax planner through the Planner protocol, on Ax's real Client (optimiser mocked short)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import pytest
from botorch.test_utils.mock import mock_optimize_context_manager

from planners import (
    ChoiceParameter,
    FixedParameter,
    FloatParameter,
    InfeasibleSpaceError,
    InitialDesign,
    IntParameter,
    Objective,
    Observation,
    OutcomeConstraint,
    Planner,
    PlannerConfig,
    Point,
    Space,
    make_planner,
)
from planners._ax import AxPlanner

BRANIN = Space(
    [FloatParameter(name="x1", bounds=(-5, 10)), FloatParameter(name="x2", bounds=(0, 15))]
)
MINIMISE_Y = [Objective(name="y", goal="minimize")]


def branin(point: Point) -> float:
    x1, x2 = float(point["x1"]), float(point["x2"])
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


@pytest.fixture(autouse=True)
def _short_optimiser() -> Iterator[None]:
    """BoTorch's own test helper: few optimiser iterations inside Ax's acquisition search."""
    with mock_optimize_context_manager(force=True):
        yield


def config(n_initial: int = 4, kind: str = "ax") -> PlannerConfig:
    return PlannerConfig(kind=kind, initial=InitialDesign(n=n_initial))  # type: ignore[arg-type]


def run(
    planner: Planner, space: Space, f: object, trials: int, batch: int = 1
) -> list[tuple[Point, str]]:
    """Suggest/ingest ``trials`` points; every proposal must be a member of the space."""
    made: list[tuple[Point, str]] = []
    while len(made) < trials:
        points = planner.suggest(batch, pending=[])
        assert len(points) == batch == len(planner.last_kinds)
        for point in points:
            assert space.validate(point) == point
        outputs = [f(p) for p in points]  # type: ignore[operator]
        planner.ingest(
            [Observation(parameters=p, outputs=o) for p, o in zip(points, outputs, strict=True)]
        )
        made.extend(zip(points, planner.last_kinds, strict=True))
    return made


def statuses(planner: AxPlanner) -> list[str]:
    experiment = planner._client._experiment
    return [experiment.trials[i].status.name for i in sorted(experiment.trials)]


@pytest.mark.slow
def test_branin_short_run_initial_then_model(capfd: pytest.CaptureFixture[str]) -> None:
    planner = make_planner(BRANIN, MINIMISE_Y, config(4), seed=1)
    assert isinstance(planner, AxPlanner)
    made = run(planner, BRANIN, lambda p: {"y": branin(p)}, trials=6)
    assert [k for _, k in made] == ["initial"] * 4 + ["model"] * 2
    assert statuses(planner) == ["COMPLETED"] * 6
    # Ax's INFO stream handler is routed into our logger: nothing printed to the terminal.
    out, err = capfd.readouterr()
    assert "ax." not in err and "Generated new trial" not in err + out


def test_pending_points_are_running_trials_and_not_proposed_again() -> None:
    planner = AxPlanner(BRANIN, MINIMISE_Y, config(3), seed=2)
    first = planner.suggest(3)
    assert len({tuple(p.values()) for p in first}) == 3
    # Two still in flight, one told: Ax keeps the two as RUNNING and proposes new points.
    planner.ingest([Observation(parameters=first[0], outputs={"y": branin(first[0])})])
    batch = planner.suggest(3, pending=first[1:])
    assert len(batch) == 3
    keys = {tuple(p.values()) for p in first}
    assert not keys & {tuple(p.values()) for p in batch}
    assert statuses(planner) == ["COMPLETED", "RUNNING", "RUNNING"] + ["RUNNING"] * 3
    # A pending point Ax never proposed (a resumed campaign's trial in flight) is attached as
    # running; proposals that are neither pending nor told any more are abandoned.
    foreign = {"x1": 1.0, "x2": 2.0}
    planner.suggest(1, pending=[foreign])
    assert statuses(planner)[1:6] == ["ABANDONED"] * 5
    assert statuses(planner)[6:] == ["RUNNING", "RUNNING"]
    assert planner._client._experiment.trials[6].arm.parameters == {"p0": 1.0, "p1": 2.0}


def test_failed_and_abandoned_trials_are_told_to_ax() -> None:
    planner = AxPlanner(BRANIN, MINIMISE_Y, config(3), seed=3)
    a, b, c = planner.suggest(3)
    planner.ingest(
        [
            Observation(parameters=a, outcome="failed"),
            Observation(parameters=b, outcome="abandoned"),
            Observation(parameters=c, outputs={"y": math.nan}),  # unusable: failed for Ax
        ]
    )
    # Each failed point is attached once more as abandoned: a point in flight for Ax's model.
    assert statuses(planner) == ["FAILED", "ABANDONED", "FAILED", "ABANDONED", "ABANDONED"]
    # trials Ax never proposed (a store rebuilt into a fresh planner) are attached, in order
    fresh = AxPlanner(BRANIN, MINIMISE_Y, config(3), seed=3)
    fresh.ingest(
        [
            Observation(parameters=a, outputs={"y": branin(a)}),
            Observation(parameters=b, outcome="failed"),
        ]
    )
    assert statuses(fresh) == ["COMPLETED", "FAILED", "ABANDONED"]
    (point,) = fresh.suggest(1)
    assert BRANIN.contains(point)


def test_same_seed_same_proposals() -> None:
    def trace(seed: int) -> list[Point]:
        planner = AxPlanner(BRANIN, MINIMISE_Y, config(3), seed=seed)
        return [p for p, _ in run(planner, BRANIN, lambda p: {"y": branin(p)}, trials=4)]

    first = trace(5)
    assert trace(5) == first
    assert trace(6) != first


@pytest.mark.slow
def test_linear_constraint_is_honoured() -> None:
    space = Space(
        [
            FloatParameter(name="x1", bounds=(-5, 10)),
            FloatParameter(name="x2", bounds=(0, 15)),
            FixedParameter(name="offset", value=1.0),
        ],
        constraints=["x1 + 2 * x2 + offset <= 8"],
    )
    planner = AxPlanner(space, MINIMISE_Y, config(4), seed=4)
    made = run(planner, space, lambda p: {"y": branin(p)}, trials=6, batch=2)
    for point, _ in made:
        assert point["x1"] + 2 * point["x2"] + 1.0 <= 8 + 1e-9
        assert point["offset"] == 1.0
    (constraint,) = planner._client._experiment.search_space.parameter_constraints
    assert set(constraint.constraint_dict) == {"p0", "p1"}


def test_points_on_a_linear_constraint_can_be_pending_and_observed() -> None:
    """Ax generates under a bound tightened by 1e-6, so that its proposals pass
    ``Space.validate``; a point on the declared boundary is still a member of the space and
    is attached (it was refused when pending, and silently left out when observed)."""
    space = Space(
        [FloatParameter(name="x1", bounds=(0, 1)), FloatParameter(name="x2", bounds=(0, 1))],
        constraints=["x1 + x2 <= 1"],
    )
    boundary, corner = {"x1": 0.5, "x2": 0.5}, {"x1": 1.0, "x2": 0.0}
    assert space.contains(boundary) and space.contains(corner)
    planner = AxPlanner(space, [Objective(name="y")], config(2), seed=0)
    (point,) = planner.suggest(1, pending=[boundary])
    assert space.contains(point)
    assert statuses(planner) == ["RUNNING", "RUNNING"]
    planner.ingest(
        [
            Observation(parameters=boundary, outputs={"y": 1.0}),
            Observation(parameters=corner, outputs={"y": 2.0}),
        ]
    )
    assert statuses(planner) == ["COMPLETED", "RUNNING", "COMPLETED"]
    (constraint,) = planner._client._experiment.search_space.parameter_constraints
    assert constraint.bound < 1.0  # still tightened for Ax's proposals
    assert all(space.contains(p) for p in planner.suggest(2, pending=[boundary, corner]))


@pytest.mark.parametrize(
    ("space", "objectives", "message"),
    [
        (
            Space(
                [
                    FloatParameter(name="x1", bounds=(0, 1)),
                    FloatParameter(name="x2", bounds=(0, 1)),
                ],
                constraints=["x1**2 + x2**2 <= 1"],
            ),
            MINIMISE_Y,
            "Ax cannot express nonlinear parameter constraints ('x1**2 + x2**2 <= 1'); "
            "use planner kind: botorch",
        ),
        (
            Space(
                [
                    FloatParameter(name="t", bounds=(1, 100), log=True),
                    FloatParameter(name="u", bounds=(0, 1)),
                ],
                constraints=["t + u <= 50"],
            ),
            MINIMISE_Y,
            "log-scale parameter 't'",
        ),
        (
            Space([FloatParameter(name="x", bounds=(0, 1))], candidates=[{"x": 0.1}, {"x": 0.5}]),
            MINIMISE_Y,
            "finite table of candidates",
        ),
    ],
    ids=["nonlinear", "log_scale_linear", "candidates"],
)
def test_what_ax_cannot_express_fails_at_construction(
    space: Space, objectives: Sequence[Objective], message: str
) -> None:
    with pytest.raises(ValueError, match="use planner kind: botorch") as info:
        make_planner(space, objectives, config(), seed=0)
    assert message in str(info.value)


def test_multi_objective_with_outcome_constraint() -> None:
    space = Space(
        [FloatParameter(name="x", bounds=(0, 1)), FloatParameter(name="z", bounds=(0, 1))]
    )
    objectives = [
        Objective(name="yield", goal="maximize", reference_point=0.0),  # 'yield': a keyword
        Objective(name="cost", goal="minimize", reference_point=2.0),
    ]
    constraints = [OutcomeConstraint(name="impurity", op="<=", bound=0.5, text="impurity <= 0.5")]

    def f(p: Point) -> dict[str, float]:
        x, z = float(p["x"]), float(p["z"])
        return {"yield": x * (1 - 0.3 * z), "cost": 0.5 + x**2 + z, "impurity": x * z}

    planner = make_planner(space, objectives, config(4), seed=5, outcome_constraints=constraints)
    assert isinstance(planner, AxPlanner)
    made = run(planner, space, f, trials=6, batch=2)
    assert [k for _, k in made][-2:] == ["model", "model"]
    opt = planner._client._experiment.optimization_config
    assert {t.metric_names[0]: t.bound for t in opt.objective_thresholds} == {
        "obj0": 0.0,
        "obj1": 2.0,
    }
    # Impurity (x * z) is told to Ax in units that bring its first non-zero value to [1, 10).
    scale = planner._scales["impurity"]
    assert scale >= 10.0 and math.log10(scale).is_integer()
    assert [(c.metric_names[0], c.bound) for c in opt.outcome_constraints] == [
        ("con0", 0.5 * scale)
    ]


def test_outcome_constraint_on_the_single_objective() -> None:
    """Ax refuses a constraint on its objective metric; the planner gives it its own metric."""
    constraints = [OutcomeConstraint(name="y", op="<=", bound=100.0, text="y <= 100")]
    planner = AxPlanner(BRANIN, MINIMISE_Y, config(3), seed=6, outcome_constraints=constraints)
    run(planner, BRANIN, lambda p: {"y": branin(p)}, trials=4)
    experiment = planner._client._experiment
    scale = planner._scales.get("y", 1.0)
    constrained = experiment.optimization_config.outcome_constraints
    assert [(c.metric_names[0], c.bound) for c in constrained] == [("con0", 100.0 * scale)]
    # every told trial carries the constraint's metric beside the objective's
    told = experiment.lookup_data().df
    assert set(told["metric_name"]) == {"obj0", "con0"}
    assert (told["metric_name"] == "con0").sum() == 4


def test_mixed_space_types_round_trip() -> None:
    space = Space(
        [
            FloatParameter(name="E", bounds=(0.1, 10), log=True),  # SymPy's Euler number
            IntParameter(name="gamma", bounds=(1, 1000), log=True),  # a SymPy function
            IntParameter(name="n", bounds=(0, 5)),
            ChoiceParameter(name="solvent", values=("MeCN", "DMF", "THF")),
            ChoiceParameter(name="level", values=(0.5, 1, 2), ordered=True),
            ChoiceParameter(name="rank", values=(3, 1, 2), ordered=True),  # not ascending
            ChoiceParameter(name="mixed", values=("a", 1, 2.5, True)),
            FixedParameter(name="pressure", value=2.0),
        ],
        constraints=["n + 0 * n <= 4"],
    )
    planner = AxPlanner(space, MINIMISE_Y, config(4), seed=7)

    def f(p: Point) -> dict[str, float]:
        return {"y": math.log10(p["E"]) ** 2 + p["n"] + (p["solvent"] == "DMF") + p["level"]}

    made = run(planner, space, f, trials=6, batch=3)
    assert all(p["pressure"] == 2.0 and p["n"] <= 4 for p, _ in made)
    assert all(isinstance(p["n"], int) and isinstance(p["gamma"], int) for p, _ in made)
    assert {type(p["level"]) for p, _ in made} <= {float, int}
    ax_params = planner._client._experiment.search_space.parameters
    assert ax_params["p5"].is_ordered and ax_params["p5"].values == ["3", "1", "2"]
    assert ax_params["p3"].is_ordered is False
    assert "pressure" not in {a.name for a in planner._parameters}


def test_small_finite_space_still_gives_n_distinct_points() -> None:
    """Ax raises when a discrete space runs out mid-batch; the rest come from the design."""
    space = Space(
        [IntParameter(name="k", bounds=(0, 2)), ChoiceParameter(name="c", values=("a", "b"))]
    )
    planner = AxPlanner(space, [Objective(name="y")], config(2), seed=0)

    def f(p: Point) -> dict[str, float]:
        return {"y": p["k"] + (p["c"] == "a")}

    first = planner.suggest(4)
    planner.ingest([Observation(parameters=p, outputs=f(p)) for p in first])
    second = planner.suggest(3)
    assert len(second) == 3 and len(planner.last_kinds) == 3
    keys = {(p["k"], p["c"]) for p in first + second}
    assert len(keys) == 6  # the whole space, no repeat
    assert planner.last_kinds[-1] == "sobol"


def test_one_initial_trial_still_gives_n_points_before_any_data() -> None:
    """With ``initial.n: 1`` Ax's strategy is its centre point, then the model at once (no
    Sobol step): a second proposal before a trial had completed (a second slot, a batch, a
    first trial that failed) raised Ax's DataRequiredError. The design fills in until then."""
    space = Space(
        [FloatParameter(name="a", bounds=(0, 10)), FloatParameter(name="b", bounds=(0, 10))]
    )
    planner = AxPlanner(space, [Objective(name="y")], config(1), seed=0)
    (centre,) = planner.suggest(1)
    assert centre == {"a": 5.0, "b": 5.0} and planner.last_kinds == ["initial"]
    (second,) = planner.suggest(1, pending=[centre])  # a second slot
    assert space.contains(second) and second != centre and planner.last_kinds == ["sobol"]
    planner.ingest([Observation(parameters=centre, outcome="failed")])
    (third,) = planner.suggest(1, pending=[second])  # the only trial told so far failed
    assert third not in (centre, second) and planner.last_kinds == ["sobol"]
    assert statuses(planner) == ["FAILED", "RUNNING", "ABANDONED", "RUNNING"]
    planner.ingest([Observation(parameters=second, outputs={"y": 1.0})])
    (fourth,) = planner.suggest(1, pending=[third])
    assert space.contains(fourth) and planner.last_kinds == ["model"]
    # A first batch fails whole in Ax, centre included: the design starts at the centre.
    fresh = AxPlanner(space, [Objective(name="y")], config(1), seed=0)
    assert fresh.suggest(2) == [centre, second]
    assert statuses(fresh) == ["RUNNING", "RUNNING"]


@pytest.mark.parametrize(
    ("parameter", "constraints", "message"),
    [
        (
            IntParameter,
            ["a + b <= 7", "a + b >= 7"],
            "constraints 0 ('a + b <= 7') and 1 ('a + b >= 7') together are an equality, "
            "whose integer points Ax's sampler cannot reach; use planner kind: botorch",
        ),
        (
            FloatParameter,
            ["a + b <= 7", "a >= 0", "2 * a + 2 * b >= 14"],  # multiples: the same equality
            "constraints 0 ('a + b <= 7') and 2 ('2 * a + 2 * b >= 14') together are an "
            "equality over float parameters",
        ),
        (FloatParameter, ["a - b >= 1", "b - a >= 1"], "contradict each other"),
    ],
    ids=["int", "float_multiple", "contradiction"],
)
def test_an_equality_as_two_inequalities_is_refused_at_construction(
    parameter: type[FloatParameter | IntParameter], constraints: list[str], message: str
) -> None:
    """Ax's polytope sampler cannot enter a region of no width (the run crashed with
    BoTorch's InfeasibilityError at the first suggest); an opposed pair with room is kept."""
    space = Space(
        [parameter(name="a", bounds=(0, 10)), parameter(name="b", bounds=(0, 10))],
        constraints=constraints,
    )
    with pytest.raises(ValueError, match="constraints") as info:
        AxPlanner(space, MINIMISE_Y, config(), seed=0)
    assert message in str(info.value)
    slab = Space(space.parameters, constraints=["a + b <= 7", "a + b >= 6"])
    AxPlanner(slab, MINIMISE_Y, config(), seed=0)


def test_constraints_that_leave_no_point_are_an_infeasible_space_error() -> None:
    """No pair opposes another, yet the three leave nothing: BoTorch's InfeasibilityError
    from Ax's sampler becomes the planners' error, which the CLI reports as a bad file."""
    space = Space(
        [FloatParameter(name="a", bounds=(0, 1)), FloatParameter(name="b", bounds=(0, 1))],
        constraints=["a + b <= 0.5", "a - b >= 0.3", "b - 0.5 * a >= 0.1"],
    )
    planner = AxPlanner(space, MINIMISE_Y, config(2), seed=0)
    with pytest.raises(InfeasibleSpaceError, match="Ax found no point that meets all"):
        planner.suggest(1)


def test_points_outside_the_space_are_said_once_per_ingest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Prior data measured before the space was narrowed: a warning a point, at every
    command that rebuilds the planner, was hundreds of lines (found in review)."""
    planner = AxPlanner(BRANIN, MINIMISE_Y, config(3), seed=2)
    outside = [
        Observation(parameters={"x1": 20.0 + i, "x2": 1.0}, outputs={"y": 5.0}) for i in range(3)
    ]
    with caplog.at_level("WARNING", logger="planners._ax"):
        planner.ingest(
            [*outside, Observation(parameters={"x1": 1.0, "x2": 1.0}, outputs={"y": 9.0})]
        )
    said = [r.getMessage() for r in caplog.records if "outside the space" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("3 observation(s) outside the space not told")
