"""The Ax planner's initial design options and the values it tells Ax, on Ax's real Client.

``planner.initial.kind`` and ``initial.centre`` mean for ``kind: ax`` what they mean for the
BoTorch planner: its initial points come from the same positional design, so a planner
rebuilt from the store (``resume``, every ``suggest`` of ask/tell) goes on with the same
points. They were refused ("Ax always starts at the centre") after that had stopped being
true. And Ax is told a reading of sentinel magnitude (an overrange code such as 9.9e37)
clipped as the BoTorch planner's model sees it: told raw, Ax's GP saw the other readings
flattened beside one spike. The stored values stay as measured.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botorch.test_utils.mock import mock_optimize_context_manager
from typer.testing import CliRunner

from loop import CampaignConfigError, Runner, Store, load_campaign
from loop.cli import app
from planners import (
    BoTorchPlanner,
    ChoiceParameter,
    FloatParameter,
    IntParameter,
    Objective,
    Observation,
    OutcomeConstraint,
    PlannerConfig,
    Point,
    Space,
    check_planner,
)
from planners._ax import AxPlanner
from planners._config import PlannerSettingError


@pytest.fixture(autouse=True)
def _short_optimiser() -> Iterator[None]:
    """BoTorch's own test helper: few optimiser iterations inside Ax's acquisition search."""
    with mock_optimize_context_manager(force=True):
        yield


MIXED = Space(
    [
        FloatParameter(name="a", bounds=(0, 10)),
        IntParameter(name="b", bounds=(1, 9)),
        ChoiceParameter(name="c", values=("x", "y", "z")),
    ]
)
MINIMISE_Y = [Objective(name="y", goal="minimize")]

# Every initial setting that was refused for kind: ax.
OPTIONS: list[dict[str, Any]] = [
    {"kind": "random"},
    {"kind": "random", "centre": False},
    {"kind": "sobol", "centre": False},
]


def _config(kind: str, initial: dict[str, Any], n: int) -> PlannerConfig:
    return PlannerConfig.model_validate({"kind": kind, "initial": {**initial, "n": n}})


def _y(point: Point) -> float:
    return (float(point["a"]) - 3.0) ** 2 + float(point["b"]) + (point["c"] == "z")


@pytest.mark.parametrize("initial", OPTIONS, ids=str)
def test_the_initial_points_are_the_botorch_planners_design(initial: dict[str, Any]) -> None:
    """A first batch of initial points is the BoTorch planner's design for the same settings
    (Ax's centre first unless ``centre: false``, Ax's default; the BoTorch planner's
    default centre depends on the objectives, so it is written out for it)."""
    ax_config = _config("ax", initial, 4)
    centre = ax_config.initial.centre_first(1, "ax")
    assert centre == initial.get("centre", True)
    botorch = BoTorchPlanner(
        MIXED, MINIMISE_Y, _config("botorch", {**initial, "centre": centre}, 4), seed=3
    )
    planner = AxPlanner(MIXED, MINIMISE_Y, ax_config, seed=3)
    assert planner.suggest(4) == botorch.design.points(0, 4)
    assert planner.last_kinds == ["initial"] * 4


def test_the_settings_load_and_acquisition_is_still_refused_at_its_line(tmp_path: Path) -> None:
    """``validate`` accepts them; ``acquisition``, which Ax still does not follow, is refused
    naming the file, its line and the fix."""
    for initial in OPTIONS:
        check_planner(MIXED, MINIMISE_Y, _config("ax", initial, 3))
    with pytest.raises(PlannerSettingError) as info:
        check_planner(
            MIXED,
            MINIMISE_Y,
            PlannerConfig.model_validate(
                {"kind": "ax", "initial": OPTIONS[1], "acquisition": "qUpperConfidenceBound"}
            ),
        )
    assert info.value.key == ("acquisition",)
    (tmp_path / "response.py").write_text(RESPONSE)
    file = tmp_path / "c.yaml"
    file.write_text(CAMPAIGN.format(n=4, trials=4))
    out = CliRunner().invoke(app, ["validate", str(file)])
    assert out.exit_code == 0, out.output
    file.write_text(CAMPAIGN.format(n=4, trials=4) + "  acquisition: qUpperConfidenceBound\n")
    with pytest.raises(CampaignConfigError) as refused:
        load_campaign(file)
    text = str(refused.value)
    assert refused.value.line == 15, text  # the acquisition line
    assert "c.yaml" in text and "planner.acquisition applies to kind: botorch only" in text
    assert "remove it" in text


@pytest.mark.slow
@pytest.mark.parametrize("initial", OPTIONS[1:], ids=str)
def test_a_planner_rebuilt_every_round_goes_on_with_the_same_design(
    initial: dict[str, Any],
) -> None:
    """Ask/tell: a fresh planner per round, told every trial so far, proposes what one that
    never stopped does; round 1's point fails and is not counted toward ``initial.n``."""
    config = _config("ax", initial, 3)
    design = BoTorchPlanner(MIXED, MINIMISE_Y, _config("botorch", initial, 3), seed=7).design
    live = AxPlanner(MIXED, MINIMISE_Y, config, seed=7)
    history: list[Observation] = []
    kinds: list[str] = []
    for round_ in range(6):
        rebuilt = AxPlanner(MIXED, MINIMISE_Y, config, seed=7)
        rebuilt.ingest(history)
        (point,) = rebuilt.suggest(1)
        assert point == live.suggest(1)[0], f"round {round_}"
        assert rebuilt.last_kinds == live.last_kinds
        if rebuilt.last_kinds == ["initial"]:
            assert point == design.points(round_, 1)[0], f"round {round_}"
        kinds += rebuilt.last_kinds
        if round_ == 1:
            obs = Observation(parameters=point, outcome="failed")
        else:
            obs = Observation(parameters=point, outputs={"y": _y(point)})
        live.ingest([obs])
        history.append(obs)
    assert kinds == ["initial"] * 4 + ["model"] * 2


