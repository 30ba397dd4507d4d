"""The ``closedloop`` command line.

Campaigns: ``validate``, ``run``, ``resume``, ``status``, ``export``, ``report``; people in
the loop: ``suggest`` and ``tell`` (ask/tell); instruments: ``instruments check``, ``plan``
(the messages a trial would send) and ``release`` (an operator's release of an interlock
pause), in loop/cli_instruments.py; built-in problems: ``simulators`` and ``datasets``
(loop/cli_datasets.py); the example campaigns: ``examples`` (loop/cli_examples.py).

Errors a user can cause are printed as one message (file, line, fix) with exit code 2 for
bad input (a request refused as given, such as resuming a finished campaign without a larger
budget), :data:`EXIT_BUSY` (75) for a campaign another runner or ``suggest``/``tell`` holds
(try again later) and 1 for a failed run; never a traceback unless ``--debug``. Messages
that explain a non-zero exit go to stderr, results to stdout.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.cells import cell_len
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from instruments import InstrumentConfigError, InstrumentError
from loop.errors import (
    STORE_ENV,
    CampaignConfigError,
    ClosedLoopError,
    StoreError,
    cli_command,
    first_line,
    resume_command,
)
from loop.fmt import (
    DIGITS,
    Output,
    WholeTable,
    counted,
    digits_apart,
    number,
    one_line,
    parameter,
    say_when_stdout_closes,
    span,
    specs,
    visible,
)
from loop.store import (
    ACTIVE,
    DEFAULT_STORE,
    UNFINISHED,
    CampaignLocked,
    LeaseLost,
    StoreGone,
    as_utc,
)

if TYPE_CHECKING:
    from loop.runner import CampaignSummary, ResumeState, Runner, TrialReport
    from loop.store import CampaignRow, Store
    from planners import OutcomeConstraint

#: Below this terminal width help is click's plain text: rich's option tables cut option
#: names and defaults there (``--max-t…``, ``sqlite:/…``; found in review), and plain text
#: wraps them whole.
_NARROW_HELP = 60

app = typer.Typer(
    name="closedloop",
    help="Closed-loop experimentation: BoTorch proposes, Bluesky measures, SQLite remembers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None if shutil.get_terminal_size().columns < _NARROW_HELP else "rich",
)
console = Output(soft_wrap=True)
err_console = Output(stderr=True, soft_wrap=True)

#: The exit code of a command refused because another process holds the campaign (a runner,
#: or a ``suggest``/``tell`` that outlasted the wait): EX_TEMPFAIL of sysexits.h, "try again
#: later", which a scheduler can tell from 1 (a failed campaign, a bug: alert a human)
#: without reading stderr.
EXIT_BUSY = 75


def _store_url(value: str) -> str:
    """``--store`` (or ``$CLOSEDLOOP_STORE``): a path given without its scheme
    (``runs/x.db``) is refused with the URL of that very file, ``sqlite:///runs/x.db``; the
    store's own message suggested ``sqlite:///closedloop.db``, another file (found in
    review). An absolute path gives ``sqlite:////data/x.db``, as the README writes it. A
    URL with a scheme is the store's to judge."""
    if "://" in value:
        return value
    scheme = re.match(r"(?i)sqlite:/*", value)
    if scheme is not None:  # `sqlite:/x.db`, `sqlite:x.db`: the slashes are wrong
        path = value[scheme.end() :]
        raise typer.BadParameter(
            f"{value!r} is not a database URL (a SQLite URL has three slashes); write "
            f"sqlite:///{path} for the file {path} here"
            + (f", or sqlite:////{path} for /{path}" if value[scheme.end() - 1] == "/" else "")
        )
    raise typer.BadParameter(
        f"{value!r} is not a database URL; for a SQLite file write sqlite:///{value}"
    )


StoreOpt = Annotated[
    str,
    typer.Option(
        "--store",
        envvar=STORE_ENV,
        help="SQLAlchemy URL of the store, e.g. sqlite:///runs/lab.db.",
        callback=_store_url,
    ),
]
CampaignOpt = Annotated[
    str | None,
    typer.Option("--campaign", "-c", help="Campaign name or id in the store (default: latest)."),
]
_state: dict[str, bool] = {"debug": False, "verbose": False, "stop_reported": False}

# The campaign model's limits (loop/config.py: Campaign.seed, Budget.max_trials and
# max_failures), repeated here so a value out of range is a usage error naming the option
# (exit 2) and not a validation traceback, or a seed numpy refuses after the campaign was
# created. loop.config is not imported for them: `status` and `export` must stay light.
MAX_SEED = 2**32 - 1
MAX_BUDGET_COUNT = 1_000_000
SeedOpt = Annotated[
    int | None, typer.Option(min=0, max=MAX_SEED, help="Override the file's seed (0 to 2**32-1).")
]
# A new limit for a stored campaign (`resume`, `suggest`): counted over all its sessions.
MaxTrialsOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=MAX_BUDGET_COUNT,
        help="New budget.max_trials (completed trials over all sessions).",
    ),
]
MaxFailuresOpt = Annotated[
    int | None,
    typer.Option(min=1, max=MAX_BUDGET_COUNT, help="New budget.max_failures."),
]
MaxDurationOpt = Annotated[
    str | None,
    typer.Option(
        help="New budget.max_duration (running time over all sessions): 2h, 30m, 1h30m or seconds."
    ),
]


def _print_version(value: bool) -> None:
    """``closedloop --version``: what a bug report, a store refused as "written by a newer
    closedloop" and the start documents' ``versions`` name."""
    if value:
        from instruments._versions import closedloop_version

        console.print(f"closedloop {closedloop_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log engine details.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug
    _state["verbose"] = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[_log_handler()],
    )
    if not verbose:
        # bluesky logs a whole traceback for every failed run; the loop reports the failure
        # on the trial's line and stores the error, so keep the terminal readable.
        for name in ("bluesky", "ophyd", "caproto"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _stderr_is_terminal() -> bool:
    """Whether stderr is a terminal (``FORCE_COLOR`` does not make a log file one: rich's
    ``Console.is_terminal`` says it does)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return False


def _log_handler() -> logging.Handler:
    """Where log records go: rich's handler when stderr is a terminal (coloured, the time
    once per second); otherwise (a log file, a pipe, journald) :class:`_LogLines`.

    rich's handler lays a record out as a table as wide as the console, padded to its
    width: where there is no terminal, a log file got a warning folded over many padded
    lines (at ``COLUMNS=40`` a path cut mid-word) under a ``12/05/26`` date read two ways
    (found in review). ``FORCE_COLOR`` does not make a file a terminal here: a log line
    stays one plain line.
    """
    if _stderr_is_terminal():
        return RichHandler(console=err_console, show_path=False)
    handler = _LogLines()
    # no logger name: as on a terminal, a record says what happened, not which module of
    # closedloop's (``simulators._devices``) noticed it
    handler.setFormatter(_IsoFormatter("%(asctime)s %(levelname)s %(message)s"))
    return handler


class _LogLines(logging.StreamHandler):
    """One line per record on ``sys.stderr`` as it is when the record is written (as
    ``logging.lastResort`` does), not the stream of when the handler was made: a test's
    captured stderr is replaced per command."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def format(self, record: logging.LogRecord) -> str:
        """The record's line, its control characters made visible as on a terminal
        (``loop.fmt.visible``): a device's or function's message is data, and a log file
        is read with ``cat`` and ``tail -f`` too."""
        return visible(super().format(record))

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always sys.stderr


class _IsoFormatter(logging.Formatter):
    """``%(asctime)s`` as ISO 8601 local time with its UTC offset and milliseconds
    (``2026-12-05T08:09:01.123+01:00``): unambiguous, and sorted as text."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        when = datetime.fromtimestamp(record.created).astimezone()
        return when.isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------- commands
@app.command()
def validate(file: Annotated[Path, typer.Argument(help="Campaign YAML file.")]) -> None:
    """Check a campaign file without running a trial or connecting to anything.

    A `function:` instrument's file is imported to find the function and how it is called
    (its top-level code runs; the function itself is not called).
    """
    from loop.config import load_campaign
    from loop.prior import load_prior_data

    loaded = load_campaign(file)
    c = loaded.campaign
    prior = load_prior_data(loaded)  # the CSV is checked too: a bad row fails here
    goals = ", ".join(f"{o.name} ({o.goal})" for o in c.objectives)
    said = (
        f"{file}: campaign '{c.name}', {counted(len(c.parameters), 'parameter')}"
        + (f", {counted(len(c.constraints), 'constraint')}" if c.constraints else "")
        + f", {'objectives' if len(c.objectives) > 1 else 'objective'} {goals}"
        + (
            f", outcome constraints {', '.join(c.outcome_constraints)}"
            if c.outcome_constraints
            else ""
        )
        + (f", {counted(len(prior), 'prior-data row')}{prior.skipped_note()}" if prior else "")
        + f", planner {c.planner.label}, instrument "
        f"{_instrument_label(c)}"
    )
    # the file's path and text are the user's: `[x]` in a path is text, not markup
    console.print(f"[green]ok[/] {escape(said)}", highlight=False)


@app.command()
def run(
    file: Annotated[Path, typer.Argument(help="Campaign YAML file.")],
    store: StoreOpt = DEFAULT_STORE,
    seed: SeedOpt = None,
    max_trials: Annotated[
        int | None,
        typer.Option(min=1, max=MAX_BUDGET_COUNT, help="Override budget.max_trials."),
    ] = None,
    max_failures: Annotated[
        int | None,
        typer.Option(min=1, max=MAX_BUDGET_COUNT, help="Override budget.max_failures."),
    ] = None,
    max_duration: Annotated[
        str | None,
        typer.Option(help="Override budget.max_duration: 2h, 30m, 1h30m or seconds."),
    ] = None,
    prior: Annotated[
        list[Path] | None,
        typer.Option(
            "--prior",
            help="CSV of earlier measurements (columns: parameters and outputs), used with "
            "the file's prior_data; repeatable. Stored as trials of kind prior.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")] = False,
) -> None:
    """Run a campaign until its budget is spent; every trial is stored as it happens."""
    from functools import partial

    from loop.config import load_campaign, parse_duration
    from loop.prior import load_prior_data, prior_files

    try:
        duration = None if max_duration is None else parse_duration(max_duration)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--max-duration") from None
    loaded = load_campaign(file)
    c = loaded.campaign
    # Every prior row is checked before the store is created: a bad CSV runs nothing.
    rows = load_prior_data(loaded, prior or [])
    from loop.runner import Runner  # after the checks: a bad file fails before bluesky loads

    with _opened_store(store, create=True) as db:
        store = db.url  # what messages show: a password in the URL as ***
        _refuse_if_running(db, c.name, store)
        listener = _ProgressListener.of(c, max_trials or c.budget.max_trials, quiet)
        runner = Runner(
            loaded,
            db,
            seed=seed,
            max_trials=max_trials,
            max_failures=max_failures,
            max_duration=duration,
            listener=listener,
        )
        _attach_operator(runner)
        console.print(
            f"[bold]{escape(c.name)}[/]: "
            + escape(
                f"{c.planner.label} planner, instrument {_instrument_label(c)}, seed "
                f"{runner.seed}, store {store}"
            )
        )
        if rows:
            files = ", ".join(str(f) for f in prior_files(loaded, prior or []))
            console.print(
                f"prior data: {len(rows)} rows from {files}{rows.skipped_note()}",
                highlight=False,
                markup=False,
            )
        summary = _drive(runner, listener, store, partial(runner.run, prior=rows))
        _print_summary(summary, c, db)


@app.command()
def resume(
    store: StoreOpt = DEFAULT_STORE,
    campaign: Annotated[
        str | None,
        typer.Option(
            "--campaign",
            "-c",
            help="Campaign name or id (default: the latest running or stopped one).",
        ),
    ] = None,
    max_trials: MaxTrialsOpt = None,
    max_failures: MaxFailuresOpt = None,
    max_duration: MaxDurationOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")] = False,
) -> None:
    """Continue a campaign after any stop (Ctrl-C, SIGTERM, kill, power loss).

    Trials left in flight are reconciled from their stored Bluesky documents and the
    planner is rebuilt from every stored trial. A finished campaign is extended by giving
    a larger --max-trials, --max-failures or --max-duration (whichever limit ended it).
    """
    from loop.config import parse_duration
    from loop.runner import Runner
    from loop.store import Store

    try:
        duration = None if max_duration is None else parse_duration(max_duration)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--max-duration") from None
    db = Store(store, create=False)
    store = db.url  # what messages show: a password in the URL as ***
    try:
        runner = Runner.from_store(
            db,
            campaign,
            max_trials=max_trials,
            max_failures=max_failures,
            max_duration=duration,
        )
        runner.refuse_before_start()  # before the banner: a refusal is all that is printed
        _say_file_edited(runner)
        c = runner.campaign
        listener = _ProgressListener.of(c, runner.budget.max_trials, quiet)
        runner.listener = listener
        _attach_operator(runner)
        console.print(
            f"[bold]{escape(c.name)}[/] (id {runner.campaign_id}): "
            + escape(
                f"resuming; {c.planner.label} planner, instrument {_instrument_label(c)}, seed "
                f"{runner.seed}, store {store}"
            )
        )
        summary = _drive(runner, listener, store, runner.resume)
        _print_summary(summary, c, db)
    finally:
        db.close()


def _say_file_edited(runner: Runner) -> None:
    """Warn when the campaign's file on disk differs from the text it was stored from,
    naming what differs: ``resume`` goes on with the stored copy, so an edited bound or goal
    was ignored without a word (found in review)."""
    from loop.config import changed_keys

    stored_at = runner.loaded.path
    # where it was stored from, else here: a project folder moved with its files (where a
    # `function:` file is looked for too); an edit there was not said (found in review).
    # Here only a file of the campaign's name: another campaign's file of the same file
    # name was compared instead (found in review).
    path, edited = stored_at, _text_of(stored_at)
    if edited is None:
        path, edited = Path.cwd() / stored_at.name, _text_of(Path.cwd() / stored_at.name)
        if edited is not None and _campaign_name(edited) != runner.campaign.name:
            edited = None
    if edited is None:
        return  # moved, deleted or unreadable: the stored copy is all there is
    changes = changed_keys(runner.loaded.text, edited)
    if not changes:
        return
    budget = all(c.startswith("budget.") for c in changes)
    err_console.print(
        f"warning: {path} has changed since campaign '{runner.campaign.name}' was stored "
        f"({'; '.join(changes)}); resume goes on with the stored copy. "
        + (
            "A budget is changed with --max-trials, --max-failures or --max-duration"
            if budget
            else "To measure with the edited file, start a new campaign from it (another "
            "`name:`); a budget is changed with --max-trials, --max-failures or --max-duration"
        ),
        highlight=False,
        markup=False,
    )


def _text_of(path: Path) -> str | None:
    """A file's text, or ``None`` (missing, unreadable, not UTF-8)."""
    try:
        return path.read_text(encoding="utf-8") if path.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None


