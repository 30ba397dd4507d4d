"""``closedloop examples``: the example campaigns reach a user who installed the wheel.

The wheel had no example campaigns, yet the fix of an empty campaign file was "start from an
example: campaigns/branin.yaml", a file a pip user does not have (found in review). The
examples now ship as ``loop.examples`` (pyproject.toml maps it onto ``campaigns/``), the
command lists and copies them, and the hints name the command. Checked here: the list names
every example, a copy validates and runs from its own folder, a copy never overwrites a
file, and pyproject.toml ships every file of the folder (a new kind of file, or a new
package folder, fails here rather than in a user's install).
"""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

import pytest
from typer.testing import CliRunner

from instruments._instrument_file import InstrumentFileError
from instruments._instrument_file import read_yaml as read_instrument_yaml
from loop.cli import app
from loop.cli_examples import example_files, examples_folder
from loop.config import load_campaign
from loop.errors import CampaignConfigError
from tests.cli_process import closedloop

ROOT = Path(__file__).parents[2]
CAMPAIGNS = ROOT / "campaigns"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: The files of the example folder, as `--copy` writes them (no byte code, no hidden files).
FILES = sorted(example_files(CAMPAIGNS))
YAMLS = [rel for rel in FILES if rel.suffix == ".yaml"]
#: The one example that is an instrument file, not a campaign (the EPICS campaign's).
INSTRUMENT_FILES = {Path("instruments/epics_reactor.yaml")}


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def test_the_folder_found_is_the_checkouts_campaigns() -> None:
    # From a checkout (and an editable install) the lookup falls back to campaigns/.
    assert (examples_folder() / "branin.yaml").read_bytes() == (
        CAMPAIGNS / "branin.yaml"
    ).read_bytes()
    assert YAMLS and Path("mixed_space.py") in FILES and Path("prior_data.csv") in FILES


def test_the_list_names_every_example_and_what_it_needs() -> None:
    code, out = _invoke("examples")
    assert code == 0, out
    listed = set(re.findall(r"^│ (\S+\.yaml) ", out, re.MULTILINE))
    assert listed == {rel.as_posix() for rel in YAMLS}
    for rel in YAMLS:  # each row gives the file's name: (read from the file, not listed here)
        name = re.search(r"^name: (\S+)", (CAMPAIGNS / rel).read_text(), re.MULTILINE)
        assert name is not None and name.group(1) in out, rel
    assert "an EPICS IOC serving its PVs" in out and "a person at the terminal" in out
    assert "closedloop examples --copy" in out


def test_a_copy_validates_and_its_branin_runs_from_its_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "new" / "my-campaigns"  # missing, with a missing parent: created
    code, out = _invoke("examples", "--copy", str(dest))
    assert code == 0, out
    assert sorted(p.relative_to(dest) for p in dest.rglob("*") if p.is_file()) == FILES
    for rel in FILES:
        assert (dest / rel).read_bytes() == (CAMPAIGNS / rel).read_bytes(), rel
    command = f"closedloop run {dest / 'branin.yaml'} --store sqlite:///{dest / 'runs.db'}"
    assert command in " ".join(out.split())

    monkeypatch.chdir(dest)
    for rel in YAMLS:
        if rel in INSTRUMENT_FILES:  # validated as the EPICS campaign's instrument
            with pytest.raises(CampaignConfigError, match="is an instrument file"):
                load_campaign(rel)
            continue
        code, out = _invoke("validate", rel.as_posix())  # the EPICS one needs no IOC
        assert code == 0 and out.startswith("ok "), (rel, out)


