"""A human in the loop: ``instrument: manual`` at a prompt, and ask/tell from the CLI.

Real SQLite stores throughout. The prompt runs ``closedloop run`` as a subprocess fed on
stdin (and interrupted with SIGINT); ask/tell runs the commands through typer's CliRunner.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from loop.cli import app
from loop.runner import Runner
from loop.store import Store
from tests.cli_process import run_cli

ROOT = Path(__file__).parents[2]

CAMPAIGN = """\
name: bench
parameters:
  - {name: temperature, type: float, bounds: [30, 110], unit: degC}
  - {name: stages, type: int, bounds: [1, 4]}
  - {name: catalyst, type: choice, values: [A, B]}
objectives:
  - {name: yield, goal: maximize}
instrument: manual
planner: {kind: botorch, initial: {kind: sobol, n: 3}}
budget: {max_trials: %d}
seed: 4
"""


def _campaign(tmp_path: Path, max_trials: int = 3, text: str = CAMPAIGN) -> Path:
    path = tmp_path / "bench.yaml"
    path.write_text(text % max_trials if "%d" in text else text)
    return path


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _run(*args: str, stdin: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(args, cwd=cwd, input=stdin)


def _trials(url: str) -> list[dict[str, Any]]:
    from loop.store import export_records

    store = Store(url, create=False)
    try:
        return export_records(store, store.campaign().id or 0)
    finally:
        store.close()


# ---------------------------------------------------------------------------- manual
def test_manual_instrument_prompts_and_stores_like_any_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    file = _campaign(tmp_path, max_trials=2)
    answers = (
        "0.5\n\n"  # trial 1: as commanded
        "abc\nfail spilled the sample\n"  # trial 2: a typo, re-asked, then failed
        "0.75\ntemperature=60 stages=9\ntemperature=60\n"  # trial 3: bad, then actual
    )
    done = _run("run", str(file), "--store", url, stdin=answers, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "trial 1: set temperature = " in done.stdout
    assert "'abc' is not a number" in done.stdout
    assert "stages=9 lies outside the search space" in done.stdout
    assert "max_trials reached (2 completed trials)" in done.stdout
    trials = _trials(url)
    assert [t["status"] for t in trials] == ["completed", "failed", "completed"]
    assert trials[0]["outputs"] == {"yield": 0.5}
    assert trials[1]["error"] == "marked failed by the operator: spilled the sample"
    assert trials[2]["outputs"] == {"yield": 0.75}
    assert trials[2]["readbacks"]["temperature"] == 60.0  # what was actually used
    assert trials[0]["readbacks"]["temperature"] == trials[0]["parameters"]["temperature"]
    # a completed manual trial is a Bluesky run like any other: start, event, stop stored
    store = Store(url, create=False)
    try:
        names = [d.name for d in store.documents(trials[2]["trial_id"])]
        assert names[0] == "start" and "event" in names and names[-1] == "stop"
        assert trials[2]["run_uid"]
        # the model learns from the temperature actually used
        runner = Runner.from_store(store, "bench")
        history = store.trials(runner.campaign_id or 0)
        planner = runner.rebuild_planner(history, store.observations(runner.campaign_id or 0))
        learned = [o.parameters["temperature"] for o in planner.observations]  # type: ignore[attr-defined]
        assert 60.0 in learned
    finally:
        store.close()


def test_end_of_input_at_the_first_prompt_abandons_and_resume_goes_on(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    file = _campaign(tmp_path, max_trials=2)
    first = _run("run", str(file), "--store", url, stdin="0.1\n\n", cwd=tmp_path)
    assert first.returncode == 130, first.stderr
    assert "closedloop resume" in first.stderr
    assert [t["status"] for t in _trials(url)] == ["completed", "abandoned"]
    again = _run("resume", "--store", url, stdin="stop\n", cwd=tmp_path)
    assert again.returncode == 130
    assert _trials(url)[-1]["error"] == "stopped by the operator: no result entered"
    last = _run("resume", "--store", url, stdin="0.2\n\n", cwd=tmp_path)
    assert last.returncode == 0, last.stderr
    assert [t["status"] for t in _trials(url)] == [
        "completed",
        "abandoned",
        "abandoned",
        "completed",
    ]


def test_ctrl_c_at_the_prompt_stops_cleanly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    file = _campaign(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "loop.cli", "run", str(file), "--store", url],
        cwd=tmp_path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    seen = ""
    while "yield = " not in seen:  # the prompt is waiting on stdin (still open)
        char = proc.stdout.read(1)
        assert char, f"no prompt; got {seen!r}"
        seen += char
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "closedloop resume" in err
    (trial,) = _trials(url)
    assert trial["status"] == "abandoned"
    assert "interrupted while waiting for the operator" in trial["error"]


def test_manual_config_errors(tmp_path: Path) -> None:
    no_outputs = CAMPAIGN.replace("instrument: manual", "instrument: {manual: true, outputs: []}")
    out = _cli("validate", str(_campaign(tmp_path, text=no_outputs % 3)))
    assert out.exit_code != 0
    assert "needs at least one output" in str(out.exception) + out.output
    noisy = CAMPAIGN.replace(
        "instrument: manual", "instrument: {manual: true, outputs: [yield], noise: 0.1}"
    )
    out = _cli("validate", str(_campaign(tmp_path, text=noisy % 3)))
    assert "noise" in str(out.exception) + out.output
    ok = _cli("validate", str(_campaign(tmp_path)))
    assert ok.exit_code == 0 and "manual" in ok.output


# ---------------------------------------------------------------------------- ask/tell
def _suggest(url: str, *args: str) -> dict[str, Any]:
    out = _cli("suggest", *args, "--store", url, "--json")
    assert out.exit_code == 0, out.output
    payload: dict[str, Any] = json.loads(out.stdout)
    return payload


def test_suggest_records_pending_trials_and_never_repeats_them(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    file = _campaign(tmp_path, max_trials=4)
    first = _suggest(url, str(file), "-n", "2")
    assert first["campaign"] == "bench" and first["outputs"] == ["yield"]
    assert [t["number"] for t in first["trials"]] == [1, 2]
    assert {t["kind"] for t in first["trials"]} == {"initial"}
    # the same file again continues the campaign (no second one), avoiding pending points
    again = _suggest(url, str(file))
    assert again["campaign_id"] == first["campaign_id"]
    (third,) = again["trials"]
    assert third["number"] == 3
    assert third["parameters"] not in [t["parameters"] for t in first["trials"]]
    trials = _trials(url)
    assert [t["status"] for t in trials] == ["running"] * 3
    table = _cli("suggest", "--store", url)
    assert table.exit_code == 0, table.output
    assert "trial_id" in table.output and "closedloop tell" in table.output


def test_a_batch_says_how_far_it_has_come_where_it_takes_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 96-well plate's `suggest -n 96` chose for minutes with nothing printed (found in
    review). Without a terminal a line says how far it has come, at most every
    ``PROGRESS_EVERY`` seconds (here every point), so a robot scheduler's log shows it."""
    import loop.cli

    url = f"sqlite:///{tmp_path / 'a.db'}"
    file = _campaign(tmp_path, max_trials=9)
    for trial in _suggest(url, str(file), "-n", "3")["trials"]:
        assert _cli("tell", "--store", url, str(trial["trial_id"]), "yield=0.5").exit_code == 0
    quick = _cli("suggest", "--store", url, "--json")
    assert quick.exit_code == 0 and "choosing" not in quick.stderr  # quick: nothing said
    monkeypatch.setattr(loop.cli, "PROGRESS_EVERY", 0.0)
    slow = _cli("suggest", "--store", url, "-n", "3", "--json")
    assert slow.exit_code == 0, slow.output
    lines = [line for line in slow.stderr.splitlines() if line.startswith("choosing")]
    assert [line.split(":")[1].split(" from")[0] for line in lines] == [" 1 of 3", " 2 of 3"]
    assert lines[0].endswith(" s each")
    assert len(json.loads(slow.stdout)["trials"]) == 3


