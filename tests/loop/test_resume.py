"""Resume after a crash: reconciliation, the rebuilt planner, leases, signals."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from instruments import Dispatcher
from loop import Runner, Store, parse_campaign
from loop.config import LoadedCampaign
from loop.lock import CampaignLease, CampaignLocked, LeaseLost, host_id
from loop.runner import CampaignFinished, reconcile_documents
from loop.store import LeaseClaim, LeaseRow, as_utc
from planners import SobolPlanner
from simulators import get_problem
from tests.cli_process import Process, start_cli

BRANIN = """
name: resumable
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin}
planner: {kind: sobol}
budget: {max_trials: 6}
seed: 4
"""


def _loaded(tmp_path: Path, text: str = BRANIN) -> LoadedCampaign:
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    return parse_campaign(text, path=path, base_dir=tmp_path)


def _store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'store.db'}")


def _docs(*, stop: str | None, event: bool = True, y: Any = 1.5) -> list[tuple[str, dict]]:
    """The documents a trial's run leaves, cut short where a crash would cut them."""
    docs: list[tuple[str, dict]] = [
        ("start", {"uid": "run-1", "campaign": "resumable", "trial_id": 1}),
        ("descriptor", {"uid": "desc-1", "name": "primary", "run_start": "run-1"}),
    ]
    if event:
        data = {"y": y, "x1": 1.25, "x1_setpoint": 1.2, "x2": 3.5, "x2_setpoint": 3.5}
        docs.append(("event", {"uid": "ev-1", "descriptor": "desc-1", "data": data}))
    if stop is not None:
        docs.append(("stop", {"uid": "stop-1", "exit_status": stop, "reason": "boom"}))
    return docs


# ---------------------------------------------------------------------------- reconcile rules
def test_a_run_that_closed_successfully_is_completed_from_its_event() -> None:
    r = reconcile_documents(_docs(stop="success"), outputs=["y"], needed=None, inputs=["x1", "x2"])
    assert (r.status, r.outputs, r.readbacks, r.run_uid, r.error) == (
        "completed",
        {"y": 1.5},
        {"x1": 1.25, "x2": 3.5},
        "run-1",
        None,
    )


@pytest.mark.parametrize(
    ("docs", "status", "words"),
    [
        (_docs(stop=None), "abandoned", "no stop document"),
        (_docs(stop=None, event=False), "abandoned", "no stop document"),
        (_docs(stop="abort"), "abandoned", "'abort'"),
        (_docs(stop="success", event=False), "abandoned", "no primary event"),
        ([], "abandoned", "before this trial's run started"),
        (_docs(stop="fail"), "failed", "boom"),
        # the store keeps a NaN as null: after a crash it is still a non-finite output
        (_docs(stop="success", y=None), "failed", "is not finite: stored as null"),
        (_docs(stop="success", y="n/a"), "failed", "not a number"),
        (_docs(stop="success", y=float("inf")), "failed", "not finite"),
    ],
)
def test_runs_that_did_not_finish_well_are_not_completed(
    docs: list[tuple[str, dict]], status: str, words: str
) -> None:
    r = reconcile_documents(docs, outputs=["y"], needed=None, inputs=["x1", "x2"])
    assert r.status == status
    assert words in (r.error or "")


def test_a_run_the_plan_refused_on_its_reading_keeps_what_it_read() -> None:
    """The plan closes a run whose reading it refuses as ``fail`` (``MeasurementRejected``),
    the event stored: reconciled after a crash, the trial keeps its outputs, as live; a run
    the instrument failed before its event has none to keep."""
    refused = _docs(stop="fail", y=float("inf"))
    refused[-1][1]["reason"] = "output 'y' is not finite: inf"
    r = reconcile_documents(refused, outputs=["y"], needed=None, inputs=["x1", "x2"])
    assert (r.status, r.error) == ("failed", "output 'y' is not finite: inf")
    assert r.outputs == {"y": float("inf")} and r.readbacks == {"x1": 1.25, "x2": 3.5}
    broke = reconcile_documents(
        _docs(stop="fail", event=False), outputs=["y"], needed=None, inputs=["x1", "x2"]
    )
    assert (broke.status, broke.outputs) == ("failed", {})


