"""Where and how an EPICS instrument's hold is kept (instruments._hold), without an IOC.

Found in review: two runs with two ``TMPDIR``s, or with ``EPICS_CA_AUTO_ADDR_LIST=no`` and
``NO``, drove one IOC at once; another user's lock file (``0644`` under the umask) could
not be opened, and the hold was skipped without a word.
"""

from __future__ import annotations

import logging
import os
import stat
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from instruments import _hold
from instruments._hold import InstrumentBusy, hold_instrument, instrument_identity


def _spec() -> Any:
    pv = f"test:{uuid.uuid4().hex}:SP"
    return SimpleNamespace(
        name="bench", prefix="", inputs={"t": SimpleNamespace(setpoint=pv, motor=None)}
    )


def test_the_folder_is_the_hosts_not_tmpdirs() -> None:
    assert _hold.LOCK_FOLDER == Path("/tmp/closedloop-instruments")


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"EPICS_CA_AUTO_ADDR_LIST": "NO"}, {"EPICS_CA_AUTO_ADDR_LIST": "no "}),
        ({}, {"EPICS_CA_SERVER_PORT": "5064", "EPICS_CA_AUTO_ADDR_LIST": "YES"}),
        ({"EPICS_CA_ADDR_LIST": "10.0.0.2 10.0.0.1"}, {"EPICS_CA_ADDR_LIST": " 10.0.0.1 10.0.0.2"}),
        (
            {"EPICS_CA_ADDR_LIST": "127.0.0.1", "EPICS_CA_SERVER_PORT": "15964"},
            {"EPICS_CA_ADDR_LIST": "127.0.0.1:15964", "EPICS_CA_SERVER_PORT": "15964"},
        ),
        (
            {
                "EPICS_CA_ADDR_LIST": "127.0.0.1",
                "EPICS_CA_AUTO_ADDR_LIST": "NO",
                "EPICS_CA_SERVER_PORT": "15964",
            },
            {"EPICS_CA_ADDR_LIST": "127.0.0.1:15964", "EPICS_CA_AUTO_ADDR_LIST": "NO"},
        ),
    ],
    ids=["case", "defaults", "order", "port-written", "port-written-no-broadcast"],
)
def test_one_network_spelt_two_ways_is_one_instrument(
    monkeypatch: pytest.MonkeyPatch, one: dict[str, str], other: dict[str, str]
) -> None:
    spec = _spec()
    identities = []
    for env in (one, other):
        for name in _hold._CA_NETWORK:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        identities.append(instrument_identity(spec))
    assert identities[0] == identities[1]
    monkeypatch.setenv("EPICS_CA_ADDR_LIST", "10.9.9.9")  # another network: other hardware
    assert instrument_identity(spec) != identities[0]


def test_the_server_port_decides_where_an_address_without_one_and_a_broadcast_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = _spec()
    for name in _hold._CA_NETWORK:
        monkeypatch.delenv(name, raising=False)
    default = instrument_identity(spec)
    monkeypatch.setenv("EPICS_CA_SERVER_PORT", "5070")
    assert instrument_identity(spec) != default  # broadcasts to another port
    monkeypatch.setenv("EPICS_CA_AUTO_ADDR_LIST", "NO")
    monkeypatch.setenv("EPICS_CA_ADDR_LIST", "10.0.0.1")
    at_5070 = instrument_identity(spec)
    monkeypatch.setenv("EPICS_CA_SERVER_PORT", "5064")
    assert instrument_identity(spec) != at_5070
    monkeypatch.setenv("EPICS_CA_ADDR_LIST", "10.0.0.1:5070")
    assert instrument_identity(spec) == at_5070  # the port written in, not the server's


