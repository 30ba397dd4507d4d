"""Edge cases of the CSVs and the spec a user writes: prior data (``loop.prior``) and a
dataset's table and spec (``simulators._datasets``), which share one CSV reader.

Each was found by fuzzing: a header of thousands of empty cells took seconds per row, an
unclosed quote was reported at the file's last line with the opposite fix, a duplicated
dataset column was read silently, PyYAML's multi-line error text reached the user, huge
values were echoed in full, and some messages had no fix. Each test checks the message, the
line and the fix a user sees.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from loop import parse_campaign
from loop.config import LoadedCampaign
from loop.prior import PriorDataError, load_prior_data
from simulators._datasets import DatasetError, load_dataset, load_spec
from simulators._text import TextFileError, csv_records

CAMPAIGN = """
name: edges
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives: [{name: y, goal: minimize}]
instrument: {simulator: branin}
prior_data: prior.csv
planner: {kind: sobol}
budget: {max_trials: 3}
seed: 1
"""

ROWS = "0.0,0.0,55.6\n5.0,5.0,26.6\n-2.0,8.0,8.9\n7.0,1.0,17.3\n1.0,10.0,45.0\n-4.0,14.0,3.9\n"

SPEC = (
    "parameters:\n"
    "  - {name: temperature, type: float, bounds: [20, 120]}\n"
    "  - {name: solvent, type: choice, values: [MeCN, THF]}\n"
    "outputs: [yield]\n"
)
DATA = "temperature,solvent,yield\n20,MeCN,0.1\n70,THF,0.4\n120,MeCN,0.3\n"

HUGE = "9" * 5000


def _campaign(tmp_path: Path, prior: str) -> LoadedCampaign:
    (tmp_path / "prior.csv").write_text(prior, encoding="utf-8")
    path = tmp_path / "campaign.yaml"
    path.write_text(CAMPAIGN)
    return parse_campaign(CAMPAIGN, path=path, base_dir=tmp_path)


def _prior_error(tmp_path: Path, prior: str) -> PriorDataError:
    loaded = _campaign(tmp_path, prior)
    with pytest.raises(PriorDataError) as info:
        load_prior_data(loaded)
    return info.value


def _dataset_error(tmp_path: Path, data: str, spec: str = SPEC) -> DatasetError:
    (tmp_path / "data.csv").write_text(data, encoding="utf-8")
    (tmp_path / "spec.yaml").write_text(spec, encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        load_dataset(tmp_path / "data.csv", tmp_path / "spec.yaml")
    return info.value


# ---------------------------------------------------------------------------- 1: trailing cells
def test_a_header_with_20000_empty_trailing_cells_reads_every_row(tmp_path: Path) -> None:
    """A spreadsheet's trailing commas on the header only are accepted (each row was checked
    against a list of the unnamed columns: seconds for 20,000 of them, now linear)."""
    rows = load_prior_data(_campaign(tmp_path, "x1,x2,y" + "," * 20_000 + "\n" + ROWS))
    assert [r.parameters for r in rows][:2] == [{"x1": 0.0, "x2": 0.0}, {"x1": 5.0, "x2": 5.0}]
    assert [r.outputs["y"] for r in rows] == [55.6, 26.6, 8.9, 17.3, 45.0, 3.9]
    assert [r.row for r in rows] == [1, 2, 3, 4, 5, 6]


def test_rows_as_wide_as_such_a_header_read_too(tmp_path: Path) -> None:
    wide = "".join(line + "," * 1000 + "\n" for line in ROWS.splitlines())
    rows = load_prior_data(_campaign(tmp_path, "x1,x2,y" + "," * 1000 + "\n" + wide))
    assert len(rows) == 6 and rows[-1].outputs == {"y": 3.9}


def test_a_short_row_counts_the_named_columns_not_the_empty_ones(tmp_path: Path) -> None:
    err = _prior_error(tmp_path, "x1,x2,y" + "," * 20_000 + "\n0,0,1\n1,2\n")
    assert (err.line, err.row) == (3, 2)
    assert "row 2: has 2 cells for 3 columns" in str(err)  # not "for 20003 columns"
    assert err.fix == "give every row one cell per header column"


def test_a_value_under_an_unnamed_header_cell_is_still_refused(tmp_path: Path) -> None:
    err = _prior_error(tmp_path, "x1,x2,y" + "," * 20_000 + "\n0,0,1" + "," * 500 + "5\n")
    assert (err.line, err.row) == (2, 1)
    assert "has '5' in column 503 (SI), which has no name in the header" in str(err)
    assert err.fix.startswith("name the column in the header")


def test_a_dataset_header_with_many_empty_trailing_cells_reads(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text(DATA.replace("yield\n", "yield" + "," * 20_000 + "\n"))
    (tmp_path / "spec.yaml").write_text(SPEC)
    ds = load_dataset(tmp_path / "data.csv", tmp_path / "spec.yaml")
    assert ds.Y[:, 0].tolist() == [0.1, 0.4, 0.3] and ds.rows[1] == {
        "temperature": 70.0,
        "solvent": "THF",
    }


# ---------------------------------------------------------------------------- 2: quotes
UNCLOSED = 'x1,x2,y\n0.0,0.0,55.6\n5.0,5.0,26.6\n"-2.0,8.0,8.9\n7.0,1.0,17.3\n1.0,10.0,45.0\n'


def test_an_unclosed_quote_is_said_at_its_own_line(tmp_path: Path) -> None:
    """It was ``prior.csv:7: row 3: has 1 cells for 3 columns`` with the fix "quote cells
    holding commas": the file's last line, and the opposite of what is needed."""
    err = _prior_error(tmp_path, UNCLOSED)
    assert str(err).startswith(f"{tmp_path / 'prior.csv'}:4: row 3: the quote opened on line 4 ")
    assert (err.line, err.row) == (4, 3)
    assert "is never closed" in err.problem
    assert err.fix.startswith("close the quote or remove it")


