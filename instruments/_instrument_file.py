"""Instrument files: which device sets each campaign parameter and which reading is each output.

An instrument file is YAML, referenced from a campaign (``instrument: {file: reactor.yaml}``)
or written inline under ``instrument: {devices: {...}}``. The schema is pydantic v2 with
``extra="forbid"`` everywhere; YAML is read with ruamel.yaml's round-trip loader (safe, and it
keeps the line of every key), so every error names the file, the line and the fix, like a
campaign file's. ``loop.config`` does the same for campaigns; this module cannot import it
(``instruments`` sits below ``loop``), so the small YAML-with-lines reader lives here and is
the one ``loop`` can reuse.

Every number in an input's declaration (``limits``, ``max_step``, ``tolerance``,
``on_stop``) is in the **campaign's units**; ``device_units`` says what the device speaks, and
values are converted with pint on the way in and out.
"""

from __future__ import annotations

import difflib
import math
import re
import typing
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from instruments._errors import InstrumentConfigError

MAX_FILE_BYTES = 1_000_000
_PV = r"^[A-Za-z0-9_:.\-{}$()\[\]<>]+$"
_DEVICE = r"^[A-Za-z_][A-Za-z0-9_.]*(:[A-Za-z_][A-Za-z0-9_.]*)?$"
_INTERLOCK = re.compile(r"^\s*(\S+?)\s*(==|!=|<=|>=|<|>)\s*(\S+)\s*$")
Operator = Literal["==", "!=", "<=", ">=", "<", ">"]
PVName = Annotated[str, Field(pattern=_PV, min_length=1, max_length=200)]


class InstrumentFileError(InstrumentConfigError):
    """An instrument file that cannot be used, with where and how to fix it.

    Attributes:
        path: the instrument file (or ``<inline>``).
        line: 1-based line of the offending key, when known.
        problem: what is wrong.
        fix: what to do about it (may be empty).
    """

    def __init__(
        self, path: Path | str, problem: str, *, line: int | None = None, fix: str = ""
    ) -> None:
        self.path = Path(path)
        self.line = line
        self.problem = problem
        self.fix = fix
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        message = f"{where}: {problem}" + (f"\n  fix: {fix}" if fix else "")
        super().__init__(message, field="file")


# ---------------------------------------------------------------------------- schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PluginDecl(_Strict):
    """An Ophyd (or bluesky-protocol) device class from Python: ``module:Class`` or the name
    of an entry point in the ``closedloop.instruments`` group; called as ``Class(**args)``."""

    device: str = Field(pattern=_DEVICE, description="module:Class or an entry-point name.")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments.")


class InputDecl(_Strict):
    """One campaign parameter's device: a setpoint/readback PV pair, a motor record or a
    plugin device; with its hardware limits and how a move is judged done."""

    setpoint: PVName | None = Field(default=None, description="PV written with the setpoint.")
    readback: PVName | None = Field(
        default=None, description="PV read back (default: the setpoint PV)."
    )
    motor: PVName | None = Field(default=None, description="An EPICS motor record's prefix.")
    device: str | None = Field(default=None, pattern=_DEVICE, description="Plugin class.")
    args: dict[str, Any] = Field(default_factory=dict, description="Plugin keyword arguments.")
    tolerance: float | None = Field(
        default=None, ge=0, description="A move is done when |readback - setpoint| <= this."
    )
    settle_time: float = Field(default=0.0, ge=0, le=3600, description="Seconds to wait after.")
    timeout: float = Field(default=60.0, gt=0, le=86_400, description="Seconds to reach it.")
    limits: tuple[float, float] | None = Field(
        default=None, description="Hardware limits [low, high], campaign units."
    )
    max_step: float | None = Field(default=None, gt=0, description="Largest change per move.")
    units: str | None = Field(
        default=None, description="Campaign units (default: the parameter's)."
    )
    device_units: str | None = Field(default=None, description="Units the device speaks.")

    @field_validator("limits")
    @classmethod
    def _low_high(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not (math.isfinite(value[0]) and math.isfinite(value[1])):
            raise ValueError("limits must be finite numbers")
        if value is not None and not value[0] < value[1]:
            raise ValueError("limits must be [low, high] with low < high")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> InputDecl:
        sources = [k for k in ("setpoint", "motor", "device") if getattr(self, k) is not None]
        if len(sources) != 1:
            raise ValueError(
                "give exactly one of `setpoint: PV` (with `readback: PV`), `motor: PV` or "
                f"`device: module:Class`; got {sources or 'none'}"
            )
        if self.readback is not None and self.setpoint is None:
            raise ValueError("`readback:` goes with `setpoint:`")
        if self.args and self.device is None:
            raise ValueError("`args:` goes with `device:`")
        _check_units(self.units, self.device_units)
        return self


class OutputDecl(_Strict):
    """One output: a PV (read after the acquisition) or a plugin detector's reading."""

    pv: PVName | None = Field(default=None, description="PV holding the output.")
    device: str | None = Field(default=None, pattern=_DEVICE, description="Plugin class.")
    args: dict[str, Any] = Field(default_factory=dict, description="Plugin keyword arguments.")
    key: str | None = Field(default=None, description="Reading key of the plugin device.")
    units: str | None = Field(default=None, description="Units the campaign wants.")
    device_units: str | None = Field(default=None, description="Units the device gives.")

    @model_validator(mode="after")
    def _one_source(self) -> OutputDecl:
        if (self.pv is None) == (self.device is None):
            raise ValueError("give exactly one of `pv: NAME` or `device: module:Class`")
        if (self.args or self.key) and self.device is None:
            raise ValueError("`args:` and `key:` go with `device:`")
        _check_units(self.units, self.device_units)
        return self


class DoneDecl(_Strict):
    """The acquisition is done when ``pv`` reads ``value``."""

    pv: PVName
    value: float | int | str


class AcquireDecl(_Strict):
    """How a measurement is started and known to be over."""

    pv: PVName = Field(description="PV written to start a measurement.")
    value: float | int | str = Field(default=1, description="Value written.")
    put_complete: bool = Field(
        default=True, description="Wait for CA put-completion (the IOC says when it is done)."
    )
    done: DoneDecl | None = Field(
        default=None, description="Then wait until this PV reads a value."
    )
    timeout: float = Field(default=60.0, gt=0, le=86_400)


class Interlock(_Strict):
    """``name OP value``: ``name`` is an input or output of this file, else a PV."""

    name: str
    op: Operator
    value: float

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.value:g}"


