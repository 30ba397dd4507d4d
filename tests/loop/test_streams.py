"""The standard streams as a user leaves them: closed at start, failing under a campaign,
or in an encoding that cannot write every character (``loop.streams``).

Each case found in review stopped a campaign or crashed a command: a stdout closed with
``>&-`` lost the first trial's measurement and ended in "ValueError: zip() argument 2 is
longer than argument 1 ... please report it"; a stdout on a full disk or a terminal that went
away stopped the campaign as "the runner failed: OSError"; a Latin-1 locale made ``status``
and ``export`` raise ``UnicodeEncodeError``; a manual instrument with stdin closed failed with
"RuntimeError: input(): lost sys.stdin". The commands run as a user runs them: a fresh
interpreter, the streams set up by a shell or by ``subprocess``.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from instruments._dispatch import _busy_time
from loop.streams import OUTPUT_FAILED, STDOUT_CLOSED, gone, stdout_note

#: Not Latin-1: an em dash between two Greek letters.
VALUE = "\u03b1\u2014\u03b2"

CAMPAIGN = f"""
name: streams
parameters:
  - {{name: x1, type: float, bounds: [-5, 10]}}
  - {{name: k, type: choice, values: ["{VALUE}", plain]}}
objectives: [{{name: y, goal: minimize}}]
instrument: {{function: "f.py:measure", outputs: [y]}}
planner: {{kind: sobol}}
budget: {{max_trials: {{trials}}}}
seed: 1
"""

FUNCTION = """
import time


def measure(inputs):
    time.sleep({pause})
    return {{"y": float(inputs["x1"]) ** 2 + (inputs["k"] == "plain")}}
"""

MANUAL = """
name: bench
parameters: [{name: t, type: float, bounds: [30, 110]}]
objectives: [{name: yield, goal: maximize}]
instrument: manual
planner: {kind: sobol}
budget: {max_trials: 2}
seed: 1
"""

NOT_A_BUG = "please report"


def _campaign(folder: Path, trials: int = 3, pause: float = 0.0) -> Path:
    (folder / "f.py").write_text(FUNCTION.format(pause=pause))
    (folder / "c.yaml").write_text(CAMPAIGN.replace("{trials}", str(trials)))
    return folder / "s.db"


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "loop", *args]


def _shell(line: str, folder: Path, **env: str) -> subprocess.CompletedProcess[bytes]:
    """``line`` run by ``sh`` in ``folder``, ``closedloop`` standing for this interpreter's
    command: the redirections (``>&-``, ``>/dev/full``) are the shell's, as a user's are.
    The store is ``s.db`` there unless ``--store`` says otherwise."""
    command = " ".join(f"'{part}'" for part in _command())
    return subprocess.run(
        ["sh", "-c", line.replace("closedloop", command)],
        cwd=folder,
        capture_output=True,
        timeout=300,
        env={**os.environ, "CLOSEDLOOP_STORE": "sqlite:///s.db", **env},
    )


def _trials(db: Path) -> list[str]:
    """The status of every trial, in order."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT id, status FROM trial ORDER BY id").fetchall()
    return [status for _, status in rows]


