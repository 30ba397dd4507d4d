"""Faults on the EPICS path found in review, each against the caproto IOC of
``simulators.reactor_ioc``.

* A stop (Ctrl-C, SIGTERM: the instrument's ``close()``) while a move reads its position for
  ``max_step`` must not let that move put its setpoint after the safe state; nor may a move
  stopped there put a stale setpoint once the next trial moves.
* An IOC lost during an acquisition fails the trial at once, naming the PV; a stopped
  acquisition ends at once.
* The setpoint PV's own control limits (DRVL/DRVH) are read: ``check()`` reports file limits
  or bounds reaching outside them, and a setpoint outside them is refused before dispatch.
* An ENUM or string PV is refused for a numeric input.
* A pause for disconnected PVs ends "devices connected again"; a lost connection is counted
  as ``connection lost``.
* Campaign bounds wider than the file's limits are accepted, with a warning.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from epics_ioc import IOC
from ophyd import Signal

from instruments import Dispatcher, InstrumentConfig, build_instrument
from instruments._epics import DeclaredInstrument, DeviceTypeError, build_declared_instrument
from instruments._instrument_file import load_instrument_file
from instruments._protocol import TrialResult
from instruments._safety import ConnectionCheck, Gate, InterlockCheck
from loop.failures import failure_kind
from tests.cli_process import run_cli

ROOT = Path(__file__).resolve().parents[2]
INSTRUMENT_FILE = ROOT / "campaigns" / "instruments" / "epics_reactor.yaml"
PARAMETERS = [
    {"name": "temperature", "type": "float", "bounds": [30, 110], "unit": "degC"},
    {"name": "flow", "type": "float", "bounds": [0.2, 4], "unit": "mL/min"},
]
SP = "closedloop:sim:temp:SP"


def _text(**edits: str) -> str:
    text = INSTRUMENT_FILE.read_text()
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def _instrument(tmp_path: Path, **edits: str) -> DeclaredInstrument:
    path = tmp_path / "reactor.yaml"
    path.write_text(_text(**edits))
    inst = build_instrument(
        InstrumentConfig(file=str(path)), PARAMETERS, base_dir=tmp_path, seed=None
    )
    assert isinstance(inst, DeclaredInstrument)
    return inst


def _until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.01)


@pytest.fixture
def ioc(epics_ioc: IOC) -> Iterator[IOC]:
    """The session's IOC, running, interlocks holding, reads and acquisitions quick; the
    same again afterwards (a test may stop it, or leave it slow)."""
    if not epics_ioc.running():
        epics_ioc.start()
    epics_ioc.put("door_closed", 1)
    epics_ioc.put("pressure", 1.0)
    epics_ioc.put("heater:enable", 1)
    yield epics_ioc
    if not epics_ioc.running():
        epics_ioc.start()
    epics_ioc.put("rbv_delay", 0.0)
    epics_ioc.put("acquire_time", 0.05)
    _until(lambda: epics_ioc.get("busy") == 0, "the IOC's acquisition is over")


def _reads_since(ioc: IOC, before: int) -> int:
    """Reads of temp:RBV the IOC logged (it does while ``rbv_delay`` is set)."""
    return sum(bool(p.get("read")) for p in ioc.puts()[before:])


def _setpoints_since(ioc: IOC, before: int, pv: str = SP) -> list[float]:
    return [p["value"] for p in ioc.puts()[before:] if p["pv"] == pv and not p.get("read")]


# ---------------------------------------------------------------------------- 1: the stop race
def test_a_stop_during_the_max_step_read_puts_nothing_after_the_safe_state(
    ioc: IOC, tmp_path: Path
) -> None:
    """The move thread reads temp:RBV for `max_step` (0.6 s here) when the campaign stops:
    close() writes the safe state (25 degC) meanwhile. The move used to put its 60 degC
    after it, leaving the controller hot; it now refuses ("stopped before the put")."""
    inst = _instrument(tmp_path)
    ioc.put("rbv_delay", 0.6)
    before = len(ioc.puts())
    try:
        status = inst.inputs["temperature"].set(60.0)
        _until(lambda: _reads_since(ioc, before) >= 1, "the move reads its position")
        inst.close()  # the runner's close on Ctrl-C/SIGTERM: the safe state
        with pytest.raises(Exception, match="stopped before the put"):
            status.wait(10)
    finally:
        inst.close()
    assert _setpoints_since(ioc, before) == [pytest.approx(298.15)]  # the safe state only
    assert ioc.get("temp:SP") == pytest.approx(298.15)
    assert ioc.get("heater:enable") == 0


def test_a_move_stopped_during_its_read_puts_no_stale_setpoint_in_the_next_trial(
    ioc: IOC, tmp_path: Path
) -> None:
    """Trial 1's move is stopped (an abort, a watchdog timeout) while it reads; trial 2
    moves before that read returns. Trial 1's move used to find the stop flag cleared by
    trial 2 and put its stale 60 degC; only trial 2's 40 degC may reach the IOC."""
    inst = _instrument(tmp_path)
    dev = inst.inputs["temperature"]
    ioc.put("rbv_delay", 0.6)
    before = len(ioc.puts())
    try:
        first = dev.set(60.0)
        _until(lambda: _reads_since(ioc, before) >= 1, "trial 1's move reads its position")
        dev.stop()  # what the RunEngine does when trial 1 is aborted
        second = dev.set(40.0)
        with pytest.raises(Exception, match="stopped before the put"):
            first.wait(10)
        second.wait(20)
        assert second.success
    finally:
        ioc.put("rbv_delay", 0.0)
        inst.spec = inst.spec.model_copy(update={"on_stop": {}})
        inst.close()
    assert _setpoints_since(ioc, before) == [pytest.approx(313.15)]


