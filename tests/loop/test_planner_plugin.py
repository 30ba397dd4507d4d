"""A campaign file runs the user's own planner: ``planner: {plugin: ..., args: {...}}``.

Found in review (a planner researcher's seat): there was no way to run one's own planner,
and the workarounds stored ``kind: random`` with the campaign, so ``resume``, ``suggest``
and ``plan --store`` silently went on with the built-in planner. Checked here, on real
runs (Runner, RunEngine, SQLite): the three forms of ``plugin`` (a file beside the campaign,
a module, an installed entry point); every refusal at the campaign file's line; the plugin
rebuilt by ingesting the store on ``resume`` (proposing what an uninterrupted run would);
its code imported only by the commands that propose (a file that writes a marker when
imported), never by ``status``, ``export``, ``report``, ``campaigns`` or ``tell``; its
origin stored with the campaign, a change warned about and a plugin gone refused with the
store untouched, never replaced by a built-in planner.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loop import Runner, Store, trial_records
from loop.asktell import open_campaign, suggest
from loop.config import StoredCampaignError, load_campaign
from loop.errors import CampaignConfigError
from tests.cli_process import closedloop

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "campaigns" / "local_search.py"

#: The runner patch (store column ``planner_origin``, the plugin imported before ``resume``
#: writes) is delivered separately while loop/runner.py is edited by another helper.
CAMPAIGN = """\
name: own
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives:
  - {name: y, goal: minimize}
instrument: {simulator: branin, latency: 0}
planner:
  plugin: PLUGIN
  args: {radius: 0.2}
  initial: {n: 3}
budget: {max_trials: 6}
seed: 4
"""

# A plugin file that says when its top-level code runs: one line in IMPORTED beside it.
MARKED = """
from pathlib import Path

with open(Path(__file__).with_name("IMPORTED"), "a") as marker:
    marker.write("imported\\n")

"""


def _folder(tmp: Path, plugin: str = "local_search.py:LocalSearch", **replace: str) -> Path:
    """A campaign folder: c.yaml naming ``plugin`` and the example planner as
    local_search.py, with the marker; every command runs in it."""
    tmp.mkdir(parents=True, exist_ok=True)
    future = "from __future__ import annotations\n"
    (tmp / "local_search.py").write_text(EXAMPLE.read_text().replace(future, future + MARKED))
    text = CAMPAIGN.replace("PLUGIN", plugin)
    for old, new in replace.items():
        text = text.replace(old, new)
    (tmp / "c.yaml").write_text(text)
    return tmp


def _imports(folder: Path) -> int:
    """How many times the plugin file's top-level code has run (and forget them)."""
    marker = folder / "IMPORTED"
    if not marker.exists():
        return 0
    count = len(marker.read_text().splitlines())
    marker.unlink()
    return count


def _points(url: str) -> list[tuple[str, str, float, float]]:
    return [
        (t["kind"], t["status"], t["parameters"]["x1"], t["parameters"]["x2"])
        for t in trial_records(url)
    ]


