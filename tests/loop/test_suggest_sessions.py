"""Who proposed which trials: every ``suggest`` that stores proposals is a session, and a
campaign's first session is written in the transaction that creates it (``loop.provenance``,
``Store.create_campaign(events=...)``, ``Store.add_trials(events=...)``).

Real parts: the CLI in a subprocess, the ask/tell Python API on a real SQLite store. A write
that fails half-way is a real SQLite failure: a trigger that aborts every insert into
``campaign_event``, as a full disk or a refused write would, between a campaign (or a
batch of proposals) and the session that says who made it.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from loop import Runner, Store, load_campaign
from loop.asktell import Result, open_campaign, suggest, tell
from loop.provenance import session_line, user_at_host
from tests.cli_process import closedloop

ASKED = """\
name: asked
parameters:
  - {name: x, type: float, bounds: [0, 1]}
objectives: [{name: y, goal: maximize}]
instrument: manual
planner: {kind: random}
budget: {max_trials: 3}
seed: 7
"""

BRANIN = """\
name: ran
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin}
planner: {kind: sobol}
budget: {max_trials: 2}
seed: 3
"""

FUNCTION = """\
name: fn
parameters:
  - {name: t, type: float, bounds: [0, 1]}
objectives: [{name: y, goal: maximize}]
instrument: {function: "model.py:measure", outputs: [y]}
planner: {kind: random}
budget: {max_trials: 2}
seed: 5
"""

#: Every insert into ``campaign_event`` fails, as a write refused by the database would.
NO_EVENTS = (
    "CREATE TRIGGER no_events BEFORE INSERT ON campaign_event "
    "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
)


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def _sql(store: Store, statement: str) -> None:
    with sqlite3.connect(store.url.removeprefix("sqlite:///")) as db:
        db.execute(statement)


def test_every_suggest_that_stores_proposals_is_a_session(tmp_path: Path) -> None:
    """Found in review, carried for sessions: only the ``suggest`` that created a campaign
    was recorded; an auditor could not tell who proposed any later trial, nor who raised
    the budget with ``suggest --max-trials``."""
    _file(tmp_path, ASKED)
    url = f"sqlite:///{tmp_path / 's.db'}"

    def ask(*args: str) -> int:
        proc = closedloop("suggest", "--store", url, *args, cwd=tmp_path)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc.returncode

    assert ask("c.yaml", "-n", "1") == 0  # creates the campaign: its session
    assert ask("-c", "1", "-n", "2") == 0  # a session
    assert ask("-c", "1", "-n", "1") == 2  # budget full: refused, stores nothing, no session
    assert ask("-c", "1", "-n", "1", "--max-trials", "4") == 0  # a session, with its override

    db = Store(url, create=False)
    sessions = db.sessions(1)
    assert [s["command"] for s in sessions] == ["suggest"] * 3
    assert [s["seed_from"] for s in sessions] == ["file", "stored", "stored"]
    # the boundaries: trial 1 by the first, 2-3 by the second, 4 by the third
    assert [s["trials_so_far"] for s in sessions] == [0, 1, 3]
    assert [s["override"] for s in sessions] == [{}, {}, {"max_trials": 4}]
    assert sessions[2]["budget"]["max_trials"] == 4 and sessions[2]["seed"] == 7
    assert sessions[1]["argv"][-4:] == ["-c", "1", "-n", "2"]
    assert {s["by"] for s in sessions} == {user_at_host()}
    assert all(s["versions"]["closedloop"] for s in sessions)
    # a later one written with its proposals, in their transaction: at the same moment
    started = {t.number: t.started_at for t in db.trials(1) if t.started_at is not None}
    at = [datetime.fromisoformat(s["at"]) for s in sessions]
    assert at[1:] == [started[n].replace(tzinfo=at[0].tzinfo) for n in (2, 4)]

    status = closedloop("status", "--store", url, cwd=tmp_path, wide=True)
    (line,) = [ln for ln in status.stdout.splitlines() if ln.startswith("sessions: ")]
    assert line.startswith("sessions: 3 (suggest 20")
    assert "suggest after 1 trials " in line
    assert line.endswith(
        f"suggest after 3 trials {sessions[2]['at'][:16].replace('T', ' ')} "
        f"UTC by {user_at_host()} (max_trials 4))"
    )
    as_json = json.loads(closedloop("status", "--json", "--store", url, cwd=tmp_path).stdout)
    assert [s["trials_so_far"] for s in as_json["sessions"]] == [0, 1, 3]


def test_a_suggest_records_its_session_with_its_proposals_or_neither(tmp_path: Path) -> None:
    """The session goes in the proposals' transaction (``Store.add_trials(events=...)``): a
    failed write of it leaves no proposal that no session says who made."""
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    runner, created = open_campaign(store, load_campaign(_file(tmp_path, ASKED)), None)
    assert created
    (first,) = suggest(runner, 1)  # the creating process: its creation's session says it
    assert len(store.sessions(1)) == 1
    _sql(store, NO_EVENTS)
    again, _ = open_campaign(store, None, "asked")
    with pytest.raises(IntegrityError, match="disk I/O error"):
        suggest(again, 2)
    assert [t.number for t in store.trials(1)] == [first.number]  # nothing stored
    assert store.lease(1) is None  # and the campaign free for the next command
    _sql(store, "DROP TRIGGER no_events")
    assert [p.number for p in suggest(again, 2)] == [2, 3]
    assert [s["trials_so_far"] for s in store.sessions(1)] == [0, 1]
    store.close()


def test_a_campaign_is_created_with_its_first_session_or_not_at_all(tmp_path: Path) -> None:
    """Found in review, carried for sessions: the campaign was committed, then its session
    in a second transaction; a crash or a failed write between the two left a campaign
    that no record said who created, from where, with which seed or code. Both ways a
    campaign is created: ``run`` and ``suggest FILE``."""
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    _sql(store, NO_EVENTS)
    with pytest.raises(IntegrityError, match="disk I/O error"):
        Runner(load_campaign(_file(tmp_path, BRANIN)), store).run()
    with pytest.raises(IntegrityError, match="disk I/O error"):
        open_campaign(store, load_campaign(_file(tmp_path, ASKED)), None)
    assert store.campaigns() == []
    _sql(store, "DROP TRIGGER no_events")

    ran = Runner(load_campaign(_file(tmp_path, BRANIN)), store).run()
    runner, _ = open_campaign(store, load_campaign(_file(tmp_path, ASKED)), None)
    (made,) = store.sessions(ran.campaign_id or 0)
    assert (made["command"], made["trials_so_far"], made["seed_from"]) == ("run", 0, "file")
    (asked,) = store.sessions(runner.campaign_id or 0)
    assert (asked["command"], asked["trials_so_far"]) == ("suggest", 0)
    # the session is the campaign's creation: the same transaction, the same moment
    created = store.campaign(runner.campaign_id).created_at.isoformat()[:16]
    assert asked["at"][:16] == created
    store.close()


def test_a_long_ask_tell_campaign_keeps_its_sessions_on_one_status_line(tmp_path: Path) -> None:
    """One session per ``suggest``: the ``status`` line stays one line, the consecutive
    suggests of one person one part of it."""
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    text = ASKED.replace("max_trials: 3", "max_trials: 100")
    runner, _ = open_campaign(store, load_campaign(_file(tmp_path, text)), None)
    for _ in range(12):
        (p,) = suggest(runner, 1)
        tell(store, [Result(p.trial_id, {"y": 0.5})], {})
    assert len(store.sessions(1)) == 12  # the creating one, then 11
    store.close()
    status = closedloop("status", "--store", store.url, cwd=tmp_path, wide=True)
    (line,) = [ln for ln in status.stdout.splitlines() if "sessions" in ln]
    me = user_at_host()
    assert line.startswith("sessions: 12 (suggest 20") and "; 11 suggests 20" in line
    assert line.endswith(f" UTC by {me})") and line.count(me) == 2, line


def test_a_session_line_of_200_suggests_names_the_other_sessions_among_them() -> None:
    def session(command: str, by: str, minute: int, **more: object) -> dict[str, object]:
        at = f"2026-12-05T{10 + minute // 60:02d}:{minute % 60:02d}:00+00:00"
        seed_from = "file" if minute == 0 else "stored"
        return {"command": command, "by": by, "at": at, "seed_from": seed_from, **more}

    sessions = [session("suggest", "ada@lab", 0)]
    sessions += [session("suggest", "ada@lab", m, trials_so_far=m) for m in range(1, 120)]
    sessions += [session("resume", "bob@lab2", 120, trials_so_far=120)]
    sessions += [session("suggest", "ada@lab", m, trials_so_far=m) for m in range(121, 200)]
    line = session_line(sessions)
    assert line == (
        "sessions: 200 (suggest 2026-12-05 10:00 UTC by ada@lab; 119 suggests 2026-12-05 10:01 "
        "to 2026-12-05 11:59 UTC by ada@lab; resume after 120 trials 2026-12-05 12:00 UTC by "
        "bob@lab2; 79 suggests 2026-12-05 12:01 to 2026-12-05 13:19 UTC by ada@lab)"
    )
    # another person's suggest, and one that raised the budget, are parts of their own
    sessions[50] = {**sessions[50], "by": "eve@lab"}
    sessions[60] = {**sessions[60], "override": {"max_trials": 300}}
    line = session_line(sessions) or ""
    assert "... 4 more" in line and "; resume after 120 trials " in line, line
    assert "by eve@lab" not in line and len(line) < 400  # among the 4 left out


def test_a_suggest_session_names_no_function_file(tmp_path: Path) -> None:
    """A ``suggest`` measures nothing: its session pins no ``function:`` file, so a file
    edited before it is still recorded as changed by the ``resume`` that measures with it
    (a pin in the suggest's session would have hidden the change)."""
    (tmp_path / "model.py").write_text("def measure(p):\n    return {'y': p['t']}\n")
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    cid = Runner(load_campaign(_file(tmp_path, FUNCTION)), store).run().campaign_id or 0
    (tmp_path / "model.py").write_text("def measure(p):\n    return {'y': 2 * p['t']}\n")
    runner, _ = open_campaign(store, None, "fn", max_trials=3)
    (p,) = suggest(runner, 1)
    tell(store, [Result(p.trial_id, abandoned="not run")], {})
    Runner.from_store(store, cid, max_trials=3).resume()
    run, asked, resumed = store.sessions(cid)
    assert "function" in run and "function" not in asked and "function" in resumed
    (change,) = store.function_changes(cid)
    assert (change["trials_so_far"], change["first_trial"]) == (3, 4)
    store.close()


def test_the_creating_runner_after_another_suggest_begins_a_session_of_its_own(
    tmp_path: Path,
) -> None:
    """The first ``suggest`` of the runner that created the campaign is the creation's
    session only while nobody proposed since; after another process's, it is one more."""
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    creator, _ = open_campaign(store, load_campaign(_file(tmp_path, ASKED)), None)
    other, _ = open_campaign(store, None, "asked")
    suggest(other, 1)
    suggest(creator, 1)
    assert [s["trials_so_far"] for s in store.sessions(1)] == [0, 0, 1]
    store.close()