class SlowStage(Signal):
    """A plugin stage whose position takes ``delay`` s to read; every ``put`` is logged."""

    delay: ClassVar[float] = 0.0
    reading = threading.Event()
    puts: ClassVar[list[float]] = []

    @property
    def position(self) -> Any:
        if type(self).delay:
            type(self).reading.set()
            time.sleep(type(self).delay)
        return self.get()

    def put(self, value: Any, **kwargs: Any) -> None:
        type(self).puts.append(float(value))
        super().put(value, **kwargs)


def test_a_plugin_input_stopped_during_its_read_is_not_set_after_the_safe_state(
    tmp_path: Path,
) -> None:
    """The same fence before a plugin's (and a motor's) `set()`."""
    (tmp_path / "stage.yaml").write_text(
        "name: stage\n"
        "inputs:\n"
        f'  x: {{device: "{__name__}:SlowStage", limits: [0, 10], max_step: 5}}\n'
        "outputs:\n"
        '  y: {device: "ophyd:Signal"}\n'
        "on_stop: {x: 1}\n"
    )
    inst = build_instrument(
        InstrumentConfig(file="stage.yaml"),
        [{"name": "x", "type": "float", "bounds": [0, 10]}],
        base_dir=tmp_path,
        seed=None,
    )
    assert isinstance(inst, DeclaredInstrument)
    SlowStage.puts.clear()
    SlowStage.reading.clear()
    SlowStage.delay = 0.5
    try:
        status = inst.inputs["x"].set(3.0)
        assert SlowStage.reading.wait(10)
        inst.close()
        with pytest.raises(Exception, match="stopped before the put"):
            status.wait(10)
    finally:
        SlowStage.delay = 0.0
        inst.close()
    assert SlowStage.puts == [1.0]  # the safe state, and nothing after it


# ---------------------------------------------------------------------------- 2: acquisition
def _run_in_thread(
    inst: DeclaredInstrument, parameters: dict[str, float]
) -> tuple[threading.Thread, list[TrialResult], Dispatcher]:
    results: list[TrialResult] = []
    dispatcher = Dispatcher(inst)
    worker = threading.Thread(
        target=lambda: results.append(dispatcher.run(1, "c", parameters)), daemon=True
    )
    worker.start()
    return worker, results, dispatcher


