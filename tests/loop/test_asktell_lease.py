"""Several robots at one ask/tell campaign: a slow ``suggest`` keeps its lease, others wait.

A ``suggest`` holds the campaign's lease through its model fit (tens of seconds for a
multi-objective BoTorch campaign). Found in review: its lease had no heartbeat, so a fit
longer than the 30 s TTL lost it to the next ``tell`` and the suggest's proposals were thrown
away, and a ``tell`` waiting behind a 26-34 s suggest gave up after 10 s.

Real processes on a real SQLite store: robot A is ``closedloop suggest`` in a fresh
interpreter whose planner waits before proposing (:data:`_SLOW_SUGGEST`: no planner is slow
on cue, and a real multi-objective fit would take half a minute of both cores), robot B the
``closedloop`` command itself. A's lease TTL is shortened to 2.5 s, so holding it "past its
TTL" takes seconds, and its fit lasts until the test has seen B wait.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import pytest

from loop.store import Store
from tests.cli_process import Process, start_cli

ROOT = Path(__file__).parents[2]

CAMPAIGN = """\
name: robots
parameters:
  - {name: a, type: float, bounds: [0, 1]}
  - {name: b, type: float, bounds: [0, 1]}
objectives:
  - {name: y, goal: maximize}
instrument: {manual: true, outputs: [y]}
planner: {kind: sobol}
budget: {max_trials: 50}
seed: 2
"""

# `closedloop ARGS` in a fresh interpreter whose planner, before it proposes, writes its pid
# to FITTING (the suggest holds the lease from then on) and works until the file DONE exists
# (a model fit that takes as long as the test needs, at most 120 s), and whose campaigns'
# leases live TTL s without a heartbeat (Runner.from_store's `lease_ttl`, which the
# suggest's lease takes).
_SLOW_SUGGEST = """\
import os, sys, time
from pathlib import Path
from loop.cli import main
from loop.runner import Runner

