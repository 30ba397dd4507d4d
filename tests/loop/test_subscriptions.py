"""A facility's live consumers: ``Runner(subscriptions=...)`` on every slot's RunEngine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loop import Runner, Store, parse_campaign

CAMPAIGN = """
name: live
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, count: 2}
planner: {kind: sobol}
budget: {max_trials: 4}
seed: 3
"""


def _runner(tmp_path: Path, *subscriptions: Any) -> tuple[Runner, Store]:
    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    loaded = parse_campaign(CAMPAIGN, path=path, base_dir=tmp_path)
    return Runner(loaded, store, subscriptions=subscriptions), store


def test_every_document_reaches_a_subscription_after_the_store(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []
    runner, store = _runner(tmp_path, lambda name, doc: seen.append((name, doc["uid"])))
    summary = runner.run()
    stored = [
        (d.name, d.body["uid"])
        for t in store.trials(summary.campaign_id)
        for d in store.documents(t.id or 0)
    ]
    assert sorted(seen) == sorted(stored) and len(seen) == 16  # 4 runs of 4 documents


def test_a_subscription_that_raises_fails_no_trial(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broker_down(name: str, doc: dict[str, Any]) -> None:
        raise ConnectionError("kafka broker unreachable")

    runner, store = _runner(tmp_path, broker_down)
    summary = runner.run()
    assert (summary.status, summary.completed, summary.failed) == ("completed", 4, 0)
    said = [r.getMessage() for r in caplog.records if "kafka broker unreachable" in r.getMessage()]
    assert len(said) == 1 and "logged once" in said[0]
