"""The store on a real PostgreSQL server, as a lab shares one across machines.

Each test gets a new database on the session's throwaway server (``postgres_server`` in
``tests/conftest.py``: initdb into a temporary folder, 127.0.0.1 only, default fsync). What
differs from SQLite and is checked here: JSON that must be strict (no NaN/Infinity tokens),
row locks instead of SQLite's database lock behind the lease, connections that can be cut,
32-bit ids, errors of a server that is down or a database that does not exist, and two
runners creating the tables of a new database at once.
"""

from __future__ import annotations

import csv
import io
import json
import math
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np
import pytest
from sqlalchemy import event
from typer.testing import CliRunner

from loop import Runner, Store, StoreError, parse_campaign
from loop.cli import app
from loop.config import LoadedCampaign
from loop.lock import CampaignLease, CampaignLocked, LeaseLost, host_id
from loop.store import SCHEMA_VERSION, LeaseClaim, LeaseRow, export_records
from simulators import get_problem
from tests.cli_process import closedloop, start_cli
from tests.postgres_server import PostgresServer, free_port

ROOT = Path(__file__).parents[2]

BRANIN = """
name: pg
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, INSTRUMENT}
planner: {kind: sobol}
budget: {max_trials: MAX}
seed: 4
"""


@dataclass
class Database:
    """One empty database of the session's server."""

    server: PostgresServer
    name: str
    url: str

    def sql(self, statement: str) -> str:
        return self.server.psql(self.name, statement)


@pytest.fixture
def db(postgres_server: PostgresServer) -> Iterator[Database]:
    name = f"t_{uuid4().hex[:12]}"
    yield Database(postgres_server, name, postgres_server.create_database(name))
    postgres_server.drop_database(name)  # --force: ends a runner that is still connected


@pytest.fixture
def store(db: Database) -> Iterator[Store]:
    store = Store(db.url)
    yield store
    store.close()


def _campaign(store: Store, token: str = "mine", **kwargs: Any) -> int:
    claim = LeaseClaim(owner="host:1", host="host", pid=1, token=token, ttl=30)
    return store.create_campaign("c", "name: c\n", "c.yaml", 0, lease=claim, **kwargs)


def _loaded(
    tmp_path: Path, instrument: str = "latency: 0.0", max_trials: int = 6
) -> LoadedCampaign:
    text = BRANIN.replace("INSTRUMENT", instrument).replace("MAX", str(max_trials))
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    return parse_campaign(text, path=path, base_dir=tmp_path)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


