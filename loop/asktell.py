"""A human in the loop: ask/tell from the command line, and the operator's prompt.

Ask/tell (``closedloop suggest`` / ``closedloop tell``) is for labs where a trial takes hours
or days and people carry it out. ``suggest`` rebuilds the planner from the store (every
finished trial, in order, as ``resume`` does) and gives it the trials still pending, so it
never proposes them again; the proposals are committed as trials in state ``running``.
``tell`` records one trial's outputs (and, optionally, the parameters actually used, stored
as its readbacks and learned from instead of the commanded ones), marks it failed, or
withdraws it (``--abandon``: ``abandoned``, counted toward no budget). Every command takes
the campaign's lease for as long as it works, heartbeating it as a runner does (a ``suggest``
holds it through the model fit, which may take tens of seconds), so it never races a runner or
another ``suggest``/``tell``: a second one waits for the first (:func:`_lease`).
Between commands the campaign is ``stopped`` with the reason saying how many trials are
pending; when the budget is spent it becomes ``completed`` (or ``failed``).

What makes a campaign "ask/tell" is its told trials, recognised without a schema change by
one rule (:func:`is_told`): no instrument slot, no Bluesky run, and an outcome only ``tell``
writes; a trial ``suggest`` recorded and ``tell`` has not told is ``running`` with no slot
and no documents (:func:`awaiting_tell`). ``resume`` refuses to drive a campaign while such
trials wait for ``tell`` (it would abandon them), and ``status`` points to
``suggest``/``tell`` instead of ``resume``.

Everything told is validated before anything is written, and a CSV is written in one
transaction with the state of every campaign it names (``Store.finish_trials``): all rows or
none, even when Ctrl-C, a kill or a power loss comes half-way; ``suggest -n N`` likewise
stores its proposals together (``Store.add_trials``). Refused: unknown trial, a trial
already finished or being measured by a runner, non-numeric or non-finite values, unknown
or missing outputs, outputs together with a failure reason, actual parameters outside the
space (bounds, choices, constraints). Such problems raise :class:`InvalidInput`, which the
CLI turns into exit code 2.

:class:`TerminalOperator` is the prompt ``closedloop run`` uses for ``instrument: manual``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from loop.errors import ClosedLoopError, cli_command
from loop.failures import OPERATOR_FAILED
from loop.fmt import counted, number, parameter, span, specs, visible
from loop.lock import LEASE_TTL, CampaignLease, frozen_note
from loop.prior import required_outputs
from loop.store import (
    ACTIVE,
    MAX_ID,
    UNFINISHED,
    CampaignLocked,
    CampaignRow,
    LeaseLost,
    LeaseRow,
    NewTrial,
    Store,
    TrialOutcome,
    TrialRow,
    TrialStatus,
    as_utc,
)

if TYPE_CHECKING:
    from instruments._instrument_file import InstrumentFile
    from loop.config import LoadedCampaign
    from loop.runner import ManualEntry, Runner, Spent
    from planners import Point

# loop.runner (and with it Bluesky and Ophyd) is imported where it is used, not here:
# `closedloop status` imports this module for :func:`awaiting_tell` and must stay light.

__all__ = [
    "LEASE_WAIT",
    "InvalidInput",
    "Proposal",
    "Refused",
    "Result",
    "TerminalOperator",
    "awaiting_tell",
    "is_told",
    "open_campaign",
    "outputs_of",
    "parse_assignments",
    "ResultsSheet",
    "read_results_csv",
    "amend_result",
    "told_trial",
    "amend_keeps",
    "running_time",
    "suggest",
    "tell",
]

logger = logging.getLogger(__name__)

LEASE_WAIT = 300.0
"""Seconds a ``suggest``/``tell`` waits while another, alive, holds the campaign's lease.

The holder heartbeats its lease for as long as it works, so the wait has to outlast the
slowest realistic ``suggest``: a multi-objective BoTorch suggest takes 10-25 s (README),
``-n 8`` of a two-objective campaign took 26-34 s on a busy two-core host (found in review,
where the 10 s this was made every ``tell`` behind such a suggest fail), and robots that queue
behind one another wait for each one ahead. Five minutes covers several such in a row; a
holder still working after that is more likely hung than slow, and the refusal names its
process. A holder that died is not waited for: its lease is taken over as soon as it is
stale (at once on this host, one TTL after its last heartbeat on another)."""

_WAIT_NOTE = 2.0  # s of waiting after which a waiter says once, on stderr, why it is slow
_WAIT_POLL = 0.2  # s between looks at the holder's lease


class InvalidInput(ClosedLoopError):
    """Something told (or asked) is wrong; nothing was written. Exit code 2."""


class AlreadyRecorded(InvalidInput):
    """A result told for a trial whose outcome the store already holds: ``trial``, with
    its stored ``outputs``."""

    def __init__(self, message: str, trial: TrialRow, outputs: dict[str, float]) -> None:
        super().__init__(message)
        self.trial = trial
        self.outputs = outputs


@dataclass(frozen=True)
class Proposal:
    """A suggested trial, recorded as pending (``running``) in the store."""

    trial_id: int
    number: int
    kind: str
    parameters: Point


@dataclass
class Result:
    """What is told about one trial: outputs and actual parameters, a failure reason, or a
    withdrawal (``abandoned``: the suggestion was never run)."""

    trial_id: int
    outputs: dict[str, float] = field(default_factory=dict)
    actual: dict[str, Any] = field(default_factory=dict)
    failed: str | None = None
    where: str = ""  # e.g. "results.csv:3", for messages
    abandoned: str | None = None
    # the failure was the instrument's, not the point's (a clogged tip): not learned
    transient: bool = False


# ---------------------------------------------------------------------------- values
def parse_number(name: str, text: str, *, side: bool = False) -> float:
    """A finite number (:func:`loop.config.read_number`: not ``0_6``), or ``InvalidInput``
    naming the output. ``side``: no objective or outcome constraint reads the output, so
    the fix for a value it lacks is to leave it out."""
    from loop.config import read_number

    try:
        value = read_number(text)
    except ValueError as exc:
        raise InvalidInput(f"{name}={text!r} {exc}") from None
    if not math.isfinite(value):
        fix = (
            f"leave {name} out (or its cell empty): no objective or constraint uses it"
            if side
            else "record a failed measurement with --fail REASON instead"
        )
        raise InvalidInput(f"{name}={text!r} is not a finite number; {fix}")
    return value


def parse_parameter(runner: Runner, name: str, text: str, *, csv: bool = False) -> Any:
    """A parameter value as used (``--actual name=value``), checked against the space.

    Read as prior data and ``plan --at`` read it (:func:`loop.config.parameter_value`: the
    choice ``2`` given as ``2.0`` is ``2``), then checked against the parameter's bounds.
    ``csv``: the value is a results CSV's ``actual.<name>`` cell, and messages name that
    column (:func:`_told_as`).
    """
    from loop.config import parameter_value

    actual, fail = _told_as(csv)
    by_name = {p.name: p for p in runner.space.parameters}
    if name not in by_name:
        raise InvalidInput(
            f"{actual}{name}: no such parameter; parameters are: {', '.join(by_name)}"
        )
    p = by_name[name]
    raw = text.strip()
    kind = getattr(p, "type", None)
    try:
        value = parameter_value(p, raw)
    except ValueError as exc:
        if kind == "fixed":
            # A fixed parameter has one value and no bounds: saying it was used as set is
            # harmless; any other value means the trial was not the campaign's experiment.
            fixed = p.value  # type: ignore[union-attr]
            raise InvalidInput(
                f"{actual}{name}={raw!r}: {name} is a fixed parameter (type: fixed, value: "
                f"{fixed}); every trial uses {fixed}, so it cannot be given another value "
                f"(leave it out, or record the trial as failed with {fail} if it was run "
                "otherwise)"
            ) from None
        raise InvalidInput(f"{actual}{name}={raw!r} {exc}") from None
    if kind in ("choice", "fixed"):
        return value
    lo, hi = p.bounds  # type: ignore[union-attr]
    if not lo <= value <= hi:
        raise InvalidInput(
            f"{actual}{name}={raw} lies outside the search space [{lo}, {hi}]; a result "
            f"outside it cannot be learned from (record it as failed with {fail})"
        )
    return value


def _told_as(csv: bool) -> tuple[str, str]:
    """How a message names a parameter told as actually used, and a failure reason: as
    ``tell``'s options (``--actual x``, ``--fail REASON``), or as a results CSV's columns
    (``actual.x``, the ``fail`` column). A CSV's ``actual.x`` cell was reported as
    ``--actual x=1.5``, an option its author never typed (found in review)."""
    if csv:
        return "actual.", "a reason in the fail column"
    return "--actual ", "--fail REASON"


def parse_assignments(items: Sequence[str], what: str) -> dict[str, str]:
    """``["a=1", "b=2"]`` -> ``{"a": "1", "b": "2"}``, refusing malformed or repeated keys."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise InvalidInput(f"{what} {item!r} must look like name=value")
        if key in out:
            raise InvalidInput(
                f"{what} {key} is given twice ({out[key].strip()} and {value.strip()}); give "
                "each once"
            )
        out[key] = value
    return out


