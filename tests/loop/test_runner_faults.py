"""Faulty instruments end to end: real RunEngine, simulated faults, real SQLite.

A timeout costs a trial (documents stored, the campaign goes on), a transient failure is
retried as a new trial at the same point, NaN/inf outputs and out-of-range readbacks fail the
trial without reaching the planner, and a campaign that fails too often stops with a report
of which trials failed and why.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

import loop.runner as runner_module
from loop import Runner, Store, parse_campaign
from loop.failures import failure_kind
from planners import Observation
from tests.cli_process import run_cli

BASE = """
name: faults
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, INSTRUMENT}
planner: {kind: sobol}
budget: BUDGET
seed: 4
"""


def _campaign(tmp_path: Path, instrument: str, budget: str) -> Any:
    text = BASE.replace("INSTRUMENT", instrument).replace("BUDGET", budget)
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    return parse_campaign(text, path=path, base_dir=tmp_path)


@pytest.fixture
def ingested(monkeypatch: pytest.MonkeyPatch) -> list[Observation]:
    """Every observation the runner's planner is given, in order."""
    seen: list[Observation] = []
    make = runner_module.make_planner

    def spying(*args: Any, **kwargs: Any) -> Any:
        planner = make(*args, **kwargs)
        ingest = planner.ingest

        def record(observations: list[Observation]) -> None:
            seen.extend(observations)
            ingest(observations)

        planner.ingest = record  # type: ignore[method-assign, assignment]
        return planner

    monkeypatch.setattr(runner_module, "make_planner", spying)
    return seen


def _store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'store.db'}")


def test_timeouts_are_retried_stored_and_reported(
    tmp_path: Path, ingested: list[Observation]
) -> None:
    loaded = _campaign(
        tmp_path, "hang_rate: 1.0, timeout: 0.2, max_retries: 2", "{max_trials: 5, max_failures: 6}"
    )
    store = _store(tmp_path)
    summary = Runner(loaded, store).run()
    assert (summary.status, summary.completed, summary.failed) == ("failed", 0, 6)
    assert summary.failure_counts == {"timeout": 6}
    assert "6 timeout" in summary.reason and "max_failures" in summary.reason
    trials = store.trials(summary.campaign_id)
    # Two points, each tried three times (the first attempt and two retries).
    assert [t.kind for t in trials] == ["sobol", "retry", "retry"] * 2
    assert trials[0].parameters == trials[1].parameters == trials[2].parameters
    assert trials[3].parameters != trials[0].parameters
    for t in trials:
        assert t.status == "failed"
        assert (t.error or "").startswith("timed out after 0.2 s")
        docs = store.documents(t.id or 0)
        assert docs[0].name == "start" and docs[-1].name == "stop"
        assert docs[-1].body["exit_status"] == "abort"
        assert t.run_uid == docs[0].body["uid"]
    starts = [store.documents(t.id or 0)[0].body for t in trials]
    assert [s.get("retry_of") for s in starts] == [None, 1, 1, None, 4, 4]
    assert [s.get("attempt") for s in starts] == [None, 2, 3, None, 2, 3]
    # The planner learns each point once, from its last attempt.
    assert [o.outcome for o in ingested] == ["failed", "failed"]
    assert [f.number for f in summary.failures] == [1, 2, 3, 4, 5, 6]


def test_deterministic_failures_are_not_retried(tmp_path: Path) -> None:
    loaded = _campaign(
        tmp_path, "failing_region: 'x1 > -10', max_retries: 3", "{max_trials: 3, max_failures: 2}"
    )
    store = _store(tmp_path)
    summary = Runner(loaded, store).run()
    assert summary.status == "failed" and summary.failed == 2
    assert [t.kind for t in store.trials(summary.campaign_id)] == ["sobol", "sobol"]
    assert summary.failure_counts == {"failing region": 2}


