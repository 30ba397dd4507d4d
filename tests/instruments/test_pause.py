"""A campaign paused by its interlocks: the store and ``closedloop status`` show it, and an
operator's ``closedloop release`` (another process, through the store) lets the waiting trial
proceed despite them, recorded with who and when.

No Channel Access here: the interlock reads a plugin device's output (an ophyd ``Signal``),
so the gate, the store and the CLI are exercised without an IOC (the IOC tests cover the PV
path of the same gate).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from ophyd import Signal
from typer.testing import CliRunner

from instruments import Dispatcher, Instrument, build_instrument, input_specs
from instruments._epics import DeclaredInstrument, build_declared_instrument
from instruments._instrument_file import Interlock, parse_instrument
from instruments._safety import InterlockCheck
from loop.cli import app
from loop.config import load_campaign
from loop.pause import CampaignPause
from loop.runner import CampaignSummary, Runner
from loop.store import Store

CAMPAIGN = """\
name: door-bench
parameters:
  - {name: x, type: float, bounds: [0, 2]}
objectives:
  - {name: y, goal: maximize}
instrument:
  devices:
    name: door-bench
    inputs:
      x: {device: "ophyd:Signal", args: {value: 1.0}, limits: [0, 2]}
    outputs:
      y: {device: "ophyd:Signal", args: {value: 0.5}}
      door: {device: "ophyd:Signal", args: {value: 0}}
    interlocks: [door == 1]
    interlock_poll: 0.05