def parse_typed_assignments(text: str, what: str) -> dict[str, str]:
    """``temperature=60 catalyst=Pd B`` -> ``{"temperature": "60", "catalyst": "Pd B"}``.

    For the prompt, where the operator types one line: a value runs up to the next
    ``name=`` that follows a space, so a choice value may contain spaces; a value in
    matching quotes (``catalyst="Pd B"``) is taken as quoted. Malformed or repeated keys
    are refused as by :func:`parse_assignments`.
    """
    text = text.strip()
    starts = list(re.finditer(r"(?<!\S)([^\s=]+)=", text))
    if not starts:
        return parse_assignments(text.split(), what)  # refuses a lone word, says how
    head = text[: starts[0].start()].strip()
    if head:
        raise InvalidInput(f"{what} {head!r} must look like name=value")
    items = []
    for here, after in zip(starts, [*starts[1:], None], strict=True):
        value = text[here.end() : after.start() if after else len(text)].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        items.append(f"{here.group(1)}={value}")
    return parse_assignments(items, what)


def actual_parameters(
    runner: Runner, commanded: Mapping[str, Any], actual: Mapping[str, str], *, csv: bool = False
) -> dict[str, Any]:
    """The parameters actually used, checked one by one and then as a point of the space.

    Each value must lie within its own bounds or choices (:func:`parse_parameter`); the
    point the model would learn from (the commanded parameters with these replaced, as
    ``loop.runner.achieved_point`` builds it) must also satisfy the campaign's constraints
    (and be a row of its candidate table, if any). Otherwise the runner would quietly
    learn the commanded point instead, so such a result is refused here. ``csv``: the
    values are a results CSV's ``actual.<param>`` cells (messages name those columns).
    """
    from loop.runner import achieved_point

    parsed = {k: parse_parameter(runner, k, v, csv=csv) for k, v in actual.items()}
    if parsed:
        try:
            runner.space.validate(achieved_point(commanded, parsed))
        except ValueError as exc:  # planners.InvalidPoint
            spec = specs(runner.campaign.parameters)
            label, fail = _told_as(csv)
            values = [f"{k}={parameter(v, spec.get(k), setpoint=True)}" for k, v in parsed.items()]
            # each column by its name (actual.x=1 actual.z=2); the option once (--actual x=1 z=2)
            given = " ".join(label + v for v in values) if csv else label + " ".join(values)
            raise InvalidInput(
                f"{given}: with the other parameters as set, the point actually used lies "
                f"outside the search space ({exc}); a result outside it cannot be learned "
                f"from (record it as failed with {fail})"
            ) from None
    return parsed


def outputs_of(runner: Runner) -> tuple[str, ...]:
    """The outputs a result of ``runner``'s campaign gives, in the instrument's order."""
    from instruments import describe_instrument

    c = runner.campaign
    return tuple(describe_instrument(c.instrument, c.parameters, base_dir=runner.loaded.base_dir))


# A failure reason that reads as "not failed" (a spreadsheet's FALSE in a `fail` column), or
# that is a placeholder for "nothing" (N/A, NaN, -): recording the trial as failed with such a
# reason would be the opposite of what was meant, and a told trial cannot be told again
# (found in review: "not failed", "N/A", "pass" and "success" were recorded as failures).
# Compared after `_reads_as`: lower case, only letters and digits kept ("N/A" is "na").
_NOT_FAILED = frozenset(
    {
        "false", "no", "n", "f", "0", "off", "none", "ok", "okay", "na", "nan", "null", "nil",
        "", "pass", "passed", "success", "successful", "succeeded", "good", "fine", "done",
        "nofail", "notfailed", "nein", "falsch", "non", "faux",
    }
)  # fmt: skip


def _reads_as_not_failed(reason: str) -> bool:
    """Whether a failure reason reads as "not failed" or "nothing" (see ``_NOT_FAILED``)."""
    key = "".join(ch for ch in reason.lower() if ch.isalnum())
    return key in _NOT_FAILED or key.startswith(("notfail", "nofail", "didnotfail"))


def build_result(
    runner: Runner,
    trial_id: int,
    outputs: Mapping[str, str],
    actual: Mapping[str, str],
    failed: str | None = None,
    where: str = "",
    abandoned: str | None = None,
    transient: bool = False,
) -> Result:
    """Validate text values against the campaign: every output, known names, the space.

    A trial is told exactly one of: its outputs (measured), a failure reason (``failed``),
    or a withdrawal reason (``abandoned``); outputs together with a reason are refused, as
    either half would be lost. ``transient`` qualifies a failure: the instrument's fault,
    not the point's (a clogged tip, a dropped vial), so the planner does not learn the point
    as failing (as the runner's transient faults; it counts toward ``max_failures`` all the
    same, as a flaky instrument's failures do).
    """
    known = outputs_of(runner)
    prefix = f"{where}: " if where else ""
    fail_name = "fail" if where else "--fail"  # the CSV's column, or the command's option
    try:
        if transient and failed is None:
            raise InvalidInput(
                f"{'transient' if where else '--transient'} qualifies a failure (the "
                "instrument's fault, not the point's): give it with "
                + ("a reason in the fail column" if where else "--fail REASON")
            )
        if abandoned is not None:
            if outputs or actual or failed is not None:
                raise InvalidInput(
                    "--abandon withdraws a suggestion that was not run, so it takes no "
                    "outputs, --actual or --fail (tell a trial that was run with its outputs, "
                    "or --fail REASON)"
                )
            if not abandoned.strip():
                raise InvalidInput("--abandon needs a reason, e.g. --abandon 'not run: no reagent'")
            return Result(trial_id, where=where, abandoned=abandoned.strip())
        unknown = [k for k in outputs if k not in known]
        if unknown:
            raise InvalidInput(
                f"unknown output(s) {', '.join(unknown)}; the campaign's outputs are: "
                f"{', '.join(known)}"
            )
        if failed is not None:
            reason = failed.strip()
            if outputs:
                given = " ".join(f"{k}={v.strip()}" for k, v in outputs.items())
                raise InvalidInput(
                    f"outputs ({given}) and {fail_name} {reason!r} given together; a trial is "
                    "either measured or failed: "
                    + (
                        "empty the fail cell to record the values, or the output cells to "
                        "record it as failed"
                        if where
                        else "leave out --fail to record the values, or the values to record "
                        "it as failed"
                    )
                )
            if not reason:
                raise InvalidInput("--fail needs a reason, e.g. --fail 'sample spilled'")
            if _reads_as_not_failed(reason):
                raise InvalidInput(
                    f"{fail_name} {reason!r} reads as 'not failed' or 'nothing', but any text "
                    "there records the trial as failed with that text as the reason; give the "
                    "reason it "
                    "failed (e.g. 'sample spilled'), or, if it did not fail, its outputs "
                    + ("with an empty fail cell" if where else "without --fail")
                )
            parsed_actual = {
                k: parse_parameter(runner, k, v, csv=bool(where)) for k, v in actual.items()
            }
            return Result(trial_id, {}, parsed_actual, reason, where, transient=transient)
        # A side output (no objective or outcome constraint reads it) may be left out, as
        # a run keeps a trial whose side output read nothing (instruments._dispatch).
        needed = required_outputs(runner.campaign)
        missing = [k for k in known if k in needed and k not in outputs]
        if missing:
            if where and not outputs:  # an actual.<param> cell alone: not a result yet
                raise InvalidInput(
                    f"missing output(s) {', '.join(missing)}: the row gives actual.<param> "
                    "values but no outputs; fill in the outputs, put the reason in a fail "
                    "column if the trial failed, or empty the actual cells to leave it pending"
                )
            if where:
                raise InvalidInput(
                    f"missing output(s) {', '.join(missing)}: fill in the cell(s), put the "
                    "reason in a fail column if the trial failed, or empty the row's output "
                    "cells to leave it pending"
                )
            expected = " ".join(k + "=VALUE" for k in known if k in needed)
            raise InvalidInput(
                f"missing output(s) {', '.join(missing)} (give {expected}, or --fail REASON "
                "if the trial failed)"
            )
        parsed = {
            k: parse_number(k, v, side=k not in needed)
            for k, v in outputs.items()
            if k in needed or v.strip()
        }
        parsed_actual = actual_parameters(
            runner, _commanded(runner.store, trial_id), actual, csv=bool(where)
        )
    except InvalidInput as exc:
        raise InvalidInput(f"{prefix}{exc}") from None
    return Result(trial_id, parsed, parsed_actual, None, where)


def _commanded(store: Store, trial_id: int) -> dict[str, Any]:
    """The parameters a stored trial was proposed at."""
    with store.session() as s:
        trial = s.get(TrialRow, trial_id)
    if trial is None:
        raise InvalidInput(f"no trial with id {trial_id} in store {store.url}")
    return dict(trial.parameters)


# Columns of a results CSV other than outputs: an output of one of these names could not be
# told apart from them (`validate` refuses such names for a manual instrument).
_CSV_COLUMNS = ("trial_id", "fail", "transient")
# A ``transient`` cell: yes or no (blank: no).
_YES, _NO = ("true", "yes", "y", "1"), ("false", "no", "n", "0", "")
_CSV_ACTUAL = "actual."


@dataclass
class ResultsSheet:
    """What a results CSV tells (:func:`read_results_csv`): ``results``, and the trials of
    its rows with no outputs yet (``pending``: left as they are)."""

    results: list[Result]
    pending: list[int]
    unchanged: list[int] = field(default_factory=list)  # told before, as the rows say

    def pending_note(self, path: Path) -> str | None:
        """The note that says which rows were left pending or passed over, if any."""
        notes = []
        if self.unchanged:
            notes.append(
                f"{counted(len(self.unchanged), 'row')} recorded already as they are, passed "
                f"over (trials {_ids(self.unchanged)})"
            )
        if self.pending:
            notes.append(
                f"{counted(len(self.pending), 'row')} with no outputs yet left pending "
                f"(trials {_ids(self.pending)})"
            )
        return f"{path.name}: {'; '.join(notes)}" if notes else None