@pytest.mark.slow
def test_the_copied_branin_runs_as_the_copy_says(tmp_path: Path) -> None:
    dest = tmp_path / "examples"
    assert _invoke("examples", "--copy", str(dest))[0] == 0
    # From the folder the copy was made in, as the printed command runs it. (Not from inside
    # the copy: the suite runs `python -m loop.cli`, which puts the working folder first on
    # sys.path, and under an editable install the copy's `instruments/` folder would then
    # stand in for the package; the `closedloop` command has no such path entry.)
    done = closedloop(
        "run",
        str(dest / "branin.yaml"),
        "--max-trials",
        "3",
        "--store",
        f"sqlite:///{dest / 'runs.db'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "completed: max_trials reached (3 completed trials)" in done.stdout


def test_a_copy_into_a_folder_with_files_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "branin.yaml").write_text("my own campaign\n")
    code, out = _invoke("examples", "--copy", str(dest))
    assert code == 2
    said = " ".join(out.split())
    assert f"error: {dest} is not empty (it holds branin.yaml): nothing was copied" in said
    fix = f"fix: give a new folder (created for you) or an empty one, e.g. --copy {dest}/closedlo"
    assert fix in said
    assert [p.name for p in dest.iterdir()] == ["branin.yaml"]
    assert (dest / "branin.yaml").read_text() == "my own campaign\n"

    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    code, out = _invoke("examples", "--copy", str(a_file))
    assert code == 2 and "exists and is not a folder" in out and a_file.read_text() == "x"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert _invoke("examples", "--copy", str(empty))[0] == 0
    assert (empty / "branin.yaml").is_file()


def test_a_copy_that_fails_half_way_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    copied: list[object] = []
    real = shutil.copyfileobj

    def full_disk(source: object, target: object) -> None:
        if len(copied) == 3:
            raise OSError(28, "No space left on device")
        copied.append(source)
        real(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(shutil, "copyfileobj", full_disk)
    dest = tmp_path / "a" / "examples"
    code, out = _invoke("examples", "--copy", str(dest))
    assert code == 2 and "No space left on device" in out and "nothing was left behind" in out
    assert list(tmp_path.iterdir()) == []  # the folders it made are gone too


def _glob(rel: PurePosixPath, pattern: str) -> bool:
    """setuptools' package-data glob: ``*`` stays within one folder."""
    parts = PurePosixPath(pattern).parts
    return len(parts) == len(rel.parts) and all(map(fnmatch, rel.parts, parts))


def test_the_wheel_ships_every_file_of_the_examples() -> None:
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"loop.examples": "campaigns"}
    patterns = setuptools["package-data"]["loop.examples"]
    missed = [
        rel.as_posix()
        for rel in FILES
        if not any(_glob(PurePosixPath(rel.as_posix()), p) for p in patterns)
    ]
    assert not missed, f"add a pattern for these to loop.examples in pyproject.toml: {missed}"


def test_the_package_list_names_every_folder_that_ships() -> None:
    """pyproject.toml lists its packages (discovery cannot map ``loop.examples``): a folder
    left out would be left out of the wheel, or its files installed with a warning."""

    def folders(top: Path, name: str) -> set[str]:
        found = set()
        for path in [top, *sorted(p for p in top.rglob("*") if p.is_dir())]:
            rel = path.relative_to(top)
            if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
                continue
            if any(p.is_file() for p in path.iterdir()):
                found.add(".".join([name, *rel.parts]))
        return found

    expected = folders(CAMPAIGNS, "loop.examples")
    for package in ("loop", "instruments", "planners", "simulators"):
        expected |= folders(ROOT / package, package)
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == expected


def test_the_hints_name_the_command_and_a_file_it_writes(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(empty)
    assert info.value.fix.startswith(
        "start from an example: `closedloop examples --copy examples` writes examples/branin.yaml"
    )
    with pytest.raises(InstrumentFileError) as refused:
        read_instrument_yaml("# nothing\n", tmp_path / "bench.yaml")
    assert "writes examples/instruments/epics_reactor.yaml" in str(refused.value)

    # Every example a hint names is one the command writes.
    named = set()
    for source in [*ROOT.glob("loop/*.py"), *ROOT.glob("instruments/*.py")]:
        text = source.read_text()
        named |= set(re.findall(r"""example(?:=|_hint\()["']([^"']+)["']""", text))
    assert named and all((CAMPAIGNS / rel).is_file() for rel in named), named
