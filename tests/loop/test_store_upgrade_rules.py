"""Stored campaigns and the rules added after them: a campaign the store accepted stays usable.

``resume``, ``suggest``, ``tell`` and ``plan --store`` read the campaign's text from the
store, so a rule added after it was stored refused it for good: no edit of the file changed
the copy that was read (found in review: ``kind: sobol`` with ``acquisition:``, accepted
before the planner settings were checked, could neither be resumed, suggested nor told).
Each old campaign is written here as an older closedloop stored it: the campaign row's
``config_text`` holds what that version accepted.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from loop import Runner, Store, parse_campaign
from loop.config import StoredCampaignError, StoredCopy
from loop.errors import CampaignConfigError
from loop.report import stored_campaign
from planners._config import check_settings
from tests.cli_process import closedloop

MODEL = """\
def measure(p):
    return {"y": (p["x1"] - 1.0) ** 2 + p["x2"]}
"""

CAMPAIGN = """\
name: old-rules
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 1]}
objectives:
  - {name: y, goal: minimize}
instrument: {function: "model.py:measure", outputs: [y], latency: 0}
planner: {kind: sobol}
budget: {max_trials: 2}
seed: 1
"""

SOBOL = "planner: {kind: sobol}"

# What older versions accepted and stored, with what today's file check says and what a
# stored campaign is told instead: (change to CAMPAIGN, file error, stored warning).
OLD_RULES = {
    "a planner setting its kind ignores": (
        (
            SOBOL,
            "planner: {kind: sobol, acquisition: qUpperConfidenceBound, "
            "initial: {kind: random, centre: true}}",
        ),
        "planner.acquisition applies to kind: botorch only",
        "kind sobol ignores it, as it always did",
    ),
    "true/false in a number field": (
        ("latency: 0", "latency: false"),
        "instrument.latency: true/false is not a number",
        "true is read as 1 and false as 0",
    ),
    "an outcome bound with an underscore": (
        ("seed: 1", "outcome_constraints: ['y <= 1_0']\nseed: 1"),
        "the bound '1_0' is not a number",
        "the bound is read as 'y <= 10.0'",
    ),
    "contradictory outcome bounds": (
        ("seed: 1", "outcome_constraints: ['y >= 11', 'y <= 10']\nseed: 1"),
        "leave y no value",
        "it keeps both bounds: none of its trials can be feasible",
    ),
    "a reserved column name": (
        ("name: x2,", "name: status,"),
        "parameter name 'status' is reserved",
        "it keeps the name",
    ),
}


def _old_text(change: tuple[str, str]) -> str:
    old, new = change
    text = CAMPAIGN.replace(old, new)
    assert text != CAMPAIGN
    return text


def _model(tmp_path: Path, *, reserved: bool = False) -> None:
    text = MODEL.replace('p["x2"]', 'p["status"]') if reserved else MODEL
    (tmp_path / "model.py").write_text(text)


def _stored(cid: int = 1) -> StoredCopy:
    return StoredCopy("sqlite:///s.db", cid, "old-rules")


@pytest.mark.parametrize("rule", list(OLD_RULES))
def test_a_rule_added_since_refuses_a_file_and_warns_a_stored_campaign(
    rule: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    change, refused, kept = OLD_RULES[rule]
    _model(tmp_path, reserved="status" in change[1])
    text = _old_text(change)
    path = tmp_path / "c.yaml"
    with pytest.raises(CampaignConfigError, match=refused):
        parse_campaign(text, path=path, base_dir=tmp_path)  # a campaign file: refused
    with caplog.at_level(logging.WARNING):
        shown = parse_campaign(text, path=path, base_dir=tmp_path, cross_check=False)
    assert caplog.text == ""  # status, export, report: read as accepted, without a word
    loaded = parse_campaign(text, path=path, base_dir=tmp_path, stored=_stored())
    assert "campaign 'old-rules' (id 1) as stored (c.yaml, line " in caplog.text
    assert refused in caplog.text and kept in caplog.text
    assert "a new campaign file is refused for it" in caplog.text
    assert loaded.campaign.outcome_constraints == shown.campaign.outcome_constraints


def test_a_stored_campaign_keeps_its_readings(tmp_path: Path) -> None:
    _model(tmp_path)
    path = tmp_path / "c.yaml"
    old = OLD_RULES["a planner setting its kind ignores"][0]
    c = parse_campaign(_old_text(old), path=path, base_dir=tmp_path, stored=_stored()).campaign
    check_settings(c.planner)  # the settings kind sobol follows: the planner is built from them
    assert c.planner.kind == "sobol" and c.planner.initial.model_fields_set == set()
    bound = OLD_RULES["an outcome bound with an underscore"][0]
    c = parse_campaign(_old_text(bound), path=path, base_dir=tmp_path, stored=_stored()).campaign
    assert c.outcome_constraints == ["y <= 10.0"]  # as float('1_0') read it
    assert c.parsed_outcome_constraints[0].bound == 10.0


def _run(tmp_path: Path) -> tuple[Store, int]:
    _model(tmp_path)
    path = tmp_path / "c.yaml"
    path.write_text(CAMPAIGN)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    loaded = parse_campaign(CAMPAIGN, path=path, base_dir=tmp_path)
    return store, Runner(loaded, store).run().campaign_id or 0


def _store_text(tmp_path: Path, text: str) -> None:
    """The campaign's text as an older closedloop stored it."""
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute("UPDATE campaign SET config_text = ?", (text,))