planner: {kind: sobol}
budget: {max_trials: 2}
seed: 1
"""
REASON = "interlock door == 1 does not hold (door = 0)"


def _door(instrument: DeclaredInstrument) -> Any:
    return next(o.target for o in instrument.detector.outputs if o.name == "door")


def _until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.02)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


class _Paused:
    """A campaign run on its own thread from ``text``, waiting at its interlocks; on exit
    it is asked to stop and its thread joined."""

    def __init__(self, tmp_path: Path, text: str) -> None:
        (tmp_path / "c.yaml").write_text(text)
        self.url = f"sqlite:///{tmp_path / 'c.db'}"
        self.store = Store(self.url)
        self.built: list[DeclaredInstrument] = []
        self.summaries: list[CampaignSummary] = []

        def factory(campaign: Any, seed: int) -> Instrument:
            inst = build_instrument(
                campaign.instrument, campaign.parameters, base_dir=tmp_path, seed=seed
            )
            assert isinstance(inst, DeclaredInstrument)
            self.built.append(inst)
            return inst

        self.runner = Runner(
            load_campaign(tmp_path / "c.yaml"), self.store, instrument_factory=factory
        )
        self.worker = threading.Thread(
            target=lambda: self.summaries.append(self.runner.run()), daemon=True
        )
        self.cid = 0

    def __enter__(self) -> _Paused:
        self.worker.start()
        _until(lambda: self.runner.campaign_id is not None, "the campaign exists")
        self.cid = self.runner.campaign_id or 0
        _until(lambda: self.store.campaign(self.cid).status == "paused", "the campaign pauses")
        return self

    def __exit__(self, *exc: object) -> None:
        self.runner.request_stop("test over")
        self.worker.join(timeout=30)


def test_a_campaign_pauses_shows_why_and_an_operator_release_is_recorded(
    tmp_path: Path,
) -> None:
    with _Paused(tmp_path, CAMPAIGN) as paused:
        store, url, cid, built, worker = (
            paused.store,
            paused.url,
            paused.cid,
            paused.built,
            paused.worker,
        )
        row = store.campaign(cid)
        assert row.stop_reason == REASON
        # nothing moved: the trial waits before its first put
        (inst,) = built
        assert inst.inputs["x"]._positioner.get() == 1.0

        shown = _cli("status", "--store", url, "-c", str(cid))
        assert shown.exit_code == 0, shown.output
        assert f"paused: {REASON}" in shown.output
        assert f"PAUSED: waiting for interlocks: {REASON}" in shown.output
        assert "closedloop release" in shown.output

        # without --confirm nothing is recorded
        asked = _cli("release", "--store", url, "-c", str(cid))
        assert asked.exit_code == 2, asked.output
        assert "DESPITE" in asked.output and "--confirm" in asked.output
        assert [e.kind for e in store.events(cid)] == ["paused"]

        released = _cli(
            "release", "--store", url, "-c", str(cid), "--confirm", "--by", "alice",
            "--note", "door sensor broken, door checked by hand", "--wait", "30",
        )  # fmt: skip
        assert released.exit_code == 0, released.output
        assert "recorded by alice" in released.output
        assert "proceeded despite" in released.output
        # trial 1 went on; trial 2 waits again: a release is for one wait only
        _until(lambda: len(store.trials(cid)) == 2, "the second trial starts")
        _until(lambda: store.campaign(cid).status == "paused", "the second trial pauses")
        assert store.trials(cid)[0].status == "completed"
        _door(inst).put(1)  # fixed: the campaign goes on by itself
        worker.join(timeout=60)
        assert not worker.is_alive()
    (summary,) = paused.summaries
    assert summary.status == "completed", summary.reason
    assert store.campaign(cid).status == "completed"
    events = store.events(cid)
    assert [(e.kind, e.detail if e.kind != "release" else e.by) for e in events] == [
        ("paused", REASON),
        ("release", "alice"),
        ("resumed", "released by alice"),
        ("paused", REASON),
        ("resumed", "interlocks hold again"),
    ]
    release = events[1]
    assert release.handled_at is not None and release.at <= release.handled_at
    assert release.detail == f"{REASON} (note: door sensor broken, door checked by hand)"
    assert release.outcome == f"the waiting trial proceeded despite: {REASON}"
    shown = _cli("status", "--store", url, "-c", str(cid))
    assert "PAUSED" not in shown.output
    assert "last release: by alice" in shown.output
    store.close()


def test_release_refuses_a_campaign_that_is_not_paused_or_has_no_runner(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = Store(url)
    cid = store.create_campaign("c", "name: c", str(tmp_path / "c.yaml"), 1)
    # nothing to release: refused as given (2, as `resume` with nothing to resume), on stderr
    out = _cli("release", "--store", url, "-c", str(cid), "--confirm")
    assert out.exit_code == 2 and out.stdout == ""
    assert "running, not paused" in out.stderr
    out = _cli("release", "--store", url, "--confirm")
    assert out.exit_code == 2 and out.stdout == ""
    assert "no paused campaign" in out.stderr
    # paused by a runner that then died: resume, not release, goes on
    assert store.pause_campaign(cid, REASON)
    out = _cli("release", "--store", url, "--confirm")
    assert out.exit_code == 2 and out.stdout == ""
    assert "no runner is driving it" in out.stderr and "closedloop resume" in out.stderr
    assert [e.kind for e in store.events(cid)] == ["paused"]
    # a paused campaign left by a crash is unfinished: resume finds it
    assert store.latest_unfinished().id == cid
    store.close()


def test_the_pause_never_overwrites_a_finished_status(tmp_path: Path) -> None:
    """A wait cancelled by a stop ends after the runner wrote ``stopped``: it must stay so."""
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    cid = store.create_campaign("c", "name: c", str(tmp_path / "c.yaml"), 1)
    assert store.pause_campaign(cid, REASON)
    store.finish_campaign(cid, "stopped", "stopped by SIGINT")
    assert not store.unpause_campaign(cid, "stopped")
    assert not store.pause_campaign(cid, REASON)
    assert store.campaign(cid).status == "stopped"
    store.close()


def test_a_release_is_for_the_wait_it_was_given_for(tmp_path: Path) -> None:
    """A release not taken before its wait ended (the door closed again), or given to a
    runner that was then killed, overrode the next wait: the next `resume` moved the
    heater with the door open (found in review). The wait's end, and a resume, close it."""
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    cid = store.create_campaign("c", "name: c", str(tmp_path / "c.yaml"), 1)
    pause = CampaignPause(store, lambda: cid, lambda: None)
    gate = object()
    pause.paused(gate, REASON)
    store.request_release(cid, by="bob", detail=REASON)
    pause.resumed(gate, "interlocks hold again")  # before the release was taken
    pause.paused(gate, REASON)
    assert pause.release_requested(gate) is None  # the next wait is not overridden
    (event,) = [e for e in store.events(cid) if e.kind == "release"]
    assert event.outcome == "not needed: interlocks hold again"
    store.close()
    # a release left open by a runner killed while it waited: a resume closes it first
    door_closed = 'door: {device: "ophyd:Signal", args: {value: 1}}'
    text = CAMPAIGN.replace('door: {device: "ophyd:Signal", args: {value: 0}}', door_closed)
    (tmp_path / "d.yaml").write_text(text)
    store = Store(f"sqlite:///{tmp_path / 'd.db'}")
    cid = Runner(load_campaign(tmp_path / "d.yaml"), store, max_trials=1).run().campaign_id or 0
    store.add_event(cid, "release", by="carol", detail=REASON)  # as `release` records it
    Runner.from_store(store, cid, max_trials=2).resume()
    (carol,) = [e for e in store.events(cid) if e.kind == "release"]
    assert (carol.by, carol.outcome) == ("carol", "not used: its session ended")
    store.close()


