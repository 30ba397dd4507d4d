"""What the stored documents say of plugged-in and EPICS devices, and which field an output
device is read from.

Found in review: an EPICS or plugin instrument's descriptors had ``hints: {}`` (a simulated
instrument's name each device's field), a plugin's data key said the campaign's unit and
``device:module:Class`` instead of its own unit and source; and an output device with
several fields was read from its first, not its hinted one (``total``, declared before the
hinted ``intensity``, was stored as the intensity; nothing said so). Now each input and the
outputs are hinted, a plugin's data key keeps its own ``describe()`` entry (source, shape,
units, precision, limits; converted where ``device_units`` converts the reading), and an
output reads its ``key:``, else its hinted field, else its only field, and is refused when
none says which. Every document stays valid per event-model's schemas. Real ophyd and
ophyd-async devices, the real RunEngine (through ``Dispatcher``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bluesky.protocols import Triggerable
from event_model import DocumentNames, schema_validators
from ophyd import Component, Device, Kind, Signal
from ophyd.status import DeviceStatus, Status
from ophyd_async.core import (
    AsyncStatus,
    StandardReadable,
    StandardReadableFormat,
    soft_signal_r_and_setter,
)

from instruments import Dispatcher, InstrumentConfig, build_instrument, input_specs
from instruments._epics import DeclaredInstrument, build_declared_instrument
from instruments._instrument_file import InstrumentFileError, load_instrument_file
from instruments._protocol import TrialResult

HERE = "test_plugin_descriptors"


class Sensor(StandardReadable, Triggerable):
    """An ophyd-async detector: a normal ``raw`` (counts) declared before its hinted
    ``value`` (uA), as a lab's class may well be written."""

    def __init__(self, name: str = "") -> None:
        with self.add_children_as_readables():
            self.raw, self._set_raw = soft_signal_r_and_setter(float, 0.0, units="counts")
        with self.add_children_as_readables(StandardReadableFormat.HINTED_SIGNAL):
            self.value, self._set_value = soft_signal_r_and_setter(
                float, 0.0, units="uA", precision=3
            )
        super().__init__(name=name)

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        self._set_raw(42.0)
        self._set_value(2.5)


class TotalFirst(Device):
    """A sync detector whose normal ``total`` (21) is declared before its hinted
    ``intensity`` (7): ``read()`` lists ``total`` first."""

    total = Component(Signal, value=0.0, kind=Kind.normal)
    intensity = Component(Signal, value=0.0, kind=Kind.hinted)

    def trigger(self) -> Status:
        self.total.put(21.0)
        self.intensity.put(7.0)
        status = DeviceStatus(self)
        status.set_finished()
        return status

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = super().describe()
        described[self.intensity.name]["units"] = "counts"
        return described


class Selector(Device):
    """A choice input's device: it takes and reads back text (a filter wheel's position)."""

    slot = Component(Signal, value="a", kind=Kind.hinted)

    def set(self, value: Any) -> Status:
        self.slot.put(value)
        status = DeviceStatus(self)
        status.set_finished()
        return status


class Saturates(TotalFirst):
    """A detector whose every trigger fails with the hardware's own reason."""

    def trigger(self) -> Status:
        status = DeviceStatus(self)
        status.set_exception(RuntimeError("detector saturated: HV trip"))
        return status


class Spectrum(Device):
    """A detector whose one field is a waveform, not a number."""

    counts = Component(Signal, value=[1.0, 2.0, 3.0], kind=Kind.hinted)

    def trigger(self) -> Status:
        status = DeviceStatus(self)
        status.set_finished()
        return status


class NoHint(TotalFirst):
    """:class:`TotalFirst` with nothing hinted: which field is the output is not known."""

    intensity = Component(Signal, value=0.0, kind=Kind.normal)


INPUTS = """\
inputs:
  x:
    device: ophyd.sim:SoftPositioner
    args: {limits: [-10, 10], egu: um, init_pos: 0}
    device_units: um
    limits: [-0.01, 0.01]
    timeout: 5
"""
PARAMS = [{"name": "x", "type": "float", "bounds": [-0.01, 0.01], "unit": "mm"}]


def _instrument(tmp_path: Path, outputs: str) -> DeclaredInstrument:
    path = tmp_path / "bench.yaml"
    path.write_text("name: bench\nconnection_timeout: 5\n" + INPUTS + "outputs:\n" + outputs)
    inst = build_instrument(InstrumentConfig(file=str(path)), PARAMS, base_dir=tmp_path, seed=None)
    assert isinstance(inst, DeclaredInstrument)
    return inst


def _one_trial(inst: DeclaredInstrument, x: float = 0.004) -> TrialResult:
    try:
        with Dispatcher(inst) as dispatcher:
            result = dispatcher.run(1, "c", {"x": x})
    finally:
        inst.close(safe_state=False)
    assert result.exit_status == "success", result.error
    return result


