"""A facility's live consumers: ``Runner(subscriptions=...)`` on every slot's RunEngine."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from loop import Runner, Store, parse_campaign
from loop.consumers import QueuedConsumer, drain_consumers

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


def _runner(tmp_path: Path, *subscriptions: Any, text: str = CAMPAIGN) -> tuple[Runner, Store]:
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    loaded = parse_campaign(text, path=path, base_dir=tmp_path)
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


def _runs_in_order(documents: list[tuple[str, dict[str, Any]]]) -> dict[str, list[str]]:
    """Run uid -> the names of its documents, as received."""
    runs: dict[str, list[str]] = {}
    of_descriptor: dict[str, str] = {}
    for name, doc in documents:
        if name == "descriptor":
            of_descriptor[doc["uid"]] = doc["run_start"]
        run = {"start": doc.get("uid"), "event": of_descriptor.get(doc.get("descriptor", ""))}
        runs.setdefault(run.get(name) or doc["run_start"], []).append(name)
    return runs


class HungServer:
    """A catalog writer whose server stops answering until ``answering`` is set; it counts
    the threads inside it at once."""

    def __init__(self) -> None:
        self.answering = threading.Event()
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self.inside = 0
        self.most_inside = 0
        self.threads: set[int] = set()

    def __call__(self, name: str, doc: dict[str, Any]) -> None:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            self.answering.wait()
            time.sleep(0.001)  # room for a second thread to come in, if one could
            self.seen.append((name, doc))
            self.threads.add(threading.get_ident())
        finally:
            self.inside -= 1

    def wait_for(self, n: int) -> None:
        deadline = time.monotonic() + 20
        while len(self.seen) < n and time.monotonic() < deadline:
            time.sleep(0.01)


def test_a_consumer_that_hangs_holds_no_trial(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Tiled server that stops answering must not stop the instrument: called on the
    RunEngine's thread, a consumer that hung held the trial, its timeout and Ctrl-C until it
    returned. It now waits on its own thread; the runner ends on time, names it with the
    command that replays what it lacks, and it gets the rest, in order, once it answers."""
    monkeypatch.setattr("loop.consumers.STUCK_SECONDS", 0.5)
    server = HungServer()
    runner, store = _runner(tmp_path, server)
    summary = runner.run()
    assert (summary.status, summary.completed, summary.failed) == ("completed", 4, 0)
    assert server.seen == []
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "has not taken its last 16 document(s), from trial #1's run on" in said
    # they are not dropped: a replay would send them twice (review AB, session 39)
    assert "they reach it if it answers while this process runs" in said
    assert f"-c {summary.campaign_id} --format jsonl --from-trial 1` replays them" in said
    server.answering.set()
    server.wait_for(16)
    assert len(server.seen) == 16 and threading.get_ident() not in server.threads
    runs = _runs_in_order(server.seen)  # each run's documents in the order emitted
    assert len(runs) == 4
    assert all(names == ["start", "descriptor", "event", "stop"] for names in runs.values())


def test_a_stuck_consumer_is_named_while_the_trials_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, a hung server was plain to see: the trial stopped. Queued, it would be silent
    until the session's end, 2 500 trials later (found in review)."""
    monkeypatch.setattr("loop.consumers.STUCK_SECONDS", 0.3)
    server = HungServer()
    text = CAMPAIGN.replace("{simulator: branin, count: 2}", "{simulator: branin, latency: 0.2}")
    runner, _ = _runner(tmp_path, server, text=text)
    runner.run()
    said = [r.getMessage() for r in caplog.records if "has not returned" in r.getMessage()]
    assert len(said) == 1, said
    assert "has not returned from a document for" in said[0] and "trials go on" in said[0]
    server.answering.set()
    server.wait_for(16)
    again = [r.getMessage() for r in caplog.records if "answers again" in r.getMessage()]
    assert len(again) == 1


def test_one_callback_is_called_by_one_thread_across_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer given to ``run`` and again to ``Runner.from_store`` for the resume: left
    behind by the first session, it had a second thread call it at once, runs interleaved
    (found in review). Its documents now wait in one queue, the first session's first."""
    monkeypatch.setattr("loop.consumers.STUCK_SECONDS", 0.3)
    server = HungServer()
    runner, store = _runner(tmp_path, server)
    first = runner.run()
    resumed = Runner.from_store(store, first.campaign_id, max_trials=8, subscriptions=[server])
    resumed.resume()
    server.answering.set()
    server.wait_for(32)
    assert len(server.seen) == 32 and server.most_inside == 1 and len(server.threads) == 1
    numbers = [doc["trial_number"] for name, doc in server.seen if name == "start"]
    assert sorted(numbers[:4]) == [1, 2, 3, 4] and sorted(numbers[4:]) == [5, 6, 7, 8]
    assert all(
        n == ["start", "descriptor", "event", "stop"] for n in _runs_in_order(server.seen).values()
    )


def test_a_slow_consumer_has_every_document_when_the_run_returns(tmp_path: Path) -> None:
    """A slow catalog that is behind at the end gets every run: waited for as long as it
    makes progress (a fixed wait cut one off in the middle of a run; found in review)."""
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

    def server(name: str, doc: dict[str, Any]) -> None:
        answering.wait()
        seen.append(doc["n"])

    consumer = QueuedConsumer(server, "srv", max_backlog=3)
    for n in range(10):
        consumer("event", {"n": n})
    said = [r.getMessage() for r in caplog.records if "srv" in r.getMessage()]
    assert len(said) == 1 and "gets no more in this session" in said[0]
    assert consumer.dropped >= 6 and consumer.given_up
    answering.set()
    drain_consumers([consumer])
    assert seen == list(range(len(seen))) and 3 <= len(seen) <= 4
    # the next session starts afresh
    assert not consumer.given_up
    consumer("event", {"n": 100})
    drain_consumers([consumer])
    assert seen[-1] == 100


def test_a_consumer_that_raises_anything_keeps_its_thread(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[str] = []

    def exits(name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            raise SystemExit("the writer called sys.exit")
        seen.append(name)

    consumer = QueuedConsumer(exits)
    for name in ("start", "descriptor", "event", "stop"):
        consumer(name, {})
    drain_consumers([consumer])
    assert seen == ["descriptor", "event", "stop"]
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "keeps_its_thread.<locals>.exits raised on a start document" in said
    assert "0x" not in said  # named by its function, not its repr's address


def test_the_first_missing_run_is_the_lowest_trial_not_the_first_to_arrive() -> None:
    """With two slots trial 2's start can reach a consumer before trial 1's; the replay hint
    said `--from-trial 2` and left trial 1 out (found in CI)."""
    from loop.consumers import QueuedConsumer

    server = HungServer()
    consumer = QueuedConsumer(server)
    for number in (2, 1, 3):
        consumer("start", {"uid": f"run-{number}", "trial_number": number})
    deadline = time.monotonic() + 10
    while server.inside == 0 and time.monotonic() < deadline:  # trial 2's start is taken
        time.sleep(0.01)
    assert consumer.first_missing() == 1
    server.answering.set()