def test_a_retry_that_succeeds_counts_once(tmp_path: Path, ingested: list[Observation]) -> None:
    loaded = _campaign(
        tmp_path, "failure_rate: 0.7, max_retries: 5", "{max_trials: 6, max_failures: 30}"
    )
    store = _store(tmp_path)
    summary = Runner(loaded, store).run()
    assert summary.completed == 6
    trials = store.trials(summary.campaign_id)
    retries = [t for t in trials if t.kind == "retry"]
    assert retries, "with failure_rate 0.5 and this seed some attempts are retried"
    # One observation per proposed point: retried attempts are never shown to the planner.
    proposed = [t for t in trials if t.kind != "retry"]
    assert len(ingested) == len(proposed)
    assert sum(o.outcome == "completed" for o in ingested) == 6
    for i, t in enumerate(trials):
        if t.kind == "retry":
            assert trials[i - 1].status == "failed"
            assert trials[i - 1].parameters == t.parameters


@pytest.mark.parametrize("slots", [1, 2])
def test_resume_rebuilds_the_planner_without_retried_attempts(
    tmp_path: Path, ingested: list[Observation], slots: int
) -> None:
    """With two slots a retry is often not the next trial number (the other slot's trial
    comes between): the rebuilt planner must still skip the attempt that was retried."""
    loaded = _campaign(
        tmp_path,
        f"failure_rate: 0.7, max_retries: 5, latency: 0.02, count: {slots}",
        "{max_trials: 4, max_failures: 30}",
    )
    store = _store(tmp_path)
    first = Runner(loaded, store).run()
    live = list(ingested)
    ingested.clear()
    again = Runner.from_store(store, first.campaign_id, max_trials=5)
    again.resume()
    rebuilt = [(o.parameters, o.outcome) for o in ingested[: len(live)]]
    seen = [(o.parameters, o.outcome) for o in live]
    if slots > 1:  # learned as they finished live, in trial order when rebuilt
        rebuilt, seen = sorted(rebuilt, key=repr), sorted(seen, key=repr)
    assert rebuilt == seen


def test_a_transient_fault_on_a_first_attempt_teaches_the_planner_nothing(
    tmp_path: Path, ingested: list[Observation]
) -> None:
    """Without retries a random fault is learned as if the trial had never run (as failed,
    such faults walled the planner off from good regions), live and after a resume; a
    deterministic failure is still learned as failed."""
    loaded = _campaign(
        tmp_path,
        "failure_rate: 0.7, failing_region: 'x1 > 8', max_retries: 0",
        "{max_trials: 8, max_failures: 30}",
    )
    store = _store(tmp_path)
    first = Runner(loaded, store).run()
    trials = store.trials(first.campaign_id)
    faults = [t for t in trials if t.status == "failed" and t.transient]
    region = [t for t in trials if t.status == "failed" and not t.transient]
    assert faults and region, "seed 4 draws both kinds of failure"
    assert all("injected instrument fault" in (t.error or "") for t in faults)
    assert all("failing region" in (t.error or "") for t in region)
    by_point = {repr(o.parameters): o.outcome for o in ingested}
    assert {by_point[repr(t.parameters)] for t in faults} == {"abandoned"}
    assert {by_point[repr(t.parameters)] for t in region} == {"failed"}
    live = [(o.parameters, o.outcome) for o in ingested]
    ingested.clear()
    Runner.from_store(store, first.campaign_id, max_trials=first.completed + 1).resume()
    assert [(o.parameters, o.outcome) for o in ingested[: len(live)]] == live


def test_nan_outputs_are_stored_but_never_learned(
    tmp_path: Path, ingested: list[Observation]
) -> None:
    loaded = _campaign(
        tmp_path, "nan_rate: 1.0, max_retries: 2", "{max_trials: 3, max_failures: 3}"
    )
    store = _store(tmp_path)
    summary = Runner(loaded, store).run()
    assert summary.status == "failed" and summary.failure_counts == {"non-finite output": 3}
    trials = store.trials(summary.campaign_id)
    assert [t.kind for t in trials] == ["sobol"] * 3  # not transient: no retry
    with store.session() as s:
        from sqlmodel import select

        from loop.store import ObservationRow

        rows = list(s.exec(select(ObservationRow)))
    # NaN as NULL, an infinity as itself: neither finite
    assert len(rows) == 3 and all(not r.finite for r in rows)
    assert all(r.value is None or math.isinf(r.value) for r in rows)
    for t in trials:
        event = next(d for d in store.documents(t.id or 0) if d.name == "event")
        assert event.body["data"]["y"] is None or not math.isfinite(event.body["data"]["y"])
    assert [o.outcome for o in ingested] == ["failed"] * 3
    assert all(o.outputs == {} for o in ingested)
    assert all(not o.usable_for(["y"]) for o in ingested)