def _campaign_name(text: str) -> str | None:
    """The ``name:`` of a campaign file's text, or ``None`` (not YAML, no name)."""
    from ruamel.yaml import YAML

    try:
        data = YAML(typ="safe", pure=True).load(text)
    except Exception:
        return None
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) else None


def _attach_operator(runner: Runner) -> None:
    """``instrument: manual``: the operator answers at this terminal (main thread)."""
    if runner.campaign.instrument.manual:
        from loop.asktell import TerminalOperator

        runner.operator = TerminalOperator(runner, console)


@contextmanager
def _opened_store(url: str, *, create: bool) -> Iterator[Store]:
    """The store a command works in, closed when it ends; with ``create`` (``run FILE``,
    ``suggest FILE``) created if missing, and removed again if the command fails before
    storing a campaign in it (:meth:`Store.discard_if_unused`).

    The campaign file is checked before this is entered, but some failures come later: a
    device that cannot be built, Ctrl-C while it is built, prior data (``suggest`` reads
    it only for a campaign it creates).
    """
    from loop.store import Store

    db = Store(url, create=create)
    try:
        yield db
    except BaseException:
        db.discard_if_unused()
        raise
    db.close()


def _refuse_if_running(db: Store, name: str, url: str) -> None:
    """A second ``run`` of a campaign that is running right now is almost surely a mistake.

    ``run`` always starts a new campaign, so it cannot collide with the running one; but two
    campaigns of one name driving the same instrument would. An unfinished campaign of the
    name that no runner holds only earns a hint that ``resume`` continues it; a finished one
    with measurements, a hint that they are not learned from, and how to build on them.
    """
    from loop.lock import running_namesake

    for row in reversed(db.campaigns()):
        if row.name != name or row.status not in ACTIVE or row.id is None:
            continue
        lease = db.lease(row.id)
        why = None if lease is None else running_namesake(name, row.id, lease, url)
        if lease is not None and why is not None:
            raise CampaignLocked(why, owner=lease.owner)
    namesakes = [r for r in reversed(db.campaigns()) if r.name == name and r.id is not None]
    unfinished = next((r for r in namesakes if r.status in UNFINISHED), None)
    if unfinished is not None:
        said = (
            f"campaign '{name}' (id {unfinished.id}) in this store is unfinished "
            f"({unfinished.status}); `{cli_command('resume', url, unfinished.id)}` "
            "would continue it. Starting a new campaign."
        )
    elif namesakes:
        # Re-running an edited file (bounds, a constraint, a bigger budget) started over
        # without a word that nothing measured was learned from (found in review).
        last = namesakes[0]
        trials = db.trials(last.id or 0)
        # its prior-data rows are the file's too: the new campaign learns them again
        done = sum(t.status == "completed" and t.kind != "prior" for t in trials)
        if not done:
            return
        # the rule that ended it, and the option that extends it: `--max-trials N` was
        # offered for a campaign its target or max_failures ended, which resume refuses
        # (found in review)
        runner = _stored_runner(db, last.id or 0)
        # an ask/tell campaign's running time is its age (`max_duration` as status judges it)
        spent = runner.spent(trials, _running_time(db, last, trials)) if runner else None
        if spent is not None and spent.option is None:
            extend = f" ({spent.reason}: that holds whatever the budget, so no resume goes on)"
        else:
            options = [spent.option] if spent is not None and spent.option else []
            if runner is None:  # its rules unread (a file moved): the usual extension
                options = ["--max-trials N"]
            extend = f"; or `{cli_command('resume', url, last.id, *options)}` extends it"
        said = (
            f"campaign '{name}' (id {last.id}) in this store is {last.status} with "
            f"{counted(done, 'completed trial')}; this run starts a new campaign and does "
            f"not learn from them. To build on them: "
            f"`{cli_command('export', url, last.id, '-o earlier.csv')}`, then `--prior "
            f"earlier.csv`{extend}."
        )
    else:
        return
    err_console.print("[yellow]note[/]: " + escape(said))


def _drive(runner: Runner, listener: _ProgressListener, store: str, start: Any) -> CampaignSummary:
    """Run ``start`` (``runner.run`` or ``runner.resume``) with signals and the progress bar."""
    _log_bluesky_prints()
    _runner_of_command["runner"] = runner
    try:
        with say_when_stdout_closes(), _stop_on_signals(runner) as signalled, listener:
            summary: CampaignSummary = start()
    except KeyboardInterrupt:
        if runner.campaign_id is None:  # stopped while the devices were being built
            err_console.print("[yellow]stopped[/] before the campaign started: nothing stored")
        else:
            _print_how_to_resume("stopped", store, runner.campaign_id)
        _state["stop_reported"] = True
        raise typer.Exit(130) from None
    if summary.status == "stopped":
        console.print(
            f"\n[yellow]stopped[/]: {escape(summary.reason)}; {summary.completed} completed, "
            f"{summary.failed} failed, {summary.abandoned} abandoned"
        )
        # the live line said "(transient: retrying)": say the retry is put off to resume
        try:
            history = runner.store.trials(summary.campaign_id)
        except Exception:  # a store the stop was about (deleted, unreachable): no note
            history = []
        _print_owed(runner.store, history, runner=runner)
        _print_how_to_resume("stopped", store, summary.campaign_id)
        _state["stop_reported"] = True
        # 130 for a stop someone asked for (a signal, the operator's `stop`); 75 for one
        # the campaign met (its Dask scheduler gone, its store file deleted, another runner
        # took it over): resumable once that is mended, which a wrapper script must tell
        # apart from Ctrl-C (found in review).
        raise typer.Exit(
            130
            if signalled or runner.operator_stopped or runner.stop_asked
            else 1
            if runner.code_stopped
            else EXIT_BUSY
        )
    return summary


def _log_bluesky_prints() -> None:
    """Send what bluesky's RunEngine ``print``s to the ``bluesky`` logger (shown with -v).

    The RunEngine announces every abort with a bare ``print`` ("Aborting: running cleanup
    and marking exit_status as 'abort'...") among the trial lines, on each timeout and stop,
    though the trial's own line says what happened. A ``print`` in bluesky.run_engine's
    namespace shadows the builtin there only: ``sys.stdout`` is not swapped, so nothing any
    other code or thread prints is touched. The command line only: the Python API keeps
    bluesky's behaviour.
    """
    import bluesky.run_engine as engine

    log = logging.getLogger("bluesky.run_engine")

    def to_log(*args: object, sep: str | None = " ", **_: object) -> None:
        text = (" " if sep is None else sep).join(str(a) for a in args)
        if text.strip():
            log.info("%s", text)

    vars(engine)["print"] = to_log


def _print_how_to_resume(what: str, store: str, campaign_id: int | None) -> None:
    err_console.print(
        f"[yellow]{what}[/]: every finished trial is in the store; continue with "
        + escape(f"`{cli_command('resume', store, campaign_id, printed=True)}`")
    )


def _print_summary(summary: CampaignSummary, c: Any, db: Store) -> None:
    """The end of ``run`` and ``resume``: counts, feasibility, and the best trial or (several
    objectives) the Pareto front as ``status`` shows it, read back from the store."""
    objective = c.objectives[0].name
    console.print(
        f"\n[bold]{summary.status}[/]: {escape(summary.reason)}; {summary.completed} "
        f"completed, {summary.failed} failed"
        + (f", {summary.abandoned} abandoned" if summary.abandoned else "")
        + f" in {span(summary.elapsed)}"
    )
    if summary.prior:
        console.print(f"prior data: {summary.prior} trials (not counted by max_trials)")
    rate = summary.feasibility_rate
    if summary.outcome_constraints and rate is not None:
        console.print(
            f"feasible: {summary.feasible} of {summary.completed} completed trials "
            f"({rate:.0%}) meet " + ", ".join(summary.outcome_constraints),
            highlight=False,
            markup=False,
        )
    if len(summary.objectives) > 1:
        from loop.report import annotate, shown_units
        from loop.store import export_records

        units = shown_units(c, db.campaign(summary.campaign_id).config_path)
        _print_front(c, annotate(export_records(db, summary.campaign_id), c), units)
    elif summary.best is not None:
        b = summary.best
        what = "best feasible trial" if summary.outcome_constraints else "best trial"
        prior = _origin(b.kind, b.parameters, c)
        _print_at(
            f"{what} #{b.number}{prior}: {objective} = {number(b.objective)} at",
            _where_parts(b.parameters, b.readbacks, spec=specs(c.parameters)),
        )
    elif summary.outcome_constraints:
        console.print("no feasible trial yet")
    if len(summary.objectives) <= 1 and summary.outlying:
        from loop.report import outlying_note

        far = [(r.number, r.objective) for r in summary.outlying if r.objective is not None]
        console.print(outlying_note(far, objective), highlight=False, markup=False)
    _print_failures(summary.failures, full=summary.status == "failed")
    # its last trial's line may have said "retrying": say the budget ended it first
    runner = _runner_of_command.get("runner")
    try:
        history = db.trials(summary.campaign_id)
    except Exception:  # a store the failure was about (deleted, unreachable): no note
        history = []
    if runner is not None and history:
        _print_owed(db, history, runner=runner)
    if summary.status == "failed":
        raise typer.Exit(1)


def _unsafe_exit(code: str | int | None) -> str | int | None:
    """Exit code 3 (``EXIT_UNSAFE``) when the command's runner left a safe state unwritten,
    whatever else ended it (a spent budget, a stop, a planner or store error): the one
    outcome a script must not take for done, for a plain interrupt or for an error to retry
    (found in review: exit 0, then exit 1 when an error ended the session)."""
    runner = _runner_of_command.get("runner")
    unsafe = getattr(runner, "unsafe", None)
    if not unsafe:
        return code
    from loop.runner import EXIT_UNSAFE

    err_console.print(
        "[red]SAFE STATE NOT WRITTEN[/]: "
        + escape("; ".join(unsafe))
        + f"; see to the hardware before anything else (exit code {EXIT_UNSAFE})"
    )
    return EXIT_UNSAFE


#: The runner ``run`` or ``resume`` drives (for :func:`_unsafe_exit`).
_runner_of_command: dict[str, Any] = {}


#: At most this many trials of a Pareto front in a table (``run``'s summary, ``status``).
FRONT_ROWS = 20


def _front_shown(front: Sequence[Any], value: Callable[[Any], float]) -> list[Any]:
    """The trials of a Pareto front a table shows: all of a small front; of a larger one,
    ``FRONT_ROWS`` spread evenly along the first objective (``value``), its two ends
    included, in trial order. A front of hundreds of trials (four objectives, a long
    campaign) printed hundreds of rows, scrolling the campaign's state out of sight
    (found in review); every trial on it is in ``closedloop export`` (column ``pareto``).
    """
    if len(front) <= FRONT_ROWS:
        return list(front)
    order = sorted(range(len(front)), key=lambda i: value(front[i]))
    picks = {order[round(k * (len(order) - 1) / (FRONT_ROWS - 1))] for k in range(FRONT_ROWS)}
    return [front[i] for i in sorted(picks)]


def _say_front_cut(shown: int, total: int, first: str) -> None:
    if shown < total:
        console.print(
            f"{shown} of the {total} trials on the front, spread along {first}; all of them: "
            "`closedloop export` (column pareto)",
            highlight=False,
            markup=False,
        )


def _print_failures(failures: list[Any], *, full: bool, limit: int = 10) -> None:
    """Failures by kind on one line; with ``full``, the last few failed trials and why."""
    from loop.failures import failure_counts

    if not failures:
        return
    counts = ", ".join(f"{n} {kind}" for kind, n in failure_counts(failures).items())
    console.print(f"failures: {counts}", markup=False)
    if not full:
        return
    shown = failures[-limit:]
    if len(failures) > len(shown):
        console.print(f"  (last {len(shown)} of {len(failures)} failed trials)")
    for f in shown:
        console.print(f"  trial #{f.number} [{f.kind}]: {f.error}", markup=False, highlight=False)


#: The signals that stop a campaign: SIGHUP is a closed terminal or ssh session, the most
#: common way a lab campaign dies, and by default it killed the runner without its safe state
#: (found in review).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stop_on_signals(runner: Runner) -> AbstractContextManager[list[int]]:
    """First SIGINT/SIGTERM/SIGHUP: stop cleanly; second: write the safe state and exit;
    third: exit at once (``loop.runner.stop_on_signals``, shared with the Python API, whose
    ``Runner.run`` leaves a SIGINT handler of its caller's, this one, alone)."""
    from loop.runner import stop_on_signals

    return stop_on_signals(runner, STOP_SIGNALS, exit_process=True, say=_write_stderr)


