"""Plugin devices that misbehave cost a trial, never the campaign, and say who they are.

The devices (``plugin_fault_devices``) break the contract as real drivers do: a sync call
that never returns, a camera left mid-exposure, ``AsyncStatus`` methods on a class whose
``read`` is plain, a wrong class name, a constructor that fails, readings of the wrong
shape. Everything runs through the real Dispatcher and RunEngine; a "never returning" call
waits on an event each test sets when it is done, so no abandoned thread outlives it.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plugin_fault_devices as dev
import pytest

from instruments import Dispatcher, TrialResult, input_specs
from instruments._epics import (
    DeclaredInstrument,
    DeviceConnectionError,
    build_declared_instrument,
)
from instruments._instrument_file import (
    InstrumentFileError,
    load_instrument_file,
    parse_instrument,
)
from loop import CampaignConfigError
from loop.config import load_campaign

DEV = "plugin_fault_devices"
HERE = Path(__file__).parent
MOVER = {"device": f"{DEV}:SyncMover", "limits": [0, 2]}
SIGNAL = {"device": "ophyd:Signal", "args": {"value": 0.5}}


@pytest.fixture(autouse=True)
def release_wedged_calls() -> Iterator[None]:
    """Every wedged call returns when the test ends (passed or failed)."""
    dev.SyncBase.release.clear()
    yield
    dev.SyncBase.release.set()


def _instrument(
    inputs: dict[str, Any], outputs: dict[str, Any], *, connect: bool = True, **extra: Any
) -> DeclaredInstrument:
    spec = parse_instrument({"name": "bench", "inputs": inputs, "outputs": outputs, **extra})
    return build_declared_instrument(
        spec, input_specs([(name, (0.0, 2.0)) for name in inputs]), connect=connect
    )


def _run(dispatcher: Dispatcher, trial: int, timeout: float | None = None) -> TrialResult:
    """One trial at x = 1, on a thread: a trial that never ends fails the test (within a
    generous bound) instead of hanging it."""
    results: list[TrialResult] = []
    worker = threading.Thread(
        target=lambda: results.append(dispatcher.run(trial, "c", {"x": 1.0}, timeout=timeout)),
        daemon=True,
    )
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), f"trial {trial} is still running: a device call held it"
    return results[0]


def _until_not_refused(dispatcher: Dispatcher, first: int) -> TrialResult:
    """Trials until the device is called again (its wedged call has returned meanwhile)."""
    for trial in range(first, first + 500):
        result = _run(dispatcher, trial)
        if "refused" not in (result.error or ""):
            return result
        time.sleep(0.01)
    raise AssertionError("the device was still refused after its wedged call returned")


# ---------------------------------------------------------------------------- 1: hangs
def test_a_sync_read_that_never_returns_costs_one_trial_and_one_thread() -> None:
    """A sync output's read ran on the RunEngine's thread with no limit: the trial, its
    timeout and Ctrl-C all waited for ever. It is now given up on after the file's
    connection_timeout; the device is refused (not called again, so no second thread
    blocks) until the wedged call returns, and is used again once it has."""
    inst = _instrument({"x": MOVER}, {"y": {"device": f"{DEV}:WedgedRead"}}, connection_timeout=0.5)
    sensor = inst.detector.outputs[0].target
    sensor.wedge = True
    try:
        with Dispatcher(inst) as dispatcher:
            first = _run(dispatcher, 1, timeout=30)
            assert first.exit_status == "fail" and first.transient, first.error
            assert f"output 'y': device {DEV}:WedgedRead did not answer a read within 0.5 s" in (
                first.error or ""
            )
            second = _run(dispatcher, 2)
            assert second.exit_status == "fail" and second.transient
            assert "read of 'y' refused: the device is still busy with a read that timed out" in (
                second.error or ""
            )
            # `instruments check` gives up on it the same way, naming it
            rows = {r.name: r for r in inst.check(timeout=0.5)}
            assert "DeviceBusy" in (rows["y"].problem or "")
            # refused calls never reached it (the first read: `connect` checking it)
            assert sensor.calls == ["read", "read (wedged)"]
            wedged = sensor.threads[1]
            assert wedged.daemon  # the abandoned thread cannot keep the process alive
            sensor.wedge = False
            dev.SyncBase.release.set()  # the driver answers at last
            back = _until_not_refused(dispatcher, 3)
        assert back.exit_status == "success", back.error
        assert back.outputs == {"y": 0.5}
    finally:
        inst.close()


def test_a_sync_set_that_never_returns_fails_the_move_at_its_timeout() -> None:
    """An input's `timeout:` bounded only the status a sync `set()` returned, not the call:
    a `set()` blocking in its driver held the trial for ever (no trial timeout given)."""
    inst = _instrument(
        {"x": {"device": f"{DEV}:WedgedSet", "limits": [0, 2], "timeout": 0.5}}, {"y": SIGNAL}
    )
    stage = inst.inputs["x"]._positioner
    try:
        with Dispatcher(inst) as dispatcher:
            first = _run(dispatcher, 1)
            second = _run(dispatcher, 2)
    finally:
        inst.close()
    assert first.exit_status == "fail" and first.transient
    assert "x: move to 1.0 not done within 0.5 s" in (first.error or "")
    assert "set of 'x' refused: the device is still busy with a set" in (second.error or "")
    assert stage.calls.count("set (wedged)") == 1
    # the RunEngine still stopped it after each run: a stop may be what unwedges a move
    assert "stop" in stage.calls


def test_a_stop_that_never_returns_is_given_up_on_and_the_device_not_moved_again() -> None:
    """The RunEngine stops every input it moved, on its own thread: a plugin's `stop()`
    that never returned held it (and the campaign) for ever. It is bounded by the input's
    timeout; a device whose stop is stuck is not moved again."""
    inst = _instrument(
        {"x": {"device": f"{DEV}:WedgedStop", "limits": [0, 2], "timeout": 0.5}}, {"y": SIGNAL}
    )
    stage = inst.inputs["x"]._positioner
    try:
        with Dispatcher(inst) as dispatcher:
            first = _run(dispatcher, 1)
            second = _run(dispatcher, 2)
    finally:
        inst.close()
    assert first.exit_status == "success", first.error  # the move itself was done
    assert second.exit_status == "fail"
    assert "refused: the device is still busy with a stop that timed out" in (second.error or "")
    assert stage.calls.count("set") == 1


def test_instruments_check_gives_up_on_a_wedged_position_and_read() -> None:
    """`instruments check --timeout` waited for ever on a sync `position` (even `hasattr`
    ran the property) or `read` that never returned."""
    inst = _instrument(
        {"x": {"device": f"{DEV}:WedgedPosition", "limits": [0, 2]}},
        {"y": {"device": f"{DEV}:WedgedRead"}},
        connect=False,
    )
    inst.detector.outputs[0].target.wedge = True
    checked: list[Any] = []
    worker = threading.Thread(target=lambda: checked.extend(inst.check(timeout=0.3)), daemon=True)
    try:
        worker.start()
        worker.join(30)
        assert not worker.is_alive(), "check is still waiting for a device"
    finally:
        inst.close()
    rows = {r.name: r for r in checked}
    assert "DeviceTimeout: position of 'x' not done within" in (rows["x"].problem or "")
    assert "did not answer a read within 0.3 s" in (rows["y"].problem or "")


@pytest.mark.parametrize(
    ("value", "said"), [("home", "'home' is not a number"), (math.nan, "nan is not finite")]
)
def test_instruments_check_says_a_readback_that_is_no_number_as_a_trial_does(
    value: Any, said: str
) -> None:
    """It said "TypeError: '<=' not supported between instances of 'float' and 'str'"
    (found in review)."""
    inst = _instrument(
        {"x": {"device": f"{DEV}:SyncMover", "args": {"value": value}, "limits": [0, 2]}},
        {"y": SIGNAL},
        connect=False,
    )
    try:
        rows = {r.name: r for r in inst.check(timeout=5)}
    finally:
        inst.close()
    assert rows["x"].problem == f"readback x = {said}", rows["x"].problem


# ---------------------------------------------------------------------------- 2: detector stop
def test_a_plugin_detector_is_stopped_after_its_trial_timed_out() -> None:
    """`Dispatcher` stops the detector after an abort, but the wrapper did not stop the
    plugin under it: the camera stayed mid-exposure and refused every later trigger."""
    inst = _instrument({"x": MOVER}, {"y": {"device": f"{DEV}:BusyCamera"}})
    camera = inst.detector.outputs[0].target
    try:
        with Dispatcher(inst) as dispatcher:
            first = _run(dispatcher, 1, timeout=1)
            second = _run(dispatcher, 2, timeout=10)
    finally:
        inst.close()
    assert first.exit_status == "fail" and first.timed_out
    assert camera.stops >= 1
    assert second.exit_status == "success", second.error
    assert camera.calls.count("trigger") == 2


def test_a_plugin_only_file_bounds_its_triggers_with_acquire_timeout() -> None:
    """A file whose detectors are all plugins had nowhere to say how long a trigger may
    take (`acquire` required a `pv:`), so a camera that never finished held its trial for
    an hour (found in review). `acquire: {timeout: 1}` without a PV bounds it, and the
    camera is stopped so the next trial's trigger is taken."""
    inst = _instrument({"x": MOVER}, {"y": {"device": f"{DEV}:BusyCamera"}}, acquire={"timeout": 1})
    camera = inst.detector.outputs[0].target
    try:
        with Dispatcher(inst) as dispatcher:
            first = _run(dispatcher, 1)
            second = _run(dispatcher, 2)
    finally:
        inst.close()
    assert first.exit_status == "fail", first.error
    assert "acquisition not complete within 1 s (plugin detector 'y' still triggering)" in (
        first.error or ""
    )
    assert camera.stops >= 1
    assert second.exit_status == "success", second.error


