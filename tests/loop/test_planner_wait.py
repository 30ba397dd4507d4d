"""``status`` says when idle slots wait for the planner: with a suggest slower than a trial
every slot showed ``idle`` and nothing said why (found in review). A real runner on real
RunEngines, a real SQLite store; the planner made slow on purpose."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from loop import Runner, Store, parse_campaign
from loop.cli import app
from planners import SobolPlanner

CAMPAIGN = """
name: slow-planner
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, latency: 0.05, count: 2}
planner: {kind: sobol}
budget: {max_trials: 6}
seed: 3
"""


def test_status_says_the_slots_wait_for_the_planner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suggest = SobolPlanner.suggest

    def slow(self: SobolPlanner, *args: Any, **kwargs: Any) -> Any:
        time.sleep(1.5)
        return suggest(self, *args, **kwargs)

    monkeypatch.setattr(SobolPlanner, "suggest", slow)
    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    # ttl 1 s: a heartbeat every 0.2 s
    runner = Runner(
        parse_campaign(CAMPAIGN, path=path, base_dir=tmp_path), Store(url), lease_ttl=1.0
    )
    done: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: done.update(summary=runner.run()), daemon=True)
    thread.start()
    seen_text = seen_json = None
    deadline = time.monotonic() + 60
    while thread.is_alive() and time.monotonic() < deadline and not (seen_text and seen_json):
        out = CliRunner().invoke(app, ["status", "--store", url], env={"COLUMNS": "200"})
        if out.exit_code != 0:  # not stored yet
            time.sleep(0.05)
            continue
        line = next((ln for ln in out.output.splitlines() if ln.startswith("planner: ")), None)
        seen_text = seen_text or line
        payload = json.loads(CliRunner().invoke(app, ["status", "--store", url, "--json"]).output)
        wait = (payload["runner"] or {}).get("planner_wait")
        seen_json = seen_json or wait
        time.sleep(0.1)
    thread.join(60)
    assert done["summary"].completed == 6
    assert seen_text is not None and "idle until it comes" in seen_text, seen_text
    assert "choosing the next proposal for " in seen_text
    assert seen_json is not None and 1 <= seen_json["slots_waiting"] <= 2, seen_json
    assert 0 <= seen_json["for_s"] < 5
    # once the runner has ended nothing waits: no line
    out = CliRunner().invoke(app, ["status", "--store", url])
    assert "planner: " not in out.output


def test_no_wait_is_shown_while_every_slot_measures(tmp_path: Path) -> None:
    """Planning ahead while the slots measure is the design, not a wait."""
    from loop.scheduler import PlannerWorker

    worker = PlannerWorker.__new__(PlannerWorker)
    worker.since, worker._unanswered = time.time(), True

    class Sched:
        planner = worker
        ready: list[Any] = []

        def idle(self) -> list[Any]:
            return []

    from loop.scheduler import Scheduler

    assert Scheduler.proposing(Sched()) is None  # type: ignore[arg-type]
    Sched.idle = lambda self: [object()]  # type: ignore[method-assign]
    assert Scheduler.proposing(Sched()) == (worker.since, 1)  # type: ignore[arg-type]
    worker._unanswered = False
    assert Scheduler.proposing(Sched()) is None  # type: ignore[arg-type]


def test_a_lease_taken_over_forgets_the_dead_runners_planner(tmp_path: Path) -> None:
    """A runner killed while slots waited for its planner left "planner: choosing..." in its
    lease; the runner that took the campaign over showed it as its own (found in review)."""
    from loop.store import LeaseClaim

    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    cid = Runner(parse_campaign(CAMPAIGN, path=path, base_dir=tmp_path), store).run().campaign_id
    dead = LeaseClaim(owner="lab:1", host="lab", pid=1, token="dead", ttl=30)
    assert store.insert_lease(cid, dead)
    assert store.renew_lease(cid, "dead", 30, proposing=(time.time() - 50, 2))
    held = store.lease(cid)
    assert held is not None and held.proposing_for == 2
    successor = LeaseClaim(owner="lab:2", host="lab", pid=2, token="next", ttl=30)
    assert store.replace_lease(cid, "dead", successor)
    held = store.lease(cid)
    assert held is not None and (held.proposing_since, held.proposing_for) == (None, None)
    store.close()
