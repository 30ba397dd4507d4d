"""Import the planner class a campaign's ``planner: {plugin: ...}`` names, and pin its origin.

``plugin`` is written as ``instrument.function`` and an instrument file's ``device:`` are:
an entry point of the ``closedloop.planners`` group (a lab's installed package), a
``module:Class`` on Python's path, or ``path/to/file.py:Class`` relative to the campaign
file. Modules and files are imported by ``instruments.import_user_module``, the one way
closedloop runs a user's code; ``planners`` never imports it (the import-linter contracts),
so the campaign loader attaches :func:`loader` to the campaign's ``PlannerConfig``, and
``planners.make_planner`` calls it when it builds the planner.

Importing runs the plugin's top-level code, so it happens only where proposals are needed:
``validate`` and ``run`` of a campaign file, and ``resume`` (after its refusals),
``suggest`` and ``plan`` of a stored campaign, never ``status``, ``export``, ``report``,
``campaigns`` or ``tell`` (README: Security notes).

The store keeps the campaign's text, so ``plugin`` and ``args`` are stored; the plugin's
code is not. :func:`pin_origin` records where it came from (a file's path and SHA-256, an
installed distribution's name and version) when the campaign starts, and warns, naming the
plugin, when a stored campaign goes on with another: its first trials were proposed by
other code.
"""

from __future__ import annotations

import difflib
import importlib.machinery
import importlib.metadata
import inspect
import json
import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from planners._plugin import PlannerPluginError
from simulators._text import file_sha256

logger = logging.getLogger(__name__)

#: The entry-point group a package registers its planners in (``pyproject.toml``:
#: ``[project.entry-points."closedloop.planners"] local = "mylab.planners:LocalSearch"``).
ENTRY_POINT_GROUP = "closedloop.planners"

_FORMS = "module:Class, path/to/file.py:Class (relative to the campaign file) or the name of "
_FORMS += f"an entry point of the {ENTRY_POINT_GROUP!r} group"
_ENTRY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class PluginMissing(PlannerPluginError):
    """A ``plugin:`` whose code cannot be imported here: a file that is gone or broken, a
    package not installed (or broken), an entry point no package registers.

    Not a fault of the campaign text: a stored campaign goes on once the file is restored or
    the package installed, so that, never another planner, is the way on.
    """


def load_class(spec: str, base_dir: Path) -> type:
    """The class ``spec`` (a ``plugin:`` value) names, imported now.

    Raises:
        PluginMissing: the module, file or entry point cannot be found or imported.
        PlannerPluginError: the spec's form, or no such attribute in the module.
    """
    from instruments import InstrumentConfigError
    from instruments._build import import_user_module, is_user_file

    target, colon, attr = spec.rpartition(":")
    if not colon:
        return _entry_point_class(spec)
    if not target or not all(part.isidentifier() for part in attr.split(".")):
        raise PlannerPluginError(
            f"planner plugin {spec!r} is not of a form closedloop imports",
            fix=f"write {_FORMS}",
        )
    is_file = is_user_file(target)
    try:
        module = import_user_module(target, base_dir=base_dir, attr=attr, what="plugin")
    except InstrumentConfigError as exc:
        raise PluginMissing(
            f"planner plugin {spec}: {exc}",
            # the loader's own fix where it has one (a module named like closedloop's)
            fix=exc.fix
            or _restore(
                target,
                attr,
                base_dir,
                is_file=is_file,
                not_found=isinstance(exc.__cause__, ModuleNotFoundError),
            ),
        ) from exc
    found: Any = module
    for part in attr.split("."):
        if not hasattr(found, part):
            where = f"file {target!r}" if is_file else f"module {target!r}"
            classes = sorted(
                n for n, v in vars(module).items() if inspect.isclass(v) and not n.startswith("_")
            )
            close = difflib.get_close_matches(part, classes, n=1)
            raise PlannerPluginError(
                f"planner plugin {spec}: {where} has no {attr!r} (classes there: "
                f"{', '.join(classes) or 'none'})",
                fix=f"did you mean {target}:{close[0]}?"
                if close
                else "name the planner's class after the colon",
            )
        found = getattr(found, part)
    return found  # type: ignore[no-any-return]  # planners._plugin checks it is a class


def _entry_point_class(name: str) -> type:
    """The class an entry point of :data:`ENTRY_POINT_GROUP` names, loaded."""
    if name.endswith(".py") or not _ENTRY_NAME.match(name):
        raise PlannerPluginError(
            f"planner plugin {name!r} is not of a form closedloop imports",
            fix=f"write {_FORMS}" + (f", e.g. {name}:LocalSearch" if name.endswith(".py") else ""),
        )
    from instruments._build import load_entry_point

    return load_entry_point(  # type: ignore[no-any-return]  # planners._plugin checks the class
        ENTRY_POINT_GROUP,
        name,
        what=f"planner plugin {name!r}",
        forms="module:Class, path/to/file.py:Class",
        install="install the package that registers it into this environment, or write "
        "module:Class or path/to/file.py:Class",
        error=PluginMissing,
    )


