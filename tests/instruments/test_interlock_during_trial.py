"""An interlock that breaks during the acquisition fails the trial, as transient.

The interlocks are read before a trial's first put (the gate) and again after its trigger
and read, before its run closes. A beam dump or a vacuum burst in between used to give a
reading stored ``completed`` and learned from; now the trial fails (its documents stored,
its stop document saying why), the loop retries it, and the retry waits at the gate like
any trial. A trial the operator released despite an interlock is not failed for that same
interlock afterwards. Against the caproto IOC of ``simulators.reactor_ioc``, over real
Channel Access.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from epics_ioc import IOC

from instruments import Dispatcher, InstrumentConfig, build_instrument
from instruments._epics import DeclaredInstrument
from instruments._instrument_file import Interlock
from instruments._protocol import TrialResult
from instruments._safety import Gate, InterlockCheck
from loop.config import load_campaign
from loop.failures import failure_kind
from loop.runner import Runner
from loop.store import Store

ROOT = Path(__file__).resolve().parents[2]
INSTRUMENT_FILE = ROOT / "campaigns" / "instruments" / "epics_reactor.yaml"
PARAMETERS = [
    {"name": "temperature", "type": "float", "bounds": [30, 100], "unit": "degC"},
    {"name": "flow", "type": "float", "bounds": [0.2, 4], "unit": "mL/min"},
]
BROKE = "interlock pressure < 5 broke during the acquisition (pressure = 10)"

pytestmark = pytest.mark.slow


def _until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.02)


@pytest.fixture
def ioc(epics_ioc: IOC) -> Iterator[IOC]:
    """The IOC with its interlocks holding and the heater on; an acquisition takes 1.5 s,
    long enough to break an interlock during it. Quick again afterwards."""
    if not epics_ioc.running():
        epics_ioc.start()
    epics_ioc.put("door_closed", 1)
    epics_ioc.put("pressure", 1.0)
    epics_ioc.put("heater:enable", 1)
    epics_ioc.put("acquire_time", 1.5)
    yield epics_ioc
    epics_ioc.put("acquire_time", 0.05)
    epics_ioc.put("door_closed", 1)
    epics_ioc.put("pressure", 1.0)
    _until(lambda: epics_ioc.get("busy") == 0, "the IOC's acquisition is over")


def _instrument_file(tmp_path: Path) -> Path:
    path = tmp_path / "reactor.yaml"
    text = INSTRUMENT_FILE.read_text()
    assert "interlock_poll: 1" in text
    path.write_text(text.replace("interlock_poll: 1", "interlock_poll: 0.05"))
    return path


def _break_during_acquisition(ioc: IOC, pv: str, value: float) -> threading.Thread:
    """Put ``value`` to ``pv`` 0.5 s into the next acquisition (on its own thread)."""
    before = len(ioc.puts())

    def breaker() -> None:
        _until(
            lambda: any(p["pv"].endswith(":acquire") for p in ioc.puts()[before:]),
            "the acquisition starts",
        )
        time.sleep(0.5)
        ioc.put(pv, value)

    thread = threading.Thread(target=breaker, daemon=True)
    thread.start()
    return thread


def test_a_beam_dump_during_the_acquisition_fails_the_trial_and_it_is_retried(
    ioc: IOC, tmp_path: Path
) -> None:
    _instrument_file(tmp_path)
    (tmp_path / "c.yaml").write_text(
        """\
name: beamdump
parameters:
  - {name: temperature, type: float, bounds: [30, 100], unit: degC}
  - {name: flow, type: float, bounds: [0.2, 4], unit: mL/min}
objectives:
  - {name: yield, goal: maximize}
