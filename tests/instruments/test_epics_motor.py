"""An input declared ``motor:`` (an ophyd ``EpicsMotor``) over real Channel Access.

Against the motor records of ``motor_ioc.py`` (beside the reactor IOC,
``simulators.reactor_ioc``,
whose setpoint/readback PVs drive the other input), through the real engine: a RunEngine, an
``EpicsMotor``, a SQLite store, and the ``closedloop`` command in a subprocess where a user
would type it. The IOC logs every put it receives, so each test can say what reached the
motor and, above all, what never did:

* a campaign moves the motor, each trial ends when the record says done (DMOV), and the
  stored readback is the motor's RBV; a move right after a stopped one, too, though
  ophyd's callbacks deliver the stop's DMOV 1 late;
* the motor's soft limits (HLM/LLM) are read: ``instruments check`` shows them and flags
  limits or bounds beyond them, a setpoint beyond them is refused before any put (the
  record itself would only set LVIO), and a limit changed on the IOC is followed;
* ``max_step``, ``tolerance`` and ``settle_time`` apply to a motor as to a setpoint PV;
* an abort (the trial's timeout, Ctrl-C) stops the motor (STOP), then the safe state moves
  it (``on_stop``), and nothing is put after that;
* a stage that stalls, or ends on a limit switch, fails its trial saying so, and the
  campaign goes on;
* ``device_units`` converts to the motor's EGU; an EGU the file does not expect is refused.
"""

from __future__ import annotations

import functools
import logging
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from motor_ioc import MotorIOCProcess, motor_ioc  # noqa: F401  (the session's motor IOC)

from instruments import Dispatcher, InstrumentConfig, build_instrument
from instruments._epics import DeclaredInstrument, DeviceTypeError
from loop.failures import failure_kind
from tests.cli_process import closedloop, start_cli

M1 = "closedloop:mtr:m1"
M2 = "closedloop:mtr:m2"
FLOW_SP = "closedloop:sim:flow:SP"

STAGE = """\
name: stage
prefix: "closedloop:"
connection_timeout: 5
inputs:
  position:
    motor: mtr:m1               # closedloop:mtr:m1, HLM/LLM [0, 50] mm on the IOC
    limits: [0, 40]
    timeout: 10
  flow:                         # a setpoint/readback pair on the reactor IOC
    setpoint: sim:flow:SP
    readback: sim:flow:RBV
    tolerance: 0.01
    units: mL/min
    limits: [0.1, 5]
outputs:
  intensity: {pv: "mtr:intensity"}
  seen_x: {pv: "mtr:seen:x"}    # m1's RBV when the acquisition ran
  seen_done: {pv: "mtr:seen:done"}  # m1's DMOV then
acquire:
  pv: mtr:acquire
  done: {pv: mtr:busy, value: 0}
  timeout: 10
on_stop:
  position: 5
"""

CAMPAIGN = """\
name: motor-scan
parameters:
  - {{name: position, type: float, bounds: {bounds}, unit: mm}}
  - {{name: flow, type: float, bounds: [0.2, 4], unit: mL/min}}
objectives:
  - {{name: intensity, goal: maximize}}
instrument:
  file: stage.yaml
planner: {{kind: sobol}}
budget: {{max_trials: {trials}, max_failures: 10}}
seed: 7
"""

PARAMETERS = [
    {"name": "position", "type": "float", "bounds": [0, 40], "unit": "mm"},
    {"name": "flow", "type": "float", "bounds": [0.2, 4], "unit": "mL/min"},
]


def _until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.02)


def _stage(**edits: str) -> str:
    text = STAGE
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def _instrument(tmp_path: Path, text: str = STAGE, **kwargs: Any) -> DeclaredInstrument:
    (tmp_path / "stage.yaml").write_text(text)
    params = kwargs.get("parameters", PARAMETERS)
    inst = build_instrument(
        InstrumentConfig(file="stage.yaml"), params, base_dir=tmp_path, seed=None
    )
    assert isinstance(inst, DeclaredInstrument)
    return inst


