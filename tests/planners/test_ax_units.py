"""The Ax planner in any units: narrow and offset float ranges, wide integer ranges, outputs
in small units, and proposals that repeat a pending point."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botorch.test_utils.mock import mock_optimize_context_manager

from planners import (
    ChoiceParameter,
    FloatParameter,
    InitialDesign,
    IntParameter,
    Objective,
    Observation,
    OutcomeConstraint,
    PlannerConfig,
    Point,
    Space,
    check_planner,
    make_planner,
)
from planners import _ax as ax_module
from planners._ax import AxPlanner, _float_map
from planners._baselines import near_duplicate

CONFIG = PlannerConfig(kind="ax", initial=InitialDesign(n=3))
Y = [Objective(name="y")]


@pytest.fixture(autouse=True)
def _short_optimiser() -> Iterator[None]:
    with mock_optimize_context_manager(force=True):
        yield


def _run(
    planner: AxPlanner, f: Callable[[Point], dict[str, float]], rounds: int, batch: int = 1
) -> list[Observation]:
    done: list[Observation] = []
    for _ in range(rounds):
        points = planner.suggest(batch)
        assert all(planner.space.validate(p) == p for p in points)
        told = [Observation(parameters=p, outputs=f(p)) for p in points]
        planner.ingest(told)
        done += told
    return done


def statuses(planner: AxPlanner) -> list[str]:
    experiment = planner._client._experiment
    return [experiment.trials[i].status.name for i in sorted(experiment.trials)]


# ---------------------------------------------------------------------- integer ranges
@pytest.mark.parametrize("log", [False, True])
def test_an_integer_range_ax_would_list_in_full_is_refused_when_the_campaign_loads(
    log: bool,
) -> None:
    """Ax lists every integer of a range (a log one becomes a choice of every value): a
    range of 10^9 filled the memory at the first model suggest. Refused by the planner
    check that ``closedloop validate`` runs, naming the parameter and the way out."""
    space = Space([IntParameter(name="k", bounds=(1, 10**9), log=log)])
    with pytest.raises(ValueError, match="integer parameter 'k' has 1000000000 values") as info:
        check_planner(space, Y, CONFIG)
    assert "use planner kind: botorch" in str(info.value)
    assert "float parameter" in str(info.value)
    check_planner(Space([IntParameter(name="k", bounds=(1, 100_000), log=log)]), Y, CONFIG)
    check_planner(space, Y, PlannerConfig(kind="botorch"))


@pytest.mark.parametrize("ordered", [False, True])
def test_a_choice_beyond_axs_limit_is_refused_when_the_campaign_loads(ordered: bool) -> None:
    """Ax refuses a choice of more than 1000 values only at its first proposal: the campaign
    was stored, then stopped with "please report it" (found in review)."""
    values = tuple(f"v{i}" for i in range(1001))
    space = Space([ChoiceParameter(name="c", values=values, ordered=ordered)])
    with pytest.raises(ValueError, match="choice parameter 'c' has 1001 values") as info:
        check_planner(space, Y, CONFIG)
    assert "use planner kind: botorch" in str(info.value)
    check_planner(Space([ChoiceParameter(name="c", values=values[:1000], ordered=True)]), Y, CONFIG)


# ---------------------------------------------------------------------- float ranges
NARROW = Space(
    [
        FloatParameter(name="conc", bounds=(1e-6, 1e-5), log=True),  # mol/L
        FloatParameter(name="b", bounds=(0.0, 2e-6)),
        FloatParameter(name="c", bounds=(0.0, 2e-6)),
        FloatParameter(name="wavelength", bounds=(1000.0, 1000.00001)),  # far from zero
    ],
    constraints=["b + c <= 2e-6"],
)


def _narrow_response(p: Point) -> dict[str, float]:
    return {
        "y": -((math.log10(p["conc"]) + 5.5) ** 2)
        - ((p["wavelength"] - 1000.000007) * 1e5) ** 2
        + (p["b"] - p["c"]) * 1e6
    }


def test_narrow_float_ranges_and_a_constraint_on_them_work() -> None:
    """Ax refuses a range narrower than ~1.2e-5 ("Parameter p0's range ... is very small"):
    the first suggest crashed, after validate said ok, and so did every resume."""
    planner = AxPlanner(NARROW, Y, CONFIG, seed=1)
    done = _run(planner, _narrow_response, rounds=3, batch=2)
    assert all(b + c <= 2e-6 for b, c in ((o.parameters["b"], o.parameters["c"]) for o in done))
    # Ax's model proposes (its batch-mate may repeat it on the constraint's corner: the
    # Sobol design then fills in, see the test of repeats below).
    assert planner.last_kinds[0] == "model"
    ranges = planner._client._experiment.search_space.parameters
    # Each range times the power of two that makes it 1 to 2 wide: 9e-6 * 2^17, 2e-6 * 2^19.
    assert [ranges[a].upper - ranges[a].lower for a in ("p0", "p1", "p2", "p3")] == [
        pytest.approx(w, rel=1e-6) for w in (1.179648, 1.048576, 1.048576, 1.31072)
    ]
    assert ranges["p3"].lower == 0.0  # offset: [1000, 1000.00001] starts at 0 for Ax
    (constraint,) = planner._client._experiment.search_space.parameter_constraints
    # b + c <= 2e-6 over b * 2^19 and c * 2^19, in those units, tightened by 1e-6 of the
    # range b + c spans (4e-6), and scaled to coefficients of 1.
    assert constraint.constraint_dict == {"p1": 1.0, "p2": 1.0}
    assert constraint.bound == pytest.approx(2**19 * (2e-6 - 4e-12), rel=1e-12)


def test_a_power_of_two_brings_ax_values_back_exactly() -> None:
    """Without an offset a float is scaled by a power of two, so the values a rebuilt
    planner tells Ax are the very ones Ax proposed, and it proposes what a live one does."""
    rng = random.Random(0)
    for p in NARROW.parameters:
        assert isinstance(p, FloatParameter)
        offset, scale = _float_map(p)
        assert math.log2(scale).is_integer() and (offset == 0.0) == (p.name != "wavelength")
        if offset:
            continue
        parameter = next(a for a in AxPlanner(NARROW, Y, CONFIG, 0)._parameters if a.name == p.name)
        lo, hi = (float(b) * scale for b in p.bounds)
        for x in (lo, hi, *(rng.uniform(lo, hi) for _ in range(1000))):
            assert parameter.to_ax(parameter.from_ax(x)) == x
    wide = FloatParameter(name="x", bounds=(-5.0, 10.0))
    assert _float_map(wide) == (0.0, 1.0)  # an ordinary range is shown as it is

    space = Space([p for p in NARROW.parameters if p.name != "wavelength"])

    def f(p: Point) -> dict[str, float]:
        return {"y": -((math.log10(p["conc"]) + 5.5) ** 2) + (p["b"] - p["c"]) * 1e6}

    live = AxPlanner(space, Y, CONFIG, seed=3)
    done = _run(live, f, rounds=4)
    rebuilt = AxPlanner(space, Y, CONFIG, seed=3)
    rebuilt.ingest(done)
    assert rebuilt.suggest(1) == live.suggest(1)
    assert live.last_kinds == ["model"]


# ---------------------------------------------------------------------- output units
def _bowl(p: Point) -> float:
    return -((p["a"] - 0.7) ** 2 + (p["b"] - 0.2) ** 2)


BOX = Space([FloatParameter(name="a", bounds=(0, 1)), FloatParameter(name="b", bounds=(0, 1))])


def test_outputs_in_small_units_teach_ax_as_much_as_in_ordinary_ones() -> None:
    """Ax takes an output whose spread is below 1e-8 for a constant: a signal of 1e-9 taught
    its model nothing (its points wandered; regret 0.0078 after 12 trials against 0.0002).
    Told in units a power of ten apart, the same data reach Ax, and the same proposals
    come back (to the rounding the model fit amplifies)."""
    runs = []
    for unit in (1.0, 1e-9, 1e-12):
        planner = AxPlanner(BOX, [Objective(name="I")], CONFIG, seed=1)
        done = _run(planner, lambda p, u=unit: {"I": u * _bowl(p)}, rounds=6)  # type: ignore[misc]
        told = planner._client._experiment.lookup_data().df["mean"].tolist()
        points = [o.parameters[name] for o in done for name in ("a", "b")]
        runs.append((planner._scales["I"] * unit, told[:3], points))
    (s1, told1, points1), *others = runs
    assert min(abs(v) for v in told1) > 1e-3
    for scale, told, points in others:
        assert scale == pytest.approx(s1, rel=1e-12)
        assert told == pytest.approx(told1, rel=1e-12)
        assert points[:6] == points1[:6]  # the initial design
        assert points[6:] == pytest.approx(points1[6:], abs=0.01)  # the model's


def test_the_factor_comes_from_the_first_non_zero_value_and_bounds_follow_it() -> None:
    constraints = [OutcomeConstraint(name="leak", op="<=", bound=3e-9, text="leak <= 3e-9")]
    planner = make_planner(BOX, Y, CONFIG, seed=0, outcome_constraints=constraints)
    assert isinstance(planner, AxPlanner)
    first, second = planner.suggest(2)
    planner.ingest(
        [
            Observation(parameters=first, outputs={"y": 0.0, "leak": 0.0}),  # zeros: any unit
            Observation(parameters=second, outputs={"y": 0.5, "leak": 2.5e-9}),
        ]
    )
    assert planner._scales == {"y": 10.0, "leak": 1e9}
    opt = planner._client._experiment.optimization_config
    assert [(c.metric_names[0], c.bound) for c in opt.outcome_constraints] == [
        ("con0", pytest.approx(3.0))
    ]
    big = AxPlanner(BOX, Y, CONFIG, seed=0)
    big.ingest([Observation(parameters=first, outputs={"y": 250.0})])
    assert big._scales == {"y": 1.0}  # outputs of 1 and more are told as they are


def test_multi_objective_reference_points_follow_their_output() -> None:
    objectives = [
        Objective(name="signal", reference_point=1e-10),
        Objective(name="cost", goal="minimize", reference_point=5.0),
    ]
    planner = AxPlanner(BOX, objectives, CONFIG, seed=0)
    (point,) = planner.suggest(1)
    planner.ingest([Observation(parameters=point, outputs={"signal": 4e-10, "cost": 2.0})])
    opt = planner._client._experiment.optimization_config
    thresholds = {t.metric_names[0]: t.bound for t in opt.objective_thresholds}
    assert thresholds == {"obj0": pytest.approx(1.0), "obj1": 5.0}


# ---------------------------------------------------------------------- repeats
def test_a_proposal_next_to_a_pending_point_is_left_to_the_sobol_design(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ax's model, stuck on a constraint's corner, proposed the same point (to 1e-15) twice
    per batch, batch after batch. Such a proposal is abandoned in Ax and the design fills in.
    (``initial.n: 1``: Ax's model, not the positional design, makes the second batch.)"""
    planner = AxPlanner(BOX, Y, PlannerConfig(kind="ax", initial=InitialDesign(n=1)), seed=0)
    (pending,) = planner.suggest(1)
    real_generate = ax_module._generate

    def twin_of_pending(client: Any, n: int) -> dict[int, Any]:
        near = planner._to_ax({"a": pending["a"] + 1e-12, "b": pending["b"]})
        index = int(client.attach_trial(parameters=near))
        return {index: near} | real_generate(client, n - 1)

    monkeypatch.setattr(ax_module, "_generate", twin_of_pending)
    batch = planner.suggest(2, pending=[pending])
    assert len(batch) == 2 and planner.last_kinds[-1] == "sobol"
    assert not any(near_duplicate(BOX, p, [pending]) for p in batch)
    assert statuses(planner) == ["RUNNING", "ABANDONED", "RUNNING", "RUNNING"]
