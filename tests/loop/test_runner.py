"""The loop end to end: real RunEngine, real Ophyd sim devices, real SQLite."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from loop import Runner, Store, load_campaign, parse_campaign
from loop.config import LoadedCampaign
from simulators import get_problem
from tests.bench_operator import answer_at_the_bench

ROOT = Path(__file__).parents[2]

BRANIN_SOBOL = """
name: e2e
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin}
planner: {kind: sobol}
budget: {max_trials: 12}
seed: 4
"""


def _campaign(text: str, tmp_path: Path) -> LoadedCampaign:
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    return parse_campaign(text, path=path, base_dir=tmp_path)


def test_twelve_trials_are_twelve_stored_runs(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    summary = Runner(_campaign(BRANIN_SOBOL, tmp_path), store).run()
    assert (summary.completed, summary.failed, summary.status) == (12, 0, "completed")
    trials = store.trials(summary.campaign_id)
    assert len(trials) == 12
    observations = store.observations(summary.campaign_id)
    branin = get_problem("branin")
    uids = set()
    for t in trials:
        assert t.status == "completed"
        docs = store.documents(t.id or 0)
        assert [d.name for d in docs] == ["start", "descriptor", "event", "stop"]
        start, _, event, stop = (d.body for d in docs)
        assert start["campaign"] == "e2e"
        assert start["trial_id"] == t.id
        assert stop["exit_status"] == "success"
        assert {d.run_uid for d in docs} == {t.run_uid} == {start["uid"]}
        uids.add(t.run_uid)
        # stored outputs equal the simulator's, and equal the event's reading
        expected = branin.evaluate(t.readbacks or {})
        assert observations[t.id or 0]["y"] == pytest.approx(expected["y"], rel=1e-12)
        assert event["data"]["y"] == pytest.approx(observations[t.id or 0]["y"], rel=1e-12)
        # readbacks are stored beside the commanded values
        assert set(t.readbacks or {}) == {"x1", "x2"}
        assert t.readbacks == pytest.approx(t.parameters)
    assert len(uids) == 12


def test_failures_are_stored_and_stop_the_campaign(tmp_path: Path) -> None:
    text = BRANIN_SOBOL.replace("{simulator: branin}", "{simulator: branin, failure_rate: 1.0}")
    text = text.replace("{max_trials: 12}", "{max_trials: 12, max_failures: 3}")
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    summary = Runner(_campaign(text, tmp_path), store).run()
    assert (summary.completed, summary.failed, summary.status) == (0, 3, "failed")
    assert "max_failures" in summary.reason
    for t in store.trials(summary.campaign_id):
        assert t.status == "failed"
        assert "fault" in (t.error or "")
        docs = store.documents(t.id or 0)
        assert docs[0].name == "start" and docs[-1].name == "stop"
        assert docs[-1].body["exit_status"] == "fail"
    row = store.campaign(summary.campaign_id)
    assert (row.status, row.stop_reason) == ("failed", summary.reason)


def test_user_function_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(
        "def measure(inputs):\n    return {'score': -(inputs['x'] - 0.3) ** 2 + "
        "(1.0 if inputs['mode'] == 'b' else 0.0), 'n_used': inputs['n']}\n"
    )
    text = """
name: own-function
parameters:
  - {name: x, type: float, bounds: [0, 1]}
  - {name: n, type: int, bounds: [1, 5]}
  - {name: mode, type: choice, values: [a, b]}
objectives: [{name: score, goal: maximize}]
instrument: {function: "model.py:measure", outputs: [score, n_used]}
planner: {kind: random}
budget: {max_trials: 6}
seed: 1
"""
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    summary = Runner(_campaign(text, tmp_path), store).run()
    assert summary.completed == 6
    obs = store.observations(summary.campaign_id)
    for t in store.trials(summary.campaign_id):
        p = t.parameters
        assert isinstance(p["n"], int) and p["mode"] in ("a", "b")
        assert obs[t.id or 0]["n_used"] == p["n"]
        want = -((p["x"] - 0.3) ** 2) + (1.0 if p["mode"] == "b" else 0.0)
        assert math.isclose(obs[t.id or 0]["score"], want)


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted((ROOT / "campaigns").glob("*.yaml")), ids=lambda p: p.stem)
def test_example_campaigns_run_with_a_tiny_budget(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every bundled campaign runs: a manual one (campaigns/bench.yaml, the README's "A
    human in the loop") through its real prompt, answered as an operator would."""
    loaded = load_campaign(path)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    n_initial = loaded.campaign.planner.initial.size(len(loaded.campaign.parameters))
    runner = Runner(loaded, store, max_trials=n_initial + 2)
    shown = answer_at_the_bench(runner, monkeypatch)
    summary = runner.run()
    assert summary.completed == n_initial + 2
    if shown is not None:
        assert f"trial {n_initial + 2}: set " in shown.getvalue()
    assert summary.best is not None and summary.best.objective is not None
    kinds = [t.kind for t in store.trials(summary.campaign_id)]
    assert kinds[-1] not in ("initial", "sobol", "random"), kinds