def _after_in_flight(runner: Runner) -> str:
    from loop.runner import after_in_flight

    return after_in_flight(runner)


def _say_interrupted() -> None:
    """A Ctrl-C outside run/resume (which say what they stored): such a command writes in
    one transaction at most (`tell --csv`: every row or none), so it wrote all or nothing.
    It exited without a word (found in review)."""
    _write_stderr(
        "\ninterrupted (Ctrl-C): what this command writes is written whole or not at all; "
        "`closedloop status` shows which (`no store at ...`: nothing was)\n"
    )


def _write_stderr(text: str) -> None:
    """``text`` on stderr at once, safe in a signal handler (no lock taken); a device's
    words in it (why the safe state failed) are made visible as the console makes them."""
    try:
        sys.stdout.flush()
        os.write(2, visible(text).encode())
    except (OSError, ValueError):  # a closed stderr must not turn a stop into a crash
        pass


@app.command()
def campaigns(store: StoreOpt = DEFAULT_STORE) -> None:
    """List the campaigns a store holds: id, name, status, trials, last change.

    `-c NAME|ID` of the other commands picks one of them (a name: its latest campaign).
    """
    from loop.store import Store

    db = Store(store, read_only=True)
    counts = db.trial_counts()
    latest = _last_trial_times(db)

    def trials(cid: int) -> str:
        return ", ".join(f"{n} {s}" for s, n in sorted(counts.get(cid, {}).items())) or "none"

    rows = [
        [
            str(row.id),
            escape(row.name),
            row.status,
            trials(row.id or 0),
            f"{_last_change(row.updated_at, latest.get(row.id or 0)):%Y-%m-%d %H:%M}",
        ]
        for row in db.campaigns()
    ]
    if not rows:
        console.print(f"no campaign in {db.url} yet", markup=False, highlight=False)
        return
    headers = ["id", "name", "status", "trials", "last change (UTC)"]
    console.print(WholeTable(f"campaigns in {escape(db.url)}", headers, rows, {0}))


def _last_trial_times(db: Store) -> dict[int, datetime]:
    """Each campaign's latest trial event (created, started or finished; UTC), in one query.

    ``updated_at`` moves only when the status or budget changes, so a campaign measuring a
    trial every minute for a day showed the time it started as its "last change" (found in
    review). One aggregate, as ``Store.trial_counts``: a store of many campaigns is listed
    without reading every trial.
    """
    from sqlalchemy import func, select

    from loop.store import TrialRow

    t = TrialRow.__table__.c  # type: ignore[attr-defined]
    query = select(
        t.campaign_id, func.max(t.created_at), func.max(t.started_at), func.max(t.finished_at)
    ).group_by(t.campaign_id)
    with db.engine.connect() as conn:
        rows = conn.execute(query).all()
    return {
        cid: max(as_utc(at) for at in times if at is not None)
        for cid, *times in rows
        if any(at is not None for at in times)
    }


def _last_change(updated_at: datetime, latest_trial: datetime | None) -> datetime:
    """``campaigns``' "last change": the later of the campaign row's change and its trials'."""
    updated = as_utc(updated_at)
    return updated if latest_trial is None else max(updated, latest_trial)


@app.command()
def status(
    store: StoreOpt = DEFAULT_STORE,
    campaign: CampaignOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object, for scripts (keys: see the README).")
    ] = False,
    model: Annotated[
        bool,
        typer.Option(
            "--model",
            help="Also fit a GP to the trials: how much of the best reading to believe, and "
            "the trial the model rates best (a noisy objective's best reading is its "
            "luckiest). One objective; takes a few seconds.",
        ),
    ] = False,
) -> None:
    """Show a campaign's progress, its best trial and its last trials."""
    from loop.report import annotate, shown_units, stored_campaign
    from loop.store import Store, export_records, known_budget

    db = Store(store, read_only=True)
    store = db.url  # what messages show: a password in the URL as ***
    row = db.campaign(campaign)
    c = stored_campaign(row)
    # one moment of a campaign that may be running: the records, the model and the counts
    # (the model was fitted on trials the table had not shown yet; found in review)
    snapshot = db.trials_and_observations(row.id or 0)
    records = annotate(export_records(db, row.id or 0, snapshot), c)
    counts = _trial_counts(records)
    estimates = _model_estimates(db, row, c, snapshot) if model else None
    if as_json:
        text = _status_json(row, c, records, counts, db, estimates, model=model, trials=snapshot[0])
        console.write_raw(text + "\n")
        return
    trials = snapshot[0]
    # the budget in force (run/resume --max-trials), else the file's
    known = known_budget(row)
    budget_trials = known.get("max_trials", c.budget.max_trials)
    # stored by the first release, which recorded no budget, and not inferable
    unrecorded = " (its file's: the one it ran with was not recorded)"
    unrecorded = unrecorded if "max_trials" not in known and row.budget is None else ""
    # the name, status and reason are the store's text: a reason naming
    # `pip install 'closedloop[ax]'` lost its `[ax]`, and one with `[/x]` ended status with
    # a MarkupError (found in review)
    console.print(
        f"[bold]{escape(one_line(row.name))}[/] "
        + escape(
            f"(id {row.id}) — {row.status}"
            + (f": {one_line(row.stop_reason)}" if row.stop_reason else "")
        )
    )
    lease = db.lease(row.id or 0) if row.status in UNFINISHED else None
    holder = _runner_state(lease)
    if row.status in UNFINISHED:
        console.print(
            _runner_line(db, row.id or 0, store, lease, holder, c.instrument.function),
            markup=False,
        )
    from loop.cli_instruments import paused_lines

    for line in paused_lines(db, row, store):  # interlock pauses and operator releases
        style = "bold yellow" if row.status == "paused" else ""
        console.print(line, style=style, markup=False, highlight=False)
    console.print(
        "trials: "
        + (", ".join(f"{n} {s}" for s, n in counts.items()) or "none")
        + f"; budget {budget_trials or '∞'} trials{unrecorded}"
        + f"{_duration_budget(db, row, c, trials)}; "
        + f"seed {row.seed}",
        markup=False,
    )
    if holder is None:  # a live runner retries on its own
        _print_owed(db, trials, campaign=c)
    live = row.status in ACTIVE and holder in ("running", "stopped")
    progress = _progress_line(trials, live=live and not _has_slots(c, trials))
    if progress:
        console.print(progress, markup=False, highlight=False)
    waiting = _planner_wait(lease) if holder == "running" else None
    if waiting is not None:
        console.print(
            f"planner: choosing the next proposal for {span(waiting['for_s'])}; "
            f"{counted(waiting['slots_waiting'], 'slot')} idle until it comes (as of the "
            f"runner's last heartbeat)",
            markup=False,
            highlight=False,
        )
    from loop.provenance import amend_line, code_change_lines, session_line, tell_line

    # the sessions' boundaries: proposals after a resume differ from an uninterrupted run's
    sessions = session_line(db.sessions(row.id or 0))
    if sessions is not None:
        console.print(sessions, markup=False, highlight=False)
    for told in (tell_line(db.tells(row.id or 0)), amend_line(db.amends(row.id or 0))):
        if told is not None:
            console.print(told, markup=False, highlight=False)
    changes = db.function_changes(row.id or 0) + db.planner_changes(row.id or 0)
    for line in code_change_lines(sorted(changes, key=lambda c: str(c.get("at")))):
        console.print(line, style="bold yellow", markup=False, highlight=False)
    _slots_table(c, trials, live=live)
    from loop.failures import failures_of

    _print_failures(failures_of(trials), full=row.status == "failed")
    units = shown_units(c, row.config_path)
    _print_goals(c, records, units)
    if model:
        _print_model(c, records, estimates)
    console.print(_trial_table(c, records[-10:], "last trials", units))


def _model_estimates(db: Store, row: Any, c: Any, snapshot: Any) -> Any:
    """``status --model``'s :class:`loop.results.TrialEstimates`, or a usage error naming
    why there are none."""
    from loop.results import model_estimates

    if len(c.objectives) != 1:
        _invalid(
            ValueError(
                f"campaign '{row.name}' has {len(c.objectives)} objectives: a Pareto front has "
                "no one best trial to estimate; leave out --model"
            )
        )
    return model_estimates(db, row.id, snapshot=snapshot)


def _print_model(c: Any, records: list[dict[str, Any]], estimates: Any) -> None:
    """``status --model``: the model's estimate of the best reading's true value, and the
    trial it rates best, if another."""
    from loop.report import best_record, label, units_of

    obj = c.objectives[0]
    if estimates is None:
        console.print("model: fewer than two measured trials to fit", markup=False)
        return
    console.print(
        f"model (a GP on {counted(len(estimates.mean), 'measured trial')}; one reading's "
        f"noise sd ≈ {estimates.noise_sd:.3g}):",
        highlight=False,
        markup=False,
    )
    from loop.config import FixedParameter

    # the searched parameters: a fixed one is no dimension of the model (it was counted)
    n, d = len(estimates.mean), sum(not isinstance(p, FixedParameter) for p in c.parameters)
    if n < 5 * d + 5:
        # At 16 trials of a 6-parameter campaign the fitted noise was a third of the true
        # one and an estimate 5.6 of its sd off (found in review): say so.
        console.print(
            f"  (only {n} measured trials for {counted(d, 'parameter')}: the noise is poorly "
            "determined and the ± below may be far too small; measuring the top trials "
            "again settles it)",
            highlight=False,
            markup=False,
        )
    units = units_of(c)
    by_id = {r["trial_id"]: r for r in records}
    best = best_record(records, obj.name, obj.goal)
    # the two readings shown, with the digits that tell them apart (both read 0.812345)
    shown = [best["trial_id"]] if best is not None else []
    shown += [estimates.best] if estimates.best in by_id else []
    digits = digits_apart(by_id[t]["outputs"].get(obj.name) for t in shown)

    def estimate(trial_id: int) -> str:
        r = by_id[trial_id]
        return (
            f"{obj.name} ≈ {estimates.mean[trial_id]:.4g} ± {estimates.sd[trial_id]:.2g} "
            f"(read {number(r['outputs'][obj.name], digits)})"
        )

    if best is not None and best["trial_id"] in estimates.mean:
        rated = " (the model rates it best too)" if best["trial_id"] == estimates.best else ""
        console.print(
            f"  best reading, trial #{best['number']}: {estimate(best['trial_id'])}{rated}",
            highlight=False,
            markup=False,
        )
    if estimates.best is None:
        console.print("  the model rates no trial feasible", markup=False)
    elif best is None or estimates.best != best["trial_id"]:
        r = by_id[estimates.best]
        _print_at(
            f"  rated best, trial #{r['number']}: {estimate(estimates.best)} at",
            _where_parts(
                r["parameters"],
                r.get("readbacks"),
                lambda k: label(k, units),
                spec=specs(c.parameters),
            ),
        )
        broken = [k.text for k in c.parsed_outcome_constraints if not k.satisfied(r["outputs"])]
        if broken:
            # it was printed under "best feasible: trial #3" without a word (found in review)
            console.print(
                f"  (its own reading breaks {', '.join(broken)}: the model judges the bound "
                "met within the noise; measuring it again settles which)",
                highlight=False,
                markup=False,
            )


def _trial_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """Trials by status, in the order the statuses first occur, prior data last as
    ``prior-data`` (``status``'s "trials:" line and its ``--json``)."""
    counts: dict[str, int] = {}
    for r in records:
        if r["kind"] != "prior":
            counts[r["status"]] = counts.get(r["status"], 0) + 1
    prior = sum(r["kind"] == "prior" for r in records)
    if prior:
        counts["prior-data"] = prior
    return counts


def _status_json(
    row: Any,
    c: Any,
    records: list[dict[str, Any]],
    counts: dict[str, int],
    db: Store | None = None,
    estimates: Any = None,
    *,
    model: bool = False,
    trials: list[Any] | None = None,
) -> str:
    """``status --json``: what a script branches on, from the store alone (the README's CLI
    table names the keys). The best trial is the one ``status`` and ``export``'s ``best``
    name; with several objectives ``pareto`` lists the front's trial ids instead. Strict
    JSON, as ``export --format json`` writes it (a NaN or infinite value is ``null``).
    ``db``: the store ``row`` is from, for its sessions, runner and times (without one,
    none are listed, ``runner`` and ``last_finished_at`` are null and ``running_time_s`` is
    the runner's sessions' alone).

    ``running_time_s``, ``runner`` and ``last_finished_at`` tell a monitoring script whether
    a long campaign moves: its status stays ``running`` through a hung or stopped runner.
    """
    from loop.failures import failure_counts, failures_of
    from loop.report import (
        best_record,
        declared_units,
        feasibility,
        final_hypervolume,
        hypervolume_reference,
        to_json,
    )
    from loop.store import known_budget, path_from_text

    best: dict[str, Any] | None = None
    pareto: list[int] | None = None
    hypervolume: dict[str, Any] | None = None
    if len(c.objectives) == 1:
        found = best_record(records, c.objectives[0].name, c.objectives[0].goal)
        if found is not None:
            keys = ("trial_id", "number", "kind", "parameters", "readbacks", "outputs")
            best = {k: found[k] for k in keys}
    else:
        pareto = [r["trial_id"] for r in records if r.get("pareto")]
        ref = hypervolume_reference(records, c)
        hypervolume = {
            "value": final_hypervolume(records, c),
            "reference_point": None
            if ref is None
            else {name: {"value": v, "given": given} for name, (v, given) in ref.items()},
        }
    feasible, completed = feasibility(records)
    payload: dict[str, Any] = {
        "campaign": row.name,
        "campaign_id": row.id,
        "status": row.status,
        "stop_reason": row.stop_reason,
        "trials": counts,
        "budget": known_budget(row),
        "best": best,
        "pareto": pareto,
        "hypervolume": hypervolume,
        "feasible": (
            {"trials": feasible, "of_completed": completed} if c.outcome_constraints else None
        ),
        "pending": [r["trial_id"] for r in records if r["status"] == "running"],
        "units": declared_units(c, path_from_text(row.config_path).parent),
        "seed": row.seed,
        "sessions": db.sessions(row.id or 0) if db is not None else [],
        "function_changes": db.function_changes(row.id or 0) if db is not None else [],
        "planner_changes": db.planner_changes(row.id or 0) if db is not None else [],
        "tells": db.tells(row.id or 0) if db is not None else [],
        "amends": db.amends(row.id or 0) if db is not None else [],
    }
    if trials is None:  # the records' own rows, when the caller has them
        trials = db.trials(row.id or 0) if db is not None else []
    lease = db.lease(row.id or 0) if db is not None and row.status in UNFINISHED else None
    last = _last_finished(trials)
    payload["running_time_s"] = (
        round(_running_time(db, row, trials), 1) if db is not None else row.elapsed_seconds
    )
    state = _runner_state(lease)
    payload["runner"] = _runner_json(lease, state)
    payload["last_finished_at"] = last.isoformat() if last is not None else None
    # failed trials by kind, as the text counts them (the text alone had them; review)
    payload["failures"] = failure_counts(failures_of(trials))
    owed = _owed_retries(db, trials, campaign=c)[0] if db is not None and state is None else []
    payload["owed_retries"] = [
        {"trial": o.number, "first_trial": o.first, "cut_off": o.cut_off} for o in owed
    ]
    live = row.status in ACTIVE and state in ("running", "stopped")
    payload["slots"] = _slot_states(c, trials, live=live) if db is not None else None
    if model:  # --model: null with fewer than two measured trials to fit
        payload["model"] = None
    if estimates is not None:
        payload["model"] = {
            "objective": estimates.objective,
            "noise_sd": estimates.noise_sd,
            "best_trial_id": estimates.best,
            "estimates": {
                str(tid): {"mean": mean, "sd": estimates.sd[tid]}
                for tid, mean in estimates.mean.items()
            },
        }
    return to_json(payload)


