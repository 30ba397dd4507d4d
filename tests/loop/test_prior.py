"""Prior data: validated rows stored as ``prior`` trials, learnt from, never dispatched.

Real runner, RunEngine and SQLite. Bad files are checked for the message a user sees: file,
line, row, column and fix, and that nothing was stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from typer.testing import CliRunner

from loop import Runner, Store, parse_campaign
from loop.cli import app
from loop.config import LoadedCampaign
from loop.prior import PriorDataError, load_prior_data

CAMPAIGN = """
name: prior
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
  - {name: mode, type: choice, values: [a, b]}
  - {name: stage, type: int, bounds: [1, 3]}
  - {name: pressure, type: fixed, value: 2.0}
constraints: ["x1 + x2 <= 20"]
objectives: [{name: y, goal: minimize}]
instrument: {function: "fn.py:measure", outputs: [y, z]}
prior_data: prior.csv
planner: {kind: PLANNER, initial: {n: 4}}
budget: {max_trials: 3}
seed: 2
"""

FUNCTION = """
def measure(inputs):
    y = (inputs["x1"] - 1) ** 2 + (inputs["x2"] - 2) ** 2 + (inputs["mode"] == "b")
    return {"y": y + inputs["stage"] + inputs["pressure"], "z": 0.0}
"""

GOOD = """x1,x2,mode,stage,y,z
0,0,a,1,8,0.1
1,2,b,2,5.5,
9.5,0.5,a,3,72.5,0.3
-4,14,b,1,172,
"""


def _setup(tmp_path: Path, csv: str = GOOD, planner: str = "sobol") -> LoadedCampaign:
    (tmp_path / "fn.py").write_text(FUNCTION)
    (tmp_path / "prior.csv").write_text(csv)
    text = CAMPAIGN.replace("PLANNER", planner)
    path = tmp_path / "campaign.yaml"
    path.write_text(text)
    return parse_campaign(text, path=path, base_dir=tmp_path)


def test_prior_rows_are_stored_as_prior_trials_and_never_dispatched(tmp_path: Path) -> None:
    loaded = _setup(tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    runner = Runner(loaded, store)
    summary = runner.run()
    trials = store.trials(summary.campaign_id)
    obs = store.observations(summary.campaign_id)
    prior, own = trials[:4], trials[4:]
    assert [t.kind for t in prior] == ["prior"] * 4
    assert all(t.kind == "sobol" for t in own) and len(own) == 3
    # data, not experiments: completed, no run, no documents, commanded values as given
    for t in prior:
        assert t.status == "completed" and t.run_uid is None and t.readbacks == {}
        assert store.documents(t.id or 0) == []
    assert prior[1].parameters == {
        "x1": 1.0,
        "x2": 2.0,
        "mode": "b",
        "stage": 2,
        "pressure": 2.0,
    }
    assert obs[prior[0].id or 0] == {"y": 8.0, "z": 0.1}
    assert obs[prior[1].id or 0] == {"y": 5.5}  # an empty optional output stays unmeasured
    # they do not count toward max_trials; the best may be one of them
    assert (summary.completed, summary.prior) == (3, 4)
    assert summary.best is not None
    # the planner learnt them: a rebuilt planner ingests them first
    planner = runner.rebuild_planner(trials, obs)
    assert getattr(planner, "n_ingested", None) == 7


def test_resume_does_not_insert_the_prior_rows_again(tmp_path: Path) -> None:
    loaded = _setup(tmp_path)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    first = Runner(loaded, Store(url)).run()
    (tmp_path / "prior.csv").unlink()  # resume needs no prior-data file
    again = Runner.from_store(Store(url), first.campaign_id, max_trials=5).resume()
    kinds = [t.kind for t in Store(url).trials(first.campaign_id)]
    assert kinds.count("prior") == 4
    assert (again.completed, again.prior) == (5, 4)


def test_a_campaign_is_stored_with_all_its_prior_rows_or_none(tmp_path: Path) -> None:
    """Interrupted while the prior rows go in (Ctrl-C here; a kill or a power cut likewise
    ends the uncommitted transaction), the store holds no campaign at all rather than one
    with part of its prior data, which ``resume`` would never complete (found in review:
    1849 of 3000 rows lost)."""
    loaded = _setup(tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")

    def interrupt(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO observation"):  # some prior trials are in
            raise KeyboardInterrupt

    event.listen(store.engine, "before_cursor_execute", interrupt)
    with pytest.raises(KeyboardInterrupt):
        Runner(loaded, store).run()
    event.remove(store.engine, "before_cursor_execute", interrupt)
    assert store.campaigns() == []
    # nothing half-stored in the way: the campaign starts again with all four rows
    summary = Runner(loaded, store).run()
    kinds = [t.kind for t in store.trials(summary.campaign_id)]
    assert kinds.count("prior") == 4 and summary.prior == 4


@pytest.mark.slow
def test_botorch_learns_the_prior_and_shortens_its_initial_design(tmp_path: Path) -> None:
    """Each usable prior row replaces one initial-design point: with 4 rows and an initial
    design of 4, the model proposes the first trial."""
    loaded = _setup(tmp_path, planner="botorch")
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    summary = Runner(loaded, store, max_trials=1).run()
    kinds = [t.kind for t in store.trials(summary.campaign_id)]
    assert kinds == ["prior"] * 4 + ["model"]

    two_rows = "\n".join(GOOD.splitlines()[:3]) + "\n"
    sub = tmp_path / "two"
    sub.mkdir()
    store = Store(f"sqlite:///{sub / 'store.db'}")
    summary = Runner(_setup(sub, two_rows, planner="botorch"), store, max_trials=3).run()
    kinds = [t.kind for t in store.trials(summary.campaign_id)]
    assert kinds == ["prior", "prior", "initial", "initial", "model"]


BAD = [
    # (csv text, line, row, column, fragments)
    ("x1,x2,mode,stage,y\n0,0,c,1,1\n", 2, 1, "mode", ["'c' is not one of the values a, b"]),
    ("x1,x2,mode,stage,y\n0,0,a,1.5,1\n", 2, 1, "stage", ["not an integer"]),
    ("x1,x2,mode,stage,y\n0,zero,a,1,1\n", 2, 1, "x2", ["'zero' is not a number"]),
    ("x1,x2,mode,stage,y\n0,0,a,1,\n", 2, 1, "y", ["is empty"]),
    ("x1,x2,mode,stage,y\n0,0,a,1,nan\n", 2, 1, "y", ["not finite"]),
    (  # measured elsewhere at another value: not a typo to correct
        "x1,x2,mode,stage,y,pressure\n0,0,a,1,1,3\n",
        2,
        1,
        "pressure",
        ["'3', but this campaign fixes pressure to 2.0", "remove it, or make pressure a searched"],
    ),
    ("x1,x2,mode,stage,y\n0,0,a,1\n", 2, 1, None, ["has 4 cells for 5 columns"]),
    ("x1,x2,mode,y\n0,0,a,1\n", 1, None, "stage", ["no column for parameter 'stage'"]),
    ("x1,x2,mode,stage\n0,0,a,1\n", 1, None, "y", ["no column for output 'y'"]),
    ("x1,x2,mode,stage,y,yy\n0,0,a,1,1,2\n", 1, None, "yy", ["did you mean 'y'?"]),
    ("x1,x2,mode,stage,y\n", 1, None, None, ["has no data rows"]),
]


@pytest.mark.parametrize(("csv", "line", "row", "column", "fragments"), BAD)
def test_bad_prior_data_is_located(
    tmp_path: Path,
    csv: str,
    line: int,
    row: int | None,
    column: str | None,
    fragments: list[str],
) -> None:
    loaded = _setup(tmp_path, csv)
    with pytest.raises(PriorDataError) as info:
        load_prior_data(loaded)
    err = info.value
    message = str(err)
    assert message.startswith(f"{tmp_path / 'prior.csv'}:{line}: "), message
    assert (err.line, err.row, err.column) == (line, row, column), message
    if row is not None:
        assert f"row {row}" in message
    if column is not None:
        assert f"column '{column}'" in message
    for fragment in fragments:
        assert fragment in message
    assert "fix:" in message


@pytest.mark.parametrize(
    "text",
    [
        GOOD.replace("\n", "\r"),  # old Mac line endings (CR only)
        GOOD.replace("\n", "\r\n"),  # Windows
        "\n \n" + GOOD,  # blank lines before the header
    ],
    ids=["cr", "crlf", "blank-lines-first"],
)
def test_any_line_ending_and_leading_blank_lines_read(tmp_path: Path, text: str) -> None:
    rows = load_prior_data(_setup(tmp_path, text))
    assert [r.outputs["y"] for r in rows] == [8, 5.5, 72.5, 172]
    assert rows[1].parameters["mode"] == "b"


def test_errors_after_leading_blank_lines_name_the_true_line(tmp_path: Path) -> None:
    loaded = _setup(tmp_path, "\n\nx1,x2,mode,stage,yy\n0,0,a,1,1\n\n0,0,c,1,1\n")
    with pytest.raises(PriorDataError) as info:
        load_prior_data(loaded)
    assert str(info.value).startswith(f"{tmp_path / 'prior.csv'}:3: column 'yy'")
    loaded = _setup(tmp_path, "\r\rx1,x2,mode,stage,y\r0,0,a,1,1\r\r0,0,c,1,1\r")
    with pytest.raises(PriorDataError) as info:
        load_prior_data(loaded)
    assert str(info.value).startswith(f"{tmp_path / 'prior.csv'}:6: row 2, column 'mode'")


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["plain", "bom"])
def test_a_byte_that_is_not_utf8_is_located_in_the_file_s_own_bytes(
    tmp_path: Path, bom: bytes
) -> None:
    """With a spreadsheet's byte-order mark the line was counted in the file's bytes and the
    byte in those after the mark: line 2, byte 14 for a byte on line 3 at 17 (found in
    review)."""
    loaded = _setup(tmp_path)
    body = b"x1,x2,mode,stage,y\n0,0,a,1,1\n\xff,0,a,1,1\n"
    (tmp_path / "prior.csv").write_bytes(bom + body)
    with pytest.raises(PriorDataError) as info:
        load_prior_data(loaded)
    offset = len(bom) + body.index(b"\xff")
    assert str(info.value).startswith(
        f"{tmp_path / 'prior.csv'}:3: is not UTF-8 text (byte {offset})"
    )
    assert info.value.line == 3 and "save it as UTF-8 CSV" in str(info.value)


def test_a_byte_order_mark_is_no_part_of_the_header(tmp_path: Path) -> None:
    loaded = _setup(tmp_path)
    (tmp_path / "prior.csv").write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert [r.outputs["y"] for r in load_prior_data(loaded)] == [8, 5.5, 72.5, 172]


def test_a_numeric_choice_is_read_by_its_value(tmp_path: Path) -> None:
    """`2.0` is the choice 2, here as in `tell --actual` and `plan --at` (one reading)."""
    text = CAMPAIGN.replace("values: [a, b]", "values: [1, 2]").replace("PLANNER", "sobol")
    (tmp_path / "fn.py").write_text(FUNCTION)
    (tmp_path / "prior.csv").write_text("x1,x2,mode,stage,y\n0,0,2.0,1,1\n0,0,1,1,2\n")
    loaded = parse_campaign(text, path=tmp_path / "c.yaml", base_dir=tmp_path)
    assert [r.parameters["mode"] for r in load_prior_data(loaded)] == [2, 1]


def test_cli_prior_option_adds_rows_and_a_bad_one_runs_nothing(tmp_path: Path) -> None:
    loaded = _setup(tmp_path)
    extra = tmp_path / "more.csv"
    extra.write_text("x1,x2,mode,stage,y\n2,3,a,1,9\n")
    db = tmp_path / "cli.db"
    cli = CliRunner()
    args = ["run", str(loaded.path), "--store", f"sqlite:///{db}", "-q", "--prior", str(extra)]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "prior data: 5 rows from" in result.output
    assert "prior data: 5 trials (not counted by max_trials)" in result.output
    status = cli.invoke(app, ["status", "--store", f"sqlite:///{db}"])
    assert "3 completed, 5 prior-data" in status.output

    bad = tmp_path / "bad.csv"
    bad.write_text("x1,x2,mode,stage,y\n2,3,a,2.5,9\n")
    other = tmp_path / "other.db"
    args = ["run", str(loaded.path), "--store", f"sqlite:///{other}", "--prior", str(bad)]
    result = cli.invoke(app, args)
    assert isinstance(result.exception, PriorDataError)
    assert f"{bad}:2: row 1, column 'stage'" in str(result.exception)
    assert not other.exists(), "a bad prior-data file must create no store"


def test_a_missing_prior_file_says_where_it_was_named_and_how_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`prior_data:` at its line of the campaign file (relative to that file's folder);
    `--prior` relative to the current folder, not the campaign file (found in review)."""
    loaded = _setup(tmp_path)
    (tmp_path / "prior.csv").unlink()
    with pytest.raises(PriorDataError) as info:
        load_prior_data(loaded)
    message = str(info.value)
    assert info.value.line == 12 and message.startswith(f"{loaded.path}:12: prior_data: "), message
    assert f"prior.csv: no such file ({tmp_path / 'prior.csv'})" in message
    assert f"relative to the campaign file's folder ({tmp_path})" in message

    (tmp_path / "prior.csv").write_text(GOOD)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    db = tmp_path / "cli.db"
    args = ["run", str(loaded.path), "--store", f"sqlite:///{db}", "--prior", "more.csv"]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, PriorDataError), result.output
    message = str(result.exception)
    assert message.startswith(f"{elsewhere / 'more.csv'}: no such file (given with --prior)")
    assert f"relative to the current folder ({elsewhere}), not to the campaign file" in message
    assert "prior_data" not in message
    assert not db.exists()


