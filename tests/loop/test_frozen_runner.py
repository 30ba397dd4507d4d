"""A runner stopped on this host (Ctrl-Z, SIGSTOP) keeps its campaign; a hung one does not.

Found in review: a ``closedloop run`` stopped past its lease's TTL was reported by
``status`` as "no runner is driving it; closedloop resume ... continues it" while its process
sat in state T on the same host; ``resume`` took it over, stored the trial in flight as
abandoned ("process died", untrue), and once continued the first runner exited 1 ("this
runner stalled past its lease"), its RunEngine's abort able to stop movers the new runner
drove. ``loop.lock.stale_reason`` judged the expiry before asking about the process.

Real processes on a real SQLite store: the runner is ``closedloop run`` in a fresh
interpreter whose lease lives :data:`TTL` s without a heartbeat (``Runner``'s ``lease_ttl``,
shortened as ``test_asktell_lease`` does), so "stopped past its lease" takes seconds. Every
process a test stops is continued or killed in ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from loop.store import LeaseClaim, Store
from tests.cli_process import closedloop

ROOT = Path(__file__).parents[2]
TTL = 1.5  # s: the runner's lease without a heartbeat

CAMPAIGN = """\
name: frozen
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives:
  - {name: y, goal: minimize}
instrument: {simulator: branin, latency: 0.4}
planner: {kind: sobol}
budget: {max_trials: 6}
seed: 1
"""

# `closedloop ARGS` whose runners' leases live TTL s (argv[1]) without a heartbeat.
_SHORT_LEASE = """\
import sys
from loop.runner import Runner
Runner.__init__.__kwdefaults__["lease_ttl"] = float(sys.argv[1])
from loop.cli import main
sys.argv = ["closedloop", *sys.argv[2:]]
main()
"""

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="a stopped process is told by Linux's /proc"
)


def _closedloop(*args: str) -> subprocess.CompletedProcess[str]:
    return closedloop(*args, cwd=ROOT, wide=True)


def _until(what: str, check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _count(db: Path, sql: str) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        try:
            return int(conn.execute(sql).fetchone()[0])
        except sqlite3.OperationalError:  # the tables are not there yet
            return 0


def _flat(text: str) -> str:
    """rich wraps long lines: one line, single spaces."""
    return " ".join(text.split())


@contextmanager
def _stopped_runner(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    """A ``closedloop run`` with a completed trial, stopped by SIGSTOP past its lease's TTL;
    continued (or killed) on the way out, whatever the test did."""
    file = tmp_path / "frozen.yaml"
    file.write_text(CAMPAIGN)
    db = tmp_path / "lab.db"
    url = f"sqlite:///{db}"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SHORT_LEASE, str(TTL), "run", str(file), "--store", url],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        completed = "select count(*) from trial where status = 'completed'"
        _until("a completed trial", lambda: _count(db, completed) >= 1 or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(TTL + 1.0)  # its lease expires
        yield proc, url, db
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_a_stopped_runner_is_not_taken_over_and_goes_on_when_continued(tmp_path: Path) -> None:
    with _stopped_runner(tmp_path) as (proc, url, db):
        token = "select token from lease"
        with sqlite3.connect(db) as conn:
            before = conn.execute(token).fetchall()
        assert len(before) == 1

        shown = _closedloop("status", "--store", url)
        said = _flat(shown.stdout)
        assert shown.returncode == 0, shown.stderr
        assert "no runner is driving it" not in said
        assert f"process {proc.pid} on this host" in said and "is stopped (Ctrl-Z?)" in said
        assert f"`kill -CONT {proc.pid}` continues it" in said

        got = json.loads(_closedloop("status", "--store", url, "--json").stdout)
        assert got["runner"]["pid"] == proc.pid and got["runner"]["state"] == "stopped"
        assert got["runner"]["heartbeat_age_s"] >= TTL

        resumed = _closedloop("resume", "--store", url)
        assert resumed.returncode == 75, resumed.stdout + resumed.stderr  # EXIT_BUSY
        refusal = _flat(resumed.stderr)
        assert "is held by a stopped process, not taken over" in refusal, refusal
        assert f"`fg` in its terminal or `kill -CONT {proc.pid}` continues it" in refusal
        assert "took over" not in resumed.stdout

        # suggest/tell refuse it too, with the code of a busy campaign
        suggested = _closedloop("suggest", "--store", url)
        assert suggested.returncode == 75, suggested.stdout + suggested.stderr

        with sqlite3.connect(db) as conn:
            assert conn.execute(token).fetchall() == before  # nobody took the lease
            assert (
                conn.execute("select count(*) from trial where status = 'abandoned'").fetchone()[0]
                == 0
            )

        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert "stalled past its lease" not in err and "taken over" not in err
    with sqlite3.connect(db) as conn:
        statuses = [s for (s,) in conn.execute("select status from trial order by number")]
    assert statuses == ["completed"] * 6


def _campaign(tmp_path: Path) -> tuple[str, int]:
    """A stored campaign with no trial and no lease (as ``suggest FILE`` leaves one)."""
    from loop.config import load_campaign
    from loop.runner import Runner

    file = tmp_path / "frozen.yaml"
    file.write_text(CAMPAIGN.replace("latency: 0.4", "latency: 0").replace("6}", "2}"))
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    store = Store(url)
    runner = Runner(load_campaign(file), store)
    cid = runner.create()
    runner.lease.release()
    store.close()
    return url, cid


def _hold(url: str, cid: int, pid: int, *, acquired_ago: float, silent_for: float) -> None:
    """Give campaign ``cid``'s lease to process ``pid`` of this host, taken ``acquired_ago``
    s ago and last heartbeated ``silent_for`` s ago (expired by now)."""
    from loop.lock import host_id

    store = Store(url)
    claim = LeaseClaim(owner=f"here:{pid}", host=host_id(), pid=pid, token="t" * 32, ttl=1.0)
    assert store.insert_lease(cid, claim)
    store.close()
    now = time.time()
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute(
            "update lease set acquired_at = ?, heartbeat = ?, expires = ?",
            (now - acquired_ago, now - silent_for, now - silent_for + 1.0),
        )


@contextmanager
def _process(stop: bool) -> Iterator[subprocess.Popen[bytes]]:
    """A process of this host that is not a runner: left running (hung, as far as a lease
    can tell) or stopped; killed on the way out."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        if stop:
            os.kill(proc.pid, signal.SIGSTOP)
            _until("the process stopped", lambda: _state(proc.pid) in ("T", "t"), 10)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2]


