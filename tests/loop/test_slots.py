"""Several instrument slots and Dask executors end to end: real RunEngines, real SQLite,
a real LocalCluster (2 worker processes on loopback)."""

from __future__ import annotations

import _thread
import csv
import io
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest

import loop.runner as runner_module
from instruments import ExecutorUnavailable, build_instrument, slot_seed
from loop import Runner, Store, parse_campaign
from loop.report import to_csv
from loop.scheduler import Job, Proposal, Proposed, Scheduler, Slot, SlotDone
from loop.store import TrialRow, export_records
from planners import FloatParameter, Observation, SobolPlanner, Space
from simulators import get_problem
from tests.cli_process import closedloop
from tests.dask_cluster import scheduler_process

BRANIN = """
name: slots
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, INSTRUMENT}
planner: PLANNER
budget: BUDGET
seed: 3
"""


def _loaded(
    tmp_path: Path,
    instrument: str,
    budget: str = "{max_trials: 9}",
    planner: str = "{kind: sobol}",
) -> Any:
    text = BRANIN.replace("INSTRUMENT", instrument).replace("BUDGET", budget)
    text = text.replace("PLANNER", planner)
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    return parse_campaign(text, path=path, base_dir=tmp_path)


def _store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'store.db'}")


def _check_consistent(store: Store, cid: int) -> list[TrialRow]:
    """Every trial terminal, numbers 1..n, completed ones with their full run and outputs."""
    trials = store.trials(cid)
    assert [t.number for t in trials] == list(range(1, len(trials) + 1))
    assert all(t.status in ("completed", "failed", "abandoned") for t in trials)
    observations = store.observations(cid)
    branin = get_problem("branin")
    uids = [t.run_uid for t in trials if t.run_uid]
    assert len(uids) == len(set(uids))
    for t in trials:
        docs = store.documents(t.id or 0)
        if t.status == "completed":
            assert [d.name for d in docs] == ["start", "descriptor", "event", "stop"]
            assert docs[0].body["trial_id"] == t.id
            want = branin.evaluate(t.readbacks or {})["y"]
            assert observations[t.id or 0]["y"] == pytest.approx(want, rel=1e-12)
        if docs:  # a started run always has its stop document, even when aborted
            assert docs[-1].name == "stop"
        assert t.slot is not None
    return trials


def _max_overlap(trials: list[TrialRow]) -> int:
    """How many trials were in flight at once, at most (from the stored timestamps)."""
    edges = []
    for t in trials:
        if t.started_at and t.finished_at:
            edges += [(t.started_at, 1), (t.finished_at, -1)]
    level = peak = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        level += step
        peak = max(peak, level)
    return peak


@pytest.fixture
def suggests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, list[dict[str, Any]]]]:
    """Every ``suggest(n, pending)`` call the runner's planner gets."""
    calls: list[tuple[int, list[dict[str, Any]]]] = []
    make = runner_module.make_planner

    def spying(*args: Any, **kwargs: Any) -> Any:
        planner = make(*args, **kwargs)
        suggest = planner.suggest

        def record(n: int = 1, pending: Any = ()) -> Any:
            calls.append((n, [dict(p) for p in pending]))
            return suggest(n, pending=pending)

        planner.suggest = record  # type: ignore[method-assign]
        return planner

    monkeypatch.setattr(runner_module, "make_planner", spying)
    return calls


# ---------------------------------------------------------------------------- slots
def _scheduler(
    slots: int, lookahead: int, batch_size: int = 1, initial: int | None = None
) -> Scheduler:
    """A scheduler whose slots are never started: only its request policy is exercised."""
    free = [Slot(i, cast(Any, None), cast(Any, None)) for i in range(slots)]
    return Scheduler(
        free, cast(Any, None), batch_size=batch_size, lookahead=lookahead, initial=initial
    )


def _occupy(sched: Scheduler, busy: int, ready: int) -> None:
    proposal = Proposal({"x1": 0.0, "x2": 0.0}, "model")
    for slot in sched.slots[:busy]:
        slot.job = Job(slot.index, 0, 0, proposal)
    sched.ready.extend([proposal] * ready)