def read_results_csv(runner_for: Any, path: Path) -> ResultsSheet:
    """Rows of ``trial_id, <outputs>..., [actual.<param>...], [fail], [transient]`` as results.

    ``runner_for(trial_id)`` returns the runner of that trial's campaign (for validation).
    An empty ``fail`` cell means the trial succeeded; a row with both outputs and a ``fail``
    reason is refused; empty ``actual.*`` cells are ignored. ``transient`` (yes/no) marks a
    failure as the instrument's (see :func:`build_result`). A row whose output cells are
    all empty (no ``fail`` either) has no result yet: its trial stays pending, and the
    sheet says which (a robot's sheet with wells not read yet was refused at its first
    blank row, found in review).

    ``closedloop export`` of the pending trials, with the outputs filled in, is such a CSV:
    its bookkeeping columns are ignored (``loop.prior.EXPORT_COLUMNS``, as prior data ignores
    them), and its parameter columns are read as prior data reads them, as the point the
    trial was proposed at: a value equal to the proposal is accepted, any other refused
    (:func:`_check_proposed`), since a parameter used otherwise is told as ``actual.<param>``.
    """
    from loop.prior import MAX_CSV_BYTES, other_delimiter
    from simulators._text import TextFileError, csv_records, read_text

    try:
        text = read_text(path, kind="CSV file", max_bytes=MAX_CSV_BYTES, csv=True)
        # the one CSV reader of user files: each row with the line it starts on, and an
        # unclosed quote said at its own line (told at the file's last line; found in review)
        records = list(csv_records(text))
    except TextFileError as exc:
        where = f"{path}:{exc.line}" if exc.line is not None else str(path)
        fix = f"; {exc.fix}" if exc.fix else ""
        raise InvalidInput(f"{where}: {exc.problem}{fix}, then tell it again") from None
    columns = [h.strip() for h in records[0].cells] if records else []
    if "trial_id" not in columns:
        delimiter = other_delimiter(columns)
        if delimiter is not None:
            raise InvalidInput(f"{path}:1: {delimiter[0]}; {delimiter[1]}")
        raise InvalidInput(f"{path}: the first row must name the columns, starting with trial_id")
    twice = sorted({c for c in columns if c and columns.count(c) > 1})
    if twice:
        raise InvalidInput(
            f"{path}:1: column(s) {', '.join(repr(c) for c in twice)} given twice; keep one "
            "column per name (which value was meant cannot be guessed)"
        )
    results: list[Result] = []
    recorded: list[str] = []  # rows of trials already recorded: all named at once
    pending: list[int] = []  # rows with no result yet: their trials stay pending
    unchanged: list[int] = []  # rows of trials recorded as the row says: passed over
    for record in records[1:]:  # blank lines are not records
        cells = record.cells
        where = f"{path.name}:{record.line}"
        if len(cells) > len(columns):
            extra = [c for c in cells[len(columns) :] if c.strip()]
            if extra:
                raise InvalidInput(
                    f"{where}: {counted(len(cells), 'cell')} but the first row names "
                    f"{counted(len(columns), 'column')} (extra: "
                    f"{', '.join(repr(c) for c in extra)}); add the column's name to the "
                    "first row, or remove the extra cells"
                )
        row = dict(zip(columns, cells, strict=False))
        raw_id = (row.get("trial_id") or "").strip()
        if not (raw_id.isascii() and raw_id.isdigit()):
            raise InvalidInput(f"{where}: trial_id {raw_id!r} is not a trial id")
        trial_id = int(raw_id)
        try:
            runner = runner_for(trial_id)  # refuses an unknown or finished trial
        except AlreadyRecorded as exc:
            # A sheet told again as more wells are read: a row as it was told is passed
            # over; one that differs is named, every such row at once (found in review).
            if _as_recorded(row, exc.trial, exc.outputs):
                unchanged.append(trial_id)
            else:
                recorded.append(f"{where}: {exc}")
            continue
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from None
        known = outputs_of(runner)
        if not results and not recorded:  # the header, against the first row's campaign
            _check_header(runner, columns, f"{path}:{records[0].line}", known)
        clash = [o for o in known if o in _CSV_COLUMNS or o.startswith(_CSV_ACTUAL)]
        if clash:
            raise InvalidInput(
                f"{where}: the campaign's output(s) {', '.join(clash)} have the name of a "
                "results-CSV column of another meaning (trial_id, fail, transient, "
                "actual.<param>), so "
                "a CSV cannot tell them; tell each trial with "
                f"`{cli_command('tell', runner.store.url, None, 'TRIAL_ID name=value ...')}`"
            )
        outputs: dict[str, str] = {}
        actual: dict[str, str] = {}
        proposed: dict[str, str] = {}
        failed = (row.get("fail") or "").strip() or None
        flag = (row.get("transient") or "").strip().lower()
        if flag not in _YES + _NO:
            raise InvalidInput(
                f"{where}: transient {flag!r} is neither yes nor no; write yes for a failure "
                "that was the instrument's fault (a clogged tip), or leave the cell empty"
            )
        if failed is None and not any((row.get(k) or "").strip() for k in known):
            if flag in _YES or any(
                (v or "").strip() for k, v in row.items() if k.startswith(_CSV_ACTUAL)
            ):
                pass  # refused below, with the reason (build_result)
            else:
                pending.append(trial_id)  # no result yet (a well not read): left pending
                continue
        for key, value in row.items():
            if not value.strip() or key in _CSV_COLUMNS:
                continue
            if not key:
                raise InvalidInput(
                    f"{where}: the value {value.strip()!r} is in a column without a name; "
                    "name it in the first row (an output, actual.<param> or fail)"
                )
            if key.startswith(_CSV_ACTUAL):
                actual[key.removeprefix(_CSV_ACTUAL)] = value
            elif key in known or not _export_column(runner, where, key, value, proposed):
                outputs[key] = value  # an unknown one is refused by build_result
        try:
            _check_proposed(runner, trial_id, proposed)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc}") from None
        results.append(
            build_result(runner, trial_id, outputs, actual, failed, where, transient=flag in _YES)
        )
    if recorded:
        rows = "; ".join(recorded[:5]) + (
            f"; and {len(recorded) - 5} more" if len(recorded) > 5 else ""
        )
        others = len(results) + len(pending) + len(unchanged)
        raise InvalidInput(
            f"{len(recorded)} row(s) tell trials already recorded otherwise ({rows}); remove "
            f"them, or correct one with `tell TRIAL_ID ... --amend REASON`, and tell the file "
            f"again (its other {others} row(s) are fine)"
            if others
            else f"every row tells a trial already recorded ({rows}); nothing to tell"
        )
    if not results and unchanged and not pending:
        raise InvalidInput(f"{path}: every row is recorded already, as it says: nothing to tell")
    if not results:
        if pending:
            raise InvalidInput(
                f"{path}: no results yet: every row's output cells are empty (trials "
                f"{_ids(pending)} stay pending); fill them in, or put a reason in a fail column"
            )
        raise InvalidInput(f"{path}: no rows")
    return ResultsSheet(results, pending, unchanged)


def _as_recorded(row: Mapping[str, str], trial: TrialRow, outputs: Mapping[str, float]) -> bool:
    """Whether a results row says what the store holds of ``trial`` already: its outputs
    (every stored output's cell, read as a number, equal), or its failure's reason; or
    nothing at all (no output, no fail: a well's row not filled in on this copy of the
    sheet). A row that says otherwise is not."""
    fail = (row.get("fail") or "").strip()
    if not fail and not any((row.get(name) or "").strip() for name in outputs):
        return True
    if trial.status == "completed":
        if fail or not outputs:
            return False
        for name, value in outputs.items():
            cell = (row.get(name) or "").strip()
            try:
                told = float(cell)
            except ValueError:
                return False
            if not (told == value or (math.isnan(told) and math.isnan(value))):
                return False
        return True
    if trial.status == "failed":
        return bool(fail) and trial.error == f"{OPERATOR_FAILED}{fail}"
    return False


def _ids(ids: Sequence[int]) -> str:
    """Trial ids for a message: the first few and how many more."""
    shown = ", ".join(str(i) for i in ids[:8])
    return shown + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")


def _check_header(runner: Runner, columns: list[str], where: str, known: Sequence[str]) -> None:
    """Refuse, at the header's line, a column that is none of the campaign's outputs and
    none of a results CSV's or an export's columns, with the nearest name. Was: `a [mm]`
    was refused as an unknown output at the first data row, with no hint (prior data
    said both: the header's line and "did you mean 'a'?")."""
    import difflib

    from loop.prior import EXPORT_COLUMNS

    names = [*known, *(p.name for p in runner.campaign.parameters)]
    unknown = [
        c
        for c in columns
        if c
        and c not in names
        and c not in _CSV_COLUMNS
        and c not in EXPORT_COLUMNS
        and not c.startswith((_CSV_ACTUAL, "readback."))
    ]
    if not unknown:
        return
    hints = [
        f"did you mean '{near[0]}' for '{c}'?"
        for c in unknown[:3]
        if (near := difflib.get_close_matches(c, names, n=1, cutoff=0.5))
    ]
    raise InvalidInput(
        f"{where}: column(s) {', '.join(repr(c) for c in unknown)} are none of the campaign's "
        f"outputs ({', '.join(known)}) nor trial_id, fail, transient or actual.<param>"
        + (f"; {' '.join(hints)}" if hints else "")
        + " (units belong in the campaign file, not in a header)"
    )


