"""What the command line says when it refuses, and with which exit code (session 15 review).

An instrument file given where a campaign goes, a number written with underscores, a finished
campaign asked for more, a global option given after the command, a store path without its
scheme, ``export -o -``, the Ctrl-C line with several trials in flight, ``status`` of an
ask/tell campaign with slots. The campaign-file messages themselves (their fix lines) are
files in ``bad_campaigns/``; here they are seen through the CLI.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from loop import CampaignConfigError, load_campaign, parse_campaign
from loop.cli import _after_in_flight, app
from loop.config import parameter_value, read_number
from loop.runner import Runner
from loop.store import Store
from planners import FloatParameter, IntParameter
from tests.cli_process import closedloop, run_cli

ROOT = Path(__file__).parents[2]
BAD = Path(__file__).parent / "bad_campaigns"

BRANIN = """\
name: b
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin, count: %d}
planner: {kind: sobol}
budget: {max_trials: %d%s}
seed: 1
"""


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _finished(tmp_path: Path, *, target: bool = False) -> str:
    """A store with one completed campaign: 2 trials, or a target met at once."""
    text = BRANIN % (1, 2, ", target: 1000" if target else "")
    path = tmp_path / "b.yaml"
    path.write_text(text)
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    try:
        Runner(parse_campaign(text, path=path, base_dir=tmp_path), store).run()
    finally:
        store.close()
    return url


# ---------------------------------------------------------------------------- instrument file
INSTRUMENT_FILE = BAD / "instrument_file_as_campaign.yaml"


@pytest.mark.parametrize(
    "args",
    [["validate"], ["run"], ["plan", "--dry-run"], ["suggest"]],
    ids=["validate", "run", "plan", "suggest"],
)
def test_an_instrument_file_given_for_a_campaign_says_what_it_is(
    args: list[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = ["--store", url] if args[0] in ("run", "suggest") else []
    out = _cli(args[0], str(INSTRUMENT_FILE), *args[1:], *store)
    err = out.exception
    assert isinstance(err, CampaignConfigError), out.output
    assert err.line == 5  # inputs:
    assert "is an instrument file, not a campaign file" in err.problem
    assert f"`closedloop instruments check {INSTRUMENT_FILE}`" in err.fix
    assert "`instrument: {file: PATH}`" in err.fix
    assert "unknown key" not in str(err)
    if args[0] == "run":
        assert not (tmp_path / "s.db").exists()


def test_validate_of_an_instrument_file_exits_2_with_file_line_and_fix(tmp_path: Path) -> None:
    proc = closedloop("validate", str(INSTRUMENT_FILE), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    text = proc.stderr.replace("\n", " ")
    assert f"{INSTRUMENT_FILE}:5: is an instrument file" in text
    assert "fix: check its devices with `closedloop instruments check" in text
    assert "Traceback" not in proc.stderr


def test_a_campaign_file_is_not_taken_for_an_instrument_file() -> None:
    # an inline `devices:` campaign has inputs and outputs too, under instrument:
    for path in sorted((ROOT / "campaigns").rglob("*.yaml")):
        if path.parent.name == "instruments":
            continue
        load_campaign(path)


# ---------------------------------------------------------------------------- fix lines
@pytest.mark.parametrize(
    ("name", "line", "fix"),
    [
        ("planner_kind_typo", 8, "fix: did you mean 'botorch'? planner.kind is one of: botorch"),
        ("executor_workers_inprocess", 9, "fix: drop `workers`, or write `kind: local`"),
        ("parameter_name_space", 4, "fix: write e.g. name: flow_rate"),
    ],
)
def test_validate_prints_the_fix_line(name: str, line: int, fix: str, tmp_path: Path) -> None:
    path = BAD / f"{name}.yaml"
    proc = closedloop("validate", str(path), cwd=tmp_path, wide=True)
    assert proc.returncode == 2, proc.stderr
    assert f"{path}:{line}:" in proc.stderr
    assert fix in proc.stderr
    assert "closedloop validate --help" not in proc.stderr
    assert "simulator: branin} or {function" not in proc.stderr
    assert "^[" not in proc.stderr  # a rule in words, not a regular expression


# ---------------------------------------------------------------------------- manual outputs
MANUAL = """\
name: m
parameters:
  - {name: x, type: float, bounds: [0, 1]}
