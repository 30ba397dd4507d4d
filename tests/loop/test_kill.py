"""SIGKILL the runner at random moments, resume each time: nothing lost, nothing run twice.

Each life is ``python -m loop.cli run|resume`` in a subprocess. It is killed a seeded random
0.3-2 s after it took the campaign's lease (so every life has passed its ~4 s of imports and
can make progress). Half the lives are killed at that moment, which mostly lands in a run
(the instrument's latency dominates a trial); the other half are killed just after the next
run closes (its stop document committed), which lands in the outcome's write, the planner's
next proposal, the next trial's row, or the start of the next run. After ``KILLS`` kills one
last ``resume`` runs to the end of the budget.

A run that closes needs at least ``LATENCY`` s, so a life closes at most
``floor(delay / LATENCY)`` runs, plus one if it is killed after the next stop document; the
budget is set above that sum so that no life can finish the campaign before its kill.
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path

import pytest

from simulators import get_problem
from tests.cli_process import Process, run_cli, start_cli

KILLS = 20
MAX_TRIALS = 30
LATENCY = 1.0
SEED = 20240605

CAMPAIGN = f"""
name: kill-test
parameters:
  - {{name: x1, type: float, bounds: [-5, 10]}}
  - {{name: x2, type: float, bounds: [0, 15]}}
objectives: [{{name: y, goal: minimize}}]
instrument: {{simulator: branin, noise: 0.0, latency: {LATENCY}}}
planner: {{kind: sobol}}
budget: {{max_trials: {MAX_TRIALS}}}
seed: 7
"""


def _query(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # no tables yet
            return []


def _wait_for_lease(db: Path, proc: Process, timeout: float = 60) -> None:
    """Until the child holds the campaign (its imports are done and it is about to work)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"life exited early ({proc.returncode}): {out!r} {err!r}")
        if db.exists() and (proc.pid,) in _query(db, "SELECT pid FROM lease"):
            return
        time.sleep(0.02)
    raise AssertionError("the runner did not take the lease in time")


def _last_stop(db: Path) -> int:
    rows = _query(db, "SELECT max(id) FROM document WHERE name = 'stop'")
    return (rows[0][0] or 0) if rows else 0


def _wait_for_next_stop(db: Path, after: int, proc: Process) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if _last_stop(db) > after:
            return
        time.sleep(0.005)
    raise AssertionError("no run closed within 30 s")


def _in_flight(db: Path) -> str:
    """Where the kill caught the store: what the unfinished trial, if any, had written."""
    rows = _query(db, "SELECT id FROM trial WHERE status = 'running'")
    if not rows:
        return "no trial in flight"
    names = [n for (n,) in _query(db, f"SELECT name FROM document WHERE trial_id = {rows[0][0]}")]
    if "stop" in names:
        return "run closed, outcome not yet written"
    if names:
        return "mid-run"
    return "trial row written, run not started"


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    delays = [rng.uniform(0.3, 2.0) for _ in range(KILLS)]
    at_boundary = [i % 2 == 1 for i in range(KILLS)]
    jitter = [rng.uniform(0.0, 0.03) for _ in range(KILLS)]
    # precondition: no life can complete the budget before it is killed
    assert sum(int(d // LATENCY) for d in delays) + sum(at_boundary) < MAX_TRIALS
    (tmp_path / "kill.yaml").write_text(CAMPAIGN)
    db = tmp_path / "kill.db"
    url = f"sqlite:///{db}"
    started = time.monotonic()

    caught: Counter[str] = Counter()
    for delay, boundary, extra in zip(delays, at_boundary, jitter, strict=True):
        started_campaign = bool(_query(db, "SELECT id FROM campaign")) if db.exists() else False
        command = ["resume", "--store", url] if started_campaign else ["run", "kill.yaml"]
        if not started_campaign:
            command += ["--store", url]
        proc = start_cli([*command, "-q"], cwd=tmp_path)
        _wait_for_lease(db, proc)
        time.sleep(delay)
        if boundary:
            _wait_for_next_stop(db, _last_stop(db), proc)
            time.sleep(extra)
        assert proc.poll() is None, "a life finished the budget before its kill"
        proc.kill()
        proc.communicate()  # reaps it (a dead pid frees its lease) and closes the pipes
        caught[_in_flight(db)] += 1

    final = run_cli(["resume", "--store", url], cwd=tmp_path, timeout=180)
    assert final.returncode == 0, (final.stdout, final.stderr)
    elapsed = time.monotonic() - started
    print(f"\n{KILLS} kills in {elapsed:.0f} s; the store was caught with: {dict(caught)}")

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    ((campaign_id, status, reason),) = _query(db, "SELECT id, status, stop_reason FROM campaign")
    assert status == "completed", reason
    assert _query(db, "SELECT * FROM lease") == []

    trials = _query(
        db,
        "SELECT id, number, status, parameters, readbacks, run_uid, error FROM trial "
        f"WHERE campaign_id = {campaign_id} ORDER BY number",
    )
    statuses = Counter(t[2] for t in trials)
    # exactly the budget, every trial terminal, nothing duplicated
    assert statuses["completed"] == MAX_TRIALS
    assert set(statuses) <= {"completed", "abandoned"}, statuses  # no failures injected
    ids = [t[0] for t in trials]
    numbers = [t[1] for t in trials]
    assert len(set(ids)) == len(ids)
    assert numbers == list(range(1, len(trials) + 1))
    uids = [t[5] for t in trials if t[5] is not None]
    assert len(set(uids)) == len(uids)
    # each kill leaves at most one trial unfinished
    assert statuses["abandoned"] <= KILLS

    observations: dict[int, dict[str, float]] = {}
    for trial_id, metric, value in _query(db, "SELECT trial_id, metric, value FROM observation"):
        assert metric not in observations.setdefault(trial_id, {}), "an output stored twice"
        observations[trial_id][metric] = value
    branin = get_problem("branin")
    for trial_id, number, status, _params, readbacks, run_uid, error in trials:
        docs = [
            (name, json.loads(body))
            for name, body in _query(
                db, f"SELECT name, body FROM document WHERE trial_id = {trial_id} ORDER BY seq"
            )
        ]
        names = [n for n, _ in docs]
        closed_ok = bool(docs) and docs[-1][0] == "stop" and docs[-1][1]["exit_status"] == "success"
        if status == "completed":
            # its run is stored whole, and its outputs are the event's and the simulator's
            assert names == ["start", "descriptor", "event", "stop"], (number, names)
            assert closed_ok
            start, event = docs[0][1], docs[2][1]
            assert start["trial_id"] == trial_id and start["uid"] == run_uid
            y = observations[trial_id]["y"]
            assert y == event["data"]["y"]
            read = json.loads(readbacks)
            assert read == {"x1": event["data"]["x1"], "x2": event["data"]["x2"]}
            assert y == pytest.approx(branin.evaluate(read)["y"], rel=1e-12)
        else:
            # an abandoned trial never completed its run: no measurement was thrown away
            assert not closed_ok, (number, names, error)
            assert trial_id not in observations
            assert error
    print(f"trials: {dict(statuses)}")