def _owed_retries(
    db: Store, trials: list[Any], *, campaign: Any = None, runner: Runner | None = None
) -> tuple[list[Any], str]:
    """The retries ``resume`` runs first (``loop.retries``), as it announces them, and the
    ``closedloop resume`` command that runs them, for a campaign no live runner holds (a
    live one retries on its own): ``runner``, the session that just ended, or else
    ``campaign``, the stored one's config.

    The command names the store and the campaign (``-c``): a bare ``closedloop resume``,
    pasted, resumed the latest unfinished campaign of the default store, another one
    (found in review). A campaign whose budget is spent (``Runner.spent``) owes a retry
    only to a resume that extends the rule that ended it: the command carries that
    option. One that met its target or ran out of patience owes nothing, since no resume
    goes on; a resume found such a campaign unfinished (killed at its end) and closed it
    (found in review). Weighing the rules loads the stored campaign's runner (bluesky,
    ophyd: ~2 s), only when a retry is owed."""
    from loop.retries import announced_retries, as_resume_finds, stored_owed

    if not trials:
        return [], ""
    cid = trials[0].campaign_id
    c = runner.campaign if runner is not None else campaign
    found = as_resume_finds(db, trials)
    owed = announced_retries(found, stored_owed(db, found, c.instrument.max_retries))
    if not owed:
        return [], ""
    row = db.campaign(cid)
    function = c.instrument.function
    command = resume_command(function, db.url, cid)
    if runner is None:  # the runner's stopping rules, imported only when a retry is owed
        runner = _stored_runner(db, cid)
        if runner is None:  # not resumable as stored: `resume` says why, not status
            return owed, command
    spent = runner.spent(found, row.elapsed_seconds or 0.0)
    if spent is not None:
        if spent.option is None:
            return [], ""
        return owed, resume_command(function, db.url, cid, spent.option)
    return owed, command


def _stored_runner(db: Store, cid: int) -> Runner | None:
    """The stored campaign's runner for its rules alone (nothing is built or connected),
    its loading's warnings unsaid: ``status`` said them once already; None when the
    stored campaign cannot be loaded as it is (a file moved or gone)."""
    from loop.runner import Runner

    logging.disable(logging.WARNING)
    try:
        return Runner.from_store(db, cid)
    except ClosedLoopError:
        return None
    finally:
        logging.disable(logging.NOTSET)


def _print_owed(
    db: Store, trials: list[Any], *, campaign: Any = None, runner: Runner | None = None
) -> None:
    """Say which retries the campaign owes and the command that runs them (none: nothing)."""
    from loop.retries import owed_note

    note = owed_note(*_owed_retries(db, trials, campaign=campaign, runner=runner))
    if note is not None:
        console.print(note, markup=False, highlight=False)


def _runner_state(lease: Any) -> str | None:
    """``running``, ``stopped`` or ``missed heartbeat`` for the campaign's lease, ``None``
    without one or when its process is gone from this host (``loop.lock.lease_state``)."""
    from loop.lock import lease_state

    return None if lease is None else lease_state(lease)


def _runner_json(lease: Any, state: str | None) -> dict[str, Any] | None:
    """``status --json``'s ``runner``: who holds the campaign's lease and whether it moves."""
    if lease is None or state is None:
        return None
    return {
        "host": lease.owner.rpartition(":")[0] or lease.owner,
        "pid": lease.pid,
        "heartbeat_age_s": round(max(time.time() - lease.heartbeat, 0.0), 1),
        "state": state,
        "planner_wait": _planner_wait(lease) if state == "running" else None,
    }


def _planner_wait(lease: Any) -> dict[str, Any] | None:
    """Idle slots waiting for the planner, as the runner's last heartbeat recorded it
    (``LeaseRow.proposing_since``): ``{for_s, slots_waiting}``, or ``None``. With a suggest
    slower than a trial every slot showed ``idle`` and nothing said why (found in review)."""
    since, waiting = lease.proposing_since, lease.proposing_for
    # before the lease was taken: an older closedloop took over a dead runner's lease and
    # left its columns as they were
    if since is None or not waiting or since < lease.acquired_at:
        return None
    return {"for_s": round(max(time.time() - since, 0.0), 1), "slots_waiting": waiting}


def _running_time(db: Any, row: Any, trials: list[Any]) -> float:
    """The running time the ``max_duration`` budget judges: the runner's sessions (its
    heartbeats record it), or for a campaign told with ``tell`` its age
    (``loop.asktell.running_time``)."""
    from loop.asktell import is_told, running_time

    told = any(is_told(t, db) for t in trials)
    return running_time(row) if told else row.elapsed_seconds or 0.0


def _last_finished(trials: list[Any]) -> datetime | None:
    """When the latest measured trial (not prior data) finished, in UTC."""
    times = [as_utc(t.finished_at) for t in trials if t.kind != "prior" and t.finished_at]
    return max(times) if times else None


def _in_flight_age(trial: Any, now: datetime) -> str:
    """How long a trial in flight has been: since it started (its row was made just before,
    which is all an older store's trial has)."""
    since = trial.started_at or trial.created_at
    return span(max((now - as_utc(since)).total_seconds(), 0.0)) if since else "?"


def _progress_line(trials: list[Any], *, live: bool) -> str | None:
    """``last trial finished 3 min ago; trial #12 in flight for 40 s``: whether a long
    campaign moves. ``live``: a runner holds it and no slot table shows the trials in flight
    (a trial ``running`` without one was left by a kill, or awaits ``tell``)."""
    now = datetime.now(UTC)
    parts = []
    last = _last_finished(trials)
    if last is not None:
        parts.append(f"last trial finished {span(max((now - last).total_seconds(), 0.0))} ago")
    if live:
        running = [t for t in trials if t.status == "running"]
        if len(running) == 1:
            parts.append(
                f"trial #{running[0].number} in flight for {_in_flight_age(running[0], now)}"
            )
        elif running:
            ages = ", ".join(f"#{t.number} for {_in_flight_age(t, now)}" for t in running[:3])
            more = ", ..." if len(running) > 3 else ""
            parts.append(f"{len(running)} trials in flight: {ages}{more}")
        elif last is None:
            parts.append("no trial finished yet")
    return "; ".join(parts) or None


# The runner appends this to the error of the trial that retired its slot (loop.runner).
_RETIRED = re.compile(r"slot (\d+) retired: (.*)$", re.DOTALL)


def _duration_budget(db: Any, row: Any, c: Any, trials: list[Any]) -> str:
    """``, 2h running time (35 min so far)`` for a campaign with ``max_duration``, else ``""``.

    The time spent is the one the budget judges: the runner's sessions, or for a campaign
    told with ``tell`` its age (``loop.asktell.running_time``). ``status`` showed only the
    trial budget, so an ask/tell campaign limited by time read "budget ∞" (found in review).
    """
    from loop.asktell import is_told, running_time
    from loop.config import parse_duration
    from loop.store import known_budget

    limit = known_budget(row).get("max_duration", c.budget.max_duration)
    if limit is None:
        return ""
    told = any(is_told(t, db) for t in trials)
    spent = running_time(row) if told else row.elapsed_seconds or 0.0
    return f", {span(parse_duration(limit))} running time ({span(spent)} so far)"


def _has_slots(c: Any, trials: list[Any]) -> bool:
    """Whether ``status`` shows the instrument slots table (:func:`_slots_table`)."""
    count = getattr(c.instrument, "count", 1)
    if count <= 1 and all((t.slot or 0) == 0 for t in trials):
        return False
    return not all(t.slot is None for t in trials)


def _slot_states(c: Any, trials: list[Any], *, live: bool = True) -> list[dict[str, Any]] | None:
    """With several instrument slots: each slot, its trial in flight and what it has run,
    for ``status`` (:func:`_slots_table`) and ``status --json`` (``slots``); ``None`` when
    no trial ran on a slot.

    A trial ``running`` with no live runner is not being measured: it was left in flight
    (a kill, a crash) and ``resume`` reconciles it. A slot retired by the runner (it kept
    failing while the others worked) shows as such, with the reason, until it runs again.
    Trials told with ``tell`` ran on no slot: without a trial that did, there are no slots
    (a table of idle slots with nothing run read as a stuck runner); with one, they are
    counted apart.
    """
    if not _has_slots(c, trials):
        return None
    count = getattr(c.instrument, "count", 1)
    now = datetime.now(UTC)
    states: list[dict[str, Any]] = []
    for slot in range(max([count] + [(t.slot or 0) + 1 for t in trials])):
        mine = [t for t in trials if t.slot == slot]
        running = [t for t in mine if t.status == "running"]
        current = running[-1] if running else None
        reason = None
        if current is not None:
            state = "in flight" if live else "left running"
        else:
            last = next((t for t in reversed(mine) if t.status != "abandoned"), None)
            retired = _RETIRED.search(last.error or "") if last is not None else None
            if retired is not None and retired.group(1) == str(slot):
                state, reason = "retired", retired.group(2)
            else:
                state = "idle"
        since = (current.started_at or current.created_at) if current is not None else None
        states.append(
            {
                "slot": slot,
                "state": state,
                "retired_because": reason,
                "trial": None
                if current is None
                else {
                    "trial_id": current.id,
                    "number": current.number,
                    "parameters": current.parameters,
                    "in_flight_s": round(max((now - as_utc(since)).total_seconds(), 0.0), 1)
                    if since
                    else None,
                },
                "completed": sum(t.status == "completed" for t in mine),
                "failed": sum(t.status == "failed" for t in mine),
            }
        )
    return states


def _slots_table(c: Any, trials: list[Any], *, live: bool = True) -> None:
    """The instrument slots (:func:`_slot_states`) as ``status`` shows them."""
    states = _slot_states(c, trials, live=live)
    if states is None:
        return
    spec = specs(c.parameters)
    rows = []
    for slot in states:
        current = slot["trial"]
        state = {
            "in flight": f"in flight {span(current['in_flight_s'])}"
            if current and current["in_flight_s"] is not None
            else "in flight ?",
            "left running": "left running (resume reconciles)",
            "retired": f"retired: {slot['retired_because']}",
            "idle": "idle",
        }[slot["state"]]
        rows.append(
            [
                str(slot["slot"]),
                escape(state),
                f"#{current['number']}" if current else "",
                escape(_where(current["parameters"], None, spec=spec)) if current else "",
                str(slot["completed"]),
                str(slot["failed"]),
            ]
        )
    headers = ["slot", "state", "current trial", "parameters", "completed", "failed"]
    from loop.asktell import is_told

    told = [t for t in trials if t.status != "running" and is_told(t)]
    caption = f"{len(told)} trial(s) told with `closedloop tell` ran on no slot" if told else None
    count = getattr(c.instrument, "count", 1)
    console.print(
        WholeTable(f"instrument slots ({count})", headers, rows, {0, 2, 4, 5}, caption=caption)
    )


def _print_goals(c: Any, records: list[dict[str, Any]], units: dict[str, str]) -> None:
    """Feasibility, the best feasible trial, and (several objectives) the Pareto front;
    ``units``: name -> unit of parameters and outputs (``loop.report.shown_units``)."""
    from loop.report import (
        best_record,
        feasibility,
        label,
        outlying_note,
        outlying_records,
    )

    obj = c.objectives[0]
    if c.outcome_constraints:
        feasible, completed = feasibility(records)
        share = f" ({feasible / completed:.0%})" if completed else ""
        console.print(
            f"feasible: {feasible} of {completed} completed trials{share} meet "
            + ", ".join(c.outcome_constraints),
            highlight=False,
            markup=False,
        )
    if len(c.objectives) == 1:
        best = best_record(records, obj.name, obj.goal)
        what = "best feasible" if c.outcome_constraints else "best"
        if best:
            prior = _origin(best["kind"], best["parameters"], c)
            # as many digits as set it apart from the last trials shown below it
            digits = _digits(c, [*records[-10:], best], obj.name)
            _print_at(
                f"{what}: trial #{best['number']}{prior} {obj.name} = "
                f"{number(best['outputs'][obj.name], digits)} ({obj.goal}) at",
                _where_parts(
                    best["parameters"],
                    best.get("readbacks"),
                    lambda k: label(k, units),
                    spec=specs(c.parameters),
                ),
            )
        elif c.outcome_constraints:
            console.print(f"{what}: none yet")
        outliers = outlying_records(records, obj.name, obj.goal)
        far = [(r["number"], r["outputs"][obj.name]) for r in outliers]
        if far:
            console.print(outlying_note(far, obj.name), highlight=False, markup=False)
        return
    _print_front(c, records, units)