def _valid(documents: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Validate every document with event-model's own schemas; the primary descriptor."""
    for name, doc in documents:
        schema_validators[DocumentNames[name]].validate(doc)
    return next(d for n, d in documents if n == "descriptor" and d["name"] == "primary")


def test_plugin_data_keys_keep_their_own_metadata_and_every_device_is_hinted(
    tmp_path: Path,
) -> None:
    inst = _instrument(tmp_path, f"  current: {{device: {HERE}:Sensor}}\n")
    result = _one_trial(inst)
    descriptor = _valid(result.documents)
    keys = descriptor["data_keys"]
    # converted from um: the campaign's unit, the device's limits in it, no um precision
    assert keys["x"]["source"] == "computed"  # SoftPositioner's own, not device:ophyd.sim:...
    assert keys["x"]["units"] == "mm"
    assert keys["x"]["limits"]["control"] == pytest.approx({"low": -0.01, "high": 0.01})
    assert "precision" not in keys["x"]
    # stored as the sensor gives it: its own source, unit and precision, of its hinted field
    assert keys["current"]["source"] == "soft://current-value"
    assert keys["current"]["units"] == "uA"
    assert keys["current"]["precision"] == 3
    assert result.outputs == {"current": 2.5}  # the hinted value, not the first field (raw)
    assert descriptor["hints"] == {"x": {"fields": ["x"]}, "bench_outputs": {"fields": ["current"]}}


def test_an_output_reads_its_hinted_field_not_its_first(tmp_path: Path) -> None:
    """``total`` (21) is read first; ``intensity`` (7) is hinted: 7 is stored. ``check``
    shows the field and how it was chosen, and tells a file that relied on the first field
    how to keep it."""
    inst = _instrument(tmp_path, f"  intensity: {{device: {HERE}:TotalFirst}}\n")
    row = next(r for r in inst.check() if r.name == "intensity")
    result = _one_trial(inst)
    assert result.outputs == {"intensity": 7.0}
    assert row.source == (f"device:{HERE}:TotalFirst key intensity_intensity (its hinted field)"), (
        row.source
    )
    assert row.problem is None
    assert row.note == (
        "closedloop read its first field, intensity_total, before it followed hints; to keep "
        "reading that, set `key: intensity_total` under outputs.intensity"
    )
    key = _valid(result.documents)["data_keys"]["intensity"]
    assert key["units"] == "counts" and key["source"] == "SIM:intensity_intensity"


def test_an_output_with_several_unhinted_fields_is_refused_until_key_chooses(
    tmp_path: Path,
) -> None:
    with pytest.raises(InstrumentFileError) as refused:
        _instrument(tmp_path, f"  intensity:\n    device: {HERE}:NoHint\n")
    err = refused.value
    assert err.path == tmp_path / "bench.yaml" and err.line == 11, (
        err.path,
        err.line,
    )  # outputs.intensity
    assert (
        f"output 'intensity' (device {HERE}:NoHint): its reading has fields intensity_total, "
        "intensity_intensity, and it hints none of them, so which one is the output is not "
        "known"
    ) in err.problem, err.problem
    assert err.fix == (
        "set `key:` under outputs.intensity to one of them (`key: intensity_total` keeps what "
        "closedloop read before it followed hints: the first field)"
    )
    chosen = _instrument(
        tmp_path, f"  intensity:\n    device: {HERE}:NoHint\n    key: intensity_intensity\n"
    )
    assert _one_trial(chosen).outputs == {"intensity": 7.0}


def test_an_unhinted_output_is_listed_by_check(tmp_path: Path) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(f"name: bench\n{INPUTS}outputs:\n  intensity: {{device: {HERE}:NoHint}}\n")
    inst = build_declared_instrument(
        load_instrument_file(path), input_specs(PARAMS), units={"x": "mm"}, connect=False
    )
    try:
        row = next(r for r in inst.check() if r.name == "intensity")
    finally:
        inst.close(safe_state=False)
    assert row.connected and row.value is None
    assert "hints none of them" in (row.problem or "")
    assert "`key: intensity_total`" in (row.problem or "")


def test_epics_inputs_and_outputs_are_hinted(tmp_path: Path) -> None:
    """The EPICS paths' wrappers name their field too (nothing connects here)."""
    path = tmp_path / "epics.yaml"
    path.write_text(
        "name: rig\ninputs:\n  x: {setpoint: 'f1:x:SP', limits: [-1, 1]}\n"
        "outputs:\n  y: {pv: 'f1:y'}\n"
    )
    inst = build_declared_instrument(
        load_instrument_file(path), input_specs(PARAMS), units={"x": "mm"}, connect=False
    )
    try:
        assert inst.inputs["x"].hints == {"fields": ["x"]}
        assert inst.detector.hints == {"fields": ["y"]}
        assert inst.inputs["x"].describe()["x"]["source"] == "PV:f1:x:SP"
    finally:
        inst.close(safe_state=False)


def test_a_choice_input_s_text_is_a_string_data_key(tmp_path: Path) -> None:
    """The wrapper's data key said ``dtype: number`` for a device that reads text, so a
    catalog read a number column holding 'b' (found in review)."""
    path = tmp_path / "bench.yaml"
    path.write_text(
        f"name: bench\ninputs:\n  c: {{device: {HERE}:Selector}}\n"
        f"outputs:\n  y: {{device: {HERE}:TotalFirst}}\n"
    )
    params = [{"name": "c", "type": "choice", "values": ["a", "b"]}]
    inst = build_instrument(InstrumentConfig(file=str(path)), params, base_dir=tmp_path, seed=None)
    assert isinstance(inst, DeclaredInstrument)
    try:
        with Dispatcher(inst) as dispatcher:
            result = dispatcher.run(1, "c", {"c": "b"})
    finally:
        inst.close(safe_state=False)
    assert result.exit_status == "success", result.error
    keys = _valid(result.documents)["data_keys"]
    assert keys["c"]["dtype"] == "string" and keys["y"]["dtype"] == "number"
    assert result.readbacks == {"c": "b"}


def test_a_failed_device_s_stop_document_says_its_error(tmp_path: Path) -> None:
    """Every plugin or EPICS device failure stored ``Status(obj=<...OutputDetector object
    at 0x7f...>, done=True, success=False)`` as the stop's reason (found in review)."""
    inst = _instrument(tmp_path, f"  y: {{device: {HERE}:Saturates}}\n")
    try:
        with Dispatcher(inst) as dispatcher:
            result = dispatcher.run(1, "c", {"x": 0.004})
    finally:
        inst.close(safe_state=False)
    stop = next(d for n, d in result.documents if n == "stop")
    assert stop["exit_status"] == "fail"
    assert stop["reason"] == "RuntimeError: detector saturated: HV trip (detector 'bench_outputs')"
    assert result.error == stop["reason"]


def test_a_setpoint_at_the_limit_is_not_sent_past_the_device_s_own_limit(tmp_path: Path) -> None:
    """1.27082 mm is 1270.8200000000002 um on the way, past a device limit of 1270.82: the
    device refused the put, and the trial failed as a readback out of tolerance (found in
    review). A value a few ulps past the device's limit is put at the limit."""
    path = tmp_path / "bench.yaml"
    path.write_text(
        "name: bench\ninputs:\n  x:\n    device: ophyd.sim:SoftPositioner\n"
        "    args: {limits: [0, 1270.82], egu: um, init_pos: 1000}\n"
        "    device_units: um\n    limits: [1, 1.27082]\n    timeout: 5\n"
        f"outputs:\n  y: {{device: {HERE}:TotalFirst}}\n"
    )
    params = [{"name": "x", "type": "float", "bounds": [1, 1.27082], "unit": "mm"}]
    inst = build_instrument(InstrumentConfig(file=str(path)), params, base_dir=tmp_path, seed=None)
    assert isinstance(inst, DeclaredInstrument)
    try:
        with Dispatcher(inst) as dispatcher:
            result = dispatcher.run(1, "c", {"x": 1.27082})
        assert result.exit_status == "success", result.error
        assert inst.inputs["x"]._positioner.position == 1270.82  # type: ignore[attr-defined]
    finally:
        inst.close(safe_state=False)


@pytest.mark.parametrize(
    ("output", "problem", "fix"),
    [
        (
            f"  intensity: {{device: {HERE}:TotalFirst, key: intensity_intensty}}\n",
            "its `key: intensity_intensty` is none of its fields",
            "to intensity_intensity (did you mean it?)",
        ),
        (
            f"  intensity: {{device: {HERE}:Spectrum}}\n",
            "field intensity_counts reads an array (shape [3]), and an output is one number",
            "reduce the array to one in the device",
        ),
    ],
    ids=["key-not-a-field", "array"],
)
def test_an_output_that_can_never_be_read_is_refused_before_anything_moves(
    tmp_path: Path, output: str, problem: str, fix: str
) -> None:
    """`instruments check` said so, but `run` moved the inputs and failed every trial
    until max_failures (found in review)."""
    with pytest.raises(InstrumentFileError) as refused:
        _instrument(tmp_path, output)
    assert refused.value.line == 11  # outputs.intensity
    assert problem in refused.value.problem, refused.value.problem
    assert fix in refused.value.fix, refused.value.fix