def test_suggest_at_records_trials_at_a_point_a_person_chose(tmp_path: Path) -> None:
    """Controls and replicates on a plate: `suggest --at` records -n trials at a chosen
    point (kind manual), `--repeat ID` at a trial's point; told like any trial, counted
    toward the budget, learned from. A point that is not one is refused, nothing stored;
    and all -n or none (a chosen trial is never dropped for the budget)."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    file = _campaign(tmp_path, max_trials=6)
    (first,) = _suggest(url, str(file))["trials"]
    at = ["--at", "temperature=60", "--at", "stages=2", "--at", "catalyst=B"]
    controls = _suggest(url, *at, "-n", "2")["trials"]
    assert [t["kind"] for t in controls] == ["manual", "manual"]
    assert all(
        t["parameters"] == {"temperature": 60.0, "stages": 2, "catalyst": "B"} for t in controls
    )
    (replicate,) = _suggest(url, "--repeat", str(first["trial_id"]), "--at", "stages=4")["trials"]
    assert replicate["kind"] == "manual"
    assert replicate["parameters"] == {**first["parameters"], "stages": 4}

    def refused(*args: str) -> str:
        out = _cli("suggest", "--store", url, *args)
        assert out.exit_code == 2, out.output
        return " ".join(out.stderr.split())

    assert "stages, catalyst not given" in refused("--at", "temperature=60")
    assert "stages=9 is outside its bounds [1, 4]" in refused(*at[:2], "--at", "stages=9", *at[4:])
    assert "no such parameter" in refused(*at, "--at", "pressure=2")
    assert "is not one of A, B" in refused(*at[:4], "--at", "catalyst=Z")
    # 4 trials recorded of 6: two more fit, three are refused whole
    assert "not the 3 asked for at the chosen point" in refused(*at, "-n", "3")
    assert len(_trials(url)) == 4

    for trial, y in zip([first, *controls, replicate], [0.1, 0.5, 0.6, 0.2], strict=True):
        assert _cli("tell", "--store", url, str(trial["trial_id"]), f"yield={y}").exit_code == 0
    records = _trials(url)
    assert [r["kind"] for r in records] == ["initial", "manual", "manual", "manual"]
    assert [r["status"] for r in records] == ["completed"] * 4
    store = Store(url, create=False)
    try:
        runner = Runner.from_store(store, "bench")
        cid = runner.campaign_id or 0
        planner = runner.rebuild_planner(store.trials(cid), store.observations(cid))
        learned = [o.parameters for o in planner.observations]  # type: ignore[attr-defined]
        assert learned.count({"temperature": 60.0, "stages": 2, "catalyst": "B"}) == 2
    finally:
        store.close()


def test_ask_tell_chooses_with_the_full_effort_while_trials_are_pending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pending effort serves a runner's slots, which wait on the planner; nothing waits
    on a `suggest`. A plate still being measured (or its controls) lowered the effort of the
    whole next batch, which the pending effort chooses worse (found in review)."""
    from planners import BoTorchPlanner, BoTorchSettings

    url = f"sqlite:///{tmp_path / 'a.db'}"
    file = _campaign(tmp_path, max_trials=9)
    for trial in _suggest(url, str(file), "-n", "3")["trials"]:
        assert _cli("tell", "--store", url, str(trial["trial_id"]), "yield=0.5").exit_code == 0
    _suggest(url)  # one pending
    restarts: list[int] = []
    optimize = BoTorchPlanner._optimize

    def spy(self: BoTorchPlanner, acqf: Any, X_pending: Any) -> Any:
        restarts.append(self.settings.num_restarts)
        return optimize(self, acqf, X_pending)

    monkeypatch.setattr(BoTorchPlanner, "_optimize", spy)
    assert len(_suggest(url, "-n", "2")["trials"]) == 2
    assert restarts and set(restarts) == {BoTorchSettings().num_restarts}


def test_tell_records_results_and_actual_parameters(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    file = _campaign(tmp_path, max_trials=2)
    # a third suggestion could complete beyond max_trials: only two are proposed
    ids = [t["trial_id"] for t in _suggest(url, str(file), "-n", "3")["trials"]]
    assert len(ids) == 2
    told = _cli("tell", "--store", url, str(ids[0]), "yield=0.4", "--actual", "stages=2")
    assert told.exit_code == 0, told.output
    assert "completed" in told.output and "1 trial(s) pending" in told.output
    failed = _cli("tell", "--store", url, str(ids[1]), "--fail", "pump leaked")
    assert failed.exit_code == 0, failed.output
    # a failure does not count toward max_trials: there is room for one more
    ids += [t["trial_id"] for t in _suggest(url, "-n", "2")["trials"]]
    assert len(ids) == 3
    trials = _trials(url)
    assert trials[0]["outputs"] == {"yield": 0.4}
    assert trials[0]["readbacks"] == {"stages": 2}
    assert trials[1]["status"] == "failed"
    assert trials[1]["error"] == "marked failed by the operator: pump leaked"
    # the rebuilt planner learns stages=2, the value used, not the commanded one
    store = Store(url, create=False)
    try:
        runner = Runner.from_store(store, "bench")
        cid = runner.campaign_id or 0
        planner = runner.rebuild_planner(store.trials(cid), store.observations(cid))
        observed = planner.observations  # type: ignore[attr-defined]
        assert observed[0].parameters["stages"] == 2 and observed[0].outputs == {"yield": 0.4}
        assert [o.outcome for o in observed] == ["completed", "failed"]  # pending not ingested
    finally:
        store.close()
    # the last completed trial spends the budget: the campaign completes, suggest refuses
    last = _cli("tell", "--store", url, str(ids[2]), "yield=0.9")
    assert last.exit_code == 0, last.output
    assert "completed: max_trials reached" in last.output
    refused = _cli("suggest", "--store", url)
    assert refused.exit_code == 2 and "nothing more to suggest" in refused.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["999", "yield=1"], "no trial with id 999"),
        ([str(10**20), "yield=1"], f"no trial with id {10**20}"),  # beyond SQLite's integers
        (["{done}", "yield=1"], "is already completed"),
        (["{id}", "yield=high"], "'high' is not a number"),
        (["{id}", "yield=nan"], "not a finite number"),
        (["{id}", "yeld=1"], "unknown output(s) yeld; the campaign's outputs are: yield"),
        (["{id}"], "no results for trial"),
        (["{id}", "yield"], "must look like name=value"),
        (["{id}", "yield=1", "--actual", "temperature=200"], "outside the search space"),
        (["{id}", "yield=1", "--actual", "stages=1.5"], "is not an integer"),
        (["{id}", "yield=1", "--actual", "catalyst=C"], "is not one of A, B"),
        (["{id}", "yield=1", "--actual", "pressure=1"], "no such parameter"),
        ([], "give TRIAL_ID"),
    ],
)
def test_tell_refuses_bad_input_with_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    ids = [t["trial_id"] for t in _suggest(url, str(_campaign(tmp_path)), "-n", "2")["trials"]]
    assert _cli("tell", "--store", url, str(ids[0]), "yield=1").exit_code == 0
    argv = [a.format(done=ids[0], id=ids[1]) for a in args]
    out = _cli("tell", "--store", url, *argv)
    assert out.exit_code == 2, out.output
    assert message in " ".join(out.output.split()), out.output
    assert _trials(url)[1]["status"] == "running"  # nothing was written


def test_a_results_csv_header_with_units_is_refused_at_its_line_with_the_name(
    tmp_path: Path,
) -> None:
    """Was: `unknown output(s) yield [%]` at the first data row, with no hint."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    ids = [t["trial_id"] for t in _suggest(url, str(_campaign(tmp_path, 5)), "-n", "1")["trials"]]
    sheet = tmp_path / "r.csv"
    sheet.write_text(f"trial_id,yield [%]\n{ids[0]},30\n")
    out = _cli("tell", "--store", url, "--csv", str(sheet))
    assert out.exit_code == 2
    text = " ".join(out.output.split())
    assert "r.csv:1: column(s) 'yield [%]' are none of the campaign's outputs (yield)" in text
    assert "did you mean 'yield' for 'yield [%]'?" in text
    assert [t["status"] for t in _trials(url)] == ["running"]


def test_a_side_output_may_be_left_out_of_a_result(tmp_path: Path) -> None:
    """An output no objective or constraint reads may be told blank or left out, at the
    prompt too (Enter); a run keeps such a trial as well. Was: `missing output(s) note`,
    and the only way on was `--fail`, which lost the objective's reading."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    manual = "instrument: {manual: true, outputs: [yield, note]}"
    text = CAMPAIGN.replace("instrument: manual", manual)
    file = _campaign(tmp_path, 3, text)
    ids = [t["trial_id"] for t in _suggest(url, str(file), "-n", "2")["trials"]]
    assert _cli("tell", "--store", url, str(ids[0]), "yield=0.4").exit_code == 0
    nan = _cli("tell", "--store", url, str(ids[1]), "yield=0.5", "note=nan")
    assert nan.exit_code == 2
    assert "leave note out (or its cell empty)" in " ".join(nan.output.split())
    sheet = tmp_path / "r.csv"
    sheet.write_text(f"trial_id,yield,note\n{ids[1]},0.5,\n")
    assert _cli("tell", "--store", url, "--csv", str(sheet)).exit_code == 0
    missing = _cli("tell", "--store", url, str(_suggest(url)["trials"][0]["trial_id"]), "note=1")
    assert missing.exit_code == 2 and "missing output(s) yield" in missing.output
    trials = _trials(url)
    assert [t["status"] for t in trials[:2]] == ["completed", "completed"]
    assert [t["outputs"] for t in trials[:2]] == [{"yield": 0.4}, {"yield": 0.5}]
    # at the prompt, Enter leaves it out
    prompt = tmp_path / "p"
    prompt.mkdir()
    run_file = _campaign(prompt, 1, text)
    done = _run(
        "run",
        str(run_file),
        "--store",
        f"sqlite:///{prompt / 'm.db'}",
        stdin="0.7\n\n\n",
        cwd=prompt,
    )
    assert done.returncode == 0, done.stderr
    assert "note (Enter: none) = " in done.stdout
    (stored,) = _trials(f"sqlite:///{prompt / 'm.db'}")
    assert stored["status"] == "completed" and stored["outputs"]["yield"] == 0.7