def _print_front(c: Any, records: list[dict[str, Any]], units: dict[str, str]) -> None:
    """A multi-objective campaign's Pareto front, as ``status`` and ``run``'s summary show it:
    the hypervolume with the reference point it is measured from (an inferred point moves as
    the campaign goes on, so the number alone says little), and the front's trials with every
    constrained output and whether it is feasible (found in review: ``run`` showed neither)."""
    from loop.report import final_hypervolume, hypervolume_reference

    front = [r for r in records if r.get("pareto")]
    hv = final_hypervolume(records, c)  # not the whole trace: that grows with the campaign
    shown = f"; hypervolume {hv:.6g}" if hv is not None else ""
    ref = hypervolume_reference(records, c)
    if hv is not None and ref:
        shown += " above the reference point " + ", ".join(
            f"{name} {value:.6g}" + ("" if given else " (inferred)")
            for name, (value, given) in ref.items()
        )
    console.print(
        f"Pareto front: {counted(len(front), 'trial')}{shown}", highlight=False, markup=False
    )
    if not front and _feasible_measured(records, c):
        # A reference point on the wrong side of every result leaves a front of none and a
        # hypervolume of 0, which `patience` reads as no progress (found in review).
        console.print(
            "no feasible trial is at least as good as the reference point on every "
            "objective: check each objective's reference_point, the worst value still worth "
            "having ("
            + ", ".join(
                f"{o.name} {o.reference_point:g} ({o.goal})"
                for o in c.objectives
                if o.reference_point is not None
            )
            + ")",
            highlight=False,
            markup=False,
        )
    if front:
        first = c.objectives[0].name
        on_screen = _front_shown(front, lambda r: r["outputs"].get(first, math.nan))
        console.print(_trial_table(c, on_screen, "Pareto front (feasible, non-dominated)", units))
        _say_front_cut(len(on_screen), len(front), first)


def _feasible_measured(records: list[dict[str, Any]], c: Any) -> bool:
    """Whether some completed feasible trial has every objective measured (finite)."""
    import numpy as np

    from loop.report import objective_matrix

    if not records:
        return False
    Y, usable = objective_matrix(records, c.objectives)
    return bool((usable & np.isfinite(Y).all(axis=1)).any())


def _trial_table(
    c: Any, records: list[dict[str, Any]], title: str, units: dict[str, str]
) -> WholeTable:
    """Trials with their parameters and goals (``units`` of either in the headers) and
    outcome; an ``error`` column only when some trial has one."""
    from loop.report import label

    shown = [o.name for o in c.objectives]
    for oc in c.parsed_outcome_constraints:
        if oc.name not in shown:
            shown.append(oc.name)
    spec = specs(c.parameters)
    params = [p.name for p in c.parameters if getattr(p, "type", None) != "fixed"]
    extra = ["feasible"] if c.outcome_constraints else []
    errors = [escape(_headline(r["error"] or "")) for r in records]
    headers = [
        "#",
        "kind",
        "status",
        *[label(n, units) for n in params],
        *[label(n, units) for n in shown],
        *extra,
    ]
    digits = {n: _digits(c, records, n) for n in shown}
    if any(errors):
        headers.append("error")
    rows = []
    for r, error in zip(records, errors, strict=True):
        feasible = r.get("feasible")
        readbacks = r.get("readbacks") or {}
        rows.append(
            [
                str(r["number"]),
                escape(r["kind"]),
                escape(r["status"]),
                *[
                    _achieved_cell(r["parameters"].get(n), readbacks.get(n), spec.get(n))
                    for n in params
                ],
                *[_cell(r["outputs"].get(n), digits[n]) for n in shown],
                *(["" if feasible is None else ("yes" if feasible else "no")] if extra else []),
                *([error] if any(errors) else []),
            ]
        )
    missed = any("\n" in cell for row in rows for cell in row[3 : 3 + len(params)])
    numeric = {0, *range(3 + len(params), 3 + len(params) + len(shown))}
    numeric.update(i for i, n in enumerate(params, 3) if _numeric(spec, n))
    return WholeTable(
        title,
        [escape(h) for h in headers],
        rows,
        numeric,
        caption="value (set X): the value reached (readback, or told as used), X commanded"
        if missed
        else None,
        optional=range(3, 3 + len(params)),
        left_out=PARAMETERS_LEFT_OUT,
    )


#: The line under a trial table too wide for the console (:class:`loop.fmt.WholeTable`):
#: the goals and outcome come first then, and the parameters that fit.
PARAMETERS_LEFT_OUT = (
    "{count} of {total} parameters not shown ({names}); `closedloop export` has them all"
)


def _numeric(spec: Mapping[str, Any], name: str) -> bool:
    """Whether a parameter's cells are numbers (a choice's are text, and may be long)."""
    return getattr(spec.get(name), "type", "float") in ("float", "int")


def _achieved_cell(commanded: Any, actual: Any, spec: Any = None) -> str:
    """A parameter's cell: where the trial actually ran (a readback, a value told or typed
    as actually used) when that differs from the commanded value, with the setpoint dim on
    a line of its own, so the column stays as narrow as its numbers (as ``_where`` shows
    the best trial: the model learnt the achieved point)."""
    shown = parameter(commanded, spec)
    if actual is None or parameter(actual, spec) == shown:
        return escape(shown)
    return f"{escape(parameter(actual, spec))}\n[dim](set {escape(shown)})[/]"


def _headline(error: str, width: int = 60) -> str:
    """An error cut for a table cell: its first clause when that fits (the stored texts lead
    with what went wrong, then say where: ``RuntimeError: pH probe not calibrated; raised by
    function ...``), else its first ``width`` characters. ``status`` of a failed campaign
    prints each failure whole, and ``export`` has them all."""
    head = error.split("; ", 1)[0]
    if len(head) < len(error) and len(head) <= width:
        return head + " …"
    return error if len(error) <= width else error[: width - 1] + "…"


def _runner_line(
    db: Store, campaign_id: int, url: str, lease: Any, state: str | None, function: str | None
) -> str:
    """Who drives an unfinished campaign, or how to continue it (``function``: the
    campaign's ``instrument.function``, whose ``__main__:`` only Python resumes).

    An ask/tell campaign is continued with ``tell``/``suggest``: ``resume`` would drive it
    with its instrument and refuses while suggestions await their results. A runner stopped
    on this host (Ctrl-Z) holds its campaign (``loop.lock.owner_stopped``): the line says so
    and how to continue or end it; it said "no runner is driving it" once its heartbeat
    expired, and ``resume`` took the campaign over from under it (found in review).
    ``lease``/``state``: the campaign's lease and :func:`_runner_state` of it.
    """
    from loop.asktell import awaiting_tell
    from loop.lock import describe_lease, frozen_note, stale_reason

    resume = f"`{resume_command(function, url, campaign_id, printed=True)}`"
    suggest = f"`{cli_command('suggest', url, campaign_id)}`"
    if lease is not None and state == "stopped":
        then = f"{resume} continues the campaign"
        return f"runner: {frozen_note(lease, then) or describe_lease(lease)}"
    why = stale_reason(lease) if lease is not None and state is not None else None
    if lease is not None and state is not None and why is None:
        return f"runner: {describe_lease(lease)}"
    if lease is not None and why is not None:
        # missed its heartbeats: hung, killed on another host, or cut off from the store
        head = f"no runner is driving it ({lease.owner}: {why})"
    else:
        head = "no runner is driving it"
    pending = awaiting_tell(db, db.trials(campaign_id))
    if pending:
        ids = ", ".join(str(t.id) for t in pending[:10]) + (", ..." if len(pending) > 10 else "")
        return (
            f"{head}; {len(pending)} suggestion(s) await results (trial ids "
            f"{ids}): `{cli_command('tell', url, None, 'TRIAL_ID name=value ...')}` "
            f"records one (`--abandon REASON` withdraws it), {suggest} proposes more"
        )
    if (db.campaign(campaign_id).stop_reason or "").startswith("ask/tell:"):
        return (
            f"{head}; {suggest} proposes more trials ({resume} would drive it with its instrument)"
        )
    return f"{head}; {resume} continues it"


class ExportFormat(StrEnum):
    csv = "csv"
    json = "json"
    jsonl = "jsonl"  # the runs' Bluesky documents, not the trial records
    yaml = "yaml"  # the campaign file, with the seed and budget it ran with


@app.command()
def export(
    store: StoreOpt = DEFAULT_STORE,
    campaign: CampaignOpt = None,
    format: Annotated[
        ExportFormat | None,
        typer.Option(
            "--format",
            "-f",
            help="csv or json (trial records), jsonl (the runs' Bluesky documents), yaml "
            "(the campaign file, with the seed and budget it ran with); default: -o's "
            "suffix, else csv.",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File (default, or -: stdout).")
    ] = None,
    from_trial: Annotated[
        int | None,
        typer.Option(
            "--from-trial",
            min=1,
            metavar="N",
            help="Only trials numbered N and later (csv, json, jsonl): what a live consumer "
            "left behind did not get, or what is new since an earlier export.",
        ),
    ] = None,
) -> None:
    """Export one record per trial: id, status, parameters, readbacks, outputs, run uid.

    Campaigns with outcome constraints add a `feasible` column, with several objectives a
    `pareto` column (on the front of the feasible trials). Prior-data trials have kind
    `prior`. `--format jsonl` writes the trials' Bluesky documents instead, one
    `[name, doc]` JSON array a line, run after run in trial order (as suitcase-jsonl
    does), for a facility catalog: Tiled's `TiledWriter` or any `RunRouter`.
    `--format yaml` (`-o x.yaml`) writes the campaign file back, with the seed and the
    budget it ran with written in, to run it again.
    """
    import json

    from loop.report import OutputError, stored_campaign, to_csv, to_json, write_output
    from loop.results import iter_run_documents, trial_records
    from loop.store import Store

    if output is not None and str(output) == "-":
        output = None  # the Unix way to say stdout; it wrote a file named "-" (found in review)
    format = _export_format(format, output)
    text: str | Iterator[str]
    db = Store(store, read_only=True)
    store = db.url  # what messages show: a password in the URL as ***
    if format == ExportFormat.yaml and from_trial is not None:
        _invalid(
            OutputError(
                "--from-trial selects trials; --format yaml writes the campaign file, which "
                "has none: drop --from-trial, or export csv, json or jsonl"
            )
        )
    if format == ExportFormat.yaml:
        from loop.provenance import campaign_file

        text = campaign_file(db, campaign)
        wrote = "the campaign file"
    elif format == ExportFormat.jsonl:
        # The stored documents as they are (NaN/inf already null), written as they are read:
        # a 5000-trial campaign's took 300 MB as one text. A wrong campaign is said here,
        # before anything is written.
        documents = iter_run_documents(db, campaign, from_trial=from_trial)
        names = Counter[str]()

        def lines() -> Iterator[str]:  # in pieces of 500 lines: each piece is one write
            piece: list[str] = []
            for name, doc in documents:
                names[name] += 1
                piece.append(json.dumps([name, doc], allow_nan=False) + "\n")
                if len(piece) == 500:
                    yield "".join(piece)
                    piece.clear()
            yield "".join(piece)

        text = lines()
    else:
        # feasible (outcome constraints) and pareto (several objectives) columns when they
        # apply: the records a notebook reads (loop.trial_records)
        records = trial_records(db, campaign)
        if from_trial is not None:  # selected after: best, feasible and pareto see them all
            records = [r for r in records if r["number"] >= from_trial]
        if format == ExportFormat.csv:
            text = to_csv(records, stored_campaign(db.campaign(campaign)))
        else:
            text = to_json(records)
        wrote = f"{len(records)} trials"
    if output is None:
        # On a terminal a stored value's control characters are shown, not obeyed (a choice
        # value "a\x1b[2J" cleared the screen of whoever exported a shared store: found in
        # review); to a file or a pipe the data goes as stored, byte for byte.
        for piece in [text] if isinstance(text, str) else text:
            console.write_raw(visible(piece) if sys.stdout.isatty() else piece)
    else:
        try:
            example = "campaign.yaml" if format == ExportFormat.yaml else f"trials.{format.value}"
            write_output(output, text, example, store_url=db.url)
        except OutputError as exc:
            _invalid(exc)
        if format == ExportFormat.jsonl:
            wrote = f"{names.total()} documents of {names['start']} runs"
            if not names:  # said as if something were missing (found in review)
                wrote += " (results told with `tell`, and prior data, have no runs)"
        err_console.print(f"wrote {wrote} to {output}", markup=False)


def _export_format(given: ExportFormat | None, output: Path | None) -> ExportFormat:
    """The format ``-o``'s suffix names, or ``--format``; they must agree.

    ``export -o out.json`` wrote CSV (``--format`` defaulted to csv), which ``pandas.read_json``
    then failed on, while ``report`` has always taken its format from the suffix (found in
    review). A suffix that is no export format (``.xlsx``) is refused without ``--format``:
    writing CSV into it would be the same surprise.
    """
    from loop.report import OutputError

    suffix = output.suffix.lower().lstrip(".") if output is not None else ""
    suffix = "yaml" if suffix == "yml" else suffix
    named = ExportFormat(suffix) if suffix in ExportFormat.__members__ else None
    if given is not None and named is not None and given != named:
        _invalid(
            OutputError(
                f"--format {given.value} but -o {output} names a .{named.value} file; "
                f"fix: give -o a .{given.value} name, or drop --format"
            )
        )
    if given is not None:
        return given
    if named is not None:
        return named
    if output is not None and suffix:
        _invalid(
            OutputError(
                f"-o {output}: export writes CSV or JSON, not .{suffix}; fix: name it .csv or "
                ".json (a spreadsheet opens the CSV), .jsonl for the runs' Bluesky documents, "
                ".yaml for the campaign file, or give --format csv to write CSV anyway"
            )
        )
    return ExportFormat.csv


@app.command()
def report(
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="Image file to write: .png (added when the name has no suffix), .pdf, .svg ...",
        ),
    ],
    store: StoreOpt = DEFAULT_STORE,
    campaign: CampaignOpt = None,
) -> None:
    """Plot the best-so-far trace (or hypervolume and Pareto fronts) and every output."""
    from loop.report import OutputError, plot_report
    from loop.store import Store

    db = Store(store, read_only=True)
    store = db.url  # what messages show: a password in the URL as ***
    row = db.campaign(campaign)
    try:
        path = plot_report(db, row, output)
    except OutputError as exc:
        _invalid(exc)
    console.print(f"wrote {path}", markup=False, highlight=False)


