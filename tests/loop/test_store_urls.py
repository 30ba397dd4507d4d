"""Store URLs that cannot keep a campaign are refused before anything is created (exit 2).

Found in review: ``closedloop run FILE --store sqlite://`` (or ``sqlite:///``,
``sqlite:///:memory:``, ``sqlite:///?mode=ro``) started the run in an in-memory database
that each of its threads saw empty: "no such table", a thread's traceback, and then "lost
the store ... everything committed before it is kept, and `closedloop resume` continues the
campaign" when nothing was kept. A store path the OS refuses (a name too long, ``%00``) gave
"please report it". Only ``plan --dry-run``'s own preview store lives in memory.

Also found in review: ``sqlite:///~/t.db`` made a folder named ``~`` in the current one; a
store in a folder the user may not write (a colleague's, an archive mount) could not even
be read ("attempt to write a readonly database"); and a campaign file whose name is not
valid UTF-8 failed with "surrogates not allowed" and "please report it".
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from loop.errors import StoreError, cli_command
from loop.store import Store
from tests.cli_process import closedloop, run_cli

CAMPAIGN = """\
name: urls
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives:
  - {name: y, goal: minimize}
instrument: {simulator: branin, latency: 0}
planner: {kind: random}
budget: {max_trials: 1}
seed: 1
"""

IN_MEMORY = ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:///?mode=ro"]
REFUSED = "an in-memory SQLite store keeps nothing once the command ends; give a file"


def _campaign(tmp_path: Path) -> Path:
    file = tmp_path / "urls.yaml"
    file.write_text(CAMPAIGN)
    return file


def _refused(process: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2 with one clean error line: no traceback, no "please report it", no promise."""
    assert process.returncode == 2, process.stderr
    for word in words:
        assert word in process.stderr, process.stderr
    for wrong in ("Traceback", "please report", "resume continues", "no such table"):
        assert wrong not in process.stderr + process.stdout


@pytest.mark.parametrize("url", IN_MEMORY)
def test_run_refuses_an_in_memory_store_before_it_starts(tmp_path: Path, url: str) -> None:
    file = _campaign(tmp_path)
    process = closedloop("run", str(file), "--store", url, "--max-trials", "1", cwd=tmp_path)
    _refused(process, f"store URL {url}: {REFUSED}", "sqlite:///campaign.db")
    assert "trial" not in process.stdout  # no trial was run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["urls.yaml"]  # nothing created