# ---------------------------------------------------------------------------- the Store API
def test_a_campaign_round_trips_with_non_finite_values(store: Store, db: Database) -> None:
    """PostgreSQL's JSON refuses NaN and Infinity tokens (SQLite took them): every
    non-finite number in parameters, readbacks and Bluesky documents is stored as null, an
    output's NaN as NULL and its infinity as itself (both finite=false), and text that
    merely says "NaN" stays text. Its text refuses NUL characters: an error or a reason
    holding one is stored with it escaped."""
    prior = [({"x": float(i), "cat": "a"}, {"y": i / 2}) for i in range(20)]
    prior.append(({"x": 0.5, "cat": "b"}, {"y": math.inf}))
    config = "name: c\n# " + "é" * 200_000 + "\n"  # large, non-ASCII text
    claim = LeaseClaim(owner="host:1", host="host", pid=1, token="mine", ttl=30)
    cid = store.create_campaign(
        "c", config, "c.yaml", 7, lease=claim, budget={"max_trials": 30}, prior=prior
    )
    first = store.add_trial(cid, {"x": np.float64(0.5), "cat": "a"}, "sobol", token="mine", slot=1)
    assert (first.number, first.id is not None) == (22, True)
    body = {
        "data": {"y": np.float64(1.5), "z": math.nan, "w": np.inf, "v": np.array([1.0, -np.inf])},
        "sample": "NaNoparticle at Infinity",
    }
    for seq, name in enumerate(("start", "descriptor", "event", "stop"), start=1):
        store.add_document(first.id or 0, seq, name, body, "run-1")
    store.finish_trial(
        first.id or 0,
        status="completed",
        outputs={"y": 1.5, "z": math.nan, "w": -math.inf},
        readbacks={"x": np.float64(0.5001), "q": math.nan},
        run_uid="run-1",
        error=None,
        token="mine",
    )
    # PostgreSQL's text refuses NUL, which a device's raw reply in an exception can hold
    broken = store.add_trial(cid, {"x": 0.25, "cat": "b"}, "sobol", token="mine").id or 0
    outcome: dict[str, Any] = {"outputs": {}, "readbacks": {}, "run_uid": None}
    store.finish_trial(broken, status="failed", error="reply b'\x00\x07'", token="mine", **outcome)
    store.finish_campaign(cid, "failed", "interlock said \x00", token="mine")

    again = Store(db.url, create=False)  # new connections: what is on the server
    try:
        row = again.campaign(cid)
        assert (row.config_text, row.budget, row.seed) == (config, {"max_trials": 30}, 7)
        assert row.stop_reason == "interlock said \\x00"
        assert row.created_at.utcoffset() is not None  # aware, as on SQLite
        trials = again.trials(cid)
        assert [t.number for t in trials] == list(range(1, 24))
        assert trials[-1].error == "reply b'\\x00\x07'"
        done = trials[-2]
        assert (done.status, done.slot, done.run_uid) == ("completed", 1, "run-1")
        assert done.parameters == {"x": 0.5, "cat": "a"}
        assert done.readbacks == {"x": 0.5001, "q": None}
        observed = again.observations(cid)
        assert observed[done.id or 0]["y"] == 1.5
        assert math.isnan(observed[done.id or 0]["z"])
        assert observed[done.id or 0]["w"] == -math.inf  # a saturated reading is not a NaN
        assert observed[trials[20].id or 0]["y"] == math.inf  # the prior row's
        assert observed[trials[3].id or 0] == {"y": 1.5}
        docs = again.documents(done.id or 0)
        assert [d.name for d in docs] == ["start", "descriptor", "event", "stop"]
        assert docs[2].body == {
            "data": {"y": 1.5, "z": None, "w": None, "v": [1.0, None]},
            "sample": "NaNoparticle at Infinity",
        }
        records = {r["number"]: r for r in export_records(again, cid)}
        assert records[22]["readbacks"] == {"x": 0.5001, "q": None}
    finally:
        again.close()
    # strict JSON on the server: jsonb (stricter than json) parses every stored body
    assert db.sql("SELECT count(*) FROM document WHERE body::jsonb IS NOT NULL") == "4"
    assert db.sql("SELECT count(*) FROM observation WHERE NOT finite AND value IS NULL") == "1"
    assert db.sql("SELECT count(*) FROM observation WHERE NOT finite AND value IS NOT NULL") == "2"


def test_an_outcome_is_written_once_even_when_two_writers_race(db: Database) -> None:
    first, second = Store(db.url), Store(db.url)
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
    assert first.observations(1) == {tid: {"y": 2.0}}


