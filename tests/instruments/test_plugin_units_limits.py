"""A plugged-in device's own unit and limits are checked as a setpoint PV's or a motor's are.

Found in review: a ``device:`` input's engineering unit and limits were never read. An
``ophyd.sim.SoftPositioner`` in um was driven in mm (12 mm sent as 12 um), its limits
(-10, 10) were first heard of as ``LimitError`` inside a trial's run, and an ophyd-async
stage in mrad was driven in degrees; ``instruments check`` showed an empty "device limits"
and passed. Now the device's ``describe()`` entry for its readback (``units``,
``limits.control`` as ophyd-async reports them, ``lower_ctrl_limit``/``upper_ctrl_limit``
as ophyd does) and an ophyd positioner's ``egu`` and ``limits`` are read when it connects,
and refuse as the EPICS paths do: a unit mismatch when it connects (``check``, ``run``,
``plan --dry-run``), a range beyond its limits in ``check``, a setpoint beyond them before
any put, a safe state beyond them when it connects. A device that says neither is used as
before. Real ophyd and ophyd-async devices, the real RunEngine (through ``Dispatcher``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bluesky.protocols import Movable
from ophyd import Component, Device, Kind, Signal
from ophyd.status import DeviceStatus, Status
from ophyd_async.core import (
    AsyncStatus,
    SignalRW,
    SoftSignalBackend,
    StandardReadable,
    StandardReadableFormat,
)
from typer.testing import CliRunner

from instruments import Dispatcher, InstrumentConfig, build_instrument
from instruments._epics import (
    DeclaredInstrument,
    DeviceLimitsError,
    DeviceTypeError,
    call_device,
)
from loop.cli import app

MOVES: dict[str, list[float]] = {}  # device name -> every set() it was given


@pytest.fixture(autouse=True)
def fresh_moves() -> Iterator[None]:
    MOVES.clear()
    yield
    MOVES.clear()


class AsyncStage(StandardReadable, Movable[float]):
    """An ophyd-async stage whose readback says its unit and, optionally, control limits
    (as an EPICS-backed ophyd-async signal reports DRVL/DRVH: ``limits.control``)."""

    def __init__(
        self,
        name: str = "",
        egu: str = "mrad",
        low: float | None = None,
        high: float | None = None,
    ) -> None:
        backend = SoftSignalBackend(float, 0.0, units=egu, precision=4)
        if low is not None or high is not None:
            backend.metadata["limits"] = {"control": {"low": low, "high": high}}
        with self.add_children_as_readables(StandardReadableFormat.HINTED_SIGNAL):
            self.readback = SignalRW(backend)
        super().__init__(name=name)
        MOVES[name] = []

    @AsyncStatus.wrap
    async def set(self, value: float) -> None:
        MOVES[self.name].append(value)
        await self.readback.set(value)


class SyncStage(Device):
    """A lab's ophyd positioner: a hinted readback, ``egu`` and ``limits`` properties, and
    a ``describe()`` that says neither limit (as the facility's own ``Stage`` does)."""

    readback = Component(Signal, value=0.0, kind=Kind.hinted)
    setpoint = Component(Signal, value=0.0, kind=Kind.normal)

    def __init__(
        self, *args: Any, egu: str = "mm", low: float = -10.0, high: float = 10.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._egu = egu
        self._limits = (low, high)
        MOVES[self.name] = []

    @property
    def egu(self) -> str:
        return self._egu

    @property
    def limits(self) -> tuple[float, float]:
        return self._limits

    @property
    def position(self) -> float:
        return float(self.readback.get())

    def set(self, value: float) -> Status:
        MOVES[self.name].append(value)
        self.setpoint.put(value)
        self.readback.put(value)
        status = DeviceStatus(self)
        status.set_finished()
        return status


def _instrument(
    tmp_path: Path,
    x: str,
    *,
    unit: str = "mm",
    bounds: tuple[float, float] = (-5, 5),
    on_stop: str = "",
    connect: bool = True,
) -> DeclaredInstrument:
    """An instrument file with input ``x`` declared by ``x`` (YAML lines under it) and one
    output (an ophyd ``Signal``), built for a campaign whose parameter has ``unit`` and
    ``bounds``."""
    path = tmp_path / "bench.yaml"
    path.write_text(
        "name: bench\nconnection_timeout: 5\ninputs:\n  x:\n"
        + "".join(f"    {line}\n" for line in x.strip().splitlines())
        + "outputs:\n  signal: {device: ophyd:Signal, args: {value: 1.5}}\n"
        + (f"on_stop:\n  x: {on_stop}\n" if on_stop else "")
    )
    params = [{"name": "x", "type": "float", "bounds": list(bounds), "unit": unit}]
    if not connect:
        from instruments import input_specs
        from instruments._epics import build_declared_instrument
        from instruments._instrument_file import load_instrument_file

        return build_declared_instrument(
            load_instrument_file(path), input_specs(params), units={"x": unit}, connect=False
        )
    inst = build_instrument(InstrumentConfig(file=str(path)), params, base_dir=tmp_path, seed=None)
    assert isinstance(inst, DeclaredInstrument)
    return inst


SOFT_UM = "device: ophyd.sim:SoftPositioner\nargs: {limits: [-10, 10], egu: um, init_pos: 0}"
HERE = "test_plugin_units_limits"


# ---------------------------------------------------------------------------- units
def test_a_positioner_in_um_driven_in_mm_is_refused_when_it_connects(tmp_path: Path) -> None:
    """12 mm would be sent as 12 um: refused when the instrument connects (a run), and
    listed by ``check``, naming the device, its unit and the fix, as a motor in um is."""
    with pytest.raises(DeviceTypeError) as refused:
        _instrument(tmp_path, SOFT_UM + "\nlimits: [-5, 5]")
    said = str(refused.value)
    assert (
        "device ophyd.sim:SoftPositioner (input 'x') is in 'um' (the units of its reading "
        "'x'), but it is given numbers in 'mm' (the campaign parameter's unit; the input "
        "has no device_units); set `device_units: um` on the input (values are then "
        "converted), or fix the units the device reports"
    ) in said, said
    # at the input's line, as a problem of the file is: that is where the fix goes
    assert refused.value.line == 4 and said.startswith(f"{tmp_path / 'bench.yaml'}:4: "), said
    inst = _instrument(tmp_path, SOFT_UM + "\nlimits: [-5, 5]", connect=False)
    try:
        row = next(r for r in inst.check() if r.name == "x")
    finally:
        inst.close(safe_state=False)
    assert row.connected and "is in 'um'" in (row.problem or ""), row


def test_an_ophyd_async_stage_in_mrad_driven_in_degrees_is_refused(tmp_path: Path) -> None:
    """The unit of an ophyd-async readback (its ``describe()`` units) counts alike."""
    with pytest.raises(DeviceTypeError) as refused:
        _instrument(tmp_path, f"device: {HERE}:AsyncStage\nargs: {{egu: mrad}}", unit="deg")
    said = str(refused.value)
    assert (
        f"device {HERE}:AsyncStage (input 'x') is in 'mrad' (the units of its reading "
        "'x-readback'), but it is given numbers in 'deg'"
    ) in said, said
    assert "set `device_units: mrad`" in said
    assert MOVES["x"] == []


def test_a_positioners_egu_counts_when_its_describe_says_no_unit(tmp_path: Path) -> None:
    """An ophyd positioner whose ``describe()`` gives no unit: its ``egu`` is its unit."""
    with pytest.raises(DeviceTypeError, match=r"is in 'um' \(its `egu`\)"):
        _instrument(tmp_path, f"device: {HERE}:SyncStage\nargs: {{egu: um}}")
    assert MOVES["x"] == []


# ---------------------------------------------------------------------------- limits
def test_a_setpoint_beyond_the_devices_own_limits_never_reaches_it(tmp_path: Path) -> None:
    """SoftPositioner limits (-10, 10) um are (-0.01, 0.01) mm: ``check`` shows them and
    refuses the file's limits [-20, 20] mm that reach beyond them; 0.012 mm is refused
    before any put (it used to reach the device and fail as LimitError inside the run);
    0.004 mm is sent as 4 um."""
    inst = _instrument(tmp_path, SOFT_UM + "\ndevice_units: um\nlimits: [-20, 20]")
    device = inst.inputs["x"]._positioner
    try:
        row = next(r for r in inst.check() if r.name == "x")
        with Dispatcher(inst) as dispatcher:
            refused = dispatcher.run(1, "c", {"x": 0.012})
            moved_after_refusal = device.position
            accepted = dispatcher.run(2, "c", {"x": 0.004})
    finally:
        inst.close(safe_state=False)
    assert row.device_limits == pytest.approx((-0.01, 0.01))
    assert (
        "its limits [-20, 20] reach outside [-0.01, 0.01] mm, the limits of device "
        "ophyd.sim:SoftPositioner, lower_ctrl_limit/upper_ctrl_limit of its reading 'x' = "
        "[-10, 10] um; setpoints beyond them are refused (narrow the file's limits, or widen "
        "the device's)"
    ) in (row.problem or ""), row.problem
    assert refused.exit_status == "fail" and refused.run_uid is None
    assert "setpoint 0.012 is outside the device's own limits [-0.01, 0.01]" in (
        refused.error or ""
    ), refused.error
    assert moved_after_refusal == 0
    assert accepted.exit_status == "success", accepted.error
    assert device.position == pytest.approx(4.0)


def test_ophyd_async_control_limits_bound_the_campaigns_bounds(tmp_path: Path) -> None:
    """``limits.control`` of an ophyd-async readback: the campaign's bounds [-3, 3] reach
    beyond [-1, 2] (no file limits), and 2.5 is refused before ``set()`` is called."""
    inst = _instrument(
        tmp_path,
        f"device: {HERE}:AsyncStage\nargs: {{egu: deg, low: -1, high: 2}}",
        unit="deg",
        bounds=(-3, 3),
    )
    try:
        row = next(r for r in inst.check() if r.name == "x")
        with Dispatcher(inst) as dispatcher:
            refused = dispatcher.run(1, "c", {"x": 2.5})
            accepted = dispatcher.run(2, "c", {"x": 1.5})
    finally:
        inst.close(safe_state=False)
    assert row.device_limits == (-1.0, 2.0)
    assert "campaign's bounds [-3, 3] reach outside [-1, 2] deg" in (row.problem or "")
    assert "limits.control of its reading 'x-readback' = [-1, 2] deg" in (row.problem or "")
    assert refused.run_uid is None
    assert "setpoint 2.5 is outside the device's own limits [-1, 2]" in (refused.error or "")
    assert accepted.exit_status == "success", accepted.error
    assert MOVES["x"] == [1.5]


def test_an_open_sided_limit_bounds_one_side(tmp_path: Path) -> None:
    """ophyd-async says an open side as ``None``: only the other side bounds."""
    inst = _instrument(
        tmp_path, f"device: {HERE}:AsyncStage\nargs: {{egu: deg, high: 2}}", unit="deg"
    )
    try:
        x = inst.inputs["x"]
        assert x.device_limits == (-math.inf, 2.0)
        x.check_value(-4.0)
        with pytest.raises(ValueError, match="outside the device's own limits"):
            x.check_value(3.0)
    finally:
        inst.close(safe_state=False)


def test_a_positioners_limits_property_counts(tmp_path: Path) -> None:
    """An ophyd positioner's own ``limits`` (its ``describe()`` saying none)."""
    inst = _instrument(
        tmp_path,
        f"device: {HERE}:SyncStage\nargs: {{egu: mm, low: -2, high: 2}}",
        bounds=(-1.5, 1.5),
    )
    try:
        row = next(r for r in inst.check() if r.name == "x")
        with pytest.raises(ValueError, match=r"\[-2, 2\] \(limits of device .*its `limits`"):
            inst.inputs["x"].check_value(2.5)
    finally:
        inst.close(safe_state=False)
    assert row.device_limits == (-2.0, 2.0) and row.problem is None, row


def test_a_safe_state_beyond_a_plugins_limits_is_refused_when_it_connects(
    tmp_path: Path,
) -> None:
    with pytest.raises(DeviceLimitsError) as refused:
        _instrument(tmp_path, SOFT_UM + "\ndevice_units: um\nlimits: [-0.1, 0.1]", on_stop="0.05")
    assert "its safe state (on_stop) 0.05 mm is outside [-0.01, 0.01] mm" in str(refused.value)
    assert "widen the device's limits" in str(refused.value)
    assert refused.value.line == 12  # the on_stop entry's


def test_the_dry_run_refuses_a_setpoint_beyond_the_devices_limits(tmp_path: Path) -> None:
    """``plan --dry-run`` connects nothing, yet a plugin says its limits (and unit) at
    once: the preview refuses what the run would, and sends nothing."""
    (tmp_path / "bench.yaml").write_text(
        "name: bench\ninputs:\n  x:\n"
        "    device: ophyd.sim:SoftPositioner\n"
        "    args: {limits: [-10, 10], egu: um, init_pos: 0}\n"
        "    device_units: um\n    limits: [-0.02, 0.02]\n"
        "outputs:\n  signal: {device: ophyd:Signal, args: {value: 1.5}}\n"
    )
    campaign = tmp_path / "c.yaml"
    campaign.write_text(
        "name: dry\nparameters:\n  - {name: x, type: float, bounds: [-0.015, 0.015], unit: mm}\n"
        "objectives:\n  - {name: signal, goal: maximize}\n"
        "instrument: {file: bench.yaml}\nplanner: {kind: sobol}\nbudget: {max_trials: 2}\n"
        "seed: 1\n"
    )
    out = CliRunner().invoke(app, ["plan", str(campaign), "--dry-run", "--at", "x=0.012"])
    text = " ".join(out.output.split())
    assert out.exit_code == 1, out.output
    assert (
        "refused before dispatch: x: setpoint 0.012 is outside the device's own limits "
        "[-0.01, 0.01]"
    ) in text, text
    assert "open_run" not in text
    fine = CliRunner().invoke(app, ["plan", str(campaign), "--dry-run", "--at", "x=0.004"])
    assert fine.exit_code == 0, fine.output
    assert "x 0.004 mm (4 um at the device)" in fine.output


# ---------------------------------------------------------------------------- as before
def test_a_device_that_says_no_unit_and_no_limits_is_used_as_before(tmp_path: Path) -> None:
    """An ophyd ``Signal`` says neither: nothing is judged, the file's limits hold."""
    inst = _instrument(tmp_path, "device: ophyd:Signal\nlimits: [-5, 5]")
    try:
        row = next(r for r in inst.check() if r.name == "x")
        with Dispatcher(inst) as dispatcher:
            done = dispatcher.run(1, "c", {"x": 4.0})
        value = call_device(inst.inputs["x"]._positioner, "get")
    finally:
        inst.close(safe_state=False)
    assert row.problem is None and row.device_limits is None, row
    assert done.exit_status == "success", done.error
    assert value == 4.0