def test_a_dispatcher_attaches_the_listener_to_the_gate(tmp_path: Path) -> None:
    """Two slots waiting at once: paused until the last goes on; one release frees both."""
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    loaded = load_campaign(tmp_path / "c.yaml")
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    cid = store.create_campaign("c", loaded.text, str(tmp_path / "c.yaml"), 1)
    pause = CampaignPause(store, lambda: cid, lambda: None)
    c = loaded.campaign
    slots = [build_instrument(c.instrument, c.parameters, base_dir=tmp_path, seed=0) for _ in "ab"]
    dispatchers = [Dispatcher(inst, interlock_listener=pause) for inst in slots]
    results: list[Any] = []
    workers = [
        threading.Thread(target=lambda d=d: results.append(d.run(1, "c", {"x": 0.5})))
        for d in dispatchers
    ]
    try:
        assert all(inst.gate.listener is pause for inst in slots)  # type: ignore[attr-defined]
        for w in workers:
            w.start()
        _until(lambda: len(pause._waiting) == 2, "both slots wait")
        assert store.campaign(cid).status == "paused"
        store.request_release(cid, by="bob", detail=REASON)
        for w in workers:
            w.join(timeout=30)
        assert [r.exit_status for r in results] == ["success", "success"]
        assert store.campaign(cid).status == "running"
        handled = [e for e in store.events(cid) if e.kind == "release"]
        assert len(handled) == 1 and handled[0].handled_at is not None
        assert [i.gate.overrides for i in slots] == [["bob"], ["bob"]]  # type: ignore[attr-defined]
    finally:
        for d in dispatchers:
            d.close()
        for inst in slots:
            inst.close()
        store.close()


def _door_bench(door: float, interlock: str, settle_time: float = 0.0) -> DeclaredInstrument:
    """One input behind a door interlock read from a plain ophyd Signal (no IOC)."""
    spec = parse_instrument(
        {
            "name": "door-bench",
            "inputs": {
                "x": {
                    "device": "ophyd:Signal",
                    "args": {"value": 1.0},
                    "limits": [0, 2],
                    "settle_time": settle_time,
                }
            },
            "outputs": {
                "y": {"device": "ophyd:Signal", "args": {"value": 0.5}},
                "door": {"device": "ophyd:Signal", "args": {"value": door}},
            },
            "interlocks": [interlock],
            "interlock_poll": 0.05,
        }
    )
    return build_declared_instrument(spec, input_specs([("x", (0.0, 2.0))]), connect=False)


def _run_in_thread(dispatcher: Dispatcher, results: list[Any], **kwargs: Any) -> threading.Thread:
    worker = threading.Thread(
        target=lambda: results.append(dispatcher.run(1, "c", {"x": 0.5}, **kwargs)), daemon=True
    )
    worker.start()
    return worker


@pytest.mark.parametrize("op", ["==", "!=", "<", "<=", ">", ">="])
def test_an_interlock_that_reads_nan_never_holds(op: str) -> None:
    unreadable = Signal(name="door", value=math.nan)
    check = InterlockCheck(Interlock(name="door", op=op, value=1), unreadable.get)  # type: ignore[arg-type]
    assert check.problem() == f"door {op} 1 cannot be checked: door reads nan, not a finite number"


