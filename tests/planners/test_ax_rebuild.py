"""The Ax planner rebuilt from the store, and its warnings, on Ax's real Client.

A planner is rebuilt from the stored trials by every ``resume``, every ``suggest`` of
ask/tell and ``plan --store``: it must propose what the planner that made those trials
would have proposed next. Ax's library warnings are filtered by module, never by catching
everything (which swallowed the warnings of the instrument's threads while Ax computed).
"""

from __future__ import annotations

import io
import logging
import math
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botorch.test_utils.mock import mock_optimize_context_manager

from planners import (
    FloatParameter,
    InitialDesign,
    Objective,
    Observation,
    PlannerConfig,
    Point,
    Space,
)
from planners import _ax as ax_module
from planners._ax import AxPlanner, _catch_up, _filter_library_warnings, _ThreadStderr
from planners._baselines import near_duplicate

BRANIN = Space(
    [FloatParameter(name="x1", bounds=(-5, 10)), FloatParameter(name="x2", bounds=(0, 15))]
)
MINIMISE_Y = [Objective(name="y", goal="minimize")]
CONFIG = PlannerConfig(kind="ax", initial=InitialDesign(n=3))


def branin(point: Point) -> float:
    x1, x2 = float(point["x1"]), float(point["x2"])
    b, c, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


@pytest.fixture(autouse=True)
def _short_optimiser() -> Iterator[None]:
    """BoTorch's own test helper: few optimiser iterations inside Ax's acquisition search."""
    with mock_optimize_context_manager(force=True):
        yield


@pytest.mark.slow
def test_a_planner_rebuilt_every_round_proposes_what_a_live_one_does() -> None:
    """Ask/tell: a fresh planner per round, told every trial so far, against one planner
    that never stopped. Round 2's (Sobol) point fails. Before the fix every rebuilt planner
    made one more initial point, and re-proposed the failed one at every round: ask/tell
    never reached Ax's model."""
    live = AxPlanner(BRANIN, MINIMISE_Y, CONFIG, seed=5)
    history: list[Observation] = []
    kinds: list[str] = []
    for round_ in range(6):
        rebuilt = AxPlanner(BRANIN, MINIMISE_Y, CONFIG, seed=5)
        rebuilt.ingest(history)
        (point,) = rebuilt.suggest(1)
        (expected,) = live.suggest(1)
        assert point == pytest.approx(expected, rel=1e-9, abs=1e-9), f"round {round_}"
        assert rebuilt.last_kinds == live.last_kinds
        kinds += rebuilt.last_kinds
        assert all(point != o.parameters for o in history if o.outcome == "failed")
        if round_ == 2:
            obs = Observation(parameters=point, outputs={}, outcome="failed")
        else:
            obs = Observation(parameters=point, outputs={"y": branin(point)})
        live.ingest([obs])
        history.append(obs)
    # Three initial trials that did not fail (the failed one does not count), then the model.
    assert kinds == ["initial"] * 4 + ["model"] * 2


# A narrow range far from zero: Ax sees it shifted to start at 0 (``_float_map``), so a
# rebuilt planner tells Ax the values a live one proposed only to rounding.
OFFSET_RANGE = Space(
    [
        FloatParameter(name="wl", bounds=(1549.9995, 1550.0005)),
        FloatParameter(name="x2", bounds=(0, 1)),
    ]
)


def _exactly(point: Point) -> Observation:
    return Observation(parameters=point, outputs={"y": float(point["x2"])})


def _at_readback(point: Point) -> Observation:
    """The instrument ran x2 at 7 whatever was asked (ask/tell ``--actual x2=7``)."""
    ran = {**point, "x2": 7.0}
    return Observation(parameters=ran, outputs={"y": branin(ran)})