def test_an_export_is_valid_prior_data(tmp_path: Path) -> None:
    loaded = _setup(tmp_path)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    Runner(loaded, Store(url)).run()
    exported = tmp_path / "done.csv"
    out = CliRunner().invoke(app, ["export", "--store", url, "-o", str(exported)])
    assert out.exit_code == 0, out.output
    rows = load_prior_data(loaded, [exported])
    # the campaign's 4 rows, then the export's 4 prior + 3 measured trials
    assert len(rows) == 4 + 7
    assert [r.source for r in rows[4:]] == [exported] * 7


def test_a_side_output_that_read_nothing_is_no_value(tmp_path: Path) -> None:
    """An export writes a side output that read NaN as `nan`; prior data refused each such
    row, though the README says an export works as it is (found in review). An objective's
    `nan` is still refused (`test_bad_prior_data_is_located`)."""
    loaded = _setup(tmp_path, GOOD.replace(",0.1\n", ",nan\n").replace(",0.3\n", ",-inf\n"))
    rows = load_prior_data(loaded, [])
    assert [r.outputs for r in rows] == [{"y": 8.0}, {"y": 5.5}, {"y": 72.5}, {"y": 172.0}]


def test_a_row_of_one_cell_is_counted_in_the_singular(tmp_path: Path) -> None:
    """It said "has 1 cells for 5 columns" (found in review)."""
    with pytest.raises(PriorDataError, match="has 1 cell for 6 columns"):
        load_prior_data(_setup(tmp_path, "x1,x2,mode,stage,y,z\n0\n"))


