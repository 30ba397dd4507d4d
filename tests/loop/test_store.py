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
