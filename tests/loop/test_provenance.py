"""A store says what ran, who ran it, and with which code (``loop.provenance``).

Every ``run``, ``resume`` and ``suggest`` that stores proposals is recorded as a
session (the boundary a resume makes, the seed and where it came from, the budget and its
override, the versions); a function file or a planner plugin edited between sessions is
recorded, and every run's start document names the function file, the plugin and the planner
stack; ``export --format yaml`` gives back a campaign file that runs the campaign again, its
header naming the plugin's file. Real runs: the CLI in a subprocess, or a Runner on a real
RunEngine and SQLite store.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from loop import Runner, Store, load_campaign
from loop.provenance import campaign_file, command_line, seed_source, session_line
from tests.cli_process import closedloop

BRANIN = """\
# branin, for the provenance tests
name: prov
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}   # the second one
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, noise: 0.5}
planner: {kind: sobol}
budget:
  max_trials: 3   # a short one
"""

FUNCTION = """\
name: fprov
parameters:
  - {name: t, type: float, bounds: [0, 1]}
objectives: [{name: y, goal: maximize}]
instrument: {function: "model.py:measure", outputs: [y]}
planner: {kind: random}
budget: {max_trials: 3}
seed: 5
"""

MODEL = "def measure(p):\n    return {'y': VALUE * p['t']}\n"

#: The example planner plugin, run from a file beside the campaign.
LOCAL_SEARCH = Path(__file__).parents[2] / "campaigns" / "local_search.py"

PLUGIN = BRANIN.replace(
    "planner: {kind: sobol}", "planner: {plugin: local_search.py:LocalSearch, initial: {n: 2}}"
)


def _store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs.db'}"


def _starts(store: Store, cid: int) -> list[dict[str, Any]]:
    """Each trial's start document, in trial order."""
    found = []
    for trial in store.trials(cid):
        docs = store.documents(trial.id or 0)
        found.append(next(d.body for d in docs if d.name == "start"))
    return found


