"""closedloop from Python, as a notebook uses it: run a campaign, read its trials back.

``trial_records`` is what ``closedloop export`` writes (the CLI calls it), so a notebook and
an export never disagree. Jupyter runs each cell inside a running asyncio event loop, so the
campaign runs from inside one too.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import loop
from loop.cli import app
from loop.report import to_json

CAMPAIGN = """
name: notebook
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
outcome_constraints: ["y <= 100"]
instrument: {simulator: branin}
planner: {kind: sobol}
budget: {max_trials: 6}
seed: 2
"""


def test_a_campaign_run_and_read_from_a_notebook_cell(tmp_path: Path) -> None:
    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN)
    url = f"sqlite:///{tmp_path / 'runs.db'}"

    async def cell() -> loop.CampaignSummary:  # a Jupyter cell: an event loop is running
        return loop.Runner(loop.load_campaign(path), loop.Store(url)).run()

    summary = asyncio.run(cell())
    assert summary.status == "completed" and summary.completed == 6

    records = loop.trial_records(url)
    assert [r["number"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(r["status"] == "completed" for r in records)
    assert set(records[0]["parameters"]) == {"x1", "x2"} and "y" in records[0]["outputs"]
    best = [r for r in records if r["best"]]
    assert len(best) == 1 and best[0]["number"] == summary.best.number  # type: ignore[union-attr]
    assert all(r["feasible"] == (r["outputs"]["y"] <= 100) for r in records)

    exported = CliRunner().invoke(app, ["export", "--store", url, "--format", "json"])
    assert exported.exit_code == 0, exported.output
    assert json.loads(exported.stdout) == json.loads(to_json(records))
    # An open store and a name select the same campaign.
    store = loop.Store(url)
    assert loop.trial_records(store, "notebook") == records
    store.close()


def test_a_model_rebuilt_on_many_trials_says_it_takes_a_while(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`suggest` on 2000 observations sat silent for 90 s (found in review): a planner rebuilt
    from more than 1000 stored trials says the fit takes minutes; the model is fitted at the
    first suggest, so building it here is quick."""
    import logging

    from loop.store import TrialRow

    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN.replace("kind: sobol", "kind: botorch"))
    store = loop.Store(f"sqlite:///{tmp_path / 'runs.db'}")
    runner = loop.Runner(loop.load_campaign(path), store)
    history = [
        TrialRow(
            id=i, campaign_id=1, number=i, kind="prior", status="completed", ended=i,
            parameters={"x1": -5 + 15 * (i % 97) / 97, "x2": 15 * (i % 89) / 89},
        )
        for i in range(1, 1002)
    ]  # fmt: skip
    observations = {i: {"y": float(i % 13)} for i in range(1, 1002)}
    with caplog.at_level(logging.WARNING, logger="loop.runner"):
        runner.rebuild_planner(history, observations)
        runner.rebuild_planner(history[:1000], observations)
    said = [r.getMessage() for r in caplog.records if "fits its model" in r.getMessage()]
    assert said == [
        "the botorch planner fits its model on 1001 trials: past 1000 that takes minutes (an "
        "exact GP grows with the cube of the trials)"
    ]
    store.close()
