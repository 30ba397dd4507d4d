"""A stored campaign keeps reading the output field it was measured with.

Plugin outputs without ``key:`` used to be read from their reading's first field; now from
its hinted field, else its only field, else they are refused. A campaign stored back then
and resumed now switched quantity mid-campaign (``total`` = 21 for its first trials, the
hinted ``intensity`` = 7 after, in one objective), or could not be resumed at all (several
fields, none hinted; editing the instrument file does nothing, since resume reads the
store's copy). Found in review. Such a campaign is known by its first stored start
document, which carries no ``trial_number`` (added with the change): it keeps reading the
first field, with a warning per output saying what a new campaign reads. And a stored
campaign's instrument refused on resume gives a way on that works.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from ophyd import Component, Device, Kind, Signal
from ophyd.sim import SoftPositioner
from ophyd.status import DeviceStatus, Status

from instruments import InstrumentConfig, build_instrument
from loop.config import Campaign, parse_campaign
from loop.errors import CampaignConfigError
from loop.runner import Runner
from loop.store import Store

HERE = "test_stored_output_key"
_EGU = ["mm"]  # the units Stage reports; a test changes them between run and resume


class TotalFirst(Device):
    """``read()`` lists the normal ``total`` (21) before the hinted ``intensity`` (7)."""

    total = Component(Signal, value=0.0, kind=Kind.normal)
    intensity = Component(Signal, value=0.0, kind=Kind.hinted)

    def trigger(self) -> Status:
        self.total.put(21.0)
        self.intensity.put(7.0)
        status = DeviceStatus(self)
        status.set_finished()
        return status


class NoHint(TotalFirst):
    """Two fields, none hinted: a new campaign refuses it without ``key:``."""

    intensity = Component(Signal, value=0.0, kind=Kind.normal)


class Stage(SoftPositioner):
    """A positioner whose reported units the test sets (``_EGU``)."""

    @property
    def egu(self) -> str:
        return _EGU[0]


def _campaign(tmp_path: Path, outputs: str, *, stage: str = "ophyd.sim:SoftPositioner") -> Path:
    (tmp_path / "bench.yaml").write_text(
        "name: bench\nconnection_timeout: 5\ninputs:\n  x:\n"
        f"    device: {stage}\n    args: {{init_pos: 0}}\n    limits: [0, 1]\n"
        "    timeout: 5\noutputs:\n" + outputs
    )
    path = tmp_path / "camp.yaml"
    path.write_text(
        "name: stored\nparameters:\n  - {name: x, type: float, bounds: [0, 1], unit: mm}\n"
        "objectives:\n  - {name: intensity, goal: maximize}\n"
        "instrument: {file: bench.yaml}\nplanner: {kind: sobol}\nbudget: {max_trials: 2}\n"
        "seed: 1\n"
    )
    return path


def _run(path: Path, store: Store, **kwargs: Any) -> None:
    loaded = parse_campaign(path.read_text(), path=path, base_dir=path.parent)
    assert Runner(loaded, store, **kwargs).run().status == "completed"


def _as_stored_before_trial_number(db: Path) -> None:
    """The start documents as the version before the change wrote them: no trial_number."""
    with sqlite3.connect(db) as con:
        n = con.execute(
            "UPDATE document SET body = json_remove(body, '$.trial_number') WHERE name = 'start'"
        ).rowcount
    assert n == 2


def _values(store: Store, output: str) -> list[float]:
    cid = store.campaign("stored").id
    assert cid is not None
    observations = store.observations(cid)
    return [observations[t.id][output] for t in store.trials(cid) if t.id is not None]


def test_a_campaign_stored_reading_first_fields_keeps_reading_them_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _campaign(
        tmp_path,
        f"  intensity: {{device: {HERE}:TotalFirst}}\n  other: {{device: {HERE}:NoHint}}\n",
    )
    db = tmp_path / "s.db"
    store = Store(f"sqlite:///{db}")

    # measured as the old version read them (the stored file has no `key:`)
    keyed = (tmp_path / "bench.yaml").read_text().replace("Hint}", "Hint, key: other_total}")
    (tmp_path / "keyed.yaml").write_text(keyed.replace("First}", "First, key: intensity_total}"))

    def first_fields(campaign: Campaign, seed: int) -> Any:
        keyed = InstrumentConfig(file="keyed.yaml")
        return build_instrument(keyed, campaign.parameters, base_dir=tmp_path, seed=seed)

    _run(path, store, instrument_factory=first_fields)
    _as_stored_before_trial_number(db)
    (tmp_path / "bench.yaml").unlink()  # resume reads the store's copy

    for budget in (4, 5):  # the runs a resume adds carry trial_number: no switch later
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            summary = Runner.from_store(store, "stored", max_trials=budget).resume()
        assert summary.status == "completed"
        notes = [r.getMessage() for r in caplog.records if "first field" in r.getMessage()]
        assert notes == [
            f"bench: output 'intensity' (device {HERE}:TotalFirst) reads intensity_total (its "
            "first field, read so when this campaign was stored); a new campaign reads its "
            "hinted field, intensity_intensity: set `key: intensity_total` under "
            "outputs.intensity in its instrument file to keep reading intensity_total",
            f"bench: output 'other' (device {HERE}:NoHint) reads other_total (its first "
            "field, read so when this campaign was stored); a new campaign is refused (its "
            "reading has fields other_total, other_intensity, and it hints none of them): set "
            "`key: other_total` under outputs.other in its instrument file to keep reading "
            "other_total",
        ]
    assert _values(store, "intensity") == [21.0] * 5
    assert _values(store, "other") == [21.0] * 5


def test_a_new_campaign_reads_the_hinted_field_across_a_resume(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _campaign(tmp_path, f"  intensity: {{device: {HERE}:TotalFirst}}\n")
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    _run(path, store)
    with caplog.at_level(logging.WARNING):
        assert Runner.from_store(store, "stored", max_trials=4).resume().status == "completed"
    assert _values(store, "intensity") == [7.0] * 4
    assert not [r for r in caplog.records if "when this campaign was stored" in r.getMessage()]


def test_a_stored_campaign_refused_on_resume_is_given_a_way_on(tmp_path: Path) -> None:
    """The unit refusal stays (12 mm sent to a stage in um moves it 12 um); its fix no
    longer only says to edit the instrument file, which resume does not read again."""
    path = _campaign(
        tmp_path, f"  intensity: {{device: {HERE}:TotalFirst}}\n", stage=f"{HERE}:Stage"
    )
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    _EGU[0] = "mm"
    _run(path, store)
    _EGU[0] = "um"  # the stage now reports another unit
    try:
        with pytest.raises(CampaignConfigError) as caught:
            Runner.from_store(store, "stored", max_trials=4).resume()
    finally:
        _EGU[0] = "mm"
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'bench.yaml'}:4: campaign 'stored' (id 1) in sqlite:")
    assert "is in 'um'" in message and "set `device_units: um` on the input" in message
    assert (
        "fix: the store keeps its own copy of the instrument file, which editing bench.yaml "
        "does not change. To go on with a corrected file, start a new campaign that learns "
        f"from this one's trials: `closedloop export --store sqlite:///{tmp_path / 's.db'} "
        "-c 1 -o trials.csv`, then run a copy of the campaign file with another name and "
        "`prior_data: trials.csv`"
    ) in message
    assert _values(store, "intensity") == [7.0] * 2  # nothing measured after the refusal