def test_acquire_settings_of_a_pv_need_the_pv() -> None:
    """`done:`, `value:` or `put_complete:` without `pv:` would be ignored: refused, saying
    that `timeout:` alone is what a plugin-only file may write."""
    with pytest.raises(InstrumentFileError) as caught:
        parse_instrument(
            {
                "inputs": {"x": MOVER},
                "outputs": {"y": SIGNAL},
                "acquire": {"done": {"pv": "busy", "value": 0}, "timeout": 5},
            }
        )
    assert "`done` say how the acquire PV is written, but `acquire` has no `pv:`" in str(
        caught.value
    )
    assert "keep only `timeout:`" in str(caught.value)


# ---------------------------------------------------------------------------- 3: hybrids
def test_async_status_methods_on_a_device_with_a_plain_read() -> None:
    """`@AsyncStatus.wrap async def set/trigger` on a class whose `read` is plain was called
    off the device loop: "no running event loop", every trial."""
    inst = _instrument(
        {"x": {"device": f"{DEV}:HybridStirrer", "limits": [0, 2]}},
        {"y": {"device": f"{DEV}:HybridDetector"}},
    )
    try:
        with Dispatcher(inst) as dispatcher:
            result = _run(dispatcher, 1, timeout=10)
    finally:
        inst.close()
    assert result.exit_status == "success", result.error
    assert result.readbacks == {"x": 1.0} and result.outputs == {"y": 0.75}


