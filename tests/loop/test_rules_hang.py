"""Trials that may hang with no timeout, and timeouts that count a trial's wait for a worker.

A trial that hangs without ``instrument.timeout`` held the last of ``max_trials`` while the
other slots idled, and the campaign stalled without a word (found in review): the loop now
warns once per trial that has run far longer than the campaign's typical trial. The limits
(``HANG_FACTOR`` x the median, at least ``HANG_MIN_SECONDS``) are lowered here so the test
takes seconds. Real runner, real RunEngine, real SQLite.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

import pytest

import loop.runner as runner_module
from loop import Runner, Store, parse_campaign
from loop.config import LoadedCampaign

CAMPAIGN = """
name: hang
parameters: [{name: x, type: float, bounds: [0, 1]}]
objectives: [{name: y, goal: minimize}]
instrument: {function: "fns.py:fourth_is_slow", outputs: [y]EXTRA}
planner: {kind: sobol}
budget: {max_trials: 5}
seed: 3
"""

FUNCTIONS = """
import itertools
import time

_calls = itertools.count(1)


def fourth_is_slow(inputs):
    if next(_calls) == 4:
        time.sleep(2.0)
    return {"y": inputs["x"]}
"""


def _loaded(tmp_path: Path, extra: str = "", max_trials: int = 5) -> LoadedCampaign:
    (tmp_path / "fns.py").write_text(FUNCTIONS)
    text = CAMPAIGN.replace("EXTRA", extra).replace("max_trials: 5", f"max_trials: {max_trials}")
    path = tmp_path / "hang.yaml"
    path.write_text(text)
    return parse_campaign(text, path=path, base_dir=tmp_path)


@pytest.fixture
def quick_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "HANG_FACTOR", 3.0)
    monkeypatch.setattr(runner_module, "HANG_MIN_SECONDS", 0.5)


def _hang_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "no instrument.timeout is set" in r.getMessage()
    ]


def test_a_trial_far_longer_than_the_others_is_warned_about_once(
    tmp_path: Path, quick_limits: None, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    with caplog.at_level(logging.WARNING, logger="loop.runner"):
        summary = Runner(_loaded(tmp_path), store).run()
    assert summary.completed == 5
    slow = [m for m in _hang_warnings(caplog) if m.startswith("trial 4 on slot 0 has run for")]
    assert len(slow) == 1, _hang_warnings(caplog)  # once, though the loop looks ~10 times a s
    assert "typical trial (median" in slow[0] and "`timeout: " in slow[0]
    assert "under `instrument:`" in slow[0]
    # the resume it names acts on this campaign of this store, pasted anywhere
    assert f"`closedloop resume --store sqlite:///{tmp_path / 'h.db'} -c 1` goes on" in slow[0]
    # a resumed session starts from the stored trials' durations: it knows what is typical
    again = Runner.from_store(store, summary.campaign_id)
    watch = again._hang_watch(store.trials(summary.campaign_id))
    assert watch is not None and watch.limit() is not None


def test_a_trial_that_ended_before_it_started_is_not_typical(
    tmp_path: Path, quick_limits: None
) -> None:
    # stored times are wall-clock readings: a clock stepped back mid-trial (NTP, a laptop
    # waking) stores a finish before the start, a negative duration that must not count
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    runner = Runner(_loaded(tmp_path, max_trials=3), store)
    summary = runner.run()
    rows = store.trials(summary.campaign_id)
    watch = runner._hang_watch(rows)
    assert watch is not None and watch.limit() is not None  # three completed: typical known
    stepped = rows[1]
    assert stepped.started_at is not None
    stepped.finished_at = stepped.started_at - timedelta(seconds=30)
    watch = runner._hang_watch(rows)
    assert watch is not None and watch.limit() is None  # two left: nothing is typical yet


def test_no_warning_when_a_timeout_ends_such_trials(
    tmp_path: Path, quick_limits: None, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'h.db'}")
    with caplog.at_level(logging.WARNING, logger="loop.runner"):
        summary = Runner(_loaded(tmp_path, ", timeout: 30"), store).run()
    assert summary.completed == 5
    assert _hang_warnings(caplog) == []


def test_no_typical_trial_no_warning(quick_limits: None) -> None:
    watch = runner_module._HangWatch([0.1, 0.1], "closedloop resume")
    assert watch.limit() is None  # fewer than HANG_MIN_TRIALS completed: nothing is typical
    watch.completed(0.4)
    assert watch.limit() == pytest.approx(0.5)  # 3 x median 0.1 s, at least 0.5 s
