"""BoTorch planner on awkward data: tiny units, sentinels, narrow constrained spaces, exhausted
finite spaces; and the fix a campaign file gets for a log scale starting at 0.

Each test reproduces a failure of an earlier version (a review's repro, cut down to seconds).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from botorch.test_utils.mock import mock_optimize_context_manager

from loop.config import load_campaign
from loop.errors import CampaignConfigError
from planners import (
    BoTorchPlanner,
    BoTorchSettings,
    ChoiceParameter,
    FloatParameter,
    InitialDesign,
    IntParameter,
    Objective,
    Observation,
    PlannerConfig,
    SobolPlanner,
    Space,
    make_planner,
)
from planners._baselines import PositionalDesign, point_key
from planners._botorch import _clip_outliers, _feasible_raw_samples
from planners._constraints import InfeasibleSpaceError
from planners._outliers import outlying

BRANIN_MIN = 0.397887
# Contract tests: tiny optimiser budgets (see test_botorch.py). Regret tests use the defaults.
FAST = BoTorchSettings(mc_samples=16, raw_samples=16, num_restarts=2, maxiter=15)


@pytest.fixture
def mocked_optimizer() -> Iterator[None]:
    """Two L-BFGS-B iterations per fit and acquisition run: for tests of contracts only."""
    with mock_optimize_context_manager(force=True):
        yield


def branin_space() -> Space:
    return Space(
        [
            FloatParameter(name="x1", bounds=(-5.0, 10.0)),
            FloatParameter(name="x2", bounds=(0.0, 15.0)),
        ]
    )


def branin(p: dict[str, Any]) -> float:
    x1, x2 = p["x1"], p["x2"]
    return (
        (x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6) ** 2
        + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1)
        + 10
    )


def run(
    planner: BoTorchPlanner, trials: int, outputs: Callable[[int, dict[str, Any]], dict[str, float]]
) -> list[dict[str, Any]]:
    """Sequential loop; ``outputs(k, point)`` gives trial ``k``'s outputs. The points tried."""
    points = []
    for k in range(trials):
        (p,) = planner.suggest(1)
        points.append(p)
        planner.ingest([Observation(parameters=p, outputs=outputs(k, p))])
    return points


def branin_regret(points: list[dict[str, Any]]) -> float:
    return min(branin(p) for p in points) - BRANIN_MIN


# ------------------------------------------------------------------ outputs in small units
def fitted_stdv(model: Any) -> float:
    """The scale of a single-output GP's ``Standardize`` outcome transform."""
    return float(model.outcome_transform.stdvs)


def test_small_units_are_standardised(mocked_optimizer: None) -> None:
    """Standardize's floor is relative: outputs of ~1e-12 get their own std, not 1.0 (the
    absolute 1e-8 floor made the GP see a constant); constant outputs and a large offset with
    a spread of ~1 keep working."""
    space = branin_space()
    points = SobolPlanner(space, seed=0).suggest(8)
    X = space.encode(points)
    cases = {
        "tiny": [1e-12 * branin(p) for p in points],
        "offset": [1e12 + (p["x1"] + 5) / 15 for p in points],
        "constant": [1e-12] * len(points),
    }
    for name, ys in cases.items():
        planner = BoTorchPlanner(space, [Objective(name="y")], PlannerConfig(), 0, FAST)
        # The GP as built for these values, whatever the planner scales them by.
        Y = torch.tensor(ys, dtype=torch.float64)[:, None]
        stdv = fitted_stdv(planner._build_model(X, Y))
        expected = 1.0 if name == "constant" else float(np.std(ys, ddof=1))
        assert stdv == pytest.approx(expected, rel=1e-6), name
        # ... and as the planner fits it: every column with a spread standardised.
        planner.ingest(
            [Observation(parameters=p, outputs={"y": y}) for p, y in zip(points, ys, strict=True)]
        )
        model = planner.fit()
        _, train_Y = planner.training_data()
        stdv = fitted_stdv(model)
        expected = 1.0 if name == "constant" else float(train_Y.std())
        assert stdv == pytest.approx(expected, rel=1e-6), name
        assert space.contains(planner.suggest(1)[0])