CAMPAIGN = """\
name: design
parameters:
  - {{name: a, type: float, bounds: [0, 10]}}
  - {{name: b, type: int, bounds: [1, 9]}}
objectives: [{{name: y, goal: minimize}}]
instrument: {{function: "response.py:measure", outputs: [y]}}
budget: {{max_trials: {trials}}}
seed: 2
planner:
  kind: ax
  initial:
    kind: random
    centre: false
    n: {n}
"""

RESPONSE = """\
def measure(inputs):
    return {"y": (inputs["a"] - 3.0) ** 2 + inputs["b"]}
"""


def test_a_resumed_campaign_goes_on_with_its_random_design(tmp_path: Path) -> None:
    """Stopped after 2 trials and resumed: the same 4 random initial points as a run that
    never stopped, and they are the BoTorch planner's random design without a centre."""
    (tmp_path / "response.py").write_text(RESPONSE)
    file = tmp_path / "design.yaml"
    file.write_text(CAMPAIGN.format(n=4, trials=4))
    whole = Store(f"sqlite:///{tmp_path / 'whole.db'}")
    assert Runner(load_campaign(file), whole).run().completed == 4
    expected = [t.parameters for t in whole.trials(whole.campaign().id or 0)]
    space = Space([FloatParameter(name="a", bounds=(0, 10)), IntParameter(name="b", bounds=(1, 9))])
    botorch = _config("botorch", {"kind": "random", "centre": False}, 4)
    assert expected == BoTorchPlanner(space, MINIMISE_Y, botorch, seed=2).design.points(0, 4)
    store = Store(f"sqlite:///{tmp_path / 'stopped.db'}")
    assert Runner(load_campaign(file), store, max_trials=2).run().completed == 2
    summary = Runner.from_store(store, "design", max_trials=4).resume()
    assert summary.completed == 4, summary.reason
    trials = store.trials(store.campaign().id or 0)
    assert [t.parameters for t in trials] == expected
    assert {t.kind for t in trials} == {"initial"}


# ---------------------------------------------------------------------- sentinel readings
SQUARE = Space([FloatParameter(name="x1", bounds=(0, 1)), FloatParameter(name="x2", bounds=(0, 1))])
POINTS: list[Point] = [{"x1": 0.1 * k + 0.05, "x2": 0.5} for k in range(6)]
CODE = 9.9e37


def _told(planner: AxPlanner, metric: str = "obj0") -> list[float]:
    """The value of ``metric`` Ax holds for each of its trials, by trial index."""
    df = planner._client._experiment.lookup_data().df
    rows = df[df["metric_name"] == metric].sort_values("trial_index")
    assert rows["trial_index"].is_unique
    return [float(v) for v in rows["mean"]]


def _observe(values: list[float], name: str = "y") -> list[Observation]:
    return [
        Observation(parameters=dict(p), outputs={name: v})
        for p, v in zip(POINTS, values, strict=False)
    ]