@pytest.mark.parametrize(
    ("space", "measure"),
    [(OFFSET_RANGE, _exactly), (BRANIN, _at_readback)],
    ids=["offset_range", "readbacks"],
)
def test_initial_points_go_on_after_a_stop_as_without_one(
    space: Space, measure: Callable[[Point], Observation]
) -> None:
    """A planner rebuilt after any number of trials (``resume``, every ``suggest`` of
    ask/tell) goes on with the initial points of one that never stopped. Ax's Sobol step
    started over in every new Client and skipped only the points it knew exactly: with
    readbacks away from the proposals, trials 2, 3 and 4 of ask/tell were one point; on the
    offset range, a resume at trial 3 measured trials 2 and 3 again."""
    config = PlannerConfig(kind="ax", initial=InitialDesign(n=6))
    live = AxPlanner(space, MINIMISE_Y, config, seed=1)
    proposed: list[Point] = []
    history: list[Observation] = []
    for _ in range(6):
        (point,) = live.suggest(1)
        assert live.last_kinds == ["initial"]
        proposed.append(point)
        history.append(measure(point))
        live.ingest(history[-1:])
    assert len({tuple(p.values()) for p in proposed}) == 6  # no initial point twice
    for stop in range(1, 6):
        resumed = AxPlanner(space, MINIMISE_Y, config, seed=1)
        resumed.ingest(history[:stop])
        for k in range(stop, 6):
            (point,) = resumed.suggest(1)
            assert point == proposed[k], f"stopped after {stop} trials, trial {k + 1}"
            resumed.ingest([measure(point)])


def test_a_failed_point_is_not_proposed_again_live_or_rebuilt() -> None:
    """Ax leaves failed trials out of its model and out of its duplicate check: its model
    proposed one failed point again and again until ``max_failures`` ended the campaign
    (eight times in a row). Every model point here fails, and none is proposed twice; a
    planner rebuilt from the trials proposes what the live one does."""
    space = Space(
        [FloatParameter(name="a", bounds=(0, 1)), FloatParameter(name="b", bounds=(0, 1))]
    )
    objective = [Objective(name="y")]
    live = AxPlanner(space, objective, CONFIG, seed=0)
    history: list[Observation] = []
    failed: list[Point] = []
    for _ in range(6):
        (point,) = live.suggest(1)
        assert not near_duplicate(space, point, failed), point
        if live.last_kinds == ["model"]:
            failed.append(point)
            history.append(Observation(parameters=point, outcome="failed"))
        else:
            history.append(Observation(parameters=point, outputs={"y": point["a"] + point["b"]}))
        live.ingest(history[-1:])
    assert len(failed) == 3
    rebuilt = AxPlanner(space, objective, CONFIG, seed=0)
    rebuilt.ingest(history)
    (point,) = rebuilt.suggest(1)
    assert not near_duplicate(space, point, failed)
    assert [point] == live.suggest(1) and rebuilt.last_kinds == live.last_kinds == ["model"]


