"""Stopping rules: target, patience (with min_improvement), for one and several objectives.

Real runner, real RunEngine, real SQLite; model-free planners and small user functions keep
each campaign to a second or two. A module-level counter in a user function makes the
sequence of measured values known in advance.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from loop import Runner, Store, parse_campaign
from loop.cli import app
from loop.config import LoadedCampaign
from loop.runner import CampaignFinished, extension_hint

FUNCTIONS = """
import itertools
import time

_calls = itertools.count()


def constant(inputs):
    return {"y": 1.0, "c": 0.0}


def creeping(inputs):
    # y falls by 0.001 per call: always improving (minimise), never by much
    return {"y": 1.0 - 0.001 * next(_calls)}


def line(inputs):
    return {"y": inputs["x"], "c": inputs["x"]}


def two(inputs):
    x = inputs["x"]
    return {"f1": x, "f2": 1.0 - x ** 2, "c": x}


def constant2(inputs):
    return {"f1": 0.5, "f2": 0.5, "c": 0.0}


def rising_after_a_sentinel(inputs):
    # y rises by 1 per call (maximise): always improving; the second reading is a saturated
    # detector's overrange code
    n = next(_calls)
    return {"y": 9.9e37 if n == 1 else float(n)}


def slow_or_fail(inputs):
    # x < 0.5 raises at once; anything else takes 3 s (on the instrument's thread, so an
    # abort interrupts the wait): long enough that three failures on the other slot end the
    # campaign while it measures, however loaded the machine (1 s was not, now and then)
    if inputs["x"] < 0.5:
        raise ValueError("bad region")
    time.sleep(3.0)
    return {"y": inputs["x"]}