def _export_column(
    runner: Runner, where: str, key: str, value: str, proposed: dict[str, str]
) -> bool:
    """Whether a non-empty cell of a column that is not an output is one of an export's:
    a bookkeeping column (ignored) or a parameter (collected in ``proposed``, checked
    against the proposal). ``False`` for an unknown column, which :func:`build_result`
    refuses, listing the campaign's outputs.

    Two cells are refused here: ``error`` (the export's column, not read: a failure reason
    is told in ``fail``) and ``readback.<param>`` (where a runner's instrument was; a value
    used by hand is told as ``actual.<param>``), so that neither is dropped unread.
    """
    from loop.prior import EXPORT_COLUMNS

    parameters = [p.name for p in runner.campaign.parameters]
    if key == "error":
        raise InvalidInput(
            f"{where}: {value.strip()!r} in the export's error column is not read; to record "
            "the trial as failed, put the reason in a column named fail (its outputs empty)"
        )
    if key.startswith("readback.") and key.removeprefix("readback.") in parameters:
        name = key.removeprefix("readback.")
        raise InvalidInput(
            f"{where}: {key}={value.strip()} is not read: a parameter used otherwise than "
            f"proposed is told in a column named actual.{name}"
        )
    if key in parameters:
        proposed[key] = value
        return True
    return key in EXPORT_COLUMNS


def _check_proposed(runner: Runner, trial_id: int, proposed: Mapping[str, str]) -> None:
    """Parameter cells of a results CSV (an export's columns) equal to the values the trial
    was proposed at; a value that differs is refused, not taken as the value used.

    Prior data reads a parameter column as the point measured (an export's ``readback.*`` as
    where the instrument was), and here the point is the proposal, so a different value is
    either a slip or a parameter used otherwise; the latter is ``actual.<param>``, and
    guessing would let a typo in a copied column move a measurement. Numbers are equal to
    within 1e-9 of their size (a spreadsheet keeps 15 significant digits of the export's
    17), or the proposal rounded to the digits written, six or more (:func:`_rounded`).
    """
    if not proposed:
        return
    from loop.config import parameter_value

    commanded = _commanded(runner.store, trial_id)
    spec = specs(runner.campaign.parameters)
    by_name = {p.name: p for p in runner.space.parameters}
    for name, text in proposed.items():
        was = commanded.get(name)
        try:
            value = parameter_value(by_name[name], text.strip())
        except ValueError:
            value = None
        if value is not None and (_same(value, was) or _rounded(text.strip(), was)):
            continue
        # in full: a proposal written to the digits the cell has read the same as the cell
        # ("x=0.208955 is not ... (x=0.208955)"; found in review)
        full = (
            repr(was) if isinstance(was, float) else parameter(was, spec.get(name), setpoint=True)
        )
        raise InvalidInput(
            f"{name}={text.strip()} is not the value trial {trial_id} was proposed at "
            f"({name}={full}); a parameter column is "
            f"the proposal, as in prior data: if {text.strip()} is the value actually used, "
            f"name the column actual.{name}; else restore the proposed value or delete the "
            "column (tell needs trial_id and the outputs only)"
        )


#: Significant digits a parameter cell must keep to be read as its proposal rounded.
_LEAST_DIGITS = 6


def _rounded(text: str, proposed: Any) -> bool:
    """Whether ``text`` is a float ``proposed`` rounded to the significant digits it has (at
    least ``_LEAST_DIGITS``; a spreadsheet drops trailing zeros): one saving numbers as shown
    writes 0.208955 for 0.20895512..., and the proposal was refused (found in review). A
    value that is not the proposal at six digits may be another value, and is refused."""
    if not isinstance(proposed, float) or isinstance(proposed, bool):
        return False
    try:
        written = Decimal(text)
        value = float(written)
    except (InvalidOperation, ValueError):
        return False
    if not math.isfinite(value):
        return False
    # as many digits as written, and never fewer than six: 95.018 is 95.0180 rounded
    digits = max(len(written.as_tuple().digits), _LEAST_DIGITS)
    return float(f"{proposed:.{digits}g}") == value


def _same(value: Any, proposed: Any) -> bool:
    """Whether a parameter cell's value is the proposed one (numbers to within 1e-9)."""
    numbers = (int, float)
    if isinstance(value, numbers) and isinstance(proposed, numbers):
        if isinstance(value, bool) or isinstance(proposed, bool):
            return bool(value == proposed)
        return math.isclose(float(value), float(proposed), rel_tol=1e-9, abs_tol=1e-12)
    return bool(value == proposed)


# ---------------------------------------------------------------------------- ask
def open_campaign(
    store: Store,
    loaded: LoadedCampaign | None,
    campaign: str | None,
    *,
    max_trials: int | None = None,
    max_failures: int | None = None,
    max_duration: float | None = None,
    check: Callable[[Runner], None] | None = None,
) -> tuple[Runner, bool]:
    """The campaign to ask about: created from ``loaded`` on first use, else from the store.

    ``check(runner)``: called on a campaign about to be created, before anything is stored;
    what it raises leaves no campaign behind (a refused ``suggest FILE --at`` created one
    that proposed nothing; found in review).

    With ``loaded`` (the campaign file, ``load_campaign``): an unfinished campaign of the
    file's name and identical text is continued; one of the same name with another text is
    refused (name the new campaign differently, or continue the stored one with ``-c``). The
    file is loaded by the caller, before the store is opened: a file that fails its checks
    must not leave a new, empty store behind (it did, found in review). Budget overrides
    are applied as ``resume`` applies them (:func:`suggest` stores them). Returns the runner
    and whether the campaign was created now.
    """
    from loop.runner import Runner

    def stored(cid: int | None) -> Runner:
        return Runner.from_store(
            store, cid, max_trials=max_trials, max_failures=max_failures, max_duration=max_duration
        )

    if loaded is None:
        return stored(store.campaign(campaign).id), False
    # The campaign of the file's name: an unfinished one, else the latest. A finished one
    # is continued too, so that its budget is extended (--max-trials) or the suggest refused
    # naming the limit, as `suggest -c` does; a new campaign of the same name had started
    # from the first design point, learning nothing from the trials (found in review).
    named = [row for row in reversed(store.campaigns()) if row.name == loaded.campaign.name]
    row = next((r for r in named if r.status in UNFINISHED), named[0] if named else None)
    if row is not None:
        from loop.config import changed_keys, same_content

        edited = row.config_text != loaded.text and not same_content(row.config_text, loaded.text)
        changes = changed_keys(row.config_text, loaded.text) if edited else []
        differs = f" (the file differs at {'; '.join(changes)})" if changes else ""
        if edited and row.status not in UNFINISHED:
            # a finished campaign's file edited (a new target, other bounds): a new campaign,
            # said, for only an unedited file can mean "go on" (a refusal that named `-c`
            # led back to the finished one; found in review)
            logger.warning(
                "campaign '%s' (id %s) is %s and the file differs from it%s: a new campaign "
                "of that name starts from the file (the finished one is continued with "
                "`%s`)",
                row.name,
                row.id,
                row.status,
                differs,
                cli_command("suggest", store.url, row.id, "--max-trials N"),
            )
        elif edited:
            raise InvalidInput(
                f"campaign '{row.name}' (id {row.id}) in this store was created from a "
                f"different file{differs}; continue it with "
                f"`{cli_command('suggest', store.url, row.id)}` (a budget is changed with "
                "--max-trials, --max-failures or --max-duration), or give the new campaign "
                "another name"
            )
        else:
            return stored(row.id), False
    runner = Runner(
        loaded, store, max_trials=max_trials, max_failures=max_failures, max_duration=max_duration
    )
    if check is not None:
        check(runner)
    runner.create()  # as `run` does: the campaign row, then its prior data
    runner.lease.release()
    return runner, True


