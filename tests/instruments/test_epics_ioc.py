"""End to end over real Channel Access against the caproto IOC in ``simulators.reactor_ioc``."""

from __future__ import annotations

import asyncio
import math
import shutil
import threading
from pathlib import Path

import pytest
from bluesky.protocols import Triggerable
from epics_ioc import IOC
from ophyd_async.core import (
    AsyncStatus,
    StandardReadable,
    StandardReadableFormat,
    soft_signal_r_and_setter,
)

from instruments import Dispatcher, InstrumentConfig, build_instrument
from instruments._epics import DeclaredInstrument, DeviceConnectionError

ROOT = Path(__file__).resolve().parents[2]
INSTRUMENT_FILE = ROOT / "campaigns" / "instruments" / "epics_reactor.yaml"
PARAMETERS = [
    {"name": "temperature", "type": "float", "bounds": [30, 110], "unit": "degC"},
    {"name": "flow", "type": "float", "bounds": [0.2, 4], "unit": "mL/min"},
]

pytestmark = pytest.mark.slow


def _instrument(tmp_path: Path, **edits: str) -> DeclaredInstrument:
    path = tmp_path / "reactor.yaml"
    text = INSTRUMENT_FILE.read_text()
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    path.write_text(text)
    inst = build_instrument(
        InstrumentConfig(file=str(path)), PARAMETERS, base_dir=tmp_path, seed=None
    )
    assert isinstance(inst, DeclaredInstrument)
    return inst


@pytest.fixture
def ioc(epics_ioc: IOC) -> IOC:
    """The IOC with its interlocks holding and the heater on, as each test expects."""
    epics_ioc.put("door_closed", 1)
    epics_ioc.put("pressure", 1.0)
    epics_ioc.put("heater:enable", 1)
    return epics_ioc


def test_a_trial_moves_measures_and_converts_units(ioc: IOC, tmp_path: Path) -> None:
    inst = _instrument(tmp_path)
    try:
        with Dispatcher(inst) as dispatcher:
            result = dispatcher.run(1, "c", {"temperature": 80.0, "flow": 2.0})
    finally:
        inst.close()
    assert result.ok, result.error
    # The IOC speaks kelvin; the campaign and the event speak degC.
    assert {"pv": "closedloop:sim:temp:SP", "value": pytest.approx(353.15)} in ioc.puts()
    assert result.readbacks["temperature"] == pytest.approx(80.0, abs=0.5)
    assert result.outputs["yield"] == pytest.approx(2.0 / 3.0, rel=1e-3)
    event = next(d for n, d in result.documents if n == "event")
    assert set(event["data"]) == {"temperature", "flow", "yield"}
    descriptor = next(d for n, d in result.documents if n == "descriptor")
    assert descriptor["data_keys"]["temperature"]["source"] == "PV:closedloop:sim:temp:RBV"
    # on_stop: the safe state was written on close.
    assert ioc.get("heater:enable") == 0
    assert ioc.get("temp:SP") == pytest.approx(298.15)


def test_an_out_of_limit_setpoint_never_reaches_the_ioc(ioc: IOC, tmp_path: Path) -> None:
    inst = _instrument(tmp_path)
    before = len(ioc.puts())
    try:
        with Dispatcher(inst) as dispatcher:
            result = dispatcher.run(1, "c", {"temperature": 105.0, "flow": 2.0})
            # Even a device whose check the dispatcher skipped refuses before its put.
            status = inst.inputs["temperature"].set(105.0)
            with pytest.raises(Exception, match="outside the hardware limits"):
                status.wait(10)
        during = ioc.puts()[before:]
    finally:
        inst.close()
    assert result.exit_status == "fail"
    assert result.run_uid is None
    assert "outside the hardware limits [20, 100]" in (result.error or "")
    assert during == []


