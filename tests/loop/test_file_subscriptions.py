"""An instrument file's ``subscriptions:``: a facility's live consumers of every run.

Found in review: a TiledWriter, a Kafka publisher or BEC could only be reached by wrapping
``Runner`` in Python, so `closedloop run` of a beamline's campaign fed them nothing until an
export after the fact. The instrument file (the technician's, once per instrument) now names
factories; each slot's RunEngine feeds what they return, after the store's sink, and one that
raises is logged and fails no trial. Real devices (ophyd's soft positioner and signal), the
real RunEngine, a real SQLite store, the command line.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from loop import Runner, Store, parse_campaign
from tests.cli_process import run_cli, start_cli

CONSUMER = """\
import json
import time
from pathlib import Path

HERE = Path(__file__).parent


def collector():
    def callback(name, doc):
        with open(HERE / "seen.jsonl", "a") as out:
            out.write(json.dumps([name, doc.get("trial_id")]) + "\\n")
    return callback


def broken_consumer():
    def callback(name, doc):
        raise ConnectionError("broker down")
    return callback


def stalled():
    # a catalog whose server stops answering until the test says so
    def callback(name, doc):
        while not (HERE / "answering").exists():
            time.sleep(0.02)
        with open(HERE / "seen.jsonl", "a") as out:
            out.write(json.dumps([name, doc.get("trial_id")]) + "\\n")
    return callback


def crawling():
    # a catalog that takes 8 s a document: always making progress, never done
    def callback(name, doc):
        time.sleep(8)
    return callback


def unreachable():
    raise ConnectionError("tiled server at 127.0.0.1:1 refused the connection")
