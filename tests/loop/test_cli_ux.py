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
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.cli_process import closedloop as run_closedloop

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
        return {"absorb": 1.0}
    if n == 3:
        time.sleep(4)
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
        "'purity'] (it returned ['absorb'])" in out
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

    from instruments._dispatch import describe_exception

    wrapper = FailedStatus("DeviceStatus(device=det, done=True, success=False)")
    wrapper.__cause__ = RuntimeError("detector on fire")
    assert describe_exception(wrapper) == (
        "RuntimeError: detector on fire (via FailedStatus: DeviceStatus(device=det, done=True, "
        "success=False))"
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
