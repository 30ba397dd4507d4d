"""ophyd-async plugin devices (``async_lab_devices``: a ``StandardReadable`` stage with a soft
setpoint and an ``AsyncStatus`` ``set``, a sensor computing its reading on ``trigger``) plug
in unchanged, by import path and by entry point: a whole campaign runs through the real
RunEngine into the store, and a setpoint outside the declared limits never reaches them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import async_lab_devices as lab
import pytest
from bluesky.protocols import Movable
from ophyd.status import wait as status_wait
from ophyd_async.core import (
    AsyncStatus,
    StandardReadable,
    StandardReadableFormat,
    soft_signal_r_and_setter,
)

from instruments import Dispatcher, TrialResult, build_instrument, input_specs
from instruments._epics import (
    ENTRY_POINT_GROUP,
    DeviceTimeout,
    InputDevice,
    build_declared_instrument,
    call_device,
    load_device_class,
)
from instruments._errors import InstrumentConfigError
from instruments._instrument_file import InputDecl, parse_instrument
from loop.config import load_campaign
from loop.runner import Runner
from loop.store import Store

CAMPAIGN = """\
name: async-bench
parameters:
  - {{name: x, type: float, bounds: [0, 2]}}
objectives:
  - {{name: signal, goal: maximize}}
instrument:
  devices:
    name: async-bench
    inputs:
      x: {{device: {stage}, args: {{start: 0.5}}, limits: [0, 2]}}
    outputs:
      signal: {{device: {sensor}, args: {{peak: 1.25}}}}
planner: {{kind: sobol}}
budget: {{max_trials: 3}}
seed: 4
"""

BY_PATH = {"stage": "async_lab_devices:AsyncStage", "sensor": "async_lab_devices:AsyncSensor"}
BY_ENTRY_POINT = {"stage": "async_stage", "sensor": "async_sensor"}


@pytest.fixture(autouse=True)
def fresh_stages() -> Iterator[None]:
    lab.STAGES.clear()
    yield
    lab.STAGES.clear()


@pytest.fixture
def entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What ``pip install`` of a lab package registering the classes leaves behind."""
    info = tmp_path / "site" / "async_lab_devices-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: async-lab-devices\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "async_stage = async_lab_devices:AsyncStage\n"
        "async_sensor = async_lab_devices:AsyncSensor\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    return info


def _campaign(tmp_path: Path, names: dict[str, str]) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(CAMPAIGN.format(**names))
    return path


def test_entry_points_resolve_to_the_ophyd_async_classes(entry_points: Path) -> None:
    assert load_device_class("async_stage") is lab.AsyncStage
    assert load_device_class("async_sensor") is lab.AsyncSensor


