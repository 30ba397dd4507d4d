"""Store URLs that cannot keep a campaign are refused before anything is created (exit 2).

Found in review: ``closedloop run FILE --store sqlite://`` (or ``sqlite:///``,
``sqlite:///:memory:``, ``sqlite:///?mode=ro``) started the run in an in-memory database
that each of its threads saw empty: "no such table", a thread's traceback, and then "lost
the store ... everything committed before it is kept, and `closedloop resume` continues the
campaign" when nothing was kept. A store path the OS refuses (a name too long, ``%00``) gave
"please report it". Only ``plan --dry-run``'s own preview store lives in memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loop.errors import StoreError
from loop.store import Store
from tests.cli_process import closedloop

CAMPAIGN = """\
name: urls
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives:
  - {name: y, goal: minimize}
instrument: {simulator: branin, latency: 0}
planner: {kind: random}
budget: {max_trials: 1}
seed: 1
"""

IN_MEMORY = ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:///?mode=ro"]
REFUSED = "an in-memory SQLite store keeps nothing once the command ends; give a file"


def _campaign(tmp_path: Path) -> Path:
    file = tmp_path / "urls.yaml"
    file.write_text(CAMPAIGN)
    return file


def _refused(process: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2 with one clean error line: no traceback, no "please report it", no promise."""
    assert process.returncode == 2, process.stderr
    for word in words:
        assert word in process.stderr, process.stderr
    for wrong in ("Traceback", "please report", "resume continues", "no such table"):
        assert wrong not in process.stderr + process.stdout


@pytest.mark.parametrize("url", IN_MEMORY)
def test_run_refuses_an_in_memory_store_before_it_starts(tmp_path: Path, url: str) -> None:
    file = _campaign(tmp_path)
    process = closedloop("run", str(file), "--store", url, "--max-trials", "1", cwd=tmp_path)
    _refused(process, f"store URL {url}: {REFUSED}", "sqlite:///campaign.db")
    assert "trial" not in process.stdout  # no trial was run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["urls.yaml"]  # nothing created


@pytest.mark.parametrize(
    "command",
    [
        ["resume"],
        ["suggest", "{file}"],
        ["tell", "1", "y=0.5"],
        ["status"],
        ["export"],
        ["report", "-o", "r.png"],
        ["release"],
        ["plan", "--dry-run", "--store"],
    ],
    ids=lambda c: c[0],
)
def test_every_command_refuses_an_in_memory_store(tmp_path: Path, command: list[str]) -> None:
    """A command that reads one would only find it empty; one that writes would lose it."""
    file = _campaign(tmp_path)
    args = [a.replace("{file}", str(file)) for a in command]
    if args[-1] != "--store":
        args.append("--store")
    process = closedloop(*args, "sqlite://", cwd=tmp_path)
    _refused(process, f"store URL sqlite://: {REFUSED}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["urls.yaml"]


def test_the_store_from_the_environment_is_refused_too(tmp_path: Path) -> None:
    file = _campaign(tmp_path)
    process = subprocess.run(
        [sys.executable, "-m", "loop.cli", "run", str(file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "CLOSEDLOOP_STORE": "sqlite:///:memory:"},
    )
    _refused(process, f"store URL sqlite:///:memory:: {REFUSED}")


def test_a_query_string_on_a_sqlite_file_is_refused(tmp_path: Path) -> None:
    """``?mode=ro`` was silently ignored: the file was opened, and written, read-write."""
    file = _campaign(tmp_path)
    process = closedloop("run", str(file), "--store", "sqlite:///x.db?mode=ro", cwd=tmp_path)
    _refused(process, "store URL sqlite:///x.db?mode=ro:", "(mode)", "write sqlite:///x.db")
    assert not (tmp_path / "x.db").exists()
    uri = "sqlite:///file:x.db?mode=ro&uri=true"
    process = closedloop("status", "--store", uri, cwd=tmp_path)
    _refused(process, f"store URL {uri}:", "(mode, uri)", "sqlite:///campaign.db")


def test_plan_dry_run_still_previews_a_campaign_file_in_memory(tmp_path: Path) -> None:
    file = _campaign(tmp_path)
    process = closedloop("plan", "--dry-run", str(file), cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    assert "x1" in process.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["urls.yaml"]


def test_a_store_name_too_long_for_the_os_is_bad_input(tmp_path: Path) -> None:
    url = f"sqlite:///{'x' * 300}.db"
    process = closedloop("status", "--store", url, cwd=tmp_path)
    _refused(process, f"store URL {url}: ", "File name too long", "pass another --store URL")


def test_a_nul_byte_in_the_store_path_is_bad_input(tmp_path: Path) -> None:
    file = _campaign(tmp_path)
    process = closedloop("run", str(file), "--store", "sqlite:///%00", cwd=tmp_path)
    _refused(process, "store URL sqlite:///%00: ", "embedded null byte")
    process = closedloop("run", str(file), "--store", "sqlite:///runs/a%00b.db", cwd=tmp_path)
    _refused(process, "store URL sqlite:///runs/a%00b.db: ", "embedded null byte")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["urls.yaml"]  # no runs/ folder


def test_the_python_api_refuses_an_in_memory_store_unless_it_is_scratch() -> None:
    """A ``Runner`` on ``Store("sqlite://")`` failed in its threads the same way."""
    with pytest.raises(StoreError, match="in-memory SQLite store keeps nothing"):
        Store("sqlite://")
    with pytest.raises(StoreError, match="in-memory SQLite store keeps nothing"):
        Store("sqlite:///:memory:", create=False)
    scratch = Store("sqlite://", scratch=True)
    try:
        assert scratch.campaigns() == []
    finally:
        scratch.close()