def _parse_interlock(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    match = _INTERLOCK.match(value)
    if match is None:
        raise ValueError(
            f"{value!r} is not an interlock; write `NAME OP NUMBER`, e.g. `door_closed == 1` "
            "or `pressure < 5` (OP: == != < <= > >=)"
        )
    name, op, number = match.groups()
    try:
        threshold = float(number)
    except ValueError:
        raise ValueError(f"{value!r}: {number!r} is not a number") from None
    if not math.isfinite(threshold):
        raise ValueError(f"{value!r}: {number!r} is not a finite number")
    return {"name": name, "op": op, "value": threshold}


class InstrumentFile(_Strict):
    """A whole instrument: inputs (one per campaign parameter), outputs, acquisition, safety."""

    name: str = Field(default="instrument", min_length=1, max_length=100)
    description: str = Field(default="", max_length=10_000)
    control_layer: Literal["caproto", "pyepics"] = Field(
        default="caproto", description="Ophyd's EPICS client: caproto (pure Python) or pyepics."
    )
    prefix: str = Field(default="", max_length=100, description="Prepended to every PV name.")
    connection_timeout: float = Field(default=5.0, gt=0, le=600)
    inputs: dict[str, InputDecl] = Field(min_length=1, max_length=100)
    outputs: dict[str, OutputDecl] = Field(min_length=1, max_length=100)
    acquire: AcquireDecl | None = None
    interlocks: list[Annotated[Interlock, BeforeValidator(_parse_interlock)]] = Field(
        default_factory=list
    )
    interlock_poll: float = Field(
        default=1.0, gt=0, le=3600, description="Seconds between checks while paused."
    )
    on_stop: dict[str, float] = Field(
        default_factory=dict,
        description="Safe state: input name (campaign units) or PV -> value, set on any stop.",
    )

    @field_validator("interlocks", mode="before")
    @classmethod
    def _interlock_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("outputs")
    @classmethod
    def _no_clash(cls, value: dict[str, OutputDecl], info: ValidationInfo) -> Any:
        clash = sorted(set(info.data.get("inputs") or {}) & set(value))
        if clash:
            raise ValueError(f"names {clash} are both inputs and outputs; event keys must differ")
        return value

    @field_validator("on_stop")
    @classmethod
    def _safe_state(cls, value: dict[str, float], info: ValidationInfo) -> Any:
        inputs: dict[str, InputDecl] = info.data.get("inputs") or {}
        outputs = info.data.get("outputs") or {}
        for key, number in value.items():
            if not math.isfinite(number):
                raise ValueError(f"{key} = {number}: a safe state must be a finite number")
            decl = inputs.get(key)
            if decl is None:
                if not re.match(_PV, key) or key in outputs:
                    raise ValueError(f"{key!r} is neither an input nor a PV name")
                continue
            if decl.limits is not None and not decl.limits[0] <= number <= decl.limits[1]:
                raise ValueError(f"{key} = {number:g} is outside its limits {list(decl.limits)}")
        return value


# ---------------------------------------------------------------------------- units
@lru_cache(maxsize=1)
def unit_registry() -> Any:
    """The one pint registry (building it costs ~0.2 s, so only when units are used)."""
    import pint

    return pint.UnitRegistry(autoconvert_offset_to_baseunit=True)


def _check_units(units: str | None, device_units: str | None) -> None:
    if device_units is None:
        return
    if units is None:
        # The campaign parameter's unit is filled in later (see resolve_units).
        _parse_unit(device_units)
        return
    a, b = _parse_unit(units), _parse_unit(device_units)
    if a.dimensionality != b.dimensionality:
        raise ValueError(f"units {units!r} cannot be converted to device_units {device_units!r}")


def _parse_unit(text: str) -> Any:
    import pint

    try:
        return unit_registry().Unit(text)
    except (pint.errors.UndefinedUnitError, AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"unknown unit {text!r} ({exc})") from None


def converter(units: str | None, device_units: str | None) -> tuple[Any, Any]:
    """``(to_device, from_device)`` callables for one value; identity without units."""
    if device_units is None or units is None or _parse_unit(units) == _parse_unit(device_units):
        return (lambda v: v), (lambda v: v)
    ureg = unit_registry()
    q = ureg.Quantity

    def to_device(value: Any) -> float:
        return float(q(float(value), units).to(device_units).magnitude)

    def from_device(value: Any) -> float:
        return float(q(float(value), device_units).to(units).magnitude)

    _check_units(units, device_units)
    return to_device, from_device


# ---------------------------------------------------------------------------- loading
def load_instrument_file(path: str | Path) -> InstrumentFile:
    """Read and validate an instrument file; raise :class:`InstrumentFileError` on any problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError:
        raise InstrumentFileError(path, "is a directory, not an instrument file") from None
    except FileNotFoundError:
        raise InstrumentFileError(path, "no such file", fix="check the path") from None
    except OSError as exc:
        raise InstrumentFileError(path, f"cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise InstrumentFileError(path, f"is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InstrumentFileError(path, "is not UTF-8 text", line=line) from None
    return parse_instrument(read_yaml(text, path), path=path)


def parse_instrument(data: Any, *, path: Path | str = "<inline>") -> InstrumentFile:
    """Validate already-loaded YAML data (a ruamel mapping keeps line numbers)."""
    if isinstance(data, InstrumentFile):
        return data
    try:
        return InstrumentFile.model_validate(data)
    except ValidationError as exc:
        raise explain(exc, data, Path(path), InstrumentFile) from None


def read_yaml(text: str, path: Path) -> Any:
    """Parse YAML keeping line numbers; a mapping at the top or one clear error."""
    if not text.strip():
        raise InstrumentFileError(path, "is empty", fix="start from campaigns/instruments/")
    try:
        data = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        raise InstrumentFileError(
            path,
            f"is not valid YAML: {problem}",
            line=mark.line + 1 if mark is not None else None,
            fix="check indentation, colons and quotes on that line",
        ) from None
    except YAMLError as exc:
        raise InstrumentFileError(path, f"is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise InstrumentFileError(path, "must be a mapping (name:, inputs:, outputs:, ...)", line=1)
    return data


def line_of(data: Any, loc: Sequence[Any]) -> int | None:
    """1-based line of the deepest key of ``loc`` present in ruamel-loaded ``data``."""
    node = data
    line: int | None = None
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedMap | CommentedSeq):
            if line is None and node.lc.line is not None:
                line = node.lc.line + 1
        elif isinstance(node, Mapping) and part in node:  # a plain dict (inline, copied)
            node = node[part]
        else:
            break
    return line


def explain(
    exc: ValidationError, data: Any, path: Path, model: type[BaseModel]
) -> InstrumentFileError:
    """The top-most pydantic error as one message with its line and a fix."""
    errors = exc.errors(include_url=False)
    located = sorted(
        ((line_of(data, e["loc"]), i, e) for i, e in enumerate(errors)),
        key=lambda t: (t[2]["type"] != "extra_forbidden", t[0] or 10**9, t[1]),
    )
    line, _, err = located[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and "[" in p)]
    where = ".".join(str(p) for p in loc) or "the top level"
    message = str(err["msg"]).removeprefix("Value error, ")
    fix = ""
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        near = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        parent = ".".join(str(p) for p in loc[:-1]) or "the top level"
        problem = f"unknown key '{loc[-1]}' in {parent}"
        fix = (
            f"did you mean '{near[0]}'? " if near else ""
        ) + f"allowed keys: {', '.join(allowed)}"
    elif err["type"] == "missing":
        parent = ".".join(str(p) for p in loc[:-1]) or "the top level"
        problem = f"missing required key '{loc[-1]}' in {parent}"
    else:
        shown = err.get("input")
        shown_text = "" if isinstance(shown, Mapping) or shown is None else f" (got {shown!r})"
        problem = f"{where}: {message}{shown_text}" if loc else f"{message}{shown_text}"
    if len(errors) > 1:
        fix = (fix + "; " if fix else "") + f"{len(errors) - 1} more problem(s) after this one"
    return InstrumentFileError(path, problem, line=line, fix=fix)


def _allowed_keys(model: type[BaseModel], loc: Sequence[Any]) -> list[str]:
    annotation: Any = model
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    models = [a for a in _flatten(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    return sorted({name for m in models for name in m.model_fields})


def _step(annotation: Any, part: Any) -> Any:
    for arg in _flatten(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            if isinstance(part, str) and part in arg.model_fields:
                return arg.model_fields[part].annotation
        origin = typing.get_origin(arg)
        if origin is dict:
            return typing.get_args(arg)[1]
        if origin in (list, tuple) and isinstance(part, int):
            return typing.get_args(arg)[0]
    return None


def _flatten(annotation: Any) -> list[Any]:
    import types

    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _flatten(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _flatten(arg)]
    return [annotation]
