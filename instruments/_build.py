"""Turn a campaign's ``instrument:`` section into devices, checking it against the space.

Everything that can be wrong with the section (unknown simulator, parameters the simulator
does not have, bounds outside its domain, a function that cannot be found or called) is
found here, when the campaign loads, and reported naming what is allowed, so a run never
fails on trial 17 for a typo.

Parameters are taken duck-typed (anything with ``name`` and ``bounds`` or ``values``, which
the ``planners`` pydantic models are) so this package never imports ``planners`` and, with
it, torch.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, NoReturn, TypeGuard

from instruments._config import ExecutorConfig, InstrumentConfig
from instruments._errors import ExecutorUnavailable, InstrumentConfigError
from instruments._protocol import Instrument

logger = logging.getLogger(__name__)

ParameterKind = Literal["float", "int", "choice"]
UserFunction = Callable[[dict[str, Any]], Mapping[str, Any]]


@dataclass(frozen=True)
class InputSpec:
    """One campaign parameter reduced to what an instrument needs: its name and domain.

    Attributes:
        name: parameter name (the device's readback key).
        kind: ``float``, ``int`` or ``choice``.
        bounds: ``(lower, upper)`` for ``float``/``int``, else ``None``.
        values: allowed values for ``choice``, else ``None``.
        unit: the unit the value is in (``degC``), or ``None`` where none is declared.
    """

    name: str
    kind: ParameterKind
    bounds: tuple[float, float] | None = None
    values: tuple[Any, ...] | None = None
    unit: str | None = None

    @property
    def domain(self) -> tuple[Any, ...]:
        """``(lo, hi)`` or the tuple of choices: the form ``build_simulated_instrument`` takes."""
        if self.bounds is not None:
            return self.bounds
        return self.values or ()


@dataclass(frozen=True)
class SimulatorInfo:
    """A built-in simulator as the CLI lists it."""

    name: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    description: str


ParameterLike = Any
"""A planners parameter model, a mapping with ``name`` and ``bounds``/``values``, or a
``(name, bounds_or_values)`` pair (a pair of two real numbers is read as bounds)."""


# ---------------------------------------------------------------------------- parameters
def input_specs(parameters: Sequence[ParameterLike]) -> tuple[InputSpec, ...]:
    """Normalise campaign parameters to :class:`InputSpec`, rejecting malformed ones.

    Raises:
        InstrumentConfigError: a parameter without a name or domain, or a duplicate name.
    """
    specs = tuple(_input_spec(p) for p in parameters)
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InstrumentConfigError(f"duplicate parameter names {dupes}")
    return specs


def _input_spec(p: ParameterLike) -> InputSpec:
    if isinstance(p, InputSpec):
        return p
    if isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str):
        name, domain = p
        domain = tuple(domain)
        if len(domain) == 2 and all(_is_real(v) for v in domain):
            pair_kind: ParameterKind = "int" if all(isinstance(v, int) for v in domain) else "float"
            return InputSpec(name, pair_kind, bounds=(domain[0], domain[1]))
        return InputSpec(name, "choice", values=domain)
    get = p.get if isinstance(p, Mapping) else lambda key, default=None: getattr(p, key, default)
    name = get("name")
    if not isinstance(name, str) or not name:
        raise InstrumentConfigError(f"parameter {p!r} has no name")
    values = get("values")
    bounds = get("bounds")
    # A campaign parameter says `type`; a simulator's own ParamSpec says `kind`. Either is
    # what was declared: float bounds may well be whole numbers ([20, 120]).
    declared = get("type") or get("kind")
    unit = get("unit") or None
    if declared == "fixed":
        # An input held at one value: a number gets bounds [v, v] (so numeric simulator inputs
        # and limit checks accept it), anything else is a one-value choice.
        value = get("value")
        if _is_real(value):
            fixed_kind: ParameterKind = "int" if isinstance(value, int) else "float"
            return InputSpec(name, fixed_kind, bounds=(value, value), unit=unit)
        return InputSpec(name, "choice", values=(value,), unit=unit)
    if values is not None:
        return InputSpec(name, "choice", values=tuple(values), unit=unit)
    if bounds is not None:
        lo, hi = bounds
        kind: ParameterKind
        if declared == "int" or declared == "float":
            kind = declared
        else:
            kind = "int" if isinstance(lo, int) and isinstance(hi, int) else "float"
        return InputSpec(name, kind, bounds=(lo, hi), unit=unit)
    raise InstrumentConfigError(f"parameter {name!r} has neither bounds nor values")


def _is_real(v: Any) -> TypeGuard[float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


# ---------------------------------------------------------------------------- simulators
def _simulators() -> ModuleType:
    # Imported lazily: the CLI's --help and config loading of function: instruments should
    # not pay for importing every simulator.
    return importlib.import_module("simulators")


def _problem_registry() -> Mapping[str, Any]:
    registry: Mapping[str, Any] = _simulators().SIMULATORS
    return registry


def list_simulators() -> list[SimulatorInfo]:
    """The built-in simulators with their inputs, outputs and one-line description."""
    infos: list[SimulatorInfo] = []
    for name, problem in sorted(_problem_registry().items()):
        doc = str(getattr(problem, "description", "") or "").strip()
        infos.append(
            SimulatorInfo(
                name=name,
                inputs=input_specs(list(problem.parameters)),
                outputs=tuple(problem.outputs),
                description=doc.splitlines()[0] if doc else "",
            )
        )
    return infos


def _get_problem(name: str) -> Any:
    sims = _simulators()
    try:
        return sims.get_problem(name)
    except (KeyError, ValueError, LookupError) as exc:
        known = sorted(_problem_registry())
        # The registry's nearest name (``simulators.UnknownSimulatorError.suggestion``) is
        # the likely fix of a typo: kept, after the list.
        suggestion = getattr(exc, "suggestion", None)
        hint = f"; did you mean {suggestion!r}?" if suggestion else ""
        raise InstrumentConfigError(
            f"unknown simulator {name!r}; built-in simulators are: {', '.join(known)}{hint}",
            field="simulator",
        ) from exc


def _check_against_problem(
    name: str, problem: Any, specs: Sequence[InputSpec], *, source: str = "simulator"
) -> None:
    """The campaign may narrow a simulator's (or dataset's) domain but never leave or rename
    it, nor make one of its whole-number parameters continuous.

    ``source`` is the word the messages use (``simulator``, ``dataset``). An error about one
    parameter names it (``InstrumentConfigError.parameter``) so the loader can point at its
    line.
    """
    allowed = {s.name: s for s in input_specs(list(problem.parameters))}
    described = ", ".join(_describe_spec(s) for s in allowed.values())
    unknown = [s.name for s in specs if s.name not in allowed]
    missing = [n for n in allowed if n not in {s.name for s in specs}]
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"has no input(s) {unknown}")
        if missing:
            parts.append(f"needs a value for {missing}")
        raise InstrumentConfigError(
            f"{source} {name!r} {' and '.join(parts)}; its inputs are: {described}"
            + (
                f" (a campaign may narrow every input, not leave one out: list them all "
                f"under parameters:, or omit parameters: to take the {source}'s own)"
                if missing
                else ""
            ),
            field=source,
            parameter=unknown[0] if unknown else None,
        )
    for spec in specs:
        ref = allowed[spec.name]

        def refuse(problem: str, spec: InputSpec = spec) -> NoReturn:
            raise InstrumentConfigError(problem, field=source, parameter=spec.name)

        if _other_unit(spec.unit, ref.unit):
            # `unit: s` on the flow reactor's residence time (minutes) ran, stored seconds,
            # and measured at as many minutes: every value off by 60 (found in review).
            refuse(
                f"parameter {spec.name!r} is declared in {spec.unit!r}, but {source} "
                f"{name!r} takes it in {ref.unit!r} and reads every value in that unit "
                f"(fix: write `unit: {ref.unit}` for {spec.name!r}, with its bounds in "
                f"{ref.unit}, or leave `unit:` out)"
            )

        if ref.kind == "choice":
            extra = [v for v in spec.values or () if v not in (ref.values or ())]
            if spec.kind != "choice" or extra:
                refuse(
                    f"parameter {spec.name!r} of {source} {name!r} must be a choice among "
                    f"{list(ref.values or ())}" + (f"; {extra} are not among them" if extra else "")
                )
            continue
        if spec.kind == "choice" or spec.bounds is None or ref.bounds is None:
            refuse(
                f"parameter {spec.name!r} of {source} {name!r} is numeric: "
                f"give bounds within {list(ref.bounds or ())}"
            )
        lo, hi = spec.bounds
        rlo, rhi = ref.bounds
        if lo < rlo or hi > rhi:
            refuse(
                f"parameter {spec.name!r} bounds [{lo}, {hi}] leave the domain of {source} "
                f"{name!r}; allowed is within [{rlo}, {rhi}]"
            )
        # A whole-number parameter (a dataset's strut count, say) declared float: the
        # bounds check cannot see it (`type: float, bounds: [6, 12]` lies inside [6, 12]),
        # yet the planner would propose 9.22, which the source has no meaning for, and
        # every trial would fail. A fixed whole number (`type: fixed, value: 9`) is fine.
        if ref.kind == "int" and spec.kind != "int" and not (lo == hi and float(lo).is_integer()):
            or_omit = ", or leave `parameters:` out to take the dataset's" * (source == "dataset")
            refuse(
                f"parameter {spec.name!r} is declared {spec.kind} with bounds [{lo}, {hi}], but "
                f"{source} {name!r} takes whole numbers only (int in [{rlo}, {rhi}]) (fix: in "
                f"the campaign's `parameters:`, write `type: int` for {spec.name!r}{or_omit})"
            )


def _other_unit(given: str | None, own: str | None) -> bool:
    """Whether a parameter's declared unit ``given`` differs from the unit ``own`` a
    simulator or dataset reads it in (either missing: no difference to judge)."""
    if given is None or own is None or given == own:
        return False
    from instruments._instrument_file import same_unit  # pint: only for two unit texts

    return not same_unit(given, own)


def _describe_spec(spec: InputSpec) -> str:
    if spec.kind == "choice":
        return f"{spec.name} (one of {list(spec.values or ())})"
    return f"{spec.name} ({spec.kind} in {list(spec.bounds or ())})"


# ---------------------------------------------------------------------------- functions
_loaded_files: dict[tuple[Path, int], ModuleType] = {}
# One import at a time: slots (or a deferred function's first calls on two detector threads)
# must not run a file's top-level code twice.
_loading = threading.RLock()


def load_function(spec: str, *, base_dir: Path) -> UserFunction:
    """Resolve ``module:function`` or ``path/to/file.py:function`` to a callable.

    A file path (anything ending in ``.py`` or containing a path separator) is relative to
    ``base_dir`` (the campaign file's folder) and loaded by ``importlib`` from that file; a
    dotted name is imported normally. Text is never ``eval``'d. A file is executed once per
    modification, so checking a campaign and then running it does not run module-level code
    twice.

    This runs the module's top-level code: only what measures (and ``validate``/``run`` of a
    campaign file, which check the function before anything starts) calls it.
    :func:`check_function` checks what can be checked without running anything.

    Raises:
        InstrumentConfigError: malformed spec, missing file or module, the module raising on
            import, no such attribute, or an attribute that is not a one-argument callable.
    """
    target, attr, is_file = _split_function(spec)
    module = import_user_module(target, base_dir=base_dir, attr=attr)
    return _function_of(module, target, attr, is_file=is_file)


def import_user_module(
    target: str, *, base_dir: Path, attr: str, what: str = "function"
) -> ModuleType:
    """Import the module a ``target:attr`` spec of the user's names: the one way closedloop
    imports a user's code (a ``function:`` instrument's function; a ``planner: {plugin:}``
    class, which ``loop.planner_plugin`` imports through this).

    ``target`` is a file path when :func:`is_user_file` says so: relative to ``base_dir``
    (the campaign file's folder), executed once per modification of the file (a check and
    then a run do not run its top-level code twice), registered in ``sys.modules`` under a
    private name; else a dotted module name, imported normally. Text is never ``eval``'d.

    Args:
        target: the part before the colon.
        base_dir: where a relative file path resolves.
        attr: the name after the colon (a module-name error suggests the file beside).
        what: the campaign key the spec is written under (``function``, ``plugin``): it
            words the messages and is the error's ``field``.

    Raises:
        InstrumentConfigError: a missing (or non-``.py``) file, a module that cannot be
            found, or one that raises (or exits) while it is imported.
    """
    with _loading, _no_hard_exit():
        if is_user_file(target):
            return _load_file(target, base_dir, what=what)
        return _import_module(target, base_dir, attr, what=what)


def subscription_factories(spec: Any) -> list[tuple[str, Callable[[], Any]]]:
    """The factories an instrument file's ``subscriptions:`` name (``spec``: its
    :class:`instruments._instrument_file.InstrumentFile`), each with its entry
    (``module:factory``), imported (as a ``function:`` is, :func:`import_user_module`; a
    file path relative to the instrument file) but not called: ``instruments check`` shows
    them so, and :func:`load_subscriptions` calls them.

    Raises:
        InstrumentFileError: naming the file and the entry's line: a module or file that
            cannot be imported, or no such factory.
    """
    factories: list[tuple[str, Callable[[], Any]]] = []
    base_dir = Path(spec._path).parent
    for i, ref in enumerate(spec.subscriptions):
        target, _, attr = ref.rpartition(":")
        try:
            module = import_user_module(target, base_dir=base_dir, attr=attr, what="subscriptions")
        except InstrumentConfigError as exc:
            raise spec.error(f"subscriptions: {exc}", ("subscriptions", i)) from exc
        factory = getattr(module, attr, None)
        if not callable(factory):
            names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
            near = difflib.get_close_matches(attr, names, n=1)
            raise spec.error(
                f"subscriptions: {target!r} has no factory {attr!r}",
                ("subscriptions", i),
                fix=f"did you mean {target}:{near[0]}?"
                if near
                else f"define `def {attr}():` returning a callback (name, doc) there",
            )
        factories.append((ref, factory))
    return factories


def load_subscriptions(spec: Any) -> list[tuple[str, Callable[[str, dict[str, Any]], Any]]]:
    """The callbacks an instrument file's ``subscriptions:`` name, each with its entry: each
    factory (:func:`subscription_factories`) called with no arguments.

    Called once per instrument slot when a campaign starts (``loop.runner``), never by
    ``validate``, ``instruments check`` or ``plan --dry-run``: a factory may connect to a
    server (a Tiled catalog, a Kafka broker), which a check must not need.

    Raises:
        InstrumentFileError: naming the file and the entry's line: as
            :func:`subscription_factories`, or a factory that raises or returns what is not
            a callback.
    """
    callbacks: list[tuple[str, Callable[[str, dict[str, Any]], Any]]] = []
    for i, (ref, factory) in enumerate(subscription_factories(spec)):
        loc = ("subscriptions", i)
        try:
            callback = factory()
        except Exception as exc:
            raise spec.error(
                f"subscriptions: {ref} raised {type(exc).__name__}: {exc}",
                loc,
                fix="fix the factory (it is called with no arguments when a campaign starts), "
                "or remove the entry",
            ) from exc
        if not callable(callback):
            raise spec.error(
                f"subscriptions: {ref}() returned {type(callback).__name__}, not a callback",
                loc,
                fix="return a Bluesky callback: a function (name, doc), a RunRouter, a TiledWriter",
            )
        callbacks.append((ref, callback))
    return callbacks


def find_entry_point(
    group: str, name: str
) -> tuple[importlib.metadata.EntryPoint | None, list[str]]:
    """The entry point ``name`` of ``group``, not loaded (``None`` if no installed package
    registers it), and every name the group has, sorted, for a refusal's "did you mean".

    The lookup behind every name a package registers for closedloop: a planner plugin's
    (``closedloop.planners``, ``loop.planner_plugin``); the caller loads the point and words
    its own refusal."""
    points = importlib.metadata.entry_points(group=group)
    found = next((point for point in points if point.name == name), None)
    return found, sorted(point.name for point in points)


def load_entry_point(
    group: str, name: str, *, what: str, forms: str, install: str, error: Callable[..., Exception]
) -> Any:
    """The object the entry point ``name`` of ``group`` names, loaded; or ``error`` with
    its fix: the package to reinstall when the point does not load, the nearest registered
    name (or ``install``) when no installed package registers it.

    One lookup and one wording for every name a package registers for closedloop (an Ophyd
    device class's, ``closedloop.devices``; a planner plugin's, ``closedloop.planners``).
    ``what`` names the thing in messages (``device 'lab:stage'``), ``forms`` the other ways
    to write it (``module:Class``)."""
    point, known = find_entry_point(group, name)
    if point is not None:
        try:
            return point.load()
        except Exception as exc:
            raise error(
                f"{what}: entry point {point.value!r} cannot be loaded: "
                f"{type(exc).__name__}: {exc}",
                fix=f"reinstall the package that registers {name!r} in this environment (or "
                f"fix its import error), or write {forms}",
            ) from exc
    close = difflib.get_close_matches(name, known, n=1)
    raise error(
        f"{what} is neither {forms} nor an entry point of the {group!r} group "
        f"(installed: {', '.join(known) or 'none'})",
        fix=f"did you mean {close[0]!r}?" if close else install,
    )


def is_user_file(target: str) -> bool:
    """Whether the ``target`` of a ``target:attr`` spec is a file path (ends in ``.py`` or
    holds a path separator), not a dotted module name."""
    return target.endswith(".py") or "/" in target or "\\" in target


def check_function(spec: str, *, base_dir: Path) -> None:
    """Check a ``function:`` without running any of the user's code: its form, that its file
    exists, and for a module already imported (a notebook's ``__main__``), the function.

    A stored campaign is read back by commands that never call its function (``suggest``,
    ``tell``, ``plan --dry-run --store``, a ``resume`` that refuses): its file is the store's
    word, and importing it ran whatever a store writer had put there (found in review). Its
    outputs are the campaign's own ``outputs:``, so nothing needs the module but a measurement.

    Raises:
        InstrumentConfigError: malformed spec, a missing (or non-``.py``) file, or what
            :func:`load_function` says of a function of a module already imported.
    """
    target, attr, is_file = _split_function(spec)
    if is_file:
        _function_file(target, base_dir)
        return
    module = sys.modules.get(target)
    if module is not None:
        _function_of(module, target, attr, is_file=False)


def _split_function(spec: str) -> tuple[str, str, bool]:
    """``(target, attribute, target is a file path)`` of a ``function:``, or the refusal of
    its form."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr.isidentifier():
        raise InstrumentConfigError(
            f"function {spec!r} must look like `module:function` or `path/to/file.py:function`",
            field="function",
        )
    return target, attr, is_user_file(target)


def _function_of(module: ModuleType, target: str, attr: str, *, is_file: bool) -> UserFunction:
    """The function ``attr`` of an imported ``module``, checked to take one argument."""
    where = f"file {target!r}" if is_file else f"module {target!r}"
    try:
        fn = getattr(module, attr)
    except AttributeError:
        if target == "__main__":
            raise SessionFunctionMissing(attr) from None
        candidates = sorted(
            n
            for n, v in vars(module).items()
            if callable(v) and not n.startswith("_") and not isinstance(v, type | ModuleType)
        )
        near = difflib.get_close_matches(attr, candidates, n=1)
        raise InstrumentConfigError(
            f"{where} has no attribute {attr!r}; "
            + (f"did you mean {near[0]!r}? " if near else "")
            + f"functions defined there: {', '.join(candidates) or '(none)'}",
            field="function",
        ) from None
    if not callable(fn):
        raise InstrumentConfigError(
            f"{where}: {attr!r} is a {type(fn).__name__}, not a function", field="function"
        )
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        # it passed, then every trial failed "returned coroutine" with a "never awaited"
        # warning (found in review)
        raise InstrumentConfigError(
            f"{where}: {attr!r} is an async function; closedloop calls it as a plain "
            f"function on the detector's thread: define it with `def`, and run any "
            f"coroutine inside it with asyncio.run(...)",
            field="function",
        )
    if inspect.isgeneratorfunction(fn):
        raise InstrumentConfigError(
            f"{where}: {attr!r} is a generator function (it yields); closedloop needs the "
            "outputs returned: `return {name: value, ...}`",
            field="function",
        )
    try:
        inspect.signature(fn).bind({})
    except TypeError:
        raise InstrumentConfigError(
            f"{where}: {attr}{inspect.signature(fn)} cannot be called with one argument "
            f"(the inputs dict); define it as `def {attr}(inputs): return {{...}}`",
            field="function",
        ) from None
    except ValueError:  # no introspectable signature (some builtins); trust it
        pass
    return fn  # type: ignore[no-any-return]


class _DeferredFunction:
    """A ``function:`` instrument's function, imported when it is first called.

    What :func:`build_instrument` gives the devices unless told to import the function: a
    preview (``plan --dry-run --store``) builds the devices to list a trial's messages and
    never measures, so the file a stored campaign names is never run for it. Once imported,
    ``__code__`` is the function's, so a failure names the user's file and line as ever
    (``simulators._devices._source``).
    """

    def __init__(self, spec: str, base_dir: Path) -> None:
        self._spec = spec
        self._base_dir = base_dir
        self._fn: UserFunction | None = None
        self._lock = threading.Lock()
        self.__name__ = spec.rpartition(":")[2]

    def __call__(self, inputs: dict[str, Any]) -> Mapping[str, Any]:
        with self._lock:
            if self._fn is None:
                self._fn = load_function(self._spec, base_dir=self._base_dir)
        return self._fn(inputs)

    def __getattr__(self, name: str) -> Any:
        # Only the imported function's code, and only once imported: a lookup must never be
        # what runs the user's file (``hasattr``, ``copy`` and ``inspect`` ask for others).
        if name == "__code__" and self._fn is not None:
            return getattr(self._fn, "__code__", None)
        raise AttributeError(name)


class SessionFunctionMissing(InstrumentConfigError):
    """``function: __main__:NAME``, and the running session defines no ``NAME``.

    A function defined in a notebook (or the script that runs the campaign) is
    ``__main__:NAME``: accepted, it is a notebook user's natural way. It lives only as long
    as the session, though: after a kernel restart, ``resume`` found no function and the
    refusal sent the user to abandon the campaign for a new one with its trials as prior
    data (found in review), when defining the function again is all it takes. ``fix`` says
    so; a stored campaign's refusal gives it instead of that way on
    (``loop.config.StoredCampaignError``).
    """

    def __init__(self, name: str) -> None:
        beside = (
            f"put `{name}` in a .py file beside the campaign file (`function: model.py:{name}`)"
        )
        if _main_is_the_cli():
            # From the command line, __main__ is closedloop itself: there is no session to
            # define the function in, so "define it first" would be advice no one can take.
            super().__init__(
                f"`function: __main__:{name}` names a function of a Python session (a "
                "notebook, or a script running the campaign with `Runner`); the command "
                "line has none",
                field="function",
            )
            self.fix = f"{beside}, or run the campaign from that Python session"
        else:
            super().__init__(
                f"`function: __main__:{name}` is a function of the Python session that runs "
                f"the campaign (a notebook, or the script run), and this session defines no "
                f"{name!r}",
                field="function",
            )
            self.fix = (
                f"define `{name}` in this session first (run the notebook cell that defines "
                "it), then run or resume the campaign; a campaign whose function lives in a "
                "notebook can only be resumed from that notebook. For a campaign that must "
                f"also resume from the command line, {beside}"
            )
        self.name = name

    def __str__(self) -> str:  # the problem and the fix, wherever it is shown whole
        return f"{self.args[0]}; {self.fix}"


def _main_is_the_cli() -> bool:
    """Whether ``__main__`` is closedloop's command line (the ``closedloop`` console script,
    or ``python -m loop``), not a user's notebook or script."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name.startswith("loop."):
        return True
    return Path(getattr(main, "__file__", None) or "").name == "closedloop"


def _owner(what: str) -> str:
    """The file whose folder a ``what:`` spec's path is relative to: for ``subscriptions:``
    the file that lists them (an instrument file, or a campaign file's inline ``devices:``),
    else the campaign file."""
    return "file that lists it" if what == "subscriptions" else "campaign file"


def _import_module(name: str, base_dir: Path, attr: str, *, what: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and name.startswith(exc.name):
            # `suzuki:measure` beside suzuki.py: a module name is looked up on Python's path,
            # not in the campaign's folder; the file's path is what was meant.
            beside = Path(*name.split(".")).with_suffix(".py")
            if (Path(base_dir) / beside).is_file():
                raise InstrumentConfigError(
                    f"cannot import module {name!r} (no module named {exc.name!r} on Python's "
                    f"path), but {beside.as_posix()} is in the {_owner(what)}'s folder; write "
                    f"{what}: {beside.as_posix()}:{attr} (a file path, relative to the "
                    f"{_owner(what)})",
                    field=what,
                ) from exc
            raise InstrumentConfigError(
                f"cannot import module {name!r} (no module named {exc.name!r}); give an "
                f"importable module or a path ending in .py relative to the {_owner(what)}",
                field=what,
            ) from exc
        raise InstrumentConfigError(
            f"importing module {name!r} failed: ModuleNotFoundError: {exc}", field=what
        ) from exc
    except SystemExit as exc:
        raise _exited(f"module {name!r}", exc, what=what) from None
    except Exception as exc:
        raise InstrumentConfigError(
            f"importing module {name!r} failed: {type(exc).__name__}: {exc}", field=what
        ) from exc


#: What closedloop imports a user's module for, by the campaign key that names it.
_IMPORTED_TO = {"function": "call the function", "plugin": "build the planner"}


@contextlib.contextmanager
def _no_hard_exit() -> Iterator[None]:
    """``os._exit`` raising ``SystemExit`` while a user's module is imported.

    ``os._exit(0)`` in a function file's top level ended ``validate`` with exit 0 and no
    word (it looked like success), and ``run`` the same way, since ``os._exit`` skips
    every handler (found in review). Raised instead, it is the located refusal a
    ``sys.exit()`` gets. Only for the import: a measurement calling it later ends the
    process as a crash does, and ``resume`` takes the campaign up again.
    """
    hard_exit = os._exit
    process, thread = os.getpid(), threading.get_ident()

    def refuse(status: int) -> NoReturn:
        if os.getpid() != process or threading.get_ident() != thread:
            # a child the module forked (multiprocessing), or another thread: theirs to end
            hard_exit(status)
        raise SystemExit(status)

    os._exit = refuse
    try:
        yield
    finally:
        os._exit = hard_exit


def _exited(where: str, exc: SystemExit, *, what: str = "function") -> InstrumentConfigError:
    """A function's module that called ``sys.exit()`` (or argparse's ``parse_args()``, which
    exits on closedloop's own command line) while being imported: let through, it ended
    closedloop itself, with the script's exit code and no word (found in review)."""
    code = "" if exc.code is None else f"({exc.code!r})"
    return InstrumentConfigError(
        f"{where} exited while being imported (SystemExit{code}: a call of sys.exit() or "
        "os._exit(), or argparse's parse_args() reading closedloop's command line); "
        "closedloop imports it "
        f"to {_IMPORTED_TO.get(what, 'use it')}, so its script code must not run on import: "
        'put that code under `if __name__ == "__main__":`',
        field=what,
    )


def _function_file(target: str, base_dir: Path, *, what: str = "function") -> Path:
    """The ``.py`` file a ``path/to/file.py`` function is in, checked to exist (not run)."""
    path = Path(target)
    if not path.is_absolute():
        path = Path(base_dir) / path
    path = path.resolve()
    if path.suffix != ".py":
        raise InstrumentConfigError(f"{what} file {target!r} must be a .py file", field=what)
    if path.is_dir() or (path.exists() and not path.is_file()):
        # it said "not found" of a folder or a named pipe (found in review)
        kind = "a folder" if path.is_dir() else "not a file (a device or a pipe)"
        raise InstrumentConfigError(
            f"{what} file {target!r} is {kind} ({path}); name the .py file that defines the {what}",
            field=what,
        )
    if not path.is_file():
        raise InstrumentConfigError(
            f"{what} file {target!r} not found (looked for {path}, relative to {base_dir})",
            field=what,
        )
    return path


def _load_file(target: str, base_dir: Path, *, what: str) -> ModuleType:
    """Run a ``path/to/file.py`` (a function's or a planner's) as a module of its own.

    While it runs, its folder is on ``sys.path`` (at the end: a file there named like an
    installed module does not shadow it), as ``python file.py`` has it: ``import helpers``
    of a ``helpers.py`` beside the file failed with ``ModuleNotFoundError`` (found in
    review). Only while it runs: left there, a later campaign's ``module:function`` of the
    same process found a module of this one's folder. A Dask executor sends such modules
    to its workers by value, with the file's own (:mod:`simulators._executor`).
    """
    path = _function_file(target, base_dir, what=what)
    key = (path, path.stat().st_mtime_ns)
    if key in _loaded_files:
        return _loaded_files[key]
    # os.fsencode: a path that is not UTF-8 (Latin-1 bytes) has no str.encode()
    digest = hashlib.sha1(os.fsencode(path), usedforsecurity=False).hexdigest()[:10]
    module_name = f"_closedloop_user_{path.stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise InstrumentConfigError(f"cannot load {path} as Python", field=what)
    clash = _own_package_imported(path)
    if clash:
        # the fix is the message's own (the loader's generic one said to restore the file)
        raise InstrumentConfigError(
            f"{target!r} {clash}", field=what, fix=clash.rpartition(": ")[2]
        )
    module = importlib.util.module_from_spec(module_spec)
    # Registered before executing so dataclasses/pickle inside the user's file can find it.
    sys.modules[module_name] = module
    folder = str(path.parent)
    added = folder not in sys.path
    if added:
        sys.path.append(folder)
    try:
        module_spec.loader.exec_module(module)
    except SystemExit as exc:
        sys.modules.pop(module_name, None)
        raise _exited(f"{what} file {target!r}", exc, what=what) from None
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise InstrumentConfigError(
            f"running {target!r} failed{_line_in(path, exc)}: {type(exc).__name__}: {exc}"
            + _import_hint(exc, path),
            field=what,
        ) from exc
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    for helper in _helpers_of(path):  # its own modules beside it: their imports too
        clash = _own_package_imported(helper)
        if clash:
            sys.modules.pop(module_name, None)
            raise InstrumentConfigError(
                f"{target!r} imports {helper.name}, which {clash}",
                field=what,
                fix=clash.rpartition(": ")[2],
            )
    _loaded_files[key] = module
    return module


def _helpers_of(path: Path) -> list[Path]:
    """The files of the modules beside ``path`` that are imported now (``import helpers``
    of a ``helpers.py`` there): a helper's ``import instruments`` of an ``instruments.py``
    beside it got closedloop's package as well, and every trial then failed (found in
    review, session 39)."""
    found = []
    for other in list(sys.modules.values()):
        file = getattr(other, "__file__", None)
        if file and Path(file).parent == path.parent and Path(file) != path:
            if Path(file).suffix == ".py" and Path(file).stem not in _OWN_PACKAGES:
                found.append(Path(file))
    return sorted(set(found))


def _line_in(path: Path, exc: BaseException) -> str:
    """`` at line 3`` of ``path`` where ``exc`` was raised from in it (its last frame
    there), else ``""``."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == str(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" at line {line}" if line else ""


#: closedloop's own top-level packages: a user's module of one of these names is hidden.
_OWN_PACKAGES = ("loop", "instruments", "planners", "simulators")


def _hidden_beside(own: str, path: Path) -> str:
    """Why the module ``own`` (one of :data:`_OWN_PACKAGES`) that ``path`` imports is not the
    Python module of that name beside it, and what to do; ``""`` if there is none.

    Only Python counts: ``own.py``, or a folder ``own/`` holding Python files. A folder of
    instrument files (``closedloop examples --copy`` makes an ``instruments/``) is no module
    the import could have meant, and a planner's ``from planners import Point`` is then
    closedloop's own, as it should be (found in review, session 39).
    """
    module, folder = path.parent / f"{own}.py", path.parent / own
    if module.is_file():
        beside = module.name
    elif folder.is_dir() and any(folder.glob("*.py")):
        beside = f"{own}/"
    else:
        return ""
    return (
        f"'{own}' is the name of one of closedloop's own packages, which is imported first, "
        f"so {beside} beside {path.name} is not the module imported: rename it (e.g. "
        f"lab_{own}) and its imports"
    )


def _own_package_imported(path: Path) -> str:
    """``imports 'instruments' at line 3; ...`` if ``path`` imports, anywhere in it, a module
    named like one of closedloop's packages that is also a file beside it; else ``""``.

    ``import instruments`` of an ``instruments.py`` beside the file got closedloop's own
    package without an error; only at a call, inside the function, did ``instruments.f``
    fail, as "No instruments attribute f", on every trial until ``max_failures`` (found in
    review, session 39). Read from the file's syntax, so ``validate`` refuses it, an import
    inside the function included. A file that does not parse is left to be run, which says
    why.
    """
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            own = name.split(".")[0]
            hidden = _hidden_beside(own, path) if own in _OWN_PACKAGES else ""
            if hidden:
                return f"imports '{own}' at line {node.lineno}; {hidden}"
    return ""


def _import_hint(exc: Exception, path: Path) -> str:
    """What to do about an import the file could not make: a module of its own folder is
    importable, a relative import is not (the file is run on its own, not as part of a
    package), anything else is to be installed or put on ``PYTHONPATH``."""
    own = getattr(exc, "name", None)
    if isinstance(exc, ImportError) and own in _OWN_PACKAGES:
        # `from instruments import pump_model` of an instruments.py beside the file got
        # closedloop's own package, with no word why (found in review)
        hidden = _hidden_beside(own, path)
        if hidden:
            return f"; {hidden}"
    if isinstance(exc, ImportError) and "relative import" in str(exc):
        return (
            f"; {path.name} is run as a file of its own, not as part of a package: import "
            "the modules beside it by name (`import helpers`, not `from . import helpers`), "
            "or install the package and name the function as module:function"
        )
    if isinstance(exc, ModuleNotFoundError):
        return (
            f"; modules in {path.parent} are importable by name (at the top of the file); "
            "install any other (pip install) or put its folder on PYTHONPATH"
        )
    return ""


# ---------------------------------------------------------------------------- datasets
def dataset_simulator_for(config: InstrumentConfig, base_dir: Path) -> Any:
    """The ``simulators.DatasetSimulator`` of a ``dataset:`` instrument (loaded once, the
    emulator cached on disk); a problem with the data or spec names its file and line.

    Raises:
        InstrumentConfigError: with ``field`` ``dataset`` or ``spec`` (the key at fault).
    """
    sims = _simulators()
    try:
        return sims.dataset_simulator(config.dataset, config.spec, base_dir=base_dir)
    except sims.DatasetError as exc:
        at_spec = (
            config.spec is not None
            and exc.path is not None
            and exc.path.suffix.lower() in (".yaml", ".yml")
        )
        raise InstrumentConfigError(
            f"dataset: {exc}", field="spec" if at_spec else "dataset"
        ) from None


def _dataset_resolved(
    config: InstrumentConfig, specs: Sequence[InputSpec], base_dir: Path
) -> _Resolved:
    """A dataset instrument: the campaign's parameters must be the dataset's (bounds and
    choices may narrow); measurements come from its lookup or emulator."""
    sim = dataset_simulator_for(config, base_dir)
    name = sim.spec.name
    _check_against_problem(name, sim.problem, specs, source="dataset")
    outputs = tuple(sim.problem.outputs)
    if config.outputs:
        unknown = [o for o in config.outputs if o not in outputs]
        if unknown:
            raise InstrumentConfigError(
                f"dataset {name!r} has no output(s) {unknown}; it measured: {', '.join(outputs)}",
                field="outputs",
            )
        outputs = tuple(config.outputs)
    noise = {o: float(sim.noise.get(o, 0.0)) for o in outputs}
    floors = {o: f for o, f in sim.problem.floors.items() if o in outputs}
    return _Resolved(
        name, sim.problem.evaluate, tuple(specs), outputs, default_noise=noise, floors=floors
    )


# ---------------------------------------------------------------------------- build
@dataclass(frozen=True)
class _Resolved:
    name: str
    evaluate: UserFunction
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    failing_region: Any = None  # a simulators.Expression
    default_noise: Any = None  # a dataset's fitted noise, used when `noise:` is not given
    floors: Any = None  # outputs that read no less (a simulator's or dataset's physical 0)


def _failing_region(text: str | None, specs: Sequence[InputSpec]) -> Any:
    """Parse ``failing_region`` over the numeric parameters, or say exactly what is wrong."""
    if text is None:
        return None
    sims = _simulators()
    numeric = [s.name for s in specs if s.kind != "choice"]
    try:
        expression = sims.parse_expression(text, numeric)
    except ValueError as exc:
        raise InstrumentConfigError(f"failing_region: {exc}", field="failing_region") from None
    if not expression.is_condition:
        raise InstrumentConfigError(
            f"failing_region {text!r} is a number, not a condition; write e.g. `x1 + x2 > 1.5`",
            field="failing_region",
        )
    return expression


def _resolve(
    config: InstrumentConfig,
    parameters: Sequence[ParameterLike],
    base_dir: Path,
    *,
    import_function: bool,
) -> _Resolved:
    """The instrument's source, checked against the parameters. A ``function:`` is imported
    with ``import_function``; else only checked (:func:`check_function`) and imported when
    it is first called (:class:`_DeferredFunction`)."""
    specs = input_specs(parameters)
    if not specs:
        raise InstrumentConfigError("an instrument needs at least one parameter")
    if config.simulator is not None:
        problem = _get_problem(config.simulator)
        _check_against_problem(config.simulator, problem, specs)
        available = tuple(problem.outputs)
        outputs = available
        if config.outputs:
            unknown = [o for o in config.outputs if o not in available]
            if unknown:
                raise InstrumentConfigError(
                    f"simulator {config.simulator!r} has no output(s) {unknown}; it measures: "
                    f"{', '.join(available)}",
                    field="outputs",
                )
            outputs = tuple(config.outputs)
        floors = {o: f for o, f in problem.floors.items() if o in outputs}
        resolved = _Resolved(config.simulator, problem.evaluate, specs, outputs, floors=floors)
    elif config.function is not None:
        fn: UserFunction
        if import_function:
            fn = load_function(config.function, base_dir=base_dir)
        else:
            check_function(config.function, base_dir=base_dir)
            fn = _DeferredFunction(config.function, base_dir)
        resolved = _Resolved(
            config.function.rpartition(":")[2], fn, specs, tuple(config.outputs or ())
        )
    elif config.dataset is not None:
        resolved = _dataset_resolved(config, specs, base_dir)
    else:  # unreachable: InstrumentConfig validates exactly one source
        raise InstrumentConfigError("give `simulator:` or `function:`")
    region = _failing_region(config.failing_region, specs)
    if region is not None:
        resolved = dataclasses.replace(resolved, failing_region=region)
    dupes = sorted({o for o in resolved.outputs if resolved.outputs.count(o) > 1})
    clash = sorted(set(resolved.outputs).intersection(s.name for s in specs))
    if dupes or clash:
        raise InstrumentConfigError(
            f"outputs must be unique and differ from parameter names; duplicated {dupes}, "
            f"also parameters {clash}",
            field="outputs",
        )
    resolved = _distinct_data_keys(resolved)
    if isinstance(config.noise, dict):
        unknown = sorted(set(config.noise) - set(resolved.outputs))
        if unknown:
            raise InstrumentConfigError(
                f"noise is given for {unknown}, which are not outputs; outputs are: "
                f"{', '.join(resolved.outputs)}",
                field="noise",
            )
    return resolved


def _distinct_data_keys(resolved: _Resolved) -> _Resolved:
    """Apply the devices' own data-key rule (``simulators._keys.data_key_clashes``) now,
    so a clash fails ``validate`` with the campaign's file and line instead of ``run``.

    Each parameter also records ``{name}_setpoint``, so parameters ``x`` and ``x_setpoint``
    (or an output ``x_setpoint``) cannot both be data keys: that is the user's to rename.
    The detector's device name, however, is only derived from the source (the function's
    name, the dataset's name), so a clash there (``fns.py:y`` measuring ``y``, ``conv.csv``
    measuring ``conv``) is an artefact of naming; the instrument is renamed
    ``{name}_instrument`` instead of refusing a sound campaign.

    Raises:
        InstrumentConfigError: a parameter or output equals another parameter's setpoint key.
    """
    from simulators._keys import data_key_clashes

    params = [s.name for s in resolved.inputs]
    clashes = data_key_clashes(params, resolved.outputs)
    if clashes:
        setpoint_of = {f"{p}_setpoint": p for p in params}
        what = [
            f"{key!r} is both the setpoint of parameter {setpoint_of[key]!r} and "
            f"{'a parameter' if key in params else 'an output'}"
            for key in clashes
            if key in setpoint_of
        ] or [f"{key!r} is recorded twice" for key in clashes]
        outputs_at_fault = any(key in resolved.outputs for key in clashes)
        raise InstrumentConfigError(
            f"data keys clash: {'; '.join(what)}; every parameter is recorded with its "
            f"setpoint as <name>_setpoint (fix: rename {clashes[0]!r}, e.g. to "
            f"{clashes[0].replace('_setpoint', '_target')!r})",
            field="outputs" if outputs_at_fault else None,
        )
    name, number = resolved.name, 0
    while data_key_clashes(params, resolved.outputs, name):
        number += 1
        name = f"{resolved.name}_instrument{number if number > 1 else ''}"
    if name != resolved.name:
        logger.info(
            "instrument %r is named %r: its own name is also a data key", resolved.name, name
        )
        resolved = dataclasses.replace(resolved, name=name)
    return resolved


def describe_instrument(
    config: InstrumentConfig,
    parameters: Sequence[ParameterLike],
    *,
    base_dir: Path,
    import_function: bool = False,
) -> tuple[str, ...]:
    """Check an ``instrument:`` section against the campaign's parameters; return its outputs.

    Builds no devices, so the campaign loader can call it to report errors with line
    numbers and to check objectives against the outputs. A ``function:`` instrument's
    outputs are its own ``outputs:``; its file is imported (its top-level code runs) only
    with ``import_function``, which a campaign file's check asks for (``validate``, ``run``:
    to find the function and how it is called before anything starts). Otherwise only what
    :func:`check_function` can check without running it: a stored campaign is read back by
    commands that never call the function.

    Raises:
        InstrumentConfigError: (a ``ValueError``) anything :func:`build_instrument` rejects.
    """
    if config.file is not None or config.devices is not None:
        return _declared(config, parameters, Path(base_dir), build=False)[0]
    if config.manual:
        return _manual_outputs(config, input_specs(parameters))
    return _resolve(config, parameters, Path(base_dir), import_function=import_function).outputs


def _manual_outputs(config: InstrumentConfig, specs: Sequence[InputSpec]) -> tuple[str, ...]:
    outputs = tuple(config.outputs or ())
    dupes = sorted({o for o in outputs if outputs.count(o) > 1})
    clash = sorted(set(outputs).intersection(s.name for s in specs))
    if dupes or clash:
        raise InstrumentConfigError(
            f"outputs must be unique and differ from parameter names; duplicated {dupes}, "
            f"also parameters {clash}",
            field="outputs",
        )
    return outputs


def build_instrument(
    config: InstrumentConfig,
    parameters: Sequence[ParameterLike],
    *,
    base_dir: Path,
    seed: int | None,
    executor: Any = None,
    first_field_outputs: bool = False,
    import_function: bool = False,
) -> Instrument:
    """Build the Ophyd devices for a campaign's ``instrument:`` section.

    Both sources become the same kind of simulated instrument (settable inputs whose limits
    are the campaign's bounds or choices, a triggerable detector computing the outputs), so
    a dry run drives exactly the code path that hardware would.

    Args:
        config: the ``instrument:`` section.
        parameters: the campaign's parameters (planners models, mappings or pairs).
        base_dir: folder that ``function: path/file.py:fn`` is relative to.
        seed: seed for noise and failure injection; ``None`` for fresh randomness.
        executor: an open executor (:func:`open_executor`) the simulated detector computes
            on; ``None``: in this process.
        first_field_outputs: a stored campaign measured before plugin outputs followed
            hints: they keep reading their first field (see
            :func:`instruments._epics.build_declared_instrument`).
        import_function: import a ``function:`` instrument's file now (the runner, which
            measures, does); else it is imported when the detector first measures, so a
            preview (``plan --dry-run``) never runs it. An ``executor`` always imports it:
            the function itself is sent to the workers.

    Raises:
        InstrumentConfigError: (a ``ValueError``) see :func:`describe_instrument`.
    """
    if config.file is not None or config.devices is not None:
        declared: Instrument = _declared(
            config,
            parameters,
            Path(base_dir),
            build=True,
            first_field_outputs=first_field_outputs,
        )[1]
        return declared
    if config.manual:
        from instruments._manual import ManualInstrument  # local: _manual imports this module

        specs = input_specs(parameters)
        return ManualInstrument(specs, _manual_outputs(config, specs))
    resolved = _resolve(
        config,
        parameters,
        Path(base_dir),
        import_function=import_function or executor is not None,
    )
    sims = _simulators()
    try:
        instrument: Instrument = sims.build_simulated_instrument(
            resolved.evaluate,
            inputs={s.name: s for s in resolved.inputs},  # kind kept: int vs float, 2 choices
            outputs=resolved.outputs,
            noise=_noise(config, resolved),
            latency=config.latency,
            failure_rate=config.failure_rate,
            hang_rate=config.hang_rate,
            nan_rate=config.nan_rate,
            readback_out_of_range_rate=config.readback_out_of_range_rate,
            failing_region=resolved.failing_region,
            seed=seed,
            name=resolved.name,
            executor=executor,
            floors=resolved.floors,
        )
    except sims.FunctionNotSendable as exc:  # a campaign-file problem: the user's function
        raise InstrumentConfigError(str(exc), field="function") from exc
    logger.debug(
        "built instrument %r: inputs %s, outputs %s",
        resolved.name,
        [s.name for s in resolved.inputs],
        resolved.outputs,
    )
    return instrument


def _noise(config: InstrumentConfig, resolved: _Resolved) -> float | dict[str, float]:
    """The noise sd the devices add: ``noise:`` as given, over a dataset's fitted defaults.

    A per-output ``noise: {yield: 1.0}`` on a dataset instrument changes only ``yield``; the
    outputs it does not name keep the noise fitted on the data (dropping them to 0 would make
    them silently noiseless). A single number sets every output.
    """
    default = resolved.default_noise
    if default is None or "noise" not in config.model_fields_set:
        return config.noise if default is None else dict(default)
    if isinstance(config.noise, dict):
        return {**default, **config.noise}
    return config.noise


def _declared(
    config: InstrumentConfig,
    parameters: Sequence[ParameterLike],
    base_dir: Path,
    *,
    build: bool,
    first_field_outputs: bool = False,
) -> tuple[tuple[str, ...], Any]:
    """An instrument file (``file:``/``devices:``): checked against the parameters, and
    built and connected when ``build`` (see :mod:`instruments._epics`)."""
    from instruments import _epics  # local: EPICS/ophyd set-up only for declared instruments
    from instruments._instrument_file import input_units

    spec = _epics.declared_spec(config, base_dir)
    where = f"instrument file {config.file}" if config.file else "instrument.devices"
    specs = input_specs(parameters)
    units = _epics.parameter_units(parameters)
    _epics.check_declared(spec, specs, where=where)
    input_units(spec, units)  # each input's campaign unit against its device_units
    _epics.check_plugins(spec)  # `validate` too: every device class imports (none is made)
    if not build:
        return tuple(spec.outputs), None
    return tuple(spec.outputs), _epics.build_declared_instrument(
        spec, specs, units=units, first_field_outputs=first_field_outputs
    )


# ---------------------------------------------------------------------------- slots
def slot_seed(seed: int | None, index: int) -> int | None:
    """The instrument seed of slot ``index``: slot 0 keeps ``seed``, others get independent
    streams derived from it (so adding slots never changes slot 0's noise and faults)."""
    if seed is None or index == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def open_executor(config: ExecutorConfig) -> Any:
    """Start (``local``) or connect to (``dask``) the campaign's Dask executor.

    Returns ``None`` for ``inprocess``; otherwise a ``simulators.DaskExecutor`` to pass to
    :func:`build_instrument` and to ``close()`` when the campaign ends.

    Raises:
        ExecutorUnavailable: the scheduler did not answer within ``connect_timeout`` (the
            message names the address and the fix), or the local cluster did not start.
    """
    if config.kind == "inprocess":
        return None
    sims = _simulators()
    try:
        if config.kind == "local":
            return sims.DaskExecutor.local(
                config.workers or 2, connect_timeout=config.connect_timeout
            )
        return sims.DaskExecutor.connect(
            config.address or "", connect_timeout=config.connect_timeout
        )
    except sims.ExecutorUnavailable as exc:
        raise ExecutorUnavailable(str(exc), address=exc.address) from exc
