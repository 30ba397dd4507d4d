"""The BoTorch planner learns where experiments fail, and only from real failures."""

from __future__ import annotations

import dataclasses
import math

import pytest

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
    Space,
)

SMALL = BoTorchSettings(
    mc_samples=32,
    raw_samples=32,
    num_restarts=2,
    maxiter=30,
    maxiter_alternating=2,
    exploit_every=None,
)
MAX = [Objective(name="y")]
LINE = Space([FloatParameter(name="x", bounds=(0.0, 1.0))])


def _history(n: int = 16) -> list[Observation]:
    """A line where y = x rises towards x = 1, and every trial at x > 0.5 failed."""
    out = []
    for i in range(n):
        x = (i + 0.5) / n
        if x > 0.5:
            out.append(Observation(parameters={"x": x}, outcome="failed"))
        else:
            out.append(Observation(parameters={"x": x}, outputs={"y": x}))
    return out


def _planner(space: Space, settings: BoTorchSettings = SMALL, **config: object) -> BoTorchPlanner:
    cfg = PlannerConfig(initial=InitialDesign(n=2), **config)  # type: ignore[arg-type]
    return BoTorchPlanner(space, MAX, cfg, seed=3, settings=settings)


def test_abandoned_trials_teach_nothing_about_their_point() -> None:
    history = _history()
    planner = _planner(LINE)
    abandoned = [dataclasses.replace(o, outcome="abandoned", outputs={}) for o in history]
    planner.ingest([o for o in history if o.outcome == "completed"] + abandoned[8:])
    assert planner.feasibility_data() is None  # no failure: no feasibility model
    assert planner.fit_feasibility() is None
    # ... yet they keep their place in the design sequence
    assert len(planner.observations) == 16

    planner.ingest([history[-1]])  # one real failure
    data = planner.feasibility_data()
    assert data is not None
    X, labels = data
    assert X.shape[0] == 8 + 1
    assert int((labels < 0).sum()) == 1


def test_unusable_completed_trials_are_ignored_by_the_feasibility_model() -> None:
    planner = _planner(LINE)
    planner.ingest(
        [
            Observation(parameters={"x": 0.1}, outputs={"y": 0.1}),
            Observation(parameters={"x": 0.2}, outputs={"y": math.nan}),
            Observation(parameters={"x": 0.9}, outcome="failed"),
        ]
    )
    data = planner.feasibility_data()
    assert data is not None
    assert data[1].flatten().tolist() == [1.0, -1.0]


def test_proposals_avoid_a_region_of_failures() -> None:
    history = _history()
    planner = _planner(LINE)
    planner.ingest(history)
    for _ in range(4):
        (p,) = planner.suggest(1)
        assert LINE.contains(p)
        assert p["x"] < 0.6, p
        planner.ingest([Observation(parameters=p, outputs={"y": p["x"]})])
    assert planner.last_timing is not None and planner.last_timing.n_failed == 8


def test_without_learning_the_planner_walks_into_the_failures() -> None:
    """The contrast that makes the feature worth having (and the test above meaningful)."""
    planner = _planner(LINE, dataclasses.replace(SMALL, learn_failures=False))
    planner.ingest(_history())
    (p,) = planner.suggest(1)
    assert p["x"] > 0.5


@pytest.mark.parametrize(
    "acquisition",
    ["qLogNoisyExpectedImprovement", "qLogExpectedImprovement", "qUpperConfidenceBound"],
)
def test_every_acquisition_avoids_a_failing_half_of_a_plane(acquisition: str) -> None:
    space = Space(
        [FloatParameter(name="a", bounds=(0.0, 1.0)), FloatParameter(name="b", bounds=(0.0, 1.0))]
    )
    settings = dataclasses.replace(SMALL, exploit_every=2, exploit_max_noise=1.0)
    planner = _planner(space, settings, acquisition=acquisition)
    grid = [(i / 4, j / 4) for i in range(5) for j in range(5)]  # failures reach the edge
    planner.ingest(
        [
            Observation(parameters={"a": a, "b": b}, outcome="failed")
            if a > 0.5
            else Observation(parameters={"a": a, "b": b}, outputs={"y": a + 0.1 * b})
            for a, b in grid
        ]
    )
    for _ in range(2):  # one acquisition step and one exploit (qSimpleRegret) step
        points = planner.suggest(2)
        assert len(points) == 2
        for p in points:
            assert space.contains(p)
            # the boundary lies somewhere between the last success (0.5) and failure (0.75)
            assert p["a"] < 0.7, p
            planner.ingest([Observation(parameters=p, outputs={"y": p["a"] + 0.1 * p["b"]})])


def test_mixed_space_proposals_stay_valid_with_failures() -> None:
    space = Space(
        [
            FloatParameter(name="x", bounds=(0.0, 1.0)),
            IntParameter(name="k", bounds=(1, 4)),
            ChoiceParameter(name="c", values=("p", "q", "r")),
        ]
    )
    planner = _planner(space)
    obs = []
    for i in range(10):
        point = {"x": i / 10, "k": 1 + i % 4, "c": "pqr"[i % 3]}
        if point["c"] == "r":
            obs.append(Observation(parameters=point, outcome="failed"))
        else:
            obs.append(Observation(parameters=point, outputs={"y": float(i)}))
    planner.ingest(obs)
    points = planner.suggest(3, pending=[{"x": 0.5, "k": 2, "c": "p"}])
    assert len(points) == 3
    assert all(space.contains(p) for p in points)
