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

Run metadata (``metadata:``, ``required_metadata:``) is checked here too, one way for both
files: the instrument file's facility keys and the campaign file's own (``loop.config``) go
into every run's start document, so both follow :func:`metadata_problem`.
"""

from __future__ import annotations

import copy
import logging
import math
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from instruments._config import RuleError
from instruments._errors import InstrumentConfigError
from instruments._yamlfile import (
    BOOLEANS_ALLOWED,
    MORE_PROBLEMS,
    line_of,
    read_yaml_mapping,
    refuse_booleans,
)
from instruments._yamlfile import explain as shared_explain
from simulators._text import MAX_FILE_BYTES, TextFileError, read_text

logger = logging.getLogger(__name__)

_PV = r"^[A-Za-z0-9_:.\-{}$()\[\]<>]+$"
#: A plugin ``device:``: ``module:Class`` (dotted), or an entry point's name; checked, with
#: the fix for each wrong form, when the class is loaded (``instruments._epics``).
DEVICE_FORM = r"[A-Za-z_][A-Za-z0-9_.]*(:[A-Za-z_][A-Za-z0-9_.]*)?"
_INTERLOCK = re.compile(r"^\s*(\S+?)\s*(==|!=|<=|>=|<|>)\s*(\S+)\s*$")
Operator = Literal["==", "!=", "<=", ">=", "<", ">"]


def _pv_name(value: str) -> str:
    """A PV name in the characters EPICS allows, said in words (pydantic printed its
    regular expression: found in review)."""
    if re.fullmatch(_PV, value):
        return value
    bad = sorted({c for c in value if not re.fullmatch(_PV, c)})
    shown = ", ".join("a space" if c == " " else repr(c) for c in bad)
    raise RuleError(
        f"{value!r} is not a PV name: it has {shown}",
        fix="write the record's name as the IOC serves it (letters, digits and "
        "_ : . - { } $ ( ) [ ] < >), e.g. LAB:R1:temp:SP",
    )


PVName = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_pv_name)]


#: Start-document keys that closedloop or Bluesky write themselves: run metadata may not set
#: them (a ``uid`` or ``time`` would break the RunEngine; a ``campaign`` or ``trial_id`` would
#: hide which trial a stored run is). ``instruments._plans.RESERVED_MD_KEYS`` is a subset
#: (a test holds it to that), with the keys the RunEngine, the runner and Bluesky's
#: conventions (``detectors``, ``motors``, ``num_points``, ``hints``) add.
START_DOC_KEYS = frozenset(
    {
        # the RunEngine and its plans
        "uid",
        "time",
        "scan_id",
        "versions",
        "plan_type",
        "plan_name",
        "plan_args",
        "plan_pattern",
        "plan_pattern_module",
        "plan_pattern_args",
        # Bluesky's conventions for a run's shape
        "detectors",
        "motors",
        "num_points",
        "num_intervals",
        "hints",
        "projections",
        "data_type",
        # closedloop's own
        "campaign",
        "campaign_uid",
        "trial_id",
        "trial_number",
        "parameters",
        "instrument",
        "function",  # a function instrument's file and sha256 (loop.provenance)
        "planner",  # a planner plugin's origin: file and sha256, or distribution (ditto)
        "readback_keys",
        "retry_of",
        "attempt",
        "slot",
    }
)
_METADATA_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_METADATA_KEYS = 100
MAX_METADATA_TEXT = 10_000

#: The path an inline ``instrument: {devices: {...}}`` is parsed under. Its lines are the
#: campaign file's own, so the campaign loader reports such errors against that file.
INLINE_DEVICES = "<instrument.devices>"


class InstrumentFileError(InstrumentConfigError):
    """An instrument file that cannot be used, with where and how to fix it.

    Attributes:
        path: the instrument file; for devices written inline in a campaign, the campaign
            file (or ``<instrument.devices>`` until ``loop.config`` places it).
        line: 1-based line of the offending key, when known.
        problem: what is wrong (for inline devices it starts with ``instrument.devices:``).
        inline: the devices are written inline in a campaign file.
        fix: what to do about it (may be empty).
    """

    def __init__(
        self,
        path: Path | str,
        problem: str,
        *,
        line: int | None = None,
        fix: str = "",
        inline: bool = False,
    ) -> None:
        self.path = Path(path)
        self.line = line
        # devices written inline in a campaign file: the problem names their key there
        self.inline = inline or self.path == Path(INLINE_DEVICES)
        self.problem = f"instrument.devices: {problem}" if self.inline else problem
        self.fix = fix
        where = f"{self.path}:{line}" if line is not None else f"{self.path}"
        message = f"{where}: {self.problem}" + (f"\n  fix: {fix}" if fix else "")
        super().__init__(message, field="file")


# ---------------------------------------------------------------------------- run metadata
class MetadataError(ValueError):
    """A run-metadata entry refused, with what to change (``fix``; see ``RuleError``)."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.fix = fix


def metadata_problem(key: Any, value: Any) -> tuple[str, str] | None:
    """What is wrong with one run-metadata entry, as ``(problem, fix)``; ``None`` if nothing.

    Metadata lands in every run's start document, where a facility's catalog searches it, so
    an entry must be a plain name with a value that arrives as written: text, a number, true
    or false, or a flat list of them (``data_groups``). A key closedloop or Bluesky writes
    is refused (:data:`START_DOC_KEYS`), and so is a value the run-start schema of
    event-model types otherwise (``sample``, ``owner``, ``data_session`` are text): every
    stored document stays valid. A number YAML would store otherwise than written
    (``012345`` as 12345, ``1.10`` as 1.1, a date) is refused with the quoted form: a
    proposal id or a sample number that silently lost its zeros matches nothing in the
    catalog.
    """
    if not isinstance(key, str) or not _METADATA_KEY.match(key) or len(key) > 64:
        return (
            f"metadata key {str(key)!r} is not a name",
            "write a name of letters, digits and underscores (not starting with a digit, at "
            "most 64 characters), e.g. proposal_id",
        )
    if key in START_DOC_KEYS:
        return (
            f"metadata.{key}: '{key}' is a key closedloop or Bluesky writes in every start "
            "document itself",
            f"rename it, e.g. user_{key} (the keys written: {', '.join(sorted(START_DOC_KEYS))})",
        )
    return _value_problem(key, value) or _schema_problem(key, value)