def test_an_unclosed_quote_in_a_dataset_is_said_alike(tmp_path: Path) -> None:
    err = _dataset_error(tmp_path, DATA + '70,"MeCN,0.5\n20,THF,0.2\n')
    assert err.line == 5 and "the quote opened on line 5 is never closed" in err.message
    assert err.fix is not None and err.fix.startswith("close the quote or remove it")


def test_a_quote_closed_lines_later_says_where_it_opened(tmp_path: Path) -> None:
    err = _prior_error(tmp_path, 'x1,x2,y\n0,0,1\n"1,2,3\n4,5",6\n7,8,9\n')
    assert (err.line, err.row) == (3, 2)
    assert "has 2 cells for 3 columns (the quote opened on line 3 runs on to line 4)" in str(err)
    assert err.fix == "close the quote on line 3 where its cell ends, or remove it"
    said = _dataset_error(tmp_path, DATA + '"70,THF\n0.5",x\n')
    assert said.line == 5 and "(the quote opened on line 5 runs on to line 6)" in said.message
    assert said.fix == "close the quote on line 5 where its cell ends, or remove it"


@pytest.mark.parametrize(
    ("text", "last"),
    [
        ('a,b\n1,""', ["1", ""]),
        ('a,b\n1,""x', ["1", "x"]),
        ('a,b\n1,""""', ["1", '"']),
        ('a,b\n"x\ny",1', ["x\ny", "1"]),
        ('a,b\r\n"1","2"', ["1", "2"]),
    ],
    ids=["empty-quoted", "text-after-quote", "a-quote", "line-break", "crlf"],
)
def test_a_closed_quote_at_the_end_of_the_file_is_not_taken_for_an_open_one(
    text: str, last: list[str]
) -> None:
    assert [r.cells for r in csv_records(text)] == [["a", "b"], last]


@pytest.mark.parametrize(
    ("text", "line"),
    [('a,b\n1,"', 2), ('a\r\nb\r\n"c\r\nd', 3), ('a,b\n"x\ny","1', 3), ('a,b\n\n"\n', 3)],
)
def test_an_open_quote_is_found_on_its_line(text: str, line: int) -> None:
    with pytest.raises(TextFileError) as info:
        list(csv_records(text))
    assert info.value.line == line
    assert info.value.problem.startswith(f"the quote opened on line {line} is never closed")


