"""Campaign files: the schema, and a loader whose every error names file, line and fix.

The schema is pydantic v2 with ``extra="forbid"`` everywhere, so a misspelt key is an error
rather than a silently ignored setting. YAML is read with ruamel.yaml's round-trip loader
(safe: it builds no Python objects from tags) because it keeps the line of every key, which
is how a pydantic error location becomes ``campaign.yaml:12``.
"""

from __future__ import annotations

import difflib
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
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
    field_validator,
)
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from instruments import InstrumentConfig
from loop.errors import CampaignConfigError
from planners import Objective, Parameter, PlannerConfig, Space

MAX_FILE_BYTES = 1_000_000
MAX_NODES = 100_000  # after alias expansion: stops "billion laughs" anchor bombs

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
    def _instrument_shorthand(cls, value: Any) -> Any:
        """``instrument: branin`` or ``instrument: pkg.mod:func`` as shorthand."""
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
    if not text.strip():
        raise CampaignConfigError(
            path, "is empty", fix="start from an example in campaigns/, e.g. branin.yaml"
        )
    yaml = YAML(typ="rt")
    try:
        data = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
        if exc.context_mark is not None and mark is not exc.context_mark:
            problem += f" (the construct opened on line {exc.context_mark.line + 1})"
        raise CampaignConfigError(
            path,
            f"is not valid YAML: {problem}",
            line=line,
            fix="check indentation, colons and quotes on that line",
        ) from None
    except YAMLError as exc:
        raise CampaignConfigError(path, f"is not valid YAML: {exc}") from None
    if data is None:
        raise CampaignConfigError(
            path,
            "is empty (only comments)",
            fix="start from an example in campaigns/, e.g. branin.yaml",
        )
    if not isinstance(data, Mapping):
        raise CampaignConfigError(
            path,
            f"must be a mapping of keys (name:, parameters:, ...), not a {type(data).__name__}",
            line=1,
            fix="start from an example in campaigns/",
        )
    if _expanded_size(data, {}) > MAX_NODES:
        raise CampaignConfigError(
            path,
            f"expands to more than {MAX_NODES} values through YAML anchors/aliases",
            fix="write the values out plainly",
        )
    return data


