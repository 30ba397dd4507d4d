"""``status --model`` and ``loop.results.model_estimates``: a noisy campaign's best reading
is its luckiest, and the model says how much of it to believe. Real campaigns (RunEngine,
simulated devices, SQLite), real GP fits."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from loop import Runner, Store, parse_campaign
from loop.cli import app
from loop.results import model_estimates
from tests.cli_process import told

CAMPAIGN = """
name: noisy
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, noise: 5, latency: 0, failure_rate: 0.25}
planner: {kind: sobol}
budget: {max_trials: 14, max_failures: 14}
seed: 4
"""


def _run(tmp_path: Path, text: str = CAMPAIGN) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    store = Store(f"sqlite:///{tmp_path / 'runs.db'}")
    Runner(parse_campaign(text, path=path, base_dir=tmp_path), store).run()
    store.close()
    return store.url


def test_status_model_says_how_much_of_the_best_reading_to_believe(tmp_path: Path) -> None:
    url = _run(tmp_path)
    records = json.loads(CliRunner().invoke(app, ["export", "--store", url, "-f", "json"]).stdout)
    completed = {r["trial_id"] for r in records if r["status"] == "completed"}
    assert 0 < len(completed) < len(records)  # some failed: the ids must still line up

    estimates = model_estimates(url)
    assert estimates is not None and estimates.objective == "y"
    assert set(estimates.mean) == set(estimates.sd) == completed
    assert estimates.best in completed and estimates.noise_sd > 0.5  # the noise is 5

    result = CliRunner().invoke(app, ["status", "--store", url, "--model"])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert f"model (a GP on {len(completed)} measured trials; one reading's noise sd ≈" in said
    best = next(r for r in records if r["best"])
    y = best["outputs"]["y"]
    assert (
        f"best reading, trial #{best['number']}: y ≈ {estimates.mean[best['trial_id']]:.4g}" in said
    )
    assert f"(read {y:.6g})" in said
    if estimates.best != best["trial_id"]:
        rated = next(r for r in records if r["trial_id"] == estimates.best)
        assert f"rated best, trial #{rated['number']}: y ≈" in said

    result = CliRunner().invoke(app, ["status", "--store", url, "--model", "--json"])
    assert result.exit_code == 0, result.output
    model = json.loads(result.stdout)["model"]
    assert model["best_trial_id"] == estimates.best
    assert {int(k) for k in model["estimates"]} == completed
    assert model["noise_sd"] == estimates.noise_sd
    # without --model no model is fitted, and the JSON has no such key
    plain = CliRunner().invoke(app, ["status", "--store", url, "--json"])
    assert "model" not in json.loads(plain.stdout)


def test_status_model_of_several_objectives_is_refused(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "campaigns" / "multi_objective.yaml"
    text = example.read_text().replace("kind: botorch", "kind: sobol")
    text = text.replace("budget: {max_trials: 30,", "budget: {max_trials: 3,")
    url = _run(tmp_path, text)
    result = CliRunner().invoke(app, ["status", "--store", url, "--model"])
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert (
        "campaign 'flow-reactor-pareto' has 2 objectives: a Pareto front has no one best trial"
    ) in said


def test_status_model_json_says_null_with_nothing_to_fit(tmp_path: Path) -> None:
    """The README lists `model` among the keys; with one measured trial it was missing, and
    a script reading it got a KeyError (found in review)."""
    url = _run(
        tmp_path,
        CAMPAIGN.replace("max_trials: 14", "max_trials: 1").replace(
            "failure_rate: 0.25", "failure_rate: 0.0"
        ),
    )
    result = CliRunner().invoke(app, ["status", "--store", url, "--model", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] is None
    text = CliRunner().invoke(app, ["status", "--store", url, "--model"])
    assert "model: fewer than two measured trials to fit" in text.output


def test_a_run_stopped_by_a_misnamed_key_exits_1(tmp_path: Path) -> None:
    """Code to fix, not "busy, try again later" (75): a wrapper that retried on 75 spent a
    failure on each retry (found in review)."""
    from tests.cli_process import closedloop

    (tmp_path / "m.py").write_text("def f(x):\n    return {'Y': x['x1']}\n")
    (tmp_path / "c.yaml").write_text(
        "name: typo\nparameters:\n  - {name: x1, type: float, bounds: [0, 1]}\n"
        "objectives: [{name: y, goal: minimize}]\n"
        'instrument: {function: "m.py:f", outputs: [y]}\nplanner: {kind: sobol}\n'
        "budget: {max_trials: 4}\n"
    )
    proc = closedloop("run", "c.yaml", "--store", f"sqlite:///{tmp_path / 's.db'}", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "function used a misnamed key" in proc.stdout


def test_status_model_needs_no_function_file(tmp_path: Path) -> None:
    """A store copied to another machine, without the campaign's function file: plain
    `status` read it and `--model` refused it (found in review); nothing here measures."""
    (tmp_path / "g.py").write_text("def f(x):\n    return {'y': (x['x1'] - 0.3) ** 2}\n")
    text = (
        "name: gone\nparameters:\n  - {name: x1, type: float, bounds: [0, 1]}\n"
        "objectives: [{name: y, goal: minimize}]\n"
        'instrument: {function: "g.py:f", outputs: [y], noise: 0.01}\nplanner: {kind: sobol}\n'
        "budget: {max_trials: 6}\n"
    )
    url = _run(tmp_path, text)
    (tmp_path / "g.py").unlink()
    result = CliRunner().invoke(app, ["status", "--store", url, "--model"])
    assert result.exit_code == 0, result.output
    assert "model (a GP on 6 measured trials" in " ".join(result.output.split())


def test_a_rated_best_trial_whose_reading_breaks_a_bound_is_said_to(tmp_path: Path) -> None:
    """Trial #6 read y = 1.05 with c = 1.02 against `c <= 1`; the model judged the bound met
    and rated it best, printed under "best feasible: trial #3" without a word (found in
    review)."""
    campaign = (
        "name: rated-infeasible\n"
        "parameters: [{name: x, type: float, bounds: [0, 1]}]\n"
        "objectives: [{name: y, goal: maximize}]\n"
        'outcome_constraints: ["c <= 1"]\n'
        "instrument: manual\n"
        "planner: {kind: sobol}\n"
        "budget: {max_trials: 10}\n"
        "seed: 1\n"
    )
    rows = [(0.55, 0.5), (0.78, 0.5), (0.98, 0.5), (0.36, 0.5), (0.44, 0.5), (1.05, 1.02)]
    rows += [(0.46, 0.5), (0.88, 0.5)]
    url = told(tmp_path, campaign, rows, "y,c")
    out = CliRunner().invoke(app, ["status", "--store", url, "--model"]).output
    assert "best feasible: trial #3" in out
    assert "rated best, trial #6" in out, out
    assert "(its own reading breaks c <= 1: the model judges the bound met within the noise" in out