@pytest.mark.parametrize(
    ("busy", "ready", "batch_size", "room", "wanted"),
    [
        (0, 0, 1, None, 4),  # every slot waits: one joint ask for all four
        (2, 0, 1, None, 2),  # two wait
        (3, 1, 1, None, 1),  # none waits, the lookahead is short: one more, made fresh
        (4, 3, 1, None, 1),
        (4, 4, 1, None, 0),  # lookahead full
        (4, 1, 3, None, 3),  # never fewer than the batch size
        (0, 0, 1, 2, 2),  # never more than the budget has room for
        (4, 2, 1, 2, 0),
    ],
)
def test_the_scheduler_asks_for_the_waiting_slots_then_one_at_a_time(
    busy: int, ready: int, batch_size: int, room: int | None, wanted: int
) -> None:
    sched = _scheduler(4, lookahead=4, batch_size=batch_size)
    _occupy(sched, busy, ready)
    assert sched.wanted(room) == wanted


def test_before_the_first_outcome_only_the_initial_design_is_made_ahead() -> None:
    sched = _scheduler(4, lookahead=4, initial=5)
    assert sched.wanted(None) == 4  # four waiting slots are served, design or not
    _occupy(sched, 4, 0)
    assert (sched.ahead(), sched.wanted(None)) == (1, 1)  # the fifth design point
    sched.ready.append(Proposal({"x1": 0.0, "x2": 0.0}, "initial"))
    assert sched.wanted(None) == 0  # not a sixth: the design would grow
    sched.planner.ingest([Observation(parameters={"x1": 0.0, "x2": 0.0}, outputs={"y": 1.0})])
    assert (sched.ahead(), sched.wanted(None)) == (4, 1)  # outcomes known: full lookahead
    small = _scheduler(4, lookahead=4, initial=2)
    _occupy(small, 4, 0)
    assert small.wanted(None) == 0


def test_an_answer_still_queued_is_not_asked_for_again() -> None:
    """The planner thread ends the moment it queues its answer; until the coordinator takes
    that answer, its points are in no pending list, so asking again re-proposed them."""
    space = Space([FloatParameter(name=n, bounds=(0.0, 1.0)) for n in ("x1", "x2")])
    free = [Slot(i, cast(Any, None), cast(Any, None)) for i in range(2)]
    sched = Scheduler(free, SobolPlanner(space, seed=1), lookahead=2)
    assert sched.wanted(None) == 2
    sched.planner.request(2, sched.pending_points())
    sched.planner.join(timeout=10)  # the thread is done, its answer waits in the queue
    assert sched.planner.busy
    assert sched.wanted(None) == 0
    event = sched.next_event(timeout=1)
    assert isinstance(event, Proposed)
    assert not sched.planner.busy
    sched.ready.extend(event.proposals)
    assert len(sched.pending_points()) == 2
    sched.planner.request(sched.wanted(None), sched.pending_points())
    sched.planner.join(timeout=10)
    again = sched.next_event(timeout=1)
    assert isinstance(again, Proposed)
    assert not {tuple(p.parameters.items()) for p in again.proposals} & {
        tuple(p.parameters.items()) for p in event.proposals
    }


def test_two_fast_slots_never_run_the_same_point(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, "latency: 0.02, count: 2", "{max_trials: 24}")
    store = _store(tmp_path)
    summary = Runner(loaded, store).run()
    assert (summary.status, summary.completed) == ("completed", 24)
    points = [tuple(sorted(t.parameters.items())) for t in _check_consistent(store, 1)]
    assert len(set(points)) == 24
    # the export says which slot ran each trial (the CSV had no slot column)
    rows = list(csv.DictReader(io.StringIO(to_csv(export_records(store, 1)))))
    assert {r["slot"] for r in rows} == {"0", "1"}


def test_a_resumed_session_never_replays_a_slots_stream(tmp_path: Path) -> None:
    """Slot k's seed is derived from [seed, k], a resumed session's from the trial count:
    untagged, slot 0 of a session resumed after k trials replayed slot k's noise."""
    runner = Runner(_loaded(tmp_path, "count: 4"), _store(tmp_path))
    slots = {slot_seed(runner.seed, k) for k in range(4)}
    resumed = {slot_seed(runner._instrument_seed(n), k) for n in range(1, 9) for k in range(4)}
    assert not slots & resumed


def _pace(sched: Scheduler, trial: float, suggest: float, design: int = 0) -> None:
    """Feed the scheduler two finished trials of ``trial`` s and model proposals of
    ``suggest`` s (after ``design`` free design points) through its event queue."""
    point = {"x1": 0.0, "x2": 0.0}
    proposals = [Proposal(point, "initial", 0.0)] * design + [Proposal(point, "model", suggest)]
    sched.events.put(Proposed(proposals))
    for number in range(2):
        job = Job(0, number, number, proposals[0], started=time.perf_counter() - trial)
        sched.events.put(SlotDone(job, None))
    while sched.next_event(timeout=0.01) is not None:
        pass