def test_run_and_resume_are_sessions_with_their_boundary_seed_budget_and_versions(
    tmp_path: Path,
) -> None:
    (tmp_path / "c.yaml").write_text(BRANIN)
    store = _store(tmp_path)
    run = closedloop("run", "c.yaml", "--store", store, "--seed", "7", "-q", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    resume = closedloop(
        "resume", "--store", store, "-c", "prov", "--max-trials", "5", "-q", cwd=tmp_path
    )
    assert resume.returncode == 0, resume.stderr

    db = Store(store, create=False)
    first, second = db.sessions(1)
    assert (first["command"], first["trials_so_far"], first["seed"]) == ("run", 0, 7)
    assert first["seed_from"] == "--seed"  # the file has none: given on the command line
    assert first["argv"][1:] == ["run", "c.yaml", "--store", store, "--seed", "7", "-q"]
    assert first["budget"]["max_trials"] == 3 and first["override"] == {}
    assert (second["command"], second["trials_so_far"], second["seed_from"]) == (
        "resume",
        3,
        "stored",
    )
    assert second["budget"]["max_trials"] == 5 and second["override"] == {"max_trials": 5}
    for s in (first, second):
        assert s["by"] == f"{s['user']}@{s['host']}" and isinstance(s["pid"], int)
        assert {"python", "closedloop", "botorch", "gpytorch", "torch", "numpy", "scipy"} <= set(
            s["versions"]
        )
        assert {"bluesky", "ophyd"} <= set(s["versions"])
        assert s["at"].endswith("+00:00")
    # the pause trail is what `events` reads by default; every kind with None
    assert db.events(1) == []
    assert [e.kind for e in db.events(1, None)] == ["session", "session"]

    # every run's start document names the planner stack beside bluesky's own
    versions = _starts(db, 1)[0]["versions"]
    assert {"bluesky", "ophyd", "closedloop", "botorch", "gpytorch", "torch"} <= set(versions)

    status = closedloop("status", "--store", store, cwd=tmp_path, wide=True)
    assert status.returncode == 0, status.stderr
    line = next(ln for ln in status.stdout.splitlines() if ln.startswith("sessions: 2 ("))
    assert "run 20" in line and "; resume after 3 trials 20" in line
    assert f"by {first['by']}" in line and "(max_trials 5)" in line
    as_json = json.loads(closedloop("status", "--json", "--store", store, cwd=tmp_path).stdout)
    assert as_json["seed"] == 7
    assert [s["command"] for s in as_json["sessions"]] == ["run", "resume"]
    assert as_json["sessions"][1]["trials_so_far"] == 3 and as_json["function_changes"] == []
    assert as_json["planner_changes"] == [] and "planner" not in first  # a built-in planner


def test_a_password_in_the_command_line_is_not_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql+psycopg://lab:s3cret@dbhost/closedloop"
    argv = ["/usr/bin/closedloop", "resume", "--store", url, f"--store={url}"]
    monkeypatch.setattr(sys, "argv", argv)
    recorded = command_line()
    assert recorded[0] == "closedloop"
    assert not any("s3cret" in a for a in recorded)
    assert recorded[3] == "postgresql+psycopg://lab:***@dbhost/closedloop"
    assert recorded[4] == "--store=postgresql+psycopg://lab:***@dbhost/closedloop"


def test_the_seed_source_from_python(tmp_path: Path) -> None:
    assert seed_source(3, None) == "argument" and seed_source(None, 4) == "file"
    assert seed_source(None, None) == "drawn"
    (tmp_path / "c.yaml").write_text(BRANIN)
    store = Store(_store(tmp_path))
    runner = Runner(load_campaign(tmp_path / "c.yaml"), store, max_trials=2)
    runner.run()
    (session,) = store.sessions(runner.campaign_id or 0)
    assert (session["seed_from"], session["seed"]) == ("drawn", runner.seed)
    assert session["override"] == {"max_trials": 2}
    assert store.campaign(runner.campaign_id).seed == runner.seed


def test_prior_files_are_named_with_their_hash(tmp_path: Path) -> None:
    prior = tmp_path / "earlier.csv"
    prior.write_text("x1,x2,y\n1,2,30.5\n3,4,12.25\n")
    (tmp_path / "c.yaml").write_text(BRANIN + "seed: 2\n")
    store = _store(tmp_path)
    run = closedloop("run", "c.yaml", "--store", store, "--prior", "earlier.csv", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    (session,) = Store(store, create=False).sessions(1)
    assert session["seed_from"] == "file" and session["trials_so_far"] == 2  # the prior rows
    assert session["prior"] == [
        {
            "file": str(prior.resolve()),
            "rows": 2,
            "sha256": hashlib.sha256(prior.read_bytes()).hexdigest(),
        }
    ]


def test_a_function_file_edited_between_sessions_is_recorded(tmp_path: Path) -> None:
    model = tmp_path / "model.py"
    model.write_text(MODEL.replace("VALUE", "1.0"))
    old = hashlib.sha256(model.read_bytes()).hexdigest()
    (tmp_path / "c.yaml").write_text(FUNCTION)
    store = _store(tmp_path)
    run = closedloop("run", "c.yaml", "--store", store, "-q", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    model.write_text(MODEL.replace("VALUE", "2.0"))  # a "fixed bug"
    new = hashlib.sha256(model.read_bytes()).hexdigest()
    resume = closedloop("resume", "--store", store, "-c", "1", "--max-trials", "5", cwd=tmp_path)
    assert resume.returncode == 0, resume.stderr
    # a resume with the same file records no change
    again = closedloop("resume", "--store", store, "-c", "1", "--max-trials", "6", cwd=tmp_path)
    assert again.returncode == 0, again.stderr

    db = Store(store, create=False)
    (change,) = db.function_changes(1)
    assert (change["old_sha256"], change["new_sha256"]) == (old, new)
    assert (change["first_trial"], change["trials_so_far"]) == (4, 3)
    assert change["file"] == str(model)
    sessions = db.sessions(1)
    assert [s["function"]["sha256"] for s in sessions] == [old, new, new]
    # each trial's start document says which code measured it
    pins = [s["function"] for s in _starts(db, 1)]
    assert [p["sha256"] for p in pins] == [old] * 3 + [new] * 3
    assert all(p["file"] == str(model) for p in pins)

    status = closedloop("status", "--store", store, cwd=tmp_path, wide=True)
    assert f"function file {model} changed: trials from 4 on were measured by other code" in (
        " ".join(status.stdout.split())
    )


def _plugin_folder(tmp_path: Path) -> tuple[Path, str]:
    """c.yaml running the example plugin from local_search.py beside it; its sha256."""
    plugin = tmp_path / "local_search.py"
    plugin.write_text(LOCAL_SEARCH.read_text())
    (tmp_path / "c.yaml").write_text(PLUGIN)
    return plugin, hashlib.sha256(plugin.read_bytes()).hexdigest()


def test_a_planner_plugin_edited_between_sessions_is_recorded(tmp_path: Path) -> None:
    # found in review: only a log line said so; the store had no trace of which code
    # proposed which trials
    plugin, old = _plugin_folder(tmp_path)
    store = _store(tmp_path)
    run = closedloop("run", "c.yaml", "--store", store, "-q", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    with plugin.open("a") as f:
        f.write("# a fixed bug\n")
    new = hashlib.sha256(plugin.read_bytes()).hexdigest()
    resume = closedloop("resume", "--store", store, "-c", "1", "--max-trials", "5", cwd=tmp_path)
    assert resume.returncode == 0, resume.stderr
    assert "planner plugin local_search.py:LocalSearch has changed" in resume.stderr
    # a resume with the same code records no change
    again = closedloop("resume", "--store", store, "-c", "1", "--max-trials", "6", cwd=tmp_path)
    assert again.returncode == 0, again.stderr

    db = Store(store, create=False)
    spec = "local_search.py:LocalSearch"
    pin = {"plugin": spec, "file": str(plugin.resolve())}
    assert [s["planner"] for s in db.sessions(1)] == [
        pin | {"sha256": old},
        pin | {"sha256": new},
        pin | {"sha256": new},
    ]
    (change,) = db.planner_changes(1)
    assert change["what"] == "planner"
    assert (change["old"], change["new"]) == (pin | {"sha256": old}, pin | {"sha256": new})
    assert (change["first_trial"], change["trials_so_far"]) == (4, 3)
    assert db.function_changes(1) == []
    # each trial's start document says which code proposed it
    assert [s["planner"]["sha256"] for s in _starts(db, 1)] == [old] * 3 + [new] * 3

    status = closedloop("status", "--store", store, cwd=tmp_path, wide=True)
    assert (
        f"planner plugin {spec} changed: trials from 4 on were proposed by other code (sha256 "
        f"{old[:12]} -> {new[:12]}, "
    ) in " ".join(status.stdout.split())
    as_json = json.loads(closedloop("status", "--json", "--store", store, cwd=tmp_path).stdout)
    assert as_json["planner_changes"] == [change] and as_json["function_changes"] == []


def test_a_suggest_of_a_stored_campaign_records_a_changed_plugin(tmp_path: Path) -> None:
    # a suggest of a stored campaign records the change with its session
    plugin, old = _plugin_folder(tmp_path)
    store = _store(tmp_path)
    for _ in range(2):  # creates the campaign, then continues it: the same code
        proc = closedloop("suggest", "c.yaml", "--store", store, "-n", "1", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    with plugin.open("a") as f:
        f.write("# a fixed bug\n")
    new = hashlib.sha256(plugin.read_bytes()).hexdigest()
    for _ in range(2):  # the change is recorded once
        proc = closedloop(
            "suggest", "--store", store, "-c", "1", "-n", "1", "--max-trials", "6", cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
    db = Store(store, create=False)
    (change,) = db.planner_changes(1)
    assert (change["old"]["sha256"], change["new"]["sha256"]) == (old, new)
    assert (change["trials_so_far"], change["first_trial"]) == (2, 3)
    # each suggest a session (tests/loop/test_suggest_sessions.py), naming the code it ran
    assert [s["planner"]["sha256"] for s in db.sessions(1)] == [old, old, new, new]


def test_a_function_change_recorded_before_origins_were_reads_as_one(tmp_path: Path) -> None:
    # a store written by the closedloop before planner changes were recorded: its
    # function_changed events name the sha256s only
    (tmp_path / "c.yaml").write_text(BRANIN + "seed: 3\n")
    store = Store(_store(tmp_path))
    runner = Runner(load_campaign(tmp_path / "c.yaml"), store, max_trials=1)
    runner.run()
    cid = runner.campaign_id or 0
    detail: dict[str, object] = {"file": "/lab/model.py", "old_sha256": "a" * 64}
    detail |= {"new_sha256": "b" * 64, "trials_so_far": 1, "first_trial": 2}
    store.add_event(cid, "function_changed", detail=json.dumps(detail))
    (change,) = store.function_changes(cid)
    assert change["what"] == "function" and change["old_sha256"] == "a" * 64
    assert change["old"] == {"file": "/lab/model.py", "sha256": "a" * 64}
    assert change["new"] == {"file": "/lab/model.py", "sha256": "b" * 64}
    status = closedloop("status", "--store", store.url, cwd=tmp_path, wide=True)
    assert (
        "function file /lab/model.py changed: trials from 2 on were measured by other code "
        "(sha256 aaaaaaaaaaaa -> bbbbbbbbbbbb, "
    ) in " ".join(status.stdout.split())


def test_the_suggest_that_creates_a_campaign_is_a_session(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(BRANIN + "seed: 9\n")
    store = _store(tmp_path)
    for _ in range(2):
        proc = closedloop("suggest", "c.yaml", "--store", store, "-n", "1", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    first, then = Store(store, create=False).sessions(1)
    assert (first["command"], first["seed_from"], first["trials_so_far"]) == ("suggest", "file", 0)
    assert (then["command"], then["seed_from"], then["trials_so_far"]) == ("suggest", "stored", 1)


def test_export_yaml_gives_back_a_file_that_runs_the_campaign_again(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(BRANIN)
    store = _store(tmp_path)
    run = closedloop(
        "run", "c.yaml", "--store", store, "--seed", "11", "--max-trials", "4", cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    out = tmp_path / "again.yaml"
    exported = closedloop("export", "--store", store, "-c", "prov", "-o", str(out), cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    text = out.read_text()
    assert text.startswith("# Exported by closedloop ")
    assert "seed: 11, budget.max_trials: 4" in text
    # the user's comments and layout are kept; the values in force written in
    body = text.split("#\n", 1)[1]
    assert "  - {name: x2, type: float, bounds: [0, 15]}   # the second one\n" in body
    assert "  max_trials: 4   # a short one\n" in body and body.endswith("seed: 11\n")
    data = YAML(typ="safe").load(text)
    assert data["seed"] == 11 and data["budget"] == {"max_trials": 4}
    # stdout, by --format (as export writes its other formats)
    stdout = closedloop("export", "--store", store, "--format", "yaml", cwd=tmp_path)
    assert stdout.stdout == text

    # running it again (same machine, one slot, uninterrupted) measures the same trials
    store2 = f"sqlite:///{tmp_path / 'again.db'}"
    rerun = closedloop("run", str(out), "--store", store2, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr

    def trials(url: str) -> list[tuple[str, ...]]:
        proc = closedloop("export", "--store", url, cwd=tmp_path)
        return [(r["x1"], r["x2"], r["y"]) for r in csv.DictReader(io.StringIO(proc.stdout))]

    assert trials(store2) == trials(store) and len(trials(store)) == 4


def test_export_yaml_names_the_planner_plugins_file(tmp_path: Path) -> None:
    plugin, digest = _plugin_folder(tmp_path)
    store = _store(tmp_path)
    run = closedloop("run", "c.yaml", "--store", store, "--max-trials", "2", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    exported = closedloop("export", "--store", store, "--format", "yaml", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    header = " ".join(line.lstrip("# ") for line in exported.stdout.split("#\n", 1)[0].splitlines())
    assert "an instrument, function or planner plugin file, prior_data" in header
    assert (
        f"Planner plugin local_search.py:LocalSearch at its start: file {plugin.resolve()} "
        f"(sha256 {digest})"
    ) in header


def test_export_yaml_of_a_file_that_says_it_all_is_the_text_itself(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(BRANIN + "seed: 4\n")
    store = Store(_store(tmp_path))
    Runner(load_campaign(tmp_path / "c.yaml"), store).run()
    text = campaign_file(store, None)
    assert "(the file's own)" in text.split("#\n", 1)[0]
    assert text.split("#\n", 1)[1] == BRANIN + "seed: 4\n"


def test_a_session_line_stays_one_line_for_many_sessions() -> None:
    one = {"command": "resume", "trials_so_far": 3, "at": "2026-12-05T10:00:00+00:00", "by": "u@h"}
    line = session_line([{**one, "command": "run", "trials_so_far": 0}] + [one] * 9)
    assert line is not None and line.startswith("sessions: 10 (run 2026-12-05 10:00 UTC by u@h")
    assert "... 6 more" in line and line.count("resume after 3 trials") == 3
    assert session_line([]) is None


def test_export_yaml_says_which_prior_data_the_file_names(tmp_path: Path) -> None:
    """Every prior-data line said "one the file's prior_data does not name is given with
    --prior", the one the file names too (found in review)."""
    (tmp_path / "c.yaml").write_text(BRANIN + "prior_data: p.csv\n")
    (tmp_path / "p.csv").write_text("x1,x2,y\n0,1,20\n")
    (tmp_path / "q.csv").write_text("x1,x2,y\n1,2,15\n")
    store = _store(tmp_path)
    run = closedloop("run", "c.yaml", "--store", store, "--prior", "q.csv", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    text = closedloop("export", "--store", store, "--format", "yaml", cwd=tmp_path).stdout
    lines = [line for line in text.splitlines() if line.startswith("# Prior data read")]
    assert len(lines) == 2, text
    by_file = {("p.csv" in line): line for line in lines}
    assert by_file[True].endswith("; named by the file's prior_data.")
    assert by_file[False].endswith(
        "; given with --prior: give it again so, or name it in prior_data."
    )


def test_a_moved_function_file_reads_as_moved_not_as_other_code() -> None:
    """A project folder moved between sessions: the same bytes from another path read as
    "trials from 21 on were measured by other code" (found in review)."""
    from loop.provenance import code_change_lines

    same = "c" * 64
    moved = {
        "what": "function",
        "old": {"file": "/lab/measure.py", "sha256": same},
        "new": {"file": "/moved/measure.py", "sha256": same},
        "first_trial": 21,
        "at": "2026-12-07T04:40:00",
    }
    (line,) = code_change_lines([moved])
    assert line == (
        "function file /moved/measure.py moved, same code (sha256 cccccccccccc): trials from "
        "21 on ran it from there (was /lab/measure.py, 2026-12-07 04:40 UTC)"
    )
    edited = moved | {"new": {"file": "/moved/measure.py", "sha256": "d" * 64}}
    assert "measured by other code" in code_change_lines([edited])[0]
