"""Instrument files without an IOC: the schema, its error messages, the safety checks made
before any device put, and ``closedloop plan --dry-run``.

Nothing here talks Channel Access: the plugin-device tests build instruments from ophyd
``Signal`` subclasses (no EPICS object is created), and the CLI runs in a subprocess whose
EPICS address list points at a closed local port, so this process never creates a CA
context (the IOC tests need to create theirs with their own environment).
"""

from __future__ import annotations

import math
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from ophyd import Component as Cpt
from ophyd import Device, Signal

from instruments import Dispatcher, input_specs
from instruments._epics import build_declared_instrument, load_device_class
from instruments._errors import InstrumentConfigError
from instruments._instrument_file import (
    InstrumentFile,
    InstrumentFileError,
    load_instrument_file,
    parse_instrument,
)
from instruments._safety import SetpointRefused, check_setpoint

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "campaigns" / "instruments" / "epics_reactor.yaml"
CAMPAIGN = ROOT / "campaigns" / "epics" / "epics_reactor.yaml"


# ---------------------------------------------------------------------------- schema
def test_the_example_instrument_file_is_accepted() -> None:
    spec = load_instrument_file(EXAMPLE)
    assert isinstance(spec, InstrumentFile)
    assert set(spec.inputs) == {"temperature", "flow"}
    temperature = spec.inputs["temperature"]
    assert temperature.setpoint == "temp:SP" and temperature.readback == "temp:RBV"
    assert temperature.limits == (20, 100) and temperature.max_step == 80
    assert (temperature.units, temperature.device_units) == ("degC", "K")
    assert spec.acquire is not None and spec.acquire.done is not None
    assert [str(i) for i in spec.interlocks] == ["door_closed == 1", "pressure < 5"]
    assert spec.on_stop == {"temperature": 25, "heater:enable": 0}


def test_the_example_campaign_references_the_file() -> None:
    from loop.config import load_campaign

    loaded = load_campaign(CAMPAIGN)
    assert loaded.campaign.instrument.file == "../instruments/epics_reactor.yaml"


def test_every_key_of_the_readme_example_is_accepted() -> None:
    spec = parse_instrument(
        {
            "name": "bench",
            "control_layer": "pyepics",
            "prefix": "LAB:",
            "inputs": {
                "temperature": {
                    "setpoint": "T:SP",
                    "readback": "T:RBV",
                    "tolerance": 0.5,
                    "settle_time": 2,
                    "timeout": 120,
                    "units": "degC",
                    "device_units": "K",
                    "limits": [20, 100],
                    "max_step": 10,
                },
                "position": {"motor": "m1", "limits": [0, 50]},
                "ratio": {"device": "mylab.pumps:Ratio", "args": {"port": "/dev/ttyUSB0"}},
                "stir": {"device": "stirrer"},
            },
            "outputs": {
                "yield": {"pv": "HPLC:yield"},
                "area": {"device": "mylab.hplc:Detector", "key": "peak_area"},
                "power": {"pv": "P", "units": "W", "device_units": "mW"},
            },
            "acquire": {"pv": "HPLC:Acquire", "done": {"pv": "HPLC:Busy", "value": 0}},
            "interlocks": "door_closed == 1",
            "on_stop": {"temperature": 25, "heater:enable": 0},
        }
    )
    assert spec.interlocks[0].op == "=="
    assert spec.inputs["stir"].device == "stirrer"