def suggest(
    runner: Runner,
    n: int,
    *,
    wait: float = LEASE_WAIT,
    refused: list[Refused] | None = None,
    at: Mapping[str, Any] | None = None,
) -> list[Proposal]:
    """Propose up to ``n`` trials and record them as pending; the planner avoids pending ones.

    ``at``: record ``n`` trials at this point instead, chosen by a person (kind
    :data:`MANUAL_KIND`): a control well, replicates of a trial (:func:`trial_point`), a
    point from the literature. Nothing of a plate could be added to a stored campaign
    but by hijacking a proposal (found in review); Ax's ``attach_trial`` does this. The
    point is the whole point, checked against the space and the instrument file's limits
    and refused (nothing stored) rather than recorded as failed, and all ``n`` are recorded
    or none: a chosen trial is never silently dropped for the budget. They are told like
    any trial, count toward the budget like any, and the planner learns from them.

    Fewer than ``n`` are proposed when the pending trials and ``n`` more could complete
    beyond ``budget.max_trials``: every suggestion is meant to be run. Budget overrides the
    runner was built with (``open_campaign(max_trials=...)``) are stored, as by ``resume``.
    ``wait``: seconds to wait while another ``suggest``/``tell`` holds the campaign
    (:data:`LEASE_WAIT`); the lease is held, heartbeated, through the planner's work.

    A proposal the instrument file's limits forbid is not handed out: it is recorded as the
    runner records a trial its dispatcher refuses (failed, ``limit check failed, no device
    moved: ...``, counted toward ``max_failures``), so the planner learns it as it does in a
    ``run``, and a warning says so (:func:`_refusals`). ``refused``: a list that such
    proposals are appended to, for a caller that reports them.

    A stored campaign ``resume`` refuses for its instrument's safety settings (the file on
    disk in conflict with the stored one, or no valid instrument file) is refused here as
    there, before anything is stored (:func:`_instrument_limits`).

    Each ``suggest`` that stores proposals records a session with them, in their
    transaction (``loop.provenance.suggest_session``: who, where, the command, the budget it
    overrode, the versions and the planner's code), except the first of the runner that
    created the campaign, whose creation recorded it: whoever proposed a trial is on
    record, as whoever told its result is (:func:`tell`). One that stores nothing records
    nothing.
    """
    from loop.provenance import suggest_session
    from loop.runner import PRIOR_KIND
    from loop.scheduler import call_planner, check_proposals

    store, cid = runner.store, runner._cid()
    limits = _instrument_limits(runner)
    chosen = None if at is None else chosen_point(runner, at)
    with _lease(store, cid, "suggest", wait=wait, ttl=runner.lease.ttl) as lease:
        row = store.campaign(cid)
        history = store.trials(cid)
        spent = runner.spent(history, running_time(row))
        if spent is not None:
            if not runner._budget_changed:
                _mark(runner, lease.token)  # as a `tell` would have: completed or failed
            raise InvalidInput(_spent_message(runner, row.name, spent, chosen=chosen is not None))
        in_flight = [t.number for t in history if t.status == "running" and _dispatched(store, t)]
        if in_flight:
            raise InvalidInput(
                f"campaign '{row.name}' (id {cid}) has trials a runner left in flight "
                f"({', '.join(f'#{n}' for n in in_flight)}); "
                f"`{cli_command('resume', store.url, cid)}` reconciles them"
            )
        pending = [t for t in history if t.status == "running"]
        limit = runner.budget.max_trials
        if limit is not None:
            completed = sum(t.status == "completed" and t.kind != PRIOR_KIND for t in history)
            room = limit - completed - len(pending)
            if room <= 0:
                tell = cli_command("tell", store.url, None, "TRIAL_ID")
                more = cli_command("suggest", store.url, cid, f"--max-trials {limit + n}")
                raise InvalidInput(
                    f"campaign '{row.name}' (id {cid}): {completed} trial(s) completed and "
                    f"{len(pending)} pending can already reach budget.max_trials = {limit}; "
                    f"tell the pending ones first (`{tell} ...`; one that will not be run is "
                    f"withdrawn with `{tell} --abandon REASON`), or raise the budget: "
                    f"`{more}`" + _SAME_POINT * (chosen is not None)
                )
            if chosen is not None and room < n:
                raise InvalidInput(
                    f"campaign '{row.name}' (id {cid}): {completed} trial(s) completed and "
                    f"{len(pending)} pending leave room for {room} more within "
                    f"budget.max_trials = {limit}, not the {n} asked for at the chosen point; "
                    "raise the budget: `"
                    + cli_command("suggest", store.url, cid, f"--max-trials {limit + n - room}")
                    + f"`{_SAME_POINT}"
                )
            n = min(n, room)
        observations = store.observations(cid)
        if chosen is not None:
            new = [NewTrial(dict(chosen), MANUAL_KIND) for _ in range(n)]
        else:
            planner = runner.rebuild_planner(history, observations, waited_on=False)
            t0 = time.perf_counter()
            held = [dict(t.parameters) for t in pending]
            points = call_planner(planner, "suggest", n, pending=held)
            seconds = (time.perf_counter() - t0) / max(n, 1)
            # As `run` checks them (loop.scheduler): a point outside the space or its
            # constraints, another count, or a plugin that raised, is the planner's
            # PlannerError; nothing is stored.
            new = [
                NewTrial(point, kind, suggest_seconds=seconds)
                for point, kind in check_proposals(planner, n, points, runner.space, held)
            ]
        reasons = _refusals(limits, [t.parameters for t in new])
        # The proposals, the budget overrides, the campaign's state and this suggest's session
        # (with a planner plugin changed since the trials before, as a resume records it), in
        # one transaction: stored one by one, an interrupt left pending trials whose ids were
        # never printed, or proposals no session said who made.
        rows = store.add_trials(
            cid,
            new,
            token=lease.token,
            budget=runner.budget.model_dump(mode="json") if runner._budget_changed else None,
            status=_state(runner, history, observations, running_time(row), adding=len(new)),
            events=suggest_session(runner, len(history)),
        )
        outcomes = {
            t.id or 0: TrialOutcome(t.id or 0, "failed", {}, {}, why)
            for t, why in zip(rows, reasons, strict=True)
            if why is not None
        }
        if outcomes:
            # As the runner records a trial refused at its limit check (a second transaction:
            # the store adds trials as pending only; their ids were not printed meanwhile).
            after = [*history, *(_told(t, outcomes[t.id]) if t.id in outcomes else t for t in rows)]
            store.finish_trials(
                list(outcomes.values()),
                tokens={cid: lease.token},
                status={cid: _state(runner, after, observations, running_time(row))},
            )
    mine = [t for t in rows if t.id not in outcomes]
    spec = specs(runner.campaign.parameters)
    for t in rows:
        if t.id in outcomes:
            where = ", ".join(
                f"{k}={parameter(v, spec.get(k), setpoint=True)}" for k, v in t.parameters.items()
            )
            error = (outcomes[t.id].error or "").removeprefix(REFUSED_PREFIX)
            reason = error.removeprefix("SetpointRefused: ")
            logger.warning(
                "trial %s (#%s) at %s is not suggested: %s. Recorded as failed, as `closedloop "
                "run` records a point its instrument refuses, so the planner learns it "
                "(narrow the parameter's bounds to the limits)",
                t.id,
                t.number,
                where,
                reason,
            )
            if refused is not None:
                refused.append(Refused(t.id or 0, t.number, dict(t.parameters), reason))
    return [Proposal(t.id or 0, t.number, t.kind, dict(t.parameters)) for t in mine]


#: The kind of a trial a person chose the point of (``suggest --at``): not the planner's.
MANUAL_KIND = "manual"


def chosen_point(runner: Runner, at: Mapping[str, Any], *, label: str = "--at") -> dict[str, Any]:
    """``at`` as a point of the campaign's space (``suggest --at``), or :class:`InvalidInput`
    saying why not: every parameter given (a fixed one may be left out), each value one its
    parameter can take, the constraints met, and the instrument file's limits kept. A
    person's point is refused, not recorded as failed as a planner's would be: they can
    correct it. ``runner`` need not have created its campaign yet (``open_campaign``'s
    ``check``). ``label``: the option the messages name (``--repeat 7``)."""
    from planners import FixedParameter, InvalidPoint

    names = [p.name for p in runner.space.parameters]
    free = [p.name for p in runner.space.parameters if not isinstance(p, FixedParameter)]
    unknown = [k for k in at if k not in names]
    missing = [k for k in free if k not in at]
    if unknown or missing:
        said = [f"{', '.join(unknown)}: no such parameter"] if unknown else []
        if missing:
            said.append(f"{', '.join(missing)} not given")
        raise InvalidInput(
            f"{label}: {'; '.join(said)}; a chosen point gives every parameter ({', '.join(free)})"
        )
    try:
        valid = runner.space.validate(at)
    except InvalidPoint as exc:
        raise InvalidInput(f"{label}: the point lies outside the search space: {exc}") from None
    (reason,) = _refusals(_instrument_limits(runner), [valid])
    if reason is not None:
        raise InvalidInput(
            f"{label}: the instrument's limits refuse the point: "
            f"{reason.removeprefix(REFUSED_PREFIX)}; nothing was recorded"
        )
    return valid


def trial_point(store: Store, trial_id: int, campaign_id: int) -> dict[str, Any]:
    """The point trial ``trial_id`` of campaign ``campaign_id`` was proposed at, for
    replicates of it (``suggest --repeat``)."""
    trial = _stored_trial(store, trial_id)
    if trial.campaign_id != campaign_id:
        raise InvalidInput(
            f"--repeat {trial_id}: trial {trial_id} belongs to campaign {trial.campaign_id}, "
            f"not to campaign {campaign_id}"
        )
    return dict(trial.parameters)


#: The error of a trial refused before any device moved, as the dispatcher words it
#: (``instruments._dispatch``; ``loop.failures`` counts it as ``setpoint refused``).
REFUSED_PREFIX = "limit check failed, no device moved: "


@dataclass(frozen=True)
class Refused:
    """A proposal of ``suggest`` that the instrument's limits refuse: recorded as failed,
    not handed out."""

    trial_id: int
    number: int
    parameters: Point
    reason: str


def _instrument_limits(runner: Runner) -> InstrumentFile | None:
    """The campaign's instrument file (``file:`` or inline ``devices:``) with the safety
    settings a run applies (:func:`instruments._epics.declared_spec`), ``None`` for an
    instrument with no such file.

    Refused as ``resume`` refuses it, with its message (``Runner._as_stored``): settings of
    the file on disk that cannot be combined with the stored ones, or an input ``units:``
    on disk other than the campaign's (:func:`~instruments._instrument_file.
    refuse_unsafe_merge`, as :func:`~instruments._epics.build_declared_instrument` calls
    it). Without this, the conflict stayed on the spec, where only building the devices
    raises it, and ``suggest`` handed out points (within the stored limits) for a campaign
    whose file on disk allowed none of them (found in review).

    Raises:
        CampaignConfigError: a stored campaign's conflict, naming the file, line and fix.
    """
    instrument = runner.campaign.instrument
    if instrument.file is None and instrument.devices is None:
        return None
    from instruments._epics import declared_spec, parameter_units
    from instruments._errors import InstrumentConfigError
    from instruments._instrument_file import input_units, refuse_unsafe_merge

    try:
        spec = declared_spec(instrument, runner.loaded.base_dir)
        units = input_units(spec, parameter_units(runner.campaign.parameters))
        refuse_unsafe_merge(spec, units)
    except InstrumentConfigError as exc:
        raise runner._as_stored(exc) from exc
    return spec


