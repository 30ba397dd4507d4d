"""The ``closedloop`` command as a user runs it: a subprocess per command, real files."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def closedloop(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loop.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_run_status_export_report(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'runs.db'}"
    campaign = str(ROOT / "campaigns" / "branin.yaml")
    run = closedloop(
        "run", campaign, "--store", store, "--max-trials", "7", "--seed", "3", cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert "trial    7" in run.stdout and "best trial #" in run.stdout
    assert "max_trials reached (7 completed trials)" in run.stdout

    status = closedloop("status", "--store", store, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert "branin" in status.stdout and "7 completed" in status.stdout
    assert "best: trial #" in status.stdout

    exported = closedloop("export", "--store", store, "--format", "csv", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == 7
    assert {"trial_id", "status", "x1", "x2", "readback.x1", "readback.x2", "y", "run_uid"} <= set(
        rows[0]
    )
    assert all(r["status"] == "completed" and r["run_uid"] for r in rows)

    as_json = closedloop("export", "--store", store, "-f", "json", cwd=tmp_path)
    records = json.loads(as_json.stdout)
    assert [r["number"] for r in records] == list(range(1, 8))
    assert all(set(r["outputs"]) == {"y"} for r in records)

    png = tmp_path / "report.png"
    report = closedloop("report", "--store", store, "-o", str(png), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_status_without_store_is_a_clear_error(tmp_path: Path) -> None:
    proc = closedloop("status", "--store", f"sqlite:///{tmp_path / 'none.db'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no store at" in proc.stderr and "Traceback" not in proc.stderr


def test_run_of_invalid_file_runs_nothing(tmp_path: Path) -> None:
    bad = ROOT / "tests" / "loop" / "bad_campaigns" / "bounds_reversed.yaml"
    db = tmp_path / "store.db"
    proc = closedloop("run", str(bad), "--store", f"sqlite:///{db}", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{bad}:4" in proc.stderr and "Traceback" not in proc.stderr
    assert not db.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "campaigns/branin.yaml", "--max-trials", "abc"],
            "Invalid value for '--max-trials'",
        ),
        (["resume", "--bogus"], "No such option: --bogus"),
        (["status", "--store"], "Option '--store' requires an argument"),
    ],
)
def test_usage_errors_are_click_messages_with_exit_2(args: list[str], message: str) -> None:
    """Not "please report it": a mistyped option is the user's to fix, and says how."""
    proc = closedloop(*args, cwd=Path(__file__).parents[2])
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Error:" in proc.stderr
    assert "please report" not in proc.stderr and "Traceback" not in proc.stderr
