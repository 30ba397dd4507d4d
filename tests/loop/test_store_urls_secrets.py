"""A store URL's password is never shown, and an output file keeps its owner's privacy.

Found in a security review: a password given as a query parameter of the URL (libpq and
psycopg read ``?password=`` as readily as ``user:password@``) was printed in the store's
error; a port that is not a number was an internal error ("please report it"); and
``export -o`` over a private (0600) file left it readable by everyone.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from loop import Store, StoreError
from loop.report import write_output
from loop.store import shown_url
from tests.cli_process import closedloop

SECRET = "S3CRETpw"

CAMPAIGN = """
name: kept
parameters: [{name: x, type: float, bounds: [0, 1]}]
objectives: [{name: y, goal: minimize}]
instrument: {function: "fn.py:measure", outputs: [y]}
planner: {kind: sobol}
budget: {max_trials: 4}
seed: 1
"""


# ---------------------------------------------------------------------------- store URLs
@pytest.mark.parametrize(
    ("given", "shown"),
    [
        (
            f"postgresql+psycopg://alice@127.0.0.1:1/db?password={SECRET}",
            "postgresql+psycopg://alice@127.0.0.1:1/db?password=***",
        ),
        (
            f"postgresql+psycopg://alice:{SECRET}@db.lab/closedloop?sslpassword={SECRET}",
            "postgresql+psycopg://alice:***@db.lab/closedloop?sslpassword=***",
        ),
        (  # any spelling a driver may read; other parameters are kept
            f"postgresql+psycopg://alice@h/db?sslmode=require&PassWord={SECRET}",
            "postgresql+psycopg://alice@h/db?PassWord=***&sslmode=require",
        ),
        (  # no password: exactly as given
            "postgresql+psycopg://alice@h:5432/db?sslmode=require",
            "postgresql+psycopg://alice@h:5432/db?sslmode=require",
        ),
        ("sqlite:///runs/lab.db", "sqlite:///runs/lab.db"),
        (  # does not parse: masked by its form, since its error shows it
            f"postgresql+psycopg://alice:{SECRET}@h:notaport/db?password={SECRET}",
            "postgresql+psycopg://alice:***@h:notaport/db?password=***",
        ),
        (f"://alice:{SECRET}@h/db", "://alice:***@h/db"),
    ],
)
def test_every_password_in_a_store_url_is_masked(given: str, shown: str) -> None:
    assert shown_url(given) == shown


def test_a_query_password_is_not_in_the_stores_error_or_url() -> None:
    url = f"postgresql+psycopg://alice@127.0.0.1:1/db?password={SECRET}"
    with pytest.raises(StoreError) as caught:
        Store(url, create=False)  # port 1: refused at once
    assert SECRET not in str(caught.value)
    assert "postgresql+psycopg://alice@127.0.0.1:1/db?password=***" in str(caught.value)


def test_the_cli_shows_no_query_password(tmp_path: Path) -> None:
    """The review's repro: ``status --store URL?password=...`` printed it verbatim."""
    proc = closedloop(
        "status",
        "--store",
        f"postgresql+psycopg://alice@127.0.0.1:1/db?password={SECRET}",
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr
    assert SECRET not in proc.stderr + proc.stdout
    assert "cannot open store postgresql+psycopg://alice@127.0.0.1:1/db?password=***" in (
        proc.stderr
    )


def test_a_port_that_is_not_a_number_is_a_store_error(tmp_path: Path) -> None:
    """Was ``ValueError: invalid literal for int()`` and "please report it"."""
    url = f"postgresql+psycopg://alice:{SECRET}@127.0.0.1:notaport/db"
    with pytest.raises(StoreError, match="the port 'notaport' is not a number") as caught:
        Store(url)
    assert SECRET not in str(caught.value)
    proc = closedloop("status", "--store", url, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    said = " ".join(proc.stderr.split())
    assert (
        "store URL postgresql+psycopg://alice:***@127.0.0.1:notaport/db: the port 'notaport' "
        "is not a number" in said
    )
    assert SECRET not in said and "please report" not in said and "Traceback" not in said


def test_a_url_that_does_not_parse_hides_its_password_too() -> None:
    with pytest.raises(StoreError, match="is not a database URL") as caught:
        Store(f"://alice:{SECRET}@h/db")
    assert SECRET not in str(caught.value)


# ---------------------------------------------------------------------------- output files
def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444])
def test_a_file_written_over_keeps_its_mode(tmp_path: Path, mode: int) -> None:
    out = tmp_path / "private.csv"
    out.write_text("secret\n")
    out.chmod(mode)
    write_output(out, "x,y\n1,2\n")
    assert out.read_text() == "x,y\n1,2\n"
    assert _mode(out) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["private.csv"]  # no temporary left


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file another group takes root")
def test_a_file_written_over_keeps_its_group(tmp_path: Path) -> None:
    """Not this user's group: a 0640 file of another group, renamed over by a new file of
    this user's group, would let that group read it."""
    out = tmp_path / "shared.csv"
    out.write_text("secret\n")
    other = os.getegid() + 1
    os.chown(out, -1, other)
    out.chmod(0o640)
    write_output(out, "x\n")
    assert (out.stat().st_gid, _mode(out)) == (other, 0o640)


def test_a_new_file_follows_the_umask(tmp_path: Path) -> None:
    before = os.umask(0o077)
    try:
        write_output(tmp_path / "new.csv", "x\n")
    finally:
        os.umask(before)
    assert _mode(tmp_path / "new.csv") == 0o600


def test_export_over_a_private_file_keeps_it_private(tmp_path: Path) -> None:
    """The review's repro: ``export -o private.csv`` made a 0600 file 0644."""
    db = tmp_path / "store.db"
    store = Store(f"sqlite:///{db}")
    store.create_campaign("kept", CAMPAIGN, str(tmp_path / "kept.yaml"), 0)
    store.close()
    out = tmp_path / "private.csv"
    out.write_text("secret\n")
    out.chmod(0o600)
    proc = closedloop("export", "--store", f"sqlite:///{db}", "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() != "secret\n"
    assert _mode(out) == 0o600