"""


def _campaign(text: str, tmp_path: Path) -> LoadedCampaign:
    (tmp_path / "fns.py").write_text(FUNCTIONS)
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    return parse_campaign(text, path=path, base_dir=tmp_path)


def _store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'store.db'}")


ONE = """
name: stop
parameters: [{name: x, type: float, bounds: [0, 1]}]
objectives: [{name: y, goal: GOAL}]
instrument: {function: "fns.py:FN", outputs: OUTPUTS}
planner: {kind: sobol}
budget: BUDGET
seed: 3
"""


def _one(
    fn: str, budget: str, goal: str = "minimize", outputs: str = "[y, c]", extra: str = ""
) -> str:
    return (
        ONE.replace("FN", fn)
        .replace("BUDGET", budget)
        .replace("GOAL", goal)
        .replace("OUTPUTS", outputs)
        + extra
    )


def test_target_stops_at_the_first_trial_reaching_it(tmp_path: Path) -> None:
    text = _one("line", "{max_trials: 40, target: 0.9}", goal="maximize")
    store = _store(tmp_path)
    summary = Runner(_campaign(text, tmp_path), store).run()
    trials = store.trials(summary.campaign_id)
    obs = store.observations(summary.campaign_id)
    values = [obs[t.id or 0]["y"] for t in trials]
    assert summary.status == "completed"
    assert summary.reason.startswith(f"target reached: trial #{len(trials)} has y = ")
    assert values[-1] >= 0.9 and all(v < 0.9 for v in values[:-1])
    assert summary.completed == len(trials) < 40
    row = store.campaign(summary.campaign_id)
    assert (row.status, row.stop_reason) == ("completed", summary.reason)


def test_target_counts_only_feasible_trials(tmp_path: Path) -> None:
    # y = c = x: x >= 0.6 reaches the target, but only x <= 0.7 is feasible; the Sobol
    # sequence of seed 3 measures x = 0.759 (infeasible) before x = 0.669
    extra = "outcome_constraints: ['c <= 0.7']\n"
    text = _one("line", "{max_trials: 64, target: 0.6}", goal="maximize", extra=extra)
    store = _store(tmp_path)
    summary = Runner(_campaign(text, tmp_path), store).run()
    obs = store.observations(summary.campaign_id)
    values = [obs[t.id or 0]["y"] for t in store.trials(summary.campaign_id)]
    assert summary.reason.startswith("target reached"), summary.reason
    assert 0.6 <= values[-1] <= 0.7
    assert any(v > 0.7 for v in values[:-1]), "an infeasible trial beyond the target came first"
    assert summary.best is not None and summary.best.objective == values[-1]
    assert 0 < summary.feasible < summary.completed
    assert summary.feasibility_rate == pytest.approx(summary.feasible / summary.completed)


def test_patience_stops_when_nothing_improves(tmp_path: Path) -> None:
    text = _one("constant", "{max_trials: 30, patience: 3}")
    summary = Runner(_campaign(text, tmp_path), _store(tmp_path)).run()
    # trial 1 sets the best; trials 2-4 bring nothing: out of patience after trial 4
    assert summary.completed == 4
    assert summary.reason == "patience: y did not improve in the last 3 completed trials (best 1)"


@pytest.mark.slow
def test_patience_waits_for_the_models_first_proposal(tmp_path: Path) -> None:
    """Was: `initial: {n: 8}` with `patience: 3` stopped after the 8 design points, before
    the model had proposed anything: the design spreads its points on purpose."""
    text = _one("constant", "{max_trials: 30, patience: 3}").replace(
        "planner: {kind: sobol}",
        "planner: {kind: botorch, initial: {kind: sobol, n: 8}}",
    )
    store = _store(tmp_path)
    summary = Runner(_campaign(text, tmp_path), store).run()
    kinds = [t.kind for t in store.trials(summary.campaign_id)]
    assert kinds[:8] == ["initial"] * 8
    # judged from the first model trial on: 8 design trials, then the model's 9th
    assert summary.completed == 9, (summary.reason, kinds)
    assert kinds[8] == "model"
    assert summary.reason.startswith("patience: y did not improve in the last 3")


def test_min_improvement_sets_what_counts_as_progress(tmp_path: Path) -> None:
    small = _one("creeping", "{max_trials: 8, patience: 3, min_improvement: 0.01}", outputs="[y]")
    summary = Runner(_campaign(small, tmp_path / "a"), _store(tmp_path / "a")).run()
    assert summary.completed == 4, summary.reason
    assert "did not improve by at least 0.01 in the last 3" in summary.reason

    any_gain = _one("creeping", "{max_trials: 8, patience: 3}", outputs="[y]")
    summary = Runner(_campaign(any_gain, tmp_path / "b"), _store(tmp_path / "b")).run()
    assert summary.completed == 8
    assert summary.reason.startswith("max_trials reached")


def test_a_sentinel_does_not_freeze_patiences_best(tmp_path: Path) -> None:
    """A 9.9e37 reading (trial 2) was the best for good: patience saw no gain in trials 3-5
    and stopped a campaign improving at every trial (found in review). It is left out of
    the best as in ``status`` (``planners._outliers.best_index``)."""
    text = _one("rising_after_a_sentinel", "{max_trials: 8, patience: 3}", "maximize", "[y]")
    summary = Runner(_campaign(text, tmp_path), _store(tmp_path)).run()
    assert summary.reason == "max_trials reached (8 completed trials)"
    assert summary.best is not None and summary.best.objective == 7.0
    assert [r.number for r in summary.outlying] == [2]


SLOW = """
name: slow
parameters: [{name: x, type: float, bounds: [0, 1]}]
objectives: [{name: y, goal: minimize}]
instrument: {function: "fns.py:slow_or_fail", outputs: [y], latency: 0.01, count: 2}
planner: {kind: sobol}
budget: BUDGET
seed: 3
"""


def test_a_trial_aborted_by_max_failures_keeps_the_rule_once(tmp_path: Path) -> None:
    """A trial in flight when ``max_failures`` ended the campaign read "4 trials failed
    (...): run aborted: 4 trials failed (...)" beside a campaign stopped by "5 trials
    failed" (found in review): the reason twice, and a count that later failures changed.
    It keeps the rule and its setting, once."""
    text = SLOW.replace("BUDGET", "{max_trials: 10, max_failures: 3}")
    store = _store(tmp_path)
    summary = Runner(_campaign(text, tmp_path), store).run()
    assert summary.status == "failed" and summary.reason.startswith("3 trials failed")
    abandoned = [t for t in store.trials(summary.campaign_id) if t.status == "abandoned"]
    assert abandoned, "the test needs a trial in flight when the campaign stopped"
    for t in abandoned:
        assert t.error == "run aborted: max_failures reached (budget.max_failures = 3)"


def test_a_trial_aborted_by_a_stop_request_keeps_its_reason_once(tmp_path: Path) -> None:
    text = SLOW.replace("BUDGET", "{max_trials: 10, max_failures: 10}")
    store = _store(tmp_path)

    class StopAtTheFirstFailure:
        runner: Runner

        def trial_started(self, number: int, parameters: dict[str, object]) -> None:
            pass

        def trial_finished(self, report: object) -> None:
            if getattr(report, "status", None) == "failed":
                self.runner.request_stop("stopped by the test")

    listener = StopAtTheFirstFailure()
    runner = Runner(_campaign(text, tmp_path), store, listener=listener)
    listener.runner = runner
    summary = runner.run()
    assert (summary.status, summary.reason) == ("stopped", "stopped by the test")
    abandoned = [t for t in store.trials(summary.campaign_id) if t.status == "abandoned"]
    assert abandoned, "the test needs a trial in flight when the campaign stopped"
    for t in abandoned:
        assert t.error == "run aborted: stopped by the test"


@pytest.fixture(autouse=True)
def _dirs(tmp_path: Path) -> None:
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()


TWO = """
name: stop-moo
parameters: [{name: x, type: float, bounds: [0, 1]}]
objectives:
  - {name: f1, goal: maximize, reference_point: 0}
  - {name: f2, goal: maximize, reference_point: 0}
