"""Campaign files: the schema, and a loader whose every error names file, line and fix.

The schema is pydantic v2 with ``extra="forbid"`` everywhere, so a misspelt key is an error
rather than a silently ignored setting. Reading the YAML with line numbers and explaining a
pydantic error is shared with instrument files (``instruments._yamlfile``).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

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
from instruments._yamlfile import explain, line_of, read_yaml_mapping
from loop.errors import CampaignConfigError
from planners import Objective, Parameter, PlannerConfig, Space

MAX_FILE_BYTES = 1_000_000

_DURATION = re.compile(
    r"^\s*(?:(\d+(?:\.\d+)?)\s*d)?\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*"
    r"(?:(\d+(?:\.\d+)?)\s*m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*$"
)


def parse_duration(value: Any) -> float:
    """Seconds from ``90``, ``"90s"``, ``"30m"``, ``"2h"``, ``"1h30m"`` or ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or text like 2h, 30m, 1h30m")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match or not any(match.groups()):
            raise ValueError(
                f"{value!r} is not a duration; write seconds (3600) or text like 2h, 30m, 1h30m"
            )
        d, h, m, s = (float(g) if g else 0.0 for g in match.groups())
        seconds = d * 86400 + h * 3600 + m * 60 + s
    if not math.isfinite(seconds) or seconds <= 0 or seconds > 366 * 86400:
        raise ValueError("a duration must be positive and at most a year")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration), PlainSerializer(lambda s: f"{s:g}s")]


class Budget(BaseModel):
    """When to stop. The first limit reached ends the campaign."""

    model_config = ConfigDict(extra="forbid")

    max_trials: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Completed trials to run."
    )
    max_duration: Duration | None = Field(
        default=None, description="Wall-clock limit, e.g. 2h, 30m, 1h30m."
    )
    max_failures: int = Field(
        default=10,
        ge=1,
        le=1_000_000,
        description="Failed trials after which the campaign stops (a broken instrument).",
    )


