"""A second Ctrl-C while the first stop is still under way exits at once, the store intact.

(Replaces ``test_resume.py::test_a_second_ctrl_c_stops_at_once_and_the_store_is_intact``,
which made the first stop slow with a ``function:`` instrument that hung on the RunEngine's
event loop: such a function now runs off the loop, so the first stop is prompt, ADR 0005.
Here the store is what is slow: another process holds its write lock.)
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from loop import Store
from tests.cli_process import Process, start_cli
from tests.dask_cluster import scheduler_process

CAMPAIGN = """
name: resumable
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {function: "slow.py:measure", outputs: [y]}
planner: {kind: sobol}
budget: {max_trials: 200}
seed: 4
"""

SLOW_FUNCTION = """
import pathlib
import time


def measure(inputs):
    if pathlib.Path(__file__).with_name("hang").exists():
        time.sleep(60)  # the trial stays in flight
    return {"y": inputs["x1"] ** 2 + inputs["x2"]}
"""


def _cli(*args: str, cwd: Path) -> Process:
    return start_cli(args, cwd=cwd)


def _completed(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            (done,) = conn.execute(
                "SELECT count(*) FROM trial WHERE status = 'completed'"
            ).fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(done)


@pytest.mark.slow
def test_a_second_ctrl_c_during_a_slow_stop_exits_at_once_and_the_store_is_intact(
    tmp_path: Path,
) -> None:
    (tmp_path / "slow.py").write_text(SLOW_FUNCTION)
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    proc = _cli("run", "c.yaml", "--store", url, "-q", cwd=tmp_path)
    deadline = time.monotonic() + 60
    while _completed(db) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no 2 completed trials within 60 s"
        time.sleep(0.05)
    (tmp_path / "hang").touch()
    time.sleep(1.0)  # the next trial is now in flight, its function sleeping
    blocker = sqlite3.connect(db, timeout=30)
    blocker.execute("BEGIN IMMEDIATE")  # another writer: the first stop's writes must wait
    try:
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None  # the first Ctrl-C waits to store the aborted trial
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        blocker.rollback()
        blocker.close()
    assert proc.returncode == 130, (out, err)
    assert time.monotonic() - t0 < 10
    assert "stopping at once" in err and "Traceback" not in err, err
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    (tmp_path / "hang").unlink()
    store = Store(url, create=False)
    cid = store.campaign().id or 0
    assert store.campaign(cid).status == "running"  # as after a kill
    assert store.trials(cid)[-1].status == "running"
    resumed = _cli("resume", "--store", url, "-q", cwd=tmp_path)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, (out, err)
    trials = store.trials(cid)
    assert all(t.status in ("completed", "abandoned") for t in trials)
    assert sum(t.status == "completed" for t in trials) == 200
    assert sum(t.status == "abandoned" for t in trials) == 1
    store.close()


def test_a_stop_while_the_devices_are_built_runs_nothing_and_stores_nothing(
    tmp_path: Path,
) -> None:
    """Building the devices (homing a stage, a handshake) now comes before the campaign is
    stored, and the loop used to clear a stop requested meanwhile: every trial then ran."""
    from instruments import build_instrument
    from loop import Runner, parse_campaign

    loaded = parse_campaign(
        CAMPAIGN.replace('{function: "slow.py:measure", outputs: [y]}', "branin"),
        path=tmp_path / "c.yaml",
        base_dir=tmp_path,
    )
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    built: list[Any] = []

    def factory(campaign: Any, seed: int) -> Any:
        runner.request_stop("stopped by Ctrl-C")  # the signal arrives mid-build
        built.append(
            build_instrument(campaign.instrument, campaign.parameters, base_dir=tmp_path, seed=seed)
        )
        return built[-1]

    runner = Runner(loaded, store, instrument_factory=factory)
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.run()
        assert store.campaigns() == [] and runner.campaign_id is None
    finally:
        store.close()


DASK_CAMPAIGN = """
name: on-dask
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, latency: 0.5, count: 2, executor: {kind: local, workers: 2}}
planner: {kind: sobol}
budget: {max_trials: 500}
seed: 4
"""


def _group_gone(pgid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_ctrl_c_at_the_terminal_stops_a_local_dask_campaign_without_worker_tracebacks(
    tmp_path: Path,
) -> None:
    """A terminal's Ctrl-C reaches the whole process group, the local cluster's worker
    processes too: each used to die of its own KeyboardInterrupt, printing pages of
    tracebacks over the campaign's summary. The campaign process owns the stop."""
    (tmp_path / "c.yaml").write_text(DASK_CAMPAIGN)
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    proc = start_cli(
        ("run", "c.yaml", "--store", url, "-q"),
        cwd=tmp_path,
        start_new_session=True,
        default_stop_signals=True,
    )
    try:
        deadline = time.monotonic() + 120
        while _completed(db) < 2:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no 2 completed trials within 120 s"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # as the terminal sends it: to every process
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "Ctrl-C: stopping" in err, err
    assert _group_gone(proc.pid, 60), "a worker process outlived the campaign"
    store = Store(url, create=False)
    cid = store.campaign().id or 0
    trials = store.trials(cid)
    store.close()
    assert sum(t.status == "completed" for t in trials) >= 2
    assert all(t.status in ("completed", "abandoned") for t in trials)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_stop_the_campaign_met_exits_75_not_130(tmp_path: Path) -> None:
    """130 says someone interrupted the run; a stop the campaign met (its Dask scheduler
    gone) is resumable once mended, and a wrapper script must tell the two apart: 75, as
    for a campaign another runner holds. Was: 130 for both."""
    with scheduler_process(tmp_path) as (scheduler, address):
        (tmp_path / "c.yaml").write_text(
            DASK_CAMPAIGN.replace(
                "executor: {kind: local, workers: 2}",
                f"executor: {{kind: dask, address: '{address}'}}",
            )
        )
        db = tmp_path / "s.db"
        proc = start_cli(("run", "c.yaml", "--store", f"sqlite:///{db}", "-q"), cwd=tmp_path)
        deadline = time.monotonic() + 60
        while _running(db) < 1:  # no worker: the first trial waits in the scheduler
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no trial started within 60 s"
            time.sleep(0.05)
        scheduler.kill()
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, (out, err)
    assert "is gone" in out + err and "closedloop resume" in out + err


def _running(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            (n,) = conn.execute("SELECT count(*) FROM trial WHERE status = 'running'").fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(n)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_function_error_on_a_local_cluster_is_said_once(tmp_path: Path) -> None:
    """The workers' own log ("distributed.worker - ERROR - Compute Failed", 7 lines with
    the exception again) reached the terminal beside the trial's error line."""
    (tmp_path / "fn.py").write_text("def measure(inputs):\n    raise ValueError('bad point')\n")
    (tmp_path / "c.yaml").write_text(
        DASK_CAMPAIGN.replace("simulator: branin, latency: 0.5", 'function: "fn.py:measure"')
        .replace(
            "executor: {kind: local, workers: 2}",
            "outputs: [y], executor: {kind: local, workers: 1}",
        )
        .replace("max_trials: 500", "max_trials: 2, max_failures: 1")
    )
    proc = start_cli(("run", "c.yaml", "--store", f"sqlite:///{tmp_path / 's.db'}"), cwd=tmp_path)
    out, err = proc.communicate(timeout=150)
    assert proc.returncode == 1, (out, err)
    text = out + err
    assert "Compute Failed" not in text and "<dynamic-code>" not in text, text
    assert "ValueError: bad point; raised by function measure (fn.py, line 2)" in text, text
