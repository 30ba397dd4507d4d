"""``planner: {kind: ax}`` where Ax (the ``ax`` extra, ax-platform) is not installed.

Found by a packager's review: ``validate`` said ``ok``, then ``run``, ``plan --dry-run`` and
``suggest`` failed at the first proposal with "ModuleNotFoundError: No module named 'ax'"
and a request to report a bug, ``run`` having already stored a campaign that ``status``
offered to ``resume`` (which failed the same way). A campaign file of kind ``ax`` is now
refused when it loads (file, line of ``planner.kind``, the install), before anything is
stored; a campaign stored where Ax was installed is refused the same way by every command
that proposes, with the store untouched, and is told its results as before.

The CLI runs as a user runs it, in a fresh interpreter, here one that cannot import Ax
(``sys.modules["ax"] = None``: ``import ax`` fails, and ``importlib.util.find_spec`` finds
nothing, as without the package); the steps that need Ax run in this process, which has it.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import planners._ax as ax_module
from loop.cli import app
from loop.store import Store
from planners import FloatParameter, Objective, Space
from planners._ax import AxPlanner, _import_ax
from planners._config import PlannerConfig, PlannerUnavailable

ROOT = Path(__file__).parents[2]

CAMPAIGN = """\
name: axless
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives:
  - {name: y, goal: minimize}
instrument:
  simulator: branin
  latency: 0.0
planner:
  kind: ax
  initial: {kind: sobol, n: 5}
