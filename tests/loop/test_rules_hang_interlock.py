"""A trial held by its interlocks is not hung: the hang warning counts a trial's working
time, as the dispatcher's timeout watchdog does, not its wait at the interlock gate.

Found in review: a trial waiting for a closed door past the hang limit was warned about
("no instrument.timeout is set ... stop the campaign"), telling the operator waiting for the
door to stop a campaign that was only paused. The limits are lowered (as in
test_rules_hang.py) so the test takes seconds. Real runner, real RunEngine, real SQLite;
the interlock reads a plugin device's output (an ophyd ``Signal``), no IOC.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from ophyd import Signal

import loop.runner as runner_module
from instruments import Instrument, build_instrument
from instruments._epics import DeclaredInstrument
from loop.config import load_campaign
from loop.runner import Runner, TrialReport
from loop.store import Store

HELD = 3.0  # seconds trial 4 waits for the door, and trial 5 takes to read its output

CAMPAIGN = f"""\
name: door-hang
parameters:
  - {{name: x, type: float, bounds: [0, 2]}}
objectives:
  - {{name: y, goal: minimize}}
instrument:
  devices:
    name: door-bench
    inputs:
      x: {{device: "ophyd:Signal", args: {{value: 1.0}}, limits: [0, 2]}}
    outputs:
      y: {{device: "{__name__}:SlowOnce", args: {{value: 0.5}}}}
      door: {{device: "ophyd:Signal", args: {{value: 1}}}}
    interlocks: [door == 1]
    interlock_poll: 0.05
planner: {{kind: sobol}}
budget: {{max_trials: 5}}
seed: 1
"""


class SlowOnce(Signal):
    """An output whose next read after :attr:`armed` is set takes ``HELD`` s: a trial that
    really does take far longer than the others (the instrument, not a wait)."""

    armed = threading.Event()

    def get(self, **kwargs: Any) -> Any:
        if SlowOnce.armed.is_set():
            SlowOnce.armed.clear()
            time.sleep(HELD)
        return super().get(**kwargs)


class _Script:
    """After trial 3 the door closes for ``HELD`` s (trial 4 waits for it); after trial 4
    the output's next read is slow (trial 5 works that long)."""

    def __init__(self) -> None:
        self.built: list[DeclaredInstrument] = []

    def factory(self, campaign: Any, seed: int) -> Instrument:
        inst = build_instrument(
            campaign.instrument, campaign.parameters, base_dir=Path.cwd(), seed=seed
        )
        assert isinstance(inst, DeclaredInstrument)
        self.built.append(inst)
        return inst

    def trial_started(self, number: int, parameters: Any) -> None:
        pass

    def trial_finished(self, report: TrialReport) -> None:
        if report.number == 3:
            door = next(o.target for o in self.built[0].detector.outputs if o.name == "door")
            door.put(0)
            threading.Timer(HELD, door.put, args=(1,)).start()
        elif report.number == 4:
            SlowOnce.armed.set()


def _hang_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "no instrument.timeout is set" in r.getMessage()
    ]


def test_a_trial_held_by_its_interlocks_is_not_warned_about_but_a_slow_one_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(runner_module, "HANG_FACTOR", 3.0)
    monkeypatch.setattr(runner_module, "HANG_MIN_SECONDS", 0.5)
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    script = _Script()
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        runner = Runner(
            load_campaign(tmp_path / "c.yaml"),
            store,
            listener=script,
            instrument_factory=script.factory,
        )
        with caplog.at_level(logging.WARNING, logger="loop.runner"):
            summary = runner.run()
    finally:
        SlowOnce.armed.clear()
        store.close()
    assert summary.completed == 5
    gate = script.built[0].gate
    assert gate is not None and gate.waited() >= HELD - 0.5  # trial 4 did wait for the door
    warnings = _hang_warnings(caplog)
    assert [m.split(" on slot")[0] for m in warnings] == ["trial 5"], warnings


def test_a_wait_does_not_raise_the_typical_trial(monkeypatch: pytest.MonkeyPatch) -> None:
    """A completed trial counts toward the typical one by its working time."""

    class Dispatcher:  # the part of instruments.Dispatcher the watch reads: its wait clock
        waited = 0.0

        def waited_clock(self) -> Any:
            return lambda: self.waited

    monkeypatch.setattr(runner_module, "HANG_FACTOR", 3.0)
    monkeypatch.setattr(runner_module, "HANG_MIN_SECONDS", 0.5)
    watch = runner_module._HangWatch([0.2, 0.2], "closedloop resume")
    dispatcher = Dispatcher()
    watch.started(7, dispatcher)  # type: ignore[arg-type]
    dispatcher.waited = 100.0  # the trial waited 100 s for its interlocks, then worked 0.2 s
    watch.finished(7, 100.2, completed=True)
    assert watch.limit() == pytest.approx(0.6)  # 3 x median 0.2 s, not 3 x 100.2 s
