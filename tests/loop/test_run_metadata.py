"""Run metadata a facility can require: the instrument file's ``metadata:`` (beamline,
facility) and ``required_metadata:`` (proposal_id, sample, operator), the campaign's own
``metadata:``, merged into every run's start document with the campaign's ``campaign_uid``.

Validation names the file, the line and the fix; a real short campaign (a RunEngine, plugin
``ophyd:Signal`` devices, SQLite) stores start documents that carry the merged metadata and
pass event-model's schema; ``resume`` keeps them; a campaign stored before its instrument
file's text was kept, whose file has gained ``required_metadata`` since, still resumes.
The runner's part (``Runner._start_trial``, ``Runner.campaign_uid``) needs the runner patch
(/tmp/s17/f3/others.patch) until it is applied.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
from event_model import DocumentNames, schema_validators
from typer.testing import CliRunner

from instruments._instrument_file import (
    START_DOC_KEYS,
    InstrumentFileError,
    load_instrument_file,
)
from instruments._plans import RESERVED_MD_KEYS
from loop.cli import app
from loop.config import load_campaign
from loop.errors import CampaignConfigError
from loop.runner import Runner
from loop.store import Store
from tests.cli_process import closedloop

INSTRUMENT = """\
name: md-bench
inputs:
  x: {device: "ophyd:Signal", args: {value: 1.0}, limits: [0, 2]}
outputs:
  y: {device: "ophyd:Signal", args: {value: 0.5}}
metadata:
  facility: NSLS-II
  beamline: 11-BM
required_metadata: [proposal_id, sample, operator]
"""

CAMPAIGN = """\
name: md-campaign
parameters:
  - {name: x, type: float, bounds: [0, 2]}
objectives:
  - {name: y, goal: maximize}
instrument: {file: bench.yaml}
planner: {kind: sobol}
budget: {max_trials: 2}
seed: 4
metadata:
  proposal_id: '012345'
  sample: S1
  operator: jdoe
  temperature_setpoint_K: 293.5
  data_groups: [pass-012345]
"""

CAMPAIGN_METADATA = {
    "proposal_id": "012345",
    "sample": "S1",
    "operator": "jdoe",
    "temperature_setpoint_K": 293.5,
    "data_groups": ["pass-012345"],
}
INSTRUMENT_METADATA = {"facility": "NSLS-II", "beamline": "11-BM"}


def _write(tmp_path: Path, campaign: str = CAMPAIGN, instrument: str = INSTRUMENT) -> Path:
    (tmp_path / "bench.yaml").write_text(instrument)
    path = tmp_path / "c.yaml"
    path.write_text(campaign)
    return path


def _refusal(path: Path) -> CampaignConfigError:
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path)
    return info.value


def _starts(store: Store, cid: int) -> list[dict[str, Any]]:
    """The start documents of the campaign's runs, in trial order."""
    starts = []
    for trial in store.trials(cid):
        docs = store.documents(trial.id or 0)
        starts += [d.body for d in docs if d.name == "start"]
    return starts


# ---------------------------------------------------------------------------- loading
def test_the_loaded_campaign_carries_the_merged_metadata(tmp_path: Path) -> None:
    loaded = load_campaign(_write(tmp_path))
    assert loaded.campaign.metadata == CAMPAIGN_METADATA
    assert dict(loaded.metadata) == {**INSTRUMENT_METADATA, **CAMPAIGN_METADATA}
    assert type(loaded.metadata["temperature_setpoint_K"]) is float  # plain, not ruamel's


def test_a_campaign_without_metadata_on_a_plain_instrument_still_loads(tmp_path: Path) -> None:
    instrument = INSTRUMENT.split("metadata:")[0]
    campaign = CAMPAIGN.split("metadata:")[0]
    loaded = load_campaign(_write(tmp_path, campaign, instrument))
    assert loaded.campaign.metadata == {} and dict(loaded.metadata) == {}


def test_a_missing_required_key_names_both_files_the_line_and_the_fix(tmp_path: Path) -> None:
    path = _write(
        tmp_path, CAMPAIGN.replace("  sample: S1\n", "").replace("  operator: jdoe\n", "")
    )
    exc = _refusal(path)
    assert exc.path == path and exc.line == 10  # the campaign's `metadata:`
    assert "instrument file bench.yaml requires run metadata" in exc.problem
    assert "sample, operator (its required_metadata, line 9)" in exc.problem
    assert "add sample: VALUE, operator: VALUE under `metadata:` (line 10)" in exc.fix


def test_a_campaign_with_no_metadata_is_told_where_to_write_it(tmp_path: Path) -> None:
    path = _write(tmp_path, CAMPAIGN.split("metadata:")[0])
    exc = _refusal(path)
    assert exc.line == 1  # the campaign's top: there is no `metadata:` yet
    assert "proposal_id, sample, operator" in exc.problem
    assert "metadata: {proposal_id: VALUE, sample: VALUE, operator: VALUE}" in exc.fix


