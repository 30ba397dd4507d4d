"""A store that cannot be used as given is bad input: one message, exit 2, nothing touched."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from loop import Store, StoreError
from loop.store import SCHEMA_VERSION
from tests.cli_process import closedloop


def test_new_store_records_its_schema_version(tmp_path: Path) -> None:
    Store(f"sqlite:///{tmp_path / 's.db'}").close()
    with sqlite3.connect(tmp_path / "s.db") as conn:
        (value,) = conn.execute(
            "SELECT value FROM closedloop_meta WHERE key = 'schema_version'"
        ).fetchone()
    assert int(value) == SCHEMA_VERSION


def test_store_of_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    Store(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE closedloop_meta SET value = ? WHERE key = 'schema_version'",
            (str(SCHEMA_VERSION + 1),),
        )
    with pytest.raises(StoreError, match="newer closedloop"):
        Store(f"sqlite:///{db}")
    with sqlite3.connect(db) as conn:
        (value,) = conn.execute("SELECT value FROM closedloop_meta").fetchone()
    assert int(value) == SCHEMA_VERSION + 1
    proc = closedloop("status", "--store", f"sqlite:///{db}", cwd=tmp_path)
    assert proc.returncode == 2 and "newer closedloop" in proc.stderr
    assert "Traceback" not in proc.stderr
    # Which closedloop reads it (the one to upgrade from), as `closedloop --version` says.
    version = closedloop("--version", cwd=tmp_path)
    assert version.returncode == 0, version.stderr
    name, number = version.stdout.split()
    assert name == "closedloop" and number[0].isdigit()
    assert f"closedloop {number} reads up to {SCHEMA_VERSION}" in " ".join(proc.stderr.split())


@pytest.mark.parametrize("value", ["4b", "v5", ""])
def test_a_schema_version_that_is_not_a_number_is_refused_untouched(
    tmp_path: Path, value: str
) -> None:
    """Read as "no version" and overwritten with the current one (found in review)."""
    db = tmp_path / "s.db"
    Store(f"sqlite:///{db}").close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE closedloop_meta SET value = ? WHERE key = 'schema_version'", (value,))
    with pytest.raises(StoreError, match=f"records schema version '{value}', which no"):
        Store(f"sqlite:///{db}")
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT value FROM closedloop_meta").fetchone() == (value,)


def test_an_older_store_is_upgraded_with_a_word(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "s.db"
    store = Store(f"sqlite:///{db}")
    store.create_campaign("c", "", "c.yaml", 1)
    store.close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE closedloop_meta SET value = '3' WHERE key = 'schema_version'")
    with caplog.at_level("WARNING", logger="loop.store"):
        Store(f"sqlite:///{db}", create=False).close()
    assert f"upgraded from schema 3 to {SCHEMA_VERSION}" in caplog.text


def test_a_read_command_leaves_another_program_s_sqlite_file_as_it_was(tmp_path: Path) -> None:
    """It was refused, but left in WAL mode for good; a 0-byte file became a 4 KiB
    database (found in review)."""
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE samples (x)")
    empty = tmp_path / "empty.db"
    empty.touch()
    for path in (other, empty):
        proc = closedloop("export", "--store", f"sqlite:///{path}", cwd=tmp_path)
        assert proc.returncode == 2 and "no closedloop store" in proc.stderr, proc.stderr
    with sqlite3.connect(other) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert empty.stat().st_size == 0


def test_a_damaged_json_value_is_said_with_the_query_that_finds_it(tmp_path: Path) -> None:
    """Every read of the campaign failed "JSONDecodeError ... please report it", exit 1,
    naming no row (found in review)."""
    db, cid, said = _status_with_budget(tmp_path, '{"max_trials": 3,,')
    assert "is damaged: a stored value is not valid JSON ('{\"max_trials\": 3,,')" in said
    query = said.split("`sqlite3 ")[1].split("`")[0].split(" ", 1)[1].strip('"')
    with sqlite3.connect(db) as conn:
        assert conn.execute(query).fetchall() == [("campaign", cid)]


def test_a_store_path_that_is_a_folder_is_said_to_be_one(tmp_path: Path) -> None:
    """Was "unable to open database file; check that you can write ... -wal"."""
    proc = closedloop("status", "--store", f"sqlite:///{tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert f"{tmp_path} is a folder; give a file in it" in " ".join(proc.stderr.split())


def test_unwritable_store_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    campaign = Path(__file__).parents[2] / "campaigns" / "branin.yaml"
    proc = closedloop(
        "run", str(campaign), "--store", f"sqlite:///{blocker}/sub/s.db", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert "cannot create the store's folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_campaign_in_a_store_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    Store(f"sqlite:///{db}").close()
    proc = closedloop("status", "--store", f"sqlite:///{db}", "-c", "nope", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no campaign 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_a_file_that_is_not_a_store_is_a_clear_error(tmp_path: Path) -> None:
    notes = tmp_path / "notes.db"
    notes.write_text("these are my lab notes, not a database\n" * 100)
    proc = closedloop("status", "--store", f"sqlite:///{notes}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "cannot open store" in proc.stderr and "file is not a database" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert notes.read_text().startswith("these are my lab notes")  # untouched


def test_a_campaign_named_with_digits_is_found_by_its_name(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    first = store.create_campaign("branin", "", "a.yaml", 1)
    named_1 = store.create_campaign("1", "", "b.yaml", 1)
    year = store.create_campaign("2024", "", "c.yaml", 1)
    assert store.campaign("2024").id == year  # a name, though it looks like an id
    # "1" is the name of one campaign and the id of another: refused, naming both (it took
    # the named one without a word, and `resume -c 1` extended the wrong campaign)
    with pytest.raises(StoreError, match=r"-c 1 is ambiguous") as info:
        store.campaign("1")
    assert f"give -c {named_1} for the campaign named '1', or -c id:1 for 'branin'" in str(
        info.value
    )
    assert store.campaign(f"id:{first}").id == first  # `id:` is always the id
    assert store.campaign(str(named_1)).id == named_1
    assert store.campaign(1).id == first  # an int is always an id
    assert store.campaign(str(year)).id == year  # no such name: the id
    with pytest.raises(StoreError, match="no campaign '²'"):
        store.campaign("²")  # digits to str.isdigit, not to int()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("foo://bar", "store URL foo://bar: no database 'foo' is known"),
        ("postgresql+nodriver://u@h/db", "no database 'postgresql+nodriver' is known"),
        ("mysql://user@host/db", "the database driver for 'mysql' is not installed"),
    ],
)
def test_unknown_dialect_or_missing_driver_is_a_store_error(
    url: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(StoreError, match=message.replace("+", r"\+")):
        Store(url)
    proc = closedloop("status", "--store", url, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert message in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "default", "line"),
    [
        (
            "\n  connection refused\n\tIs the server running on that host?\n",
            "",
            "connection refused",
        ),
        (
            "(Background on this error at: https://sqlalche.me/e/20/e3q8)",
            "x",
            "(Background on this error at: https://sqlalche.me/e/20/e3q8)",
        ),
        (" \n\n", "OperationalError", "OperationalError"),
        (ValueError("disk I/O error\nmore"), "", "disk I/O error"),
    ],
)
def test_first_line_of_a_database_error(text: object, default: str, line: str) -> None:
    """One rule for a database error in a one-line message (the lease's release, the
    store's open error, the CLI's lost store)."""
    from loop.errors import first_line

    assert first_line(text, default) == line


def test_a_budget_that_is_no_mapping_is_said_with_the_mend(tmp_path: Path) -> None:
    """A recorded budget of ``[1, 2]`` (a hand edit): `status` ended "TypeError ... please
    report it" (found in review)."""
    _, cid, said = _status_with_budget(tmp_path, "[1, 2]")
    assert "campaign 'c' (id 1) is damaged in its store: its recorded budget is [1, 2]" in said
    assert f"UPDATE campaign SET budget = NULL WHERE id = {cid}" in said


def _status_with_budget(tmp_path: Path, budget: str) -> tuple[Path, int, str]:
    """``closedloop status`` of a store whose one campaign's stored budget is ``budget``
    (a hand edit): its file, the campaign's id and what it said (exit 2 asserted)."""
    db = tmp_path / "s.db"
    store = Store(f"sqlite:///{db}")
    text = (
        "name: c\nparameters: [{name: x1, type: float, bounds: [-5, 10]}, {name: x2, type: "
        "float, bounds: [0, 15]}]\nobjectives: [{name: y, goal: minimize}]\n"
        "instrument: {simulator: branin}\nbudget: {max_trials: 3}\n"
    )
    cid = store.create_campaign("c", text, str(tmp_path / "c.yaml"), 1)
    store.close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE campaign SET budget = ? WHERE id = ?", (budget, cid))
    proc = closedloop("status", "--store", f"sqlite:///{db}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    return db, cid, " ".join(proc.stderr.split())
