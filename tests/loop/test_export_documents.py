"""A campaign's Bluesky documents, as a facility catalog takes them: end to end.

Real RunEngine (the runner's own dispatchers), real SQLite, event-model's schema on every
stored and exported document. Found in a facility integrator's review: ``retry_of`` named
the first attempt's trial *number* where ``trial_id`` is the store's id (so, in a store with
another campaign, another campaign's run); ``scan_id`` repeated within a campaign (every
slot's and every session's engine counted from 1); a run killed mid-trial never got a stop
document; and the documents could only be got out by hand.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

from event_model import DocumentNames, RunRouter, schema_validators
from typer.testing import CliRunner

from instruments import Dispatcher, build_instrument
from loop import Runner, Store, parse_campaign
from loop.cli import app
from loop.config import LoadedCampaign
from loop.results import run_documents
from tests.cli_process import closedloop

Docs = list[tuple[str, dict[str, Any]]]

CAMPAIGN = """
name: NAME
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, INSTRUMENT}
planner: {kind: sobol}
budget: BUDGET
seed: 3
"""


def _loaded(tmp_path: Path, name: str, instrument: str, budget: str) -> LoadedCampaign:
    text = (
        CAMPAIGN.replace("NAME", name).replace("INSTRUMENT", instrument).replace("BUDGET", budget)
    )
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return parse_campaign(text, path=path, base_dir=tmp_path)


def _store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'store.db'}")


def _stored(store: Store, trial_id: int) -> Docs:
    return [(d.name, d.body) for d in store.documents(trial_id)]


def _valid(documents: Docs) -> None:
    assert documents
    for name, doc in documents:
        schema_validators[DocumentNames[name]].validate(doc)


def _export(url: str, *args: str) -> Docs:
    result = CliRunner().invoke(app, ["export", "--store", url, "--format", "jsonl", *args])
    assert result.exit_code == 0, result.output

    def strict(token: str) -> None:
        raise AssertionError(f"{token} is not JSON")

    lines = result.stdout.splitlines()
    return [tuple(json.loads(line, parse_constant=strict)) for line in lines]  # type: ignore[misc]


# ------------------------------------------------- these need the runner's part of the change
def test_retry_of_names_the_first_attempts_trial_id(tmp_path: Path) -> None:
    """In a store holding another campaign first, trial ids and numbers differ: the retry's
    ``retry_of`` is the first attempt's ``trial_id`` (its run), not its number."""
    store = _store(tmp_path)
    Runner(_loaded(tmp_path, "before", "latency: 0", "{max_trials: 2}"), store).run()
    flaky = _loaded(
        tmp_path, "flaky", "failure_rate: 1.0, max_retries: 1", "{max_trials: 2, max_failures: 2}"
    )
    summary = Runner(flaky, store).run()
    trials = store.trials(summary.campaign_id)
    assert [(t.number, t.kind) for t in trials] == [(1, "sobol"), (2, "retry")]
    first, retry = trials
    assert first.id != first.number  # the case the review found
    starts = []
    for t in trials:
        documents = _stored(store, t.id or 0)
        _valid(documents)
        starts.append(documents[0][1])
    assert [s["trial_id"] for s in starts] == [first.id, retry.id]
    assert [s["trial_number"] for s in starts] == [1, 2]
    assert (starts[1]["retry_of"], starts[1]["attempt"]) == (first.id, 2)
    assert "retry_of" not in starts[0]


def test_scan_ids_are_unique_within_a_campaign_across_slots_and_resume(tmp_path: Path) -> None:
    store = _store(tmp_path)
    two_slots = _loaded(tmp_path, "slots", "latency: 0.05, count: 2", "{max_trials: 4}")
    cid = Runner(two_slots, store).run().campaign_id
    Runner.from_store(store, cid, max_trials=6).resume()  # new engines, a new session
    trials = store.trials(cid)
    starts = [_stored(store, t.id or 0)[0][1] for t in trials]
    assert len(trials) == 6
    assert [s["scan_id"] for s in starts] == [t.number for t in trials] == [1, 2, 3, 4, 5, 6]
    assert {t.slot for t in trials} == {0, 1}