def test_tell_csv_is_all_or_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    ids = [t["trial_id"] for t in _suggest(url, str(_campaign(tmp_path, 5)), "-n", "3")["trials"]]
    bad = tmp_path / "bad.csv"
    bad.write_text(f"trial_id,yield,actual.temperature,fail\n{ids[0]},0.3,,\n{ids[1]},oops,,\n")
    out = _cli("tell", "--store", url, "--csv", str(bad))
    assert out.exit_code == 2 and "bad.csv:3: yield='oops' is not a number" in out.output
    assert [t["status"] for t in _trials(url)] == ["running"] * 3
    good = tmp_path / "good.csv"
    good.write_text(
        "trial_id,yield,actual.temperature,fail\n"
        f"{ids[0]},0.3,,\n{ids[1]},0.6,45.5,\n{ids[2]},,,broken vial\n"
    )
    out = _cli("tell", "--store", url, "--csv", str(good))
    assert out.exit_code == 0, out.output
    trials = _trials(url)
    assert [t["status"] for t in trials] == ["completed", "completed", "failed"]
    assert trials[1]["readbacks"] == {"temperature": 45.5}
    twice = _cli("tell", "--store", url, "--csv", str(good))
    assert twice.exit_code == 2 and "every row is recorded already, as it says" in _flat(twice)
    changed = tmp_path / "changed.csv"
    changed.write_text(f"trial_id,yield\n{ids[0]},0.31\n")
    again = _cli("tell", "--store", url, "--csv", str(changed))
    assert again.exit_code == 2 and "is already completed" in again.output


def test_tell_records_who_recorded_which_results_and_from_where(tmp_path: Path) -> None:
    """Results typed in by hand are the lab's record of a measurement, and nothing said who
    entered them or when (a run's session says who ran its trials). Each tell that writes
    stores who (``--by``, else user@host), which trials, the command and the CSV file with
    its sha256, in the transaction that writes the results; a refused one stores none."""
    import hashlib

    from loop.provenance import user_at_host

    url = f"sqlite:///{tmp_path / 'a.db'}"
    ids = [t["trial_id"] for t in _suggest(url, str(_campaign(tmp_path, 5)), "-n", "3")["trials"]]
    one = _cli("tell", "--store", url, str(ids[0]), "yield=0.3", "--by", "  Ada (bench 2) ")
    assert one.exit_code == 0, one.output
    bad = tmp_path / "bad.csv"
    bad.write_text(f"trial_id,yield\n{ids[1]},0.6\n{ids[2]},oops\n")
    assert _cli("tell", "--store", url, "--csv", str(bad)).exit_code == 2
    assert _cli("tell", "--store", url, str(ids[1]), "yield=1", "--by", " ").exit_code == 2
    good = tmp_path / "good.csv"
    good.write_text(f"trial_id,yield,fail\n{ids[1]},0.6,\n{ids[2]},,broken vial\n")
    assert _cli("tell", "--store", url, "--csv", str(good)).exit_code == 0
    store = Store(url, create=False)
    try:
        cid = store.campaign().id or 0
        tells = store.tells(cid)
        finished = {t.number: t.finished_at for t in store.trials(cid)}
    finally:
        store.close()
    assert [t["by"] for t in tells] == ["Ada (bench 2)", user_at_host()]
    assert [t["trials"] for t in tells] == [[1], [2, 3]]
    counts = [(t["completed"], t["failed"], t["abandoned"]) for t in tells]
    assert counts == [(1, 0, 0), (1, 1, 0)]
    assert tells[0]["csv"] is None and isinstance(tells[0]["argv"], list)  # in-process here
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    assert tells[1]["csv"] == {"file": str(good.resolve()), "sha256": digest}
    # the same moment as the results it records: one transaction
    at = finished[2]
    assert at is not None and tells[1]["at"].startswith(at.isoformat()[:19])
    status = _cli("status", "--store", url)
    line = next(x for x in status.output.splitlines() if x.startswith("results told"))
    assert line.startswith("results told: 2 times; latest ") and line.endswith(
        f"UTC by {user_at_host()}: 2 trials (#2–#3) from good.csv"
    ), line
    as_json = json.loads(_cli("status", "--store", url, "--json").output)
    assert [t["trials"] for t in as_json["tells"]] == [[1], [2, 3]]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"trial_id,yield\n{a},0.3\n{b},0.5 \xb5g\n", "bad.csv:3: is not UTF-8 text (byte 27)"),
        (
            b"\xef\xbb\xbftrial_id,yield\n{a},0.3\n{b},0.5 \xb5g\n",
            "bad.csv:3: is not UTF-8 text (byte 30)",
        ),
        (b"trial_id,yield\n{a},0.3\n{b},0.5,0.7\n", "bad.csv:3: 3 cells but the first row"),
        (b"trial_id,yield,yield\n{a},0.3,0.4\n", "column(s) 'yield' given twice"),
        (b"trial_id,yield,\n{a},0.3,0.4\n", "bad.csv:2: the value '0.4' is in a column without"),
        (b"trial_id,yield\n" + str(10**20).encode() + b",0.3\n", f"no trial with id {10**20}"),
        (
            b"trial_id,yield\n{a},'" + b"x" * 200_000 + b"\n",
            "has a cell of more than 131072 characters",
        ),
    ],
    ids=[
        "not-utf8",
        "not-utf8-after-bom",
        "extra-cell",
        "column-twice",
        "unnamed-column",
        "huge-id",
        "huge-cell",
    ],
)
def test_tell_csv_refuses_what_it_cannot_read_exactly(
    tmp_path: Path, content: bytes, message: str
) -> None:
    """Nothing told is dropped or guessed: each of these is one message naming the row."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    ids = [t["trial_id"] for t in _suggest(url, str(_campaign(tmp_path, 5)), "-n", "2")["trials"]]
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content.replace(b"{a}", b"%d" % ids[0]).replace(b"{b}", b"%d" % ids[1]))
    out = _cli("tell", "--store", url, "--csv", str(bad))
    assert out.exit_code == 2, out.output
    assert message in " ".join(out.output.split()), out.output
    assert [t["status"] for t in _trials(url)] == ["running"] * 2  # nothing was written


NUMERIC_CHOICE = CAMPAIGN.replace("values: [A, B]", "values: [1, 2, 4]").replace(
    "name: stages, type: int, bounds: [1, 4]}",
    "name: stages, type: int, bounds: [1, 4]}\n"
    "  - {name: stirred, type: choice, values: [true, false]}",
)


def test_actual_values_are_read_as_prior_data_reads_them(tmp_path: Path) -> None:
    """`tell --actual catalyst=2.0` was refused for the choice 2 that a prior CSV takes
    (found in review): --actual, a results CSV and `plan --at` read a value one way."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    file = _campaign(tmp_path, 5, NUMERIC_CHOICE)
    ids = [t["trial_id"] for t in _suggest(url, str(file), "-n", "2")["trials"]]
    told = _cli(
        "tell", "--store", url, str(ids[0]), "yield=1", "--actual", "catalyst=2.0",
        "--actual", "stages=3.0", "--actual", "stirred=TRUE",
    )  # fmt: skip
    assert told.exit_code == 0, told.output
    csv = tmp_path / "r.csv"
    csv.write_text(f"trial_id,yield,actual.catalyst,actual.stirred\n{ids[1]},2,4.0,false\n")
    assert _cli("tell", "--store", url, "--csv", str(csv)).exit_code == 0
    readbacks = [t["readbacks"] for t in _trials(url)]
    assert readbacks == [
        {"catalyst": 2, "stages": 3, "stirred": True},
        {"catalyst": 4, "stirred": False},
    ]
    assert [type(r["catalyst"]) for r in readbacks] == [int, int]
    plan = _cli(
        "plan", str(file), "--dry-run", "--at", "temperature=60", "--at", "stages=2.0",
        "--at", "catalyst=2.0", "--at", "stirred=true",
    )  # fmt: skip
    assert plan.exit_code == 0, plan.output
    assert "next trial at temperature=60, stages=2, stirred=True, catalyst=2" in plan.output