def _value_problem(key: str, value: Any, *, item: bool = False) -> tuple[str, str] | None:
    import datetime

    where = f"metadata.{key}" + (" (a list item)" if item else "")
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if len(value) > MAX_METADATA_TEXT:
            return (
                f"{where}: text longer than {MAX_METADATA_TEXT} characters",
                "keep metadata short (a name, an id); put long text in `description:`",
            )
        return None
    if isinstance(value, int | float):
        plain = int(value) if isinstance(value, int) else float(value)
        if isinstance(plain, float) and not math.isfinite(plain):
            return (
                f"{where}: {plain} is not a finite number",
                f"write a finite number, or text in quotes: {key}: '{plain}'",
            )
        written = _as_written(value)
        if written is not None and written != repr(plain):
            return (
                f"{where}: {written} is read by YAML as the number {plain!r}, not as written",
                f"quote it to keep it as written: {key}: '{written}' (or write {plain!r})",
            )
        return None
    if isinstance(value, datetime.date | datetime.time):
        return (
            f"{where}: {value} is read by YAML as a date, not as text",
            f"quote it: {key}: '{value}'",
        )
    if value is None:
        return (f"{where} has no value", f"write its value, e.g. {key}: ABC-123, or drop it")
    if isinstance(value, list) and not item:
        for entry in value:
            problem = _value_problem(key, entry, item=True)
            if problem is not None:
                return problem
        return None
    if item:
        return (
            f"metadata.{key}: a list in metadata is flat: its items are text, numbers or "
            "true/false",
            f"write one flat list, e.g. {key}: [a, b], or give each part its own key",
        )
    kind = "a mapping" if isinstance(value, Mapping) else f"a {type(value).__name__}"
    return (
        f"{where} is {kind}; a metadata value is text, a number, true/false or a list of them",
        f"give each part its own key, e.g. {key}_name: ..., {key}_id: ...",
    )


def _as_written(value: Any) -> str | None:
    """How a number was written in the YAML, when ruamel kept that (a number written
    otherwise than plainly: ``012345``, ``1_000``, ``0x1F``, ``1.10``, ``1e3``), else ``None``."""
    import io

    from ruamel.yaml import YAML
    from ruamel.yaml.scalarfloat import ScalarFloat
    from ruamel.yaml.scalarint import ScalarInt

    if not isinstance(value, ScalarInt | ScalarFloat):
        return None
    out = io.StringIO()
    YAML(typ="rt").dump([value], out)
    return out.getvalue().strip().removeprefix("-").strip()


#: How event-model's run-start schema types are said to a user.
_SCHEMA_WORDS = {"string": "text", "array": "a list of text", "integer": "a whole number"}


def _schema_problem(key: str, value: Any) -> tuple[str, str] | None:
    """A value event-model's run-start schema refuses for a key it defines (``sample``,
    ``owner``, ``project``, ``group``, ``data_session`` are text; ``data_groups`` a list of
    text): a stored run would fail the schema a facility validates documents against."""
    from event_model import DocumentNames, schema_validators, schemas

    schema = schemas[DocumentNames.start]
    if key not in schema.get("properties", {}):
        return None
    doc = {"uid": "-", "time": 0.0, key: _plain(value)}
    if not any(True for _ in schema_validators[DocumentNames.start].iter_errors(doc)):
        return None
    prop = schema["properties"][key]
    kinds = [prop.get("type")] + [a.get("type") for a in prop.get("anyOf", [])]
    wanted = [_SCHEMA_WORDS[k] for k in kinds if k in _SCHEMA_WORDS]
    if "text" in wanted and not isinstance(value, str | list):
        fix = f"quote it: {key}: '{value}'"
    elif "a list of text" in wanted and isinstance(value, list):
        fix = f"quote every item: {key}: [{', '.join(repr(str(v)) for v in value)}]"
    else:
        fix = f"write {' or '.join(wanted) or 'what the schema allows'}"
    return (
        f"metadata.{key}: Bluesky's run-start schema (event-model) takes "
        f"{' or '.join(wanted) or 'another kind of value'} for '{key}' (got {_plain(value)!r})",
        fix,
    )


