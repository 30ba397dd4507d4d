"""``closedloop examples``: the example campaigns, listed, or copied into a folder of one's own.

The examples are the repository's ``campaigns/`` folder. The wheel ships it as the package
data of ``loop.examples`` (pyproject.toml maps that package onto the folder), so someone who
installed closedloop with pip has the same files as a checkout, and the error messages that
say "start from an example" can name a command that works for both
(``instruments._yamlfile.example_hint``). ``--copy DIR`` writes them into a new or empty
folder, where they run as they are: a function file, prior data and an instrument file are
found relative to the campaign file that names them, and they are copied with it.

Only typer, rich and the standard library are imported here, the rest inside the command:
``loop.cli`` imports this module on every command (``benchmarks/cli_start.py``).
"""

from __future__ import annotations

import importlib.util
import posixpath
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from loop.fmt import Output

console = Output(soft_wrap=True)
err_console = Output(stderr=True, soft_wrap=True)

#: The example a first run starts from (printed after ``--copy``).
FIRST = "branin.yaml"
#: Keys only a campaign file has; an instrument file has ``inputs:``/``outputs:`` instead.
_CAMPAIGN_KEYS = frozenset({"objectives", "budget", "planner", "instrument", "parameters"})


class ExamplesMissing(Exception):
    """Neither the installed ``loop.examples`` nor a checkout's ``campaigns/`` was found."""


def examples_folder() -> Path:
    """The folder of the example campaigns: ``loop.examples`` as installed from the wheel,
    else the ``campaigns/`` folder of the checkout this ``loop`` package is in.

    The checkout is the fallback, not a second copy: running from the repository
    (``PYTHONPATH=.``, the test suite) has no ``loop.examples`` at all, and neither has an
    editable install (``pip install -e .``, as ``make`` does): setuptools' editable finder
    maps ``loop.examples`` to ``campaigns/`` but resolves a mapped package only through its
    ``__init__.py``, and the examples folder is the user's and has none. Both are checkouts.
    """
    try:
        spec = importlib.util.find_spec("loop.examples")
    except ImportError:  # pragma: no cover - `loop` itself is importable: this module is in it
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        if Path(location, FIRST).is_file():
            return Path(location)
    checkout = Path(__file__).resolve().parent.parent / "campaigns"
    if (checkout / FIRST).is_file():
        return checkout
    raise ExamplesMissing(
        "the example campaigns are missing from this installation (no loop/examples beside "
        f"{Path(__file__).parent}); reinstall closedloop, e.g. "
        "`pip install --force-reinstall --no-deps closedloop`"
    )


def example_files(root: Path) -> Iterator[Path]:
    """Every file of the examples, relative to ``root``, in sorted order: what ``--copy``
    writes. Python's byte code and hidden files (an editor's, the OS's) are not examples."""
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        if path.is_file() and path.suffix not in (".pyc", ".pyo"):
            yield rel