@pytest.mark.parametrize(
    ("trial", "suggest", "depth"),
    [
        (600.0, 0.3, 0),  # a real instrument: every proposal made fresh, no queue
        (30.0, 1.0, 1),  # planner load 4 x 1 / 30 = 0.13: one ready
        (1.0, 0.1, 3),  # load 0.4
        (1.0, 0.2, 4),  # load 0.8: the whole lookahead (part a of benchmarks/parallel.py)
        (1.0, 2.0, 4),  # never beyond it
    ],
)
def test_the_queue_is_as_deep_as_the_pace_needs(
    trial: float, suggest: float, depth: int, caplog: pytest.LogCaptureFixture
) -> None:
    sched = _scheduler(4, lookahead=4)
    assert sched.depth() == 4  # nothing timed yet: keep every slot fed
    _pace(sched, trial, suggest)
    with caplog.at_level("INFO", logger="loop.scheduler"):
        assert sched.depth() == depth
    # a change of depth is logged once, with the pace behind it
    said = [r.getMessage() for r in caplog.records if "proposal(s) ready" in r.getMessage()]
    assert len(said) == (0 if depth == 4 else 1)
    assert all(m.startswith(f"keeping {depth} proposal(s) ready: suggest") for m in said)
    assert sched.ahead() == depth  # no initial-design limit on this scheduler
    _occupy(sched, 4, 0)
    assert sched.wanted(None) == min(depth, 1)  # one at a time while short, none if no queue


def test_design_points_do_not_count_as_planner_time() -> None:
    sched = _scheduler(4, lookahead=4)
    _pace(sched, 1.0, 0.2, design=5)  # five free design points, one 0.2 s model proposal
    assert sched.depth() == 4
    one_slot = _scheduler(1, lookahead=0)
    _pace(one_slot, 1.0, 0.2)
    assert one_slot.depth() == 0  # one slot stays sequential


@pytest.mark.slow
def test_three_slots_run_a_campaign_in_parallel_without_duplicates(
    tmp_path: Path, suggests: list[tuple[int, list[dict[str, Any]]]]
) -> None:
    loaded = _loaded(
        tmp_path,
        "latency: 0.3, count: 3",
        "{max_trials: 10}",
        "{kind: botorch, initial: {kind: sobol, n: 4}}",
    )
    store = _store(tmp_path)
    summary = Runner(loaded, store).run()
    assert (summary.status, summary.completed, summary.failed) == ("completed", 10, 0)
    trials = _check_consistent(store, summary.campaign_id)
    assert len(trials) == 10  # never more trials started than the budget needs
    points = [tuple(sorted(t.parameters.items())) for t in trials]
    assert len(set(points)) == len(points)
    assert {t.slot for t in trials} == {0, 1, 2}
    # a catalog tells the slots' runs apart as the store does
    for t in trials:
        start = next(d.body for d in store.documents(t.id or 0) if d.name == "start")
        assert start["slot"] == t.slot
    assert _max_overlap(trials) == 3
    # the planner was told what was in flight: model proposals with 3 points pending
    assert any(len(pending) >= 2 for _, pending in suggests)
    # one ask for the three idle slots, then one point at a time: the rest of the initial
    # design (4 points) before the first outcome, model points ahead after it
    assert [n for n, _ in suggests[:2]] == [3, 1], [n for n, _ in suggests]
    assert [t.kind for t in trials].count("initial") == 4


@pytest.mark.slow
def test_a_failing_slot_does_not_stop_the_others(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, "latency: 0.1, count: 3", "{max_trials: 8, max_failures: 50}")
    built: list[int] = []

    def factory(campaign: Any, seed: int) -> Any:
        config = campaign.instrument
        if len(built) == 1:  # slot 1 is broken: every run fails
            config = config.model_copy(update={"failure_rate": 1.0})
        built.append(seed)
        return build_instrument(config, campaign.parameters, base_dir=tmp_path, seed=seed)

    store = _store(tmp_path)
    summary = Runner(loaded, store, instrument_factory=factory).run()
    assert (summary.status, summary.completed) == ("completed", 8)
    assert len(set(built)) == 3  # each slot its own seed
    trials = _check_consistent(store, summary.campaign_id)
    failed = [t for t in trials if t.status == "failed"]
    assert failed and {t.slot for t in failed} == {1}
    assert all("injected instrument fault" in (t.error or "") for t in failed)
    assert {t.slot for t in trials if t.status == "completed"} == {0, 2}


