"""What a scientist reads: error texts, progress lines, ``status`` and the report.

Found by a reviewer playing a scientist: a raised function was reported as ``FailedStatus <-
caused by SimulatedFa…``, a wrong output key blamed a "simulator", an infeasible trial's
line read as if "best" were wrong, ``status`` showed setpoints the instrument never reached,
a ``;`` CSV was "one unknown column", a value above the limits was "not a number", bluesky
printed "Aborting: ..." into the trial lines, and the report had no scan of the objective
against the parameters. One real campaign (a subprocess, a real store) serves most checks.
"""

from __future__ import annotations

import csv
import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from loop.cli import app
from loop.fmt import WholeTable, number, parameter
from planners import ChoiceParameter, FloatParameter, IntParameter
from tests.cli_process import closedloop as run_closedloop
from tests.cli_process import run_cli

ROOT = Path(__file__).parents[2]

# Call by call: a raise, a wrong output key, a hang past the timeout, an infeasible result,
# then good measurements. Module state counts the calls (one process runs the campaign).
FLAKY = """
import time
calls = {"n": 0}

def measure(inputs):
    calls["n"] += 1
    n = calls["n"]
    if n == 1:
        raise RuntimeError("pH probe not calibrated")
    if n == 2:
        return {"signal": 1.0}  # not one letter off an output: a typo stops the campaign
    if n == 3:
        time.sleep(1.3)  # past the 1 s timeout; the next trial waits for it to return
    if n == 4:
        return {"absorbance": 0.5, "purity": 0.2}
    return {"absorbance": inputs["conc"] / (1 + inputs["conc"]), "purity": 0.9}
"""

CAMPAIGN = """\
name: flaky-uvvis
parameters:
  - {name: ph, type: float, bounds: [2, 12]}
  - {name: conc, type: float, bounds: [0.01, 10], log: true, unit: mmol/L}
  - {name: solvent, type: choice, values: [water, ethanol]}
objectives:
  - {name: absorbance, goal: maximize}
outcome_constraints: ["purity >= 0.5"]
prior_data: prior.csv
instrument:
  function: "flaky.py:measure"
  outputs: [absorbance, purity]
  timeout: 1
planner: {kind: random}
budget: {max_trials: 3, max_failures: 10, target: 5}
seed: 1
"""

PRIOR = "ph,conc,solvent,absorbance,purity\n7,1,water,0.4,0.9\n5,0.1,ethanol,0.1,0.3\n"


