"""The IOC goes away in the middle of a campaign (over real Channel Access).

The trial in flight fails with an error naming the PV; every earlier trial and every
document stay in the store; the campaign then pauses, naming the disconnected PV, instead of
failing trial after trial; it goes on by itself when the IOC is back, or, stopped while
paused, ``resume`` continues it. ``closedloop instruments check`` reports the lost PVs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from epics_ioc import IOC

from loop.config import load_campaign
from loop.runner import CampaignSummary, Runner, TrialReport
from loop.store import Store

ROOT = Path(__file__).resolve().parents[2]
INSTRUMENT_FILE = ROOT / "campaigns" / "instruments" / "epics_reactor.yaml"
CAMPAIGN_FILE = ROOT / "campaigns" / "epics" / "epics_reactor.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture
def ioc(epics_ioc: IOC) -> Iterator[IOC]:
    """The session's IOC, running with its interlocks holding; running again afterwards."""
    if not epics_ioc.running():
        epics_ioc.start()
    epics_ioc.put("door_closed", 1)
    epics_ioc.put("pressure", 1.0)
    epics_ioc.put("heater:enable", 1)
    yield epics_ioc
    if not epics_ioc.running():
        epics_ioc.start()


def _campaign(tmp_path: Path, max_trials: int) -> Path:
    """The example campaign, Sobol only, with a long settle time after the temperature move
    (the window in which the IOC is stopped) and quick interlock polling."""
    text = INSTRUMENT_FILE.read_text()
    for old, new in {
        "settle_time: 0.1": "settle_time: 1.5",
        "interlock_poll: 1": "interlock_poll: 0.1",
        "connection_timeout: 5": "connection_timeout: 2",
    }.items():
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "reactor.yaml").write_text(text)
    campaign = CAMPAIGN_FILE.read_text()
    campaign = campaign.replace("../instruments/epics_reactor.yaml", "reactor.yaml")
    campaign = campaign.replace("kind: botorch", "kind: sobol")
    campaign = campaign.replace("max_trials: 10", f"max_trials: {max_trials}")
    (tmp_path / "c.yaml").write_text(campaign)
    return tmp_path / "c.yaml"


class StopIOCDuringTrial:
    """A listener that stops the IOC while trial ``number`` settles after its first put."""

    def __init__(self, ioc: IOC, number: int) -> None:
        self.ioc = ioc
        self.number = number
        self.stopped = threading.Event()
        self.reports: list[TrialReport] = []

    def trial_started(self, number: int, parameters: dict[str, Any]) -> None:
        if number == self.number:
            before = self._setpoints()
            threading.Thread(target=self._stop_after_put, args=(before,), daemon=True).start()

    def _setpoints(self) -> int:
        return sum(p["pv"].endswith("temp:SP") for p in self.ioc.puts())

    def _stop_after_put(self, before: int) -> None:
        deadline = time.monotonic() + 60
        while self._setpoints() == before and time.monotonic() < deadline:
            time.sleep(0.01)
        self.ioc.stop()
        self.stopped.set()

    def trial_finished(self, report: TrialReport) -> None:
        self.reports.append(report)


def _until(
    condition: Callable[[], bool], what: str, timeout: float = 60.0, state: Any = None
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}" + (f": {state()}" if state else ""))
        time.sleep(0.05)


def _assert_nothing_lost(store: Store, cid: int, lost: int) -> None:
    """Trials before ``lost`` completed with their whole run; ``lost`` failed naming a PV,
    its documents (up to its stop) stored too."""
    trials = store.trials(cid)
    for t in trials[: lost - 1]:
        assert t.status == "completed", (t.number, t.error)
        names = [d.name for d in store.documents(t.id or 0)]
        assert names[0] == "start" and names[-1] == "stop" and "event" in names
    failed = trials[lost - 1]
    assert failed.status == "failed"
    assert "lost the connection to PV closedloop:sim:" in (failed.error or ""), failed.error
    docs = store.documents(failed.id or 0)
    assert [d.name for d in docs][0] == "start"
    assert docs[-1].name == "stop" and docs[-1].body["exit_status"] == "fail"
    observations = store.observations(cid)
    assert all("yield" in observations[t.id or 0] for t in trials[: lost - 1])