def test_a_model_proposal_next_to_a_failed_point_is_dropped_and_ax_asked_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Within the near-duplicate distance of a failed point (1e-6 of each float's range),
    a proposal is abandoned in Ax and Ax asked again, a bounded number of times; then the
    Sobol design fills in. The same goes for an output that was not a number."""
    planner = AxPlanner(BRANIN, MINIMISE_Y, CONFIG, seed=0)
    bad = {"x1": 1.0, "x2": 2.0}
    planner.ingest(
        [
            Observation(parameters=bad, outcome="failed"),
            Observation(parameters={"x1": 3.0, "x2": 4.0}, outputs={"y": math.nan}),
        ]
    )
    twin = planner._to_ax({"x1": 1.0 + 1e-9, "x2": 2.0})
    calls: list[int] = []

    def always_the_failed_point(client: Any, n: int) -> dict[int, Any]:
        calls.append(n)
        return {int(client.attach_trial(parameters=twin)): twin}

    monkeypatch.setattr(ax_module, "_generate", always_the_failed_point)
    with caplog.at_level(logging.INFO, logger="planners._ax"):
        proposals = planner._propose(planner._ensure_client(), 1)
    assert proposals == ([], [])
    assert calls == [1] * (1 + ax_module._FAILED_REPEAT_ROUNDS)
    assert caplog.text.count("a point that failed again") == len(calls)
    experiment = planner._client._experiment
    assert all(experiment.trials[i].status.name == "ABANDONED" for i in range(4, 4 + len(calls)))
    assert not near_duplicate(BRANIN, planner.suggest(1)[0], [bad])


def test_a_strategy_out_of_reach_leaves_ax_at_its_own_pace(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ax keeps its strategy in a private attribute; where another Ax has none, nothing
    breaks: the proposal comes at Ax's own pace, and a DEBUG line says so."""
    with caplog.at_level(logging.DEBUG, logger="planners._ax"):
        _catch_up(object())
    assert "not reachable" in caplog.text


def test_warnings_of_other_threads_show_while_ax_computes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An instrument thread's warning reaches the user while Ax proposes and is told (Ax's
    calls inside ``catch_warnings`` took them: 3 of 8 shown with Ax, 8 of 8 with BoTorch);
    the warnings Ax raises in its own code (pandas deprecations) are not shown.

    The thread warns from inside Ax's calls, so the check does not depend on timing. (Not
    during a model fit: BoTorch's fit and acquisition search catch every warning of the
    process for a moment themselves, for the BoTorch planner too.)
    """
    planner = AxPlanner(BRANIN, MINIMISE_Y, CONFIG, seed=1)
    client = planner._ensure_client()
    emitted: list[str] = []

    def from_a_slot_thread(method: str) -> None:
        original = getattr(client, method)

        def wrapped(*args: object, **kwargs: object) -> object:
            emitted.append(f"detector saturating ({method} {len(emitted)})")
            slot = threading.Thread(target=warnings.warn, args=(emitted[-1], UserWarning))
            slot.start()
            slot.join()
            return original(*args, **kwargs)

        monkeypatch.setattr(client, method, wrapped)

    from_a_slot_thread("get_next_trials")  # Ax's centre
    from_a_slot_thread("attach_trial")  # the Sobol design's points
    from_a_slot_thread("complete_trial")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        points = planner.suggest(2)
        planner.ingest([Observation(parameters=p, outputs={"y": branin(p)}) for p in points])
        planner.suggest(1)
    assert len(emitted) == 5
    assert sorted(str(w.message) for w in shown) == sorted(emitted), [
        (w.category.__name__, w.filename, str(w.message)[:60]) for w in shown
    ]


def test_library_warnings_are_filtered_by_module_even_as_errors() -> None:
    """The filter goes in front of the others (a test run's ``error``, a user's own)."""
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("error")
        _filter_library_warnings()
        for module in ("ax.core.data", "botorch.fit", "gpytorch.kernels", "linear_operator"):
            warnings.warn_explicit("internal", DeprecationWarning, f"{module}.py", 1, module)
        with pytest.raises(UserWarning, match="detector"):
            warnings.warn_explicit("detector", UserWarning, "instrument.py", 1, "instrument")
        with pytest.raises(UserWarning, match="near miss"):
            warnings.warn_explicit("near miss", UserWarning, "axle.py", 1, "axle")
    assert shown == []


def test_ax_import_keeps_its_own_stderr_lines_only() -> None:
    """While Ax imports, the importing thread's stderr lines are kept (Ax logs one through
    a handler bound to stderr); another thread's lines pass to the real stream, then and
    after, and a handler bound during the import keeps writing once it is released."""
    real = io.StringIO()
    stream = _ThreadStderr(real)
    saved = sys.stderr
    sys.stderr = stream  # type: ignore[assignment]
    try:
        stream.write("ax: SQL storage initialized\n")
        other = threading.Thread(target=stream.write, args=("slot 2: overrange\n",))
        other.start()
        other.join()
        stream.release()
        assert sys.stderr is real
    finally:
        sys.stderr = saved
    stream.write("later\n")
    assert stream.captured.getvalue() == "ax: SQL storage initialized\n"
    assert real.getvalue() == "slot 2: overrange\nlater\n"