instrument: {function: "fns.py:two", outputs: [f1, f2, c]}
planner: {kind: sobol}
budget: BUDGET
seed: 5
"""


def test_targets_of_several_objectives_are_met_by_one_trial(tmp_path: Path) -> None:
    # f1 = x >= 0.5 and f2 = 1 - x^2 >= 0.6 hold together only for x in [0.5, 0.632]
    text = TWO.replace("BUDGET", "{max_trials: 64, target: {f1: 0.5, f2: 0.6}}")
    store = _store(tmp_path)
    summary = Runner(_campaign(text, tmp_path), store).run()
    assert summary.reason.startswith("target reached"), summary.reason
    assert "f1 = " in summary.reason and "(target 0.6)" in summary.reason
    x = store.trials(summary.campaign_id)[-1].parameters["x"]
    assert 0.5 <= x <= 0.64
    # several objectives: the summary carries the Pareto front and its hypervolume
    assert summary.objectives == ["f1", "f2"]
    assert summary.pareto and summary.hypervolume is not None and summary.hypervolume > 0
    xs = sorted(r.parameters["x"] for r in summary.pareto)
    assert xs == sorted(t.parameters["x"] for t in store.trials(summary.campaign_id))


def test_patience_of_several_objectives_watches_the_hypervolume(tmp_path: Path) -> None:
    text = TWO.replace("BUDGET", "{max_trials: 40, patience: 4}")
    text = text.replace("fns.py:two", "fns.py:constant2")
    summary = Runner(_campaign(text, tmp_path), _store(tmp_path)).run()
    assert summary.completed == 5
    assert summary.reason.startswith("patience: the hypervolume did not grow in the last 4")


def test_stop_reason_is_printed_by_run_status_and_resume(tmp_path: Path) -> None:
    text = _one("line", "{max_trials: 40, target: 0.9}", goal="maximize")
    _campaign(text, tmp_path)
    store = f"sqlite:///{tmp_path / 'cli.db'}"
    cli = CliRunner()
    run = cli.invoke(app, ["run", str(tmp_path / "campaign.yaml"), "--store", store, "-q"])
    assert run.exit_code == 0, run.output
    assert "completed: target reached: trial #" in run.output
    status = cli.invoke(app, ["status", "--store", store])
    assert status.exit_code == 0, status.output
    assert "completed: target reached: trial #" in status.output
    with pytest.raises(CampaignFinished, match="target reached"):
        Runner.from_store(Store(store, create=False), "stop").resume()


@pytest.mark.parametrize(
    ("rule", "option"),
    [
        ("target", None),
        ("patience", None),
        ("max_trials", "--max-trials 17"),
        ("max_failures", "--max-failures 13"),
        ("max_duration", "--max-duration 3m"),
    ],
)
def test_the_option_that_extends_a_campaign_follows_its_rule(rule: str, option: str | None) -> None:
    assert extension_hint(rule, completed=7, failed=3, elapsed=90.0) == option


@pytest.mark.parametrize(
    ("elapsed", "option"),
    [(3.5, "2m"), (600.0, "20m"), (5400.0, "2h30m"), (86400.0, "1d1h")],
)
def test_more_running_time_is_offered_in_proportion(elapsed: float, option: str) -> None:
    """As much again, from a minute to an hour more: a 3.5 s campaign was offered 61m."""
    hint = extension_hint("max_duration", completed=0, failed=0, elapsed=elapsed)
    assert hint == f"--max-duration {option}"


def test_spent_names_the_rule_and_the_option(tmp_path: Path) -> None:
    text = _one("line", "{max_trials: 3}")
    store = _store(tmp_path)
    runner = Runner(_campaign(text, tmp_path), store)
    summary = runner.run()
    trials = store.trials(summary.campaign_id)
    spent = runner.spent(trials, 1.0)
    assert spent is not None
    assert (spent.rule, spent.status, spent.option) == (
        "max_trials",
        "completed",
        "--max-trials 13",
    )
    assert runner.stop_reason(trials, 1.0) == (spent.status, spent.reason)
    assert (spent.status, spent.reason) == (summary.status, summary.reason)
    # a target met: no budget extends it
    text = _one("line", "{max_trials: 40, target: 0.9}", goal="maximize")
    (tmp_path / "t").mkdir()
    other = _store(tmp_path / "t")
    runner = Runner(_campaign(text, tmp_path), other)
    cid = runner.run().campaign_id
    spent = runner.spent(other.trials(cid), 1.0)
    assert spent is not None and (spent.rule, spent.option) == ("target", None)
