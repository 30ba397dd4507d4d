"""BoTorch planner at size: a large Pareto front switches qLogNEHVI to qLogEHVI on the mean."""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from botorch.acquisition.multi_objective import (
    qLogExpectedHypervolumeImprovement,
    qLogNoisyExpectedHypervolumeImprovement,
)

from planners import (
    BoTorchPlanner,
    BoTorchSettings,
    FloatParameter,
    Objective,
    Observation,
    OutcomeConstraint,
    Point,
    SobolPlanner,
    Space,
)

SPACE = Space([FloatParameter(name=f"x{i}", bounds=(0.0, 1.0)) for i in range(3)])
OBJECTIVES = [Objective(name=f"f{i}", goal="minimize") for i in range(3)]
# a small threshold stands in for the default's 64 points, to stay fast
SMALL = BoTorchSettings(
    mc_samples=32, raw_samples=32, num_restarts=2, maxiter=10, hv_exact_max_front=10
)


def trade_off(point: Point) -> dict[str, float]:
    """Three objectives in conflict over the whole cube: most points are on the front."""
    x = [float(point[f"x{i}"]) for i in range(3)]
    return {"f0": x[0], "f1": x[1] + 0.1 * math.sin(5 * x[2]), "f2": 3.0 - sum(x)}


def _planner(n: int, settings: BoTorchSettings = SMALL, **kwargs: object) -> BoTorchPlanner:
    planner = BoTorchPlanner(SPACE, OBJECTIVES, seed=3, settings=settings, **kwargs)  # type: ignore[arg-type]
    points = SobolPlanner(SPACE, 5).suggest(n)
    planner.ingest([Observation(parameters=p, outputs=trade_off(p)) for p in points])
    return planner


def _acquisition(planner: BoTorchPlanner) -> object:
    model = planner.fit()
    train_X, _ = planner.training_data()
    return planner._acquisition(model, torch.unique(train_X, dim=0), None)


def test_small_front_keeps_qlognehvi() -> None:
    planner = _planner(8)
    assert type(_acquisition(planner)) is qLogNoisyExpectedHypervolumeImprovement


def test_many_trials_with_a_small_front_keep_qlognehvi() -> None:
    planner = BoTorchPlanner(SPACE, OBJECTIVES, seed=3, settings=SMALL)
    points = SobolPlanner(SPACE, 5).suggest(24)
    near = [{f"f{i}": sum(p.values()) + 0.01 * p[f"x{i}"] for i in range(3)} for p in points]
    planner.ingest(
        [Observation(parameters=p, outputs=y) for p, y in zip(points, near, strict=True)]
    )
    assert type(_acquisition(planner)) is qLogNoisyExpectedHypervolumeImprovement


def test_large_front_uses_qlogehvi_on_the_mean_and_proposes_valid_points() -> None:
    planner = _planner(24)
    assert type(_acquisition(planner)) is qLogExpectedHypervolumeImprovement
    batch = planner.suggest(2)  # the second point is chosen with the first pending
    assert len(batch) == 2 and batch[0] != batch[1]
    for p in batch:
        SPACE.validate(p)
    assert planner.last_kinds == ["model", "model"]


def test_large_front_with_an_outcome_constraint() -> None:
    constraint = OutcomeConstraint(name="f2", op="<=", bound=2.0)
    planner = _planner(24, outcome_constraints=[constraint])
    assert type(_acquisition(planner)) is qLogExpectedHypervolumeImprovement
    (p,) = planner.suggest(1)
    SPACE.validate(p)
    assert planner.last_kinds == ["model"]


def test_past_refit_past_hyperparameters_are_refitted_every_k_observations() -> None:
    space = Space([FloatParameter(name="x", bounds=(0.0, 1.0))])
    settings = replace(SMALL, refit_past=6, refit_every=4)
    planner = BoTorchPlanner(space, [Objective(name="y")], settings=settings)

    def add(n: int) -> None:
        points = SobolPlanner(space, len(planner.observations)).suggest(n)
        planner.ingest(
            [Observation(parameters=p, outputs={"y": math.sin(6 * p["x"])}) for p in points]
        )

    def lengthscale() -> float:
        model = planner.fit()
        return float(model.covar_module.lengthscale.detach())  # type: ignore[union-attr,operator]

    add(6)
    first = lengthscale()  # 6 observations: fitted
    add(1)
    kept = planner.fit()
    assert lengthscale() == first  # 7 (past 6, no multiple of 4 crossed): kept, conditioned
    assert kept.train_inputs[0].shape[0] == 7  # type: ignore[index]
    add(1)
    assert lengthscale() != first  # 8 crosses a multiple of 4: fitted again