"""


def _campaign(tmp_path: Path, subscriptions: str) -> Path:
    (tmp_path / "consumers.py").write_text(CONSUMER)
    (tmp_path / "bench.yaml").write_text(
        "name: bench\n"
        "inputs:\n"
        "  x: {device: ophyd.sim:SoftPositioner, args: {limits: [0, 1], init_pos: 0}}\n"
        "outputs:\n"
        "  y: {device: ophyd:Signal, args: {value: 1.5}}\n"
        f"subscriptions: {subscriptions}\n"
    )
    path = tmp_path / "campaign.yaml"
    path.write_text(
        "name: subs\n"
        "parameters: [{name: x, type: float, bounds: [0, 1]}]\n"
        "objectives: [{name: y, goal: maximize}]\n"
        "instrument: {file: bench.yaml}\n"
        "planner: {kind: sobol}\n"
        "budget: {max_trials: 3}\n"
        "seed: 1\n"
    )
    return path


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(args, cwd=tmp_path)


def _run(tmp_path: Path, campaign: Path) -> subprocess.CompletedProcess[str]:
    return _cli(tmp_path, "run", str(campaign), "--store", f"sqlite:///{tmp_path / 's.db'}")


def test_every_run_reaches_the_consumers_the_instrument_file_names(tmp_path: Path) -> None:
    campaign = _campaign(tmp_path, "[consumers.py:collector, consumers.py:broken_consumer]")
    assert _cli(tmp_path, "validate", str(campaign)).returncode == 0
    done = _run(tmp_path, campaign)
    assert done.returncode == 0, done.stderr
    seen = [json.loads(line) for line in (tmp_path / "seen.jsonl").read_text().splitlines()]
    starts = [trial for name, trial in seen if name == "start"]
    assert len(starts) == 3 and len(set(starts)) == 3  # each trial's run, once
    assert [name for name, _ in seen[:4]] == ["start", "descriptor", "event", "stop"]
    # the consumer that raised failed no trial, and is said once
    assert "3 completed, 0 failed" in done.stdout
    # a float input's column is a number, whatever its positioner said when it connected
    # (SoftPositioner at init_pos 0 described itself as "integer"; found in review)
    url = f"sqlite:///{tmp_path / 's.db'}"
    exported = _cli(tmp_path, "export", "--store", url, "--format", "jsonl", "-o", "runs.jsonl")
    assert exported.returncode == 0, exported.stderr
    documents = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    descriptors = [doc for name, doc in documents if name == "descriptor"]
    assert descriptors and {d["data_keys"]["x"]["dtype"] for d in descriptors} == {"number"}
    # what a consumer left behind lacks, from the trial its message names
    later = _cli(tmp_path, "export", "--store", url, "-f", "jsonl", "--from-trial", "2")
    starts = [doc for name, doc in map(json.loads, later.stdout.splitlines()) if name == "start"]
    assert [d["trial_number"] for d in starts] == [2, 3]
    rows = _cli(tmp_path, "export", "--store", url, "-f", "csv", "--from-trial", "3")
    assert len(rows.stdout.splitlines()) == 2 and rows.stdout.splitlines()[1].startswith("3,")
    refused = _cli(tmp_path, "export", "--store", url, "-f", "yaml", "--from-trial", "3")
    assert refused.returncode == 2 and "drop --from-trial" in refused.stderr
    said = " ".join(done.stderr.split())
    assert said.count("broker down") == 1
    assert "subscription consumers.py:broken_consumer raised on a start document" in said


def test_a_factory_that_fails_stops_the_run_before_any_trial_naming_the_line(
    tmp_path: Path,
) -> None:
    campaign = _campaign(tmp_path, "\n  - consumers.py:collector\n  - consumers.py:unreachable")
    done = _run(tmp_path, campaign)
    output = " ".join(done.stderr.split())
    assert done.returncode == 2, output
    assert "bench.yaml:8" in output and "refused the connection" in output
    assert (
        not (tmp_path / "seen.jsonl").exists()
        or "event" not in (tmp_path / "seen.jsonl").read_text()
    )


def test_an_entry_that_names_no_factory_is_refused_by_validate(tmp_path: Path) -> None:
    campaign = _campaign(tmp_path, "[consumers]")
    done = _cli(tmp_path, "validate", str(campaign))
    output = " ".join(done.stderr.split())
    assert done.returncode == 2, output
    assert "bench.yaml:6" in output and "'consumers' does not name a factory" in output
    assert "module:factory" in output


def test_instruments_check_names_the_consumers_without_calling_them(tmp_path: Path) -> None:
    """A technician sees where the documents go; the factories are imported (a typo in one
    is caught here) but not called, so the check needs no Tiled server."""
    _campaign(tmp_path, "[consumers.py:collector, consumers.py:unreachable]")
    done = _cli(tmp_path, "instruments", "check", "bench.yaml")
    assert done.returncode == 0, done.stderr
    said = " ".join(done.stdout.split())
    assert "documents also go to: consumers.py:collector, consumers.py:unreachable" in said
    assert not (tmp_path / "seen.jsonl").exists()
    _campaign(tmp_path, "[consumers.py:collecter]")
    typo = _cli(tmp_path, "instruments", "check", "bench.yaml")
    assert typo.returncode == 2
    said = " ".join(typo.stderr.split())
    assert "bench.yaml:6: subscriptions: 'consumers.py' has no factory 'collecter'" in said
    assert "did you mean consumers.py:collector?" in said
    _campaign(tmp_path, "[consumers.py:collector, consumers.py:collector]")
    twice = _cli(tmp_path, "validate", "campaign.yaml")
    assert twice.returncode == 2 and "named twice" in twice.stderr


def test_resume_follows_the_subscriptions_of_the_file_on_disk(tmp_path: Path) -> None:
    """Where the documents go is the facility's wiring of today: a consumer taken out of the
    file (its server gone) was still called on resume, and its failure stopped it, while
    one added was ignored (found in review)."""
    campaign = _campaign(tmp_path, "[consumers.py:collector]")
    assert _run(tmp_path, campaign).returncode == 0
    seen = tmp_path / "seen.jsonl"
    starts = seen.read_text().count('"start"')
    assert starts == 3
    bench = tmp_path / "bench.yaml"
    url = f"sqlite:///{tmp_path / 's.db'}"
    bench.write_text(bench.read_text().replace("[consumers.py:collector]", "[]"))
    quiet = _cli(tmp_path, "resume", "--store", url, "-c", "1", "--max-trials", "4")
    assert quiet.returncode == 0, quiet.stderr
    assert seen.read_text().count('"start"') == starts  # not called any more
    assert "subscriptions: [] on disk" in " ".join(quiet.stderr.split())
    bench.write_text(bench.read_text().replace("[]", "[consumers.py:unreachable]"))
    refused = _cli(tmp_path, "resume", "--store", url, "-c", "1", "--max-trials", "5")
    assert refused.returncode == 2
    assert "refused the connection" in " ".join(refused.stderr.split())


def test_a_consumer_the_file_names_that_stalls_holds_no_trial(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The instrument file's consumers are fed from a queue of their own, as the Python
    API's are: a Tiled server that stops answering held every trial of the campaign."""
    monkeypatch.setattr("loop.consumers.STUCK_SECONDS", 0.5)
    campaign = _campaign(tmp_path, "[consumers.py:stalled]")
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    loaded = parse_campaign(campaign.read_text(), path=campaign, base_dir=tmp_path)
    summary = Runner(loaded, store).run()
    assert (summary.status, summary.completed) == ("completed", 3)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "consumers.py:stalled has not taken its last 12 document(s), from trial #1" in said
    assert "--format jsonl --from-trial 1` replays them from the store" in said
    seen = tmp_path / "seen.jsonl"
    assert not seen.exists()
    (tmp_path / "answering").touch()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (not seen.exists() or seen.read_text().count("\n") < 12):
        time.sleep(0.02)
    names = [json.loads(line)[0] for line in seen.read_text().splitlines()]
    assert names == ["start", "descriptor", "event", "stop"] * 3


def test_ctrl_c_while_the_command_waits_for_a_consumer_ends_the_wait(tmp_path: Path) -> None:
    """The wait for a consumer's last documents ignored the first Ctrl-C and SIGTERM (a
    `docker stop` then killed it) and printed "stopping before the next trial starts" while
    it waited on (found in review). The campaign is stored first; the signal ends the wait
    and the command reports the completed campaign, naming what the consumer lacks."""
    campaign = _campaign(tmp_path, "[consumers.py:crawling]")
    db = tmp_path / "s.db"
    proc = start_cli(
        ["run", str(campaign), "--store", f"sqlite:///{db}"],
        cwd=tmp_path,
        default_stop_signals=True,
    )
    status = ""
    deadline = time.monotonic() + 120
    while status != "completed" and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
        if db.exists():
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                try:
                    (status,) = conn.execute("SELECT status FROM campaign").fetchone() or ("",)
                except (sqlite3.OperationalError, TypeError):
                    status = ""
    assert status == "completed"
    time.sleep(1.5)  # into the wait: 12 documents at 8 s each would take 90 s
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=40)  # a guard against a hang, not a timing
    said = " ".join(err.split())
    assert proc.returncode == 0, said
    assert "waiting for subscription consumers.py:crawling" in said
    assert "consumers.py:crawling has not taken its last" in said
    assert "not waiting for the live consumers any more (all is stored)" in said
    assert "before the next trial starts" not in said
    assert "3 completed, 0 failed" in out
