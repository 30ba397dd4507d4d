"""A human in the loop: ask/tell from the command line, and the operator's prompt.

Ask/tell (``closedloop suggest`` / ``closedloop tell``) is for labs where a trial takes hours
or days and people carry it out. ``suggest`` rebuilds the planner from the store (every
finished trial, in order, as ``resume`` does) and gives it the trials still pending, so it
never proposes them again; the proposals are committed as trials in state ``running``.
``tell`` records one trial's outputs (and, optionally, the parameters actually used, stored
as its readbacks and learned from instead of the commanded ones). Every command takes the
campaign's lease for the length of its transaction, so it never races a runner or another
``suggest``/``tell``. Between commands the campaign is ``stopped`` with the reason saying how
many trials are pending; when the budget is spent it becomes ``completed`` (or ``failed``).

Everything told is validated before anything is written (a CSV is all or nothing):
unknown trial, a trial already finished or being measured by a runner, non-numeric or
non-finite values, unknown or missing outputs, actual parameters outside the space. Such
problems raise :class:`InvalidInput`, which the CLI turns into exit code 2.

:class:`TerminalOperator` is the prompt ``closedloop run`` uses for ``instrument: manual``.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from loop.config import LoadedCampaign, load_campaign
from loop.errors import ClosedLoopError
from loop.lock import CampaignLease
from loop.runner import ManualEntry, OperatorStop, Runner
from loop.store import Store, TrialRow
from planners import Point

__all__ = [
    "InvalidInput",
    "Proposal",
    "Result",
    "TerminalOperator",
    "open_campaign",
    "parse_assignments",
    "read_results_csv",
    "suggest",
    "tell",
]


class InvalidInput(ClosedLoopError):
    """Something told (or asked) is wrong; nothing was written. Exit code 2."""


@dataclass(frozen=True)
class Proposal:
    """A suggested trial, recorded as pending (``running``) in the store."""

    trial_id: int
    number: int
    kind: str
    parameters: Point


@dataclass
class Result:
    """What is told about one trial: outputs, actual parameters, or a failure reason."""

    trial_id: int
    outputs: dict[str, float] = field(default_factory=dict)
    actual: dict[str, Any] = field(default_factory=dict)
    failed: str | None = None
    where: str = ""  # e.g. "results.csv:3", for messages


# ---------------------------------------------------------------------------- values
def parse_number(name: str, text: str) -> float:
    """A finite number, or ``InvalidInput`` naming the output."""
    try:
        value = float(text.strip())
    except ValueError:
        raise InvalidInput(f"{name}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise InvalidInput(
            f"{name}={text!r} is not a finite number; record a failed measurement with "
            "--fail REASON instead"
        )
    return value


def parse_parameter(runner: Runner, name: str, text: str) -> Any:
    """A parameter value as used (``--actual name=value``), checked against the space."""
    by_name = {p.name: p for p in runner.space.parameters}
    if name not in by_name:
        raise InvalidInput(
            f"--actual {name}: no such parameter; parameters are: {', '.join(by_name)}"
        )
    p = by_name[name]
    raw = text.strip()
    if getattr(p, "type", None) == "fixed":
        # A fixed parameter has one value and no bounds: saying it was used as set is
        # harmless; any other value means the trial was not the campaign's experiment.
        return _fixed_value(name, p.value, raw)  # type: ignore[union-attr]
    values = getattr(p, "values", None)
    if values is not None:
        for v in values:
            if str(v) == raw:
                return v
        raise InvalidInput(
            f"--actual {name}={raw!r} is not one of {', '.join(str(v) for v in values)}"
        )
    try:
        number = float(raw)
    except ValueError:
        raise InvalidInput(f"--actual {name}={raw!r} is not a number") from None
    lo, hi = p.bounds  # type: ignore[union-attr]
    if not (math.isfinite(number) and lo <= number <= hi):
        raise InvalidInput(
            f"--actual {name}={raw} lies outside the search space [{lo}, {hi}]; a result "
            "outside it cannot be learned from (record it as failed with --fail REASON)"
        )
    if type(p).__name__ == "IntParameter":
        if number != int(number):
            raise InvalidInput(f"--actual {name}={raw} is not an integer")
        return int(number)
    return number


def _fixed_value(name: str, value: Any, raw: str) -> Any:
    """``raw`` if it names the fixed ``value`` (``1`` and ``1.0`` alike), else refused."""
    if str(value) == raw or (isinstance(value, bool) and raw.lower() == str(value).lower()):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            if float(raw) == float(value):
                return value
        except ValueError:
            pass
    raise InvalidInput(
        f"--actual {name}={raw!r}: {name} is a fixed parameter (type: fixed, value: "
        f"{value}); every trial uses {value}, so it cannot be given another value (leave it "
        "out, or record the trial as failed with --fail REASON if it was run otherwise)"
    )


def parse_assignments(items: Sequence[str], what: str) -> dict[str, str]:
    """``["a=1", "b=2"]`` -> ``{"a": "1", "b": "2"}``, refusing malformed or repeated keys."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not value.strip():
            raise InvalidInput(f"{what} {item!r} must look like name=value")
        if key in out:
            raise InvalidInput(f"{what} {key!r} is given twice")
        out[key] = value
    return out