def test_a_side_output_reading_nan_keeps_the_trial_and_its_objective(
    tmp_path: Path, ingested: list[Observation], caplog: pytest.LogCaptureFixture
) -> None:
    """An output no objective or constraint reads (a monitoring channel) may read NaN or
    inf: the trial completes and the planner learns its objective. Every trial of this
    campaign used to fail ``output 'note' is not finite`` (found in review)."""
    (tmp_path / "fn.py").write_text(
        "import math\n"
        "def f(inputs):\n"
        "    out = {'y': (inputs['x'] - 0.3) ** 2, 'note': math.nan}\n"
        "    if inputs['x'] > 0.5:\n"
        "        out['note'] = math.inf\n"
        "    return out\n"
    )
    text = """
name: side
parameters: [{name: x, type: float, bounds: [0, 1]}]
objectives: [{name: y, goal: minimize}]
instrument: {function: fn.py:f, outputs: [y, note]}
planner: {kind: sobol}
budget: {max_trials: 4, max_failures: 1}
seed: 1
"""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    store = _store(tmp_path)
    with caplog.at_level("WARNING", logger="loop.runner"):
        summary = Runner(parse_campaign(text, path=path, base_dir=tmp_path), store).run()
    trials = store.trials(summary.campaign_id)
    assert [t.status for t in trials] == ["completed"] * 4
    assert [o.outcome for o in ingested] == ["completed"] * 4
    assert all(o.usable_for(["y"]) for o in ingested)
    said = [r.getMessage() for r in caplog.records if "'note'" in r.getMessage()]
    assert len(said) == 1 and "the trial is kept" in said[0], said
    # a required output reading NaN still fails its trial
    (tmp_path / "fn.py").write_text("def f(inputs):\n    return {'y': float('nan'), 'note': 1.0}\n")
    bad = path.with_name("bad.yaml")
    bad.write_text(text.replace("name: side", "name: bad"))
    failed = Runner(parse_campaign(bad.read_text(), path=bad, base_dir=tmp_path), store).run()
    assert failed.failure_counts == {"non-finite output": 1}


def test_out_of_range_readbacks_fail_and_stay_out_of_the_model(
    tmp_path: Path, ingested: list[Observation]
) -> None:
    """A readback outside the bounds is the device's miss, not the point's failure (review
    D): transient, so a point's first attempt teaches nothing and is retried; a point its
    retry misses too is learned as failing. The model never sees the readback."""
    loaded = _campaign(
        tmp_path,
        "readback_out_of_range_rate: 1.0, max_retries: 1",
        "{max_trials: 4, max_failures: 4}",
    )
    store = _store(tmp_path)
    summary = Runner(loaded, store).run()
    assert summary.failure_counts == {"readback out of range": 4}
    space = loaded.campaign.space
    trials = store.trials(summary.campaign_id)
    assert [t.transient for t in trials] == [True] * 4
    assert [t.kind for t in trials] == ["sobol", "retry"] * 2
    for t in trials:
        assert "lies outside the campaign's bounds" in (t.error or "")
        assert not space.contains(t.readbacks or {})  # stored as measured
    # only each point's last attempt is learned, as failing; never at its readback
    retries = [t for t in trials if t.kind == "retry"]
    assert [o.outcome for o in ingested] == ["failed"] * 2
    assert [o.parameters for o in ingested] == [t.parameters for t in retries]


