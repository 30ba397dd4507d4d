"""``status`` writes outputs with the digits that set them apart.

Six significant digits wrote 1.0000001, 1.0000002 and 0.9999999 all as ``1``, one of them
called best, and ``c=1, feasible no`` beside ``c=1, feasible yes`` (found in review).
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from loop.cli import app
from loop.fmt import digits_apart
from tests.cli_process import told

CAMPAIGN = """\
name: close-calls
parameters: [{name: x, type: float, bounds: [0, 1]}]
objectives: [{name: y, goal: minimize}]
outcome_constraints: ["c <= 1"]
instrument: manual
planner: {kind: sobol}
budget: {max_trials: 10}
seed: 1
"""


def test_digits_apart() -> None:
    assert digits_apart([0.5, 2.0, 3.25]) == 6  # the usual six, where they suffice
    assert digits_apart([1.0000001, 1.0000002, 0.9999999, 1.0]) == 8
    assert digits_apart([1.0, 1.0 + 2**-52]) == 17  # as far as a float goes
    assert digits_apart([1.0, "text", None, float("nan"), 1.0]) == 6


def test_values_apart_at_a_bound_are_written_apart(tmp_path: Path) -> None:
    rows = [(0.5, 2.0), (1.0000001, 0.0), (1.0000002, 0.5), (0.9999999, 1.0000001)]
    url = told(tmp_path, CAMPAIGN, rows, "y,c")
    out = CliRunner().invoke(app, ["status", "--store", url], env={"COLUMNS": "200"}).output
    assert "best feasible: trial #2 y = 1.0000001 (minimize)" in out, out
    assert "1.0000002" in out
    assert "0.9999999" in out and "1.0000001 │ no" in out, out


def test_the_run_lines_tell_close_values_apart(tmp_path: Path) -> None:
    """`run` printed `y = 1  (infeasible: c 1 > 1)  best = 1` for 1.0000001 against
    `c <= 1` (found in review)."""
    (tmp_path / "f.py").write_text(
        "def measure(inputs):\n    return {'y': 1.0 + 1e-7 * (inputs['x'] > 0.5), 'c': 1.0000001}\n"
    )
    (tmp_path / "c.yaml").write_text(
        CAMPAIGN.replace(
            "instrument: manual", "instrument: {function: f.py:measure, outputs: [y, c]}"
        )
        .replace("max_trials: 10", "max_trials: 3")
        .replace("goal: minimize", "goal: maximize")
    )
    url = f"sqlite:///{tmp_path / 's.db'}"
    out = CliRunner().invoke(app, ["run", str(tmp_path / "c.yaml"), "--store", url])
    assert out.exit_code == 0, out.output
    assert "(infeasible: c 1.0000001 > 1)" in out.output, out.output
