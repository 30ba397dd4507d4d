"""A reading far outside every other one (an overrange code, a sentinel such as 9.9e37 from a
saturated detector) is never the campaign's best trial: not in ``run``'s live line and
summary, ``status``, the report's best-so-far curve, nor ``patience``. It is named, marked
on the report panels' edge, and exported as measured (found in review: ``best: trial #8
current = 9.9e+37``, a best-so-far curve and panels up to 1e38). A genuine extreme (a hit
far above a flat background, below the sentinel magnitude 1e30) is the best trial and meets
``target`` (found in review: it was left out of best like a sentinel).

Campaigns run for real (RunEngine, SQLite) with the Sobol planner and a user function.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from loop import Runner, Store, parse_campaign
from loop.cli import app
from loop.report import best_record, best_so_far, outlying_records, report_figure
from loop.runner import TrialReport
from loop.store import export_records
from planners._outliers import best_index, best_trace, outlying

SENTINEL = 9.9e37
EDGE = "far outside the others (on the edge)"  # the report's legend entry

FUNCTION = """
import math


def measure(inputs):
    x = inputs["x"]
    current = 1.2e-9 * math.exp(-((x - 0.3) ** 2) / 0.02)
    if x > 0.85:  # a saturated electrometer: its overrange code
        current = 9.9e37
    return {"current": current, "counts": 1000.0 + x}
"""

CAMPAIGN = """
name: electrometer
parameters: [{name: x, type: float, bounds: [0, 1], unit: mm}]
objectives: [{name: current, goal: maximize}]
instrument: {function: "fn.py:measure", outputs: [current, counts]}
planner: {kind: sobol}
budget: {max_trials: 12}
seed: 2
"""


class _Recorder:
    """What the live line showed: ``(number, outlying, best)`` as each trial ended."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, bool, float | None]] = []

    def trial_started(self, number: int, parameters: dict[str, Any]) -> None:
        pass

    def trial_finished(self, report: TrialReport) -> None:
        self.lines.append((report.number, report.outlying, report.best))


def _write(tmp_path: Path) -> Path:
    (tmp_path / "fn.py").write_text(FUNCTION)
    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN)
    return path


def _run(tmp_path: Path) -> tuple[str, Any, _Recorder]:
    path = _write(tmp_path)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    recorder = _Recorder()
    loaded = parse_campaign(CAMPAIGN, path=path, base_dir=tmp_path)
    summary = Runner(loaded, Store(url), listener=recorder).run()
    return url, summary, recorder


# ---------------------------------------------------------------------------- the rule
def test_best_index_leaves_outlying_values_out_and_says_which() -> None:
    values = [1.0, 3.0, math.nan, SENTINEL, 2.0, 3.0]
    index, mask = best_index(values, 1.0)
    assert index == 1  # the first of the equal best values
    assert mask.tolist() == [False, False, False, True, False, False]
    assert mask.tolist() == outlying(values).tolist()  # the planner's own rule
    # minimised: a sentinel at the bottom (an underrange code) is left out alike
    index, mask = best_index([5.0, -SENTINEL, 4.0, 6.0], -1.0)
    assert (index, mask.tolist()) == (2, [False, True, False, False])
    # nothing finite: no best; too few values to judge: nothing is outlying
    assert best_index([math.nan, math.nan], 1.0)[0] is None
    assert best_index([SENTINEL], 1.0)[0] == 0
    assert best_index([], 1.0)[0] is None


def test_best_trace_never_rises_to_a_sentinel_and_ends_at_the_best() -> None:
    values = [math.nan, 1.0, SENTINEL, 0.5, 2.0]
    trace, mask = best_trace(values, 1.0)
    assert math.isnan(trace[0])
    assert trace[1:].tolist() == [1.0, 1.0, 1.0, 2.0]
    assert mask.tolist() == [False, False, True, False, False]
    assert trace[-1] == values[best_index(values, 1.0)[0] or 0]
    assert best_trace([], 1.0)[0].tolist() == []


def test_a_genuine_extreme_is_the_best() -> None:
    """Far outside the others but no sentinel (below 1e30): a screening hit among titres of
    5.000 and 5.001, a beam found after dark counts. Both were left out of best."""
    for values in ([5.0, 5.001, 40.0], [3.0, 5.0, 4.0, 6.0, 4.0, 12000.0]):
        index, mask = best_index(values, 1.0)
        assert index == len(values) - 1 and not mask.any(), values
        trace, _ = best_trace(values, 1.0)
        assert trace[-1] == values[-1]
        assert not outlying(values).any()
    # ... and a sentinel among them is still left out, the hit still counted
    index, mask = best_index([5.0, 5.001, 40.0, SENTINEL], 1.0)
    assert (index, mask.tolist()) == (2, [False, False, False, True])


