"""Ctrl-C (or a notebook's interrupt: SIGINT) during ``Runner.run``/``resume`` called from
Python: a real RunEngine, a real SQLite store, real signals to the main thread.

Found in review: from Python nothing handled SIGINT, so its ``KeyboardInterrupt`` was raised
at whatever bytecode the signal landed on. Landing just after the loop had taken a trial's
"done" event off the queue, it lost the event: the stop then waited 60 s for a slot that had
long finished, and left that finished trial ``running``. And bluesky printed a 45-line
traceback for every failed or aborted run into the notebook.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from loop import Runner, Store, parse_campaign
from loop import scheduler as scheduler_module
from loop.scheduler import Scheduler, SlotDone

CAMPAIGN = """
name: nb
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, INSTRUMENT}
planner: {kind: sobol}
budget: {max_trials: 8, max_failures: 20}
seed: 2
"""

PROMPT = 15.0  # seconds: far below the 60 s the lost event cost, far above a clean stop


def _loaded(tmp_path: Path, instrument: str = "latency: 0.05") -> Any:
    text = CAMPAIGN.replace("INSTRUMENT", instrument)
    path = tmp_path / "nb.yaml"
    path.write_text(text)
    return parse_campaign(text, path=path, base_dir=tmp_path)


def _after_done(monkeypatch: pytest.MonkeyPatch, nth: int, act: Any) -> None:
    """Call ``act()`` right after the coordinator took the ``nth`` slot's-done event off the
    queue, before it records it: the window where the interrupt lost the event."""
    original = Scheduler.next_event
    seen = [0]

    def next_event(self: Scheduler, timeout: float = scheduler_module.POLL_SECONDS) -> Any:
        event = original(self, timeout)
        if isinstance(event, SlotDone):
            seen[0] += 1
            if seen[0] == nth:
                act()
        return event

    monkeypatch.setattr(Scheduler, "next_event", next_event)


def _stopped_and_resumable(store: Store, cid: int, *, finished: int) -> None:
    row = store.campaign(cid)
    assert row.status == "stopped", (row.status, row.stop_reason)
    assert store.lease(cid) is None
    trials = store.trials(cid)
    assert [t.status for t in trials[:finished]] == ["completed"] * finished
    assert "running" not in {t.status for t in trials}
    summary = Runner.from_store(store, cid).resume()
    assert (summary.status, summary.completed) == ("completed", 8)
    assert [t.number for t in store.trials(cid)] == list(range(1, len(store.trials(cid)) + 1))


def test_a_sigint_just_after_a_trial_finished_keeps_it_and_stops_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real SIGINT delivered to the main thread in the window between taking trial 3's
    outcome and recording it: the campaign stops at once, trial 3 completed, and the
    ``KeyboardInterrupt`` says what was kept and how to resume from Python."""
    assert threading.current_thread() is threading.main_thread()
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    _after_done(monkeypatch, 3, lambda: signal.raise_signal(signal.SIGINT))
    runner = Runner(_loaded(tmp_path), store)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt) as info:
        runner.run()
    assert time.monotonic() - t0 < PROMPT
    cid = runner.campaign_id or 0
    message = str(info.value)
    assert f"campaign 'nb' (id {cid}) stopped by an interrupt" in message, message
    assert f"Runner.from_store(Store({store.url!r}), {cid}).resume()" in message, message
    assert store.campaign(cid).stop_reason == "stopped by Ctrl-C"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    monkeypatch.undo()
    _stopped_and_resumable(store, cid, finished=3)
    store.close()