def _outputs(runner: Runner) -> tuple[str, ...]:
    from instruments import describe_instrument

    c = runner.campaign
    return tuple(describe_instrument(c.instrument, c.parameters, base_dir=runner.loaded.base_dir))


def build_result(
    runner: Runner,
    trial_id: int,
    outputs: Mapping[str, str],
    actual: Mapping[str, str],
    failed: str | None = None,
    where: str = "",
) -> Result:
    """Validate text values against the campaign: every output, known names, the space."""
    known = _outputs(runner)
    prefix = f"{where}: " if where else ""
    unknown = [k for k in outputs if k not in known]
    if unknown:
        raise InvalidInput(
            f"{prefix}unknown output(s) {', '.join(unknown)}; the campaign's outputs are: "
            f"{', '.join(known)}"
        )
    try:
        parsed_actual = {k: parse_parameter(runner, k, v) for k, v in actual.items()}
        if failed is not None:
            if not failed.strip():
                raise InvalidInput("--fail needs a reason, e.g. --fail 'sample spilled'")
            return Result(trial_id, {}, parsed_actual, failed.strip(), where)
        missing = [k for k in known if k not in outputs]
        if missing:
            expected = " ".join(k + "=VALUE" for k in known)
            raise InvalidInput(
                f"missing output(s) {', '.join(missing)} (give {expected}, or --fail REASON "
                "if the trial failed)"
            )
        parsed = {k: parse_number(k, v) for k, v in outputs.items()}
    except InvalidInput as exc:
        raise InvalidInput(f"{prefix}{exc}") from None
    return Result(trial_id, parsed, parsed_actual, None, where)