def _expanded_size(node: Any, memo: dict[int, int]) -> int:
    """Node count with aliases expanded, in linear time (aliases share objects)."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # guards against recursive aliases
    if isinstance(node, Mapping):
        size = 1 + sum(_expanded_size(v, memo) for v in node.values())
    elif isinstance(node, list | tuple):
        size = 1 + sum(_expanded_size(v, memo) for v in node)
    else:
        size = 1
    memo[key] = min(size, MAX_NODES + 1)
    return memo[key]


# ---------------------------------------------------------------------------- errors
def _explain(exc: ValidationError, data: Any, path: Path) -> CampaignConfigError:
    """Turn the first (top-most) pydantic error into one message with line and fix."""
    errors = exc.errors(include_url=False)
    located = [(_line_of(data, e["loc"]), i, e) for i, e in enumerate(errors)]
    # A misspelt key shows up as "unknown key" plus "missing key": the unknown one is the cause.
    located.sort(
        key=lambda t: (t[2]["type"] != "extra_forbidden", t[0] if t[0] is not None else 10**9, t[1])
    )
    line, _, err = located[0]
    problem, fix = _describe(err, data)
    more = len(errors) - 1
    if more:
        fix = (fix + "; " if fix else "") + f"{more} more problem(s) reported after this is fixed"
    return CampaignConfigError(path, problem, line=line, fix=fix)


def _describe(err: Mapping[str, Any], data: Any) -> tuple[str, str]:
    loc = tuple(err["loc"])
    data_loc = _data_path(data, loc)
    where = _dotted(data_loc)
    kind = err["type"]
    message = str(err["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _allowed_keys(loc[:-1], data)
        near = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        parent = _dotted(data_loc[:-1]) or "the top level"
        problem = f"unknown key '{key}' in {parent}"
        if near:
            return problem, f"did you mean '{near[0]}'? allowed keys: {', '.join(allowed)}"
        return problem, f"allowed keys: {', '.join(allowed)}"
    if kind == "missing":
        parent = _dotted(data_loc[:-1]) or "the top level"
        return f"missing required key '{loc[-1]}' in {parent}", _hint_for(loc)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = "float, int, choice"
        got = err.get("ctx", {}).get("tag")
        if got is not None:
            near = difflib.get_close_matches(str(got), tags.split(", "), n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            return f"{where}: unknown parameter type '{got}'", f"{hint}type is one of {tags}"
        return f"{where}: a parameter needs a 'type'", f"add `type: float` (or {tags})"
    shown = _show(err.get("input"))
    # A rule over the whole section (e.g. hang_rate without timeout) says its own fix.
    hint = "" if kind == "value_error" and loc == ("instrument",) else _hint_for(loc)
    return f"{where}: {message}" + (f" (got {shown})" if shown else ""), hint


def _hint_for(loc: tuple[Any, ...]) -> str:
    hints = {
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
    for part in reversed(loc):
        if isinstance(part, str) and part in hints:
            return hints[part]
    return ""


def _show(value: Any) -> str:
    if value is None or isinstance(value, Mapping | CommentedMap):
        return ""
    text = repr(_plain(value))
    return text if len(text) <= 80 else text[:77] + "..."


def _plain(value: Any) -> Any:
    if isinstance(value, CommentedSeq):
        return [_plain(v) for v in value]
    return value


def _data_path(data: Any, loc: Sequence[Any]) -> list[Any]:
    """The part of a pydantic ``loc`` that exists in the YAML (drops union tags etc.)."""
    out: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif isinstance(node, Mapping | list):
            if not isinstance(node, Mapping) or part not in _MODEL_TAGS:
                out.append(part)
                node = None
        else:
            break
    return out


_MODEL_TAGS = {"float", "int", "choice"}


def _dotted(parts: Sequence[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _line_of(data: Any, loc: Sequence[Any]) -> int | None:
    """1-based line of the deepest key of ``loc`` present in the YAML."""
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
            continue  # a union tag or a key that is missing: stay on the parent
        else:
            break
    return line


def _allowed_keys(loc: Sequence[Any], data: Any) -> list[str]:
    """Field names of the model at ``loc`` (the mapping holding an unknown key)."""
    annotation: Any = Campaign
    for part in loc:
        annotation = _step(annotation, part)
        if annotation is None:
            return []
    models = list(_models_in(annotation))
    if len(models) > 1:  # a discriminated union: pick by the tag in the data
        node = data
        for part in loc:
            try:
                node = node[part]
            except (KeyError, IndexError, TypeError):
                break
        tag = node.get("type") if isinstance(node, Mapping) else None
        models = [
            m
            for m in models
            if m.model_fields.get("type") is not None
            and typing.get_args(m.model_fields["type"].annotation) == (tag,)
        ] or models
    return sorted({name for m in models for name in m.model_fields})


def _step(annotation: Any, part: Any) -> Any:
    for model in _models_in(annotation):
        if isinstance(part, str) and part in model.model_fields:
            return model.model_fields[part].annotation
    if isinstance(part, int):
        for arg in _flatten(annotation):
            origin = typing.get_origin(arg)
            if origin in (list, tuple):
                return typing.get_args(arg)[0]
    if isinstance(part, str) and part in _MODEL_TAGS:
        return annotation
    return None


def _flatten(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _flatten(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _flatten(arg)]
    return [annotation]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    return [a for a in _flatten(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]


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
                f"parameters[{i}].bounds: true/false is not a number (got {_show(bounds)})",
                line=_line_of(data, ("parameters", i, "bounds")),
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
                line=_line_of(data, ("parameters", i, "name")),
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
            line=_line_of(data, ("objectives", i, "name")),
        )
    if len(campaign.objectives) > 1:
        raise CampaignConfigError(
            path,
            "several objectives are not supported yet; this version optimises one",
            line=_line_of(data, ("objectives", 1)),
            fix="keep one objective and record the others as instrument outputs",
        )
    if campaign.budget.max_trials is None and campaign.budget.max_duration is None:
        raise CampaignConfigError(
            path,
            "budget sets no limit",
            line=_line_of(data, ("budget",)),
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
        line = _line_of(data, ("instrument", key)) or _line_of(data, ("instrument",))
        raise CampaignConfigError(path, f"instrument: {exc}", line=line) from None
    for i, name in enumerate(names):
        if name not in outputs:
            near = difflib.get_close_matches(name, outputs, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise CampaignConfigError(
                path,
                f"objective '{name}' is not an output of the instrument",
                line=_line_of(data, ("objectives", i, "name")),
                fix=f"{hint}the instrument measures: {', '.join(outputs)}",
            )