def test_the_readme_example_is_accepted(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### The instrument file", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "bench.yaml"
    path.write_text(block)
    spec = load_instrument_file(path)
    assert set(spec.inputs) == {"temperature", "position", "flow", "stirrer"}
    assert spec.inputs["position"].motor == "stage:m1"
    assert spec.inputs["stirrer"].device == "stirrer"
    assert spec.outputs["power"].device_units == "mW"
    assert spec.on_stop == {"temperature": 25, "heater:enable": 0}


BASE = """\
name: bench
inputs:
  a:
    setpoint: A:SP
{input}outputs:
  y: {{pv: Y}}
{tail}"""

BAD_FILES: list[tuple[str, str, int | None, list[str]]] = [
    (
        "unknown key, nearest match",
        BASE.format(input="    limts: [0, 1]\n", tail=""),
        5,
        ["unknown key 'limts' in inputs.a", "did you mean 'limits'?"],
    ),
    (
        "unknown top-level key",
        BASE.format(input="", tail="interlock: [door == 1]\n"),
        7,
        ["unknown key 'interlock'", "did you mean 'interlocks'?"],
    ),
    (
        "limits reversed",
        BASE.format(input="    limits: [100, 20]\n", tail=""),
        5,
        ["inputs.a.limits", "low < high", "fix: write limits: [20, 100]"],
    ),
    (
        # the rule's fix before the count of further problems (it gave the count alone)
        "limits reversed, and another problem",
        BASE.format(input="    limits: [100, 20]\n", tail="interlock_poll: -1\n"),
        5,
        ["low < high", "fix: write limits: [20, 100]; 1 more problem(s)"],
    ),
    (
        "both setpoint and motor",
        BASE.format(input="    motor: M1\n", tail=""),
        3,
        ["exactly one of", "'setpoint', 'motor'"],
    ),
    (
        "no source at all",
        "inputs:\n  a: {tolerance: 1}\noutputs: {y: {pv: Y}}\n",
        2,
        ["exactly one of", "got none"],
    ),
    (
        "readback without setpoint",
        "inputs:\n  a: {motor: M1, readback: M1.RBV}\noutputs: {y: {pv: Y}}\n",
        2,
        ["`readback:` goes with `setpoint:`"],
    ),
    (
        "bad interlock expression",
        BASE.format(input="", tail="interlocks:\n  - door_closed = 1\n"),
        8,
        ["'door_closed = 1' is not an interlock", "door_closed == 1"],
    ),
    (
        "interlock on text no PV is named",
        BASE.format(input="", tail="interlocks:\n  - \"__import__('os').system('id') == 1\"\n"),
        8,
        ["is neither an input or output name nor a PV name", "write `NAME OP NUMBER`"],
    ),
    (
        "interlock against a non-number",
        BASE.format(input="", tail="interlocks: [door == open]\n"),
        7,
        ["'open' is not a number"],
    ),
    (
        "unknown unit",
        BASE.format(input="    device_units: kelvinz\n", tail=""),
        5,  # its own line (it was the input's: found in review)
        ["unknown unit 'kelvinz'", "write a unit pint knows"],
    ),
    (
        "units that do not convert",
        BASE.format(input="    units: degC\n    device_units: mL/min\n", tail=""),
        3,
        ["'degC' cannot be converted to device_units 'mL/min'"],
    ),
    (
        "an output's device_units without units",
        BASE.format(input="", tail="").replace("y: {pv: Y}", "y: {pv: Y, device_units: mW}"),
        6,
        ["outputs.y", "`device_units: mW` needs `units:`"],
    ),
    (
        "missing outputs",
        "name: bench\ninputs:\n  a: {setpoint: A}\n",
        1,
        ["missing required key 'outputs'"],
    ),
    (
        "empty outputs",
        "inputs:\n  a: {setpoint: A}\noutputs: {}\n",
        3,
        ["outputs", "at least 1 item"],
    ),
    (
        "an output both pv and device",
        "inputs:\n  a: {setpoint: A}\noutputs:\n  y: {pv: Y, device: 'm:C'}\n",
        4,
        ["exactly one of `pv: NAME` or `device: module:Class`"],
    ),
    (
        "negative max_step",
        BASE.format(input="    max_step: -1\n", tail=""),
        5,
        ["inputs.a.max_step", "greater than 0"],
    ),
    (
        "safe state outside the limits",
        BASE.format(input="    limits: [0, 10]\n", tail="on_stop: {a: 20}\n"),
        8,
        # the fix too: it had none (found in review)
        ["on_stop: a = 20 is outside its limits", "set on_stop's a within [0, 10]"],
    ),
    (
        "a name both input and output",
        "inputs:\n  a: {setpoint: A}\noutputs:\n  a: {pv: Y}\n",
        3,
        ["both inputs and outputs"],
    ),
    (
        "unknown control layer",
        "control_layer: pyepicz\n" + BASE.format(input="", tail=""),
        1,
        ["control_layer", "'caproto' or 'pyepics'"],
    ),
    (
        "PV name with a space",
        BASE.format(input="", tail="").replace("A:SP", "'A SP'"),
        4,
        ["inputs.a.setpoint", "'A SP'"],
    ),
    (
        "not YAML",
        "inputs:\n  a: {setpoint: A\n",
        3,
        ["is not valid YAML"],
    ),
    ("not a mapping", "- a\n- b\n", 1, ["must be a mapping"]),
    (
        "a boolean max_step",
        BASE.format(input="    max_step: true\n", tail=""),
        5,
        ["inputs.a.max_step: true/false is not a number (got true)", "write a number"],
    ),
    (
        "a boolean in the limits",
        BASE.format(input="    limits: [0, true]\n", tail=""),
        5,
        ["inputs.a.limits[1]: true/false is not a number", "write a number"],
    ),
    (
        "a boolean timeout",
        BASE.format(input="", tail="acquire: {pv: ACQ, timeout: false}\n"),
        7,
        ["acquire.timeout: true/false is not a number (got false)", "write a number"],
    ),
    (
        "nested hundreds of levels deep (flow)",
        BASE.format(input="", tail="description: " + "[" * 300 + "]" * 300 + "\n"),
        7,
        ["nests lists/mappings more than 100 levels deep", "remove the extra brackets"],
    ),
    (
        "nested hundreds of levels deep (block)",
        BASE.format(input="", tail="args:\n" + "".join("  " * i + "k:\n" for i in range(1, 300))),
        106,  # the key holding the 101st level
        ["nests lists/mappings more than 100 levels deep"],
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "needles"),
    [case[1:] for case in BAD_FILES],
    ids=[case[0] for case in BAD_FILES],
)
def test_a_malformed_file_names_file_line_and_problem(
    tmp_path: Path, text: str, line: int | None, needles: list[str]
) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    with pytest.raises(InstrumentFileError) as info:
        load_instrument_file(path)
    err = info.value
    assert err.path == path
    assert err.line == line, str(err)
    assert str(err).startswith(f"{path}:{line}: ")
    for needle in needles:
        assert needle in str(err), str(err)


def test_a_boolean_safe_state_for_a_pv_is_accepted(tmp_path: Path) -> None:
    """true/false is a fair value for a binary PV (a shutter), unlike in a numeric setting."""
    path = tmp_path / "bench.yaml"
    path.write_text(BASE.format(input="", tail="on_stop: {SHUTTER: false}\n"))
    assert load_instrument_file(path).on_stop == {"SHUTTER": 0.0}


def test_missing_and_empty_files_are_clear(tmp_path: Path) -> None:
    with pytest.raises(InstrumentFileError, match="no such file"):
        load_instrument_file(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("  \n")
    with pytest.raises(InstrumentFileError, match="is empty"):
        load_instrument_file(tmp_path / "empty.yaml")


@pytest.mark.parametrize(
    ("raw", "line", "offset"),
    [
        (b"a: 1\nb: \xb5m\n", 2, 8),
        (b"\xef\xbb\xbfa: 1\n\xff\n", 2, 8),  # a byte-order mark is a byte of the file
        (b"\xef\xbb\xbf\xff", 1, 3),
        (b"a: caf\xc3", 1, 6),  # a sequence cut short at the end
    ],
)
def test_decode_text_locates_a_bad_byte_in_the_file_s_own_bytes(
    raw: bytes, line: int, offset: int
) -> None:
    """One decoder for campaign, instrument, prior-data and results files (it was written
    four times, and prior data counted the line and the byte in different bytes)."""
    from simulators._text import NotUTF8Error, decode_text

    with pytest.raises(NotUTF8Error) as info:
        decode_text(raw)
    assert (info.value.line, info.value.offset, info.value.byte) == (line, offset, raw[offset])
    assert decode_text(b"\xef\xbb\xbfa: 1\n") == "\ufeffa: 1\n"  # the mark is kept


def test_an_instrument_file_that_is_not_utf8_names_line_byte_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "bench.yaml"
    path.write_bytes(b"\xef\xbb\xbfname: bench\nunit: \xb5m\n")
    with pytest.raises(InstrumentFileError) as info:
        load_instrument_file(path)
    assert (
        str(info.value) == f"{path}:2: is not UTF-8 text (byte 21)\n  fix: save the file as UTF-8"
    )


def test_an_unknown_plugin_device_names_the_entry_point_group() -> None:
    with pytest.raises(InstrumentConfigError, match="closedloop.instruments"):
        load_device_class("no_such_entry_point")
    with pytest.raises(InstrumentConfigError, match="cannot import 'no_such_module_xyz'"):
        load_device_class("no_such_module_xyz:Device")
    assert load_device_class("ophyd:Signal") is Signal


# ---------------------------------------------------------------------------- safety
class RecordingSignal(Signal):  # type: ignore[misc]
    """A plugin device that records every put that reaches it."""

    puts: ClassVar[list[tuple[str, Any]]] = []

    def put(self, value: Any, **kwargs: Any) -> None:
        RecordingSignal.puts.append((self.name, value))
        super().put(value, **kwargs)


@pytest.fixture
def puts() -> list[tuple[str, Any]]:
    RecordingSignal.puts.clear()
    return RecordingSignal.puts


def _plugin_instrument(**temperature: Any) -> Any:
    device = f"{__name__}:RecordingSignal"
    spec = parse_instrument(
        {
            "name": "plugin-bench",
            "inputs": {
                "temperature": {"device": device, "args": {"value": 50.0}, **temperature},
                "flow": {"device": device, "args": {"value": 1.0}, "limits": [0.1, 5]},
            },
            "outputs": {"yield": {"device": device, "args": {"value": 0.5}}},
        }
    )
    params = input_specs([("temperature", (0.0, 200.0)), ("flow", (0.0, 10.0))])
    return build_declared_instrument(spec, params, connect=False)


def test_a_setpoint_outside_the_limits_never_reaches_the_device(
    puts: list[tuple[str, Any]],
) -> None:
    inst = _plugin_instrument(limits=[20, 100])
    try:
        with Dispatcher(inst) as dispatcher:
            refused = dispatcher.run(1, "c", {"temperature": 105.0, "flow": 2.0})
            assert puts == []
            ok = dispatcher.run(2, "c", {"temperature": 60.0, "flow": 2.0})
        # A device whose pre-check was skipped still refuses just before its put.
        status = inst.inputs["temperature"].set(150.0)
        with pytest.raises(SetpointRefused, match="outside the hardware limits"):
            status.wait(10)
    finally:
        inst.close()
    assert refused.exit_status == "fail"
    assert refused.run_uid is None
    assert "temperature: setpoint 105 is outside the hardware limits [20, 100]" in (
        refused.error or ""
    )
    assert ok.ok, ok.error
    assert ok.outputs["yield"] == 0.5
    assert ("temperature", 60.0) in puts and ("temperature", 150.0) not in puts


def test_a_move_further_than_max_step_ramps_in_steps_within_it(
    puts: list[tuple[str, Any]],
) -> None:
    """50 -> 80 with max_step 10 is three writes, 60, 70, 80, each within 10 of where the
    device then is; it used to be refused, and a design that jumps (a Sobol start) had most
    of its trials refused and the campaign failed on max_failures (found in review). The
    trial measures once, at 80, and stores that readback."""
    inst = _plugin_instrument(limits=[0, 200], max_step=10)
    try:
        inst.inputs["temperature"].check_value(80.0)  # the pre-check no longer refuses it
        with Dispatcher(inst) as dispatcher:
            up = dispatcher.run(1, "c", {"temperature": 80.0, "flow": 1.0})
            up_puts = [v for n, v in puts if n == "temperature"]
            puts.clear()
            down = dispatcher.run(2, "c", {"temperature": 58.0, "flow": 1.0})
    finally:
        inst.close()
    assert up.ok and down.ok, (up.error, down.error)
    assert up_puts == [60.0, 70.0, 80.0]
    assert up.readbacks["temperature"] == 80.0
    assert [v for n, v in puts if n == "temperature"] == [70.0, 60.0, 58.0]


def test_a_ramp_whose_first_step_leaves_the_limits_is_refused_before_the_put(
    puts: list[tuple[str, Any]],
) -> None:
    """At 50 with limits [70, 100] and max_step 10 the first step toward 80, 60, is outside
    the limits: refused before any put (as the safe state refuses it), saying so."""
    inst = _plugin_instrument(limits=[70, 100], max_step=10)
    try:
        with Dispatcher(inst) as dispatcher:
            refused = dispatcher.run(1, "c", {"temperature": 80.0, "flow": 1.0})
    finally:
        inst.close()
    assert puts == []
    assert refused.exit_status == "fail" and refused.run_uid is None
    assert (
        "temperature: it reads 50, and the step toward 80 within max_step 10 is "
        "refused: setpoint 60 is outside the hardware limits [70, 100] (bring it back "
        "within its limits by hand)"
    ) in (refused.error or ""), refused.error


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (101.0, "outside the hardware limits [0, 100]"),
        (-0.5, "outside the hardware limits"),
        (math.nan, "not finite"),
        (math.inf, "not finite"),
        (True, "not a number"),
        ("50", "not a number"),
        (70.0, "larger than max_step 15"),
    ],
)
def test_check_setpoint_refuses(value: Any, reason: str) -> None:
    with pytest.raises(SetpointRefused, match=re.escape(reason)):
        check_setpoint("t", value, limits=(0, 100), max_step=15, current=lambda: 50.0)


