"""A store that cannot be used as given is bad input: one message, exit 2, nothing touched."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from loop import Store, StoreError
from loop.store import SCHEMA_VERSION


def closedloop(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loop.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_new_store_records_its_schema_version(tmp_path: Path) -> None:
    Store(f"sqlite:///{tmp_path / 's.db'}").close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        (value,) = conn.execute(
            "SELECT value FROM closedloop_meta WHERE key = 'schema_version'"
        ).fetchone()
    assert int(value) == SCHEMA_VERSION


def test_store_of_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    Store(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE closedloop_meta SET value = ? WHERE key = 'schema_version'",
            (str(SCHEMA_VERSION + 1),),
        )
    with pytest.raises(StoreError, match="newer closedloop"):
        Store(f"sqlite:///{db}")
    with sqlite3.connect(db) as conn:
        (value,) = conn.execute("SELECT value FROM closedloop_meta").fetchone()
    assert int(value) == SCHEMA_VERSION + 1
    proc = closedloop("status", "--store", f"sqlite:///{db}", cwd=tmp_path)
    assert proc.returncode == 2 and "newer closedloop" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unwritable_store_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    campaign = Path(__file__).parents[2] / "campaigns" / "branin.yaml"
    proc = closedloop(
        "run", str(campaign), "--store", f"sqlite:///{blocker}/sub/s.db", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert "cannot create the store's folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_campaign_in_a_store_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    Store(f"sqlite:///{db}").close()
    proc = closedloop("status", "--store", f"sqlite:///{db}", "-c", "nope", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no campaign 'nope'" in proc.stderr and "Traceback" not in proc.stderr
