"""The safe state and ``max_step`` on real parts, found in a hardware-safety review.

* An input's ``on_stop`` is refused at load when its campaign parameter cannot take it (an
  int's fraction, a value no choice has, a fixed parameter's other value, a value outside
  the bounds of an input without ``limits``), and at connect when it lies outside the
  device's own limits (DRVL/DRVH); ``instruments check`` lists every input's safe state.
* ``max_step`` is measured from the last setpoint as well as the readback (a readback that
  lags, a move that timed out short of its tolerance), and the safe state keeps to it too:
  it is approached in steps, each waited for; a step that fails stops it, reported.
* What the safe state could not write is exposed (``safe_state_failures``), naming the
  setpoint PV, not the readback.
* A setpoint PV whose EGU is another unit than the file's is refused like a motor's.
* ``instruments check`` notes a reading outside the bounds, refuses one no trial could
  leave within ``max_step``, and says "connected, but slow" rather than "cannot connect".
* A readback too slow for the pre-check is not a refused setpoint.
* ``plan --dry-run --at`` says each parameter the point is outside of, and that a fixed
  parameter is fixed.

The EPICS tests run against the caproto IOC of ``simulators.reactor_ioc`` (its ``lag`` PV makes the
readbacks lag), with real ophyd signals and a real RunEngine; the others on plugin devices.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from epics_ioc import IOC
from hypothesis import given
from hypothesis import strategies as st
from ophyd import Signal
from ophyd.status import Status
from typer.testing import CliRunner

from instruments import Dispatcher, InstrumentConfig, build_instrument, describe_instrument
from instruments._epics import (
    DeclaredInstrument,
    DeviceConnectionError,
    DeviceLimitsError,
    DeviceTypeError,
    InputDevice,
)
from instruments._instrument_file import InstrumentFileError
from instruments._safety import SetpointRefused, check_setpoint, next_step
from loop.cli import app
from loop.config import load_campaign
from loop.errors import CampaignConfigError
from loop.failures import failure_kind
from loop.runner import Runner
from loop.store import Store

PREFIX = "closedloop:sim:"
SP = PREFIX + "temp:SP"
KELVIN = 273.15
PARAMETERS = [
    {"name": "temperature", "type": "float", "bounds": [0, 100], "unit": "degC"},
    {"name": "flow", "type": "float", "bounds": [0.2, 4], "unit": "mL/min"},
]
BENCH = """\
name: bench
prefix: "closedloop:sim:"
connection_timeout: 2
inputs:
  temperature:
    setpoint: temp:SP
    readback: temp:RBV
    units: degC
    device_units: K
    limits: [0, 100]
    max_step: 30
    timeout: 10
  flow:
    setpoint: flow:SP
    readback: flow:RBV
outputs:
  yield: {pv: yield}
acquire: {pv: acquire, value: 1, put_complete: true, timeout: 10}
on_stop:
  temperature: 100
  heater:enable: 0