@pytest.mark.parametrize("seed", [0, 3])
def test_small_units_optimise_like_unit_ones(seed: int) -> None:
    """Branin in units of 1e-12 reaches the regret of Branin itself: the GP sees the same
    standardised data and the acquisition the same scale. Before, the GP saw a constant
    (regret 3.2 and 10.6 after 12 trials for seeds 0 and 3, against 0.12 and 0.15)."""
    regrets = {}
    for scale in (1.0, 1e-12):

        def measure(k: int, p: dict[str, Any], scale: float = scale) -> dict[str, float]:
            return {"y": scale * branin(p)}

        planner = BoTorchPlanner(branin_space(), [Objective(name="y", goal="minimize")], seed=seed)
        regrets[scale] = branin_regret(run(planner, 12, measure))
    assert regrets[1e-12] < max(2 * regrets[1.0], 0.05), regrets


# ------------------------------------------------------------------ outliers and sentinels
def test_ordinary_values_are_never_clipped() -> None:
    """Branin's raw values (heavy-tailed: 0.4 to 308) reach the model bit for bit at every
    campaign size; a sentinel at either end is clipped onto the nearest other value."""
    space = branin_space()
    points = SobolPlanner(space, seed=3).suggest(40)
    ys = torch.tensor([[branin(p)] for p in points], dtype=torch.float64)
    for n in range(3, 41):
        clipped, moved = _clip_outliers(ys[:n], 1e-5)
        assert torch.equal(clipped, ys[:n]) and not bool(moved.any()), n
    Y = torch.cat([ys[:10], torch.tensor([[9.9e37], [-1e300], [9.91e37]], dtype=torch.float64)])
    clipped, moved = _clip_outliers(Y, 1e-5)
    assert torch.equal(clipped[:10], Y[:10])
    top, bottom = float(ys[:10].max()), float(ys[:10].min())
    assert clipped[10:, 0].tolist() == [top, bottom, top]
    assert moved[:, 0].tolist() == [False] * 10 + [True] * 3
    # A lone different value among equal ones is information, not an outlier: nothing to
    # protect, nothing clipped (a first hit in a campaign that measured zeros so far) ...
    Y = torch.tensor([0.0] * 8 + [0.3], dtype=torch.float64)[:, None]
    assert torch.equal(_clip_outliers(Y, 1e-5)[0], Y)
    # ... but a code of sentinel magnitude is no reading, among equal readings too (it was
    # left unclipped and became the best trial; see tests/planners/test_outliers.py).
    Y = torch.tensor([1.0] * 6 + [9.9e37], dtype=torch.float64)[:, None]
    assert _clip_outliers(Y, 1e-5)[0].tolist() == [[1.0]] * 7
    # So is 1e300, which is too large to standardise at all (its square overflows).
    Y = torch.tensor([[1.0]] * 6 + [[1e300]], dtype=torch.float64)
    assert _clip_outliers(Y, 1e-5)[0].tolist() == [[1.0]] * 7
    # The displays' rule (planners._outliers.outlying) flags exactly what the model clips,
    # and passes over failures (NaN, inf).
    column = [*ys[:10, 0].tolist(), 9.9e37, -1e300, math.nan, math.inf, 9.91e37]
    assert outlying(column).tolist() == [False] * 10 + [True, True, False, False, True]
    assert not outlying(ys[:, 0].tolist()).any()


