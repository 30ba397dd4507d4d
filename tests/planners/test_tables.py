"""Candidate tables (an enumerated dataset) are finite spaces: every row once before a
repeat, prior rows included, and an interrupted trial's row again; and the rule for
near-duplicate proposals that the model planners share."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
from botorch.test_utils.mock import mock_optimize_context_manager

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
    RandomPlanner,
    SobolPlanner,
    Space,
    TrialOutcome,
)
from planners._baselines import near_duplicate, point_key

FAST = BoTorchSettings(raw_samples=32, num_restarts=2, mc_samples=32, maxiter=20)
# A table of 12 rows over a float and a choice column (a float makes the space infinite
# but for the table), as an enumerated dataset gives it.
TABLE = Space(
    [FloatParameter(name="t", bounds=(0, 2)), ChoiceParameter(name="c", values=tuple("abcd"))],
    candidates=[{"t": float(t), "c": c} for t in range(3) for c in "abcd"],
)
PRIOR = [{"t": 0.0, "c": "a"}, {"t": 1.0, "c": "b"}, {"t": 2.0, "c": "c"}, {"t": 0.0, "c": "d"}]


@pytest.fixture(autouse=True)
def _short_optimiser() -> Iterator[None]:
    with mock_optimize_context_manager(force=True):
        yield


def _y(point: dict[str, Any]) -> float:
    return float(point["t"]) + (1.0 if point["c"] == "b" else 0.0)


def _obs(point: dict[str, Any], outcome: TrialOutcome = "completed") -> Observation:
    outputs = {"y": _y(point)} if outcome == "completed" else {}
    return Observation(parameters=point, outputs=outputs, outcome=outcome)


def _planner(kind: str, seed: int = 0, n_initial: int = 3) -> Any:
    if kind == "botorch":
        config = PlannerConfig(initial=InitialDesign(n=n_initial))
        return BoTorchPlanner(TABLE, [Objective(name="y")], config, seed, FAST)
    return {"sobol": SobolPlanner, "random": RandomPlanner}[kind](TABLE, seed=seed)


KINDS = ["sobol", "random", "botorch"]


@pytest.mark.parametrize("kind", KINDS)
def test_prior_rows_are_not_measured_again_before_the_table_is_covered(kind: str) -> None:
    """The designs walked the table by position and the guard left tables out: with 4
    prior rows of 12, Sobol measured 4 of them again in its next 8 trials."""
    planner = _planner(kind, n_initial=8)
    planner.ingest([_obs(p) for p in PRIOR])
    seen = {point_key(TABLE, p) for p in PRIOR}
    for _ in range(8):
        (point,) = planner.suggest(1)
        assert point_key(TABLE, point) not in seen, f"{point} measured again"
        seen.add(point_key(TABLE, point))
        planner.ingest([_obs(point)])
    assert len(seen) == 12


@pytest.mark.parametrize("kind", KINDS)
def test_an_interrupted_row_comes_again_before_any_repeat(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An abandoned trial measured nothing: its row is proposed again before the table
    counts as exhausted (it was never proposed again: 12 completed trials covered 11 rows),
    and the warning comes once every row has been measured."""
    planner = _planner(kind, seed=2)
    completed: list[Any] = []
    with caplog.at_level(logging.WARNING, logger="planners"):
        for k in range(13):
            (point,) = planner.suggest(1)
            outcome: TrialOutcome = "abandoned" if k == 1 else "completed"
            planner.ingest([_obs(point, outcome)])
            if outcome == "completed":
                completed.append(point_key(TABLE, point))
        assert not [r for r in caplog.records if "has been measured" in r.getMessage()]
        assert len(set(completed)) == 12
        (repeat,) = planner.suggest(1)  # every row measured: a repeat, and the warning
    assert point_key(TABLE, repeat) in set(completed)
    told = [r for r in caplog.records if "has been measured" in r.getMessage()]
    assert [r.levelno for r in told] == [logging.WARNING]
    assert "every one of the 12 points" in told[0].getMessage()


@pytest.mark.parametrize("kind", ["sobol", "random"])
def test_table_designs_stay_positional_with_prior_rows(kind: str) -> None:
    """A design rebuilt from the store (prior rows and trials ingested again) goes on as the
    live one did, and a batch equals the same points asked one at a time."""
    live = _planner(kind, seed=5)
    live.ingest([_obs(p) for p in PRIOR])
    batch = live.suggest(4)
    assert len({point_key(TABLE, p) for p in batch + PRIOR}) == 8
    one_by_one = _planner(kind, seed=5)
    one_by_one.ingest([_obs(p) for p in PRIOR])
    points: list[dict[str, Any]] = []
    for _ in range(4):
        points += one_by_one.suggest(1, pending=points)
    assert points == batch


@pytest.mark.parametrize("kind", KINDS)
def test_pending_rows_are_avoided_and_a_full_table_still_answers(kind: str) -> None:
    planner = _planner(kind)
    planner.ingest([_obs(p) for p in PRIOR])
    pending = [dict(r) for r in TABLE.candidates or () if r not in PRIOR][:7]
    (last,) = planner.suggest(1, pending=pending)  # one row is neither measured nor pending
    assert last not in pending + PRIOR
    # Every row measured or pending: a measured row again rather than a pending one.
    (again,) = planner.suggest(1, pending=[*pending, last])
    assert again in PRIOR


def test_near_duplicates_are_within_a_millionth_of_each_float_range() -> None:
    space = Space(
        [
            FloatParameter(name="x", bounds=(0, 10)),
            FloatParameter(name="c", bounds=(1e-6, 1e-3), log=True),
            IntParameter(name="n", bounds=(0, 10**9)),
            ChoiceParameter(name="s", values=("a", "b")),
        ]
    )
    base = {"x": 5.0, "c": 1e-4, "n": 7, "s": "a"}
    assert near_duplicate(space, {**base, "x": 5.0 + 5e-6}, [base])
    assert near_duplicate(space, {**base, "c": 1e-4 * (1 + 1e-6)}, [base])  # log scale
    assert not near_duplicate(space, {**base, "x": 5.0 + 2e-5}, [base])
    assert not near_duplicate(space, {**base, "n": 8}, [base])  # ints exactly
    assert not near_duplicate(space, {**base, "s": "b"}, [base])
    assert not near_duplicate(space, base, [])
    grid = Space([IntParameter(name="n", bounds=(0, 3))])
    assert near_duplicate(grid, {"n": 1}, [{"n": 0}, {"n": 1.0}])
    assert near_duplicate(TABLE, {"t": 1, "c": "b"}, PRIOR)


def test_botorch_replaces_a_model_point_next_to_a_pending_one() -> None:
    """A float proposal a hair from a pending point (or a batch-mate) is the same experiment:
    the exact comparison let it through; it becomes a design point."""
    space = Space(
        [FloatParameter(name="x", bounds=(0, 1)), FloatParameter(name="z", bounds=(0, 1))]
    )
    planner = BoTorchPlanner(space, [Objective(name="y")], PlannerConfig(), 0, FAST)
    pending = [{"x": 0.25, "z": 0.75}]
    near = {"x": 0.25 + 1e-9, "z": 0.75}
    other = {"x": 0.6, "z": 0.1}
    out = planner._replace_repeats([near, other, {**other, "z": 0.1 + 1e-9}], pending, 3)
    assert out[1] == other
    assert not near_duplicate(space, out[0], pending + [other])
    assert not near_duplicate(space, out[2], pending + out[:2])
    assert all(space.contains(p) for p in out)