def test_one_slot_with_a_batch_proposes_jointly_and_runs_them_in_turn(
    tmp_path: Path, suggests: list[tuple[int, list[dict[str, Any]]]]
) -> None:
    loaded = _loaded(tmp_path, "latency: 0.0", "{max_trials: 7}", "{kind: sobol, batch_size: 3}")
    store = _store(tmp_path)
    summary = Runner(loaded, store).run()
    assert summary.completed == 7
    assert [n for n, _ in suggests] == [3, 3, 1]  # the last call: only the budget left
    assert [len(p) for _, p in suggests] == [0, 0, 0]
    trials = _check_consistent(store, summary.campaign_id)
    assert _max_overlap(trials) == 1 and {t.slot for t in trials} == {0}


@pytest.mark.slow
def test_request_stop_with_trials_in_flight_then_resume(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, "latency: 0.6, count: 3", "{max_trials: 9}")
    store = _store(tmp_path)

    class StopAtFive:
        runner: Runner

        def trial_started(self, number: int, parameters: dict[str, Any]) -> None:
            if number == 5:
                threading.Timer(0.2, self.runner.request_stop, ["stopped by the test"]).start()

        def trial_finished(self, report: Any) -> None:
            pass

    listener = StopAtFive()
    runner = Runner(loaded, store, listener=listener)
    listener.runner = runner
    summary = runner.run()
    assert (summary.status, summary.reason) == ("stopped", "stopped by the test")
    trials = _check_consistent(store, summary.campaign_id)
    abandoned = [t for t in trials if t.status == "abandoned"]
    assert len(abandoned) >= 2  # several were in flight, each aborted and stored
    for t in abandoned:
        assert "stopped by the test" in (t.error or "")
        docs = store.documents(t.id or 0)
        assert docs[-1].name == "stop" and docs[-1].body["exit_status"] == "abort"
    assert store.campaign(summary.campaign_id).status == "stopped"
    resumed = Runner.from_store(store).resume()
    assert (resumed.status, resumed.completed) == ("completed", 9)
    trials = _check_consistent(store, summary.campaign_id)
    assert sum(t.status == "completed" for t in trials) == 9


@pytest.mark.slow
def test_ctrl_c_with_trials_in_flight_stores_them_abandoned(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, "latency: 0.6, count: 2", "{max_trials: 8}")
    store = _store(tmp_path)

    class InterruptAtThree:
        def trial_started(self, number: int, parameters: dict[str, Any]) -> None:
            if number == 3:
                threading.Timer(0.2, _thread.interrupt_main).start()

        def trial_finished(self, report: Any) -> None:
            pass

    runner = Runner(loaded, store, listener=InterruptAtThree())
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    cid = runner.campaign_id or 0
    trials = _check_consistent(store, cid)
    assert any(t.status == "abandoned" for t in trials)
    assert store.campaign(cid).status == "stopped"
    assert store.lease(cid) is None
    resumed = Runner.from_store(store).resume()
    assert (resumed.status, resumed.completed) == ("completed", 8)
    _check_consistent(store, cid)


# ---------------------------------------------------------------------------- Dask
@pytest.mark.slow
def test_a_local_dask_cluster_computes_the_campaign(tmp_path: Path) -> None:
    loaded = _loaded(tmp_path, "count: 2, executor: {kind: local, workers: 2}", "{max_trials: 6}")
    store = _store(tmp_path)
    runner = Runner(loaded, store)
    clusters: list[Any] = []
    make = runner._default_instrument

    def factory(campaign: Any, seed: int) -> Any:
        clusters.append(runner._executor)
        return make(campaign, seed)

    runner._instrument_factory = factory
    summary = runner.run()
    assert (summary.status, summary.completed) == ("completed", 6)
    _check_consistent(store, summary.campaign_id)
    executor = clusters[0]
    assert executor is not None and clusters == [executor, executor]  # one per campaign
    assert executor.address.startswith("tls://127.0.0.1:")  # mutual TLS
    assert executor.cluster.status.name == "closed"  # closed at the end


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_lost_dask_scheduler_stops_the_campaign_resumable(tmp_path: Path) -> None:
    """Was: every trial failed (ClosedClientError) until max_failures ended the campaign
    `failed`. The runner wires the executor's ``on_lost`` to ``request_stop``."""
    with scheduler_process(tmp_path) as (proc, address):  # no worker: the first trial waits
        executor = f"executor: {{kind: dask, address: '{address}'}}"
        loaded = _loaded(tmp_path, executor, "{max_trials: 5, max_failures: 2}")

        class KillTheScheduler:
            def trial_started(self, number: int, parameters: dict[str, Any]) -> None:
                threading.Timer(1.0, proc.kill).start()

            def trial_finished(self, report: Any) -> None:
                pass

        store = _store(tmp_path)
        summary = Runner(loaded, store, listener=KillTheScheduler()).run()
    assert summary.status == "stopped", summary.reason
    assert f"the Dask scheduler at {address} is gone" in summary.reason
    assert summary.failed == 0  # the failure budget is not spent on a lost cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_an_unreachable_scheduler_is_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    loaded = _loaded(
        tmp_path, f'executor: {{kind: dask, address: "{address}", connect_timeout: 2}}'
    )
    store = _store(tmp_path)
    runner = Runner(loaded, store)
    t0 = time.monotonic()
    with pytest.raises(ExecutorUnavailable) as info:
        runner.run()
    assert time.monotonic() - t0 < 20
    message = str(info.value)
    assert address in message and "executor.address" in message and "kind: local" in message
    # refused before the campaign was stored: fix the address and run it again
    assert runner.campaign_id is None and store.campaigns() == []


