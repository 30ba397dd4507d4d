"""A Pareto front of many trials is shown as at most ``FRONT_ROWS`` rows, spread along it.

Found in review: a four-objective campaign of 700 trials, every one on the front, printed 700
rows in ``status`` and in ``run``'s summary, scrolling the campaign's state out of sight.
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from loop.cli import FRONT_ROWS, _front_shown, app

TRADE_OFF = """
def measure(inputs):
    return {"f1": inputs["x"], "f2": 1 - inputs["x"]}
"""

CAMPAIGN = """
name: trade-off
parameters: [{name: x, type: float, bounds: [0, 1]}]
objectives: [{name: f1, goal: minimize}, {name: f2, goal: minimize}]
instrument: {function: "trade.py:measure", outputs: [f1, f2]}
planner: {kind: sobol}
budget: {max_trials: 30}
seed: 1
"""


def test_a_large_front_is_shown_spread_along_it_with_its_ends() -> None:
    front = list(range(100, 0, -1))  # trial order; the value is the number itself
    shown = _front_shown(front, float)
    assert len(shown) == FRONT_ROWS
    assert 1 in shown and 100 in shown  # both ends of the first objective
    assert shown == [t for t in front if t in shown]  # in trial order
    assert _front_shown(front[:FRONT_ROWS], float) == front[:FRONT_ROWS]


def test_run_and_status_show_20_of_a_30_trial_front_and_say_where_the_rest_are(
    tmp_path: Path,
) -> None:
    (tmp_path / "trade.py").write_text(TRADE_OFF)
    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN)
    url = f"sqlite:///{tmp_path / 's.db'}"
    cli = CliRunner()
    ran = cli.invoke(app, ["run", str(path), "--store", url, "-q"])
    assert ran.exit_code == 0, ran.output
    shown = cli.invoke(app, ["status", "--store", url])
    for output in (ran.output, shown.output):
        said = " ".join(output.split())
        assert "Pareto front: 30 trials" in said
        assert "20 of the 30 trials on the front, spread along f1" in said
        assert "`closedloop export` (column pareto)" in said