def test_check_setpoint_accepts_the_edges() -> None:
    for value in (0, 100.0, 35.0, 65):
        check_setpoint("t", value, limits=(0, 100), max_step=50, current=lambda: 50.0)
    check_setpoint("t", 1e9, limits=None, max_step=None, current=None)


# ---------------------------------------------------------------------------- plan --dry-run
def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _closedloop(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess with Channel Access pointed at a port nobody serves: had the
    dry run tried to connect or put, it would time out and fail."""
    port = str(_closed_port())
    env = {
        **os.environ,
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_ADDR_LIST": "127.0.0.1",
        "EPICS_CA_SERVER_PORT": port,
        "EPICS_CA_REPEATER_PORT": str(_closed_port()),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-c", "from loop.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
        check=False,
    )


def test_plan_dry_run_prints_the_message_sequence() -> None:
    out = _closedloop(
        "plan", str(CAMPAIGN), "--dry-run", "--at", "temperature=60", "--at", "flow=2.5"
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "next trial at temperature=60, flow=2.5" in out.stdout
    commands = [
        line.split()[1]
        for line in out.stdout.splitlines()
        if line.strip() and line.split()[0].isdigit()
    ]
    assert commands[0] == "open_run"
    assert commands[-1] == "close_run"
    assert commands[1:4] == ["set", "set", "wait"]
    assert commands.index("trigger") < commands.index("read") < commands.index("save")
    assert {"create", "read", "save"} <= set(commands)
    assert "temperature 60" in out.stdout and "flow 2.5" in out.stdout
    # what each message does at the hardware: PVs, waits and their limits (the preview
    # showed `set x 8.96` and `timeout=None`, never a PV: found in review)
    said = " ".join(out.stdout.split())
    for line in (
        "before each write: interlock door_closed == 1 is read (before the first, the trial "
        "waits while it does not hold; before a later step of a ramp, the trial fails)",
        "-> writes PV closedloop:sim:temp:SP, waits for readback closedloop:sim:temp:RBV within "
        "0.5 (at most 60 s, then 0.1 s to settle; a move further than max_step 80 goes in steps "
        "of at most that, each written and waited for like this (and until its readback is there), "
        "within 60 s each)",
        "-> writes 1 to PV closedloop:sim:acquire with put-completion, then waits until PV "
        "closedloop:sim:busy reads 0.0 (at most 30 s in all)",
        "-> reads yield from PV closedloop:sim:yield",
        "-> reads PV closedloop:sim:flow:RBV",
        "on any stop: sets temperature = 25 degC through PV closedloop:sim:temp:SP, in steps "
        "of at most max_step 80",
        "on any stop: writes 0.0 to PV closedloop:sim:heater:enable",
    ):
        assert line in said, (line, said)


def test_plan_dry_run_refuses_an_out_of_limit_point() -> None:
    out = _closedloop(
        "plan", str(CAMPAIGN), "--dry-run", "--at", "temperature=105", "--at", "flow=2"
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "refused before dispatch" in out.stdout
    assert "temperature: setpoint 105 is outside the hardware limits [20, 100]" in out.stdout
    assert "open_run" not in out.stdout


def test_plan_dry_run_notes_a_point_outside_the_campaign_s_constraints() -> None:
    # Was shown as if the loop could run it: --at is checked against the whole space now.
    from typer.testing import CliRunner

    from loop.cli import app

    campaign = ROOT / "campaigns" / "nonlinear_constraint.yaml"
    args = ["plan", str(campaign), "--dry-run", "--at", "x1=0", "--at", "x2=0"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    said = " ".join(out.output.split())
    assert "note: point {'x1': 0.0, 'x2': 0.0} violates constraints[1] ('x1 + x2 >= 2')" in said
    assert "the planner never proposes such a point" in said
    inside = CliRunner().invoke(app, [*args[:-4], "--at", "x1=5", "--at", "x2=5"])
    assert inside.exit_code == 0 and "note:" not in inside.output


# ---------------------------------------------------------------------------- instruments check
PLUGIN_CAMPAIGN = """\
name: plugin-bench
parameters:
  - {{name: x, type: float, bounds: [0, 2]}}
objectives:
  - {{name: y, goal: maximize}}
instrument:
  devices:
    inputs:
      x: {{device: "ophyd:Signal", args: {{value: {x}}}, limits: [0, 2]}}
    outputs:
      y: {{device: "ophyd:Signal", args: {{value: 0.5}}}}
planner: {{kind: sobol}}
budget: {{max_trials: 2}}
"""


def test_instruments_check_reads_a_campaign_with_plugin_devices(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from loop.cli import app

    good = tmp_path / "good.yaml"
    good.write_text(PLUGIN_CAMPAIGN.format(x=1.5))
    ok = CliRunner().invoke(app, ["instruments", "check", str(good)])
    assert ok.exit_code == 0, ok.output
    assert "all devices connected" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(PLUGIN_CAMPAIGN.format(x=3.0))
    out = CliRunner().invoke(app, ["instruments", "check", str(bad)])
    assert out.exit_code == 1, out.output
    assert "3 is outside the limits [0, 2]" in out.output


def test_an_error_in_inline_devices_names_the_campaign_file_and_the_key_s_own_line(
    tmp_path: Path,
) -> None:
    # Inline devices are part of the campaign file: the message used to read
    # "campaign.yaml:6: instrument: <instrument.devices>:9: ...", two lines and a pseudo-file.
    from loop.config import load_campaign
    from loop.errors import CampaignConfigError

    path = tmp_path / "campaign.yaml"
    path.write_text(PLUGIN_CAMPAIGN.format(x=1.5).replace("limits: [0, 2]", "limts: [0, 2]"))
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path)
    assert str(info.value).startswith(
        f"{path}:9: instrument.devices: unknown key 'limts' in inputs.x\n"
        "  fix: did you mean 'limits'?"
    )


# ---------------------------------------------------------------------------- units
UNITS_INSTRUMENT = f"""\
name: unit-bench
inputs:
  temperature:
    device: "{__name__}:RecordingSignal"
    args: {{value: 298.15}}
    device_units: K
    limits: [20, 100]
outputs:
  y: {{device: "ophyd:Signal", args: {{value: 0.5}}}}
"""
UNITS_CAMPAIGN = """\
name: unit-bench
parameters:
  - {{name: temperature, type: float, bounds: [30, 100]{unit}}}
objectives:
  - {{name: y, goal: maximize}}
instrument: {{file: bench.yaml}}
planner: {{kind: sobol}}
budget: {{max_trials: 1}}
"""


def test_device_units_without_a_campaign_unit_is_refused_naming_file_line_and_fix(
    tmp_path: Path, puts: list[tuple[str, Any]]
) -> None:
    """The parameter has no `unit:` and the input no `units:`: nothing could be converted,
    so 80 (meant as degC) would reach a device that speaks kelvin. Refused when the campaign
    loads and when the devices would be built, before anything is created or written."""
    from loop.config import load_campaign
    from loop.errors import CampaignConfigError

    bench = tmp_path / "bench.yaml"
    bench.write_text(UNITS_INSTRUMENT)
    (tmp_path / "c.yaml").write_text(UNITS_CAMPAIGN.format(unit=""))
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(tmp_path / "c.yaml")
    message = str(info.value)
    assert f"{bench}:6: inputs.temperature: `device_units: K`" in message, message
    assert "fix: add `unit:` to the campaign parameter 'temperature'" in message, message
    spec = load_instrument_file(bench)
    params = input_specs([("temperature", (30.0, 100.0))])
    with pytest.raises(InstrumentFileError) as built:
        build_declared_instrument(spec, params, units={"temperature": None}, connect=False)
    assert (built.value.path, built.value.line) == (bench, 6)
    assert puts == []


@pytest.mark.parametrize(("unit", "refused"), [("°C", False), ("celsius", False), ("K", True)])
def test_the_file_s_and_the_campaign_s_unit_compare_by_value(
    tmp_path: Path, unit: str, refused: bool
) -> None:
    """`unit: "°C"` in the campaign against `units: degC` in the file was refused as two
    units (found in review); another unit still is, saying what to write."""
    from loop.config import load_campaign
    from loop.errors import CampaignConfigError

    bench = tmp_path / "bench.yaml"
    bench.write_text(
        UNITS_INSTRUMENT.replace("device_units: K", "units: degC\n    device_units: K")
    )
    (tmp_path / "c.yaml").write_text(UNITS_CAMPAIGN.format(unit=f', unit: "{unit}"'))
    if not refused:
        load_campaign(tmp_path / "c.yaml")
        return
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(tmp_path / "c.yaml")
    message = str(info.value)
    assert (
        "inputs.temperature: units 'degC' differ from the campaign parameter's unit 'K'" in message
    )
    assert "write `unit: degC` for the parameter 'temperature'" in message


def test_device_units_convert_what_reaches_the_device(
    tmp_path: Path, puts: list[tuple[str, Any]]
) -> None:
    """With the parameter's `unit: degC`, the same file converts both ways on a real run."""
    from loop.config import load_campaign

    (tmp_path / "bench.yaml").write_text(UNITS_INSTRUMENT)
    (tmp_path / "c.yaml").write_text(UNITS_CAMPAIGN.format(unit=", unit: degC"))
    loaded = load_campaign(tmp_path / "c.yaml")
    c = loaded.campaign
    from instruments import build_instrument

    inst = build_instrument(c.instrument, c.parameters, base_dir=loaded.base_dir, seed=0)
    try:
        with Dispatcher(inst) as dispatcher:
            result = dispatcher.run(1, "c", {"temperature": 80.0})
    finally:
        inst.close()  # type: ignore[attr-defined]
    assert result.ok, result.error
    assert puts == [("temperature", pytest.approx(353.15))]
    assert result.readbacks["temperature"] == pytest.approx(80.0)


def test_instruments_check_refuses_device_units_it_cannot_convert(tmp_path: Path) -> None:
    """On its own, a file whose input has `device_units` but no `units` has no campaign
    unit: the check says so (file, line, fix; exit 2) instead of showing 298.15 as degC."""
    bench = tmp_path / "bench.yaml"
    text = UNITS_INSTRUMENT.replace(f"{__name__}:RecordingSignal", "ophyd:Signal")
    bench.write_text(text)
    out = _closedloop("instruments", "check", str(bench))
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"{bench}:6: inputs.temperature: `device_units: K`" in out.stderr, out.stderr
    assert "add `units:` to inputs.temperature" in out.stderr
    assert "outside the limits" not in out.stdout + out.stderr
    bench.write_text(text.replace("device_units: K", "units: degC\n    device_units: K"))
    ok = _closedloop("instruments", "check", str(bench))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "all devices connected" in ok.stdout
    (row,) = [line for line in ok.stdout.splitlines() if "temperature" in line]
    assert "│ 25 " in row and "degC" in row, ok.stdout


class TwoReadings(Device):  # type: ignore[misc]
    """A plugin detector with two readings, in milliwatts."""

    low = Cpt(Signal, value=1.0, kind="hinted")
    high = Cpt(Signal, value=2500.0, kind="hinted")


def test_instruments_check_shows_an_output_as_a_trial_reads_it() -> None:
    """`key:` picks the reading and `units`/`device_units` convert it, in the check as in a
    trial (the check used to show the device's raw value)."""
    spec = parse_instrument(
        {
            "name": "power-bench",
            "inputs": {"x": {"device": "ophyd:Signal", "args": {"value": 1.0}}},
            "outputs": {
                "power": {
                    "device": f"{__name__}:TwoReadings",
                    "key": "power_high",
                    "units": "W",
                    "device_units": "mW",
                }
            },
        }
    )
    inst = build_declared_instrument(spec, input_specs([("x", (0.0, 2.0))]), connect=False)
    try:
        (row,) = [r for r in inst.check(timeout=1) if r.role == "output"]
        with Dispatcher(inst) as dispatcher:
            result = dispatcher.run(1, "c", {"x": 1.0})
    finally:
        inst.close()
    assert result.ok, result.error
    assert result.outputs["power"] == pytest.approx(2.5)
    assert (row.name, row.connected, row.problem, row.units) == ("power", True, None, "W")
    assert row.value == pytest.approx(2.5)


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("epics") is not None, reason="pyepics is installed"
)
def test_a_control_layer_not_installed_is_refused_at_its_line_by_validate_and_check(
    tmp_path: Path,
) -> None:
    """`validate` passed a file asking for pyepics where it is not installed; `run` and
    `instruments check` then failed with no file or line, exit code 1 (found in review)."""
    bench = tmp_path / "bench.yaml"
    bench.write_text(
        EXAMPLE.read_text().replace("control_layer: caproto", "control_layer: pyepics")
    )
    line = next(n for n, t in enumerate(bench.read_text().splitlines(), 1) if "control_layer:" in t)
    campaign = tmp_path / "c.yaml"
    campaign.write_text(
        CAMPAIGN.read_text().replace("../instruments/epics_reactor.yaml", str(bench))
    )
    for args in (["validate", str(campaign)], ["instruments", "check", str(bench)]):
        proc = subprocess.run(
            [sys.executable, "-m", "loop.cli", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )
        assert proc.returncode == 2, proc.stderr
        assert f"{bench}:{line}: control_layer 'pyepics' is not installed" in proc.stderr
        assert "pip install pyepics), or write control_layer: caproto" in proc.stderr


def test_a_parameter_named_unlike_its_input_is_refused_at_its_line_with_the_fix(
    tmp_path: Path,
) -> None:
    """`flw` in the campaign, `flow` in the instrument file: the message pointed at the
    `instrument:` line and had no fix line (review U)."""
    from loop.config import CampaignConfigError, load_campaign

    (tmp_path / "instruments").mkdir()
    text = (ROOT / "campaigns" / "instruments" / "epics_reactor.yaml").read_text()
    (tmp_path / "instruments" / "epics_reactor.yaml").write_text(text)
    campaign = (ROOT / "campaigns" / "epics" / "epics_reactor.yaml").read_text()
    campaign = campaign.replace("{name: flow,", "{name: flw,")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "c.yaml").write_text(campaign)
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(tmp_path / "c" / "c.yaml")
    err = info.value
    assert err.line == 1 + campaign[: campaign.index("{name: flw,")].count("\n"), str(err)
    assert "missing ['flw'], not parameters ['flow']" in str(err)
    assert err.fix.startswith(
        "parameter 'flw' and the file's input 'flow' differ: a typo in one of them? the file "
        "must declare"
    )
