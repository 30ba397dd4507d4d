"""A planner of one's own (``planner: {plugin: ...}``), as ``planners`` builds and checks it.

Found in review: ``planner.kind`` took only the built-in kinds, and the ways around it
(subclassing ``Runner``, monkeypatching ``make_planner``) stored ``kind: random`` with the
campaign, so ``resume`` went on with the built-in planner. ``make_planner`` now builds a
plugin as ``Class(context, **args)``, from the class the campaign loader's loader imports;
checked here without the loader's import (a class handed over directly).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from planners import (
    FloatParameter,
    IntParameter,
    Objective,
    Observation,
    OutcomeConstraint,
    Planner,
    PlannerConfig,
    PlannerContext,
    PlannerPluginError,
    Point,
    Space,
    check_planner,
    make_planner,
)
from planners._config import PlannerSettingError, check_settings, ignored_settings

SPACE = Space(
    [FloatParameter(name="x", bounds=(0, 1)), IntParameter(name="n", bounds=(1, 4))],
    constraints=["x + n <= 4"],
)
OBJECTIVES = [Objective(name="f", goal="minimize")]


class Recorder:
    """A planner that records what it was built with."""

    built: list[tuple[PlannerContext, dict[str, Any]]] = []

    def __init__(self, context: PlannerContext, **args: Any) -> None:
        Recorder.built.append((context, args))
        self.last_kinds: list[str] = []

    def ingest(self, observations: Sequence[Observation]) -> None:
        pass

    def suggest(self, n: int = 1, pending: Sequence[Point] = ()) -> list[Point]:
        self.last_kinds = ["mine"] * n
        return [{"x": 0.5, "n": 2}] * n


def _config(cls: Any, **fields: Any) -> PlannerConfig:
    config = PlannerConfig.model_validate({"plugin": "tests:Class", **fields})
    config.attach_plugin_loader(lambda: cls)
    return config


def test_make_planner_builds_the_class_with_the_context_and_args() -> None:
    Recorder.built.clear()
    config = _config(Recorder, args={"radius": 0.2}, initial={"n": 7}, batch_size=3)
    bound = OutcomeConstraint(name="g", op="<=", bound=1.0)
    planner = make_planner(SPACE, OBJECTIVES, config, 11, outcome_constraints=[bound])
    assert isinstance(planner, Recorder) and isinstance(planner, Planner)
    ((context, args),) = Recorder.built
    assert args == {"radius": 0.2}
    assert context.space is SPACE and context.objectives == tuple(OBJECTIVES)
    assert context.outcome_constraints == (bound,)
    assert (context.seed, context.batch_size, context.n_initial) == (11, 3, 7)
    with pytest.raises(AttributeError):  # frozen: a planner cannot change the campaign
        context.seed = 3  # type: ignore[misc]


def test_a_plugin_config_without_a_loader_says_how_to_build_it() -> None:
    config = PlannerConfig(plugin="mylab:Mine")
    with pytest.raises(PlannerPluginError, match="has not been imported") as info:
        make_planner(SPACE, OBJECTIVES, config, 0)
    assert "Class(PlannerContext(...), **args)" in info.value.fix
    assert config.label == "plugin mylab:Mine" and PlannerConfig().label == "botorch"


class Refuses(Recorder):
    @classmethod
    def check(cls, context: PlannerContext, **args: Any) -> None:
        if len(context.objectives) < 2:
            raise ValueError("serves two objectives or more")


class Raises(Recorder):
    def __init__(self, context: PlannerContext, radius: float = 0.1) -> None:
        raise RuntimeError("no GPU")


class Strict:
    def __init__(self, context: PlannerContext, radius: float = 0.1) -> None:
        self.last_kinds: list[str] = []


class NoArguments:
    def __init__(self) -> None:
        pass


def not_a_class(context: PlannerContext) -> None:
    pass


@pytest.mark.parametrize(
    ("cls", "args", "says", "key"),
    [
        (Refuses, {}, "cannot serve this campaign: serves two objectives or more", ("plugin",)),
        (Raises, {}, "Raises(context) raised RuntimeError: no GPU", ("plugin",)),
        (Strict, {"width": 2}, "got an unexpected keyword argument 'width'", ("args",)),
        (Strict, {}, "is not a planner: it has no suggest, ingest", ("plugin",)),
        (NoArguments, {}, "cannot be called as NoArguments(context)", ("plugin",)),
        (not_a_class, {}, "is not a class (it is of type function)", ("plugin",)),
    ],
    ids=[
        "check-refuses",
        "constructor-raises",
        "unknown-arg",
        "not-a-planner",
        "no-context",
        "function",
    ],
)
def test_check_planner_refuses_a_plugin_that_cannot_serve_the_campaign(
    cls: Any, args: dict[str, Any], says: str, key: tuple[str, ...]
) -> None:
    with pytest.raises(PlannerPluginError) as info:
        check_planner(SPACE, OBJECTIVES, _config(cls, args=args))
    assert says in info.value.problem, info.value.problem
    assert info.value.key == key and info.value.fix


def test_check_planner_builds_a_plugin_that_passes_its_check() -> None:
    Recorder.built.clear()
    check_planner(SPACE, [*OBJECTIVES, Objective(name="g", goal="maximize")], _config(Refuses))
    assert len(Recorder.built) == 1 and Recorder.built[0][0].seed == 0


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"plugin": "m:C", "kind": "sobol"}, ("kind",)),
        ({"plugin": "m:C", "kind": "botorch"}, ("kind",)),  # the default, written: refused too
        ({"plugin": "m:C", "acquisition": "qUpperConfidenceBound"}, ("acquisition",)),
        ({"kind": "random", "args": {"radius": 1}}, ("args",)),
        ({"args": {}}, ("args",)),
    ],
)
def test_settings_that_do_not_go_with_a_plugin_are_refused_with_their_key(
    fields: dict[str, Any], key: tuple[str, ...]
) -> None:
    config = PlannerConfig.model_validate(fields)
    with pytest.raises(PlannerSettingError) as info:
        check_settings(config)
    assert info.value.key == key and info.value.fix


def test_what_applies_to_every_planner_applies_to_a_plugin() -> None:
    config = PlannerConfig.model_validate(
        {
            "plugin": "m:C",
            "args": {"radius": 0.1},
            "initial": {"n": 3, "kind": "random", "centre": True},
            "batch_size": 4,
        }
    )
    assert ignored_settings(config) == []


# ---------------------------------------------------------------------- the example's planner
def _example() -> type:
    path = Path(__file__).parents[2] / "campaigns" / "local_search.py"
    spec = importlib.util.spec_from_file_location("_example_local_search", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LocalSearch  # type: ignore[no-any-return]


def _f(point: Point) -> float:
    return (point["x"] - 0.3) ** 2 + 0.1 * abs(point["n"] - 2)


def test_the_example_planner_honours_pending_constraints_and_its_seed() -> None:
    config = _config(_example(), args={"radius": 0.2}, initial={"n": 4})
    a, b = (make_planner(SPACE, OBJECTIVES, config, 5) for _ in range(2))
    history: list[Observation] = []
    for _ in range(6):
        pending = a.suggest(2)
        more = a.suggest(2, pending=pending)
        assert b.suggest(2) == pending and b.suggest(2, pending=pending) == more  # seeded
        points = [*pending, *more]
        for point in points:
            assert SPACE.validate(point) == point  # bounds, integers, x + n <= 4
        assert all(p not in pending for p in more), (pending, more)  # never a pending one
        observations = [Observation(parameters=p, outputs={"f": _f(p)}) for p in points]
        history += observations
        a.ingest(observations)
        b.ingest(observations)
    assert "local" in a.last_kinds
    rebuilt = make_planner(SPACE, OBJECTIVES, config, 5)  # what a resume does
    rebuilt.ingest(history)
    assert rebuilt.suggest(3) == a.suggest(3)


def test_the_example_planner_refuses_a_radius_outside_its_range() -> None:
    with pytest.raises(PlannerPluginError, match="radius must be in") as info:
        check_planner(SPACE, OBJECTIVES, _config(_example(), args={"radius": 2}))
    assert info.value.key == ("args",)