def test_a_keyboard_interrupt_raised_in_that_window_loses_nothing_either(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same window, the ``KeyboardInterrupt`` raised there (as Python's own SIGINT
    handler, or a runner off the main thread's caller, would): the stop records the taken
    outcome from its slot instead of waiting 60 s for it."""

    def interrupt() -> None:
        raise KeyboardInterrupt

    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    _after_done(monkeypatch, 3, interrupt)
    runner = Runner(_loaded(tmp_path), store)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt, match="Runner.from_store"):
        runner.run()
    assert time.monotonic() - t0 < PROMPT
    monkeypatch.undo()
    _stopped_and_resumable(store, runner.campaign_id or 0, finished=3)
    store.close()


SLOW = """
import pathlib
import time


def measure(inputs):
    if pathlib.Path(__file__).with_name("hang").exists():
        time.sleep(20)  # the trial stays in flight
    return {"y": inputs["x1"] ** 2 + inputs["x2"]}
"""


def test_a_second_sigint_stops_without_waiting_for_the_trial_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first stop hangs (the abort never reaches the run: patched out); a second SIGINT
    ends the call at once, the trial left ``running`` for resume, which reconciles it. The
    handler is Python's again afterwards. (The safe state it writes first is the EPICS
    tests': a function instrument has none.)"""
    monkeypatch.setattr(Scheduler, "abort_all", lambda self, reason, wait=0.1: None)
    (tmp_path / "slow.py").write_text(SLOW)
    (tmp_path / "hang").touch()
    main = threading.main_thread().ident or 0

    class Interrupts:
        def trial_started(self, number: int, parameters: dict[str, Any]) -> None:
            for delay in (0.3, 1.3):
                threading.Timer(delay, signal.pthread_kill, (main, signal.SIGINT)).start()

        def trial_finished(self, report: Any) -> None:
            pass

    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    text = CAMPAIGN.replace(
        "{simulator: branin, INSTRUMENT}", '{function: "slow.py:measure", outputs: [y]}'
    )
    loaded = parse_campaign(text, path=tmp_path / "nb.yaml", base_dir=tmp_path)
    runner = Runner(loaded, store, listener=Interrupts())
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt, match="Runner.from_store"):
        runner.run()
    assert time.monotonic() - t0 < PROMPT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    cid = runner.campaign_id or 0
    assert store.campaign(cid).status == "stopped"
    assert [t.status for t in store.trials(cid)] == ["running"]
    monkeypatch.undo()
    (tmp_path / "hang").unlink()
    resumed = Runner.from_store(store, cid).resume()
    assert (resumed.status, resumed.completed) == ("completed", 8)
    assert [r.status for r in resumed.reconciled] == ["abandoned"]
    store.close()


def test_bluesky_prints_no_traceback_for_the_trials_the_loop_records(tmp_path: Path) -> None:
    """Failed runs (``failure_rate``) log "Run aborted" with a traceback on the ``bluesky``
    logger (in a notebook, Python's last-resort handler prints it); during ``run`` it is
    dropped (the trials' errors say what failed), and only then: the filter is gone
    afterwards and the user's levels are untouched. With ``bluesky`` at DEBUG it passes."""
    bluesky = logging.getLogger("bluesky")
    filters, level = list(bluesky.filters), bluesky.level
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect(level=logging.WARNING)
    bluesky.addHandler(handler)
    loaded = _loaded(tmp_path, "latency: 0.01, failure_rate: 0.5")
    try:
        summary = Runner(loaded, Store(f"sqlite:///{tmp_path / 'a.db'}")).run()
        assert summary.failed > 0
        assert "Run aborted" not in seen, seen
        assert (bluesky.filters, bluesky.level) == (filters, level)
        bluesky.setLevel(logging.DEBUG)
        Runner(loaded, Store(f"sqlite:///{tmp_path / 'b.db'}")).run()
    finally:
        bluesky.removeHandler(handler)
        bluesky.setLevel(level)
    assert "Run aborted" in seen


def test_an_interrupt_as_the_last_trial_is_stored_returns_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Was: "stopped by an interrupt ... Continue it with ....resume()" for a campaign its
    budget had completed, whose resume then refused, and the summary lost (found in review,
    session 39). The interrupt comes as the budget's last trial is taken."""
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    _after_done(monkeypatch, 8, lambda: signal.raise_signal(signal.SIGINT))
    runner = Runner(_loaded(tmp_path), store)
    with caplog.at_level(logging.WARNING, logger="loop.runner"):
        try:
            summary = runner.run()
        except KeyboardInterrupt as exc:  # uncaught, it would end the whole test session
            pytest.fail(f"raised KeyboardInterrupt: {exc}")
    assert (summary.status, summary.completed) == ("completed", 8)
    assert store.campaign(runner.campaign_id or 0).status == "completed"
    assert "the interrupt came as campaign 'nb' ended by itself" in caplog.text
    store.close()


def test_a_resume_in_the_same_process_waits_for_the_call_left_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notebook: a cell interrupted while its function's call ran (a call cannot be
    interrupted), then ``Runner.from_store(...).resume()``. The resumed session entered the
    function at once, twice at the same time (found in review, session 39; a resumed
    session's slots have fresh seeds, so a guard keyed by the seed missed it)."""
    import _thread
    import sys

    calls: list[float] = []
    active = [0, 0]  # now, peak
    lock = threading.Lock()

    def measure(inputs: dict[str, float]) -> dict[str, float]:
        with lock:
            calls.append(inputs["x1"])
            active[0] += 1
            active[1] = max(active)
            second = len(calls) == 2
        try:
            if second:  # interrupted while it runs, and it runs on
                threading.Timer(0.3, _thread.interrupt_main).start()
                time.sleep(1.5)
            return {"y": inputs["x1"]}
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(sys.modules["__main__"], "measure", measure, raising=False)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    text = CAMPAIGN.replace(
        "{simulator: branin, INSTRUMENT}", '{function: "__main__:measure", outputs: [y]}'
    )
    path = tmp_path / "nb.yaml"
    path.write_text(text)
    runner = Runner(parse_campaign(text, path=path, base_dir=tmp_path), store)
    with pytest.raises(KeyboardInterrupt):
        runner.run()
    summary = Runner.from_store(store, runner.campaign_id, max_trials=4).resume()
    assert summary.completed == 4
    assert active[1] == 1, "the function was entered twice at once"
    store.close()
