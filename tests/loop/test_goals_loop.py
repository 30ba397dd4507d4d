"""Goals in the loop's reports: outcome constraints (feasibility) and several objectives
(Pareto front, hypervolume) in ``status``, ``export``, ``report`` and the run summary; and
every example campaign validates.

Campaigns run for real (RunEngine, SQLite) with the Sobol planner so each takes a second.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from loop import Runner, Store, load_campaign, parse_campaign
from loop.cli import app
from loop.fmt import number
from loop.report import (
    annotate,
    final_hypervolume,
    hypervolume_trace,
    report_figure,
    stored_campaign,
)
from loop.store import export_records
from planners import hypervolume, pareto_mask

ROOT = Path(__file__).parents[2]

FUNCTION = """
def measure(inputs):
    x, y = inputs["x"], inputs["y"]
    return {"f1": x, "f2": 1.0 - x * y, "impurity": y / 10}
"""

MOO = """
name: goals
parameters:
  - {name: x, type: float, bounds: [0, 1], unit: degC}
  - {name: y, type: float, bounds: [0, 1], unit: min}
objectives:
  - {name: f1, goal: maximize, reference_point: 0}
  - {name: f2, goal: maximize, reference_point: 0}
outcome_constraints: ["impurity <= 0.08"]
instrument: {function: "fn.py:measure", outputs: [f1, f2, impurity]}
planner: {kind: sobol}
budget: {max_trials: 12}
seed: 1
"""


def _run(tmp_path: Path, text: str) -> tuple[str, int]:
    (tmp_path / "fn.py").write_text(FUNCTION)
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    summary = Runner(parse_campaign(text, path=path, base_dir=tmp_path), Store(url)).run()
    return url, summary.campaign_id


def _expected(url: str, cid: int) -> tuple[list[dict], np.ndarray, np.ndarray]:
    store = Store(url, create=False)
    records = export_records(store, cid)
    Y = np.array([[r["outputs"]["f1"], r["outputs"]["f2"]] for r in records])
    feasible = np.array([r["outputs"]["impurity"] <= 0.08 for r in records])
    return records, Y, feasible


def test_export_marks_feasible_and_pareto_trials(tmp_path: Path) -> None:
    url, cid = _run(tmp_path, MOO)
    records, Y, feasible = _expected(url, cid)
    campaign = stored_campaign(Store(url, create=False).campaign(cid))
    front = pareto_mask(Y, campaign.objectives, feasible)
    assert 0 < feasible.sum() < len(records), "the test needs feasible and infeasible trials"

    out = CliRunner().invoke(app, ["export", "--store", url, "-f", "csv"])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.output)))
    assert [r["feasible"] == "true" for r in rows] == feasible.tolist()
    assert [r["pareto"] == "true" for r in rows] == front.tolist()
    # an infeasible trial is never on the front
    assert not any(r["pareto"] == "true" and r["feasible"] == "false" for r in rows)

    as_json = json.loads(CliRunner().invoke(app, ["export", "--store", url, "-f", "json"]).output)
    assert [r["pareto"] for r in as_json] == front.tolist()


def test_status_shows_units_feasibility_and_the_front(tmp_path: Path) -> None:
    url, cid = _run(tmp_path, MOO)
    records, Y, feasible = _expected(url, cid)
    campaign = stored_campaign(Store(url, create=False).campaign(cid))
    hv = hypervolume(Y, campaign.objectives, [0, 0], feasible)
    out = CliRunner().invoke(app, ["status", "--store", url], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    n_feasible = int(feasible.sum())
    assert f"feasible: {n_feasible} of 12 completed trials" in out.output
    assert "meet impurity <= 0.08" in out.output
    front = int(pareto_mask(Y, campaign.objectives, feasible).sum())
    assert f"Pareto front: {front} trials; hypervolume {hv:.6g}" in out.output
    assert "x [degC]" in out.output and "y [min]" in out.output


def test_status_export_and_report_read_a_store_without_the_instrument_module(
    tmp_path: Path,
) -> None:
    """Reading a store does not import the campaign's instrument: a store copied to another
    machine, or a campaign whose function file was since removed, still reports."""
    url, _ = _run(tmp_path, MOO)
    (tmp_path / "fn.py").unlink()
    for args in (
        ["status", "--store", url],
        ["report", "--store", url, "-o", str(tmp_path / "r.png")],
    ):
        out = CliRunner().invoke(app, args)
        assert out.exit_code == 0, (args, out.output)
    out = CliRunner().invoke(app, ["export", "--store", url, "-f", "json"])
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.output)) == 12


def test_run_summary_reports_feasibility_and_front(tmp_path: Path) -> None:
    (tmp_path / "fn.py").write_text(FUNCTION)
    path = tmp_path / "campaign.yaml"
    path.write_text(MOO)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    out = CliRunner().invoke(app, ["run", str(path), "--store", url, "-q"])
    assert out.exit_code == 0, out.output
    assert "feasible: " in out.output and "meet impurity <= 0.08" in out.output
    # as `status` shows it (found in review: the run's summary gave the hypervolume without
    # its reference point, and its front without the constrained output or feasibility)
    status = CliRunner().invoke(app, ["status", "--store", url], env={"COLUMNS": "200"})
    front = status.output[status.output.index("Pareto front: ") :]
    front = front[: front.index("\n\n") if "\n\n" in front else None]
    assert "above the reference point f1 0, f2 0" in front
    assert "impurity" in front and "feasible" in front
    out = CliRunner().invoke(
        app,
        ["resume", "--store", url, "-c", "1", "--max-trials", "13", "-q"],
        env={"COLUMNS": "200"},
    )
    assert out.exit_code == 0, out.output
    status = CliRunner().invoke(app, ["status", "--store", url], env={"COLUMNS": "200"})
    line = status.output[status.output.index("Pareto front: ") :].splitlines()[0]
    assert line in out.output, (line, out.output)
    summary = out.output[out.output.index(line) :]
    assert "impurity" in summary and "feasible" in summary


def test_a_feasible_trial_beyond_a_given_reference_point_says_why_it_is_off_the_front(
    tmp_path: Path,
) -> None:
    """The live line said "Pareto front none feasible yet" beside a feasible trial that a
    given reference point left off the front (found in review); now it says which objective
    is worse than its reference point."""
    (tmp_path / "fn.py").write_text(FUNCTION)
    path = tmp_path / "campaign.yaml"
    path.write_text(
        MOO.replace(
            "{name: f1, goal: maximize, reference_point: 0}",
            "{name: f1, goal: maximize, reference_point: 0.5}",
        )
    )
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    out = CliRunner().invoke(app, ["run", str(path), "--store", url], env={"COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    records, Y, feasible = _expected(url, 1)
    lines = [line for line in out.output.splitlines() if line.startswith("trial ")]
    beyond = [n for n, (f1, _) in enumerate(Y) if feasible[n] and f1 < 0.5]
    assert beyond, "the test needs a feasible trial worse than the reference point"
    for n, line in enumerate(lines):
        said = f"(f1 {number(Y[n][0])} worse than its reference point 0.5: not on the front)"
        assert (said in line) == (n in beyond), line


def test_a_trial_that_did_not_complete_has_feasible_null_in_json(tmp_path: Path) -> None:
    """Every JSON record has the same keys: a failed trial's ``feasible`` is null, not
    missing (found in review: ``record['feasible']`` raised KeyError); the CSV cell is
    empty."""
    (tmp_path / "fn.py").write_text(
        FUNCTION.replace(
            '    x, y = inputs["x"], inputs["y"]',
            '    x, y = inputs["x"], inputs["y"]\n'
            "    if x > 0.6:\n"
            '        raise RuntimeError("clogged")',
        )
    )
    path = tmp_path / "campaign.yaml"
    path.write_text(
        MOO.replace("budget: {max_trials: 12}", "budget: {max_trials: 6, max_failures: 20}")
    )
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    assert CliRunner().invoke(app, ["run", str(path), "--store", url, "-q"]).exit_code == 0
    as_json = json.loads(CliRunner().invoke(app, ["export", "--store", url, "-f", "json"]).output)
    failed = [r for r in as_json if r["status"] == "failed"]
    assert failed and all(r["feasible"] is None for r in failed)
    assert all(isinstance(r["feasible"], bool) for r in as_json if r["status"] == "completed")
    out = CliRunner().invoke(app, ["export", "--store", url, "-f", "csv"]).output
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {r["feasible"] for r in rows if r["status"] == "failed"} == {""}


def test_live_lines_show_every_objective_and_the_front_not_the_first_ones_best(
    tmp_path: Path,
) -> None:
    """With several objectives a trial's line said `f1 = ...  best = ...`, the first
    objective's best alone (an infeasible or dominated trial could look like progress): it
    now gives every objective and the Pareto front's size as that trial left it."""
    (tmp_path / "fn.py").write_text(FUNCTION)
    path = tmp_path / "campaign.yaml"
    path.write_text(MOO)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    out = CliRunner().invoke(app, ["run", str(path), "--store", url], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    records, Y, feasible = _expected(url, 1)
    campaign = stored_campaign(Store(url, create=False).campaign(1))
    lines = [line for line in out.output.splitlines() if line.startswith("trial ")]
    assert len(lines) == len(records) == 12
    for n, (line, record) in enumerate(zip(lines, records, strict=True), start=1):
        front = pareto_mask(Y[:n], campaign.objectives, feasible[:n])
        # the reference point is given: a front of none may hold feasible trials
        size = int(front.sum()) or "none yet (no feasible trial is as good as the reference point)"
        on = " (this one on it)" if front[-1] else ""
        f1, f2 = (number(record["outputs"][k]) for k in ("f1", "f2"))
        assert f"f1 = {f1}, f2 = {f2}" in line and f"Pareto front {size}{on}" in line, line
        assert "best" not in line


def test_report_plots_front_and_hypervolume(tmp_path: Path) -> None:
    url, _ = _run(tmp_path, MOO)
    png = tmp_path / "report.png"
    out = CliRunner().invoke(app, ["report", "--store", url, "-o", str(png)])
    assert out.exit_code == 0, out.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    height = matplotlib.image.imread(png).shape[0]
    # hypervolume + one front (2 objectives) + 3 outputs: five panels
    assert height > 5 * 2.5 * 110


def test_single_objective_best_is_the_best_feasible(tmp_path: Path) -> None:
    text = MOO.replace(
        """objectives:
  - {name: f1, goal: maximize, reference_point: 0}
  - {name: f2, goal: maximize, reference_point: 0}""",
        "objectives: [{name: f1, goal: maximize}]",
    ).replace("impurity <= 0.08", "f1 <= 0.8")  # a bound on the objective itself
    url, cid = _run(tmp_path, text)
    records, _, _ = _expected(url, cid)
    best = max((r for r in records if r["outputs"]["f1"] <= 0.8), key=lambda r: r["outputs"]["f1"])
    assert max(r["outputs"]["f1"] for r in records) > 0.8, "needs a better infeasible trial"
    out = CliRunner().invoke(app, ["status", "--store", url])
    assert f"best feasible: trial #{best['number']} f1 = " in out.output
    campaign = stored_campaign(Store(url, create=False).campaign(cid))
    annotated = annotate(export_records(Store(url, create=False), cid), campaign)
    assert all("pareto" not in r for r in annotated)


# Failed trials that keep finite outputs (a readback out of range after the measurement)
# and an infeasible region whose detector saturates (an overrange code in f2).
READBACK = """
import math


def measure(inputs):
    a, b = float(inputs["a"]), float(inputs["b"])
    out = {"f1": a**2 + b, "f2": (a - 2) ** 2 + 0.5 * b, "purity": 0.9 + 0.1 * math.sin(3 * a)}
    if a > 1.7:  # impure, and saturated
        out["f2"] = 9.9e37
    return out
"""

MO_FAILING = """
name: mo-rb
parameters:
  - {name: a, type: float, bounds: [0, 2]}
  - {name: b, type: float, bounds: [0, 1]}
objectives:
  - {name: f1, goal: minimize}
  - {name: f2, goal: minimize}
outcome_constraints: ["purity >= 0.88"]
instrument:
  function: "rb.py:measure"
  outputs: [f1, f2, purity]
  readback_out_of_range_rate: 0.3
planner: {kind: sobol}
budget: {max_trials: 14, max_failures: 20}
seed: 5
"""


def test_run_status_and_report_give_one_hypervolume(tmp_path: Path) -> None:
    """``run`` printed 3.7939 and ``status`` 6.30889 for one campaign: failed trials keep
    finite outputs, which widened the inferred reference point of ``status`` and the
    report but not the runner's (found in review). Every command counts completed trials
    only; and an infeasible trial's 9.9e37 no longer sets the feasible volume's scale
    (it read 1.75e37)."""
    (tmp_path / "rb.py").write_text(READBACK)
    path = tmp_path / "campaign.yaml"
    path.write_text(MO_FAILING)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    summary = Runner(parse_campaign(MO_FAILING, path=path, base_dir=tmp_path), Store(url)).run()
    store = Store(url, create=False)
    row = store.campaign(summary.campaign_id)
    campaign = stored_campaign(row)
    records = annotate(export_records(store, summary.campaign_id), campaign)
    failed = [r for r in records if r["status"] == "failed"]
    assert any(np.isfinite(r["outputs"].get("f1", np.nan)) for r in failed), "needs such trials"
    done = [r for r in records if r["status"] == "completed"]
    assert any(r["outputs"]["f2"] == 9.9e37 and not r["feasible"] for r in done)
    Y = np.array([[r["outputs"]["f1"], r["outputs"]["f2"]] for r in done])
    feasible = np.array([r["feasible"] for r in done])
    expected = hypervolume(Y, campaign.objectives, None, feasible)
    assert 0 < expected < 100  # the feasible front's own scale
    assert summary.hypervolume == pytest.approx(expected, rel=1e-12)
    assert final_hypervolume(records, campaign) == pytest.approx(expected, rel=1e-12)
    assert hypervolume_trace(records, campaign)[-1] == pytest.approx(expected, rel=1e-12)
    out = CliRunner().invoke(app, ["status", "--store", url], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert f"hypervolume {expected:.6g}" in out.output
    panels = {ax.get_ylabel(): ax for ax in report_figure(store, row).axes}
    line = panels["hypervolume"].get_lines()[0]
    assert float(np.asarray(line.get_ydata())[-1]) == pytest.approx(expected, rel=1e-12)


EXAMPLES = sorted((ROOT / "campaigns").glob("*.yaml"))
NEW = ["mixed_space", "nonlinear_constraint", "multi_objective", "outcome_constraint", "prior_data"]


@pytest.mark.parametrize("name", NEW)
def test_new_example_campaigns_validate(name: str) -> None:
    loaded = load_campaign(ROOT / "campaigns" / f"{name}.yaml")
    c = loaded.campaign
    features = {
        "mixed_space": {p.type for p in c.parameters} == {"float", "int", "choice", "fixed"},
        "nonlinear_constraint": any(not k.is_linear for k in c.space.constraints),
        "multi_objective": len(c.objectives) >= 2
        and all(o.reference_point is not None for o in c.objectives),
        "outcome_constraint": bool(c.outcome_constraints),
        "prior_data": c.prior_data is not None,
    }
    assert features[name]
    assert (ROOT / "campaigns" / f"{name}.yaml") in EXAMPLES


# Throughput a saturates (an overrange code) where purity b is high.
SATURATING = """
def measure(inputs):
    x = float(inputs["x"])
    return {"a": 9.9e37 if x > 0.5 else 1.0 + 0.0001 * x, "b": x}
"""

MO_TARGET = """
name: mo-target
parameters: [{name: x, type: float, bounds: [0, 1]}]
objectives: [{name: a, goal: maximize}, {name: b, goal: maximize}]
prior_data: prior.csv
instrument: {function: "sat.py:measure", outputs: [a, b]}
planner: {kind: sobol, initial: {kind: sobol, centre: false, n: 4}}
budget: {max_trials: 6, target: {b: 0.5}}
seed: 1
"""


def test_a_target_on_another_objective_is_met_beside_a_sentinel(tmp_path: Path) -> None:
    """With several objectives no trial is flagged far outside the others (best and
    outlying are single-objective notions; the front counts such a reading): the flag,
    made of objective ``a`` alone, kept ``target: {b: 0.5}`` from being met by a trial with
    b = 0.97 on the front, and the live line said ``left out of best`` (found in review)."""
    (tmp_path / "sat.py").write_text(SATURATING)
    (tmp_path / "prior.csv").write_text("x,a,b\n0.1,1.000,0.1\n0.2,1.001,0.2\n")
    path = tmp_path / "campaign.yaml"
    path.write_text(MO_TARGET)
    url = f"sqlite:///{tmp_path / 'mo.db'}"
    out = CliRunner().invoke(app, ["run", str(path), "--store", url], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "completed: target reached: trial #3 has b = " in out.output, out.output
    assert "left out of best" not in out.output
    assert "far outside every other reading" not in out.output
    records = export_records(Store(url, create=False), 1)
    assert records[-1]["outputs"]["a"] == 9.9e37 and records[-1]["outputs"]["b"] >= 0.5