@app.command()
def simulators() -> None:
    """List the built-in simulated instruments: inputs with their bounds or values, outputs."""
    from simulators import SIMULATORS

    def domain(p: Any) -> str:
        if p.kind == "choice":
            where = "{" + ", ".join(str(v) for v in p.values or ()) + "}"
        else:
            lo, hi = p.bounds
            where = f"[{lo:g}, {hi:g}]" + (" integer" if p.kind == "int" else "")
        unit = f" {p.unit}" if p.unit else ""
        return f"{p.name} in {where}{unit}" + (" (log)" if p.log else "")

    rows = []
    for name, problem in SIMULATORS.items():
        # the whole first sentence: cutting it changed numbers ("minima with y = 0.")
        first = re.split(r"(?<=\.)\s+", problem.description.strip(), maxsplit=1)[0]
        rows.append(
            [
                name,
                "\n".join(escape(domain(p)) for p in problem.parameters),
                escape(", ".join(problem.outputs)),
                escape(first),
            ]
        )
    headers = ["name", "inputs", "outputs", "description"]
    console.print(WholeTable("built-in simulators", headers, rows, numeric=()))


# ---------------------------------------------------------------------------- progress
class _ProgressListener:
    """A progress bar plus one line per trial (value and best so far; with several
    objectives every objective's value and the Pareto front's size)."""

    def __init__(
        self,
        objectives: Sequence[str],
        total: int | None,
        quiet: bool,
        *,
        bar: bool = True,
        constraints: Sequence[OutcomeConstraint] = (),
        references: Mapping[str, tuple[str, float]] | None = None,
    ) -> None:
        self.objectives = list(objectives)
        self.objective = self.objectives[0]
        self.quiet = quiet
        self.constraints = list(constraints)
        # several objectives: each given reference point (name -> (goal, value)); a feasible
        # trial beyond one is off the front, and a front of none may hold feasible trials
        self.references = dict(references or {})
        self.hinted_traceback = False
        self.progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            # no live bar under the manual prompt: it would redraw over what is typed
            disable=quiet or not bar or not console.is_terminal,
        )
        self.task = self.progress.add_task("trials", total=total)

    @classmethod
    def of(cls, c: Any, total: int | None, quiet: bool) -> _ProgressListener:
        """The listener of ``run`` and ``resume`` for campaign ``c``."""
        return cls(
            [o.name for o in c.objectives],
            total,
            quiet,
            bar=not c.instrument.manual,
            constraints=c.parsed_outcome_constraints,
            references={
                o.name: (o.goal, o.reference_point)
                for o in c.objectives
                if o.reference_point is not None
            },
        )

    def __enter__(self) -> _ProgressListener:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def campaign_resumed(self, state: ResumeState) -> None:
        self.progress.update(self.task, completed=state.completed)
        for r in state.reconciled:
            how = (
                "completed from its stored run"
                if r.status == "completed"
                else escape(f"{r.status}: {r.error}")
            )
            self.progress.console.print(f"trial {r.number:>4}  was in flight; {how}")
        for owed in state.retrying:
            if owed.cut_off:
                what = f"a retry of trial #{owed.first}, cut off unmeasured: run again first"
            else:
                what = "its retry was owed when the last session ended: retried first"
            self.progress.console.print(f"trial {owed.number:>4}  {what}")
        for n in state.given_up:
            self.progress.console.print(
                f"trial {n:>4}  a retry cut off twice in a row: not run again (its point goes "
                "back to the planner)"
            )
        if state.takeover:
            self.progress.console.print(f"[yellow]lease[/]: {escape(state.takeover)}")
        if not self.quiet:
            if state.front is not None:
                best = f", {state.front} on the Pareto front"
            elif state.best:
                best = f", best {escape(self.objective)} = {number(state.best.objective)}"
            else:
                best = ""
            self.progress.console.print(
                f"so far: {state.completed} completed, {state.failed} failed, "
                f"{state.abandoned} abandoned in {span(state.elapsed_before)}{best}"
            )

    def trial_started(self, number: int, parameters: dict[str, Any]) -> None:
        self.progress.update(self.task, description=f"trial {number}")

    def trial_finished(self, report: TrialReport) -> None:
        if report.status == "completed":
            self.progress.advance(self.task)
        if self.quiet:
            return
        if report.status == "completed":
            # no feasible trial yet (outcome constraints): say so, not "best =  "
            # the value and the best with the digits that tell them apart (1.0000001 and
            # 1.0000002 read "y = 1 ... best = 1"; found in review)
            digits = digits_apart([report.objective, report.best])
            best = (
                ": none feasible yet"
                if report.best is None
                else f" = {number(report.best, digits)}"
            )
            # An infeasible trial's value is not a candidate for best: say why, or a value
            # better than "best" reads as a bug (found in review).
            violated = _violations(self.constraints, report.outputs) if self.constraints else ""
            infeasible = f"  [yellow](infeasible: {escape(violated)})[/]" if violated else ""
            # a sentinel is not a best either: say why (flagged for one objective only,
            # see Runner._rank: with several the front counts it)
            if report.outlying:
                infeasible += "  [yellow](far outside every other reading: left out of best)[/]"
            if report.front is None:
                values = escape(f"{self.objective} = {number(report.objective, digits)}")
                standing = escape(f"best{best}")
            else:  # several objectives: the first one's best says little
                values = escape(
                    ", ".join(
                        f"{name} = {number(report.outputs.get(name))}" for name in self.objectives
                    )
                )
                on = " (this one on it)" if report.on_front else ""
                if not violated and not report.on_front:
                    infeasible += self._beyond_reference(report.outputs)
                standing = f"Pareto front {report.front or self._no_front()}{on}"
            line = (
                f"trial {report.number:>4}  {values}{infeasible}  {standing}  "
                f"[dim](suggest {report.timing.suggest:.2f} s)[/]"
            )
        else:
            # "(retrying)" alone after a function's own "...says it is transient"
            from loop.failures import said_transient

            kind = "" if said_transient(report.error) else "transient: "
            retrying = f" [yellow]({kind}retrying)[/]" if report.will_retry else ""
            line = f"trial {report.number:>4}  [red]{report.status}[/]: {escape(str(report.error))}"
            line += retrying
            line += self._traceback_hint(report.error)
        self.progress.console.print(line)

    def _no_front(self) -> str:
        """A front of none: with a given reference point feasible trials may exist, only
        none at least as good as it (found in review: "none feasible yet" beside a feasible
        trial); an inferred point lies beyond every feasible trial."""
        if self.references:
            return "none yet (no feasible trial is as good as the reference point)"
        return "none feasible yet"

    def _beyond_reference(self, outputs: Mapping[str, Any]) -> str:
        """Why a feasible trial is off the front when it is worse than a given reference
        point (the worst value still worth having); empty when it is merely dominated."""
        worse = []
        for name, (goal, ref) in self.references.items():
            value = outputs.get(name)
            if isinstance(value, int | float) and (
                value < ref if goal == "maximize" else value > ref
            ):
                worse.append(f"{name} {number(value)} worse than its reference point {ref:g}")
        if not worse:
            return ""
        return f"  [yellow]({escape(', '.join(worse))}: not on the front)[/]"

    def _traceback_hint(self, error: str | None) -> str:
        """Where the user's function raised, bluesky logs the traceback at ``-v`` only: say
        so once per session (the stored error names the file and line already)."""
        from loop.failures import failure_kind

        if self.hinted_traceback or _state["verbose"]:
            return ""
        if not failure_kind(error).startswith(("function raised", "simulator raised")):
            return ""
        self.hinted_traceback = True
        return " [dim](run with -v for the traceback)[/]"

    def slot_retired(self, slot: int, reason: str) -> None:
        self.progress.console.print(
            f"[yellow]slot {slot} retired[/]: {escape(reason)}; its devices are closed, the "
            "other slots go on (`resume` gives it a fresh start)"
        )


def _violations(constraints: Sequence[OutcomeConstraint], outputs: Mapping[str, Any]) -> str:
    """The outcome constraints ``outputs`` break, as ``purity 0.8 < 0.9``; empty if none."""
    broken = []
    for oc in constraints:
        if oc.satisfied(outputs):
            continue
        value = outputs.get(oc.name)
        if value is None:
            broken.append(f"no {oc.name}")
        else:
            opposite = "<" if oc.op == ">=" else ">"
            # digits that set them apart: 0.89999 must not read "0.9 < 0.9", nor
            # 1.0000001 "1 > 1" (found in review)
            digits = digits_apart([value, oc.bound])
            broken.append(
                f"{oc.name} {number(value, digits)} {opposite} {number(oc.bound, digits)}"
            )
    return ", ".join(broken)


def _where(
    parameters: Mapping[str, Any],
    readbacks: Mapping[str, Any] | None,
    name: Callable[[str], str] = str,
    *,
    spec: Mapping[str, Any] | None = None,
) -> str:
    """``name=value, ...`` at the point a trial actually ran at: a readback (or a value told
    as actually used) that differs from the commanded value is shown, with the setpoint
    beside it, since the model learnt the actual point and a scientist repeating the best
    trial needs it (``temperature=62.5 (set 100.7)``). Values are written by the campaign's
    parameters (``spec``, name -> parameter; :func:`loop.fmt.parameter`)."""
    return ", ".join(_where_parts(parameters, readbacks, name, spec=spec))


def _where_parts(
    parameters: Mapping[str, Any],
    readbacks: Mapping[str, Any] | None,
    name: Callable[[str], str] = str,
    *,
    spec: Mapping[str, Any] | None = None,
) -> list[str]:
    """:func:`_where`'s ``name=value`` of each parameter."""
    parts = []
    for key, value in parameters.items():
        p = (spec or {}).get(key)
        actual = (readbacks or {}).get(key)
        shown = parameter(value, p)
        if actual is not None and parameter(actual, p) != shown:
            shown = f"{parameter(actual, p)} (set {shown})"
        parts.append(f"{name(key)}={shown}")
    return parts


def _origin(kind: str | None, parameters: Mapping[str, Any], c: Any) -> str:
    """`` (prior data)``, `` (outside today's bounds or constraints)``, both or ``""``:
    what to say after the best trial's number, in ``run``'s summary as in ``status``. A
    point outside the space was measured before it was narrowed (or in another unit: see
    ``loop.prior``); no proposal can come back to it, and the command line's repeat refuses
    it (found in review; ``run`` said nothing of it)."""
    said = " (prior data)" if kind == "prior" else ""
    if not c.space.contains(dict(parameters)):
        said += " (outside today's bounds or constraints)"
    return said


def _print_at(head: str, parts: Sequence[str]) -> None:
    """``head`` and a trial's ``name=value`` ``parts`` (the best trial's point): on one line
    when it fits the console, else each line of the parameters indented below ``head``, as
    many to a line as fit. With 31 parameters it was one line of 441 characters, the
    trial's number and value lost in the screen lines it wrapped to (found in review).
    Printed as text: choice values are the user's, and ``[/b]`` is not a tag."""
    line = f"{head} {', '.join(parts)}"
    width = console.width
    if cell_len(line) <= width:
        console.print(line, highlight=False, markup=False)
        return
    console.print(head, highlight=False, markup=False)
    indent, lines, current = " " * (len(head) - len(head.lstrip(" "))) + "  ", [], ""
    for part in parts:
        joined = f"{current}, {part}" if current else part
        if current and cell_len(indent + joined) + 1 > width:  # the line's closing comma
            lines.append(current)
            joined = part
        current = joined
    lines.append(current)
    for i, text in enumerate(lines):
        console.print(
            indent + text + ("," if i < len(lines) - 1 else ""), highlight=False, markup=False
        )


def _cell(value: Any, digits: int = DIGITS) -> str:
    """An output for a table cell or a line printed with markup: rich reads cells as markup,
    and a text value such as ``[/b]`` or ``[BMIM][BF4]`` is text, not a tag."""
    return escape(number(value, digits))


def _digits(c: Any, records: Sequence[Mapping[str, Any]], output: str) -> int:
    """Significant digits for ``output`` shown for ``records``: enough to set apart their
    distinct values and the campaign's bounds on it (:func:`loop.fmt.digits_apart`), so
    ``c=1, feasible no`` is never printed for 1.0000001 against ``c <= 1``."""
    bounds = [k.bound for k in c.parsed_outcome_constraints if k.name == output]
    return digits_apart([*(r["outputs"].get(output) for r in records), *bounds])