def test_a_readback_missed_without_retries_is_learned_as_failing_at_once(
    tmp_path: Path, ingested: list[Observation]
) -> None:
    """Transient, but with no retry to follow (``max_retries: 0``) the point is learned as
    failing: learned as nothing, a drive that always misses a bound had its point proposed
    8 times in a row until ``max_failures`` ended the campaign (found in review)."""
    loaded = _campaign(
        tmp_path, "readback_out_of_range_rate: 1.0", "{max_trials: 3, max_failures: 3}"
    )
    store = _store(tmp_path)
    summary = Runner(loaded, store).run()
    trials = store.trials(summary.campaign_id)
    assert [(t.kind, t.transient) for t in trials] == [("sobol", True)] * 3
    assert [o.outcome for o in ingested] == ["failed"] * 3

    # and rebuilt so by resume (the stored flag and error, not the live loop)
    from loop.runner import _learned_status

    missed = trials[0].error
    assert _learned_status("failed", True, retry=False, error=missed) == "failed"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ("timed out after 5 s; the run was aborted", "timeout"),
        ("output 'y' is not finite: nan", "non-finite output"),
        ("output 'y' is not finite: stored as null (NaN or infinite)", "non-finite output"),
        ("output 'y' is missing or not a number: 'n/a'", "missing output"),
        ("readback x1 is not in the run's event, so it cannot be checked", "missing readback"),
        ("readback x1 = 12 lies outside its declared limits [0, 10]", "readback out of range"),
        (
            "readback x1 = 12 lies outside the campaign's bounds [0, 10] for it",
            "readback out of range",
        ),
        (
            "limit check failed, no device moved: SetpointRefused: gap: move from 20 to 8.96 is a "
            "step of 11.04, larger than max_step 10",
            "step too large",
        ),
        (
            "OutputInAlarm: output 'y': PV lab:det is in INVALID alarm (HIHI), worse than its "
            "max_alarm minor: the reading is not taken",
            "reading not trusted",
        ),
        # a device's own timeout, whichever library raised it (was three kinds)
        (
            "DeviceTimeout: acquisition not complete within 0.5 s (detector 'b') <- caused by "
            "TimeoutError: not done within 0.4995 s",
            "timeout",
        ),
        ("WaitTimeoutError: readback x not within 0.1 of 2 after 5 s", "timeout"),
        ("TimeoutError: motor m1 did not finish its move", "timeout"),
        (
            "FailedStatus <- caused by SimulatedFault: d: injected instrument fault",
            "instrument fault",
        ),
        ("FailedStatus <- caused by OSError: disk", "OSError"),
        ("limit check failed, no device moved: SimLimitError: x", "setpoint refused"),
        (
            "MotorFault: position: the motor ended its move to 30 short of it, on its high "
            "limit switch (HLS) (motor m1 at 25 mm (RBV), not moving (DMOV 1))",
            "limit switch",
        ),
        (None, "other"),
    ],
)
def test_failure_kind(error: str | None, kind: str) -> None:
    assert failure_kind(error) == kind