"""


def _until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.01)


@pytest.fixture
def ioc(epics_ioc: IOC) -> Iterator[IOC]:
    """The session's IOC at rest: 25 degC (set and read back), readbacks quick (lag 0.05
    s), interlocks holding, heater on; the same again afterwards."""

    def rest() -> None:
        if not epics_ioc.running():
            epics_ioc.start()
        epics_ioc.put("rbv_delay", 0.0)
        stale = float(epics_ioc.get("lag"))
        epics_ioc.put("lag", 0.05)
        epics_ioc.put("pressure", 1.0)
        time.sleep(stale)  # a readback still following an earlier put, lagging, lands first
        epics_ioc.put("temp:SP", 298.15)
        epics_ioc.put("flow:SP", 1.0)
        _until(lambda: epics_ioc.get("temp:RBV") == pytest.approx(298.15), "25 degC")
        epics_ioc.put("heater:enable", 1)

    rest()
    yield epics_ioc
    rest()


def _instrument(tmp_path: Path, *edits: tuple[str, str]) -> DeclaredInstrument:
    text = BENCH
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    inst = build_instrument(
        InstrumentConfig(file=str(path)), PARAMETERS, base_dir=tmp_path, seed=None
    )
    assert isinstance(inst, DeclaredInstrument)
    return inst


def _setpoints(ioc: IOC, before: int, pv: str = SP) -> list[float]:
    return [p["value"] for p in ioc.puts()[before:] if p["pv"] == pv and not p.get("read")]


def _check(*args: str) -> Any:
    return CliRunner().invoke(app, ["instruments", "check", *args, "--timeout", "2"])


# ---------------------------------------------------------------------------- max_step
@pytest.mark.parametrize(
    ("how", "edits"),
    [
        ("the readback lags", ()),
        # a move given up on short of its tolerance: the device still heads for 55
        ("the trial timed out", (("    timeout: 10\n", "    timeout: 0.3\n    tolerance: 0.5\n"),)),
    ],
)
def test_max_step_is_measured_from_the_last_setpoint_too(
    ioc: IOC, tmp_path: Path, how: str, edits: tuple[tuple[str, str], ...]
) -> None:
    """25 -> 55 degC while the readback is 1 s behind: a move to 0 is 25 from the readback
    (within max_step 30) but 55 from the setpoint, and used to be sent at once. Its ramp
    steps from both: 25 first (30 from the setpoint 55, 0 from the readback), then 0; the
    setpoint never changes by more than max_step."""
    inst = _instrument(tmp_path, ("  temperature: 100\n", "  temperature: 40\n"), *edits)
    ioc.put("lag", 1.0)
    before = len(ioc.puts())
    try:
        with Dispatcher(inst) as dispatcher:
            first = dispatcher.run(1, "c", {"temperature": 55.0, "flow": 1.0})
            second = dispatcher.run(2, "c", {"temperature": 0.0, "flow": 1.0})
    finally:
        inst.close()
    assert first.ok == (how == "the readback lags"), first.error
    written = _setpoints(ioc, before)
    assert written[:3] == [pytest.approx(KELVIN + t) for t in (55, 25, 0)], written
    if how == "the readback lags":
        assert second.ok, second.error
    else:  # 0.3 s per step is too short for a device 1 s behind: a timeout, not a jump
        assert second.exit_status == "fail" and second.transient, second.error
        assert "the ramp to 0 degC in steps of at most max_step 30 stopped after 1 step(s)" in (
            second.error or ""
        ), second.error
        # counted as a single move's timeout is, not as a bare InstrumentError (review G)
        assert failure_kind(second.error) == "timeout", second.error
    # the safe state, 40, is approached the same way; 0.3 s per step is short for it too
    for failure in inst.safe_state_failures:
        assert how == "the trial timed out" and "not within 0.5 of" in failure.error


def test_a_setpoint_left_by_someone_else_does_not_count_for_max_step(
    ioc: IOC, tmp_path: Path
) -> None:
    """A controller switched off with its setpoint left at 150 degC, reading 25: max_step
    counted from that setpoint refused every trial, and refused the safe state too, which
    left 150 on the device (found in review). Only what this process wrote counts."""
    ioc.put("pressure", 298.15)  # the device reads 25 degC
    ioc.put("temp:SP", 423.15)  # its setpoint left at 150 degC
    inst = _instrument(
        tmp_path,
        ("    readback: temp:RBV\n", "    readback: pressure\n"),  # a reading that stays
        ("    limits: [0, 100]\n", "    limits: [0, 150]\n"),
        ("    timeout: 10\n", "    timeout: 1\n"),
        ("  temperature: 100\n", "  temperature: 20\n"),
    )
    try:
        with Dispatcher(inst) as dispatcher:
            trial = dispatcher.run(1, "c", {"temperature": 40.0, "flow": 1.0})
    finally:
        inst.close()
    assert "last setpoint" not in (trial.error or ""), trial.error  # not refused by max_step
    assert inst.safe_state_failures == ()
    assert ioc.get("temp:SP") == pytest.approx(20 + KELVIN)  # the safe state was written


@pytest.mark.parametrize("tolerance", ["    tolerance: 0.5\n", ""])
def test_a_trial_ramps_to_its_setpoint_in_steps_each_waited_for(
    ioc: IOC, tmp_path: Path, tolerance: str
) -> None:
    """A trial at 100 degC from 25 with max_step 30, on a real IOC whose readback lags 0.3
    s: setpoints 55, 85, then 100, each written only once the readback got to the one
    before (within the tolerance, or at or past it without one); the trial measures once,
    at 100. It used to be refused before any put."""
    inst = _instrument(tmp_path, ("    max_step: 30\n", f"    max_step: 30\n{tolerance}"))
    ioc.put("lag", 0.3)
    before = len(ioc.puts())
    t0 = time.monotonic()
    try:
        with Dispatcher(inst) as dispatcher:
            trial = dispatcher.run(1, "c", {"temperature": 100.0, "flow": 1.0})
    finally:
        inst.spec = inst.spec.model_copy(update={"on_stop": {}})
        inst.close()
    took = time.monotonic() - t0
    assert trial.ok, trial.error
    assert _setpoints(ioc, before) == [pytest.approx(KELVIN + t) for t in (55, 85, 100)]
    assert took >= 2 * 0.3  # the steps short of 100 were waited for
    if tolerance:
        assert trial.readbacks["temperature"] == pytest.approx(100, abs=0.5)
    events = [doc for name, doc in trial.documents if name == "event"]
    assert len(events) == 1  # one measurement, at the end of the ramp


def test_a_trial_stopped_during_its_ramp_writes_no_further_step(ioc: IOC, tmp_path: Path) -> None:
    """The trial's timeout (1 s) ends a ramp of 2-s steps (the readback lags 2 s): the
    step being waited for is the last write, and the safe state after it keeps to
    max_step from there."""
    inst = _instrument(tmp_path, ("  temperature: 100\n", "  temperature: 25\n"))
    ioc.put("lag", 2.0)
    before = len(ioc.puts())
    try:
        with Dispatcher(inst) as dispatcher:
            trial = dispatcher.run(1, "c", {"temperature": 100.0, "flow": 1.0}, timeout=1.0)
            time.sleep(2.5)  # a step written after the abort would land by now
            during = _setpoints(ioc, before)
    finally:
        inst.close()
    assert trial.exit_status != "success" and trial.timed_out, trial
    assert during == [pytest.approx(KELVIN + 55)], during
    assert inst.safe_state_failures == ()
    assert _setpoints(ioc, before)[-1] == pytest.approx(KELVIN + 25)  # the safe state


@pytest.mark.parametrize("tolerance", ["    tolerance: 0.5\n", ""])
def test_the_safe_state_keeps_to_max_step_each_step_waited_for(
    ioc: IOC, tmp_path: Path, tolerance: str
) -> None:
    """From 25 to the safe state 100 degC with max_step 30: 55, 85, then 100, each step
    waited for until the (0.4 s lagging) readback gets there; it used to be one put of
    100. Without a tolerance, a step is there when the readback is at or past it."""
    inst = _instrument(tmp_path, ("    max_step: 30\n", f"    max_step: 30\n{tolerance}"))
    ioc.put("lag", 0.4)
    before = len(ioc.puts())
    t0 = time.monotonic()
    inst.close()
    took = time.monotonic() - t0
    assert inst.safe_state_failures == ()
    assert _setpoints(ioc, before) == [
        pytest.approx(KELVIN + 55),
        pytest.approx(KELVIN + 85),
        pytest.approx(KELVIN + 100),
    ]
    assert took >= 2 * 0.4  # both steps short of 100 were waited for
    assert _setpoints(ioc, before, PREFIX + "heater:enable") == [0]  # then the next entry
    _until(lambda: ioc.get("temp:RBV") == pytest.approx(KELVIN + 100), "the IOC at 100 degC")


def _plugin_stage(tmp_path: Path, value: float) -> DeclaredInstrument:
    """An `ophyd:Signal` stage at ``value``: limits [0, 10], max_step 2, safe state 9."""
    path = tmp_path / "plugin.yaml"
    path.write_text(
        "inputs:\n"
        f"  x: {{device: 'ophyd:Signal', args: {{value: {value}}}, limits: [0, 10], "
        "max_step: 2}\n"
        "outputs:\n"
        "  y: {device: 'ophyd:Signal', args: {value: 1.0}}\n"
        "on_stop: {x: 9}\n"
    )
    params = [{"name": "x", "type": "float", "bounds": [0, 10]}]
    inst = build_instrument(InstrumentConfig(file=str(path)), params, base_dir=tmp_path, seed=0)
    assert isinstance(inst, DeclaredInstrument)
    return inst


class StepLog(Signal):  # type: ignore[misc]
    """A plugin stage that keeps every value written to it."""

    puts: ClassVar[list[float]] = []

    def put(self, value: Any, **kwargs: Any) -> None:
        StepLog.puts.append(float(value))
        super().put(value, **kwargs)


def _plugin_input(
    tmp_path: Path, device: str, extra: str = "", kind: str = "float"
) -> DeclaredInstrument:
    """An instrument whose input x is this module's plugin class ``device`` at 0, limits
    [0, 10], max_step 2, timeout 5 (and ``extra`` settings), for a ``kind`` parameter x."""
    path = tmp_path / f"{device}.yaml"
    path.write_text(
        "inputs:\n"
        f"  x: {{device: '{__name__}:{device}', args: {{value: 0.0}}, limits: [0, 10], "
        f"max_step: 2, timeout: 5{extra}}}\n"
        "outputs:\n  y: {device: 'ophyd:Signal', args: {value: 1.0}}\n"
    )
    params = [{"name": "x", "type": kind, "bounds": [0, 10]}]
    inst = build_instrument(InstrumentConfig(file=str(path)), params, base_dir=tmp_path, seed=0)
    assert isinstance(inst, DeclaredInstrument)
    return inst


def _one_trial(inst: DeclaredInstrument, x: Any) -> Any:
    """One trial at ``x``; the instrument closed after it."""
    try:
        with Dispatcher(inst) as dispatcher:
            return dispatcher.run(1, "c", {"x": x})
    finally:
        inst.close()


class ShortStage(Signal):  # type: ignore[misc]
    """A plugin stage that stops 0.003 short of every setpoint, as a motor one resolution
    step short does, or a furnace closing in on its setpoint smoothly."""

    def get(self, **kwargs: Any) -> Any:
        value = super().get(**kwargs)
        return value - 0.003 if isinstance(value, float) and value > 0 else value

    def set(self, value: Any, **kwargs: Any) -> Status:
        self.put(value)  # its move is done as soon as it is told (its own view)
        status = Status(self)
        status.set_finished()
        return status


def test_a_ramp_step_a_device_stops_just_short_of_has_arrived(tmp_path: Path) -> None:
    """Without a tolerance a ramp step arrived only at or past it: a device that stops a
    little short never did, and every step waited out its timeout (review G, a motor one
    resolution step short). A plugin's status (a motor's DMOV) now says it has arrived."""
    t0 = time.monotonic()
    trial = _one_trial(_plugin_input(tmp_path, "ShortStage"), 9.0)
    assert trial.ok, trial.error
    assert time.monotonic() - t0 < 5  # no step waited out its 5 s
    assert trial.readbacks["x"] == pytest.approx(9.0, abs=0.01)


class RampDoor(Signal):  # type: ignore[misc]
    """A door that opens once the stage (:class:`StepLog`) has been told to go to 4."""

    def get(self, **kwargs: Any) -> Any:
        return 0.0 if any(v >= 4 for v in StepLog.puts) else 1.0


def test_an_interlock_that_breaks_during_a_ramp_stops_it_before_its_next_write(
    tmp_path: Path,
) -> None:
    """The gate passed a trial before its first write, and nothing looked again: a
    furnace went on heating for six steps with its door open (found in review). The door
    opens after the step to 4 of a ramp 0 -> 9: nothing more is written, nothing is
    acquired, and the trial fails as transient ("interlock broke"), to be retried at the
    gate."""
    path = tmp_path / "door.yaml"
    path.write_text(
        "inputs:\n"
        f"  x: {{device: '{__name__}:StepLog', args: {{value: 0.0}}, limits: [0, 10], "
        "max_step: 2}\n"
        "outputs:\n"
        "  y: {device: 'ophyd:Signal', args: {value: 1.0}}\n"
        f"  door: {{device: '{__name__}:RampDoor', args: {{value: 1.0}}}}\n"
        "interlocks:\n  - door == 1\n"
    )
    params = [{"name": "x", "type": "float", "bounds": [0, 10]}]
    StepLog.puts.clear()
    inst = build_instrument(InstrumentConfig(file=str(path)), params, base_dir=tmp_path, seed=0)
    try:
        with Dispatcher(inst) as dispatcher:
            trial = dispatcher.run(1, "c", {"x": 9.0})
    finally:
        inst.close()
    assert StepLog.puts == [2.0, 4.0]
    assert trial.exit_status == "fail" and trial.transient, trial
    error = trial.error or ""
    assert "x: the ramp to 9 in steps of at most max_step 2 stopped after 2 step(s)" in error
    assert "interlock door == 1 broke during the ramp (door = 0)" in error, error
    assert failure_kind(error) == "interlock broke"
    assert not [d for n, d in trial.documents if n == "event"]  # nothing acquired
    # a plugin input is not read after a failed run (its unfinished read would lock it)
    assert trial.readbacks == {}


class SpringBack(ShortStage):
    """A stage that reaches 4 and then springs back to 0 (its own status says done)."""

    def get(self, **kwargs: Any) -> Any:
        value = Signal.get(self, **kwargs)
        if isinstance(value, float) and value >= 4:
            self._seen = getattr(self, "_seen", 0) + 1
            return value if self._seen == 1 else 0.0
        return value


def test_a_device_that_goes_back_against_its_ramp_fails_the_trial_as_transient(
    tmp_path: Path,
) -> None:
    """Each step is measured from where the device reads: one that went back stops the
    ramp (no step is written toward where it was) and the trial fails as transient, the
    device's doing and not the point's."""
    trial = _one_trial(_plugin_input(tmp_path, "SpringBack"), 9.0)
    assert trial.exit_status == "fail" and trial.transient, trial
    assert (
        "stopped after 2 step(s), the last to 4: its readback 0 has not followed the step to 4"
        in (trial.error or "")
    ), trial.error


class Furnace(ShortStage):
    """A plugin furnace whose reading closes in on its setpoint (time constant 0.05 s); its
    status says done at once, as a controller that took the setpoint does. With ``glitch``
    = k, its k-th read within 0.1 of its second setpoint is NaN; it records what it is
    told, with its type."""

    told: ClassVar[list[Any]] = []
    glitch: ClassVar[int] = 0  # reads near 4 before the one that is NaN (0: none)

    def put(self, value: Any, **kwargs: Any) -> None:
        Furnace.told.append(value)
        self._from = self._reading()
        self._since = time.monotonic()
        super().put(value, **kwargs)

    def _reading(self) -> float:
        target = float(Signal.get(self))
        start = getattr(self, "_from", target)
        since = getattr(self, "_since", 0.0)
        return target - (target - start) * math.exp(-(time.monotonic() - since) / 0.05)

    def get(self, **kwargs: Any) -> Any:
        here = self._reading()
        told = Furnace.told
        if Furnace.glitch and len(told) == 2 and abs(here - float(told[1])) <= 0.1:
            Furnace.glitch -= 1
            if not Furnace.glitch:
                return math.nan
        return here


def _furnace(tmp_path: Path, extra: str = "", kind: str = "float") -> DeclaredInstrument:
    Furnace.told.clear()
    return _plugin_input(tmp_path, "Furnace", extra, kind)


@pytest.mark.parametrize("tolerance", [None, 0.1, 1.5, 2.0, 3.0])
def test_a_ramp_goes_on_whatever_the_tolerance_against_max_step(
    tmp_path: Path, tolerance: float | None
) -> None:
    """A step counted as arrived within ``tolerance`` of it, and the next was measured
    from there: with a tolerance near max_step a device that had barely moved got a burst
    of steps a few thousandths apart, and the ramp failed as "not followed" (review I);
    without one, a plugin's status (done at once) did the same (review J). A step now
    waits for room to gain a quarter of max_step."""
    extra = "" if tolerance is None else f", tolerance: {tolerance}"
    trial = _one_trial(_furnace(tmp_path, extra), 10.0)
    assert trial.ok, trial.error
    told = [0.0, *Furnace.told[:-1]]  # the last step, to 10, may be a short one
    assert all(b - a >= 0.5 - 1e-9 for a, b in zip(told, told[1:], strict=False)), told


class OffBy(ShortStage):
    """A plugin stage that settles 1.5 below every setpoint (within a tolerance of 1.6)."""

    def get(self, **kwargs: Any) -> Any:
        value = Signal.get(self, **kwargs)
        return value - 1.5 if isinstance(value, float) and value > 0 else value


def test_a_ramp_goes_on_with_a_device_that_settles_off_its_setpoint(tmp_path: Path) -> None:
    """Settling 1.5 below its setpoint, within its tolerance of 1.6, with max_step 2: an
    arrival test of half a step made every rising ramp time out at its first step (review
    J). Each step gains 0.5; the trial completes, within its tolerance of 9."""
    trial = _one_trial(_plugin_input(tmp_path, "OffBy", ", tolerance: 1.6"), 9.0)
    assert trial.ok, trial.error
    assert trial.readbacks["x"] == pytest.approx(7.5)


def test_the_preview_of_an_int_ramp_is_what_the_ramp_writes(tmp_path: Path) -> None:
    """`plan --dry-run` previewed an int's steps as 2.4, 4.4 while a trial wrote 2, 4
    (review J): one rounding for both."""
    inst = _furnace(tmp_path, ", tolerance: 0.01", kind="int")
    try:
        preview = inst.inputs["x"].ramp_preview(7)
    finally:
        inst.close()
    assert preview == [0.0, 2.0, 4.0, 6.0, 7.0]


def test_a_reading_that_glitches_to_nan_mid_ramp_fails_the_trial_as_transient(
    tmp_path: Path,
) -> None:
    """A step refused for where the device reads mid-ramp (one NaN) is not the point's
    failure: the trial is transient, retried, not learned as failing (review I). The
    third read near the second step is the one the next step is measured from (the
    step's tolerance wait and its arrival read it first)."""
    Furnace.glitch = 3
    try:
        trial = _one_trial(_furnace(tmp_path, ", tolerance: 0.1"), 9.0)
    finally:
        Furnace.glitch = 0
    assert trial.exit_status == "fail" and trial.transient, trial
    assert "is not a finite number" in (trial.error or ""), trial.error


def test_an_int_input_ramps_in_whole_numbers_and_gets_an_int(tmp_path: Path) -> None:
    """An int parameter with max_step was handed to the device as a float (7.0), and its
    steps as 4.3999999999999995 (review I): whole numbers, the last the value as given."""
    trial = _one_trial(_furnace(tmp_path, ", tolerance: 0.1", kind="int"), 7)
    assert trial.ok, trial.error
    told = Furnace.told
    assert all(type(v) is int for v in told), [type(v) for v in told]
    assert told[-1] == 7 and told == sorted(told), told
    # each within max_step of the one before (the reading, within 0.1 of it, may hold the
    # next whole number back by one: never a step past max_step from where it reads)
    assert all(0 < b - a <= 2 for a, b in zip([0, *told], told, strict=False)), told


def _stage_campaign(tmp_path: Path, device: str, max_step: float, budget: str) -> None:
    """``c.yaml``: a Sobol campaign over x in [0, 10] on ``stage.yaml``, whose input x is a
    plugin ``device`` at 0 with limits [0, 10] and ``max_step``."""
    (tmp_path / "stage.yaml").write_text(
        "inputs:\n"
        f"  x: {{device: '{device}', args: {{value: 0.0}}, limits: [0, 10], "
        f"max_step: {max_step}}}\n"
        "outputs:\n"
        "  y: {device: 'ophyd:Signal', args: {value: 1.0}}\n"
    )
    (tmp_path / "c.yaml").write_text(
        "name: ramps\n"
        "parameters:\n  - {name: x, type: float, bounds: [0, 10]}\n"
        "objectives:\n  - {name: y, goal: maximize}\n"
        "instrument: {file: stage.yaml}\n"
        "planner: {kind: sobol}\n"
        f"budget: {budget}\n"
        "seed: 3\n"
    )


def test_a_sobol_campaign_with_a_small_max_step_completes_every_trial(tmp_path: Path) -> None:
    """Review F: max_step 0.5 over [0, 10] refused 10 of 13 Sobol trials, and the campaign
    failed on max_failures. Each move now ramps: all 8 trials complete, each measured where
    it was sent, and no write to the device is further than 0.5 from the one before."""
    _stage_campaign(tmp_path, f"{__name__}:StepLog", 0.5, "{max_trials: 8, max_failures: 1}")
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        StepLog.puts.clear()
        summary = Runner(load_campaign(tmp_path / "c.yaml"), store).run()
        trials = store.trials(summary.campaign_id)
    finally:
        store.close()
    assert summary.completed == 8, [t.error for t in trials]
    for t in trials:
        assert (t.readbacks or {}).get("x") == pytest.approx(t.parameters["x"]), t
    xs = [0.0] + [t.parameters["x"] for t in trials]
    assert max(abs(b - a) for a, b in zip(xs, xs[1:], strict=False)) > 0.5  # the design jumps
    steps = [0.0, *StepLog.puts]
    assert max(abs(b - a) for a, b in zip(steps, steps[1:], strict=False)) <= 0.5 + 1e-12
    assert len(StepLog.puts) > len(trials)  # it ramped


def test_the_safe_state_also_keeps_to_max_step_on_a_plugin_device(tmp_path: Path) -> None:
    """The same for a plugin device (an ophyd Signal): 0 -> 9 with max_step 2 is five
    writes, each within 2 of where the device is."""
    inst = _plugin_stage(tmp_path, 0.0)
    written: list[float] = []
    inst.inputs["x"]._positioner.subscribe(
        lambda value, **_: written.append(float(value)), run=False
    )
    inst.close()
    assert written == [2.0, 4.0, 6.0, 8.0, 9.0]
    assert inst.safe_state_failures == ()


# ---------------------------------------------------------------------------- failures
def test_a_step_not_reached_stops_the_safe_state_naming_the_setpoint_pv(
    ioc: IOC, tmp_path: Path
) -> None:
    """The readback (here a PV that never follows) does not reach the first step within
    the input's timeout: nothing more is written to it, the next entry still is, and the
    failure names the setpoint PV, temp:SP, not the readback it waited on."""
    ioc.put("pressure", 298.15)  # the readback: 25 degC, and it stays there
    inst = _instrument(
        tmp_path,
        ("    readback: temp:RBV\n", "    readback: pressure\n"),
        ("    timeout: 10\n", "    timeout: 1\n    tolerance: 0.5\n"),
    )
    before = len(ioc.puts())
    inst.close()
    (failure,) = inst.safe_state_failures
    assert (failure.key, failure.value, failure.target) == ("temperature", 100.0, f"PV {SP}")
    assert "after 1 step(s), the last to 55 degC" in failure.error, failure.error
    assert "readback 25 not within 0.5 of 55 after 1 s" in failure.error
    assert str(failure).startswith(f"temperature = 100 (PV {SP}): InstrumentError: ")
    assert _setpoints(ioc, before) == [pytest.approx(KELVIN + 55)]
    assert _setpoints(ioc, before, PREFIX + "heater:enable") == [0]


def test_a_safe_state_pv_that_refuses_the_write_is_reported(ioc: IOC, tmp_path: Path) -> None:
    """put_count is read-only: the failure is exposed, not only logged."""
    inst = _instrument(tmp_path, ("  heater:enable: 0\n", "  put_count: 0\n"))
    inst.close()
    (failure,) = inst.safe_state_failures
    assert (failure.key, failure.target) == ("put_count", f"PV {PREFIX}put_count")
    assert "ReadOnlyError" in failure.error


# ---------------------------------------------------------------------------- device limits
def test_a_safe_state_outside_the_devices_own_limits_is_refused_at_connect(
    ioc: IOC, tmp_path: Path
) -> None:
    """drv:SP takes at most 340 K (66.85 degC): a safe state of 90 degC (within the file's
    limits) would be refused by the IOC just when the campaign stops. The instrument is
    refused when it connects, nothing put; `instruments check` lists the safe state under
    its setpoint PV (exit 1). 50 degC is accepted."""
    edits = [
        ("setpoint: temp:SP", "setpoint: drv:SP"),
        ("readback: temp:RBV", "readback: drv:RBV"),
        ("limits: [0, 100]", "limits: [0, 95]"),
        ("    max_step: 30\n", ""),
    ]
    before = len(ioc.puts())
    with pytest.raises(DeviceLimitsError) as caught:
        _instrument(tmp_path, *edits, ("  temperature: 100\n", "  temperature: 90\n"))
    problem = (
        "its safe state (on_stop) 90 degC is outside [-273.15, 66.85] degC, the control "
        f"limits DRVL/DRVH of PV {PREFIX}drv:SP, which would refuse or clamp it"
    )
    assert f"instrument 'bench': input 'temperature': {problem}" in str(caught.value)
    assert ioc.puts()[before:] == []
    out = _check(str(tmp_path / "bench.yaml"))
    assert out.exit_code == 1, out.output
    assert f"temperature = 90 PV:{PREFIX}drv:SP: {problem}" in " ".join(out.output.split())
    _instrument(tmp_path, *edits, ("  temperature: 100\n", "  temperature: 50\n")).close()
    assert _setpoints(ioc, before, PREFIX + "drv:SP") == [pytest.approx(KELVIN + 50)]


def test_plan_dry_run_checks_a_pvs_own_limits_whenever_its_ioc_answers(
    ioc: IOC, tmp_path: Path
) -> None:
    """The dry run checked a PV's own limits only if its connection, started when the
    devices were built, had come up by then: two runs of one preview gave opposite
    verdicts, and one showed the write beyond DRVH "from its reading 25 degC now", exit 0
    (review U). It now waits for the PVs (at most 2 s); an input whose IOC does not answer
    says that its limits were not checked, and shows no reading."""
    bench = BENCH.replace("setpoint: temp:SP", "setpoint: drv:SP")
    bench = bench.replace("readback: temp:RBV", "readback: drv:RBV")
    (tmp_path / "bench.yaml").write_text(
        bench.replace("  temperature: 100\n", "  temperature: 50\n")
    )
    (tmp_path / "campaign.yaml").write_text(CAMPAIGN)

    def preview(temperature: int) -> Any:
        at = ["--at", f"temperature={temperature}", "--at", "flow=1"]
        return CliRunner().invoke(app, ["plan", str(tmp_path / "campaign.yaml"), "--dry-run", *at])

    ioc.put("drv:SP", 298.15)  # 25 degC, whatever an earlier test left there
    _until(lambda: ioc.get("drv:RBV") == pytest.approx(298.15), "drv at 25 degC")
    out = preview(80)  # 353.15 K, over drv:SP's DRVH of 340 K
    assert out.exit_code == 1, out.output
    assert "outside the device's own limits [-273.15, 66.85]" in " ".join(out.output.split())
    assert "from its reading 25 degC now: 55, 60" in " ".join(preview(60).output.split())
    before = len(ioc.puts())
    ioc.stop()
    try:
        out = preview(60)
    finally:
        ioc.start()
    said = " ".join(out.output.split())
    assert out.exit_code == 0, said
    assert (
        "not connected when checked: the device's own limits and max_step were not checked "
        "here (the run checks them)" in said
    ), said
    assert "from its reading" not in said
    assert ioc.puts()[before:] == []


def test_a_safe_state_pv_outside_its_control_limits_is_refused_at_connect(
    ioc: IOC, tmp_path: Path
) -> None:
    """The same for an `on_stop` PV that is no input: drv:SP takes at most 340 (K)."""
    before = len(ioc.puts())
    with pytest.raises(DeviceLimitsError) as caught:
        _instrument(tmp_path, ("  heater:enable: 0\n", "  drv:SP: 400\n"))
    assert (
        f"on_stop PV 'drv:SP': 400 is outside [0, 340], the control limits DRVL/DRVH of PV "
        f"{PREFIX}drv:SP, which would refuse or clamp it when the campaign stops"
    ) in str(caught.value)
    assert ioc.puts()[before:] == []


# ---------------------------------------------------------------------------- units
def test_a_setpoint_pv_in_another_unit_is_refused(ioc: IOC, tmp_path: Path) -> None:
    """temp:SP speaks K (its EGU); without `device_units: K` 30 degC would be sent as 30 K
    and read back as 30 "degC". Refused when the instrument connects, nothing put, and
    `instruments check` says so with the fix (exit 1); flow:SP in mL/min is fine."""
    edit = ("    device_units: K\n", "")
    before = len(ioc.puts())
    with pytest.raises(DeviceTypeError) as caught:
        _instrument(tmp_path, edit, ("  temperature: 100\n", "  temperature: 25\n"))
    assert (
        f"PV {SP} (the setpoint of input 'temperature') is in 'K' (its EGU), but the file "
        "says it speaks 'degC' (its units, no device_units); set `device_units: K`"
    ) in str(caught.value)
    assert ioc.puts()[before:] == []
    out = _check(str(tmp_path / "bench.yaml"))
    assert out.exit_code == 1, out.output
    assert "set `device_units: K` on the input" in " ".join(out.output.split())
    assert "flow" not in str(caught.value)


# ---------------------------------------------------------------------------- check
CAMPAIGN = """\
name: bench
parameters:
  - {name: temperature, type: float, bounds: [30, 100], unit: degC}
  - {name: flow, type: float, bounds: [0.2, 4], unit: mL/min}
objectives:
  - {name: yield, goal: maximize}
instrument: {file: bench.yaml}
planner: {kind: sobol}
budget: {max_trials: 1}
seed: 1
"""


@pytest.mark.parametrize("max_step", ["30", "3"])
def test_check_notes_a_reading_outside_the_bounds(ioc: IOC, tmp_path: Path, max_step: str) -> None:
    """No `limits`: the IOC at 25 degC is outside the bounds [30, 100]. A note, not a
    problem: the first trial moves it in, in steps of at most max_step (a max_step of 3
    used to refuse every trial, and the instrument with them)."""
    (tmp_path / "bench.yaml").write_text(
        BENCH.replace("    limits: [0, 100]\n", "")
        .replace("max_step: 30", f"max_step: {max_step}")
        .replace("  temperature: 100\n", "  temperature: 30\n")
    )
    (tmp_path / "campaign.yaml").write_text(CAMPAIGN)
    out = _check(str(tmp_path / "campaign.yaml"))
    said = " ".join(out.output.split())
    assert out.exit_code == 0, said
    assert (
        "note: temperature PV:closedloop:sim:temp:RBV: 25 is outside the campaign's bounds "
        "[30, 100] (the input declares no limits)"
    ) in said


def test_a_slow_ioc_is_connected_but_slow_not_missing(ioc: IOC, tmp_path: Path) -> None:
    """Every read of temp:RBV takes 1.5 s, longer than connection_timeout (1 s): its PVs are
    connected, and the instrument is refused saying so, not "cannot connect"."""
    ioc.put("rbv_delay", 1.5)
    with pytest.raises(DeviceConnectionError) as caught:
        _instrument(tmp_path, ("connection_timeout: 2", "connection_timeout: 1"))
    message = str(caught.value)
    assert "connected, but no answer in time from input temperature" in message, message
    assert "did not answer their first reads within 1 s" in message
    assert "cannot connect" not in message


def test_a_readback_too_slow_for_the_pre_check_is_not_a_refused_setpoint(
    ioc: IOC, tmp_path: Path
) -> None:
    """max_step reads the readback before dispatch; a read slower than ophyd's timeout (2
    s) used to fail the trial as "limit check failed" (a setpoint refused, never retried)."""
    inst = _instrument(tmp_path)
    ioc.put("rbv_delay", 2.5)
    try:
        with Dispatcher(inst) as dispatcher:
            result = dispatcher.run(1, "c", {"temperature": 40.0, "flow": 1.0})
    finally:
        ioc.put("rbv_delay", 0.0)
        inst.close(safe_state=False)
    error = result.error or ""
    assert error.startswith("the setpoints could not be checked against the limits"), error
    assert result.transient and result.run_uid is None
    assert failure_kind(error) != "setpoint refused"


# ---------------------------------------------------------------------------- load
PLUGIN = "ophyd:Signal"
MIXED = [
    {"name": "n", "type": "int", "bounds": [1, 10]},
    {"name": "c", "type": "choice", "values": [1, 2, 5]},
    {"name": "p", "type": "fixed", "value": 1.5},
    {"name": "x", "type": "float", "bounds": [0.2, 4]},
]


def _mixed_file(
    tmp_path: Path, on_stop: str, x_limits: str = "", c_limits: str = "", p_limits: str = ""
) -> Path:
    path = tmp_path / "mixed.yaml"
    path.write_text(
        "inputs:\n"
        f"  n: {{device: '{PLUGIN}', args: {{value: 1}}}}\n"
        f"  c: {{device: '{PLUGIN}', args: {{value: 1}}{c_limits}}}\n"
        f"  p: {{device: '{PLUGIN}', args: {{value: 1.5}}{p_limits}}}\n"
        f"  x: {{device: '{PLUGIN}', args: {{value: 1.0}}{x_limits}}}\n"
        "outputs:\n"
        f"  y: {{device: '{PLUGIN}', args: {{value: 0.0}}}}\n"
        "on_stop:\n"
        f"  {on_stop}\n"
    )
    return path


@pytest.mark.parametrize(
    ("on_stop", "problem", "fix"),
    [
        ("n: 0.5", "0.5 is not a whole number, but parameter 'n' is an int", "whole number"),
        ("c: 3", "3 is not one of the values of parameter 'c' (1, 2, 5)", "give one of them"),
        ("p: 99", "99, but parameter 'p' is fixed to 1.5", "set it to 1.5"),
        ("x: 400", "400 is outside the bounds [0.2, 4] of parameter 'x'", "declare `limits:`"),
    ],
)
def test_a_safe_state_the_parameter_cannot_take_is_refused_at_load(
    tmp_path: Path, on_stop: str, problem: str, fix: str
) -> None:
    """These were all written to the devices when the campaign stopped."""
    path = _mixed_file(tmp_path, on_stop)
    with pytest.raises(InstrumentFileError) as caught:
        describe_instrument(InstrumentConfig(file=str(path)), MIXED, base_dir=tmp_path)
    exc = caught.value
    assert (exc.path, exc.line) == (path, 9)
    assert exc.problem.startswith(f"on_stop.{on_stop.split(':')[0]}: {problem}"), exc.problem
    assert fix in exc.fix


def test_a_safe_state_outside_the_bounds_but_within_limits_is_allowed(tmp_path: Path) -> None:
    """A furnace cooled to room temperature: outside the range searched, inside the range
    the hardware may be set to (`limits`)."""
    path = _mixed_file(tmp_path, "x: 0.1", x_limits=", limits: [0.1, 5]")
    outputs = describe_instrument(InstrumentConfig(file=str(path)), MIXED, base_dir=tmp_path)
    assert outputs == ("y",)


def test_an_off_state_within_limits_is_allowed_for_fixed_and_choice_parameters(
    tmp_path: Path,
) -> None:
    """A laser fixed at 1.5 W for the campaign is switched off at its end; a filter wheel
    parks at 0. Refused, the fix pointed at dropping the safe state (found in review)."""
    path = _mixed_file(
        tmp_path, "p: 0\n  c: 0", c_limits=", limits: [0, 5]", p_limits=", limits: [0, 2]"
    )
    outputs = describe_instrument(InstrumentConfig(file=str(path)), MIXED, base_dir=tmp_path)
    assert outputs == ("y",)


def test_validate_names_the_file_line_and_fix_of_a_bad_safe_state(tmp_path: Path) -> None:
    _mixed_file(tmp_path, "c: 3")
    (tmp_path / "campaign.yaml").write_text(
        "name: mixed\nparameters:\n"
        + "".join(f"  - {p}\n".replace("'", "") for p in MIXED)
        + "objectives:\n  - {name: y, goal: maximize}\ninstrument: {file: mixed.yaml}\n"
        "planner: {kind: sobol}\nbudget: {max_trials: 1}\n"
    )
    out = CliRunner().invoke(app, ["validate", str(tmp_path / "campaign.yaml")])
    # the CLI's entry point prints it as `error: ...` with exit code 2
    assert isinstance(out.exception, CampaignConfigError), out.output
    said = " ".join(str(out.exception).split())
    assert "mixed.yaml:9: on_stop.c: 3 is not one of the values of parameter 'c'" in said
    assert "fix: give one of them, or declare `limits:` on inputs.c that hold it" in said


# ---------------------------------------------------------------------------- plan
def test_plan_notes_each_parameter_outside_the_space_and_each_refusal(tmp_path: Path) -> None:
    """`--at p=99` on a parameter fixed to 1.5 said "setpoint '99' is not a number"; of
    several values outside their bounds only the first was noted; of several refused
    values only the first was shown."""
    _mixed_file(tmp_path, "p: 1.5", x_limits=", limits: [0.2, 4]")
    text = (tmp_path / "mixed.yaml").read_text()
    text = text.replace("args: {value: 1}}\n  c", "args: {value: 1}, limits: [1, 10]}\n  c")
    (tmp_path / "mixed.yaml").write_text(text)
    (tmp_path / "campaign.yaml").write_text(
        "name: mixed\nparameters:\n"
        + "".join(f"  - {p}\n".replace("'", "") for p in MIXED)
        + "objectives:\n  - {name: y, goal: maximize}\ninstrument: {file: mixed.yaml}\n"
        "planner: {kind: sobol}\nbudget: {max_trials: 1}\nseed: 1\n"
    )
    campaign = str(tmp_path / "campaign.yaml")

    def plan(*at: str) -> str:
        args = [a for pair in at for a in ("--at", pair)]
        out = CliRunner().invoke(app, ["plan", campaign, "--dry-run", *args])
        return " ".join(out.output.split())

    said = plan("p=99")
    assert "note: p=99.0 but the parameter is fixed to 1.5" in said, said
    assert "not a number" not in said
    said = plan("n=3", "c=2", "p=1.5", "x=5.5")
    assert said.count("note:") == 0 and "refused before dispatch: x: setpoint 5.5" in said, said
    said = plan("n=20", "c=2", "p=1.5", "x=9")
    assert "refused before dispatch: n: setpoint 20 is outside the hardware limits" in said
    assert "refused before dispatch: x: setpoint 9 is outside the hardware limits" in said
    assert "the trial would fail with the first of these reasons" in said
    said = plan("n=2.5", "c=2", "p=1.5", "x=1")
    assert "note: n=2.5 is not an integer" in said, said


# ---------------------------------------------------------------------------- the rule
def test_check_setpoint_measures_from_the_last_setpoint_too() -> None:
    check_setpoint("t", 20.0, limits=None, max_step=10, current=lambda: 15.0)
    with pytest.raises(SetpointRefused, match="step of 30 from its last setpoint 50"):
        check_setpoint(
            "t", 20.0, limits=None, max_step=10, current=lambda: 15.0, commanded=lambda: 50.0
        )
    # not known (nothing written yet, or NaN): the readback alone decides
    unknowns: tuple[float | None, ...] = (None, float("nan"))
    for unknown in unknowns:
        check_setpoint(
            "t",
            20.0,
            limits=None,
            max_step=10,
            current=lambda: 15.0,
            commanded=functools.partial(lambda value: value, unknown),
        )


@pytest.mark.parametrize(
    ("egu", "unit", "refused"),
    [("1/s", "Hz", False), ("hPa", "mbar", False), ("K", "degC", True), ("mm", "um", True)],
)
def test_an_egu_that_names_the_same_unit_otherwise_is_not_refused(
    egu: str, unit: str, refused: bool
) -> None:
    """Hz against 1/s, mbar against hPa were refused as another unit (found in review): a
    number means the same in both. A unit with another scale or offset still is."""
    from types import SimpleNamespace

    device = SimpleNamespace(decl=SimpleNamespace(device_units=None, units=unit), units=unit)
    problem = InputDevice._egu_problem(device, egu, "PV x")  # type: ignore[arg-type]
    assert (problem is not None) == refused, problem


@pytest.mark.parametrize(
    ("egu", "unit", "refused"),
    [("um", "milimeter", True), ("mbar", "Torr", True), ("%", "wt%", False), ("eq", "eq", False)],
)
def test_an_input_unit_pint_does_not_know_is_refused_on_a_device_that_names_one(
    egu: str, unit: str, refused: bool
) -> None:
    """A stage in um driven with `units: milimeter` (a typo) passed every check: pint could
    not read the file's unit, so the EGU was not judged, and 5 "mm" went out as 5 um (found
    in review). A label pint does not know stays allowed where the device says nothing
    pint could compare (a dimensionless EGU, or the same text)."""
    from types import SimpleNamespace

    device = SimpleNamespace(
        decl=SimpleNamespace(device_units=None, units=unit), units=unit, name="x"
    )
    problem = InputDevice._egu_problem(device, egu, "PV st:SP")  # type: ignore[arg-type]
    assert (problem is not None) == refused, problem
    if refused:
        assert problem is not None
        assert f"PV st:SP is in {egu!r} (its EGU), but the file says it speaks {unit!r}" in problem
        assert "which is no unit pint knows" in problem
        assert "write `units:` of input 'x' (and the campaign parameter's `unit:`)" in problem


@pytest.mark.parametrize(("reading", "written"), [(14.0, []), (11.0, [9.0])])
def test_the_safe_state_never_steps_outside_the_limits(
    tmp_path: Path, reading: float, written: list[float]
) -> None:
    """A stage found at 14 with limits [0, 10] and max_step 2: the step toward the safe
    state, 12, lies outside the limits, and used to be written (33 to a stage at 38 in
    review). Nothing is written and the failure says why; from 11 the safe state, 9, is
    within max_step and within the limits, and is written."""
    inst = _plugin_stage(tmp_path, 0.0)
    signal = inst.inputs["x"]._positioner
    signal.put(reading)  # moved by hand after the campaign connected
    seen: list[float] = []
    signal.subscribe(lambda value, **_: seen.append(float(value)), run=False)
    inst.close()
    assert seen == written
    if written:
        assert inst.safe_state_failures == ()
    else:
        (failure,) = inst.safe_state_failures
        assert "it reads 14, and no step within max_step of that stays within its limits" in (
            failure.error
        ), failure.error
        assert "setpoint 12 is outside the hardware limits [0, 10]" in failure.error
        assert "bring it back within its limits by hand" in failure.error


def test_an_input_no_trial_could_move_is_refused_when_it_connects(tmp_path: Path) -> None:
    """At 50 with limits [0, 10] and max_step 2 every trial would be refused: the campaign
    used to start, fail trial after trial, then step its safe state from there. Now the
    instrument is refused when it connects (as `run` and `resume` build it)."""
    with pytest.raises(DeviceLimitsError) as caught:
        _plugin_stage(tmp_path, 50.0)
    assert (
        "input 'x': it reads 50, 40 from its limits [0, 10], more than max_step 2: no step "
        "toward any setpoint stays within them, so every trial would be refused"
    ) in str(caught.value)


@pytest.mark.parametrize(
    ("setpoint", "readback", "disagree"),
    [("mm", "um", True), ("degC", "K", True), ("mm", "mm", False), ("hPa", "mbar", False)],
)
def test_setpoint_and_readback_pvs_in_units_no_device_units_fits_are_said_so(
    setpoint: str, readback: str, disagree: bool
) -> None:
    """A setpoint PV in mm read back through one in um was told "set device_units: um", and
    once that was set, "set device_units: mm" (found in review). The two disagree: said."""
    from instruments._epics import _egu_disagreement

    said = _egu_disagreement(
        [("PV s:SP (the setpoint of input 'x')", setpoint), ("PV s:RBV (the readback)", readback)]
    )
    assert (said is not None) == disagree, said
    if said is not None:
        assert said.startswith(
            f"PV s:SP (the setpoint of input 'x') is in {setpoint!r} and PV s:RBV (the "
            f"readback) in {readback!r} (their EGUs): no `device_units` fits both"
        )


@given(
    value=st.floats(-100, 100),
    here=st.floats(-100, 100),
    told=st.floats(-100, 100),
    step=st.floats(0.01, 50),
)
def test_a_ramp_step_keeps_to_max_step_from_both_and_goes_as_far_as_it_may(
    value: float, here: float, told: float, step: float
) -> None:
    """:func:`next_step`: within ``max_step`` of the readback and of the last setpoint, and
    no point that is lies nearer ``value``; ``None`` only when none is."""
    nxt = next_step(value, here, told, step)
    if nxt is None:
        assert abs(here - told) > 2 * step
        return
    # no slack: a step one bit over max_step was refused by the check it was made for
    assert abs(nxt - here) <= step and abs(nxt - told) <= step
    check_setpoint(
        "x", nxt, limits=None, max_step=step, current=lambda: here, commanded=lambda: told
    )
    low, high = max(here, told) - step, min(here, told) + step
    assert abs(nxt - value) <= abs(min(max(value, low), high) - value) + 1e-12
    if abs(value - here) <= step and abs(value - told) <= step:
        assert nxt == pytest.approx(value, abs=1e-9)  # up to the rounding of here -/+ step


def test_plan_dry_run_shows_the_ramp_from_where_the_device_reads(tmp_path: Path) -> None:
    """`plan --dry-run` said only that a move further than max_step goes in steps; a
    technician wants the steps: from the stage's reading 0 to 9 with max_step 2."""
    _stage_campaign(tmp_path, "ophyd:Signal", 2, "{max_trials: 3}")
    out = CliRunner().invoke(app, ["plan", str(tmp_path / "c.yaml"), "--dry-run", "--at", "x=9"])
    said = " ".join(out.output.split())
    assert out.exit_code == 0, said
    assert "a move further than max_step 2 goes in steps of at most that" in said
    assert "from its reading 0 now: 2, 4, 6, 8, 9" in said, said


def test_a_plugin_input_is_not_read_after_a_failed_run(tmp_path: Path) -> None:
    """A plugin device's call that outlives its time limit locks it until it returns, so
    the bounded read after a failed run would have failed every later trial and the safe
    state of a faulted controller (found in review, session 38): only PVs and motors are
    read then."""
    inst = _plugin_stage(tmp_path, 0.0)
    try:
        assert inst.inputs["x"].abandonable_read is False
        dispatcher = Dispatcher(inst)
        assert dispatcher._readbacks_after_failure({"x": "x"}) == {}
        dispatcher.close()
    finally:
        inst.close(safe_state=False)


def test_a_ramp_that_cannot_start_says_why(tmp_path: Path) -> None:
    """Reading 0 with its last setpoint 9 and max_step 2: no step is within max_step of
    both. It said "move from 0 to 5 is a step of 5, larger than max_step 2", though such
    moves now ramp (review I)."""
    inst = _plugin_stage(tmp_path, 0.0)
    try:
        device = inst.inputs["x"]
        device._last_written = 9.0  # told 9; the stage has not followed
        with pytest.raises(SetpointRefused) as refused:
            device.check_value(5.0)
    finally:
        inst.spec = inst.spec.model_copy(update={"on_stop": {}})
        inst.close()
    said = str(refused.value)
    assert (
        "x: no step toward 5 is within max_step 2 of both its reading 0 and its last setpoint "
        "9: they are 9 apart, more than twice max_step (the device has not followed its last "
        "move), so any step would be larger than max_step 2; refused"
    ) == said, said
    assert failure_kind(f"SetpointRefused: {said}") == "step too large"


def test_an_instrument_without_a_safe_state_is_judged_without_importing_epics() -> None:
    """A second Ctrl-C during the first stop's teardown waited 10 s and exited 3, "SAFE
    STATE NOT WRITTEN", for a function instrument: the main thread was importing
    ``instruments._epics`` (caproto) when the handler ran, and the safe-state writer's own
    import of it waited for that import (found in review, session 39). Whether an
    instrument has a safe state is judged without importing it; in a fresh interpreter,
    since this module imports it."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from simulators import build_simulated_instrument\n"
        "from instruments._protocol import close_instrument, safe_state_failures, "
        "write_safe_state\n"
        "inst = build_simulated_instrument(lambda i: {'y': 1.0}, inputs={'x': (0.0, 1.0)}, "
        "outputs=['y'], seed=1)\n"
        "assert write_safe_state(inst) == [] and safe_state_failures(inst) == []\n"
        "close_instrument(inst, safe_state=False)\n"
        "print('instruments._epics' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "False", done.stderr