def test_a_value_given_twice_names_both(tmp_path: Path) -> None:
    """`plan --at` reads its pairs as `tell` does (one parser), and says what was given."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    file = _campaign(tmp_path)
    ids = [t["trial_id"] for t in _suggest(url, str(file), "-n", "1")["trials"]]
    told = _cli("tell", "--store", url, str(ids[0]), "yield=1", "yield=2")
    assert told.exit_code == 2 and "output yield is given twice (1 and 2)" in told.output
    plan = _cli("plan", str(file), "--dry-run", "--at", "stages=1", "--at", "stages=2")
    assert plan.exit_code == 2
    assert "--at stages is given twice (1 and 2)" in " ".join(plan.output.split())
    malformed = _cli("plan", str(file), "--dry-run", "--at", "stages")
    assert malformed.exit_code == 2 and "must look like name=value" in malformed.output


def test_tell_csv_reads_a_quoted_newline_and_blank_lines(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    ids = [t["trial_id"] for t in _suggest(url, str(_campaign(tmp_path, 5)), "-n", "2")["trials"]]
    good = tmp_path / "good.csv"
    good.write_text(f'trial_id,yield,fail\n\n{ids[0]},,"vial\ncracked"\n{ids[1]},0.5,\n')
    out = _cli("tell", "--store", url, "--csv", str(good))
    assert out.exit_code == 0, out.output
    trials = _trials(url)
    assert trials[0]["error"] == "marked failed by the operator: vial\ncracked"
    assert trials[1]["outputs"] == {"yield": 0.5}


def test_suggest_file_of_another_text_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    _suggest(url, str(_campaign(tmp_path)))
    changed = _campaign(tmp_path, max_trials=9)
    out = _cli("suggest", str(changed), "--store", url)
    assert out.exit_code == 2 and "created from a different file" in out.output


def test_suggest_file_of_a_finished_campaign_extends_it_not_a_new_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The daily ask/tell loop is `suggest FILE`: once `tell` spent the budget, the next
    `suggest FILE` started a new campaign of the same name from the first design point,
    learning nothing from the trials, and `--max-trials` became its budget (found in
    review). It now refuses, naming the limit, and a larger limit extends the campaign."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    file = _campaign(tmp_path, max_trials=2)
    ids = [t["trial_id"] for t in _suggest(url, str(file), "-n", "2")["trials"]]
    for i, trial in enumerate(ids):
        assert _cli("tell", "--store", url, str(trial), f"yield={i}").exit_code == 0
    done = _cli("suggest", str(file), "--store", url)
    said = " ".join(done.output.split())
    assert done.exit_code != 0 and "is done: max_trials reached" in said and "-c 1" in said
    more = _suggest(url, str(file), "--max-trials", "3")
    assert [t["number"] for t in more["trials"]] == [3]
    store = Store(url, create=False)
    try:
        assert [(c.id, c.name) for c in store.campaigns()] == [(1, "bench")]
    finally:
        store.close()
    edited = _campaign(tmp_path, max_trials=5)
    other = _cli("suggest", str(edited), "--store", url)
    assert other.exit_code == 2 and "created from a different file" in other.output
    # a comment added, CRLF line endings: the same campaign, continued (it was refused as
    # "a different file" without saying what differed; found in review)
    text = (CAMPAIGN % 2).replace("\n", "\r\n") + "# batch 2: new substrate lot\r\n"
    file.write_bytes(text.encode())
    assert (
        _cli("tell", "--store", url, str(more["trials"][0]["trial_id"]), "yield=1").exit_code == 0
    )
    said = " ".join(_cli("suggest", str(file), "--store", url).output.split())
    assert "is done: max_trials reached" in said  # the stored campaign, not a refusal
    # a finished campaign's file edited (another budget, a new target): a new campaign, said
    again = _cli("suggest", str(_campaign(tmp_path, max_trials=5)), "--store", url)
    said = " ".join(again.output.split())
    assert again.exit_code == 0, said
    assert "created campaign bench (id 2)" in said
    warned = " ".join(caplog.text.split())
    assert "campaign 'bench' (id 1) is completed and the file differs from it" in warned


FIXED = """\
name: fixedp
parameters:
  - {name: x1, type: float, bounds: [0, 1]}
  - {name: pressure, type: fixed, value: 1.0, unit: bar}
objectives:
  - {name: y, goal: maximize}
instrument: manual
planner: {kind: sobol}
budget: {max_trials: 2}
seed: 1
"""


def test_tell_actual_of_a_fixed_parameter(tmp_path: Path) -> None:
    """A fixed parameter has no bounds: its own value is accepted, another one refused."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    file = _campaign(tmp_path, text=FIXED)
    ids = [t["trial_id"] for t in _suggest(url, str(file), "-n", "2")["trials"]]
    other = _cli("tell", "--store", url, str(ids[0]), "y=0.4", "--actual", "pressure=2")
    assert other.exit_code == 2, other.output
    assert "pressure is a fixed parameter" in " ".join(other.output.split())
    assert _trials(url)[0]["status"] == "running"  # nothing was written
    same = _cli("tell", "--store", url, str(ids[0]), "y=0.4", "--actual", "pressure=1")
    assert same.exit_code == 0, same.output
    assert _trials(url)[0]["readbacks"]["pressure"] == 1.0