def test_export_reads_trials_and_outputs_at_one_moment(db: Database) -> None:
    reader, runner = Store(db.url), Store(db.url)
    cid = _campaign(runner)
    racing = runner.add_trial(cid, {"x": 1.0}, "sobol", token="mine").id or 0
    outcome: dict[str, Any] = {"readbacks": {}, "run_uid": None, "error": None, "token": "mine"}
    finished: list[bool] = []

    @event.listens_for(reader.engine, "after_cursor_execute")
    def finish_meanwhile(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "observation" in statement and not finished:
            finished.append(True)
            runner.finish_trial(racing, status="completed", outputs={"y": 2.0}, **outcome)

    (record,) = export_records(reader, cid)
    assert finished
    assert (record["status"], record["outputs"]) in (("running", {}), ("completed", {"y": 2.0}))
    assert export_records(reader, cid)[0]["outputs"] == {"y": 2.0}


def test_ids_beyond_a_32_bit_integer_match_nothing(store: Store) -> None:
    """PostgreSQL's ``integer`` ids refuse to be compared with a larger number (a
    DataError, shown as "please report it"); such an id simply names no campaign."""
    _campaign(store)
    for ref in ("99999999999", 2**31):
        with pytest.raises(StoreError, match="no campaign"):
            store.campaign(ref)


# ---------------------------------------------------------------------------- opening
def test_runners_opening_a_new_database_at_once_all_succeed(db: Database) -> None:
    """Creating the tables is serialised (an advisory lock): without it, all but one of
    the runners failed with 'duplicate key value violates unique constraint'."""
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_store() -> None:
        start.wait()
        try:
            Store(db.url).close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert db.sql("SELECT value FROM closedloop_meta") == str(SCHEMA_VERSION)


def test_an_older_store_is_upgraded_and_a_newer_one_refused(db: Database) -> None:
    Store(db.url).close()
    db.sql("ALTER TABLE trial DROP COLUMN slot; UPDATE closedloop_meta SET value = '2'")
    Store(db.url, create=False).close()  # a read-only command brings it up to date
    assert db.sql("SELECT count(slot) FROM trial") == "0"
    assert db.sql("SELECT value FROM closedloop_meta") == str(SCHEMA_VERSION)
    db.sql(f"UPDATE closedloop_meta SET value = '{SCHEMA_VERSION + 1}'")
    for create in (True, False):
        with pytest.raises(StoreError, match="newer closedloop"):
            Store(db.url, create=create)
    assert db.sql("SELECT value FROM closedloop_meta") == str(SCHEMA_VERSION + 1)


def test_a_store_that_cannot_be_opened_is_one_line_naming_the_fix(
    db: Database, postgres_server: PostgresServer
) -> None:
    server = postgres_server
    down = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/lab"
    cases = {
        down: "Connection refused; check that the database server is running and the host",
        server.url("nosuch"): 'database "nosuch" does not exist; create it first (`createdb -h '
        f"127.0.0.1 -p {server.port} -U postgres nosuch`",
        f"postgresql+psycopg://nobody:s3cret@127.0.0.1:{server.port}/{db.name}": 'role "nobody"'
        " does not exist; check the user name and password",
    }
    for url, message in cases.items():
        with pytest.raises(StoreError) as info:
            Store(url)
        said = str(info.value)
        assert said.startswith("cannot open store postgresql+psycopg://"), said
        assert message in said and "\n" not in said and "s3cret" not in said, said
    # an empty database is no store for a read-only command
    with pytest.raises(StoreError, match=r"no closedloop store in .*has no campaign table"):
        Store(db.url, create=False)
    # PostgreSQL 15 lets only the owner create tables in the public schema
    db.sql("CREATE ROLE lab LOGIN")
    try:
        with pytest.raises(StoreError, match="GRANT CREATE ON SCHEMA public TO lab"):
            Store(server.url(db.name).replace("postgres@", "lab:pw@"))
    finally:
        db.sql("DROP ROLE lab")


@pytest.mark.parametrize("problem", ["server down", "no database"])
def test_the_cli_says_so_with_exit_2(
    problem: str, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    if problem == "server down":
        url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/lab"
        message = f"error: cannot open store {url}: Connection refused; check that the database"
    else:
        url = postgres_server.url("nosuch")
        message = f'{url}: database "nosuch" does not exist; create it first (`createdb -h'
    proc = closedloop("status", "--store", url, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in " ".join(proc.stderr.split()), proc.stderr
    assert "Traceback" not in proc.stderr and "please report" not in proc.stderr


def test_pooled_connections_cut_by_the_server_are_replaced(store: Store, db: Database) -> None:
    """A server restart or a firewall dropping idle connections used to fail a long
    campaign's next write; the pool now checks a connection before handing it out."""
    cid = _campaign(store)
    store.add_trial(cid, {"x": 0.0}, "sobol", token="mine")
    cut = db.sql(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        f"WHERE datname = '{db.name}' AND pid <> pg_backend_pid()"
    )
    assert int(cut) >= 1
    assert store.add_trial(cid, {"x": 1.0}, "sobol", token="mine").number == 2
    assert store.renew_lease(cid, "mine", 30.0)


# ---------------------------------------------------------------------------- leases
def test_one_runner_per_campaign_and_the_takeover_rules(tmp_path: Path, store: Store) -> None:
    cid = Runner(_loaded(tmp_path), store, max_trials=1).run().campaign_id
    store.finish_campaign(cid, "stopped", "test")
    holder = CampaignLease(store)
    holder.acquire(cid)
    with pytest.raises(CampaignLocked, match=f"being run by {holder.owner}"):
        Runner.from_store(store, cid).resume()
    holder.release()

    def foreign(host: str, pid: int, expires_in: float) -> None:
        claim = LeaseClaim(owner=f"{host}:{pid}", host=host, pid=pid, token="theirs", ttl=30)
        assert store.insert_lease(cid, claim)
        assert not store.insert_lease(cid, claim)  # the primary key refuses a second row
        with store.session() as s:
            row = s.get(LeaseRow, cid)
            assert row is not None
            row.heartbeat, row.expires = time.time() - 60, time.time() + expires_in
            s.add(row)
            s.commit()

    foreign("other-host", 4242, expires_in=30)  # live, elsewhere: respected
    with pytest.raises(CampaignLocked, match="other-host:4242"):
        Runner.from_store(store, cid).resume()
    with store.session() as s:  # expired: taken over
        lease = s.get(LeaseRow, cid)
        assert lease is not None
        lease.expires = time.time() - 1
        s.add(lease)
        s.commit()
    assert Runner.from_store(store, cid, max_trials=2).resume().completed == 2
    assert store.lease(cid) is None
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    foreign(host_id(), dead.pid, expires_in=30)  # a dead process on this host: at once
    assert Runner.from_store(store, cid, max_trials=3).resume().completed == 3


@pytest.mark.parametrize("isolation", ["server default", "serializable"])
def test_a_takeover_waits_for_the_write_whose_lease_check_passed(
    isolation: str, db: Database
) -> None:
    """On PostgreSQL the lease check locks the lease row until the write commits; the
    takeover then re-checks the token and wins. Also where the database's default
    isolation is SERIALIZABLE, under which the takeover used to fail with "could not
    serialize access" instead."""
    if isolation != "server default":
        db.sql(f"ALTER DATABASE {db.name} SET default_transaction_isolation = '{isolation}'")
    old, new = Store(db.url), Store(db.url)
    cid = _campaign(old, token="old")
    claim = LeaseClaim(owner="other:2", host="other", pid=2, token="new", ttl=30)
    # what the takeover returned, and how many trials it could see once it had: the trial
    # inserted after the lease check is there only if the takeover waited for its commit
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
    assert took == [(True, 1)]
    assert row.number == 1
    with pytest.raises(LeaseLost, match="held by runner other:2"):
        old.add_trial(cid, {"x": 2.0}, "model", token="old")
    assert [t.number for t in new.trials(cid)] == [1]


def test_a_runner_that_lost_its_lease_writes_nothing_more(tmp_path: Path, store: Store) -> None:
    cid = Runner(_loaded(tmp_path), store, max_trials=1).run().campaign_id
    stalled = CampaignLease(store, ttl=0.5, interval=0.05)
    stalled.acquire(cid)
    time.sleep(0.6)
    successor = CampaignLease(store)
    assert "heartbeat" in (successor.acquire(cid) or "")
    stalled.start_heartbeat()
    assert stalled.lost.wait(5.0)
    with pytest.raises(LeaseLost, match=successor.owner):
        store.add_trial(cid, {"x1": 0.0, "x2": 0.0}, "sobol", token=stalled.token)
    stalled.release()
    assert store.lease(cid).token == successor.token  # type: ignore[union-attr]
    successor.release()


# ---------------------------------------------------------------------------- end to end
def test_two_slots_write_at_once(tmp_path: Path, store: Store) -> None:
    loaded = _loaded(tmp_path, "latency: 0.1, count: 2", max_trials=12)
    summary = Runner(loaded, store).run()
    assert (summary.status, summary.completed) == ("completed", 12)
    trials = store.trials(summary.campaign_id)
    assert [t.number for t in trials] == list(range(1, 13))
    assert {t.slot for t in trials} == {0, 1}
    edges = sorted(
        [(t.started_at, 1) for t in trials] + [(t.finished_at, -1) for t in trials],
        key=lambda e: (e[0], e[1]),  # type: ignore[arg-type,return-value]
    )
    in_flight = [sum(step for _, step in edges[: i + 1]) for i in range(len(edges))]
    assert max(in_flight) == 2  # the two slots ran, and wrote, at the same time
    observations = store.observations(summary.campaign_id)
    branin = get_problem("branin")
    for t in trials:
        docs = store.documents(t.id or 0)
        assert [d.name for d in docs] == ["start", "descriptor", "event", "stop"]
        assert docs[0].body["trial_id"] == t.id
        want = branin.evaluate(t.readbacks or {})["y"]
        assert observations[t.id or 0]["y"] == pytest.approx(want, rel=1e-12)


@pytest.mark.slow
def test_run_status_export_report(db: Database, tmp_path: Path) -> None:
    """The README's commands on a server store: a real ``closedloop run`` process (BoTorch
    after the Sobol design), then the reading commands."""
    run = closedloop(
        "run", str(ROOT / "campaigns" / "branin.yaml"), "--store", db.url, "--max-trials", "6",
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "max_trials reached (6 completed trials)" in run.stdout
    assert f"store {db.url}" in run.stdout

    status = _cli("status", "--store", db.url)
    assert status.exit_code == 0, status.output
    assert "branin" in status.output and "6 completed" in status.output
    exported = _cli("export", "--store", db.url, "--format", "csv")
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == 6 and all(r["status"] == "completed" and r["run_uid"] for r in rows)
    assert [r["kind"] for r in rows] == ["initial"] * 5 + ["model"]
    records = json.loads(_cli("export", "--store", db.url, "-f", "json").stdout)
    assert [r["number"] for r in records] == list(range(1, 7))
    assert all(set(r["outputs"]) == {"y"} for r in records)
    png = tmp_path / "report.png"
    report = _cli("report", "--store", db.url, "-o", str(png))
    assert report.exit_code == 0, report.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _completed(url: str) -> int:
    try:
        store = Store(url, create=False)
    except StoreError:  # the runner has not created the tables yet
        return 0
    try:
        return sum(
            t.status == "completed" for c in store.campaigns() for t in store.trials(c.id or 0)
        )
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_a_stopped_or_killed_run_resumes(sig: signal.Signals, db: Database, tmp_path: Path) -> None:
    """A runner process stopped with Ctrl-C (clean stop) or killed (its connection dropped
    mid-transaction): the server keeps every committed trial, another runner is refused
    while it runs, and ``resume`` finishes the campaign."""
    (tmp_path / "c.yaml").write_text(
        BRANIN.replace("INSTRUMENT", "latency: 0.2").replace("MAX", "200")
    )
    proc = start_cli(["run", "c.yaml", "--store", db.url, "-q"], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while _completed(db.url) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no 2 completed trials within 60 s"
            time.sleep(0.1)
        store = Store(db.url, create=False)
        with pytest.raises(CampaignLocked, match=f":{proc.pid} "):
            Runner.from_store(store).resume()
        status = _cli("status", "--store", db.url)  # a reader beside the live runner
        assert status.exit_code == 0 and "pg (id 1)" in status.output, status.output
    finally:
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    row = store.campaign()
    if sig == signal.SIGINT:
        assert proc.returncode == 130, (out, err)
        assert f"closedloop resume --store {db.url}" in err
        assert (row.status, row.stop_reason) == ("stopped", "stopped by Ctrl-C")
        assert store.lease(row.id or 0) is None
    else:
        assert row.status == "running"  # nobody could write that it stopped
    done = sum(t.status == "completed" for t in store.trials(row.id or 0))
    resumed = _cli("resume", "--store", db.url, "--max-trials", str(done + 2), "-q")
    assert resumed.exit_code == 0, resumed.output
    trials = store.trials(row.id or 0)
    assert store.campaign(row.id).status == "completed"
    assert [t.number for t in trials] == list(range(1, len(trials) + 1))
    assert {t.status for t in trials} <= {"completed", "abandoned"}
    assert sum(t.status == "completed" for t in trials) == done + 2
    observations = store.observations(row.id or 0)
    branin = get_problem("branin")
    for t in trials:
        if t.status == "completed":
            want = branin.evaluate(t.readbacks or {})["y"]
            assert observations[t.id or 0]["y"] == pytest.approx(want, rel=1e-12)
    store.close()


MANUAL = """\
name: bench
parameters:
  - {name: temperature, type: float, bounds: [30, 110]}
  - {name: catalyst, type: choice, values: [A, B]}
objectives: [{name: yield, goal: maximize}]
instrument: manual
planner: {kind: sobol}
budget: {max_trials: 3}
seed: 4
"""


def test_suggest_and_tell(db: Database, tmp_path: Path) -> None:
    (tmp_path / "bench.yaml").write_text(MANUAL)
    out = _cli("suggest", str(tmp_path / "bench.yaml"), "--store", db.url, "-n", "3", "--json")
    assert out.exit_code == 0, out.output
    ids = [t["trial_id"] for t in json.loads(out.stdout)["trials"]]
    assert len(ids) == 3
    told = _cli("tell", "--store", db.url, str(ids[0]), "yield=0.4", "--actual", "temperature=50")
    assert told.exit_code == 0, told.output
    failed = _cli("tell", "--store", db.url, str(ids[1]), "--fail", "pump leaked")
    assert failed.exit_code == 0, failed.output
    twice = _cli("tell", "--store", db.url, str(ids[0]), "yield=0.5")
    assert twice.exit_code == 2 and "already completed" in twice.output
    assert _cli("tell", "--store", db.url, str(ids[2]), "yield=0.7").exit_code == 0
    store = Store(db.url, create=False)
    try:
        records = export_records(store, store.campaign().id or 0)
    finally:
        store.close()
    assert [r["status"] for r in records] == ["completed", "failed", "completed"]
    assert records[0]["outputs"] == {"yield": 0.4}
    assert records[0]["readbacks"]["temperature"] == 50.0
    assert records[1]["error"] == "marked failed by the operator: pump leaked"


@pytest.mark.slow
def test_a_server_lost_mid_run_ends_the_command_with_one_message(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """The server goes away while a campaign runs (a restart, a network cut): one line
    says so and how to continue, exit 1, no traceback, no "please report it"."""
    (tmp_path / "c.yaml").write_text(
        BRANIN.replace("INSTRUMENT", "latency: 0.2").replace("MAX", "200")
    )
    own = PostgresServer().start()  # a server of its own: this test stops it
    try:
        url = own.create_database("lost")
        proc = start_cli(["run", "c.yaml", "--store", url, "-q"], cwd=tmp_path)
        deadline = time.monotonic() + 60
        while _completed(url) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no 2 completed trials within 60 s"
            time.sleep(0.1)
    finally:
        own.stop()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (out, err)
    assert "error: lost the store: " in err and "closedloop resume" in err, err
    assert "Traceback" not in err and "please report" not in err, err