def _refusals(spec: InstrumentFile | None, points: Sequence[Mapping[str, Any]]) -> list[str | None]:
    """For each point, the error a runner records for it when its dispatcher refuses it
    before any device moves, as far as the instrument file (``spec``,
    :func:`_instrument_limits`) decides it without the hardware
    (:func:`instruments._epics.refused_by_limits`: each input's effective limits); ``None``
    for a point it accepts, and for every point of an instrument with no such file (a
    simulator's, a function's or a dataset's inputs take their bounds, a manual one none).
    """
    if spec is None:
        return [None] * len(points)
    from instruments import describe_exception
    from instruments._epics import refused_by_limits

    reasons: list[str | None] = []
    for point in points:
        exc = refused_by_limits(spec, point)
        reasons.append(None if exc is None else REFUSED_PREFIX + describe_exception(exc))
    return reasons


def running_time(row: CampaignRow) -> float:
    """The running time of an ask/tell campaign, which ``budget.max_duration`` limits: the
    time since the campaign was created (seconds).

    A runner counts its sessions' running time (``elapsed_seconds``, its heartbeat's), but
    no process runs between ``suggest`` and ``tell``: the campaign runs in the lab, so its
    age is its running time. Judged by ``elapsed_seconds`` alone, which no ask/tell command
    writes, ``max_duration`` never ended an ask/tell campaign (found in review). Any
    ``run``/``resume`` session lies within the age, so it is never counted twice; the time
    before a campaign created by ``run`` was continued with ``suggest`` counts too (the
    budget is then raised with ``suggest --max-duration``, as the refusal says).
    """
    age = (datetime.now(UTC) - as_utc(row.created_at)).total_seconds()
    return max(row.elapsed_seconds or 0.0, age)


def _spent_message(runner: Runner, name: str, spent: Spent, *, chosen: bool = False) -> str:
    """Why ``suggest`` has nothing more to propose, and the option that would extend it
    (``Spent.option``: the runner's one rule, as ``resume`` suggests it). ``chosen``: the
    command gave its own point (``--at``), which the command shown must repeat."""
    cid = runner._cid()
    done = f"campaign '{name}' (id {cid}) is done: {spent.reason}"
    if spent.option is None:
        return (
            f"{done}; nothing more to suggest, whatever the budget (start a new campaign: "
            "edit the campaign file, e.g. its target or bounds, and suggest it again)"
        )
    return (
        f"{done}; nothing more to suggest unless the budget is raised, e.g. "
        f"`{cli_command('suggest', runner.store.url, cid, spent.option)}`" + _SAME_POINT * chosen
    )


#: Said after a command shown to a `suggest --at` that it must give its point again.
_SAME_POINT = " with the same --at/--repeat and -n options"


def _dispatched(store: Store, trial: TrialRow) -> bool:
    """Whether a runner sent the trial to an instrument (its run's documents are stored)."""
    return bool(trial.id is not None and store.documents(trial.id))


#: The prefix of the error of a trial withdrawn with ``tell --abandon`` (:func:`_outcome`).
WITHDRAWN = "withdrawn by the operator: "


def is_told(trial: TrialRow, store: Store | None = None) -> bool:
    """Whether ``trial`` is ask/tell's: proposed by ``closedloop suggest`` and given its
    outcome by ``tell`` (while ``running``, still waiting for it), never run by a runner.

    The one rule for it: ``status`` (an ask/tell campaign's running time is its age; its
    told trials ran on no slot), :func:`awaiting_tell` and the runner's hang watch (which
    times trials a runner ran). A runner records the slot of every trial it starts, but
    only since store schema 3: a missing slot alone made every trial of an older store
    "told", and ``status`` gave such a campaign's age as its running time (found in
    review). So the rule asks what rows of every schema carry too: a told trial has no run
    (no ``run_uid``; a pending one no documents, which a runner's trial in flight has
    before its ``run_uid`` is recorded) and an outcome only ``tell`` writes: measured, or
    failed or withdrawn with the operator's reason. A runner's trial without a run says why
    in its error (refused at the limit check, stopped before its run started). One case
    stays alike in a store older than schema 3: a trial the operator failed at a manual
    instrument's prompt (``run``), counted as told. ``store``: needed for a ``running``
    trial only (its documents are looked up).
    """
    if trial.kind == "prior" or trial.slot is not None or trial.run_uid is not None:
        return False
    if trial.status == "running":
        if store is None:
            raise ValueError("a running trial is told apart by its documents: give the store")
        return not _dispatched(store, trial)
    if trial.status == "completed":
        return True
    return (trial.error or "").startswith((OPERATOR_FAILED, WITHDRAWN))


def awaiting_tell(store: Store, trials: Sequence[TrialRow]) -> list[TrialRow]:
    """The trials of ``trials`` that ``closedloop suggest`` proposed and ``tell`` has not told
    (:func:`is_told`, still ``running``).

    Only ``tell`` gives such a trial an outcome: a runner reconciling it would find no run
    and abandon it, losing a sample that may be in the lab.
    """
    return [t for t in trials if t.status == "running" and is_told(t, store)]


def _mark(runner: Runner, token: str) -> None:
    """Record the campaign's state between ask/tell commands (:func:`_state`) as stored."""
    store, cid = runner.store, runner._cid()
    history, observations = store.trials_and_observations(cid)
    status, reason = _state(runner, history, observations, running_time(store.campaign(cid)))
    store.finish_campaign(cid, status, reason, token=token)


def _state(
    runner: Runner,
    history: Sequence[TrialRow],
    observations: dict[int, dict[str, float]],
    elapsed: float,
    *,
    adding: int = 0,
) -> tuple[str, str]:
    """The campaign's state between ask/tell commands: budget spent, or waiting.

    From its trials and outputs as they will be once a batch is written (``adding``: new
    pending trials, which count toward nothing but the reason): ``suggest`` and ``tell``
    store the state in the batch's transaction, so it always matches the trials.
    """
    pending = sum(t.status == "running" for t in history) + adding
    spent = runner.spent(history, elapsed, observations)
    if spent is not None:
        reason = spent.reason
        if pending:  # e.g. a target reached: the others may still be out in the lab
            reason += (
                f"; {pending} suggestion(s) still pending: `closedloop tell` records their "
                "results, `closedloop tell TRIAL_ID --abandon REASON` withdraws one"
            )
        return spent.status, reason
    return (
        "stopped",
        f"ask/tell: {pending} trial(s) pending; `closedloop tell` records results, "
        "`closedloop suggest` proposes more",
    )


@contextmanager
def _lease(
    store: Store, cid: int, what: str, *, wait: float, ttl: float = LEASE_TTL
) -> Iterator[CampaignLease]:
    """Hold campaign ``cid``'s lease, heartbeating it, for the body of a ``suggest``/``tell``
    (``what``, for messages).

    Heartbeated as a runner's is (``CampaignLease.start_heartbeat``; ``ttl``: the runner's
    ``lease_ttl``): a ``suggest`` holds the lease through its model fit, and without a
    heartbeat one longer than the TTL lost it to the next command and had its proposals
    thrown away (found in review). The heartbeat stops and the lease is released on every
    way out (``CampaignLease.release``, in ``finally``: an error, ``KeyboardInterrupt``); a
    kill ends the heartbeat with the process, and the lease it leaves is stale at once on
    this host, one TTL later elsewhere. Waiting for the lease: :func:`_acquire`. A write
    refused because the lease was lost meanwhile (``LeaseLost``: the process was paused, or
    the store unreachable, past the TTL) is said as this command's, not a runner's.
    """
    lease = CampaignLease(store, ttl=ttl)
    try:
        _acquire(lease, store, cid, what, wait)
        lease.start_heartbeat()
        try:
            yield lease
        except LeaseLost:
            holder = store.lease(cid)
            if holder is not None and holder.token == lease.token:
                raise  # another campaign's lease (``tell`` holds several): said there
            raise LeaseLost(_lost(store, cid, what, lease, holder)) from None
    finally:
        lease.release()


def _acquire(lease: CampaignLease, store: Store, cid: int, what: str, wait: float) -> None:
    """Take ``lease`` on campaign ``cid``, waiting up to ``wait`` s while a live ``suggest``/
    ``tell`` holds it; a runner driving the campaign is refused at once.

    ``CampaignLease.acquire`` takes over a stale lease (its holder's process gone from this
    host, or its heartbeat expired), so trying again every :data:`_WAIT_POLL` s takes over
    the lease of a holder killed meanwhile as soon as it is stale. A holder that is not a
    runner (the campaign is not ``running``/``paused``) is another ``suggest``/``tell``;
    after :data:`_WAIT_NOTE` s of waiting for it a warning says so, once, so that a
    script's log shows why the command is slow. A holder stopped on this host (Ctrl-Z) is not
    waited for: it will not go on by itself, and the refusal says how to continue or end it
    (``loop.lock.frozen_note``).
    """
    start = time.monotonic()
    noted = False
    while True:
        try:
            lease.acquire(cid)
            return
        except CampaignLocked as exc:
            row = store.campaign(cid)
            held = store.lease(cid)
            frozen = None if held is None else frozen_note(held, f"try the {what} again")
            if frozen is not None:
                raise CampaignLocked(
                    f"campaign '{row.name}' (id {cid}) is held by a stopped process; nothing "
                    f"was written: {frozen}",
                    owner=exc.owner,
                ) from None
            if row.status in ACTIVE:  # only a runner shows these
                raise CampaignLocked(
                    f"campaign '{row.name}' (id {cid}) is being driven by a runner "
                    f"({exc.owner}); suggest/tell cannot be used until it stops (Ctrl-C in "
                    "its terminal, or wait for it to finish)",
                    owner=exc.owner,
                ) from None
            holder = store.lease(cid)
            if holder is None:
                continue  # released since: take it
            waited = time.monotonic() - start
            if waited >= wait:
                raise CampaignLocked(
                    f"another suggest/tell ({_holder(holder)}) still holds campaign "
                    f"'{row.name}' (id {cid}) after {waited:.0f} s of waiting; nothing was "
                    f"written; try the {what} again (if that process hangs, stop it: its "
                    "lease is taken over at once on its host, "
                    f"{holder.expires - holder.heartbeat:.0f} s after its last heartbeat "
                    "from another)",
                    owner=holder.owner,
                ) from None
            if not noted and waited >= _WAIT_NOTE:
                logger.warning(
                    "campaign '%s' (id %s) is busy: waiting for the suggest/tell of %s to "
                    "finish (for at most %.0f s more)",
                    row.name,
                    cid,
                    _holder(holder),
                    wait - waited,
                )
                noted = True
            time.sleep(min(_WAIT_POLL, max(wait - waited, 0.0)))