def test_manual_prompt_with_a_fixed_parameter_asks_again(tmp_path: Path) -> None:
    """Typing a fixed parameter at the prompt must not kill the campaign."""
    url = f"sqlite:///{tmp_path / 'm.db'}"
    file = _campaign(tmp_path, text=FIXED)
    answers = "0.5\npressure=2\npressure=1.0\n0.6\n\n"
    done = _run("run", str(file), "--store", url, stdin=answers, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "pressure is a fixed parameter" in done.stdout
    assert [t["status"] for t in _trials(url)] == ["completed", "completed"]


def test_suggest_file_starts_from_its_prior_data_as_run_does(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    payload = _suggest(url, str(ROOT / "campaigns" / "prior_data.yaml"))
    trials = _trials(url)
    prior = [t for t in trials if t["kind"] == "prior"]
    assert len(prior) == 6 and all(t["status"] == "completed" for t in prior)
    # told again: no --amend hint, which refuses prior data (found in review)
    again = _cli("tell", "--store", url, str(prior[0]["trial_id"]), "y=1")
    assert again.exit_code == 2 and "it is prior data, and its CSV is the record" in _flat(again)
    # six usable prior rows cover the 5-point initial design: the first proposal is a model's
    assert [t["kind"] for t in payload["trials"]] == ["model"]
    assert payload["trials"][0]["number"] == 7


def test_the_parameters_prompt_takes_fail_and_stop(tmp_path: Path) -> None:
    """A run found to have left the search space is recorded as failed from the prompt."""
    url = f"sqlite:///{tmp_path / 'f.db'}"
    file = _campaign(tmp_path, max_trials=3)
    answers = "0.5\ntemperature=500\nfail thermostat overshoot\n0.6\nstop\n"
    done = _run("run", str(file), "--store", url, stdin=answers, cwd=tmp_path)
    assert "lies outside the search space" in done.stdout
    assert "record it as failed with `fail REASON`" in done.stdout  # no CLI flags here
    assert "--actual" not in done.stdout and "--fail" not in done.stdout
    trials = _trials(url)
    # `stop` once every output is entered keeps them (parameters as set), then stops
    assert done.returncode == 130, done.stderr
    assert [t["status"] for t in trials] == ["failed", "completed"]
    assert trials[0]["error"] == "marked failed by the operator: thermostat overshoot"
    assert trials[0]["outputs"] == {"yield": 0.5}  # measured: kept with the failed trial
    assert trials[1]["outputs"] == {"yield": 0.6}


# ------------------------------------------------- ask/tell: pending, withdrawn, concurrent
ASKTELL = """\
name: %s
parameters:
  - {name: temperature, type: float, bounds: [30, 110], unit: degC}
  - {name: residence_time, type: float, bounds: [0.5, 30]}
  - {name: catalyst, type: choice, values: [Pd-A, Pd B]}
constraints:
  - "temperature + 2 * residence_time <= 150"
objectives:
  - {name: yield, goal: maximize}
instrument: manual
planner: {kind: sobol}
budget: {max_trials: %d, max_failures: %d}
seed: 1
"""


def _asktell(
    tmp_path: Path, n: int, *, name: str = "bench", max_trials: int = 20, max_failures: int = 5
) -> tuple[str, list[dict[str, Any]]]:
    """A store with an ask/tell campaign and ``n`` pending suggestions (sobol: fast)."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    file = tmp_path / f"{name}.yaml"
    file.write_text(ASKTELL % (name, max_trials, max_failures))
    return url, _suggest(url, str(file), "-n", str(n))["trials"]


def _flat(out: Any) -> str:
    return " ".join((out.output + str(out.exception or "")).split())


def test_status_and_resume_leave_pending_suggestions_to_tell(tmp_path: Path) -> None:
    """`resume` would abandon suggestions whose samples may be in the lab: status does not
    recommend it, and resume refuses until they are told or withdrawn."""
    from loop.runner import SuggestionsPending

    url, trials = _asktell(tmp_path, 2)
    ids = [t["trial_id"] for t in trials]
    status = _cli("status", "--store", url)
    assert status.exit_code == 0, status.output
    said = _flat(status)
    assert f"2 suggestion(s) await results (trial ids {ids[0]}, {ids[1]})" in said
    assert "closedloop tell --store" in said and "closedloop resume" not in said
    refused = _cli("resume", "--store", url)
    assert isinstance(refused.exception, SuggestionsPending), refused.output
    assert "resuming would abandon them" in _flat(refused)
    # refused as given, exit 2 as the README's list of codes says (it was 1, a failed run's)
    from tests.cli_process import closedloop

    process = closedloop("resume", "--store", url, cwd=tmp_path)
    assert process.returncode == 2, process.stderr
    assert "resuming would abandon them" in " ".join(process.stderr.split())
    assert "resuming;" not in process.stdout  # the refusal is all that is printed
    assert [t["status"] for t in _trials(url)] == ["running", "running"]  # untouched
    told = _cli("tell", "--store", url, str(ids[0]), "yield=0.8")
    assert told.exit_code == 0, told.output  # the results can still be told
    withdrawn = _cli("tell", "--store", url, str(ids[1]), "--abandon", "not run")
    assert withdrawn.exit_code == 0, withdrawn.output
    status = _cli("status", "--store", url)
    assert "`closedloop suggest --store" in _flat(status)  # nothing pending: suggest more


def test_tell_abandon_withdraws_a_suggestion_without_spending_the_budget(tmp_path: Path) -> None:
    url, trials = _asktell(tmp_path, 3, max_failures=1)
    ids = [t["trial_id"] for t in trials]
    both = _cli("tell", "--store", url, str(ids[0]), "yield=0.3", "--abandon", "x")
    assert both.exit_code == 2 and "takes no outputs" in _flat(both)
    for trial_id in ids[:2]:
        out = _cli("tell", "--store", url, str(trial_id), "--abandon", "not run: no reagent")
        assert out.exit_code == 0, out.output
        assert "abandoned (withdrawn by the operator: not run: no reagent)" in out.output
    # two withdrawn with max_failures 1: the campaign goes on, waiting for the third
    assert "stopped: ask/tell: 1 trial(s) pending" in _flat(out)
    stored = _trials(url)
    assert [t["status"] for t in stored] == ["abandoned", "abandoned", "running"]
    # as for trials interrupted by Ctrl-C, the design moves on to its next points
    (new,) = _suggest(url, "-n", "1")["trials"]
    assert new["parameters"] not in [t["parameters"] for t in trials]


def test_a_sheet_with_wells_not_read_yet_leaves_them_pending(tmp_path: Path) -> None:
    """A robot's sheet filled in as the wells are read: rows with no outputs yet stay
    pending (they were refused at the first blank row, found in review)."""
    url, trials = _asktell(tmp_path, 3)
    ids = [t["trial_id"] for t in trials]
    sheet = tmp_path / "plate.csv"
    sheet.write_text(f"trial_id,yield,fail\n{ids[0]},0.4,\n{ids[1]},,\n{ids[2]},,\n")
    out = _cli("tell", "--store", url, "--csv", str(sheet))
    assert out.exit_code == 0, out.output
    assert f"2 rows with no outputs yet left pending (trials {ids[1]}, {ids[2]})" in _flat(out)
    assert [t["status"] for t in _trials(url)] == ["completed", "running", "running"]
    # told again as more wells are read: the row told before is passed over
    sheet.write_text(f"trial_id,yield,fail\n{ids[0]},0.4,\n{ids[1]},0.5,\n{ids[2]},,\n")
    out = _cli("tell", "--store", url, "--csv", str(sheet))
    assert out.exit_code == 0, out.output
    assert f"1 row recorded already as they are, passed over (trials {ids[0]})" in _flat(out)
    assert [t["status"] for t in _trials(url)] == ["completed", "completed", "running"]
    sheet.write_text(f"trial_id,yield,fail\n{ids[1]},,\n{ids[2]},,\n")
    out = _cli("tell", "--store", url, "--csv", str(sheet))
    assert out.exit_code == 2 and "no results yet: every row's output cells are empty" in _flat(out)


def test_a_failure_told_as_the_instruments_is_stored_transient(tmp_path: Path) -> None:
    """A clogged tip: the trial failed, the point did not (the planner learns it as an
    interrupted trial, as the runner's transient faults), by --transient or a CSV column."""
    url, trials = _asktell(tmp_path, 3)
    ids = [t["trial_id"] for t in trials]
    alone = _cli("tell", "--store", url, str(ids[0]), "yield=0.3", "--transient")
    assert alone.exit_code == 2 and "--transient qualifies a failure" in _flat(alone)
    out = _cli("tell", "--store", url, str(ids[0]), "--fail", "clogged tip", "--transient")
    assert out.exit_code == 0, out.output
    sheet = tmp_path / "plate.csv"
    sheet.write_text(
        f"trial_id,yield,fail,transient\n{ids[1]},,clogged tip,yes\n{ids[2]},,no solvent,\n"
    )
    out = _cli("tell", "--store", url, "--csv", str(sheet))
    assert out.exit_code == 0, out.output
    store = Store(url, create=False)
    try:
        rows = store.trials(store.campaign().id or 0)
    finally:
        store.close()
    assert [(t.status, t.transient) for t in rows] == [
        ("failed", True),
        ("failed", True),
        ("failed", False),
    ]
    (tmp_path / "again").mkdir()
    url, (pending,) = _asktell(tmp_path / "again", 1)
    sheet.write_text(f"trial_id,yield,fail,transient\n{pending['trial_id']},0.2,,maybe\n")
    out = _cli("tell", "--store", url, "--csv", str(sheet))
    assert out.exit_code == 2 and "transient 'maybe' is neither yes nor no" in _flat(out)


def test_a_result_told_wrong_is_amended_and_the_old_one_kept(tmp_path: Path) -> None:
    """A plate read rotated: the told yields are corrected, the planner learns the new ones,
    and the store keeps the old result, who changed it and why (it could not be changed
    at all, found in review)."""
    url, trials = _asktell(tmp_path, 2)
    ids = [t["trial_id"] for t in trials]
    assert _cli("tell", "--store", url, str(ids[0]), "yield=3.4").exit_code == 0
    not_yet = _cli("tell", "--store", url, str(ids[1]), "yield=1", "--amend", "typo")
    assert not_yet.exit_code == 2 and "has no result yet: tell it without --amend" in _flat(not_yet)
    out = _cli(
        "tell", "--store", url, str(ids[0]), "yield=0.34", "--amend", "plate rotated", "--by", "ana"
    )
    assert out.exit_code == 0, out.output
    assert [(t["status"], t["outputs"]) for t in _trials(url)][0] == (
        "completed",
        {"yield": 0.34},
    )
    store = Store(url, create=False)
    try:
        cid = store.campaign().id or 0
        (event,) = [e for e in store.events(cid, None) if e.kind == "amend"]
        detail = json.loads(event.detail or "{}")
        assert (event.by, detail["reason"], detail["trial"]) == ("ana", "plate rotated", 1)
        assert detail["old"]["outputs"] == {"yield": 3.4}
        assert detail["new"]["outputs"] == {"yield": 0.34}
    finally:
        store.close()
    failed = _cli("tell", "--store", url, str(ids[0]), "--fail", "tip clogged", "--amend", "x")
    assert failed.exit_code == 0, failed.output
    assert _trials(url)[0]["status"] == "failed" and _trials(url)[0]["outputs"] == {}
    # status shows the corrections (they were seen only in the store's events; found in
    # review)
    shown = _flat(_cli("status", "--store", url))
    assert "results amended: 2 times; latest " in shown and "#1 completed -> failed (x)" in shown
    as_json = json.loads(_cli("status", "--store", url, "--json").stdout)
    assert [(a["by"], a["reason"], a["new"]["status"]) for a in as_json["amends"]][0] == (
        "ana",
        "plate rotated",
        "completed",
    )
    no_reason = _cli("tell", "--store", url, str(ids[0]), "yield=0.3", "--amend", " ")
    assert no_reason.exit_code == 2 and "--amend needs a reason" in _flat(no_reason)


def test_an_amend_changes_what_it_names_and_keeps_the_rest(tmp_path: Path) -> None:
    """`tell 1 yield=0.46 --amend typo` replaced the whole result: a side output and an
    `--actual` value not repeated were deleted without a word, and the planner learnt the
    trial at its commanded point (found in review). Now what is not given again stands,
    and status says what changed."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    file = tmp_path / "side.yaml"
    text = ASKTELL.replace(
        "instrument: manual", "instrument: {manual: true, outputs: [yield, purity]}"
    )
    file.write_text(text % ("side", 20, 5))
    (trial,) = _suggest(url, str(file), "-n", "1")["trials"]
    tid, commanded = str(trial["trial_id"]), trial["parameters"]["temperature"]
    used = commanded - 0.5 if commanded >= 30.5 else commanded + 0.25
    told = _cli(
        "tell", "--store", url, tid, "yield=0.64", "purity=0.91", f"--actual=temperature={used}"
    )
    assert told.exit_code == 0, told.output
    (record,) = _trials(url)
    assert record["readbacks"] == {"temperature": used}

    fixed = _cli("tell", "--store", url, tid, "yield=0.46", "--amend", "typo")
    assert fixed.exit_code == 0, fixed.output
    (record,) = _trials(url)
    assert record["outputs"] == {"yield": 0.46, "purity": 0.91}
    assert record["readbacks"] == {"temperature": used}
    assert "#1 yield 0.64 -> 0.46 (typo)" in _flat(_cli("status", "--store", url))

    thermometer = _cli(
        "tell", "--store", url, tid, f"--actual=temperature={commanded}", "--amend", "thermometer"
    )
    assert thermometer.exit_code == 0, thermometer.output
    (record,) = _trials(url)
    assert record["outputs"] == {"yield": 0.46, "purity": 0.91}
    assert record["readbacks"] in ({}, {"temperature": commanded})  # as commanded after all
    said = _flat(_cli("status", "--store", url))
    assert f"#1 actual temperature {used:.6g} -> " in said and "(thermometer)" in said

    nothing = _cli("tell", "--store", url, tid, "--amend", "x")
    assert nothing.exit_code == 2 and "nothing to amend for trial" in _flat(nothing)
    # failed after all: its outputs go (a failed trial has none), what was used stays
    failed = _cli("tell", "--store", url, tid, "--fail", "bubbles", "--amend", "seen later")
    assert failed.exit_code == 0, failed.output
    (record,) = _trials(url)
    assert (record["status"], record["outputs"]) == ("failed", {})


def test_a_failed_trial_amended_keeps_its_reason_and_its_transience(tmp_path: Path) -> None:
    """Rewording a transient failure's reason made it the point's failure, and status said
    "nothing changed"; `--actual` alone on a failed trial was refused as a result without
    outputs (found in review)."""
    url, trials = _asktell(tmp_path, 1)
    tid = str(trials[0]["trial_id"])
    assert _cli("tell", "--store", url, tid, "--fail", "tip clogged", "--transient").exit_code == 0
    out = _cli("tell", "--store", url, tid, "--fail", "tip clogged (pipette B)", "--amend", "x")
    assert out.exit_code == 0, out.output
    (record,) = _trials(url)
    assert (record["status"], record["transient"]) == ("failed", True)
    assert "tip clogged (pipette B)" in record["error"]
    shown = _flat(_cli("status", "--store", url))
    assert "#1 reason " in shown and "-> " in shown and "(x)" in shown, shown
    used = trials[0]["parameters"]["residence_time"] * 0.9
    actual = _cli("tell", "--store", url, tid, f"--actual=residence_time={used}", "--amend", "y")
    assert actual.exit_code == 0, actual.output
    (record,) = _trials(url)
    assert (record["status"], record["transient"], record["readbacks"]) == (
        "failed",
        True,
        {"residence_time": used},
    )
    assert "tip clogged (pipette B)" in record["error"]
    point = _cli("tell", "--store", url, tid, "--not-transient", "--amend", "its own")
    assert point.exit_code == 0, point.output
    assert _trials(url)[0]["transient"] is False
    assert "#1 transient True -> False (its own)" in _flat(_cli("status", "--store", url))


def test_a_runners_measurement_is_not_amended(tmp_path: Path) -> None:
    from tests.cli_process import closedloop

    campaign = tmp_path / "b.yaml"
    campaign.write_text(
        "name: b\nparameters:\n  - {name: x, type: float, bounds: [0, 1]}\n"
        "objectives: [{name: y, goal: maximize}]\n"
        "instrument: {function: f.py:f, outputs: [y]}\nplanner: {kind: sobol}\n"
        "budget: {max_trials: 1}\nseed: 1\n"
    )
    (tmp_path / "f.py").write_text("def f(inputs):\n    return {'y': inputs['x']}\n")
    url = f"sqlite:///{tmp_path / 'b.db'}"
    assert closedloop("run", str(campaign), "--store", url, cwd=tmp_path).returncode == 0
    out = _cli("tell", "--store", url, "1", "y=0.5", "--amend", "wrong")
    assert out.exit_code == 2
    assert "measured by a runner (its Bluesky documents hold the reading)" in _flat(out)


def test_suggest_stays_within_max_trials_and_names_the_limit_to_raise(tmp_path: Path) -> None:
    url, trials = _asktell(tmp_path, 5, max_trials=2, max_failures=1)
    assert len(trials) == 2  # a third could complete beyond max_trials
    full = _cli("suggest", "--store", url)
    assert full.exit_code == 2 and "can already reach budget.max_trials = 2" in _flat(full)
    failed = _cli("tell", "--store", url, str(trials[0]["trial_id"]), "--fail", "vial cracked")
    assert failed.exit_code == 0 and "failed: 1 trials failed" in _flat(failed)
    # a failed campaign is extended by max_failures, not max_trials
    refused = _cli("suggest", "--store", url, "-c", "1")
    assert refused.exit_code == 2, refused.output
    assert "--max-failures 11" in _flat(refused) and "--max-trials" not in _flat(refused)
    more = _suggest(url, "-c", "1", "--max-failures", "3")
    assert len(more["trials"]) == 1  # 1 pending + 1 new = max_trials
    store = Store(url, create=False)
    try:
        row = store.campaign(1)
        assert row.budget is not None and row.budget["max_failures"] == 3  # kept
        assert row.status == "stopped"
    finally:
        store.close()


def test_tell_refuses_outputs_together_with_a_fail_reason(tmp_path: Path) -> None:
    """Either half would be lost; a `fail` cell reading "not failed" is refused too."""
    url, trials = _asktell(tmp_path, 3)
    a, b, c = (t["trial_id"] for t in trials)
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"trial_id,yield,fail\n{a},0.71,\n{b},0.64,FALSE\n")
    out = _cli("tell", "--store", url, "--csv", str(sheet))
    assert out.exit_code == 2, out.output
    assert "sheet.csv:3: outputs (yield=0.64) and fail 'FALSE' given together" in _flat(out)
    sheet.write_text(f"trial_id,yield,fail\n{a},,no\n")
    out = _cli("tell", "--store", url, "--csv", str(sheet))
    assert out.exit_code == 2 and "sheet.csv:2: fail 'no' reads as 'not failed'" in _flat(out)
    # placeholders and "it worked" in other words: a told trial cannot be told again
    for said in ("not failed", "N/A", "NaN", "-", "null", "pass", "success", "did not fail"):
        out = _cli("tell", "--store", url, str(a), "--fail", said)
        assert out.exit_code == 2, (said, out.output)
        assert f"--fail {said!r} reads as 'not failed' or 'nothing'" in _flat(out)
    out = _cli("tell", "--store", url, str(c), "yield=0.9", "--fail", "x")
    assert out.exit_code == 2 and "--fail 'x' given together" in _flat(out)
    assert [t["status"] for t in _trials(url)] == ["running"] * 3  # nothing was written


def test_tell_actual_breaking_a_constraint_is_refused(tmp_path: Path) -> None:
    """Each value within bounds, the point outside the space: the model would quietly learn
    the commanded point instead, so it is refused (record such a trial with --fail)."""
    url, trials = _asktell(tmp_path, 1)
    (trial,) = trials
    actual = ["--actual", "temperature=100", "--actual", "residence_time=30"]  # 160 > 150
    out = _cli("tell", "--store", url, str(trial["trial_id"]), "yield=0.5", *actual)
    assert out.exit_code == 2, out.output
    said = _flat(out)
    assert "violates constraints[0] ('temperature + 2 * residence_time <= 150')" in said
    assert "record it as failed with --fail REASON" in said
    assert _trials(url)[0]["status"] == "running"


def test_tell_csv_of_two_campaigns_writes_nothing_while_one_is_busy(tmp_path: Path) -> None:
    from loop.asktell import read_results_csv, tell, trial_and_runner
    from loop.lock import CampaignLease
    from loop.store import CampaignLocked

    url, (first,) = _asktell(tmp_path, 1, name="bench")
    _, (second,) = _asktell(tmp_path, 1, name="other")
    both = tmp_path / "both.csv"
    both.write_text(f"trial_id,yield\n{first['trial_id']},0.5\n{second['trial_id']},0.6\n")
    store = Store(url, create=False)
    runners: dict[int, Runner] = {}
    try:
        results = read_results_csv(
            lambda tid: runners[trial_and_runner(store, tid, runners).campaign_id], both
        ).results
        with CampaignLease(store) as holder:  # e.g. a `tell` of the other campaign, now
            holder.acquire(store.campaign("other").id or 0)
            with pytest.raises(CampaignLocked, match="another suggest/tell"):
                tell(store, results, runners, wait=0.1)
            statuses = {t.id: t.status for c in (1, 2) for t in store.trials(c)}
            assert set(statuses.values()) == {"running"}  # neither campaign was written
        done = tell(store, results, runners)
        assert [t.status for t in done] == ["completed", "completed"]
    finally:
        store.close()


def test_a_second_tell_waits_for_the_first(tmp_path: Path) -> None:
    """Two ask/tell commands at once: the second waits for the lease, not refused as if a
    runner drove the campaign. A runner driving it is refused at once."""
    import threading

    from loop.lock import CampaignLease
    from loop.store import CampaignLocked

    url, (trial, other) = _asktell(tmp_path, 2)
    store = Store(url, create=False)
    held, done = threading.Event(), threading.Event()

    def hold() -> None:
        with CampaignLease(store) as lease:
            lease.acquire(1)
            held.set()
            done.wait(2.0)  # as long as a slow suggest: longer than the tell takes to ask

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        held.wait()
        out = _cli("tell", "--store", url, str(trial["trial_id"]), "yield=0.5")
        assert out.exit_code == 0, _flat(out)
    finally:
        done.set()
        holder.join()
    with CampaignLease(store) as runner_lease:  # a runner: lease held, campaign running
        runner_lease.acquire(1)
        store.reopen_campaign(1, token=runner_lease.token)
        out = _cli("tell", "--store", url, str(other["trial_id"]), "yield=0.5")
        assert isinstance(out.exception, CampaignLocked)
        assert "is being driven by a runner" in str(out.exception)
    store.close()


def _commands(message: str) -> list[str]:
    """The `closedloop ...` commands a message tells the user to copy."""
    return list(re.findall(r"`(closedloop [^`]*)`", message))


def test_hints_to_copy_name_the_store_and_work_from_another_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hint that leaves out `--store` fails when copied ("no store at closedloop.db"),
    unless the store happens to be the default one (found in review)."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    _suggest(url, str(_campaign(tmp_path)))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("CLOSEDLOOP_STORE", raising=False)
    changed = _campaign(tmp_path, max_trials=9)
    refused = _cli("suggest", str(changed), "--store", url)
    assert refused.exit_code == 2, refused.output
    (hint,) = _commands(refused.output)
    assert hint == f"closedloop suggest --store {url} -c 1"
    out = _cli(*shlex.split(hint)[1:])
    assert out.exit_code == 0, out.output

    url2, trials = _asktell(tmp_path / "elsewhere", 5, max_trials=2)
    full = _cli("suggest", "--store", url2)
    assert full.exit_code == 2, full.output
    hints = _commands(full.output)
    assert [h.split(" TRIAL_ID")[0] for h in hints[:2]] == [f"closedloop tell --store {url2}"] * 2
    tell = shlex.split(hints[0].replace("TRIAL_ID", str(trials[0]["trial_id"])))
    told = _cli(*tell[1:-1], "yield=0.5")  # `...`: the outputs
    assert told.exit_code == 0, told.output
    withdraw = hints[1].replace("TRIAL_ID", str(trials[1]["trial_id"]))
    withdrawn = _cli(*shlex.split(withdraw.replace("REASON", "'no reagent'"))[1:])
    assert withdrawn.exit_code == 0, withdrawn.output
    assert not (elsewhere / "closedloop.db").exists()


# ---------------------------------------------------------------------------- export round trip
def _export_filled(url: str, tmp_path: Path, values: list[str]) -> tuple[Path, list[str]]:
    """`closedloop export` of the pending trials with its `yield` column filled in, as a
    scientist makes the results sheet: the export's rows as they are, one value each (the
    objective's column is there, empty, before any trial has finished)."""
    path = tmp_path / "pending.csv"
    out = _cli("export", "--store", url, "-o", str(path))
    assert out.exit_code == 0, out.output
    rows = list(csv.reader(io.StringIO(path.read_text())))
    at = rows[0].index("yield")
    for row, value in zip(rows[1:], values, strict=True):
        assert row[at] == ""
        row[at] = value
    return path, [",".join(row) for row in rows]


def test_tell_csv_takes_the_export_of_the_pending_trials_filled_in(tmp_path: Path) -> None:
    """Was: `unknown output(s) number, kind, status, temperature, ...` (found in review).
    The export's bookkeeping columns are ignored as prior data ignores them; its parameter
    columns are the proposal, accepted as written (or as a spreadsheet rounds them)."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    _suggest(url, str(_campaign(tmp_path, 5)), "-n", "2")
    path, lines = _export_filled(url, tmp_path, ["0.4", "0.7"])
    header = lines[0].split(",")
    assert {"number", "kind", "status", "temperature", "started_at"} <= set(header)
    # a spreadsheet keeps 15 significant digits of the export's 17: still the proposal
    at = header.index("temperature")
    first = lines[1].split(",")
    first[at] = f"{float(first[at]):.14g}"
    path.write_text("\n".join([lines[0], ",".join(first), lines[2]]) + "\n")
    out = _cli("tell", "--store", url, "--csv", str(path))
    assert out.exit_code == 0, out.output
    trials = _trials(url)
    assert [t["status"] for t in trials] == ["completed", "completed"]
    assert [t["outputs"]["yield"] for t in trials] == [0.4, 0.7]
    assert all(t["readbacks"] == {} for t in trials)  # learned at the proposal


@pytest.mark.parametrize(("digits", "accepted"), [(6, True), (9, True), (4, False)])
def test_tell_csv_takes_a_proposal_a_spreadsheet_rounded_to_six_digits(
    tmp_path: Path, digits: int, accepted: bool
) -> None:
    """A spreadsheet saving numbers as shown wrote 0.208955 for the proposal, and `tell`
    refused it, quoting the proposal as 0.208955 too (found in review). Six significant
    digits or more are the proposal rounded; fewer may be another value, and the refusal
    shows the proposal in full."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    _suggest(url, str(_campaign(tmp_path, 5)), "-n", "2")
    path, lines = _export_filled(url, tmp_path, ["0.4", "0.7"])
    header = lines[0].split(",")
    at = header.index("temperature")
    rows = [line.split(",") for line in lines[1:]]
    proposed = float(rows[0][at])
    rows[0][at] = f"{proposed:.{digits}g}"
    path.write_text("\n".join([lines[0], *(",".join(r) for r in rows)]) + "\n")
    out = _cli("tell", "--store", url, "--csv", str(path))
    if accepted:
        assert out.exit_code == 0, out.output
        assert [t["status"] for t in _trials(url)] == ["completed", "completed"]
    else:
        assert out.exit_code == 2, out.output
        assert f"(temperature={proposed!r})" in _flat(out)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        (
            "temperature",
            "99.5",
            "temperature=99.5 is not the value trial {id} was proposed at (temperature=",
        ),
        ("temperature", "warm", "temperature=warm is not the value trial {id} was proposed at"),
        ("error", "vial cracked", "'vial cracked' in the export's error column is not read"),
    ],
    ids=["parameter-changed", "parameter-text", "error-column"],
)
def test_tell_csv_from_an_export_refuses_what_it_would_not_read(
    tmp_path: Path, column: str, value: str, message: str
) -> None:
    """A parameter column that differs from the proposal is refused, not taken as the value
    used (that is `actual.<param>`), and a reason in the export's `error` column is not
    dropped unread; nothing is written."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    _suggest(url, str(_campaign(tmp_path, 5)), "-n", "2")
    path, lines = _export_filled(url, tmp_path, ["0.4", "0.7"])
    header = lines[0].split(",")
    second = next(csv.reader([lines[2]]))
    second[header.index(column)] = value
    path.write_text("\n".join([lines[0], lines[1], ",".join(second)]) + "\n")
    out = _cli("tell", "--store", url, "--csv", str(path))
    assert out.exit_code == 2, out.output
    said = _flat(out)
    assert f"{path.name}:3: " + message.format(id=second[0]) in said, said
    if column == "temperature":
        assert "name the column actual.temperature" in said
    else:
        assert "a column named fail" in said
    assert [t["status"] for t in _trials(url)] == ["running"] * 2


def test_tell_csv_separated_by_semicolons_says_so_as_prior_data_does(tmp_path: Path) -> None:
    """Was: `the first row must name the columns, starting with trial_id` for a sheet saved
    with `;` (found in review): the message prior data gives, from one check."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    (trial,) = _suggest(url, str(_campaign(tmp_path, 5)), "-n", "1")["trials"]
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"trial_id;yield\n{trial['trial_id']};0,5\n")
    out = _cli("tell", "--store", url, "--csv", str(sheet))
    assert out.exit_code == 2, out.output
    said = _flat(out)
    assert f"{sheet}:1: is separated by a semicolon, not by commas" in said, said
    assert "CSV (comma delimited)" in said