SLOW_MODEL = """
import time

def measure(inputs):
    time.sleep(SLEEP)
    return {"y": (inputs["x1"] - 1.0) ** 2 + inputs["x2"]}
"""


@pytest.mark.slow
def test_a_worker_killed_mid_trial_fails_that_trial_and_the_campaign_goes_on(
    tmp_path: Path,
) -> None:
    (tmp_path / "model.py").write_text(SLOW_MODEL.replace("SLEEP", "1.5"))
    text = """
name: killed-worker
parameters:
  - {name: x1, type: float, bounds: [0, 2]}
  - {name: x2, type: float, bounds: [0, 1]}
objectives: [{name: y, goal: minimize}]
instrument:
  function: "model.py:measure"
  outputs: [y]
  executor: {kind: local, workers: 2}
planner: {kind: sobol}
budget: {max_trials: 3, max_failures: 5}
seed: 1
"""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    loaded = parse_campaign(text, path=path, base_dir=tmp_path)
    store = _store(tmp_path)
    killed: list[int] = []

    class KillDuringTwo:
        runner: Runner

        def trial_started(self, number: int, parameters: dict[str, Any]) -> None:
            if number == 2:
                threading.Thread(target=self.kill, daemon=True).start()

        def kill(self) -> None:
            client = self.runner._executor.client
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # the worker computing trial 2
                busy = [w for w, keys in client.processing().items() if keys]
                if busy:
                    pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
                time.sleep(0.05)

        def trial_finished(self, report: Any) -> None:
            pass

    listener = KillDuringTwo()
    runner = Runner(loaded, store, listener=listener)
    listener.runner = runner
    summary = runner.run()
    assert killed
    assert (summary.status, summary.completed, summary.failed) == ("completed", 3, 1)
    trials = store.trials(summary.campaign_id)
    assert [t.status for t in trials] == ["completed", "failed", "completed", "completed"]
    assert "KilledWorker" in (trials[1].error or "")
    # counted as the cluster's failure, not under the function's name (found in review)
    assert [f.kind for f in summary.failures] == ["worker lost"]
    docs = store.documents(trials[1].id or 0)
    assert docs[-1].name == "stop" and docs[-1].body["exit_status"] == "fail"


# ---------------------------------------------------------------------------- status
@pytest.mark.slow
def test_status_shows_each_slot_and_its_trial_in_flight(tmp_path: Path) -> None:

    loaded = _loaded(tmp_path, "latency: 0.05, count: 2", "{max_trials: 4}")
    store = _store(tmp_path)
    summary = Runner(loaded, store).run()
    cid = summary.campaign_id
    # a trial left in flight on slot 1 (as a crash would leave it)
    store.add_trial(cid, {"x1": 1.0, "x2": 2.0}, "model", slot=1)
    status = closedloop("status", "--store", store.url, cwd=tmp_path, wide=True)
    assert status.returncode == 0, status.stderr
    out = status.stdout
    assert "instrument slots (2)" in out
    rows = [line for line in out.splitlines() if "left running" in line or "idle" in line]
    assert len(rows) == 2
    # no runner drives the campaign: the trial is not being measured, resume reconciles it
    assert "#5" in rows[1] and "x1=1" in rows[1] and "left running (resume reconciles)" in rows[1]
    assert "idle" in rows[0]