def closedloop(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The command as a user types it, in a wide terminal (rich would wrap table cells)."""
    return run_closedloop(*args, cwd=cwd, wide=True)


@pytest.fixture(scope="module")
def flaky(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """``(folder, store URL, run output)`` of the flaky campaign run to its end."""
    folder = tmp_path_factory.mktemp("flaky")
    (folder / "flaky.py").write_text(FLAKY)
    (folder / "flaky.yaml").write_text(CAMPAIGN)
    (folder / "prior.csv").write_text(PRIOR)
    store = f"sqlite:///{folder / 'runs.db'}"
    run = closedloop("run", "flaky.yaml", "--store", store, cwd=folder)
    assert run.returncode == 0, run.stdout + run.stderr
    return folder, store, run.stdout + run.stderr


def test_a_raised_function_leads_with_its_own_message(flaky: tuple[Path, str, str]) -> None:
    folder, store, out = flaky
    line = next(s for s in out.splitlines() if s.startswith("trial    3"))
    assert "failed: RuntimeError: pH probe not calibrated; raised by function measure " in line
    assert "(flaky.py, line 9) at ph=" in line  # the line of the user's file that raised
    assert "(run with -v for the traceback)" in line  # said once, on the first such line
    assert out.count("run with -v") == 1
    for wrapper in ("FailedStatus", "SimulatedFault", "caused by", "simulator"):
        assert wrapper not in out, wrapper
    exported = closedloop("export", "--store", store, cwd=folder)
    rows = {r["number"]: r for r in csv.DictReader(io.StringIO(exported.stdout))}
    assert rows["3"]["error"].startswith("RuntimeError: pH probe not calibrated; raised by")


def test_wrong_outputs_blame_the_function_not_a_simulator(flaky: tuple[Path, str, str]) -> None:
    folder, store, out = flaky
    assert (
        "trial    4  failed: function measure (flaky.py) did not return ['absorbance', "
        "'purity'] (it returned {'signal': 1.0})" in out
    )
    status = closedloop("status", "--store", store, cwd=folder)
    assert status.returncode == 0, status.stderr
    # counted by kind, the function's own failures by name; the table shows the message
    assert "1 function raised RuntimeError" in status.stdout
    assert "1 wrong outputs" in status.stdout and "1 timeout" in status.stdout
    assert "RuntimeError: pH probe not calibrated …" in status.stdout


def test_no_bluesky_print_among_the_trial_lines(flaky: tuple[Path, str, str]) -> None:
    """bluesky's RunEngine printed "Aborting: running cleanup ..." on every timeout."""
    _, _, out = flaky
    assert "trial    5  failed: timed out after 1 s" in out
    assert "Aborting" not in out


def test_an_infeasible_trial_says_why_on_its_line(flaky: tuple[Path, str, str]) -> None:
    _, _, out = flaky
    line = next(s for s in out.splitlines() if s.startswith("trial    6"))
    assert "absorbance = 0.5  (infeasible: purity 0.2 < 0.5)  best = 0.4" in line


def test_status_shows_where_a_trial_actually_ran(tmp_path: Path) -> None:
    (tmp_path / "flaky.py").write_text(FLAKY)
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    (tmp_path / "prior.csv").write_text(PRIOR)
    store = f"sqlite:///{tmp_path / 'asked.db'}"
    asked = closedloop("suggest", "c.yaml", "--store", store, "--json", cwd=tmp_path)
    assert asked.returncode == 0, asked.stderr
    told = closedloop(
        "tell", "--store", store, "3", "absorbance=0.3", "purity=0.9", "--actual", "ph=4.25",
        cwd=tmp_path,
    )  # fmt: skip
    assert told.returncode == 0, told.stderr
    status = closedloop("status", "--store", store, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    row = status.stdout.split("│ 3 ")[1].splitlines()
    assert "│ 4.25 " in row[0] and "(set " in row[1]  # reached, the setpoint below it
    assert "X commanded" in status.stdout  # the caption says what (set X) means


def test_a_value_above_the_limits_is_said_to_be_outside_them(tmp_path: Path) -> None:
    (tmp_path / "flaky.py").write_text(FLAKY)
    (tmp_path / "c.yaml").write_text(CAMPAIGN.replace("prior_data: prior.csv\n", ""))
    plan = closedloop(
        "plan", "c.yaml", "--dry-run", "--at", "ph=13", "--at", "conc=1", "--at",
        "solvent=water", cwd=tmp_path,
    )  # fmt: skip
    assert plan.returncode == 1
    assert "refused before dispatch: ph: 13 is outside its limits [2, 12]" in plan.stdout
    assert "not a number" not in plan.stdout


@pytest.mark.parametrize(("delimiter", "name"), [(";", "a semicolon"), ("\t", "a tab")])
def test_a_csv_with_another_delimiter_says_so(tmp_path: Path, delimiter: str, name: str) -> None:
    (tmp_path / "flaky.py").write_text(FLAKY)
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    (tmp_path / "prior.csv").write_text(PRIOR.replace(",", delimiter))
    proc = closedloop("validate", "c.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"prior.csv:1: is separated by {name}, not by commas" in proc.stderr
    assert "save it as comma-separated CSV" in proc.stderr and "Traceback" not in proc.stderr


def test_a_column_name_with_a_semicolon_is_an_unknown_column(tmp_path: Path) -> None:
    """``notes;comments`` among four columns was called a file "separated by a semicolon",
    whose fix (save as comma CSV) was wrong (found in review): it is a column too many."""
    (tmp_path / "flaky.py").write_text(FLAKY)
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    header, *rows = PRIOR.splitlines()
    (tmp_path / "prior.csv").write_text(
        "\n".join([header + ",notes;comments", *(r + ",x" for r in rows)]) + "\n"
    )
    proc = closedloop("validate", "c.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert "prior.csv:1: column 'notes;comments': is neither a parameter nor an output" in (
        proc.stderr
    ), proc.stderr
    assert "separated by" not in proc.stderr


def test_the_report_scans_each_objective_against_each_parameter(
    flaky: tuple[Path, str, str],
) -> None:
    folder, store, _ = flaky
    png = folder / "report.png"
    report = closedloop("report", "--store", store, "-o", str(png), cwd=folder)
    assert report.returncode == 0, report.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from loop.report import report_figure
    from loop.store import Store

    db = Store(store, create=False)
    try:
        fig = report_figure(db, db.campaign(None))
    finally:
        db.close()
    axes = fig.get_axes()
    # best so far, absorbance and purity per trial, then absorbance against ph, conc, solvent
    assert len(axes) == 6
    best, scans = axes[0], axes[3:]
    assert [ax.get_xlabel() for ax in scans] == ["ph", "conc [mmol/L]", "solvent"]
    # trials are whole numbers: no tick at 2.5, as 12 trials had (found in review)
    for ax in axes[:3]:
        for last in range(2, 40):
            ax.set_xlim(0.5, last + 0.5)
            ticks = [t for t in ax.get_xticks() if 0.5 <= t <= last + 0.5]
            assert ticks and all(float(t).is_integer() for t in ticks), (last, ticks)
    assert scans[0].get_title(loc="left") == "absorbance against each parameter"
    assert scans[1].get_xscale() == "log"  # log: true
    assert [t.get_text() for t in scans[2].get_xticklabels()] == ["water", "ethanol"]
    legend = best.get_legend()
    assert legend is not None and "target 5" in [t.get_text() for t in legend.get_texts()]
    # prior, feasible, infeasible and failed trials marked as in the per-trial panels
    labels = {c.get_label() for c in scans[0].collections}
    assert {"prior", "feasible", "infeasible", "failed (no value)"} <= labels


def test_many_parameters_keep_those_most_related_to_the_objective() -> None:
    from loop.config import parse_campaign
    from loop.report import MAX_SCAN_PARAMETERS, scan_parameters

    names = [f"x{i}" for i in range(9)]
    text = (
        "name: wide\nparameters:\n"
        + "".join(f"  - {{name: {n}, type: float, bounds: [0, 1]}}\n" for n in names)
        + "objectives: [{name: y, goal: maximize}]\n"
        + "instrument: {manual: true, outputs: [y]}\nbudget: {max_trials: 20}\n"
    )
    campaign = parse_campaign(text, path=Path("wide.yaml"), base_dir=Path(".")).campaign
    records: list[dict[str, Any]] = [
        {
            "status": "completed",
            "parameters": {n: ((i * (k + 3)) % 7) / 7 for k, n in enumerate(names)},
            "readbacks": {},
            "outputs": {"y": float(i)},
        }
        for i in range(12)
    ]
    for i, r in enumerate(records):
        r["parameters"]["x7"] = i / 12  # y rises with x7 alone
    chosen, note = scan_parameters(records, campaign)
    assert len(chosen) == MAX_SCAN_PARAMETERS and "x7" in [p.name for p in chosen]
    assert note == f"the {MAX_SCAN_PARAMETERS} of 9 parameters most related to y"


RAISED = "RuntimeError: no root; raised by function measure (m.py, line 3) at x=1"
LIMIT = "limit check failed, no device moved: SimLimitError: x: 3 is outside its limits [0, 1]"
VIA = "RuntimeError: detector on fire (via FailedStatus: DeviceStatus(device=d))"
OLD = "FailedStatus <- caused by SimulatedFault <- caused by RuntimeError: x"  # stored before


@pytest.mark.parametrize(
    ("error", "kind", "point"),
    [
        (RAISED, "function raised RuntimeError", True),
        ("KeyError; raised by simulator branin at x1=1", "simulator raised KeyError", True),
        ("function measure (m.py) did not return ['y'] (it returned [])", "wrong outputs", True),
        ("function f (m.py) returned list, expected a dict of outputs", "wrong outputs", True),
        (LIMIT, "setpoint refused", True),
        (VIA, "RuntimeError", False),
        ("timed out after 2 s; the run was aborted", "timeout", False),
        (OLD, "RuntimeError", False),
    ],
)
def test_failure_kinds(error: str, kind: str, point: bool) -> None:
    from loop.failures import failure_kind, is_point_failure

    assert failure_kind(error) == kind
    assert is_point_failure(error) is point


def test_a_device_error_leads_and_bluesky_s_wrapper_follows() -> None:
    """A plain ``DeviceStatus`` does not quote its exception: ``FailedStatus`` used to lead
    with the Status's repr, the device's own message last."""
    from bluesky.utils import FailedStatus

    from instruments._errors import describe_exception

    wrapper = FailedStatus("DeviceStatus(device=det, done=True, success=False)")
    wrapper.__cause__ = RuntimeError("detector on fire")
    assert describe_exception(wrapper) == (
        "RuntimeError: detector on fire (via FailedStatus: DeviceStatus(device=det))"
    )
    # no object addresses, which differ on every line (found in review)
    wrapper = FailedStatus(
        "Status(obj=<instruments._epics.OutputDetector object at 0x7ff9a1b2c3d0>, done=True, "
        "success=False)"
    )
    wrapper.__cause__ = TimeoutError("not done within 1 s")
    assert describe_exception(wrapper) == (
        "TimeoutError: not done within 1 s (via FailedStatus: Status(obj=OutputDetector))"
    )
    distinct = ConnectionError("lost the connection to PV x")
    distinct.__cause__ = TimeoutError("timed out")
    assert describe_exception(distinct) == (
        "ConnectionError: lost the connection to PV x <- caused by TimeoutError: timed out"
    )


def test_plan_says_run_would_stop_when_the_prior_data_meet_the_target(tmp_path: Path) -> None:
    """Was: a "next trial" that `run` never measures (the prior data met the target)."""
    (tmp_path / "flaky.py").write_text(FLAKY)
    (tmp_path / "c.yaml").write_text(CAMPAIGN.replace("target: 5", "target: 0.3"))
    (tmp_path / "prior.csv").write_text(PRIOR)
    plan = closedloop("plan", "c.yaml", "--dry-run", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert (
        "note: `closedloop run` would stop at once and measure no trial (target reached: "
        "prior-data trial #1 has absorbance = 0.4 (target 0.3))"
    ) in " ".join(plan.stdout.split())
    given = closedloop(
        "plan", "c.yaml", "--dry-run", "--at", "ph=7", "--at", "conc=1", "--at", "solvent=water",
        cwd=tmp_path,
    )  # fmt: skip
    assert given.returncode == 0, given.stderr
    assert "note: `closedloop run` would stop at once and measure no trial" in given.stdout
    assert "open_run" in given.stdout  # a point given is still previewed
    # stored: a target holds whatever the budget, so no budget to extend is offered (it
    # offered `resume -c ID --max-trials N`, which resume then refused; found in review)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert closedloop("run", "c.yaml", "--store", url, "-q", cwd=tmp_path).returncode == 0
    stored = closedloop("plan", "--dry-run", "--store", url, cwd=tmp_path)
    assert stored.returncode == 0, stored.stderr
    text = " ".join(stored.stdout.split())
    assert "note: `closedloop resume` would stop at once and measure no trial" in text
    assert "extends" not in text and "--max-trials" not in text


# ---------------------------------------------------------------------------- numbers shown
# Found in review: every value was printed to 4 significant digits, so in a narrow scan
# (7110-7115 eV) trials 8, 9 and 16 all read "7112", `suggest` asked for values it had not
# stored, and at 80 columns (or piped, with no terminal) rich cut 6.426e-17 to "6.42…".
NARROW = """\
name: xanes-edge
parameters:
  - {name: energy, type: float, bounds: [7110, 7115], unit: eV}
  - {name: z, type: float, bounds: [10.0, 10.2], unit: mm}
objectives:
  - {name: signal, goal: maximize}
instrument: {function: "edge.py:measure", outputs: [signal]}
planner: {kind: sobol}
budget: {max_trials: 12}
seed: 1
"""
EDGE = """
def measure(inputs):
    e, z = inputs["energy"], inputs["z"]
    return {"signal": -((e - 7112.37) ** 2) - 100 * (z - 10.0866) ** 2}
"""
RANGES = {"energy": 5.0, "z": 0.2}


def _exported(store: str) -> list[dict[str, str]]:
    out = CliRunner().invoke(app, ["export", "--store", store])
    assert out.exit_code == 0, out.output
    return list(csv.DictReader(io.StringIO(out.stdout)))


def _cells(output: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{output}")


def test_a_narrow_range_is_shown_to_a_share_of_the_range_not_4_digits(tmp_path: Path) -> None:
    (tmp_path / "edge.py").write_text(EDGE)
    (tmp_path / "c.yaml").write_text(NARROW)
    store = f"sqlite:///{tmp_path / 's.db'}"
    run = closedloop("run", "c.yaml", "--store", store, "-q", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    status = CliRunner().invoke(app, ["status", "--store", store], env={"COLUMNS": "200"})
    assert status.exit_code == 0, status.output
    rows = {r["number"]: r for r in _exported(store)}
    best = re.search(r"best trial #(\d+): .* at energy=(\S+), z=(\S+)$", run.stdout, re.M)
    assert best is not None, run.stdout
    pattern = r"best: trial #(\d+) .* at energy \[eV\]=(\S+), z \[mm\]=(\S+)$"
    again = re.search(pattern, status.stdout, re.M)
    assert again is not None and again.groups() == best.groups(), status.stdout
    stored = rows[best.group(1)]
    for name, shown in zip(RANGES, best.groups()[1:], strict=True):
        assert abs(float(shown) - float(stored[name])) <= 1e-4 * RANGES[name], (name, shown)
    assert best.group(2) != "7112"  # as .4g printed it
    # the table: each trial's own values, distinct where the stored ones are
    shown = {n: _cells(status.stdout, n)[3:5] for n in rows if int(n) > len(rows) - 10}
    for n, (energy, z) in shown.items():
        assert abs(float(energy) - float(rows[n]["energy"])) <= 1e-4 * RANGES["energy"]
        assert abs(float(z) - float(rows[n]["z"])) <= 1e-4 * RANGES["z"]
    assert len({e for e, _ in shown.values()}) == len(shown)


def test_suggest_shows_the_values_it_stores(tmp_path: Path) -> None:
    """An operator sets what `suggest` shows and tells the result without --actual: the
    model learns the stored point, so the two must agree (within 1e-6 of the range)."""
    path = tmp_path / "m.yaml"
    path.write_text(NARROW.replace('{function: "edge.py:measure", outputs: [signal]}', "manual"))
    store = f"sqlite:///{tmp_path / 'm.db'}"
    asked = CliRunner().invoke(app, ["suggest", str(path), "--store", store, "-n", "3"])
    assert asked.exit_code == 0, asked.output
    for row in _exported(store):
        energy, z = _cells(asked.stdout, row["trial_id"])[3:5]
        assert abs(float(energy) - float(row["energy"])) <= 1e-6 * RANGES["energy"], energy
        assert abs(float(z) - float(row["z"])) <= 1e-6 * RANGES["z"], z


DETECTOR = """\
name: electrometer
parameters:
  - {name: stage_position, type: float, bounds: [0, 10], unit: mm}
  - {name: amplifier_gain, type: float, bounds: [1, 1000], log: true}
  - {name: bias_voltage, type: float, bounds: [-50, 50], unit: V}
  - {name: integration_time, type: float, bounds: [0.1, 10], unit: s}
objectives:
  - {name: photocurrent, goal: maximize}
outcome_constraints: ["dark_counts <= 130000"]
instrument: {function: "det.py:measure", outputs: [photocurrent, dark_counts]}
planner: {kind: sobol}
budget: {max_trials: 6}
seed: 2
"""
DET = """
import math

def measure(inputs):
    x, g = inputs["stage_position"], inputs["amplifier_gain"]
    current = 1.234e-9 * math.exp(-((x - 3.0) ** 2)) * g * (1 + 0.01 * inputs["bias_voltage"])
    return {"photocurrent": current, "dark_counts": 123456.0 + 1000 * x}
"""


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A campaign with tiny and large-offset outputs and ten table columns."""
    folder = tmp_path_factory.mktemp("detector")
    (folder / "det.py").write_text(DET)
    (folder / "c.yaml").write_text(DETECTOR)
    store = f"sqlite:///{folder / 's.db'}"
    run = closedloop("run", "c.yaml", "--store", store, "-q", cwd=folder)
    assert run.returncode == 0, run.stderr
    return folder, store


def test_status_at_80_columns_shows_every_number_whole(detector: tuple[Path, str]) -> None:
    """In a process of its own: in-process, ``COLUMNS`` is the worker's whole environment,
    and once in CI (session 38) the table came out unfolded, 146 wide, as if unset."""
    folder, store = detector
    env = {**os.environ, "COLUMNS": "80"}
    status = run_cli(["status", "--store", store], cwd=folder, env=env, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "…" not in status.stdout
    table = [line for line in status.stdout.splitlines() if line[:1] in "┏┃┡│└"]
    assert table and max(len(line) for line in table) <= 80  # it fits: headers fold, no padding
    assert "error" not in status.stdout  # no trial has one: no empty column
    for row in _exported(store):
        cells = _cells(status.stdout, row["number"])
        for name in ("photocurrent", "dark_counts"):
            assert number(float(row[name])) in cells, (name, cells)  # 131232, not 1.312e+05


def test_with_no_terminal_a_table_keeps_one_line_per_row(detector: tuple[Path, str]) -> None:
    """A log or a script's capture (no terminal on any stream, no COLUMNS): rows unfolded."""
    folder, store = detector
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = run_cli(["status", "--store", store], cwd=folder, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    row = _cells(done.stdout, "1")
    assert row[1:3] == ["sobol", "completed"] and len(row) == 10
    assert "stage_position [mm]" in done.stdout and "integration_time [s]" in done.stdout


def test_a_parameter_value_is_shown_to_a_share_of_its_range() -> None:
    energy = FloatParameter(name="e", bounds=(7110, 7115))
    assert parameter(7112.421321338, energy) == "7112.4213"  # 1e-4 of 5 eV: 4 decimals
    assert parameter(7112.421321338, energy, setpoint=True) == "7112.421321"
    assert parameter(7112.0, energy) == "7112"  # no trailing zeros
    assert parameter(-0.00001, FloatParameter(name="v", bounds=(-1, 1))) == "0"  # not "-0"
    wide = FloatParameter(name="t", bounds=(0, 100000))
    assert parameter(51234.567, wide) == "51235"
    gain = FloatParameter(name="g", bounds=(1, 1000), log=True)
    assert parameter(21.33912, gain) == "21.339"  # 5 significant digits for 3 decades
    assert parameter(21.33912345, gain, setpoint=True) == "21.33912"
    tiny = FloatParameter(name="r", bounds=(0.0, 1e-15))  # decimals would read 0
    assert (parameter(3.21e-16, tiny), parameter(5.4e-16, tiny, setpoint=True)) == (
        "3.21e-16",
        "5.4e-16",
    )
    assert parameter(3, IntParameter(name="n", bounds=(1, 9))) == "3"
    assert parameter(3.0, IntParameter(name="n", bounds=(1, 9))) == "3"
    assert parameter(2.97, IntParameter(name="n", bounds=(1, 9))) == "2.97"  # a readback
    levels = ChoiceParameter(name="c", values=(0.125, "[/b]"))
    assert (parameter(0.125, levels), parameter("[/b]", levels)) == ("0.125", "[/b]")
    assert parameter(80.000001) == "80"  # no parameter to go by: six digits
    assert parameter(None, energy) == ""
    assert number(131234.0) == "131234" and number(6.42591234e-17) == "6.42591e-17"


def test_a_table_narrower_than_its_numbers_is_printed_wider_not_cut() -> None:
    out = io.StringIO()
    rows = [["1", "a long error message that may fold", "6.42591e-17", "-4.29761e-05"]]
    table = WholeTable("t", ["#", "error", "photocurrent [A]", "drift"], rows, {0, 2, 3})
    Console(file=out, width=30, soft_wrap=True).print(table)  # the CLI's consoles soft-wrap
    text = out.getvalue()
    assert "6.42591e-17" in text and "-4.29761e-05" in text and "…" not in text


def test_consoles_print_pv_names_as_written_not_as_emoji() -> None:
    """rich read `:cl:` of `PV:cl:sim:temp:RBV` as an emoji code: `instruments check` showed a
    technician `PV🆑sim:temp:RBV`, and `PV:X:thermometer:T` as `PV❌thermometer:T`."""
    from loop import cli

    text = "PV:cl:sim:temp:RBV PV:X:thermometer:T PV:B:magnet:I"
    assert cli.console.render_str(text).plain == text
    assert cli.err_console.render_str(text).plain == text
    assert Console().render_str(text).plain != text  # what rich's default made of it


# Raises KeyboardInterrupt when ``loop.cli`` is imported: a Ctrl-C while the CLI starts.
INTERRUPTED_IMPORT = """
import sys

class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "loop.cli":
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, CtrlC())
sys.argv = ["closedloop", "status"]
from loop.__main__ import main
main()
"""


def test_ctrl_c_while_the_cli_imports_exits_130_with_one_line(tmp_path: Path) -> None:
    """The console entry point imports the CLI inside its ``try``; a Ctrl-C during that
    ~0.7 s printed a traceback from inside some library's import."""
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_IMPORT],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 130
    assert "Traceback" not in done.stderr
    assert "interrupted (Ctrl-C) while closedloop started: nothing was done" in done.stderr


def test_the_console_command_is_the_guarded_entry_point() -> None:
    """The installed ``closedloop`` script starts at ``loop.__main__:main`` (pyproject)."""
    from importlib.metadata import entry_points

    (command,) = entry_points(group="console_scripts", name="closedloop")
    assert command.value == "loop.__main__:main"


@pytest.mark.parametrize("columns", ["80", "120", "40"])
def test_command_help_is_prose_wrapped_to_the_terminal(columns: str) -> None:
    """typer kept each docstring line's break after the first paragraph, so at 80 columns
    every source line ended in a line of one or two words, and read ``[name, doc]`` as rich
    markup and dropped it (found in review). Every line of a paragraph but its last now
    fills the width, and the text is all there."""
    width = max(int(columns), 50)  # click's plain help (below 60 columns) is never narrower
    for command in (["plan"], ["export"], ["release"], ["instruments", "check"]):
        proc = subprocess.run(
            [sys.executable, "-m", "loop.cli", *command, "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "COLUMNS": columns},
        )
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        usage = next(i for i, line in enumerate(lines) if "Usage:" in line)
        panels = ("╭", "Options:", "Arguments:")  # rich's panels, click's plain sections
        end = next((i for i, line in enumerate(lines) if line.lstrip().startswith(panels)))
        prose = [line.strip() for line in lines[usage + 1 : end]]
        for line, after in zip(prose, [*prose[1:], ""], strict=True):
            if line and after:  # not a paragraph's last line: the next word did not fit
                assert len(line) + 1 + len(after.split()[0]) > width - 6, (command, line)
        if command == ["export"]:
            assert "one `[name, doc]` JSON array a line" in " ".join(prose)
        assert "``" not in proc.stdout


def test_help_shows_no_type_after_a_flag() -> None:
    """typer showed `--quiet -q <bool>`, which reads as an option taking a value (`-q true`
    was then refused), and `--prior <list[Path]>` (found in review)."""
    proc = subprocess.run(
        [sys.executable, "-m", "loop.cli", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "120"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "<bool>" not in proc.stdout and "list[" not in proc.stdout, proc.stdout
    said = " ".join(proc.stdout.replace("│", " ").split())
    assert "--prior <path>" in said and "--quiet -q Only the summary." in said, said


def test_help_in_a_narrow_terminal_keeps_option_names_whole() -> None:
    """Rich's option tables cut names and defaults below ~60 columns (``--max-t…``,
    ``sqlite:/…``; found in review): there help is click's plain text, which wraps them."""
    proc = subprocess.run(
        [sys.executable, "-m", "loop.cli", "resume", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "40"},
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("--max-trials", "--max-failures", "--max-duration", "--campaign"):
        assert name in proc.stdout, proc.stdout
    assert "…" not in proc.stdout


@pytest.mark.parametrize(
    ("instrument", "said"),
    [
        ("{simulator: branin}", "instrument branin"),
        ("{simulator: branin, count: 3}", "instrument branin x 3 slots"),
        (
            "{simulator: branin, count: 2, executor: {kind: local, workers: 4}}",
            "instrument branin x 2 slots on a local Dask cluster (4 workers)",
        ),
        (
            "{simulator: branin, executor: {kind: dask, address: 'tcp://hpc01:8786'}}",
            "instrument branin on the Dask scheduler at tcp://hpc01:8786",
        ),
    ],
)
def test_the_instrument_line_says_how_many_slots_and_where_it_computes(
    instrument: str, said: str, tmp_path: Path
) -> None:
    """A typo in `count` or `executor` shows before the first trial (found in review)."""
    (tmp_path / "c.yaml").write_text(
        "name: c\nparameters:\n  - {name: x1, type: float, bounds: [-5, 10]}\n"
        "  - {name: x2, type: float, bounds: [0, 15]}\nobjectives: [{name: y, goal: minimize}]\n"
        f"instrument: {instrument}\nbudget: {{max_trials: 3}}\n"
    )
    proc = run_closedloop("validate", "c.yaml", cwd=tmp_path, wide=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith(said), proc.stdout


def test_a_ctrl_c_during_the_interpreters_teardown_exits_130_quietly(tmp_path: Path) -> None:
    """The command's work is done: a Ctrl-C while libraries' atexit handlers run (ophyd's,
    dask's) printed "Exception ignored in atexit callback ... KeyboardInterrupt" and a
    traceback, and the process exited 0 (found in review). The atexit handler below,
    registered first, runs last, as a library's would run before it."""
    script = (
        "import atexit, os, signal, sys, time\n"
        "from loop.cli import main\n"
        "atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(5)))\n"
        "sys.argv = ['closedloop', '--version']\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.returncode == 130, proc
    assert proc.stdout.startswith("closedloop ")
    assert "Traceback" not in proc.stderr and "KeyboardInterrupt" not in proc.stderr, proc.stderr
