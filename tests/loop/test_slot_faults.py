"""Several instrument slots under faults: a stop that lands inside a store write, a function
instrument that never returns, a slot that keeps failing, a stop during a slow suggest, and
what ``status`` says about trials nobody measures any more (ADR 0005)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest

import loop.runner as runner_module
from instruments import build_instrument
from loop import Runner, Store, parse_campaign
from loop.scheduler import Job, Proposal, Scheduler, Slot

BRANIN = """
name: slot-faults
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, INSTRUMENT}
planner: {kind: sobol}
budget: BUDGET
seed: 3
"""


def _loaded(tmp_path: Path, instrument: str, budget: str) -> Any:
    text = BRANIN.replace("INSTRUMENT", instrument).replace("BUDGET", budget)
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    return parse_campaign(text, path=path, base_dir=tmp_path)


def _store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'store.db'}")


def _script(tmp_path: Path, body: str, timeout: float = 90) -> dict[str, Any]:
    """Run ``body`` in a fresh interpreter (its signals, its main thread); its JSON line.

    A hang (the defects these tests guard against) is a failed test, not a stuck worker.
    """
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    try:
        done = subprocess.run(
            [sys.executable, str(script), str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the campaign did not stop within {timeout} s: {exc.stderr!r}"[-3000:])
    assert done.returncode == 0, done.stderr[-3000:]
    return cast(dict[str, Any], json.loads(done.stdout.strip().splitlines()[-1]))


# ------------------------------------------------------------------ a signal in a write
@pytest.mark.slow
def test_a_signal_inside_a_store_write_stops_a_multi_slot_campaign(tmp_path: Path) -> None:
    """The CLI's handler runs on the coordinator's thread, here inside a slow commit that
    holds the store's write lock while three RunEngines wait for it in their document
    sinks. It used to abort them right there (RE.abort waits for each engine's loop):
    a deadlock only a second Ctrl-C ended."""
    out = _script(
        tmp_path,
        """
        import json, os, signal, sys, time
        from pathlib import Path
        from loop import Runner, Store, parse_campaign
        from loop.cli import _stop_on_signals

        here = Path(sys.argv[1])
        text = '''
        name: deadlock
        parameters:
          - {name: x1, type: float, bounds: [-5, 10]}
          - {name: x2, type: float, bounds: [0, 15]}
        objectives: [{name: y, goal: minimize}]
        instrument: {simulator: branin, latency: 0.2, count: 4}
        planner: {kind: sobol}
        budget: {max_trials: 40}
        seed: 1
        '''
        path = here / "deadlock.yaml"
        path.write_text(text)
        loaded = parse_campaign(text, path=path, base_dir=here)
        store = Store(f"sqlite:///{here / 'store.db'}")
        finish = Store.finish_trial
        calls = []
        out = {}

        def slow_finish(self, *args, **kwargs):
            with self._write_lock:  # what every store write takes, held as by a slow commit
                calls.append(1)
                if len(calls) == 6:
                    time.sleep(0.4)  # the other slots' sinks now wait for the lock
                    out["signal_at"] = time.monotonic()
                    os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, lock held
                    time.sleep(0.3)
                return finish(self, *args, **kwargs)

        Store.finish_trial = slow_finish
        runner = Runner(loaded, store)
        with _stop_on_signals(runner):
            summary = runner.run()
        out["stop_seconds"] = time.monotonic() - out["signal_at"]
        out["summary"] = [summary.status, summary.reason, summary.abandoned]
        out["campaign"] = runner.campaign_id
        print(json.dumps(out))
        os._exit(0)
        """,
    )
    status, reason, abandoned = out["summary"]
    assert (status, reason) == ("stopped", "stopped by Ctrl-C")
    # The runs in flight wait in their sinks; once the lock frees they may finish before the
    # abort lands (then kept as measured: their stop said success) or be abandoned: either
    # is recorded. What matters is the prompt stop and that nothing stays running.
    assert abandoned >= 0 and out["stop_seconds"] < 5
    store = _store(tmp_path)
    cid = out["campaign"]
    trials = store.trials(cid)
    assert not [t for t in trials if t.status == "running"]
    for t in trials:
        if t.status == "abandoned":
            docs = store.documents(t.id or 0)
            assert docs and docs[-1].name == "stop" and docs[-1].body["exit_status"] == "abort"
    assert store.campaign(cid).status == "stopped" and store.lease(cid) is None


# ------------------------------------------------------------------ a hung function
@pytest.mark.slow
def test_a_hung_function_at_latency_0_times_out_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    """A ``function:`` instrument that blocks for some inputs, at the default latency 0:
    it used to run on the RunEngine's event loop, so neither the timeout nor Ctrl-C could
    ever end the run."""
    out = _script(
        tmp_path,
        """
        import json, os, signal, sys, threading, time
        from pathlib import Path
        from loop import Runner, Store, parse_campaign
        from loop.cli import _stop_on_signals

        here = Path(sys.argv[1])
        (here / "model.py").write_text(
            "import threading\\n"
            "STUCK = threading.Event()\\n"
            "def measure(inputs):\\n"
            "    if inputs['x1'] > 6:\\n"
            "        STUCK.wait(4)  # an instrument call that returns late\\n"
            "    return {'y': (inputs['x1'] - 1) ** 2 + (inputs['x2'] - 2) ** 2}\\n"
        )
        text = '''
        name: hung
        parameters:
          - {name: x1, type: float, bounds: [-5, 10]}
          - {name: x2, type: float, bounds: [0, 15]}
        objectives: [{name: y, goal: minimize}]
        instrument: {function: "model.py:measure", outputs: [y], timeout: 2}
        planner: {kind: sobol}
        budget: {max_trials: 30}
        seed: 3
        '''
        path = here / "hung.yaml"
        path.write_text(text)
        loaded = parse_campaign(text, path=path, base_dir=here)
        store = Store(f"sqlite:///{here / 'store.db'}")
        out = {"trials": []}

        class Listener:
            timed_out = 0

            def trial_started(self, number, parameters):
                # the next hung trial after a timed-out one: Ctrl-C 0.3 s into it
                if parameters["x1"] > 6 and self.timed_out and "signal_at" not in out:
                    def interrupt():
                        out["signal_at"] = time.monotonic()
                        os.kill(os.getpid(), signal.SIGINT)
                    threading.Timer(0.3, interrupt).start()

            def trial_finished(self, report):
                out["trials"].append([report.number, report.status, report.error or ""])
                self.timed_out += "timed out" in (report.error or "")

        runner = Runner(loaded, store, listener=Listener())
        with _stop_on_signals(runner):
            summary = runner.run()
        out["stop_seconds"] = time.monotonic() - out["signal_at"]
        out["summary"] = [summary.status, summary.reason]
        print(json.dumps(out))
        os._exit(0)
        """,
    )
    trials = out["trials"]
    timed_out = [
        i for i, t in enumerate(trials) if t[1] == "failed" and "timed out after 2 s" in t[2]
    ]
    assert timed_out, trials
    # the campaign went on after the timeout
    assert any(t[1] == "completed" for t in trials[timed_out[0] + 1 :]), trials
    # Ctrl-C during the next hung trial: stopped at once, well before its timeout
    assert out["summary"] == ["stopped", "stopped by Ctrl-C"]
    assert trials[-1][1] == "abandoned" and out["stop_seconds"] < 1.5, out


# ------------------------------------------------------------------ a broken slot
def _one_broken_slot(tmp_path: Path, broken: int = 0) -> Any:
    """Slot ``broken``'s instrument fails every run at once; the others work (0.1 s)."""
    built: list[int] = []

    def factory(campaign: Any, seed: int) -> Any:
        config = campaign.instrument
        if len(built) % campaign.instrument.count == broken:
            # an instrument fault on every run (a failing region would be the point's fault)
            config = config.model_copy(update={"failure_rate": 1.0, "latency": 0.0})
        built.append(seed)
        return build_instrument(config, campaign.parameters, base_dir=tmp_path, seed=seed)

    return factory


class _Recorder:
    def __init__(self) -> None:
        self.retired: list[tuple[int, str]] = []
        self.reports: list[Any] = []

    def trial_started(self, number: int, parameters: dict[str, Any]) -> None:
        pass

    def trial_finished(self, report: Any) -> None:
        self.reports.append(report)

    def slot_retired(self, slot: int, reason: str) -> None:
        self.retired.append((slot, reason))


def test_a_slot_that_fails_every_run_is_retired_and_the_others_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the default max_failures (10), a broken slot used to fail the campaign in under
    a second, the healthy slots' runs aborted."""
    from loop.scheduler import RETIRE_AFTER

    loaded = _loaded(tmp_path, "latency: 0.1, count: 3", "{max_trials: 9}")
    store = _store(tmp_path)
    listener = _Recorder()
    runner = Runner(loaded, store, listener=listener, instrument_factory=_one_broken_slot(tmp_path))
    closed: list[int] = []
    close = Slot.close

    def spy_close(self: Slot) -> None:
        closed.append(self.index)
        close(self)

    monkeypatch.setattr(Slot, "close", spy_close)
    summary = runner.run()
    assert (summary.status, summary.completed) == ("completed", 9), summary.reason
    trials = store.trials(summary.campaign_id)
    failed = [t for t in trials if t.status == "failed"]
    assert {t.slot for t in failed} == {0} and RETIRE_AFTER <= len(failed) < 10
    assert [slot for slot, _ in listener.retired] == [0]
    assert "failed in a row" in listener.retired[0][1]
    # no trial on slot 0 after the one that retired it; its devices closed at once
    last = max(t.number for t in failed)
    assert not [t for t in trials if t.slot == 0 and t.number > last]
    assert "slot 0 retired: " in (failed[-1].error or "")
    assert closed[0] == 0
    assert {t.slot for t in trials if t.status == "completed"} == {1, 2}

    # `status` shows it retired, with the reason
    from loop import cli

    monkeypatch.setattr(cli.console, "width", 200)
    c = loaded.campaign
    with cli.console.capture() as captured:
        cli._slots_table(c, trials, live=False)
    rows = [line for line in captured.get().splitlines() if line.startswith("│ 0")]
    assert rows and "retired" in rows[0], captured.get()


def test_one_slot_failing_every_run_still_fails_the_campaign(tmp_path: Path) -> None:
    """One slot campaigns are unchanged: no one to retire it for, max_failures decides."""
    loaded = _loaded(
        tmp_path, "latency: 0.0, failing_region: 'x1 > -100'", "{max_trials: 9, max_failures: 4}"
    )
    summary = Runner(loaded, _store(tmp_path)).run()
    assert (summary.status, summary.failed) == ("failed", 4)
    assert summary.reason.startswith("4 trials failed (budget.max_failures = 4)")
    assert "slot" not in summary.reason


def test_max_failures_names_the_slots_and_counts_every_failure(tmp_path: Path) -> None:
    """Every slot failing (nothing to retire): the reason names where the failures came
    from, and counts the ones that ended while the runs in flight were stopped, as the
    summary does (it said "5 trials failed" where the summary said 6)."""
    loaded = _loaded(
        tmp_path, "latency: 0.3, failure_rate: 1.0, count: 4", "{max_trials: 10, max_failures: 5}"
    )
    store = _store(tmp_path)
    summary = Runner(loaded, store).run()
    assert summary.status == "failed"
    assert summary.reason.startswith(f"{summary.failed} trials failed"), (
        summary.reason,
        summary.failed,
    )
    assert store.campaign(summary.campaign_id).stop_reason == summary.reason
    trials = store.trials(summary.campaign_id)
    by_slot = {
        s: sum(t.status == "failed" and t.slot == s for t in trials)
        for s in {t.slot for t in trials}
    }
    named = [f"slot {s} ({n})" for s, n in by_slot.items() if n]
    assert ", on " in summary.reason and all(n in summary.reason for n in named), (
        summary.reason,
        by_slot,
    )


def test_a_slot_is_retired_only_while_another_is_not_failing() -> None:
    from loop.scheduler import RETIRE_AFTER

    slots = [Slot(i, cast(Any, None), cast(Any, None)) for i in range(3)]
    sched = Scheduler(slots, cast(Any, None), lookahead=3)
    numbers = iter(range(1, 100))

    def job(slot: int) -> Job:
        return Job(slot, 0, next(numbers), Proposal({}, "model"))

    # every slot failing: nobody is retired (max_failures decides)
    for _ in range(RETIRE_AFTER):
        for s in range(3):
            assert sched.record(job(s), "failed", "injected fault") is None
    # points refused before any device moved, and abandoned trials, do not count
    assert sched.record(job(0), "failed", "limit check failed, no device moved: x") is None
    assert sched.record(job(0), "abandoned", "stopped") is None
    assert len(slots[0].streak) == RETIRE_AFTER
    # slot 1 succeeds: slot 0's next failure retires it
    assert sched.record(job(1), "completed", None) is None
    reason = sched.record(job(0), "failed", "injected fault")
    assert reason is not None and "failed in a row" in reason and "slot(s) 1 did not" in reason
    assert slots[0].retired == reason
    assert slots[0] not in sched.idle() and slots[0] not in sched.active()
    # a completion on a slot ends its run of failures
    sched.record(job(2), "completed", None)
    assert sched.record(job(2), "failed", "injected fault") is None
    assert slots[2].retired is None and len(slots[2].streak) == 1


def test_an_instrument_that_fails_at_once_is_retired_before_the_others_report() -> None:
    """A broken instrument failing in milliseconds used up max_failures before the healthy
    slots' first trials (0.1 s) ended, since retiring waited for their successes."""
    from loop.scheduler import RETIRE_AFTER

    slots = [Slot(i, cast(Any, None), cast(Any, None)) for i in range(3)]
    sched = Scheduler(slots, cast(Any, None), lookahead=3)
    for n in range(RETIRE_AFTER - 1):
        assert sched.record(Job(0, 0, n, Proposal({}, "model")), "failed", "refused") is None
    reason = sched.record(Job(0, 0, 9, Proposal({}, "model")), "failed", "refused")
    assert reason is not None and "slot(s) 1, 2 did not fail" in reason


def test_failures_that_belong_to_the_point_never_retire_a_slot() -> None:
    """A failing region fails at once where good points take their latency, so the slot that
    draws region points frees first and took three in a row while the other completed one:
    a healthy slot was retired (seen with `failing_region` and the random planner)."""
    slots = [Slot(i, cast(Any, None), cast(Any, None)) for i in range(2)]
    sched = Scheduler(slots, cast(Any, None), lookahead=2)
    numbers = iter(range(1, 100))

    def job(slot: int) -> Job:
        return Job(slot, 0, next(numbers), Proposal({}, "model"))

    errors = [
        "FailedStatus <- caused by SimulatedFault: branin: trigger #1: injected fault: inputs "
        "(x1=9.81, x2=0.21) lie in the failing region `x1 > 2.5`",
        "ValueError: no solution; raised by function measure (model.py, line 3) at x1=9.8",
        "output 'y' is not finite (nan)",
    ]
    first = job(0)
    assert sched.record(job(1), "completed", None) is None
    for error in [errors[0], *errors]:
        assert sched.record(first if error is errors[0] else job(0), "failed", error) is None
        sched.record(job(1), "completed", None)
    assert slots[0].retired is None and slots[0].streak == []


# ------------------------------------------------------------------ a slow suggest
def test_a_stop_during_a_slow_suggest_does_not_wait_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proposal in the making is thrown away: the stop used to wait up to 60 s for it."""
    loaded = _loaded(tmp_path, "latency: 0.05, count: 2", "{max_trials: 20}")
    release = threading.Event()
    make = runner_module.make_planner
    asked: dict[str, Any] = {}

    def slow(*args: Any, **kwargs: Any) -> Any:
        planner = make(*args, **kwargs)
        suggest = planner.suggest

        def record(n: int = 1, pending: Any = ()) -> Any:
            calls = asked.setdefault("calls", 0) + 1
            asked["calls"] = calls
            if calls == 4:  # a long model fit: stop 0.3 s into it
                asked["runner"].request_stop("stopped by the test")
                asked["stopped_at"] = time.monotonic()
                release.wait(8)
            return suggest(n, pending=pending)

        planner.suggest = record  # type: ignore[method-assign]
        return planner

    monkeypatch.setattr(runner_module, "make_planner", slow)
    runner = Runner(loaded, _store(tmp_path))
    asked["runner"] = runner
    try:
        summary = runner.run()
        took = time.monotonic() - asked["stopped_at"]
    finally:
        release.set()
    assert (summary.status, summary.reason) == ("stopped", "stopped by the test")
    assert took < 3, took


# ------------------------------------------------------------------ status
def test_status_labels_trials_whose_runner_is_gone_left_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = _loaded(tmp_path, "latency: 0.0, count: 2", "{max_trials: 2}")
    store = _store(tmp_path)
    summary = Runner(loaded, store).run()
    cid = summary.campaign_id
    store.add_trial(cid, {"x1": 1.0, "x2": 2.0}, "model", slot=1)  # as a kill leaves it
    from loop import cli

    monkeypatch.setattr(cli.console, "width", 200)
    trials = store.trials(cid)
    c = loaded.campaign
    for live, want in ((True, "in flight"), (False, "left running (resume reconciles)")):
        with cli.console.capture() as captured:
            cli._slots_table(c, trials, live=live)
        row = next(line for line in captured.get().splitlines() if line.startswith("│ 1"))
        assert want in row and "#3" in row, captured.get()