def test_validate_refuses_a_missing_key_with_exit_code_2(tmp_path: Path) -> None:
    _write(tmp_path, CAMPAIGN.replace("  operator: jdoe\n", ""))
    proc = closedloop("validate", "c.yaml", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "c.yaml:10: the instrument file bench.yaml requires run metadata" in proc.stderr
    assert "fix: add operator: VALUE under `metadata:` (line 10)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_campaign_may_not_change_the_instrument_files_value(tmp_path: Path) -> None:
    path = _write(tmp_path, CAMPAIGN + "  beamline: 28-ID\n")
    exc = _refusal(path)
    assert exc.line == 16
    assert "metadata.beamline = '28-ID' differs from beamline = '11-BM'" in exc.problem
    assert "instrument file bench.yaml (line 8)" in exc.problem
    assert "drop beamline from this file's `metadata:`" in exc.fix


def test_the_same_value_as_the_instrument_file_is_accepted(tmp_path: Path) -> None:
    loaded = load_campaign(_write(tmp_path, CAMPAIGN + "  beamline: 11-BM\n"))
    assert loaded.metadata["beamline"] == "11-BM"


BAD_VALUES = [
    ("uid: abc", "'uid' is a key closedloop or Bluesky writes", "rename it, e.g. user_uid"),
    ("campaign: other", "'campaign' is a key closedloop or Bluesky writes", "user_campaign"),
    ("trial_id: 3", "'trial_id' is a key closedloop", "rename it"),
    ("sample: 42", "run-start schema (event-model) takes text for 'sample'", "sample: '42'"),
    ("owner: true", "takes text for 'owner'", "quote it: owner: 'True'"),
    ("run_no: 007", "007 is read by YAML as the number 7", "run_no: '007' (or write 7)"),
    ("version: 1.10", "1.10 is read by YAML as the number 1.1", "version: '1.10'"),
    ("date: 2026-12-05", "read by YAML as a date", "date: '2026-12-05'"),
    ("grid: {a: 1}", "metadata.grid is a mapping", "give each part its own key"),
    ("empty:", "metadata.empty has no value", "drop it"),
    ("dose: .inf", "inf is not a finite number", "write a finite number"),
    ("tags: [a, [b]]", "a list in metadata is flat", "write one flat list"),
    ("data_groups: [a, 1]", "takes a list of text for 'data_groups'", "['a', '1']"),
    ("2theta: 1", "metadata key '2theta' is not a name", "letters, digits and underscores"),
]


@pytest.mark.parametrize(("entry", "problem", "fix"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_a_bad_metadata_entry_is_refused_at_its_line(
    tmp_path: Path, entry: str, problem: str, fix: str
) -> None:
    key = entry.split(":")[0]
    base = "".join(line for line in CAMPAIGN.splitlines(True) if not line.startswith(f"  {key}:"))
    path = _write(tmp_path, base + f"  {entry}\n")
    exc = _refusal(path)
    assert exc.path == path and exc.line == len(base.splitlines()) + 1, str(exc)
    assert problem in exc.problem and fix in exc.fix, str(exc)


def test_metadata_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, CAMPAIGN.split("metadata:")[0] + "metadata: [proposal_id]\n")
    exc = _refusal(path)
    assert exc.line == 10 and "valid dictionary" in exc.problem
    assert "metadata: {proposal_id: '312345'" in exc.fix


def test_inline_devices_keep_their_metadata_in_the_campaign(tmp_path: Path) -> None:
    campaign = """\
name: md-inline
parameters:
  - {name: x, type: float, bounds: [0, 2]}
objectives:
  - {name: y, goal: maximize}
instrument:
  devices:
    inputs:
      x: {device: "ophyd:Signal", args: {value: 1.0}, limits: [0, 2]}
    outputs:
      y: {device: "ophyd:Signal", args: {value: 0.5}}
    required_metadata: [sample]
budget: {max_trials: 2}
"""
    path = tmp_path / "inline.yaml"
    path.write_text(campaign)
    exc = _refusal(path)
    assert exc.line == 12 and "instrument.devices.required_metadata" in exc.problem
    assert "`metadata:` at the top level of this file" in exc.fix


# ---------------------------------------------------------------------------- instrument file
BAD_INSTRUMENT = [
    ("metadata: {uid: x}", 6, "metadata.uid: 'uid' is a key closedloop", "rename it"),
    # each run of a function instrument names its file there (it overwrote the user's value)
    ("metadata: {function: scan}", 6, "'function' is a key closedloop", "rename it"),
    # and each run of a planner plugin names the plugin's code there (loop.provenance)
    ("metadata: {planner: mine}", 6, "'planner' is a key closedloop", "rename it"),
    ("metadata: {project: 3}", 6, "takes text for 'project'", "project: '3'"),
    ("required_metadata: [proposal_id, scan_id]", 6, "'scan_id' is written by", "drop scan_id"),
    ("required_metadata: [a, a]", 6, "a named twice", "name each key once"),
    ("required_metadata: [sample id]", 6, "'sample id' is not a metadata key", "letters"),
]


@pytest.mark.parametrize(
    ("tail", "line", "problem", "fix"), BAD_INSTRUMENT, ids=[b[0] for b in BAD_INSTRUMENT]
)
def test_an_instrument_files_metadata_errors_name_its_line(
    tmp_path: Path, tail: str, line: int, problem: str, fix: str
) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(INSTRUMENT.split("metadata:")[0] + tail + "\n")
    with pytest.raises(InstrumentFileError) as info:
        load_instrument_file(path)
    assert info.value.line == line, str(info.value)
    assert problem in info.value.problem and fix in info.value.fix, str(info.value)


def test_a_required_key_the_file_sets_itself_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bench.yaml"
    path.write_text(INSTRUMENT.replace("[proposal_id,", "[beamline, proposal_id,"))
    with pytest.raises(InstrumentFileError) as info:
        load_instrument_file(path)
    assert info.value.line == 9
    assert "beamline also set by this file's own `metadata:`" in info.value.problem


def test_every_key_the_plan_owns_is_reserved_for_metadata() -> None:
    # one list of what closedloop writes: the plan's own keys may never be metadata keys
    assert RESERVED_MD_KEYS <= START_DOC_KEYS


# ---------------------------------------------------------------------------- runs
def test_every_start_document_carries_the_metadata_and_resume_keeps_it(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        summary = Runner(load_campaign(_write(tmp_path)), store).run()
        assert summary.completed == 2
        cid = summary.campaign_id
        # the files change or vanish: the store's copies are what resume reads
        (tmp_path / "c.yaml").write_text(CAMPAIGN.replace("S1", "S2"))
        (tmp_path / "bench.yaml").unlink()
        assert Runner.from_store(store, cid, max_trials=4).resume().completed == 4
        starts = _starts(store, cid)
    finally:
        store.close()
    assert len(starts) == 4
    validate = schema_validators[DocumentNames.start].validate
    uids = set()
    for start in starts:
        validate(start)  # what a facility checks its documents against
        assert {k: start[k] for k in CAMPAIGN_METADATA} == CAMPAIGN_METADATA
        assert {k: start[k] for k in INSTRUMENT_METADATA} == INSTRUMENT_METADATA
        assert start["campaign"] == "md-campaign" and start["plan_name"] == "closedloop_trial"
        uids.add(start["campaign_uid"])
    assert len(uids) == 1  # one campaign, across the resume
    assert uuid.UUID(uids.pop()).version == 4


def test_a_campaign_stored_before_required_metadata_still_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store of an older version: no instrument text kept with the campaign (its file is
    read from disk) and start documents without ``campaign_uid``. The file on disk has
    gained ``required_metadata`` since: resume warns and goes on."""
    plain = INSTRUMENT.split("metadata:")[0]
    path = _write(tmp_path, CAMPAIGN.split("metadata:")[0], plain)
    db = tmp_path / "old.db"
    store = Store(f"sqlite:///{db}")
    try:
        cid = Runner(load_campaign(path), store).run().campaign_id
    finally:
        store.close()
    with sqlite3.connect(db) as conn:  # as an older version left it
        conn.execute("UPDATE campaign SET instrument_text = NULL")
        for doc_id, body in conn.execute("SELECT id, body FROM document WHERE name = 'start'"):
            conn.execute(
                "UPDATE document SET body = json_remove(?, '$.campaign_uid') WHERE id = ?",
                (body, doc_id),
            )
    (tmp_path / "bench.yaml").write_text(INSTRUMENT)  # the facility's file now
    store = Store(f"sqlite:///{db}")
    try:
        with caplog.at_level(logging.WARNING, logger="loop.config"):
            assert Runner.from_store(store, cid, max_trials=4).resume().completed == 4
        starts = _starts(store, cid)
    finally:
        store.close()
    assert "requires run metadata this campaign does not give: proposal_id, sample" in caplog.text
    assert "its runs go on without proposal_id, sample, operator" in caplog.text
    old, new = starts[:2], starts[2:]
    assert all("campaign_uid" not in s and "beamline" not in s for s in old)
    assert all(s["beamline"] == "11-BM" and "sample" not in s for s in new)
    assert len({s["campaign_uid"] for s in new}) == 1


def test_suggest_and_tell_take_a_campaign_with_metadata(tmp_path: Path) -> None:
    path = _write(tmp_path)
    url = f"sqlite:///{tmp_path / 'ask.db'}"
    cli = CliRunner()
    suggested = cli.invoke(app, ["suggest", str(path), "--store", url, "--json"])
    assert suggested.exit_code == 0, suggested.output
    told = cli.invoke(app, ["tell", "1", "y=0.4", "--store", url])
    assert told.exit_code == 0, told.output
    again = cli.invoke(app, ["suggest", "--store", url])
    assert again.exit_code == 0, again.output


def test_the_dry_run_shows_the_run_metadata_run_records(tmp_path: Path) -> None:
    """`plan --dry-run` previews the start document `run` writes, metadata included (it
    showed none; found in review)."""
    path = tmp_path / "c.yaml"
    path.write_text(
        """
name: md
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, latency: 0}
planner: {kind: sobol}
budget: {max_trials: 3}
seed: 1
metadata: {proposal_id: "012345", sample: S1}
"""
    )
    result = CliRunner().invoke(app, ["plan", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    (open_run,) = [line for line in result.output.splitlines() if "open_run" in line]
    assert "proposal_id=012345, sample=S1" in open_run, open_run


@pytest.mark.parametrize("key", ["function", "planner"])
def test_a_stored_campaign_naming_a_key_closedloop_now_writes_is_still_read(
    tmp_path: Path, key: str
) -> None:
    """``function`` and ``planner`` became closedloop's own start-document keys with
    provenance: a campaign stored before, whose ``metadata:`` names one, is still shown,
    exported and resumed (refused, its trials could not even be exported; found in review),
    its later runs recording closedloop's value, never the campaign's."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: md-old\nparameters:\n  - {name: x1, type: float, bounds: [-5, 10]}\n"
        "  - {name: x2, type: float, bounds: [0, 15]}\nobjectives: [{name: y, goal: minimize}]\n"
        "instrument: {simulator: branin, latency: 0}\nplanner: {kind: sobol}\n"
        "budget: {max_trials: 2}\nseed: 1\nmetadata: {user_key: mine, sample: S1}\n"
    )
    db = tmp_path / "old.db"
    url = f"sqlite:///{db}"
    assert closedloop("run", "c.yaml", "--store", url, "-q", cwd=tmp_path).returncode == 0
    with sqlite3.connect(db) as conn:  # as a closedloop that did not write `key` stored it
        conn.execute(
            "UPDATE campaign SET config_text = replace(config_text, 'user_key', ?)", (key,)
        )
    for command in (["status"], ["export"], ["resume", "-c", "1", "--max-trials", "3"]):
        proc = closedloop(*command, "--store", url, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert f"its runs record {key} as closedloop writes it, not 'mine'" in proc.stderr
    store = Store(url, create=False)
    try:
        last = _starts(store, 1)[-1]
    finally:
        store.close()
    assert last["sample"] == "S1" and last.get(key) != "mine"
    # a campaign file is refused for it, as before
    path.write_text(path.read_text().replace("user_key", key))
    assert f"'{key}' is a key closedloop" in _refusal(path).problem


@pytest.mark.parametrize("key", ["function", "planner"])
def test_a_stored_instrument_file_naming_a_key_closedloop_now_writes_still_resumes(
    tmp_path: Path, key: str
) -> None:
    """The same for the instrument file's ``metadata:``: the store keeps the file's text, so
    a key reserved since could never be resumed, whatever the facility edits on disk (the
    store's copy is read; found in review). Warned once at its line; the runs record
    closedloop's own value, and a new campaign on that file is refused for it."""
    instrument = INSTRUMENT.split("required_metadata")[0] + "  user_key: mine\n"
    path = _write(tmp_path, CAMPAIGN.split("metadata:")[0], instrument)
    db = tmp_path / "old.db"
    url = f"sqlite:///{db}"
    assert closedloop("run", "c.yaml", "--store", url, "-q", cwd=tmp_path).returncode == 0
    with sqlite3.connect(db) as conn:  # as a closedloop that did not write `key` stored it
        conn.execute(
            "UPDATE campaign SET instrument_text = replace(instrument_text, 'user_key', ?)",
            (key,),
        )
    (tmp_path / "bench.yaml").write_text(instrument.replace("user_key", key))
    for command in (["status"], ["export"], ["resume", "-c", "1", "--max-trials", "3"]):
        proc = closedloop(*command, "--store", url, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count(f"bench.yaml, line 9: metadata.{key} is a key closedloop") == 1
    store = Store(url, create=False)
    try:
        last = _starts(store, 1)[-1]
    finally:
        store.close()
    assert last["facility"] == "NSLS-II" and last.get(key) != "mine"
    assert f"'{key}' is a key closedloop" in _refusal(path).problem
