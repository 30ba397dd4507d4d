"""A campaign paused by its interlocks: the store and ``closedloop status`` show it, and an
operator's ``closedloop release`` (another process, through the store) lets the waiting trial
proceed despite them, recorded with who and when.

No Channel Access here: the interlock reads a plugin device's output (an ophyd ``Signal``),
so the gate, the store and the CLI are exercised without an IOC (the IOC tests cover the PV
path of the same gate).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from instruments import Dispatcher, Instrument, build_instrument
from instruments._epics import DeclaredInstrument
from loop.cli import app
from loop.config import load_campaign
from loop.pause import CampaignPause
from loop.runner import CampaignSummary, Runner
from loop.store import Store

CAMPAIGN = """\
name: door-bench
parameters:
  - {name: x, type: float, bounds: [0, 2]}
objectives:
  - {name: y, goal: maximize}
instrument:
  devices:
    name: door-bench
    inputs:
      x: {device: "ophyd:Signal", args: {value: 1.0}, limits: [0, 2]}
    outputs:
      y: {device: "ophyd:Signal", args: {value: 0.5}}
      door: {device: "ophyd:Signal", args: {value: 0}}
    interlocks: [door == 1]
    interlock_poll: 0.05
planner: {kind: sobol}
budget: {max_trials: 2}
seed: 1
"""
REASON = "interlock door == 1 does not hold (door = 0)"


def _door(instrument: DeclaredInstrument) -> Any:
    return next(o.target for o in instrument.detector.outputs if o.name == "door")


def _until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.02)


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def test_a_campaign_pauses_shows_why_and_an_operator_release_is_recorded(
    tmp_path: Path,
) -> None:
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = Store(url)
    built: list[DeclaredInstrument] = []

    def factory(campaign: Any, seed: int) -> Instrument:
        inst = build_instrument(
            campaign.instrument, campaign.parameters, base_dir=tmp_path, seed=seed
        )
        assert isinstance(inst, DeclaredInstrument)
        built.append(inst)
        return inst

    runner = Runner(load_campaign(tmp_path / "c.yaml"), store, instrument_factory=factory)
    summaries: list[CampaignSummary] = []
    worker = threading.Thread(target=lambda: summaries.append(runner.run()), daemon=True)
    worker.start()
    try:
        _until(lambda: runner.campaign_id is not None, "the campaign exists")
        cid = runner.campaign_id
        assert cid is not None
        _until(lambda: store.campaign(cid).status == "paused", "the campaign shows paused")
        row = store.campaign(cid)
        assert row.stop_reason == REASON
        # nothing moved: the trial waits before its first put
        (inst,) = built
        assert inst.inputs["x"]._positioner.get() == 1.0

        shown = _cli("status", "--store", url, "-c", str(cid))
        assert shown.exit_code == 0, shown.output
        assert f"paused: {REASON}" in shown.output
        assert f"PAUSED: waiting for interlocks: {REASON}" in shown.output
        assert "closedloop release" in shown.output

        # without --confirm nothing is recorded
        asked = _cli("release", "--store", url, "-c", str(cid))
        assert asked.exit_code == 1, asked.output
        assert "DESPITE" in asked.output and "--confirm" in asked.output
        assert [e.kind for e in store.events(cid)] == ["paused"]

        released = _cli(
            "release", "--store", url, "-c", str(cid), "--confirm", "--by", "alice",
            "--note", "door sensor broken, door checked by hand", "--wait", "30",
        )  # fmt: skip
        assert released.exit_code == 0, released.output
        assert "recorded by alice" in released.output
        assert "proceeded despite" in released.output
        # trial 1 went on; trial 2 waits again: a release is for one wait only
        _until(lambda: len(store.trials(cid)) == 2, "the second trial starts")
        _until(lambda: store.campaign(cid).status == "paused", "the second trial pauses")
        assert store.trials(cid)[0].status == "completed"
        _door(inst).put(1)  # fixed: the campaign goes on by itself
        worker.join(timeout=60)
        assert not worker.is_alive()
    finally:
        runner.request_stop("test over")
        worker.join(timeout=30)
    (summary,) = summaries
    assert summary.status == "completed", summary.reason
    assert store.campaign(cid).status == "completed"
    events = store.events(cid)
    assert [(e.kind, e.detail if e.kind != "release" else e.by) for e in events] == [
        ("paused", REASON),
        ("release", "alice"),
        ("resumed", "released by alice"),
        ("paused", REASON),
        ("resumed", "interlocks hold again"),
    ]
    release = events[1]
    assert release.handled_at is not None and release.at <= release.handled_at
    assert release.detail == f"{REASON} (note: door sensor broken, door checked by hand)"
    assert release.outcome == f"the waiting trial proceeded despite: {REASON}"
    shown = _cli("status", "--store", url, "-c", str(cid))
    assert "PAUSED" not in shown.output
    assert "last release: by alice" in shown.output
    store.close()


def test_release_refuses_a_campaign_that_is_not_paused_or_has_no_runner(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = Store(url)
    cid = store.create_campaign("c", "name: c", str(tmp_path / "c.yaml"), 1)
    out = _cli("release", "--store", url, "-c", str(cid), "--confirm")
    assert out.exit_code == 1
    assert "running, not paused" in out.output
    out = _cli("release", "--store", url, "--confirm")
    assert out.exit_code == 1
    assert "no paused campaign" in out.output
    # paused by a runner that then died: resume, not release, goes on
    assert store.pause_campaign(cid, REASON)
    out = _cli("release", "--store", url, "--confirm")
    assert out.exit_code == 1
    assert "no runner is driving it" in out.output and "closedloop resume" in out.output
    assert [e.kind for e in store.events(cid)] == ["paused"]
    # a paused campaign left by a crash is unfinished: resume finds it
    assert store.latest_unfinished().id == cid
    store.close()


def test_the_pause_never_overwrites_a_finished_status(tmp_path: Path) -> None:
    """A wait cancelled by a stop ends after the runner wrote ``stopped``: it must stay so."""
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    cid = store.create_campaign("c", "name: c", str(tmp_path / "c.yaml"), 1)
    assert store.pause_campaign(cid, REASON)
    store.finish_campaign(cid, "stopped", "stopped by SIGINT")
    assert not store.unpause_campaign(cid, "stopped")
    assert not store.pause_campaign(cid, REASON)
    assert store.campaign(cid).status == "stopped"
    store.close()


def test_a_dispatcher_attaches_the_listener_to_the_gate(tmp_path: Path) -> None:
    """Two slots waiting at once: paused until the last goes on; one release frees both."""
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    loaded = load_campaign(tmp_path / "c.yaml")
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    cid = store.create_campaign("c", loaded.text, str(tmp_path / "c.yaml"), 1)
    pause = CampaignPause(store, lambda: cid, lambda: None)
    c = loaded.campaign
    slots = [build_instrument(c.instrument, c.parameters, base_dir=tmp_path, seed=0) for _ in "ab"]
    dispatchers = [Dispatcher(inst, interlock_listener=pause) for inst in slots]
    results: list[Any] = []
    workers = [
        threading.Thread(target=lambda d=d: results.append(d.run(1, "c", {"x": 0.5})))
        for d in dispatchers
    ]
    try:
        assert all(inst.gate.listener is pause for inst in slots)  # type: ignore[attr-defined]
        for w in workers:
            w.start()
        _until(lambda: len(pause._waiting) == 2, "both slots wait")
        assert store.campaign(cid).status == "paused"
        store.request_release(cid, by="bob", detail=REASON)
        for w in workers:
            w.join(timeout=30)
        assert [r.exit_status for r in results] == ["success", "success"]
        assert store.campaign(cid).status == "running"
        handled = [e for e in store.events(cid) if e.kind == "release"]
        assert len(handled) == 1 and handled[0].handled_at is not None
        assert [i.gate.overrides for i in slots] == [["bob"], ["bob"]]  # type: ignore[attr-defined]
    finally:
        for d in dispatchers:
            d.close()
        for inst in slots:
            inst.close()
        store.close()