@pytest.mark.parametrize("how", ["import path", "entry point"])
def test_a_campaign_runs_ophyd_async_devices(
    how: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    names = BY_PATH
    if how == "entry point":
        request.getfixturevalue("entry_points")
        names = BY_ENTRY_POINT
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        summary = Runner(load_campaign(_campaign(tmp_path, names)), store).run()
        trials = store.trials(summary.campaign_id)
        observations = store.observations(summary.campaign_id)
        documents = [d.name for d in store.documents(trials[0].id or 0)]
    finally:
        store.close()
    assert summary.completed == 3, summary.reason
    stage = lab.STAGES["x"]
    commanded = [t.parameters["x"] for t in trials]
    # the stage got exactly the commanded setpoints, through its AsyncStatus set()
    assert stage.moves == pytest.approx(commanded)
    for t in trials:
        x = t.parameters["x"]
        # the sensor computed from where the stage was moved; the readback is the stage's
        assert observations[t.id or 0]["signal"] == pytest.approx(-((x - 1.25) ** 2))
        assert t.readbacks == {"x": pytest.approx(x)}
    assert documents[0] == "start" and documents[-1] == "stop" and "event" in documents
    last = call_device(stage, "read")["x-setpoint"]["value"]
    assert last == pytest.approx(commanded[-1])


def test_an_out_of_limit_setpoint_never_reaches_the_device(tmp_path: Path) -> None:
    loaded = load_campaign(_campaign(tmp_path, BY_PATH))
    c = loaded.campaign
    instrument = build_instrument(c.instrument, c.parameters, base_dir=loaded.base_dir, seed=0)
    stage = lab.STAGES["x"]
    try:
        with Dispatcher(instrument) as dispatcher:
            refused = dispatcher.run(1, "async-bench", {"x": 5.0})
            assert refused.exit_status == "fail" and refused.run_uid is None
            assert "limit check failed, no device moved" in (refused.error or "")
            # the input's own set() refuses it too, before the device's set() is called
            status = instrument.inputs["x"].set(-1.0)  # type: ignore[attr-defined]
            with pytest.raises(Exception, match="limit"):
                status_wait(status, timeout=5)
            assert stage.moves == []
            assert call_device(stage.setpoint, "get_value") == pytest.approx(0.5)
            accepted = dispatcher.run(2, "async-bench", {"x": 1.5})
        assert accepted.exit_status == "success", accepted.error
        assert accepted.outputs == {"signal": pytest.approx(-((1.5 - 1.25) ** 2))}
        assert stage.moves == [1.5]
    finally:
        instrument.close()  # type: ignore[attr-defined]


class WedgedSensor:
    """An ophyd-async style detector whose ``read`` never answers (a wedged serial line)."""

    parent = None

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.reads_cancelled = 0

    async def connect(self, timeout: float = 10.0) -> None:
        return None

    async def read(self) -> dict[str, Any]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.reads_cancelled += 1
            raise
        return {}

    async def describe(self) -> dict[str, Any]:
        return {self.name: {"source": "wedged", "dtype": "number", "shape": []}}


def test_an_output_that_never_answers_fails_its_trial_within_the_declared_timeout() -> None:
    """The RunEngine reads the outputs on its own thread: a read that never returns used to
    hold the run for ever, past ``run(timeout=...)`` (whose abort waits for that thread). It
    is now bounded by the file's ``connection_timeout`` and cancelled on the device loop."""
    spec = parse_instrument(
        {
            "name": "wedged-bench",
            "connection_timeout": 1,
            "inputs": {"x": {"device": "ophyd:Signal", "args": {"value": 0.0}, "limits": [0, 2]}},
            "outputs": {"y": {"device": f"{__name__}:WedgedSensor"}},
        }
    )
    inst = build_declared_instrument(spec, input_specs([("x", (0.0, 2.0))]), connect=False)
    sensor = inst.detector.outputs[0].target
    dispatcher = Dispatcher(inst)
    results: list[TrialResult] = []
    worker = threading.Thread(
        target=lambda: results.append(dispatcher.run(1, "c", {"x": 1.0})), daemon=True
    )
    t0 = time.monotonic()
    worker.start()
    worker.join(30)  # a generous bound: the trial must end, not hang
    elapsed = time.monotonic() - t0
    assert not worker.is_alive(), "the trial is still waiting for the output's read"
    try:
        (result,) = results
        assert result.exit_status == "fail" and result.transient
        assert "output 'y': device" in (result.error or "")
        assert "did not answer a read within 1 s" in (result.error or "")
        assert elapsed < 20
        # the read is cancelled on the device loop, which runs the cancellation shortly after
        # the trial has given up on it (a CI run on a busy host checked before it ran)
        deadline = time.monotonic() + 10
        while sensor.reads_cancelled < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sensor.reads_cancelled >= 1
        # `instruments check` gives up on it the same way, naming it
        rows = {r.name: r for r in inst.check(timeout=0.5)}
        assert rows["y"].problem is not None and "DeviceTimeout" in rows["y"].problem
        with pytest.raises(DeviceTimeout):
            inst.detector.outputs[0].value()
    finally:
        dispatcher.close()
        inst.close()


class BusyStage(StandardReadable, Movable[float]):
    """A controller that acknowledges a ``set`` after ``ack`` s and does not answer reads
    until it gets there, ``arrive`` s after the ``set`` (a serial device busy moving)."""

    def __init__(self, name: str = "", ack: float = 1.8, arrive: float = 3.0) -> None:
        self.ack, self.arrive = ack, arrive
        with self.add_children_as_readables(StandardReadableFormat.HINTED_SIGNAL):
            self.readback, self._set_readback = soft_signal_r_and_setter(float, 0.0)
        self._there: asyncio.Event | None = None
        self._follow: asyncio.Task[None] | None = None
        super().__init__(name=name)

    @AsyncStatus.wrap
    async def set(self, value: float) -> None:
        there = self._there = asyncio.Event()

        async def arrive() -> None:
            await asyncio.sleep(self.arrive - self.ack)
            self._set_readback(value)
            there.set()

        await asyncio.sleep(self.ack)
        self._follow = asyncio.get_running_loop().create_task(arrive())

    async def read(self) -> dict[str, Any]:
        if self._there is not None:
            await self._there.wait()
        return await super().read()


def test_a_plugin_move_takes_at_most_its_timeout_in_all() -> None:
    """The `set` (acknowledged after 1.8 s) and the readback (answered at 3 s) each got the
    whole `timeout` of 2 s, so this move used to succeed after 3 s: it now fails at 2 s."""
    spec = parse_instrument(
        {
            "name": "busy-bench",
            "inputs": {
                "x": {
                    "device": f"{__name__}:BusyStage",
                    "limits": [0, 2],
                    "tolerance": 0.01,
                    "timeout": 2,
                }
            },
            "outputs": {"y": {"device": "ophyd:Signal", "args": {"value": 0.5}}},
        }
    )
    inst = build_declared_instrument(spec, input_specs([("x", (0.0, 2.0))]))
    try:
        with Dispatcher(inst) as dispatcher:
            result = dispatcher.run(1, "c", {"x": 1.0}, timeout=30)
    finally:
        inst.close()
    assert result.exit_status == "fail" and result.transient and not result.timed_out
    assert "x: move to 1.0 not done within 2 s" in (result.error or "")


def test_an_input_declared_without_a_source_is_a_config_error() -> None:
    """The schema refuses it; a declaration built around the schema must still get the
    project's error (it was an ``assert``, gone under ``python -O``)."""
    decl = InputDecl.model_construct(limits=(0.0, 2.0))
    with pytest.raises(InstrumentConfigError, match="input 'x' has none of"):
        InputDevice("x", decl, units=None, prefix="", gate=None)
