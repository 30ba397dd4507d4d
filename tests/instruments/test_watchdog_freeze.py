"""A runner frozen mid-trial (Ctrl-Z, SIGSTOP) and continued (``fg``, SIGCONT): the time
it could not run is not the instrument's, so the trial's ``timeout`` does not fire for it.

Found in review: a 5 s trial with ``timeout: 20``, stopped 2 s in for 25 s, failed "timed
out after 20 s" five times out of five the moment it ran again, because the watchdog timed
it with ``time.monotonic()``, which runs on through SIGSTOP. Each test runs a real campaign
(``python -m loop.cli run``: real RunEngine, simulator, SQLite store) in a subprocess.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from instruments import _dispatch
from tests.cli_process import Process, start_cli

LATENCY = 3.0  # s a measurement takes
TIMEOUT = 4.0  # s a run may take
FROZEN = 8.0  # s the runner is stopped: longer than the timeout

CAMPAIGN = """
name: freeze
parameters:
  - {{name: x1, type: float, bounds: [-5, 10]}}
  - {{name: x2, type: float, bounds: [0, 15]}}
objectives: [{{name: y, goal: minimize}}]
instrument: {{simulator: branin, latency: {latency}, timeout: {timeout}{extra}}}
planner: {{kind: sobol}}
budget: {{max_trials: 1, max_failures: 1}}
seed: 1
"""


def _query(db: Path, sql: str) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # no tables yet
            return []


def _start(tmp_path: Path, extra: str = "") -> tuple[Process, Path]:
    """``closedloop run`` of the campaign, ``extra`` added to its instrument's options."""
    text = CAMPAIGN.format(latency=LATENCY, timeout=TIMEOUT, extra=extra)
    (tmp_path / "c.yaml").write_text(text)
    db = tmp_path / "c.db"
    proc = start_cli(["run", "c.yaml", "--store", f"sqlite:///{db}"], cwd=tmp_path)
    return proc, db


def _wait_for_run(db: Path, proc: Process, limit: float = 120) -> None:
    """Until trial 1's run has started (its start document is stored)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the runner exited early ({proc.returncode}): {out} {err}")
        if _query(db, "SELECT id FROM document WHERE name = 'start'"):
            return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("trial 1's run did not start in time")


def _trial(db: Path) -> tuple[object, ...]:
    rows = _query(db, "SELECT status, error FROM trial WHERE number = 1")
    assert rows, "trial 1 was not stored"
    return rows[0]


@pytest.mark.slow
def test_a_trial_frozen_longer_than_its_timeout_completes(tmp_path: Path) -> None:
    proc, db = _start(tmp_path)
    try:
        _wait_for_run(db, proc)
        time.sleep(1.0)  # mid-measurement
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(FROZEN)
        os.kill(proc.pid, signal.SIGCONT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.communicate()
    status, error = _trial(db)
    assert (status, error) == ("completed", None), (out, err)
    assert proc.returncode == 0, (out, err)


@pytest.mark.slow
def test_a_real_hang_still_times_out(tmp_path: Path) -> None:
    proc, db = _start(tmp_path, ", hang_rate: 1.0")
    started = time.monotonic()
    out, err = proc.communicate(timeout=180)
    status, error = _trial(db)
    assert status == "failed", (out, err)
    assert str(error).startswith(f"timed out after {TIMEOUT:g} s"), error
    assert time.monotonic() - started < 120


@pytest.mark.slow
def test_a_hang_frozen_partway_still_times_out_on_its_running_time(tmp_path: Path) -> None:
    """The freeze is left out, not the rest: a run that hangs times out once it has run
    ``timeout`` s in all, counting its time before and after the freeze."""
    proc, db = _start(tmp_path, ", hang_rate: 1.0")
    try:
        _wait_for_run(db, proc)
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(FROZEN)
        os.kill(proc.pid, signal.SIGCONT)
        resumed = time.monotonic()
        while time.monotonic() - resumed < 60 and not _query(
            db, "SELECT id FROM trial WHERE number = 1 AND status = 'failed'"
        ):
            time.sleep(0.05)
        ran_after = time.monotonic() - resumed
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.communicate()
    status, error = _trial(db)
    assert status == "failed", (out, err)
    assert str(error).startswith(f"timed out after {TIMEOUT:g} s"), error
    # ~1 s ran before the freeze, so ~3 s are left after it (the old watchdog fired at once).
    assert 1.5 < ran_after < TIMEOUT + 10, ran_after


class _Clock:
    """A hand-driven ``time.monotonic`` and wait clock for :class:`_dispatch._Stopwatch`."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waited = 0.0

    def monotonic(self) -> float:
        return self.now


def test_the_stopwatch_leaves_out_a_freeze_and_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(_dispatch.time, "monotonic", clock.monotonic)
    watch = _dispatch._Stopwatch(lambda: clock.waited)
    clock.now += 0.5
    assert watch.lap(0.5) == pytest.approx(0.5)  # an ordinary slice
    clock.now += 0.6
    assert watch.lap(0.5) == pytest.approx(1.1)  # a busy machine's late wake still counts
    clock.now += 30.0  # frozen (SIGSTOP) through a 0.5 s sleep
    assert watch.lap(0.5) == pytest.approx(1.6)
    assert watch.frozen == pytest.approx(29.5)
    clock.now += 0.5
    clock.waited += 0.5  # a door held the trial: not the instrument's time
    assert watch.lap(0.5) == pytest.approx(1.6)
    clock.now += 20.0
    clock.waited += 20.0  # frozen while the door held it: nothing counts, nothing negative
    assert watch.lap(0.5) == pytest.approx(1.6)
