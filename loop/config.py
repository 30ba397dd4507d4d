"""Campaign files: the schema, and a loader whose every error names file, line and fix.

The schema is pydantic v2 with ``extra="forbid"`` everywhere, so a misspelt key is an error
rather than a silently ignored setting. Reading the YAML with line numbers and explaining a
pydantic error is shared with instrument files (``instruments._yamlfile``).
"""

from __future__ import annotations

import copy
import decimal
import difflib
import importlib.util
import json
import logging
import math
import re
import unicodedata
from collections.abc import Mapping, MutableMapping, Sequence, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from instruments import InstrumentConfig
from instruments._config import RuleError
from instruments._instrument_file import (
    InstrumentFile,
    locate_metadata_problem,
    metadata_problem,
    pin_instrument_text,
    plain_metadata,
    reserved_metadata_keys,
)
from instruments._yamlfile import (
    MORE_PROBLEMS,
    example_hint,
    explain,
    line_of,
    plain_message,
    read_yaml_mapping,
    refuse_booleans,
)
from loop.errors import CampaignConfigError, ClosedLoopError, cli_command
from loop.prior import EXPORT_COLUMNS
from planners import (
    ChoiceParameter,
    ConstraintsLeaveNoRoom,
    FixedParameter,
    FloatParameter,
    Objective,
    OutcomeConstraint,
    Parameter,
    PlannerConfig,
    Space,
    parse_outcome_constraint,
)
from planners._room import check_room
from simulators._text import MAX_FILE_BYTES, TextFileError, file_sha256, read_text

if TYPE_CHECKING:
    from planners._plugin import PlannerPluginError

logger = logging.getLogger(__name__)


#: The campaign name's pattern (``Campaign.name``; said in words by ``_PATTERN_WORDS``).
_CAMPAIGN_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$"

_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)\s*d)?\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*"
    r"(?:(\d+(?:\.\d+)?)\s*m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*$"
)

# Seconds alone: ``3600``, ``90s``, or ``1.0368e+06s`` as budgets were stored (see Duration).
_SECONDS = re.compile(r"^\s*(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)\s*s?\s*$")

#: What a duration may be written as, for messages that refuse one.
DURATION_WORDS = (
    "seconds (3600) or a number with a unit, units d, h, m (or min) and s, largest first, "
    "e.g. 90s, 10m, 1.5h, 1h30m, 1d12h"
)


def _duration_seconds(value: Any) -> float | None:
    """The seconds ``value`` says (a number, or text :data:`DURATION_WORDS` describes), not
    yet checked against any range; ``None`` when it is no duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    text = str(value)
    if (alone := _SECONDS.match(text)) is not None:
        # "3600" is seconds, as 3600 is: a command-line option is always text, and so is a
        # quoted YAML value.
        return float(alone.group(1))
    match = _DURATION.match(text)
    if not match or not any(match.groups()):
        return None
    d, h, m, s = (float(g) if g else 0.0 for g in match.groups())
    return d * 86400 + h * 3600 + m * 60 + s


def _duration_hint(value: Any) -> str:
    """Why text that looks like a duration is not one: units in capitals (``2H``), or words
    (``2 hours``); the fix line says how to write one (:data:`DURATION_WORDS`)."""
    if not isinstance(value, str):
        return ""
    if value != value.lower() and _duration_seconds(value.lower()) is not None:
        return f" (units are lowercase: {value.lower().replace(' ', '')!r})"
    word = re.fullmatch(r"\s*([\d.]+)\s*(day|hour|minute|second|sec|hr)s?\s*", value.lower())
    if word is not None:
        unit = {"day": "d", "hour": "h", "hr": "h", "minute": "m"}.get(word[2], "s")
        return f" (write the unit as one letter: '{word[1]}{unit}')"
    return ""


def parse_duration(value: Any) -> float:
    """Seconds from ``90`` or ``"90"``, ``"90s"``, ``"30m"``, ``"2h"``, ``"1h30m"``, ``"1d"``."""
    seconds = _duration_seconds(value)
    if seconds is None:
        raise ValueError(
            f"{value!r} is not a duration{_duration_hint(value)}; write {DURATION_WORDS}"
        )
    if not math.isfinite(seconds) or seconds <= 0 or seconds > 366 * 86400:
        raise ValueError("a duration must be positive and at most a year")
    return seconds


# The longest rest in seconds a stored duration shows after its days, hours and minutes
# (``1h0.25s``, ``2h1m59.999s``); a longer one is a float's noise (see _stored_duration).
_SHORT_FRACTION = 6


def _stored_duration(seconds: float) -> str:
    """A duration as a stored budget and ``export --format yaml`` keep it: exact, and as a
    person writes one (``3d``, ``1h30m``, ``10m``, ``90s``, ``1h0.25s``), read back by
    :func:`parse_duration` to the very same float.

    It was ``f"{s:g}s"``, which writes 30 days as ``2.592e+06s`` (a campaign with a
    ``max_duration`` of 12 days or more could then not be resumed: found in review), then
    ``f"{s:.15g}s"``, which is exact but replaced the user's ``3d`` with ``259200s`` in an
    exported campaign (found in review). ``parse_duration`` reads both older forms.

    Below two minutes a duration that is not whole minutes stays in seconds (``90s``); else
    whole days, hours and minutes each when not zero, then the rest in seconds. The rest is
    exact: it is ``seconds`` minus a whole number at least half of it (Sterbenz). Where that
    rest is a long fraction (``1.1d`` is 95040.00000000001 s), the shortest exact form of
    the whole in one unit is written instead (``1.1d``; ``86400.1s``). Numbers are written
    by their shortest ``repr`` without an exponent (``0.00001``, never ``1e-05``, which the
    duration syntax does not take).
    """
    if not math.isfinite(seconds) or seconds <= 0:
        return f"{seconds!r}s"  # no duration at all; never from a validated value
    whole_minutes = math.floor(seconds / 60)
    if seconds < 120 and whole_minutes * 60 != seconds:
        return f"{_positional(seconds)}s"
    days, rest = divmod(whole_minutes, 1440)
    hours, minutes = divmod(rest, 60)
    remainder = seconds - whole_minutes * 60
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n]
    if remainder:
        parts.append(f"{_positional(remainder)}s")
    split = "".join(parts)
    if len(_positional(remainder)) <= _SHORT_FRACTION:
        return split
    shortest = [split, f"{_positional(seconds)}s"]
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        text = f"{_positional(seconds / size)}{unit}"
        if _duration_seconds(text) == seconds:
            shortest.append(text)
    return min(shortest, key=len)


def _positional(number: float) -> str:
    """``number``'s shortest exact text without an exponent: ``90``, ``0.5``, ``0.00001``."""
    text = format(decimal.Decimal(repr(number)), "f")
    return text.removesuffix(".0")


def _file_duration(value: Any) -> float:
    """:func:`parse_duration` for a campaign file: what is wrong on the message line, how to
    write a duration on the fix line (said on both, it read twice: found in review)."""
    try:
        return parse_duration(value)
    except ValueError as exc:
        problem = str(exc)
        words = f"; write {DURATION_WORDS}"
        if problem.endswith(words):
            raise RuleError(problem.removesuffix(words), fix=words.removeprefix("; ")) from None
        raise


Duration = Annotated[float, BeforeValidator(_file_duration), PlainSerializer(_stored_duration)]


def parameter_value(param: Any, text: str) -> Any:
    """The value of the campaign parameter ``param`` that ``text``, as a person wrote it, names.

    The one reading of a parameter value written as text: a prior-data cell, ``tell
    --actual`` and a results CSV's ``actual.*`` cells, the operator's prompt, ``plan --at``.
    A choice (or a fixed parameter's one value) is matched by its text, a boolean in any case
    (``true`` is ``True``), then a number by its value (``2.0`` is the choice ``2``, as the
    prior CSV an export wrote says it); an int parameter takes a whole number (``3``,
    ``3.0``), a float parameter any finite number (as ``read_number`` reads it: not
    ``1_000``). Surrounding spaces do not count. Bounds and constraints are not checked here:
    each caller checks them where it can say why (prior data and ``tell`` against the space,
    ``plan --at`` by the dispatcher's limits).

    Raises:
        ValueError: ``text`` names no value of ``param``. Its message (``is not one of a, b``,
            ``is not a number``, ``is not a finite number``, ``is not an integer``) reads
            after the value in the caller's own message.
    """
    raw = text.strip()
    kind = getattr(param, "type", None)
    if kind in ("choice", "fixed"):
        values = tuple(param.values) if kind == "choice" else (param.value,)
        for v in values:  # the text first: a choice "2.0" beside a choice 2 is "2.0"
            if raw == str(v) or (isinstance(v, bool) and raw.lower() == str(v).lower()):
                return v
        try:
            as_number: float | None = read_number(raw)
        except ValueError:
            as_number = None
        for v in values:
            if isinstance(v, int | float) and not isinstance(v, bool) and as_number == float(v):
                return v
        raise ValueError(f"is not one of {', '.join(str(v) for v in values)}")
    number = read_number(raw)
    if not math.isfinite(number):
        raise ValueError("is not a finite number")
    if kind == "int":
        if not number.is_integer():
            raise ValueError("is not an integer")
        return int(number)
    return number


# A number as a lab writes it: digits with an optional point, sign and exponent.
_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NOT_FINITE = re.compile(r"[+-]?(?:inf|infinity|nan)", re.IGNORECASE)


def read_number(text: str) -> float:
    """The number ``text`` writes, read as a person wrote it: ``0.6``, ``-3``, ``1.5e-3``,
    ``.5`` (surrounding spaces do not count), or ``inf``/``nan``, which each caller refuses
    in its own words (a failed measurement is ``tell --fail``, not ``nan``).

    The one reading of a number typed or written in a cell: ``tell`` and the operator's
    prompt (``loop.asktell.parse_number``), a prior-data or results CSV, ``tell --actual``
    and ``plan --at`` (``parameter_value``). Python's ``float()`` takes more than a lab
    writes, and read it silently: ``0_6`` (a slip for ``0.6``) as 6.0 and ``5_0`` as 50.0,
    digits of other scripts, ``infinity`` (found in review). Those are refused here.

    Raises:
        ValueError: not such a number. Its message (``is not a number``, saying why for an
            underscore) reads after the value in the caller's own message.
    """
    raw = text.strip()
    if _PLAIN_NUMBER.fullmatch(raw) or _NOT_FINITE.fullmatch(raw):
        return float(raw)
    if "_" in raw and _PLAIN_NUMBER.fullmatch(raw.replace("_", "")):
        raise ValueError(
            "is not a number: write it without underscores, e.g. 1000 or 0.6 (not 1_000 or 0_6)"
        )
    raise ValueError("is not a number")


class Budget(BaseModel):
    """When to stop. The first limit reached ends the campaign."""

    model_config = ConfigDict(extra="forbid")

    max_trials: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Completed trials to run."
    )
    # Running time as ``time.monotonic()`` counts it while a session runs: the interlock
    # pauses count (a beamtime allocation ends whatever the door), and so does a runner
    # stopped by Ctrl-Z; the time between sessions does not, nor a machine's system
    # suspend on Linux (its monotonic clock stands still then). The README says the same.
    max_duration: Duration | None = Field(
        default=None,
        description=(
            "Running time limit, summed over the sessions (run, resume), e.g. 2h, 30m, "
            "1h30m, 1d: counts interlock pauses and a runner stopped by Ctrl-Z, not the "
            "time between sessions nor system suspend (Linux). An ask/tell campaign's "
            "limit is its age instead."
        ),
    )
    max_failures: int = Field(
        default=10,
        ge=1,
        le=1_000_000,
        description="Failed trials after which the campaign stops (a broken instrument).",
    )
    target: float | dict[str, float] | None = Field(
        default=None,
        description=(
            "Stop once a feasible trial reaches this value of the objective (one objective), "
            "or reaches every given value in one trial ({objective: value}, several)."
        ),
    )
    patience: int | None = Field(
        default=None,
        ge=1,
        le=1_000_000,
        description=(
            "Stop when the last N completed trials did not improve the best feasible value "
            "(several objectives: the hypervolume) by at least min_improvement."
        ),
    )
    min_improvement: float = Field(
        default=0.0,
        ge=0.0,
        allow_inf_nan=False,
        description="The least gain that counts as an improvement for patience (0: any).",
    )

    @field_validator("target")
    @classmethod
    def _finite_target(cls, target: Any) -> Any:
        values = target.values() if isinstance(target, dict) else [target]
        for v in values:
            if v is not None and not math.isfinite(v):
                raise ValueError("a target must be a finite number")
        if isinstance(target, dict) and not target:
            raise ValueError("give at least one objective's target, e.g. {yield: 0.9}")
        return target