def _staged_instrument() -> Any:
    """An instrument whose input devices are named unlike their parameters, as ophyd
    devices often are: ``SynAxis(name="stage_x1")`` drives x1 and reads ``stage_x1``."""
    from ophyd.sim import SynAxis, SynSignal

    @dataclass
    class Staged:
        name: str = "staged"
        inputs: dict[str, Any] = field(
            default_factory=lambda: {"x1": SynAxis(name="stage_x1"), "x2": SynAxis(name="stage_x2")}
        )
        detectors: tuple[Any, ...] = (SynSignal(func=lambda: 0.5, name="y"),)
        outputs: tuple[str, ...] = ("y",)

        def close(self) -> None:
            pass

    return Staged()


LIMITS = {"x1": (-5.0, 10.0), "x2": (0.0, 15.0)}


def test_reconciliation_reads_readbacks_where_the_dispatcher_did() -> None:
    """Found in review: the dispatcher read a readback under the parameter's name, else its
    device's; reconciliation under the parameter's only, so the same documents were a
    completed trial live and a failed one ("readback x1 is not in the run's event") after
    a crash. The start document records the device names; both read by one rule."""
    with Dispatcher(_staged_instrument(), readback_limits=LIMITS) as dispatcher:
        live = dispatcher.run(1, "c", {"x1": 1.25, "x2": 3.5})
    assert (live.exit_status, live.readbacks) == ("success", {"x1": 1.25, "x2": 3.5})
    assert live.documents[0][1]["readback_keys"] == {"x1": "stage_x1", "x2": "stage_x2"}
    r = reconcile_documents(
        live.documents, outputs=["y"], needed=None, inputs=["x1", "x2"], readback_limits=LIMITS
    )
    assert (r.status, r.outputs, r.readbacks, r.run_uid, r.error) == (
        "completed",
        live.outputs,
        live.readbacks,
        live.run_uid,
        None,
    )


def test_a_run_stored_without_the_readback_map_is_read_by_parameter_name() -> None:
    """Stores written before the start document carried ``readback_keys`` reconcile as
    they did: readbacks under the parameter's name only."""
    with Dispatcher(_staged_instrument(), readback_limits=LIMITS) as dispatcher:
        live = dispatcher.run(1, "c", {"x1": 1.25, "x2": 3.5})
    old = [
        (name, {k: v for k, v in doc.items() if k != "readback_keys"})
        for name, doc in live.documents
    ]
    r = reconcile_documents(old, outputs=["y"], needed=None, inputs=["x1", "x2"])
    assert (r.status, r.readbacks) == ("completed", {})
    r = reconcile_documents(
        old, outputs=["y"], needed=None, inputs=["x1", "x2"], readback_limits=LIMITS
    )
    assert r.status == "failed"
    assert (r.error or "").startswith("readback x1 is not in the run's event")
    # the parameter's own key still wins over the device's, as live
    assert reconcile_documents(
        _docs(stop="success"), outputs=["y"], needed=None, inputs=["x1"]
    ).readbacks == {"x1": 1.25}


