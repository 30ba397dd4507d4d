"""The instrument file's text is stored with the campaign: ``resume``, ``suggest``/``tell`` and
``status`` build the devices the campaign started with, even after the file was edited or
deleted, and warn when the file on disk differs. No IOC: the devices are plugin ``Signal``s.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from loop.cli import app
from loop.config import load_campaign
from loop.runner import Runner
from loop.store import CampaignRow, Store

INSTRUMENT = """\
name: text-bench
inputs:
  x: {device: "ophyd:Signal", args: {value: 1.0}, limits: [0, 2]}
outputs:
  y: {device: "ophyd:Signal", args: {value: 0.5}}
"""
CAMPAIGN = """\
name: text-bench
parameters:
  - {name: x, type: float, bounds: [0, 2]}
objectives:
  - {name: y, goal: maximize}
instrument: {file: bench.yaml}
planner: {kind: sobol}
budget: {max_trials: 2}
seed: 4
"""


@pytest.fixture
def campaign(tmp_path: Path) -> Iterator[tuple[Store, int, Path]]:
    """A finished two-trial campaign whose instrument file is ``bench.yaml``."""
    (tmp_path / "bench.yaml").write_text(INSTRUMENT)
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    summary = Runner(load_campaign(tmp_path / "c.yaml"), store).run()
    assert summary.completed == 2
    yield store, summary.campaign_id, tmp_path / "bench.yaml"
    store.close()


def _outputs(store: Store, cid: int) -> list[float]:
    obs = store.observations(cid)
    return [obs[t.id or 0]["y"] for t in store.trials(cid) if t.status == "completed"]


def test_the_instrument_text_is_stored_with_the_campaign(campaign: Any) -> None:
    store, cid, _ = campaign
    assert store.campaign(cid).instrument_text == INSTRUMENT


def test_resume_uses_the_stored_text_when_the_file_changed(
    campaign: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store, cid, path = campaign
    # edited: another output value, and a key the stored file does not have
    path.write_text(INSTRUMENT.replace("value: 0.5", "value: 0.9"))
    with caplog.at_level(logging.WARNING, logger="instruments._epics"):
        summary = Runner.from_store(store, cid, max_trials=3).resume()
    assert summary.completed == 3
    assert _outputs(store, cid) == [0.5, 0.5, 0.5]  # the stored devices, not the edited ones
    assert f"instrument file {path} has changed since the campaign started" in caplog.text


def test_resume_and_status_work_when_the_file_is_gone(
    campaign: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store, cid, path = campaign
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="instruments._epics"):
        summary = Runner.from_store(store, cid, max_trials=3).resume()
    assert summary.completed == 3
    assert f"instrument file {path} is missing or unreadable" in caplog.text
    url = store.url
    status = CliRunner().invoke(app, ["status", "--store", url, "-c", str(cid)])
    assert status.exit_code == 0, status.output
    # without a stored text (a campaign from an older store) the file is needed, as before
    with store.session() as s:
        row = s.get(CampaignRow, cid)
        assert row is not None
        row.instrument_text = None
        s.add(row)
        s.commit()
    with pytest.raises(Exception, match="no such file"):
        Runner.from_store(store, cid)


def test_suggest_and_tell_use_the_stored_text(tmp_path: Path) -> None:
    (tmp_path / "bench.yaml").write_text(INSTRUMENT)
    (tmp_path / "c.yaml").write_text(CAMPAIGN.replace("max_trials: 2", "max_trials: 5"))
    url = f"sqlite:///{tmp_path / 'c.db'}"
    first = CliRunner().invoke(app, ["suggest", str(tmp_path / "c.yaml"), "--store", url])
    assert first.exit_code == 0, first.output
    store = Store(url)
    try:
        (row,) = store.campaigns()
        assert row.instrument_text == INSTRUMENT
        (tmp_path / "bench.yaml").unlink()
        (trial,) = store.trials(row.id or 0)
        told = CliRunner().invoke(app, ["tell", "--store", url, str(trial.id), "y=0.7"])
        assert told.exit_code == 0, told.output
        again = CliRunner().invoke(app, ["suggest", "--store", url, "-c", str(row.id)])
        assert again.exit_code == 0, again.output
        assert [t.status for t in store.trials(row.id or 0)] == ["completed", "running"]
    finally:
        store.close()