def _campaign(tmp_path: Path, text: str = STAGE, bounds: str = "[0, 40]", trials: int = 3) -> Path:
    (tmp_path / "stage.yaml").write_text(text)
    path = tmp_path / "c.yaml"
    path.write_text(CAMPAIGN.format(bounds=bounds, trials=trials))
    return path


def _puts(ioc: MotorIOCProcess, before: int, pv: str | None = None) -> list[tuple[str, Any]]:
    """``(pv, value)`` of the puts the motor IOC received since ``before``."""
    rows = [(p["pv"], p["value"]) for p in ioc.puts()[before:]]
    return [r for r in rows if pv is None or r[0] == pv]


def _at_rest(ioc: MotorIOCProcess, motor: str = "m1") -> bool:
    return bool(ioc.get(f"{motor}.DMOV") == 1 and ioc.get(f"{motor}.MOVN") == 0)


def _park(ioc: MotorIOCProcess, motor: str, position: float) -> None:
    ioc.put(f"{motor}.VAL", position)
    _until(
        lambda: _at_rest(ioc, motor) and ioc.get(f"{motor}.RBV") == position,
        f"{motor} rests at {position}",
    )


@pytest.fixture
def motor(motor_ioc: MotorIOCProcess) -> MotorIOCProcess:  # noqa: F811
    """The motor IOC as every test expects it: no faults, the stock limits and speeds, both
    stages at rest at 0 (whatever the test before left)."""

    def reset() -> None:
        for name, hlm, velo in (("m1", 50.0, 100.0), ("m2", 30_000.0, 100_000.0)):
            motor_ioc.put(f"{name}.STOP", 1)
            motor_ioc.put(f"{name}:stall_at", math.nan)
            motor_ioc.put(f"{name}:miss", 0.0)
            motor_ioc.put(f"{name}:hls_at", hlm * 1.1)
            motor_ioc.put(f"{name}:lls_at", -hlm * 0.1)
            motor_ioc.put(f"{name}.HLM", hlm)
            motor_ioc.put(f"{name}.LLM", 0.0)
            motor_ioc.put(f"{name}.VELO", velo)
            _until(functools.partial(_at_rest, motor_ioc, name), f"{name} stops")
            _park(motor_ioc, name, 0.0)

    reset()
    return motor_ioc


# ---------------------------------------------------------------------------- 1: a campaign
class ReadMotorAtEachTrialEnd:
    """A runner listener that reads m1's RBV and DMOV the moment each trial ends."""

    def __init__(self, ioc: MotorIOCProcess) -> None:
        self.ioc = ioc
        self.seen: dict[int, tuple[float, int]] = {}

    def trial_started(self, number: int, parameters: dict[str, Any]) -> None:
        pass

    def trial_finished(self, report: Any) -> None:
        self.seen[report.number] = (self.ioc.get("m1.RBV"), self.ioc.get("m1.DMOV"))