def _campaign_status(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT status, stop_reason FROM campaign").fetchall()


# ---------------------------------------------------------------------------- closed at start
@pytest.mark.parametrize("closed", [">&-", "<&- >&- 2>&-"])
def test_a_campaign_runs_to_its_end_with_its_streams_closed(tmp_path: Path, closed: str) -> None:
    """``>&-``: every trial completed and stored (the first one was failed, its measurement
    lost, and the run crashed), exit code 0, no "please report it"."""
    db = _campaign(tmp_path)
    done = _shell(f"closedloop run c.yaml {closed}", tmp_path)
    assert done.returncode == 0, done.stderr
    assert NOT_A_BUG not in done.stderr.decode()
    assert _trials(db) == ["completed"] * 3
    assert _campaign_status(db) == [("completed", "max_trials reached (3 completed trials)")]
    # and the commands that only print: export asked stdout.isatty() of None
    for line in (
        "closedloop export >&-",
        "closedloop status >&- 2>&-",
    ):
        assert _shell(line, tmp_path).returncode == 0, line


def test_a_manual_instrument_without_stdin_is_the_end_of_input(tmp_path: Path) -> None:
    """stdin closed (``<&-``) under ``instrument: manual`` ends like the end of a file of
    answers (``</dev/null``): the operator's input ended, not "the runner failed"."""
    (tmp_path / "c.yaml").write_text(MANUAL)
    closed = _shell("closedloop run c.yaml <&-", tmp_path)
    assert NOT_A_BUG not in closed.stderr.decode(), closed.stderr
    assert _campaign_status(tmp_path / "s.db") == [("stopped", "the operator's input ended")]
    at_end = _shell("closedloop run c.yaml --store sqlite:///n.db </dev/null", tmp_path)
    assert closed.returncode == at_end.returncode


# ---------------------------------------------------------------------------- lost under a run
def test_a_campaign_goes_on_when_its_output_cannot_be_written(tmp_path: Path) -> None:
    """stdout on a full disk (``/dev/full``: ENOSPC from the first line): the campaign runs to
    its end, exit code 0, and stderr says once why its output stopped (not that a reader
    exited)."""
    db = _campaign(tmp_path)
    done = _shell("closedloop run c.yaml >/dev/full", tmp_path)
    assert done.returncode == 0, done.stderr
    assert _trials(db) == ["completed"] * 3
    err = done.stderr.decode()
    assert err.count(stdout_note(OSError(errno.ENOSPC, "full"))) == 1, err
    assert NOT_A_BUG not in err


def test_a_command_whose_output_cannot_be_written_fails(tmp_path: Path) -> None:
    """``export > trials.csv`` on a full disk wrote nothing: exit code 1 and a line saying
    why, not "please report it" (a campaign goes on; a command whose output is its product
    must not claim success). A reader that left (``| head``) is still no error."""
    _campaign(tmp_path)
    assert _shell("closedloop run c.yaml -q", tmp_path).returncode == 0
    for line in (
        "closedloop export",
        "closedloop status",
    ):
        full = _shell(f"{line} >/dev/full", tmp_path)
        assert full.returncode == 1, line
        assert full.stderr.decode() == OUTPUT_FAILED.format(why="No space left on device")


def test_help_cut_short_by_its_reader_is_no_failure(tmp_path: Path) -> None:
    """Help is printed by typer's rich console, whose broken pipe ended the program with 1
    (``closedloop --help | head -1``; ``export | head`` ends with 0), and help to a full
    disk said "please report it". Now as for every other command: 0, and 1 with the
    reason. ``| true`` has left before the interpreter has started, so the pipe is
    broken at the first write."""
    for line in ("closedloop --help", "closedloop run --help", "closedloop instruments --help"):
        command = line.replace("closedloop", " ".join(f"'{part}'" for part in _command()))
        left = subprocess.run(
            ["bash", "-c", f"{command} | true; echo ${{PIPESTATUS[0]}}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert left.stdout.strip() == "0", (line, left.stderr)
        assert left.stderr == "", line
        full = _shell(f"{line} >/dev/full", tmp_path)
        assert full.returncode == 1, line
        assert full.stderr.decode() == OUTPUT_FAILED.format(why="No space left on device")


def _terminal_goes_away(folder: Path, until: bytes, *, stdin: bool = False) -> tuple[int, str]:
    """``closedloop run c.yaml`` with stdout (and stdin, if ``stdin``) on a terminal that
    goes away once ``until`` was shown (the ssh session of a ``nohup`` run dropped: its
    reads and writes fail with EIO): its exit code and its stderr."""
    master, slave = os.openpty()
    try:
        with (folder / "err.txt").open("wb") as err:
            proc = subprocess.Popen(
                _command("run", "c.yaml"),
                cwd=folder,
                stdin=slave if stdin else subprocess.DEVNULL,
                stdout=slave,
                stderr=err,
                env={**os.environ, "CLOSEDLOOP_STORE": "sqlite:///s.db"},
                start_new_session=True,  # not its controlling terminal: no SIGHUP, only EIO
            )
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + 240
        while until not in seen and time.monotonic() < deadline:
            try:
                seen += os.read(master, 4096)
            except OSError:  # it ended (and closed the terminal) before that
                break
    finally:
        os.close(master)  # the terminal goes away
    return proc.wait(timeout=240), (folder / "err.txt").read_text()


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="no pseudo-terminals")
def test_a_campaign_goes_on_when_its_terminal_goes_away(tmp_path: Path) -> None:
    """Writes to stdout failing with EIO mid-run stopped the campaign as "the runner failed:
    OSError: [Errno 5]" (from a trial's line and from the progress bar)."""
    db = _campaign(tmp_path, trials=5, pause=0.3)
    code, err = _terminal_goes_away(tmp_path, b"trial")
    assert code == 0, err
    assert _trials(db) == ["completed"] * 5
    assert err.count(stdout_note(OSError(errno.EIO, "gone"))) == 1, err


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="no pseudo-terminals")
def test_an_operator_whose_terminal_goes_away_ends_the_input(tmp_path: Path) -> None:
    """A manual instrument's prompt on a terminal that goes away: the end of the operator's
    input (the campaign stopped, resumable), not "the runner failed: OSError"."""
    (tmp_path / "c.yaml").write_text(MANUAL)
    code, err = _terminal_goes_away(tmp_path, b"yield =", stdin=True)
    assert code == 130 and NOT_A_BUG not in err, err  # 130: stopped, as at the end of input
    assert _campaign_status(tmp_path / "s.db") == [("stopped", "the operator's input ended")]


# ---------------------------------------------------------------------------- encodings
def test_status_and_export_in_an_encoding_without_the_values(tmp_path: Path) -> None:
    """Latin-1 cannot write ``α—β``: ``status`` writes it as ``\\u03b1\\u2014\\u03b2``,
    ``export`` to a pipe writes the UTF-8 bytes ``export -o`` writes, ``--help`` is shown
    (rich's ``…`` at 40 columns); none raises UnicodeEncodeError."""
    _campaign(tmp_path)
    assert _shell("closedloop run c.yaml -q", tmp_path).returncode == 0
    latin = {"PYTHONIOENCODING": "latin-1", "PYTHONUTF8": "0", "COLUMNS": "200"}
    status = _shell("closedloop status", tmp_path, **latin)
    assert status.returncode == 0, status.stderr
    assert b"\\u03b1\\u2014\\u03b2" in status.stdout
    for form in ("csv", "json", "yaml"):
        piped = _shell(f"closedloop export -f {form}", tmp_path, **latin)
        assert piped.returncode == 0, piped.stderr
        written = _shell(f"closedloop export -f {form} -o out.{form}", tmp_path, **latin)
        assert written.returncode == 0, written.stderr
        assert piped.stdout == (tmp_path / f"out.{form}").read_bytes()
    assert VALUE.encode() in _shell("closedloop export", tmp_path, **latin).stdout
    latin["COLUMNS"] = "40"
    helped = _shell("closedloop run --help", tmp_path, **latin)
    assert helped.returncode == 0, helped.stderr
    assert b"Usage" in helped.stdout


# ---------------------------------------------------------------------------- the parts
def test_what_counts_as_a_stream_gone() -> None:
    assert gone(BrokenPipeError(errno.EPIPE, "pipe"))
    assert all(gone(OSError(code, "x")) for code in (errno.EIO, errno.ENOSPC, errno.ENXIO))
    assert not gone(OSError(errno.EACCES, "x"))
    assert not gone(ValueError("I/O operation on closed file"))
    assert stdout_note(BrokenPipeError(errno.EPIPE, "pipe")) == STDOUT_CLOSED
    assert "No space left on device" in stdout_note(OSError(errno.ENOSPC, "x"))


def test_a_run_without_messages_spent_no_time_in_devices() -> None:
    """A run that failed before its first message has no marks: 0 s, not a ValueError from
    ``zip(..., strict=True)`` that turned a failed trial into a crashed runner."""
    assert _busy_time([], 12.5) == 0.0
    assert _busy_time([(1.0, "set"), (3.0, "save")], 4.0) == 2.0