def _plain(value: Any) -> Any:
    """``value`` as plain Python (ruamel's number and text subclasses dropped)."""
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def plain_metadata(value: Any) -> Any:
    """A ``metadata:`` mapping checked (:func:`metadata_problem`) and made plain Python;
    ``metadata:`` with nothing under it is none. Anything but a mapping is left to the
    schema to refuse. The file loaders find a problem first with its line
    (:func:`locate_metadata_problem`); this is the model's own guard.

    Raises:
        MetadataError: (a ``ValueError``) the first entry refused, or too many entries.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        return value
    if len(value) > MAX_METADATA_KEYS:
        raise MetadataError(
            f"metadata has {len(value)} keys (at most {MAX_METADATA_KEYS})",
            "keep the keys a catalog searches by; put the rest in `description:`",
        )
    for key, entry in value.items():
        problem = metadata_problem(key, entry)
        if problem is not None:
            raise MetadataError(*problem)
    return {str(k): _plain(v) for k, v in value.items()}


def locate_metadata_problem(data: Any, loc: Sequence[Any]) -> tuple[int | None, str, str] | None:
    """The first refused entry of the ``metadata:`` mapping at ``loc`` in YAML ``data``, as
    ``(line, problem, fix)`` with the entry's own line; ``None`` if none is (or ``loc`` holds
    no mapping: the schema says so)."""
    node = data
    for part in loc:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if not isinstance(node, Mapping):
        return None
    for key, entry in node.items():
        problem = metadata_problem(key, entry)
        if problem is not None:
            return (line_of(data, (*loc, key)), *problem)
    return None


def _required_key(key: str) -> str:
    if not _METADATA_KEY.match(key) or len(key) > 64:
        raise MetadataError(
            f"{key!r} is not a metadata key",
            "write names of letters, digits and underscores, e.g. [proposal_id, sample]",
        )
    if key in START_DOC_KEYS:
        raise MetadataError(
            f"'{key}' is written by closedloop or Bluesky in every start document; a campaign "
            "cannot give it",
            f"drop {key} from required_metadata",
        )
    return key


#: ``module:factory`` or ``path/to/file.py:factory`` (``subscriptions:``).
_SUBSCRIPTION = re.compile(r"^[^:\s][^\s]*:[A-Za-z_][A-Za-z0-9_]*$")


def _subscription_ref(ref: str) -> str:
    if not _SUBSCRIPTION.match(ref):
        raise RuleError(
            f"{ref!r} does not name a factory",
            fix="write `module:factory` or `path/to/file.py:factory`, e.g. "
            "subscriptions: [mylab.catalog:tiled_writer]",
        )
    return ref


# ---------------------------------------------------------------------------- schema
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputDecl(_Strict):
    """One campaign parameter's device: a setpoint/readback PV pair, a motor record or a
    plugin device; with its hardware limits and how a move is judged done."""

    setpoint: PVName | None = Field(default=None, description="PV written with the setpoint.")
    readback: PVName | None = Field(
        default=None, description="PV read back (default: the setpoint PV)."
    )
    motor: PVName | None = Field(default=None, description="An EPICS motor record's prefix.")
    device: str | None = Field(
        default=None, min_length=1, max_length=300, description="Plugin class, module:Class."
    )
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

    @field_validator("device_units")
    @classmethod
    def _device_unit_known(cls, value: str | None) -> str | None:
        """Refused at its own line (it was refused at the input's: found in review)."""
        return _known_unit(value)

    @field_validator("limits")
    @classmethod
    def _low_high(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not (math.isfinite(value[0]) and math.isfinite(value[1])):
            raise ValueError("limits must be finite numbers")
        if value is not None and not value[0] < value[1]:
            low, high = sorted(value)
            raise RuleError(
                "limits must be [low, high] with low < high",
                fix=f"write limits: [{low:g}, {high:g}]"
                if low < high
                else "give two different numbers, the lower first",
            )
        return value

    @model_validator(mode="after")
    def _one_source(self) -> InputDecl:
        sources = [k for k in ("setpoint", "motor", "device") if getattr(self, k) is not None]
        if len(sources) != 1:
            raise RuleError(
                "give exactly one of `setpoint: PV` (with `readback: PV`), `motor: PV` or "
                f"`device: module:Class`; got {sources or 'none'}",
                fix=f"keep one of {', '.join(f'`{k}:`' for k in sources)}"
                if sources
                else "add `setpoint: PV`, `motor: PV` or `device: module:Class`",
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
    device: str | None = Field(
        default=None, min_length=1, max_length=300, description="Plugin class, module:Class."
    )
    args: dict[str, Any] = Field(default_factory=dict, description="Plugin keyword arguments.")
    key: str | None = Field(default=None, description="Reading key of the plugin device.")
    units: str | None = Field(default=None, description="Units the campaign wants.")
    device_units: str | None = Field(default=None, description="Units the device gives.")
    max_alarm: Literal["none", "minor", "major", "invalid"] = Field(
        default="minor",
        description="The worst EPICS alarm severity of the PV still taken as a reading; a "
        "worse one fails the trial (transient: retried up to max_retries, not learned as the "
        "point's). `invalid` takes every reading.",
    )

    @field_validator("device_units")
    @classmethod
    def _device_unit_known(cls, value: str | None) -> str | None:
        return _known_unit(value)

    @model_validator(mode="after")
    def _one_source(self) -> OutputDecl:
        if (self.pv is None) == (self.device is None):
            raise ValueError("give exactly one of `pv: NAME` or `device: module:Class`")
        if "max_alarm" in self.model_fields_set and self.pv is None:
            raise ValueError("`max_alarm:` goes with `pv:` (a plugin device reports no alarm)")
        if (self.args or self.key) and self.device is None:
            raise ValueError("`args:` and `key:` go with `device:`")
        if self.device_units is not None and self.units is None:
            # No campaign parameter names an output's unit: without `units:` there is nothing
            # to convert to, and the reading would be stored as the device gives it.
            raise ValueError(
                f"`device_units: {self.device_units}` needs `units:` too (the unit the campaign "
                f"gets the reading in, convertible to {self.device_units!r}); or drop "
                "`device_units:` to take the reading as the device gives it"
            )
        _check_units(self.units, self.device_units)
        return self


class DoneDecl(_Strict):
    """The acquisition is done when ``pv`` reads ``value``."""

    pv: PVName
    value: float | int | str


class AcquireDecl(_Strict):
    """How a measurement is started and known to be over, and how long it may take.

    Without ``pv`` only ``timeout`` applies: it bounds the plugin detectors' triggers, which
    otherwise get an hour (found in review: a plugin camera that never finished held its
    trial for that hour, and ``acquire: {timeout: 3}`` was refused for want of a PV).
    """

    pv: PVName | None = Field(
        default=None, description="PV written to start a measurement (none: plugins only)."
    )
    value: float | int | str = Field(default=1, description="Value written.")
    put_complete: bool = Field(
        default=True, description="Wait for CA put-completion (the IOC says when it is done)."
    )
    done: DoneDecl | None = Field(
        default=None, description="Then wait until this PV reads a value."
    )
    timeout: float = Field(default=60.0, gt=0, le=86_400)

    @model_validator(mode="after")
    def _pv_settings_need_a_pv(self) -> AcquireDecl:
        stray = [k for k in ("value", "put_complete", "done") if k in self.model_fields_set]
        if self.pv is None and stray:
            raise RuleError(
                f"`{'`, `'.join(stray)}` say how the acquire PV is written, but `acquire` has "
                "no `pv:`",
                fix="add `pv:` (the PV that starts a measurement), or keep only `timeout:` "
                "to bound the plugin detectors' triggers",
            )
        return self


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
    if not re.match(_PV, name):
        # `__import__('os').system('id') == 1` was taken as a PV name, refused only by the
        # connection timeout of a `run` (nothing ran; found in review)
        raise ValueError(
            f"{value!r}: {name!r} is neither an input or output name nor a PV name (a PV "
            "name has letters, digits and _ : . - { } $ ( ) [ ] < > only); write `NAME OP "
            "NUMBER` with NAME an input, an output or a PV"
        )
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
    # true/false is a fair safe state for a binary PV (a shutter, a valve): 1/0.
    on_stop: dict[str, Annotated[float, BOOLEANS_ALLOWED]] = Field(
        default_factory=dict,
        description="Safe state: input name (campaign units) or PV -> value, set on any stop.",
    )
    metadata: Annotated[dict[str, Any], BeforeValidator(plain_metadata)] = Field(
        default_factory=dict,
        description="Run metadata for every campaign on this instrument (beamline, facility): "
        "recorded in each run's start document; a campaign may not change it.",
    )
    required_metadata: list[Annotated[str, AfterValidator(_required_key)]] = Field(
        default_factory=list,
        max_length=MAX_METADATA_KEYS,
        description="Metadata keys every campaign on this instrument must give in its own "
        "`metadata:` (proposal_id, sample, operator).",
    )
    subscriptions: list[Annotated[str, AfterValidator(_subscription_ref)]] = Field(
        default_factory=list,
        max_length=20,
        description="Live consumers of every run's documents (a TiledWriter, a Kafka "
        "publisher, BEC): `module:factory` or `path/to/file.py:factory` (relative to this "
        "file), each called with no arguments when a campaign starts on each instrument slot, "
        "returning a Bluesky callback (name, doc).",
    )
    # Where the file was read from (set by parse_instrument), so that checks made after
    # validation (against the campaign's parameters) still name the file and the line.
    _path: Path = PrivateAttr(default=Path("<inline>"))
    _data: Any = PrivateAttr(default=None)
    # What was parsed: ``_path`` itself, or INLINE_DEVICES for devices written in a campaign
    # file, whose errors then name ``_path`` (that file) and the ``instrument.devices`` key.
    _source: Path = PrivateAttr(default=Path("<inline>"))
    # A stored campaign's file whose copy on disk differs (see :func:`stricter_of_disk`):
    # why its devices must not be built (a conflict of the two files' safety settings), and
    # the `units:` the file on disk declares where the stored text leaves them to the
    # campaign's parameter (checked once that unit is known: :func:`refuse_unsafe_merge`).
    _safety_refusal: DiskSafetyConflict | None = PrivateAttr(default=None)
    _disk_units: dict[str, str] = PrivateAttr(default_factory=dict)

    def error(
        self,
        problem: str,
        loc: Sequence[Any],
        *,
        fix: str = "",
        kind: type[InstrumentFileError] | None = None,
    ) -> InstrumentFileError:
        """An :class:`InstrumentFileError` (or its subclass ``kind``) at the line of ``loc``
        (keys into the file), for a problem found after the schema accepted the file: when
        it is read, or when its devices connect (a unit or a limit the device reports)."""
        line = line_of(self._data, loc) if self._data is not None else None
        return (kind or InstrumentFileError)(
            self._path, problem, line=line, fix=fix, inline=self._path != self._source
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

    @field_validator("required_metadata")
    @classmethod
    def _required_by_campaigns(cls, value: list[str], info: ValidationInfo) -> list[str]:
        twice = sorted({k for k in value if value.count(k) > 1})
        if twice:
            raise MetadataError(f"{', '.join(twice)} named twice", "name each key once")
        given = sorted(set(value) & set(info.data.get("metadata") or {}))
        if given:
            raise MetadataError(
                f"{', '.join(given)} also set by this file's own `metadata:`, so no campaign "
                "could give it",
                "keep each key in one place: `metadata:` for a value fixed for the instrument, "
                "`required_metadata:` for one each campaign gives",
            )
        return value

    @field_validator("subscriptions")
    @classmethod
    def _each_consumer_once(cls, value: list[str]) -> list[str]:
        twice = sorted({ref for ref in value if value.count(ref) > 1})
        if twice:
            raise RuleError(
                f"{', '.join(twice)} named twice: every document would reach it twice",
                fix="name each factory once",
            )
        return value

    @field_validator("on_stop")
    @classmethod
    def _safe_state(cls, value: dict[str, float], info: ValidationInfo) -> Any:
        inputs: dict[str, InputDecl] = info.data.get("inputs") or {}
        outputs = info.data.get("outputs") or {}
        for key, number in value.items():
            if not math.isfinite(number):
                raise RuleError(
                    f"{key} = {number}: a safe state must be a finite number",
                    fix=f"write the value {key} is left at, a number within its limits",
                )
            decl = inputs.get(key)
            if decl is None:
                if not re.match(_PV, key) or key in outputs:
                    raise RuleError(
                        f"{key!r} is neither an input nor a PV name",
                        fix=f"name one of the inputs ({', '.join(inputs) or 'none'}) or a "
                        "PV to write",
                    )
                continue
            if decl.limits is not None and not decl.limits[0] <= number <= decl.limits[1]:
                low, high = decl.limits
                raise RuleError(
                    f"{key} = {number:g} is outside its limits {list(decl.limits)}",
                    fix=f"set on_stop's {key} within [{low:g}, {high:g}] (or widen "
                    f"inputs.{key}.limits, if the hardware allows it)",
                )
        return value


# ---------------------------------------------------------------------------- units
@lru_cache(maxsize=1)
def unit_registry() -> Any:
    """The one pint registry (building it costs ~0.2 s, so only when units are used)."""
    import logging

    import pint

    # `mins` read as minutes after a raw log line naming pint's prefix guesses (found in
    # review): its reading is shown where it matters (status, the report), not its doubts
    logging.getLogger("pint").setLevel(logging.ERROR)
    return pint.UnitRegistry(autoconvert_offset_to_baseunit=True)


def _check_units(units: str | None, device_units: str | None) -> None:
    if device_units is None:
        return
    if units is None:
        # An input's campaign unit may come from its parameter: input_units checks that one
        # is known once the campaign's parameters are.
        _parse_unit(device_units)
        return
    a, b = _parse_unit(units), _parse_unit(device_units)
    if a.dimensionality != b.dimensionality:
        raise RuleError(
            f"units {units!r} cannot be converted to device_units {device_units!r}",
            fix=f"give device_units a unit of the same kind as {units!r} ({a.dimensionality}); "
            "a device in another kind of unit needs its own parameter",
        )


def _known_unit(value: str | None) -> str | None:
    """``value`` if pint knows it (or ``None``); else :class:`RuleError` with the fix."""
    if value is not None:
        _parse_unit(value)
    return value


# What a unit may be written with: letters (µ, Ω, ° too), digits, spaces, * / ^ ( ) . - + %
_UNIT_TEXT = re.compile(r"[\w\s*/^().+\-%°·]+")
_POWER = re.compile(r"\*\*|\^")
_EXPONENT = re.compile(r"\s*[-+]?\s*\d+(?:\.\d*)?")
_MAX_UNIT_TEXT = 64
_MAX_EXPONENT = 12.0


_SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
_SUPERSCRIPT_RUN = re.compile(r"[⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺]+")


def _plain_powers(text: str) -> str:
    """``cm⁻¹`` as ``cm**-1``: the powers pint reads from superscripts, written as it
    reads them, so that they are judged as powers (``K⁹⁹⁹⁹⁹⁹⁹⁹⁹`` slipped through as
    letters and hung pint: found in review)."""
    return _SUPERSCRIPT_RUN.sub(lambda m: "**" + m.group().translate(_SUPERSCRIPTS), text)


def unit_text_problem(text: str) -> str | None:
    """Why ``text`` is not handed to pint, or ``None``. pint evaluates a unit as an
    arithmetic expression, exactly: ``10**10**10*K`` in a campaign file (or in a device's
    EGU) hung ``validate`` and ``run`` at full CPU, deaf to Ctrl-C (found in review). So a
    unit is short, of unit characters, and raises to plain powers of at most 12 (m**3,
    s^-2); ``__import__('os')`` is refused for its quotes, not by pint's parser."""
    if len(text) > _MAX_UNIT_TEXT:
        return f"a unit of {len(text)} characters (at most {_MAX_UNIT_TEXT})"
    text = _plain_powers(text)
    if not _UNIT_TEXT.fullmatch(text):
        return "a unit is letters, digits, spaces and * / ^ ( ) . - + % only"
    for power in _POWER.finditer(text):
        if _bracketed_number(text[: power.start()].rstrip()):
            # ((10)**12)**12: a power of powers in brackets, as big as a tower; (m/s)**2 is
            # a unit
            return "a unit's power is of units, not of a bracket holding numbers or powers"
        exponent = _EXPONENT.match(text, power.end())
        if exponent is None:
            return "a unit's power is a plain number (m**2, s^-1)"
        value = float(exponent.group().replace(" ", ""))
        rest = text[exponent.end() :].lstrip()
        if abs(value) > _MAX_EXPONENT or _POWER.match(rest) is not None:
            return f"a unit's power is at most {_MAX_EXPONENT:g}, and not raised again"
    return None


def _bracketed_number(before: str) -> bool:
    """Whether ``before`` ends in a bracket that holds a digit or a power."""
    if not before.endswith(")"):
        return False
    depth = 0
    for i in range(len(before) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(before[i], 0)
        if depth == 0:
            inner = before[i + 1 : -1]
            return bool(re.search(r"\d", inner) or _POWER.search(inner))
    return True  # unbalanced: pint refuses it anyway


def unit_of(text: str) -> Any:
    """pint's unit for ``text``; ``ValueError`` for a text :func:`unit_text_problem` refuses
    (before pint evaluates it), as for any other text pint cannot read."""
    problem = unit_text_problem(text)
    if problem is not None:
        raise ValueError(problem)
    return unit_registry().Unit(text)


def _parse_unit(text: str) -> Any:
    try:
        return unit_of(text)
    except Exception as exc:  # pint's parser raises anything from a TokenError to a KeyError
        raise RuleError(
            f"unknown unit {text!r} ({exc})",
            fix="write a unit pint knows, e.g. mm, um, degC, K, mL/min, mbar, torr, mA "
            "(https://pint.readthedocs.io)",
        ) from None


def converter(units: str | None, device_units: str | None) -> tuple[Any, Any]:
    """``(to_device, from_device)`` callables for one value; identity without ``device_units``.

    Raises:
        InstrumentConfigError: ``device_units`` without ``units``: with no unit to convert
            from, the identity would send the campaign's number to a device that speaks
            another unit (:func:`input_units` reports this with the file's line first).
    """
    if device_units is not None and units is None:
        raise InstrumentConfigError(
            f"device_units {device_units!r} without the campaign's unit: nothing to convert "
            "from; give `units:`",
            field="file",
        )
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


def input_units(
    spec: InstrumentFile, parameter_units: Mapping[str, str | None]
) -> dict[str, str | None]:
    """Each input's campaign unit: its ``units:``, else its parameter's ``unit``.

    Checked here, once the campaign's parameters are known (``parameter_units`` is empty for
    a file checked on its own): an input's ``units`` must be its parameter's ``unit`` when
    both are given, and an input with ``device_units`` must have a campaign unit to convert
    from, or the number the planner proposed (80, meant as degC) would go to the device
    unconverted (80 K).

    Raises:
        InstrumentFileError: naming the file, the line of the key at fault and the fix.
    """
    resolved: dict[str, str | None] = {}
    for name, decl in spec.inputs.items():
        unit = parameter_units.get(name)
        if decl.units and unit and not same_unit(decl.units, unit):
            # by value: `°C` in the campaign and `degC` in the file are one unit (refused
            # as two; found in review)
            raise spec.error(
                f"inputs.{name}: units {decl.units!r} differ from the campaign parameter's "
                f"unit {unit!r}",
                ("inputs", name, "units"),
                fix=f"write `unit: {decl.units}` for the parameter {name!r}, or `units: "
                f"{unit}` here, with its limits in that unit (`device_units:` is for the "
                "device's own unit)",
            )
        campaign_unit = decl.units or unit
        if decl.device_units is not None and campaign_unit is None:
            units_here = (
                f"`units:` to inputs.{name} (the campaign's unit, convertible to "
                f"{decl.device_units!r})"
            )
            raise spec.error(
                f"inputs.{name}: `device_units: {decl.device_units}` but the campaign's unit "
                f"for {name!r} is not known, so no value could be converted",
                ("inputs", name, "device_units"),
                fix=(
                    f"add `unit:` to the campaign parameter {name!r}, or {units_here}"
                    if name in parameter_units
                    else f"add {units_here}, or check the campaign that uses this file "
                    "(its parameter's `unit:` then applies)"
                ),
            )
        try:
            _check_units(campaign_unit, decl.device_units)
        except ValueError as exc:
            raise spec.error(
                f"inputs.{name}: {exc}",
                ("inputs", name, "device_units"),
                fix="give units of the same dimension (degC/K, mL/min/uL/s, mbar/Pa, ...)",
            ) from None
        resolved[name] = campaign_unit
    return resolved


# ---------------------------------------------------------------------------- loading
def load_instrument_file(path: str | Path, *, as_stored: bool = False) -> InstrumentFile:
    """Read and validate an instrument file; raise :class:`InstrumentFileError` on any problem.
    ``as_stored``: see :func:`parse_instrument`."""
    path = Path(path)
    try:
        text = read_text(path, kind="instrument file", max_bytes=MAX_FILE_BYTES)
    except TextFileError as exc:
        raise InstrumentFileError(path, exc.problem, line=exc.line, fix=exc.fix) from None
    return parse_instrument(read_yaml(text, path), path=path, as_stored=as_stored)


def parse_instrument(
    data: Any, *, path: Path | str = "<inline>", as_stored: bool = False
) -> InstrumentFile:
    """Validate already-loaded YAML data (a ruamel mapping keeps line numbers).

    ``as_stored``: the file of a stored campaign, read as it was accepted. A ``metadata:``
    key that closedloop has come to write itself since (``function`` and ``planner`` came
    with provenance) is then left out with a warning, as a stored campaign's own are
    (``loop.config``): refused, the campaign's trials could never be resumed, since the
    store's copy of the file is what is read (found in review).
    """
    if isinstance(data, InstrumentFile):
        return data
    if as_stored:
        data = _without_reserved_metadata(data, Path(path))
    refuse_booleans(data, Path(path), model=InstrumentFile, error=InstrumentFileError)
    found = locate_metadata_problem(data, ("metadata",))
    if found is not None:
        line, problem, fix = found
        raise InstrumentFileError(path, problem, line=line, fix=fix)
    try:
        spec = InstrumentFile.model_validate(data)
    except ValidationError as exc:
        raise explain(exc, data, Path(path), InstrumentFile) from None
    spec._path = spec._source = Path(path)
    spec._data = data
    return spec


def reserved_metadata_keys(data: Any) -> list[str]:
    """The keys of ``data``'s ``metadata:`` mapping that closedloop or Bluesky write in
    every start document themselves (:data:`START_DOC_KEYS`)."""
    block = data.get("metadata") if isinstance(data, Mapping) else None
    return [k for k in block if k in START_DOC_KEYS] if isinstance(block, Mapping) else []


_WARNED_RESERVED: set[tuple[Path, str]] = set()


def _without_reserved_metadata(data: Any, path: Path) -> Any:
    """``data`` (a copy, the caller's left as it is) without its reserved ``metadata:`` keys,
    each warned about at its line (see :func:`parse_instrument`)."""
    keys = reserved_metadata_keys(data)
    if not keys:
        return data
    data = copy.deepcopy(data)  # ruamel's copies keep the line numbers
    for key in keys:
        if (path, key) in _WARNED_RESERVED:  # read once per use of the devices; said once
            del data["metadata"][key]
            continue
        _WARNED_RESERVED.add((path, key))
        logger.warning(
            "%s, line %s: metadata.%s is a key closedloop now writes in every start document "
            "itself; accepted when the campaign was stored, its runs record %s as closedloop "
            "writes it, not %r (a new campaign is refused for it)",
            path,
            line_of(data, ("metadata", key)),
            key,
            key,
            data["metadata"][key],
        )
        del data["metadata"][key]
    return data


def read_yaml(text: str, path: Path) -> Any:
    """Parse YAML keeping line numbers; a mapping at the top or one clear error."""
    return read_yaml_mapping(
        text, path, error=InstrumentFileError, example="instruments/epics_reactor.yaml"
    )


#: A key's fix where its type's general one would mislead: an interlock is written as text,
#: though the schema also takes a mapping (``instruments._yamlfile.explain``).
_HINTS = {
    "interlocks": "write each interlock as `NAME OP NUMBER`, e.g. "
    "interlocks: ['door_closed == 1', 'pressure < 5']",
}


def explain(exc: ValidationError, data: Any, path: Path, model: type[BaseModel]) -> Exception:
    """The top-most pydantic error as one message with its line and a fix (a
    :class:`MetadataError`'s or :class:`RuleError`'s own fix where the shared one has none)."""
    error = shared_explain(exc, data, path, model=model, error=InstrumentFileError, hints=_HINTS)
    # the shared fix may be only the count of further problems: the rule's own fix goes
    # first (limits [30, 0] said "fix: 1 more problem(s) ...", not "write [0, 30]": review U)
    if not isinstance(error, InstrumentFileError) or MORE_PROBLEMS.sub("", error.fix):
        return error
    more = MORE_PROBLEMS.search(error.fix)
    for err in exc.errors(include_url=False):
        refused = (err.get("ctx") or {}).get("error")
        if isinstance(refused, MetadataError | RuleError) and str(refused) in error.problem:
            # the problem as given, not as inline devices' prefix made it (it said
            # "instrument.devices: instrument.devices: ..." when both added it)
            given = error.problem.removeprefix("instrument.devices: ") if error.inline else None
            fix = refused.fix + (f"; {more.group(1)}" if more else "")
            return InstrumentFileError(path, given or error.problem, line=error.line, fix=fix)
    return error


# ---------------------------------------------------------------------------- from a campaign
def resolve_file(path: str, base_dir: Path) -> Path:
    p = Path(path)
    return p if p.is_absolute() else Path(base_dir) / p


def pin_instrument_text(config: Any, base_dir: Path, stored: str | None = None) -> str | None:
    """Fix the text an ``instrument: {file: ...}`` is built from, and return it.

    A new campaign (``stored`` is ``None``) pins the file's text as it is now, which the
    store keeps with the campaign. A stored campaign pins the stored text, so ``resume`` and
    ``suggest``/``tell`` build the devices the campaign started with even if the file was
    edited or deleted since; either is logged as a warning naming the file. Not its safety
    settings alone: where the file on disk can be read, the stricter of the two apply
    (:func:`stricter_of_disk`). Returns ``None`` (pins nothing) for another kind of
    instrument, or a new campaign whose file cannot be read (building it then reports the
    file's problem).
    """
    if getattr(config, "file", None) is None:
        return None
    path = resolve_file(config.file, base_dir)
    try:
        on_disk: str | None = read_text(path, kind="instrument file", max_bytes=MAX_FILE_BYTES)
    except TextFileError:
        on_disk = None
    if stored is None:
        text = on_disk
    else:
        text = stored
        if on_disk is None:
            logger.warning(
                "instrument file %s is missing or unreadable; using its text as stored with "
                "the campaign",
                path,
            )
        elif on_disk != stored:
            logger.warning(
                "instrument file %s has changed since the campaign started; using its text as "
                "stored with the campaign for the devices (start a new campaign to use the "
                "edited file), with the stricter of the two files' limits, max_step and "
                "interlocks, and the safe state (on_stop) on disk",
                path,
            )
    config._file_text = text
    return text


# ---------------------------------------------------------------------------- stored: safety
class DiskSafetyConflict(InstrumentFileError):
    """A stored campaign's instrument whose safety settings and those of the same file on
    disk cannot be combined (:func:`stricter_of_disk`): its devices are not built. Its fix
    is an edit of the file on disk, which, unlike for the devices, a resumed campaign
    reads."""


def stricter_of_disk(config: Any, spec: InstrumentFile, base_dir: Path) -> InstrumentFile:
    """``spec``, the devices of a campaign's ``instrument:`` (``config``) as the campaign has
    them, with the safety settings of the same file on disk where those are stricter.

    A stored campaign builds its devices from the instrument text stored with it
    (:func:`pin_instrument_text`), or from its stored inline ``devices:``, so that a resumed
    campaign keeps its devices, outputs and units. Its safety settings must not stay as
    stored: a facility that tightens a limit in the file (a sample holder that takes 40 degC,
    not 100) means every campaign on that hardware from then on, and the store's copy (which
    whoever can write a shared store can change) must not widen it (found in review:
    ``resume`` drove a temperature PV to 97 degC after the file said 40). So when the file on
    disk can be read and differs, each setting is the stricter of the two:

    * an input's ``limits``: the intersection, the range both allow;
    * ``max_step``: the smaller (none is no bound);
    * ``interlocks``: every interlock of either file must hold (one more can only hold a
      trial back);
    * ``on_stop``: the file on disk's, in its order. A safe state has no "stricter": what
      the facility says is safe now is written, and nothing it no longer says; an input's
      value must lie within the limits that apply.
    * ``subscriptions``: the file on disk's. Where the documents go is the facility's
      wiring of today, not the campaign's: a consumer taken out of the file (its server
      gone) was still called, and its failure stopped the resume (found in review).

    Refused (:func:`refuse_unsafe_merge`: the devices are not built; exit 2 with both files'
    values and lines) when the two cannot be combined: limits that do not overlap, an input
    of the campaign the file on disk no longer declares, another ``prefix:`` or an input's
    other ``units:`` (the same numbers would mean other PVs or another unit), an interlock
    or a safe state on disk naming what the campaign's devices cannot read or write, an
    interlock on disk naming an output the campaign's devices read in another unit (its
    number would be compared in the wrong one), a safe state outside the limits that
    apply, or a file on disk that is no valid instrument file (a limit being tightened is
    not dropped for a typo). A missing or unreadable file leaves ``spec`` as stored (a
    campaign goes on after its file was deleted), as does a campaign file on disk with no
    inline ``devices:`` any more. Inputs only on disk are another campaign's. The refusal
    is kept on the spec rather than raised here, so that what only reads the campaign
    (``status``, ``tell`` recording results measured) still can.

    For a new campaign the file on disk is the one ``spec`` was read from: nothing changes.
    A stored campaign's effective settings are worked out once per campaign read, each
    setting that differs logged as a warning.
    """
    inline = config.file is None
    path = (
        getattr(config, "_campaign_path", None) if inline else resolve_file(config.file, base_dir)
    )
    stored_text = config.devices if inline else getattr(config, "_file_text", None)
    if path is None or stored_text is None:
        return spec
    kind = "campaign file" if inline else "instrument file"
    try:
        on_disk = read_text(path, kind=kind, max_bytes=MAX_FILE_BYTES)
    except TextFileError:
        return spec  # missing or unreadable: warned by pin_instrument_text
    if on_disk == stored_text:
        return spec
    cached = getattr(config, "_stricter_of_disk", None)
    if cached is not None and cached[0] == on_disk:
        return cached[1]  # type: ignore[no-any-return]
    where = f"inline devices of campaign file {path}" if inline else f"instrument file {path}"
    disk = _disk_spec(on_disk, path, inline=inline, stored=config.devices)
    if disk is None:
        effective = spec
    elif isinstance(disk, InstrumentFileError):
        effective = spec.model_copy()
        effective._safety_refusal = DiskSafetyConflict(
            path,
            f"{disk.problem} (the {kind} on disk, changed since the campaign started: a "
            "resumed campaign applies the stricter of its safety settings and the stored "
            "ones, so it must be valid)",
            line=disk.line,
            fix=disk.fix,
        )
        logger.warning("%s: %s", where, effective._safety_refusal.problem)
    else:
        try:
            effective = _stricter(spec, disk, where)
        except InstrumentFileError as exc:
            effective = spec.model_copy()
            effective._safety_refusal = DiskSafetyConflict(
                exc.path, exc.problem, line=exc.line, fix=exc.fix
            )
            logger.warning("%s: %s", where, exc.problem)
    config._stricter_of_disk = (on_disk, effective)
    return effective


def _disk_spec(
    text: str, path: Path, *, inline: bool, stored: Any
) -> InstrumentFile | InstrumentFileError | None:
    """The instrument on disk: the file, or a campaign file's inline ``devices:`` (``None``
    when it has none any more, or the same as ``stored``); its problem when it is no valid
    instrument."""
    try:
        data = read_yaml(text, path)
        if not inline:
            return parse_instrument(data, path=path)
        instrument = data.get("instrument")
        devices = instrument.get("devices") if isinstance(instrument, Mapping) else None
        if devices is None:
            logger.warning(
                "campaign file %s declares no inline devices any more; using those stored "
                "with the campaign",
                path,
            )
            return None
        if devices == stored:
            return None
        disk = parse_instrument(devices, path=INLINE_DEVICES)
    except InstrumentFileError as exc:
        if exc.inline:  # lines of the campaign file: it is named, its problem says where
            return InstrumentFileError(path, exc.problem, line=exc.line, fix=exc.fix)
        return exc
    disk._path = path
    return disk


def _stricter(stored: InstrumentFile, disk: InstrumentFile, where: str) -> InstrumentFile:
    """``stored`` with the stricter of its and ``disk``'s safety settings (see
    :func:`stricter_of_disk`); each that differs is logged. The lines of messages found
    later are the file on disk's, where a fix goes.

    Raises:
        InstrumentFileError: the two cannot be combined, naming both values and lines.
    """

    def line(spec: InstrumentFile, *loc: Any) -> str:
        at = line_of(spec._data, loc) if _has(spec._data, loc) else None
        if spec is disk:  # the file a refusal names
            return f"line {at}" if at is not None else str(disk._path.name)
        return f"line {at} of the stored copy" if at is not None else "the stored copy"

    def refuse(problem: str, loc: Sequence[Any], fix: str) -> InstrumentFileError:
        return disk.error(problem, loc, fix=fix)

    restore = f"restore it in {disk._path.name}, or start a new campaign with the file as it is"
    if stored.prefix != disk.prefix:
        raise refuse(
            f"prefix {disk.prefix!r} on disk ({line(disk, 'prefix')}), {stored.prefix!r} "
            f"stored ({line(stored, 'prefix')}): the file on disk names other PVs than the "
            "campaign's devices, so its safety settings cannot be applied to them",
            ("prefix",),
            f"{f'prefix: {stored.prefix!r}' if stored.prefix else 'no prefix:'} as stored: "
            f"{restore}",
        )
    changes: list[str] = []
    inputs: dict[str, InputDecl] = {}
    disk_units: dict[str, str] = {}
    for name, s in stored.inputs.items():
        d = disk.inputs.get(name)
        if d is None:
            raise refuse(
                f"input {name} ({line(stored, 'inputs', name)}) is not declared in the file "
                "on disk any more, so the limits it allows there are unknown",
                ("inputs",),
                f"inputs.{name} with its limits: {restore}",
            )
        if s.units is not None and d.units is not None and not same_unit(s.units, d.units):
            raise refuse(
                f"inputs.{name}: units {d.units!r} on disk ({line(disk, 'inputs', name, 'units')})"
                f", {s.units!r} stored ({line(stored, 'inputs', name, 'units')}): its limits, "
                "max_step and safe state are numbers in another unit",
                ("inputs", name, "units"),
                f"units {s.units!r}: {restore}",
            )
        if s.units is None and d.units is not None:
            disk_units[name] = d.units  # checked against the campaign's unit when built
        limits = _intersection(s.limits, d.limits)
        if limits is not None and not limits[0] < limits[1]:
            raise refuse(
                f"inputs.{name}: limits {_range(d.limits)} on disk "
                f"({line(disk, 'inputs', name, 'limits')}) and {_range(s.limits)} stored "
                f"({line(stored, 'inputs', name, 'limits')}) leave no range both allow",
                ("inputs", name, "limits"),
                f"give limits that overlap {_range(s.limits)} in {disk._path.name} (a resumed "
                "campaign keeps to both), or start a new campaign with the file as it is",
            )
        max_step = min((m for m in (s.max_step, d.max_step) if m is not None), default=None)
        for key, ours, theirs, used in (
            ("limits", s.limits, d.limits, limits),
            ("max_step", s.max_step, d.max_step, max_step),
        ):
            if ours != theirs:
                changes.append(
                    f"input {name}: {key} {_shown(ours)} stored, {_shown(theirs)} on disk; "
                    f"using {_shown(used)}"
                )
        inputs[name] = s.model_copy(update={"limits": limits, "max_step": max_step})
    interlocks = list(stored.interlocks)
    for index, rule in enumerate(disk.interlocks):
        # Every interlock on disk, one also stored included: its number means what the file
        # on disk says, and is compared with what the campaign's devices read.
        if _kind(stored, rule.name) != _kind(disk, rule.name):
            raise refuse(
                f"interlock `{rule}` on disk reads {rule.name}, {_kind(disk, rule.name)} "
                f"there but {_kind(stored, rule.name)} of the campaign's devices, which "
                "cannot read it as the file means",
                ("interlocks", index),
                f"name a PV, or an input or output both files declare: {restore}",
            )
        if rule.name in stored.outputs and not _same_reading(
            stored.outputs[rule.name], disk.outputs[rule.name]
        ):
            name, kept = rule.name, stored.outputs[rule.name]
            raise refuse(
                f"interlock `{rule}` on disk ({line(disk, 'interlocks', index)}) compares "
                f"output {name} {_reading(disk.outputs[name])} "
                f"({line(disk, 'outputs', name)}), but the campaign's devices read it "
                f"{_reading(kept)} ({line(stored, 'outputs', name)}): its number would be "
                "compared in another unit",
                ("interlocks", index),
                f"outputs.{name} as stored ("
                + (f"units: {kept.units}" if kept.units else "no units:")
                + (f", device_units: {kept.device_units}" if kept.device_units else "")
                + f"), with the interlock's number in that unit: {restore}",
            )
        if rule not in interlocks:
            interlocks.append(rule)
            changes.append(f"interlock `{rule}` on disk, not stored; it must hold too")
    for rule in stored.interlocks:
        if rule not in disk.interlocks:
            changes.append(f"interlock `{rule}` stored, not on disk; it must still hold")
    for key, value in disk.on_stop.items():
        kinds = (_kind(stored, key), _kind(disk, key))
        if kinds[0] != kinds[1]:
            raise refuse(
                f"on_stop.{key} on disk is {kinds[1]} there but {kinds[0]} of the campaign's "
                "devices, which cannot write it as the file means",
                ("on_stop", key),
                f"name a PV, or an input both files declare: {restore}",
            )
        limits = inputs[key].limits if key in inputs else None
        if limits is not None and not limits[0] <= value <= limits[1]:
            raise refuse(
                f"on_stop.{key} = {value:g} on disk is outside the limits {_range(limits)} "
                f"that apply (the stricter of {_range(disk.inputs[key].limits)} on disk and "
                f"{_range(stored.inputs[key].limits)} stored)",
                ("on_stop", key),
                f"give a safe state within {_range(limits)}",
            )
        if stored.on_stop.get(key) != value:
            ours = stored.on_stop.get(key)
            was = "not stored" if ours is None else f"{ours:g} stored"
            changes.append(f"on_stop {key}: {was}, {value:g} on disk; writing {value:g}")
    for key, value in stored.on_stop.items():
        if key not in disk.on_stop:
            changes.append(f"on_stop {key}: {value:g} stored, not on disk; not written")
    if stored.subscriptions != disk.subscriptions:
        changes.append(
            f"subscriptions: {disk.subscriptions} on disk, {stored.subscriptions} stored; "
            "using the file on disk's"
        )
    if not changes and not disk_units:
        return stored
    for change in changes:
        logger.warning("%s: %s", where, change)
    effective = stored.model_copy(
        update={
            "inputs": inputs,
            "interlocks": interlocks,
            "on_stop": dict(disk.on_stop),
            "subscriptions": list(disk.subscriptions),
        }
    )
    effective._path, effective._source, effective._data = stored._path, stored._source, disk._data
    effective._disk_units = disk_units
    return effective


def refuse_unsafe_merge(spec: InstrumentFile, campaign_units: Mapping[str, str | None]) -> None:
    """Refuse to build the devices of a stored campaign whose safety settings conflict with
    the file on disk (:func:`stricter_of_disk`), or whose file on disk gives an input
    ``units:`` other than the campaign's unit (``campaign_units``, :func:`input_units`'s):
    its numbers would be read in the wrong unit.

    Raises:
        InstrumentFileError: naming the file on disk, the line and the fix.
    """
    if spec._safety_refusal is not None:
        raise spec._safety_refusal
    for name, units in spec._disk_units.items():
        unit = campaign_units.get(name)
        if unit is not None and not same_unit(unit, units):
            found = spec.error(
                f"inputs.{name}: units {units!r} on disk, but the campaign's unit for {name} "
                f"is {unit!r}: the file's limits, max_step and safe state are numbers in "
                "another unit",
                ("inputs", name, "units"),
                fix=f"write units: {unit} and the numbers in {unit}, or start a new campaign "
                "with the file as it is",
            )
            raise DiskSafetyConflict(found.path, found.problem, line=found.line, fix=found.fix)


def _has(data: Any, loc: Sequence[Any]) -> bool:
    """Whether the YAML ``data`` holds the key at ``loc`` (``line_of`` falls back to the line
    of the nearest parent, which for a key one file lacks names the wrong line)."""
    node = data
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, Sequence) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return False
    return True


def _intersection(
    a: tuple[float, float] | None, b: tuple[float, float] | None
) -> tuple[float, float] | None:
    if a is None or b is None:
        return a or b
    return (max(a[0], b[0]), min(a[1], b[1]))


def _kind(spec: InstrumentFile, name: str) -> str:
    """What an interlock's or safe state's name is in ``spec``: it decides what is read or
    written (an input's device, an output's reading, else the PV ``prefix + name``)."""
    if name in spec.inputs:
        return "an input"
    return "an output" if name in spec.outputs else "a PV"


def _same_reading(stored: OutputDecl, disk: OutputDecl) -> bool:
    """Whether an interlock's number on an output means the same in both files: the output's
    value is in the same unit (its ``units:``; without them, the device's own number, which
    the other file must then take unconverted too).

    Where the value comes from (``pv``, ``device``, ``key``) and how the device's number is
    converted (``device_units``) are the campaign's devices, kept as stored, as an input's
    are: the name means the campaign's reading of it, and only a number in another unit
    would be misread (found in review: ``y < 320`` in K, checked against y in degC, held
    for every reading).
    """
    if stored.units is not None and disk.units is not None:
        return same_unit(stored.units, disk.units)
    given = stored if stored.units is not None else disk
    return given.device_units is None or same_unit(given.units or "", given.device_units)


def _reading(output: OutputDecl) -> str:
    """In what unit a file has an output's value, for a message."""
    if output.units is None:
        return "as the device gives it, with no units:"
    if output.device_units is None or same_unit(output.units, output.device_units):
        return f"in {output.units}"
    return f"in {output.units}, converted from the device's {output.device_units}"


def same_unit(a: str, b: str) -> bool:
    """Whether unit texts ``a`` and ``b`` name one unit: ``degC`` and ``celsius``, ``M`` and
    ``mol/L`` (a value in one is the same number in the other: 0 and 1 convert to
    themselves); a text pint cannot read is only its own unit."""
    if a == b:
        return True
    try:
        ua, ub = _parse_unit(a), _parse_unit(b)
    except ValueError:
        return False
    if ua == ub:
        return True
    if ua.dimensionality != ub.dimensionality:
        return False
    quantity = unit_registry().Quantity
    try:
        return all(
            math.isclose(quantity(x, ua).to(ub).magnitude, x, rel_tol=1e-12, abs_tol=1e-12)
            for x in (0.0, 1.0)
        )
    except Exception:  # pint's conversion errors have no common base
        return False


def _range(limits: tuple[float, float] | None) -> str:
    return "none" if limits is None else f"[{limits[0]:g}, {limits[1]:g}]"


def _shown(value: tuple[float, float] | float | None) -> str:
    if value is None or isinstance(value, tuple):
        return _range(value)
    return f"{value:g}"
