"""Campaign files: every malformed file in bad_campaigns/ gets one clear, located message.

Each file's first line says what is expected: ``# expect line=N: text | other text``
(``line=`` optional). Adding a case is adding a file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from loop import CampaignConfigError, load_campaign
from loop.config import parse_duration
from tests.cli_process import run_cli

HERE = Path(__file__).parent
BAD = sorted((HERE / "bad_campaigns").glob("*.yaml"))
CAMPAIGNS = sorted((HERE.parents[1] / "campaigns").glob("*.yaml"))
_EXPECT = re.compile(rb"^# expect(?: line=(\d+))?: (.*)$")


def _expectation(path: Path) -> tuple[int | None, list[str]]:
    first = path.read_bytes().splitlines()[0]
    match = _EXPECT.match(first)
    if match is None:
        raise ValueError(f"{path} lacks an '# expect' header")
    line = int(match.group(1)) if match.group(1) else None
    return line, [s.strip() for s in match.group(2).decode().split("|")]


def test_corpus_is_large_enough() -> None:
    assert len(BAD) >= 40


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_malformed_file_gets_located_message(path: Path) -> None:
    line, fragments = _expectation(path)
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path)
    err = info.value
    message = str(err)
    assert message.startswith(str(path)), message
    if line is not None:
        assert err.line == line, message
        assert f"{path}:{line}:" in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "Traceback" not in message


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CampaignConfigError, match="is a directory"):
        load_campaign(tmp_path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CampaignConfigError, match="no such file"):
        load_campaign(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", CAMPAIGNS, ids=[p.stem for p in CAMPAIGNS])
def test_example_campaigns_are_valid(path: Path) -> None:
    loaded = load_campaign(path)
    assert loaded.campaign.name
    assert loaded.text == path.read_text()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (90, 90.0),
        ("90s", 90.0),
        ("30m", 1800.0),
        ("2h", 7200.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("1.5h", 5400.0),
        ("3600", 3600.0),  # `resume --max-duration 3600`: seconds, as the help says
        (" 90 ", 90.0),
        ("1.5", 1.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "", "-1", "0s", True, "2 weeks", "0", "1e400", "nan"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_cli_validate_prints_one_message_without_traceback() -> None:
    bad = HERE / "bad_campaigns" / "misspelt_instrument_key.yaml"
    proc = run_cli(["validate", str(bad)], timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert f"{bad}:7" in proc.stderr.replace("\n", "")
    assert "did you mean 'noise'" in proc.stderr


def test_quoted_seconds_in_a_campaign_file(tmp_path: Path) -> None:
    """``max_duration: "90"`` is 90 seconds, like ``max_duration: 90``."""
    text = (HERE.parents[1] / "campaigns" / "branin.yaml").read_text()
    text = re.sub(r"max_duration: .*", 'max_duration: "90"', text)
    assert 'max_duration: "90"' in text
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert load_campaign(path).campaign.budget.max_duration == 90.0


def test_the_reserved_names_cover_the_export_s_own_columns() -> None:
    # The export's bookkeeping columns and `RESERVED_COLUMNS` are written in two places:
    # this keeps them from drifting apart.
    from loop.config import RESERVED_COLUMNS, RESERVED_PREFIXES
    from loop.report import to_csv

    record = {
        "trial_id": 1,
        "number": 1,
        "kind": "sobol",
        "status": "completed",
        "slot": 0,
        "parameters": {"x": 0.5},
        "readbacks": {"x": 0.5},
        "outputs": {"y": 1.0},
        "feasible": True,
        "pareto": True,
        "best": True,
        "run_uid": "u",
        "error": None,
        "started_at": None,
        "finished_at": None,
    }
    header = to_csv([record]).splitlines()[0].split(",")
    own = [h for h in header if h not in ("x", "y")]
    assert all(h in RESERVED_COLUMNS or h.startswith(RESERVED_PREFIXES) for h in own), own


@pytest.mark.parametrize("where", ["output", "parameter"])
def test_a_stored_campaign_naming_best_keeps_its_column(tmp_path: Path, where: str) -> None:
    """``best`` became the export's flag column after campaigns could name a parameter or
    output so: a new file is refused; a stored campaign still loads (and resumes), and its
    export has one ``best`` column, its own, and every row as many cells as the header
    (a parameter named `best` gave each row one cell more: found in review)."""
    from typer.testing import CliRunner

    from loop import Runner, Store, parse_campaign
    from loop.cli import app
    from loop.config import StoredCopy

    name = "best" if where == "parameter" else "x"
    (tmp_path / "fn.py").write_text(
        f"def f(inputs):\n    return {{'y': inputs['{name}'], 'best': 2 * inputs['{name}']}}\n"
    )
    outputs = "[y]" if where == "parameter" else "[y, best]"
    text = (
        f"name: b\nparameters: [{{name: {name}, type: float, bounds: [0, 1]}}]\n"
        "objectives: [{name: y, goal: maximize}]\n"
        f"instrument: {{function: 'fn.py:f', outputs: {outputs}}}\n"
        "planner: {kind: sobol}\nbudget: {max_trials: 3}\n"
    )
    (tmp_path / "b.yaml").write_text(text)
    with pytest.raises(CampaignConfigError, match=f"{where} name 'best' is reserved"):
        load_campaign(tmp_path / "b.yaml")
    url = f"sqlite:///{tmp_path / 'b.db'}"
    stored = StoredCopy(url, 1, "b")
    loaded = parse_campaign(text, path=tmp_path / "b.yaml", base_dir=tmp_path, stored=stored)
    Runner(loaded, Store(url)).run()
    out = CliRunner().invoke(app, ["export", "--store", url, "-f", "csv"])
    assert out.exit_code == 0, out.output
    header = out.output.splitlines()[0].split(",")
    assert header.count("best") == 1
    rows = [line.split(",") for line in out.output.splitlines()[1:]]
    assert len(rows) == 3 and all(len(r) == len(header) for r in rows), (header, rows)
    column = header.index("best")
    if where == "output":
        assert [float(r[column]) for r in rows] == [2 * float(r[header.index("x")]) for r in rows]
    else:
        assert [float(r[column]) for r in rows] == [float(r[header.index("y")]) for r in rows]


NO_GOAL = """\
name: nogoal
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives:
  - {name: y}