def test_a_genuine_extreme_reaches_the_model_as_measured(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Far outside the others is not enough: a reading is clipped only at sentinel
    magnitude (>= 1e30). A screening hit of 40 among titres of 5.000 and 5.001 and a beam
    of 12000 counts after dark counts of 3-6 were clipped to the background (the planner
    never exploited them) and left out of best (found in review); they now reach the model
    as measured, and a sentinel among them is clipped onto the largest of them."""
    for column in ([5.0, 5.001, 40.0], [3.0, 5.0, 4.0, 6.0, 4.0, 12000.0]):
        Y = torch.tensor(column, dtype=torch.float64)[:, None]
        clipped, moved = _clip_outliers(Y, 1e-5)
        assert torch.equal(clipped, Y) and not bool(moved.any()), column
        assert not outlying(column).any(), column
        # with an overrange code too: the code goes, the hit stays (both ends)
        for code in (9.9e37, -3.4e38):
            Y = torch.tensor([*column, code], dtype=torch.float64)[:, None]
            clipped, moved = _clip_outliers(Y, 1e-5)
            assert clipped[:-1, 0].tolist() == column
            assert float(clipped[-1, 0]) == (max(column) if code > 0 else min(column))
            assert moved[:, 0].tolist() == [False] * len(column) + [True]
            assert outlying([*column, code]).tolist() == [False] * len(column) + [True]
    # The model's own training data, and no warning: nothing looks like a sentinel.
    space = Space([FloatParameter(name="x", bounds=(0.0, 10.0))])
    planner = BoTorchPlanner(space, [Objective(name="titre")], PlannerConfig(), 0, FAST)
    planner.ingest(
        [
            Observation(parameters={"x": x}, outputs={"titre": y})
            for x, y in [(1.0, 5.0), (9.0, 5.001), (5.0, 40.0)]
        ]
    )
    with caplog.at_level(logging.WARNING, logger="planners"):
        _, Y = planner.training_data()
    assert Y[:, 0].tolist() == [5.0, 5.001, 40.0]
    assert not [r for r in caplog.records if "far outside" in r.getMessage()]


def test_values_too_large_to_standardise_are_clipped_whatever_the_rest() -> None:
    """The overflow guard (a square above float64's range) holds with the magnitude rule:
    sentinels in the majority are clipped onto the one ordinary reading (before, that
    reading was clipped onto them), and with no ordinary reading the largest goes."""
    Y = torch.tensor([[1e300], [5.0], [1e300], [1e300]], dtype=torch.float64)
    clipped, moved = _clip_outliers(Y, 1e-5)
    assert clipped[:, 0].tolist() == [5.0] * 4
    assert moved[:, 0].tolist() == [True, False, True, True]
    Y = torch.tensor([[9.9e37]] * 5 + [[1e300]], dtype=torch.float64)
    clipped, moved = _clip_outliers(Y, 1e-5)
    assert clipped[:, 0].tolist() == [9.9e37] * 6
    assert moved[:, 0].tolist() == [False] * 5 + [True]
    assert bool(torch.isfinite(clipped.var())), "the variance must be representable"


def test_a_sentinel_reading_does_not_derail_the_search(caplog: pytest.LogCaptureFixture) -> None:
    """One overrange reading (9.9e37) among Branin's values: the search still converges
    (before: the others were flattened to nothing and the planner refined around the
    sentinel, regret > 1), the stored value is untouched, and the user is told once.

    With the sentinel at trial 6, 30 trials end below 0.1 in about three runs of four (17
    of seeds 1-24 with the quadratic prior mean, 18 with the constant one; session 21), and
    which seeds do changes with the machine's floating point: seed 2 ended at 0.17 on
    session 38's AMD EPYC VM (seeds 1-12 there: 7 below 0.1, the worst 0.985). So three
    seeds, two of which must converge, and none may be lost."""
    regrets = []
    for seed in (4, 5, 8):
        caplog.clear()
        planner = BoTorchPlanner(branin_space(), [Objective(name="y", goal="maximize")], seed=seed)
        with caplog.at_level(logging.WARNING, logger="planners"):
            points = run(planner, 30, lambda k, p: {"y": 9.9e37 if k == 6 else -branin(p)})
        regrets.append(branin_regret(points))
        assert planner.observations[6].outputs["y"] == 9.9e37
        told = [r for r in caplog.records if "far outside" in r.getMessage()]
        assert len(told) == 1, [r.getMessage() for r in told]
        message = told[0].getMessage()
        assert "y = 9.9e+37" in message and "stored value is unchanged" in message
        assert f"x1={points[6]['x1']:.6g}" in message
    assert max(regrets) < 1 and sorted(regrets)[1] < 0.1, regrets


def test_an_enormous_value_does_not_fail_later_suggests(
    mocked_optimizer: None, caplog: pytest.LogCaptureFixture
) -> None:
    """1e300 overflowed the variance: every later suggest fell back on the design (silently
    a Sobol campaign). Now every model position gets a model point."""
    planner = BoTorchPlanner(
        branin_space(), [Objective(name="y", goal="maximize")], PlannerConfig(), 0, FAST
    )
    kinds = []
    with caplog.at_level(logging.WARNING, logger="planners"):
        for k in range(12):
            (p,) = planner.suggest(1)
            kinds += planner.last_kinds
            planner.ingest(
                [Observation(parameters=p, outputs={"y": 1e300 if k == 5 else -branin(p)})]
            )
    assert kinds == ["initial"] * 5 + ["model"] * 7
    assert not [r for r in caplog.records if "could not propose" in r.getMessage()]


def test_a_sentinel_in_one_of_two_objectives(mocked_optimizer: None) -> None:
    """With several objectives each column is clipped on its own, and the hypervolume
    reference comes from the clipped values (a sentinel on the front put it out of reach:
    no other point could improve the hypervolume, and suggests failed)."""
    objectives = [Objective(name="a"), Objective(name="b", goal="minimize")]
    planner = BoTorchPlanner(branin_space(), objectives, PlannerConfig(), 0, FAST)
    kinds = []
    for k in range(10):
        (p,) = planner.suggest(1)
        kinds += planner.last_kinds
        outputs = {"a": 1e30, "b": 0.0} if k == 6 else {"a": -branin(p), "b": p["x1"]}
        planner.ingest([Observation(parameters=p, outputs=outputs)])
    assert kinds.count("model") == 10 - planner.n_initial
    _, Y = planner.training_data()
    others = torch.cat([Y[:6, 0], Y[7:, 0]])
    assert float(Y[6, 0]) == float(others.max())  # a clipped onto the best other a
    assert float(Y[6, 1]) == 0.0  # b = 0 is an ordinary value
    assert float(planner.hypervolume_reference()[0]) < float(others.max())


# ------------------------------------------------------------------ narrow constrained spaces
def sliver() -> Space:
    return Space(
        [FloatParameter(name="x", bounds=(0.0, 1.0)), IntParameter(name="n", bounds=(0, 5))],
        constraints=["x + n >= 5.9999"],
    )


@pytest.mark.parametrize("seed", [2, 5])
def test_a_narrow_constrained_space_never_fails_a_suggest(seed: int) -> None:
    """Feasible fraction ~1.7e-5: the campaign's design finds its points, but a suggest's
    fresh raw samples may find none in 2^16 draws. That raised InfeasibleSpaceError mid
    campaign, and resume met the same error; the measured points now serve as starts."""
    space = sliver()
    planner = BoTorchPlanner(
        space, [Objective(name="y", goal="minimize")], PlannerConfig(), seed, FAST
    )
    points = run(planner, 8, lambda k, p: {"y": p["x"]})  # seeds 2, 5: died at the 6th
    assert all(space.contains(p) for p in points)
    assert planner.last_kinds == ["model"]


def test_raw_samples_fall_back_on_known_feasible_points(
    mocked_optimizer: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No feasible draw at all: the raw samples are the campaign's feasible points and
    perturbations of them, all feasible; with no known point the error stands."""
    space = sliver()
    planner = BoTorchPlanner(space, [Objective(name="y")], PlannerConfig(), 0, FAST)

    def no_draws(self: PositionalDesign, n: int) -> torch.Tensor:
        raise InfeasibleSpaceError("none", draws=2**16, feasible_fraction=1 / 2**16)

    monkeypatch.setattr(PositionalDesign, "leading_feasible_unit_points", no_draws)
    with pytest.raises(InfeasibleSpaceError):
        _feasible_raw_samples(planner, 64)
    planner.ingest([Observation(parameters={"x": 0.99995, "n": 5}, outputs={"y": 1.0})])
    raw = _feasible_raw_samples(planner, 64)
    assert len(raw) > 1 and bool(space.feasible(raw).all())
    assert space.contains(planner.suggest(1)[0])


# ------------------------------------------------------------------ exhausted finite spaces
@pytest.mark.parametrize(
    "space",
    [
        Space(
            [IntParameter(name="a", bounds=(0, 3)), IntParameter(name="b", bounds=(0, 3))],
            constraints=["a + b <= 1"],
        ),
        Space([IntParameter(name="a", bounds=(0, 1)), ChoiceParameter(name="b", values=(0, 1))]),
        Space(
            [FloatParameter(name="a", bounds=(0, 1)), FloatParameter(name="b", bounds=(0, 1))],
            candidates=[{"a": 0.1, "b": 0.2}, {"a": 0.5, "b": 0.5}, {"a": 0.9, "b": 0.0}],
        ),
    ],
    ids=["constrained", "grid", "table"],
)
def test_an_exhausted_finite_space_warns_once(
    space: Space, mocked_optimizer: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Once every feasible point is measured the planner repeats points: one warning says
    so (before: an info record or none, and with constraints the 16 points counted before
    the constraint meant the 3 feasible ones were never 'all measured')."""
    config = PlannerConfig(initial=InitialDesign(n=2))
    planner = BoTorchPlanner(space, [Objective(name="y")], config, 0, FAST)
    with caplog.at_level(logging.INFO, logger="planners"):
        points = run(planner, 9, lambda k, p: {"y": float(p["a"]) - float(p["b"])})
    n_points = 4 if space.cardinality() == 4 else 3
    assert len({point_key(space, p) for p in points}) == n_points
    told = [r for r in caplog.records if "has been measured" in r.getMessage()]
    assert [r.levelno for r in told] == [logging.WARNING]
    assert f"every one of the {n_points} points" in told[0].getMessage()


@pytest.mark.parametrize("n_initial", [8, 1], ids=["design", "model"])
def test_an_abandoned_trial_does_not_count_as_measured(
    n_initial: int, mocked_optimizer: None, caplog: pytest.LogCaptureFixture
) -> None:
    """An interrupted trial measured nothing: its point is proposed again before the finite
    space counts as exhausted, by the initial design and in place of a model repeat alike
    (before: 'every one of the 4 points has been measured' with one never measured)."""
    space = Space([IntParameter(name="a", bounds=(0, 1)), IntParameter(name="b", bounds=(0, 1))])
    config = PlannerConfig(initial=InitialDesign(n=n_initial))
    planner = BoTorchPlanner(space, [Objective(name="y")], config, 0, FAST)
    done = [{"a": 0, "b": 0}, {"a": 0, "b": 1}, {"a": 1, "b": 0}]
    planner.ingest(
        [Observation(parameters=p, outputs={"y": float(p["a"] - p["b"])}) for p in done]
        + [Observation(parameters={"a": 1, "b": 1}, outcome="abandoned")]
    )
    with caplog.at_level(logging.INFO, logger="planners"):
        (point,) = planner.suggest(1)
    assert point == {"a": 1, "b": 1}
    assert not [r for r in caplog.records if "has been measured" in r.getMessage()]


# ------------------------------------------------------------------ campaign file
@pytest.mark.parametrize("kind", ["int", "float"])
def test_log_bounds_from_zero_get_a_log_fix(kind: str, tmp_path: Path) -> None:
    """The general bounds fix ('e.g. bounds: [0, 10]') showed the very bounds refused."""
    path = tmp_path / "log.yaml"
    path.write_text(
        "name: t\n"
        "parameters:\n"
        f"  - {{name: x1, type: {kind}, bounds: [0, 10], log: true}}\n"
        "  - {name: x2, type: float, bounds: [0, 15]}\n"
        "objectives: [{name: y, goal: minimize}]\n"
        "instrument: {simulator: branin}\n"
        "budget: {max_trials: 5}\n"
    )
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path)
    assert "log-scale parameter needs lower bound > 0" in str(info.value)
    assert "drop `log: true`" in info.value.fix and "[0, 10]" not in info.value.fix


_CHECKED_SPACE = Space(
    [FloatParameter(name="x", bounds=(0.0, 1.0)), ChoiceParameter(name="c", values=("a", "b"))]
)


@pytest.mark.parametrize("kind", ["botorch", "sobol", "random"])
@pytest.mark.parametrize(
    ("parameters", "outputs", "outcome", "says"),
    [
        ({"x": 0.5}, {"f": 1.0}, "completed", "have no value for c"),
        ({"x": 0.5, "c": "a", "z": 1}, {"f": 1.0}, "completed", "unknown names z"),
        ({"x": 0.5, "c": "q"}, {"f": 1.0}, "completed", "c='q' is not one of ['a', 'b']"),
        ({"x": math.nan, "c": "a"}, {"f": 1.0}, "completed", "x=nan is not finite"),
        ({"x": "0.5", "c": "a"}, {"f": 1.0}, "completed", "x='0.5' is not a number"),
        ({"x": 0.5, "c": "a"}, {"f": None}, "completed", "output f=None is not a number"),
        ({"x": 0.5, "c": "a"}, {"f": True}, "completed", "output f=True is not a number"),
        ({"x": 0.5, "c": "a"}, {"f": 1.0}, "complete", "outcome 'complete' is not one of"),
    ],
)
def test_an_observation_no_planner_can_learn_from_is_refused_at_ingest(
    kind: Any, parameters: dict[str, Any], outputs: dict[str, Any], outcome: Any, says: str
) -> None:
    """Was: taken as it was, it broke every later suggest with an error naming no
    observation (KeyError 'c', TypeError), or an unknown outcome was read as another."""
    planner = make_planner(_CHECKED_SPACE, [Objective(name="f")], PlannerConfig(kind=kind), seed=0)
    good = Observation(parameters={"x": 0.2, "c": "b"}, outputs={"f": 0.3})
    bad = Observation(parameters=parameters, outputs=outputs, outcome=outcome)
    with pytest.raises(ValueError, match="observation 1 of 2: ") as raised:
        planner.ingest([good, bad])
    assert says in str(raised.value)
    # nothing of the refused batch was kept; outside the bounds and NaN readings are fine
    planner.ingest(
        [
            Observation(parameters={"x": 1.7, "c": "a"}, outputs={"f": 0.1}),
            Observation(parameters={"x": 0.4, "c": "a"}, outputs={"f": math.nan}),
        ]
    )
    (point,) = planner.suggest(1)
    assert _CHECKED_SPACE.contains(point)


def test_observations_without_the_modelled_outputs_are_named_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    planner = make_planner(
        _CHECKED_SPACE, [Objective(name="yield")], PlannerConfig(kind="botorch"), seed=0
    )
    with caplog.at_level(logging.WARNING, logger="planners"):
        for x in (0.1, 0.5, 0.9):
            planner.ingest([Observation(parameters={"x": x, "c": "a"}, outputs={"Yield": x})])
    told = [r.getMessage() for r in caplog.records if "teaches the model nothing" in r.getMessage()]
    assert told == [
        "an observation has outputs ['Yield'] but the planner models ['yield']: it teaches the "
        "model nothing (check the objectives' and outcome constraints' names)"
    ]


def test_a_noise_free_model_does_not_measure_a_point_again() -> None:
    """A choice of 200 categories, 4 seen: nothing scored above the incumbent on its bound,
    and the model proposed it 15 times in 20 trials (found in review). A noise-free repeat
    returns the value already known; a design point is measured instead."""
    space = Space(
        [
            ChoiceParameter(name="c", values=tuple(f"c{i}" for i in range(200))),
            FloatParameter(name="y", bounds=(0.0, 1.0)),
        ]
    )
    planner = make_planner(
        space,
        [Objective(name="f", goal="minimize")],
        PlannerConfig(kind="botorch", initial=InitialDesign(n=4)),
        seed=0,
    )
    seen: list[tuple[str, float]] = []
    for _ in range(12):
        (point,) = planner.suggest(1)
        seen.append((point["c"], point["y"]))
        f = int(point["c"][1:]) % 13 + point["y"]
        planner.ingest([Observation(parameters=point, outputs={"f": f})])
    assert len(set(seen)) == len(seen), seen


def test_an_objective_that_never_changes_is_named_once(caplog: pytest.LogCaptureFixture) -> None:
    """A stuck detector or a default value looks like a flat response: say so (found in
    review: no word of it), once, from the initial design's size on."""
    planner = make_planner(
        _CHECKED_SPACE,
        [Objective(name="f"), Objective(name="g", goal="maximize")],
        PlannerConfig(kind="botorch", initial=InitialDesign(n=3)),
        seed=0,
    )
    with caplog.at_level(logging.WARNING, logger="planners"):
        for _ in range(5):
            (point,) = planner.suggest(1)
            planner.ingest([Observation(parameters=point, outputs={"f": point["x"], "g": 1.0})])
    said = [r.getMessage() for r in caplog.records if "cannot tell points apart" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("g has been 1 in all 3 trials measured"), said


@pytest.mark.parametrize("kind", ["sobol", "random", "botorch"])
def test_a_planner_built_in_python_refuses_what_a_campaign_file_is_refused(kind: Any) -> None:
    """A ``Space`` with an equality written as two inequalities gave ``{x: 1, y: 0}`` three
    times from ``make_planner(...).suggest(3)``, and BoTorch's ``acquisition`` under ``kind:
    sobol`` was ignored; the campaign loader refuses both (found in review)."""
    from planners import ConstraintsLeaveNoRoom, make_planner
    from planners._config import PlannerSettingError

    floats = [FloatParameter(name="x", bounds=(0, 1)), FloatParameter(name="y", bounds=(0, 1))]
    objective = [Objective(name="f", goal="minimize")]
    flat = Space(floats, constraints=["x + y <= 1", "x + y >= 1"])
    with pytest.raises(ConstraintsLeaveNoRoom, match="leave the float parameters no room") as e:
        make_planner(flat, objective, PlannerConfig(kind=kind), seed=0)
    assert e.value.index == 1 and "type: fixed" in str(e.value)
    never = Space(floats, constraints=["x + y >= 3"])
    with pytest.raises(ConstraintsLeaveNoRoom, match="can never hold"):
        make_planner(never, objective, PlannerConfig(kind=kind), seed=0)
    if kind != "botorch":
        config = PlannerConfig(kind=kind, acquisition="qUpperConfidenceBound")
        with pytest.raises(PlannerSettingError, match="applies to kind: botorch only"):
            make_planner(Space(floats), objective, config, seed=0)