# ---------------------------------------------------------------------------- the loop
def test_run_status_and_report_leave_a_sentinel_out_of_best(tmp_path: Path) -> None:
    url, summary, recorder = _run(tmp_path)
    store = Store(url, create=False)
    records = export_records(store, summary.campaign_id)
    values = [r["outputs"]["current"] for r in records]
    far = [r["number"] for r in records if r["outputs"]["current"] == SENTINEL]
    assert far and len(far) < len(records) / 2, "the test needs a few sentinel readings"
    honest = max(v for v in values if v != SENTINEL)

    # run: the summary's best, the trials left out, and every live "best"
    assert summary.best is not None and summary.best.objective == honest
    assert [r.number for r in summary.outlying] == far
    assert all(best is None or best <= honest for _, _, best in recorder.lines)
    flagged = [number for number, outlying, _ in recorder.lines if outlying]
    assert flagged == far  # every sentinel was told apart when it came in
    # status: the same best, the same trials named
    best = best_record(records, "current", "maximize")
    assert best is not None and best["number"] == summary.best.number
    assert [r["number"] for r in outlying_records(records, "current", "maximize")] == far
    out = CliRunner().invoke(app, ["status", "--store", url], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert f"best: trial #{summary.best.number} current = {honest:.6g}" in out.output
    named = ", ".join(f"#{n} current = 9.9e+37" for n in far)
    which = "trial" if len(far) == 1 else "trials"
    assert f"left out of best: {which} {named}, far outside every other reading" in out.output
    # the report: the best-so-far curve and the panels keep to the other values
    trace = best_so_far(records, "current", "maximize")
    assert max(v for v in trace if not math.isnan(v)) == honest
    fig = report_figure(store, store.campaign(summary.campaign_id))
    panels = {ax.get_ylabel(): ax for ax in fig.axes}
    fig.canvas.draw()  # autoscale as when saved
    assert float(np.max(np.asarray(panels["best current"].get_lines()[0].get_ydata()))) == honest
    assert panels["current"].get_ylim()[1] < 1e-6
    on_edge = [c for c in panels["current"].collections if str(c.get_label()) == EDGE]
    assert sorted(float(x) for c in on_edge for x in np.asarray(c.get_offsets())[:, 0]) == far
    legend = panels["current"].get_legend()
    assert legend is not None
    assert EDGE in {t.get_text() for t in legend.get_texts()}
    # export: as measured
    out = CliRunner().invoke(app, ["export", "--store", url, "-f", "csv"])
    rows = list(csv.DictReader(io.StringIO(out.output)))
    assert [float(r["current"]) for r in rows if int(r["number"]) in far] == [SENTINEL] * len(far)
    # ... with the trial status calls best marked, so an analyst need not redo the rules
    assert [int(r["number"]) for r in rows if r["best"] == "true"] == [summary.best.number]
    assert {r["best"] for r in rows} == {"true", "false"}


def test_run_summary_names_the_readings_left_out(tmp_path: Path) -> None:
    path = _write(tmp_path)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    out = CliRunner().invoke(app, ["run", str(path), "--store", url], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    best = next(line for line in lines if line.startswith("best trial #"))
    assert "9.9e+37" not in best
    note = [line for line in lines if line.startswith("left out of best: trial")]
    assert len(note) == 1 and "far outside every other reading" in note[0], out.output
    live = [line for line in lines if line.startswith("trial ") and "= 9.9e+37" in line]
    assert live and all("left out of best" in line for line in live)
    assert not any("best = 9.9e+37" in line for line in lines)


def test_a_sentinel_meets_no_target(tmp_path: Path) -> None:
    """``target`` is met by a best trial, so not by an overrange code: the campaign went on
    to ``max_trials`` where it stopped "target reached: trial #N has current = 9.9e+37"."""
    path = _write(tmp_path)
    text = CAMPAIGN.replace("budget: {max_trials: 12}", "budget: {max_trials: 12, target: 1.0}")
    loaded = parse_campaign(text, path=path, base_dir=tmp_path)
    summary = Runner(loaded, Store(f"sqlite:///{tmp_path / 't.db'}")).run()
    assert summary.outlying, "the test needs a sentinel reading"
    assert summary.completed == 12 and "target" not in summary.reason, summary.reason


def test_a_scan_panel_keeps_an_outlying_trial_inside_it(tmp_path: Path) -> None:
    """The edge markers' x is a parameter value: the panel's x range takes it in, or a
    trial beyond every other one was drawn outside its panel, over the next (found while
    fixing the above)."""
    url, summary, _ = _run(tmp_path)
    store = Store(url, create=False)
    records = export_records(store, summary.campaign_id)
    fig = report_figure(store, store.campaign(summary.campaign_id))
    fig.canvas.draw()
    scan = next(ax for ax in fig.axes if ax.get_xlabel() == "x [mm]")
    xs = [r["parameters"]["x"] for r in records if r["outputs"]["current"] == SENTINEL]
    low, high = scan.get_xlim()
    assert all(low <= x <= high for x in xs), (xs, (low, high))
    assert np.isfinite(scan.get_ylim()).all() and scan.get_ylim()[1] < 1e-6


@pytest.mark.parametrize("goal", ["maximize", "minimize"])
def test_best_record_without_outliers_is_unchanged(goal: str) -> None:
    records = [
        {"number": i + 1, "status": s, "outputs": {"y": v}, "kind": "sobol"}
        for i, (s, v) in enumerate(
            [("completed", 2.0), ("failed", 9.0), ("completed", 3.0), ("completed", 1.0)]
        )
    ]
    best = best_record(records, "y", goal)
    assert best is not None and best["number"] == (3 if goal == "maximize" else 4)
    assert outlying_records(records, "y", goal) == []


HIT = """
def measure(inputs):
    x = float(inputs["x"])
    return {"titre": 40.0 if 4.0 < x < 6.0 else 5.0 + 0.0001 * x}
"""

HIT_CAMPAIGN = """
name: screen
parameters: [{name: x, type: float, bounds: [0, 10]}]
objectives: [{name: titre, goal: maximize}]
prior_data: prior.csv
instrument: {function: "hit.py:measure", outputs: [titre]}
planner: {kind: sobol, initial: {kind: sobol, centre: false, n: 4}}
budget: {max_trials: 6, target: 30}
seed: 1
"""


def test_a_genuine_hit_meets_the_target(tmp_path: Path) -> None:
    """Prior titres 5.000 and 5.001, then a hit of 40 with ``target: 30``: the live line
    said ``(far outside every other reading: left out of best) best = 5.001`` and the
    campaign ran to ``max_trials`` (found in review). Now it stops at the hit."""
    (tmp_path / "hit.py").write_text(HIT)
    (tmp_path / "prior.csv").write_text("x,titre\n1.0,5.000\n9.0,5.001\n")
    path = tmp_path / "campaign.yaml"
    path.write_text(HIT_CAMPAIGN)
    recorder = _Recorder()
    loaded = parse_campaign(HIT_CAMPAIGN, path=path, base_dir=tmp_path)
    summary = Runner(loaded, Store(f"sqlite:///{tmp_path / 'h.db'}"), listener=recorder).run()
    hit = next(number for number, _, best in recorder.lines if best == 40.0)
    assert summary.reason == f"target reached: trial #{hit} has titre = 40 (target 30)"
    assert summary.best is not None and summary.best.objective == 40.0
    assert not summary.outlying
    assert not any(outlying for _, outlying, _ in recorder.lines)


DARK = """
def measure(inputs):
    x = float(inputs["x"])
    return {"counts": 12000.0 if 4.0 < x < 6.0 else 3.0 + x % 4}
"""

DARK_CAMPAIGN = """
name: find-the-beam
parameters: [{name: x, type: float, bounds: [0, 10], unit: mm}]
objectives: [{name: counts, goal: maximize}]
instrument: {function: "dark.py:measure", outputs: [counts]}
planner: {kind: sobol, initial: {kind: sobol, centre: false, n: 4}}
budget: {max_trials: 8, patience: 3}
seed: 1
"""


def test_a_beam_after_dark_counts_is_the_best(tmp_path: Path) -> None:
    """Dark counts of 3-6, then the beam (12000): ``run``, ``patience``, ``status`` and the
    report's best-so-far curve all take the beam as the best (before: best 6)."""
    (tmp_path / "dark.py").write_text(DARK)
    path = tmp_path / "campaign.yaml"
    path.write_text(DARK_CAMPAIGN)
    url = f"sqlite:///{tmp_path / 'd.db'}"
    recorder = _Recorder()
    loaded = parse_campaign(DARK_CAMPAIGN, path=path, base_dir=tmp_path)
    summary = Runner(loaded, Store(url), listener=recorder).run()
    store = Store(url, create=False)
    records = export_records(store, summary.campaign_id)
    beam = [r["number"] for r in records if r["outputs"]["counts"] == 12000.0]
    assert beam and beam[0] > 2, "the test needs dark counts before the beam"
    assert summary.best is not None and summary.best.number == beam[0]
    assert not summary.outlying and not any(o for _, o, _ in recorder.lines)
    assert summary.reason.startswith("patience: counts did not improve")
    assert summary.reason.endswith("(best 12000)")
    out = CliRunner().invoke(app, ["status", "--store", url], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert f"best: trial #{beam[0]} counts = 12000" in out.output
    assert "left out of best" not in out.output
    assert best_so_far(records, "counts", "maximize")[-1] == 12000.0