def _restore(target: str, attr: str, base_dir: Path, *, is_file: bool, not_found: bool) -> str:
    """The fix for a plugin whose code cannot be imported: the file to restore, the file
    beside the campaign that a module name meant, or the package to install.

    A module name not found on Python's path (``not_found``) with a ``.py`` file of that
    name in the campaign's folder meant the file (the import error says so too): the fix
    had said to install a package while the error said to write the file's path (found in
    review)."""
    if not is_file and not_found:
        beside = Path(*target.split(".")).with_suffix(".py")
        if (base_dir / beside).is_file():
            return (
                f"write plugin: {beside.as_posix()}:{attr} (a file path, relative to the "
                "campaign file); a module name is looked up on Python's path, not in the "
                "campaign's folder"
            )
    if is_file:
        path = Path(target) if Path(target).is_absolute() else base_dir / target
        return (
            f"restore or fix the planner's file {path} (it is imported as it is now), or "
            "correct the path (relative to the campaign file)"
        )
    return (
        f"install the package that provides {target!r} into this Python environment (or fix "
        "its import error: `python -c 'import " + target + "'` shows it)"
    )


def loader(spec: str, base_dir: Path) -> Callable[[], type]:
    """What the campaign loader attaches to a ``PlannerConfig``: imports the class when
    first called (a planner built or checked), raising :class:`PlannerPluginError` if it
    cannot (the config words it as the campaign loader asked).

    One import per campaign in a process: every planner rebuilt in it (a resume's, each
    ``suggest``'s) is of the class the first build used."""
    lock = threading.Lock()
    found: list[type] = []

    def load() -> type:
        with lock:
            if not found:
                found.append(load_class(spec, base_dir))
            return found[0]

    return load


# ---------------------------------------------------------------------------- origin
def origin(spec: str, base_dir: Path) -> dict[str, Any] | None:
    """Where the code ``spec`` names comes from, found without importing it: a file's path
    and SHA-256, else the installed distribution's name and version (an entry point's, or
    the one that provides a module), else the module's file. ``None`` when it cannot be
    found (importing it will say why)."""
    from instruments._build import find_entry_point, is_user_file

    target, colon, _ = spec.rpartition(":")
    if not colon:
        point, _known = find_entry_point(ENTRY_POINT_GROUP, spec)
        if point is None:
            return None
        record: dict[str, Any] = {"plugin": spec, "entry_point": point.value}
        if point.dist is not None:
            record.update(distribution=point.dist.name, version=point.dist.version)
        return record
    if is_user_file(target):
        path = Path(target) if Path(target).is_absolute() else base_dir / target
        return _file_record(spec, path.resolve())
    top = target.split(".")[0]
    for dist in importlib.metadata.packages_distributions().get(top, []):
        try:
            return {
                "plugin": spec,
                "distribution": dist,
                "version": importlib.metadata.version(dist),
            }
        except importlib.metadata.PackageNotFoundError:
            continue
    source = _module_file(target)
    return _file_record(spec, source) if source is not None else None


def _file_record(spec: str, path: Path) -> dict[str, Any] | None:
    digest = file_sha256(path)  # None: missing or unreadable, which the import says
    return None if digest is None else {"plugin": spec, "file": str(path), "sha256": digest}


def _module_file(name: str) -> Path | None:
    """The source file of module ``name``, found on ``sys.path`` without importing it or its
    parent packages (``importlib.util.find_spec`` runs a parent's ``__init__``)."""
    path: list[str] | None = None
    spec = None
    for part in name.split("."):
        try:
            spec = importlib.machinery.PathFinder.find_spec(part, path)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        path = list(spec.submodule_search_locations or [])
    source = spec.origin if spec is not None else None
    return Path(source) if source and source.endswith(".py") else None


def pin_origin(spec: str, base_dir: Path, stored: str | None) -> str | None:
    """The origin record (JSON) to store with a campaign whose planner is ``spec``; for a
    stored campaign (``stored``: its record), the stored one, with a warning naming the
    plugin when its code has changed since the campaign started.

    A change is a warning, not a refusal, as a changed ``function:`` file is (a fixed bug
    in one's own planner is a reason to go on): the campaign goes on with the code as it is
    now, and the warning says that its first trials were proposed by other code.
    """
    now = origin(spec, base_dir)
    if stored is None:
        return json.dumps(now) if now is not None else None
    try:
        before = json.loads(stored)
    except ValueError:
        before = None
    if not isinstance(before, dict) or now is None or before.get("plugin") != spec:
        return stored
    changes = [
        f"{key} {before.get(key)} -> {now.get(key)}"
        for key in ("file", "sha256", "entry_point", "distribution", "version")
        if before.get(key) != now.get(key)
    ]
    if changes:
        logger.warning(
            "planner plugin %s has changed since the campaign started (%s): its first trials "
            "were proposed by other code; continuing with the plugin as it is now (start a "
            "new campaign to compare like with like)",
            spec,
            "; ".join(_short(c) for c in changes),
        )
    return stored


def _short(change: str) -> str:
    """A SHA-256 change shown as its first 12 digits each side."""
    if change.startswith("sha256 "):
        _, old, _, new = change.split(" ")
        return f"sha256 {old[:12]}... -> {new[:12]}..."
    return change