class Campaign(BaseModel):
    """A whole optimisation campaign, as written in its YAML file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=100,
        pattern=_CAMPAIGN_NAME,
        description="Shown in status and carried in every run's start document.",
    )
    description: str = Field(default="", max_length=10_000)
    parameters: list[Parameter] = Field(min_length=1, max_length=100)
    objectives: list[Objective] = Field(min_length=1, max_length=4)
    constraints: list[str] = Field(
        default_factory=list,
        max_length=100,
        description=(
            "Parameter constraints no proposal may break, e.g. 'temperature + 2 * "
            "residence_time <= 150' or 'x1**2 + x2**2 <= 1'."
        ),
    )
    outcome_constraints: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Bounds on measured outputs for a trial to count, e.g. 'impurity <= 0.05'.",
    )
    instrument: InstrumentConfig
    planner: PlannerConfig = Field(default_factory=PlannerConfig)
    budget: Budget
    prior_data: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="CSV of earlier measurements (relative to this file) the planner learns from.",
    )
    seed: int | None = Field(
        default=None, ge=0, lt=2**32, description="Fixes initial design, noise and model fits."
    )
    metadata: Annotated[dict[str, Any], BeforeValidator(plain_metadata)] = Field(
        default_factory=dict,
        description="Run metadata (proposal_id, sample, operator, ...: text, numbers, "
        "true/false) recorded in every run's start document, beside the instrument file's.",
    )

    @field_validator("instrument", mode="before")
    @classmethod
    def _instrument_shorthand(cls, value: Any, info: ValidationInfo) -> Any:
        """``instrument: branin``, ``instrument: pkg.mod:func`` or ``instrument: manual``
        (the operator enters the objectives' values, and the outcome-constrained outputs')
        as shorthand; ``{manual: true}`` without ``outputs:`` enters the same outputs as
        ``instrument: manual`` (it was refused, though the README presents ``outputs:`` as
        the way to record more than the objectives; found in review)."""
        if value == "manual":
            return {"manual": True, "outputs": _manual_outputs(info.data)}
        if isinstance(value, str):
            return {"function": value} if ":" in value else {"simulator": value}
        if isinstance(value, Mapping) and value.get("manual") is True:
            if value.get("outputs") is None:
                value = {**value, "outputs": _manual_outputs(info.data)}
        return _instrument_seconds(value)

    @property
    def space(self) -> Space:
        """The search space: the parameters under the campaign's constraints."""
        return Space(self.parameters, **self.space_options())

    def space_options(self) -> dict[str, Any]:
        """Keyword arguments of ``Space`` beyond the parameters (one place to extend)."""
        return {"constraints": tuple(self.constraints), **_dataset_candidates(self)}

    @property
    def parsed_outcome_constraints(self) -> list[OutcomeConstraint]:
        """``outcome_constraints`` parsed (the loader has checked that they parse)."""
        return [parse_outcome_constraint(t) for t in self.outcome_constraints]


#: The ``instrument:`` options that are seconds, by their path in it: each takes a duration
#: as ``budget.max_duration`` does (``timeout: 10m``), see :func:`_instrument_seconds`.
SECONDS_OPTIONS: tuple[tuple[str, ...], ...] = (
    ("timeout",),
    ("latency",),
    ("executor", "connect_timeout"),
)


def _instrument_seconds(value: Any) -> Any:
    """``instrument:`` with each of its :data:`SECONDS_OPTIONS` written as duration text
    (``timeout: 10m``, ``latency: 1.5s``) replaced by its seconds.

    ``budget.max_duration`` took ``10m`` while ``timeout: 10m`` was refused with "unable to
    parse string as a number" (found in review): one duration syntax now serves every
    option that is a time. A number stays as it is (seconds), and so does text that is no
    duration, for the option's own check to refuse with its line (``_own_fix`` words it).
    The option's own range applies to the seconds, not :func:`parse_duration`'s: a
    ``latency: 0s`` is 0, which a latency may be.
    """
    if not isinstance(value, Mapping):
        return value
    out = dict(value)
    for path in SECONDS_OPTIONS:
        node: Any = out
        for key in path[:-1]:
            inner = node.get(key)
            if not isinstance(inner, Mapping):
                break
            node[key] = node = dict(inner)
        else:
            given = node.get(path[-1])
            if isinstance(given, str):
                seconds = _duration_seconds(given)
                if seconds is not None:
                    node[path[-1]] = seconds
    return out


def _manual_outputs(fields: Mapping[str, Any]) -> list[str]:
    """What an operator enters by default: the objectives, then each output an outcome
    constraint names (``fields``: the campaign's fields validated so far)."""
    outputs = [o.name for o in fields.get("objectives") or []]
    for text in fields.get("outcome_constraints") or []:
        try:
            name = parse_outcome_constraint(text).name
        except ValueError:
            continue  # reported with its line by the loader
        if name not in outputs:
            outputs.append(name)
    return outputs


@dataclass(frozen=True)
class LoadedCampaign:
    """A validated campaign with where it came from.

    Attributes:
        campaign: the validated model.
        path: the file (or a pseudo path such as ``<store>`` when loaded from a store).
        text: the exact YAML text, stored with the campaign so resume needs no file.
        base_dir: where relative paths in the file (user functions) are resolved.
        instrument_text: the text of an ``instrument: {file: ...}`` the devices are built
            from, or a dataset instrument's record (its data's hash, parameters and goals;
            see ``_apply_dataset``); stored with the campaign; ``None`` for other instruments.
        metadata: what every run's start document carries beside closedloop's own keys:
            the instrument file's ``metadata:`` and the campaign's (``_run_metadata``);
            the campaign's alone when the campaign is only shown (``cross_check=False``:
            the instrument file is not read then). Both come from texts the store keeps, so
            ``resume`` records the same.
        planner_origin: for a ``planner: {plugin: ...}`` campaign, where the plugin's code
            came from when the campaign started (JSON: a file's path and SHA-256, or a
            distribution's name and version; ``loop.planner_plugin.pin_origin``), stored
            with the campaign; ``None`` for the built-in planners.
    """

    campaign: Campaign
    path: Path
    text: str
    base_dir: Path
    instrument_text: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    planner_origin: str | None = None


# ---------------------------------------------------------------------------- loading
def load_campaign(path: str | Path, *, import_plugin: bool = True) -> LoadedCampaign:
    """Read and validate a campaign file; raise ``CampaignConfigError`` on any problem.

    ``import_plugin=False``: a ``planner: {plugin: ...}`` is checked for its form but its
    code is not imported (``closedloop instruments check``, which proposes nothing: a
    technician checking connections runs no planner code; found in review).
    """
    path = Path(path)
    try:
        text = read_text(path, kind="campaign file", max_bytes=MAX_FILE_BYTES)
    except TextFileError as exc:
        raise CampaignConfigError(path, exc.problem, line=exc.line, fix=exc.fix) from None
    return parse_campaign(
        text,
        path=path,
        base_dir=path.resolve().parent,
        require_goal=True,
        import_plugin=import_plugin,
    )


def parse_campaign(
    text: str,
    *,
    path: Path,
    base_dir: Path,
    instrument_text: str | None = None,
    cross_check: bool = True,
    require_goal: bool = False,
    stored: StoredCopy | None = None,
    planner_origin: str | None = None,
    import_plugin: bool = True,
) -> LoadedCampaign:
    """Validate campaign YAML ``text`` (see ``load_campaign``, also for ``import_plugin``).

    ``require_goal``: refuse an objective without ``goal:`` (a campaign file, read by
    ``load_campaign``: a forgotten goal would silently maximise a yield or an impurity
    alike). Off by default so that a campaign read back from a store keeps loading as it
    was accepted: older closedloop versions took a missing goal as ``maximize``.

    ``instrument_text``: the instrument file's text stored with the campaign, used instead of
    the file on disk (which is read now when not given); see
    ``instruments._instrument_file.pin_instrument_text``. ``planner_origin``: the plugin's
    origin stored with the campaign (``LoadedCampaign.planner_origin``), compared with the
    plugin as it is now when the campaign is to propose.

    ``cross_check=False`` skips the checks against the planner and the instrument, for a
    campaign read back from a store by ``status``, ``export`` or ``report``: it passed them
    when it was stored, and describing the instrument imports its module (a user's function,
    which need not be importable where the store is read; Ax for an Ax planner). Nor does it
    read a dataset instrument's data (which may have moved; see ``_apply_dataset``).

    ``stored``: the campaign is read back from a store to be used (``resume``, ``suggest``,
    ``tell``, ``plan --store``). A campaign read back from a store (``stored``, or
    ``cross_check=False``) keeps what it was accepted with where a rule came later
    (:meth:`_Rules.added`; warned about when it is used): the store's copy is what is read,
    and no edit of the file can change it. Any other refusal of a stored campaign to be
    used names the store's copy and a way on (:class:`StoredCampaignError`).
    """
    try:
        return _parse_campaign(
            text,
            path=path,
            base_dir=base_dir,
            instrument_text=instrument_text,
            cross_check=cross_check,
            require_goal=require_goal,
            rules=_Rules(
                stored=stored,
                lenient=stored is not None or not cross_check,
                import_plugin=import_plugin,
            ),
            planner_origin=planner_origin,
        )
    except CampaignConfigError as exc:
        if stored is None or isinstance(exc, StoredCampaignError):
            raise
        try:  # whether `closedloop export`, which reads the same text, can read it
            parse_campaign(
                text,
                path=path,
                base_dir=base_dir,
                instrument_text=instrument_text,
                cross_check=False,
            )
        except CampaignConfigError:
            exportable = False
        else:
            exportable = True
        raise StoredCampaignError(stored, exc, exportable=exportable) from None


def _parse_campaign(
    text: str,
    *,
    path: Path,
    base_dir: Path,
    instrument_text: str | None,
    cross_check: bool,
    require_goal: bool,
    rules: _Rules,
    planner_origin: str | None = None,
) -> LoadedCampaign:
    data = _read_yaml(text, path)
    dataset_pin = _apply_dataset(data, path, base_dir, stored=instrument_text, load=cross_check)
    if cross_check:  # a stored campaign shown is read as it was accepted (older rules)
        _check_not_instrument_file(data, path)
        try:
            refuse_booleans(data, path, model=Campaign, error=CampaignConfigError, hints=_HINTS)
        except CampaignConfigError as exc:
            rules.added(exc, "true is read as 1 and false as 0, as when it started")
        _check_manual_spelling(data, path)
        _check_instrument_list(data, path)
    _keep_reserved_metadata(data, path, rules)
    found = locate_metadata_problem(data, ("metadata",))
    if found is not None:
        line, problem, fix = found
        raise CampaignConfigError(path, problem, line=line, fix=fix)
    try:
        campaign = Campaign.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, data, path) from None
    if require_goal:
        _check_goals(campaign, data, path)
    pinned = pin_instrument_text(campaign.instrument, base_dir, instrument_text)
    if dataset_pin is None and pinned is None and cross_check:
        pinned = _pin_function(campaign.instrument.function, base_dir, instrument_text)
    proposes = rules.stored is None or rules.stored.proposes
    if cross_check and proposes and campaign.planner.plugin is not None:
        from loop.planner_plugin import pin_origin

        planner_origin = pin_origin(campaign.planner.plugin, base_dir, planner_origin)
    campaign.instrument._campaign_path = path
    campaign.instrument._as_stored = rules.lenient
    metadata = _check_semantics(
        campaign, data, path, base_dir, cross_check=cross_check, rules=rules
    )
    return LoadedCampaign(
        campaign=campaign,
        path=path,
        text=text,
        base_dir=base_dir,
        instrument_text=pinned if dataset_pin is None else dataset_pin,
        metadata=metadata,
        planner_origin=planner_origin,
    )