def test_two_instruments_that_share_one_pv_are_one_instrument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two instrument files that share only a heater's setpoint drive one heater: the hold
    was of the whole list of PVs, so both ran, interleaving their setpoints (found in
    review, session 38). Each PV is held; none is kept by a hold that was refused."""
    monkeypatch.setattr(_hold, "LOCK_FOLDER", tmp_path)
    heater = f"test:{uuid.uuid4().hex}:temp:SP"
    pump, stage = (f"test:{uuid.uuid4().hex}:{n}" for n in ("flow:SP", "stage"))

    def spec(name: str, on_stop: Any = None, **inputs: tuple[str | None, str | None]) -> Any:
        devices = {k: SimpleNamespace(setpoint=sp, motor=m) for k, (sp, m) in inputs.items()}
        return SimpleNamespace(name=name, prefix="", inputs=devices, on_stop=on_stop or {})

    first = hold_instrument(spec("reactor", t=(heater, None), f=(pump, None)), holder="first")
    assert first is not None and len(first.paths) == 2
    with pytest.raises(InstrumentBusy) as busy:
        hold_instrument(spec("bench", t=(heater, None), x=(None, stage)), holder="second")
    assert f"instrument 'bench' writes PV {heater}, which another campaign" in str(busy.value)
    assert "(first, pid" in str(busy.value)
    # the refused hold let go of the stage it had taken: another campaign may drive it
    other = hold_instrument(spec("stage", x=(None, stage)), holder="third")
    assert other is not None
    other.release()
    first.release()
    again = hold_instrument(spec("bench", t=(heater, None), x=(None, stage)), holder="second")
    assert again is not None
    # a file whose safe state writes the heater's setpoint writes the heater (review V)
    with pytest.raises(InstrumentBusy, match=f"writes PV {heater}, which another"):
        hold_instrument(spec("pump", {heater: 298.15}, f=(pump, None)), holder="third")
    again.release()


def test_holds_are_open_to_every_user_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_hold, "LOCK_FOLDER", tmp_path / "holds")
    old = os.umask(0o022)
    try:
        spec = _spec()
        first = hold_instrument(spec, holder="first")
        assert first is not None
        assert stat.S_IMODE(first.path.parent.stat().st_mode) == 0o1777
        assert stat.S_IMODE(first.path.stat().st_mode) == 0o666
        with pytest.raises(InstrumentBusy, match="first, pid"):
            hold_instrument(spec, holder="second")
        first.release()
    finally:
        os.umask(old)


def test_a_lock_only_readable_is_held_all_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another user's lock file left ``0444`` (or ``0644``): ``flock`` needs no write access."""
    monkeypatch.setattr(_hold, "LOCK_FOLDER", tmp_path)
    spec = _spec()
    first = hold_instrument(spec, holder="first")
    assert first is not None
    first.release()
    first.path.chmod(0o444)
    real_open = os.open

    def as_another_user(path: Any, flags: int, *args: Any) -> int:
        if Path(path) == first.path and flags & os.O_RDWR and not flags & os.O_EXCL:
            raise PermissionError(13, "Permission denied")  # as for a non-root user
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", as_another_user)
    held = hold_instrument(spec, holder="read-only")
    assert held is not None
    monkeypatch.setattr(os, "open", real_open)
    # The record is still the first holder's, this process's: as another host's process
    # would read it once that holder ended (its pid then names no process, or another).
    monkeypatch.setattr(_hold, "_alive", lambda pid: False)
    with pytest.raises(InstrumentBusy) as busy:
        hold_instrument(spec, holder="third")
    message = str(busy.value)
    assert "first, pid" not in message  # not named as the holder: it has ended
    assert "the file names an earlier holder" in message
    held.release()


def test_a_hold_that_cannot_be_taken_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "not-a-folder"
    folder.write_text("")  # nothing can be made in it
    monkeypatch.setattr(_hold, "LOCK_FOLDER", folder)
    with caplog.at_level(logging.WARNING):
        assert hold_instrument(_spec(), holder="x") is None
    assert "instrument 'bench' is not held for this run" in caplog.text
    assert "another campaign on this host could drive it at the same time" in caplog.text