instrument: {file: reactor.yaml, max_retries: 1}
planner: {kind: sobol}
budget: {max_trials: 1, max_failures: 3}
seed: 3
"""
    )
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    runner = Runner(load_campaign(tmp_path / "c.yaml"), store)
    summaries: list[object] = []
    worker = threading.Thread(target=lambda: summaries.append(runner.run()), daemon=True)
    breaker = _break_during_acquisition(ioc, "pressure", 10.0)
    try:
        worker.start()
        breaker.join(timeout=60)
        _until(lambda: runner.campaign_id is not None, "the campaign exists")
        cid = runner.campaign_id or 0
        # the retry waits at the gate for the interlock, as any trial does
        _until(lambda: store.campaign(cid).status == "paused", "the retry waits at the gate")
        assert len(store.trials(cid)) == 2
        ioc.put("pressure", 1.0)
        worker.join(timeout=60)
        assert not worker.is_alive()
        first, retry = store.trials(cid)
        documents = store.documents(first.id or 0)
        events = [e.kind for e in store.events(cid)]
    finally:
        runner.request_stop("test over")
        worker.join(timeout=30)
        store.close()
    assert first.status == "failed", first.error
    assert BROKE in (first.error or ""), first.error
    assert failure_kind(first.error) == "interlock broke"  # as `status` counts it
    assert first.transient is True
    # its documents are stored: the reading taken and the stop saying why it failed
    names = [d.name for d in documents]
    assert names[0] == "start" and "event" in names and names[-1] == "stop"
    stop = documents[-1].body
    assert stop["exit_status"] == "fail"
    # the trial's own error, word for word: what resume rebuilds it from after a kill
    assert stop["reason"] == first.error and BROKE in stop["reason"]
    assert retry.kind == "retry" and retry.status == "completed", retry.error
    assert retry.parameters == first.parameters
    assert events == ["paused", "resumed"]


def _run_in_thread(
    dispatcher: Dispatcher, parameters: dict[str, float]
) -> tuple[threading.Thread, list[TrialResult]]:
    results: list[TrialResult] = []
    worker = threading.Thread(
        target=lambda: results.append(dispatcher.run(1, "c", parameters)), daemon=True
    )
    worker.start()
    return worker, results


def test_a_release_covers_its_interlock_for_the_whole_trial_but_not_the_others(
    ioc: IOC, tmp_path: Path
) -> None:
    inst = build_instrument(
        InstrumentConfig(file=str(_instrument_file(tmp_path))),
        PARAMETERS,
        base_dir=tmp_path,
        seed=None,
    )
    assert isinstance(inst, DeclaredInstrument)
    results: list[TrialResult] = []
    try:
        with Dispatcher(inst) as dispatcher:
            # released despite pressure: still broken after the acquisition, not failed
            ioc.put("pressure", 10.0)
            worker, got = _run_in_thread(dispatcher, {"temperature": 40.0, "flow": 1.0})
            _until(lambda: inst.gate.pauses == 1, "the trial waits at the gate")
            inst.gate.release()
            worker.join(timeout=60)
            results += got
            # the next trial checks afresh: released again for pressure, but the door
            # opens during its acquisition, which the release did not cover
            breaker = _break_during_acquisition(ioc, "door_closed", 0)
            worker, got = _run_in_thread(dispatcher, {"temperature": 42.0, "flow": 1.0})
            _until(lambda: inst.gate.pauses == 2, "the second trial waits at the gate")
            inst.gate.release()
            worker.join(timeout=60)
            breaker.join(timeout=30)
            results += got
            # and a trial with the interlocks holding throughout is unaffected
            ioc.put("pressure", 1.0)
            ioc.put("door_closed", 1)
            results.append(dispatcher.run(3, "c", {"temperature": 44.0, "flow": 1.0}))
    finally:
        inst.close()
    released, door, fine = results
    assert released.ok, released.error
    assert door.exit_status == "fail"
    assert "interlock door_closed == 1 broke during the acquisition (door_closed = 0)" in (
        door.error or ""
    ), door.error
    assert "pressure" not in (door.error or "")
    assert door.transient
    assert fine.ok, fine.error
    assert inst.gate.pauses == 2


def test_an_interlock_that_cannot_be_read_after_the_acquisition_counts_as_broken() -> None:
    def unreadable() -> float:
        raise TimeoutError("no answer")

    rule = Interlock(name="pressure", op="<", value=5.0)
    gate = Gate([InterlockCheck(rule, unreadable)], poll=0.05, name="bench")
    (said,) = gate.after_acquisition()
    assert said == (
        "interlock pressure < 5 cannot be checked after the acquisition: TimeoutError: no answer"
    )
    # the facility's, not the point's, and not a timeout of the instrument's
    assert failure_kind(said) == "interlock broke"