def test_ax_is_told_a_code_clipped_once_and_the_observation_keeps_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A code among readings reaches Ax at the nearest of them, moved on when a reading
    beyond them comes in; one warning names it; a rebuilt planner tells Ax the same; the
    observation keeps 9.9e37; Ax's model proposes from there."""
    observations = _observe([1.0, 2.0, CODE, 3.0, 2.5])
    live = AxPlanner(SQUARE, [Objective(name="y")], _config("ax", {}, 3), seed=0)
    with caplog.at_level(logging.WARNING, logger="planners._ax"):
        live.ingest(observations[:3])
        assert _told(live) == [1.0, 2.0, 2.0]
        live.ingest(observations[3:])
    assert _told(live) == [1.0, 2.0, 3.0, 3.0, 2.5]
    warnings = [r.getMessage() for r in caplog.records if "far outside" in r.getMessage()]
    assert warnings == [
        "y = 9.9e+37 at x1=0.25, x2=0.5 is far outside the other values (an overrange code "
        "or a sentinel?); the model sees it clipped to the nearest of them (the stored value "
        "is unchanged)"
    ]
    assert observations[2].outputs == {"y": CODE}
    rebuilt = AxPlanner(SQUARE, [Objective(name="y")], _config("ax", {}, 3), seed=0)
    rebuilt.ingest(observations)
    assert _told(rebuilt) == _told(live)
    (point,) = live.suggest(1)
    assert live.last_kinds == ["model"] and SQUARE.contains(point)


def test_a_code_told_first_is_clipped_once_a_reading_comes_and_never_sets_the_units() -> None:
    """A code as the first value of an output in amps: told as it is while it is alone,
    then clipped onto the readings, all in the units Ax is told them in (times 1e9, from the
    first reading; a code says nothing of the output's units)."""
    planner = AxPlanner(SQUARE, [Objective(name="y")], _config("ax", {}, 3), seed=0)
    observations = _observe([CODE, 2e-9, 5e-9])
    planner.ingest(observations[:1])
    assert _told(planner) == [CODE]
    planner.ingest(observations[1:])
    assert _told(planner) == pytest.approx([5.0, 2.0, 5.0], rel=1e-12)


def test_an_outcome_constraint_is_told_its_code_clipped_too() -> None:
    """The constrained output's code is clipped for its own metric; the objective's values,
    all readings, are told as measured."""
    planner = AxPlanner(
        SQUARE,
        [Objective(name="y")],
        _config("ax", {}, 3),
        seed=0,
        outcome_constraints=[OutcomeConstraint(name="c", op="<=", bound=0.5, text="c <= 0.5")],
    )
    values = [(1.0, 0.2), (2.0, CODE), (3.0, 0.4)]
    planner.ingest(
        [
            Observation(parameters=dict(p), outputs={"y": y, "c": c})
            for p, (y, c) in zip(POINTS, values, strict=False)
        ]
    )
    assert _told(planner, "obj0") == [1.0, 2.0, 3.0]
    # Told times 10, from the first value (0.2), as an output below 1 is (``_scaled``).
    assert _told(planner, "con0") == pytest.approx([2.0, 4.0, 4.0], rel=1e-12)


@pytest.mark.parametrize("kind", ["ax", "botorch"])
def test_replicated_prior_points_count_once_toward_the_design_on_both_backends(kind: str) -> None:
    """Three replicates of one standard condition with ``initial.n: 4``: three design points
    follow, as the BoTorch planner counts distinct points. Ax counted every row (one design
    point left; four rows left none, and its model proposed from one point; found in
    review)."""
    config = _config(kind, {"kind": "sobol"}, 4)
    planner: Any = (
        AxPlanner(MIXED, MINIMISE_Y, config, seed=3)
        if kind == "ax"
        else BoTorchPlanner(MIXED, MINIMISE_Y, config, seed=3)
    )
    standard = {"a": 5.0, "b": 5, "c": "y"}
    planner.ingest(
        [Observation(parameters=dict(standard), outputs={"y": v}) for v in (1.0, 1.1, 0.9)]
    )
    kinds = []
    for _ in range(4):
        (point,) = planner.suggest(1)
        kinds += planner.last_kinds
        planner.ingest([Observation(parameters=point, outputs={"y": _y(point)})])
    assert kinds[:3] == ["initial"] * 3, kinds
    assert kinds[3] != "initial", kinds