# ---------------------------------------------------------------------------- resume
def test_resume_completes_a_crashed_trial_of_a_device_named_unlike_its_parameter(
    tmp_path: Path,
) -> None:
    """The end-to-end case of the review's finding: the runner dies after a trial's run
    closed; ``resume`` must store the measurement, not a failure."""
    store = _store(tmp_path)
    cid = Runner(_loaded(tmp_path), store, max_trials=1).run().campaign_id
    trial = store.add_trial(cid, {"x1": 1.25, "x2": 3.5}, "sobol")
    seq = itertools.count(1)
    uid: list[str] = []

    def sink(name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            uid.append(doc["uid"])
        store.add_document(trial.id or 0, next(seq), name, doc, uid[0])

    with Dispatcher(_staged_instrument(), readback_limits=LIMITS, document_sink=sink) as d:
        assert d.run(trial.id or 0, "resumable", {"x1": 1.25, "x2": 3.5}).exit_status == "success"
    store.finish_campaign(cid, "running", "")  # killed before it recorded the outcome

    summary = Runner.from_store(store, max_trials=2).resume()
    assert [(r.trial_id, r.status, r.error) for r in summary.reconciled] == [
        (trial.id, "completed", None)
    ]
    (row,) = [t for t in store.trials(cid) if t.id == trial.id]
    assert (row.status, row.readbacks) == ("completed", {"x1": 1.25, "x2": 3.5})
    assert store.observations(cid)[trial.id or 0] == {"y": 0.5}
    assert (summary.status, summary.completed, summary.failed) == ("completed", 2, 0)


def _crash_with_trials_in_flight(store: Store, cid: int) -> tuple[int, int]:
    """What a SIGKILL leaves: one trial whose run had closed, one cut mid-run."""
    closed = store.add_trial(cid, {"x1": 1.2, "x2": 3.5}, "sobol")
    for seq, (name, body) in enumerate(_docs(stop="success"), start=1):
        store.add_document(closed.id or 0, seq, name, body, "run-1")
    cut = store.add_trial(cid, {"x1": 0.0, "x2": 0.0}, "sobol")
    for seq, (name, body) in enumerate(_docs(stop=None, event=False), start=1):
        store.add_document(cut.id or 0, seq, name, body, "run-2")
    store.finish_campaign(cid, "running", "")  # killed: nobody wrote 'stopped'
    return closed.id or 0, cut.id or 0


def test_resume_reconciles_in_flight_trials_and_rebuilds_the_planner(tmp_path: Path) -> None:
    store = _store(tmp_path)
    first = Runner(_loaded(tmp_path), store, max_trials=3).run()
    cid = first.campaign_id
    closed, cut = _crash_with_trials_in_flight(store, cid)

    summary = Runner.from_store(store, max_trials=7).resume()
    assert summary.campaign_id == cid
    assert [(r.trial_id, r.status) for r in summary.reconciled] == [
        (closed, "completed"),
        (cut, "abandoned"),
    ]
    # max_trials counts completed trials over both sessions; the abandoned one is not counted
    assert (summary.status, summary.completed, summary.failed, summary.abandoned) == (
        "completed",
        7,
        0,
        1,
    )
    trials = {t.id: t for t in store.trials(cid)}
    assert [t.number for t in trials.values()] == list(range(1, 9))
    assert trials[closed].status == "completed" and trials[closed].run_uid == "run-1"
    assert trials[closed].readbacks == {"x1": 1.25, "x2": 3.5}
    assert store.observations(cid)[closed] == {"y": 1.5}
    assert trials[cut].status == "abandoned" and "no stop document" in (trials[cut].error or "")
    # the planner was rebuilt from all five stored trials: the sixth Sobol point comes next
    space = _loaded(tmp_path).campaign.space
    (expected,) = SobolPlanner(space, seed=4).design.points(5, 1)
    assert trials[max(k for k in trials if k is not None)].number == 8
    sixth = next(t for t in trials.values() if t.number == 6)
    assert sixth.parameters == pytest.approx(expected)
    row = store.campaign(cid)
    assert row.status == "completed" and store.lease(cid) is None
    assert row.budget is not None and row.budget["max_trials"] == 7
    assert row.elapsed_seconds > 0


def test_resume_of_a_completed_campaign_is_refused_unless_extended(tmp_path: Path) -> None:
    store = _store(tmp_path)
    cid = Runner(_loaded(tmp_path), store, max_trials=2).run().campaign_id
    with pytest.raises(CampaignFinished, match=r"is completed.*--max-trials 12"):
        Runner.from_store(store, cid).resume()
    assert store.trials(cid)[-1].number == 2  # nothing ran
    seen: list[tuple[str, str | None]] = []

    class Watch:
        def trial_started(self, number: int, parameters: dict) -> None:
            row = store.campaign(cid)
            seen.append((row.status, row.stop_reason))

        def trial_finished(self, report: Any) -> None:
            pass

    summary = Runner.from_store(store, "resumable", max_trials=4, listener=Watch()).resume()
    assert (summary.status, summary.completed) == ("completed", 4)
    # the resumed session shows as running, not as the last session's end
    assert seen == [("running", None)] * 2
    # the extended budget is stored: resuming again without it is refused again
    with pytest.raises(CampaignFinished, match=r"max_trials reached \(4"):
        Runner.from_store(store, cid).resume()


def test_a_paused_campaign_whose_budget_is_spent_is_closed_not_refused(tmp_path: Path) -> None:
    """Found in review: a runner that died waiting for interlocks leaves its campaign
    ``paused``. Resumed with its budget spent, it was refused ("is paused: waiting for
    interlocks ...; To extend it ...") and stayed ``paused``; a ``running`` one is closed
    as ``completed``. Every unfinished state is resumed alike."""
    store = _store(tmp_path)
    cid = Runner(_loaded(tmp_path), store, max_trials=2).run().campaign_id
    for status in ("paused", "running", "stopped"):
        store.finish_campaign(cid, status, "waiting for interlocks: door open")
        summary = Runner.from_store(store, cid).resume()
        assert (summary.status, summary.reason) == (
            "completed",
            "max_trials reached (2 completed trials)",
        ), status
        row = store.campaign(cid)
        assert (row.status, row.stop_reason) == ("completed", summary.reason), status
        assert len(store.trials(cid)) == 2  # nothing ran
    # a paused one is found by default, as the latest unfinished campaign
    store.finish_campaign(cid, "paused", "waiting for interlocks: door open")
    assert Runner.from_store(store).resume().status == "completed"


def test_a_failed_campaign_resumes_with_a_larger_max_failures(tmp_path: Path) -> None:
    text = BRANIN.replace("{simulator: branin}", "{simulator: branin, failure_rate: 1.0}")
    store = _store(tmp_path)
    cid = Runner(_loaded(tmp_path, text), store, max_failures=2).run().campaign_id
    with pytest.raises(CampaignFinished, match="--max-failures"):
        Runner.from_store(store, cid).resume()
    summary = Runner.from_store(store, cid, max_failures=3).resume()
    assert (summary.status, summary.failed, summary.completed) == ("failed", 3, 0)


def test_a_campaign_out_of_time_resumes_with_a_longer_max_duration(tmp_path: Path) -> None:
    text = BRANIN.replace("{simulator: branin}", "{simulator: branin, latency: 0.2}")
    store = _store(tmp_path)
    first = Runner(_loaded(tmp_path, text), store, max_trials=200, max_duration=0.5).run()
    assert first.reason.startswith("max_duration reached")
    # the hint names the limit that ended it: more trials would not help
    with pytest.raises(CampaignFinished, match=r"--max-duration 2m`$"):
        Runner.from_store(store, first.campaign_id, max_trials=500).resume()
    done = len(store.trials(first.campaign_id))
    more = Runner.from_store(store, first.campaign_id, max_duration=1.5).resume()
    assert more.reason.startswith("max_duration reached")
    assert len(store.trials(first.campaign_id)) > done
    proc = subprocess.run(
        [sys.executable, "-m", "loop.cli", "resume", "--store", store.url, "--max-duration", "2x"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "'2x' is not a duration" in proc.stderr and "Traceback" not in proc.stderr


def test_resume_without_an_unfinished_campaign_says_so(tmp_path: Path) -> None:
    store = _store(tmp_path)
    Runner(_loaded(tmp_path), store, max_trials=1).run()
    with pytest.raises(Exception, match="no unfinished campaign"):
        Runner.from_store(store)


# ---------------------------------------------------------------------------- leases
def _unfinished_campaign(tmp_path: Path, store: Store) -> int:
    cid = Runner(_loaded(tmp_path), store, max_trials=1).run().campaign_id
    store.finish_campaign(cid, "stopped", "test")
    return cid


def test_a_second_runner_is_refused_while_the_lease_is_live(tmp_path: Path) -> None:
    store = _store(tmp_path)
    cid = _unfinished_campaign(tmp_path, store)
    holder = CampaignLease(store)
    holder.acquire(cid)
    with pytest.raises(CampaignLocked, match=f"being run by {holder.owner}") as info:
        Runner.from_store(store, cid).resume()
    assert info.value.owner == holder.owner
    assert store.lease(cid).token == holder.token  # type: ignore[union-attr]
    holder.release()
    assert Runner.from_store(store, cid, max_trials=2).resume().completed == 2


def test_a_budget_below_the_completed_trials_is_refused(tmp_path: Path) -> None:
    """`resume --max-trials 5` of a stopped campaign with 8 completed ended it at once and
    stored a budget of 5 beside "8 completed trials" (a typo for 50; found in review)."""
    store = _store(tmp_path)
    cid = Runner(_loaded(tmp_path), store, max_trials=3).run().campaign_id
    store.finish_campaign(cid, "stopped", "test")
    with pytest.raises(CampaignFinished, match="has 3 completed trials, more than the max_tr"):
        Runner.from_store(store, cid, max_trials=2).resume()
    assert store.campaign(cid).status == "stopped"  # nothing changed
    assert Runner.from_store(store, cid, max_trials=3).resume().status == "completed"


def _foreign_lease(store: Store, cid: int, *, host: str, pid: int, expires_in: float) -> None:
    claim = LeaseClaim(owner=f"{host}:{pid}", host=host, pid=pid, token="theirs", ttl=30)
    assert store.insert_lease(cid, claim)
    with store.session() as s:
        row = s.get(LeaseRow, cid)
        assert row is not None
        row.heartbeat, row.expires = time.time() - 60, time.time() + expires_in
        s.add(row)
        s.commit()


def test_an_expired_lease_is_taken_over(tmp_path: Path) -> None:
    store = _store(tmp_path)
    cid = _unfinished_campaign(tmp_path, store)
    _foreign_lease(store, cid, host="other-host", pid=4242, expires_in=-1)
    summary = Runner.from_store(store, cid, max_trials=2).resume()
    assert summary.completed == 2 and store.lease(cid) is None


def test_a_live_lease_on_another_host_is_respected(tmp_path: Path) -> None:
    store = _store(tmp_path)
    cid = _unfinished_campaign(tmp_path, store)
    _foreign_lease(store, cid, host="other-host", pid=4242, expires_in=30)
    with pytest.raises(CampaignLocked, match="other-host:4242"):
        Runner.from_store(store, cid).resume()


def test_the_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    store = _store(tmp_path)
    cid = _unfinished_campaign(tmp_path, store)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _foreign_lease(store, cid, host=host_id(), pid=dead.pid, expires_in=30)
    assert Runner.from_store(store, cid, max_trials=2).resume().completed == 2


def test_a_lease_from_another_pid_namespace_on_this_hostname_waits_for_expiry(
    tmp_path: Path,
) -> None:
    # A runner in another container (host networking: same hostname, own process ids) whose
    # pid does not exist here was taken for dead and lost its lease at once.
    store = _store(tmp_path)
    cid = _unfinished_campaign(tmp_path, store)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    if Path("/proc/self/ns/pid").exists():
        assert host_id() == f"{socket.gethostname()} {os.readlink('/proc/self/ns/pid')}"
    other_container = f"{socket.gethostname()} pid:[1]"
    _foreign_lease(store, cid, host=other_container, pid=dead.pid, expires_in=30)
    with pytest.raises(CampaignLocked, match=f":{dead.pid} "):
        Runner.from_store(store, cid).resume()


def test_a_runner_that_lost_its_lease_writes_nothing_more(tmp_path: Path) -> None:
    store = _store(tmp_path)
    cid = _unfinished_campaign(tmp_path, store)
    stalled = CampaignLease(store, ttl=0.5, interval=0.05)
    stalled.acquire(cid)
    time.sleep(0.6)  # it missed its heartbeats: expired
    successor = CampaignLease(store)
    assert "heartbeat" in (successor.acquire(cid) or "")
    stalled.start_heartbeat()
    assert stalled.lost.wait(5.0)
    with pytest.raises(LeaseLost):
        stalled.check()
    with pytest.raises(LeaseLost, match=successor.owner):
        store.add_trial(cid, {"x1": 0.0, "x2": 0.0}, "sobol", token=stalled.token)
    stalled.release()
    assert store.lease(cid).token == successor.token  # type: ignore[union-attr]
    successor.release()


def test_request_stop_stops_cleanly_and_the_campaign_resumes(tmp_path: Path) -> None:
    text = BRANIN.replace("{simulator: branin}", "{simulator: branin, latency: 0.2}")
    store = _store(tmp_path)

    class StopAfterTwo:
        runner: Runner

        def trial_started(self, number: int, parameters: dict) -> None:
            if number == 3:  # from another thread, in the middle of the 0.2 s measurement
                threading.Timer(0.1, self.runner.request_stop, ["stopped by the test"]).start()

        def trial_finished(self, report: Any) -> None:
            pass

    listener = StopAfterTwo()
    runner = Runner(_loaded(tmp_path, text), store, max_trials=5, listener=listener)
    listener.runner = runner
    summary = runner.run()
    assert (summary.status, summary.reason) == ("stopped", "stopped by the test")
    trials = store.trials(summary.campaign_id)
    assert [t.status for t in trials] == ["completed", "completed", "abandoned"]
    assert "stopped by the test" in (trials[-1].error or "")
    docs = store.documents(trials[-1].id or 0)
    assert docs[-1].name == "stop" and docs[-1].body["exit_status"] == "abort"
    resumed = Runner.from_store(store).resume()
    assert (resumed.status, resumed.completed, resumed.abandoned) == ("completed", 5, 1)


# ---------------------------------------------------------------------------- signals (CLI)
SLOW_BRANIN = BRANIN.replace("{simulator: branin}", "{simulator: branin, latency: 0.3}").replace(
    "{max_trials: 6}", "{max_trials: 200}"
)


def _cli(*args: str, cwd: Path) -> Process:
    """The command with the stop signals as a terminal's shell leaves them: a suite started
    under ``nohup`` hands its children SIGHUP ignored, which closedloop rightly keeps
    ignored (``loop.runner.stop_on_signals``), so the SIGHUP case waited out its timeout."""
    return start_cli(args, cwd=cwd, default_stop_signals=True)


def _wait_for_completed(db: Path, n: int, proc: Process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"runner exited early: {proc.communicate()}")
        if db.exists():
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                try:
                    (done,) = conn.execute(
                        "SELECT count(*) FROM trial WHERE status = 'completed'"
                    ).fetchone()
                except sqlite3.OperationalError:
                    done = 0
            if done >= n:
                return
        time.sleep(0.05)
    raise AssertionError(f"no {n} completed trials within {timeout} s")


# A planner whose second suggest keeps libtorch's thread pool busy for long after a stop.
SPINNING_PLANNER = """
import random
from pathlib import Path

import torch


class Spin:
    def __init__(self, context):
        self.seen = 0
        self.last_kinds = []

    def ingest(self, observations):
        self.seen += len(observations)

    def suggest(self, n=1, pending=()):
        if self.seen:
            Path("SPINNING").touch()
            a = torch.rand(300, 300)
            for _ in range(200_000):  # minutes: stopped long before it ends
                a = torch.tanh(a @ a)
        self.last_kinds = ["random"] * n
        return [{"x": random.random()} for _ in range(n)]
"""


@pytest.mark.slow
def test_a_stop_during_a_suggest_exits_130_from_a_fresh_interpreter(tmp_path: Path) -> None:
    """Ctrl-C while the planner computes: the planner thread is left behind at once
    (``loop.cli._leave_planner_behind``); left to the interpreter's teardown, libtorch's
    pool was torn down under it: "terminate called without an active exception", exit 134
    (found in review). A fresh interpreter, not the zygote's fork, whose children end
    without that teardown."""
    (tmp_path / "spin.py").write_text(SPINNING_PLANNER)
    (tmp_path / "c.yaml").write_text(
        "name: spin\n"
        "parameters: [{name: x, type: float, bounds: [0, 1]}]\n"
        "objectives: [{name: y, goal: maximize}]\n"
        "instrument: {function: f.py:measure, outputs: [y]}\n"
        "planner: {plugin: spin.py:Spin}\n"
        "budget: {max_trials: 5}\n"
    )
    (tmp_path / "f.py").write_text("def measure(x):\n    return {'y': x['x']}\n")
    proc = start_cli(
        ["run", "c.yaml", "--store", "sqlite:///s.db"],
        cwd=tmp_path,
        default_stop_signals=True,
        fresh=True,
    )
    with proc:
        try:
            deadline = time.monotonic() + 120
            while not (tmp_path / "SPINNING").exists():
                assert proc.poll() is None, proc.communicate(timeout=10)
                assert time.monotonic() < deadline, "the second suggest never started"
                time.sleep(0.1)
            time.sleep(0.5)  # inside the matrix products
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:  # a failed test leaves no process spinning torch on the shared cores
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "terminate called" not in err
    assert "closedloop resume --store sqlite:///s.db" in err


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"]
)
def test_a_signal_stops_the_campaign_cleanly_and_resumable(
    sig: signal.Signals, tmp_path: Path
) -> None:
    (tmp_path / "c.yaml").write_text(SLOW_BRANIN)
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    proc = _cli("run", "c.yaml", "--store", url, "-q", cwd=tmp_path)
    _wait_for_completed(db, 2, proc)
    # while it runs, a second runner on the same campaign is refused, naming the owner
    other = _cli("resume", "--store", url, cwd=tmp_path)
    _, err = other.communicate(timeout=60)
    # 75 (EX_TEMPFAIL): busy, try again later; not 1, a failure to alert someone about
    assert other.returncode == 75 and f":{proc.pid}" in err and "being run by" in err, err
    again = _cli("run", "c.yaml", "--store", url, cwd=tmp_path)
    _, err = again.communicate(timeout=60)
    assert again.returncode == 75 and "is running" in err and f":{proc.pid}" in err, err

    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert f"closedloop resume --store {url}" in err
    store = Store(url, create=False)
    row = store.campaign()
    # SIGHUP: a closed terminal or ssh session, which killed the runner (found in review)
    name = {signal.SIGINT: "Ctrl-C", signal.SIGHUP: "SIGHUP (terminal closed)"}.get(sig, "SIGTERM")
    assert (row.status, row.stop_reason) == ("stopped", f"stopped by {name}")
    trials = store.trials(row.id or 0)
    assert all(t.status in ("completed", "abandoned") for t in trials), trials
    assert store.lease(row.id or 0) is None
    n_completed = sum(t.status == "completed" for t in trials)

    resumed = _cli(
        "resume", "--store", url, "--max-trials", str(n_completed + 2), "-q", cwd=tmp_path
    )
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, (out, err)
    assert store.campaign(row.id).status == "completed"
    assert sum(t.status == "completed" for t in store.trials(row.id or 0)) == n_completed + 2
    store.close()


def test_stored_outputs_match_the_simulator_after_resume(tmp_path: Path) -> None:
    store = _store(tmp_path)
    cid = Runner(_loaded(tmp_path), store, max_trials=2).run().campaign_id
    store.finish_campaign(cid, "stopped", "test")
    Runner.from_store(store, cid, max_trials=4).resume()
    branin = get_problem("branin")
    observations = store.observations(cid)
    for t in store.trials(cid):
        assert observations[t.id or 0]["y"] == pytest.approx(
            branin.evaluate(t.readbacks or {})["y"], rel=1e-12
        )


def test_signal_handlers_are_restored_after_the_command(tmp_path: Path) -> None:
    # the CLI installs its handlers only around run/resume, on the main thread
    before = signal.getsignal(signal.SIGTERM)
    from typer.testing import CliRunner

    from loop.cli import app

    (tmp_path / "c.yaml").write_text(BRANIN)
    result = CliRunner().invoke(
        app, ["run", str(tmp_path / "c.yaml"), "--store", f"sqlite:///{tmp_path / 's.db'}", "-q"]
    )
    assert result.exit_code == 0, result.output
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_trial_left_in_flight_ended_when_its_runner_was_last_alive_not_at_resume(
    tmp_path: Path,
) -> None:
    """A run cut short at 07:24 and resumed at 07:38 read as a 14-minute run (found in
    review): its ``finished_at`` and the stop document written for it are the last sign of
    life the store holds, the later of its last document and its runner's last heartbeat."""
    store = _store(tmp_path)
    cid = _unfinished_campaign(tmp_path, store)
    now = time.time()
    cut = store.add_trial(cid, {"x1": 0.0, "x2": 0.0}, "sobol")
    for seq, (name, body) in enumerate(_docs(stop=None, event=False), start=1):
        store.add_document(cut.id or 0, seq, name, {**body, "time": now - 900 + seq}, "run-1")
    quiet = store.add_trial(cid, {"x1": 1.0, "x2": 1.0}, "sobol", slot=0)  # no document
    _foreign_lease(store, cid, host="other-host", pid=4242, expires_in=-1)  # beat at now - 60
    Runner.from_store(store, cid, max_trials=3).resume()

    trials = {t.id: t for t in store.trials(cid)}
    for trial_id in (cut.id, quiet.id):
        row = trials[trial_id]
        assert row.status == "abandoned" and row.finished_at is not None
        ended = as_utc(row.finished_at).timestamp()
        assert ended == pytest.approx(now - 60, abs=2), (row.number, now - ended)
    (stop,) = [d.body for d in store.documents(cut.id or 0) if d.name == "stop"]
    assert stop["time"] == pytest.approx(now - 60, abs=2)