instrument: {simulator: branin}
planner: {kind: sobol}
budget: {max_trials: 2}
seed: 1
"""


def test_an_objective_without_goal_is_refused_at_its_line(tmp_path: Path) -> None:
    """A forgotten goal used to maximise silently: branin, an impurity or a cost were then
    optimised the wrong way for a whole campaign (found in review)."""
    path = tmp_path / "c.yaml"
    path.write_text(NO_GOAL)
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path)
    assert info.value.line == 6, str(info.value)
    assert "objective 'y' has no goal" in str(info.value)
    assert "add `goal: maximize` or `goal: minimize`" in str(info.value)
    path.write_text(NO_GOAL.replace("{name: y}", "{name: y, goal: minimize}"))
    assert load_campaign(path).campaign.objectives[0].goal == "minimize"


def test_a_stored_campaign_without_goal_still_loads_and_resumes(tmp_path: Path) -> None:
    """Older closedloop versions stored goal-less campaigns (taken as maximize): they are
    still shown, exported and resumed as accepted then."""
    from loop import Runner, Store, parse_campaign
    from loop.report import stored_campaign

    path = tmp_path / "c.yaml"
    loaded = parse_campaign(NO_GOAL, path=path, base_dir=tmp_path)  # as stored text is read
    assert loaded.campaign.objectives[0].goal == "maximize"
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        Runner(loaded, store, max_trials=1).run()
        row = store.campaign(None)
        assert stored_campaign(row).objectives[0].goal == "maximize"
        runner = Runner.from_store(store, row.id, max_trials=2)
        assert runner.resume().completed == 2
    finally:
        store.close()


def test_a_dataset_campaign_may_still_omit_objectives(tmp_path: Path) -> None:
    """Its goals come from the dataset's spec; only written objectives need a goal."""
    text = "name: d\ninstrument: {dataset: hplc}\nbudget: {max_trials: 2}\n"
    path = tmp_path / "d.yaml"
    path.write_text(text)
    objectives = load_campaign(path).campaign.objectives
    assert [(o.name, o.goal) for o in objectives] == [("peak_area", "maximize")]
    path.write_text(text + "objectives: [{name: peak_area}]\n")
    with pytest.raises(CampaignConfigError, match="objective 'peak_area' has no goal"):
        load_campaign(path)


def test_manual_misspelt_suggests_manual(tmp_path: Path) -> None:
    base = NO_GOAL.replace("{name: y}", "{name: y, goal: minimize}")
    for spelling in ("Manual", "MANUAL", "manaul"):
        path = tmp_path / "c.yaml"
        path.write_text(base.replace("{simulator: branin}", spelling))
        with pytest.raises(CampaignConfigError) as info:
            load_campaign(path)
        assert info.value.line == 7
        assert "did you mean `instrument: manual`" in str(info.value), spelling
    path.write_text(base.replace("{simulator: branin}", "brannin"))
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path)
    assert "unknown simulator 'brannin'" in str(info.value)
    assert "instrument: manual" not in str(info.value)