def test_a_trial_waits_while_its_interlock_reads_nan() -> None:
    # `nan != 0` is True: an unreadable door sensor used to let the trial through
    inst = _door_bench(math.nan, "door != 0")
    results: list[Any] = []
    try:
        with Dispatcher(inst) as dispatcher:
            worker = _run_in_thread(dispatcher, results)
            _until(lambda: inst.gate.pauses == 1, "the trial waits")
            assert inst.inputs["x"]._positioner.get() == 1.0  # nothing moved
            _door(inst).put(1)
            worker.join(timeout=30)
        (result,) = results
        assert result.ok, result.error
        assert inst.inputs["x"]._positioner.get() == 0.5
    finally:
        inst.close()


def test_the_timeout_does_not_run_while_the_trial_waits_for_interlocks() -> None:
    """The door is open for longer than the timeout: the trial waits, then runs. (The
    timeout leaves the 0.2 s settle room to spare: 0.5 s timed it out on a host loaded 6x
    over its cores.)"""
    inst = _door_bench(0, "door == 1", settle_time=0.2)
    results: list[Any] = []
    try:
        with Dispatcher(inst) as dispatcher:
            worker = _run_in_thread(dispatcher, results, timeout=2.0)
            _until(lambda: inst.gate.pauses == 1, "the trial waits")
            time.sleep(2.5)
            assert worker.is_alive()  # still waiting, not timed out
            _door(inst).put(1)
            worker.join(timeout=30)
        (result,) = results
        assert result.ok and not result.timed_out, result.error
        assert inst.gate.waited() >= 2.5
    finally:
        inst.close()
    # the time it works still counts: a settle longer than the timeout times out
    slow = _door_bench(1, "door == 1", settle_time=3.0)
    try:
        with Dispatcher(slow) as dispatcher:
            result = dispatcher.run(1, "c", {"x": 0.5}, timeout=0.5)
        assert result.timed_out and result.exit_status == "fail"
        assert (result.error or "").startswith("timed out after 0.5 s")
    finally:
        slow.close()


TWO_INPUTS = CAMPAIGN.replace(
    "  - {name: x, type: float, bounds: [0, 2]}\n",
    "  - {name: x, type: float, bounds: [0, 2]}\n  - {name: z, type: float, bounds: [0, 2]}\n",
).replace(
    '      x: {device: "ophyd:Signal", args: {value: 1.0}, limits: [0, 2]}\n',
    '      x: {device: "ophyd:Signal", args: {value: 1.0}, limits: [0, 2]}\n'
    '      z: {device: "ophyd:Signal", args: {value: 1.0}, limits: [0, 2]}\n',
)


def _two_input_bench(door: float) -> DeclaredInstrument:
    """Two inputs behind one door interlock (plain ophyd Signals, no IOC)."""
    spec = parse_instrument(
        {
            "name": "door-bench",
            "inputs": {
                name: {"device": "ophyd:Signal", "args": {"value": 1.0}, "limits": [0, 2]}
                for name in ("x", "z")
            },
            "outputs": {
                "y": {"device": "ophyd:Signal", "args": {"value": 0.5}},
                "door": {"device": "ophyd:Signal", "args": {"value": door}},
            },
            "interlocks": ["door == 1"],
            "interlock_poll": 0.05,
        }
    )
    specs = input_specs([("x", (0.0, 2.0)), ("z", (0.0, 2.0))])
    return build_declared_instrument(spec, specs, connect=False)


def _positions(inst: DeclaredInstrument) -> dict[str, float]:
    return {name: dev._positioner.get() for name, dev in inst.inputs.items()}