def _keep_reserved_metadata(data: Any, path: Path, rules: _Rules) -> None:
    """A stored campaign's ``metadata:`` key that closedloop now writes itself (``function``
    and ``planner`` came with provenance): the campaign is read as it was accepted, the
    key left out of its runs' metadata (closedloop's own value is what they record). Refused
    outright, a stored campaign could not even be shown or exported (found in review)."""
    block = data.get("metadata") if isinstance(data, Mapping) else None
    if not rules.lenient or not isinstance(block, MutableMapping):
        return
    for key in reserved_metadata_keys(data):
        problem, fix = metadata_problem(key, block[key]) or ("", "")
        exc = CampaignConfigError(path, problem, line=line_of(data, ("metadata", key)), fix=fix)
        rules.added(exc, f"its runs record {key} as closedloop writes it, not {block[key]!r}")
        del block[key]


@dataclass(frozen=True)
class StoredCopy:
    """A campaign read back from a store to be used: which store and campaign hold it.

    Attributes:
        url: the store's URL as messages show it.
        campaign_id: the campaign's id in that store.
        name: the campaign's name.
        proposes: whether anything is to be proposed (``False`` for ``tell``, which only
            records results: the checks against the planner are then left out, so that
            measured results are never refused for how the planner would go on).
    """

    url: str
    campaign_id: int
    name: str
    proposes: bool = True

    @property
    def campaign(self) -> str:
        return f"campaign '{self.name}' (id {self.campaign_id})"


class StoredCampaignError(CampaignConfigError):
    """A stored campaign this closedloop cannot use as it is stored.

    A refusal worded for a campaign file ("...c.yaml:11: ...; remove it") sent the user to
    edit a file that is no longer read: the store keeps its own copy of the campaign's text,
    and ``resume``, ``suggest`` and ``tell`` read that copy (found in review). This one names
    the store's copy and gives the way on that exists: the campaign's trials exported, and a
    new campaign from a corrected file that learns from them as prior data. ``export`` reads
    a stored campaign without the checks against its planner and instrument
    (``exportable``); a text this version cannot read at all (YAML or the schema itself
    refused) is exported by the version that stored it.
    """

    def __init__(
        self,
        stored: StoredCopy,
        exc: CampaignConfigError,
        *,
        exportable: bool = True,
        way_on: str | None = None,
    ) -> None:
        where = f"{exc.path.name}, line {exc.line}" if exc.line is not None else exc.path.name
        export = f"`{cli_command('export', stored.url, stored.campaign_id, '-o trials.csv')}`"
        if not exportable:
            export += (
                " with the closedloop version that stored the campaign (this one cannot read "
                "its text at all, so its export refuses it too; its trials stay in the store, "
                "untouched)"
            )
        fix = (
            f"the store keeps its own copy of the campaign file, which editing {exc.path.name} "
            f"does not change. Go on in a new campaign that learns from this one's trials: "
            f"{export}, then start a corrected copy of the file (with another name, and "
            "`prior_data: trials.csv`)" + (f"; in it: {exc.fix}" if exc.fix else "")
        )
        from instruments._build import SessionFunctionMissing
        from planners._config import PlannerUnavailable

        if isinstance(exc.__context__, SessionFunctionMissing):
            # A notebook's function after a kernel restart: defining it again is the way on,
            # not a new campaign (found in review).
            fix = exc.fix
        elif getattr(exc.__context__, "field", None) == "function":
            # The function's file is not stored: it is read as it is now, so restoring or
            # fixing it is the way on (a new campaign was no answer to a file moved or broken).
            fix = (
                (f"{exc.fix}; " if exc.fix else "")
                + "the store keeps the campaign's text, not its function: the function is "
                "imported from its file as it is now, so restore or fix that file, then run "
                "the command again (nothing was written to the store)"
            )
        elif isinstance(exc.__context__, PlannerUnavailable):
            # The planner's library is not installed here (`kind: ax` without Ax): the
            # install is the way on, and the campaign goes on as stored once it is done.
            fix = (
                f"{exc.__context__.install}, then run the command again: nothing was "
                "written to the store, and the campaign goes on where it stopped"
            )
        if way_on is not None:  # the caller knows it (a planner plugin to restore or install)
            fix = way_on
        problem = f"{stored.campaign} in {stored.url}, as stored ({where}): {exc.problem}"
        ClosedLoopError.__init__(self, f"{problem}\n  fix: {fix}")
        self.path, self.line, self.problem, self.fix = exc.path, exc.line, problem, fix


def import_stored_planner(loaded: LoadedCampaign, stored: StoredCopy) -> None:
    """Import a stored ``plugin:`` campaign's planner class and check it against the
    campaign, before ``resume`` writes anything: a plugin that cannot be imported any more
    (a file gone, a package uninstalled) or refuses the campaign is refused with the store
    untouched, naming the store's copy, its ``plugin:`` line and the restore or install that
    is the way on, never a fall-back to a built-in planner (``loop.planner_plugin``).

    ``suggest`` and ``plan`` need no call: the planner they rebuild imports it, before they
    write anything, and is refused in the same words (the refusal attached to the config).

    Raises:
        StoredCampaignError: the plugin cannot be imported, or refuses the campaign.
    """
    from planners import check_planner
    from planners._plugin import PlannerPluginError

    campaign = loaded.campaign
    if campaign.planner.plugin is None:
        return
    try:
        check_planner(
            campaign.space,
            list(campaign.objectives),
            campaign.planner,
            outcome_constraints=campaign.parsed_outcome_constraints,
        )
    except PlannerPluginError as exc:
        data = _read_yaml(loaded.text, loaded.path)
        raise _plugin_refusal(exc, data, loaded.path, stored) from None


def import_stored_function(loaded: LoadedCampaign, stored: StoredCopy) -> None:
    """Import a stored ``function:`` campaign's function, to measure with it (``resume``).

    Reading a stored campaign back imports nothing (``parse_campaign``): its function file is
    the store's word, and only measuring needs it, so ``resume`` calls this once nothing is
    left to refuse (a finished campaign, a held lease, pending suggestions). This does run the
    file's top-level code, as resuming a function campaign always measures with that file.
    A problem is refused as reading the campaign refuses one: the store's copy, its line,
    and a way on (:class:`StoredCampaignError`).

    Raises:
        StoredCampaignError: the function cannot be imported or called.
    """
    campaign = loaded.campaign
    spec = campaign.instrument.function
    if spec is None:
        return
    from instruments import load_function

    try:
        try:
            load_function(spec, base_dir=loaded.base_dir)
        except ValueError as exc:
            data = _read_yaml(loaded.text, loaded.path)
            raise _instrument_error(exc, campaign, data, loaded.path) from None
    except CampaignConfigError as exc:
        raise StoredCampaignError(stored, exc) from None


@dataclass(frozen=True)
class _Rules:
    """Which campaign the rules are applied to: a campaign file (``lenient`` off), or a
    campaign read back from a store (on; ``stored`` when it is to be used); whether a
    planner plugin's code may be imported to check it (``import_plugin``)."""

    stored: StoredCopy | None
    lenient: bool
    import_plugin: bool = True

    def added(self, exc: CampaignConfigError, kept: str) -> None:
        """A rule added after campaigns could be stored without it: raise ``exc`` for a
        campaign file; keep a stored campaign as it was accepted (``kept``: how), warning
        when it is used.

        The rules that take this path refuse what older versions accepted and read one way,
        which the campaign's stored trials were measured and learned under: a setting its
        planner kind ignores (``planners._config.ignored_settings``), true/false in a number
        field (read as 1/0), a reserved column name, contradictory outcome bounds, an
        outcome bound written with an underscore (read as ``float()`` read it), more
        unordered choice values than a model takes (``planners._space.MAX_CATEGORIES``).
        Refusing them protected nothing the stored trials had not met already, and left a
        campaign that could be neither resumed, suggested nor told: its text is the store's
        copy, which no edit of the file changes (found in review). Rules that guard the
        hardware (the instrument's checks) or what the planner can serve stay refusals
        (:class:`StoredCampaignError`).
        """
        if not self.lenient:
            raise exc
        if self.stored is None:
            return  # shown (status, export, report): as it was accepted, without a word
        where = f"{exc.path.name}, line {exc.line}" if exc.line is not None else exc.path.name
        logger.warning(
            "%s as stored (%s): %s. Accepted when it was stored, the campaign goes on so: "
            "%s (a new campaign file is refused for it)",
            self.stored.campaign,
            where,
            exc.problem,
            kept,
        )


#: The key of the record a ``function:`` campaign keeps in the store's ``instrument_text``.
_FUNCTION_PIN = "_closedloop_function"


def _pin_function(spec: str | None, base_dir: Path, stored: str | None) -> str | None:
    """Record which source a ``function:`` instrument's campaign started with; warn when
    a stored campaign's function file has changed since.

    A function is re-imported as it is now on every ``resume``, ``suggest`` and ``plan
    --store``: an edited model (a fixed bug, a replaced file) would measure the campaign's
    later trials with another instrument, and its "best" compare unlike with unlike, with
    nothing said (found in review). Its code is not pinned as an instrument file's text is
    (it may import the user's other modules); the hash of its file is, and a change is a
    warning naming the file, as a dataset's is. ``None`` when the source file cannot be
    found without running the user's code (importing it then reports the problem).
    """
    if spec is None or ":" not in spec:
        return None
    source = _function_source(spec.rsplit(":", 1)[0], base_dir)
    if source is None:
        return None
    digest = file_sha256(source)
    if digest is None:  # importing it says what is wrong, as for a missing file
        return None
    previous = _read_record(stored, _FUNCTION_PIN)
    if previous is None:
        # a new campaign, or one stored before functions were pinned: nothing to compare
        return json.dumps({_FUNCTION_PIN: {"file": str(source), "sha256": digest}})
    if previous.get("sha256") != digest:
        logger.warning(
            "function file %s has changed since the campaign started (its first trials were "
            "measured by other code); continuing with the file as it is now (start a new "
            "campaign to compare like with like)",
            source,
        )
    return stored


def code_pins(
    loaded: LoadedCampaign,
) -> dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None]]:
    """The user code a campaign's trials depend on, by what sessions and start documents
    name it: ``function`` (a ``function:`` instrument's source file, ``{file, sha256}``) and,
    for a ``planner: {plugin: ...}``, ``planner`` (the plugin's origin,
    ``loop.planner_plugin.origin``); each as the campaign started with it and as it is now,
    ``None`` where not known (no function file; code not found without running it; a
    campaign stored before its code was pinned). Found without importing anything of the
    user's. ``loop.provenance`` records a change as a ``{what}_changed`` event and names the
    code in every run's start document."""
    now = _pin_function(loaded.campaign.instrument.function, loaded.base_dir, None)
    pins = {
        "function": (
            _read_record(loaded.instrument_text, _FUNCTION_PIN),
            _read_record(now, _FUNCTION_PIN),
        )
    }
    spec = loaded.campaign.planner.plugin
    if spec is not None:
        from loop.planner_plugin import origin

        pins["planner"] = (json_record(loaded.planner_origin), origin(spec, loaded.base_dir))
    return pins


def json_record(stored: str | None) -> dict[str, Any] | None:
    """A JSON object the store keeps as text (a campaign's ``planner_origin``), ``None``
    for none or anything else."""
    try:
        found = json.loads(stored or "null")
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def _function_source(where: str, base_dir: Path) -> Path | None:
    """The file a ``path/to/file.py`` or ``module`` function comes from, without importing
    the module itself (``find_spec`` imports a dotted name's parent packages only)."""
    if where.endswith(".py"):
        path = Path(where)
        return path if path.is_absolute() else base_dir / path
    try:
        spec = importlib.util.find_spec(where)
    except (ImportError, ValueError):
        return None
    origin = spec.origin if spec is not None else None
    return Path(origin) if origin and origin.endswith(".py") else None


def _read_record(stored: str | None, key: str) -> dict[str, Any] | None:
    """The record under ``key`` in a stored campaign's ``instrument_text`` JSON, if any."""
    record = (json_record(stored) or {}).get(key)
    return record if isinstance(record, dict) else None


