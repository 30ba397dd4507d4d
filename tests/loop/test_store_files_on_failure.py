"""A command that fails leaves no new store file behind (nor its -wal, -shm or folders).

Found in review: `closedloop suggest BADFILE --store sqlite:///new.db` created an empty store
before it read the campaign file, and `run` created one before building the devices; a
user who mistyped a path, or whose device was busy, got a stray empty store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ophyd import Signal
from typer.testing import CliRunner

from loop.cli import app
from loop.store import Store

BRANIN = """\
name: {name}
parameters:
  - {{name: x1, type: float, bounds: [-5, 10]}}
  - {{name: x2, type: float, bounds: [0, 15]}}
objectives:
  - {{name: y, goal: minimize}}
instrument: {{simulator: branin, latency: 0}}
planner: {{kind: random}}
budget: {{max_trials: 2}}
seed: 1
{extra}"""

DEVICES = f"""\
name: bench
parameters:
  - {{name: x, type: float, bounds: [0, 2]}}
objectives:
  - {{name: y, goal: minimize}}
instrument:
  devices:
    inputs:
      x: {{device: "{__name__}:Broken", limits: [0, 2]}}
    outputs:
      y: {{device: "ophyd:Signal"}}
planner: {{kind: random}}
budget: {{max_trials: 2}}
seed: 1
"""


class Broken(Signal):
    """A device whose constructor fails (a serial port in use), or does ``Broken.then``."""

    then: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if Broken.then is not None:
            Broken.then()
        raise RuntimeError("serial port /dev/ttyUSB0 is busy")


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _new_files(tmp_path: Path, before: set[Path]) -> set[Path]:
    return set(tmp_path.rglob("*")) - before


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return {
        "bad": _write(tmp_path, "bad.yaml", "name: bad\nparameters: 3\n"),
        "bad_prior": _write(
            tmp_path, "prior.yaml", BRANIN.format(name="prior", extra="prior_data: prior.csv\n")
        ),
        "csv": _write(tmp_path, "prior.csv", "x1,x2,y\nten,0,1\n"),  # x1 not a number
        "devices": _write(tmp_path, "bench.yaml", DEVICES),
        "good": _write(tmp_path, "branin.yaml", BRANIN.format(name="branin", extra="")),
    }


@pytest.mark.parametrize(
    ("command", "file"),
    [
        ("run", "bad"),  # the campaign file is refused before anything is created
        ("suggest", "bad"),
        ("suggest", "bad_prior"),  # read after the store opened: the new one is removed
        ("run", "devices"),  # the devices are built after the store opened: likewise
    ],
)
def test_a_failed_command_leaves_no_new_store(
    tmp_path: Path, files: dict[str, Path], command: str, file: str
) -> None:
    before = set(tmp_path.rglob("*"))
    db = tmp_path / "new" / "runs" / "lab.db"
    result = _cli(command, str(files[file]), "--store", f"sqlite:///{db}")
    assert result.exit_code != 0
    assert _new_files(tmp_path, before) == set()  # no file, -wal, -shm nor folder


def test_ctrl_c_while_the_devices_are_built_leaves_no_new_store(
    tmp_path: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Broken, "then", staticmethod(interrupt))
    before = set(tmp_path.rglob("*"))
    result = _cli("run", str(files["devices"]), "--store", f"sqlite:///{tmp_path / 'lab.db'}")
    assert result.exit_code == 130
    assert "nothing stored" in result.output
    assert _new_files(tmp_path, before) == set()


def test_a_failed_command_keeps_an_existing_store(tmp_path: Path, files: dict[str, Path]) -> None:
    url = f"sqlite:///{tmp_path / 'lab.db'}"
    assert _cli("run", str(files["good"]), "--store", url).exit_code == 0
    for command, file in (("run", "devices"), ("suggest", "bad_prior"), ("suggest", "bad")):
        assert _cli(command, str(files[file]), "--store", url).exit_code != 0
    store = Store(url, create=False)
    try:
        assert [row.name for row in store.campaigns()] == ["branin"]
    finally:
        store.close()


def test_a_campaign_stored_meanwhile_in_the_new_store_is_kept(
    tmp_path: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another command starts a campaign in the same new file while this one builds its
    devices: the file is no longer this command's to remove."""
    url = f"sqlite:///{tmp_path / 'lab.db'}"

    def other_command() -> None:
        assert _cli("suggest", str(files["good"]), "--store", url).exit_code == 0

    monkeypatch.setattr(Broken, "then", staticmethod(other_command))
    assert _cli("run", str(files["devices"]), "--store", url).exit_code != 0
    store = Store(url, create=False)
    try:
        assert [row.name for row in store.campaigns()] == ["branin"]
    finally:
        store.close()


@pytest.mark.parametrize(
    "args",
    [
        ["resume"],
        ["status"],
        ["campaigns"],
        ["export"],
        ["report"],
        ["suggest"],
        ["tell", "1", "y=1"],
        ["tell", "--csv", "results.csv"],
        ["plan", "--dry-run", "bad.yaml"],
        ["release"],
    ],
)
def test_a_command_that_reads_a_store_creates_none(
    tmp_path: Path, files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "results.csv", "trial_id,y\n1,2\n")
    before = set(tmp_path.rglob("*"))
    result = _cli(*args, "--store", f"sqlite:///{tmp_path / 'new' / 'lab.db'}")
    assert result.exit_code != 0
    assert _new_files(tmp_path, before) == set()