# ---------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    ("planner", "line", "says"),
    [
        (
            "  kind: sobol\n  plugin: local_search.py:LocalSearch\n",
            9,
            "planner.kind: sobol and planner.plugin: local_search.py:LocalSearch both name",
        ),
        (
            "  plugin: local_search.py:LocalSearch\n  acquisition: qUpperConfidenceBound\n",
            10,
            "planner.acquisition applies to kind: botorch only",
        ),
        ("  kind: random\n  args: {radius: 0.2}\n", 10, "kind random takes none"),
        ("  plugin: gone.py:LocalSearch\n", 9, "plugin file 'gone.py' not found"),
        ("  plugin: local_search.py:LocalSerch\n", 9, "has no 'LocalSerch'"),
        ("  plugin: no_such_module:Planner\n", 9, "cannot import module 'no_such_module'"),
        ("  plugin: no-such-entry-point\n", 9, "nor an entry point of the 'closedloop.planners'"),
        ("  plugin: local_search.py\n", 9, "is not of a form closedloop imports"),
        ("  plugin: local_search.py:LocalSearch\n  args: {radius: 2}\n", 10, "radius must be in"),
        (
            "  plugin: local_search.py:LocalSearch\n  args: {width: 2}\n",
            10,
            "unexpected keyword argument 'width'",
        ),
    ],
    ids=[
        "kind-too",
        "acquisition",
        "args-without-plugin",
        "no-file",
        "no-class",
        "no-module",
        "no-entry-point",
        "no-class-named",
        "constructor-refuses",
        "unknown-arg",
    ],
)
def test_a_plugin_the_campaign_cannot_use_is_refused_at_its_line(
    tmp_path: Path, planner: str, line: int, says: str
) -> None:
    folder = _folder(tmp_path)
    text = (folder / "c.yaml").read_text()
    start = text.index("planner:\n") + len("planner:\n")
    end = text.index("budget:")
    (folder / "c.yaml").write_text(text[:start] + planner + text[end:])
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(folder / "c.yaml")
    assert says in info.value.problem, info.value.problem
    assert info.value.line == line and info.value.path == folder / "c.yaml"
    assert info.value.fix


def test_a_plugins_own_check_refuses_the_campaign_at_the_plugin_line(tmp_path: Path) -> None:
    folder = _folder(tmp_path, plugin="one.py:OneObjective")
    (folder / "one.py").write_text(
        "from local_search import LocalSearch\n\n\n"
        "class OneObjective(LocalSearch):\n"
        "    @classmethod\n"
        "    def check(cls, context, **args):\n"
        "        if context.space.dim > 1:\n"
        "            raise ValueError('searches one parameter only')\n"
    )
    sys.path.insert(0, str(folder))
    try:
        with pytest.raises(CampaignConfigError) as info:
            load_campaign(folder / "c.yaml")
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("local_search", None)
    assert info.value.line == 9
    assert "cannot serve this campaign: searches one parameter only" in info.value.problem


def test_validate_on_the_command_line_names_file_line_and_fix(tmp_path: Path) -> None:
    folder = _folder(tmp_path, plugin="local_search.py:LocalSerch")
    result = closedloop("validate", "c.yaml", cwd=folder)
    assert result.returncode == 2, result.stderr
    assert "c.yaml:9: planner plugin local_search.py:LocalSerch: file 'local_search.py' " in (
        result.stderr
    )
    assert "fix: did you mean local_search.py:LocalSearch?" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_module_name_for_the_file_beside_has_the_files_path_as_its_fix(tmp_path: Path) -> None:
    """``plugin: local_search:LocalSearch`` beside local_search.py: the error said to write
    the file's path while its fix said to install a package (found in review)."""
    folder = _folder(tmp_path / "own", plugin="local_search:LocalSearch")
    # from the folder above: `python -m` puts its working folder on Python's path
    result = closedloop("validate", "own/c.yaml", cwd=tmp_path, wide=True)
    assert result.returncode == 2, result.stderr
    err = " ".join(result.stderr.split())
    assert "but local_search.py is in the campaign file's folder" in err, err
    assert "fix: write plugin: local_search.py:LocalSearch (a file path, relative to the " in err
    assert "install the package" not in err and "Traceback" not in err
    from loop.planner_plugin import PluginMissing, load_class

    with pytest.raises(PluginMissing) as elsewhere:  # no such file beside: a package, then
        load_class("no_such_module:Planner", folder)
    assert elsewhere.value.fix.startswith("install the package that provides 'no_such_module'")


