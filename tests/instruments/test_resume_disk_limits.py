"""A resumed campaign never drives hardware beyond the safety settings of the file on disk.

A stored campaign builds its devices from the instrument text stored with it, but its safety
settings are the stricter of the stored text's and the file's on disk
(``instruments._instrument_file.stricter_of_disk``): a facility that tightens a limit after
a campaign started is obeyed, and a file (or a store) edited to widen one is not. Found in
review: after the file went from ``limits: [20, 100]`` to ``[20, 40]`` degC, ``resume`` put
97, 63 and 86 degC to the IOC. Most tests use plugin ``ophyd:Signal`` devices (no IOC); one
runs the reactor over Channel Access and reads the IOC's put log.
"""

from __future__ import annotations

import logging
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from epics_ioc import IOC
from typer.testing import CliRunner

from instruments import input_specs
from instruments._epics import build_declared_instrument, declared_spec, parameter_units
from instruments._instrument_file import DiskSafetyConflict, refuse_unsafe_merge
from loop.cli import _entry, app
from loop.config import load_campaign
from loop.errors import CampaignConfigError
from loop.runner import Runner
from loop.store import Store

ROOT = Path(__file__).resolve().parents[2]

INSTRUMENT = """\
name: bench
inputs:
  x: {device: "ophyd:Signal", args: {value: 1.0}, limits: [0, 4], max_step: 10}
outputs:
  y: {device: "ophyd:Signal", args: {value: 0.5}}
interlocks:
  - x < 100
on_stop:
  x: 1
"""
CAMPAIGN = """\
name: bench
parameters:
  - {name: x, type: float, bounds: [0, 4]}
objectives:
  - {name: y, goal: maximize}
instrument: {file: bench.yaml}
planner: {kind: sobol}
budget: {max_trials: 2, max_failures: 20}
seed: 4
"""


@pytest.fixture
def stored(tmp_path: Path) -> Iterator[tuple[Store, int, Path]]:
    """A campaign of two completed trials on ``bench.yaml`` (limits [0, 4]), stopped."""
    (tmp_path / "bench.yaml").write_text(INSTRUMENT)
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    summary = Runner(load_campaign(tmp_path / "c.yaml"), store).run()
    assert summary.completed == 2
    yield store, summary.campaign_id, tmp_path / "bench.yaml"
    store.close()


def _edit(path: Path, *edits: tuple[str, str]) -> None:
    text = path.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    path.write_text(text)


def _effective(store: Store, cid: int) -> Any:
    """The instrument a resume of the stored campaign builds, as it reads it."""
    loaded = Runner.from_store(store, cid).loaded
    return declared_spec(loaded.campaign.instrument, loaded.base_dir)


def _plan(store: Store, cid: int, at: str) -> Any:
    """``closedloop plan --dry-run`` of the stored campaign at one point."""
    args = ["plan", "--dry-run", "--store", store.url, "-c", str(cid), "--at", at]
    return CliRunner().invoke(app, args)


def _closedloop(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str]:
    """``closedloop ARGS`` as the console command runs it: its exit code, stdout + stderr."""
    monkeypatch.setattr(sys, "argv", ["closedloop", *args])
    capsys.readouterr()
    try:
        _entry()
        code = 0
    except SystemExit as exited:
        code = int(exited.code or 0)
    out = capsys.readouterr()
    return code, out.out + out.err


def _resumed_trials(store: Store, cid: int, max_trials: int) -> list[Any]:
    """The trials a resume adds, after the two the campaign started with."""
    Runner.from_store(store, cid, max_trials=max_trials).resume()
    return store.trials(cid)[2:]