# ---------------------------------------------------------------------------- ask/tell
def _chosen_values(runner: Any, at: list[str]) -> dict[str, Any]:
    """``suggest --at name=value`` pairs, each read as its parameter's value as ``tell
    --actual`` and prior data read it (:func:`loop.config.parameter_value`); a name that is
    no parameter is kept for :func:`loop.asktell.chosen_point` to name with the others."""
    from loop.asktell import InvalidInput, parse_assignments
    from loop.config import parameter_value

    params = {p.name: p for p in runner.campaign.parameters}
    chosen: dict[str, Any] = {}
    for name, text in parse_assignments(at, "--at").items():
        if name not in params:
            chosen[name] = text
            continue
        try:
            chosen[name] = parameter_value(params[name], text.strip())
        except ValueError as exc:
            raise InvalidInput(f"--at {name}={text.strip()!r} {exc}") from None
    return chosen


#: Without a terminal, a line on stderr at most this often while `suggest` chooses.
PROGRESS_EVERY = 30.0


@contextmanager
def _choosing(n: int) -> Iterator[None]:
    """Say how far `suggest` has come while the planner chooses (``planners.report_progress``):
    a 96-well plate's batch took minutes with nothing on the screen (found in review). On a
    terminal a spinner with the count; otherwise (a robot's scheduler, a log file, also with
    ``FORCE_COLOR``) a line at most every :data:`PROGRESS_EVERY` seconds, so a quick
    `suggest` prints nothing there."""
    from planners import progress_listener

    start = said = time.monotonic()

    def words(chosen: int, total: int) -> str:
        each = (time.monotonic() - start) / max(chosen, 1)
        return f"choosing {n} proposal(s): {chosen} of {total} from the model, {each:.1f} s each"

    if _stderr_is_terminal():  # not rich's test: FORCE_COLOR put spinner frames in a log
        with (
            err_console.status(f"choosing {n} proposal(s) ...") as status,
            progress_listener(lambda chosen, total: status.update(words(chosen, total))),
        ):
            yield
        return

    def line(chosen: int, total: int) -> None:
        nonlocal said
        now = time.monotonic()
        if chosen < total and now - said >= PROGRESS_EVERY:
            said = now
            err_console.print(words(chosen, total), highlight=False)

    with progress_listener(line):
        yield


@app.command()
def suggest(
    file: Annotated[
        Path | None,
        typer.Argument(help="Campaign YAML file: creates the campaign on first use."),
    ] = None,
    store: StoreOpt = DEFAULT_STORE,
    campaign: CampaignOpt = None,
    n: Annotated[int, typer.Option("-n", min=1, max=100, help="Number of proposals.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    max_trials: MaxTrialsOpt = None,
    max_failures: MaxFailuresOpt = None,
    max_duration: MaxDurationOpt = None,
    at: Annotated[
        list[str] | None,
        typer.Option(
            "--at",
            help="Record -n trials at a point you choose (a control, a replicate), not the "
            "planner's: name=value for every parameter (repeat the option).",
        ),
    ] = None,
    repeat: Annotated[
        int | None,
        typer.Option(
            "--repeat",
            help="Record -n replicates of this trial: its point, with any --at values changed.",
        ),
    ] = None,
) -> None:
    """Propose trials and record them as pending; people run them, `tell` records results.

    Never more than the budget can use: with budget.max_trials, the completed and pending
    trials plus the new ones stay within it (fewer are proposed, or none, saying why). A
    finished campaign is extended by a larger --max-trials, --max-failures or --max-duration.
    With --at or --repeat the point is yours (kind manual): told like any trial, and learned
    from like any.
    """
    from loop.asktell import (
        InvalidInput,
        Refused,
        chosen_point,
        open_campaign,
        outputs_of,
        trial_point,
    )
    from loop.asktell import suggest as ask
    from loop.config import load_campaign, parse_duration
    from loop.report import label, to_json, units_of

    try:
        duration = None if max_duration is None else parse_duration(max_duration)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--max-duration") from None
    loaded = None if file is None else load_campaign(file)  # checked before any store opens
    with _opened_store(store, create=loaded is not None) as db:
        store = db.url  # what messages show: a password in the URL as ***

        def check_new(new: Any) -> None:
            """A campaign this command would create: what it would refuse, before it exists."""
            if repeat is not None:
                raise InvalidInput(
                    f"--repeat {repeat}: campaign '{new.campaign.name}' is new (this command "
                    "would create it), so it has no trial to repeat yet"
                )
            chosen_point(new, _chosen_values(new, at or []))
            limit = new.budget.max_trials
            if limit is not None and n > limit:
                raise InvalidInput(
                    f"-n {n} trials at the chosen point exceed budget.max_trials = {limit}; "
                    f"give -n {limit} or less, or --max-trials {n}"
                )

        try:
            runner, created = open_campaign(
                db,
                loaded,
                campaign,
                max_trials=max_trials,
                max_failures=max_failures,
                max_duration=duration,
                check=check_new if at or repeat is not None else None,
            )
            chosen = None
            if at or repeat is not None:
                base = {} if repeat is None else trial_point(db, repeat, runner._cid())
                chosen = {**base, **_chosen_values(runner, at or [])}
                if repeat is not None:  # its refusal names --repeat, not an --at not given
                    named = f"--repeat {repeat}" + (" with --at" if at else "")
                    chosen_point(runner, chosen, label=named)
            refused: list[Refused] = []  # outside the instrument's limits: warned about
            with _choosing(n):
                proposals = ask(runner, n, refused=refused, at=chosen)
            row = db.campaign(runner.campaign_id)  # as the proposals left it
        except InvalidInput as exc:
            _invalid(exc)
    c = runner.campaign
    proposed = len(proposals) + len(refused)  # the refused are proposals too, not to be run
    if proposed < n:
        err_console.print(
            f"[yellow]note[/]: {proposed} of {n} proposed: with the trials completed and "
            f"pending, more could exceed budget.max_trials = {runner.budget.max_trials}",
            highlight=False,
        )
    if as_json:
        payload: dict[str, Any] = {
            "campaign": c.name,
            "campaign_id": runner.campaign_id,
            "status": row.status,
            "stop_reason": row.stop_reason,
            "outputs": list(outputs_of(runner)),
            "trials": [
                {
                    "trial_id": p.trial_id,
                    "number": p.number,
                    "kind": p.kind,
                    "parameters": p.parameters,
                }
                for p in proposals
            ],
            # recorded as failed, not to be run (a warning on stderr says why)
            "refused": [
                {
                    "trial_id": r.trial_id,
                    "number": r.number,
                    "parameters": r.parameters,
                    "reason": r.reason,
                }
                for r in refused
            ],
        }
        console.write_raw(to_json(payload) + "\n")
        return
    if created:
        console.print(
            f"created campaign [bold]{escape(c.name)}[/] (id {runner.campaign_id}) in "
            + escape(store)
        )
    # Refused proposals are said on stdout too, where a person reads what to run: a table
    # titled "run these" over no rows, exit 0, was all they saw (found in review).
    if refused:
        ids = ", ".join(str(r.trial_id) for r in refused)
        console.print(
            f"{len(refused)} of {proposed} refused by the instrument's limits (recorded as "
            f"failed: trial id{'s' if len(refused) > 1 else ''} {ids}; the warnings say why), "
            "not to be run",
            markup=False,
            highlight=False,
        )
    finished = row.status not in UNFINISHED  # by this suggest: a finished one is refused
    if not proposals:
        more = (
            f"; `{cli_command('suggest', store, runner.campaign_id, printed=True)}` proposes more"
        )
        console.print(
            f"{c.name} (id {runner.campaign_id}): nothing to run" + ("" if finished else more),
            markup=False,
            highlight=False,
        )
        _say_finished(row, finished)
        return
    units = units_of(c)
    spec = specs(c.parameters)
    # setpoint precision: set by hand as shown, a value reproduces the stored point (within
    # 1e-6 of its range), so a result told without --actual is learnt where it was measured
    rows = [
        [
            str(p.trial_id),
            str(p.number),
            p.kind,
            *[escape(parameter(p.parameters.get(n), spec[n], setpoint=True)) for n in spec],
        ]
        for p in proposals
    ]
    headers = [escape(h) for h in ("trial_id", "#", "kind", *[label(n, units) for n in spec])]
    numeric = {0, 1, *(i for i, n in enumerate(spec, 3) if _numeric(spec, n))}
    title = f"{escape(c.name)} (id {runner.campaign_id}): run these, then `closedloop tell`"
    # turned when too wide (a row per parameter, a column per trial): every value is to be
    # set, and with 40 parameters the rows took three screen lines each (found in review)
    console.print(WholeTable(title, headers, rows, numeric, turn=True))
    outputs = " ".join(f"{o}=VALUE" for o in outputs_of(runner))
    console.print(
        f"record a result: {cli_command('tell', store, None, 'TRIAL_ID', outputs, printed=True)} "
        "[--actual PARAM=VALUE] (or --fail REASON; --abandon REASON if it will not be run)",
        markup=False,
        highlight=False,
    )
    _say_finished(row, finished)


def _say_finished(row: CampaignRow, finished: bool) -> None:
    """Say that ``suggest`` ended the campaign (its refused proposals reached
    ``max_failures``, say), as ``tell`` says the state it leaves."""
    if finished:
        console.print(
            f"campaign '{row.name}' (id {row.id}) is now {row.status}: {row.stop_reason}",
            markup=False,
            highlight=False,
        )


@app.command()
def tell(
    trial_id: Annotated[
        int | None, typer.Argument(help="Trial id (as `suggest` printed it).")
    ] = None,
    values: Annotated[
        list[str] | None, typer.Argument(help="Measured outputs: name=value ...")
    ] = None,
    store: StoreOpt = DEFAULT_STORE,
    actual: Annotated[
        list[str] | None,
        typer.Option("--actual", help="A parameter as actually used, name=value (repeatable)."),
    ] = None,
    fail: Annotated[
        str | None, typer.Option("--fail", help="Record the trial as failed, with this reason.")
    ] = None,
    transient: Annotated[
        bool | None,
        typer.Option(
            "--transient/--not-transient",
            help="With --fail: the instrument's fault, not the conditions' (a clogged tip): "
            "the planner does not learn the point as failing. An --amend of a failed trial "
            "keeps what it was told unless one of these is given.",
        ),
    ] = None,
    abandon: Annotated[
        str | None,
        typer.Option(
            "--abandon",
            help="Withdraw a suggestion that will not be run, with this reason (counts toward "
            "no budget).",
        ),
    ] = None,
    csv_file: Annotated[
        Path | None,
        typer.Option(
            "--csv",
            help="Results for many trials: columns trial_id, outputs..., optional "
            "actual.<param>, fail and transient; rows with no outputs yet stay pending.",
        ),
    ] = None,
    by: Annotated[
        str | None,
        typer.Option("--by", help="Who recorded the results (stored; default user@host)."),
    ] = None,
    wait: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds to wait while a `suggest` or another `tell` holds the campaign.",
        ),
    ] = 300.0,
    amend: Annotated[
        str | None,
        typer.Option(
            "--amend",
            help="Correct the result already told for this trial, with this reason (the old "
            "result is kept in the store's record).",
        ),
    ] = None,
) -> None:
    """Record the measured results of pending trials (one, or many from a CSV).

    A trial is told its outputs, or --fail REASON (it was run and failed: counts toward
    budget.max_failures; with --transient the fault was the instrument's, and the planner
    does not learn the point as failing), or --abandon REASON (it will not be run: stored as
    abandoned, counted toward no budget; the planner treats it as an interrupted trial).

    Who recorded them (--by, else user@host), when, which trials and from which CSV file
    (with its sha256) are stored with them; `status` shows the latest. --amend REASON
    corrects a told trial's result (a plate read rotated, a typo): the outputs and --actual
    values given replace those told, the rest stand; the old result, who changed it and why
    are recorded, and the planner learns the new one at the next suggest.
    """
    from loop.asktell import (
        InvalidInput,
        amend_keeps,
        amend_result,
        build_result,
        parse_assignments,
        read_results_csv,
        told_trial,
        trial_and_runner,
    )
    from loop.asktell import tell as record
    from loop.failures import OPERATOR_FAILED
    from loop.store import Store

    db = Store(store, create=False)
    store = db.url  # what messages show: a password in the URL as ***
    runners: dict[int, Runner] = {}
    try:
        if csv_file is not None:
            given = (
                trial_id is not None,
                values,
                actual,
                fail is not None,
                abandon,
                transient is not None,
            )
            if any(given):
                raise InvalidInput(
                    "give either --csv FILE or TRIAL_ID name=value ..., not both (a CSV says "
                    "transient in a column of its own)"
                )
            if amend is not None:
                raise InvalidInput("--amend corrects one trial: give TRIAL_ID name=value ...")

            def runner_for(tid: int) -> Runner:
                return runners[trial_and_runner(db, tid, runners).campaign_id]

            sheet = read_results_csv(runner_for, csv_file)
            results, pending = sheet.results, sheet.pending_note(csv_file)
        else:
            if trial_id is None:
                raise InvalidInput(
                    "give TRIAL_ID name=value ... (or --csv FILE); `closedloop suggest` "
                    "prints the trial ids"
                )
            outputs = parse_assignments(values or [], "output")
            used = parse_assignments(actual or [], "--actual")
            if amend is not None:
                trial = told_trial(db, trial_id, runners)
                if (fail, abandon, transient) == (None, None, None) and not (outputs or used):
                    raise InvalidInput(
                        f"nothing to amend for trial {trial_id}: give the output(s) or "
                        "--actual value(s) to correct, or --fail/--abandon REASON"
                    )
                if trial.status == "failed" and abandon is None and not outputs:
                    # still failed: its reason and its transience stand unless given again
                    # (a new wording of the reason made a transient failure the point's,
                    # and --actual alone was refused as a result without outputs; review)
                    if fail is None:
                        fail = (trial.error or "").removeprefix(OPERATOR_FAILED) or "failed"
                    if transient is None:
                        transient = bool(trial.transient)
                if abandon is None:  # what is not given again stands
                    outputs, used = amend_keeps(db, trial, outputs, used, measured=fail is None)
            else:
                trial = trial_and_runner(db, trial_id, runners)
            if fail is None and abandon is None and not outputs:
                raise InvalidInput(
                    f"no results for trial {trial_id}: give name=value for each output, "
                    "--fail REASON if it failed, or --abandon REASON if it will not be run"
                )
            pending = None
            results = [
                build_result(
                    runners[trial.campaign_id],
                    trial_id,
                    outputs,
                    used,
                    fail,
                    abandoned=abandon,
                    transient=bool(transient),
                )
            ]
        if by is not None and not by.strip():
            raise InvalidInput("--by is empty: give who recorded the results, or leave it out")
        if amend is not None:
            done = [
                amend_result(db, results[0], runners, reason=amend, by=by and by.strip(), wait=wait)
            ]
        else:
            done = record(db, results, runners, by=by and by.strip(), csv=csv_file, wait=wait)
        for t in done:
            console.print(
                f"trial {t.id} (#{t.number}): {t.status}"
                + (f" ({one_line(t.error)})" if t.error else ""),
                markup=False,
                highlight=False,
            )
        if pending is not None:
            console.print(pending, markup=False, highlight=False)
        for cid in {t.campaign_id for t in done}:
            row = db.campaign(cid)
            console.print(
                f"campaign '{one_line(row.name)}' (id {cid}): {row.status}: "
                f"{one_line(row.stop_reason or '')}",
                markup=False,
                highlight=False,
            )
    except InvalidInput as exc:
        _invalid(exc)
    finally:
        db.close()