def test_every_bad_row_is_named_at_once(tmp_path: Path) -> None:
    """Only the first bad row was named, so a spreadsheet was mended one run per row
    (found in review)."""
    bad = GOOD + "0,0,c,1,8,\n0,0,a,1.5,8,\n0,0,a,1,,\n"
    with pytest.raises(PriorDataError) as info:
        load_prior_data(_setup(tmp_path, bad))
    err = info.value
    assert (err.line, err.row, err.column) == (6, 5, "mode")
    assert "(3 rows cannot be used; the others: line 7: row 6, column 'stage': " in err.problem
    assert "line 8: row 7, column 'y': is empty" in err.problem


def test_a_json_export_given_as_prior_data_is_told_to_be_a_csv(tmp_path: Path) -> None:
    """Its first character was refused as a column: "'[' is neither a parameter nor an
    output" (found in review)."""
    loaded = _setup(tmp_path)
    exported = tmp_path / "done.json"
    exported.write_text('[{"trial_id": 1}]')
    with pytest.raises(PriorDataError, match="is a JSON file; prior data is a CSV") as info:
        load_prior_data(loaded, [exported])
    assert "closedloop export -o prior.csv" in str(info.value)


def test_many_prior_rows_for_a_model_are_said_to_be_slow(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = "".join(f"{i % 10},{i % 10},a,1,{i},\n" for i in range(1600))
    loaded = _setup(tmp_path, "x1,x2,mode,stage,y,z\n" + rows, planner="botorch")
    with caplog.at_level("WARNING", logger="loop.prior"):
        assert len(load_prior_data(loaded)) == 1600
    assert "1600 prior-data rows: the model's first fit" in caplog.text
    caplog.clear()
    sobol = _setup(tmp_path, "x1,x2,mode,stage,y,z\n" + rows)
    with caplog.at_level("WARNING", logger="loop.prior"):
        load_prior_data(sobol)
    assert "prior-data rows" not in caplog.text  # a design fits nothing


def test_an_exports_rows_are_learned_where_the_instrument_was(tmp_path: Path) -> None:
    """The runner learns a trial at its readbacks; the same row reused as prior data must
    be learned there too (unless the readbacks are not a point of the space)."""
    loaded = _setup(tmp_path)
    export = tmp_path / "export.csv"
    export.write_text(
        "trial_id,status,x1,x2,mode,stage,readback.x1,readback.x2,readback.stage,y\n"
        "1,completed,1.0,2.0,a,2,1.25,2.0,2,5.0\n"  # reached 1.25, not 1.0
        "2,completed,1.0,2.0,a,2,11.0,2.0,2,6.0\n"  # a readback outside the bounds
        "3,completed,1.0,2.0,a,2,,,,7.0\n"  # no readbacks (a prior row of that campaign)
    )
    rows = load_prior_data(loaded, [export])[4:]
    assert [r.parameters["x1"] for r in rows] == [1.25, 1.0, 1.0]
    assert all(r.parameters["stage"] == 2 for r in rows)


# ---------------------------------------------------------------------------- status column
STATUSES = """x1,x2,mode,stage,y,status
0,0,a,1,8,completed
1,2,b,2,5.5,Completed
2,2,b,2,6.5, COMPLETED
3,2,b,2,,failed
4,2,b,2,,Abandoned
5,2,b,2,,running
6,2,b,2,9,
"""


def test_status_is_read_without_regard_to_case_and_skipped_rows_are_counted(
    tmp_path: Path,
) -> None:
    """Was: `Completed` was skipped like `failed`, and nothing said a row was left out
    (found in review: 1 of 3 measured rows read)."""
    rows = load_prior_data(_setup(tmp_path, STATUSES))
    assert [r.outputs["y"] for r in rows] == [8, 5.5, 6.5, 9]
    assert [r.row for r in rows] == [1, 2, 3, 7]
    assert dict(rows.skipped) == {"failed": 1, "abandoned": 1, "running": 1}
    assert (
        rows.skipped_note() == " (3 rows skipped, not measured: 1 failed, 1 abandoned, 1 running)"
    )
    assert load_prior_data(_setup(tmp_path)).skipped_note() == ""


@pytest.mark.parametrize("status", ["done", "ok", "measured", "complete"])
def test_a_status_closedloop_does_not_write_is_refused(tmp_path: Path, status: str) -> None:
    """`done` might mean measured or not: neither reading is taken silently."""
    loaded = _setup(
        tmp_path, f"x1,x2,mode,stage,y,status\n0,0,a,1,8,completed\n1,2,b,2,5,{status}\n"
    )
    with pytest.raises(PriorDataError) as info:
        load_prior_data(loaded)
    err = info.value
    assert (err.line, err.row, err.column) == (3, 2, "status")
    assert f"'{status}' is not a status closedloop writes (completed, failed, abandoned," in str(
        err
    )
    assert "write completed in a measured row" in err.fix


def test_a_file_of_unmeasured_rows_only_says_how_many_were_skipped(tmp_path: Path) -> None:
    loaded = _setup(tmp_path, "x1,x2,mode,stage,y,status\n0,0,a,1,,failed\n1,2,b,2,,failed\n")
    with pytest.raises(PriorDataError) as info:
        load_prior_data(loaded)
    assert "has no data rows with status completed (2 rows skipped, not measured: 2 failed)" in (
        str(info.value)
    )


# ---------------------------------------------------------------------------- spreadsheet hygiene
def test_a_spreadsheet_s_empty_trailing_columns_are_ignored(tmp_path: Path) -> None:
    """Excel saves columns it once formatted as empty header cells and empty cells; was:
    `the header has an empty column name` (found in review)."""
    text = (
        "x1,x2,mode,stage,y,,,\r\n0,0,a,1,8,,,\r\n1,2,b,2,5.5,,\r\n,,,,,,,\r\n9,0.5,a,3,72,,,,\r\n"
    )
    rows = load_prior_data(_setup(tmp_path, text))
    assert [r.outputs["y"] for r in rows] == [8, 5.5, 72]


def test_a_value_under_an_unnamed_column_names_the_column(tmp_path: Path) -> None:
    loaded = _setup(tmp_path, "x1,x2,mode,stage,y,,\n0,0,a,1,8,,\n1,2,b,2,5.5,,0.3\n")
    with pytest.raises(PriorDataError) as info:
        load_prior_data(loaded)
    err = info.value
    assert (err.line, err.row) == (3, 2)
    assert "has '0.3' in column 7 (G), which has no name in the header" in str(err)
    assert "name the column in the header" in err.fix


@pytest.mark.parametrize(
    ("position", "letters"), [(1, "A"), (7, "G"), (26, "Z"), (27, "AA"), (52, "AZ"), (703, "AAA")]
)
def test_column_letters_are_a_spreadsheet_s(position: int, letters: str) -> None:
    from loop.prior import column_letter

    assert column_letter(position) == letters


def test_notebook_columns_are_refused_all_at_once_with_how_to_drop_them(tmp_path: Path) -> None:
    """A `date` or `notes` column is refused, not ignored (a misspelt output ignored would
    lose its values); every such column is named in one message."""
    loaded = _setup(tmp_path, "date,x1,x2,mode,stage,y,notes,zz\n2026-01-02,0,0,a,1,8,ok,1\n")
    with pytest.raises(PriorDataError) as info:
        load_prior_data(loaded)
    err = info.value
    assert err.line == 1 and err.column is None
    assert "columns 'date', 'notes', 'zz' are neither parameters nor outputs" in str(err)
    assert "did you mean 'z' for 'zz'?" in err.fix
    assert "delete any other column (notes, dates)" in err.fix


def test_rows_outside_the_bounds_or_constraints_are_used_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's way on after narrowing a space is to export the trials and start the
    corrected file with them as prior data; a row outside the new bounds or constraints
    refused the whole file, so real measurements had to be deleted (found in review). They
    are used where they were measured, and named; a value its parameter cannot take is
    still refused."""
    rows = GOOD + "11,0,a,1,8,\n9,12,a,1,7,\n"
    with caplog.at_level("WARNING", logger="loop.prior"):
        loaded = load_prior_data(_setup(tmp_path, rows))
    assert len(loaded) == GOOD.count("\n") - 1 + 2
    assert {(r.parameters["x1"], r.parameters["x2"]) for r in loaded} >= {(11.0, 0.0), (9.0, 12.0)}
    said = " ".join(caplog.text.split())
    assert (
        "2 prior-data rows are outside the campaign's bounds or constraints (prior.csv rows" in said
    )
    assert "proposals stay inside" in said
    assert "another unit" not in said  # two rows just outside: a space narrowed since
    with pytest.raises(PriorDataError, match="not an integer"):
        load_prior_data(_setup(tmp_path, GOOD + "11,0,a,1.5,8,\n"))


def test_a_column_most_rows_put_far_outside_its_bounds_is_asked_about_its_unit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """x2 in another unit (x 60: 120 to 900 against [0, 15]) was taken with the note for a
    space narrowed since, and its rows became the best trial (found in review). The
    note names the column and asks."""
    rows = "x1,x2,mode,stage,y,z\n0,120,a,1,8,\n1,300,b,2,5.5,\n2,900,a,3,7,\n3,1,a,1,9,\n"
    with caplog.at_level("WARNING", logger="loop.prior"):
        load_prior_data(_setup(tmp_path, rows))
    said = " ".join(caplog.text.split())
    assert (
        "x2 reads 120 to 900 in 3 of 4 rows, far outside its bounds [0, 15]: is that column "
        "in another unit?"
    ) in said, said


def test_run_says_when_its_best_trial_is_a_prior_row_outside_the_space(tmp_path: Path) -> None:
    """`status` said "(outside today's bounds or constraints)" of such a best trial; `run`'s
    summary said only "(prior data)" (found in review)."""
    _setup(tmp_path, GOOD + "11,0,a,1,-100,\n")
    out = CliRunner().invoke(
        app,
        ["run", str(tmp_path / "campaign.yaml"), "--store", f"sqlite:///{tmp_path / 's.db'}"],
    )
    said = " ".join(out.output.split())
    assert out.exit_code == 0, said
    assert "(prior data) (outside today's bounds or constraints): y = -100" in said, said


def test_a_second_run_of_a_finished_campaign_says_it_does_not_learn_from_it(
    tmp_path: Path,
) -> None:
    """Running an edited file again under a finished campaign's name started over with no
    word that its trials were not learned from (found in review); `suggest` warned. It says
    so, and how to build on them."""
    _setup(tmp_path)
    store = f"sqlite:///{tmp_path / 's.db'}"
    args = ["run", str(tmp_path / "campaign.yaml"), "--store", store]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "this run starts a new campaign" not in first.output
    second = CliRunner().invoke(app, args)
    said = " ".join(second.output.split())
    assert second.exit_code == 0, said
    assert (
        "campaign 'prior' (id 1) in this store is completed with 3 completed trials; this run "
        "starts a new campaign and does not learn from them. To build on them: `closedloop "
        f"export --store {store} -c 1 -o earlier.csv`, then `--prior earlier.csv`; or "
        f"`closedloop resume --store {store} -c 1 --max-trials 13` extends it."
    ) in said, said
    # a campaign its target ended cannot be extended: no `resume --max-trials N` offered,
    # which resume then refused (found in review)
    (tmp_path / "t.py").write_text("def f(inputs):\n    return {'y': inputs['x']}\n")
    (tmp_path / "t.yaml").write_text(
        "name: t\nparameters: [{name: x, type: float, bounds: [0, 1]}]\n"
        "objectives: [{name: y, goal: maximize}]\n"
        "instrument: {function: t.py:f, outputs: [y]}\nplanner: {kind: sobol}\n"
        "budget: {max_trials: 5, target: 0.01}\nseed: 1\n"
    )
    args = ["run", str(tmp_path / "t.yaml"), "--store", store]
    assert CliRunner().invoke(app, args).exit_code == 0
    again = " ".join(CliRunner().invoke(app, args).output.split())
    assert "then `--prior earlier.csv` (target reached" in again, again
    assert "so no resume goes on)" in again and "closedloop resume" not in again, again