@pytest.mark.slow
def test_cli_prints_the_failure_report(tmp_path: Path) -> None:
    text = BASE.replace("INSTRUMENT", "failure_rate: 1.0, nan_rate: 0.0").replace(
        "BUDGET", "{max_trials: 5, max_failures: 3}"
    )
    path = tmp_path / "c.yaml"
    path.write_text(text)
    url = f"sqlite:///{tmp_path / 's.db'}"

    def closedloop(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(args, cwd=tmp_path)

    run = closedloop("run", str(path), "--store", url, "-q")
    assert run.returncode == 1, run.stderr
    assert "failures: 3 instrument fault" in run.stdout
    assert "trial #1 [instrument fault]" in run.stdout
    status = closedloop("status", "--store", url)
    assert status.returncode == 0, status.stderr
    assert "failures: 3 instrument fault" in status.stdout
    assert "trial #3 [instrument fault]" in status.stdout


def test_a_failed_document_write_keeps_the_measurement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One write fails past SQLite's busy timeout: the run completed, so its documents are
    written again and the trial keeps its outputs; the campaign goes on."""
    loaded = _campaign(tmp_path, "latency: 0.01", "{max_trials: 3}")
    store = _store(tmp_path)
    write = store.add_document
    failed: list[int] = []

    def locked_once(
        trial_id: int, seq: int, name: str, body: Any, run_uid: Any, **lease: Any
    ) -> None:
        if name == "event" and not failed:
            failed.append(trial_id)
            raise OperationalError("INSERT INTO document", {}, Exception("database is locked"))
        write(trial_id, seq, name, body, run_uid, **lease)

    monkeypatch.setattr(store, "add_document", locked_once)
    summary = Runner(loaded, store).run()
    assert (summary.status, summary.completed) == ("completed", 3)
    trial = next(t for t in store.trials(summary.campaign_id) if t.id == failed[0])
    assert trial.status == "completed"
    docs = store.documents(failed[0])
    assert [(d.seq, d.name) for d in docs] == list(
        enumerate(["start", "descriptor", "event", "stop"], start=1)
    )
    assert store.observations(summary.campaign_id)[failed[0]]["y"] == docs[2].body["data"]["y"]


def test_documents_of_a_trial_left_running_are_not_written(tmp_path: Path) -> None:
    """A slot that did not stop when its session ended keeps emitting documents on its own
    thread after the lease is released; they are no longer this runner's to store (a resume
    may have reconciled the trial from the documents stored until then)."""
    store = _store(tmp_path)
    runner = Runner(_campaign(tmp_path, "latency: 0.01", "{max_trials: 1}"), store)
    summary = runner.run()
    trial = store.trials(summary.campaign_id)[0]
    stored = len(store.documents(trial.id or 0))
    sink = runner._sink(trial.id or 0)
    runner._left_running.add(trial.id or 0)
    sink("stop", {"uid": "late", "exit_status": "abort"})
    assert len(store.documents(trial.id or 0)) == stored


def test_failures_of_the_user_s_function_point_at_the_function(tmp_path: Path) -> None:
    """A function that raises every time used up max_failures with "check the instrument"
    (found in review): the reason points at the function, whose errors name file and line."""
    (tmp_path / "model.py").write_text("def f(x):\n    raise RuntimeError('no solution')\n")
    text = (
        "name: f\n"
        "parameters: [{name: x, type: float, bounds: [0, 1]}]\n"
        "objectives: [{name: y, goal: maximize}]\n"
        "instrument: {function: 'model.py:f', outputs: [y]}\n"
        "planner: {kind: sobol}\n"
        "budget: {max_trials: 5, max_failures: 2}\n"
        "seed: 1\n"
    )
    (tmp_path / "c.yaml").write_text(text)
    loaded = parse_campaign(text, path=tmp_path / "c.yaml", base_dir=tmp_path)
    summary = Runner(loaded, _store(tmp_path)).run()
    assert summary.status == "failed"
    assert summary.failure_counts == {"function raised RuntimeError": 2}
    assert summary.reason.endswith(
        "check the function (each failed trial's error says what it raised or returned)"
    )
    assert [f.error for f in summary.failures][0].startswith(
        "RuntimeError: no solution; raised by function f (model.py, line 2)"
    )


def test_a_trial_that_never_measured_teaches_the_planner_nothing_on_any_attempt() -> None:
    """Points that waited behind one hung function call timed out; with retries they were
    learned as failing points (found in review). "Not measured" is learned as abandoned on
    a retry too; a retry that measured and failed is still learned as failed."""
    from loop.runner import _learned_status

    unmeasured = (
        "not measured: function measure (f.py) was still running the call of a trial stopped "
        "3 s before (a running function cannot be interrupted), so this trial never called "
        "it; timed out after 3 s; the run was aborted through the RunEngine"
    )
    for retry in (False, True):
        assert _learned_status("failed", True, retry=retry, error=unmeasured) == "abandoned"
    timed_out = "timed out after 3 s; the run was aborted through the RunEngine"
    assert _learned_status("failed", True, retry=False, error=timed_out) == "abandoned"
    assert _learned_status("failed", True, retry=True, error=timed_out) == "failed"


def test_a_move_max_step_refused_teaches_the_planner_nothing() -> None:
    """A point inside the limits failed only because an earlier campaign's safe state left
    the device far away, and was taught as a failing point (found in review)."""
    from loop.runner import _learned_status

    refused = (
        "limit check failed, no device moved: SetpointRefused: gap: move from 20 to 8.96 is a "
        "step of 11.04, larger than max_step 10"
    )
    assert _learned_status("failed", False, retry=False, error=refused) == "abandoned"
    outside = "limit check failed, no device moved: setpoint 86.7 is outside the limits"
    assert _learned_status("failed", False, retry=False, error=outside) == "failed"
