"""`closedloop stop`: an operator stops a running campaign from another terminal, and the
trials being measured finish and are stored (the first Ctrl-C in the runner's terminal
aborts them). Real runners on real RunEngines, a real SQLite store, the command in a
process of its own."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from loop import Runner, Store, parse_campaign
from loop.store import STOP_REQUESTS
from tests.cli_process import closedloop

CAMPAIGN = """
name: shift
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, latency: LATENCY, count: 2}
planner: {kind: sobol}
budget: {max_trials: 100}
seed: 3
"""


def _runner(tmp_path: Path, latency: float, ttl: float = 1.0) -> tuple[Runner, Store]:
    """A runner of CAMPAIGN; ``ttl`` 1 s: a heartbeat every 0.2 s, the request is taken
    within that. A runner that only ``create``s (no heartbeat) needs a lease that outlives
    the test's command (a longer ``ttl``), or it is stale before the command looks."""
    text = CAMPAIGN.replace("LATENCY", str(latency))
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    return Runner(parse_campaign(text, path=path, base_dir=tmp_path), store, lease_ttl=ttl), store


def _in_background(runner: Runner) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        out["summary"] = runner.run()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def _wait_for_trials(store: Store, n: int, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        campaigns = store.campaigns()
        if campaigns and len(store.trials(campaigns[-1].id or 0)) >= n:
            return campaigns[-1].id or 0
        time.sleep(0.05)
    raise AssertionError(f"fewer than {n} trials after {timeout} s")


@pytest.mark.slow
def test_stop_lets_the_trials_in_flight_finish_and_resume_goes_on(tmp_path: Path) -> None:
    runner, store = _runner(tmp_path, latency=2.0)  # 100 s of trials: the stop comes first
    thread, out = _in_background(runner)
    cid = _wait_for_trials(store, 3)
    told = closedloop(
        "stop", "--store", store.url, "--by", "ana", "--note", "end of shift", cwd=tmp_path
    )
    assert told.returncode == 0, told.stderr
    assert "starts no new trial and stops once the trials in flight" in told.stdout
    thread.join(timeout=60)
    summary = out["summary"]
    assert summary.status == "stopped"
    assert summary.reason == "stopped by `closedloop stop` (ana): end of shift"
    assert runner.stop_asked
    trials = store.trials(cid)
    # every trial that started was measured and stored: none aborted
    assert {t.status for t in trials} == {"completed"}
    assert 3 <= len(trials) < 100
    (event,) = [e for e in store.events(cid, None) if e.kind in STOP_REQUESTS]
    assert (event.kind, event.by, event.detail) == ("stop", "ana", "end of shift")
    assert event.outcome == "taken by the runner (stop)"
    assert store.lease(cid) is None
    more = len(trials) + 2
    resumed = Runner.from_store(store, max_trials=more, lease_ttl=1.0).resume()
    assert (resumed.status, resumed.completed) == ("completed", more)


@pytest.mark.slow
def test_stop_abort_aborts_the_trials_in_flight(tmp_path: Path) -> None:
    runner, store = _runner(tmp_path, latency=3.0)
    thread, out = _in_background(runner)
    cid = _wait_for_trials(store, 2)
    store.request_stop(cid, by="ana", detail="", abort=True)  # what `stop --abort` writes
    thread.join(timeout=60)
    summary = out["summary"]
    assert (summary.status, summary.reason) == ("stopped", "stopped by `closedloop stop` (ana)")
    abandoned = [t for t in store.trials(cid) if t.status == "abandoned"]
    assert abandoned and all("closedloop stop" in (t.error or "") for t in abandoned)


def test_stop_refuses_a_campaign_no_runner_drives(tmp_path: Path) -> None:
    runner, store = _runner(tmp_path, latency=0.0)
    runner.budget = runner.budget.model_copy(update={"max_trials": 2})
    runner.run()
    told = closedloop("stop", "--store", store.url, "-c", "shift", cwd=tmp_path)
    assert told.returncode == 2
    assert "is completed and no runner is driving it now, so there is nothing to stop" in (
        told.stderr
    )
    told = closedloop("stop", "--store", store.url, cwd=tmp_path)
    assert told.returncode == 2
    assert "has a runner driving it: there is nothing to stop" in told.stderr


def test_a_stop_no_runner_took_does_not_stop_the_next_session(tmp_path: Path) -> None:
    """A request left open (its runner ended or was killed first) is for that session."""
    runner, store = _runner(tmp_path, latency=0.0)
    runner.budget = runner.budget.model_copy(update={"max_trials": 2})
    cid = runner.create()
    runner.lease.release()  # as a runner killed before its first trial left it, then expired
    store.request_stop(cid, by="ana", detail="")
    resumed = Runner.from_store(store, max_trials=3, lease_ttl=1.0).resume()
    assert (resumed.status, resumed.completed) == ("completed", 3)
    (event,) = [e for e in store.events(cid, None) if e.kind in STOP_REQUESTS]
    assert event.outcome == "not used: its session ended"


def test_status_shows_a_stop_asked_of_the_running_session(tmp_path: Path) -> None:
    from loop.cli_instruments import paused_lines

    runner, store = _runner(tmp_path, latency=0.0, ttl=300.0)
    cid = runner.create()  # its runner holds the lease, as one that runs does

    def lines() -> list[str]:
        return [x for x in paused_lines(store, store.campaign(cid), store.url) if "STOP" in x]

    assert lines() == []
    store.request_stop(cid, by="ana", detail="")
    (line,) = lines()
    assert "STOP asked by ana" in line and line.endswith(
        "(after the trials in flight): waiting for the runner"
    )
    assert store.take_stop(cid, outcome="taken by the runner ({kind})") is not None
    (line,) = lines()
    assert line.endswith("the runner is stopping")
    runner.lease.release()
    assert lines() == []  # no runner holds it: the campaign's own status says the rest


@pytest.mark.slow
def test_a_stop_asked_between_heartbeats_starts_no_new_trial(tmp_path: Path) -> None:
    """The coordinator reads the request before it starts a trial: with heartbeats 6 s
    apart and 1 s trials, none starts after the stop was asked (review: two did)."""
    text = CAMPAIGN.replace("LATENCY", "1.0").replace("count: 2", "count: 1")
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    runner = Runner(parse_campaign(text, path=path, base_dir=tmp_path), store)  # 6 s beats
    thread, out = _in_background(runner)
    cid = _wait_for_trials(store, 2)
    asked = store.request_stop(cid, by="ana", detail="")
    thread.join(timeout=60)
    assert out["summary"].status == "stopped"
    trials = store.trials(cid)
    asked_at = asked.at.replace(tzinfo=None)
    late = [
        t.number
        for t in trials
        if t.started_at is not None and t.started_at.replace(tzinfo=None) > asked_at
    ]
    assert late == [] and {t.status for t in trials} == {"completed"}


def test_stop_names_the_campaigns_when_several_runners_drive_the_store(tmp_path: Path) -> None:
    first, store = _runner(tmp_path, latency=0.0, ttl=300.0)
    a = first.create()
    second, _ = _runner(tmp_path, latency=0.0, ttl=300.0)
    second.campaign = second.campaign.model_copy(update={"name": "other"})
    b = second.create()
    told = closedloop("stop", "--store", store.url, cwd=tmp_path)
    assert told.returncode == 2
    assert f"2 campaigns in store {store.url} have a runner driving them" in told.stderr
    assert f"(id {a})" in told.stderr and f"(id {b})" in told.stderr
    first.lease.release()
    second.lease.release()
    told = closedloop("stop", "--store", store.url, cwd=tmp_path)
    assert told.returncode == 2 and "has a runner driving it" in told.stderr