def test_a_limit_tightened_on_disk_bounds_the_resumed_campaign(
    stored: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store, cid, path = stored
    _edit(path, ("limits: [0, 4]", "limits: [0, 2]"))
    with caplog.at_level(logging.WARNING):
        added = _resumed_trials(store, cid, max_trials=4)
    said = "input x: limits [0, 4] stored, [0, 2] on disk; using [0, 2]"
    assert f"instrument file {path}: {said}" in caplog.text
    refused = [t for t in added if t.parameters["x"] > 2]
    assert refused, "the proposals reach beyond the new limit"
    for t in refused:  # never dispatched: refused by the limit check, no device touched
        assert t.status == "failed" and t.run_uid is None
        assert "outside the hardware limits [0, 2]" in (t.error or "")
    done = [t for t in added if t.status == "completed"]
    assert len(done) == 2
    assert all(t.readbacks["x"] <= 2 for t in done)


def test_a_limit_widened_on_disk_does_not_widen_the_stored_one(
    stored: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store, cid, path = stored
    _edit(path, ("limits: [0, 4]", "limits: [0, 50]"), ("max_step: 10", "max_step: 100"))
    with caplog.at_level(logging.WARNING):
        spec = _effective(store, cid)
    assert spec.inputs["x"].limits == (0, 4)
    assert spec.inputs["x"].max_step == 10
    assert "input x: limits [0, 4] stored, [0, 50] on disk; using [0, 4]" in caplog.text
    assert "input x: max_step 10 stored, 100 on disk; using 10" in caplog.text
    # what a resume would send: the dry run refuses what the stored limits refuse
    out = _plan(store, cid, "x=6")
    assert out.exit_code == 1, out.output
    assert "refused before dispatch: x: setpoint 6 is outside the hardware limits [0, 4]" in (
        out.output
    )


def test_plan_dry_run_and_instruments_check_show_the_limits_a_resume_uses(stored: Any) -> None:
    store, cid, path = stored
    _edit(path, ("limits: [0, 4]", "limits: [0.5, 2]"))
    out = _plan(store, cid, "x=3")
    assert out.exit_code == 1, out.output
    assert "x: setpoint 3 is outside the hardware limits [0.5, 2]" in out.output
    ok = _plan(store, cid, "x=1.5")
    assert ok.exit_code == 0, ok.output
    assert "set          x 1.5" in ok.output
    check = CliRunner().invoke(app, ["instruments", "check", str(path.parent / "c.yaml")])
    assert check.exit_code == 0, check.output
    assert "[0.5, 2]" in check.output


def test_limits_that_do_not_overlap_refuse_the_resume_with_both_files_values(
    stored: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store, cid, path = stored
    _edit(path, ("limits: [0, 4]", "limits: [5, 8]"), ("x: 1\n", "x: 6\n"))
    url = store.url
    args = ("--store", url, "-c", str(cid))
    code, out = _closedloop(monkeypatch, capsys, "resume", *args, "--max-trials", "4")
    assert code == 2, out
    assert f"{path}:3:" in out
    assert (
        "inputs.x: limits [5, 8] on disk (line 3) and [0, 4] stored (line 3 of the stored "
        "copy) leave no range both allow"
    ) in out
    assert "give limits that overlap [0, 4] in bench.yaml" in out
    assert "Traceback" not in out
    assert len(store.trials(cid)) == 2  # nothing proposed, nothing sent
    code, out = _closedloop(monkeypatch, capsys, "plan", "--dry-run", *args)
    assert code != 0 and "leave no range both allow" in out, out
    # reading the campaign does not need its devices: status and its units still show
    code, out = _closedloop(monkeypatch, capsys, "status", *args, "--json")
    assert code == 0, out


def test_interlocks_of_both_files_must_hold_and_the_safe_state_is_the_file_s_on_disk(
    stored: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store, cid, path = stored
    _edit(
        path,
        ("  - x < 100\n", "  - door_closed == 1\n"),
        ("on_stop:\n  x: 1\n", "on_stop:\n  heater:enable: 0\n  x: 0.5\n"),
        ("max_step: 10", "max_step: 0.5"),
    )
    with caplog.at_level(logging.WARNING):
        spec = _effective(store, cid)
    assert [str(rule) for rule in spec.interlocks] == ["x < 100", "door_closed == 1"]
    assert spec.on_stop == {"heater:enable": 0, "x": 0.5}  # the file's, in its order
    assert spec.inputs["x"].max_step == 0.5
    for said in (
        "interlock `door_closed == 1` on disk, not stored; it must hold too",
        "interlock `x < 100` stored, not on disk; it must still hold",
        "on_stop x: 1 stored, 0.5 on disk; writing 0.5",
        "on_stop heater:enable: not stored, 0 on disk; writing 0",
        "input x: max_step 10 stored, 0.5 on disk; using 0.5",
    ):
        assert said in caplog.text


OUTPUT_IN_DEGC = """\
name: bench
inputs:
  x: {device: "ophyd:Signal", args: {value: 1.0}, limits: [0, 4]}
outputs:
  y: {device: "ophyd:Signal", args: {value: 50.0}, units: degC}
"""


@pytest.mark.parametrize("inline", [False, True], ids=["file", "inline-devices"])
@pytest.mark.parametrize(
    ("stored_interlock", "edit", "refused"),
    [
        pytest.param(
            False, "units: K, device_units: degC}\ninterlocks:\n  - y < 320", True, id="new"
        ),
        pytest.param(True, "units: K, device_units: degC}", True, id="stored-too"),
        pytest.param(False, "units: degree_Celsius}\ninterlocks:\n  - y < 60", False, id="same"),
        pytest.param(
            False,
            "units: degC, device_units: degC}\ninterlocks:\n  - y < 60",
            False,
            id="no-conversion-either-way",
        ),
    ],
)
def test_an_interlock_on_an_output_the_file_on_disk_gives_in_another_unit_is_refused(
    tmp_path: Path, inline: bool, stored_interlock: bool, edit: str, refused: bool
) -> None:
    """Found in review: the file on disk gave output y in K (from the device's degC) and
    added ``y < 320``; the campaign's devices, as stored, read y in degC, so 50 < 320 held
    and every trial ran. An interlock's number on an output is in that output's unit in
    its file, so both files must give the output one unit; a stored interlock too, once
    the file on disk gives its output another unit. Inline devices alike."""
    stored = OUTPUT_IN_DEGC + ("interlocks:\n  - y < 320\n" if stored_interlock else "")
    if inline:
        devices = "".join(f"    {row}\n" for row in stored.splitlines())
        campaign = CAMPAIGN.replace("{file: bench.yaml}\n", f"\n  devices:\n{devices}")
        path = tmp_path / "c.yaml"
    else:
        (tmp_path / "bench.yaml").write_text(stored)
        campaign, path = CAMPAIGN, tmp_path / "bench.yaml"
    (tmp_path / "c.yaml").write_text(campaign)
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        cid = Runner(load_campaign(tmp_path / "c.yaml"), store).run().campaign_id
        _edit(path, ("units: degC}", edit.replace("\n", "\n    " if inline else "\n")))
        spec = _effective(store, cid)
        if not refused:
            refuse_unsafe_merge(spec, {})
            assert [str(rule) for rule in spec.interlocks] == ["y < 60"]
            return
        with pytest.raises(DiskSafetyConflict) as conflict:
            refuse_unsafe_merge(spec, {})
        with pytest.raises(CampaignConfigError, match="compared in another unit"):
            Runner.from_store(store, cid, max_trials=4).resume()
        assert len(store.trials(cid)) == 2  # nothing proposed, nothing sent
    finally:
        store.close()
    assert conflict.value.path == path
    said = " ".join(str(conflict.value).split())
    for part in (
        "interlock `y < 320` on disk (line ",
        ") compares output y in K, converted from the device's degC (line ",
        "), but the campaign's devices read it in degC (line ",
        " of the stored copy): its number would be compared in another unit",
        "outputs.y as stored (units: degC), with the interlock's number in that unit",
    ):
        assert part in said, said
    if not inline:
        assert "`y < 320` on disk (line 7) compares output y" in said
        assert conflict.value.line == 7


@pytest.mark.parametrize(
    ("edits", "refusal"),
    [
        pytest.param(
            [("name: bench\n", "name: bench\nprefix: 'LAB:'\n")],
            "prefix 'LAB:' on disk (line 2), '' stored (the stored copy): the file on disk "
            "names other PVs",
            id="another-prefix",
        ),
        pytest.param(
            [("  x: {", "  z: {"), ("x < 100", "z < 100"), ("  x: 1\n", "  z: 1\n")],
            "input x (line 3 of the stored copy) is not declared in the file on disk any more",
            id="input-gone",
        ),
        pytest.param(
            [("limits: [0, 4]", "units: mm, limits: [0, 4]")],
            "units 'mm' on disk, but the campaign's unit for x is 'm'",
            id="other-units",
        ),
        pytest.param(
            [("limits: [0, 4]", "limts: [0, 2]")],
            "unknown key 'limts' in inputs.x (the instrument file on disk, changed since the "
            "campaign started",
            id="not-valid",
        ),
        pytest.param(
            [("  y: {", "  z: {"), ("  x: 1\n", "  y: 1\n")],
            "on_stop.y on disk is a PV there but an output of the campaign's devices",
            id="safe-state-on-an-output",
        ),
        pytest.param(
            [("x < 100", "w < 100"), ("  x: {", "  w: {device: 'ophyd:Signal'}\n  x: {")],
            "interlock `w < 100` on disk reads w, an input there but a PV of the campaign's "
            "devices",
            id="interlock-on-another-input",
        ),
        pytest.param(
            [("limits: [0, 4]", "limits: [-5, 2]"), ("  x: 1\n", "  x: -1\n")],
            "on_stop.x = -1 on disk is outside the limits [0, 2] that apply (the stricter of "
            "[-5, 2] on disk and [0, 4] stored)",
            id="safe-state-outside-the-intersection",
        ),
    ],
)
def test_files_that_cannot_be_combined_are_refused_before_any_device_exists(
    tmp_path: Path, edits: list[tuple[str, str]], refusal: str
) -> None:
    (tmp_path / "bench.yaml").write_text(INSTRUMENT)
    campaign = CAMPAIGN.replace("bounds: [0, 4]}", "bounds: [0, 4], unit: m}")
    (tmp_path / "c.yaml").write_text(campaign)
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        cid = Runner(load_campaign(tmp_path / "c.yaml"), store).create()
        _edit(tmp_path / "bench.yaml", *edits)
        loaded = Runner.from_store(store, cid).loaded  # read: status, tell still work
        c = loaded.campaign
        spec = declared_spec(c.instrument, loaded.base_dir)
        with pytest.raises(DiskSafetyConflict) as refused:
            build_declared_instrument(
                spec, input_specs(c.parameters), units=parameter_units(c.parameters), connect=False
            )
    finally:
        store.close()
    assert refused.value.path == tmp_path / "bench.yaml"
    assert refusal in str(refused.value)


def test_a_new_campaign_is_built_from_its_file_with_nothing_merged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "bench.yaml").write_text(INSTRUMENT)
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    with caplog.at_level(logging.WARNING):
        loaded = load_campaign(tmp_path / "c.yaml")
        spec = declared_spec(loaded.campaign.instrument, loaded.base_dir)
    refuse_unsafe_merge(spec, {})
    assert spec.inputs["x"].limits == (0, 4)
    assert "on disk" not in caplog.text


INLINE = """\
name: inline-bench
parameters:
  - {name: x, type: float, bounds: [0, 4]}
objectives:
  - {name: y, goal: maximize}
instrument:
  devices:
    inputs:
      x: {device: "ophyd:Signal", args: {value: 1.0}, limits: [0, 4]}
    outputs:
      y: {device: "ophyd:Signal", args: {value: 0.5}}
planner: {kind: sobol}
budget: {max_trials: 2, max_failures: 20}
seed: 4
"""


def test_inline_devices_tightened_in_the_campaign_file_bound_the_resumed_campaign(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The campaign's own text is stored too, so inline ``devices:`` had the same hole (and
    not even a warning): the campaign file on disk is read for its safety settings."""
    path = tmp_path / "c.yaml"
    path.write_text(INLINE)
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        cid = Runner(load_campaign(path), store).run().campaign_id
        _edit(path, ("limits: [0, 4]", "limits: [0, 2]"))
        with caplog.at_level(logging.WARNING):
            added = _resumed_trials(store, cid, max_trials=4)
    finally:
        store.close()
    assert (
        f"inline devices of campaign file {path}: input x: limits [0, 4] stored, [0, 2] on "
        "disk; using [0, 2]"
    ) in caplog.text
    assert any(t.parameters["x"] > 2 for t in added)
    for t in added:
        if t.parameters["x"] > 2:
            assert t.status == "failed" and "outside the hardware limits [0, 2]" in (t.error or "")
        else:
            assert t.status == "completed" and t.readbacks["x"] <= 2


def test_instruments_check_of_a_stored_campaign_shows_the_limits_a_resume_uses(
    stored: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store, cid, path = stored
    _edit(path, ("limits: [0, 4]", "limits: [0, 50]"))
    campaign = str(path.parent / "c.yaml")
    code, out = _closedloop(monkeypatch, capsys, "instruments", "check", campaign)
    assert code == 0 and "[0, 50]" in out, out  # the file, as a new campaign would use it
    args = ("--store", store.url, "-c", str(cid))
    code, out = _closedloop(monkeypatch, capsys, "instruments", "check", *args)
    assert code == 0, out
    assert "[0, 4]" in out and "[0, 50]" not in out


def test_a_conflict_refuses_plan_with_2_and_resume_with_a_fix_that_holds(
    stored: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store, cid, path = stored
    _edit(path, ("limits: [0, 4]", "limits: [5, 8]"), ("x: 1\n", "x: 6\n"))
    args = ("--store", store.url, "-c", str(cid))
    code, out = _closedloop(monkeypatch, capsys, "plan", "--dry-run", *args)
    assert code == 2 and "leave no range both allow" in out, out
    code, out = _closedloop(monkeypatch, capsys, "resume", *args, "--max-trials", "4")
    assert code == 2, out
    assert "does not change" not in out  # editing the file on disk is a way on
    assert "(one that learns from this campaign's trials: `closedloop export" in out


# ---------------------------------------------------------------------------- over Channel Access
@pytest.mark.slow
def test_resume_after_tightening_never_puts_beyond_the_disk_limits_to_the_ioc(
    epics_ioc: IOC, tmp_path: Path
) -> None:
    """The review's case end to end: two trials with limits [20, 100] degC, the file
    tightened to [20, 40], then a resume: no setpoint above 40 degC (313.15 K) reaches the
    IOC, and the dry run of the stored campaign refuses what the resume refuses."""
    epics_ioc.put("door_closed", 1)
    epics_ioc.put("pressure", 1.0)
    epics_ioc.put("heater:enable", 1)
    instrument = tmp_path / "reactor.yaml"
    shutil.copy(ROOT / "campaigns" / "instruments" / "epics_reactor.yaml", instrument)
    campaign = (ROOT / "campaigns" / "epics" / "epics_reactor.yaml").read_text()
    campaign = campaign.replace("../instruments/epics_reactor.yaml", "reactor.yaml")
    campaign = campaign.replace("kind: botorch", "kind: sobol").replace(
        "max_trials: 10", "max_trials: 2"
    )
    (tmp_path / "c.yaml").write_text(campaign)
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        cid = Runner(load_campaign(tmp_path / "c.yaml"), store).run().campaign_id
        _edit(instrument, ("limits: [20, 100]", "limits: [20, 40]"))
        before = len(epics_ioc.puts())
        added = _resumed_trials(store, cid, max_trials=4)
        url = store.url
    finally:
        store.close()
    setpoints = [p["value"] for p in epics_ioc.puts()[before:] if p["pv"].endswith("temp:SP")]
    assert setpoints, "the safe state at least"
    assert max(setpoints) <= 313.15 + 1e-6
    assert any(t.parameters["temperature"] > 40 for t in added)
    for t in added:
        if t.parameters["temperature"] > 40:
            assert t.run_uid is None
            assert "outside the hardware limits [20, 40]" in (t.error or "")
    out = CliRunner().invoke(
        app,
        ["plan", "--dry-run", "--store", url, "-c", str(cid)]
        + ["--at", "temperature=97", "--at", "flow=1"],
    )
    assert out.exit_code == 1, out.output
    assert "temperature: setpoint 97 is outside the hardware limits [20, 40]" in out.output