def test_a_lost_ioc_fails_the_trial_pauses_and_the_campaign_goes_on_when_it_is_back(
    ioc: IOC, tmp_path: Path
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    listener = StopIOCDuringTrial(ioc, number=3)
    runner = Runner(load_campaign(_campaign(tmp_path, 4)), store, listener=listener)
    summaries: list[CampaignSummary] = []
    worker = threading.Thread(target=lambda: summaries.append(runner.run()), daemon=True)
    worker.start()
    try:
        _until(lambda: runner.campaign_id is not None, "the campaign exists")
        cid = runner.campaign_id or 0
        _until(listener.stopped.is_set, "the IOC is stopped during trial 3")
        # paused, naming the PVs (at first perhaps as an interlock that cannot be read,
        # until the client has noticed every channel is gone)
        _until(
            lambda: "is disconnected" in (store.campaign(cid).stop_reason or ""),
            "the campaign pauses, naming the disconnected PVs",
            state=lambda: [(t.number, t.status, t.error) for t in store.trials(cid)],
        )
        assert store.campaign(cid).status == "paused"
        reason = store.campaign(cid).stop_reason or ""
        assert "closedloop:sim:" in reason and "is disconnected" in reason, reason
        _assert_nothing_lost(store, cid, lost=3)
        assert [t.status for t in store.trials(cid)] == [
            "completed",
            "completed",
            "failed",
            "running",  # trial 4 waits for the PVs, nothing moved
        ]
        ioc.start()
        worker.join(timeout=120)
        assert not worker.is_alive()
    finally:
        runner.request_stop("test over")
        worker.join(timeout=30)
    (summary,) = summaries
    assert summary.status == "completed", summary.reason
    assert summary.completed == 4 and summary.failed == 1
    events = [(e.kind, e.detail or "") for e in store.events(cid)]
    assert events[0][0] == "paused"
    assert any(k == "paused" and "PV closedloop:sim:temp:SP/" in d for k, d in events), events
    assert events[-1] == ("resumed", "devices connected again")
    store.close()


def test_stopped_while_the_ioc_is_gone_then_resumed_after_it_is_back(
    ioc: IOC, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from loop.cli import app

    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    listener = StopIOCDuringTrial(ioc, number=2)
    runner = Runner(load_campaign(_campaign(tmp_path, 3)), store, listener=listener)
    summaries: list[CampaignSummary] = []
    worker = threading.Thread(target=lambda: summaries.append(runner.run()), daemon=True)
    worker.start()
    try:
        _until(lambda: runner.campaign_id is not None, "the campaign exists")
        cid = runner.campaign_id or 0
        _until(
            lambda: "is disconnected" in (store.campaign(cid).stop_reason or ""),
            "the campaign pauses, naming the disconnected PVs",
        )
        # the technician's check names the PVs that are gone, and fails
        check = CliRunner().invoke(
            app, ["instruments", "check", str(tmp_path / "reactor.yaml"), "--timeout", "0.5"]
        )
        assert check.exit_code == 1, check.output
        assert "closedloop:sim:temp:RBV" in check.output
        assert "not connected" in check.output
        runner.request_stop("stopped by the operator: the IOC is down")
        worker.join(timeout=60)
        assert not worker.is_alive()
    finally:
        runner.request_stop("test over")
        worker.join(timeout=30)
    (summary,) = summaries
    assert summary.status == "stopped"
    assert store.campaign(cid).status == "stopped"
    _assert_nothing_lost(store, cid, lost=2)
    waiting = store.trials(cid)[2]
    assert waiting.status == "abandoned"
    assert "stopped by the operator: the IOC is down" in (waiting.error or "")

    ioc.start()
    resumed = Runner.from_store(store, cid).resume()
    assert resumed.status == "completed", resumed.reason
    assert resumed.completed == 3
    assert [t.status for t in store.trials(cid)] == [
        "completed",
        "failed",
        "abandoned",
        "completed",
        "completed",
    ]
    store.close()
