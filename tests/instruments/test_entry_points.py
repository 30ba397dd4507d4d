"""Plugin devices registered by a lab's package in the ``closedloop.instruments`` entry-point
group: an instrument file names them (``device: NAME``, with ``args``) and a campaign runs
through the real RunEngine, the store keeping every trial. No IOC.

The "lab package" is written into ``tmp_path``: a module with Ophyd device classes and a
``.dist-info`` folder whose ``entry_points.txt`` registers them, on ``sys.path`` for the
test only, which is exactly what ``pip install`` of such a package leaves behind.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from instruments._epics import ENTRY_POINT_GROUP, load_device_class
from loop.config import load_campaign
from loop.runner import Runner
from loop.store import Store

LAB_MODULE = '''\
"""A lab's own Ophyd devices: a stage and a sensor that sees the stage."""
from ophyd import Signal
from ophyd.status import Status


class Stage(Signal):
    """Moves at once; counts its moves."""

    def __init__(self, *, name, start=0.0, gain=1.0, **kwargs):
        super().__init__(name=name, value=start, **kwargs)
        self.gain = gain
        self.moves = []

    def set(self, value, **kwargs):
        self.moves.append(value)
        self.put(value)
        status = Status(obj=self)
        status.set_finished()
        return status

    @property
    def position(self):
        return self.get()


STAGES = {}


class Sensor(Signal):
    """Reads -(x - peak)**2 of the stage built for parameter ``x``."""

    def __init__(self, *, name, peak=1.0, **kwargs):
        super().__init__(name=name, value=0.0, **kwargs)
        self.peak = peak

    def trigger(self):
        stage = STAGES["x"]
        self.put(-((stage.get() - self.peak) ** 2))
        status = Status(obj=self)
        status.set_finished()
        return status


class RegisteredStage(Stage):
    def __init__(self, *, name, **kwargs):
        super().__init__(name=name, **kwargs)
        STAGES[name] = self
'''

ENTRY_POINTS = f"""\
[{ENTRY_POINT_GROUP}]
lab_stage = closedloop_lab_devices:RegisteredStage
lab_sensor = closedloop_lab_devices:Sensor
"""

CAMPAIGN = """\
name: entry-point-bench
parameters:
  - {name: x, type: float, bounds: [0, 2]}
objectives:
  - {name: signal, goal: maximize}
instrument:
  devices:
    name: lab-bench
    inputs:
      x: {device: lab_stage, args: {start: 0.5}, limits: [0, 2]}
    outputs:
      signal: {device: lab_sensor, args: {peak: 1.25}}
planner: {kind: sobol}
budget: {max_trials: 3}
seed: 2
"""


@pytest.fixture
def lab_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "closedloop_lab_devices.py").write_text(LAB_MODULE)
    info = site / "closedloop_lab_devices-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: closedloop-lab-devices\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("closedloop_lab_devices", None)


def test_an_entry_point_resolves_to_the_registered_class(lab_package: Path) -> None:
    cls = load_device_class("lab_sensor")
    assert cls.__name__ == "Sensor" and cls.__module__ == "closedloop_lab_devices"


def test_a_campaign_runs_plugin_devices_named_by_entry_point(
    lab_package: Path, tmp_path: Path
) -> None:
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        summary = Runner(load_campaign(tmp_path / "c.yaml"), store).run()
        trials = store.trials(summary.campaign_id)
        observations = store.observations(summary.campaign_id)
        documents = [d.name for d in store.documents(trials[0].id or 0)]
    finally:
        store.close()
    assert summary.completed == 3, summary.reason
    for t in trials:
        x = t.parameters["x"]
        # the sensor saw where the stage was moved: the devices ran, through the RunEngine
        assert observations[t.id or 0]["signal"] == pytest.approx(-((x - 1.25) ** 2))
        assert t.readbacks == {"x": pytest.approx(x)}
    assert documents[0] == "start" and documents[-1] == "stop" and "event" in documents
    import closedloop_lab_devices  # type: ignore[import-not-found]

    stage = closedloop_lab_devices.STAGES["x"]
    assert stage.moves[-1] == pytest.approx(trials[-1].parameters["x"])