def test_one_release_lets_every_input_of_the_trial_move_and_only_that_trial() -> None:
    """The gate used to be passed per input and a release handed out once: `x` moved with
    the door open, then `z` paused again and the trial timed out. One release is now for the
    whole trial; the next trial checks the interlocks afresh."""
    inst = _two_input_bench(0)
    results: list[Any] = []
    try:
        with Dispatcher(inst) as dispatcher:
            worker = threading.Thread(
                target=lambda: results.append(
                    dispatcher.run(1, "c", {"x": 0.5, "z": 1.5}, timeout=20)
                ),
                daemon=True,
            )
            worker.start()
            _until(lambda: inst.gate.pauses == 1, "the trial waits", timeout=20)
            assert _positions(inst) == {"x": 1.0, "z": 1.0}  # nothing moved yet
            inst.gate.release()
            worker.join(timeout=30)
            assert not worker.is_alive()
            (first,) = results
            assert first.ok, first.error
            assert _positions(inst) == {"x": 0.5, "z": 1.5}
            assert (inst.gate.pauses, inst.gate.overrides) == (1, ["the operator"])

            # the next trial, door still open: it waits again, before any put
            worker = threading.Thread(
                target=lambda: results.append(
                    dispatcher.run(2, "c", {"x": 0.25, "z": 0.75}, timeout=20)
                ),
                daemon=True,
            )
            worker.start()
            _until(lambda: inst.gate.pauses == 2, "the next trial waits", timeout=20)
            assert _positions(inst) == {"x": 0.5, "z": 1.5}
            _door(inst).put(1)
            worker.join(timeout=30)
        second = results[1]
        assert second.ok, second.error
        assert _positions(inst) == {"x": 0.25, "z": 0.75}
        assert (inst.gate.pauses, inst.gate.overrides) == (2, ["the operator"])
    finally:
        inst.close()


def test_a_release_given_while_nothing_waits_does_not_let_a_later_trial_through() -> None:
    inst = _two_input_bench(0)
    results: list[Any] = []
    try:
        inst.gate.release()  # nothing waits: there is no trial to release
        with Dispatcher(inst) as dispatcher:
            worker = threading.Thread(
                target=lambda: results.append(dispatcher.run(1, "c", {"x": 0.5, "z": 1.5})),
                daemon=True,
            )
            worker.start()
            _until(lambda: inst.gate.pauses == 1, "the trial waits", timeout=20)
            time.sleep(0.3)  # several polls: the stale release must not be taken
            assert inst.gate.overrides == [] and worker.is_alive()
            assert _positions(inst) == {"x": 1.0, "z": 1.0}
            _door(inst).put(1)
            worker.join(timeout=30)
        (result,) = results
        assert result.ok, result.error
    finally:
        inst.close()


def test_a_move_outside_a_run_never_rides_on_an_earlier_moves_pass() -> None:
    """Outside a RunEngine nobody calls ``stop()`` to end the trial: an input's second move
    is a new trial all the same, and checks the interlocks again."""
    inst = _two_input_bench(1)
    x = inst.inputs["x"]
    try:
        x.set(0.5).wait(10)
        assert inst.gate.pauses == 0
        _door(inst).put(0)
        status = x.set(0.25)
        _until(lambda: inst.gate.pauses == 1, "the second move waits", timeout=20)
        assert x._positioner.get() == 0.5
        _door(inst).put(1)
        status.wait(10)
        assert x._positioner.get() == 0.25
    finally:
        inst.close()


def test_a_release_from_another_process_lets_the_whole_trial_go_on(tmp_path: Path) -> None:
    """`closedloop release` through the store, two inputs: trial 1 moves both and completes
    (it used to move one, then pause again for the other); trial 2 pauses again."""
    with _Paused(tmp_path, TWO_INPUTS) as paused:
        store, url, cid, built, worker = (
            paused.store,
            paused.url,
            paused.cid,
            paused.built,
            paused.worker,
        )
        (inst,) = built
        released = _cli(
            "release", "--store", url, "-c", str(cid), "--confirm", "--by", "alice",
            "--wait", "30",
        )  # fmt: skip
        assert released.exit_code == 0, released.output
        _until(lambda: len(store.trials(cid)) == 2, "the second trial starts", timeout=20)
        first = store.trials(cid)[0]
        assert first.status == "completed", first.error
        assert _positions(inst) == pytest.approx(first.parameters)  # both inputs moved
        _until(lambda: store.campaign(cid).status == "paused", "the second trial pauses")
        assert inst.gate.pauses == 2
        _door(inst).put(1)
        worker.join(timeout=60)
        assert not worker.is_alive()
    (summary,) = paused.summaries
    assert summary.status == "completed", summary.reason
    events = store.events(cid)
    assert [(e.kind, e.detail if e.kind != "release" else e.by) for e in events] == [
        ("paused", REASON),
        ("release", "alice"),
        ("resumed", "released by alice"),
        ("paused", REASON),
        ("resumed", "interlocks hold again"),
    ]
    store.close()
