"""Rows written by older closedloop versions, read by today's: columns added since are NULL.

Each store is made by today's code and then put in the layout an older version wrote (its
later columns and tables dropped, its schema version set back), with the rows as that
version left them; opening it brings it up to date in place, the added columns NULL, as
with a store an older version wrote.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from loop import Runner, Store, parse_campaign
from loop.asktell import WITHDRAWN, awaiting_tell, is_told
from loop.failures import OPERATOR_FAILED, transient_failure, was_transient
from loop.runner import CampaignFinished
from loop.store import TrialRow
from tests.cli_process import closedloop

CAMPAIGN = """\
name: old-rows
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, INSTRUMENT}
planner: {kind: sobol}
budget: BUDGET
seed: 4
"""

# What each schema lacked: (table, column) added since, and tables added since.
_SCHEMA_2_LACKS = (
    [("trial", "slot"), ("campaign", "instrument_text"), ("trial", "transient")],
    ["campaign_event"],
)
_SCHEMA_1_LACKS = (
    [*_SCHEMA_2_LACKS[0], ("campaign", "budget"), ("campaign", "elapsed_seconds")],
    [*_SCHEMA_2_LACKS[1], "lease", "closedloop_meta"],
)


def _as_written_by(
    db: Path, version: int, columns: Sequence[tuple[str, str]], tables: Sequence[str]
) -> None:
    """Put the store ``db`` in the layout of store schema ``version``, as a version of
    closedloop that knew nothing of ``columns`` and ``tables`` wrote it."""
    with sqlite3.connect(db) as conn:
        for table, column in columns:
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        for table in tables:
            conn.execute(f"DROP TABLE {table}")
        if "closedloop_meta" not in tables:
            conn.execute(
                "UPDATE closedloop_meta SET value = ? WHERE key = 'schema_version'",
                (str(version),),
            )


def _run(
    tmp_path: Path, instrument: str, budget: str, max_trials: int | None = None
) -> tuple[str, int]:
    text = CAMPAIGN.replace("INSTRUMENT", instrument).replace("BUDGET", budget)
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    loaded = parse_campaign(text, path=path, base_dir=tmp_path)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        summary = Runner(loaded, store, max_trials=max_trials).run()
    finally:
        store.close()
    return store.url, summary.campaign_id or 0


def _sql(tmp_path: Path, statement: str, *args: object) -> None:
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute(statement, args)


# ---------------------------------------------------------------------------- budget (schema 1)
def test_a_first_release_campaign_keeps_the_trial_budget_it_ran_with(tmp_path: Path) -> None:
    """The first release recorded no budget: a campaign it ran with ``--max-trials 3`` (the
    file says 8) was resumed to 8 and shown as "budget 8 trials". It stopped with "max_trials
    reached (3 completed trials)", and that count is the limit it ran with."""
    url, cid = _run(tmp_path, "latency: 0", "{max_trials: 8}", max_trials=3)
    _as_written_by(tmp_path / "s.db", 1, *_SCHEMA_1_LACKS)
    _sql(tmp_path, "UPDATE campaign SET stop_reason = 'max_trials reached (3 completed trials)'")
    proc = closedloop("status", "--store", url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "budget 3 trials" in proc.stdout and "not recorded" not in proc.stdout
    store = Store(url, create=False)
    assert store.campaign(cid).budget is None  # the column was added, NULL
    runner = Runner.from_store(store, cid)
    assert runner.budget.max_trials == 3
    with pytest.raises(CampaignFinished, match="--max-trials"):
        runner.resume()  # finished: a larger budget is needed to go on (README)
    summary = Runner.from_store(store, cid, max_trials=4).resume()
    assert (summary.completed, summary.status) == (4, "completed")
    assert (store.campaign(cid).budget or {})["max_trials"] == 4  # recorded from now on
    store.close()


def test_an_unrecorded_budget_is_said_to_be_the_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Stopped by Ctrl-C: nothing tells whether `--max-trials` was given.
    url, cid = _run(tmp_path, "latency: 0", "{max_trials: 8}", max_trials=2)
    _as_written_by(tmp_path / "s.db", 1, *_SCHEMA_1_LACKS)
    _sql(
        tmp_path,
        "UPDATE campaign SET status = 'stopped', stop_reason = 'interrupted by the user (Ctrl-C)'",
    )
    proc = closedloop("status", "--store", url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(proc.stdout.split())
    assert "budget 8 trials (its file's: the one it ran with was not recorded)" in flat
    store = Store(url, create=False)
    with caplog.at_level(logging.WARNING):
        runner = Runner.from_store(store, cid)
    assert runner.budget.max_trials == 8
    assert "did not record its budget; its max_trials is taken from its file (8)" in caplog.text
    store.close()


def test_a_stored_budget_of_twelve_days_or_more_is_read_back() -> None:
    # Every version stored 30 days as '2.592e+06s', which no version read back: resume,
    # suggest and tell of such a campaign ended in a ValidationError.
    from loop.config import Budget

    old = Budget.model_validate({"max_trials": 3, "max_duration": "2.592e+06s"})
    assert old.max_duration == 30 * 86400
    stored = Budget.model_validate({"max_trials": 3, "max_duration": "30d"}).model_dump(mode="json")
    assert stored["max_duration"] == "30d"  # exact, as written (it was 2592000s)
    assert Budget.model_validate(stored) == old


# ---------------------------------------------------------------------------- told (schema < 3)
def test_a_runner_campaign_before_slots_shows_its_running_time(tmp_path: Path) -> None:
    """Before schema 3 no trial had a slot: every trial read as told with `tell`, and status
    gave the campaign's age (days) as its running time (seconds)."""
    url, _ = _run(tmp_path, "latency: 0", "{max_trials: 3, max_duration: 10m}")
    _as_written_by(tmp_path / "s.db", 2, *_SCHEMA_2_LACKS)
    _sql(
        tmp_path,
        "UPDATE campaign SET created_at = datetime(created_at, '-3 days'), elapsed_seconds = 8.5",
    )
    proc = closedloop("status", "--store", url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "10 min running time (8.5 s so far)" in proc.stdout, proc.stdout


ASKTELL = """\
name: asktell
parameters:
  - {name: temperature, type: float, bounds: [30, 110]}
objectives: [{name: yield, goal: maximize}]
instrument: manual
planner: {kind: sobol}
budget: {max_trials: 20, max_duration: 30d}
seed: 3
"""


def test_an_ask_tell_campaign_before_slots_is_still_told(tmp_path: Path) -> None:
    path = tmp_path / "ask.yaml"
    path.write_text(ASKTELL)
    url = f"sqlite:///{tmp_path / 's.db'}"
    proc = closedloop("suggest", str(path), "--store", url, "-n", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = closedloop("tell", "--store", url, "1", "yield=0.5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    _as_written_by(tmp_path / "s.db", 2, *_SCHEMA_2_LACKS)
    _sql(tmp_path, "UPDATE campaign SET created_at = datetime(created_at, '-3 days')")
    proc = closedloop("status", "--store", url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "30 d running time (3 d so far)" in proc.stdout, proc.stdout  # its age
    store = Store(url, create=False)
    trials = store.trials(1)
    assert [t.number for t in awaiting_tell(store, trials)] == [2]
    store.close()


def _row(status: str, *, error: str | None = None, **fields: object) -> TrialRow:
    return TrialRow(
        id=10**6, campaign_id=1, number=1, kind="sobol", status=status, parameters={}, error=error
    ).model_copy(update=fields)


@pytest.mark.parametrize(
    ("row", "told"),
    [
        (_row("completed"), True),  # measured with no run: only `tell` records that
        (_row("failed", error=f"{OPERATOR_FAILED}vial broke"), True),
        (_row("abandoned", error=f"{WITHDRAWN}not run"), True),
        (_row("completed", run_uid="run-1"), False),  # a runner's, before schema 3
        (_row("failed", error="limit check failed, no device moved: x1 = 99"), False),
        (_row("abandoned", error="stopped before its run started"), False),
        (_row("failed", error="timed out after 5 s", run_uid="run-2"), False),
        (_row("completed", slot=0), False),  # a runner's, schema 3 and later
        (_row("completed", kind="prior"), False),
    ],
)
def test_told_trials_are_told_apart_by_what_every_schema_keeps(row: TrialRow, told: bool) -> None:
    assert is_told(row) is told  # an ended trial: no store needed


# ---------------------------------------------------------------------------- transient
@pytest.mark.parametrize(
    ("error", "transient"),
    [
        ("injected instrument fault (failure_rate=0.7)", True),
        ("timed out after 5 s; the run was aborted through the RunEngine", True),
        ("TimeoutError: no answer <- caused by ConnectionResetError: reset", True),
        ("ophyd.utils.errors.WaitTimeoutError: x1 did not reach 3", True),
        ("DeviceConnectionError: lost the connection to PV lab:T", True),
        ("the setpoints could not be checked against the limits, no device moved: ...", True),
        ("function f could not finish on the Dask cluster: KilledWorker: w1", True),
        ("injected fault: setpoints (x1=9) lie in the failing region `x1 > 8`", False),
        ("limit check failed, no device moved: x1 = 99 lies outside [0, 10]", False),
        # transient (the device missed), though learned as failed when no retry follows
        ("readback x1 = 12 lies outside its declared limits [0, 10]", True),
        ("output y is not finite (nan)", False),
        (f"{OPERATOR_FAILED}timed out after an hour", False),
        ("TimeoutError: solver gave up; raised by function measure (model.py, line 3)", False),
        ("RuntimeError: boom", False),
        (None, False),
    ],
)
def test_a_failure_is_transient_by_its_kind(error: str | None, transient: bool) -> None:
    assert transient_failure(error) is transient
    assert was_transient(_row("failed", error=error)) is transient  # NULL: read from the error
    assert was_transient(_row("failed", error=error, transient=False)) is False  # recorded


def test_transient_faults_of_a_store_before_the_column_are_learned_as_now(tmp_path: Path) -> None:
    """Before the trial's transient column, a resumed planner learned a random fault's first
    attempt as a failed point, where the live loop (and a newer store) learned nothing."""
    instrument = "failure_rate: 0.7, failing_region: 'x1 > 8', max_retries: 0, latency: 0"
    url, cid = _run(tmp_path, instrument, "{max_trials: 8, max_failures: 30}")

    def learned() -> list[tuple[int, str]]:
        store = Store(url, create=False)
        runner = Runner.from_store(store, cid)
        trials, observations = store.trials_and_observations(cid)
        store.close()
        return [
            (t.number, runner._stored_observation(t, observations.get(t.id or 0, {})).outcome)
            for t in trials
            if t.status == "failed"
        ]

    now = learned()
    assert {"abandoned", "failed"} <= {outcome for _, outcome in now}, "seed 4 draws both"
    # schema 3 before the column (and the version was not raised when it came)
    _as_written_by(tmp_path / "s.db", 3, [("trial", "transient")], [])
    store = Store(url, create=False)
    assert {t.transient for t in store.trials(cid)} == {None}
    store.close()
    assert learned() == now