def _instrument_error(
    exc: ValueError, campaign: Campaign, data: Any, path: Path
) -> CampaignConfigError:
    """An instrument's complaint about this campaign, at the line where the fix goes.

    Inline ``devices:`` are part of this file, so their own line (which the instrument-file
    parser found) is this file's line. An error about one parameter points at that
    parameter; any other at the ``instrument:`` key it names (``failing_region``,
    ``outputs``, ...), else at the instrument's source.
    """
    if getattr(exc, "inline", False):
        problem, fix = getattr(exc, "problem", str(exc)), getattr(exc, "fix", "")
        line = getattr(exc, "line", None) or line_of(data, ("instrument", "devices"))
        return CampaignConfigError(path, problem, line=line, fix=fix)
    line = None
    names = [p.name for p in campaign.parameters]
    parameter = getattr(exc, "parameter", None)
    if parameter in names:
        line = line_of(data, ("parameters", names.index(parameter)))
    if line is None:
        key = getattr(exc, "field", None)
        instrument = data.get("instrument") if isinstance(data, Mapping) else None
        if not (isinstance(key, str) and isinstance(instrument, Mapping) and key in instrument):
            key = "simulator" if campaign.instrument.simulator else "function"
        line = line_of(data, ("instrument", key)) or line_of(data, ("instrument",))
    from instruments._build import SessionFunctionMissing

    if isinstance(exc, SessionFunctionMissing):  # a notebook's function, not defined (yet)
        return CampaignConfigError(path, f"instrument: {exc.args[0]}", line=line, fix=exc.fix)
    fix = getattr(exc, "fix", "") or _INSTRUMENT_FIXES.get(str(getattr(exc, "field", "")), "")
    return CampaignConfigError(path, f"instrument: {exc}", line=line, fix=fix)


#: Fixes for an instrument's complaint about the ``instrument:`` key it names (the message
#: says what the instrument has).
_INSTRUMENT_FIXES = {
    "noise": "name only the outputs listed, e.g. noise: {y: 0.1}, or give one sd for all of "
    "them, e.g. noise: 0.1",
}


# ---------------------------------------------------------------------------- datasets
#: The key of the record a dataset campaign keeps in the store's ``instrument_text``.
_DATASET_PIN = "closedloop_dataset"


def _apply_dataset(
    data: Any, path: Path, base_dir: Path, *, stored: str | None, load: bool
) -> str | None:
    """``instrument: {dataset: ...}`` (issue 7), before validation: fill omitted
    ``parameters:`` and ``objectives:`` from the dataset's spec, make a user CSV's paths
    absolute (so that ``Campaign.space`` finds its rows from any folder), and return the
    record to store with the campaign (``None`` for another instrument).

    The record (the *pin*, JSON in the store's ``instrument_text``) holds the data's hash and
    the parameters and goals the campaign started with. ``load=False`` (``status``,
    ``export``, ``report``) reads no data: what the campaign file omits comes from the pin, so
    a campaign whose CSV has moved can still be shown and exported, and showing it never fits
    an emulator. A campaign stored before pins were kept falls back to the spec (the
    package's, or the user's spec file), and still never reads the CSV. ``load=True`` reads
    the data (an error names the data or spec file and line) and warns when a resumed
    campaign's data no longer has the hash it started with.
    """
    instrument = data.get("instrument") if isinstance(data, Mapping) else None
    if not isinstance(instrument, dict) or not isinstance(instrument.get("dataset"), str):
        return None
    spec = instrument.get("spec")
    if spec is not None and not isinstance(spec, str):
        return None  # the schema reports it
    import simulators

    name = instrument["dataset"]
    if spec is not None:  # as load_dataset resolves them
        instrument["dataset"] = str((Path(base_dir) / name).resolve())
        instrument["spec"] = str((Path(base_dir) / spec).resolve())
    pin = _read_pin(stored)
    if not load and pin is not None:
        _fill_from_dataset(data, instrument, pin["parameters"], pin["goal"])
        return stored
    if not load and "parameters" in data and "objectives" in data:
        return None  # nothing to fill: nothing to read
    try:
        if load:
            dataset = simulators.load_dataset(instrument["dataset"], spec, base_dir=base_dir)
            ds_spec = dataset.spec
        elif spec is not None:
            ds_spec = simulators.load_spec(instrument["spec"], name=Path(name).stem)
        else:
            ds_spec = simulators.load_dataset(name).spec  # package data: always there
    except simulators.DatasetError as exc:
        key = (
            "spec"
            if spec and exc.path is not None and exc.path.suffix in (".yaml", ".yml")
            else "dataset"
        )
        raise CampaignConfigError(
            path, f"instrument.{key}: {exc}", line=line_of(data, ("instrument", key))
        ) from None
    _fill_from_dataset(data, instrument, ds_spec.campaign_parameters(), dict(ds_spec.goal))
    if not load:
        return None
    if pin is None:
        return json.dumps(
            {
                _DATASET_PIN: {
                    "digest": dataset.digest,
                    "parameters": ds_spec.campaign_parameters(),
                    "goal": dict(ds_spec.goal),
                }
            }
        )
    if pin["digest"] != dataset.digest:
        logger.warning(
            "dataset %s has changed since the campaign started (its rows or spec are not the "
            "ones its first trials were measured on); continuing with the data as it is now "
            "(start a new campaign to compare like with like)",
            dataset.source if spec is not None else name,
        )
    return stored


def _read_pin(stored: str | None) -> dict[str, Any] | None:
    """The dataset record of a stored campaign (see ``_apply_dataset``), if it has one."""
    pin = _read_record(stored, _DATASET_PIN)
    if (
        isinstance(pin, dict)
        and isinstance(pin.get("digest"), str)
        and isinstance(pin.get("parameters"), list)
        and isinstance(pin.get("goal"), dict)
    ):
        return pin
    return None


def _fill_from_dataset(
    data: dict[str, Any],
    instrument: Mapping[str, Any],
    parameters: list[dict[str, Any]],
    goal: Mapping[str, str],
) -> None:
    """What a dataset campaign may omit: its ``parameters:`` (the dataset's inputs) and its
    ``objectives:`` (the spec's ``goal``, narrowed to the instrument's ``outputs:`` if given).
    More goals than a campaign may have are not filled in: the missing ``objectives:`` is
    then reported, and says what to write."""
    if "parameters" not in data:
        data["parameters"] = copy.deepcopy(parameters)
    if "objectives" not in data:
        outputs = instrument.get("outputs")
        goals = [(o, g) for o, g in goal.items() if not isinstance(outputs, list) or o in outputs]
        if 1 <= len(goals) <= 4:  # Campaign.objectives' max_length
            data["objectives"] = [{"name": o, "goal": g} for o, g in goals]


class _DatasetRowsError(ValueError):
    """No row of an enumerated dataset lies inside the campaign's domain.

    Attributes:
        parameter: the parameter that leaves out every row by itself (its line is where the
            fix goes), or ``None`` when only the parameters together do.
        fix: what to change.
    """

    def __init__(self, message: str, *, parameter: str | None, fix: str) -> None:
        super().__init__(message)
        self.parameter = parameter
        self.fix = fix


def _dataset_candidates(campaign: Campaign) -> dict[str, Any]:
    """``{"candidates": rows}`` for an enumerated dataset instrument (the rows inside the
    campaign's domain: a campaign may narrow the choices), else ``{}``.

    Raises:
        _DatasetRowsError: the campaign's parameters leave out every row.
    """
    instrument = campaign.instrument
    if instrument.dataset is None:
        return {}
    import simulators

    # The rows, not the simulator: an emulated dataset has no candidates, and asking for its
    # simulator here would fit the emulator just to learn that.
    dataset = simulators.load_dataset(instrument.dataset, instrument.spec)
    by_name = {p.name: p for p in campaign.parameters}
    if not dataset.spec.enumerated or set(by_name) != set(dataset.spec.parameter_names):
        return {}  # a mismatch is reported by describe_instrument with its line
    table = simulators.dataset_simulator(instrument.dataset, instrument.spec).candidates or ()

    def inside(name: str, value: Any) -> bool:
        param = by_name[name]
        if isinstance(param, ChoiceParameter):
            return value in param.values
        if isinstance(param, FixedParameter):
            return bool(value == param.value)
        lo, hi = param.bounds
        return bool(lo <= value <= hi)

    rows = [r for r in table if all(inside(n, v) for n, v in r.items())]
    if table and not rows:
        raise _no_rows(dataset.name, table, by_name, inside)
    return {"candidates": rows}


def _no_rows(
    name: str,
    table: tuple[dict[str, Any], ...],
    by_name: Mapping[str, Parameter],
    inside: Any,
) -> _DatasetRowsError:
    """Say which parameter leaves out every row of dataset ``name``, and what the data has."""
    fix = (
        "widen the parameter's bounds or values to take in rows of the data, or leave "
        "`parameters:` out to take the dataset's"
    )
    for param_name, param in by_name.items():
        if any(inside(param_name, r[param_name]) for r in table):
            continue
        column = [r[param_name] for r in table]
        if all(_is_number(v) for v in column):
            has = f"{param_name} in [{min(column):g}, {max(column):g}]"
        else:
            has = f"{param_name} in {list(dict.fromkeys(column))}"
        if isinstance(param, ChoiceParameter):
            wants = f"{param_name} in {list(param.values)}"
        elif isinstance(param, FixedParameter):
            wants = f"{param_name} = {param.value!r}"
        else:
            wants = f"{param_name} in {list(param.bounds)}"
        return _DatasetRowsError(
            f"no row of dataset {name!r} has {wants} (the data has {has})",
            parameter=param_name,
            fix=fix,
        )
    return _DatasetRowsError(
        f"no row of dataset {name!r} lies inside all of these bounds and values together "
        f"(each parameter alone keeps some of its {len(table)} rows)",
        parameter=None,
        fix=fix,
    )


def _read_yaml(text: str, path: Path) -> Any:
    try:
        return read_yaml_mapping(text, path, error=CampaignConfigError, example="branin.yaml")
    except CampaignConfigError as exc:
        raise _quote_hint(exc, text) from None


# ruamel's words for a plain value that starts with a character YAML reserves (`unit: %`).
_RESERVED_START = re.compile(r"found character '([%@`])' that cannot start any token")


def _quote_hint(exc: CampaignConfigError, text: str) -> CampaignConfigError:
    """``exc`` with the fix for a value YAML cannot read unquoted (``unit: %``, ``@home``):
    quote it, shown on the key of that line. The general fix (indentation, colons, quotes)
    left the user to find that ``%`` is the problem (found in review)."""
    reserved = _RESERVED_START.search(exc.problem)
    if reserved is None:
        return exc
    char = reserved.group(1)
    lines = text.splitlines()
    line = lines[exc.line - 1] if exc.line is not None and 0 < exc.line <= len(lines) else ""
    pair = re.search(rf"([\w.-]+):\s*({re.escape(char)}[^,}}\]#\n]*)", line)
    example = f'{pair.group(1)}: "{pair.group(2).strip()}"' if pair else f'unit: "{char}"'
    return CampaignConfigError(
        exc.path,
        exc.problem,
        line=exc.line,
        fix=f"quote a value that starts with {char}: {example} (YAML reserves {char} at the "
        "start of an unquoted value)",
    )


def _explain(exc: ValidationError, data: Any, path: Path) -> Exception:
    unbracketed = _unbracketed_list(exc, data, path)
    if unbracketed is not None:
        return unbracketed
    hints = _HINTS
    at_bounds = [e for e in exc.errors(include_url=False) if "bounds" in e["loc"]]
    if at_bounds and all(_LOG_BOUNDS_MESSAGE in str(e["msg"]) for e in at_bounds):
        # The general bounds fix shows [0, 10], the very bounds a log scale refuses.
        hints = {**_HINTS, "bounds": _LOG_BOUNDS_HINT}
    error = explain(exc, data, path, model=Campaign, error=CampaignConfigError, hints=hints)
    return _own_fix(error, exc, data, hints)