def test_a_hung_process_that_missed_its_heartbeat_is_taken_over_and_said_to_exist(
    tmp_path: Path,
) -> None:
    from loop.lock import lease_state, owner_stopped, stale_reason

    url, cid = _campaign(tmp_path)
    with _process(stop=False) as proc:
        _hold(url, cid, proc.pid, acquired_ago=30, silent_for=10)
        store = Store(url, read_only=True)
        lease = store.lease(cid)
        store.close()
        assert lease is not None and lease_state(lease) == "missed heartbeat"
        assert not owner_stopped(lease)
        why = stale_reason(lease)
        assert why is not None and f"process {proc.pid} still exists on this host" in why
        resumed = _closedloop("resume", "--store", url)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    said = _flat(resumed.stdout)
    assert f"lease: took over from here:{proc.pid}: its last heartbeat was" in said, said
    assert f"though process {proc.pid} still exists on this host (hung" in said


def test_a_stopped_process_holding_an_expired_lease_is_refused_until_it_ends(
    tmp_path: Path,
) -> None:
    url, cid = _campaign(tmp_path)
    with _process(stop=True) as proc:
        _hold(url, cid, proc.pid, acquired_ago=0, silent_for=5)
        refused = _closedloop("resume", "--store", url)
        assert refused.returncode == 75, refused.stdout + refused.stderr
        said = _flat(refused.stderr)
        assert f"process {proc.pid} on this host (here:{proc.pid}) is stopped" in said, said
        silent = re.search(r"has not heartbeated for ([\d.]+) s:", said)
        assert silent is not None and float(silent.group(1)) >= 5, said
        assert f"`closedloop resume --store {url} -c {cid}` continues the campaign" in said
    # ended: its lease is stale at once (the process is gone from this host)
    resumed = _closedloop("resume", "--store", url)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"process {proc.pid} no longer exists on this host" in _flat(resumed.stdout)


def test_a_stopped_process_that_started_after_the_lease_only_reuses_its_id(
    tmp_path: Path,
) -> None:
    """The owner died and its pid went to a process stopped since (a user's Ctrl-Z'd
    editor): it must not hold the campaign for good."""
    from loop.lock import owner_stopped

    url, cid = _campaign(tmp_path)
    with _process(stop=True) as proc:
        _hold(url, cid, proc.pid, acquired_ago=60, silent_for=50)
        store = Store(url, read_only=True)
        lease = store.lease(cid)
        store.close()
        assert lease is not None and not owner_stopped(lease)
        resumed = _closedloop("resume", "--store", url)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "lease: took over" in resumed.stdout