@pytest.mark.slow
def test_an_ioc_lost_during_an_acquisition_fails_the_trial_at_once_naming_the_pv(
    ioc: IOC, tmp_path: Path
) -> None:
    """The IOC goes away 0.3 s into a 5 s acquisition: the trial used to wait for the whole
    `acquire.timeout` (20 s here) and fail as a plain timeout, by then naming no PV."""
    inst = _instrument(
        tmp_path,
        **{"  timeout: 30": "  timeout: 20", "connection_timeout: 5": "connection_timeout: 2"},
    )
    ioc.put("acquire_time", 5.0)
    before = len(ioc.puts())
    stopped = 0.0
    try:
        worker, results, dispatcher = _run_in_thread(inst, {"temperature": 30.0, "flow": 1.0})
        _until(
            lambda: any(p["pv"].endswith(":acquire") for p in ioc.puts()[before:]),
            "the acquisition starts",
        )
        time.sleep(0.3)
        ioc.stop()
        stopped = time.monotonic()
        worker.join(timeout=40)
        failed_after = time.monotonic() - stopped
        assert not worker.is_alive()
    finally:
        if not ioc.running():
            ioc.start()
        dispatcher.close()
        inst.close()
    (result,) = results
    assert result.exit_status == "fail"
    assert "lost the connection to PV closedloop:sim:acquire" in (result.error or ""), result.error
    assert "not complete within" not in (result.error or "")
    assert result.transient  # a ConnectionError: worth a retry once the PV is back
    assert failure_kind(result.error) == "connection lost"
    assert failed_after < 8, failed_after  # not the 20 s acquire.timeout


def test_a_stopped_acquisition_ends_at_once(ioc: IOC, tmp_path: Path) -> None:
    """The dispatcher stops the detector after an abort or a timeout: its wait for the
    acquisition's put-completion used to go on until the IOC completed it (or until
    `acquire.timeout`); it now ends at once."""
    inst = _instrument(tmp_path)
    ioc.put("acquire_time", 2.0)
    before = len(ioc.puts())
    try:
        status = inst.detector.trigger()
        _until(
            lambda: any(p["pv"].endswith(":acquire") for p in ioc.puts()[before:]),
            "the acquisition starts",
        )
        inst.detector.stop()
        with pytest.raises(Exception, match="stopped while acquiring"):
            status.wait(1.0)
    finally:
        inst.spec = inst.spec.model_copy(update={"on_stop": {}})
        inst.close()


# ---------------------------------------------------------------------------- 3: IOC limits
DRV = {"setpoint: temp:SP": "setpoint: drv:SP", "readback: temp:RBV": "readback: drv:RBV"}