def _holder(lease: LeaseRow) -> str:
    """``pid 123 on lab-pc (heartbeat 2 s ago)``: a lease's process, for messages."""
    host = lease.owner.rpartition(":")[0] or lease.host
    return (
        f"pid {lease.pid} on {host} (heartbeat {span(max(time.time() - lease.heartbeat, 0))} ago)"
    )


def _lost(store: Store, cid: int, what: str, lease: CampaignLease, now: LeaseRow | None) -> str:
    """Why a ``suggest``/``tell`` (``what``) that lost campaign ``cid``'s lease wrote nothing.

    Its one write checks the lease's token first in its own transaction (``Store.add_trials``,
    ``finish_trials``, ``finish_campaign``), so a refused write leaves nothing behind.
    """
    holder = f"{now.owner} holds it now" if now is not None else "nobody holds it now"
    dropped = " (its proposals are dropped)" if what == "suggest" else ""
    return (
        f"campaign '{store.campaign(cid).name}' (id {cid}): this {what} lost the campaign's "
        f"lease before writing: its heartbeat did not reach the store for over "
        f"{lease.ttl:.0f} s (the process was paused, or the store busy or unreachable), and "
        f"{holder}; nothing was written{dropped}; run the {what} again"
    )


# ---------------------------------------------------------------------------- tell
def _stored_trial(store: Store, trial_id: int) -> TrialRow:
    """Trial ``trial_id`` of the store, or ``InvalidInput`` saying there is none."""
    if not 0 < trial_id <= MAX_ID:  # beyond the store's ids (32-bit on PostgreSQL): no such trial
        raise InvalidInput(f"no trial with id {trial_id} in store {store.url}")
    with store.session() as s:
        trial = s.get(TrialRow, trial_id)
    if trial is None:
        raise InvalidInput(f"no trial with id {trial_id} in store {store.url}")
    return trial


def _with_runner(store: Store, trial: TrialRow, runners: dict[int, Runner]) -> TrialRow:
    """``trial``, its campaign's runner built into ``runners`` (once per campaign). Only
    results are recorded: not refused for how the planner would go on."""
    from loop.runner import Runner

    if trial.campaign_id not in runners:
        runners[trial.campaign_id] = Runner.from_store(store, trial.campaign_id, proposes=False)
    return trial


def trial_and_runner(store: Store, trial_id: int, runners: dict[int, Runner]) -> TrialRow:
    """The pending trial ``trial_id`` (and its campaign's runner, cached in ``runners``)."""
    trial = _stored_trial(store, trial_id)
    if trial.status != "running":
        from loop.runner import PRIOR_KIND

        # --amend corrects what was told, not what a runner measured: naming it for a
        # measured trial sent the user to a refusal (found in review)
        fix = (
            "`tell --amend REASON` corrects it"
            if is_told(trial)  # the one kind --amend corrects (told_trial)
            else "it is prior data, and its CSV is the record"
            if trial.kind == PRIOR_KIND
            else "a runner measured it, and its measurement stays as recorded"
        )
        raise AlreadyRecorded(
            f"trial {trial_id} (#{trial.number}) is already {trial.status}; its result is "
            f"recorded once ({fix})",
            trial,
            store.trial_outputs(trial_id),
        )
    if _dispatched(store, trial):
        raise InvalidInput(
            f"trial {trial_id} (#{trial.number}) was dispatched to an instrument by a runner "
            f"(it has Bluesky documents); `{cli_command('resume', store.url, trial.campaign_id)}` "
            "reconciles it"
        )
    return _with_runner(store, trial, runners)


def tell(
    store: Store,
    results: Sequence[Result],
    runners: dict[int, Runner],
    *,
    wait: float = LEASE_WAIT,
    by: str | None = None,
    csv: Path | None = None,
) -> list[TrialRow]:
    """Record validated ``results``: all of them, or (on any problem) none.

    The lease of every campaign the results belong to is taken first (waiting while another
    ``suggest``/``tell`` holds one; a campaign a runner drives, or one still held after
    ``wait`` s, refuses the whole batch) and held to the end; trials are re-checked under
    them (another ``tell`` may have recorded one meanwhile). The outcomes, their outputs,
    each campaign's new state and a ``tell`` event saying who recorded them (``by``, else
    user@host) and from where (``csv``: the file, with its sha256) are then written in one
    transaction (``Store.finish_trials``), so a failing store, Ctrl-C, a kill or a power
    loss leave none of them. Results typed in by hand are the lab's record of a
    measurement, and a run's session says who ran its trials; without the event nothing
    said who entered these, or when (``Store.tells``).
    """
    seen: set[int] = set()
    for r in results:
        if r.trial_id in seen:
            raise InvalidInput(
                f"{r.where + ': ' if r.where else ''}trial {r.trial_id} is told twice"
            )
        seen.add(r.trial_id)
    campaign_of = {r.trial_id: _pending(store, r, runners).campaign_id for r in results}
    with ExitStack() as held:
        leases = {
            cid: held.enter_context(
                _lease(store, cid, "tell", wait=wait, ttl=runners[cid].lease.ttl)
            )
            for cid in sorted(set(campaign_of.values()))  # one order: two tells never deadlock
        }
        # re-check under the leases: nothing written yet
        numbers = {r.trial_id: _pending(store, r, runners).number for r in results}
        outcomes = [_outcome(r) for r in results]
        states = {}
        for cid in leases:  # each campaign's state once the batch is written
            history, observations = store.trials_and_observations(cid)
            told = {o.trial_id: o for o in outcomes if campaign_of[o.trial_id] == cid}
            history = [_told(t, told[t.id]) if t.id in told else t for t in history]
            observations.update({i: dict(o.outputs) for i, o in told.items() if o.outputs})
            states[cid] = _state(
                runners[cid], history, observations, running_time(store.campaign(cid))
            )
        from loop.provenance import user_at_host

        who = by or user_at_host()
        events = {
            cid: ("tell", who, _tell_detail(outcomes, cid, campaign_of, numbers, csv))
            for cid in leases
        }
        store.finish_trials(
            outcomes,
            tokens={cid: lease.token for cid, lease in leases.items()},
            status=states,
            events=events,
        )
    done: list[TrialRow] = []
    for cid in leases:
        done.extend(t for t in store.trials(cid) if t.id in seen)
    return done


def amend_keeps(
    store: Store,
    trial: TrialRow,
    outputs: Mapping[str, str],
    actual: Mapping[str, str],
    *,
    measured: bool,
) -> tuple[dict[str, str], dict[str, str]]:
    """The outputs and actual parameters ``tell --amend`` records for ``trial``, as text for
    :func:`build_result`: those given, and the trial's earlier ones not given again.

    An amend names what was wrong (``tell 7 yield=0.46 --amend typo``); the rest of the
    result stands. It replaced the whole result, so a side output and an ``--actual``
    value not repeated were deleted without a word, and the planner learnt the trial at
    its commanded point (found in review). For a trial that was run (not for
    ``--abandon``, which takes neither). ``measured``: it is told as measured (no
    ``--fail``), so its earlier outputs are kept too."""
    old = store.trial_outputs(trial.id or 0) if measured else {}
    kept = {k: repr(v) for k, v in old.items() if k not in outputs and math.isfinite(v)}
    used = trial.readbacks or {}
    kept_actual = {k: _as_text(v) for k, v in used.items() if k not in actual}
    return {**kept, **outputs}, {**kept_actual, **actual}


def _as_text(value: Any) -> str:
    """A stored parameter value as it is typed: a float exactly (``repr``), else as is."""
    return repr(value) if isinstance(value, float) else str(value)


def told_trial(store: Store, trial_id: int, runners: dict[int, Runner]) -> TrialRow:
    """The finished trial ``trial_id`` whose result ``tell`` recorded (the one kind
    ``--amend`` corrects), its campaign's runner cached in ``runners``.

    A trial a runner measured is refused: its Bluesky documents hold the reading, which an
    amended result would contradict; prior data is refused too (its file is the record).
    """
    trial = _stored_trial(store, trial_id)
    if trial.status == "running":
        raise InvalidInput(
            f"trial {trial_id} (#{trial.number}) has no result yet: tell it without --amend"
        )
    if not is_told(trial):
        from loop.runner import PRIOR_KIND

        what = (
            "prior data (its CSV is the record)"
            if trial.kind == PRIOR_KIND
            else ("measured by a runner (its Bluesky documents hold the reading)")
        )
        raise InvalidInput(
            f"trial {trial_id} (#{trial.number}) was {what}; --amend corrects results "
            "recorded with tell"
        )
    return _with_runner(store, trial, runners)