def _invalid(exc: Exception) -> NoReturn:
    err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
    raise typer.Exit(2)


def _instrument_label(c: Any) -> str:
    """The instrument as the run's first line names it: what it is, and (so a typo in
    `count` or `executor` shows before the first trial) how many slots and where it
    computes."""
    i = c.instrument
    if i.manual:
        return "manual (the operator enters " + ", ".join(i.outputs or ()) + ")"
    label = str(i.simulator or i.function or i.dataset or i.file or "inline devices")
    if i.count > 1:
        label += f" x {i.count} slots"
    executor = i.executor
    if executor.kind == "local":
        workers = executor.workers or 2
        label += f" on a local Dask cluster ({workers} worker{'s' * (workers != 1)})"
    elif executor.kind == "dask":
        label += f" on the Dask scheduler at {executor.address}"
    return label


# Technicians' tools (loop/cli_instruments.py): `closedloop instruments check` (connect and
# read every declared device), `plan` (the messages a trial would send, nothing connected)
# and `release` (an operator's release of an interlock pause), `stop` (an operator's stop of
# a running campaign, from another terminal); then `closedloop datasets`
# (loop/cli_datasets.py) and `closedloop examples` (loop/cli_examples.py). Registered here so
# that `loop.cli:app` is the whole command line.
def _register_instrument_tools() -> None:
    from loop.cli_instruments import instruments_app, plan, release, stop

    app.add_typer(instruments_app)
    app.command("plan")(plan)
    app.command("release")(release)
    app.command("stop")(stop)


_register_instrument_tools()
app.command("datasets")(__import__("loop.cli_datasets", fromlist=["datasets"]).datasets)
app.command("examples")(__import__("loop.cli_examples", fromlist=["examples"]).examples)


def _tidy_help(group: typer.Typer, *, markup: bool) -> None:
    """Give every command of ``group`` its docstring as help that reads right at any width.

    typer (0.29) keeps a docstring's line breaks after its first paragraph, so at 80
    columns (a terminal's default, and any pipe's) each source line ended in a line of one
    or two words; and its rich mode reads ``[...]`` as markup, so ``[name, doc]`` vanished
    from ``export --help`` (both found in review). A command's help is prose: each
    paragraph is joined into one line for the console to wrap, and escaped where rich
    markup is on (``markup``: the root's mode, which typer hands down to every group).
    """
    import inspect

    for command in group.registered_commands:
        doc = command.help or inspect.getdoc(command.callback) or ""
        paragraphs = (" ".join(p.split()) for p in doc.split("\n\n"))
        text = "\n\n".join(paragraphs)
        command.help = escape(text) if markup else text
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _tidy_help(sub.typer_instance, markup=markup)


_tidy_help(app, markup=app.rich_markup_mode == "rich")


# ---------------------------------------------------------------------------- entry
def main() -> None:
    """Console entry point: user errors become one message and an exit code."""
    from loop.streams import exit_code, standard_streams

    # first: a closed stdin/stdout/stderr opened on os.devnull before any file or socket
    # takes its descriptor, and text an encoding cannot write degraded, not raised
    standard_streams()
    # a long campaign's memory held near what it uses (glibc; see loop.memory)
    from loop.memory import steady_memory

    steady_memory()
    try:
        _entry()
        code: str | int | None = 0
    except SystemExit as exc:
        code = exc.code
    code = exit_code(code)  # 1 when the output could not be written (a full disk)
    code = _unsafe_exit(code)
    _leave_planner_behind(code)
    _quiet_ctrl_c_at_exit()
    if code not in (0, None):
        sys.exit(code)


def _quiet_ctrl_c_at_exit() -> None:
    """From here on a Ctrl-C ends the process at once and quietly, with exit code 130.

    The command's work is done and stored; what is left is the interpreter's teardown,
    where libraries' ``atexit`` handlers run (ophyd's, dask's). A Ctrl-C then printed
    "Exception ignored in atexit callback ... KeyboardInterrupt" with a traceback, and the
    process still exited 0 (found in review).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        return  # started to ignore it (nohup, a background job): it stays ignored
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(130))


def _leave_planner_behind(code: object) -> None:
    """Exit at once, with ``code``, when a planner thread is still computing.

    A stop drains the slots but gives a suggest in progress only a second (a model fit
    must not hold a Ctrl-C); the planner thread is a daemon. Left to the interpreter's
    shutdown, libtorch's thread pool is torn down under it and the process dies with
    "terminate called without an active exception" (exit 134, not 130; found in review).
    Everything worth keeping is committed by now (the store is closed), so the streams
    and log handlers are flushed and the process ends without that teardown.
    """
    if not any(t.name == "closedloop-planner" and t.is_alive() for t in threading.enumerate()):
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


def _command() -> Any:
    """The click command typer builds from ``app``, its ``--help`` tidied: no type after a
    flag (typer 0.29 shows ``--quiet -q <bool>``, which reads as an option taking a value;
    ``-q true`` was then refused: found in review), and a repeatable option's item type
    (``<path>``, not ``<list[Path]>``)."""

    def tidy(command: Any) -> None:  # typer's own (vendored) click classes
        for param in command.params:
            if param.param_type_name != "option" or param.metavar is not None:
                continue
            if param.is_flag:
                param.metavar = ""
            elif param.multiple:  # list[Path] -> <path>
                item = param.bare_type().removeprefix("list[").removesuffix("]")
                param.metavar = f"<{item.lower()}>"
        made = command.get_help_option  # --help is made per context, not a param

        def help_option(ctx: Any) -> Any:
            option = made(ctx)
            if option is not None and option.metavar is None:
                option.metavar = ""
            return option

        command.get_help_option = help_option
        for sub in getattr(command, "commands", {}).values():
            tidy(sub)

    command = typer.main.get_command(app)
    tidy(command)
    return command


def _entry() -> None:
    try:
        # Without standalone mode click returns (not raises) a command's typer.Exit code.
        code = _command()(standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool) and code != 0:
            if code == 130 and not _state.get("stop_reported"):  # typer's code for Ctrl-C
                _say_interrupted()
            sys.exit(code)
    except CampaignConfigError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(2)
    except (ClosedLoopError, InstrumentError) as exc:
        if _state["debug"] and exc.__cause__ is not None:
            # what a worded error stands for (a planner plugin's exception, an import's):
            # --debug promises the traceback, which the one-line message leaves out
            import traceback

            traceback.print_exception(exc.__cause__, file=sys.stderr)
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        # A store that cannot be used as given (missing, unwritable, newer, no such
        # campaign) is bad input like a bad file; a busy or lost lease, or a file deleted
        # under a run, is not. A finished campaign resumed without a larger budget is
        # refused as given, as `suggest` refuses it and as `resume` refuses a store with no
        # unfinished campaign: one code for "give a larger budget" (it was 1 here only).
        # So is an instrument that does not fit its file, found when it connects (a unit
        # the device reports, a `key:` it does not have): exit 1 told a script "broken".
        bad_input = (
            (
                isinstance(exc, StoreError)
                and not isinstance(exc, CampaignLocked | LeaseLost | StoreGone)
            )
            or isinstance(exc, InstrumentConfigError)
            or _finished(exc)
        )
        # Held by another runner, or by a suggest/tell past the wait, or its instrument by
        # another campaign: busy, not broken.
        from instruments._hold import InstrumentBusy

        busy = isinstance(exc, CampaignLocked | InstrumentBusy)
        sys.exit(2 if bad_input else EXIT_BUSY if busy else 1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit as exc:
        from loop.streams import reader_left

        if reader_left(exc):  # help or usage text cut short by `| head`: no failure
            sys.exit(0)
        raise
    except (typer.Abort, KeyboardInterrupt):
        _say_interrupted()
        sys.exit(130)
    except Exception as exc:  # the last line of defence: one line, not a traceback
        from loop.streams import console_output_lost, keep_unsaid

        if console_output_lost(exc):  # help text to a full disk: said as the command ends
            keep_unsaid(exc)
            sys.exit(0)
        if _infeasible_space(exc):
            # Constraints that together leave no feasible point (validate refuses one that
            # can never hold alone; several in conflict are found only by sampling): the
            # file is at fault, not closedloop.
            err_console.print(
                f"[red]error:[/] {escape(str(exc))}\n  fix: edit the campaign file's "
                "constraints or bounds, check it with `closedloop validate FILE`, and run "
                "it again",
                highlight=False,
            )
            sys.exit(2)
        if _planner_unavailable(exc):
            # An install to make (`kind: ax` whose Ax import failed after the campaign
            # loaded: an install broken since, a dependency missing), not a bug to report.
            err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
            sys.exit(2)
        if isinstance(exc, typer.TyperException):
            # A usage error (bad option value, unknown option): click's own message and
            # exit code 2. Typer vendors click, so these are not `click.ClickException`s.
            show = getattr(exc, "show", None)
            if callable(show):
                show()
            else:
                err_console.print(f"error: {exc.format_message()}", highlight=False, markup=False)
            option = getattr(exc, "option_name", None)
            if option in _GLOBAL_OPTIONS:
                # `closedloop run FILE -v`: said only "No such option: -v" (found in review)
                err_console.print(
                    f"hint: {option} is an option of closedloop itself, not of a command: "
                    f"give it before the command, e.g. `closedloop {option} "
                    f"{_command_of(exc)} ...`",
                    highlight=False,
                    markup=False,
                )
            sys.exit(exc.exit_code)
        from sqlalchemy.exc import OperationalError

        if isinstance(exc, OperationalError) and not _state["debug"]:
            # The database went away mid-command (a server restarted or unreachable, a disk
            # unmounted): not a bug to report. Every commit before it is kept.
            said = first_line(exc.orig)
            err_console.print(
                f"error: lost the store: {said or exc}; everything committed before it is "
                "kept, and once the database is reachable again `closedloop resume` with the "
                "same --store and -c continues the campaign (a trial that was in flight is "
                "reconciled from its documents)",
                highlight=False,
                markup=False,
            )
            sys.exit(1)
        if _state["debug"] or os.environ.get("CLOSEDLOOP_DEBUG"):
            raise
        err_console.print(
            f"error: {type(exc).__name__}: {exc}\n(run with --debug for the "
            "traceback, and please report it)",
            highlight=False,
            markup=False,
        )
        sys.exit(1)


#: The options of ``closedloop`` itself (``_main``), which go before the command.
_GLOBAL_OPTIONS = ("-v", "--verbose", "--debug")


def _command_of(exc: BaseException) -> str:
    """The command a usage error is about, as typed after ``closedloop`` (``run``,
    ``instruments check``)."""
    names = []
    ctx = getattr(exc, "ctx", None)
    while ctx is not None and ctx.parent is not None:  # the root is closedloop itself
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names)) or "COMMAND"


def _finished(exc: BaseException) -> bool:
    """Whether ``exc`` is a request ``loop.runner`` refuses as given: ``CampaignFinished``
    (resume of a finished campaign without a larger budget) or ``SuggestionsPending``
    (resume while ``suggest`` trials await ``tell``; it exited 1, a failed run's code, where
    the README's list of codes has it refused as given: found in review). ``loop.runner`` is
    looked up, not imported: it raised the error only if it is loaded, and importing it
    (bluesky) must not slow other errors."""
    runner = sys.modules.get("loop.runner")
    return runner is not None and isinstance(
        exc, runner.CampaignFinished | runner.SuggestionsPending
    )


def _planner_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` is ``planners._config.PlannerUnavailable`` (a planner kind whose
    library cannot be imported). Looked up, not imported, as in :func:`_finished`: only a
    planner that was built can have raised it."""
    config = sys.modules.get("planners._config")
    return config is not None and isinstance(exc, config.PlannerUnavailable)


def _infeasible_space(exc: BaseException) -> bool:
    """Whether ``exc`` is the planners' "no point meets the constraints" error.

    ``planners`` is imported only here, once something went wrong: its error class must not
    put the planners' import cost on every command.
    """
    if not isinstance(exc, ValueError):
        return False
    from planners import InfeasibleSpaceError

    return isinstance(exc, InfeasibleSpaceError)


if __name__ == "__main__":
    main()