def _own_fix(
    error: Exception, exc: ValidationError, data: Any, hints: Mapping[str, str]
) -> Exception:
    """``error`` (``explain``'s message) with the fix the reported pydantic error itself
    implies, where a key's general hint says too little or the wrong thing (found in review):

    * a value not among a field's choices (``planner.kind: botorc``, an ``acquisition``):
      the nearest choice and all of them (the fix was "see `closedloop validate --help`",
      which lists no kinds);
    * a name that breaks its pattern (``flow rate``): the rule in words, not the regular
      expression, and the name rewritten to follow it;
    * a rule of the ``instrument:`` section (``instruments._config.RuleError``: hang_rate
      without timeout, ``workers`` for the wrong executor): its own fix.
    """
    if not isinstance(error, CampaignConfigError):
        return error
    for err in exc.errors(include_url=False):
        message = plain_message(err)
        if message not in error.problem or line_of(data, err["loc"]) != error.line:
            continue
        problem, fix = error.problem, ""
        key = next((p for p in reversed(err["loc"]) if isinstance(p, str)), "")
        ctx = err.get("ctx") or {}
        if err["type"] == "literal_error":
            choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
            near = difflib.get_close_matches(str(err.get("input")), choices, n=1, cutoff=0.5)
            where = problem.partition(f": {message}")[0] if f": {message}" in problem else key
            fix = (f"did you mean '{near[0]}'? " if near else "") + (
                hints.get(key) or f"{where} is one of: {', '.join(choices)}"
            )
        elif err["type"] == "string_pattern_mismatch":
            words = _PATTERN_WORDS.get(str(ctx.get("pattern")))
            if words is None:
                return error
            rule, example = words
            problem = problem.replace(message, rule)
            fix = f"write e.g. {key}: {example(str(err.get('input', '')))}"
        elif isinstance(rule_fix := getattr(ctx.get("error"), "fix", None), str) and rule_fix:
            fix = rule_fix
        elif err["type"] == "float_parsing" and _is_seconds_option(err["loc"]):
            # Text that is no duration (``_instrument_seconds`` took every one that is).
            where = ".".join(str(p) for p in err["loc"])
            problem = (
                f"{where}: {err.get('input')!r} is neither a valid number of seconds nor a duration"
            )
            fix = f"write {DURATION_WORDS}"
        elif err["type"] == "too_long" and err["loc"] in _TOO_LONG:
            why, fix = _TOO_LONG[err["loc"]]
            given = err.get("input")
            count = f" (this file has {len(given)})" if isinstance(given, Sized) else ""
            problem = f"{key}: a campaign takes at most {ctx.get('max_length')} {key}{count}"
            problem += f": {why}" if why else ""
        else:
            return error
        more = MORE_PROBLEMS.search(error.fix)
        if more is not None:
            fix += f"; {more.group(1)}"
        return CampaignConfigError(error.path, problem, line=error.line, fix=fix)
    return error


def _is_seconds_option(loc: Sequence[Any]) -> bool:
    """Whether ``loc`` (a pydantic error's) is one of the instrument's
    :data:`SECONDS_OPTIONS`."""
    return len(loc) > 1 and loc[0] == "instrument" and tuple(loc[1:]) in SECONDS_OPTIONS


#: The campaign's list limits, each with why and what to do (pydantic's own words named the
#: limit and the fix line showed an example of one parameter; found in review).
_TOO_LONG: dict[tuple[Any, ...], tuple[str, str]] = {
    ("parameters",): (
        "a GP model learns little about more within the trials a lab can run, and each "
        "suggest optimises over every one",
        "drop the parameters you keep constant (set them in the instrument or the function "
        "instead), or split the campaign into stages: screen which parameters matter first, "
        "then optimise those",
    ),
    ("objectives",): (
        "the hypervolume of more is too costly to compute, and a front of more too hard to read",
        "keep the objectives you trade off and bound the others with outcome_constraints: "
        "(e.g. 'impurity <= 0.05')",
    ),
    ("constraints",): (
        "",
        "merge constraints that say the same, or narrow the parameters' bounds instead",
    ),
}


def _ascii(name: str) -> str:
    """``name``'s accented letters without their accents, a micro sign as ``u``
    (``température`` -> ``temperature``, ``µL`` -> ``uL``), so that the name suggested for a
    non-ASCII one keeps its letters (``temp_rature`` read as a typo; found in review)."""
    text = unicodedata.normalize("NFKD", name.translate(_LETTERS))
    return "".join(c for c in text if not unicodedata.combining(c))


#: Letters Unicode gives no ASCII base letter (NFKD leaves them whole), as they are spelt.
_LETTERS = str.maketrans(
    {"µ": "u", "μ": "u", "ø": "o", "Ø": "O", "ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe"}
    | {"Œ": "OE", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "þ": "th", "Þ": "Th"}
)


def _as_identifier(name: str) -> str:
    """``name`` made a parameter name: ``flow rate`` -> ``flow_rate``."""
    text = re.sub(r"[^A-Za-z0-9_]+", "_", _ascii(name))
    text = re.sub(r"__+", "_", text).strip("_")
    return text if text and not text[0].isdigit() else f"x_{text}".rstrip("_")


def _as_campaign_name(name: str) -> str:
    """``name`` made a campaign name: ``my/campaign`` -> ``my-campaign``."""
    text = re.sub(r"[^A-Za-z0-9_.\- ]+", "-", _ascii(name)).strip("-_. ")
    return text or "my-campaign"


#: Each name pattern of the schema, in words, and a name that follows it made from one that
#: does not. Matched by the pattern's text: a changed pattern falls back to pydantic's words.
_PATTERN_WORDS: dict[str, tuple[str, Any]] = {
    # parameter names (planners._space): identifiers in constraints, devices and exports
    r"^[A-Za-z_][A-Za-z0-9_]*$": (
        "a name is ASCII letters, digits and underscores, not starting with a digit",
        _as_identifier,
    ),
    _CAMPAIGN_NAME: (
        "a campaign name is ASCII letters, digits, spaces and _ . -, starting with a letter "
        "or digit",
        _as_campaign_name,
    ),
}


def _unbracketed_list(exc: ValidationError, data: Any, path: Path) -> CampaignConfigError | None:
    """A list written without brackets (``values: SPhos, XPhos, PPh3``, ``outputs: y, cost``),
    said as such, with the list written out; ``None`` for any other error.

    On a line of its own the value is one text ("not a valid list"); inside ``{...}`` the
    commas end the key's value and make the other items keys of their own (``unknown key
    'XPhos'``). Either way the fix is the brackets (found in review: the messages named an
    unknown key, or showed an unrelated example).
    """
    errors = exc.errors(include_url=False)
    unknown = {tuple(e["loc"]) for e in errors if e["type"] in ("extra_forbidden", "invalid_key")}
    for err in errors:
        value = err.get("input")
        if (
            err["type"] not in ("list_type", "tuple_type")
            or not isinstance(value, str | int | float)
            or isinstance(value, bool)
        ):
            continue
        loc = tuple(err["loc"])
        parent, at = _node_and_path(data, loc[:-1])
        key = loc[-1]
        if not isinstance(parent, Mapping) or key not in parent:
            continue
        # In `{..., values: a, b, c}` the other items are keys without a value that follow
        # `key` and that the schema does not know.
        keys = list(parent)
        strays = []
        for k in keys[keys.index(key) + 1 :]:
            if parent[k] is not None or (*loc[:-1], k) not in unknown:
                break
            strays.append(str(k))
        items = [v.strip() for v in str(value).split(",") if v.strip()] + strays
        if len(items) < 2:
            continue
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in (*at, key))
        if strays:
            named = ", ".join(repr(k) for k in strays)
            how = (
                f"inside {{...}} the commas end `{key}: {value}` and make {named} keys of their own"
            )
        else:
            how = f"{value!r} is one text, not a list"
        return CampaignConfigError(
            path,
            f"{where.lstrip('.')}: a list needs brackets: {how}",
            line=line_of(data, loc),
            fix=f"write {key}: [{', '.join(items)}]",
        )
    return None


def _node_and_path(data: Any, loc: Sequence[Any]) -> tuple[Any, list[Any]]:
    """The node at pydantic's ``loc`` in the YAML and the part of ``loc`` it took (a union's
    tag, such as ``choice`` in ``parameters.2.choice.values``, is not in the YAML)."""
    node, path = data, []
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            continue  # a tag
        path.append(part)
    return node, path


# The error planners/_space.py raises for `log: true` with a lower bound <= 0, and its fix.
_LOG_BOUNDS_MESSAGE = "log-scale parameter needs lower bound > 0"
_LOG_BOUNDS_HINT = (
    "raise the lower bound above 0, e.g. bounds: [1, 10] (or [0.001, 1]), or drop `log: true`"
)


# Fixes shown for an error at or below these keys.
_HINTS = {
    "bounds": "write bounds as [lower, upper], e.g. bounds: [0, 10]",
    "values": "list the values, e.g. values: [a, b, c]",
    "budget": "add e.g. budget: {max_trials: 20}",
    "max_duration": f"write {DURATION_WORDS}",
    "goal": "goal is maximize or minimize",
    "instrument": "e.g. instrument: {simulator: branin} or {function: mymodule:measure}",
    "objectives": "e.g. objectives: [{name: y, goal: minimize}]",
    "parameters": "e.g. parameters: [{name: x, type: float, bounds: [0, 1]}]",
    "executor": "e.g. executor: {kind: local, workers: 4} (a Dask cluster on this machine) "
    'or {kind: dask, address: "tcp://host:8786"}; the default, inprocess, computes here',
    "timeout": "the time a run may take, seconds or a duration, e.g. timeout: 600 or 10m",
    "connect_timeout": "the time to wait for the scheduler, seconds or a duration, e.g. "
    "connect_timeout: 30",
    "max_retries": "a whole number from 0 to 10",
    "failure_rate": "a probability from 0 to 1",
    "hang_rate": "a probability from 0 to 1",
    "nan_rate": "a probability from 0 to 1",
    "readback_out_of_range_rate": "a probability from 0 to 1",
    "readback_tolerance": "a fraction of the bounds' span from 0 to 1, e.g. 0.01",
    "latency": "the time per measurement, seconds or a duration, e.g. latency: 0.1 or 2m",
    "patience": "a whole number of trials >= 1, e.g. patience: 10",
    "min_improvement": "a number >= 0 in the objective's units (0: any gain counts)",
    "target": "a number (one objective) or {objective: value}, e.g. target: {yield: 0.9}",
    "constraints": "a list of text, e.g. constraints: ['x1 + x2 <= 1']",
    "outcome_constraints": "a list of text, e.g. outcome_constraints: ['impurity <= 0.05']",
    "prior_data": "a CSV path relative to the campaign file, e.g. prior_data: earlier.csv",
    "reference_point": "the worst value still worth having, a number in the output's units",
    "failing_region": "an expression over parameters, e.g. failing_region: 'x1 + x2 > 1.5'",
    "unit": "write the unit as it should be shown, e.g. unit: degC (or leave it out)",
    "metadata": "a mapping of names to values, e.g. metadata: {proposal_id: '312345', "
    "sample: S1, operator: jdoe}",
}


# ---------------------------------------------------------------------------- semantics
def _check_goals(campaign: Campaign, data: Any, path: Path) -> None:
    """Every objective of a campaign file says which way it goes: there is no safe default
    (branin, an impurity or a cost are minimised; a yield is maximised). A dataset campaign
    that omits ``objectives:`` has them, goals included, from the dataset's spec."""
    for i, objective in enumerate(campaign.objectives):
        if "goal" not in objective.model_fields_set:
            raise CampaignConfigError(
                path,
                f"objective '{objective.name}' has no goal",
                line=line_of(data, ("objectives", i)) or line_of(data, ("objectives",)),
                fix="add `goal: maximize` or `goal: minimize`, e.g. "
                f"{{name: {objective.name}, goal: minimize}}",
            )


def _check_not_instrument_file(data: Any, path: Path) -> None:
    """An instrument file given where a campaign file goes (``validate``, ``run``, ``plan``,
    ``suggest``): say what it is and how it is used, as ``instruments check`` does for a
    campaign file given to it. Reported as a campaign, it was "unknown key 'control_layer'
    ... 12 more problem(s)" (found in review).

    Recognised by its keys: an instrument file's devices (``inputs``, ``outputs``), and no
    key that only a campaign has.
    """
    if not isinstance(data, Mapping):
        return
    keys = [k for k in data if isinstance(k, str)]
    campaign_only = set(Campaign.model_fields) - set(InstrumentFile.model_fields)
    devices = [k for k in ("inputs", "outputs") if k in keys]
    if not devices or campaign_only & set(keys):
        return
    raise CampaignConfigError(
        path,
        "is an instrument file, not a campaign file: it declares devices ("
        + ", ".join(f"{k}:" for k in devices)
        + ") and has no parameters:, objectives: or budget:",
        line=line_of(data, (devices[0],)),
        fix=f"check its devices with `closedloop instruments check {path}`; to run a "
        "campaign on it, name it in the campaign file: `instrument: {file: PATH}` (relative "
        f"to the campaign file); the EPICS example: {example_hint('epics/epics_reactor.yaml')}",
    )