# ------------------------------------------------- ask/tell: a batch is written whole or not at all
def _dump(url: str, *, lease: bool = True) -> list[str]:
    """Every row of every table of a SQLite store (``lease=False``: but the lease's)."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
        return [r for r in conn.iterdump() if lease or not r.startswith('INSERT INTO "lease"')]


def _results_csv(tmp_path: Path, trials: list[dict[str, Any]]) -> Path:
    path = tmp_path / "results.csv"
    rows = [f"{t['trial_id']},0.{i + 1}," for i, t in enumerate(trials[1:])]
    path.write_text("\n".join(["trial_id,yield,fail", f"{trials[0]['trial_id']},,spilled", *rows]))
    return path


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_tell_csv_cut_short_while_writing_records_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop: type[BaseException]
) -> None:
    """Ctrl-C (or a failing store) half-way through writing a CSV's rows: none is kept, the
    campaign still says how many are pending, and the same CSV can be told again. Written a
    row per transaction, part was recorded and telling the CSV again failed on its first row
    (found in review)."""
    import loop.store

    url, trials = _asktell(tmp_path, 4)
    results = _results_csv(tmp_path, trials)
    before = _dump(url)
    real = loop.store._jsonable
    rows: list[object] = []

    def interrupted(value: Any) -> Any:  # a row's readbacks, as its UPDATE is written
        rows.append(value)
        if len(rows) == 3:  # two rows are in the database, uncommitted
            raise stop("interrupted")
        return real(value)

    monkeypatch.setattr(loop.store, "_jsonable", interrupted)
    out = _cli("tell", "--store", url, "--csv", str(results))
    assert out.exit_code != 0 and len(rows) == 3, _flat(out)
    assert _dump(url) == before
    monkeypatch.undo()
    out = _cli("tell", "--store", url, "--csv", str(results))
    assert out.exit_code == 0, _flat(out)
    assert [t["status"] for t in _trials(url)] == ["failed", "completed", "completed", "completed"]
    assert "ask/tell: 0 trial(s) pending" in _flat(out)


def test_suggest_cut_short_while_writing_stores_no_proposal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C after the proposals' rows went in, before the command committed them (and
    printed their ids): none is kept. Stored one by one, pending trials nobody was shown
    stayed behind (found in review)."""
    import loop.store

    url, _ = _asktell(tmp_path, 1)
    before = _dump(url)

    def interrupted(*args: Any, **kwargs: Any) -> None:  # the campaign's state, after them
        raise KeyboardInterrupt

    monkeypatch.setattr(loop.store, "_update_campaign", interrupted)
    out = _cli("suggest", "--store", url, "-n", "5", "--max-trials", "30", "--json")
    assert out.exit_code != 0 and _dump(url) == before, _flat(out)
    monkeypatch.undo()
    numbers = [t["number"] for t in _suggest(url, "-n", "5", "--max-trials", "30")["trials"]]
    assert numbers == [2, 3, 4, 5, 6]
    store = Store(url, create=False)
    try:
        row = store.campaign()
        assert row.budget is not None and row.budget["max_trials"] == 30
        assert row.stop_reason is not None and "6 trial(s) pending" in row.stop_reason
    finally:
        store.close()