def examples(
    copy: Annotated[
        Path | None,
        typer.Option(
            "--copy",
            metavar="DIR",
            help="Copy every example into DIR (created if missing; refused if it exists and "
            "is not empty, so no file of yours is ever overwritten).",
        ),
    ] = None,
) -> None:
    """List the example campaigns: what each runs on and what it needs beyond the install.

    With --copy DIR, write them all into a folder of your own (campaigns with the function
    files, prior data and instrument files they name) and print the command to run the
    first one.
    """
    try:
        root = examples_folder()
    except ExamplesMissing as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    if copy is None:
        _list(root)
        return
    try:
        written = copy_examples(root, copy)
    except _Refused as exc:
        err_console.print(f"error: {exc.problem}\n  fix: {exc.fix}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    import shlex

    campaigns = sum(1 for rel in written if _is_campaign(root / rel))
    console.print(
        f"copied {len(written)} files into {copy} ({campaigns} campaigns; "
        "`closedloop examples` says what each needs). Try one, on a simulated instrument:",
        markup=False,
        highlight=False,
    )
    store = f"sqlite:///{(copy / 'runs.db').as_posix()}"
    command = ["closedloop", "run", (copy / FIRST).as_posix(), "--store", store]
    console.print(f"  {shlex.join(command)}", markup=False, highlight=False)


class _Refused(Exception):
    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem, self.fix = problem, fix


def copy_examples(root: Path, dest: Path) -> list[Path]:
    """Copy every example file under ``root`` into ``dest``; the files written, relative.

    ``dest`` must be missing or an empty folder. Merging into a folder that has files was
    the alternative (copy only the missing ones and name those kept): it too never
    overwrites, but it mixes a user's edited files with new ones of another version (an
    edited campaign beside an instrument file it no longer matches), and a second copy
    into the same folder would look like an update while changing nothing the user had.
    Refusing says so up front, and a new folder is always at hand.

    Each file is created exclusively (``open(..., "xb")``), so not even a file that
    appears meanwhile is overwritten; if a copy fails half-way, what it wrote is removed
    again and the error says why.
    """
    import shutil

    new_folder = "give a new folder (created for you) or an empty one"
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir():
            raise _Refused(f"{dest} exists and is not a folder: nothing was copied", new_folder)
        try:
            inside = sorted(p.name for p in dest.iterdir())
        except OSError as exc:
            raise _Refused(f"cannot read {dest}: {exc.strerror or exc}", new_folder) from None
        if inside:
            shown = ", ".join(inside[:3]) + (f" and {len(inside) - 3} more" if inside[3:] else "")
            raise _Refused(
                f"{dest} is not empty (it holds {shown}): nothing was copied, so that no file "
                "of yours is overwritten or mixed with the examples",
                f"{new_folder}, e.g. --copy {dest / 'closedloop-examples'}",
            )
    files = list(example_files(root))
    made: list[Path] = []  # folders created here, to remove again if the copy fails
    written: list[Path] = []
    try:
        for folder in [dest, *(dest / rel.parent for rel in files)]:
            missing = [p for p in (folder, *folder.parents) if not p.exists()]
            for part in reversed(missing):
                part.mkdir()
                made.append(part)
        for rel in files:
            with (root / rel).open("rb") as source, (dest / rel).open("xb") as target:
                written.append(rel)
                shutil.copyfileobj(source, target)
    except OSError as exc:
        for rel in written:
            (dest / rel).unlink(missing_ok=True)
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                pass
        why = exc.strerror or str(exc)
        where = exc.filename or dest
        raise _Refused(
            f"cannot copy the examples into {dest}: {where}: {why}; nothing was left behind",
            "give a folder you can write to, e.g. one under your home folder",
        ) from None
    return files


# ---------------------------------------------------------------------------- the list
def _list(root: Path) -> None:
    table = Table(title="example campaigns (`closedloop examples --copy DIR` copies them)")
    table.add_column("file", no_wrap=True)
    table.add_column("name: description", ratio=3)
    table.add_column("instrument", ratio=2, overflow="fold")  # paths: folded, never cut
    table.add_column("needs beyond the install", ratio=2)
    for rel in example_files(root):
        if rel.suffix not in (".yaml", ".yml"):
            continue
        data = _read(root / rel)
        if data is None:
            table.add_row(rel.as_posix(), "(not a valid YAML mapping)", "-", "-")
            continue
        if _is_campaign_data(data):
            label, needs = _instrument(data, rel, root)
            needs += _planner_needs(data)
        else:
            label, needs = _instrument_file(data)
            label = f"this instrument file: {label}"
        name = str(data.get("name") or "-")
        about = " ".join(str(data.get("description") or "").split())
        # The files it names that the instrument column does not (prior data): copied too.
        more = [f for f in _companions(data, rel) if f not in label]
        about += "".join(f" (with {f})" for f in more)
        table.add_row(
            escape(rel.as_posix()),
            f"[bold]{escape(name)}[/]" + (f": {escape(about.strip())}" if about else ""),
            escape(label),
            escape("; ".join(needs) or "nothing"),
        )
    console.print(table)
    console.print(
        "Copy them into a folder of your own, then run one: `closedloop examples --copy "
        f"my-campaigns`, then `closedloop run my-campaigns/{FIRST} --store "
        "sqlite:///my-campaigns/runs.db`",
        markup=False,
        highlight=False,
    )


def _read(path: Path) -> Mapping[str, Any] | None:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, YAMLError):
        return None
    return data if isinstance(data, Mapping) else None


def _is_campaign_data(data: Mapping[str, Any]) -> bool:
    return bool(_CAMPAIGN_KEYS & set(data))


def _is_campaign(path: Path) -> bool:
    if path.suffix not in (".yaml", ".yml"):
        return False
    data = _read(path)
    return data is not None and _is_campaign_data(data)


def _instrument_spec(data: Mapping[str, Any]) -> Mapping[str, Any]:
    value = data.get("instrument")
    if value == "manual":
        return {"manual": True}
    return value if isinstance(value, Mapping) else {}


def _beside(rel: Path, name: str) -> str:
    """``name`` (relative to the campaign file ``rel``) as a path in the examples."""
    return posixpath.normpath(posixpath.join(rel.parent.as_posix(), name))