budget: {max_trials: 3}
seed: 1
"""
KIND_LINE = 11  # `  kind: ax`

NOT_INSTALLED = "planner kind ax needs Ax (ax-platform), which is not installed"
INSTALL = "`pip install 'closedloop[ax]'`"

# The CLI's entry point in an interpreter where Ax cannot be imported.
_WITHOUT_AX = "import sys; sys.modules['ax'] = None; from loop.__main__ import main; main()"


def _without_ax(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``closedloop ARGS`` in a fresh interpreter that cannot import Ax (as
    ``tests/cli_process.py`` runs it, with Ax blocked)."""
    return subprocess.run(
        [sys.executable, "-c", _WITHOUT_AX, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _campaign_file(tmp_path: Path) -> Path:
    path = tmp_path / "axless.yaml"
    path.write_text(CAMPAIGN)
    assert path.read_text().splitlines()[KIND_LINE - 1] == "  kind: ax"
    return path


def _refused_for_ax(proc: subprocess.CompletedProcess[str]) -> str:
    """The one message of a refusal for Ax not installed (exit 2, no traceback)."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    err = proc.stderr
    assert "Traceback" not in err and "please report" not in err, err
    assert "ModuleNotFoundError" not in err, err
    assert err.startswith("error: "), err
    assert NOT_INSTALLED in err and INSTALL in err, err
    assert sys.prefix in err, err  # the environment it is missing from
    return err


def _refused_file(proc: subprocess.CompletedProcess[str], path: Path) -> None:
    err = _refused_for_ax(proc)
    assert err.startswith(f"error: {path}:{KIND_LINE}: {NOT_INSTALLED}"), err
    assert "\n  fix: " in err and "or use another planner kind: botorch" in err, err


def _dump(db: Path) -> list[str]:
    """Every row of the store, to compare before and after."""
    con = sqlite3.connect(db)
    try:
        return list(con.iterdump())
    finally:
        con.close()


def _campaigns(db: Path) -> list[str]:
    store = Store(f"sqlite:///{db}", create=False)
    try:
        return [row.name for row in store.campaigns()]
    finally:
        store.close()


# ---------------------------------------------------------------------------- a campaign file
def test_validate_refuses_kind_ax_without_ax(tmp_path: Path) -> None:
    path = _campaign_file(tmp_path)
    _refused_file(_without_ax("validate", str(path), cwd=tmp_path), path)


def test_run_refuses_it_before_anything_is_stored(tmp_path: Path) -> None:
    path = _campaign_file(tmp_path)
    db = tmp_path / "new.db"
    _refused_file(_without_ax("run", str(path), "--store", f"sqlite:///{db}", cwd=tmp_path), path)
    assert not db.exists()  # not even an empty store
    # ... nor into a store that exists
    existing = tmp_path / "existing.db"
    Store(f"sqlite:///{existing}").close()
    before = _dump(existing)
    proc = _without_ax("run", str(path), "--store", f"sqlite:///{existing}", cwd=tmp_path)
    _refused_file(proc, path)
    assert _dump(existing) == before
    assert _campaigns(existing) == []


def test_suggest_refuses_it_before_anything_is_stored(tmp_path: Path) -> None:
    path = _campaign_file(tmp_path)
    db = tmp_path / "ask.db"
    proc = _without_ax("suggest", str(path), "--store", f"sqlite:///{db}", cwd=tmp_path)
    _refused_file(proc, path)
    assert not db.exists()


def test_plan_dry_run_refuses_it(tmp_path: Path) -> None:
    path = _campaign_file(tmp_path)
    _refused_file(_without_ax("plan", str(path), "--dry-run", cwd=tmp_path), path)


def test_other_kinds_need_no_ax(tmp_path: Path) -> None:
    path = tmp_path / "sobol.yaml"
    path.write_text(CAMPAIGN.replace("kind: ax", "kind: sobol"))
    proc = _without_ax("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "planner sobol" in proc.stdout


# ---------------------------------------------------------------------------- a stored campaign
def _cli(*args: str) -> Any:
    """The CLI in this process, where Ax is installed."""
    return CliRunner().invoke(app, list(args))


@pytest.mark.slow
def test_stored_ax_campaign_is_refused_with_the_install_and_left_untouched(
    tmp_path: Path,
) -> None:
    """A campaign stored where Ax was installed, then used where it is not: every command
    that proposes says what to install (exit 2) and writes nothing; ``tell`` needs no
    planner and records results as before; once Ax is back, the campaign goes on."""
    path = _campaign_file(tmp_path)
    db = tmp_path / "c.db"
    url = f"sqlite:///{db}"
    asked = _cli("suggest", str(path), "--store", url, "-n", "2", "--json")
    assert asked.exit_code == 0, asked.output
    trials = [t["trial_id"] for t in json.loads(asked.stdout)["trials"]]
    assert len(trials) == 2
    before = _dump(db)

    for args in (
        ("resume", "--store", url),
        ("resume", "--store", url, "-c", "1", "--max-trials", "5"),
        ("suggest", "--store", url, "-c", "1"),
        ("plan", str(path), "--dry-run", "--store", url),
    ):
        err = _refused_for_ax(_without_ax(*args, cwd=tmp_path))
        assert err.startswith(
            f"error: campaign 'axless' (id 1) in {url}, as stored (axless.yaml, line "
            f"{KIND_LINE}): {NOT_INSTALLED}"
        ), (args, err)
        # the install, then the same command: not a new campaign, nor another kind
        assert f"fix: {INSTALL} into this environment, then run the command again" in err
        assert "closedloop export" not in err and "another planner kind" not in err, err
        assert _dump(db) == before, args

    # `tell` builds no planner: results are recorded without Ax
    for trial in trials:
        told = _without_ax("tell", "--store", url, str(trial), "y=12.5", cwd=tmp_path)
        assert told.returncode == 0, told.stderr
    # ... and with Ax installed again, the campaign goes on where it stopped
    resumed = _cli("resume", "--store", url, "-q")
    assert resumed.exit_code == 0, resumed.output
    store = Store(url, create=False)
    try:
        statuses = [t.status for t in store.trials(1)]
    finally:
        store.close()
    assert statuses == ["completed"] * 3


# ---------------------------------------------------------------------------- the planner itself
def _broken_ax(folder: Path) -> None:
    """An ``ax`` package in ``folder`` that is found, and whose import fails on a dependency."""
    (folder / "ax").mkdir()
    (folder / "ax" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pyre_extensions'\", name='pyre_extensions')\n"
    )


@pytest.fixture
def no_ax(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process without Ax: ``import ax`` fails, and it was never imported."""
    monkeypatch.setattr(ax_module, "_ROUTED", False)
    monkeypatch.setitem(sys.modules, "ax", None)
    yield


def test_ax_planner_without_ax_names_the_install(no_ax: None) -> None:
    """Reached anyway (the planner used from Python, a campaign loaded before Ax went):
    the install, not a ModuleNotFoundError that reads like a bug."""
    space = Space([FloatParameter(name="x", bounds=(0, 1))])
    planner = AxPlanner(space, [Objective(name="y")], PlannerConfig(kind="ax"), seed=0)
    with pytest.raises(PlannerUnavailable) as info:
        planner.suggest(1)
    assert NOT_INSTALLED in str(info.value) and INSTALL in str(info.value)
    assert isinstance(info.value, ImportError) and info.value.name == "ax"
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_ax_that_cannot_be_imported_is_told_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ax is there but something it imports is not: the error says so, and names it."""
    _broken_ax(tmp_path)
    monkeypatch.setattr(ax_module, "_ROUTED", False)
    monkeypatch.delitem(sys.modules, "ax", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PlannerUnavailable) as info:
        _import_ax()
    message = str(info.value)
    assert "which is installed in this Python environment" in message
    assert "cannot be imported: No module named 'pyre_extensions'" in message
    assert "pip install --upgrade 'closedloop[ax]'" in message
    assert NOT_INSTALLED not in message


def test_cli_says_an_ax_that_cannot_be_imported_is_an_install_to_repair(tmp_path: Path) -> None:
    """Ax is found (the campaign loads) but its import fails at the first proposal: one
    message with the repair, exit 2, not a bug to report (``loop.cli._entry``)."""
    path = _campaign_file(tmp_path)
    _broken_ax(tmp_path)  # first on the path of `python -c`: its working folder
    proc = subprocess.run(
        [sys.executable, "-c", "from loop.__main__ import main; main()"]
        + ["plan", str(path), "--dry-run"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "please report" not in proc.stderr
    assert proc.stderr.startswith(
        "error: planner kind ax needs Ax (ax-platform), which is installed in this Python "
        f"environment ({sys.prefix}) but cannot be imported: No module named 'pyre_extensions'"
    ), proc.stderr
    assert "pip install --upgrade 'closedloop[ax]'" in proc.stderr
