"""A store file deleted or replaced under a running campaign: the runner stops and saves it.

Found in review: after ``rm closedloop.db`` mid-run, SQLite went on writing to the unlinked
file, the run ended "completed", and every trial was gone with the process. Real runner,
RunEngine and SQLite; the file is deleted from the listener, between two trials.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from loop import Runner, Store, parse_campaign
from loop.runner import TrialReport
from loop.store import StoreGone
from planners import Point

CAMPAIGN = """
name: deleted
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, latency: 0.05}
planner: {kind: sobol}
budget: {max_trials: 40}
seed: 3
"""


class AfterTrial:
    """Runs ``action`` once, when trial ``number`` has finished."""

    def __init__(self, number: int, action: Callable[[], object]) -> None:
        self.number, self.action, self.done = number, action, False

    def trial_started(self, number: int, parameters: Point) -> None:
        pass

    def trial_finished(self, report: TrialReport) -> None:
        if report.number >= self.number and not self.done:
            self.done = True
            self.action()


def _runner(tmp_path: Path, db: Path, listener: AfterTrial, lease_ttl: float = 30.0) -> Runner:
    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN)
    loaded = parse_campaign(CAMPAIGN, path=path, base_dir=tmp_path)
    return Runner(loaded, Store(f"sqlite:///{db}"), listener=listener, lease_ttl=lease_ttl)


def _rescued(message: str) -> Path:
    found = re.search(r"is saved in (\S+)\. ", message)
    assert found, message
    return Path(found.group(1))


def test_a_deleted_store_stops_the_campaign_and_is_saved_whole(tmp_path: Path) -> None:
    db = tmp_path / "runs" / "x.db"
    runner = _runner(tmp_path, db, AfterTrial(3, db.unlink), lease_ttl=0.5)
    with pytest.raises(StoreGone, match="was deleted or moved while the campaign ran") as caught:
        runner.run()
    runner.store.close()
    copy = _rescued(str(caught.value))
    assert copy.parent == db.parent and copy.name.startswith("x.rescued-")
    assert f"closedloop resume --store sqlite:///{copy} -c 1" in str(caught.value)

    saved = Store(f"sqlite:///{copy}", create=False)
    (campaign,) = saved.campaigns()
    assert campaign.status == "stopped" and "was deleted" in (campaign.stop_reason or "")
    trials = saved.trials(campaign.id)  # type: ignore[arg-type]
    completed = [t for t in trials if t.status == "completed"]
    # Stopped within a heartbeat or two of the deletion (0.1 s apart), not run to the end.
    assert 3 <= len(completed) < 40
    assert all(t.status in ("completed", "abandoned") for t in trials)
    assert {t.id for t in completed} == set(saved.observations(campaign.id))  # type: ignore[arg-type]
    for trial in completed:  # every measured trial with its whole run
        assert [d.name for d in saved.documents(trial.id)] == [  # type: ignore[arg-type]
            "start",
            "descriptor",
            "event",
            "stop",
        ]
    saved.close()
    # The deleted file's log is gone too: a new store at the path starts empty.
    assert not (db.parent / "x.db-wal").exists()
    fresh = Store(f"sqlite:///{db}")
    assert fresh.campaigns() == []
    fresh.close()


def test_a_store_deleted_in_the_last_trial_is_saved_too(tmp_path: Path) -> None:
    """The heartbeat (every 6 s by default) may not see it: the end checks once more."""
    db = tmp_path / "x.db"

    def delete_on_last() -> None:
        db.unlink()

    runner = _runner(tmp_path, db, AfterTrial(40, delete_on_last))
    with pytest.raises(StoreGone, match="was deleted or moved while the campaign ran") as caught:
        runner.run()
    runner.store.close()
    saved = Store(f"sqlite:///{_rescued(str(caught.value))}", create=False)
    (campaign,) = saved.campaigns()
    assert campaign.status == "completed"
    assert sum(t.status == "completed" for t in saved.trials(campaign.id)) == 40  # type: ignore[arg-type]
    saved.close()


def test_a_store_replaced_by_another_file_is_saved_and_the_other_left_alone(
    tmp_path: Path,
) -> None:
    db = tmp_path / "x.db"
    other = tmp_path / "other.db"
    Store(f"sqlite:///{other}").close()

    def replace() -> None:
        shutil.copy(other, tmp_path / "incoming.db")
        os.replace(tmp_path / "incoming.db", db)

    runner = _runner(tmp_path, db, AfterTrial(2, replace), lease_ttl=0.5)
    with pytest.raises(StoreGone, match="was replaced while the campaign ran") as caught:
        runner.run()
    runner.store.close()
    saved = Store(f"sqlite:///{_rescued(str(caught.value))}", create=False)
    assert [c.name for c in saved.campaigns()] == ["deleted"]
    saved.close()
    assert Store(f"sqlite:///{db}", create=False).campaigns() == []


def test_no_new_connection_opens_a_file_that_replaced_the_store(tmp_path: Path) -> None:
    """A pooled connection opened after the store file was replaced opened the new file,
    read the old one's write-ahead log, still at the path, as its own, and wrote the
    campaign into the other file (the test above failed 1 run in 31, by timing). Now a new
    connection is refused, the store is still saved whole, and the other file is left as
    it was."""
    db = tmp_path / "x.db"
    other = tmp_path / "other.db"
    Store(f"sqlite:///{other}").close()
    store = Store(f"sqlite:///{db}")
    try:
        store.watch_file()
        cid = store.create_campaign("kept", "name: kept\n", "c.yaml", 0)
        shutil.copy(other, tmp_path / "incoming.db")
        os.replace(tmp_path / "incoming.db", db)
        store.engine.dispose()  # every pooled connection gone: the next one is new
        with pytest.raises(StoreGone, match="was replaced while the campaign ran; no new"):
            store.campaigns()
        copy = store.rescue()
    finally:
        store.close()
    saved = Store(f"sqlite:///{copy}", create=False)
    assert [c.id for c in saved.campaigns()] == [cid]
    saved.close()
    replacing = Store(f"sqlite:///{db}", create=False)
    assert replacing.campaigns() == []
    replacing.close()


def test_no_new_connection_makes_an_empty_store_where_the_file_was_deleted(
    tmp_path: Path,
) -> None:
    """A connection opened after the store file was deleted made a new, empty store at the
    path, which a later `resume --store` found, and the deletion read as a replacement
    (review I). Nothing is created; the store is still saved whole."""
    db = tmp_path / "x.db"
    store = Store(f"sqlite:///{db}")
    try:
        store.watch_file()
        cid = store.create_campaign("kept", "name: kept\n", "c.yaml", 0)
        db.unlink()
        store.engine.dispose()
        with pytest.raises(StoreGone, match="was deleted or moved while the campaign ran"):
            store.campaigns()
        assert not db.exists()
        copy = store.rescue()
    finally:
        store.close()
    assert not db.exists()
    saved = Store(f"sqlite:///{copy}", create=False)
    assert [c.id for c in saved.campaigns()] == [cid]
    saved.close()