def test_a_broken_interlock_pauses_the_trial_until_it_holds(ioc: IOC, tmp_path: Path) -> None:
    inst = _instrument(tmp_path, **{"interlock_poll: 1": "interlock_poll: 0.05"})
    ioc.put("door_closed", 0)
    before = len(ioc.puts())
    results: list[object] = []
    try:
        with Dispatcher(inst) as dispatcher:
            worker = threading.Thread(
                target=lambda: results.append(
                    dispatcher.run(1, "c", {"temperature": 60.0, "flow": 1.0})
                )
            )
            worker.start()
            while inst.gate.pauses == 0 and worker.is_alive():
                threading.Event().wait(0.02)
            assert inst.gate.pauses == 1
            assert [p for p in ioc.puts()[before:] if "temp:SP" in p["pv"]] == []
            ioc.put("door_closed", 1)
            worker.join(timeout=60)
    finally:
        inst.close()
    (result,) = results
    assert result.ok, result.error  # type: ignore[attr-defined]


def test_a_full_campaign_runs_over_channel_access(ioc: IOC, tmp_path: Path) -> None:
    from loop.config import load_campaign
    from loop.runner import Runner
    from loop.store import Store

    shutil.copy(INSTRUMENT_FILE, tmp_path / "reactor.yaml")
    campaign = (ROOT / "campaigns" / "epics" / "epics_reactor.yaml").read_text()
    campaign = campaign.replace("../instruments/epics_reactor.yaml", "reactor.yaml")
    campaign = campaign.replace("kind: botorch", "kind: sobol").replace(
        "max_trials: 10", "max_trials: 4"
    )
    (tmp_path / "c.yaml").write_text(campaign)
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        summary = Runner(load_campaign(tmp_path / "c.yaml"), store).run()
        trials = store.trials(summary.campaign_id)
    finally:
        store.close()
    assert summary.completed == 4
    assert all(t.status == "completed" for t in trials)
    assert all(math.isfinite(summary.best.objective) for _ in [0])  # type: ignore[union-attr, arg-type]
    sp_puts = [p for p in ioc.puts() if p["pv"].endswith("temp:SP")]
    assert len(sp_puts) >= 4
    assert ioc.get("heater:enable") == 0  # the safe state after the campaign


