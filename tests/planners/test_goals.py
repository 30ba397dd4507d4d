"""BoTorch planner goals: outcome constraints, 2-4 objectives, q-batches with pending points."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import pytest
import torch
from botorch.acquisition.logei import qLogProbabilityOfFeasibility
from botorch.acquisition.multi_objective import qLogNoisyExpectedHypervolumeImprovement
from botorch.test_functions.multi_objective import BraninCurrin
from botorch.test_utils.mock import mock_optimize_context_manager

from planners import (
    BoTorchPlanner,
    BoTorchSettings,
    FloatParameter,
    InitialDesign,
    Objective,
    Observation,
    OutcomeConstraint,
    PlannerConfig,
    Point,
    SobolPlanner,
    Space,
    hypervolume,
    make_planner,
    parse_outcome_constraint,
)
from planners._baselines import point_key

SMALL = BoTorchSettings(mc_samples=32, raw_samples=64, num_restarts=2, maxiter=30)
UNIT2 = Space(
    [FloatParameter(name="x0", bounds=(0.0, 1.0)), FloatParameter(name="x1", bounds=(0.0, 1.0))]
)
BC = [Objective(name="branin", goal="minimize"), Objective(name="currin", goal="minimize")]
_BRANIN_CURRIN = BraninCurrin()

Outputs = Callable[[Point], dict[str, float]]


def branin_currin(point: Point) -> dict[str, float]:
    x = torch.tensor([[point["x0"], point["x1"]]], dtype=torch.float64)
    a, b = _BRANIN_CURRIN(x)[0].tolist()
    return {"branin": a, "currin": b, "sum": point["x0"] + point["x1"]}


def run(planner: BoTorchPlanner | SobolPlanner, f: Outputs, n: int) -> list[Observation]:
    done: list[Observation] = []
    while len(done) < n:
        (p,) = planner.suggest(1)
        done.append(Observation(parameters=p, outputs=f(p)))
        planner.ingest(done[-1:])
    return done


# ------------------------------------------------------------------ parsing
def test_outcome_constraints_parse_and_check() -> None:
    c = parse_outcome_constraint("impurity <= 0.05")
    assert (c.name, c.op, c.bound, c.text) == ("impurity", "<=", 0.05, "impurity <= 0.05")
    assert c.satisfied({"impurity": 0.05}) and not c.satisfied({"impurity": 0.06})
    assert not c.satisfied({}) and not c.satisfied({"impurity": math.nan})
    g = parse_outcome_constraint("  yield>=-1e-2 ")
    assert (g.op, g.bound) == (">=", -0.01)
    assert g.slack(0.5) == pytest.approx(0.51) and c.slack(0.07) == pytest.approx(-0.02)


@pytest.mark.parametrize(
    "text", ["0.05 >= impurity", "impurity <= limit", "a <= nan", "", "a =< 1", "a <== 1"]
)
def test_malformed_outcome_constraints_say_what_to_write(text: str) -> None:
    with pytest.raises(ValueError, match="write e.g. 'impurity <= 0.05'"):
        parse_outcome_constraint(text)


def test_a_strict_bound_reads_as_its_closed_one_and_a_reversed_one_is_explained() -> None:
    """`impurity < 0.05` was refused although `constraints:` reads `<` as `<=`; and every
    mistake was told "strict < and > are not supported" (found in review)."""
    strict = parse_outcome_constraint("impurity < 0.05")
    assert (strict.op, strict.bound, strict.text) == ("<=", 0.05, "impurity < 0.05")
    assert parse_outcome_constraint("yield>80").op == ">="
    with pytest.raises(ValueError, match="the output goes on the left: 'impurity <= 0.05'"):
        parse_outcome_constraint("0.05 >= impurity")


# ------------------------------------------------------------------ construction
def test_two_to_four_objectives_are_accepted_and_others_explained() -> None:
    for m in (2, 3, 4):
        BoTorchPlanner(UNIT2, [Objective(name=f"y{i}") for i in range(m)])
    with pytest.raises(ValueError, match="qLogNoisyExpectedHypervolumeImprovement"):
        BoTorchPlanner(UNIT2, BC, PlannerConfig(acquisition="qUpperConfidenceBound"))
    with pytest.raises(ValueError, match="same output twice"):
        BoTorchPlanner(UNIT2, [Objective(name="y"), Objective(name="y", goal="minimize")])


def test_training_columns_are_signed_objectives_then_constraint_slacks() -> None:
    planner = BoTorchPlanner(
        UNIT2,
        BC,
        outcome_constraints=[
            parse_outcome_constraint("sum <= 1"),
            parse_outcome_constraint("sum >= 0.5"),
        ],
        settings=SMALL,
    )
    point = {"x0": 0.2, "x1": 0.3}
    planner.ingest([Observation(parameters=point, outputs=branin_currin(point))])
    planner.ingest([Observation(parameters={"x0": 0.9, "x1": 0.9}, outcome="failed")])
    assert planner.outcome_names == ["branin", "currin", "sum", "sum"]
    X, Y = planner.training_data()
    out = branin_currin(point)
    assert Y[0].tolist() == pytest.approx([-out["branin"], -out["currin"], 0.5, 0.0])
    # The failed trial enters every column at the worst value seen.
    assert Y[1].tolist() == pytest.approx(Y[0].tolist())
    assert X.shape == (2, 2)


def test_given_reference_point_is_used_signed() -> None:
    objs = [
        Objective(name="branin", goal="minimize", reference_point=50.0),
        Objective(name="currin", goal="maximize", reference_point=2.0),
    ]
    planner = BoTorchPlanner(UNIT2, objs, settings=SMALL)
    assert planner.hypervolume_reference().tolist() == [-50.0, 2.0]


def test_make_planner_passes_outcome_constraints_and_baselines_ignore_them() -> None:
    constraints = [parse_outcome_constraint("sum <= 1")]
    planner = make_planner(UNIT2, BC, PlannerConfig(), seed=0, outcome_constraints=constraints)
    assert isinstance(planner, BoTorchPlanner)
    assert planner.outcome_constraints == tuple(constraints)
    sobol = make_planner(UNIT2, BC, PlannerConfig(kind="sobol"), 0, outcome_constraints=constraints)
    assert len(sobol.suggest(3)) == 3


# ------------------------------------------------------------------ acquisition choice
def _acquisition_after(planner: BoTorchPlanner, observations: list[Observation]) -> object:
    planner.ingest(observations)
    model = planner.fit()
    train_X, _ = planner.training_data()
    feasibility = planner.fit_feasibility()
    # As suggest does: see BoTorchPlanner._suggest_from_model.
    with torch.sparse.check_sparse_tensor_invariants(enable=False):
        return planner._acquisition(model, train_X, None, feasibility)


def test_feasibility_is_sought_first_then_improvement_among_feasible_points() -> None:
    constraint = OutcomeConstraint(name="sum", op="<=", bound=0.3, text="sum <= 0.3")
    planner = BoTorchPlanner(UNIT2, BC[:1], outcome_constraints=[constraint], settings=SMALL)
    far = [{"x0": 0.6 + 0.1 * i, "x1": 0.5} for i in range(4)]
    acqf = _acquisition_after(planner, [Observation(p, branin_currin(p)) for p in far])
    assert isinstance(acqf, qLogProbabilityOfFeasibility)
    near = {"x0": 0.1, "x1": 0.1}
    acqf = _acquisition_after(planner, [Observation(near, branin_currin(near))])
    assert not isinstance(acqf, qLogProbabilityOfFeasibility)
    # The acquisition prefers the feasible corner to an equally unexplored infeasible one.
    with torch.no_grad(), torch.sparse.check_sparse_tensor_invariants(enable=False):
        values = cast(Any, acqf)(torch.tensor([[[0.05, 0.2]], [[0.95, 0.95]]], dtype=torch.float64))
    assert values[0] > values[1]


def test_several_objectives_use_the_hypervolume_acquisition_with_constraints() -> None:
    planner = BoTorchPlanner(
        UNIT2, BC, outcome_constraints=[parse_outcome_constraint("sum <= 1.5")], settings=SMALL
    )
    points = SobolPlanner(UNIT2, 3).suggest(6)
    observations = [Observation(p, branin_currin(p)) for p in points]
    observations.append(Observation({"x0": 0.99, "x1": 0.99}, outcome="failed"))
    acqf = _acquisition_after(planner, observations)
    assert isinstance(acqf, qLogNoisyExpectedHypervolumeImprovement)
    # Constraint on "sum" plus the failure model's success constraint.
    assert len(acqf.constraints) == 2  # type: ignore[arg-type]


# ------------------------------------------------------------------ batches and pending
@pytest.mark.parametrize(
    ("objectives", "constraints"),
    [
        (BC[:1], []),
        (BC[:1], ["sum <= 1.2"]),
        (BC, []),
        (BC, ["sum <= 1.2"]),
        # Three objectives: exact box decompositions per MC sample make this the slow one.
        pytest.param([*BC, Objective(name="sum")], [], marks=pytest.mark.slow),
    ],
)
def test_batches_are_distinct_valid_and_avoid_pending(
    objectives: list[Objective], constraints: list[str]
) -> None:
    planner = BoTorchPlanner(
        UNIT2,
        objectives,
        PlannerConfig(initial=InitialDesign(n=5)),
        seed=2,
        settings=SMALL,
        outcome_constraints=[parse_outcome_constraint(c) for c in constraints],
    )
    with mock_optimize_context_manager():
        run(planner, branin_currin, 6)
        batch = planner.suggest(3)
        assert planner.last_kinds == ["model"] * 3
        pending_keys = {point_key(UNIT2, p) for p in batch}
        assert len(pending_keys) == 3 and all(UNIT2.contains(p) for p in batch)
        more = planner.suggest(3, pending=batch)
        keys = {point_key(UNIT2, p) for p in more}
        assert len(keys) == 3 and not keys & pending_keys
        assert all(UNIT2.contains(p) for p in more)


def test_batch_of_several_objectives_is_reproducible() -> None:
    def proposals() -> list[Point]:
        planner = BoTorchPlanner(UNIT2, BC, seed=4, settings=SMALL)
        with mock_optimize_context_manager():
            run(planner, branin_currin, 6)
            return planner.suggest(2, pending=[{"x0": 0.5, "x1": 0.5}])

    assert proposals() == proposals()


# ------------------------------------------------------------------ does it work
@pytest.mark.slow
def test_constrained_proposals_are_mostly_feasible() -> None:
    """Minimise Branin (of BraninCurrin) subject to x0 + x1 <= 0.8 (the unconstrained minima
    at x1 ~ 0.15 lie on both sides of the boundary): after the initial design, most
    proposals satisfy the constraint, and the best feasible value is close to the optimum."""
    constraint = parse_outcome_constraint("sum <= 0.8")
    planner = BoTorchPlanner(
        UNIT2,
        BC[:1],
        PlannerConfig(initial=InitialDesign(n=5)),
        seed=0,
        settings=SMALL,
        outcome_constraints=[constraint],
    )
    done = run(planner, branin_currin, 20)
    after = [constraint.satisfied(o.outputs) for o in done[5:]]
    assert sum(after) / len(after) >= 0.75
    best = min(o.outputs["branin"] for o in done if constraint.satisfied(o.outputs))
    assert best < 1.0  # optimum 0.398 at (0.5428, 0.1517), feasible


@pytest.mark.slow
def test_two_objectives_beat_sobol_on_branin_currin() -> None:
    ref = [18.0, 6.0]  # BoTorch's reference point for BraninCurrin
    config = PlannerConfig(initial=InitialDesign(n=5))

    def hv(planner: BoTorchPlanner | SobolPlanner) -> float:
        done = run(planner, branin_currin, 16)
        Y = np.array([[o.outputs["branin"], o.outputs["currin"]] for o in done])
        return hypervolume(Y, BC, ref=ref)

    botorch_hv = hv(BoTorchPlanner(UNIT2, BC, config, seed=1, settings=SMALL))
    sobol_hv = hv(SobolPlanner(UNIT2, seed=1))
    assert botorch_hv > 1.1 * sobol_hv


def test_several_objectives_start_with_the_centre_unless_told_otherwise() -> None:
    centre = {"x0": 0.5, "x1": 0.5}
    one = [Objective(name="branin", goal="minimize")]
    config = PlannerConfig(initial=InitialDesign(n=4))
    assert BoTorchPlanner(UNIT2, BC, config, seed=3).suggest(2)[0] == centre
    assert BoTorchPlanner(UNIT2, one, config, seed=3).suggest(2)[0] != centre
    off = PlannerConfig(initial=InitialDesign(n=4, centre=False))
    assert BoTorchPlanner(UNIT2, BC, off, seed=3).suggest(1)[0] != centre
    on = PlannerConfig(initial=InitialDesign(n=4, centre=True))
    assert BoTorchPlanner(UNIT2, one, on, seed=3).suggest(1)[0] == centre