def read_results_csv(runner_for: Any, path: Path) -> list[Result]:
    """Rows of ``trial_id, <outputs>..., [actual.<param>...], [fail]`` as results.

    ``runner_for(trial_id)`` returns the runner of that trial's campaign (for validation).
    An empty ``fail`` cell means the trial succeeded; empty ``actual.*`` cells are ignored.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raw = bytes(exc.object)  # the bytes decoded (after a BOM): positions are in them
        line = raw[: exc.start].count(b"\n") + 1
        raise InvalidInput(
            f"{path}:{line}: not UTF-8 text (byte {raw[exc.start]:#04x}); save the CSV as "
            "UTF-8 (in a spreadsheet: CSV UTF-8) and tell it again"
        ) from None
    # newline="": the csv module's own line handling, so a quoted cell may hold a newline
    reader = csv.reader(io.StringIO(text, newline=""))

    def next_row() -> list[str] | None:
        try:
            return next(reader, None)
        except csv.Error as exc:  # a NUL byte, a cell beyond the csv module's size limit
            raise InvalidInput(f"{path}:{reader.line_num}: not a readable CSV row: {exc}") from None

    header = next_row()
    if not header or "trial_id" not in [h.strip() for h in header]:
        raise InvalidInput(f"{path}: the first row must name the columns, starting with trial_id")
    columns = [h.strip() for h in header]
    twice = sorted({c for c in columns if c and columns.count(c) > 1})
    if twice:
        raise InvalidInput(
            f"{path}:1: column(s) {', '.join(repr(c) for c in twice)} given twice; keep one "
            "column per name (which value was meant cannot be guessed)"
        )
    results: list[Result] = []
    while True:
        start = reader.line_num + 1
        cells = next_row()
        if cells is None:
            break
        where = f"{path.name}:{start}"
        if not any(c.strip() for c in cells):
            continue  # a blank line
        if len(cells) > len(columns):
            extra = [c for c in cells[len(columns) :] if c.strip()]
            if extra:
                raise InvalidInput(
                    f"{where}: {len(cells)} cells but the first row names {len(columns)} "
                    f"columns (extra: {', '.join(repr(c) for c in extra)}); add the column's "
                    "name to the first row, or remove the extra cells"
                )
        row = dict(zip(columns, cells, strict=False))
        raw_id = (row.get("trial_id") or "").strip()
        if not (raw_id.isascii() and raw_id.isdigit()):
            raise InvalidInput(f"{where}: trial_id {raw_id!r} is not a trial id")
        trial_id = int(raw_id)
        outputs: dict[str, str] = {}
        actual: dict[str, str] = {}
        failed = (row.get("fail") or "").strip() or None
        for key, value in row.items():
            if not value.strip() or key in ("trial_id", "fail"):
                continue
            if not key:
                raise InvalidInput(
                    f"{where}: the value {value.strip()!r} is in a column without a name; "
                    "name it in the first row (an output, actual.<param> or fail)"
                )
            if key.startswith("actual."):
                actual[key.removeprefix("actual.")] = value
            else:
                outputs[key] = value
        results.append(build_result(runner_for(trial_id), trial_id, outputs, actual, failed, where))
    if not results:
        raise InvalidInput(f"{path}: no rows")
    return results


# ---------------------------------------------------------------------------- ask
def open_campaign(store: Store, file: Path | None, campaign: str | None) -> tuple[Runner, bool]:
    """The campaign to ask about: created from ``file`` on first use, else from the store.

    With ``file``: an unfinished campaign of the file's name and identical text is
    continued; one of the same name with another text is refused (name the new campaign
    differently, or continue the stored one with ``-c``). Returns the runner and whether
    the campaign was created now.
    """
    if file is None:
        row = store.campaign(campaign)
        return Runner.from_store(store, row.id), False
    loaded: LoadedCampaign = load_campaign(file)
    for row in reversed(store.campaigns()):
        if row.name != loaded.campaign.name or row.status not in ("running", "paused", "stopped"):
            continue
        if row.config_text != loaded.text:
            raise InvalidInput(
                f"campaign '{row.name}' (id {row.id}) in this store was created from a "
                f"different file; continue it with `closedloop suggest -c {row.id}`, or give "
                "the new campaign another name"
            )
        return Runner.from_store(store, row.id), False
    runner = Runner(loaded, store)
    runner.create()  # as `run` does: the campaign row, then its prior data
    runner.lease.release()
    return runner, True


def suggest(runner: Runner, n: int) -> list[Proposal]:
    """Propose ``n`` trials and record them as pending; the planner avoids pending ones."""
    store, cid = runner.store, runner._cid()
    row = store.campaign(cid)
    if row.status in ("completed", "failed"):
        raise InvalidInput(
            f"campaign '{row.name}' (id {cid}) is {row.status}: {row.stop_reason}; nothing "
            "more to suggest (extend it with `closedloop resume --max-trials N` or start a "
            "new one)"
        )
    with CampaignLease(store) as lease:
        lease.acquire(cid)
        history = store.trials(cid)
        spent = runner.stop_reason(history, row.elapsed_seconds)
        if spent is not None:
            store.finish_campaign(cid, *spent, token=lease.token)
            raise InvalidInput(f"campaign '{row.name}' (id {cid}) is done: {spent[1]}")
        in_flight = [t.number for t in history if t.status == "running" and _dispatched(store, t)]
        if in_flight:
            raise InvalidInput(
                f"campaign '{row.name}' (id {cid}) has trials a runner left in flight "
                f"({', '.join(f'#{n}' for n in in_flight)}); `closedloop resume` reconciles them"
            )
        planner = runner.rebuild_planner(history, store.observations(cid))
        pending = [dict(t.parameters) for t in history if t.status == "running"]
        t0 = time.perf_counter()
        points = planner.suggest(n, pending=pending)
        seconds = (time.perf_counter() - t0) / max(n, 1)
        proposals = []
        for point, kind in zip(points, planner.last_kinds, strict=True):
            trial = store.add_trial(cid, point, kind, suggest_seconds=seconds, token=lease.token)
            proposals.append(Proposal(trial.id or 0, trial.number, kind, dict(trial.parameters)))
        _mark(runner, lease.token)
    return proposals


def _dispatched(store: Store, trial: TrialRow) -> bool:
    """Whether a runner sent the trial to an instrument (its run's documents are stored)."""
    return bool(trial.id is not None and store.documents(trial.id))


def _mark(runner: Runner, token: str) -> None:
    """The campaign's state between ask/tell commands: budget spent, or waiting."""
    store, cid = runner.store, runner._cid()
    history = store.trials(cid)
    spent = runner.stop_reason(history, store.campaign(cid).elapsed_seconds)
    if spent is not None:
        store.finish_campaign(cid, *spent, token=token)
        return
    pending = sum(t.status == "running" for t in history)
    store.finish_campaign(
        cid,
        "stopped",
        f"ask/tell: {pending} trial(s) pending; `closedloop tell` records results, "
        "`closedloop suggest` proposes more",
        token=token,
    )


# ---------------------------------------------------------------------------- tell
def trial_and_runner(store: Store, trial_id: int, runners: dict[int, Runner]) -> TrialRow:
    """The pending trial ``trial_id`` (and its campaign's runner, cached in ``runners``)."""
    if not 0 <= trial_id < 2**63:  # beyond SQLite's integers: no such trial, not a crash
        raise InvalidInput(f"no trial with id {trial_id} in store {store.url}")
    with store.session() as s:
        trial = s.get(TrialRow, trial_id)
    if trial is None:
        raise InvalidInput(f"no trial with id {trial_id} in store {store.url}")
    if trial.status != "running":
        raise InvalidInput(
            f"trial {trial_id} (#{trial.number}) is already {trial.status}; its result is "
            "recorded once"
        )
    if _dispatched(store, trial):
        raise InvalidInput(
            f"trial {trial_id} (#{trial.number}) was dispatched to an instrument by a runner "
            "(it has Bluesky documents); `closedloop resume` reconciles it"
        )
    if trial.campaign_id not in runners:
        runners[trial.campaign_id] = Runner.from_store(store, trial.campaign_id)
    return trial


def tell(store: Store, results: Sequence[Result], runners: dict[int, Runner]) -> list[TrialRow]:
    """Record validated ``results``: all of them, or (on any problem) none.

    Each campaign's lease is held while its trials are written; trials are re-checked
    under it (another ``tell`` may have recorded one meanwhile).
    """
    seen: set[int] = set()
    for r in results:
        if r.trial_id in seen:
            raise InvalidInput(
                f"{r.where + ': ' if r.where else ''}trial {r.trial_id} is told twice"
            )
        seen.add(r.trial_id)
    by_campaign: dict[int, list[Result]] = {}
    for r in results:
        trial = trial_and_runner(store, r.trial_id, runners)
        by_campaign.setdefault(trial.campaign_id, []).append(r)
    done: list[TrialRow] = []
    for cid, items in by_campaign.items():
        runner = runners[cid]
        with CampaignLease(store) as lease:
            lease.acquire(cid)
            for r in items:  # re-check under the lease: nothing written yet
                trial_and_runner(store, r.trial_id, runners)
            for r in items:
                store.finish_trial(
                    r.trial_id,
                    status="failed" if r.failed is not None else "completed",
                    outputs=r.outputs,
                    readbacks=r.actual,
                    run_uid=None,
                    error=f"marked failed by the operator: {r.failed}" if r.failed else None,
                    token=lease.token,
                )
            _mark(runner, lease.token)
        done.extend(t for t in store.trials(cid) if t.id in {r.trial_id for r in items})
    return done


# ---------------------------------------------------------------------------- prompt
_HELP = "a number; `fail REASON` (or `skip`) records a failed trial; `stop` stops the campaign"


class TerminalOperator:
    """The ``instrument: manual`` prompt: show the proposal, read each output, validate.

    At each output's prompt the operator types a number, ``fail REASON``/``skip`` (the
    trial is recorded as failed), or ``stop`` (the campaign stops, resumable). Then an
    optional line of parameters actually used (``name=value ...``; Enter if as commanded).
    End of input stops the campaign like ``stop``.
    """

    def __init__(self, runner: Runner, console: Console) -> None:
        self.runner = runner
        self.console = console
        self.outputs = _outputs(runner)
        self.units = {p.name: p.unit for p in runner.campaign.parameters}

    def _read(self, prompt: str) -> str:
        # The prompt is written directly, not through rich: a prompt printed by rich and
        # then interrupted (Ctrl-C) would be printed again with rich's next line.
        out = self.console.file
        out.write(prompt)
        out.flush()
        try:
            return input()
        except EOFError:
            out.write("\n")
            raise OperatorStop("the operator's input ended") from None
        except BaseException:
            out.write("\n")
            raise

    def measure(self, number: int, parameters: Point) -> ManualEntry:
        shown = ", ".join(
            f"{k} = {_show(v)}" + (f" {self.units[k]}" if self.units.get(k) else "")
            for k, v in parameters.items()
        )
        self.console.print(f"\n[bold]trial {number}[/]: set {escape(shown)}")
        self.console.print(f"[dim]enter {_HELP}[/]", highlight=False)
        outputs: dict[str, float] = {}
        for name in self.outputs:
            while True:
                text = self._read(f"  {name} = ").strip()
                word, _, rest = text.partition(" ")
                if word == "stop":
                    raise OperatorStop("stopped by the operator")
                if word in ("fail", "skip"):
                    return ManualEntry(failed=rest.strip() or "skipped by the operator")
                try:
                    outputs[name] = parse_number(name, text)
                    break
                except InvalidInput as exc:
                    self.console.print(f"  [red]{escape(_at_prompt(exc))}[/]; enter {_HELP}")
        while True:
            text = self._read(
                "  parameters actually used (Enter if as set, else name=value ...; "
                "`fail REASON`, `stop`): "
            ).strip()
            word, _, rest = text.partition(" ")
            if word == "stop":
                raise OperatorStop("stopped by the operator")
            if word in ("fail", "skip"):  # e.g. the reactor ran outside the search space
                return ManualEntry(failed=rest.strip() or "skipped by the operator")
            try:
                pairs = parse_assignments(text.split(), "parameter")
                actual = {k: parse_parameter(self.runner, k, v) for k, v in pairs.items()}
                return ManualEntry(outputs=outputs, actual=actual)
            except InvalidInput as exc:
                self.console.print(f"  [red]{escape(_at_prompt(exc))}[/]")


def _at_prompt(exc: InvalidInput) -> str:
    """A ``tell`` message as the prompt's operator needs it: there the flags ``--actual`` and
    ``--fail REASON`` are typed as ``name=value`` and ``fail REASON``."""
    return str(exc).replace("--actual ", "").replace("--fail REASON", "`fail REASON`")


def _show(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