ttl, fitting, done = float(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
Runner.from_store.__func__.__kwdefaults__["lease_ttl"] = ttl
build = Runner.rebuild_planner

def rebuild(self, *args, **kwargs):
    planner = build(self, *args, **kwargs)
    propose = planner.suggest

    def slowly(*a, **k):
        fitting.write_text(str(os.getpid()))
        end = time.monotonic() + 120
        while not done.exists() and time.monotonic() < end:
            time.sleep(0.05)
        return propose(*a, **k)

    planner.suggest = slowly
    return planner

Runner.rebuild_planner = rebuild
sys.argv = ["closedloop", *sys.argv[4:]]
main()
"""


def _closedloop(*args: str, stderr: IO[str] | int = subprocess.PIPE) -> Process:
    return start_cli(args, cwd=ROOT, stderr=stderr)


def _slow_suggest(url: str, tmp_path: Path, *, ttl: float) -> subprocess.Popen[str]:
    """Robot A: `closedloop suggest -n 2 --json` (:data:`_SLOW_SUGGEST`); the file
    ``fitting`` appears once it holds the lease, the file ``done`` ends its fit."""
    args = ["suggest", "--store", url, "-n", "2", "--json"]
    files = [str(tmp_path / "fitting"), str(tmp_path / "done")]
    return subprocess.Popen(
        [sys.executable, "-c", _SLOW_SUGGEST, str(ttl), *files, *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _until(what: str, check: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _pending_campaign(tmp_path: Path) -> tuple[str, list[int]]:
    """A store whose ask/tell campaign has two suggestions pending, and their trial ids."""
    from loop.asktell import open_campaign, suggest
    from loop.config import load_campaign

    url = f"sqlite:///{tmp_path / 'lab.db'}"
    file = tmp_path / "robots.yaml"
    file.write_text(CAMPAIGN)
    store = Store(url)
    try:
        runner, _ = open_campaign(store, load_campaign(file), None)
        return url, [p.trial_id for p in suggest(runner, 2)]
    finally:
        store.close()


def _log(path: Path) -> str:
    """A log file's lines joined (rich wraps a log line on a narrow stderr)."""
    return " ".join(path.read_text().split())


def _statuses(url: str) -> dict[int, str]:
    store = Store(url, create=False)
    try:
        return {t.id or 0: t.status for t in store.trials(1)}
    finally:
        store.close()


def test_a_slow_suggest_keeps_its_lease_and_a_tell_waits_for_it(tmp_path: Path) -> None:
    """A suggest busy for several times its lease's TTL heartbeats it, so a tell started
    meanwhile waits (saying so once, naming A's pid) and then records its result; A's
    proposals are stored. Before: the tell took the lease over once A's TTL expired and A
    failed with `LeaseLost`, its proposals thrown away."""
    url, (told, _) = _pending_campaign(tmp_path)
    ttl = 2.5  # short, so the test takes seconds; not so short that a loaded host's stall loses it
    a = _slow_suggest(url, tmp_path, ttl=ttl)
    log = tmp_path / "b.err"
    try:
        _until("robot A's model fit", (tmp_path / "fitting").exists)
        held = time.monotonic()
        store = Store(url, create=False)
        try:
            first = store.lease(1)
            with log.open("w") as err:
                b = _closedloop("tell", "--store", url, str(told), "y=0.5", stderr=err)
                try:
                    _until("robot B to wait", lambda: "is busy: waiting" in _log(log))
                    assert b.poll() is None
                    # past A's TTL whatever B's start-up took (on a fast VM it took under
                    # the TTL, and the check below failed by 0.06 s: session 38)
                    time.sleep(max(0.0, ttl + 0.5 - (time.monotonic() - held)))
                    assert b.poll() is None
                    later = store.lease(1)
                    holding = time.monotonic() - held
                    (tmp_path / "done").touch()  # A's fit ends
                    a_out, a_err = a.communicate(timeout=120)
                    b_out, _ = b.communicate(timeout=120)
                finally:
                    b.kill()
        finally:
            store.close()
    finally:
        a.kill()
    assert a.returncode == 0, a_err
    proposed = [t["trial_id"] for t in json.loads(a_out)["trials"]]
    assert len(proposed) == 2
    # A held its lease past its TTL (B's start-up and 2 s of waiting), heartbeating
    assert holding > ttl
    assert first is not None and later is not None and later.token == first.token
    assert later.heartbeat > first.heartbeat
    assert b.returncode == 0, log.read_text()
    assert f"trial {told} (#1): completed" in b_out
    said = _log(log)
    assert said.count("is busy: waiting for the suggest/tell of") == 1, said
    assert f"pid {a.pid} on " in said, said
    statuses = _statuses(url)
    assert statuses[told] == "completed"
    assert [statuses[i] for i in proposed] == ["running", "running"]  # A's, stored
    store = Store(url, create=False)
    try:
        assert store.lease(1) is None  # both released theirs
        reason = store.campaign(1).stop_reason or ""
        assert "3 trial(s) pending" in reason  # B's state counts A's proposals
    finally:
        store.close()


def test_a_killed_suggest_is_not_waited_for(tmp_path: Path) -> None:
    """A tell waiting for a suggest that is then killed (kill -9: its lease stays, with no
    heartbeat) takes the lease over within a poll, not after the TTL or the whole wait."""
    url, (told, _) = _pending_campaign(tmp_path)
    a = _slow_suggest(url, tmp_path, ttl=30.0)
    log = tmp_path / "b.err"
    try:
        _until("robot A's model fit", (tmp_path / "fitting").exists)
        with log.open("w") as err:
            b = _closedloop("tell", "--store", url, str(told), "y=0.5", stderr=err)
            try:
                _until("robot B to wait", lambda: "is busy: waiting" in _log(log))
                assert b.poll() is None  # still waiting for A
                os.kill(a.pid, signal.SIGKILL)  # its parent has not reaped it: a zombie
                killed = time.monotonic()
                b_out, _ = b.communicate(timeout=120)
                after_kill = time.monotonic() - killed
            finally:
                b.kill()
    finally:
        a.kill()
        a.communicate()
    assert a.returncode == -signal.SIGKILL
    assert b.returncode == 0, log.read_text()
    assert f"trial {told} (#1): completed" in b_out
    assert after_kill < 15.0, after_kill  # a poll and one write, not A's 30 s TTL
    assert sorted(_statuses(url).values()) == ["completed", "running"]  # A stored nothing


def test_a_suggest_holder_on_another_host_is_waited_out_to_its_ttl(tmp_path: Path) -> None:
    """A holder on another host that stopped heartbeating (its process cannot be checked
    from here) is taken over as soon as its lease expires; one that heartbeats is waited
    for up to ``wait`` s, then refused naming it, writing nothing."""
    from loop.asktell import Result, tell
    from loop.lock import CampaignLease
    from loop.runner import Runner
    from loop.store import CampaignLocked

    url, (told, other) = _pending_campaign(tmp_path)
    store = Store(url, create=False)
    runners: dict[int, Runner] = {}
    try:
        live = CampaignLease(store, ttl=3.0)  # longer than a loaded host's stall
        live.host, live.owner, live.pid = "elsewhere", "elsewhere:4242", 4242
        live.acquire(1)
        live.start_heartbeat()
        try:
            started = time.monotonic()
            with pytest.raises(CampaignLocked) as refused:
                tell(store, [Result(told, {"y": 0.5})], runners, wait=1.5)
            assert time.monotonic() - started >= 1.5
            said = str(refused.value)
            assert "another suggest/tell (pid 4242 on elsewhere" in said, said
            assert "nothing was written" in said and "try the tell again" in said, said
            assert _statuses(url)[told] == "running"
        finally:
            live.stop_heartbeat()  # as if that process froze: its lease expires in 3 s
        started = time.monotonic()
        (done,) = tell(store, [Result(other, {"y": 0.25})], runners, wait=60.0)
        assert done.status == "completed"
        assert time.monotonic() - started < 20.0  # its 3 s TTL, not the 60 s
    finally:
        store.close()


SLOW_RUN = """\
name: slow
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives:
  - {name: y, goal: minimize}
instrument: {simulator: branin, latency: 1.0}
planner: {kind: sobol}
budget: {max_trials: 60}
seed: 1
"""


def test_a_campaign_a_runner_drives_is_refused_at_once(tmp_path: Path) -> None:
    """While `closedloop run` drives a campaign, its `suggest` is refused at once (no wait
    for the runner), with the exit code of a campaign held by another runner."""
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    file = tmp_path / "slow.yaml"
    file.write_text(SLOW_RUN)
    runner = _closedloop("run", str(file), "--store", url)

    def running() -> bool:
        assert runner.poll() is None, runner.communicate()
        try:
            store = Store(url, create=False)
        except Exception:  # not created yet
            return False
        try:
            return bool(store.campaigns()) and store.campaign(1).status == "running"
        except Exception:  # its tables are being made
            return False
        finally:
            store.close()

    try:
        _until("the runner to start", running)
        started = time.monotonic()
        asked = _closedloop("suggest", "--store", url, "-c", "slow")
        _, err = asked.communicate(timeout=120)
        took = time.monotonic() - started
    finally:
        runner.send_signal(signal.SIGINT)
        runner.communicate(timeout=120)
    assert asked.returncode == 75, err  # EXIT_BUSY: a script tries again later
    assert "is being driven by a runner" in " ".join(err.split()), err
    assert "waiting" not in err
    assert took < 60.0  # the command's start-up (on a busy host), not the 300 s wait


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")
def test_a_killed_process_not_yet_reaped_counts_as_gone() -> None:
    """A zombie answers ``kill(pid, 0)`` but never heartbeats again: its lease is stale."""
    from loop.lock import pid_alive

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(child.pid)
        child.kill()
        _until("the child to exit", lambda: not pid_alive(child.pid), timeout=10)
    finally:
        child.kill()
        child.wait()
    assert not pid_alive(child.pid)
    assert pid_alive(os.getpid())