TWO_GOALS = """
name: goals
parameters:
  - {name: x, type: float, bounds: [0, 1]}
  - {name: y, type: float, bounds: [0, 1]}
objectives:
  - {name: f1, goal: maximize}
  - {name: f2, goal: maximize}
outcome_constraints: ["impurity <= 0.08"]
instrument: {function: "fn.py:measure", outputs: [f1, f2, impurity], count: 2}
planner: {kind: sobol}
budget: {max_trials: 10}
seed: 1
"""

FIRST_IS_SLOW = """
import os
import time


def measure(inputs):
    x, y = inputs["x"], inputs["y"]
    here = os.path.dirname(__file__)
    calls = os.path.join(here, "calls")
    os.makedirs(calls, exist_ok=True)
    os.close(os.open(os.path.join(calls, repr(sorted(inputs.items()))), os.O_CREAT))
    # Trial 1 (Sobol, seed 1: x = 0.27) is slow: it waits until the other slot has measured
    # the 9 other trials, then a little more for the last of them to be stored (a fixed
    # sleep was too short on a loaded machine). Trials 4 and 5 (x < 0.3 too) start after
    # the marker exists.
    if x < 0.3:
        marker = os.path.join(here, "slow")
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            pass
        else:
            deadline = time.monotonic() + 60
            while len(os.listdir(calls)) < 10 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.5)
    return {"f1": x, "f2": 1.0 - x * y, "impurity": y / 10, "flat": 1.0}
"""


def _slow_first(tmp_path: Path, text: str) -> tuple[LoadedCampaign, Store]:
    (tmp_path / "fn.py").write_text(FIRST_IS_SLOW)
    return _campaign(text, tmp_path), Store(f"sqlite:///{tmp_path / 'store.db'}")


def test_the_summarys_goals_are_the_stores_when_trials_end_out_of_order(
    tmp_path: Path,
) -> None:
    """The summary's front, hypervolume and feasibility come from the session's own tally
    (no second read of the store): they must equal what the stored trials give."""
    from planners import hypervolume, pareto_mask

    loaded, store = _slow_first(tmp_path, TWO_GOALS)
    summary = Runner(loaded, store).run()
    trials = store.trials(summary.campaign_id)
    obs = store.observations(summary.campaign_id)
    assert [(t.number, t.status) for t in trials] == [(n, "completed") for n in range(1, 11)]
    last = max(trials, key=lambda t: t.finished_at or 0)
    assert last.number == 1, "the test needs trials that ended out of order"
    Y = np.array([[obs[t.id or 0]["f1"], obs[t.id or 0]["f2"]] for t in trials])
    feasible = np.array([obs[t.id or 0]["impurity"] <= 0.08 for t in trials])
    objectives = loaded.campaign.objectives
    mask = pareto_mask(Y, objectives, feasible)
    front = [t.number for t, on in zip(trials, mask, strict=True) if on]
    assert [r.number for r in summary.pareto] == front
    assert summary.hypervolume == pytest.approx(hypervolume(Y, objectives, None, feasible))
    assert (summary.completed, summary.feasible) == (10, int(feasible.sum()))


def test_of_equal_values_the_summarys_best_is_the_first_trial_as_in_the_store(
    tmp_path: Path,
) -> None:
    """Every trial measures the same value, and trial 1 ends last: the best is the first
    trial by number, as ``status`` and the report (which read the store) say."""
    text = TWO_GOALS.replace(
        """objectives:
  - {name: f1, goal: maximize}
  - {name: f2, goal: maximize}
outcome_constraints: ["impurity <= 0.08"]""",
        "objectives: [{name: flat, goal: maximize}]",
    ).replace("[f1, f2, impurity]", "[f1, f2, impurity, flat]")
    loaded, store = _slow_first(tmp_path, text)
    summary = Runner(loaded, store).run()
    trials = store.trials(summary.campaign_id)
    assert max(trials, key=lambda t: t.finished_at or 0).number == 1, "trial 1 must end last"
    assert summary.best is not None and summary.best.number == 1