# The CLI in a fresh interpreter that sends itself SIGNAL just after its COUNT-th statement
# starting with PREFIX ran (uncommitted): Ctrl-C, or a kill, at a known point of the write.
_SIGNAL_MID_WRITE = """\
import os, signal, sys
from sqlalchemy import event
from sqlalchemy.engine import Engine
from loop.cli import main

sig, prefix, count = getattr(signal, sys.argv[1]), sys.argv[2], int(sys.argv[3])
seen = []

@event.listens_for(Engine, "after_cursor_execute")
def interrupt(conn, cursor, statement, *args):
    if statement.startswith(prefix):
        seen.append(statement)
        if len(seen) == count:
            os.kill(os.getpid(), sig)

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
sys.argv = ["closedloop", *sys.argv[4:]]
main()
"""


@pytest.mark.parametrize(
    ("command", "sig"),
    [("tell", "SIGINT"), ("tell", "SIGKILL"), ("suggest", "SIGINT")],
)
def test_a_signal_in_the_middle_of_a_batch_leaves_the_store_as_it_was(
    tmp_path: Path, command: str, sig: str
) -> None:
    """Ctrl-C or kill -9 while `tell --csv` has written half of its rows, or `suggest -n 5`
    its proposals, to the database: after the command is gone the store is as it was (a kill
    leaves its lease, which the next command takes over) and the command can be run again."""
    url, trials = _asktell(tmp_path, 4)
    before = _dump(url)
    if command == "tell":
        args = ["UPDATE trial", "2", "tell", "--store", url, "--csv"]
        args.append(str(_results_csv(tmp_path, trials)))
    else:
        args = ["INSERT INTO trial", "1", "suggest", "--store", url, "-n", "5", "--json"]
    cut = subprocess.run(
        [sys.executable, "-c", _SIGNAL_MID_WRITE, sig, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cut.returncode == (130 if sig == "SIGINT" else -signal.SIGKILL), cut.stderr
    assert cut.stdout == ""  # no trial id printed
    if sig == "SIGINT":  # its lease released at once: no lock of the cut write held it
        assert _dump(url) == before and "could not release" not in cut.stderr, cut.stderr
        assert "interrupted (Ctrl-C): what this command writes is written whole" in cut.stderr
    else:
        assert _dump(url, lease=False) == before  # the dead command's lease stays, expiring
    again = _cli(*args[2:])
    assert again.exit_code == 0, _flat(again)
    statuses = [t["status"] for t in _trials(url)]
    if command == "tell":
        assert statuses == ["failed", "completed", "completed", "completed"]
    else:
        assert statuses == ["running"] * 9


def test_the_report_trace_ends_at_the_last_trial_with_an_outcome(tmp_path: Path) -> None:
    """Trials awaiting `tell` were drawn as measured, the best so far running flat through
    them (found in review): the trace ends at the last trial told."""
    from loop.report import report_figure

    path = _campaign(tmp_path, max_trials=6)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert _cli("suggest", str(path), "--store", url, "-n", "4").exit_code == 0
    told = _cli("tell", "--store", url, "1", "yield=50")
    assert told.exit_code == 0, told.output
    assert _cli("tell", "--store", url, "2", "yield=60").exit_code == 0
    store = Store(url, create=False)
    try:
        fig = report_figure(store, store.campaign())
    finally:
        store.close()
    best = next(ax for ax in fig.axes if ax.get_ylabel().startswith("best"))
    line = best.get_lines()[0]
    xs, ys = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    assert xs.tolist() == [1, 2] and ys.tolist() == [50.0, 60.0]


def test_telling_a_trial_a_runner_measured_does_not_offer_amend(tmp_path: Path) -> None:
    """`--amend` corrects a told result and refuses a measured one: naming it for a trial a
    runner measured sent the user to that refusal (found in review)."""
    from loop import parse_campaign

    text = (
        "name: measured\nparameters:\n  - {name: x1, type: float, bounds: [-5, 10]}\n"
        "  - {name: x2, type: float, bounds: [0, 15]}\nobjectives: [{name: y, goal: minimize}]\n"
        "instrument: {simulator: branin}\nplanner: {kind: sobol}\nbudget: {max_trials: 1}\n"
    )
    url = f"sqlite:///{tmp_path / 'r.db'}"
    store = Store(url)
    try:
        Runner(parse_campaign(text, path=tmp_path / "m.yaml", base_dir=tmp_path), store).run()
    finally:
        store.close()
    told = _cli("tell", "--store", url, "1", "y=3")
    said = " ".join(told.output.split())
    assert told.exit_code == 2 and "a runner measured it" in said and "--amend" not in said


def test_status_model_counts_the_searched_parameters_only(tmp_path: Path) -> None:
    """A fixed parameter is no dimension of the model: counted, it inflated the "only n
    trials for d parameters" caution (found in review)."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    ids = [
        t["trial_id"]
        for t in _suggest(url, str(_campaign(tmp_path, text=FIXED)), "-n", "2")["trials"]
    ]
    for i, trial in enumerate(ids):
        assert _cli("tell", "--store", url, str(trial), f"y={0.2 + i}").exit_code == 0
    shown = " ".join(_cli("status", "--store", url, "--model").output.split())
    assert "only 2 measured trials for 1 parameter:" in shown


def test_repeating_a_point_outside_the_space_names_repeat(tmp_path: Path) -> None:
    """A prior row measured outside today's bounds cannot be replicated; the refusal named
    an `--at` the command was not given (found in review)."""
    (tmp_path / "prior.csv").write_text("temperature,stages,catalyst,yield\n150,2,A,0.7\n")
    file = _campaign(tmp_path, text=(CAMPAIGN % 5) + "prior_data: prior.csv\n")
    url = f"sqlite:///{tmp_path / 'a.db'}"
    _suggest(url, str(file))
    refused = _cli("suggest", "--store", url, "-c", "1", "--repeat", "1")
    said = _flat(refused)
    assert refused.exit_code == 2 and said.startswith("error: --repeat 1: the point lies outside")
    shown = _flat(_cli("status", "--store", url))
    assert "best: trial #1 (prior data) (outside today's bounds or constraints) yield" in shown
