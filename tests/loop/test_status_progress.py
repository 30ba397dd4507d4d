"""Whether a long campaign moves, as ``campaigns`` and ``status`` tell it.

Found in review: ``campaigns`` showed ``updated_at`` as the "last change", and it moves only
when the status or budget changes, so a campaign measuring a trial a minute for a day read as
untouched since its start; ``status --json`` had no running time, no runner and no time of
the last trial, so a monitoring script could not tell a working campaign from a stopped
runner; and the CLI wrote durations as raw seconds ("so far: ... in 259190 s").

Real SQLite stores, real runners (a ``closedloop run`` in a fresh interpreter for the live
one), the ``closedloop`` command in a subprocess.
"""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from loop import Runner, Store, parse_campaign
from tests.cli_process import closedloop

ROOT = Path(__file__).parents[2]

CAMPAIGN = """\
name: progress
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives:
  - {name: y, goal: minimize}
instrument: {simulator: branin, INSTRUMENT}
planner: {kind: sobol}
budget: {max_trials: TRIALS}
seed: 1
"""

# `closedloop ARGS` whose runners' leases live argv[1] s without a heartbeat: a heartbeat
# (which records the running time) every argv[1] / 5 s
_SHORT_LEASE = """\
import sys
from loop.runner import Runner
Runner.__init__.__kwdefaults__["lease_ttl"] = float(sys.argv[1])
from loop.cli import main
sys.argv = ["closedloop", *sys.argv[2:]]
main()
"""


def _closedloop(*args: str) -> subprocess.CompletedProcess[str]:
    return closedloop(*args, cwd=ROOT, wide=True)


def _text(instrument: str = "latency: 0", trials: int = 3) -> str:
    return CAMPAIGN.replace("INSTRUMENT", instrument).replace("TRIALS", str(trials))


def _finished(tmp_path: Path, instrument: str = "latency: 0", trials: int = 3) -> str:
    """A store with one campaign run to its budget (through the Python API)."""
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    path = tmp_path / "progress.yaml"
    path.write_text(_text(instrument, trials))
    store = Store(url)
    Runner(parse_campaign(path.read_text(), path=path, base_dir=tmp_path), store).run()
    store.close()
    return url


def _sql(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return conn.execute(sql, args).fetchall()


def _stored_utc(text: str) -> datetime:
    """A time as SQLite holds it (naive UTC text)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_campaigns_last_change_is_the_latest_trial_not_the_last_status_change(
    tmp_path: Path,
) -> None:
    url = _finished(tmp_path)
    # as a day-long campaign's row reads: its status last changed when it started
    _sql(url, "update campaign set updated_at = '2026-01-02 03:04:05.000000'")
    (last,) = _sql(url, "select max(finished_at) from trial")[0]
    listed = _closedloop("campaigns", "--store", url)
    assert listed.returncode == 0, listed.stderr
    assert "last change (UTC)" in listed.stdout
    assert f"{_stored_utc(last):%Y-%m-%d %H:%M}" in listed.stdout, listed.stdout
    assert "2026-01-02 03:04" not in listed.stdout


def test_status_json_says_the_running_time_the_runner_and_the_last_trial(
    tmp_path: Path,
) -> None:
    url = _finished(tmp_path)
    _sql(url, "update campaign set elapsed_seconds = 259190.04")
    got = json.loads(_closedloop("status", "--store", url, "--json").stdout)
    (last,) = _sql(url, "select max(finished_at) from trial")[0]
    assert got["running_time_s"] == 259190.0
    assert got["runner"] is None  # finished: nobody holds it
    assert got["last_finished_at"] == _stored_utc(last).isoformat()
    assert datetime.fromisoformat(got["last_finished_at"]).tzinfo is not None

    shown = " ".join(_closedloop("status", "--store", url).stdout.split())
    assert "last trial finished " in shown and " ago" in shown, shown


def test_resume_says_the_time_so_far_as_a_person_reads_it(tmp_path: Path) -> None:
    url = _finished(tmp_path, trials=2)
    _sql(url, "update campaign set elapsed_seconds = 259190")
    resumed = _closedloop("resume", "--store", url, "-c", "1", "--max-trials", "3")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    said = " ".join(resumed.stdout.split())
    assert "so far: 2 completed, 0 failed, 0 abandoned in 3 d" in said, said
    assert "259190" not in said


@pytest.mark.slow
def test_status_of_a_live_campaign_shows_its_runner_and_its_trial_in_flight(
    tmp_path: Path,
) -> None:
    file = tmp_path / "progress.yaml"
    file.write_text(_text("latency: 1", 30))
    db = tmp_path / "lab.db"
    url = f"sqlite:///{db}"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SHORT_LEASE, "1.5", "run", str(file), "--store", url],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no completed trial within 60 s"
            if db.exists():
                try:
                    done = _sql(url, "select count(*) from trial where status = 'completed'")
                except sqlite3.OperationalError:  # no tables yet
                    done = [(0,)]
                if done[0][0] >= 1:
                    break
            time.sleep(0.05)
        time.sleep(0.5)  # a heartbeat (every 0.3 s) recorded the running time

        got = json.loads(_closedloop("status", "--store", url, "--json").stdout)
        assert got["runner"]["pid"] == proc.pid
        assert got["runner"]["host"] == socket.gethostname()
        assert got["runner"]["state"] == "running"
        assert 0 <= got["runner"]["heartbeat_age_s"] < 1.5
        assert got["running_time_s"] > 0
        assert got["last_finished_at"] is not None

        # between two trials nothing is in flight: look again until one is
        for _ in range(50):
            shown = " ".join(_closedloop("status", "--store", url).stdout.split())
            if " in flight for " in shown:
                break
        assert f"runner: {socket.gethostname()}:{proc.pid} (heartbeat" in shown, shown
        assert "last trial finished " in shown and " in flight for " in shown, shown
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_the_slots_table_shows_how_long_each_trial_has_been_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loop import cli

    url = _finished(tmp_path, "latency: 0, count: 2", trials=2)
    store = Store(url)
    (cid,) = _sql(url, "select id from campaign")[0]
    added = store.add_trial(cid, {"x1": 1.0, "x2": 2.0}, "model", slot=1)
    _sql(
        url,
        "update trial set created_at = datetime('now', '-301 seconds'), "
        "started_at = datetime('now', '-300 seconds') where id = ?",
        added.id,
    )
    trials = store.trials(cid)
    store.close()
    monkeypatch.setattr(cli.console, "width", 200)
    path = tmp_path / "progress.yaml"
    c = parse_campaign(path.read_text(), path=path, base_dir=tmp_path).campaign
    with cli.console.capture() as captured:
        cli._slots_table(c, trials, live=True)
    row = next(line for line in captured.get().splitlines() if line.startswith("│ 1"))
    assert "in flight 5 min" in row and "#3" in row, captured.get()
