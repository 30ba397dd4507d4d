"""The command line driven by a script: nothing is a terminal, stdout and stderr go to pipes
or files, the exit code is what the script branches on.

* A reader of stdout that goes away (``closedloop run ... | head -2``, a log shipper that
  died) must not stop a campaign: it stopped one as "the runner failed: SystemExit: 1",
  exit code 1 and an empty stderr (found in review).
* Log records written to a file are one line each with an ISO 8601 time; rich folded a
  warning over many padded lines (at ``COLUMNS=40`` a path cut mid-word).
* ``status --json`` and ``suggest --json`` give what a script needs without reading tables.
* 75 (EX_TEMPFAIL) says "busy, try again later": another process holds the campaign.
* A refusal is said on stderr, never on stdout, where a script reads results.
"""

from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from loop.cli import EXIT_BUSY, _entry, app
from loop.fmt import STDOUT_CLOSED
from loop.lock import CampaignLease
from loop.store import Store

BRANIN = """
name: scripted
parameters:
  - {{name: x1, type: float, bounds: [-5, 10], unit: mm}}
  - {{name: x2, type: float, bounds: [0, 15]}}
objectives: [{{name: y, goal: minimize}}]
instrument: {{simulator: branin, latency: {latency}}}
planner: {{kind: sobol}}
budget: {{max_trials: {trials}}}
seed: 1
"""

TWO_OBJECTIVES = """
name: fronted
parameters:
  - {name: temperature, type: float, bounds: [30, 110], unit: degC}
  - {name: residence_time, type: float, bounds: [0.5, 30], unit: min}
  - {name: equivalents, type: float, bounds: [1.0, 3.0]}
  - {name: catalyst, type: choice, values: [Pd(OAc)2, Pd(PPh3)4, XPhos-Pd-G3]}
objectives:
  - {name: yield, goal: maximize}
  - {name: impurity, goal: minimize}
instrument: {simulator: flow_reactor}
planner: {kind: sobol}
budget: {max_trials: 5}
seed: 7
"""


def _closedloop(*args: str) -> list[str]:
    return [sys.executable, "-m", "loop.cli", *args]