def test_resume_gives_a_run_cut_short_its_stop_document(tmp_path: Path) -> None:
    """The process died after the run's event was stored, before its stop: ``resume``
    stores an ``abort`` stop that counts the stored event, and the trial is abandoned."""
    store = _store(tmp_path)
    loaded = _loaded(tmp_path, "killed", "latency: 0", "{max_trials: 1}")
    cid = Runner(loaded, store).run().campaign_id
    trial = store.add_trial(cid, {"x1": 1.0, "x2": 2.0}, "sobol")
    seq = itertools.count(1)
    uid: list[str] = []

    def dies_before_the_stop(name: str, doc: dict[str, Any]) -> None:
        if name == "start":
            uid.append(doc["uid"])
        if name != "stop":
            store.add_document(trial.id or 0, next(seq), name, doc, uid[0])

    c = loaded.campaign
    instrument = build_instrument(c.instrument, c.parameters, base_dir=tmp_path, seed=3)
    with Dispatcher(instrument, document_sink=dies_before_the_stop) as dispatcher:
        dispatcher.run(trial.id or 0, "killed", {"x1": 1.0, "x2": 2.0}, trial_number=2)
    instrument.close()
    store.finish_campaign(cid, "running", "")  # killed: nobody recorded the outcome
    assert [n for n, _ in _stored(store, trial.id or 0)] == ["start", "descriptor", "event"]

    summary = Runner.from_store(store, max_trials=2).resume()
    assert [(r.trial_id, r.status) for r in summary.reconciled] == [(trial.id, "abandoned")]
    documents = _stored(store, trial.id or 0)
    _valid(documents)
    assert [n for n, _ in documents] == ["start", "descriptor", "event", "stop"]
    stop = documents[-1][1]
    assert stop["run_start"] == uid[0]
    assert (stop["exit_status"], stop["num_events"]) == ("abort", {"primary": 1})
    assert stop["reason"] == "process died; reconciled by closedloop resume"
    assert store.documents(trial.id or 0)[-1].run_uid == uid[0]
    # a second resume finds nothing to close
    again = Runner.from_store(store, cid, max_trials=3).resume()
    assert again.reconciled == []
    assert [n for n, _ in _stored(store, trial.id or 0)].count("stop") == 1