@pytest.mark.slow
def test_a_campaign_moves_the_motor_and_stores_its_readback(
    motor: MotorIOCProcess, tmp_path: Path
) -> None:
    """Three trials of a campaign over a motor and a setpoint PV: each moves the stage to
    its setpoint and measures only once the record says done (the acquisition saw DMOV 1
    and RBV at the target, after a move of up to 0.4 s); the stored readback is the RBV."""
    from loop.config import load_campaign
    from loop.runner import Runner
    from loop.store import Store

    before = len(motor.puts())
    listener = ReadMotorAtEachTrialEnd(motor)
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        summary = Runner(load_campaign(_campaign(tmp_path)), store, listener=listener).run()
        trials = store.trials(summary.campaign_id)
        observations = store.observations(summary.campaign_id)
    finally:
        store.close()
    assert summary.status == "completed", summary.reason
    assert [t.status for t in trials] == ["completed"] * 3
    vals = [v for _, v in _puts(motor, before, f"{M1}.VAL")]
    for t in trials:
        target = t.parameters["position"]
        rbv, dmov = listener.seen[t.number]
        assert (t.readbacks or {})["position"] == pytest.approx(rbv, abs=1e-9)
        assert rbv == pytest.approx(target, abs=1e-9) and dmov == 1
        seen = observations[t.id or 0]
        assert seen["seen_x"] == pytest.approx(target, abs=1e-9)  # measured at the target
        assert seen["seen_done"] == 1  # ... with the move over
        assert seen["intensity"] == pytest.approx(math.exp(-(((target - 20) / 10) ** 2)))
        assert (t.readbacks or {})["flow"] == pytest.approx(t.parameters["flow"], abs=0.01)
    # one put per trial, then the safe state; nothing outside the file's limits
    assert vals == [pytest.approx(t.parameters["position"]) for t in trials] + [5.0]
    assert all(0 <= v <= 40 for v in vals)
    _until(lambda: _at_rest(motor) and motor.get("m1.RBV") == 5.0, "m1 rests at its safe 5 mm")