objectives: [{name: q, goal: maximize}]
outcome_constraints: ["purity >= 0.9"]
instrument: %s
budget: {max_trials: 3}
"""


def test_manual_true_without_outputs_enters_what_instrument_manual_does(tmp_path: Path) -> None:
    outputs = []
    for i, instrument in enumerate(["manual", "{manual: true}", "{manual: true, outputs: null}"]):
        path = tmp_path / f"m{i}.yaml"
        path.write_text(MANUAL % instrument)
        loaded = load_campaign(path)
        assert loaded.campaign.instrument.manual
        outputs.append(loaded.campaign.instrument.outputs)
    assert outputs == [["q", "purity"]] * 3
    shown = _cli("validate", str(tmp_path / "m1.yaml"))
    assert shown.exit_code == 0, shown.output
    assert "instrument manual (the operator enters q, purity)" in shown.output


def test_manual_outputs_given_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(MANUAL % "{manual: true, outputs: [q, purity, colour]}")
    assert load_campaign(path).campaign.instrument.outputs == ["q", "purity", "colour"]


# ---------------------------------------------------------------------------- numbers
@pytest.mark.parametrize(
    ("text", "value"),
    [("0.6", 0.6), (" -3 ", -3.0), ("1.5e-3", 0.0015), (".5", 0.5), ("5.", 5.0), ("+2E2", 200.0)],
)
def test_plain_numbers_are_read(text: str, value: float) -> None:
    assert read_number(text) == value


@pytest.mark.parametrize("text", ["inf", "-Infinity", "nan"])
def test_non_finite_words_are_read_for_the_caller_to_refuse(text: str) -> None:
    assert read_number(text) != 1.0  # read, not refused here: each caller has its own words


@pytest.mark.parametrize("text", ["0_6", "1_000", "5_0.5", "1e1_0"])
def test_underscores_are_refused_saying_so(text: str) -> None:
    with pytest.raises(ValueError, match="without underscores"):
        read_number(text)


@pytest.mark.parametrize("text", ["", "abc", "1,5", "0x10", "١٢", "１", "1e", "--1", "in f"])
def test_what_float_or_a_lab_would_not_write_is_no_number(text: str) -> None:
    with pytest.raises(ValueError, match="^is not a number$"):
        read_number(text)


def test_parameter_values_refuse_underscores() -> None:
    x = FloatParameter(name="temperature", bounds=(0.0, 100.0))
    n = IntParameter(name="n", bounds=(0, 2000))
    assert parameter_value(x, "50") == 50.0 and parameter_value(n, "1000") == 1000
    for param, text in ((x, "5_0"), (n, "1_000")):
        with pytest.raises(ValueError, match="without underscores"):
            parameter_value(param, text)


def test_tell_refuses_underscores_and_stores_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    path = tmp_path / "b.yaml"
    path.write_text(BRANIN % (1, 5, ""))
    assert _cli("suggest", str(path), "--store", url).exit_code == 0
    told = _cli("tell", "--store", url, "1", "y=0_6")
    assert told.exit_code == 2, told.output
    assert "y='0_6' is not a number: write it without underscores" in told.output
    actual = _cli("tell", "--store", url, "1", "y=0.6", "--actual", "x1=5_0")
    assert actual.exit_code == 2, actual.output
    assert "--actual x1='5_0' is not a number: write it without underscores" in actual.output
    store = Store(url, create=False)
    try:
        assert [t.status for t in store.trials(1)] == ["running"]
    finally:
        store.close()
    assert _cli("tell", "--store", url, "1", "y=0.6", "--actual", "x1=5").exit_code == 0


def test_a_prior_data_cell_with_underscores_is_refused_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "prior.csv").write_text("x1,x2,y\n1,2,3\n1,2,1_000\n")
    path = tmp_path / "b.yaml"
    path.write_text((BRANIN % (1, 5, "")) + "prior_data: prior.csv\n")
    out = _cli("validate", str(path))
    err = out.exception
    assert isinstance(err, CampaignConfigError), out.output
    assert err.line == 3 and "column 'y': '1_000' is not a number" in str(err)
    assert "without underscores" in str(err)


def test_the_operator_prompt_refuses_underscores_and_asks_again(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text((MANUAL % "manual").replace("max_trials: 3", "max_trials: 1"))
    url = f"sqlite:///{tmp_path / 'm.db'}"
    proc = run_cli(["run", str(path), "--store", url], cwd=tmp_path, input="0_6\n0.6\n0.95\n\n")
    assert proc.returncode == 0, proc.stderr
    assert "is not a number: write it without underscores" in proc.stdout + proc.stderr
    store = Store(url, create=False)
    try:
        (trial,) = store.trials(1)
        outputs = store.observations(1)[trial.id or 0]
    finally:
        store.close()
    assert trial.status == "completed" and outputs == {"q": 0.6, "purity": 0.95}


# ---------------------------------------------------------------------------- exit codes
def test_a_finished_campaign_asked_for_more_exits_2_everywhere(tmp_path: Path) -> None:
    url = _finished(tmp_path)
    named = closedloop("resume", "--store", url, "-c", "1", cwd=tmp_path)
    assert named.returncode == 2, named.stderr
    assert "is completed: max_trials reached" in named.stderr and "--max-trials 12" in named.stderr
    latest = closedloop("resume", "--store", url, cwd=tmp_path)
    assert latest.returncode == 2, latest.stderr
    assert "no unfinished campaign" in latest.stderr


def test_a_preview_without_c_takes_the_latest_campaign_even_when_finished(tmp_path: Path) -> None:
    """`plan --dry-run --store` (and `instruments check --store`) without -c refused a store
    whose campaigns had all finished ("no unfinished campaign"), though the README says the
    latest is taken (found in review); the preview says that resume would stop at once."""
    url = _finished(tmp_path)
    plan = closedloop("plan", "--dry-run", "--store", url, cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    said = " ".join(plan.stdout.split())
    assert "`closedloop resume` would stop at once" in said
    # the command that extends it names the store: without, it extended the default store's
    # campaign of that id (session 37)
    assert f"(`closedloop resume --store {url} -c 1 --max-trials" in said


def test_resume_names_what_an_edited_file_changes(tmp_path: Path) -> None:
    """`resume` reads the store's copy: bounds, goal and budget edited in the file were
    ignored without a word (found in review). It warns, naming each change, and goes on."""
    url = _finished(tmp_path)
    path = tmp_path / "b.yaml"
    path.write_text(
        path.read_text()
        .replace("bounds: [0, 15]", "bounds: [0, 5]")
        .replace("goal: minimize", "goal: maximize")
    )
    resumed = closedloop("resume", "--store", url, "-c", "1", "--max-trials", "3", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    said = " ".join(resumed.stderr.split())
    assert (
        f"warning: {path} has changed since campaign 'b' was stored (parameters[1].bounds[1]: "
        '15 -> 5; objectives[0].goal: "minimize" -> "maximize"); resume goes on with the '
        "stored copy. To measure with the edited file, start a new campaign from it"
    ) in said


def test_resume_from_a_moved_folder_names_what_its_file_changes(tmp_path: Path) -> None:
    """The project folder moved, and the file edited there: resume read only the path it
    was stored from, and said nothing (found in review)."""
    url = _finished(tmp_path)
    moved = tmp_path / "moved"
    moved.mkdir()
    text = (tmp_path / "b.yaml").read_text()
    (tmp_path / "b.yaml").unlink()
    (moved / "b.yaml").write_text(text.replace("bounds: [0, 15]", "bounds: [0, 5]"))
    resumed = closedloop("resume", "--store", url, "-c", "1", "--max-trials", "3", cwd=moved)
    assert resumed.returncode == 0, resumed.stderr
    said = " ".join(resumed.stderr.split())
    assert f"warning: {moved / 'b.yaml'} has changed since campaign 'b' was stored" in said
    assert "parameters[1].bounds[1]: 15 -> 5" in said
    # another campaign's file of that file name is not the campaign's (found in review)
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.yaml").write_text(text.replace("name: b", "name: other", 1))
    resumed = closedloop("resume", "--store", url, "-c", "1", "--max-trials", "4", cwd=other)
    assert resumed.returncode == 0, resumed.stderr
    assert "has changed since" not in resumed.stderr


def test_same_content_is_comments_layout_and_line_endings() -> None:
    from loop.config import same_content

    text = "name: a\nbudget: {max_trials: 6}\n"
    assert same_content(text, "# batch 2\n" + text.replace("\n", "\r\n"))
    assert not same_content(text, text.replace("6", "7"))
    assert not same_content(text, "name: [")
    assert same_content(text, "budget: {max_trials: 6}\nname: a\n")  # key order is layout
    choice = "values: [0, 1]\n"
    assert not same_content(choice, "values: [false, true]\n")  # equal in Python only
    assert not same_content(choice, "values: [0, 1.0]\n")


def test_changed_keys_says_each_value_and_ignores_layout() -> None:
    from loop.config import changed_keys

    old = "name: a  # c\nbudget: {max_trials: 6}\nparameters:\n  - {name: x, bounds: [0, 1]}\n"
    assert (
        changed_keys(
            old, "name: a\nbudget:\n  max_trials: 6\nparameters: [{name: x, bounds: [0, 1]}]\n"
        )
        == []
    )
    assert changed_keys(old, old.replace("max_trials: 6", "max_trials: 8") + "seed: 3\n") == [
        "budget.max_trials: 6 -> 8",
        "seed: (absent) -> 3",
    ]
    # an edit that does not parse is said, or resume went on without a word (found in review)
    (slip,) = changed_keys(old, "name: a\nparameters:\n  - {name: x, bounds: [0, 1}\n")
    assert slip.startswith("it does not read as YAML any more (line 3: ")
    # a parameter added or removed is named (both sides were cut where they were the same)
    added = old + "  - {name: x3, type: int, bounds: [0, 3]}\n"
    assert changed_keys(old, added.replace("[0, 1]", "[0, 2]")) == [
        "parameters[x].bounds[1]: 1 -> 2",
        "parameters[x3]: added",
    ]
    assert changed_keys(added, old) == ["parameters[x3]: removed"]


def test_a_campaign_that_met_its_target_exits_2_for_resume_and_suggest(tmp_path: Path) -> None:
    url = _finished(tmp_path, target=True)
    for command in ("resume", "suggest"):
        proc = closedloop(command, "--store", url, "-c", "1", "--max-trials", "10", cwd=tmp_path)
        assert proc.returncode == 2, (command, proc.stderr)
        assert "target reached" in proc.stderr and "whatever the" in proc.stderr
        assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------- CLI hints
@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["run", "campaigns/branin.yaml", "-v"], "`closedloop -v run ...`"),
        (["status", "--debug"], "`closedloop --debug status ...`"),
        (
            ["instruments", "check", "x.yaml", "--verbose"],
            "`closedloop --verbose instruments check",
        ),
    ],
)
def test_a_global_option_after_the_command_says_where_it_goes(args: list[str], shown: str) -> None:
    proc = closedloop(*args, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert f"No such option: {args[-1]}" in proc.stderr
    assert "is an option of closedloop itself, not of a command: give it before the command" in (
        proc.stderr.replace("\n", " ")
    )
    assert shown in proc.stderr


def test_other_unknown_options_get_no_such_hint() -> None:
    proc = closedloop("resume", "--bogus", cwd=ROOT)
    assert proc.returncode == 2 and "option of closedloop itself" not in proc.stderr


@pytest.mark.parametrize(
    ("given", "url"), [("runs/x.db", "sqlite:///runs/x.db"), ("/data/x.db", "sqlite:////data/x.db")]
)
def test_a_store_path_without_scheme_is_shown_as_its_url(given: str, url: str) -> None:
    out = _cli("status", "--store", given)
    assert out.exit_code == 2, out.output
    flat = re.sub(r"[\s│]+", " ", out.output)  # typer may draw a box around it
    assert f"'{given}' is not a database URL; for a SQLite file write {url}" in flat
    assert "closedloop.db" not in flat


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (
            "sqlite:/x.db",
            "write sqlite:///x.db for the file x.db here, or sqlite:////x.db for /x.db",
        ),
        ("sqlite:x.db", "write sqlite:///x.db for the file x.db here"),
    ],
)
def test_a_sqlite_url_with_too_few_slashes_gets_its_own_file_back(given: str, said: str) -> None:
    """`sqlite:/x.db` was told to write `sqlite:///sqlite:/x.db` (found in review)."""
    out = _cli("status", "--store", given)
    assert out.exit_code == 2, out.output
    flat = re.sub(r"[\s│]+", " ", out.output)
    assert f"'{given}' is not a database URL (a SQLite URL has three slashes); {said}" in flat


def test_a_store_path_without_scheme_from_the_environment_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CLOSEDLOOP_STORE", "lab.db")
    out = _cli("export")
    assert out.exit_code == 2, out.output
    assert "sqlite:///lab.db" in out.output


def test_export_to_dash_writes_stdout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = _finished(tmp_path)
    monkeypatch.chdir(tmp_path)
    out = _cli("export", "--store", url, "-o", "-")
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert [r["number"] for r in rows] == ["1", "2"]
    assert not (tmp_path / "-").exists()
    as_json = _cli("export", "--store", url, "-o", "-", "--format", "json")
    assert as_json.exit_code == 0 and as_json.stdout.lstrip().startswith("[")


@pytest.mark.parametrize(
    ("in_flight", "said"),
    [
        (None, "before the next trial starts"),
        (0, "before the next trial starts"),
        (1, "after the trial in flight is aborted and stored"),
        (3, "after the 3 trials in flight are aborted and stored"),
    ],
)
def test_the_stop_line_counts_the_trials_in_flight(in_flight: int | None, said: str) -> None:
    scheduler = None if in_flight is None else SimpleNamespace(in_flight=lambda: in_flight)
    runner: Any = SimpleNamespace(_scheduler=scheduler)
    assert _after_in_flight(runner) == said


def test_status_of_an_ask_tell_campaign_shows_no_idle_slots(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    path = tmp_path / "b.yaml"
    path.write_text(BRANIN % (4, 4, ""))
    assert _cli("suggest", str(path), "--store", url, "-n", "2").exit_code == 0
    assert _cli("tell", "--store", url, "1", "y=3").exit_code == 0
    assert _cli("tell", "--store", url, "2", "--fail", "vial broke").exit_code == 0
    told = _cli("status", "--store", url)
    assert told.exit_code == 0, told.output
    assert "instrument slots" not in told.output and "idle" not in told.output
    # a runner then measures on the slots: the table, with the told trials counted apart
    resumed = _cli("resume", "--store", url, "-c", "1", "-q")
    assert resumed.exit_code == 0, resumed.output
    mixed = _cli("status", "--store", url)
    assert "instrument slots (4)" in mixed.output
    assert "2 trial(s) told with `closedloop tell` ran on no slot" in mixed.output


def test_a_campaign_whose_folder_moved_resumes_from_the_current_folder(tmp_path: Path) -> None:
    """A project folder moved (`mv proj proj2`) could not be resumed: its function file was
    looked for where it no longer is (found in review). With the old folder gone, the
    current folder is where the files it names are looked for, said in a warning."""
    old = tmp_path / "proj"
    old.mkdir()
    (old / "f.py").write_text("def f(p):\n    return {'y': p['x']}\n")
    (old / "c.yaml").write_text(
        "name: mv\nparameters: [{name: x, type: float, bounds: [0, 1]}]\n"
        "objectives: [{name: y, goal: maximize}]\n"
        "instrument: {function: 'f.py:f', outputs: [y]}\n"
        "planner: {kind: sobol}\nbudget: {max_trials: 2}\nseed: 1\n"
    )
    first = closedloop("run", "c.yaml", "--store", "sqlite:///s.db", "-q", cwd=old)
    assert first.returncode == 0, first.stderr
    new = old.rename(tmp_path / "proj2")
    resumed = closedloop(
        "resume", "--store", "sqlite:///s.db", "-c", "1", "--max-trials", "3", "-q", cwd=new
    )
    assert resumed.returncode == 0, resumed.stderr
    said = " ".join(resumed.stderr.split())
    assert f"campaign 'mv' was started in {old}, which no longer exists" in said
    assert f"looked for in the current folder, {new}" in said
    assert "completed: max_trials reached (3 completed trials)" in resumed.stdout
