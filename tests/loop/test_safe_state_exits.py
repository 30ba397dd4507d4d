"""When a runner leaves hardware it declared a safe state for: a runner whose lease another
took over writes nothing more (not even its safe state: the hardware is the new owner's), and
a second Ctrl-C writes the safe state before the process exits (both found in review)."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from loop import Runner, Store, load_campaign
from loop.store import LeaseClaim, LeaseLost

DEVICES = """
import json, os, threading, time
from ophyd import Signal
from ophyd.status import Status

LOG = {log!r}
STEAL = []  # the test's hook: called while the detector measures


class LoggedSignal(Signal):
    def put(self, value, **kwargs):
        if value == 0 and os.environ.get("REFUSE_SAFE_STATE"):
            raise RuntimeError("drive fault: setpoint not accepted")
        with open(LOG, "a") as f:
            f.write(json.dumps([self.name, value]) + "\\n")
        return super().put(value, **kwargs)

    def stop(self, *, success=False):  # a drive whose stop hangs
        time.sleep(float(os.environ.get("STOP_SECONDS", "0")))


class Detector(Signal):
    def trigger(self):
        status = Status(self)

        def measure():
            for steal in STEAL:
                steal()
            time.sleep(float(os.environ.get("MEASURE_SECONDS", "0")))
            super(Detector, self).put(42.0)
            status.set_finished()

        threading.Thread(target=measure, daemon=True).start()
        return status
"""

BENCH = """
name: bench
inputs:
  x1: {device: "bench_devices:LoggedSignal", limits: [0, 1]}
outputs:
  y: {device: "bench_devices:Detector"}
on_stop:
  x1: 0
"""

CAMPAIGN = """
name: takeover
parameters:
  - {name: x1, type: float, bounds: [0.5, 1]}
objectives:
  - {name: y, goal: minimize}
instrument: {file: bench.yaml}
planner: {kind: sobol}
budget: {max_trials: 3}
seed: 1
"""


def _bench(tmp_path: Path, campaign: str = CAMPAIGN) -> Path:
    """The bench's files in ``tmp_path``; returns the log of every put."""
    log = tmp_path / "puts.jsonl"
    (tmp_path / "bench_devices.py").write_text(textwrap.dedent(DEVICES.format(log=str(log))))
    (tmp_path / "bench.yaml").write_text(BENCH)
    (tmp_path / "c.yaml").write_text(campaign)
    return log


def _in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """This test's ``bench_devices`` module (each test writes its own, logging to its folder)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bench_devices", raising=False)
    return importlib.import_module("bench_devices")


def test_a_runner_that_lost_its_lease_mid_trial_stores_and_writes_nothing_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _bench(tmp_path)
    bench_devices = _in_process(tmp_path, monkeypatch)

    url = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    successor = LeaseClaim(owner="other:2", host="other", pid=2, token="successor", ttl=60)

    def steal() -> None:  # another runner takes the campaign over during trial 1
        lease = store.lease(1)
        assert lease is not None
        assert store.replace_lease(1, lease.token, successor)

    monkeypatch.setattr(bench_devices, "STEAL", [steal])
    runner = Runner(load_campaign(tmp_path / "c.yaml"), store)
    with pytest.raises(LeaseLost, match="other:2"):
        runner.run()
    trials = store.trials(1)
    assert [t.status for t in trials] == ["running"]  # the successor's to reconcile
    assert [d.name for d in store.documents(trials[0].id or 0)] == ["start"]
    puts = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(puts) == 1 and puts[0][1] >= 0.5, puts  # the trial's move; no safe state (0)
    assert store.lease(1).token == "successor"  # type: ignore[union-attr]
    store.close()


@pytest.mark.slow
def test_a_second_ctrl_c_writes_the_safe_state_before_exiting(tmp_path: Path) -> None:
    """The first Ctrl-C's stop hung in a drive's stop(); a second Ctrl-C exited at once and
    left the heater on. It now writes the safe state first, and says so."""
    log = _bench(tmp_path)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "MEASURE_SECONDS": "30",
        "STOP_SECONDS": "30",
    }
    url = f"sqlite:///{tmp_path / 's.db'}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "loop.cli", "run", "c.yaml", "--store", url],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (log.exists() and log.read_text()):  # the trial's move: now measuring
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)  # the abort is stuck in the drive's stop()
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Ctrl-C again: writing the safe state" in " ".join(err.split()), err
    assert "NOT WRITTEN" not in err, err
    puts = [json.loads(line) for line in log.read_text().splitlines()]
    assert puts[-1] == ["x1", 0], puts  # the safe state, after the trial's move


def test_a_safe_state_not_written_is_in_the_stop_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was a log line only: the summary said `completed: max_trials reached` and `status`
    kept nothing (found in review)."""
    _bench(tmp_path, CAMPAIGN.replace("max_trials: 3", "max_trials: 1"))
    _in_process(tmp_path, monkeypatch)
    monkeypatch.setenv("REFUSE_SAFE_STATE", "1")
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    summary = Runner(load_campaign(tmp_path / "c.yaml"), store).run()
    assert summary.status == "completed"
    note = "SAFE STATE NOT WRITTEN: x1 = 0"
    assert note in summary.reason and "drive fault: setpoint not accepted" in summary.reason
    assert note in (store.campaign(summary.campaign_id).stop_reason or "")
    store.close()