def test_the_iocs_control_limits_are_checked_and_refused_before_dispatch(
    ioc: IOC, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """drv:SP has control limits [0, 340] K, i.e. up to 66.85 degC; the file says up to
    100 degC. The check used to say "within limits", and a move to 86.7 degC was refused
    by the IOC and waited its whole timeout for the tolerance (a transient timeout, retried)."""
    with caplog.at_level(logging.WARNING, logger="instruments"):
        inst = _instrument(tmp_path, **DRV)
    assert "limits [20, 100] reach outside [-273.15, 66.85] degC" in caplog.text
    before = len(ioc.puts())
    try:
        rows = {r.name: r for r in inst.check()}
        with Dispatcher(inst) as dispatcher:
            refused = dispatcher.run(1, "c", {"temperature": 86.7, "flow": 1.0})
            fine = dispatcher.run(2, "c", {"temperature": 50.0, "flow": 1.0})
    finally:
        inst.close()
    problem = rows["temperature"].problem or ""
    assert "limits [20, 100] reach outside [-273.15, 66.85] degC" in problem, problem
    assert "DRVL/DRVH of PV closedloop:sim:drv:SP" in problem
    assert refused.exit_status == "fail" and refused.run_uid is None
    assert not refused.transient and not refused.timed_out
    error = refused.error or ""
    assert "setpoint 86.7 is outside the device's own limits [-273.15, 66.85]" in error, error
    assert failure_kind(error) == "setpoint refused"
    assert refused.duration < 5
    assert fine.ok, fine.error
    drv = _setpoints_since(ioc, before, "closedloop:sim:drv:SP")
    assert drv[0] == pytest.approx(323.15)  # trial 2; trial 1 sent nothing
    assert all(v <= 340 for v in drv)


def test_the_campaigns_bounds_are_checked_against_the_iocs_limits(ioc: IOC, tmp_path: Path) -> None:
    """Without `limits:` in the file the campaign's bounds are the range: [30, 110] degC
    reaches outside the IOC's 66.85 degC; a setpoint above it is refused all the same. (The
    safe state then has to lie within the bounds too: 30, not 25.)"""
    edits = {"limits: [20, 100]": "# no limits", "  temperature: 25\n": "  temperature: 30\n"}
    inst = _instrument(tmp_path, **DRV, **edits)
    try:
        rows = {r.name: r for r in inst.check()}
        with pytest.raises(ValueError, match="outside the device's own limits"):
            inst.inputs["temperature"].check_value(70.0)
        inst.inputs["temperature"].check_value(60.0)
    finally:
        inst.close()
    problem = rows["temperature"].problem or ""
    assert "campaign's bounds [30, 110] reach outside [-273.15, 66.85] degC" in problem


def test_instruments_check_reports_limits_beyond_the_iocs(
    ioc: IOC, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It used to say "all devices connected, within limits" (exit 0). An instrument file
    checked on its own has no campaign bounds: none are compared or warned about."""
    from typer.testing import CliRunner

    from loop.cli import app

    path = tmp_path / "reactor.yaml"
    path.write_text(_text(**DRV))
    with caplog.at_level(logging.WARNING):
        out = CliRunner().invoke(app, ["instruments", "check", str(path), "--timeout", "2"])
    assert out.exit_code == 1, out.output
    assert "all devices connected" not in out.output
    text = " ".join(out.output.split())
    assert "limits [20, 100] reach outside [-273.15, 66.85] degC" in text, text
    assert "bounds" not in text and "bounds" not in caplog.text


# ---------------------------------------------------------------------------- 4: PV types
@pytest.mark.parametrize(
    ("setpoint", "readback", "named", "kind"),
    [
        ("mode:SP", "mode:RBV", "closedloop:sim:mode:SP", "an ENUM PV (states Off, Low, High)"),
        ("flow:SP", "label", "closedloop:sim:label", "a STRING PV"),
    ],
)
def test_a_pv_that_is_not_a_number_is_refused_for_a_numeric_input(
    ioc: IOC, tmp_path: Path, setpoint: str, readback: str, named: str, kind: str
) -> None:
    """flow on ENUM PVs: a put of 1.47 used to select the state "Low" (index 1), and the
    model would learn flow=1. The instrument is refused when it connects, naming the PV."""
    old = "setpoint: flow:SP\n    readback: flow:RBV"
    edits = {old: f"setpoint: {setpoint}\n    readback: {readback}"}
    before = len(ioc.puts())
    with pytest.raises(DeviceTypeError, match=re.escape(f"PV {named} (the ")) as caught:
        _instrument(tmp_path, **edits)
    assert f"is {kind}; a numeric input needs a numeric PV" in str(caught.value)
    spec = load_instrument_file(tmp_path / "reactor.yaml")
    from instruments import input_specs

    inst = build_declared_instrument(
        spec,
        input_specs(PARAMETERS),
        units={"temperature": "degC", "flow": "mL/min"},
        connect=False,
    )
    try:
        rows = {r.name: r for r in inst.check(timeout=2)}
        with pytest.raises(ValueError, match=f"flow: PV {named}"):
            inst.inputs["flow"].check_value(1.47)
        status = inst.inputs["flow"].set(1.47)  # a move that skipped the check: no put
        with pytest.raises(Exception, match="a numeric input needs a numeric PV"):
            status.wait(10)
    finally:
        inst.spec = inst.spec.model_copy(update={"on_stop": {}})
        inst.close()
    assert rows["flow"].connected
    assert kind in (rows["flow"].problem or "")
    assert [p for p in ioc.puts()[before:] if "mode:SP" in p["pv"] or "flow:SP" in p["pv"]] == []


# ---------------------------------------------------------------------------- 5: messages
class Heard:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def paused(self, gate: Gate, reason: str) -> None:
        self.events.append(("paused", reason))

    def release_requested(self, gate: Gate) -> str | None:
        return None

    def resumed(self, gate: Gate, how: str) -> None:
        self.events.append(("resumed", how))


def test_a_pause_for_disconnected_devices_ends_saying_they_are_connected_again() -> None:
    """The gate has interlocks too, but this wait was for a PV: it used to end "interlocks
    hold again; resuming" (the campaign_event said so too)."""
    from instruments._instrument_file import Interlock

    connected = threading.Event()
    heard = Heard()
    gate = Gate(
        [InterlockCheck(Interlock(name="door_closed", op="==", value=1), lambda: 1)],
        poll=0.01,
        name="bench",
        listener=heard,
        connections=[ConnectionCheck("PV x:SP", "input x", connected.is_set)],
    )
    threading.Timer(0.1, connected.set).start()
    gate.wait(threading.Event(), mover=object())
    assert heard.events == [
        ("paused", "PV x:SP (input x) is disconnected"),
        ("resumed", "devices connected again"),
    ]
    holds = threading.Event()
    gate.end_trial()
    gate.checks = (
        InterlockCheck(
            Interlock(name="door_closed", op="==", value=1), lambda: int(holds.is_set())
        ),
    )
    threading.Timer(0.1, holds.set).start()
    gate.wait(threading.Event(), mover=object())
    assert heard.events[-1] == ("resumed", "interlocks hold again")


def test_a_lost_connection_is_counted_as_such() -> None:
    error = (
        "DeviceConnectionError: lost the connection to PV closedloop:sim:acquire during the "
        "trial <- caused by CaprotoTimeoutError: timed out"
    )
    assert failure_kind(error) == "connection lost"


# ---------------------------------------------------------------------------- 6: bounds
def _campaign(tmp_path: Path, bounds: str) -> Path:
    (tmp_path / "reactor.yaml").write_text(INSTRUMENT_FILE.read_text())
    text = (ROOT / "campaigns" / "epics" / "epics_reactor.yaml").read_text()
    text = text.replace("../instruments/epics_reactor.yaml", "reactor.yaml")
    assert "bounds: [30, 100]" in text
    (tmp_path / "c.yaml").write_text(text.replace("bounds: [30, 100]", f"bounds: {bounds}"))
    return tmp_path / "c.yaml"


def test_bounds_wider_than_the_limits_are_accepted_with_a_warning(
    ioc: IOC, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`validate` used to accept them silently; each proposal below 20 degC then failed.
    Loading the campaign (validate, run) warns, naming the parameter, both ranges and the
    line of the limits; building it for the run does not say it again."""
    from instruments import build_instrument as build
    from loop.config import load_campaign

    path = _campaign(tmp_path, "[10, 100]")
    with caplog.at_level(logging.WARNING):
        loaded = load_campaign(path)
        spec_file = tmp_path / "reactor.yaml"
        c = loaded.campaign
        inst = build(c.instrument, c.parameters, base_dir=loaded.base_dir, seed=None)
        inst.close()
    warned = [r.getMessage() for r in caplog.records if "reaching outside" in r.getMessage()]
    assert warned == [
        f"instrument file reactor.yaml: parameter 'temperature' has bounds [10, 100] reaching "
        f"outside its input's limits [20, 100] ({spec_file}:20); proposals outside the limits "
        "are not sent and their trials fail (narrow the bounds to the limits)"
    ]


@pytest.mark.slow
def test_validate_shows_the_warning(tmp_path: Path) -> None:
    """The warning as `closedloop validate` prints it (exit 0: the file is accepted)."""
    path = _campaign(tmp_path, "[10, 100]")
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "400"}
    out = run_cli(["validate", str(path)], env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    text = " ".join((out.stdout + out.stderr).split())
    assert (
        "parameter 'temperature' has bounds [10, 100] reaching outside its input's limits [20, 100]"
        in text
    ), text
    assert "proposals outside the limits are not sent and their trials fail" in text
    assert f"{tmp_path / 'reactor.yaml'}:20" in text  # the line of its `limits:`
    assert text.count("has bounds [10, 100]") == 1


def test_bounds_within_the_limits_give_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from loop.config import load_campaign

    with caplog.at_level(logging.WARNING):
        load_campaign(_campaign(tmp_path, "[30, 100]"))
    assert "reaching outside" not in caplog.text


def _run_while(
    ioc: IOC,
    tmp_path: Path,
    switch: str,
    value: int,
    flow: float = 1.0,
    edits: dict[str, str] | None = None,
) -> tuple[TrialResult, TrialResult]:
    """Two trials of the instrument (``edits`` made to its file): one as the IOC is, then
    one while its fault ``switch`` holds ``value`` (set back to 0 after)."""
    inst = _instrument(tmp_path, **(edits or {}))
    try:
        with Dispatcher(inst) as dispatcher:
            before = dispatcher.run(1, "c", {"temperature": 50.0, "flow": 1.5})
            ioc.put(switch, value)
            try:
                during = dispatcher.run(2, "c", {"temperature": 50.0, "flow": flow})
            finally:
                ioc.put(switch, 0)
    finally:
        inst.close()
    assert before.ok, before.error
    return before, during


def test_a_setpoint_the_ioc_refuses_fails_the_trial_saying_what_the_pv_holds(
    ioc: IOC, tmp_path: Path
) -> None:
    """An input without a tolerance was written fire-and-forget: a put the IOC refused
    (access security, a disabled record) left the trial completed at the old value with no
    word, while `plan --dry-run` said the write waited for its completion (found in
    review). The write now waits for the IOC's put completion."""
    no_tolerance = {"    tolerance: 0.01\n    units: mL/min": "    timeout: 2\n    units: mL/min"}
    _, refused = _run_while(ioc, tmp_path, "refuse_puts", 1, flow=2.5, edits=no_tolerance)
    assert refused.exit_status == "fail" and refused.transient, refused
    error = refused.error or ""
    said = "flow (PV closedloop:sim:flow:SP): the IOC completed the put of 2.5 but holds 1.5"
    assert said in error, error
    assert "it refused or clipped the write" in error


class _PutStub:
    """A setpoint signal that answers a put-notify as pyepics does (its callback called
    with keyword arguments), or never."""

    def __init__(self, answers: bool) -> None:
        self.answers = answers

    def put(self, value: Any, *, callback: Callable[..., None], **kwargs: Any) -> None:
        if self.answers:
            threading.Thread(target=lambda: callback(pvname="lab:sp", data=None)).start()

    def get(self, **kwargs: Any) -> float:
        return 7.0


def test_a_put_completion_called_as_pyepics_calls_it_completes() -> None:
    """pyepics calls a put callback with keyword arguments; ``Event.set`` refused them on a
    thread nobody watched, so with ``control_layer: pyepics`` every safe-state write and
    every setpoint without a tolerance read as never completed (found in review)."""
    from instruments._epics import _put_acknowledged

    _put_acknowledged(_PutStub(answers=True), 1.0, 5.0, what="PV lab:sp")
    with pytest.raises(TimeoutError, match=r"did not complete the put of 1 within 0.2 s .*holds 7"):
        _put_acknowledged(_PutStub(answers=False), 1.0, 0.2, what="PV lab:sp")


def test_an_output_pv_in_alarm_fails_the_trial_as_transient_unless_max_alarm_takes_it(
    ioc: IOC, tmp_path: Path
) -> None:
    """A detector PV in INVALID alarm was stored as a completed trial and learned as a good
    reading (found in review): now a severity worse than the output's ``max_alarm``
    (default ``minor``) fails the trial, transient, naming the PV and its alarm."""
    for severity, edits, ok in (
        (1, {}, True),  # MINOR: taken by default
        (2, {}, False),  # MAJOR
        (3, {}, False),  # INVALID
        (3, {"yield: {pv: yield}": "yield: {pv: yield, max_alarm: invalid}"}, True),
    ):
        _, result = _run_while(ioc, tmp_path, "yield_severity", severity, edits=edits)
        assert result.ok is ok, (severity, edits, result.error)
        if not ok:
            error = result.error or ""
            name = {2: "MAJOR", 3: "INVALID"}[severity]
            assert f"PV closedloop:sim:yield is in {name} alarm (HIHI)" in error, error
            assert "worse than its max_alarm minor" in error
            assert result.transient


def test_a_nan_from_an_output_pv_fails_the_trial_as_transient(ioc: IOC, tmp_path: Path) -> None:
    """A NaN from a detector PV is a glitch far more often than the point's value: retried,
    not learned at once as a failing point as a function's NaN is (found in review)."""
    _, result = _run_while(ioc, tmp_path, "yield_nan", 1)
    assert not result.ok and result.transient, result
    error = result.error or ""
    assert "output 'yield': PV closedloop:sim:yield read nan, not a reading (a transient" in error
    assert failure_kind(error) == "reading not trusted"


def test_check_notes_a_nan_output_at_rest_without_calling_it_a_problem(
    ioc: IOC, tmp_path: Path
) -> None:
    """Before any acquisition a detector may hold NaN (the motor IOC's ``seen:x`` does): a
    trial's NaN fails it as transient, but ``instruments check`` made it a problem and
    exited 1 on a healthy instrument (found in CI, by test order). It is a note."""
    inst = _instrument(tmp_path)
    ioc.put("yield_nan", 1)
    ioc.put("acquire", 1)  # the detector's last reading: NaN
    try:
        rows = {row.name: row for row in inst.check(2.0)}
    finally:
        ioc.put("yield_nan", 0)
        ioc.put("acquire", 1)  # a number again, for the tests after
        inst.close()
    row = rows["yield"]
    assert row.connected and row.problem is None, row
    assert "read nan, not a reading" in (row.note or "")
    assert "only a trial's reading, after its acquisition, counts" in (row.note or "")