def _check_instrument_list(data: Any, path: Path) -> None:
    """``instrument: [{...}, {...}]``: a campaign has one instrument, and ``count: N`` runs N
    identical ones (slots). Pydantic said only "Input should be a valid dictionary" (found
    in review)."""
    value = data.get("instrument") if isinstance(data, Mapping) else None
    if not isinstance(value, list):
        return
    count = "`count: N` in it runs N identical instruments in parallel"
    items = [dict(v) if isinstance(v, Mapping) else v for v in value]
    if len(items) == 1:
        fix = (
            f"drop the brackets: instrument: {_inline(items[0])} (for several identical "
            "instruments, `count: N` in its mapping, e.g. {simulator: branin, count: 2})"
        )
    elif items and isinstance(items[0], dict) and all(i == items[0] for i in items):
        fix = (
            f"these {len(items)} are identical: write instrument: "
            f"{_inline({**items[0], 'count': len(items)})} ({count})"
        )
    else:
        fix = (
            f"write one instrument, a mapping: {count}, e.g. instrument: {{simulator: branin, "
            "count: 2}; different instruments (or hardware) need a campaign each"
        )
    raise CampaignConfigError(
        path,
        "instrument: is a list, but a campaign has one instrument (a mapping, or a name such "
        "as branin)",
        line=line_of(data, ("instrument",)),
        fix=fix,
    )


def _inline(value: Any) -> str:
    """``value`` as YAML's flow style writes it: ``{simulator: branin, count: 2}``."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def _check_manual_spelling(data: Any, path: Path) -> None:
    """``instrument: Manual`` (or ``manaul``) is a person, not a simulator of that name:
    say so, rather than only list the simulators it is not."""
    value = data.get("instrument") if isinstance(data, Mapping) else None
    if not isinstance(value, str) or value == "manual" or ":" in value:
        return
    import simulators

    if value in simulators.SIMULATORS:
        return
    if difflib.get_close_matches(value.strip().lower(), ["manual"], n=1, cutoff=0.75):
        raise CampaignConfigError(
            path,
            f"unknown instrument {value!r}",
            line=line_of(data, ("instrument",)),
            fix="did you mean `instrument: manual` (an operator enters each result)? "
            f"Built-in simulators: {', '.join(simulators.SIMULATORS)}",
        )


def _check_semantics(
    campaign: Campaign, data: Any, path: Path, base_dir: Path, *, cross_check: bool, rules: _Rules
) -> dict[str, Any]:
    """Rules that span sections: unique names, objectives the instrument can measure, the
    run metadata the instrument file requires. Returns the run metadata (``_run_metadata``)."""
    _check_inline_metadata(campaign, data, path)
    seen: set[str] = set()
    for i, p in enumerate(campaign.parameters):
        if p.name in seen:
            raise CampaignConfigError(
                path,
                f"parameter name '{p.name}' is used twice",
                line=line_of(data, ("parameters", i, "name")),
                fix="give every parameter its own name",
            )
        seen.add(p.name)
    names = [o.name for o in campaign.objectives]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        i = len(names) - 1 - names[::-1].index(dup)
        raise CampaignConfigError(
            path,
            f"objective '{dup}' is listed twice",
            line=line_of(data, ("objectives", i, "name")),
        )
    _check_reference_points(campaign, data, path)
    if campaign.budget.max_trials is None and campaign.budget.max_duration is None:
        raise CampaignConfigError(
            path,
            "budget sets no limit",
            line=line_of(data, ("budget",)),
            fix="add max_trials: N or max_duration: 2h (target and patience may never be met)",
        )
    _check_target(campaign, data, path)
    space = _check_constraints(campaign, data, path, dataset_rows=cross_check)
    outcome_constraints = _check_outcome_constraints(campaign, data, path, rules)
    if not cross_check:
        return dict(campaign.metadata)
    proposes = rules.stored is None or rules.stored.proposes
    if proposes:
        _check_satisfiable(space, data, path)
    _check_planner(
        campaign, space, outcome_constraints, data, path, base_dir, rules, proposes=proposes
    )
    from instruments import describe_instrument  # local: keeps import cost off `--help`

    try:
        # A campaign file's function is imported to check it (`validate`, `run`); a stored
        # campaign's is not: its file is the store's word, and the commands that read a
        # stored campaign import it only to measure (`Runner.resume`), after every refusal.
        outputs = describe_instrument(
            campaign.instrument,
            campaign.parameters,
            base_dir=base_dir,
            import_function=rules.stored is None,
        )
    except ValueError as exc:
        raise _instrument_error(exc, campaign, data, path) from None
    for i, name in enumerate(names):
        if name not in outputs:
            raise CampaignConfigError(
                path,
                f"objective '{name}' is not an output of the instrument",
                line=line_of(data, ("objectives", i, "name")),
                fix=_nearest(name, outputs, "the instrument measures"),
            )
    for i, constraint in enumerate(outcome_constraints):
        if constraint.name not in outputs:
            raise CampaignConfigError(
                path,
                f"outcome constraint '{constraint.text}' names '{constraint.name}', which is "
                "not an output of the instrument",
                line=line_of(data, ("outcome_constraints", i)),
                fix=_nearest(constraint.name, outputs, "the instrument measures"),
            )
    _check_reserved(campaign, outputs, data, path, rules)
    _check_choice_values(campaign, data, path, rules)
    return _run_metadata(campaign, data, path, base_dir, rules)


def _check_inline_metadata(campaign: Campaign, data: Any, path: Path) -> None:
    """Inline ``devices:`` are part of this campaign, which writes its run metadata at its
    top level: one place for it (``metadata:`` under the devices would be a second)."""
    devices = campaign.instrument.devices or {}
    for key in ("metadata", "required_metadata"):
        if key in devices:
            raise CampaignConfigError(
                path,
                f"instrument.devices.{key}: inline devices are part of this campaign; its run "
                "metadata is the campaign's own `metadata:`",
                line=line_of(data, ("instrument", "devices", key)),
                fix="move the entries to `metadata:` at the top level of this file"
                if key == "metadata"
                else "drop it, and give the keys in `metadata:` at the top level of this file "
                "(required_metadata is for an instrument file that several campaigns use)",
            )


def _run_metadata(
    campaign: Campaign, data: Any, path: Path, base_dir: Path, rules: _Rules
) -> dict[str, Any]:
    """The run metadata of every start document: the instrument file's ``metadata:`` and
    the campaign's, once the campaign gives each key the file's ``required_metadata``
    names.

    The instrument file belongs to the facility or the lab (beamline, facility), the
    campaign to the experiment (proposal, sample, operator). A campaign that sets one of the
    file's keys to another value is refused rather than let win: a campaign that records
    another beamline than the one it runs on is a copied file or a typo, and the catalog
    would file its runs under the wrong one. The same value is accepted (nothing to
    decide). Both refusals are rules added after campaigns could be stored
    (:meth:`_Rules.added`): an instrument file read from disk for a campaign stored before
    its text was kept may have gained ``required_metadata`` since; that campaign goes on,
    warned, with the instrument file's values.
    """
    instrument = campaign.instrument
    if instrument.file is None:
        return dict(campaign.metadata)
    from instruments._epics import declared_spec  # the file describe_instrument accepted

    spec = declared_spec(instrument, base_dir)
    where = f"instrument file {instrument.file}"
    merged = {**campaign.metadata}
    for key, value in spec.metadata.items():
        ours = campaign.metadata.get(key)
        if key in campaign.metadata and (type(ours), ours) != (type(value), value):
            at = line_of(spec._data, ("metadata", key))
            rules.added(
                CampaignConfigError(
                    path,
                    f"metadata.{key} = {ours!r} differs from {key} = {value!r} that the {where}"
                    + (f" (line {at})" if at is not None else "")
                    + " sets for every campaign on that instrument",
                    line=line_of(data, ("metadata", key)),
                    fix=f"drop {key} from this file's `metadata:` (if the instrument's value "
                    f"is wrong, correct it in {instrument.file})",
                ),
                f"its runs record {key} = {value!r}, the instrument file's",
            )
        merged[key] = value
    missing = [k for k in spec.required_metadata if k not in campaign.metadata]
    if missing:
        at = line_of(spec._data, ("required_metadata",))
        given = isinstance(data, Mapping) and "metadata" in data
        here = line_of(data, ("metadata",)) if given else None
        entries = ", ".join(f"{k}: VALUE" for k in missing)
        rules.added(
            CampaignConfigError(
                path,
                f"the {where} requires run metadata this campaign does not give: "
                f"{', '.join(missing)} (its required_metadata"
                + (f", line {at}" if at is not None else "")
                + ")",
                line=here or line_of(data, ("name",)) or 1,
                fix=(
                    f"add {entries} under `metadata:` (line {here})"
                    if here is not None
                    else f"add to this file: metadata: {{{entries}}}"
                )
                + "; every run's start document records them",
            ),
            f"its runs go on without {', '.join(missing)}",
        )
    return merged


#: Columns that `closedloop export` (and so prior data) and `closedloop tell --csv` give a
#: meaning of their own. A parameter or output of such a name made an export that its own
#: prior-data reader refuses ("column 'number' appears twice"), or a `tell` CSV whose
#: `fail` column could not be told apart from an output named `fail`.
#: ``best`` came after campaigns could name a parameter or output so: a stored campaign keeps
#: the name (the rule is :meth:`_Rules.added`), and its export leaves out the ``best`` flag
#: (``loop.report.annotate``).
RESERVED_COLUMNS = EXPORT_COLUMNS | {"fail", "transient"}
RESERVED_PREFIXES = ("readback.", "actual.")


def _reserved(name: str) -> bool:
    return name in RESERVED_COLUMNS or name.startswith(RESERVED_PREFIXES)


def _check_reserved(
    campaign: Campaign, outputs: tuple[str, ...] | list[str], data: Any, path: Path, rules: _Rules
) -> None:
    """Refuse parameter and output names that clash with the export's and ``tell``'s own
    columns (a rule added after campaigns were stored: see :meth:`_Rules.added`)."""
    fix = (
        "rename it: export, prior data and `tell --csv` use the columns "
        f"{', '.join(sorted(RESERVED_COLUMNS))} and the prefixes {', '.join(RESERVED_PREFIXES)}"
    )
    kept = "it keeps the name (its export may name a column twice)"
    for i, p in enumerate(campaign.parameters):
        if _reserved(p.name):
            rules.added(
                CampaignConfigError(
                    path,
                    f"parameter name '{p.name}' is reserved",
                    line=line_of(data, ("parameters", i, "name")),
                    fix=fix,
                ),
                kept,
            )
    for name in outputs:
        if not _reserved(name):
            continue
        declared = list(campaign.instrument.outputs or ())
        objectives = [o.name for o in campaign.objectives]
        line = None
        if name in declared:
            line = line_of(data, ("instrument", "outputs", declared.index(name)))
        elif name in objectives:
            line = line_of(data, ("objectives", objectives.index(name), "name"))
        rules.added(
            CampaignConfigError(
                path,
                f"output name '{name}' is reserved",
                line=line or line_of(data, ("instrument",)),
                fix=fix,
            ),
            kept,
        )


def _check_choice_values(campaign: Campaign, data: Any, path: Path, rules: _Rules) -> None:
    """Refuse choice values a CSV cannot keep apart: text with spaces at either end (``"A "``
    and ``"A"``), or numbers of one value (``1`` and ``1.0``). The export writes them as a
    CSV cell, and prior data and ``tell --csv`` read them back trimmed and as numbers, so
    trials were merged into the other value or refused as "not one of the values" (found in
    review). A rule added after campaigns were stored (see :meth:`_Rules.added`)."""
    for i, p in enumerate(campaign.parameters):
        if not isinstance(p, ChoiceParameter):
            continue
        seen: dict[Any, Any] = {}
        for j, value in enumerate(p.values):
            line = line_of(data, ("parameters", i, "values", j)) or line_of(
                data, ("parameters", i, "values")
            )
            if isinstance(value, str) and value != value.strip():
                rules.added(
                    CampaignConfigError(
                        path,
                        f"choice value {value!r} of parameter '{p.name}' has spaces at its "
                        "start or end, which a CSV (export, prior data, `tell --csv`) loses",
                        line=line,
                        fix=f"write it as {value.strip()!r}",
                    ),
                    "it keeps the value as written",
                )
            key = _csv_key(value)
            if key in seen:
                rules.added(
                    CampaignConfigError(
                        path,
                        f"choice values {seen[key]!r} and {value!r} of parameter '{p.name}' "
                        "read as one value in a CSV (export, prior data, `tell --csv`)",
                        line=line,
                        fix=f"remove {value!r}, or make the two values differ",
                    ),
                    "it keeps both values",
                )
            seen.setdefault(key, value)


def _csv_key(value: Any) -> Any:
    """A choice value as a CSV cell reads back: text trimmed, and a number (or text that
    spells one, ``"1"``) by its value."""
    if isinstance(value, bool):
        return value
    text = value.strip() if isinstance(value, str) else value
    try:
        return ("number", float(text))
    except (TypeError, ValueError):
        return text


def _yaml_problem(text: str) -> str:
    """Where and why ``text`` is not YAML: ``line 5: expected ',' or ']'``."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError

    try:
        YAML(typ="safe", pure=True).load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        return f"{line}{exc.problem or exc.context or 'not YAML'}"
    except Exception as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return "not YAML"