def test_units_are_labels_a_lab_writes(tmp_path: Path) -> None:
    """eq, wt%, sccm, mTorr: units chemists write daily that pint does not parse were
    refused (found in review); a unit is shown, and only converted where device_units asks."""
    (tmp_path / "c.yaml").write_text(
        "name: c\n"
        "parameters:\n"
        "  - {name: base, type: float, bounds: [1, 3], unit: eq}\n"
        "  - {name: load, type: float, bounds: [0.5, 5], unit: wt%}\n"
        "  - {name: flow, type: int, bounds: [10, 50], unit: sccm}\n"
        "  - {name: p, type: float, bounds: [1, 100], log: true, unit: mTorr}\n"
        "objectives: [{name: y, goal: maximize}]\n"
        "instrument: {function: 'model.py:f', outputs: [y]}\n"
        "budget: {max_trials: 5}\n"
    )
    (tmp_path / "model.py").write_text("def f(x):\n    return {'y': x['base']}\n")
    c = load_campaign(tmp_path / "c.yaml").campaign
    assert [p.unit for p in c.parameters] == ["eq", "wt%", "sccm", "mTorr"]


def test_a_changed_function_file_is_named_when_a_stored_campaign_is_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """resume/suggest/plan re-import the function as it is now: an edited model measured a
    campaign's later trials with other code, and nothing said so (found in review)."""
    from loop.config import parse_campaign

    (tmp_path / "c.yaml").write_text(
        "name: c\n"
        "parameters: [{name: x, type: float, bounds: [0, 1]}]\n"
        "objectives: [{name: y, goal: maximize}]\n"
        "instrument: {function: 'model.py:f', outputs: [y]}\n"
        "budget: {max_trials: 5}\n"
    )
    model = tmp_path / "model.py"
    model.write_text("def f(x):\n    return {'y': x['x']}\n")
    loaded = load_campaign(tmp_path / "c.yaml")
    stored = loaded.instrument_text
    assert stored is not None and "model.py" in stored

    def again() -> str | None:
        caplog.clear()
        return parse_campaign(
            loaded.text, path=loaded.path, base_dir=tmp_path, instrument_text=stored
        ).instrument_text

    assert again() == stored and "has changed" not in caplog.text  # unchanged: silent
    model.write_text("def f(x):\n    return {'y': 0.0}\n")
    assert again() == stored  # the record of what the campaign started with is kept
    assert f"function file {model} has changed since the campaign started" in caplog.text


# ---------------------------------------------------------------------------- values as text
def _param(text: str) -> Any:
    from pydantic import TypeAdapter

    from planners import Parameter

    return TypeAdapter(Parameter).validate_python(json.loads(text))


@pytest.mark.parametrize(
    ("param", "text", "value"),
    [
        ('{"name": "n", "type": "choice", "values": [1, 2, 4]}', "2.0", 2),  # found in review
        ('{"name": "n", "type": "choice", "values": [1, 2, 4]}', " 4 ", 4),
        ('{"name": "n", "type": "choice", "values": [2, "2.0"]}', "2.0", "2.0"),  # text first
        ('{"name": "n", "type": "choice", "values": [2, "2.0"]}', "2", 2),
        ('{"name": "s", "type": "choice", "values": [true, false]}', "TRUE", True),
        ('{"name": "s", "type": "choice", "values": ["Pd B", "Pt"]}', "Pd B", "Pd B"),
        ('{"name": "p", "type": "fixed", "value": 2.0}', "2", 2.0),
        ('{"name": "k", "type": "int", "bounds": [1, 4]}', "3.0", 3),
        ('{"name": "k", "type": "int", "bounds": [1, 4]}', "9", 9),  # bounds: the caller's
        ('{"name": "x", "type": "float", "bounds": [0, 1]}', "1e-3", 0.001),
    ],
)
def test_a_parameter_value_written_as_text_is_read_one_way(
    param: str, text: str, value: Any
) -> None:
    """Prior data, `tell --actual`/`--csv`, the prompt and `plan --at` read values with one
    function: `tell --actual n=2.0` refused the choice 2 a prior CSV took (found in review)."""
    from loop.config import parameter_value

    got = parameter_value(_param(param), text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    ("param", "text", "problem"),
    [
        ('{"name": "n", "type": "choice", "values": [1, 2, 4]}', "3", "is not one of 1, 2, 4"),
        ('{"name": "p", "type": "fixed", "value": 2.0}', "3", "is not one of 2.0"),
        ('{"name": "k", "type": "int", "bounds": [1, 4]}', "1.5", "is not an integer"),
        ('{"name": "x", "type": "float", "bounds": [0, 1]}', "abc", "is not a number"),
        ('{"name": "x", "type": "float", "bounds": [0, 1]}', "", "is not a number"),
        ('{"name": "x", "type": "float", "bounds": [0, 1]}', "nan", "is not a finite number"),
    ],
)
def test_a_text_that_names_no_value_of_the_parameter_says_why(
    param: str, text: str, problem: str
) -> None:
    from loop.config import parameter_value

    with pytest.raises(ValueError, match=f"^{re.escape(problem)}$"):
        parameter_value(_param(param), text)


