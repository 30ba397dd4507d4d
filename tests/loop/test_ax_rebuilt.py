"""An Ax campaign stopped and resumed, and driven by ask/tell, proposes what one that never
stopped would: its initial points go on where they were, and a failed point is not proposed
again. Real Runner and CLI, SQLite stores, Ax's real Client (its optimiser cut short).

Every ``resume`` and every ``suggest`` of ask/tell rebuilds the planner from the store. Ax's
Sobol step started over in each new Client and skipped only the points it knew exactly, so a
resumed campaign on a narrow range far from zero measured its trials 2 and 3 again, and
ask/tell with ``--actual`` proposed one point three times; its model proposed one failed
point until ``max_failures`` ended the campaign.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botorch.test_utils.mock import mock_optimize_context_manager
from typer.testing import CliRunner

from loop import Runner, Store, load_campaign
from loop.cli import app
from planners import FloatParameter, Objective, Observation, PlannerConfig, Space
from planners._ax import AxPlanner
from planners._baselines import near_duplicate


@pytest.fixture(autouse=True)
def _short_optimiser() -> Iterator[None]:
    with mock_optimize_context_manager(force=True):
        yield


WAVELENGTH = """\
name: wavelength
parameters:
  - {name: wl, type: float, bounds: [1549.9995, 1550.0005], unit: nm}
  - {name: x2, type: float, bounds: [0, 1]}
objectives: [{name: y, goal: minimize}]
instrument: {function: "response.py:measure", outputs: [y]}
planner: {kind: ax, initial: {n: 6}}
budget: {max_trials: 6}
seed: 1
"""

RESPONSE = """\
def measure(inputs):
    return {"y": (inputs["wl"] - 1550.0001) ** 2 + inputs["x2"]}
"""


def _parameters(store: Store) -> list[dict[str, Any]]:
    campaign = store.campaign()
    return [t.parameters for t in store.trials(campaign.id or 0)]


def test_a_resumed_campaign_goes_on_with_its_initial_design(tmp_path: Path) -> None:
    """Stopped after 2 and after 4 trials, resumed each time: the same 6 distinct points as
    a run that never stopped (a range 1e-3 wide at 1550, shown to Ax shifted to 0)."""
    (tmp_path / "response.py").write_text(RESPONSE)
    file = tmp_path / "wavelength.yaml"
    file.write_text(WAVELENGTH)
    whole = Store(f"sqlite:///{tmp_path / 'whole.db'}")
    assert Runner(load_campaign(file), whole).run().completed == 6
    expected = _parameters(whole)
    assert len({(p["wl"], p["x2"]) for p in expected}) == 6
    store = Store(f"sqlite:///{tmp_path / 'stopped.db'}")
    assert Runner(load_campaign(file), store, max_trials=2).run().completed == 2
    for limit in (4, 6):
        summary = Runner.from_store(store, "wavelength", max_trials=limit).resume()
        assert summary.completed == limit, summary.reason
    assert _parameters(store) == expected
    assert {t.kind for t in store.trials(store.campaign().id or 0)} == {"initial"}


ASKTELL = """\
name: bench
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: manual
planner: {kind: ax, initial: {n: 4}}
budget: {max_trials: 10, max_failures: 5}
seed: 1
"""


def _cli(*args: str) -> Any:
    out = CliRunner().invoke(app, list(args))
    assert out.exit_code == 0, out.output + str(out.exception or "")
    return out


def _suggest(url: str, *args: str) -> dict[str, Any]:
    (trial,) = json.loads(_cli("suggest", *args, "--store", url, "--json").stdout)["trials"]
    assert isinstance(trial, dict)
    return trial


def _y(x1: float, x2: float) -> float:
    return (x1 - 2.0) ** 2 + (x2 - 7.0) ** 2


def test_ask_tell_with_actual_values_and_failures_never_repeats_a_point(tmp_path: Path) -> None:
    """Each trial is run at x2 = 7 whatever was asked (``tell --actual``): the initial
    points are those a planner that never stopped proposes, with no point twice. Then every
    model point fails (``tell --fail``), and none is proposed again."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    file = tmp_path / "bench.yaml"
    file.write_text(ASKTELL)
    space = Space(
        [FloatParameter(name="x1", bounds=(-5, 10)), FloatParameter(name="x2", bounds=(0, 15))]
    )
    config = PlannerConfig.model_validate({"kind": "ax", "initial": {"n": 4}})
    live = AxPlanner(space, [Objective(name="y", goal="minimize")], config, seed=1)
    initial: list[dict[str, Any]] = []
    for _ in range(4):
        trial = _suggest(url, *([str(file)] if not initial else []))
        assert trial["kind"] == "initial"
        assert trial["parameters"] == live.suggest(1)[0]
        initial.append(trial["parameters"])
        ran = {"x1": trial["parameters"]["x1"], "x2": 7.0}
        y = _y(ran["x1"], ran["x2"])
        _cli("tell", "--store", url, str(trial["trial_id"]), f"y={y!r}", "--actual", "x2=7.0")
        live.ingest([Observation(parameters=ran, outputs={"y": y})])
    assert len({(p["x1"], p["x2"]) for p in initial}) == 4
    failed: list[dict[str, Any]] = []
    for _ in range(3):
        trial = _suggest(url)
        assert trial["kind"] == "model"
        assert not near_duplicate(space, trial["parameters"], failed), trial
        failed.append(trial["parameters"])
        _cli("tell", "--store", url, str(trial["trial_id"]), "--fail", "the pump stalled")