@pytest.mark.parametrize(
    "command",
    [
        ["resume"],
        ["suggest", "{file}"],
        ["tell", "1", "y=0.5"],
        ["status"],
        ["export"],
        ["report", "-o", "r.png"],
        ["release"],
        ["plan", "--dry-run", "--store"],
    ],
    ids=lambda c: c[0],
)
def test_every_command_refuses_an_in_memory_store(tmp_path: Path, command: list[str]) -> None:
    """A command that reads one would only find it empty; one that writes would lose it."""
    file = _campaign(tmp_path)
    args = [a.replace("{file}", str(file)) for a in command]
    if args[-1] != "--store":
        args.append("--store")
    process = closedloop(*args, "sqlite://", cwd=tmp_path)
    _refused(process, f"store URL sqlite://: {REFUSED}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["urls.yaml"]


def test_two_slashes_before_a_file_name_say_the_file(tmp_path: Path) -> None:
    """`sqlite://x.db` (x.db read as a host: an in-memory store) was told to write
    `sqlite:///campaign.db`, another file (found in review)."""
    from loop import Store, StoreError

    with pytest.raises(StoreError) as caught:
        Store("sqlite://x.db")
    assert (
        "store URL sqlite://x.db: with two slashes 'x.db' is read as a host, and the store "
        "would be in memory, keeping nothing; write sqlite:///x.db for that file"
    ) in str(caught.value)


def test_the_store_from_the_environment_is_refused_too(tmp_path: Path) -> None:
    file = _campaign(tmp_path)
    process = run_cli(
        ["run", str(file)],
        cwd=tmp_path,
        env={**os.environ, "CLOSEDLOOP_STORE": "sqlite:///:memory:"},
    )
    _refused(process, f"store URL sqlite:///:memory:: {REFUSED}")


def test_a_query_string_on_a_sqlite_file_is_refused(tmp_path: Path) -> None:
    """``?mode=ro`` was silently ignored: the file was opened, and written, read-write."""
    file = _campaign(tmp_path)
    process = closedloop("run", str(file), "--store", "sqlite:///x.db?mode=ro", cwd=tmp_path)
    _refused(process, "store URL sqlite:///x.db?mode=ro:", "(mode)", "write sqlite:///x.db")
    assert not (tmp_path / "x.db").exists()
    uri = "sqlite:///file:x.db?mode=ro&uri=true"
    process = closedloop("status", "--store", uri, cwd=tmp_path)
    _refused(process, f"store URL {uri}:", "(mode, uri)", "sqlite:///campaign.db")


def test_a_question_mark_in_a_folder_name_is_refused(tmp_path: Path) -> None:
    """``sqlite:///what?/x.db`` put the store in a file named ``what`` (SQLAlchemy drops a
    query with no value; found in review)."""
    file = _campaign(tmp_path)
    (tmp_path / "what?").mkdir()
    process = closedloop("run", str(file), "--store", "sqlite:///what?/x.db", cwd=tmp_path)
    _refused(process, "store URL sqlite:///what?/x.db:", "the file would be 'what'")
    assert not (tmp_path / "what").exists()


def test_plan_dry_run_still_previews_a_campaign_file_in_memory(tmp_path: Path) -> None:
    file = _campaign(tmp_path)
    process = closedloop("plan", "--dry-run", str(file), cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    assert "x1" in process.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["urls.yaml"]


def test_a_store_name_too_long_for_the_os_is_bad_input(tmp_path: Path) -> None:
    url = f"sqlite:///{'x' * 300}.db"
    process = closedloop("status", "--store", url, cwd=tmp_path)
    _refused(process, f"store URL {url}: ", "File name too long", "pass another --store URL")


def test_a_nul_byte_in_the_store_path_is_bad_input(tmp_path: Path) -> None:
    file = _campaign(tmp_path)
    process = closedloop("run", str(file), "--store", "sqlite:///%00", cwd=tmp_path)
    _refused(process, "store URL sqlite:///%00: ", "embedded null byte")
    process = closedloop("run", str(file), "--store", "sqlite:///runs/a%00b.db", cwd=tmp_path)
    _refused(process, "store URL sqlite:///runs/a%00b.db: ", "embedded null byte")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["urls.yaml"]  # no runs/ folder


def test_the_python_api_refuses_an_in_memory_store_unless_it_is_scratch() -> None:
    """A ``Runner`` on ``Store("sqlite://")`` failed in its threads the same way."""
    with pytest.raises(StoreError, match="in-memory SQLite store keeps nothing"):
        Store("sqlite://")
    with pytest.raises(StoreError, match="in-memory SQLite store keeps nothing"):
        Store("sqlite:///:memory:", create=False)
    scratch = Store("sqlite://", scratch=True)
    try:
        assert scratch.campaigns() == []
    finally:
        scratch.close()


# ------------------------------------------------------------------------ ~ is the home folder
def _cli(
    *args: str, cwd: Path, env: Mapping[str, str] | None = None, other_user: bool = False
) -> subprocess.CompletedProcess[str]:
    """``closedloop ARGS`` with extra environment ``env``; ``other_user``: as a user who
    owns none of the files (see :func:`_as_other_user`)."""
    environment = {**os.environ, **(env or {})}
    if not other_user:  # a path that is not UTF-8 is echoed as its bytes
        return run_cli(args, cwd=cwd, env=environment, errors="surrogateescape")
    return subprocess.run(
        [*_as_other_user(), sys.executable, "-m", "loop.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        errors="surrogateescape",
        timeout=300,
        env=environment,
    )


def test_a_store_path_starting_with_a_tilde_is_in_the_home_folder(tmp_path: Path) -> None:
    file = _campaign(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    url = "sqlite:///~/runs/t.db"
    process = _cli("run", str(file), "--store", url, cwd=tmp_path, env={"HOME": str(home)})
    assert process.returncode == 0, process.stderr
    assert (home / "runs" / "t.db").is_file()
    assert not (tmp_path / "~").exists()  # no folder called ~ to be rm -rf'd
    assert f"store sqlite:///{home}/runs/t.db" in process.stdout  # shown as the file it is
    # $CLOSEDLOOP_STORE too, from another folder: the same store
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"HOME": str(home), "CLOSEDLOOP_STORE": url}
    process = _cli("status", "--json", cwd=elsewhere, env=env)
    assert process.returncode == 0, process.stderr
    assert json.loads(process.stdout)["trials"] == {"completed": 1}
    assert sorted(p.name for p in elsewhere.iterdir()) == []


def test_a_tilde_after_the_root_slash_is_refused_with_the_url_meant(tmp_path: Path) -> None:
    file = _campaign(tmp_path)
    process = closedloop("run", str(file), "--store", "sqlite:////~/t.db", cwd=tmp_path)
    _refused(process, "names a folder '~' at the root", "write sqlite:///~/t.db")
    assert not Path("/~/t.db").exists()


def test_a_tilde_with_no_home_to_name_is_refused(tmp_path: Path) -> None:
    url = "sqlite:///~no-such-user-here/t.db"
    process = closedloop("status", "--store", url, cwd=tmp_path)
    _refused(process, "cannot tell which home folder ~ is", "no user 'no-such-user-here'")


# --------------------------------------------------- a store this user may not write: read it
def _as_other_user() -> list[str]:
    """The prefix that runs a command as a user who owns none of the test's files.

    As root (CI): ``setpriv`` to ``nobody``, keeping only CAP_DAC_READ_SEARCH, so that it
    can reach the interpreter (often under ``/root``) and read any file, but write only
    where permissions let it: writing is what these tests are about. Otherwise the tests'
    own user, for whom a folder made read-only (0555) is not writable either.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root, and setpriv (util-linux) is not installed")
    prefix = [
        setpriv,
        *("--reuid=nobody", "--regid=nogroup", "--clear-groups"),
        *("--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"),
    ]
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"running as root, and cannot run as nobody: {probe.stderr.strip()}")
    return prefix


@pytest.fixture
def work() -> Iterator[Path]:
    """A folder for the other user's commands: in the temporary folder, not in pytest's
    ``tmp_path``, which is in a folder of mode 0700 (``/tmp/pytest-of-root``). ``nobody``
    reaches into it only through CAP_DAC_READ_SEARCH, which ``access()`` ignores, and
    SQLite asks ``access()`` whether a store's -wal exists: it would answer no, as for no
    real user."""
    folder = Path(tempfile.mkdtemp(prefix="closedloop-unwritable-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for path in (folder, *folder.rglob("*")):
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(folder)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store of one campaign (two trials) as ``closedloop run`` leaves it, closed cleanly
    (no -wal or -shm beside it). Run once for the module (a command start-up is ~5 s of
    CPU); each test gets its own copy in :func:`archive`."""
    origin = tmp_path_factory.mktemp("written")
    file = _campaign(origin)
    process = closedloop(
        "run", str(file), "--store", "sqlite:///archive/s.db", "--max-trials", "2", cwd=origin
    )
    assert process.returncode == 0, process.stderr
    folder = origin / "archive"
    assert sorted(p.name for p in folder.iterdir()) == ["s.db"]  # closed cleanly
    return folder / "s.db"


@pytest.fixture
def archive(work: Path, written: Path) -> Iterator[Path]:
    """``work/archive/s.db``: a copy of :func:`written`'s store, owned by this user, in a
    folder then made read-only (0555) with the file (0444). Writable again afterwards, so
    that pytest can remove it."""
    folder = work / "archive"
    folder.mkdir()
    _campaign(work)
    shutil.copyfile(written, folder / "s.db")
    (folder / "s.db").chmod(0o444)
    folder.chmod(0o555)
    home = work / "home"  # where the other user may write (matplotlib's cache, a report)
    home.mkdir()
    home.chmod(0o777)
    try:
        yield folder / "s.db"
    finally:
        folder.chmod(0o755)


def _other(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    home = cwd / "home"
    return _cli(*args, cwd=cwd, env={"HOME": str(home)}, other_user=True)


def _trials(export: str) -> list[tuple[str, str, str]]:
    rows = list(csv.DictReader(io.StringIO(export)))
    return [(r["number"], r["status"], r["y"]) for r in rows]


def test_a_store_in_a_folder_the_user_cannot_write_is_read(archive: Path, work: Path) -> None:
    url = "sqlite:///archive/s.db"
    mine = closedloop("export", "--store", url, cwd=work)
    assert mine.returncode == 0, mine.stderr
    assert len(_trials(mine.stdout)) == 2
    for command in (["status"], ["campaigns"], ["status", "--json"]):
        process = _other(*command, "--store", url, cwd=work)
        assert process.returncode == 0, process.stderr
        assert "urls" in process.stdout
        assert "readonly" not in process.stderr
    process = _other("export", "--store", url, cwd=work)
    assert process.returncode == 0, process.stderr
    assert _trials(process.stdout) == _trials(mine.stdout)  # every trial, read back alike
    report = work / "home" / "r.png"
    process = _other("report", "--store", url, "-o", str(report), cwd=work)
    assert process.returncode == 0, process.stderr
    assert report.stat().st_size > 0
    assert sorted(p.name for p in archive.parent.iterdir()) == ["s.db"]  # nothing made beside


def test_reading_a_store_the_user_cannot_write_leaves_nothing_beside_it(
    archive: Path, work: Path
) -> None:
    """A writable folder, a file of another user: SQLite's ``mode=ro`` would create the
    -wal and -shm there as this user's, which the store's owner could then not write."""
    archive.parent.chmod(0o777)
    process = _other("status", "--store", "sqlite:///archive/s.db", cwd=work)
    assert process.returncode == 0, process.stderr
    assert sorted(p.name for p in archive.parent.iterdir()) == ["s.db"]
    archive.chmod(0o644)  # and the owner goes on writing it
    process = closedloop(
        *("resume", "-c", "urls", "--max-trials", "3", "--store", "sqlite:///archive/s.db"),
        cwd=work,
    )
    assert process.returncode == 0, process.stderr
    assert len(_trials(_other("export", "--store", "sqlite:///archive/s.db", cwd=work).stdout)) == 3


def test_a_running_campaigns_store_is_read_through_its_write_ahead_log(
    archive: Path, work: Path
) -> None:
    """A writer has the store open (its -wal and -shm exist): read with them, all of it."""
    archive.parent.chmod(0o755)
    archive.chmod(0o644)
    writer = sqlite3.connect(archive)  # this user keeps it open, with rows only in the -wal
    try:
        assert writer.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("UPDATE campaign SET name = 'renamed'")
        writer.commit()
        assert archive.with_name("s.db-shm").exists()
        process = _other("campaigns", "--store", "sqlite:///archive/s.db", cwd=work)
        assert process.returncode == 0, process.stderr
        assert "renamed" in process.stdout
    finally:
        writer.close()


def test_writing_a_store_the_user_cannot_write_is_refused_with_the_fix(
    archive: Path, work: Path
) -> None:
    url = "sqlite:///archive/s.db"
    folder = archive.parent
    for command in (["resume", "-c", "urls", "--max-trials", "3"], ["release"]):
        process = _other(*command, "--store", url, cwd=work)
        _refused(
            process,
            f"cannot write store {url}: the store's folder {folder} is not writable",
            "SQLite keeps s.db-wal and s.db-shm beside s.db",
            "copy the store into a folder you can write",
        )
    file = _campaign(work)
    process = _other("run", str(file), "--store", "sqlite:///archive/new/x.db", cwd=work)
    _refused(process, f"cannot create store sqlite:///archive/new/x.db: the folder {folder}")
    assert sorted(p.name for p in folder.iterdir()) == ["s.db"]


def test_a_store_needing_an_upgrade_it_cannot_get_says_so(archive: Path, work: Path) -> None:
    archive.parent.chmod(0o755)
    archive.chmod(0o644)
    with sqlite3.connect(archive) as conn:  # as closedloop's store schema 2 left it
        conn.execute("ALTER TABLE trial DROP COLUMN transient")
        conn.execute("UPDATE closedloop_meta SET value = '2' WHERE key = 'schema_version'")
    conn.close()
    archive.chmod(0o444)
    archive.parent.chmod(0o555)
    process = _other("status", "--store", "sqlite:///archive/s.db", cwd=work)
    _refused(process, "was written by an older closedloop (store schema 2", "must be upgraded")


def test_a_write_ahead_log_without_its_index_is_not_read_as_if_empty(
    archive: Path, work: Path
) -> None:
    """Copied without its -shm, into a folder SQLite cannot create one in: ``immutable``
    would not see the trials in the -wal, so the command refuses instead."""
    archive.parent.chmod(0o755)
    archive.chmod(0o644)
    copy = work / "copy"
    copy.mkdir()
    writer = sqlite3.connect(archive)
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("UPDATE campaign SET name = 'renamed'")
        writer.commit()
        for name in ("s.db", "s.db-wal"):
            shutil.copy(archive.with_name(name), copy / name)
    finally:
        writer.close()
    copy.chmod(0o555)
    try:
        process = _other("status", "--store", "sqlite:///copy/s.db", cwd=work)
    finally:
        copy.chmod(0o755)
    _refused(process, "s.db-wal beside it holds changes not yet in s.db", "copy s.db and s.db-wal")


# ------------------------------------------------------------ file names that are not UTF-8
@pytest.mark.skipif(sys.platform != "linux", reason="any bytes in a file name: Linux")
def test_a_campaign_file_whose_name_is_not_utf8_runs_and_resumes(tmp_path: Path) -> None:
    """Latin-1 bytes in the folder and the file name (a USB stick, an old archive): stored
    as ``\\xe9``, and ``resume`` still finds the function file beside the campaign."""
    folder = tmp_path / os.fsdecode(b"donn\xe9es")
    folder.mkdir()
    (folder / "model.py").write_text("def measure(inputs):\n    return {'y': inputs['x1']}\n")
    text = CAMPAIGN.replace(
        "{simulator: branin, latency: 0}", '{function: "model.py:measure", outputs: [y]}'
    )
    file = folder / os.fsdecode(b"caf\xe9.yaml")
    file.write_text(text)
    url = "sqlite:///s.db"
    process = _cli("run", file.name, "--store", url, cwd=folder)
    assert process.returncode == 0, process.stderr
    assert "please report" not in process.stderr
    with sqlite3.connect(folder / "s.db") as conn:
        (stored,) = conn.execute("SELECT config_path FROM campaign").fetchone()
    conn.close()
    assert stored.endswith("/donn\\xe9es/caf\\xe9.yaml")
    whole = f"sqlite:///{folder / 's.db'}"  # from elsewhere: the stored folder is used
    process = _cli("resume", "-c", "urls", "--max-trials", "2", "--store", whole, cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    process = _cli("export", "--store", url, cwd=folder)
    assert [(n, s) for n, s, _ in _trials(process.stdout)] == [
        ("1", "completed"),
        ("2", "completed"),
    ]


def test_a_device_or_a_pipe_is_no_store(tmp_path: Path) -> None:
    """``sqlite:////dev/null`` said "disk I/O error" and left a root-owned
    ``/dev/null-journal`` behind (found in review); a named pipe alike."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path in (Path("/dev/null"), fifo):
        with pytest.raises(StoreError, match=r"is not a file \(a device or a pipe\); give a file"):
            Store(f"sqlite:///{path}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]
    assert not Path("/dev/null-journal").exists()


def test_a_command_to_paste_names_its_store_and_its_campaign() -> None:
    """Pasted, a bare `closedloop resume` (or `status`, `suggest`) acts on the default store
    and its latest campaign, not the one the message was about (session 37: the preview's
    "extends it", the stop and release notes, a refused `tell` or `suggest`)."""
    assert cli_command("resume", "sqlite:///runs/x.db", 3, "--max-trials 40") == (
        "closedloop resume --store sqlite:///runs/x.db -c 3 --max-trials 40"
    )
    assert cli_command("tell", "sqlite:////a b/x.db", None, "TRIAL_ID") == (
        "closedloop tell --store 'sqlite:////a b/x.db' TRIAL_ID"
    )


def test_a_command_to_paste_names_a_store_in_any_folder(tmp_path: Path) -> None:
    """A store in `Données de l'été µL` was printed unquoted in the commands to paste, and
    the shell refused them (found in review)."""
    folder = tmp_path / "Données de l'été µL"
    folder.mkdir()
    url = f"sqlite:///{folder / 'runs.db'}"
    ran = closedloop(
        "run",
        str(Path(__file__).parents[2] / "campaigns" / "branin.yaml"),
        "--store",
        url,
        "--max-trials",
        "1",
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    refused = closedloop("status", "--store", url, "-c", "no-such-campaign", cwd=tmp_path)
    assert refused.returncode == 2
    command = refused.stderr.split("`")[1]
    assert command.startswith("closedloop campaigns --store '"), command
    pasted = subprocess.run(
        ["bash", "-c", command.replace("closedloop", sys.executable + " -m loop", 1)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert pasted.returncode == 0, pasted.stderr
    assert "branin" in pasted.stdout


def test_a_command_to_paste_never_shows_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    """Some commands printed the password the user had typed, others ``***``, which fails
    when pasted (found in review, session 37). The password is always hidden; where the URL
    came from ``$CLOSEDLOOP_STORE``, a command printed to the terminal at once names the
    variable, and works as pasted; one that may be stored (a stop reason) never does: shown
    in another shell, it acted on the variable's store there (review AA, session 39)."""
    url = "postgresql+psycopg://lab:s3cret@db.example/runs"
    monkeypatch.delenv("CLOSEDLOOP_STORE", raising=False)
    masked = "closedloop resume --store 'postgresql+psycopg://lab:***@db.example/runs' -c 2"
    assert cli_command("resume", url, 2) == masked
    assert cli_command("resume", "postgresql+psycopg://lab:***@db.example/runs", 2) == masked
    assert cli_command("resume", url, 2, printed=True) == masked
    monkeypatch.setenv("CLOSEDLOOP_STORE", url)
    for given in (url, "postgresql+psycopg://lab:***@db.example/runs"):
        assert cli_command("resume", given, 2, printed=True) == (
            'closedloop resume --store "$CLOSEDLOOP_STORE" -c 2'
        )
        assert cli_command("resume", given, 2) == masked  # may be stored: no variable
    # another store than the variable's is shown masked, not replaced by the variable
    other = "postgresql+psycopg://lab:s3cret@db.example/other"
    assert "$CLOSEDLOOP_STORE" not in cli_command("resume", other, 2, printed=True)
    # a URL without a password is written out, wherever it came from
    monkeypatch.setenv("CLOSEDLOOP_STORE", "sqlite:///runs/x.db")
    assert cli_command("status", "sqlite:///runs/x.db", 1, printed=True) == (
        "closedloop status --store sqlite:///runs/x.db -c 1"
    )


def test_a_notebook_campaign_is_resumed_by_the_python_call() -> None:
    """A ``__main__:`` function's campaign cannot be resumed from the command line: its
    messages (a misnamed key's stop, status's owed retry) name the Python call, a budget
    option as its keyword (found in review, session 39)."""
    from loop.errors import resume_command

    url = "sqlite:///runs/x.db"
    assert resume_command("__main__:measure", url, 1, "--max-trials 13") == (
        "Runner.from_store(Store('sqlite:///runs/x.db'), 1, max_trials=13).resume()"
    )
    assert "max_duration=7200.0" in resume_command("__main__:measure", url, 1, "--max-duration 2h")
    assert resume_command("model.py:measure", url, 1, "--max-trials 13") == (
        "closedloop resume --store sqlite:///runs/x.db -c 1 --max-trials 13"
    )
