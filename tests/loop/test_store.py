"""The store's per-trial writes: what goes in comes out, once, and only from the lease holder."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event

from loop import Store, StoreError
from loop.store import LeaseClaim, LeaseLost, export_records


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    yield store
    store.close()


def _campaign(store: Store, token: str = "mine") -> int:
    claim = LeaseClaim(owner="host:1", host="host", pid=1, token=token, ttl=30)
    return store.create_campaign("c", "name: c\n", "c.yaml", 0, lease=claim)


def test_a_trial_round_trips_with_its_documents_and_outputs(store: Store) -> None:
    cid = _campaign(store)
    first = store.add_trial(cid, {"x": np.float64(0.5), "cat": "a"}, "initial", token="mine")
    second = store.add_trial(cid, {"x": 0.25, "cat": "b"}, "model", 0.2, token="mine", slot=1)
    assert (first.number, second.number) == (1, 2)
    assert first.id is not None and second.id is not None and first.id != second.id
    assert first.status == "running" and first.started_at is not None

    # Strings that contain "NaN" are text, not numbers: only the float NaN becomes null.
    body = {"data": {"y": np.float64(1.5), "z": math.nan}, "sample": "NaNoparticle"}
    for seq, name in enumerate(("start", "descriptor", "event", "stop"), start=1):
        store.add_document(first.id, seq, name, body, "run-1")
    store.finish_trial(
        first.id,
        status="completed",
        outputs={"y": 1.5, "z": math.nan, "w": -math.inf},
        readbacks={"x": np.float64(0.5001)},
        run_uid="run-1",
        error=None,
        token="mine",
    )

    rows = {t.number: t for t in store.trials(cid)}
    done = rows[1]
    assert done.status == "completed" and done.run_uid == "run-1"
    assert done.parameters == {"x": 0.5, "cat": "a"} and done.readbacks == {"x": 0.5001}
    assert done.finished_at is not None and done.kind == "initial"
    assert rows[2].status == "running" and rows[2].slot == 1 and rows[2].suggest_seconds == 0.2
    observed = store.observations(cid)[first.id]
    # NaN is NULL; an infinity (a saturated detector) is kept, so the export tells them apart
    assert observed["y"] == 1.5 and math.isnan(observed["z"]) and observed["w"] == -math.inf
    documents = store.documents(first.id)
    assert [d.name for d in documents] == ["start", "descriptor", "event", "stop"]
    assert documents[2].body == {"data": {"y": 1.5, "z": None}, "sample": "NaNoparticle"}


def test_an_outcome_is_written_once(store: Store) -> None:
    cid = _campaign(store)
    trial = store.add_trial(cid, {"x": 0.5}, "initial")
    assert trial.id is not None
    outcome = {"outputs": {"y": 1.0}, "readbacks": {}, "run_uid": None, "error": None}
    store.finish_trial(trial.id, status="failed", **outcome)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="already failed"):
        store.finish_trial(trial.id, status="completed", **outcome)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="vanished"):
        store.finish_trial(trial.id + 99, status="completed", **outcome)  # type: ignore[arg-type]
    assert store.observations(cid) == {trial.id: {"y": 1.0}}


def test_a_runner_without_the_lease_writes_nothing(store: Store) -> None:
    cid = _campaign(store, token="successor")
    with pytest.raises(LeaseLost, match="host:1"):
        store.add_trial(cid, {"x": 0.5}, "initial", token="stalled")
    trial = store.add_trial(cid, {"x": 0.5}, "initial", token="successor")
    assert trial.id is not None
    with pytest.raises(LeaseLost):
        store.finish_trial(
            trial.id,
            status="completed",
            outputs={"y": 1.0},
            readbacks={},
            run_uid=None,
            error=None,
            token="stalled",
        )
    with pytest.raises(LeaseLost):
        store.add_document(
            trial.id, 1, "start", {"uid": "u"}, "u", campaign_id=cid, token="stalled"
        )
    assert store.documents(trial.id) == []
    assert [t.status for t in store.trials(cid)] == ["running"]
    assert store.observations(cid) == {}


def test_a_takeover_waits_for_the_write_whose_lease_check_passed(tmp_path: Path) -> None:
    """The lease check holds the lease until its write commits: a runner taking the
    campaign over in between waits, then the old runner's next write is refused."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    old, new = Store(url), Store(url)
    cid = _campaign(old, token="old")
    claim = LeaseClaim(owner="other:2", host="other", pid=2, token="new", ttl=30)
    # what the takeover saw the moment it won: the insert it waited for is there (a time
    # stamp taken after the insert returned could lose to the takeover's under load)
    took: list[tuple[bool, int]] = []
    takeover = threading.Thread(
        target=lambda: took.append((new.replace_lease(cid, "old", claim), len(new.trials(cid))))
    )

    @event.listens_for(old.engine, "before_cursor_execute")
    def race(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO trial") and not takeover.is_alive():
            takeover.start()  # the other runner judged this one stale, after its check
            time.sleep(0.3)

    row = old.add_trial(cid, {"x": 1.0}, "model", token="old")
    takeover.join(15)
    assert took == [(True, 1)]  # the takeover waited for the insert's commit
    assert row.number == 1
    with pytest.raises(LeaseLost, match="held by runner other:2"):
        old.add_trial(cid, {"x": 2.0}, "model", token="old")
    assert [t.number for t in new.trials(cid)] == [1]


def test_an_outcome_is_written_once_even_when_two_writers_race(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    first, second = Store(url), Store(url)
    tid = first.add_trial(_campaign(first), {"x": 1.0}, "model").id or 0

    raced: list[bool] = []

    @event.listens_for(first.engine, "before_cursor_execute")
    def race(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("UPDATE trial") and not raced:  # this writer read "running"
            raced.append(True)
            second.finish_trial(
                tid, status="failed", outputs={"y": 2.0}, readbacks={}, run_uid=None, error="B"
            )

    with pytest.raises(StoreError, match="already failed"):
        first.finish_trial(
            tid, status="completed", outputs={"y": 1.0}, readbacks={}, run_uid=None, error=None
        )
    assert first.observations(first.campaign(1).id or 0) == {tid: {"y": 2.0}}


def test_prior_rows_go_in_with_the_campaign(store: Store) -> None:
    """Prior data is stored in the campaign's own transaction: numbered completed trials
    with their observations, and a lease stamped after them (fresh when it becomes
    visible)."""
    claim = LeaseClaim(owner="host:1", host="host", pid=1, token="mine", ttl=30)
    prior = [({"x": float(i), "cat": "a"}, {"y": i / 2, "z": 1.0}) for i in range(50)]
    prior.append(({"x": 0.5, "cat": "b"}, {}))  # no optional output measured
    cid = store.create_campaign("c", "name: c\n", "c.yaml", 0, lease=claim, prior=prior)
    trials = store.trials(cid)
    assert [t.number for t in trials] == list(range(1, 52))
    assert {(t.kind, t.status, t.run_uid) for t in trials} == {("prior", "completed", None)}
    assert trials[3].parameters == {"x": 3.0, "cat": "a"} and trials[3].readbacks == {}
    observed = store.observations(cid)
    assert observed[trials[3].id or 0] == {"y": 1.5, "z": 1.0}
    assert (trials[-1].id or 0) not in observed
    lease = store.lease(cid)
    assert lease is not None and lease.token == "mine"
    finished = trials[-1].finished_at
    assert finished is not None and lease.heartbeat >= finished.replace(tzinfo=UTC).timestamp()
    # the campaign's own trials follow them
    assert store.add_trial(cid, {"x": 1.0, "cat": "a"}, "sobol", token="mine").number == 52


def test_export_reads_trials_and_outputs_at_one_moment(tmp_path: Path) -> None:
    """A trial finishing while ``export`` reads is seen before (running, no outputs) or
    after (completed with them), never completed without its outputs (found in review)."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    reader, runner = Store(url), Store(url)
    cid = _campaign(runner)
    done = runner.add_trial(cid, {"x": 0.0}, "sobol", token="mine").id or 0
    outcome: dict[str, Any] = {"readbacks": {}, "run_uid": None, "error": None, "token": "mine"}
    runner.finish_trial(done, status="completed", outputs={"y": 1.0}, **outcome)
    racing = runner.add_trial(cid, {"x": 1.0}, "sobol", token="mine").id or 0
    finished: list[bool] = []

    @event.listens_for(reader.engine, "after_cursor_execute")
    def finish_meanwhile(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "observation" in statement and not finished:  # the export has begun reading
            finished.append(True)
            runner.finish_trial(racing, status="completed", outputs={"y": 2.0}, **outcome)

    records = {r["trial_id"]: r for r in export_records(reader, cid)}
    assert finished
    assert records[done]["outputs"] == {"y": 1.0}
    seen = (records[racing]["status"], records[racing]["outputs"])
    assert seen in (("running", {}), ("completed", {"y": 2.0})), seen
    # and afterwards the finished trial is whole
    assert export_records(reader, cid)[1]["outputs"] == {"y": 2.0}


def test_a_campaign_is_not_created_beside_a_running_namesake(store: Store) -> None:
    """Two `run`s of one file started together both passed the CLI's check, made before
    their devices were built, and both drove the instrument (found in review): the store
    checks again in the transaction that creates the campaign."""
    import functools
    import os

    from loop.lock import host_id, running_namesake
    from loop.store import CampaignLocked

    here = host_id()
    live = LeaseClaim(owner="me:1", host=here, pid=os.getpid(), token="first", ttl=30)
    first = store.create_campaign("c", "name: c\n", "c.yaml", 0, lease=live)
    check = functools.partial(running_namesake, url="sqlite:///s.db")
    second = LeaseClaim(owner="me:2", host=here, pid=os.getpid(), token="second", ttl=30)
    with pytest.raises(CampaignLocked, match=f"campaign 'c' \\(id {first}\\) is running"):
        store.create_campaign("c", "name: c\n", "c.yaml", 0, lease=second, refuse_namesake=check)
    assert [c.id for c in store.campaigns()] == [first]  # nothing of the second was kept
    other = store.create_campaign(
        "d", "name: d\n", "d.yaml", 0, lease=second, refuse_namesake=check
    )
    store.finish_campaign(first, "stopped", "test")  # no longer active: a new `c` may start
    third = LeaseClaim(owner="me:3", host=here, pid=os.getpid(), token="third", ttl=30)
    assert store.create_campaign("c", "x", "c.yaml", 0, lease=third, refuse_namesake=check) > other


# ------------------------------------------------- batches (ask/tell: suggest -n N, tell --csv)
def _dump(store: Store) -> list[str]:
    """Every row of every table, to compare a store with itself before a write."""
    import sqlite3
    from contextlib import closing

    database = store.engine.url.database
    assert database is not None
    with closing(sqlite3.connect(database)) as conn:
        return list(conn.iterdump())


def test_many_trials_are_added_at_once_numbered_on(store: Store) -> None:
    """``add_trials``: numbered on from the last trial as ``add_trial`` numbers them, with
    the budget and the campaign's state in the same transaction, under the lease."""
    from loop.store import NewTrial

    cid = _campaign(store)
    store.add_trial(cid, {"x": 0.0}, "initial", token="mine")
    new = [NewTrial({"x": np.float64(i / 4)}, "sobol", 0.5) for i in range(3)]
    with pytest.raises(LeaseLost):
        store.add_trials(cid, new, token="stalled", status=("stopped", "x"))
    assert [t.number for t in store.trials(cid)] == [1] and store.campaign(cid).status == "running"
    rows = store.add_trials(
        cid, new, token="mine", budget={"max_trials": 9}, status=("stopped", "3 pending")
    )
    assert [(r.number, r.kind, r.status, r.suggest_seconds) for r in rows] == [
        (n, "sobol", "running", 0.5) for n in (2, 3, 4)
    ]
    stored = {t.id: t for t in store.trials(cid)}
    assert [stored[r.id].parameters for r in rows] == [{"x": 0.0}, {"x": 0.25}, {"x": 0.5}]
    campaign = store.campaign(cid)
    assert (campaign.status, campaign.stop_reason, campaign.budget) == (
        "stopped",
        "3 pending",
        {"max_trials": 9},
    )
    assert store.add_trials(cid, [], token="mine") == []
    assert store.add_trial(cid, {"x": 1.0}, "model", token="mine").number == 5


def test_many_outcomes_are_written_at_once_or_not_at_all(store: Store) -> None:
    """``finish_trials``: outcomes, outputs and the campaign's state in one transaction;
    refused whole when one trial is finished already, vanished, or a lease is not held."""
    from loop.store import TrialOutcome

    cid = _campaign(store)
    ids = [store.add_trial(cid, {"x": float(i)}, "sobol").id or 0 for i in range(4)]
    store.finish_trial(ids[3], status="failed", outputs={}, readbacks={}, run_uid=None, error="e")
    outcomes = [
        TrialOutcome(ids[0], "completed", {"y": 1.0, "z": math.nan}, {"x": 0.1}),
        TrialOutcome(ids[1], "failed", {}, {}, "marked failed: vial\x00cracked"),
        TrialOutcome(ids[2], "abandoned", {}, {}, "withdrawn"),
    ]
    before = _dump(store)
    for refused, error in [
        ([*outcomes, TrialOutcome(ids[3], "completed", {"y": 2.0}, {})], "already failed"),
        ([*outcomes, TrialOutcome(ids[3] + 99, "completed", {"y": 2.0}, {})], "vanished"),
    ]:
        with pytest.raises(StoreError, match=error):
            store.finish_trials(refused, status={cid: ("completed", "done")})
        assert _dump(store) == before
    with pytest.raises(LeaseLost, match="held by runner host:1"):
        store.finish_trials(outcomes, tokens={cid: "stalled"}, status={cid: ("stopped", "x")})
    with pytest.raises(LeaseLost, match="without its lease"):
        store.finish_trials(outcomes, tokens={}, status={cid: ("stopped", "x")})
    assert _dump(store) == before
    store.finish_trials(outcomes, tokens={cid: "mine"}, status={cid: ("stopped", "0 pending")})
    trials = store.trials(cid)
    assert [t.status for t in trials] == ["completed", "failed", "abandoned", "failed"]
    assert (
        trials[0].readbacks == {"x": 0.1} and trials[1].error == "marked failed: vial\\x00cracked"
    )
    observed = store.observations(cid)
    assert observed[ids[0]]["y"] == 1.0 and math.isnan(observed[ids[0]]["z"])
    assert set(observed) == {ids[0]}
    campaign = store.campaign(cid)
    assert (campaign.status, campaign.stop_reason) == ("stopped", "0 pending")


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
@pytest.mark.parametrize(
    ("batch", "at"),
    [
        ("add_trials", "INSERT INTO trial"),
        ("finish_trials", "UPDATE trial"),
        ("finish_trials", "INSERT INTO observation"),
    ],
)
def test_a_batch_interrupted_half_way_leaves_the_store_as_it_was(
    store: Store, batch: str, at: str, stop: type[BaseException]
) -> None:
    """Ctrl-C (or any error) after some of a batch's rows were written: none are kept, and
    no lock is left behind. Writing a row per transaction left part of a `tell --csv`
    recorded, unsaid which part (found in review)."""
    from loop.store import NewTrial, TrialOutcome

    cid = _campaign(store)
    ids = [store.add_trial(cid, {"x": float(i)}, "sobol").id or 0 for i in range(4)]
    before = _dump(store)
    seen: list[str] = []

    @event.listens_for(store.engine, "after_cursor_execute")
    def interrupt(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith(at):
            seen.append(statement)
            if len(seen) == (3 if at == "UPDATE trial" else 1):  # rows are in the database
                raise stop("interrupted")

    with pytest.raises(stop, match="interrupted"):
        if batch == "add_trials":
            store.add_trials(
                cid, [NewTrial({"x": 9.0}, "sobol")] * 3, token="mine", status=("stopped", "x")
            )
        else:
            store.finish_trials(
                [TrialOutcome(i, "completed", {"y": 1.0, "z": 2.0}, {}) for i in ids],
                tokens={cid: "mine"},
                status={cid: ("completed", "x")},
            )
    event.remove(store.engine, "after_cursor_execute", interrupt)
    assert _dump(store) == before
    # and the store is writable at once, even by a store that does not wait for its lock
    # (pysqlite kept an interrupted executemany's lock until garbage collection)
    impatient = Store(str(store.engine.url))
    event.listen(impatient.engine, "connect", lambda conn, _: conn.execute("PRAGMA busy_timeout=0"))
    impatient.engine.dispose()  # its connections so far wait 10 s
    impatient.finish_trials([TrialOutcome(i, "completed", {"y": 1.0}, {}) for i in ids])
    impatient.close()
    assert [t.status for t in store.trials(cid)] == ["completed"] * 4


def _impatient(url: str) -> Store:
    """A store whose SQLite connections give up on a lock at once (not after 10 s), so a
    test sees the store's own waiting."""
    store = Store(url)
    event.listen(store.engine, "connect", lambda conn, _: conn.execute("PRAGMA busy_timeout=0"))
    store.engine.dispose()
    return store


@pytest.mark.parametrize("patience", [30.0, 1.0])
def test_a_write_waits_for_a_store_another_program_holds(
    tmp_path: Path, patience: float, caplog: pytest.LogCaptureFixture
) -> None:
    """A SQLite browser's open transaction held the store past `busy_timeout`: the runner's
    writes failed, and two measured trials were lost with the runner (found in review).
    A write now waits for the store (`write_patience`), saying why once and once more when
    it goes on; past its patience it fails as before."""
    import sqlite3

    url = f"sqlite:///{tmp_path / 's.db'}"
    store = _impatient(url)
    cid = store.create_campaign("c", "name: c\n", "c.yaml", 0)
    store.write_patience = patience
    blocker = sqlite3.connect(tmp_path / "s.db", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # another program's write lock
    release = threading.Timer(3.0, lambda: blocker.execute("ROLLBACK"))
    release.start()
    try:
        with caplog.at_level("WARNING", logger="loop.store"):
            if patience < 3:
                with pytest.raises(Exception, match="database is locked"):
                    store.add_trial(cid, {"x": 1.0}, "sobol")
            else:
                row = store.add_trial(cid, {"x": 1.0}, "sobol")
                assert row.number == 1
    finally:
        release.join()
        blocker.close()
    said = [r.getMessage() for r in caplog.records]
    assert any("is locked by another program" in m and "waiting up to" in m for m in said)
    assert any("takes writes again" in m for m in said) == (patience > 3)
    store.close()


def _count_waits(store: Store) -> list[float | None]:
    """The waits between the store's attempts at a held-up write, as they are made."""
    waits: list[float | None] = []

    class Counted(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout)
            return super().wait(timeout)

    store._give_up = Counted()
    return waits


def test_writes_held_up_share_one_patience_and_a_stop_ends_the_wait(tmp_path: Path) -> None:
    """Each write queued behind a held-up one waited its own `write_patience`: a full disk
    hung a run for 20 minutes and more instead of ending it, and Ctrl-C did not end the
    wait (found in review)."""
    import sqlite3

    url = f"sqlite:///{tmp_path / 's.db'}"
    store = _impatient(url)
    cid = store.create_campaign("c", "name: c\n", "c.yaml", 0)
    store.write_patience = 1.0
    waits = _count_waits(store)
    blocker = sqlite3.connect(tmp_path / "s.db", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")  # held up until the end of the test
    try:
        with pytest.raises(Exception, match="database is locked"):
            store.add_trial(cid, {"x": 1.0}, "sobol")  # waits out the patience
        assert waits
        waits.clear()
        with pytest.raises(Exception, match="database is locked"):
            store.add_trial(cid, {"x": 2.0}, "sobol")  # the store's patience is spent
        assert waits == []  # one attempt, no wait of its own
        store.write_patience = 600.0
        assert store.stop_waiting()  # a stop while held up: no wait, nor another attempt
        with pytest.raises(Exception, match="database is locked"):
            store.add_trial(cid, {"x": 3.0}, "sobol")
        assert waits == []
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.wait_again()  # a new session
    assert store.add_trial(cid, {"x": 4.0}, "sobol").number == 1  # the store takes it again
    assert not store.stop_waiting()  # nothing held up now: writes the store takes go on
    assert store.add_trial(cid, {"x": 5.0}, "sobol").number == 2
    store.close()


def test_a_stop_made_before_a_hold_up_is_known_still_ends_its_wait(tmp_path: Path) -> None:
    """A stop in the first seconds of a lock, before the store knew it was held up, was
    forgotten: the write then waited out its whole patience (found in review)."""
    import sqlite3

    url = f"sqlite:///{tmp_path / 's.db'}"
    store = _impatient(url)
    cid = store.create_campaign("c", "name: c\n", "c.yaml", 0)
    blocker = sqlite3.connect(tmp_path / "s.db", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        waits = _count_waits(store)
        assert not store.stop_waiting()  # not held up yet: remembered all the same
        with pytest.raises(Exception, match="database is locked"):
            store.add_trial(cid, {"x": 1.0}, "sobol")
        assert waits == []
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.close()


def test_a_name_several_campaigns_share_says_which_one_it_took(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """`status -c t` with two campaigns named t took the latest without a word (found in
    review): it still does, saying so and how to pick another."""
    first = store.create_campaign("t", "name: t\n", "t.yaml", 0)
    second = store.create_campaign("t", "name: t\n", "t.yaml", 0)
    with caplog.at_level("WARNING", logger="loop.store"):
        assert store.campaign("t").id == second
    assert (
        f"2 campaigns in {store.url} are named 't' (ids {first}, {second}): using id {second}, "
        "the latest; -c ID picks another"
    ) in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="loop.store"):
        assert store.campaign(first).id == first  # an id is one campaign: nothing to say
    assert caplog.text == ""


@pytest.mark.parametrize("existing", [False, True], ids=["created", "reopened"])
def test_every_write_is_synced_and_logged_ahead(tmp_path: Path, existing: bool) -> None:
    """What "nothing lost" rests on and a kill test cannot see (after a killed process the
    OS still writes its buffers; only a power loss drops them): every commit synced to disk
    (``synchronous=FULL``), the write-ahead log, foreign keys enforced, and a wait for a
    busy store rather than an error, on every connection of a store that writes, new or
    reopened."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    if existing:
        Store(url).close()
    store = Store(url, create=not existing)
    try:
        with store.engine.connect() as conn:
            said = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("synchronous", "journal_mode", "foreign_keys", "busy_timeout")
            }
    finally:
        store.close()
    assert said == {
        "synchronous": 2,
        "journal_mode": "wal",
        "foreign_keys": 1,
        "busy_timeout": 10000,
    }