def _strict(text: str) -> Any:
    """JSON as a strict parser reads it: ``NaN``/``Infinity`` are refused."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _counts(db: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        campaigns = conn.execute("SELECT status, stop_reason FROM campaign").fetchall()
        trials = conn.execute("SELECT status, count(*) FROM trial GROUP BY status").fetchall()
    return campaigns, trials


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


# ---------------------------------------------------------------------------- closed stdout
@pytest.mark.parametrize("closed", ["stdout", "stdout and stderr"])
def test_a_campaign_goes_on_when_its_output_reader_goes_away(tmp_path: Path, closed: str) -> None:
    """The reader takes the banner and exits before the first trial's line is written: every
    trial still runs and is stored, the exit code is the campaign's (0), and stderr (when
    still read) says once, in a line, that the output stopped."""
    # 4 s of trials: the reader is gone long before the first trial's line, even when this
    # process is descheduled for a while on a loaded host.
    (tmp_path / "c.yaml").write_text(BRANIN.format(latency=1.0, trials=4))
    db = tmp_path / "s.db"
    err_file = tmp_path / "err.txt"
    with err_file.open("wb") as err:
        proc = subprocess.Popen(
            _closedloop("run", "c.yaml", "--store", f"sqlite:///{db}"),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if closed == "stdout and stderr" else err,
        )
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert b"scripted: sobol planner" in banner, banner
        proc.stdout.close()  # `head -1` exits
        if proc.stderr is not None:
            proc.stderr.close()
        assert proc.wait(timeout=180) == 0
    assert _counts(db) == (
        [("completed", "max_trials reached (4 completed trials)")],
        [("completed", 4)],
    )
    if closed == "stdout":
        assert err_file.read_text().count(STDOUT_CLOSED) == 1, err_file.read_text()


def test_output_to_a_closed_pipe_is_no_error(tmp_path: Path) -> None:
    """``export``/``status`` (JSON or tables) into a pipe nobody reads: no traceback, no
    "please report it", exit code 0, nothing on stderr."""
    (tmp_path / "c.yaml").write_text(BRANIN.format(latency=0, trials=3))
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert _run("run", str(tmp_path / "c.yaml"), "--store", url, "-q").exit_code == 0
    for args in (["export", "-f", "json"], ["status"], ["status", "--json"]):
        read, write = os.pipe()
        os.close(read)  # the reader is gone before anything is written
        try:
            done = subprocess.run(
                _closedloop(*args, "--store", url),
                cwd=tmp_path,
                stdin=subprocess.DEVNULL,
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
            )
        finally:
            os.close(write)
        # Silent, as `closedloop export | head` expects: only a campaign that goes on says so.
        assert (done.returncode, done.stderr) == (0, ""), (args, done.stderr)


# ---------------------------------------------------------------------------- log lines
ISO_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d WARNING .+$")


def test_a_log_record_is_one_line_in_a_log_file(tmp_path: Path) -> None:
    """stderr to a file, ``COLUMNS=40``: a warning is one line, its path whole, with an ISO
    8601 time; an error message (``error: ... fix: ...``) is not folded either."""
    folder = tmp_path / "a folder with a rather long name" / "instruments"
    folder.mkdir(parents=True)
    (folder / "inst.yaml").write_text(
        "inputs:\n  x1: {setpoint: 'x1:SP'}\n  x2: {setpoint: 'x2:SP'}\n"
        "outputs:\n  y: {pv: 'y', units: counts}\n"
    )
    campaign = BRANIN.format(latency=0, trials=3).replace(
        "{simulator: branin, latency: 0}", "{file: instruments/inst.yaml}"
    )
    (folder.parent / "c.yaml").write_text(campaign)
    db = tmp_path / "s.db"
    store = Store(f"sqlite:///{db}")
    store.create_campaign(
        "scripted",
        campaign,
        str(folder.parent / "c.yaml"),
        1,
        instrument_text=(folder / "inst.yaml").read_text(),
    )
    store.close()
    (folder / "inst.yaml").unlink()  # `status` warns, and reads the text stored instead
    env = {**os.environ, "COLUMNS": "40"}
    done = subprocess.run(
        _closedloop("status", "--json", "--store", f"sqlite:///{db}"),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.splitlines()
    assert ISO_LINE.match(line), line
    assert f"instrument file {folder / 'inst.yaml'} is missing or unreadable" in line
    assert _strict(done.stdout)["units"] == {
        "parameters": {"x1": "mm"},
        "outputs": {"y": "counts"},
    }

    missing = tmp_path / "a folder with a rather long name" / "no such store.db"
    done = subprocess.run(
        _closedloop("status", "--store", f"sqlite:///{missing}"),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == ""
    first = done.stderr.splitlines()[0]
    assert first.startswith("error: ") and str(missing) in first, done.stderr


# ---------------------------------------------------------------------------- status --json
KEYS = [
    "campaign",
    "campaign_id",
    "status",
    "stop_reason",
    "trials",
    "budget",
    "best",
    "pareto",
    "hypervolume",
    "feasible",
    "pending",
    "units",
    "seed",
    "sessions",
    "function_changes",
    "planner_changes",
    "tells",
    "amends",
    "running_time_s",
    "runner",
    "last_finished_at",
    "failures",
    "owed_retries",
    "slots",
]


def test_status_json_gives_what_a_script_branches_on(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(BRANIN.format(latency=0, trials=4))
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert _run("run", str(tmp_path / "c.yaml"), "--store", url, "-q").exit_code == 0
    out = _run("status", "--store", url, "--json")
    assert out.exit_code == 0, out.output
    got = _strict(out.stdout)
    assert list(got) == KEYS
    exported = _strict(_run("export", "--store", url, "-f", "json").stdout)
    (best,) = [r for r in exported if r["best"]]
    assert got["best"] == {
        k: best[k] for k in ("trial_id", "number", "kind", "parameters", "readbacks", "outputs")
    }
    assert got | {"best": None} == {
        "campaign": "scripted",
        "campaign_id": 1,
        "status": "completed",
        "stop_reason": "max_trials reached (4 completed trials)",
        "trials": {"completed": 4},
        "budget": got["budget"] | {"max_trials": 4},
        "best": None,
        "pareto": None,
        "hypervolume": None,
        "feasible": None,
        "pending": [],
        "units": {"parameters": {"x1": "mm"}, "outputs": {}},
        "seed": got["seed"],
        "sessions": got["sessions"],  # tests/loop/test_provenance.py checks them
        "function_changes": [],
        "planner_changes": [],
        "tells": [],
        "amends": [],
        "running_time_s": got["running_time_s"],  # tests/loop/test_status_progress.py
        "runner": None,  # finished: its lease released
        "last_finished_at": got["last_finished_at"],
        "failures": {},  # by kind: tests/loop/test_owed_retries.py
        "owed_retries": [],  # tests/loop/test_owed_retries.py
        "slots": None,  # one instrument
    }
    assert got["running_time_s"] >= 0 and got["last_finished_at"].endswith("+00:00")


def test_status_json_of_several_objectives_lists_the_front(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(TWO_OBJECTIVES)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert _run("run", str(tmp_path / "c.yaml"), "--store", url, "-q").exit_code == 0
    got = _strict(_run("status", "--store", url, "--json").stdout)
    exported = _strict(_run("export", "--store", url, "-f", "json").stdout)
    assert got["best"] is None
    assert got["pareto"] == [r["trial_id"] for r in exported if r["pareto"]] != []
    assert got["units"]["parameters"] == {"temperature": "degC", "residence_time": "min"}
    # the hypervolume with the reference point it is measured from (inferred here)
    assert got["hypervolume"]["value"] > 0
    assert set(got["hypervolume"]["reference_point"]) == {"yield", "impurity"}
    assert not any(v["given"] for v in got["hypervolume"]["reference_point"].values())


def test_a_front_keeps_to_the_reference_points_given(tmp_path: Path) -> None:
    """A trial worse than a given reference point (the worst value still worth having) is
    not on the front (found in review: listed at cost 21 against a reference of 16); one on
    the wrong side of every trial leaves no front, and `status` says what to check."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    (tmp_path / "c.yaml").write_text(TWO_OBJECTIVES)
    assert _run("run", str(tmp_path / "c.yaml"), "--store", url, "-q").exit_code == 0
    exported = _strict(_run("export", "--store", url, "-f", "json").stdout)
    front = [r for r in exported if r["pareto"]]
    # a reference for yield inside the front: the front's lower-yield trials drop out
    cut = sorted(r["outputs"]["yield"] for r in front)[len(front) // 2]
    kept = {r["trial_id"] for r in front if r["outputs"]["yield"] >= cut}
    for name, ref, expect in (("cut", cut, kept), ("wrong", 2.0, set())):
        text = TWO_OBJECTIVES.replace(
            "{name: yield, goal: maximize}",
            f"{{name: yield, goal: maximize, reference_point: {ref}}}",
        ).replace("name: fronted", f"name: {name}")
        text = text.replace(
            "{name: impurity, goal: minimize}",
            "{name: impurity, goal: minimize, reference_point: 1}",
        )
        (tmp_path / f"{name}.yaml").write_text(text)
        assert _run("run", str(tmp_path / f"{name}.yaml"), "--store", url, "-q").exit_code == 0
        got = _strict(_run("status", "--store", url, "-c", name, "--json").stdout)
        ids = _strict(_run("export", "--store", url, "-c", name, "-f", "json").stdout)
        assert {r["number"] for r in ids if r["pareto"]} == {
            r["number"] for r in front if r["trial_id"] in expect
        }
        assert got["hypervolume"]["reference_point"]["yield"] == {"value": ref, "given": True}
    text = _run("status", "--store", url, "-c", "wrong").stdout
    assert "Pareto front: 0 trials; hypervolume 0 above the reference point yield 2" in text
    assert "no feasible trial is at least as good as the reference point" in text


def test_suggest_and_status_json_for_ask_tell(tmp_path: Path) -> None:
    """``suggest --json`` says the campaign's state after it; ``status --json`` lists the
    trials awaiting their results."""
    (tmp_path / "c.yaml").write_text(
        "name: asked\nparameters:\n  - {name: x, type: float, bounds: [-1, 1]}\n"
        "objectives: [{name: y, goal: minimize}]\n"
        "instrument: {manual: true, outputs: [y, z]}\n"
        "planner: {kind: sobol}\nbudget: {max_trials: 5}\nseed: 1\n"
    )
    url = f"sqlite:///{tmp_path / 's.db'}"
    out = _run("suggest", str(tmp_path / "c.yaml"), "--store", url, "-n", "2", "--json")
    assert out.exit_code == 0, out.output
    asked = _strict(out.stdout)
    assert list(asked) == [
        "campaign",
        "campaign_id",
        "status",
        "stop_reason",
        "outputs",
        "trials",
        "refused",
    ]
    assert asked["refused"] == []  # no instrument limits to refuse a point by
    assert asked["status"] == "stopped" and asked["stop_reason"].startswith("ask/tell: 2 trial")
    first, second = (t["trial_id"] for t in asked["trials"])
    assert _run("tell", "--store", url, str(first), "y=0.25", "z=1").exit_code == 0
    got = _strict(_run("status", "--store", url, "--json").stdout)
    assert got["pending"] == [second]
    assert got["trials"] == {"completed": 1, "running": 1}
    assert got["best"]["trial_id"] == first and got["best"]["outputs"] == {"y": 0.25, "z": 1.0}


def test_status_json_is_strict_json() -> None:
    """A non-finite value (an output the runner would not store today, a store of another
    release) is null, as ``export --format json`` writes it: the same encoder."""
    from loop.cli import _status_json
    from loop.report import annotate, stored_campaign
    from loop.store import CampaignRow

    text = (
        "name: odd\nparameters:\n  - {name: x, type: float, bounds: [-1, 1]}\n"
        "objectives: [{name: y, goal: minimize}]\ninstrument: {manual: true, outputs: [y, z]}\n"
        "planner: {kind: sobol}\nbudget: {max_trials: 4}\n"
    )
    row = CampaignRow(id=1, name="odd", config_text=text, config_path="/nowhere/c.yaml", seed=1)
    record = {
        "trial_id": 1,
        "number": 1,
        "kind": "sobol",
        "status": "completed",
        "parameters": {"x": 0.5},
        "readbacks": {"x": math.nan},
        "outputs": {"y": 0.25, "z": math.inf},
    }
    c = stored_campaign(row)
    got = _strict(_status_json(row, c, annotate([record], c), {"completed": 1}))
    assert got["best"]["outputs"] == {"y": 0.25, "z": None}
    assert got["best"]["readbacks"] == {"x": None}


# ---------------------------------------------------------------------------- exit codes
def test_a_held_campaign_is_busy_75(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another live process holds the lease: ``resume`` is refused with 75 (EX_TEMPFAIL),
    which a scheduler retries, where 1 (a failed campaign) needs a person."""
    (tmp_path / "c.yaml").write_text(BRANIN.format(latency=0, trials=2))
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert _run("run", str(tmp_path / "c.yaml"), "--store", url, "-q").exit_code == 0
    capsys.readouterr()
    store = Store(url, create=False)
    with CampaignLease(store) as lease:  # this process: alive, on this host
        lease.acquire(1)
        resume = ["closedloop", "resume", "--store", url, "-c", "1", "--max-trials", "4"]
        monkeypatch.setattr(sys, "argv", resume)
        with pytest.raises(SystemExit) as exited:
            _entry()
    store.close()
    assert exited.value.code == EXIT_BUSY == 75
    said = capsys.readouterr()
    assert "is being run by" in said.err
    assert "resuming;" not in said.out  # the refusal is all that is printed


def test_refusals_go_to_stderr(tmp_path: Path) -> None:
    """Nothing to release (2, as ``resume`` with nothing to resume) and an unknown dataset
    (2): the message on stderr, stdout empty."""
    (tmp_path / "c.yaml").write_text(BRANIN.format(latency=0, trials=2))
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert _run("run", str(tmp_path / "c.yaml"), "--store", url, "-q").exit_code == 0
    for args, said in [
        (["release", "--store", url, "--confirm"], "no paused campaign in store"),
        (["release", "--store", url, "-c", "1"], "is completed, not paused"),
        (["datasets", "--name", "nosuch"], "unknown dataset 'nosuch'"),
    ]:
        out = _run(*args)
        assert (out.exit_code, out.stdout) == (2, ""), (args, out.output)
        assert said in out.stderr, (args, out.stderr)


def test_status_json_lists_each_instrument_slot(tmp_path: Path) -> None:
    """`status` showed each slot, its trial and counts; `status --json` had none of it."""
    (tmp_path / "c.yaml").write_text(
        TWO_OBJECTIVES.replace(
            "instrument: {simulator: flow_reactor}",
            "instrument: {simulator: flow_reactor, count: 2}",
        ).replace("max_trials: 5", "max_trials: 6")
    )
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert _run("run", str(tmp_path / "c.yaml"), "--store", url, "-q").exit_code == 0
    got = _strict(_run("status", "--store", url, "--json").stdout)
    assert [s["slot"] for s in got["slots"]] == [0, 1]
    assert all(s["state"] == "idle" and s["trial"] is None for s in got["slots"])
    assert sum(s["completed"] for s in got["slots"]) == 6
    assert all(s["failed"] == 0 and s["retired_because"] is None for s in got["slots"])