def amend_result(
    store: Store,
    result: Result,
    runners: dict[int, Runner],
    *,
    reason: str,
    wait: float = LEASE_WAIT,
    by: str | None = None,
) -> TrialRow:
    """Replace the recorded result of a told trial with ``result`` (``tell --amend``).

    A result told to the wrong trial (a plate read rotated, a typo) stayed in the campaign
    for good: the planner learnt it at every later suggest, and the only way out was a new
    campaign from prior data (found in review). The campaign's lease is taken as ``tell``
    takes it (so no runner drives it), the trial, its observations and the campaign's
    state are rewritten in one transaction with an ``amend`` event that keeps the old
    result, who changed it, when and why (``Store.amend_trial``). The planner learns the
    new result at the next ``suggest``, which rebuilds it from the store.
    """
    import json

    from loop.provenance import user_at_host

    if not reason.strip():
        raise InvalidInput("--amend needs a reason, e.g. --amend 'plate read rotated 180°'")
    told = told_trial(store, result.trial_id, runners)
    cid = told.campaign_id
    with _lease(store, cid, "tell", wait=wait, ttl=runners[cid].lease.ttl) as lease:
        told = told_trial(store, result.trial_id, runners)  # again, under the lease
        history, observations = store.trials_and_observations(cid)
        outcome = _outcome(result)
        old = {
            "status": told.status,
            "outputs": observations.get(result.trial_id, {}),
            "readbacks": told.readbacks or {},
            "error": told.error,
            "transient": bool(told.transient) if told.status == "failed" else None,
        }
        history = [_told(t, outcome) if t.id == told.id else t for t in history]
        observations[result.trial_id] = dict(outcome.outputs)
        state = _state(runners[cid], history, observations, running_time(store.campaign(cid)))
        new = {
            "status": outcome.status,
            "outputs": outcome.outputs,
            "readbacks": outcome.readbacks,
            "error": outcome.error,
            "transient": outcome.transient if outcome.status == "failed" else None,
        }
        detail = {"trial": told.number, "reason": reason.strip(), "old": old, "new": new}
        text = json.dumps(detail, separators=(",", ":"), default=str, allow_nan=False)
        store.amend_trial(
            outcome, token=lease.token, status=state, event=("amend", by or user_at_host(), text)
        )
    return told_trial(store, result.trial_id, runners)


def _tell_detail(
    outcomes: Sequence[TrialOutcome],
    cid: int,
    campaign_of: Mapping[int, int],
    numbers: Mapping[int, int],
    csv: Path | None,
) -> str:
    """A ``tell`` event's JSON detail for campaign ``cid`` (``Store.tells``)."""
    import json

    from loop.provenance import command_line
    from simulators._text import file_sha256

    mine = [o for o in outcomes if campaign_of[o.trial_id] == cid]
    detail: dict[str, Any] = {"trials": sorted(numbers[o.trial_id] for o in mine)}
    for status in ("completed", "failed", "abandoned"):
        detail[status] = sum(o.status == status for o in mine)
    detail["argv"] = command_line()
    csv_file = None if csv is None else {"file": str(csv.resolve()), "sha256": file_sha256(csv)}
    detail["csv"] = csv_file
    return json.dumps(detail, separators=(",", ":"))


def _pending(store: Store, result: Result, runners: dict[int, Runner]) -> TrialRow:
    """:func:`trial_and_runner` of a told result, a refusal naming its CSV row if it has one."""
    try:
        return trial_and_runner(store, result.trial_id, runners)
    except InvalidInput as exc:
        if not result.where:
            raise
        raise InvalidInput(f"{result.where}: {exc}") from None


def _outcome(result: Result) -> TrialOutcome:
    """What the store records of a told result (an operator's reason prefixed, as stored)."""
    status: TrialStatus = "completed"
    error = None
    if result.abandoned is not None:
        status, error = "abandoned", f"{WITHDRAWN}{result.abandoned}"
    elif result.failed is not None:
        status, error = "failed", f"{OPERATOR_FAILED}{result.failed}"
    return TrialOutcome(
        result.trial_id,
        status,
        result.outputs,
        result.actual,
        error,
        transient=result.transient and status == "failed",
    )


def _told(trial: TrialRow, outcome: TrialOutcome) -> TrialRow:
    """``trial`` as the store will hold it once ``outcome`` is written (for :func:`_state`)."""
    return trial.model_copy(
        update={"status": outcome.status, "error": outcome.error, "readbacks": outcome.readbacks}
    )


# ---------------------------------------------------------------------------- prompt
_HELP = "a number; `fail REASON` (or `skip`) records a failed trial; `stop` stops the campaign"


class TerminalOperator:
    """The ``instrument: manual`` prompt: show the proposal, read each output, validate.

    At each output's prompt the operator types a number, ``fail REASON``/``skip`` (the
    trial is recorded as failed, with the values typed so far), or ``stop`` (the campaign
    stops, resumable; the trial is
    abandoned, as nothing was measured). Then an optional line of parameters actually used
    (``name=value ...``; Enter if as commanded), checked against the whole space. End of
    input, like ``stop``, stops the campaign. Once every output is entered, a ``stop``, the
    end of input or Ctrl-C at that last prompt keep the values (with the parameters as set)
    and then stop: a measurement typed in is never thrown away.
    """

    def __init__(self, runner: Runner, console: Console) -> None:
        self.runner = runner
        self.console = console
        from loop.report import units_of

        self.outputs = outputs_of(runner)
        self.needed = required_outputs(runner.campaign)
        self.units = units_of(runner.campaign)
        self.specs = specs(runner.campaign.parameters)

    def _read(self, prompt: str) -> str:
        from loop.runner import OperatorStop
        from loop.streams import ask, write_plain

        # The prompt is written directly, not through rich (loop.streams.ask), so it is
        # made visible here (an output named with an ESC sequence would drive the terminal).
        # No stdin, or a terminal gone, is the end of input (it was "the runner failed").
        try:
            return ask(self.console, visible(prompt))
        except EOFError:
            write_plain(self.console, "\n")
            raise OperatorStop("the operator's input ended") from None
        except BaseException:
            write_plain(self.console, "\n")
            raise

    def measure(self, number: int, parameters: Point) -> ManualEntry:
        from loop.runner import ManualEntry, OperatorInterrupted, OperatorStop

        # to set by hand: as `suggest` shows them, to reproduce the stored point
        shown = ", ".join(
            f"{k} = {parameter(v, self.specs.get(k), setpoint=True)}"
            + (f" {self.units[k]}" if self.units.get(k) else "")
            for k, v in parameters.items()
        )
        self.console.print(f"\n[bold]trial {number}[/]: set {escape(shown)}")
        self.console.print(f"[dim]enter {_HELP}[/]", highlight=False)
        outputs: dict[str, float] = {}
        for name in self.outputs:
            side = name not in self.needed  # no goal reads it: Enter leaves it out
            while True:
                text = self._read(f"  {name} (Enter: none) = " if side else f"  {name} = ")
                text = text.strip()
                if side and not text:
                    break
                word, _, rest = text.partition(" ")
                if word == "stop":
                    raise OperatorStop("stopped by the operator")
                if word in ("fail", "skip"):  # the values typed so far are kept with it
                    return ManualEntry(
                        failed=rest.strip() or "skipped by the operator", outputs=outputs
                    )
                try:
                    outputs[name] = parse_number(name, text, side=side)
                    break
                except InvalidInput as exc:
                    self.console.print(f"  [red]{escape(_at_prompt(exc))}[/]; enter {_HELP}")
        while True:
            try:
                text = self._read(
                    "  parameters actually used (Enter if as set, else name=value ...; "
                    "`fail REASON`, `stop`): "
                ).strip()
            except (OperatorStop, OperatorInterrupted) as exc:
                return self._keep(outputs, str(exc) or "stopped by the operator")
            word, _, rest = text.partition(" ")
            if word == "stop":
                return self._keep(outputs, "stopped by the operator")
            if word in ("fail", "skip"):  # e.g. the reactor ran outside the search space
                return ManualEntry(
                    failed=rest.strip() or "skipped by the operator", outputs=outputs
                )
            try:
                pairs = parse_typed_assignments(text, "parameter")
                actual = actual_parameters(self.runner, parameters, pairs)
                return ManualEntry(outputs=outputs, actual=actual)
            except InvalidInput as exc:
                self.console.print(
                    f"  [red]{escape(_at_prompt(exc))}[/] (a value with spaces may be quoted: "
                    'name="a b")'
                )

    def _keep(self, outputs: dict[str, float], reason: str) -> ManualEntry:
        """Every output was entered: record them with the parameters as set, then stop."""
        from loop.runner import ManualEntry

        given = ", ".join(f"{k} = {number(v)}" for k, v in outputs.items())
        self.console.print(
            f"  [yellow]{escape(given)} kept, with the parameters as set; stopping[/]",
            highlight=False,
        )
        return ManualEntry(outputs=outputs, stop=reason)


def _at_prompt(exc: InvalidInput) -> str:
    """A ``tell`` message as the prompt's operator needs it: there the flags ``--actual`` and
    ``--fail REASON`` are typed as ``name=value`` and ``fail REASON``."""
    return str(exc).replace("--actual ", "").replace("--fail REASON", "`fail REASON`")