def same_content(stored: str, edited: str) -> bool:
    """Whether two campaign texts say the same thing: only comments, layout or line
    endings differ (both parse as YAML to equal data). ``suggest FILE`` refused a file
    that had gained a comment, or been copied with CRLF line endings, as "a different
    file" without saying what differed (found in review)."""
    import json

    from ruamel.yaml import YAML

    def canonical(text: str) -> str:
        # types kept apart (1 and 1.0, true and 1 are equal in Python, not in a campaign:
        # a choice's values [0, 1] edited to [false, true]); key order is layout
        data = YAML(typ="safe", pure=True).load(text)
        return json.dumps(data, sort_keys=True, default=repr)

    try:
        return canonical(stored) == canonical(edited)
    except Exception:
        return False


def changed_keys(stored: str, edited: str, *, most: int = 6) -> list[str]:
    """What an edited campaign file changes against the text a campaign was stored from,
    one ``key: old -> new`` per value (at most ``most``, then how many more), keys dotted
    as the file nests them (``budget.max_trials: 12 -> 6``, ``parameters[0].bounds: [0, 1]
    -> [0, 5]``); ``[]`` when only comments or layout differ, or either text does not parse.

    ``resume`` and ``suggest`` read the store's copy, so an edit was ignored without a
    word, or refused without saying what differed (found in review)."""
    from ruamel.yaml import YAML

    def load(text: str) -> Any:
        try:
            return YAML(typ="safe", pure=True).load(text)
        except Exception:
            return None

    old, new = load(stored), load(edited)
    if old is not None and new is None and edited.strip():
        # a syntax slip in the edited file was no change at all to `resume` (found in
        # review): it goes on with the stored copy, and must say the edit was not read
        return [f"it does not read as YAML any more ({_yaml_problem(edited)})"]
    if old is None or new is None:
        return []
    found: list[str] = []

    def walk(a: Any, b: Any, at: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in list(dict.fromkeys([*a, *b])):
                where = f"{at}.{key}" if at else str(key)
                walk(a.get(key, _ABSENT), b.get(key, _ABSENT), where)
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                walk(x, y, f"{at}[{i}]")
        elif isinstance(a, list) and isinstance(b, list) and _named(a) and _named(b):
            # entries with names (parameters, objectives) added or removed: by name (a
            # parameter added read `parameters: [{"name": "x1", ... -> [{"name": "x1", ...`,
            # both sides cut where they were the same; found in review)
            old_names = {x["name"]: x for x in a}
            new_names = {y["name"]: y for y in b}
            for name in dict.fromkeys([*old_names, *new_names]):
                where = f"{at}[{name}]"
                if name not in new_names:
                    found.append(f"{where}: removed")
                elif name not in old_names:
                    found.append(f"{where}: added")
                else:
                    walk(old_names[name], new_names[name], where)
        elif a != b:
            found.append(f"{at}: {_shown(a)} -> {_shown(b)}")

    walk(old, new, "")
    if len(found) > most:
        found = [*found[:most], f"and {len(found) - most} more"]
    return found


_ABSENT = object()


def _named(entries: list[Any]) -> bool:
    """Whether every entry is a mapping with its own, distinct ``name``."""
    names = [x.get("name") if isinstance(x, dict) else None for x in entries]
    return all(isinstance(n, str) for n in names) and len(set(names)) == len(names)


def _shown(value: Any) -> str:
    if value is _ABSENT:
        return "(absent)"
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _nearest(name: str, choices: list[str] | tuple[str, ...], what: str) -> str:
    """A fix: the closest of ``choices`` to a misspelt ``name``, then all of them."""
    near = difflib.get_close_matches(name, list(choices), n=1)
    hint = f"did you mean '{near[0]}'? " if near else ""
    return f"{hint}{what}: {', '.join(choices)}"


def _check_reference_points(campaign: Campaign, data: Any, path: Path) -> None:
    """A hypervolume needs a reference point per objective: all given, or all inferred."""
    objectives = campaign.objectives
    given = [o.reference_point is not None for o in objectives]
    if len(objectives) == 1 and given[0]:
        raise CampaignConfigError(
            path,
            "reference_point is only used with several objectives (for the hypervolume)",
            line=line_of(data, ("objectives", 0, "reference_point")),
            fix="remove reference_point, or add the other objectives",
        )
    if any(given) and not all(given):
        i = given.index(False)
        raise CampaignConfigError(
            path,
            f"objective '{objectives[i].name}' has no reference_point but "
            f"{sum(given)} of the {len(objectives)} objectives do",
            line=line_of(data, ("objectives", i)),
            fix="give every objective a reference_point (the worst value still worth "
            "having), or none to infer them all from the data",
        )
    for i, o in enumerate(objectives):
        if o.reference_point is not None and not math.isfinite(o.reference_point):
            raise CampaignConfigError(
                path,
                f"objective '{o.name}': reference_point must be a finite number",
                line=line_of(data, ("objectives", i, "reference_point")),
                fix="write the worst value still worth having, e.g. reference_point: 0.2",
            )


def _check_target(campaign: Campaign, data: Any, path: Path) -> None:
    """``target``: a number for one objective, ``{objective: value}`` for any number."""
    target = campaign.budget.target
    names = [o.name for o in campaign.objectives]
    if target is None:
        return
    if not isinstance(target, dict):
        if len(names) > 1:
            raise CampaignConfigError(
                path,
                f"budget.target is one number but the campaign has {len(names)} objectives",
                line=line_of(data, ("budget", "target")),
                fix="give a value per objective, e.g. target: {"
                + ", ".join(f"{n}: VALUE" for n in names)
                + "} (one trial must reach all of them)",
            )
        return
    for key in target:
        if key not in names:
            raise CampaignConfigError(
                path,
                f"budget.target names '{key}', which is not an objective",
                line=line_of(data, ("budget", "target", key))
                or line_of(data, ("budget", "target")),
                fix=_nearest(key, names, "the objectives are"),
            )


def _check_constraints(
    campaign: Campaign, data: Any, path: Path, *, dataset_rows: bool = True
) -> Space:
    """Parse the parameter constraints (safe parser, never eval); locate the bad one.

    ``dataset_rows=False`` leaves out an enumerated dataset's rows (a stored campaign shown
    by ``status``, ``export`` or ``report`` reads no data). A campaign that narrows such a
    dataset to no row is reported at the parameter that does it.
    """
    try:
        if not dataset_rows:
            return Space(campaign.parameters, constraints=tuple(campaign.constraints))
        return campaign.space
    except _DatasetRowsError as exc:
        names = [p.name for p in campaign.parameters]
        line = None
        if exc.parameter in names:
            line = line_of(data, ("parameters", names.index(exc.parameter)))
        raise CampaignConfigError(
            path,
            f"parameters: {exc}",
            line=line or line_of(data, ("parameters",)) or line_of(data, ("instrument",)),
            fix=exc.fix,
        ) from None
    except ValueError as exc:
        index = getattr(exc, "index", None)
        message = str(exc)
        if isinstance(index, int) and 0 <= index < len(campaign.constraints):
            line = line_of(data, ("constraints", index)) or line_of(data, ("constraints",))
            text = campaign.constraints[index]
            # cut as the expression's own message cuts it: a constraint of 100 000
            # characters was echoed whole (found in review)
            where = f"constraints[{index}] '{text if len(text) <= 80 else text[:77] + '...'}'"
            prefix = f"constraint {index} ({text!r}): "
            message = message.removeprefix(prefix)
        else:
            line = line_of(data, ("constraints",)) or line_of(data, ("parameters",))
            where = "constraints"
        raise CampaignConfigError(
            path,
            f"{where}: {message}",
            line=line,
            fix=getattr(exc, "fix", None)
            or "write e.g. 'temperature + 2 * residence_time <= 150' or 'x1**2 + x2**2 <= 1' "
            "over numeric parameters (numbers, + - * / **, one of <= >= < >)",
        ) from None


def _check_satisfiable(space: Space, data: Any, path: Path) -> None:
    """Refuse constraints the design cannot serve, at the constraint's line: linear ones
    decided exactly (:func:`planners._room.check_room`: no point meets them, or they leave
    the floats no room), the rest by drawing (:func:`_check_by_sampling`).

    Otherwise `validate` passes and `run` only finds out when the design draws thousands of
    points and none is feasible.
    """
    try:
        check_room(space)
    except ConstraintsLeaveNoRoom as exc:
        raise CampaignConfigError(
            path,
            exc.problem,
            line=line_of(data, ("constraints", exc.index)) or line_of(data, ("constraints",)),
            fix=exc.fix,
        ) from None
    floats = {p.name for p in space.parameters if isinstance(p, FloatParameter)}
    # Linear constraints over floats are decided exactly above, and the design samples any
    # region they leave room in; a nonlinear one, or one over whole numbers, only by drawing.
    if any(not c.is_linear or not set(c.names) <= floats for c in space.constraints):
        _check_by_sampling(space, data, path)


def _check_by_sampling(space: Space, data: Any, path: Path) -> None:
    """Refuse constraints the initial design cannot serve, by the design's own test: its
    first point drawn as ``run`` draws it (not one feasible point in 2^16 Sobol points).

    The checks above are exact for linear constraints over the bounds, but they are not what
    ``run`` meets: a nonlinear constraint no point holds (``x1**2 + x2**2 <= -1``), or a
    region the sampler cannot reach, passed ``validate``, and ``run`` then stored the
    campaign and stopped it at its first proposal, saying ``resume`` would continue it
    (found in review). So ``validate`` says ok exactly when the campaign can start. It
    imports torch (about a second), which only a campaign with such constraints pays for.
    """
    from planners import InfeasibleSpaceError, PositionalDesign

    try:
        PositionalDesign(space, 0, "sobol").leading_feasible_unit_points(1)
    except InfeasibleSpaceError as exc:
        at = exc.tightest
        raise CampaignConfigError(
            path,
            f"constraints: {exc}",
            line=(line_of(data, ("constraints", at)) if at is not None else None)
            or line_of(data, ("constraints",)),
            fix="check each constraint's direction (<= or >=) and numbers against the "
            "parameters' bounds, or widen the bounds",
        ) from None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_outcome_constraints(
    campaign: Campaign, data: Any, path: Path, rules: _Rules
) -> list[OutcomeConstraint]:
    parsed: list[OutcomeConstraint] = []
    seen: set[str] = set()
    for i, text in enumerate(campaign.outcome_constraints):
        line = line_of(data, ("outcome_constraints", i))
        try:
            constraint = parse_outcome_constraint(text)
        except ValueError as exc:
            error = CampaignConfigError(
                path,
                f"outcome_constraints[{i}]: {exc}",
                line=line,
                fix="write 'output <= number' or 'output >= number', e.g. 'impurity <= 0.05'",
            )
            plain = _as_float_read(text)
            if plain is None:
                raise error from None
            rules.added(error, f"the bound is read as '{plain}', as when it started")
            campaign.outcome_constraints[i] = plain
            constraint = parse_outcome_constraint(plain)
        key = f"{constraint.name} {constraint.op}"
        if key in seen:
            raise CampaignConfigError(
                path,
                f"outcome_constraints[{i}]: '{constraint.name} {constraint.op}' is bounded twice",
                line=line,
                fix="keep the tighter bound only",
            )
        seen.add(key)
        parsed.append(constraint)
    _check_outcome_ranges(parsed, data, path, rules)
    _check_target_reachable(campaign, parsed, data, path, rules)
    return parsed


def _check_target_reachable(
    campaign: Campaign,
    constraints: list[OutcomeConstraint],
    data: Any,
    path: Path,
    rules: _Rules,
) -> None:
    """Refuse a ``target`` no feasible trial can reach: ``target: {yield: 0.9}`` with the
    outcome constraint ``yield <= 0.5``. The target counts only a feasible trial, so the
    campaign would run its whole budget without it (found in review; the contradictory
    bounds of one output are refused likewise)."""
    target = campaign.budget.target
    if target is None:
        return
    goals = {o.name: o.goal for o in campaign.objectives}
    wanted = target if isinstance(target, dict) else {campaign.objectives[0].name: target}
    for name, value in wanted.items():
        goal = goals.get(name)
        for k, c in enumerate(constraints):
            if c.name != name or goal is None:
                continue
            blocked = (goal == "maximize" and c.op == "<=" and c.bound < value) or (
                goal == "minimize" and c.op == ">=" and c.bound > value
            )
            if not blocked:
                continue
            line = line_of(data, ("budget", "target", name)) or line_of(data, ("budget", "target"))
            at = line_of(data, ("outcome_constraints", k))
            rules.added(
                CampaignConfigError(
                    path,
                    f"budget.target {name} {'>=' if goal == 'maximize' else '<='} {value:g} "
                    f"cannot be met by a feasible trial: outcome_constraints[{k}] "
                    f"'{c.text}'"
                    + (f" (line {at})" if at is not None else "")
                    + f" keeps {name} {'at most' if c.op == '<=' else 'at least'} {c.bound:g}",
                    line=line,
                    fix="check the target and the constraint's number and direction: a target "
                    "counts only a trial that meets every outcome constraint",
                ),
                "it keeps its target: the campaign ends by its other limits",
            )


_BOUND = re.compile(r"^(?P<head>.*?(?:<=|>=)\s*)(?P<bound>\S+?)\s*$")


def _as_float_read(text: str) -> str | None:
    """An outcome constraint whose bound has an underscore, written as closedloop read it
    before such bounds were refused (Python's ``float()``: ``1_0`` is 10), e.g.
    ``'impurity <= 10.0'``; ``None`` for any other text."""
    match = _BOUND.match(text)
    if match is None or "_" not in match["bound"]:
        return None
    try:
        bound = float(match["bound"])
    except ValueError:
        return None
    return f"{match['head']}{bound!r}"


def _check_outcome_ranges(
    constraints: list[OutcomeConstraint], data: Any, path: Path, rules: _Rules
) -> None:
    """Refuse an output bounded below above its upper bound (``a >= 11`` and ``a <= 10``):
    no trial could ever be feasible, and the campaign would run its whole budget to find
    that out (found in review). Equal bounds are kept: a whole-number output can meet them.
    """
    for i, low in enumerate(constraints):
        for j, high in enumerate(constraints):
            if low.name != high.name or low.op != ">=" or high.op != "<=":
                continue
            if low.bound <= high.bound:
                continue
            first, second = sorted((i, j))
            lines = [line_of(data, ("outcome_constraints", k)) for k in (first, second)]
            shown = " and ".join(
                f"outcome_constraints[{k}] '{constraints[k].text}'"
                + (f" (line {n})" if n is not None else "")
                for k, n in zip((first, second), lines, strict=True)
            )
            rules.added(
                CampaignConfigError(
                    path,
                    f"{shown} leave {low.name} no value: no trial could meet both, so none "
                    "would ever be feasible",
                    line=lines[1],
                    fix=f"check their directions (<= or >=) and numbers: {low.name} must be "
                    f"at least {low.bound:g} and at most {high.bound:g}",
                ),
                "it keeps both bounds: none of its trials can be feasible",
            )


def _check_planner(
    campaign: Campaign,
    space: Space,
    outcome_constraints: list[OutcomeConstraint],
    data: Any,
    path: Path,
    base_dir: Path,
    rules: _Rules,
    *,
    proposes: bool = True,
) -> None:
    """Check the campaign against its planner: a combination it cannot serve fails now, not
    mid-run (``planners.check_planner``; no model is fitted).

    A setting the planner kind ignores (``planners._config.ignored_settings``) is a rule
    added after campaigns were stored (:meth:`_Rules.added`): a stored campaign keeps it
    ignored, and its planner is built from the settings the kind follows, which propose the
    same points. So is the cap on the unordered choice values a model takes
    (``planners._space.check_categories``): a campaign stored with more goes on, warned.
    ``proposes=False`` (``tell``) checks nothing else.

    A kind whose library is not installed (``kind: ax`` without Ax) is refused first, before
    anything is stored, by a campaign file and a stored campaign alike: not a rule about the
    file (the fix is an install, and a stored campaign goes on once it is done), so never
    kept as stored, and a refused stored campaign is told the install, not a new campaign
    (:class:`StoredCampaignError`). ``tell`` builds no planner and needs no library.

    A ``plugin`` planner is checked by :func:`_check_plugin`.
    """
    from planners import check_planner
    from planners._config import (
        PlannerUnavailable,
        check_available,
        followed_settings,
        ignored_settings,
    )
    from planners._space import TooManyCategories, check_categories

    if proposes:
        try:
            check_available(campaign.planner)
        except PlannerUnavailable as exc:
            raise CampaignConfigError(
                path,
                exc.problem,
                line=line_of(data, ("planner", *exc.key)) or line_of(data, ("planner",)),
                fix=exc.fix,
            ) from exc

    plugin = campaign.planner.plugin

    def refusal(exc: ValueError) -> CampaignConfigError:
        # A setting the kind would not follow is at its own line (planner.acquisition, ...).
        key = getattr(exc, "key", None)
        line = (line_of(data, ("planner", *key)) if isinstance(key, tuple) else None) or (
            line_of(data, ("planner", "plugin" if plugin else "kind"))
            or line_of(data, ("planner",))
        )
        return CampaignConfigError(
            path,
            f"planner {campaign.planner.label}: {exc}",
            line=line,
            fix=getattr(exc, "fix", "")
            or (
                "change planner.kind (botorch supports every search space and goal), or "
                "drop what the planner cannot do"
                if campaign.planner.kind != "botorch" or plugin
                else "remove the setting the message names"
            ),
        )

    ignored = ignored_settings(campaign.planner)
    for setting in ignored:
        ignoring = f"kind {campaign.planner.kind}" if plugin is None else campaign.planner.label
        rules.added(refusal(setting), f"{ignoring} ignores it, as it always did")
    if ignored:
        campaign.planner = followed_settings(campaign.planner)
    if not proposes:
        return
    if plugin is not None:
        _check_plugin(campaign, space, outcome_constraints, data, path, base_dir, rules)
        return
    try:
        check_categories(campaign.parameters, campaign.planner.kind)
    except TooManyCategories as exc:
        # The dataset's parameters when the campaign file omits them: its line instead.
        where = ("parameters", exc.index, "values")
        rules.added(
            CampaignConfigError(
                path,
                str(exc),
                line=line_of(data, where) or line_of(data, ("instrument", "dataset")),
                fix=exc.fix,
            ),
            "its planner's model takes every value, as it did (a suggest may take minutes "
            "and gigabytes of memory)",
        )
    try:
        check_planner(
            space,
            list(campaign.objectives),
            campaign.planner,
            outcome_constraints=outcome_constraints,
        )
    except ValueError as exc:
        raise refusal(exc) from None
    if rules.stored is None:
        _warn_design_takes_budget(campaign, space, data, path)


#: The smallest ``max_trials`` whose design taking it all is warned about: below, a budget
#: of a few trials is a smoke test of the set-up (the README's dry runs use 3), not a plan.
_WARN_DESIGN_FROM = 10


def _warn_design_takes_budget(campaign: Campaign, space: Space, data: Any, path: Path) -> None:
    """Warn when the initial design alone uses the whole ``max_trials``: no trial would be
    chosen by the model the campaign names.

    The default design grows with the dimension (``max(5, d + 1)``), so a 40-parameter
    campaign with 30 trials ran 30 design points and not one model trial, silently (found
    in review). A warning, not a refusal, and the default kept: a design that fills the
    box is what some campaigns want, the budget a run is given (``--max-trials``) may be
    larger, and a stored campaign's design must not change size when it is resumed."""
    budget = campaign.budget.max_trials
    if campaign.planner.kind not in ("botorch", "ax") or budget is None or campaign.prior_data:
        return
    if budget < _WARN_DESIGN_FROM:  # a smoke test, or a dry run of a few trials
        return
    n = campaign.planner.initial.size(space.dim)
    if n < budget:
        return
    written = campaign.planner.initial.n is not None
    where = ("planner", "initial", "n") if written else ("budget", "max_trials")
    logger.warning(
        "%s, line %s: the initial design of %d points (%s) takes all %d trials of "
        "budget.max_trials: no trial is chosen by the %s model; set planner.initial: {n: %d} "
        "or raise max_trials",
        path,
        line_of(data, where),
        n,
        "planner.initial.n" if written else f"by default max(5, d + 1) for d = {space.dim}",
        budget,
        campaign.planner.kind,
        max(5, budget // 3),
    )


def _check_plugin(
    campaign: Campaign,
    space: Space,
    outcome_constraints: list[OutcomeConstraint],
    data: Any,
    path: Path,
    base_dir: Path,
    rules: _Rules,
) -> None:
    """Attach the ``plugin:``'s loader to the campaign's planner config; for a campaign file
    (``validate``, ``run``), import the class now and check it against the campaign
    (its ``check`` classmethod, a planner built once), refusing at the ``plugin:`` line (or
    ``args:``, for arguments the constructor does not take).

    A stored campaign's plugin is not imported here: reading a stored campaign runs none of
    its code. The loader imports it when a planner is built (``suggest``, ``plan``) or
    ``resume`` asks first (:func:`import_stored_planner`), refused as a stored campaign
    (:class:`StoredCampaignError`, the store untouched).
    """
    from loop.planner_plugin import loader
    from planners import check_planner
    from planners._plugin import PlannerPluginError

    config = campaign.planner
    spec = config.plugin
    if spec is None:  # pragma: no cover - the caller's branch
        return
    stored = rules.stored

    def refuse(exc: PlannerPluginError) -> CampaignConfigError:
        return _plugin_refusal(exc, data, path, stored)

    config.attach_plugin_loader(loader(spec, base_dir), refuse)
    if stored is not None or not rules.import_plugin:
        return
    try:
        check_planner(
            space, list(campaign.objectives), config, outcome_constraints=outcome_constraints
        )
    except PlannerPluginError as exc:
        raise refuse(exc) from None


def _plugin_refusal(
    exc: PlannerPluginError, data: Any, path: Path, stored: StoredCopy | None
) -> CampaignConfigError:
    """``exc`` at the line of the ``planner:`` key it names (``plugin``, ``args``); for a
    stored campaign, as the store's copy with the way on: the plugin restored, installed or
    fixed, never another planner (its trials were proposed by this one)."""
    line = line_of(data, ("planner", *exc.key)) or line_of(data, ("planner", "plugin"))
    refused = CampaignConfigError(path, exc.problem, line=line, fix=exc.fix)
    if stored is None:
        return refused
    return StoredCampaignError(
        stored,
        refused,
        way_on=f"{exc.fix}, then run the command again: nothing was written to the store, "
        "and the campaign goes on where it stopped (with this plugin: its trials were "
        "proposed by it)",
    )
