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
from collections.abc import Iterator

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
from planners._ax import AxPlanner, _catch_up, _filter_library_warnings, _ThreadStderr

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

    from_a_slot_thread("get_next_trials")
    from_a_slot_thread("complete_trial")
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        points = planner.suggest(2)
        planner.ingest([Observation(parameters=p, outputs={"y": branin(p)}) for p in points])
        planner.suggest(1)
    assert len(emitted) == 4
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