def test_nohup_keeps_a_run_going_when_the_terminal_closes() -> None:
    """SIGHUP stops a campaign, but not one started under `nohup`, which ignores it: handling
    it anyway stopped such a run at logout (found in review)."""
    from loop import cli

    class Idle:
        def request_stop(self, reason: str) -> None:  # pragma: no cover - never signalled
            raise AssertionError(reason)

    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with cli._stop_on_signals(Idle()):  # type: ignore[arg-type]
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # handled
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        with cli._stop_on_signals(Idle()):  # type: ignore[arg-type]
            assert callable(signal.getsignal(signal.SIGHUP))  # a terminal's run: handled
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_run_that_left_the_safe_state_unwritten_exits_3(tmp_path: Path) -> None:
    """`run` completed its budget, said SAFE STATE NOT WRITTEN and exited 0, so
    `closedloop run ... && next_sample` went on with the hardware unsafe (found in review)."""
    from tests.cli_process import run_cli

    _bench(tmp_path, CAMPAIGN.replace("max_trials: 3", "max_trials: 1"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "REFUSE_SAFE_STATE": "1",
    }
    url = f"sqlite:///{tmp_path / 's.db'}"
    proc = run_cli(["run", "c.yaml", "--store", url], cwd=tmp_path, env=env)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert "completed: max_trials reached" in proc.stdout
    said = " ".join(proc.stderr.split())
    assert "SAFE STATE NOT WRITTEN: x1 = 0" in said and "(exit code 3)" in said, said
    # nothing else is lost: the trial and the campaign's end are stored
    store = Store(url, create=False)
    assert [t.status for t in store.trials(1)] == ["completed"]
    assert store.campaign(1).status == "completed"
    store.close()


BROKEN_PLANNER = """
class Bad:
    def __init__(self, context):
        self.n, self.last_kinds = 0, []

    def ingest(self, observations):
        pass

    def suggest(self, n=1, pending=()):
        self.n += 1
        self.last_kinds = ["model"]
        if self.n > 2:
            return [{"x1": 5.0}]  # outside the bounds: it breaks the protocol
        return [{"x1": 0.5 + 0.1 * self.n}]
"""


def test_a_session_an_error_ended_with_the_safe_state_unwritten_exits_3(tmp_path: Path) -> None:
    """Exit 3 was given only when the session returned a summary: a planner that broke its
    protocol ended it with exit 1 and no word of the safe state on stderr (found in
    review)."""
    from tests.cli_process import run_cli

    _bench(tmp_path, CAMPAIGN.replace("planner: {kind: sobol}", "planner: {plugin: bad.py:Bad}"))
    (tmp_path / "bad.py").write_text(BROKEN_PLANNER)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
        "REFUSE_SAFE_STATE": "1",
    }
    proc = run_cli(
        ["run", "c.yaml", "--store", f"sqlite:///{tmp_path / 's.db'}"], cwd=tmp_path, env=env
    )
    said = " ".join(proc.stderr.split())
    assert proc.returncode == 3, (proc.stdout, said)
    assert "outside" in said  # the planner's error is still said
    assert "SAFE STATE NOT WRITTEN: x1 = 0" in said and "(exit code 3)" in said, said