# ---------------------------------------------------------------------------- 4: classes
CAMPAIGN = """\
name: plugin-classes
parameters:
  - {{name: x, type: float, bounds: [0, 2]}}
objectives:
  - {{name: y, goal: maximize}}
instrument:
  devices:
    name: bench
    inputs:
      x:
        device: "{device}"
        limits: [0, 2]
    outputs:
      y: {{device: "ophyd:Signal", args: {{value: 0.5}}}}
planner: {{kind: sobol}}
budget: {{max_trials: 2}}
"""


def test_validate_refuses_a_device_class_that_does_not_exist(tmp_path: Path) -> None:
    """`validate` never imported the class: a misspelt one passed, and `run` then failed
    without a line (leaving a campaign row behind)."""
    path = tmp_path / "c.yaml"
    path.write_text(CAMPAIGN.format(device=f"{DEV}:SyncMovr"))
    with pytest.raises(CampaignConfigError) as caught:
        load_campaign(path)
    assert caught.value.line == 11  # inputs.x.device
    assert f"'{DEV}' has no 'SyncMovr'" in caught.value.problem
    assert caught.value.fix == f"did you mean {DEV}:SyncMover?"
    # importing is all validate does: a constructor that would fail is not called
    path.write_text(CAMPAIGN.format(device=f"{DEV}:PortBusy"))
    load_campaign(path)


def test_a_constructor_that_fails_at_run_leaves_no_campaign_and_names_the_campaign_line(
    tmp_path: Path,
) -> None:
    """The campaign row used to be created before the devices were built: every failed
    `run` left a `stopped` campaign with no trials that `status` offered to resume. The
    message named a pseudo-file, `<instrument.devices>:11`."""
    from loop import Runner, Store

    path = tmp_path / "c.yaml"
    path.write_text(CAMPAIGN.format(device=f"{DEV}:PortBusy"))
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        with pytest.raises(InstrumentFileError) as caught:
            Runner(load_campaign(path), store).run()
        assert store.campaigns() == []
    finally:
        store.close()
    assert (caught.value.path, caught.value.line) == (path, 11)  # inputs.x.device
    assert str(caught.value).startswith(f"{path}:11: instrument.devices: inputs.x: ")
    assert "OSError: /dev/ttyUSB0 is busy" in caught.value.problem


