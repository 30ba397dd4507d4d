"""A store written before trials recorded the order they ended in (store schema 3).

Opening it brings it to schema 4 in place: the ``ended`` column and its index are added, the
rows already ended keep NULL and their order by ``finished_at`` (as it was read before), and
every trial that ends from then on is numbered after them, whatever the clock says. The
version is raised because a schema-3 writer would break that reading (NULL for trials that
ended last): such a closedloop refuses the store, as it refuses any newer one
(``tests/loop/test_store_errors.py``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest

import loop.store as store_module
from loop import Runner, Store, parse_campaign
from loop.config import LoadedCampaign
from loop.runner import _ended_order
from loop.store import SCHEMA_VERSION
from tests.postgres_server import PostgresServer

CAMPAIGN = """\
name: old-order
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, latency: 0}
planner: {kind: sobol}
budget: {max_trials: 4}
seed: 3
"""


def _loaded(tmp_path: Path) -> LoadedCampaign:
    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN)
    return parse_campaign(CAMPAIGN, path=path, base_dir=tmp_path)


def _as_schema_3(db: Path) -> None:
    """Put ``db`` in the layout closedloop's store schema 3 wrote: no ``ended`` (nor its
    index), version 3."""
    with sqlite3.connect(db) as conn:
        conn.execute("DROP INDEX ix_trial_campaign_ended")
        conn.execute("ALTER TABLE trial DROP COLUMN ended")
        conn.execute("UPDATE closedloop_meta SET value = '3' WHERE key = 'schema_version'")
    conn.close()


def _layout(db: Path) -> tuple[str, bool, bool]:
    with sqlite3.connect(db) as conn:
        (version,) = conn.execute("SELECT value FROM closedloop_meta").fetchone()
        columns = {row[1] for row in conn.execute("PRAGMA table_info(trial)")}
        indexes = {row[1] for row in conn.execute("PRAGMA index_list(trial)")}
    conn.close()
    return version, "ended" in columns, "ix_trial_campaign_ended" in indexes


def test_schema_4_records_the_order_trials_ended_in() -> None:
    """The column came with a new version (see ``loop.store.SCHEMA_VERSION``): the tests
    below would pass with 3 too, as they read the version the store writes."""
    assert SCHEMA_VERSION == 4


def test_a_schema_3_store_is_upgraded_and_its_trials_keep_their_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "s.db"
    store = Store(f"sqlite:///{db}")
    cid = Runner(_loaded(tmp_path), store).run().campaign_id or 0
    store.close()
    _as_schema_3(db)
    assert _layout(db) == ("3", False, False)
    # a read-only command upgrades it, as any other command does
    Store(f"sqlite:///{db}", read_only=True).close()
    assert _layout(db) == (str(SCHEMA_VERSION), True, True)
    store = Store(f"sqlite:///{db}")
    assert [(t.number, t.ended) for t in store.trials(cid)] == [(n, None) for n in range(1, 5)]
    # The clock steps back a day before the campaign is extended: the trials that end now
    # read as older than those before the upgrade, and still come after them.
    real_utcnow = store_module.utcnow
    monkeypatch.setattr(store_module, "utcnow", lambda: real_utcnow() - timedelta(days=1))
    summary = Runner.from_store(store, cid, max_trials=7).resume()
    assert summary.completed == 7
    trials = store.trials(cid)
    assert [(t.number, t.ended) for t in trials] == [
        *((n, None) for n in range(1, 5)),
        *((n, n - 4) for n in range(5, 8)),
    ]
    before, after = [
        [t.finished_at or datetime.max for t in part] for part in (trials[:4], trials[4:])
    ]
    assert max(after) < min(before)
    assert [t.number for t in _ended_order(trials)] == list(range(1, 8))
    store.close()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"t_{uuid4().hex[:12]}"
    yield postgres_server.create_database(name)
    postgres_server.drop_database(name)


def test_a_schema_3_database_on_a_server_is_upgraded(
    pg_url: str, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    store = Store(pg_url)
    cid = Runner(_loaded(tmp_path), store).run().campaign_id or 0
    store.close()
    name = pg_url.rsplit("/", 1)[1]
    postgres_server.psql(
        name,
        "DROP INDEX ix_trial_campaign_ended; ALTER TABLE trial DROP COLUMN ended; "
        "UPDATE closedloop_meta SET value = '3'",
    )
    store = Store(pg_url, create=False)
    assert postgres_server.psql(name, "SELECT value FROM closedloop_meta") == str(SCHEMA_VERSION)
    indexes = postgres_server.psql(name, "SELECT indexname FROM pg_indexes")
    assert "ix_trial_campaign_ended" in indexes
    Runner.from_store(store, cid, max_trials=6).resume()
    assert [(t.number, t.ended) for t in store.trials(cid)] == [
        *((n, None) for n in range(1, 5)),
        (5, 1),
        (6, 2),
    ]
    store.close()
