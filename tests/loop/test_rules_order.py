"""The stopping rules see the trials in the order they ended, live and rebuilt from the store.

With several slots trials end out of trial-number order. ``patience`` watched the last N
trials in the order they ended during a run but in trial-number order once the campaign was
rebuilt from the store, so a campaign that had ended "completed: patience" resumed without a
larger budget and ran more trials (found in review). Real runner, real RunEngine, real
SQLite; trials are finished in a chosen order through the store where the order must be
known, and by two slots of a user function with slow points end to end.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loop import Runner, Store, parse_campaign
from loop.config import LoadedCampaign
from loop.runner import CampaignFinished, TrialReport

CAMPAIGN = """
name: order
parameters: [{name: x, type: float, bounds: [0, 1]}]
objectives: [{name: y, goal: minimize}]
instrument: {function: "fns.py:FN", outputs: [y]COUNT}
planner: {kind: sobol}
budget: BUDGET
seed: 3
"""

FUNCTIONS = """
import time


def line(inputs):
    return {"y": inputs["x"]}


def slow_low(inputs):
    # points with small x take longer: with two slots, trials end out of number order
    time.sleep(0.5 if inputs["x"] < 0.35 else 0.05)
    return {"y": inputs["x"]}
"""


def _loaded(tmp_path: Path, budget: str, fn: str = "line", count: int = 1) -> LoadedCampaign:
    (tmp_path / "fns.py").write_text(FUNCTIONS)
    text = (
        CAMPAIGN.replace("FN", fn)
        .replace("BUDGET", budget)
        .replace("COUNT", f", count: {count}" if count > 1 else "")
    )
    path = tmp_path / "order.yaml"
    path.write_text(text)
    return parse_campaign(text, path=path, base_dir=tmp_path)


def _stored(tmp_path: Path, budget: str, values: list[float], order: list[int]) -> Runner:
    """A campaign whose trials #1..#n measured ``values`` and ended in ``order`` (numbers),
    written through the store as a runner with several slots writes them."""
    store = Store(f"sqlite:///{tmp_path / 'order.db'}")
    runner = Runner(_loaded(tmp_path, budget), store)
    cid = runner.create()
    runner.lease.release()
    rows = [store.add_trial(cid, {"x": v}, "model", slot=i % 2) for i, v in enumerate(values)]
    for number in order:
        row = rows[number - 1]
        store.finish_trial(
            row.id or 0,
            status="completed",
            outputs={"y": values[number - 1]},
            readbacks={},
            run_uid=None,
            error=None,
        )
    return runner


def test_patience_is_judged_in_the_order_trials_ended(tmp_path: Path) -> None:
    # #3 (0.5) is the gain, but it ended before #2 and #4: in the order they ended the last
    # two brought nothing, so a run stopped there; by number (#3, #4) it was a gain
    runner = _stored(tmp_path, "{max_trials: 10, patience: 2}", [1.0, 3.0, 0.5, 2.0], [1, 3, 2, 4])
    store, cid = runner.store, runner.campaign_id or 0
    spent = runner.spent(store.trials(cid), 0.0)
    assert spent is not None and spent.rule == "patience", spent
    # stored as a run ends: resume refuses it, whatever the trial budget
    store.finish_campaign(cid, "completed", spent.reason)
    again = Runner.from_store(store, cid, max_trials=20)
    with pytest.raises(CampaignFinished, match="Nothing to resume, whatever the trial budget"):
        again.refuse_if_finished()


def test_a_gain_that_ended_last_keeps_the_campaign_going(tmp_path: Path) -> None:
    # by number the last two (#3, #4) brought nothing; #2's gain ended last
    runner = _stored(tmp_path, "{max_trials: 10, patience: 2}", [1.0, 0.5, 2.0, 3.0], [1, 3, 4, 2])
    assert runner.spent(runner.store.trials(runner.campaign_id or 0), 0.0) is None


def test_target_names_the_trial_that_reached_it_first_and_best_goes_by_number(
    tmp_path: Path,
) -> None:
    # #2 and #3 both reach the target (and tie for the best); #3 ended first
    runner = _stored(tmp_path, "{max_trials: 10, target: 0.2}", [1.0, 0.1, 0.1], [1, 3, 2])
    store, cid = runner.store, runner.campaign_id or 0
    spent = runner.spent(store.trials(cid), 0.0)
    assert spent is not None and spent.reason.startswith("target reached: trial #3 has y = 0.1")
    tally = runner._tally(store.trials(cid), store.observations(cid))
    assert [d.number for d in tally.done] == [1, 3, 2]
    # of equal values the lowest number is the best, as `status` and the report say
    assert tally.best is not None and tally.best.number == 2


class _Ended:
    """Records the completed trials in the order the loop counted them."""

    def __init__(self) -> None:
        self.completed: list[int] = []

    def trial_started(self, number: int, parameters: dict[str, float]) -> None:
        pass

    def trial_finished(self, report: TrialReport) -> None:
        if report.status == "completed":
            self.completed.append(report.number)


@pytest.mark.slow
def test_a_campaign_two_slots_ended_by_patience_is_not_resumed(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'two.db'}")
    ended = _Ended()
    runner = Runner(
        _loaded(tmp_path, "{max_trials: 40, patience: 3}", "slow_low", count=2),
        store,
        listener=ended,
    )
    summary = runner.run()
    assert summary.status == "completed" and summary.reason.startswith("patience:"), summary
    assert ended.completed != sorted(ended.completed)  # the slots did end out of order
    cid = summary.campaign_id
    rebuilt = Runner.from_store(store, cid, max_trials=80)
    tally = rebuilt._tally(store.trials(cid), store.observations(cid))
    assert [d.number for d in tally.done] == ended.completed  # one order, live and rebuilt
    with pytest.raises(CampaignFinished, match="patience"):
        rebuilt.refuse_if_finished()
