"""Every example campaign, with ``planner: {kind: ax}``, through the real Runner.

The same files as the BoTorch runs (``campaigns/*.yaml``), switched to Ax and cut to a tiny
budget that still reaches Ax's model: the real RunEngine, simulated devices and SQLite. A
campaign Ax cannot express (a nonlinear constraint, a finite candidate table) must instead
fail validation with a message that names the BoTorch planner.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from botorch.test_utils.mock import mock_optimize_context_manager

from loop import CampaignConfigError, Runner, Store, load_campaign, parse_campaign
from tests.bench_operator import answer_at_the_bench

CAMPAIGNS = Path(__file__).parents[2] / "campaigns"
FILES = sorted(CAMPAIGNS.glob("*.yaml"))


@pytest.fixture(autouse=True)
def _short_optimiser() -> Iterator[None]:
    with mock_optimize_context_manager(force=True):
        yield


def as_ax(path: Path) -> tuple[str, int]:
    """The campaign's text with the Ax planner (instead of its own: kind and settings) and a
    budget of initial design + 2 trials."""
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    planner = dict(data.get("planner") or {})
    planner["kind"] = "ax"
    for key in ("acquisition", "plugin", "args"):  # BoTorch's, and a planner of one's own
        planner.pop(key, None)
    n_initial = int((planner.get("initial") or {}).get("n") or 5)
    data["planner"] = planner
    budget = {"max_trials": n_initial + 2, "max_duration": "10m"}
    data["budget"] = budget
    return yaml.safe_dump(data, sort_keys=False), n_initial


def ax_cannot(path: Path) -> bool:
    """Whether the campaign (as written, for BoTorch) needs what Ax cannot express."""
    space = load_campaign(path).campaign.space
    return space.candidates is not None or any(not c.is_linear for c in space.constraints)


def test_there_are_example_campaigns() -> None:
    assert len(FILES) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_example_campaign_runs_under_ax(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, n_initial = as_ax(path)
    if ax_cannot(path):
        with pytest.raises(CampaignConfigError, match="use planner kind: botorch"):
            parse_campaign(text, path=path, base_dir=path.parent)
        return
    loaded = parse_campaign(text, path=path, base_dir=path.parent)
    assert loaded.campaign.planner.kind == "ax"
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    runner = Runner(loaded, store)
    answer_at_the_bench(runner, monkeypatch)  # campaigns/bench.yaml: a manual one
    summary = runner.run()
    assert summary.status == "completed", summary.reason
    trials = store.trials(summary.campaign_id)
    space = loaded.campaign.space
    proposed = [t for t in trials if t.kind not in ("prior", "retry")]
    assert proposed, "the campaign ran no trial of its own"
    for t in trials:
        space.validate(t.parameters)  # raises if any proposal broke a rule of the space
    kinds = {t.kind for t in proposed}
    assert kinds <= {"initial", "model", "sobol"}
    if len(trials) > n_initial:
        assert "model" in kinds


@pytest.mark.slow
def test_two_slots_keep_ax_busy_with_pending_trials(tmp_path: Path) -> None:
    """Two instrument slots: Ax suggests while a trial is in flight (pending, not repeated)."""
    text = """
name: ax-two-slots
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
constraints: ["x1 + x2 <= 12"]
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, latency: 0.05, count: 2}
planner: {kind: ax, initial: {n: 4}}
budget: {max_trials: 8}
seed: 3
"""
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    loaded = parse_campaign(text, path=path, base_dir=tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    summary = Runner(loaded, store).run()
    assert (summary.status, summary.completed) == ("completed", 8), summary.reason
    trials = [t for t in store.trials(summary.campaign_id) if t.status == "completed"]
    points = [(t.parameters["x1"], t.parameters["x2"]) for t in trials]
    assert len(set(points)) == len(points)  # no point run twice
    assert all(x1 + x2 <= 12 + 1e-9 for x1, x2 in points)
    assert {t.slot for t in trials} == {0, 1}
    assert "model" in {t.kind for t in trials}