# ---------------------------------------------------------------------------- simulators
def test_an_unknown_simulator_keeps_the_registry_s_suggestion(tmp_path: Path) -> None:
    """`validate` dropped the registry's "did you mean" (found in review); the file and the
    line of `simulator:` are still named."""
    path = tmp_path / "c.yaml"
    path.write_text(
        NO_GOAL.replace("{name: y}", "{name: y, goal: minimize}").replace("branin}", "branni}")
    )
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path)
    assert info.value.line == 7
    message = str(info.value)
    assert message.startswith(f"{path}:7: instrument: unknown simulator 'branni'; built-in")
    assert message.endswith("; did you mean 'branin'?")


# ---------------------------------------------------------------------------- encoding
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["plain", "bom"])
def test_a_byte_that_is_not_utf8_is_located_in_the_file_s_own_bytes(
    tmp_path: Path, bom: bytes
) -> None:
    body = b"name: t\n# caf\xe9\n"
    (tmp_path / "c.yaml").write_bytes(bom + body)
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(tmp_path / "c.yaml")
    offset = len(bom) + body.index(b"\xe9")
    assert str(info.value).startswith(f"{tmp_path / 'c.yaml'}:2: is not UTF-8 text (byte {offset})")
    assert info.value.line == 2 and "save the file as UTF-8" in str(info.value)


def test_a_campaign_file_with_a_byte_order_mark_loads_and_keeps_its_text(tmp_path: Path) -> None:
    """Windows editors write one; the stored text is the file's as before (an ask/tell
    campaign is matched to its file by that text)."""
    text = NO_GOAL.replace("{name: y}", "{name: y, goal: minimize}")
    (tmp_path / "c.yaml").write_bytes(b"\xef\xbb\xbf" + text.encode())
    loaded = load_campaign(tmp_path / "c.yaml")
    assert loaded.campaign.name == "nogoal" and loaded.text == "\ufeff" + text


def test_a_long_impossible_constraint_is_quoted_cut(tmp_path: Path) -> None:
    """A 40-term sum that can never hold was quoted whole with all 40 parameters' bounds (a
    message of ~900 characters; found in review): its text is cut and the bounds listed up
    to eight, the line still pointing at the whole."""
    names = [f"x{i}" for i in range(40)]
    params = "\n".join(f"  - {{name: {n}, type: float, bounds: [0, 1]}}" for n in names)
    path = tmp_path / "long.yaml"
    path.write_text(
        f"name: long\nparameters:\n{params}\nobjectives:\n  - {{name: y, goal: minimize}}\n"
        "instrument: {simulator: sphere}\nbudget: {max_trials: 10}\nconstraints:\n"
        f'  - "{" + ".join(names)} >= 50"\n'
    )
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path)
    message = str(info.value)
    assert info.value.line == 48
    assert "can never hold" in message and "misses by 10 at best" in message
    assert "x0 in [0, 1]" in message and "and 33 more" in message
    assert "x39 in" not in message and "… (233 characters)" in message
    assert len(message.replace(str(path), "")) < 450, message  # the path's length aside


def test_an_overlong_constraint_is_not_echoed_whole(tmp_path: Path) -> None:
    """A constraint of 100 000 characters was echoed in full, in a message saying it was
    over 1000 (found in review)."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "name: t\nparameters:\n  - {name: x1, type: float, bounds: [-5, 10]}\n"
        "  - {name: x2, type: float, bounds: [0, 15]}\nconstraints:\n"
        f'  - "{"x1 + " * 20000}x1 <= 1"\n'
        "objectives: [{name: y, goal: minimize}]\ninstrument: {simulator: branin}\n"
        "budget: {max_trials: 3}\n"
    )
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(path)
    message = str(info.value)
    assert info.value.line == 6 and len(message) < 600, message
    assert "constraints[0] 'x1 + x1" in message and "the expression is longer than 1000" in message