# ---------------------------------------------------------------------------- 2: soft limits
def test_the_motors_soft_limits_are_read_and_refused_before_any_put(
    motor: MotorIOCProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The file allows [0, 60] mm; the record's HLM is 50. Building the instrument warns,
    its check row shows [0, 50] and the problem, and 55 mm is refused before dispatch (no
    run, no put): it used to fail inside the run, after the interlock pass, as ophyd's
    ``LimitError: position_raw_user_setpoint: value 55.0 outside of range``."""
    with caplog.at_level(logging.WARNING, logger="instruments"):
        inst = _instrument(tmp_path, _stage(**{"limits: [0, 40]": "limits: [0, 60]"}))
    said = "limits [0, 60] reach outside [0, 50] mm, the soft limits LLM/HLM of motor " + M1
    assert said in caplog.text
    before = len(motor.puts())
    try:
        rows = {r.name: r for r in inst.check()}
        with Dispatcher(inst) as dispatcher:
            refused = dispatcher.run(1, "c", {"position": 55.0, "flow": 1.0})
            fine = dispatcher.run(2, "c", {"position": 45.0, "flow": 1.0})
            # even a move that skipped the dispatcher's check puts nothing
            with pytest.raises(Exception, match="outside the device's own limits"):
                inst.inputs["position"].set(58.0).wait(10)
        during = _puts(motor, before)
    finally:
        inst.spec = inst.spec.model_copy(update={"on_stop": {}})
        inst.close()
    row = rows["position"]
    assert (row.source, row.connected, row.limits) == (f"PV:{M1}.RBV", True, (0.0, 60.0))
    assert row.device_limits == (0.0, 50.0) and row.units == "mm"
    assert said in (row.problem or "")
    assert refused.exit_status == "fail" and refused.run_uid is None, refused.error
    error = refused.error or ""
    assert (
        f"position: setpoint 55 is outside the device's own limits [0, 50] (soft limits "
        f"LLM/HLM of motor {M1})" in error
    ), error
    assert failure_kind(error) == "setpoint refused" and not refused.transient
    assert fine.ok, fine.error
    # the one move taken; a STOP after each run is bluesky stopping what it moved
    assert _puts(motor, before, f"{M1}.VAL") == [(f"{M1}.VAL", 45.0)]
    assert {pv for pv, _ in during} <= {f"{M1}.VAL", f"{M1}.STOP", "closedloop:mtr:acquire"}


def test_a_limit_changed_on_the_ioc_is_followed(motor: MotorIOCProcess, tmp_path: Path) -> None:
    """A technician lowers HLM to 30 mm while the instrument is connected: 35 mm, within
    the file's limits, is refused from then on, before any put."""
    inst = _instrument(tmp_path)
    try:
        dev = inst.inputs["position"]
        assert dev.device_limits == (0.0, 50.0)
        motor.put("m1.HLM", 30.0)
        _until(lambda: dev.device_limits == (0.0, 30.0), "the client sees HLM 30")
        before = len(motor.puts())
        with Dispatcher(inst) as dispatcher:
            refused = dispatcher.run(1, "c", {"position": 35.0, "flow": 1.0})
        assert _puts(motor, before) == []
    finally:
        inst.spec = inst.spec.model_copy(update={"on_stop": {}})
        inst.close()
    assert "setpoint 35 is outside the device's own limits [0, 30]" in (refused.error or "")


def test_the_record_itself_refuses_a_put_beyond_its_limits(motor: MotorIOCProcess) -> None:
    """What "a motor record refuses its own limits" means on the IOC (any client, not only
    closedloop): the put is taken, nothing moves, LVIO reads 1 and VAL is restored."""
    motor.put("m1.VAL", 70.0)
    _until(lambda: motor.get("m1.LVIO") == 1, "the record flags the limit violation")
    assert motor.get("m1.VAL") == 0.0 and motor.get("m1.RBV") == 0.0 and _at_rest(motor)


@pytest.mark.slow
def test_instruments_check_shows_the_motor_and_flags_bounds_beyond_its_limits(
    motor: MotorIOCProcess, tmp_path: Path
) -> None:
    """``closedloop instruments check`` on a campaign using the motor: fine within HLM; the
    campaign's bounds [0, 60] (no `limits:` in the file) beyond HLM 50 are a problem (exit
    1). Nothing is put either way."""
    no_limits = _stage(**{"    limits: [0, 40]\n": ""})
    good = _campaign(tmp_path, no_limits)
    before = len(motor.puts())
    out = closedloop("instruments", "check", str(good), cwd=tmp_path, wide=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"PV:{M1}.RBV" in out.stdout and "all devices connected" in out.stdout
    row = next(line for line in out.stdout.splitlines() if f"PV:{M1}.RBV" in line)
    assert "device limits" in out.stdout and "[0, 50]" in row, out.stdout  # LLM/HLM shown
    wide = _campaign(tmp_path, no_limits, bounds="[0, 60]")
    out = closedloop("instruments", "check", str(wide), cwd=tmp_path, wide=True)
    assert out.returncode == 1, out.stdout + out.stderr
    text = " ".join(out.stdout.split())
    assert (
        f"position PV:{M1}.RBV: its campaign's bounds [0, 60] reach outside [0, 50] mm, the "
        f"soft limits LLM/HLM of motor {M1}; setpoints beyond them are refused"
    ) in text, text
    assert _puts(motor, before) == []


@pytest.mark.slow
def test_plan_dry_run_shows_the_motor_move_and_puts_nothing(
    motor: MotorIOCProcess, tmp_path: Path
) -> None:
    """The dry run of a motor campaign: the set of the motor (one wait for both inputs),
    a point beyond the file's limits refused before dispatch; nothing reaches the IOC."""
    path = _campaign(tmp_path)
    before = len(motor.puts())
    out = closedloop(
        "plan", str(path), "--dry-run", "--at", "position=30", "--at", "flow=2", cwd=tmp_path
    )
    assert out.returncode == 0, out.stdout + out.stderr
    commands = [
        line.split()[1]
        for line in out.stdout.splitlines()
        if line.strip() and line.split()[0].isdigit()
    ]
    assert commands[1:4] == ["set", "set", "wait"], out.stdout
    assert "set          position 30" in out.stdout
    # the STOP bluesky writes to every motor it moved when the run ends is said too
    said = " ".join(out.stdout.split())
    assert (
        "after the run, however it ends: the RunEngine stops what it moved: position "
        "(writes 1 to closedloop:mtr:m1.STOP)" in said
    ), said
    refused = closedloop(
        "plan", str(path), "--dry-run", "--at", "position=45", "--at", "flow=2", cwd=tmp_path
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "position: setpoint 45 is outside the hardware limits [0, 40]" in refused.stdout
    assert "open_run" not in refused.stdout
    assert _puts(motor, before) == []


# ---------------------------------------------------------------------------- 3: moves
def test_max_step_applies_to_a_motor(motor: MotorIOCProcess, tmp_path: Path) -> None:
    """`max_step: 10` against the motor's RBV: 0 -> 15 ramps (VAL 10, then 15, each move
    waited for by its DMOV); 15 -> 8 and 8 -> 18 are single moves."""
    inst = _instrument(
        tmp_path, _stage(**{"    timeout: 10\n": "    timeout: 10\n    max_step: 10\n"})
    )
    before = len(motor.puts())
    try:
        with Dispatcher(inst) as dispatcher:
            far = dispatcher.run(1, "c", {"position": 15.0, "flow": 1.0})
            near = dispatcher.run(2, "c", {"position": 8.0, "flow": 1.0})
            next_ = dispatcher.run(3, "c", {"position": 18.0, "flow": 1.0})
    finally:
        inst.spec = inst.spec.model_copy(update={"on_stop": {}})
        inst.close()
    assert far.ok and near.ok and next_.ok, (far.error, near.error, next_.error)
    assert far.readbacks["position"] == pytest.approx(15.0)
    assert [v for _, v in _puts(motor, before, f"{M1}.VAL")] == [10.0, 15.0, 8.0, 18.0]


def test_tolerance_and_settle_time_apply_to_a_motor(motor: MotorIOCProcess, tmp_path: Path) -> None:
    """A stage that ends 0.3 mm past its target (the record says done): with `tolerance:
    0.5` the trial completes and stores where the stage is; with `tolerance: 0.1` it fails
    when the input's timeout is up, naming the readback. `settle_time` is waited after."""
    motor.put("m1:miss", 0.3)
    settled = _stage(
        **{"    timeout: 10\n": "    timeout: 10\n    tolerance: 0.5\n    settle_time: 0.3\n"}
    )
    inst = _instrument(tmp_path, settled)
    try:
        with Dispatcher(inst) as dispatcher:
            within = dispatcher.run(1, "c", {"position": 20.0, "flow": 1.0})
    finally:
        inst.spec = inst.spec.model_copy(update={"on_stop": {}})
        inst.close()
    assert within.ok, within.error
    assert within.readbacks["position"] == pytest.approx(20.3)
    assert within.duration >= 0.3  # at least the settle time (a lower bound only)
    # 3 s: the move itself (10 mm) must be done well before the timeout, or the message
    # is the move's, not the readback's (1 s was not, on a loaded machine)
    strict = _stage(**{"    timeout: 10\n": "    timeout: 3\n    tolerance: 0.1\n"})
    inst = _instrument(tmp_path, strict)
    try:
        with Dispatcher(inst) as dispatcher:
            outside = dispatcher.run(2, "c", {"position": 10.0, "flow": 1.0})
    finally:
        inst.spec = inst.spec.model_copy(update={"on_stop": {}})
        inst.close()
    assert outside.exit_status == "fail" and outside.transient
    assert "position: readback 10.3 not within 0.1 of 10 after 3 s" in (outside.error or "")


# ---------------------------------------------------------------------------- 3: stop, abort
def _slow(ioc: MotorIOCProcess) -> None:
    """m1 at 5 mm/s: a move of 40 mm takes 8 s, long enough to be interrupted."""
    ioc.put("m1.VELO", 5.0)


def test_a_timed_out_trial_stops_the_motor_then_the_safe_state_moves_it(
    motor: MotorIOCProcess, tmp_path: Path
) -> None:
    """The trial's timeout (1 s) aborts a move of 8 s: STOP is written, the stage stops
    short; closing writes the safe state (5 mm) and the stage goes there; nothing is put
    after the safe state (no late STOP to cancel it, no stale setpoint)."""
    _slow(motor)
    inst = _instrument(tmp_path)
    before = len(motor.puts())
    try:
        with Dispatcher(inst) as dispatcher:
            result = dispatcher.run(1, "c", {"position": 40.0, "flow": 1.0}, timeout=1.0)
        _until(lambda: _at_rest(motor), "the stopped stage rests")
        stopped_at = motor.get("m1.RBV")
    finally:
        inst.close()  # the safe state
    _until(lambda: _at_rest(motor) and motor.get("m1.RBV") == 5.0, "the stage reaches 5 mm")
    assert result.exit_status == "fail" and result.timed_out, result.error
    assert 0 < stopped_at < 40
    puts = [r for r in _puts(motor, before) if r[0].startswith(M1)]
    assert puts[0] == (f"{M1}.VAL", 40.0)
    assert puts[-1] == (f"{M1}.VAL", 5.0), puts  # the safe state, last
    assert set(puts[1:-1]) == {(f"{M1}.STOP", 1)}, puts  # only STOPs in between


@pytest.mark.slow
def test_ctrl_c_mid_move_stops_the_motor_and_sets_the_safe_state(
    motor: MotorIOCProcess, tmp_path: Path
) -> None:
    """`closedloop run` in a subprocess, Ctrl-C while the stage is on its way: the run is
    aborted (exit 130), STOP written, the safe state (5 mm) written last and reached; the
    trial is stored abandoned, the campaign stopped and resumable."""
    from loop.store import Store

    _slow(motor)
    path = _campaign(tmp_path, trials=1)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    before = len(motor.puts())
    proc = start_cli(["run", str(path), "--store", url, "-q"], cwd=tmp_path)
    try:
        _until(
            lambda: bool(_puts(motor, before, f"{M1}.VAL")) or proc.poll() is not None,
            "the run puts the motor's setpoint",
            timeout=120,
        )
        _until(lambda: motor.get("m1.MOVN") == 1 or proc.poll() is not None, "m1 moves")
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (out, err)
    _until(lambda: _at_rest(motor) and motor.get("m1.RBV") == 5.0, "the stage reaches 5 mm")
    puts = [r for r in _puts(motor, before) if r[0].startswith(M1)]
    ((_, target),) = puts[:1]
    assert puts[0][0] == f"{M1}.VAL" and target > 5
    assert puts[-1] == (f"{M1}.VAL", 5.0), puts
    assert (f"{M1}.STOP", 1) in puts[1:-1] and set(puts[1:-1]) == {(f"{M1}.STOP", 1)}, puts
    store = Store(url, create=False)
    try:
        row = store.campaign()
        trials = store.trials(row.id or 0)
    finally:
        store.close()
    assert (row.status, row.stop_reason) == ("stopped", "stopped by Ctrl-C")
    assert [t.status for t in trials] == ["abandoned"]


# ---------------------------------------------------------------------------- 4: faults
def test_a_stalled_stage_fails_its_trial_saying_where_it_is_and_is_stopped(
    motor: MotorIOCProcess, tmp_path: Path
) -> None:
    """An obstruction at 20 mm: the move to 30 never ends (DMOV stays 0). The trial fails
    when the input's timeout (1.5 s) is up, saying where the stage is and that it is still
    moving (a timeout: transient); STOP is written; the next trial, away from it, runs."""
    motor.put("m1:stall_at", 20.0)
    inst = _instrument(tmp_path, _stage(**{"timeout: 10\n": "timeout: 1.5\n"}))
    before = len(motor.puts())
    try:
        with Dispatcher(inst) as dispatcher:
            stalled = dispatcher.run(1, "c", {"position": 30.0, "flow": 1.0})
            _until(lambda: _at_rest(motor), "the stopped stage rests")
            after = dispatcher.run(2, "c", {"position": 10.0, "flow": 1.0})
    finally:
        inst.spec = inst.spec.model_copy(update={"on_stop": {}})
        inst.close()
    error = stalled.error or ""
    assert stalled.exit_status == "fail" and stalled.transient, error
    assert (
        f"position: move to 30.0 not done within 1.5 s (motor {M1} at 20 mm (RBV), still "
        "moving (DMOV 0))" in error
    ), error
    puts = [r for r in _puts(motor, before) if r[0].startswith(M1)]
    assert puts[0] == (f"{M1}.VAL", 30.0) and (f"{M1}.STOP", 1) in puts
    assert after.ok, after.error
    assert after.readbacks["position"] == 10.0


@pytest.mark.slow
def test_a_move_right_after_a_stopped_one_waits_for_the_motor_to_say_done(
    motor: MotorIOCProcess, tmp_path: Path
) -> None:
    """Trial 1 stalls and is stopped (its timeout aborts it). On a loaded client ophyd
    handles monitor events late (here a callback on VAL takes 1 s, on ophyd's one monitor
    thread), so the DMOV 1 that ended that stop reaches ``EpicsMotor`` after trial 2 has
    started its move, and finished trial 2's move at once: trial 2 measured the stage on
    its way down from 20 (readback and ``seen_x`` about 15, not 10). A move now ends when
    the IOC itself says DMOV 1."""
    _park(motor, "m1", 18.0)
    motor.put("m1.VELO", 5.0)  # 20 -> 10 takes 2 s, longer than the lag
    motor.put("m1:stall_at", 20.0)
    inst = _instrument(tmp_path)

    def lagging(value: float, **kwargs: Any) -> None:
        if value == 20.0:  # VAL set to RBV by the stop, just before its DMOV 1
            time.sleep(1.0)

    inst.inputs["position"]._positioner.user_setpoint.subscribe(lagging, run=False)
    try:
        with Dispatcher(inst) as dispatcher:
            stalled = dispatcher.run(1, "c", {"position": 30.0, "flow": 1.0}, timeout=1.0)
            _until(lambda: _at_rest(motor), "the IOC says the stopped stage rests")
            after = dispatcher.run(2, "c", {"position": 10.0, "flow": 1.0})
    finally:
        inst.spec = inst.spec.model_copy(update={"on_stop": {}})
        inst.close()
    assert stalled.exit_status == "fail" and stalled.timed_out, stalled.error
    assert after.ok, after.error
    assert after.readbacks["position"] == 10.0
    assert after.outputs["seen_x"] == 10.0 and after.outputs["seen_done"] == 1


@pytest.mark.slow
def test_a_limit_switch_fails_the_trial_saying_so_and_the_campaign_goes_on(
    motor: MotorIOCProcess, tmp_path: Path
) -> None:
    """The high limit switch sits at 25 mm, inside HLM: a trial beyond it ends on the
    switch and fails saying so (it used to read ``UnknownStatusFailure: The status
    MoveStatus(...) has failed ... update the Device to use set_exception(...)``); the
    campaign goes on and completes its trials below the switch."""
    from loop.config import load_campaign
    from loop.runner import Runner
    from loop.store import Store

    motor.put("m1:hls_at", 25.0)
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        summary = Runner(load_campaign(_campaign(tmp_path, trials=3)), store).run()
        trials = store.trials(summary.campaign_id)
    finally:
        store.close()
    assert summary.status == "completed" and summary.completed == 3, summary.reason
    failed = [t for t in trials if t.status == "failed"]
    assert failed, [(t.parameters, t.status) for t in trials]
    for t in failed:
        target = t.parameters["position"]
        assert target > 25
        error = t.error or ""
        assert (
            f"MotorFault: position: the motor ended its move to {target:g} short of it, on "
            f"its high limit switch (HLS)"
        ) in error, error
        assert "UnknownStatusFailure" not in error
        assert failure_kind(error) == "limit switch"
    for t in trials:
        if t.status == "completed":
            assert t.parameters["position"] <= 25


# ---------------------------------------------------------------------------- 5: units
M2_STAGE = """\
name: stage-um
prefix: "closedloop:"
inputs:
  position:
    motor: mtr:m2               # EGU um, HLM 30000 um
    units: mm
    device_units: um
    limits: [0, 40]
    timeout: 10
outputs:
  seen_x: {pv: "mtr:seen:x"}
acquire: {pv: mtr:acquire, done: {pv: mtr:busy, value: 0}, timeout: 10}
"""
M2_PARAMETERS = [{"name": "position", "type": "float", "bounds": [0, 40], "unit": "mm"}]


def test_device_units_convert_to_the_motors_egu(motor: MotorIOCProcess, tmp_path: Path) -> None:
    """The campaign speaks mm, the stage um: 12 mm is put as 12000, read back as 12 mm; its
    HLM 30000 um is the limit 30 mm (the file's 40 reaches beyond it: flagged, and 35 mm
    refused before any put)."""
    inst = _instrument(tmp_path, M2_STAGE, parameters=M2_PARAMETERS)
    before = len(motor.puts())
    try:
        row = next(r for r in inst.check() if r.name == "position")
        with Dispatcher(inst) as dispatcher:
            moved = dispatcher.run(1, "c", {"position": 12.0})
            refused = dispatcher.run(2, "c", {"position": 35.0})
    finally:
        inst.close()
    assert moved.ok, moved.error
    assert moved.readbacks["position"] == pytest.approx(12.0)
    assert row.device_limits == (0.0, 30.0)
    assert "limits [0, 40] reach outside [0, 30] mm, the soft limits LLM/HLM of motor" in (
        row.problem or ""
    )
    assert "setpoint 35 is outside the device's own limits [0, 30]" in (refused.error or "")
    assert _puts(motor, before, f"{M2}.VAL") == [(f"{M2}.VAL", pytest.approx(12000.0))]


def test_a_motor_whose_egu_is_not_the_files_unit_is_refused(
    motor: MotorIOCProcess, tmp_path: Path
) -> None:
    """Without `device_units: um`, 12 mm would be put as 12 (um) and read back as 12 (mm):
    nothing would look wrong. The instrument is refused when it connects, naming the
    motor, its EGU and the fix; nothing is put."""
    text = M2_STAGE.replace("    device_units: um\n", "")
    before = len(motor.puts())
    with pytest.raises(DeviceTypeError) as caught:
        _instrument(tmp_path, text, parameters=M2_PARAMETERS)
    message = str(caught.value)
    assert (
        f"motor {M2} (input 'position') moves in 'um' (its EGU), but the file says it speaks "
        "'mm' (its units, no device_units); set `device_units: um`"
    ) in message, message
    assert _puts(motor, before) == []


@pytest.mark.parametrize(
    ("egu", "speaks", "refused"),
    [("mm", "mm", False), ("MM", "mm", False), ("EV", "eV", False), ("um", "mm", True)],
)
def test_an_egu_of_another_dimension_is_not_judged(egu: str, speaks: str, refused: bool) -> None:
    """pint reads an EGU in capitals as another unit (``MM`` megamolar, ``EV`` exavolt): a
    stage in mm was refused, with a fix (``device_units: MM``) that cannot convert. Only an
    EGU of the same dimension as the file's unit, and another unit, is a mistake."""
    from types import SimpleNamespace

    from instruments._epics import InputDevice

    fake = SimpleNamespace(
        decl=SimpleNamespace(device_units=None, units=speaks, motor="m1"),
        units=speaks,
        write_pv="IOC:m1",
        name="x",
        _positioner=SimpleNamespace(motor_egu=SimpleNamespace(get=lambda: egu)),
    )
    problem = InputDevice._egu_problem(fake, egu, "motor IOC:m1")  # type: ignore[arg-type]
    assert (problem is not None) == refused, problem