class Campaign(BaseModel):
    """A whole optimisation campaign, as written in its YAML file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$",
        description="Shown in status and carried in every run's start document.",
    )
    description: str = Field(default="", max_length=10_000)
    parameters: list[Parameter] = Field(min_length=1, max_length=100)
    objectives: list[Objective] = Field(min_length=1, max_length=4)
    instrument: InstrumentConfig
    planner: PlannerConfig = Field(default_factory=PlannerConfig)
    budget: Budget
    seed: int | None = Field(
        default=None, ge=0, lt=2**32, description="Fixes initial design, noise and model fits."
    )

    @field_validator("instrument", mode="before")
    @classmethod
    def _instrument_shorthand(cls, value: Any, info: ValidationInfo) -> Any:
        """``instrument: branin``, ``instrument: pkg.mod:func`` or ``instrument: manual``
        (the operator enters the objectives' values) as shorthand."""
        if value == "manual":
            objectives = info.data.get("objectives") or []
            return {"manual": True, "outputs": [o.name for o in objectives]}
        if isinstance(value, str):
            return {"function": value} if ":" in value else {"simulator": value}
        return value

    @property
    def space(self) -> Space:
        return Space(self.parameters)


@dataclass(frozen=True)
class LoadedCampaign:
    """A validated campaign with where it came from.

    Attributes:
        campaign: the validated model.
        path: the file (or a pseudo path such as ``<store>`` when loaded from a store).
        text: the exact YAML text, stored with the campaign so resume needs no file.
        base_dir: where relative paths in the file (user functions) are resolved.
    """

    campaign: Campaign
    path: Path
    text: str
    base_dir: Path


# ---------------------------------------------------------------------------- loading
def load_campaign(path: str | Path) -> LoadedCampaign:
    """Read and validate a campaign file; raise ``CampaignConfigError`` on any problem."""
    path = Path(path)
    if path.is_dir():
        raise CampaignConfigError(
            path,
            "is a directory, not a campaign file",
            fix="pass a .yaml file, e.g. campaigns/branin.yaml",
        )
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CampaignConfigError(path, "no such file", fix="check the path") from None
    except OSError as exc:
        raise CampaignConfigError(path, f"cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise CampaignConfigError(
            path, f"is {len(raw)} bytes; a campaign file is at most {MAX_FILE_BYTES} bytes"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CampaignConfigError(
            path, f"is not UTF-8 text (byte {exc.start})", line=line, fix="save the file as UTF-8"
        ) from None
    return parse_campaign(text, path=path, base_dir=path.resolve().parent)


def parse_campaign(text: str, *, path: Path, base_dir: Path) -> LoadedCampaign:
    """Validate campaign YAML ``text`` (see ``load_campaign``)."""
    data = _read_yaml(text, path)
    try:
        campaign = Campaign.model_validate(data)
    except ValidationError as exc:
        raise _explain(exc, data, path) from None
    _check_semantics(campaign, data, path, base_dir)
    return LoadedCampaign(campaign=campaign, path=path, text=text, base_dir=base_dir)


def _read_yaml(text: str, path: Path) -> Any:
    return read_yaml_mapping(text, path, error=CampaignConfigError, example="campaigns/branin.yaml")


def _explain(exc: ValidationError, data: Any, path: Path) -> Exception:
    return explain(exc, data, path, model=Campaign, error=CampaignConfigError, hints=_HINTS)


# Fixes shown for an error at or below these keys.
_HINTS = {
    "bounds": "write bounds as [lower, upper], e.g. bounds: [0, 10]",
    "values": "list the values, e.g. values: [a, b, c]",
    "budget": "add e.g. budget: {max_trials: 20}",
    "max_duration": "write e.g. 2h, 30m, 1h30m or seconds",
    "goal": "goal is maximize or minimize",
    "instrument": "e.g. instrument: {simulator: branin} or {function: mymodule:measure}",
    "objectives": "e.g. objectives: [{name: y, goal: minimize}]",
    "parameters": "e.g. parameters: [{name: x, type: float, bounds: [0, 1]}]",
    "kind": "see `closedloop validate --help` and the README's campaign reference",
    "timeout": "seconds a run may take, e.g. timeout: 600",
    "max_retries": "a whole number from 0 to 10",
    "failure_rate": "a probability from 0 to 1",
    "hang_rate": "a probability from 0 to 1",
    "nan_rate": "a probability from 0 to 1",
    "readback_out_of_range_rate": "a probability from 0 to 1",
    "readback_tolerance": "a fraction of the bounds' span from 0 to 1, e.g. 0.01",
    "latency": "seconds per measurement, e.g. latency: 0.1",
    "failing_region": "an expression over parameters, e.g. failing_region: 'x1 + x2 > 1.5'",
}


# ---------------------------------------------------------------------------- semantics
def _refuse_boolean_bounds(data: Any, path: Path) -> None:
    """``bounds: [true, 10]`` validates as ``[1.0, 10]``; YAML's true is never a number."""
    params = data.get("parameters") if isinstance(data, Mapping) else None
    if not isinstance(params, list):
        return
    for i, param in enumerate(params):
        bounds = param.get("bounds") if isinstance(param, Mapping) else None
        if isinstance(bounds, list) and any(isinstance(b, bool) for b in bounds):
            raise CampaignConfigError(
                path,
                f"parameters[{i}].bounds: true/false is not a number (got {list(bounds)})",
                line=line_of(data, ("parameters", i, "bounds")),
                fix="write bounds as [lower, upper], e.g. bounds: [0, 10]",
            )


def _check_semantics(campaign: Campaign, data: Any, path: Path, base_dir: Path) -> None:
    """Rules that span sections: unique names, objectives the instrument can measure."""
    _refuse_boolean_bounds(data, path)
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
    if len(campaign.objectives) > 1:
        raise CampaignConfigError(
            path,
            "several objectives are not supported yet; this version optimises one",
            line=line_of(data, ("objectives", 1)),
            fix="keep one objective and record the others as instrument outputs",
        )
    if campaign.budget.max_trials is None and campaign.budget.max_duration is None:
        raise CampaignConfigError(
            path,
            "budget sets no limit",
            line=line_of(data, ("budget",)),
            fix="add max_trials: N or max_duration: 2h",
        )
    from instruments import describe_instrument  # local: keeps import cost off `--help`

    try:
        outputs = describe_instrument(campaign.instrument, campaign.parameters, base_dir=base_dir)
    except ValueError as exc:
        # The key at fault when the error names one (failing_region, outputs, ...), else
        # the instrument's source.
        key = getattr(exc, "field", None)
        instrument = data.get("instrument") if isinstance(data, Mapping) else None
        if not (isinstance(key, str) and isinstance(instrument, Mapping) and key in instrument):
            key = "simulator" if campaign.instrument.simulator else "function"
        line = line_of(data, ("instrument", key)) or line_of(data, ("instrument",))
        raise CampaignConfigError(path, f"instrument: {exc}", line=line) from None
    for i, name in enumerate(names):
        if name not in outputs:
            near = difflib.get_close_matches(name, outputs, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise CampaignConfigError(
                path,
                f"objective '{name}' is not an output of the instrument",
                line=line_of(data, ("objectives", i, "name")),
                fix=f"{hint}the instrument measures: {', '.join(outputs)}",
            )
