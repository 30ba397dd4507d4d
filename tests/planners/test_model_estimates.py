"""The model's estimate of each measured point's true value, and its best: what a noisy
campaign's best reading (its luckiest) does not say. Real GP fits, no mocked optimiser."""

from __future__ import annotations

import numpy as np

from planners import (
    BoTorchPlanner,
    FloatParameter,
    Objective,
    Observation,
    OutcomeConstraint,
    PlannerConfig,
    Space,
)

SPACE = Space([FloatParameter(name="x", bounds=(0.0, 1.0))])
GRID = np.linspace(0.0, 1.0, 25)


def _truth(x: float) -> float:
    return 1.0 - 4.0 * (x - 0.5) ** 2  # a bowl upside down: best 1.0 at x = 0.5


def _planner(noise: float, objectives: list[Objective] | None = None) -> BoTorchPlanner:
    planner = BoTorchPlanner(SPACE, objectives or [Objective(name="y")], PlannerConfig(), seed=0)
    rng = np.random.default_rng(3)
    planner.ingest(
        [
            Observation(
                parameters={"x": float(x)},
                outputs={"y": _truth(float(x)) + noise * rng.standard_normal(), "z": float(x)},
            )
            for x in GRID
        ]
    )
    return planner


def test_under_noise_the_best_reading_is_shrunk_and_the_model_rates_the_top_best() -> None:
    planner = _planner(noise=0.3)
    readings = [o.outputs["y"] for o in planner.observations]
    lucky = int(np.argmax(readings))
    estimates = planner.model_estimates()
    assert estimates is not None
    assert set(estimates.mean) == set(range(len(GRID)))
    # The luckiest reading is believed in part: its estimate is below it, nearer the truth.
    assert estimates.mean[lucky] < readings[lucky]
    assert abs(estimates.mean[lucky] - _truth(GRID[lucky])) < abs(
        readings[lucky] - _truth(GRID[lucky])
    )
    # The trial rated best is near the true top, and its estimate near the truth there.
    assert estimates.best is not None
    assert abs(GRID[estimates.best] - 0.5) <= 0.1
    best = estimates.best
    assert abs(estimates.mean[best] - _truth(GRID[best])) < 2 * estimates.sd[best] + 0.05
    assert 0.15 < estimates.noise_sd < 0.6  # the noise is 0.3


def test_without_noise_the_model_agrees_with_the_readings() -> None:
    planner = _planner(noise=0.0)
    readings = [o.outputs["y"] for o in planner.observations]
    estimates = planner.model_estimates()
    assert estimates is not None
    assert estimates.best == int(np.argmax(readings))
    assert max(abs(estimates.mean[i] - y) for i, y in enumerate(readings)) < 1e-2
    assert estimates.noise_sd < 1e-2


def test_minimising_the_estimates_are_in_the_outputs_direction() -> None:
    planner = _planner(noise=0.0, objectives=[Objective(name="y", goal="minimize")])
    readings = [o.outputs["y"] for o in planner.observations]
    estimates = planner.model_estimates()
    assert estimates is not None
    assert estimates.best in (0, len(GRID) - 1)  # the lowest values, at the ends
    assert abs(estimates.mean[12] - readings[12]) < 1e-2  # not sign-flipped


def test_the_best_is_among_the_points_the_model_rates_feasible() -> None:
    planner = BoTorchPlanner(
        SPACE,
        [Objective(name="y")],
        PlannerConfig(),
        seed=0,
        outcome_constraints=[OutcomeConstraint(name="z", op="<=", bound=0.3)],
    )
    planner.ingest(
        [
            Observation(parameters={"x": float(x)}, outputs={"y": _truth(float(x)), "z": float(x)})
            for x in GRID
        ]
    )
    estimates = planner.model_estimates()
    assert estimates is not None and estimates.best is not None
    assert GRID[estimates.best] <= 0.3 and GRID[estimates.best] >= 0.25  # the feasible top


def test_none_with_several_objectives_or_too_few_points() -> None:
    assert _planner(0.1, [Objective(name="y"), Objective(name="z")]).model_estimates() is None
    planner = BoTorchPlanner(SPACE, [Objective(name="y")], PlannerConfig(), seed=0)
    planner.ingest([Observation(parameters={"x": 0.5}, outputs={"y": 1.0})])
    assert planner.model_estimates() is None


def test_failed_points_and_overrange_readings_stay_out_of_the_fit() -> None:
    """The planner learns a failed point at the worst value (``learn_failures``), and clips
    an overrange code onto the best value; fitted on those, a noiseless campaign got a
    noise sd of 0.6, and a 9.9e37 reading was rated best (found in review)."""
    planner = _planner(noise=0.0)
    planner.ingest(
        [
            Observation(parameters={"x": 0.49}, outputs={}, outcome="failed"),
            Observation(parameters={"x": 0.51}, outputs={}, outcome="failed"),
            Observation(parameters={"x": 0.45}, outputs={"y": 9.9e37, "z": 0.45}),
        ]
    )
    estimates = planner.model_estimates()
    assert estimates is not None
    assert set(estimates.mean) == set(range(len(GRID)))  # the measured readings alone
    assert estimates.best == 12 and estimates.noise_sd < 1e-2