# ------------------------------------------------------------------------------ the export
def test_export_jsonl_writes_every_run_in_trial_order(tmp_path: Path) -> None:
    store = _store(tmp_path)
    url = store.url
    first = Runner(_loaded(tmp_path, "first", "latency: 0", "{max_trials: 2}"), store).run()
    two_slots = _loaded(tmp_path, "second", "latency: 0.05, count: 2", "{max_trials: 5}")
    second = Runner(two_slots, store).run()

    exported = _export(url)  # the latest campaign, as every export
    _valid(exported)
    assert exported == run_documents(url)  # the Python API says the same
    trials = store.trials(second.campaign_id)
    starts = [doc for name, doc in exported if name == "start"]
    assert [s["trial_id"] for s in starts] == [t.id for t in trials]  # trial order
    assert {s["campaign"] for s in starts} == {"second"}
    assert exported == [pair for t in trials for pair in _stored(store, t.id or 0)]
    # run after run: every document belongs to the run opened last, and every run closes
    current = None
    descriptors: dict[str, str] = {}
    for name, doc in exported:
        if name == "start":
            current = doc["uid"]
        elif name == "descriptor":
            assert doc["run_start"] == current
            descriptors[doc["uid"]] = current
        elif name == "event":
            assert descriptors[doc["descriptor"]] == current
        elif name == "stop":
            assert doc["run_start"] == current
    assert Counter(name for name, _ in exported)["stop"] == len(trials)
    # a RunRouter (what TiledWriter and suitcase sit behind) sees each run start and stop
    seen: list[tuple[str, str]] = []

    def factory(name: str, start: dict[str, Any]) -> tuple[list[Any], list[Any]]:
        return [lambda n, d: seen.append((start["uid"], n))], []

    router = RunRouter([factory])
    for name, doc in exported:
        router(name, doc)
    assert [n for _, n in seen].count("stop") == len(trials)

    # -c selects a campaign; -o with a .jsonl suffix picks the format
    out = tmp_path / "first.jsonl"
    result = CliRunner().invoke(app, ["export", "--store", url, "-c", "first", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"documents of 2 runs to {out}" in result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [tuple(pair) for pair in lines] == run_documents(url, "first") == _export(url, "-c", "1")
    assert {doc["campaign"] for name, doc in lines if name == "start"} == {"first"}
    assert first.campaign_id == 1


def test_export_jsonl_keeps_a_non_finite_reading_as_the_store_has_it(tmp_path: Path) -> None:
    """NaN/inf: null in the stored documents (JSON has no such number), and so exported:
    every line is strict JSON that jq and Tiled read."""
    store = _store(tmp_path)
    nan = _loaded(tmp_path, "nan", "nan_rate: 1.0", "{max_trials: 1, max_failures: 1}")
    Runner(nan, store).run()
    exported = _export(store.url)
    _valid(exported)
    (event,) = [doc for name, doc in exported if name == "event"]
    assert event["data"]["y"] is None


def test_export_jsonl_of_a_campaign_without_runs_is_empty(tmp_path: Path) -> None:
    store = _store(tmp_path)
    loaded = _loaded(tmp_path, "told", "latency: 0", "{max_trials: 1}")
    cid = store.create_campaign(loaded.campaign.name, loaded.text, str(loaded.path), seed=3)
    store.add_trial(cid, {"x1": 0.0, "x2": 0.0}, "prior")  # no run, no documents
    assert _export(store.url) == []
    out = tmp_path / "none.jsonl"
    result = CliRunner().invoke(app, ["export", "--store", store.url, "-o", str(out)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert (
        "wrote 0 documents of 0 runs (results told with `tell`, and prior data, have no runs)"
        in said
    )


def test_export_jsonl_of_an_older_store_with_an_infinity_is_strict_json(tmp_path: Path) -> None:
    """Until 501c043 a store kept an infinity as the ``Infinity`` token in its documents;
    the export failed on it with a ValueError (found in review). It is ``null`` now."""
    import sqlite3

    store = _store(tmp_path)
    Runner(_loaded(tmp_path, "old", "latency: 0", "{max_trials: 1}"), store).run()
    store.close()
    with sqlite3.connect(tmp_path / "store.db") as db:  # what the older version wrote
        (body,) = db.execute("SELECT body FROM document WHERE name = 'event'").fetchone()
        event = json.loads(body)
        event["data"]["y"] = float("inf")
        db.execute("UPDATE document SET body = ? WHERE name = 'event'", (json.dumps(event),))
        (body,) = db.execute("SELECT body FROM document WHERE name = 'event'").fetchone()
    assert "Infinity" in body
    exported = _export(f"sqlite:///{tmp_path / 'store.db'}")
    _valid(exported)
    (event,) = [doc for name, doc in exported if name == "event"]
    assert event["data"]["y"] is None


def test_export_jsonl_streams_and_a_damaged_document_keeps_the_old_file(tmp_path: Path) -> None:
    """The documents are written as they are read, in pieces of 500 lines (a 5000-trial
    campaign's 20 000 took 300 MB as one text). A document that cannot be read after some
    were written leaves a file being replaced as it was, and says what is damaged."""
    import sqlite3

    store = _store(tmp_path)
    Runner(_loaded(tmp_path, "long", "latency: 0", "{max_trials: 130}"), store).run()
    out = tmp_path / "runs.jsonl"
    result = CliRunner().invoke(app, ["export", "--store", store.url, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 520 documents of 130 runs" in result.output
    lines = [tuple(json.loads(line)) for line in out.read_text().splitlines()]
    assert lines == run_documents(store.url) == _export(store.url)  # across the pieces
    store.close()

    kept = out.read_bytes()
    with sqlite3.connect(tmp_path / "store.db") as db:  # a disk fault in the 129th run
        (last,) = db.execute("SELECT max(id) FROM document").fetchone()
        db.execute("UPDATE document SET body = '{bad' WHERE id = ?", (last - 5,))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    proc = closedloop("export", "--store", url, "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "is damaged" in proc.stderr and "json_valid(body)" in proc.stderr
    assert out.read_bytes() == kept
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".runs")] == []


def test_a_failed_simulated_trials_stop_says_why_in_plain_words(tmp_path: Path) -> None:
    """The stop document a catalog keeps began ``_TriggerStatus(device=..., done=True,
    success=False): ...`` (found in review): now the failure's own words."""
    store = _store(tmp_path)
    failing = _loaded(
        tmp_path, "fails", "failure_rate: 1.0, max_retries: 0", "{max_trials: 1, max_failures: 1}"
    )
    Runner(failing, store).run()
    (stop,) = [doc for name, doc in _export(store.url) if name == "stop"]
    assert stop["exit_status"] == "fail"
    assert "injected instrument fault" in stop["reason"], stop["reason"]
    assert "Status" not in stop["reason"], stop["reason"]