def test_instruments_check_reports_a_missing_pv(ioc: IOC, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from loop.cli import app

    good = tmp_path / "good.yaml"
    good.write_text(INSTRUMENT_FILE.read_text())
    ok = CliRunner().invoke(app, ["instruments", "check", str(good)])
    assert ok.exit_code == 0, ok.output
    assert "all devices connected" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(INSTRUMENT_FILE.read_text().replace("yield}", "no_such_pv}"))
    out = CliRunner().invoke(app, ["instruments", "check", str(bad), "--timeout", "0.5"])
    assert out.exit_code == 1, out.output
    assert "no_such_pv" in out.output


def test_instruments_check_lists_the_safe_state_pvs(ioc: IOC, tmp_path: Path) -> None:
    """The `on_stop` PVs are written only when the campaign stops, so the check is the one
    chance to see a misspelt one: it is listed, not connected, and fails the check (and the
    instrument refuses to build), instead of failing silently at the end of the campaign."""
    from typer.testing import CliRunner

    from loop.cli import app

    inst = _instrument(tmp_path)
    try:
        rows = inst.check()
    finally:
        inst.spec = inst.spec.model_copy(update={"on_stop": {}})  # a check writes nothing
        inst.close()
    safe = [(r.name, r.source, r.connected, r.value) for r in rows if r.role == "on_stop"]
    # an input's safe state is named by its setpoint PV, with the setpoint it holds now
    assert safe == [
        ("temperature = 25", "PV:closedloop:sim:temp:SP", True, pytest.approx(25.0)),
        ("heater:enable = 0", "PV:closedloop:sim:heater:enable", True, 1),
    ]
    text = INSTRUMENT_FILE.read_text().replace("heater:enable: 0", "heater:enabel: 0")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    out = CliRunner().invoke(app, ["instruments", "check", str(bad), "--timeout", "0.5"])
    assert out.exit_code == 1, out.output
    assert "heater:enabel = 0 PV:closedloop:sim:heater:enabel: not connected" in out.output
    # the PV named, not the client's "searching...." (found in review)
    said = " ".join(out.output.replace("│", " ").split())
    assert "PV closedloop:sim:heater:enabel did not connect within 0.5 s" in said, said
    assert "all devices connected" not in out.output
    before = len(ioc.puts())
    with pytest.raises(DeviceConnectionError, match="on_stop heater:enabel = 0") as caught:
        _instrument(tmp_path, **{"heater:enable: 0": "heater:enabel: 0"})
    assert ioc.puts()[before:] == []
    said = str(caught.value)  # each PV once, the hint once (it followed every device)
    assert "(PV closedloop:sim:heater:enabel did not connect within" in said, said
    assert said.count("EPICS_CA_ADDR_LIST") == 1, said
    # the line that declares it, as every other problem in the file gets (found in review)
    line = 1 + text[: text.index("heater:enabel: 0")].count("\n")
    assert f"(declared at {tmp_path / 'reactor.yaml'}:{line})" in said, said


def test_a_misspelt_interlock_pv_is_named_at_its_line(ioc: IOC, tmp_path: Path) -> None:
    """An interlock PV that does not connect was "declared at FILE:1", the file's first
    line (review U): the interlocks are a list, which the lookup did not index."""
    from typer.testing import CliRunner

    from loop.cli import app

    text = INSTRUMENT_FILE.read_text().replace("- door_closed == 1", "- door_closd == 1")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    out = CliRunner().invoke(app, ["instruments", "check", str(bad), "--timeout", "0.5"])
    assert out.exit_code == 1, out.output
    said = " ".join(out.output.replace("│", " ").split())
    line = 1 + text[: text.index("- door_closd == 1")].count("\n")
    assert line > 1 and f"(declared at {bad}:{line})" in said, said


def test_instruments_check_shows_outputs_in_campaign_units(ioc: IOC, tmp_path: Path) -> None:
    """An output with `units`/`device_units` is shown converted, as a trial stores it: the
    IOC's 298.15 K reads 25 degC (it used to show 298.15 labelled degC)."""
    inst = _instrument(
        tmp_path,
        **{
            "  yield: {pv: yield}": "  yield: {pv: yield}\n"
            '  temp_out: {pv: "temp:RBV", units: degC, device_units: K}'
        },
    )
    try:
        rows = {r.name: r for r in inst.check()}
        with Dispatcher(inst) as dispatcher:
            result = dispatcher.run(1, "c", {"temperature": 25.0, "flow": 1.0})
    finally:
        inst.close()
    row = rows["temp_out"]
    assert (row.role, row.connected, row.problem, row.units) == ("output", True, None, "degC")
    assert row.value == pytest.approx(25.0, abs=0.01)
    assert result.ok, result.error
    assert result.outputs["temp_out"] == pytest.approx(25.0, abs=0.5)


class StuckDetector(StandardReadable, Triggerable):
    """An ophyd-async detector whose acquisition never ends (a wedged in-line analyser)."""

    def __init__(self, name: str = "") -> None:
        with self.add_children_as_readables(StandardReadableFormat.HINTED_SIGNAL):
            self.value, _ = soft_signal_r_and_setter(float, 0.0)
        self.triggers = 0
        super().__init__(name=name)

    @AsyncStatus.wrap
    async def trigger(self) -> None:
        self.triggers += 1
        await asyncio.Event().wait()


def test_a_plugin_detector_is_given_the_declared_acquire_timeout(ioc: IOC, tmp_path: Path) -> None:
    """A plugin detector's trigger used to get a fixed 3600 s, whatever `acquire.timeout`
    says: the trial could only end by the dispatcher's own timeout. It now fails at the
    declared 1 s, naming the detector, before the acquire PV is written."""
    inst = _instrument(
        tmp_path,
        **{
            "  yield: {pv: yield}": "  yield: {pv: yield}\n"
            f'  stuck: {{device: "{__name__}:StuckDetector"}}',
            "  timeout: 30": "  timeout: 1",
        },
    )
    before = len(ioc.puts())
    try:
        with Dispatcher(inst) as dispatcher:
            result = dispatcher.run(1, "c", {"temperature": 25.0, "flow": 1.0}, timeout=15)
    finally:
        inst.close()
    assert result.exit_status == "fail" and result.transient and not result.timed_out
    assert "acquisition not complete within 1 s (plugin detector 'stuck'" in (result.error or "")
    assert not [p for p in ioc.puts()[before:] if p["pv"].endswith(":acquire")]