@pytest.mark.parametrize(
    ("spec", "copied"),
    [
        ("local_search.py:LocalSearch", ["local_search.py"]),
        ("lab/local_search.py:LocalSearch", ["lab/local_search.py"]),
        ("C:/lab/local_search.py:LocalSearch", ["C:/lab/local_search.py"]),
        ("mylab.planners:LocalSearch", []),
        ("local-search", []),
    ],
)
def test_examples_copy_the_plugin_file_the_loader_imports(spec: str, copied: list[str]) -> None:
    """``examples --copy`` split ``plugin:`` at its first colon where the loader splits at
    its last: a Windows path's drive letter was taken for the file."""
    from loop.cli_examples import _companions

    data = {"parameters": [], "planner": {"plugin": spec}}
    assert _companions(data, Path("c.yaml")) == copied


# ---------------------------------------------------------------------------- forms
def test_a_module_plugin_runs_and_its_file_is_its_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "lib" / "mylab_planners"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    shutil.copy(EXAMPLE, package / "local.py")
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    folder = _folder(tmp_path / "c", plugin="mylab_planners.local:LocalSearch")
    loaded = load_campaign(folder / "c.yaml")
    assert loaded.planner_origin is not None
    origin = json.loads(loaded.planner_origin)
    assert origin["file"] == str((package / "local.py").resolve()) and len(origin["sha256"]) == 64
    summary = Runner(loaded, Store(f"sqlite:///{tmp_path / 's.db'}")).run()
    assert summary.completed == 6


def test_an_entry_point_plugin_records_its_distribution_and_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    (site / "labplan").mkdir(parents=True)
    (site / "labplan" / "__init__.py").write_text(EXAMPLE.read_text())
    info = site / "labplan-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: labplan\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text("[closedloop.planners]\nlocal = labplan:LocalSearch\n")
    monkeypatch.syspath_prepend(str(site))
    folder = _folder(tmp_path / "c", plugin="local")
    loaded = load_campaign(folder / "c.yaml")
    assert loaded.planner_origin is not None
    assert json.loads(loaded.planner_origin) == {
        "plugin": "local",
        "entry_point": "labplan:LocalSearch",
        "distribution": "labplan",
        "version": "1.2.3",
    }
    (folder / "c.yaml").write_text((folder / "c.yaml").read_text().replace("local\n", "locl\n"))
    with pytest.raises(CampaignConfigError) as refused:
        load_campaign(folder / "c.yaml")
    assert refused.value.line == 9 and refused.value.fix == "did you mean 'local'?"


# ---------------------------------------------------------------------------- real runs
def test_resume_rebuilds_the_plugin_and_proposes_what_one_run_would(tmp_path: Path) -> None:
    """Stopped after 4 trials and resumed to 8: the same trials, kinds and points as one
    uninterrupted run of 8 (the plugin is rebuilt by ingesting the store, seeded from the
    campaign's seed), and never a built-in planner's."""
    folder = _folder(tmp_path)
    whole = f"sqlite:///{tmp_path / 'whole.db'}"
    Runner(load_campaign(folder / "c.yaml"), Store(whole), max_trials=8).run()
    parts = f"sqlite:///{tmp_path / 'parts.db'}"
    first = Runner(load_campaign(folder / "c.yaml"), Store(parts), max_trials=4).run()
    assert first.completed == 4
    resumed = Runner.from_store(Store(parts), "own", max_trials=8).resume()
    assert resumed.completed == 8
    assert _points(parts) == _points(whole)
    kinds = [kind for kind, *_ in _points(parts)]
    assert kinds[:3] == ["initial"] * 3 and set(kinds[3:]) == {"local"}, kinds