def test_a_quote_open_past_the_csv_cell_limit_names_its_line_and_fix(tmp_path: Path) -> None:
    limit = csv.field_size_limit()
    long = "\n".join(["1,2,3"] * (limit // 5))  # closed again, but past the limit
    err = _prior_error(tmp_path, f'x1,x2,y\n0,0,1\n"{long}",1,2\n')
    assert (err.line, err.row) == (3, 2)
    assert f"the quote opened on line 3 is not closed within {limit} characters" in str(err)
    assert err.fix.startswith("close the quote or remove it")
    said = _dataset_error(tmp_path, DATA + "20,MeCN," + "1" * (limit + 1) + "\n")
    assert said.line == 5 and f"has a cell of more than {limit} characters" in said.message
    assert said.fix is not None and f"a cell holds at most {limit} characters" in said.fix


# ---------------------------------------------------------------------------- 3: duplicates
def test_a_dataset_column_given_twice_is_refused(tmp_path: Path) -> None:
    """The first of two ``yield`` columns was read without a word."""
    err = _dataset_error(tmp_path, DATA.replace("yield\n", "yield,yield\n").replace("\n2", ",1\n2"))
    assert err.line == 1
    assert err.message == "column 'yield' appears twice in the header (columns 3 and 4)"
    assert err.fix is not None and err.fix.startswith("delete or rename one of them")


def test_a_prior_column_given_twice_says_the_fix(tmp_path: Path) -> None:
    err = _prior_error(tmp_path, "x1,x2,y,x1\n0,0,1,0\n")
    assert err.line == 1 and err.column == "x1"
    assert str(err).startswith(f"{tmp_path / 'prior.csv'}:1: column 'x1': appears twice")
    assert err.fix.startswith("delete one of the two columns")


# ---------------------------------------------------------------------------- 4: the spec
def test_a_tab_in_the_spec_is_one_line_with_the_fix(tmp_path: Path) -> None:
    err = _dataset_error(tmp_path, DATA, SPEC + '\tcitation: "who"\n')
    assert err.line == 5 and "\n" not in str(err) and "<unicode string>" not in str(err)
    assert err.message.startswith("not valid YAML: ") and "'\\t'" in err.message
    assert err.fix == "indent with spaces, not tabs: YAML does not allow a tab there"


def test_a_control_character_in_the_spec_names_its_line(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC + 'citation: "a\x01b"\n')
    with pytest.raises(DatasetError) as info:
        load_spec(spec)
    err = info.value
    assert err.line == 5 and "\n" not in str(err)
    assert err.message == (
        "not valid YAML: has the control character U+0001, which YAML does not allow"
    )
    assert err.fix is not None and err.fix.startswith("delete it")


def test_other_spec_syntax_errors_say_where_the_construct_opened(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("parameters:\n  - {name: a, bounds: [0, 1\noutputs: [y]\n")
    with pytest.raises(DatasetError) as info:
        load_spec(spec)
    assert info.value.line == 3 and "(the construct opened on line 2)" in info.value.message
    assert info.value.fix == "check indentation, colons and quotes on that line"


# ---------------------------------------------------------------------------- 5: huge values
@pytest.mark.parametrize(
    "prior",
    [
        f"x1,x2,y\n0,0,1\n{HUGE},1,2\n",
        f"x1,x2,y\n0,0,1\n1,1,x{HUGE}\n",
        f"x1,x2,y,\n0,0,1,{HUGE}\n",
        f"x1,x2,y,{HUGE}\n0,0,1,2\n",
        f"x1,x2,y,status\n0,0,1,{HUGE}\n",
    ],
    ids=["parameter", "output", "unnamed", "column", "status"],
)
def test_a_huge_prior_value_is_shown_cut(tmp_path: Path, prior: str) -> None:
    err = _prior_error(tmp_path, prior)
    assert len(str(err)) < 600, str(err)
    assert "…" in str(err) and "characters)" in str(err) and err.line is not None


@pytest.mark.parametrize(
    "data",
    [DATA + f"{HUGE},THF,1\n", DATA + f"20,x{HUGE},1\n", DATA + f"20,THF,{HUGE}x\n"],
    ids=["number", "choice", "output"],
)
def test_a_huge_dataset_value_is_shown_cut(tmp_path: Path, data: str) -> None:
    err = _dataset_error(tmp_path, data)
    assert err.line == 5 and len(str(err)) < 600, str(err)
    assert "…" in err.message and "characters)" in err.message


def test_a_huge_dataset_header_is_listed_in_part(tmp_path: Path) -> None:
    header = ",".join(f"c{i}" for i in range(20_000))
    err = _dataset_error(tmp_path, header + "\n1,2\n")
    assert err.line == 1 and len(str(err)) < 800
    assert err.fix is not None and "and 19992 more" in err.fix


def test_a_huge_spec_value_is_shown_cut(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC.replace("bounds: [20, 120]}", f"bounds: [20, 120], unit: [x{HUGE}]}}"))
    with pytest.raises(DatasetError) as info:
        load_spec(spec)
    assert info.value.line == 2 and len(str(info.value)) < 600


# ---------------------------------------------------------------------------- 6: fixes
def test_a_short_dataset_row_says_the_fix(tmp_path: Path) -> None:
    err = _dataset_error(tmp_path, DATA + "20,THF\n")
    assert err.line == 5 and err.message == "2 columns; expected at least 3"
    assert err.fix == (
        "give the row a value in each column the spec names (temperature, solvent, yield)"
    )


def test_too_few_dataset_rows_says_the_fix(tmp_path: Path) -> None:
    err = _dataset_error(tmp_path, "temperature,solvent,yield\n20,MeCN,0.1\n")
    assert err.message == "fewer than two data rows"
    assert err.fix == "add the measured rows: a simulator is built from two or more"


def test_tell_csv_says_an_unclosed_quote_at_its_line(tmp_path: Path) -> None:
    """`tell --csv` reads its CSV with the same reader: an unclosed quote on line 2 was
    reported at the file's last line as a cell-count problem."""
    from tests.cli_process import closedloop

    (tmp_path / "b.yaml").write_text(
        (Path(__file__).parents[2] / "campaigns" / "branin.yaml").read_text()
    )
    url = f"sqlite:///{tmp_path / 't.db'}"
    assert closedloop("suggest", "b.yaml", "--store", url, "-n", "2", cwd=tmp_path).returncode == 0
    (tmp_path / "told.csv").write_text('trial_id,y\n1,"3.2\n2,4.1\n\n')
    proc = closedloop("tell", "--csv", "told.csv", "--store", url, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "told.csv:2: the quote opened on line 2 is never closed" in proc.stderr