@pytest.mark.parametrize(
    ("device", "fix"),
    [
        ("mylab.py:Stage", "write mylab:Stage and put its folder on PYTHONPATH (`PYTHONPATH=. "),
        (
            "./lab/mylab.py:Stage",
            "write mylab:Stage and put its folder on PYTHONPATH (`PYTHONPATH=lab ",
        ),
        ("my lab:Stage", "write the module and the class, e.g. mylab.stages:Stage"),
    ],
)
def test_a_device_named_by_its_file_says_how_to_name_it(
    tmp_path: Path, device: str, fix: str
) -> None:
    """`mylab.py:Stage` was told to fix an import of `mylab.py`, and `./mylab.py:Stage` got
    the raw regular expression (found in review): each says to write module:Class."""
    path = tmp_path / "c.yaml"
    path.write_text(CAMPAIGN.format(device=device))
    with pytest.raises(CampaignConfigError) as caught:
        load_campaign(path)
    assert caught.value.line == 11  # inputs.x.device
    assert caught.value.fix.startswith(fix), caught.value.fix


@pytest.mark.parametrize("cls", ["ReadOnly", "SetIsNone"])
def test_an_input_device_without_set_is_refused_at_its_line(tmp_path: Path, cls: str) -> None:
    """An input class with no `set()` (or `set = None`) passed validate, check and plan,
    then failed every trial with `TypeError: the first argument must be callable` (found in
    review). `validate` refuses it at the line of its `device:`, and so does building it."""
    path = tmp_path / "c.yaml"
    path.write_text(CAMPAIGN.format(device=f"{DEV}:{cls}"))
    with pytest.raises(CampaignConfigError) as caught:
        load_campaign(path)
    assert caught.value.line == 11  # inputs.x.device
    assert f"device '{DEV}:{cls}' has no `set()`: an input's device is moved" in (
        caught.value.problem
    )
    assert "or declare the device under `outputs:`" in caught.value.fix
    with pytest.raises(InstrumentFileError, match=r"has no `set\(\)`"):
        _instrument({"x": {"device": f"{DEV}:{cls}"}}, {"y": SIGNAL}, connect=False)
    # as an output it is fine: it is read
    _instrument({"x": SIGNAL}, {"y": {"device": f"{DEV}:{cls}"}}, connect=False).close()


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``closedloop ARGS`` in a process of its own, the test devices importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), str(HERE)])}
    return subprocess.run(
        [sys.executable, "-m", "loop.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


@pytest.mark.slow
def test_the_cli_refuses_a_wrong_class_with_exit_2_and_no_store(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CAMPAIGN.format(device="no_such_lab_module:Stage"))
    db = tmp_path / "store.db"
    for args in (["validate", str(path)], ["run", str(path), "--store", f"sqlite:///{db}"]):
        proc = _cli(tmp_path, *args)
        assert proc.returncode == 2, proc.stderr
        assert f"{path}:11:" in proc.stderr and "fix: check the module name" in proc.stderr
        assert "Traceback" not in proc.stdout + proc.stderr
    assert not db.exists()


def test_an_instrument_that_does_not_fit_its_file_at_connect_exits_2(tmp_path: Path) -> None:
    """Found when it connects (an output's `key:` it does not have): bad input like a bad
    file, exit 2, and no campaign stored; it exited 1, a script's "broken" (found in
    review)."""
    path = tmp_path / "c.yaml"
    text = CAMPAIGN.format(device=f"{DEV}:SyncMover").replace(
        'y: {device: "ophyd:Signal", args: {value: 0.5}}',
        'y: {device: "ophyd:Signal", args: {value: 0.5}, key: nope}',
    )
    path.write_text(text)
    db = tmp_path / "store.db"
    proc = _cli(tmp_path, "run", str(path), "--store", f"sqlite:///{db}")
    assert proc.returncode == 2, proc.stderr
    assert "its `key: nope` is none of its fields" in proc.stderr
    assert not db.exists()


BENCH = """\
name: bench
inputs:
  x: {device: "plugin_fault_devices:SyncMover", limits: [0, 2]}
outputs:
  y:
    device: "plugin_fault_devices:PortBusy"
    args: {port: /dev/ttyS3}
"""


def test_a_constructor_that_fails_is_reported_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(BENCH)
    spec = load_instrument_file(path)
    with pytest.raises(InstrumentFileError) as caught:
        build_declared_instrument(spec, input_specs([("x", (0.0, 2.0))]), connect=False)
    assert (caught.value.path, caught.value.line) == (path, 6)  # outputs.y.device
    assert "OSError: /dev/ttyS3 is busy" in caught.value.problem
    assert caught.value.problem.startswith("outputs.y: ")
    assert "check the device is free" in caught.value.fix

    def refused(text: str) -> InstrumentFileError:
        path.write_text(text)
        with pytest.raises(InstrumentFileError) as caught:
            build_declared_instrument(
                load_instrument_file(path), input_specs([("x", (0.0, 2.0))]), connect=False
            )
        return caught.value

    # an `args:` the class does not take: the fix shows what it does take
    wrong_args = refused(BENCH.replace("port:", "prot:"))
    assert "TypeError" in wrong_args.problem
    assert "(name: 'str' = '', port: 'str' = '/dev/ttyUSB0')" in wrong_args.fix
    # a TypeError from inside a constructor that took its `args:` is not theirs
    own = refused(BENCH.replace("PortBusy", "BrokenDriver"))
    assert "TypeError: unsupported operand" in own.problem
    assert "check the device is free" in own.fix


@pytest.mark.slow
def test_instruments_check_reports_a_failing_constructor_at_its_line_with_exit_2(
    tmp_path: Path,
) -> None:
    # Was exit 1 with the same message: a mistake in the file is a usage error (exit 2).
    path = tmp_path / "bench.yaml"
    path.write_text(BENCH)
    proc = _cli(tmp_path, "instruments", "check", str(path))
    assert proc.returncode == 2, proc.stderr
    assert f"{path}:6: outputs.y: " in proc.stderr and "OSError" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


# ---------------------------------------------------------------------------- 5, 6: connect
def test_an_async_device_connects_within_the_timeout_it_is_given() -> None:
    """`connection_timeout`/`--timeout` never reached an ophyd-async `connect()`, which
    then waited its own default (10 s)."""
    dev.ConnectTimeoutStage.seen.clear()
    inst = _instrument(
        {"x": {"device": f"{DEV}:ConnectTimeoutStage", "limits": [0, 2]}},
        {"y": SIGNAL},
        connection_timeout=2.5,
    )
    try:
        rows = inst.check(timeout=4)
    finally:
        inst.close()
    assert dev.ConnectTimeoutStage.seen == [2.5, 4]
    assert rows[0].connected and rows[0].problem is None


def test_a_plugin_that_cannot_connect_is_named_with_its_own_reason() -> None:
    """The plugin's error was dropped and EPICS blamed, for a file with no PV at all."""
    with pytest.raises(DeviceConnectionError) as caught:
        _instrument({"x": MOVER}, {"y": {"device": f"{DEV}:NoSuchPort"}}, connection_timeout=1)
    message = str(caught.value)
    assert (
        f"output y (device:{DEV}:NoSuchPort: RuntimeError: no such serial port /dev/ttyUSB9)"
        in message
    )
    assert "EPICS" not in message


# ---------------------------------------------------------------------------- 7: contract
SHAPE = "read() must return {key: {'value': ..., 'timestamp': ...}}"


@pytest.mark.parametrize(
    ("reading", "key", "expected"),
    [
        ({"y": 0.5}, None, f"{SHAPE}, got {{'y': 0.5}}"),
        ({}, None, "read() returned no readings ({})"),
        (None, None, f"{SHAPE}, got None"),
        ({"y": {"value": 0.5, "timestamp": "now"}}, None, "timestamp 'now' is not a number"),
        (
            {"y": {"value": 0.5, "timestamp": 1.0}},
            "nope",
            "reading has no key 'nope' (keys: ['y'])",
        ),
    ],
    ids=["flat", "empty", "none", "timestamp", "key"],
)
def test_a_reading_of_the_wrong_shape_names_the_output_and_device(
    reading: Any, key: str | None, expected: str
) -> None:
    output: dict[str, Any] = {"device": f"{DEV}:Readings", "args": {"reading": reading}}
    if key is not None:
        output["key"] = key
    inst = _instrument({"x": MOVER}, {"y": output}, connect=False)
    try:
        with Dispatcher(inst) as dispatcher:
            result = _run(dispatcher, 1, timeout=10)
    finally:
        inst.close()
    assert result.exit_status == "fail" and not result.transient
    assert f"InstrumentError: output 'y' (device {DEV}:Readings): {expected}" in (
        result.error or ""
    )


def test_a_set_that_returns_no_status_names_the_input() -> None:
    inst = _instrument({"x": {"device": f"{DEV}:SetReturnsNone", "limits": [0, 2]}}, {"y": SIGNAL})
    try:
        with Dispatcher(inst) as dispatcher:
            result = _run(dispatcher, 1, timeout=10)
    finally:
        inst.close()
    assert result.exit_status == "fail"
    assert f"input 'x' (device {DEV}:SetReturnsNone): set() returned None, not a status" in (
        result.error or ""
    )
