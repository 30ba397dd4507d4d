"""A facility's live consumers: ``Runner(subscriptions=...)`` on every slot's RunEngine."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from loop import Runner, Store, parse_campaign
from loop.consumers import QueuedConsumer

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


def test_a_consumer_that_hangs_holds_no_trial(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Tiled server that stops answering must not stop the instrument: called on the
    RunEngine's thread, a consumer that hung held the trial, its timeout and Ctrl-C until it
    returned. It now waits on its own thread; the runner ends on time, names it, and it gets
    the rest of its documents, in order, once it answers again."""
    monkeypatch.setattr("loop.consumers.DRAIN_SECONDS", 0.5)
    answering = threading.Event()
    seen: list[tuple[str, int]] = []
    runs: dict[str, list[str]] = {}  # run uid -> its documents' names, as received
    of_descriptor: dict[str, str] = {}

    def hung_server(name: str, doc: dict[str, Any]) -> None:
        answering.wait()
        seen.append((name, threading.get_ident()))
        if name == "descriptor":
            of_descriptor[doc["uid"]] = doc["run_start"]
        run = {"start": doc.get("uid"), "event": of_descriptor.get(doc.get("descriptor", ""))}
        runs.setdefault(run.get(name) or doc["run_start"], []).append(name)

    runner, store = _runner(tmp_path, hung_server)
    summary = runner.run()
    assert (summary.status, summary.completed, summary.failed) == ("completed", 4, 0)
    assert len(seen) == 0
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "did not take its last 16 document(s) within 0.5 s" in said
    assert "closedloop export --format jsonl" in said
    answering.set()
    deadline = time.monotonic() + 10
    while len(seen) < 16 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(seen) == 16
    assert threading.get_ident() not in {ident for _, ident in seen}
    # each run's documents in the order the RunEngine emitted them
    assert len(runs) == 4
    assert all(names == ["start", "descriptor", "event", "stop"] for names in runs.values())


def test_a_slow_consumer_has_every_document_when_the_run_returns(tmp_path: Path) -> None:
    seen: list[str] = []

    def slow_writer(name: str, doc: dict[str, Any]) -> None:
        time.sleep(0.05)
        seen.append(name)

    runner, _ = _runner(tmp_path, slow_writer)
    runner.run()
    assert len(seen) == 16 and seen.count("start") == 4


def test_a_consumer_too_far_behind_is_given_up_and_keeps_a_whole_prefix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server down for a long campaign must not grow the runner's memory without bound;
    what the consumer was given stays a prefix of the documents (no hole inside it)."""
    answering = threading.Event()
    seen: list[int] = []
    consumer = QueuedConsumer(lambda name, doc: (answering.wait(), seen.append(doc["n"])), "srv")
    consumer.max_backlog = 3
    for n in range(10):
        consumer("event", {"n": n})
    said = [r.getMessage() for r in caplog.records if "srv" in r.getMessage()]
    assert len(said) == 1 and "gets no more documents in this session" in said[0]
    assert consumer.dropped >= 6
    answering.set()
    assert consumer.close(5.0) == 0
    assert seen == list(range(len(seen))) and 3 <= len(seen) <= 4
    # a new session starts afresh
    consumer("event", {"n": 100})
    assert consumer.close(5.0) == 0 and seen[-1] == 100