def test_suggest_and_tell_use_the_plugin(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    runner, created = open_campaign(store, load_campaign(folder / "c.yaml"), None)
    assert created
    proposals = suggest(runner, 2)
    again = suggest(Runner.from_store(store, "own"), 2)  # the first two pending
    assert {p.kind for p in proposals + again} <= {"initial", "local"}
    points = [p.parameters for p in proposals]
    assert all(p.parameters not in points for p in again)  # pending ones never again
    (folder / "local_search.py").unlink()  # tell needs no planner: never imports it
    result = closedloop("tell", "--store", url, str(proposals[0].trial_id), "y=3.5", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert [t["status"] for t in trial_records(url)][:1] == ["completed"]


# ---------------------------------------------------------------------------- security
@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A plugin campaign `run` completed (6 of 6 trials): its folder and store URL."""
    folder = _folder(tmp_path_factory.mktemp("plugin_security"))
    url = f"sqlite:///{folder / 's.db'}"
    result = closedloop("validate", "c.yaml", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert _imports(folder) == 1  # validate checks the planner: it imports the file
    result = closedloop("run", "c.yaml", "--store", url, "-q", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert _imports(folder) == 1  # once, for the check and the run
    yield folder, url


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("status",), 0),
        (("status", "--json"), 0),
        (("export", "-c", "1"), 0),
        (("campaigns",), 0),
        (("report", "-c", "1", "-o", "report.png"), 0),
        (("resume", "-c", "1"), 2),  # completed: refused before anything is imported
        (("suggest", "-c", "1"), 2),  # done: refused before a planner is built
    ],
    ids=["status", "status-json", "export", "campaigns", "report", "resume-done", "suggest-done"],
)
def test_commands_that_only_read_a_stored_campaign_never_import_its_plugin(
    stored: tuple[Path, str], args: tuple[str, ...], code: int
) -> None:
    folder, url = stored
    result = closedloop(*args, "--store", url, cwd=folder)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert _imports(folder) == 0, args


def test_instruments_check_of_a_plugin_campaign_imports_no_planner_code(tmp_path: Path) -> None:
    """A technician checking connections runs no planner code: ``instruments check FILE``
    read the campaign as ``validate`` does, which imports the plugin (found in review)."""
    folder = _folder(tmp_path)
    result = closedloop("instruments", "check", "c.yaml", cwd=folder)
    assert "not an instrument file" in result.stderr, result.stderr  # a simulator campaign
    assert _imports(folder) == 0


def test_commands_that_propose_import_the_plugin_and_tell_does_not(
    stored: tuple[Path, str],
) -> None:
    folder, url = stored
    result = closedloop("plan", "--dry-run", "--store", url, "-c", "1", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert _imports(folder) == 1
    result = closedloop("suggest", "--store", url, "-c", "1", "--max-trials", "7", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert _imports(folder) == 1
    result = closedloop("tell", "--store", url, "7", "y=2.5", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert _imports(folder) == 0
    result = closedloop("resume", "--store", url, "-c", "1", "--max-trials", "8", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert _imports(folder) == 1
    assert [t["kind"] for t in trial_records(url)][6:] == ["local", "local"]


# ---------------------------------------------------------------------------- origin
def test_a_changed_plugin_file_is_warned_about_naming_the_plugin(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _folder(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    Runner(load_campaign(folder / "c.yaml"), Store(url), max_trials=4).run()
    row = sqlite3.connect(tmp_path / "s.db").execute("SELECT planner_origin FROM campaign")
    origin = json.loads(row.fetchone()[0])
    assert origin["file"] == str(folder / "local_search.py") and len(origin["sha256"]) == 64
    with caplog.at_level(logging.WARNING):
        Runner.from_store(Store(url), "own", max_trials=5).resume()
    assert "has changed" not in caplog.text
    with (folder / "local_search.py").open("a") as plugin:
        plugin.write("# a fix\n")
    with caplog.at_level(logging.WARNING):
        Runner.from_store(Store(url), "own", max_trials=6).resume()
    assert "planner plugin local_search.py:LocalSearch has changed since the campaign " in (
        caplog.text
    )


def test_a_plugin_gone_is_refused_with_the_store_untouched(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    Runner(load_campaign(folder / "c.yaml"), Store(url), max_trials=4).run()
    (folder / "local_search.py").rename(folder / "moved.py")
    before = _dump(tmp_path / "s.db")
    for attempt in (
        lambda: Runner.from_store(Store(url), "own", max_trials=6).resume(),
        lambda: suggest(Runner.from_store(Store(url), "own", max_trials=6), 1),
    ):
        with pytest.raises(StoredCampaignError) as info:
            attempt()
        assert "as stored (c.yaml, line 9): planner plugin local_search.py:LocalSearch: " in (
            str(info.value)
        )
        assert "restore or fix the planner's file" in info.value.fix
        assert "nothing was written to the store" in info.value.fix
        assert _dump(tmp_path / "s.db") == before
    result = closedloop("resume", "--store", url, "-c", "own", "--max-trials", "6", cwd=folder)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert _dump(tmp_path / "s.db") == before
    (folder / "moved.py").rename(folder / "local_search.py")  # restored: it goes on
    assert Runner.from_store(Store(url), "own", max_trials=6).resume().completed == 6


def _dump(path: Path) -> list[object]:
    """Every row the campaign's progress is in (campaign, trials, observations, events)."""
    with sqlite3.connect(path) as db:
        return [
            db.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()  # noqa: S608
            for table in ("campaign", "trial", "observation", "campaign_event", "lease")
        ]


def test_a_plugin_that_no_longer_builds_is_refused_by_suggest_untouched(tmp_path: Path) -> None:
    """The plugin's file edited so that its constructor refuses the stored ``args``: suggest
    refuses (the store's copy, the ``args:`` line, the way on), writing nothing."""
    folder = _folder(tmp_path)
    url = f"sqlite:///{tmp_path / 's.db'}"
    Runner(load_campaign(folder / "c.yaml"), Store(url), max_trials=4).run()
    plugin = folder / "local_search.py"
    plugin.write_text(plugin.read_text().replace("if not 0 < radius <= 1:", "if radius < 1:"))
    before = _dump(tmp_path / "s.db")
    with pytest.raises(StoredCampaignError) as info:
        suggest(Runner.from_store(Store(url), "own", max_trials=6), 1)
    assert "as stored (c.yaml, line 10): planner plugin local_search.py:LocalSearch: " in (
        str(info.value)
    )
    assert "raised ValueError: radius must be in (0, 1], got 0.2" in str(info.value)
    assert "nothing was written to the store" in info.value.fix
    assert _dump(tmp_path / "s.db") == before


def test_a_plugins_args_arrive_as_plain_python(tmp_path: Path) -> None:
    """``args:`` reach the constructor as dicts, lists and plain scalars, never the YAML
    reader's own types (a ruamel ``CommentedSeq`` compared with a number raised
    "'<' not supported between instances of 'int' and 'CommentedSeq'"; found in review)."""
    folder = _folder(tmp_path, plugin="probe.py:Probe")
    folder.joinpath("c.yaml").write_text(
        folder.joinpath("c.yaml")
        .read_text()
        .replace(
            "{radius: 0.2}",
            "{radius: [0.1, 0.2], opts: {a: 0x10, b: [yes, ~], 1: &t true}, t: *t, on: 2024-01-01}",
        )
    )
    (folder / "probe.py").write_text(
        "class Probe:\n"
        "    def __init__(self, context, **args):\n"
        "        pass\n\n"
        "    @classmethod\n"
        "    def check(cls, context, **args):\n"
        "        shown = {k: type(v).__name__ for k, v in args.items()}\n"
        "        shown.update({k: type(v).__name__ for k, v in args['opts'].items()})\n"
        "        raise ValueError(f'{shown} {args}')\n"
    )
    with pytest.raises(CampaignConfigError) as info:
        load_campaign(folder / "c.yaml")
    # a number as a key and a date stay what they are: campaigns were stored with them
    assert (
        "{'radius': 'list', 'opts': 'dict', 't': 'bool', 'on': 'date', 'a': 'int', 'b': "
        "'list', 1: 'bool'} {'radius': [0.1, 0.2], 'opts': {'a': 16, 'b': ['yes', None], "
        "1: True}, 't': True, 'on': datetime.date(2024, 1, 1)}" in info.value.problem
    )