def _companions(data: Mapping[str, Any], rel: Path) -> list[str]:
    """The files a campaign names, which ``--copy`` writes beside it: a function file,
    prior data, an instrument file, a dataset's own CSV and spec, a planner plugin's file."""
    if not _is_campaign_data(data):
        return []
    spec = _instrument_spec(data)
    named: list[str] = []
    function = _user_file(spec.get("function"))
    if function is not None:
        named.append(function)
    for key in ("file", "spec"):
        if isinstance(spec.get(key), str):
            named.append(spec[key])
    dataset = spec.get("dataset")
    if isinstance(dataset, str) and dataset.endswith(".csv"):
        named.append(dataset)
    prior = data.get("prior_data")
    named += [p for p in (prior if isinstance(prior, list) else [prior]) if isinstance(p, str)]
    plugin = _user_file(_plugin(data))
    if plugin is not None:
        named.append(plugin)
    return [_beside(rel, n) for n in named]


def _user_file(spec: object) -> str | None:
    """The file a ``function:`` or ``plugin:`` value (``target:attr``) names, if it names
    one: split and told apart as the loaders do (``rpartition``, ``is_user_file``), so the
    files ``--copy`` writes are the ones the campaign imports."""
    if not isinstance(spec, str):
        return None
    from instruments._build import is_user_file

    target, colon, _ = spec.rpartition(":")
    return target if colon and target and is_user_file(target) else None


def _plugin(data: Mapping[str, Any]) -> str | None:
    """A campaign's ``planner.plugin``, if it names one."""
    planner = data.get("planner")
    plugin = planner.get("plugin") if isinstance(planner, Mapping) else None
    return plugin if isinstance(plugin, str) else None


def _instrument(data: Mapping[str, Any], rel: Path, root: Path) -> tuple[str, list[str]]:
    """A campaign's instrument and what it needs beyond closedloop's own install."""
    spec = _instrument_spec(data)
    if spec.get("manual"):
        outputs = spec.get("outputs") or [
            o.get("name") for o in data.get("objectives") or [] if isinstance(o, Mapping)
        ]
        entered = ", ".join(str(o) for o in outputs)
        return f"manual: you enter {entered}", ["a person at the terminal to enter each result"]
    needs: list[str] = []
    executor = spec.get("executor")
    if isinstance(executor, Mapping) and executor.get("kind") == "dask":
        needs.append("a running Dask scheduler (instrument.executor.address)")
    if spec.get("simulator"):
        return f"simulator {spec['simulator']}", needs
    if spec.get("dataset"):
        return f"dataset {spec['dataset']}", needs
    if spec.get("function"):
        if _user_file(spec["function"]) is None:
            module = str(spec["function"]).rpartition(":")[0] or spec["function"]
            needs.append(f"the Python module {module}, importable")
        return f"function {spec['function']}", needs
    if isinstance(spec.get("file"), str):
        path = _beside(rel, spec["file"])
        found = _read(root / path)
        if found is None:
            return f"instrument file {path}", [*needs, f"the instrument file {path}"]
        label, file_needs = _instrument_file(found)
        return f"file {path}: {label}", needs + file_needs
    if isinstance(spec.get("devices"), Mapping):
        label, file_needs = _instrument_file(spec["devices"])
        return f"inline devices: {label}", needs + file_needs
    return "-", needs


def _instrument_file(data: Mapping[str, Any]) -> tuple[str, list[str]]:
    """An instrument file's devices (EPICS PVs, plugin devices) and what they need."""
    decls = [
        d
        for key in ("inputs", "outputs")
        if isinstance(data.get(key), Mapping)
        for d in data[key].values()
        if isinstance(d, Mapping)
    ]
    plugins = sorted({str(d["device"]) for d in decls if d.get("device")})
    epics = any(not d.get("device") for d in decls)
    layer = str(data.get("control_layer") or "caproto")
    prefix = str(data.get("prefix") or "")
    parts, needs = [], []
    if epics:
        parts.append(f"EPICS ({layer})")
        needs.append(
            f"an EPICS IOC serving its PVs ({prefix}*)"
            if prefix
            else "an EPICS IOC serving its PVs"
        )
        if layer == "pyepics":
            needs.append("pyepics (pip install pyepics)")
    if plugins:
        parts.append("plugin devices " + ", ".join(plugins))
        needs.append("the package of each plugin device (its entry point or module)")
    return " and ".join(parts) or "devices", needs


def _planner_needs(data: Mapping[str, Any]) -> list[str]:
    planner = data.get("planner")
    if isinstance(planner, Mapping) and planner.get("kind") == "ax":
        return ["the ax extra: pip install 'closedloop[ax]'"]
    plugin = _plugin(data)
    if plugin is not None and _user_file(plugin) is None:
        return [f"the planner plugin {plugin}, installed"]
    return []