def test_a_stored_campaign_with_every_old_reading_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store, cid = _run(tmp_path)
    text = CAMPAIGN
    for rule in ("a planner setting its kind ignores", "true/false in a number field"):
        old, new = OLD_RULES[rule][0]
        text = text.replace(old, new)
    text = text.replace("seed: 1", "outcome_constraints: ['y <= 1_00', 'y >= 2_00']\nseed: 1")
    _store_text(tmp_path, text)
    summary = Runner.from_store(store, cid, max_trials=4).resume()
    assert (summary.completed, summary.status) == (4, "completed")
    for _, _, kept in OLD_RULES.values():
        if "name" not in kept:
            assert kept.split("'")[0] in caplog.text
    assert stored_campaign(store.campaign(cid)).outcome_constraints == [
        "y <= 100.0",
        "y >= 200.0",
    ]


def test_a_stored_campaign_refused_names_the_stored_copy_and_a_way_on(tmp_path: Path) -> None:
    store, cid = _run(tmp_path)
    # An instrument's check guards the hardware: it stays a refusal.
    _store_text(tmp_path, CAMPAIGN.replace("{name: y, goal", "{name: z, goal"))
    with pytest.raises(StoredCampaignError) as info:
        Runner.from_store(store, cid)
    message = str(info.value)
    assert message.startswith(f"campaign 'old-rules' (id {cid}) in {store.url}, as stored")
    assert "objective 'z' is not an output of the instrument" in message
    assert "which editing c.yaml does not change" in message
    assert f"closedloop export --store {store.url} -c {cid} -o trials.csv" in message
    assert "prior_data: trials.csv" in message
    proc = closedloop("resume", "--store", store.url, "-c", str(cid), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "as stored (c.yaml, line 6)" in proc.stderr and "Traceback" not in proc.stderr
    out = tmp_path / "trials.csv"
    proc = closedloop("export", "--store", store.url, "-c", str(cid), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr  # the way on exists
    assert len(out.read_text().splitlines()) == 3


ASKTELL = """\
name: asktell
parameters:
  - {name: temperature, type: float, bounds: [30, 110]}
  - {name: stages, type: int, bounds: [1, 4]}
objectives:
  - {name: yield, goal: maximize}
instrument: manual
planner:
  kind: sobol
budget:
  max_trials: 20
seed: 3
"""


def test_pending_suggestions_of_an_old_campaign_are_told_and_it_goes_on(tmp_path: Path) -> None:
    # The reviewer's case: suggestions made by a version that accepted `acquisition:` under
    # `kind: sobol` could not be told (their measured results refused), nor withdrawn.
    path = tmp_path / "ask.yaml"
    path.write_text(ASKTELL)
    url = f"sqlite:///{tmp_path / 's.db'}"
    proc = closedloop("suggest", str(path), "--store", url, "-n", "2", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ids = [t["trial_id"] for t in json.loads(proc.stdout)["trials"]]
    acquisition = "  kind: sobol\n  acquisition: qUpperConfidenceBound\n"
    _store_text(tmp_path, ASKTELL.replace("  kind: sobol\n", acquisition))
    proc = closedloop("tell", "--store", url, str(ids[0]), "yield=0.8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "kind sobol ignores it" in " ".join(proc.stderr.split())
    proc = closedloop("tell", "--store", url, str(ids[1]), "--abandon", "not run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = closedloop("suggest", "--store", url, "-c", "1", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["trials"]) == 1


def test_tell_records_results_a_refused_planner_check_would_block(tmp_path: Path) -> None:
    # Results measured in the lab are recorded whatever the planner checks say today (here
    # constraints no point can meet: suggest is refused, naming the stored copy).
    path = tmp_path / "ask.yaml"
    path.write_text(ASKTELL)
    url = f"sqlite:///{tmp_path / 's.db'}"
    proc = closedloop("suggest", str(path), "--store", url, "-n", "1", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (trial_id,) = [t["trial_id"] for t in json.loads(proc.stdout)["trials"]]
    conflicting = "constraints: ['temperature <= 40', 'temperature >= 50']\nseed: 3"
    _store_text(tmp_path, ASKTELL.replace("seed: 3", conflicting))
    store = Store(url, create=False)
    with pytest.raises(StoredCampaignError, match="as stored"):
        Runner.from_store(store, 1)
    Runner.from_store(store, 1, proposes=False)
    store.close()
    proc = closedloop("tell", "--store", url, str(trial_id), "yield=0.8", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = closedloop("suggest", "--store", url, "-c", "1", cwd=tmp_path)
    assert proc.returncode == 2 and "as stored (ask.yaml, line" in proc.stderr, proc.stderr


def test_a_stored_text_this_version_cannot_read_is_exported_by_the_one_that_stored_it(
    tmp_path: Path,
) -> None:
    # Older versions took an anchor defined twice with a warning; today's YAML reader refuses
    # it, export's too: the way on is the version that stored the campaign.
    _model(tmp_path)
    text = CAMPAIGN.replace("bounds: [-5, 10]}", "bounds: &b [-5, 10]}").replace(
        "bounds: [0, 1]}", "bounds: &b [0, 1]}"
    )
    path = tmp_path / "c.yaml"
    with pytest.raises(StoredCampaignError) as info:
        parse_campaign(text, path=path, base_dir=tmp_path, stored=_stored())
    assert "anchor '&b' is defined twice" in str(info.value)
    assert "with the closedloop version that stored the campaign" in str(info.value)
    with pytest.raises(StoredCampaignError) as info:  # an instrument's refusal: export reads it
        parse_campaign(
            CAMPAIGN.replace("{name: y, goal", "{name: z, goal"),
            path=path,
            base_dir=tmp_path,
            stored=_stored(),
        )
    assert "-o trials.csv`, then start a corrected copy" in str(info.value)
