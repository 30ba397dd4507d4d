"""Unit text from a campaign file, an instrument file or a device is read by pint, which
evaluates it as arithmetic, exactly: ``10**10**10*K`` hung ``validate`` and ``run`` at full
CPU, deaf to Ctrl-C (found in review). Such text is refused before pint sees it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from instruments._instrument_file import same_unit, unit_of, unit_text_problem


@pytest.mark.parametrize(
    "text",
    [
        "mm",
        "um",
        "µm",
        "degC",
        "K",
        "mL/min",
        "m**2",
        "m ** 2",
        "s^-1",
        "kg*m/s**2",
        "1/s",
        "mbar",
        "Ω",
        "%",
        "m^0.5",
        "cm⁻¹",
        "s⁻¹",
        "mol·L⁻¹",
        "m·s⁻²",
        "(m/s)**2",
        "kg/(m*s**2)",
        "°C",
        "ppm",
        "counts/s",
    ],
)
def test_units_a_lab_writes_are_read(text: str) -> None:
    assert unit_text_problem(text) is None
    unit_of(text)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("10**10**10*K", "a unit's power is at most 12, and not raised again"),
        ("K^2^2", "a unit's power is at most 12, and not raised again"),
        ("m**13", "a unit's power is at most 12"),
        ("10**(10**10)", "a unit's power is a plain number"),
        ("__import__('os')", "a unit is letters, digits, spaces and * / ^ ( ) . - + % only"),
        ("K⁹⁹⁹⁹⁹⁹⁹⁹⁹", "a unit's power is at most 12"),  # superscripts are powers too
        ("10⁹⁹⁹⁹⁹⁹⁹⁹⁹*mL/min", "a unit's power is at most 12"),
        ("(((10)**12)**12)**12*K", "a unit's power is of units, not of a bracket"),
        ("m" * 65, "a unit of 65 characters (at most 64)"),
    ],
)
def test_unit_text_pint_would_evaluate_is_refused_first(text: str, said: str) -> None:
    problem = unit_text_problem(text)
    assert problem is not None and problem.startswith(said), problem
    with pytest.raises(ValueError, match="unit"):
        unit_of(text)


def test_validate_refuses_a_tower_of_powers_at_its_line(tmp_path: Path) -> None:
    """In a subprocess with a deadline: before, this never returned."""
    (tmp_path / "c.yaml").write_text(
        "name: u\n"
        "parameters:\n"
        "  - {name: x1, type: float, bounds: [0, 1], unit: K}\n"
        "objectives: [{name: y, goal: minimize}]\n"
        "instrument:\n"
        "  devices:\n"
        "    inputs:\n"
        '      x1: {device: "ophyd.sim:SoftPositioner", device_units: "10**10**10*K"}\n'
        "    outputs:\n"
        '      y: {device: "ophyd:Signal", args: {value: 1.0}}\n'
        "budget: {max_trials: 2}\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "loop.cli", "validate", "c.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    said = " ".join(proc.stderr.split())
    assert (
        "c.yaml:8: instrument.devices: inputs.x1.device_units: unknown unit '10**10**10*K' "
        "(a unit's power is at most 12, and not raised again)"
    ) in said, said


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("degC", "celsius", True),
        ("M", "mol/L", True),  # pint's units differ, the numbers do not
        ("Hz", "1/s", True),
        ("mL", "cm**3", True),
        ("degC", "K", False),  # an offset
        ("s", "min", False),  # a factor
        ("mL/min", "uL/s", False),
        ("wt%", "wt%", True),  # a label pint cannot read is its own unit
        ("wt%", "mol%", False),
    ],
)
def test_same_unit_is_the_same_number(a: str, b: str, same: bool) -> None:
    """A value in one unit is the same number in the other (a campaign's `unit: mol/L` on
    a dataset in M was refused as another unit)."""
    assert same_unit(a, b) is same and same_unit(b, a) is same
