"""The loop. One trial's life reads top to bottom in ``Runner._drive``, ``_start_trial`` and
``_finish_trial``:

    propose  ->  persist  ->  dispatch  ->  ingest  ->  learn
    planner      store        RunEngine     store       planner
    .suggest     .add_trial   (one run)     .finish     .ingest

The trial row exists before any device moves and its outcome is committed when its run ends,
so a crash at any point leaves a store that says exactly how far each trial got. With one
instrument slot everything a trial learns reaches the planner before the next proposal;
with ``instrument.count`` K > 1 slots, K trials are in flight at once and the planner
proposes on its own thread with the others pending (``loop/scheduler.py``, ADR 0005).

``Runner.run`` creates a campaign and ``Runner.resume`` continues one from its store; both
then drive the same loop (``_drive``): take the campaign's lease, reconcile trials left in
flight by a crash, rebuild the planner by ingesting every stored trial in the order the
trials ended (never from a pickle), and propose until the budget is spent. Every answer of
the planner is checked before any of it is stored (``loop.scheduler.check_proposals``): a
point outside the campaign's space or its constraints, or a plugin's ``ingest`` or ``suggest``
that raises (``loop.scheduler.call_planner``), stops the campaign (``PlannerError``) once the
trials in flight are measured and stored.

A faulty instrument costs a trial, not the campaign. Each run may be limited by
``instrument.timeout`` (the Dispatcher aborts it through the RunEngine; the trial fails,
"timed out after N s", with its documents stored). A *transient* failure (a timeout, or a
fault the instrument flags as transient) is retried up to ``instrument.max_retries`` times
at the same point. Every attempt is its own trial row, with its own Bluesky run: a retry
has ``kind='retry'`` and its start document carries ``retry_of`` (the first attempt's store
``trial_id``) and ``attempt`` (2, 3, ...). The planner sees only the last attempt of a point, and a
transient failure on a point's first attempt (``max_retries: 0``) teaches it nothing (it
learns the trial as abandoned), so a flaky instrument never teaches the model that a point
is bad; a point whose retries all failed too is learned as failed, because failing every
attempt is what a point the instrument cannot measure does. Every failed attempt counts
toward ``budget.max_failures``, because a flaky instrument is what that budget is for.
NaN/inf outputs and readbacks outside the declared bounds fail a trial too: the values are
stored, but the planner receives ``outcome='failed'``, never the numbers.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import secrets
import signal
import statistics
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from numbers import Integral
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, runtime_checkable

import numpy as np
from sqlalchemy.exc import OperationalError

from instruments import (
    STREAM_NAME,
    Dispatcher,
    DocumentSinkError,
    Instrument,
    ManualInstrument,
    TrialInterrupted,
    TrialResult,
    build_instrument,
    describe_instrument,
    input_specs,
    open_executor,
    safe_state_failures,
    slot_seed,
    write_safe_state,
)
from instruments._dispatch import closing_stop_document, outputs_and_readbacks
from instruments._errors import InstrumentConfigError
from instruments._plans import READBACK_KEYS_MD
from loop.config import (
    Budget,
    Campaign,
    LoadedCampaign,
    StoredCopy,
    parse_campaign,
    parse_duration,
)
from loop.consumers import STOPPED_DRAIN, QueuedConsumer, drain_consumers
from loop.errors import (
    CampaignConfigError,
    ClosedLoopError,
    StoreError,
    cli_command,
    first_line,
    resume_command,
)
from loop.failures import (
    OPERATOR_FAILED,
    OPERATOR_KIND,
    READBACK_MISSED,
    STEP_REFUSED,
    UNMEASURED,
    WORKER_LOST,
    Failure,
    failure,
    failure_counts,
    failure_kind,
    failures_of,
    transient_failure,
    was_transient,
)
from loop.fmt import span
from loop.lock import LEASE_TTL, CampaignLease, running_namesake
from loop.prior import PriorRow, load_prior_data, required_outputs
from loop.provenance import new_campaign_session, seed_source, start_session
from loop.report import objective_values
from loop.retries import (
    OwedRetry,
    Retry,
    announced_retries,
    attempts,
    retry_links,
    stored_owed,
)
from loop.scheduler import (
    Job,
    PlannerError,
    PluginRaised,
    Proposal,
    Proposed,
    Scheduler,
    Slot,
    SlotDone,
    call_planner,
)
from loop.store import (
    STOP_REQUESTS,
    TERMINAL,
    UNFINISHED,
    CampaignRow,
    LeaseLost,
    Store,
    StoreGone,
    TrialRow,
    TrialStatus,
    as_utc,
    known_budget,
    path_from_text,
)
from planners import (
    Observation,
    OutcomeConstraint,
    Planner,
    PlannerConfig,
    Point,
    hypervolume,
    make_planner,
    pareto_mask,
)
from planners import reference_point as infer_reference_point
from planners._outliers import best_index, best_trace
from planners._pareto import front_after
from simulators._keys import misnamed

logger = logging.getLogger(__name__)
# A model planner rebuilt from more stored trials than this is said to take a while.
_QUIET_FIT_MAX = 1000
# A trial running over HANG_FACTOR times the campaign's median trial (its last HANG_WINDOW
# completed ones, at least HANG_MIN_TRIALS of them) and over HANG_MIN_SECONDS, with no
# instrument.timeout to end it, gets a warning (``_HangWatch``). Tests lower them.
HANG_FACTOR = 10.0
HANG_MIN_SECONDS = 60.0
HANG_MIN_TRIALS = 3
HANG_WINDOW = 100
_RESUME_STREAM = 1  # seed-derivation tag of resumed sessions (see _instrument_seed)
# Appended to the error of the trial that retired its slot; `closedloop status` finds it.
_RETIRED = "slot {slot} retired: "
_NO_OPERATOR = (
    "campaign '{name}' has `instrument: manual`: an operator enters each result, and this "
    "runner has none, so nothing was started or stored. From Python, pass `operator=` (an "
    "object whose `measure(number, parameters)` returns a `loop.runner.ManualEntry`); or run "
    "it in a terminal with `closedloop run FILE`, which asks for each result; or use "
    "`closedloop suggest`/`tell`"
)


def _all_retired(sched: Scheduler) -> str:
    """The stop reason when no slot is left."""
    slots = "; ".join(f"slot {s.index}: {s.retired}" for s in sched.retired())
    return f"every instrument slot was retired ({slots}); check the instruments"


class CampaignFinished(ClosedLoopError):
    """``resume`` of a campaign whose budget is already spent (it says how to extend it)."""


# ---------------------------------------------------------------------------- stop signals
#: Seconds a second stop signal waits for the safe state to be written (``stop_on_signals``).
SAFE_STATE_WAIT = 10.0
#: The exit code of a command that left an instrument's safe state unwritten, whatever else
#: ended it: a wrapper (`closedloop run ... && next_sample`) must not read "done" or even
#: "interrupted" then (found in review: a completed run said SAFE STATE NOT WRITTEN, exit 0).
EXIT_UNSAFE = 3


def signal_name(signum: int) -> str:
    """How a stop signal is named to the user (and in the stop reason)."""
    if signum == signal.SIGINT:
        return "Ctrl-C"
    if signum == signal.SIGHUP:
        return "SIGHUP (terminal closed)"
    return signal.Signals(signum).name


def after_in_flight(runner: Runner) -> str:
    """When a stop asked for now takes effect: after the trials being measured are aborted
    and stored, counted (with several slots, "the current trial" read as one; found in
    review). Reads the scheduler's slots only (safe in a signal handler)."""
    scheduler = getattr(runner, "_scheduler", None)
    n = scheduler.in_flight() if scheduler is not None else 0
    if n == 1:
        return "after the trial in flight is aborted and stored"
    if n > 1:
        return f"after the {n} trials in flight are aborted and stored"
    return "before the next trial starts"


def _say(text: str) -> None:
    """Write to file descriptor 2 at once: safe in a signal handler, which may have
    interrupted the main thread inside a write to ``sys.stderr`` (a notebook kernel
    forwards what the descriptor gets to the cell)."""
    try:
        os.write(2, text.encode())
    except (OSError, ValueError):  # a closed stderr must not turn a stop into a crash
        pass


@contextmanager
def stop_on_signals(
    runner: Runner,
    signals: Sequence[int] = (signal.SIGINT,),
    *,
    exit_process: bool = False,
    say: Callable[[str], None] = _say,
) -> Iterator[list[int]]:
    """What a stop signal means while ``runner`` drives a campaign, for the command line
    (``exit_process``; SIGINT, SIGTERM and SIGHUP) and for Python (SIGINT: Ctrl-C, or a
    notebook's interrupt; ``Runner.run``/``resume`` install it themselves). Yields the
    signals received so far.

    The first signal asks the runner to stop (``request_stop``): a trial being measured is
    aborted through the RunEngine (its stop document is stored, the trial is ``abandoned``),
    a proposal in the making is dropped, the instruments' safe state is written, and the
    campaign is marked ``stopped``. The handler raises nothing: a ``KeyboardInterrupt``
    raised at whatever bytecode the signal lands on had cut the loop between taking a
    trial's outcome and recording it, and the stop then waited 60 s for that slot (found in
    review). The second writes the safe state (``Runner.write_safe_state``, at most
    :data:`SAFE_STATE_WAIT` s: a device whose stop hangs was why the first did not finish),
    then, on the command line, exits like a kill (SQLite rolls back the one transaction that
    may be open, every committed row stays, ``resume`` reconciles the trial in flight;
    exiting at once had left a heater on, found in review); from Python it stops without
    waiting for the trials in flight (``Runner.stop_now``: they stay ``running`` for
    ``resume`` to reconcile), the interpreter (a notebook's kernel) living on. A third exits
    at once, saying the safe state was not written (command line), or raises
    ``KeyboardInterrupt`` where the runner is (Python).

    Handlers are installed only on the main thread (Python delivers signals there), and a
    signal the process was started to ignore stays ignored: `nohup closedloop run` must
    outlive the terminal (found in review: SIGHUP stopped it once handled here).
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    if exit_process:
        again = "writes the safe state and stops at once"
    else:
        again = "writes the safe state and stops without waiting for the trials in flight"

    def handler(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        name = signal_name(signum)
        if len(received) == 1 and runner._draining:
            say(f"\n{name}: not waiting for the live consumers any more (all is stored)\n")
            runner.request_stop(f"stopped by {name}")
            return
        if len(received) == 1:
            say(f"\n{name}: stopping {after_in_flight(runner)}; {name} again {again}\n")
            runner.request_stop(f"stopped by {name}")
            return
        if len(received) == 2:
            if exit_process:
                resume = cli_command("resume", runner.store.url, runner.campaign_id)
                then = (
                    "once more exits without it), then stopping at once; the store is "
                    f"consistent and `{resume}` continues the campaign"
                )
            else:
                then = (
                    "once more raises KeyboardInterrupt at once), then stopping without "
                    "waiting for the trials in flight: they stay `running` until resume "
                    "reconciles them from their documents"
                )
            say(f"\n{name} again: writing the safe state (at most {SAFE_STATE_WAIT:g} s; {then}\n")
            problems = runner.write_safe_state(timeout=SAFE_STATE_WAIT)
            for problem in problems:
                say(f"SAFE STATE NOT WRITTEN: {problem}\n")
            if exit_process:
                os._exit(EXIT_UNSAFE if problems else 130)
            runner.stop_now()
            return
        if exit_process:
            say(f"\n{name} a third time: SAFE STATE NOT WRITTEN; exiting at once\n")
            os._exit(EXIT_UNSAFE)
        say(f"\n{name} a third time: stopping where the runner is\n")
        raise KeyboardInterrupt(f"stopped by {name} a third time")

    handled = [sig for sig in signals if signal.getsignal(sig) is not signal.SIG_IGN]
    previous = {sig: signal.signal(sig, handler) for sig in handled}
    try:
        yield received
    finally:
        # Once a stop was asked for, a process that exits on the second signal is on its
        # way out: keep the handler so a second signal during the exit still means "at
        # once", not a traceback in teardown. From Python the interpreter goes on.
        if not (exit_process and received):
            for sig, old in previous.items():
                signal.signal(sig, old)


class _QuietEngines(logging.Filter):
    """Drops what bluesky logs of the runner's own RunEngines on every failed or aborted run:
    "Run aborted" with a whole traceback, and "No open traces left to close!". The loop
    records each such trial itself, its error naming what failed (a user function's file
    and line among it). The command line sets bluesky's loggers to CRITICAL unless ``-v``;
    from Python, 10 trials with ``failure_rate: 0.3`` printed 319 lines of tracebacks into
    the notebook (found in review). Installed on the ``bluesky`` logger for one
    ``run``/``resume`` only, never a change of the user's logging levels; with that logger
    set to DEBUG (``-v``, or ``logging.getLogger("bluesky").setLevel(logging.DEBUG)``) every
    record passes."""

    LOGGER = "bluesky"
    ROUTINE = ("Run aborted", "No open traces left to close!")

    def __init__(self, runner: Runner) -> None:
        super().__init__()
        self.runner = runner

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in self.ROUTINE:
            return True
        if logging.getLogger(self.LOGGER).isEnabledFor(logging.DEBUG):
            return True
        engines = self.runner._engines
        engine = getattr(record, "RE", None)  # "Run aborted": the engine says which
        if engine is not None:
            return not any(mine is engine for mine in engines)
        threads = [getattr(engine, "_th", None) for engine in engines]  # its event loop's
        return not any(t is not None and t.ident == record.thread for t in threads)


@contextmanager
def _quiet_engines(runner: Runner) -> Iterator[None]:
    quiet = _QuietEngines(runner)
    log = logging.getLogger(_QuietEngines.LOGGER)
    log.addFilter(quiet)
    try:
        yield
    finally:
        log.removeFilter(quiet)


@dataclass(frozen=True)
class Spent:
    """A spent budget (``Runner.spent``): the rule that holds, what it makes the campaign
    and why, and the command-line option that would let it go on."""

    rule: str  # target, patience, max_trials, max_duration or max_failures
    status: str  # completed or failed
    reason: str
    option: str | None  # e.g. "--max-trials 12"; None: no budget extends it (extension_hint)


def extension_hint(rule: str, *, completed: int, failed: int, elapsed: float) -> str | None:
    """The option (of ``resume`` and ``suggest``) that lets a campaign stopped by the budget
    rule ``rule`` go on: ten more completed trials or failures than so far, or as much
    running time again as it has had, from a minute to an hour more (rounded up to minutes,
    written as :func:`option_duration` does; an hour more for every campaign offered a
    campaign of 3.5 s ``--max-duration 61m``, found in review). ``None``
    for ``target`` and ``patience``: a campaign that met its goal or stopped improving goes
    on only as a new campaign from its data. Decided from the rule, never from the reason's
    text.
    """
    if rule in ("target", "patience"):
        return None
    if rule == "max_duration":
        more = min(3600.0, max(60.0, elapsed))
        return f"--max-duration {option_duration(math.ceil((elapsed + more) / 60))}"
    if rule == "max_failures":
        return f"--max-failures {failed + 10}"
    return f"--max-trials {completed + 10}"


def option_duration(minutes: int) -> str:
    """``minutes`` as a person types a duration option, exactly, in a form
    ``loop.config.parse_duration`` reads: ``62m`` below two hours (``loop.fmt.span`` shows
    minutes there too), else days, hours and minutes, each only when not zero (``3d1h``,
    ``2h5m``, ``1d30m``). A hint of three days' running time read ``--max-duration 4381m``,
    a number to divide by 1440 before knowing what it allows (found in review).
    """
    if minutes < 120:
        return f"{minutes}m"
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (mins, "m")) if n)


@dataclass
class TrialTiming:
    """Where one trial's wall time went (seconds).

    ``overhead`` is the engine's own cost: wall time minus planner time minus the time the
    instrument spent measuring (simulated latency or real hardware time).
    """

    suggest: float
    dispatch: float
    total: float
    instrument_busy: float

    @property
    def overhead(self) -> float:
        return max(self.total - self.suggest - self.instrument_busy, 0.0)


@dataclass
class TrialReport:
    """What a listener hears when a trial ends."""

    number: int
    trial_id: int
    status: str
    parameters: Point
    outputs: dict[str, float]
    objective: float | None
    best: float | None
    error: str | None
    timing: TrialTiming
    kind: str = "model"
    retry_of: int | None = None  # the first attempt's trial_id (the store's id)
    attempt: int = 1
    will_retry: bool = False
    slot: int = 0
    # where the instrument says it was (readbacks), or the values told as actually used
    readbacks: dict[str, Any] = field(default_factory=dict)
    # a completed feasible trial whose objective value is far outside every other one (an
    # overrange sentinel): left out of ``best`` (``planners._outliers.best_index``); one
    # objective only (``Runner._rank``)
    outlying: bool = False
    # several objectives: how many completed trials make the feasible Pareto front once this
    # one has ended, and whether this one is on it (``Runner._rank``); with several
    # objectives ``best`` (of the first alone) says little
    front: int | None = None
    on_front: bool = False


@dataclass(frozen=True)
class Reconciled:
    """A trial found in flight when a campaign resumed, and what became of it."""

    number: int
    trial_id: int
    status: TrialStatus
    error: str | None


@dataclass
class ResumeState:
    """Where a resumed campaign stands before its first new trial (for listeners)."""

    campaign_id: int
    completed: int
    failed: int
    abandoned: int
    elapsed_before: float
    reconciled: list[Reconciled]
    best: TrialReport | None
    takeover: str | None = None
    front: int | None = None  # several objectives: trials on the feasible Pareto front
    # trials whose retry was owed (resume runs it first), and retries cut off twice in a row
    # (not run again: their points go back to the planner)
    retrying: list[OwedRetry] = field(default_factory=list)
    given_up: list[int] = field(default_factory=list)


@dataclass
class CampaignSummary:
    """The outcome of ``Runner.run`` or ``Runner.resume``.

    Counts are over the whole campaign (every session); ``elapsed`` and ``timings`` are this
    session's.
    """

    campaign_id: int
    name: str
    status: str
    reason: str
    completed: int
    failed: int
    best: TrialReport | None
    elapsed: float
    timings: list[TrialTiming] = field(default_factory=list)
    abandoned: int = 0
    reconciled: list[Reconciled] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    prior: int = 0
    feasible: int = 0
    pareto: list[TrialReport] = field(default_factory=list)
    hypervolume: float | None = None
    objectives: list[str] = field(default_factory=list)
    outcome_constraints: list[str] = field(default_factory=list)
    # completed feasible trials left out of ``best``: far outside every other reading
    outlying: list[TrialReport] = field(default_factory=list)
    # what of the instruments' safe state could not be written as the session ended (the
    # setpoint PV named): the operator must see to the hardware; the command exits 3
    unsafe: list[str] = field(default_factory=list)

    @property
    def failure_counts(self) -> dict[str, int]:
        """Failed trials by kind of failure, most frequent first."""
        return failure_counts(self.failures)

    @property
    def feasibility_rate(self) -> float | None:
        """Share of the campaign's completed trials (priors excluded) meeting every outcome
        constraint; ``None`` before the first completed trial."""
        return self.feasible / self.completed if self.completed else None


@dataclass(frozen=True)
class ManualEntry:
    """What the operator reported for one trial of an ``instrument: manual`` campaign.

    Attributes:
        outputs: output name -> measured value (every declared output; for a failed trial,
            those typed before ``fail``).
        actual: parameters actually used where they differ from the commanded ones; they
            are read back (stored as readbacks) and the model learns from them.
        failed: the operator's reason when the trial is to be recorded as failed (with
            ``outputs``, the values typed before it: stored, not learned from).
        stop: set when the operator stopped (or their input ended, or Ctrl-C) after
            entering every output: the trial is recorded as measured, then the campaign
            stops with this reason. Stopping must not throw a typed measurement away.
    """

    outputs: dict[str, float] = field(default_factory=dict)
    actual: dict[str, Any] = field(default_factory=dict)
    failed: str | None = None
    stop: str | None = None


class OperatorStop(ClosedLoopError):
    """The operator asked to stop the campaign (or their input ended): resumable."""


class Operator(Protocol):
    """Who carries out the trials of an ``instrument: manual`` campaign.

    ``measure`` is called on the runner's thread (the main thread under ``closedloop run``),
    after the trial row is committed and before its Bluesky run, and returns what was
    measured; it raises ``OperatorStop`` to stop the campaign. A Ctrl-C while it waits
    interrupts it (``Runner.request_stop`` raises into it on the main thread).
    """

    def measure(self, number: int, parameters: Point) -> ManualEntry: ...


class OperatorInterrupted(Exception):
    """Raised into a waiting ``Operator.measure`` by a stop request on the main thread.

    An operator may catch it to keep what was already entered (``ManualEntry.stop``).
    """


class SuggestionsPending(ClosedLoopError):
    """``resume`` of a campaign whose ``closedloop suggest`` trials still await ``tell``."""


class RunListener(Protocol):
    """Receives progress; the CLI draws it, tests and benchmarks record it."""

    def trial_started(self, number: int, parameters: Point) -> None: ...

    def trial_finished(self, report: TrialReport) -> None: ...


@runtime_checkable
class ResumeListener(Protocol):
    """Optional extra for a listener: told where a resumed campaign stands."""

    def campaign_resumed(self, state: ResumeState) -> None: ...


@runtime_checkable
class SlotListener(Protocol):
    """Optional extra for a listener: told when an instrument slot is retired."""

    def slot_retired(self, slot: int, reason: str) -> None: ...


class _Silent:
    def trial_started(self, number: int, parameters: Point) -> None:
        pass

    def trial_finished(self, report: TrialReport) -> None:
        pass


@dataclass
class _Tally:
    """The campaign's counts over every session, kept current by the loop.

    ``completed`` counts the campaign's own completed trials (what ``max_trials`` limits);
    prior-data trials are counted apart in ``prior``. ``best`` is the best *feasible*
    completed trial (priors included: they are measurements), by the first objective, the
    ``outlying`` ones (far outside every other reading) left out (``Runner._rank``).
    ``done`` lists every completed trial, priors first, in the order they ended, for target
    and patience (``_ended_order``).
    """

    completed: int = 0
    abandoned: int = 0
    best: TrialReport | None = None
    outlying: list[TrialReport] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    prior: int = 0
    feasible: int = 0
    done: list[_Done] = field(default_factory=list)
    failed_slots: dict[int, int] = field(default_factory=dict)  # failed trials by slot
    front: int | None = None  # several objectives: trials on the feasible Pareto front
    front_members: list[_Done] | None = None  # those trials, kept for the next one to join
    front_of: int = 0  # how many of ``done`` they were ranked from
    # ``Runner._out_of_patience``'s verdict and the number of completed trials it judged
    patience: tuple[int, str | None] | None = None

    @property
    def failed(self) -> int:
        """Failed trials (what ``max_failures`` limits): one ``Failure`` each."""
        return len(self.failures)


@dataclass(frozen=True)
class _Done:
    """A completed trial as the stopping rules see it."""

    number: int
    prior: bool
    values: tuple[float, ...]  # objective values in objective order (NaN where missing)
    feasible: bool
    report: TrialReport = field(compare=False, repr=False)


class _HangWatch:
    """Warns once per trial that has run far longer than the campaign's typical trial while
    no ``instrument.timeout`` can end it.

    Without a timeout a trial that hangs holds its slot for ever: when it holds the last of
    ``max_trials`` the other slots idle and the campaign stalls without a word (found in
    review). Nothing can tell a hang from a long measurement, so this only says so, naming
    the trial, the slot and the setting. "Far longer" is over ``HANG_FACTOR`` x the median
    of the last completed trials (the median: a few slow trials must not raise it) and
    over ``HANG_MIN_SECONDS`` (a campaign of 50 ms trials has no hang at 0.5 s); no median
    is trusted before ``HANG_MIN_TRIALS`` trials completed, and a resumed campaign starts
    from its stored trials' durations. The loop calls :meth:`check` on each pass (about
    ten a second): a comparison per trial in flight, the median worked out only when a
    trial completes.

    A trial's time is its time working: the seconds it waited for its interlocks (or for a
    free worker) are not counted, by the dispatcher's own clock of them, the one its
    timeout watchdog subtracts (:meth:`started`). A trial held by an open door is not
    hung, and the warning's "stop the campaign" misled the operator waiting for the door
    (found in review); nor does one long wait raise the typical trial.
    """

    def __init__(self, durations: Iterable[float], resume: str) -> None:
        self._durations: deque[float] = deque(durations, maxlen=HANG_WINDOW)
        self._resume = resume  # the command the warning names, with its store and campaign
        self._limit: float | None = None  # worked out again after a trial completes
        self._warned: set[int] = set()
        # trial id -> its dispatcher's wait clock and the clock's reading when it started
        self._waits: dict[int, tuple[Callable[[], float], float]] = {}

    def started(self, trial_id: int, dispatcher: Dispatcher) -> None:
        """A trial is sent to ``dispatcher``: from now its waits are not counted.

        ``Dispatcher.waited_clock`` is the clock its watchdog times ``instrument.timeout``
        with (interlock waits, and a detector's wait for a worker); reused, not rebuilt, so
        the warning and a timeout agree on how long a trial has worked.
        """
        waited = dispatcher.waited_clock()
        self._waits[trial_id] = (waited, waited())

    def finished(self, trial_id: int, seconds: float, *, completed: bool) -> None:
        """A trial of this campaign ended after ``seconds`` in flight; a completed one
        counts toward the typical trial, without its waits."""
        working = self._working(trial_id, seconds)
        self._waits.pop(trial_id, None)
        if completed:
            self.completed(working)

    def completed(self, seconds: float) -> None:
        """A trial of this campaign completed after working ``seconds``."""
        self._durations.append(seconds)
        self._limit = None

    def _working(self, trial_id: int, seconds: float) -> float:
        """``seconds`` in flight, less what the trial has waited meanwhile."""
        clock = self._waits.get(trial_id)
        if clock is None:
            return seconds
        waited, at_start = clock
        return seconds - (waited() - at_start)

    def limit(self) -> float | None:
        """Seconds after which a trial in flight is warned about; ``None``: no typical yet."""
        if len(self._durations) < HANG_MIN_TRIALS:
            return None
        if self._limit is None:
            typical = statistics.median(self._durations)
            self._limit = max(HANG_FACTOR * typical, HANG_MIN_SECONDS)
        return self._limit

    def check(self, slots: Sequence[Slot], now: float) -> None:
        """Warn about each trial in flight on ``slots`` past the limit (once per trial)."""
        limit = self.limit()
        if limit is None:
            return
        for slot in slots:
            job = slot.job
            if job is None or job.trial_id in self._warned or now - job.started <= limit:
                continue  # cheap first: a trial's waits only ever shorten its time
            working = self._working(job.trial_id, now - job.started)
            if working <= limit:
                continue
            self._warned.add(job.trial_id)
            typical = statistics.median(self._durations)
            logger.warning(
                "trial %d on slot %d has run for %.0f s, over %gx this campaign's typical "
                "trial (median %.3g s), and no instrument.timeout is set to end it if it "
                "hangs. If it does, stop the campaign (Ctrl-C: the trial is stored abandoned; "
                "`%s` goes on); `timeout: %d` (seconds) under `instrument:` "
                "makes a new campaign fail and retry such a trial by itself",
                job.number,
                slot.index,
                working,
                HANG_FACTOR,
                typical,
                self._resume,
                max(math.ceil(HANG_FACTOR * typical), 1),
            )


class Runner:
    """Drives one campaign to its budget, storing every trial; resumes it after any stop.

    Args:
        loaded: the validated campaign.
        store: where trials, observations and documents go.
        seed: overrides the file's seed (a random seed is drawn and stored when neither).
        max_trials: overrides ``budget.max_trials``.
        max_failures: overrides ``budget.max_failures``.
        max_duration: overrides ``budget.max_duration`` (seconds).
        listener: progress receiver.
        instrument_factory: builds the instrument; tests and benchmarks may wrap it.
        lease_ttl: seconds the campaign's lease outlives this runner's last heartbeat.
        operator: enters the results of an ``instrument: manual`` campaign (required for
            one; the CLI passes a terminal prompt).
        subscriptions: Bluesky callbacks ``(name, doc)`` subscribed to every slot's
            RunEngine, so a facility's live consumers (a Kafka publisher, a TiledWriter, a
            BestEffortCallback) see each trial's documents. The store gets them first;
            each callback then gets them in order from a thread of its own
            (:class:`loop.consumers.QueuedConsumer`), so a slow or hung server never holds
            a trial. One that raises is logged (once per callback) and never fails a trial.
    """

    def __init__(
        self,
        loaded: LoadedCampaign,
        store: Store,
        *,
        seed: int | None = None,
        max_trials: int | None = None,
        max_failures: int | None = None,
        max_duration: float | None = None,
        listener: RunListener | None = None,
        instrument_factory: Callable[[Campaign, int], Instrument] | None = None,
        lease_ttl: float = LEASE_TTL,
        operator: Operator | None = None,
        subscriptions: Sequence[Callable[[str, dict[str, Any]], Any]] = (),
    ) -> None:
        # A notebook's natural slips (a path for the campaign, a URL for the store) failed
        # deep inside as AttributeError (found in review, session 39): said with the call.
        if not isinstance(loaded, LoadedCampaign):
            file = str(loaded) if isinstance(loaded, str | os.PathLike) else "campaign.yaml"
            raise TypeError(
                f"Runner takes a loaded campaign, not {type(loaded).__name__} {loaded!r}: "
                f"Runner(load_campaign({file!r}), Store('sqlite:///runs.db'))"
            )
        _check_store(store, "Runner(loaded, {})")
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed < 2**32
        ):
            # the campaign file's own rule (ge=0, lt=2**32; review AC)
            raise TypeError(f"seed must be a whole number in [0, 2**32), not {seed!r}")
        if seed is not None:
            seed = int(seed)  # a NumPy integer failed deep inside, stored as JSON (review AD)
        self.loaded = loaded
        self.operator = operator
        # Each consumer on a thread of its own (loop.consumers): a slow or hung server must
        # not hold the trials. The instrument file's consumers join them per session.
        self.subscriptions = [
            QueuedConsumer.of(cb, replay=self._replay_where) for cb in subscriptions
        ]
        self._file_consumers: list[QueuedConsumer] = []
        # Set by every request_stop: a stop asked for shortens the wait for the consumers'
        # last documents, and one asked while they are waited for ends it.
        self._stop_asked = threading.Event()
        self._draining = False
        # resume: the last heartbeat of the runner that died holding the campaign (Unix s)
        self._last_alive: float | None = None
        #: What of the instruments' safe state the last session could not write (the
        #: setpoint PV named), however it ended, an error included: the command exits 3.
        self.unsafe: list[str] = []
        self._asking_operator = False
        # The operator typed `stop` (or their input ended): a stop they asked for, as a
        # Ctrl-C is (the command's exit code says which stops were asked for).
        self.operator_stopped = False
        # An operator's `closedloop stop` (another process) stopped it: asked for, too.
        self.stop_asked = False
        # Stopped by a misnamed key in the user's function: code to fix, not a condition to
        # wait out (the command's exit code is 1, not "try again later").
        self.code_stopped = False
        self.campaign = loaded.campaign
        self.store = store
        self.seed_source = seed_source(seed, self.campaign.seed)  # for the session record
        if seed is None:
            seed = self.campaign.seed
        self.seed = seed if seed is not None else secrets.randbelow(2**31)
        self.budget = _override(
            self.campaign.budget,
            max_trials=max_trials,
            max_failures=max_failures,
            max_duration=max_duration,
        )
        self.listener: RunListener = listener or _Silent()
        self._instrument_factory = instrument_factory or self._default_instrument
        self.space = self.campaign.space
        self.objective = self.campaign.objectives[0]
        self.lease = CampaignLease(store, ttl=lease_ttl)
        self.campaign_id: int | None = None
        self._budget_changed = False
        self._stop_request: str | None = None
        self._stop_now = False  # a second stop signal: do not wait for the runs in flight
        # A stop the operator asked for once every output was entered: it takes effect when
        # that trial's run is recorded (a stop request would abort the run in flight).
        self._stop_after: str | None = None
        self._scheduler: Scheduler | None = None
        self._built_slots: list[Slot] = []  # built, before a scheduler owns them
        # The RunEngines of this run/resume, until it returns (closing them logs too).
        self._engines: list[Any] = []
        # Trials whose slot did not stop when the session ended: left `running` for resume
        # to reconcile, so their late documents are no longer this runner's to write.
        self._left_running: set[int] = set()
        self._executor: Any = None  # an open instruments executor (Dask), per session
        self._hold: Any = None  # this session's hold on a declared instrument (_build_slots)
        self._hangs: _HangWatch | None = None  # per session, without instrument.timeout
        self._campaign_uid: str | None = None  # see campaign_uid
        self._first_field_outputs: bool | None = None  # see first_field_outputs
        self._stored: StoredCopy | None = None  # from_store's: the texts are the store's
        self._session_md: dict[str, Any] = {}  # every run's of this session (start_session)
        self._side_gaps_said: set[str] = set()  # see _say_side_gaps
        # The trials stored when this runner's recorded session began, while it has proposed
        # nothing since (a `suggest FILE` that created the campaign): its first suggest is
        # that session, not another (loop.provenance.suggest_session).
        self.session_unproposed: int | None = None

    @property
    def max_trials(self) -> int | None:
        """The completed-trial budget in force."""
        return self.budget.max_trials

    @classmethod
    def from_store(
        cls,
        store: Store,
        campaign: str | int | None = None,
        *,
        max_trials: int | None = None,
        max_failures: int | None = None,
        max_duration: float | None = None,
        listener: RunListener | None = None,
        instrument_factory: Callable[[Campaign, int], Instrument] | None = None,
        lease_ttl: float = LEASE_TTL,
        operator: Operator | None = None,
        proposes: bool = True,
        subscriptions: Sequence[Callable[[str, dict[str, Any]], Any]] = (),
    ) -> Runner:
        """A runner for a stored campaign, ready to ``resume()``.

        The campaign is rebuilt from the YAML text kept in its row (no file needed; a
        user-function path resolves against the original file's folder), with the stored
        seed and the stored budget (overrides given here are applied on top and recorded).
        Rules added since the campaign was stored keep it as it was accepted, with a warning,
        and a refusal names the store's copy and a way on (``loop.config.parse_campaign``).
        A ``function:`` campaign's file is not imported here (the store names it; reading
        the campaign runs none of its code): ``resume()`` imports it, once nothing is left
        to refuse, and refuses a function that no longer imports in the same words.

        Args:
            store: the store holding the campaign.
            campaign: name or id; the latest unfinished (``running``, ``paused`` or
                ``stopped``) campaign by default.
            proposes: ``False`` for a runner that only records results (``tell``): the
                campaign is not checked against its planner.
        """
        _check_store(store, "Runner.from_store({}, campaign)")
        row = store.campaign(campaign) if campaign is not None else store.latest_unfinished()
        path = path_from_text(row.config_path)  # a name that is not UTF-8 is stored escaped
        base_dir = path.parent
        if not base_dir.is_dir():
            # the campaign's folder was moved or renamed (found in review: a moved project
            # could not be resumed, its function file looked for where it no longer is)
            base_dir = Path.cwd()
            logger.warning(
                "campaign '%s' was started in %s, which no longer exists: the files it names "
                "(function:, a planner plugin) are looked for in the current folder, %s",
                row.name,
                path.parent,
                base_dir,
            )
        loaded = parse_campaign(
            row.config_text,
            path=path,
            base_dir=base_dir,
            instrument_text=row.instrument_text,  # the instrument file as it was at the start
            planner_origin=row.planner_origin,  # a planner plugin's code as it was at the start
            stored=(stored_copy := StoredCopy(store.url, row.id or 0, row.name, proposes=proposes)),
        )
        runner = cls(
            loaded,
            store,
            seed=row.seed,
            listener=listener,
            instrument_factory=instrument_factory,
            lease_ttl=lease_ttl,
            operator=operator,
            subscriptions=subscriptions,
        )
        stored = _stored_budget(row, loaded.campaign.budget)
        runner.budget = _override(
            stored, max_trials=max_trials, max_failures=max_failures, max_duration=max_duration
        )
        runner._budget_changed = runner.budget != stored
        runner.campaign_id = row.id
        runner._stored = stored_copy
        return runner

    def _import_function(self) -> None:
        """Import a stored ``function:`` campaign's function now that the campaign will be
        measured: every refusal has been made (``from_store`` imports nothing, so a refused
        ``resume`` never runs the file), and a function that cannot be imported is refused
        before the campaign is reopened, as reading the campaign refuses a problem. Only
        for the campaign's own instrument (not an ``instrument_factory``'s)."""
        if self._stored is None or self._instrument_factory != self._default_instrument:
            return
        from loop.config import import_stored_function

        import_stored_function(self.loaded, self._stored)

    def _import_planner(self) -> None:
        """Import a stored ``planner: {plugin: ...}`` campaign's planner class and check it,
        as :meth:`_import_function` imports its function: after every refusal, before the
        campaign is reopened, so a plugin that cannot be imported any more is refused with
        the store untouched (``loop.config.import_stored_planner``)."""
        if self._stored is None:
            return
        from loop.config import import_stored_planner

        import_stored_planner(self.loaded, self._stored)

    def _default_instrument(self, campaign: Campaign, seed: int) -> Instrument:
        """The campaign's instrument, connected.

        Raises:
            CampaignConfigError: a stored campaign's instrument refused as it is stored (a
                unit, a safe state outside the device's limits, an output that does not say
                which field it is): the refusal, kept (hardware safety), with a way on that
                works, since editing the instrument file does not change the store's copy.
        """
        try:
            return build_instrument(
                campaign.instrument,
                campaign.parameters,
                base_dir=self.loaded.base_dir,
                seed=seed,
                executor=self._executor,
                first_field_outputs=self.first_field_outputs(),
                import_function=True,  # it measures: a problem is refused before the first trial
            )
        except InstrumentConfigError as exc:
            raise self._as_stored(exc) from exc

    def _as_stored(self, exc: InstrumentConfigError) -> Exception:
        """``exc`` as a stored campaign's refusal, if it is one whose fix is an edit of the
        instrument file (which a stored campaign does not read again): its fix, then the way
        on that ``loop.config.StoredCampaignError`` gives for a stored campaign file. Others
        (not stored; a device class to install) as they are."""
        from instruments._epics import DeviceLimitsError, DeviceTypeError
        from instruments._instrument_file import DiskSafetyConflict, InstrumentFileError

        stored = self._stored
        if stored is None or not isinstance(
            exc, DeviceTypeError | DeviceLimitsError | InstrumentFileError
        ):
            return exc
        file = self.campaign.instrument.file
        path = Path(self.loaded.base_dir) / file if file is not None else self.loaded.path
        line, problem, fix = None, str(exc), ""
        if isinstance(exc, InstrumentFileError):
            path, line, problem, fix = exc.path, exc.line, exc.problem, exc.fix
        export = f"`{cli_command('export', stored.url, stored.campaign_id, '-o trials.csv')}`"
        if isinstance(exc, DiskSafetyConflict):
            # The file on disk is read for its safety settings, so its fix (an edit of the
            # file, or a new campaign with it as it is) holds; only how a new one learns.
            return CampaignConfigError(
                path,
                f"{stored.campaign} in {stored.url}, as stored: {problem}",
                line=line,
                fix=f"{fix} (one that learns from this campaign's trials: {export}, then run "
                "a copy of the campaign file with another name and `prior_data: trials.csv`)",
            )
        way_on = (
            f"the store keeps its own copy of the instrument file, which editing {path.name} "
            "does not change. To go on with a corrected file, start a new campaign that learns "
            f"from this one's trials: {export}, then run a copy of the campaign file with "
            "another name and `prior_data: trials.csv`"
        )
        return CampaignConfigError(
            path,
            f"{stored.campaign} in {stored.url}, as stored: {problem}",
            line=line,
            fix=f"{fix}; or: {way_on}" if fix else way_on,
        )

    def first_field_outputs(self) -> bool:
        """Whether this campaign's plugin outputs without ``key:`` keep reading their first
        field: its first stored run was measured by a closedloop that read that (before
        outputs followed hints; its start documents carry no ``trial_number``, added with
        it). Reading the hinted field from then on would put another quantity into the
        same objective mid-campaign, or refuse to resume one whose device hints none.
        The first run decides, so the runs a resume adds (which do carry
        ``trial_number``) do not switch it later. ``False`` for a campaign with no stored
        run yet. Read once per runner.
        """
        if self._first_field_outputs is None:
            self._first_field_outputs = False
            cid = self.campaign_id
            for trial in self.store.trials(cid) if cid is not None else []:
                if trial.run_uid is None or trial.id is None:
                    continue
                start = next(
                    (d.body for d in self.store.documents(trial.id) if d.name == "start"), None
                )
                if start is not None:
                    self._first_field_outputs = "trial_number" not in start
                    break
        return self._first_field_outputs

    # ----------------------------------------------------------------- stopping
    def request_stop(self, reason: str) -> None:
        """Stop after the current step: abort the trials being measured, propose no more.

        Safe to call from a signal handler or another thread: it only records the request
        and wakes the loop, which aborts every run in flight itself (``_drain``), outside
        any store write. Aborting here would deadlock a signal handler: it runs on the
        coordinator's thread, perhaps inside a store write, and the RunEngines that must
        take the abort may be waiting in their document sinks for that write's lock. An
        aborted trial is stored as ``abandoned`` (with its documents) and the campaign as
        ``stopped``, resumable.
        """
        self._stop_request = reason
        self._stop_asked.set()
        if self.store.stop_waiting():  # a store held up: its waiting writes fail, and say so
            logger.warning(
                "stopping while the store %s takes no writes: what is measured and not yet "
                "stored is logged here; `%s` continues from what it holds",
                self.store.url,
                cli_command("resume", self.store.url, self.campaign_id),
            )
        if self._asking_operator and threading.current_thread() is threading.main_thread():
            # A signal handler on the main thread, which is blocked reading the operator's
            # answer: interrupt the prompt (a read restarted after the handler would wait on).
            self._asking_operator = False
            raise OperatorInterrupted(reason)
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.wake()

    def request_stop_after_trials(self, reason: str) -> None:
        """Stop once the trials being measured are measured and stored: start no new one,
        propose no more (``closedloop stop``; the Python API's gentle stop). A trial waits
        at its instrument's interlocks as long as they do not hold, so a paused campaign
        stops once they do; :meth:`request_stop` aborts instead. Safe from another
        thread."""
        if self._stop_after is None and self._stop_request is None:
            self._stop_after = reason
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.wake()

    def _take_stop_request(self) -> None:
        """Act on an operator's ``closedloop stop`` recorded in the store: the lease's
        heartbeat thread calls this after each beat (a stop while trials are measured, or
        the campaign waits), the coordinator before it starts a trial."""
        cid = self.campaign_id
        if cid is None:
            return
        event = self.store.take_stop(cid, outcome="taken by the runner ({kind})")
        if event is None:
            return
        reason = f"stopped by `closedloop stop` ({event.by or 'the operator'})"
        if event.detail:
            reason += f": {event.detail}"
        self.stop_asked = True
        if event.kind == "abort":
            logger.warning("%s; aborting the trials in flight", reason)
            self.request_stop(reason)
        else:
            logger.warning("%s; stopping once the trials in flight are stored", reason)
            self.request_stop_after_trials(reason)

    def _close_stop_requests(self, cid: int, outcome: str) -> None:
        try:
            self.store.close_requests(cid, outcome=outcome, kinds=STOP_REQUESTS)
        except Exception as exc:  # the store gone or full: the next session closes them
            logger.warning("campaign %s: open stop requests not closed: %s", cid, exc)

    def stop_now(self) -> None:
        """Stop without waiting for the trials in flight: they stay ``running`` in the store
        for ``resume`` to reconcile from their documents, as after a kill (a second stop
        signal from Python, ``stop_on_signals``). Safe from a signal handler."""
        self._stop_now = True
        self.request_stop(self._stop_request or "stopped at once")

    def live_slots(self) -> list[Slot]:
        """The instrument slots of the session under way (none between sessions)."""
        scheduler = self._scheduler
        return list(scheduler.slots if scheduler is not None else self._built_slots)

    def write_safe_state(self, timeout: float) -> list[str]:
        """Write every instrument slot's safe state now, waiting at most ``timeout`` s;
        return what could not be written.

        For a process about to exit without closing its devices (a second Ctrl-C while the
        first stop hangs on a device; ``loop.cli``): the writes run on their own thread, so
        a write that hangs, or a lock the interrupted main thread holds, costs the timeout,
        not the exit. Safe from a signal handler: it reads the slots, changes nothing.
        """
        if self.lease.lost.is_set():  # the hardware is another runner's now (see _drive)
            return ["the lease was lost: the runner that took the campaign over drives it"]
        slots = self.live_slots()
        problems: list[str] = []

        def write() -> None:
            for slot in list(slots):
                try:
                    problems.extend(write_safe_state(slot.instrument))
                except Exception as exc:  # one slot's failure must not skip the others
                    problems.append(f"slot {slot.index}: {type(exc).__name__}: {exc}")

        writer = threading.Thread(target=write, name="closedloop-safe-state", daemon=True)
        writer.start()
        writer.join(timeout)
        if writer.is_alive():
            problems.append(f"the safe state was not written within {timeout:g} s")
        return problems

    # ----------------------------------------------------------------- entry points
    def run(self, prior: Sequence[PriorRow] | None = None) -> CampaignSummary:
        """Create the campaign in the store and run it until a stop condition.

        Stops when a budget limit is reached (``max_trials``, ``max_duration``, ``target``,
        ``patience``), the instrument fails too often, ``request_stop`` is called, or on
        Ctrl-C or a notebook's interrupt (see :meth:`_interruptible`: the campaign is
        stopped and stored, then ``KeyboardInterrupt`` is raised saying how to resume).

        Args:
            prior: earlier measurements to start from (``loop.prior.load_prior_data``; the
                CLI reads ``prior_data`` and ``--prior``). ``None`` reads the campaign's
                ``prior_data`` file. They are validated before the campaign is created and
                stored as trials of kind ``prior`` before the first proposal.
        """
        self._refuse_manual_without_operator()
        self._stop_request = self._stop_after = None  # a stop from here on is kept
        self._stop_now = False
        self._refuse_read_only()
        return self._interruptible(lambda: self._run(prior))

    def _refuse_read_only(self) -> None:
        """A store opened with ``read_only=True`` runs nothing. It took every write: a
        notebook that opened a shared store to look at it, then ran a cell with a Runner,
        wrote to it without a word (found in review, session 39). A runner over it still
        weighs the stored rules (``status``, ``plan --store``)."""
        if getattr(self.store, "read_only", False):
            raise ClosedLoopError(
                f"store {self.store.url} was opened with read_only=True, and a Runner writes "
                f"its trials there: open it with Store({self.store.url!r}) to run or resume "
                "a campaign"
            )

    def _run(self, prior: Sequence[PriorRow] | None) -> CampaignSummary:
        rows = load_prior_data(self.loaded) if prior is None else list(prior)
        # Devices first: a device that cannot be built (a constructor that raises, a port
        # in use) fails the command before the store holds a campaign that never ran.
        slots = self._build_slots(len(rows))
        try:
            if self._stop_request is not None:  # Ctrl-C while the devices were built
                raise KeyboardInterrupt(self._stop_request)
            cid = self.create(rows, alone=True)
        except BaseException:
            self._close_slots(slots)
            raise
        return self._drive(cid, resumed=False, slots=slots)

    def create(self, prior: Sequence[PriorRow] | None = None, *, alone: bool = False) -> int:
        """Store the campaign and its prior data under this runner's lease; its id.

        ``run`` starts with this; ask/tell (``closedloop suggest FILE``) stops here, so both
        start the campaign from the same stored state (prior trials included). ``alone``
        (``run``): refuse while a campaign of the same name is being run
        (``loop.lock.running_namesake``), in the transaction that creates this one.
        """
        if self.campaign_id is not None:
            raise ClosedLoopError(
                f"this runner already drives campaign {self.campaign_id}; use resume()"
            )
        self._refuse_read_only()
        rows = load_prior_data(self.loaded) if prior is None else list(prior)
        c = self.campaign
        # The file's folder is where its relative paths resolve; store a path in it.
        config_path = self.loaded.base_dir / self.loaded.path.name
        session = new_campaign_session(self, "run" if alone else "suggest", prior=rows)
        # One transaction with the campaign: stored with all its prior data and its first
        # session (who created it, where, with which seed and code) or not at all.
        self.campaign_id = self.store.create_campaign(
            c.name,
            self.loaded.text,
            str(config_path),
            self.seed,
            budget=self.budget.model_dump(mode="json"),
            lease=self.lease.claim,
            instrument_text=self.loaded.instrument_text,
            planner_origin=self.loaded.planner_origin,
            prior=self._prior_trials(rows),
            prior_kind=PRIOR_KIND,
            refuse_namesake=(
                functools.partial(running_namesake, url=self.store.url) if alone else None
            ),
            events=session.events,
        )
        self.lease.adopt(self.campaign_id)
        self._session_md = session.code
        if rows:
            logger.info("stored %d prior-data trials", len(rows))
        return self.campaign_id

    def resume(self) -> CampaignSummary:
        """Continue a stored campaign (from ``Runner.from_store``) after any kind of stop.

        Raises:
            CampaignFinished: the campaign is ``completed``/``failed`` and its budget is
                still spent (pass a larger ``max_trials``/``max_failures`` to extend it).
            CampaignLocked: another live runner holds the campaign.
            SuggestionsPending: trials proposed by ``closedloop suggest`` still await
                ``tell`` (resuming would abandon them).
        """
        self._refuse_manual_without_operator()
        self._refuse_read_only()
        self._stop_request = self._stop_after = None  # a stop from here on is kept
        self._stop_now = False
        return self._interruptible(self._resume)

    def _resume(self) -> CampaignSummary:
        cid = self.refuse_if_finished(python=True)
        # A stop an earlier session was given and did not take (its runner was killed) is
        # not this one's; closed before this session holds the lease, so a stop asked of it
        # from the moment `closedloop stop` sees it live is kept (review).
        self._close_stop_requests(cid, "not used: its session ended")
        # the last heartbeat of a runner that died holding the campaign: when its trials in
        # flight were last known to be running (read before this runner's lease replaces it)
        left = self.store.lease(cid)
        self._last_alive = None if left is None else left.heartbeat
        takeover = self.lease.acquire(cid)
        try:
            self._refuse_pending_suggestions(cid)
            self._import_function()
            self._import_planner()
            self._session_md = start_session(self, "resume")
            # a release given to an earlier session (its runner killed while it waited)
            # covers none of this one's waits: the interlocks are checked afresh
            self.store.close_requests(
                cid, outcome="not used: its session ended", kinds=("release",)
            )
            if self._budget_changed:
                self.store.set_budget(
                    cid, self.budget.model_dump(mode="json"), token=self.lease.token
                )
            self.store.reopen_campaign(cid, token=self.lease.token)
        except BaseException:
            self.lease.release()
            raise
        return self._drive(cid, resumed=True, takeover=takeover)

    def _interruptible(self, body: Callable[[], CampaignSummary]) -> CampaignSummary:
        """``body`` (``run`` or ``resume``), stopped cleanly by Ctrl-C or a notebook's
        interrupt, and without bluesky's traceback of every failed run (``_QuietEngines``).

        On the main thread, with SIGINT handled as Python does by default (a script, a
        Jupyter cell), SIGINT means what it means on the command line (``stop_on_signals``):
        the first stops the campaign as ``request_stop`` does, and once the campaign is
        stored as ``stopped``, ``KeyboardInterrupt`` is raised, so the cell shows it was
        interrupted, saying what was kept and how to resume. Raised wherever the signal
        landed, it had cut the loop between taking a trial's outcome and recording it (found
        in review). A SIGINT handler of the caller's own (the command line's) is left alone,
        as is a runner on another thread (Python sends signals to the main one).
        """
        own_sigint = (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        )
        self._engines = []
        received: list[int] = []
        try:
            with _quiet_engines(self):
                if not own_sigint:
                    summary = body()
                else:
                    with stop_on_signals(self) as received:
                        summary = body()
        except BaseException as exc:
            self._drain_consumers(stopped=True)
            if isinstance(exc, KeyboardInterrupt):
                raise KeyboardInterrupt(self._interrupted(None)) from None
            raise
        self._drain_consumers(stopped=bool(received))
        if received and summary.status not in ("completed", "failed"):
            raise KeyboardInterrupt(self._interrupted(summary))
        if received:
            # The interrupt came as the campaign ended by itself (its last trial stored):
            # "stopped by an interrupt ... resume()" named a resume that refused, and lost
            # the summary (found in review, session 39). The summary says how it ended.
            logger.warning(
                "the interrupt came as campaign %r ended by itself (%s: %s); nothing to resume",
                summary.name,
                summary.status,
                summary.reason,
            )
        return summary

    def _drain_consumers(self, *, stopped: bool) -> None:
        """Once the session is stored (a consumer's last documents wait on nothing the
        campaign's outcome needs), let the live consumers take what they still hold: as long
        as they make progress after a campaign that ended by itself, at most
        :data:`loop.consumers.STOPPED_DRAIN` s after one stopped or failed, and not at all
        once a stop is asked while waiting (the command line's Ctrl-C or SIGTERM, which
        the waiting had ignored; found in review)."""
        consumers = [*self.subscriptions, *self._file_consumers]
        self._file_consumers = []
        stopped = stopped or self._stop_asked.is_set()
        self._stop_asked.clear()
        self._draining = True  # what a signal now means (stop_on_signals)
        try:
            drain_consumers(
                consumers,
                budget=STOPPED_DRAIN if stopped else None,
                cancelled=self._stop_asked.is_set,
            )
        except KeyboardInterrupt:  # Python's own Ctrl-C while waiting: leave them, say so
            drain_consumers(consumers, budget=0)
        finally:
            self._draining = False

    def _replay_where(self) -> str:
        """The ``closedloop export`` of this runner's campaign, for a consumer's message."""
        return cli_command("export", self.store.url, self.campaign_id)

    def _interrupted(self, summary: CampaignSummary | None) -> str:
        """What a ``KeyboardInterrupt`` out of ``run``/``resume`` says: what was kept, and
        the Python that continues the campaign (the command line prints its own)."""
        cid = self.campaign_id
        if cid is None:
            return "interrupted before the campaign was stored: nothing was stored"
        counts = ""
        if summary is not None:
            counts = (
                f" ({summary.completed} completed, {summary.failed} failed, "
                f"{summary.abandoned} abandoned)"
            )
        return (
            f"campaign '{self.campaign.name}' (id {cid}) stopped by an interrupt; every "
            f"finished trial is stored in {self.store.url}{counts}. Continue it with "
            f"Runner.from_store(Store({self.store.url!r}), {cid}).resume()"
        )

    def _refuse_manual_without_operator(self) -> None:
        """An ``instrument: manual`` campaign needs an operator: refused before anything is
        built or stored. Refused at its first trial, the campaign had been stored and was
        left ``stopped`` with that trial ``running`` (found in review)."""
        if not self.campaign.instrument.manual or self.operator is not None:
            return
        raise ClosedLoopError(_NO_OPERATOR.format(name=self.campaign.name))

    def _refuse_budget_below_trials(self, row: CampaignRow) -> None:
        """``CampaignFinished`` for a ``max_trials`` given for this session below the trials
        the campaign has completed: `resume --max-trials 5` of a campaign with 8 ended it at
        once, storing a budget of 5 beside "8 completed trials" (a typo for 50, most
        likely; found in review). As many as completed closes it, as asked."""
        limit = self.budget.max_trials
        if limit is None or known_budget(row).get("max_trials") == limit:
            return
        trials = self.store.trials(row.id or 0)
        completed = sum(t.status == "completed" and t.kind != PRIOR_KIND for t in trials)
        if completed > limit:
            raise CampaignFinished(
                f"campaign '{row.name}' (id {row.id}) has {completed} completed trials, more "
                f"than the max_trials {limit} given: it would end at once. Give more than "
                f"{completed} to go on (or {completed} to close it as completed)"
            )

    def refuse_if_finished(self, *, python: bool = False) -> int:
        """The stored campaign's id, or ``CampaignFinished`` when resuming it would do
        nothing: it is ``completed``/``failed`` and its budget (with the overrides given) is
        still spent. ``resume`` checks this first; the CLI calls it before it prints that it
        is resuming. The message states the stop reason once and a command to copy (with
        ``--store``); with ``python`` (``resume`` called from Python, the CLI having checked
        first), the ``Runner.from_store`` call to copy first.

        An unfinished campaign (``running``, ``paused`` or ``stopped``) is never refused: a
        runner that died waiting for interlocks left it ``paused``, and ``resume`` closes it
        as a ``running`` one, ``completed`` when its budget is spent. Refused, it was told
        to extend a campaign that was never finished and stayed ``paused`` (found in review).
        """
        cid = self.campaign_id
        if cid is None:
            raise ClosedLoopError("resume() needs a stored campaign: use Runner.from_store")
        row = self.store.campaign(cid)
        if row.status in UNFINISHED:
            self._refuse_budget_below_trials(row)
            return cid
        tally = self._tally(self.store.trials(cid), self.store.observations(cid))
        spent = self._spent(tally, row.elapsed_seconds)
        if spent is None:
            return cid
        why = row.stop_reason or spent.reason
        if spent.reason != why:  # another limit than the stored one still holds
            why += f"; with the budget given, still {spent.reason}"
        done = f"campaign '{row.name}' (id {cid}) is {row.status}: {why}"
        url = self.store.url
        resume = cli_command("resume", url, cid, *filter(None, [spent.option]))
        if spent.option is None:
            # a notebook's function (__main__:) runs from Python only (review AD)
            notebook = (self.campaign.instrument.function or "").startswith("__main__:")
            then = (
                "then a campaign file with `prior_data: done.csv` and a new target or "
                "patience, run from this Python session"
                if notebook
                else "then `closedloop run FILE --prior done.csv` with a new target or patience"
            )
            raise CampaignFinished(
                f"{done}. Nothing to resume, whatever the trial budget. To go on, start a new "
                "campaign from this one's data: "
                f"`{cli_command('export', url, cid, '-o done.csv')}`, {then}"
            )
        if python:
            name, value = spent.option.removeprefix("--").split(" ", 1)
            if name == "max-duration":  # a duration on the command line, seconds here
                value = f"{parse_duration(value):.0f}"
            override = f"{name.replace('-', '_')}={value}"
            # a notebook's function (__main__:) cannot be resumed from the command line
            notebook = (self.campaign.instrument.function or "").startswith("__main__:")
            raise CampaignFinished(
                f"{done}. To extend it, resume with a larger budget, e.g. "
                f"Runner.from_store(Store({self.store.url!r}), {cid}, {override}).resume()"
                + ("" if notebook else f", or on the command line `{resume}`")
            )
        raise CampaignFinished(
            f"{done}. To extend it, resume with a larger budget, e.g. `{resume}`"
        )

    def refuse_before_start(self) -> None:
        """What ``resume`` would refuse, asked before anything is printed: a finished
        campaign (:meth:`refuse_if_finished`), one another runner holds
        (``CampaignLocked``), one whose ``suggest`` trials await ``tell``
        (``SuggestionsPending``). ``resume`` decides again under the lease; the CLI asks
        first so that a refusal is all it prints (it printed "resuming; ..." and then
        refused, found in review)."""
        cid = self.refuse_if_finished()
        self.lease.check_free(cid)
        self._refuse_pending_suggestions(cid)

    def _refuse_pending_suggestions(self, cid: int) -> None:
        """Refuse to drive a campaign whose ``closedloop suggest`` trials await ``tell``.

        Reconciling them would find no run and abandon them for good, while their samples
        may be in the lab: ``tell`` records (or withdraws) them first. Checked under the
        lease, so no ``suggest`` adds one in between.
        """
        from loop.asktell import awaiting_tell  # the one rule for "pending suggestion"

        pending = awaiting_tell(self.store, self.store.trials(cid))
        if not pending:
            return
        ids = ", ".join(str(t.id) for t in pending[:10]) + (", ..." if len(pending) > 10 else "")
        tell = cli_command("tell", self.store.url, None, "TRIAL_ID")
        raise SuggestionsPending(
            f"campaign '{self.campaign.name}' (id {cid}) has {len(pending)} trial(s) from "
            f"`closedloop suggest` waiting for results (trial ids {ids}); resuming would "
            f"abandon them. Record each with `{tell} name=value ...` (or `--fail REASON`), "
            f"or withdraw one that will not be run with `{tell} --abandon REASON`; then "
            f"resume (or go on with `{cli_command('suggest', self.store.url, cid)}`)"
        )

    # ----------------------------------------------------------------- the loop
    def _drive(
        self,
        cid: int,
        *,
        resumed: bool,
        takeover: str | None = None,
        slots: list[Slot] | None = None,
    ) -> CampaignSummary:
        """The one loop behind ``run`` and ``resume``; the caller holds the lease.

        ``slots`` are the instrument slots ``run`` built before creating the campaign (the
        loop owns them from here); ``resume`` leaves them to be built here.

        With ``instrument.count`` K > 1 the loop keeps K trials in flight (one per slot, see
        ``loop.scheduler``): each freed slot gets the next proposal at once, and the planner
        proposes on its own thread with every point in flight or queued as ``pending``.
        Persist before act holds per trial: its row is committed before its slot starts,
        its outcome after the slot reports. On any stop (request, Ctrl-C, budget, failures,
        a lost lease, an error) the runs still in flight are aborted through their
        RunEngines and stored as ``abandoned`` (ADR 0005); but a planner that breaks its
        protocol (``PlannerError``) gets nothing more to do while the trials in flight are
        measured and stored, and then stops the campaign. The summary's counts and goals
        come from the session's tally, which counted every trial the store holds.
        """
        c = self.campaign
        start = time.monotonic()
        elapsed_before = self.store.campaign(cid).elapsed_seconds if resumed else 0.0

        def elapsed() -> float:
            return elapsed_before + (time.monotonic() - start)

        self.store.watch_file()  # a store file deleted mid-run is noticed and rescued
        self.store.wait_again()  # a stop of an earlier session gave up its waits, not ours
        self.lease.start_heartbeat(
            elapsed, on_beat=self._take_stop_request, proposing=self._slots_waiting
        )
        timings: list[TrialTiming] = []
        reconciled: list[Reconciled] = []
        tally = _Tally()
        status, reason = "stopped", "the runner stopped before its first trial"
        rule: str | None = None  # the budget rule that ended the session, if one did
        sched: Scheduler | None = None
        broken: PlannerError | None = None  # raised once the trials in flight have ended
        write = True
        unsafe: list[str] = []  # the safe state not written as the session ends
        try:
            reconciled = self._reconcile(cid) if resumed else []
            history = self.store.trials(cid)
            observations = self.store.observations(cid)
            tally = self._tally(history, observations)
            # a resume that ends at once (its target met, its budget spent) runs no retry,
            # nor says it will (found in review)
            ends = self._stop_rule(tally, elapsed()) is not None
            due = self.owed_retries(history) if resumed else {}
            owed = {} if ends else due
            try:
                planner = self.rebuild_planner(history, observations, retrying=owed)
            except PlannerError as exc:  # a plugin's ingest raised: the fix is to resume
                raise self._planner_broke(cid, exc, 0) from exc.__cause__
            if resumed and isinstance(self.listener, ResumeListener):
                self.listener.campaign_resumed(
                    ResumeState(
                        campaign_id=cid,
                        completed=tally.completed,
                        failed=tally.failed,
                        abandoned=tally.abandoned,
                        elapsed_before=elapsed_before,
                        reconciled=reconciled,
                        best=tally.best,
                        takeover=takeover,
                        front=tally.front,
                        retrying=announced_retries(history, owed),
                        # what is owed decides what was given up, run now or not
                        given_up=_given_up(history, due, reconciled),
                    )
                )
            self._hangs = self._hang_watch(history)
            if slots is None:
                slots = self._build_slots(len(history))
            sched = self._scheduler = self._scheduler_for(slots, planner, len(history))
            sched.ready.extend(
                Proposal(dict(r.parameters), "retry", retry=(r.first, r.attempt))
                for r in owed.values()
            )
            while True:
                self.lease.check()
                spent = self._stop_rule(tally, elapsed())
                stop = spent[1:] if spent is not None else None
                if stop is None and broken is not None and not sched.in_flight():
                    raise broken
                if stop is None and not sched.active():
                    stop = ("failed", _all_retired(sched))
                if stop is None and self._stop_request is not None:
                    stop = ("stopped", self._stop_request)
                if stop is None and self._stop_after is not None and not sched.in_flight():
                    stop = ("stopped", self._stop_after)
                if stop:
                    status, reason = stop
                    rule = spent[0] if spent is not None else None
                    break
                # dispatch: every idle slot gets a ready proposal (persisted first)
                for slot in sched.idle():
                    if not sched.ready or self._stop_after is not None or broken is not None:
                        break
                    if not self._room(tally, sched.in_flight()):
                        break
                    # an operator's `closedloop stop` since the last heartbeat: no new trial
                    # (taken at heartbeats alone, one started up to 6 s after it; review)
                    try:
                        self._take_stop_request()
                    except Exception as exc:  # the store's own trouble shows at its next write
                        logger.debug("stop requests not read: %s", exc)
                    if self._stop_after is not None or self._stop_request is not None:
                        break
                    self._start_trial(cid, slot, sched.ready.popleft(), sched)
                # plan ahead while the slots measure
                room = self._room(tally, sched.in_flight())
                n = sched.wanted(room)
                stopping = (self._stop_request, self._stop_after, broken) != (None, None, None)
                if n > 0 and not stopping:
                    sched.planner.request(n, sched.pending_points())
                event = sched.next_event()
                if isinstance(event, Proposed):
                    if self.lease.shows_proposing:  # status: the slots wait no more
                        self.lease.beat_now()
                    if isinstance(event.error, PlannerError):
                        broken = self._planner_broke(cid, event.error, sched.in_flight())
                    elif event.error is not None:
                        raise event.error
                    else:
                        sched.ready.extend(event.proposals)
                elif isinstance(event, SlotDone):
                    report = self._finish_trial(event, sched, tally, timings)
                    if report.will_retry:
                        sched.ready.appendleft(
                            Proposal(
                                dict(report.parameters),
                                "retry",
                                retry=(report.retry_of or report.trial_id, report.attempt + 1),
                            )
                        )
                    if self._stop_after is not None and not sched.in_flight():
                        self._stop_request, self._stop_after = self._stop_after, None
                if self._hangs is not None:
                    self._hangs.check(sched.slots, time.perf_counter())
        except LeaseLost:
            write = False  # the campaign is someone else's now: touch nothing
            raise
        except StoreGone as exc:  # the drain and the end still go to the file as it was
            status, reason = "stopped", str(exc)
            raise
        except KeyboardInterrupt:
            status, reason = "stopped", self._stop_request or "interrupted by the user (Ctrl-C)"
            self._stop_request = reason
            raise
        except PlannerError as exc:  # the planner's defect, not the runner's
            status, reason = "stopped", first_line(exc)
            raise
        except OperationalError as exc:  # the store went away: its own words, no SQL
            status, reason = "stopped", f"lost the store: {first_line(exc.orig) or exc}"
            raise
        except BaseException as exc:
            status, reason = "stopped", f"the runner failed: {type(exc).__name__}: {exc}"
            raise
        finally:
            try:
                if sched is not None:
                    why = reason if rule is None else self._abort_reason(rule, reason)
                    self._drain(sched, why, tally, timings, write=write)
                    if rule is not None:
                        # Trials that ended while the drain ran (failures among them) count:
                        # the stored reason must agree with the summary's counts.
                        again = self._stop_rule(tally, elapsed())
                        if again is not None and again[0] == rule:
                            reason = again[2]
            finally:
                self.lease.stop_heartbeat()
                if write:  # a stop asked for after the last heartbeat is not the next session's
                    self._close_stop_requests(cid, f"not needed: the runner ended ({reason})")
                self._scheduler = None
                # a lost lease: the new owner drives the hardware now, and decides its state
                closed = sched.slots if sched is not None else slots or []
                if sched is not None:
                    sched.close(safe_state=write)
                elif slots is not None:
                    self._close_slots(slots, safe_state=write)
                self._built_slots = []
                self._let_go()
                # A safe state not written is the one thing an operator must act on at once:
                # in the stop reason (the summary, `status`), not in a log line alone (found
                # in review).
                unsafe = [f for slot in closed for f in safe_state_failures(slot.instrument)]
                self.unsafe = unsafe
                if unsafe:
                    reason = f"{reason}; SAFE STATE NOT WRITTEN: {'; '.join(unsafe)}"
                if write:
                    try:
                        self.store.finish_campaign(
                            cid, status, reason, elapsed=elapsed(), token=self.lease.token
                        )
                    finally:
                        self.lease.release()
                    self._rescue_if_gone(cid)
        summary = CampaignSummary(
            campaign_id=cid,
            name=c.name,
            status=status,
            reason=reason,
            completed=tally.completed,
            failed=tally.failed,
            best=tally.best,
            elapsed=time.monotonic() - start,
            timings=timings,
            abandoned=tally.abandoned,
            reconciled=reconciled,
            failures=failures_of(self.store.trials(cid)),
            unsafe=unsafe,
        )
        return self._with_goals(summary, tally)

    def _planner_broke(self, cid: int, exc: PlannerError, in_flight: int) -> PlannerError:
        """The error that stops the campaign for a planner that broke its protocol, saying
        how to resume it; the trials in flight are measured and stored first (their points
        are valid: each answer is checked whole), so a planner's defect costs no measurement.
        """
        if in_flight:
            logger.warning(
                "%s; the %d trial(s) in flight are measured and stored, then the campaign stops",
                first_line(exc),
                in_flight,
            )
        resume = f"`{cli_command('resume', self.store.url, cid)}`"
        if isinstance(exc, PluginRaised):
            fix = (
                f"fix the plugin (`closedloop -v ...` shows its traceback), then {resume} "
                "continues the campaign (its stored trials are kept)"
            )
        else:
            fix = (
                f"fix the planner, then {resume} continues the campaign (its stored trials "
                "are kept; a suggest(n, pending) returns exactly n points of the campaign's "
                "space and sets last_kinds to one label per point)"
            )
        again = type(exc)(exc.planner, exc.problem, fix=fix)
        again.__cause__ = exc.__cause__
        return again

    def _rescue_if_gone(self, cid: int) -> None:
        """Copy the campaign's store to a new file if its own was deleted or replaced.

        Checked once more at the end as well as by the heartbeat: a file deleted in the
        last seconds of a campaign ended it "completed" with every trial lost.

        Raises:
            StoreGone: naming the copy and the command that resumes from it.
        """
        why = self.store.gone()
        if why is None:
            return
        try:
            copy = self.store.rescue()
        except StoreError as exc:
            raise StoreGone(
                f"{why}; {exc}, so the campaign's data is lost when this process ends"
            ) from None
        raise StoreGone(
            f"{why}; the campaign stopped, and everything the store held, this campaign's "
            f"trials to the last, is saved in {copy}. Go on from there: "
            f"`{cli_command('resume', f'sqlite:///{copy}', cid)}`"
        ) from None

    def _dispatcher_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for every slot's ``Dispatcher(instrument, **kwargs)``."""
        return {
            "readback_limits": self._readback_limits(),
            "readback_tolerance": self.campaign.instrument.readback_tolerance,
            # a choice is refused before any device moves unless it is one of its values
            "choices": {
                s.name: s.values
                for s in input_specs(self.campaign.parameters)
                if s.values is not None
            },
            # interlock waits show the campaign `paused` in the store; `closedloop release`
            # (another process) is picked up from it
            "interlock_listener": self._interlock_listener(),
            "needed_outputs": required_outputs(self.campaign),
            "subscriptions": self.subscriptions,  # after the store's sink
        }

    def _interlock_listener(self) -> Any:
        """The campaign's one :class:`loop.pause.CampaignPause`, shared by every slot."""
        from loop.pause import CampaignPause

        pause: CampaignPause | None = getattr(self, "_pause", None)
        if pause is None:
            pause = self._pause = CampaignPause(self.store, self._cid, lambda: self.lease.token)
        return pause

    def _build_slots(self, trials_so_far: int) -> list[Slot]:
        """Open the executor, build ``instrument.count`` slots, each its own devices and seed.

        Slot 0 gets the instrument seed a single instrument always had; slot k > 0 an
        independent stream derived from it, so adding slots never changes slot 0's draws.
        On an error everything built so far is closed again.
        """
        c = self.campaign
        self._hold_instrument()
        try:
            self._executor = open_executor(c.instrument.executor)
        except BaseException:
            self._let_go()
            raise
        if self._executor is not None:
            # A lost Dask scheduler stops the campaign (resumable), as Ctrl-C does, rather
            # than failing every trial until max_failures ends it `failed`.
            self._executor.on_lost = self.request_stop
        base = self._instrument_seed(trials_so_far)
        slots: list[Slot] = []
        try:
            for index in range(c.instrument.count):
                instrument = self._instrument_factory(c, slot_seed(base, index) or 0)
                try:
                    kwargs = self._dispatcher_kwargs()
                    consumers = [
                        QueuedConsumer.of(cb, ref, replay=self._replay_where)
                        for ref, cb in _file_subscriptions(instrument)
                    ]
                    self._file_consumers += consumers
                    kwargs["subscriptions"] = [*kwargs["subscriptions"], *consumers]
                    dispatcher = Dispatcher(instrument, **kwargs)
                except BaseException:
                    instrument.close()
                    raise
                slots.append(Slot(index, instrument, dispatcher))
                self._engines.append(dispatcher.run_engine)
                self._built_slots = slots  # for write_safe_state before a scheduler owns them
        except BaseException:
            self._close_slots(slots)
            raise
        return slots

    def _close_slots(self, slots: list[Slot], *, safe_state: bool = True) -> None:
        """Close slots that no scheduler owns yet, and the executor."""
        self._built_slots = []
        for slot in slots:
            slot.close(safe_state=safe_state)
        self._let_go()

    def _scheduler_for(self, slots: list[Slot], planner: Planner, trials_so_far: int) -> Scheduler:
        c = self.campaign
        return Scheduler(
            slots,
            planner,
            batch_size=c.planner.batch_size,
            lookahead=len(slots) if len(slots) > 1 else 0,
            initial=None if trials_so_far else c.planner.initial.size(self.space.dim),
            space=self.space,
        )

    def _hang_watch(self, history: Sequence[TrialRow]) -> _HangWatch | None:
        """The session's watch for trials that may hang (:class:`_HangWatch`): none when
        ``instrument.timeout`` ends such trials, or for a manual instrument, whose trials
        last as long as the operator takes. It starts from the durations of the campaign's
        stored trials a runner completed (not told: ``loop.asktell.is_told``).

        The stored times are wall-clock readings, so a clock stepped back mid-trial (NTP, a
        suspended laptop) leaves a finish before its start; such a trial says nothing about
        how long trials take and is left out rather than pulling the median down.
        """
        from loop.asktell import is_told

        instrument = self.campaign.instrument
        if instrument.timeout is not None or instrument.manual:
            return None
        durations = [
            seconds
            for t in history
            if t.status == "completed"
            and not is_told(t)
            and t.kind != PRIOR_KIND
            and t.started_at is not None
            and t.finished_at is not None
            and (seconds := (t.finished_at - t.started_at).total_seconds()) >= 0
        ]
        return _HangWatch(
            durations[-HANG_WINDOW:], cli_command("resume", self.store.url, self.campaign_id)
        )

    def _hold_instrument(self) -> None:
        """Hold a declared instrument for this session before any device is built, or
        refuse, naming the campaign that holds it (:mod:`instruments._hold`): two
        campaigns on one instrument interleaved setpoints and safe states."""
        c = self.campaign
        if c.instrument.file is None and c.instrument.devices is None:
            return  # a simulator, a function, the operator: nothing two campaigns share
        from instruments._epics import declared_spec
        from instruments._hold import hold_instrument

        which = f"id {self.campaign_id}" if self.campaign_id is not None else "new"
        holder = f"campaign '{c.name}' ({which}) in {self.store.url}"
        spec = declared_spec(c.instrument, self.loaded.base_dir)
        self._hold = hold_instrument(spec, holder=holder)

    def _let_go(self) -> None:
        """Close the executor and release the instrument that :meth:`_build_slots` took,
        once the slots are closed."""
        executor, self._executor = self._executor, None
        hold, self._hold = self._hold, None
        try:
            if executor is not None:
                executor.close()
        finally:
            if hold is not None:
                hold.release()

    def _room(self, tally: _Tally, in_flight: int) -> int | None:
        """Trials that may still start: completed + in flight never exceed ``max_trials``."""
        if self.budget.max_trials is None:
            return None
        return max(self.budget.max_trials - tally.completed - in_flight, 0)

    def _drain(
        self,
        sched: Scheduler,
        reason: str,
        tally: _Tally,
        timings: list[TrialTiming],
        *,
        write: bool,
        wait: float = 60.0,
    ) -> None:
        """Abort every run still in flight and record each as ``abandoned`` (or as it ended).

        Aborts are repeated until every slot has reported (an abort that lands before a
        slot's RunEngine started is a no-op). Outcomes are read from the slots
        (``Scheduler.unrecorded``), not only from the event queue: one whose event the loop
        had taken when an exception cut it is recorded too. A slot that does not report
        within ``wait`` seconds, or by a second stop signal (``stop_now``), is left
        ``running`` in the store for ``resume`` to reconcile.
        """
        if sched.busy():
            self._stop_request = self._stop_request or reason
            logger.info("stopping: aborting %d trial(s) in flight", sched.in_flight())
        deadline = time.monotonic() + wait
        while sched.busy():
            for done in sched.unrecorded():
                if not write:
                    sched.slots[done.job.slot].finish()
                    continue
                try:
                    self._finish_trial(done, sched, tally, timings)
                except Exception as exc:  # e.g. LeaseLost: leave it for resume to reconcile
                    logger.warning("trial %d left in flight: %s", done.job.number, exc)
                    write = False
            if not sched.busy() or self._stop_now or time.monotonic() >= deadline:
                break
            sched.abort_all(self._stop_request or reason)
            sched.next_event()  # a wake-up: what it brings is on its slot
        for slot in sched.busy():
            if self._stop_now:
                logger.warning(
                    "slot %d: trial %d stays running for resume (stopped without waiting)",
                    slot.index,
                    slot.job.number if slot.job else -1,
                )
            else:
                logger.warning(
                    "slot %d did not stop within %.0f s; trial %d stays running for resume",
                    slot.index,
                    wait,
                    slot.job.number if slot.job else -1,
                )
            if slot.job is not None:
                self._left_running.add(slot.job.trial_id)
        # The proposal in the making is dropped anyway: a slow suggest (a model fit) must
        # not hold the stop; the planner thread is a daemon.
        sched.planner.join(timeout=min(wait, 1.0))

    def rebuild_planner(
        self,
        history: Sequence[TrialRow],
        observations: dict[int, dict[str, float]],
        config: PlannerConfig | None = None,
        *,
        waited_on: bool = True,
        retrying: Collection[int] = (),
    ) -> Planner:
        """A planner that has ingested every terminal stored trial, in the order they ended.

        ``waited_on``: instruments wait on this planner's proposals (a runner's slots), so
        points pending lower its optimiser's effort (``BoTorchSettings.pending_effort``).
        Ask/tell passes ``False``: nothing waits on its ``suggest``, and with the pending
        effort a batch was chosen worse (found in review: a plate's controls, or the previous
        plate still being measured, lowered the effort of the whole next batch).

        ``running`` trials are skipped: a runner reconciles them first, and ask/tell
        (``loop.asktell``) passes them to ``suggest`` as pending instead.

        The order is the live loop's (:func:`_ended_order`): with several slots it ingests
        each outcome as it is recorded, which is not trial order (trial 5 may end before
        trial 4). Ingested by trial number, a rebuilt planner whose state depends on the
        order (a best-so-far, a trust region, a bandit) proposed after a resume, and at
        every ``suggest``/``plan``, what the live one would not have (found in review).
        With one slot, and in ask/tell told in trial order, the two orders are one.

        ``config``: another ``planner:`` section than the campaign's (``loop.results``
        builds a BoTorch model of any campaign's trials).

        ``retrying``: ids of failed attempts whose retry is about to run
        (:meth:`owed_retries`); left out, as the live planner never saw them.
        """
        c = self.campaign
        section = c.planner if config is None else config
        settings = None
        if not waited_on and section.kind == "botorch":
            from planners import BoTorchSettings  # torch: only for a BoTorch planner

            settings = BoTorchSettings(pending_effort=None)
        planner = make_planner(
            self.space,
            list(c.objectives),
            section,
            self.seed,
            outcome_constraints=c.parsed_outcome_constraints,
            settings=settings,
        )
        learned = [t for t in self.learned_trials(history) if _id(t) not in retrying]
        if len(learned) > _QUIET_FIT_MAX and section.kind in ("botorch", "ax"):
            # A suggest over 2000 observations sat silent for 90 s and 1.2 GB (found in
            # review); a cron robot reads silence as a hang.
            logger.warning(
                "the %s planner fits its model on %d trials: past %d that takes minutes (an "
                "exact GP grows with the cube of the trials)",
                section.kind,
                len(learned),
                _QUIET_FIT_MAX,
            )
        if learned:  # a plugin that raises here is its PluginRaised (loop.scheduler)
            call_planner(
                planner,
                "ingest",
                [self._stored_observation(t, observations.get(_id(t), {})) for t in learned],
            )
        return planner

    def owed_retries(self, history: Sequence[TrialRow]) -> dict[int, Retry]:
        """The retries ``resume`` runs first (:func:`loop.retries.owed_retries`), by the id
        of the attempt each re-measures."""
        return stored_owed(self.store, history, self.campaign.instrument.max_retries)

    def learned_trials(self, history: Sequence[TrialRow]) -> list[TrialRow]:
        """The stored trials :meth:`rebuild_planner` ingests, in its order: the terminal
        ones, a retried attempt left out (its retry stands for it), in the order they ended."""
        links = retry_links(self.store, history)
        retried = attempts(history, links, self.campaign.instrument.max_retries)[0]
        return _ended_order(
            t for i, t in enumerate(history) if t.status != "running" and i not in retried
        )

    def stop_reason(self, trials: Sequence[TrialRow], elapsed: float) -> tuple[str, str] | None:
        """``(status, reason)`` when the stored trials have spent the budget, else ``None``."""
        spent = self.spent(trials, elapsed)
        return None if spent is None else (spent.status, spent.reason)

    def spent(
        self,
        trials: Sequence[TrialRow],
        elapsed: float,
        observations: dict[int, dict[str, float]] | None = None,
    ) -> Spent | None:
        """The budget rule the stored ``trials`` (and ``elapsed`` s) have spent, with the
        option that would extend it; ``None`` while the campaign may go on.

        ``observations``: the outputs by trial id, the store's by default; ask/tell passes
        them as they will be once its batch is written, to store the campaign's state in
        the batch's own transaction.
        """
        if observations is None:
            observations = self.store.observations(self._cid())
        return self._spent(self._tally(trials, observations), elapsed)

    def _cid(self) -> int:
        if self.campaign_id is None:
            raise ClosedLoopError("this runner has no stored campaign yet")
        return self.campaign_id

    def _spent(self, tally: _Tally, elapsed: float) -> Spent | None:
        """Whether the campaign is done (see :meth:`_stop_rule`), and how to extend it."""
        spent = self._stop_rule(tally, elapsed)
        if spent is None:
            return None
        rule, status, reason = spent
        option = extension_hint(
            rule, completed=tally.completed, failed=tally.failed, elapsed=elapsed
        )
        return Spent(rule, status, reason, option)

    def _abort_reason(self, rule: str, reason: str) -> str:
        """What the trials a budget rule's stop aborts keep as their reason.

        For a count (``max_failures``, ``max_trials``, ``max_duration``) the rule and its
        setting, not the count: trials still ending while the others are aborted change
        it, and the campaign's stored reason is counted again after them. An abandoned
        trial read "4 trials failed" beside a campaign stopped by "5 trials failed"
        (found in review). ``target`` and ``patience`` keep their own reason.
        """
        b = self.budget
        setting = {
            "max_failures": f"budget.max_failures = {b.max_failures}",
            "max_trials": f"budget.max_trials = {b.max_trials}",
            "max_duration": f"budget.max_duration = {span(b.max_duration or 0)}",
        }.get(rule)
        return reason if setting is None else f"{rule} reached ({setting})"

    def _stop_rule(self, tally: _Tally, elapsed: float) -> tuple[str, str, str] | None:
        """Whether the campaign is done: ``(rule, status, reason)``.

        ``max_trials`` counts completed trials and ``max_failures`` failed ones, over every
        session; abandoned trials (cut short by a stop, not by the instrument) count toward
        neither, and prior-data trials toward nothing. ``max_duration`` counts running time
        summed over sessions. ``target`` is met by a feasible completed trial (a prior one
        too: the campaign then has nothing to do); ``patience`` watches the gain of the
        last N completed trials. The first rule that holds names the reason.
        """
        budget = self.budget
        reached = self._target_reached(tally)
        if reached is not None:
            return "target", "completed", reached
        tired = self._out_of_patience(tally)
        if tired is not None:
            return "patience", "completed", tired
        if budget.max_trials is not None and tally.completed >= budget.max_trials:
            return (
                "max_trials",
                "completed",
                f"max_trials reached ({tally.completed} completed trials)",
            )
        if budget.max_duration is not None and elapsed >= budget.max_duration:
            return "max_duration", "completed", f"max_duration reached ({span(elapsed)})"
        if tally.failed >= budget.max_failures:
            kinds = ", ".join(f"{n} {k}" for k, n in failure_counts(tally.failures).items())
            where = ""
            if self.campaign.instrument.count > 1 or len(tally.failed_slots) > 1:
                by_slot = sorted(tally.failed_slots.items(), key=lambda kv: (-kv[1], kv[0]))
                where = ", on " + ", ".join(f"slot {k} ({n})" for k, n in by_slot)
            return (
                "max_failures",
                "failed",
                (
                    f"{tally.failed} trials failed (budget.max_failures = "
                    f"{budget.max_failures})"
                    + (f": {kinds}" if kinds else "")
                    + where
                    + "; "
                    + _what_to_check(tally.failures)
                ),
            )
        return None

    def _readback_limits(self) -> dict[str, tuple[float, float]]:
        """The declared bounds of every numeric parameter: readbacks must stay within them."""
        return {s.name: s.bounds for s in input_specs(self.campaign.parameters) if s.bounds}

    def _start_trial(self, cid: int, slot: Slot, proposal: Proposal, sched: Scheduler) -> None:
        """Persist the trial (before anything moves), then start its run on ``slot``."""
        t0 = time.perf_counter()
        parameters, kind = proposal.parameters, proposal.kind
        # The run metadata (the instrument file's and the campaign's, checked when loaded),
        # then closedloop's own keys, which the loader keeps metadata from naming.
        md: dict[str, Any] = {
            **self.loaded.metadata,
            **self._session_md,
            "campaign_uid": self.campaign_uid(cid),
            "slot": slot.index,  # a catalog tells the slots' runs apart, as `export` does
        }
        if proposal.retry is not None:
            md |= {"retry_of": proposal.retry[0], "attempt": proposal.retry[1]}
        trial = self.store.add_trial(
            cid,
            parameters,
            kind,
            suggest_seconds=proposal.suggest_seconds,
            token=self.lease.token,
            slot=slot.index,
        )
        job = Job(slot.index, _id(trial), trial.number, proposal, started=t0)
        try:
            self._dispatch(job, slot, sched, md)
        except BaseException as exc:
            if slot.job is not job:  # no slot will report it: it must not stay `running`
                self._abandon_undispatched(job, exc)
            raise

    def _abandon_undispatched(self, job: Job, exc: BaseException) -> None:
        """Store a trial whose run was never started, because ``exc`` came first (a
        listener, the operator, the dispatch itself), as ``abandoned`` with the reason. Left
        ``running``, it read as a measurement under way in ``status`` (found in review)."""
        if isinstance(exc, LeaseLost) or self.lease.lost.is_set():
            return  # the campaign is another runner's now: its reconciliation records it
        why = (
            "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        )
        try:
            self.store.finish_trial(
                job.trial_id,
                status="abandoned",
                outputs={},
                readbacks={},
                run_uid=None,
                error=f"stopped before its run started: {why}",
                token=self.lease.token,
            )
        except Exception as write:  # e.g. the store gone: resume reconciles it
            logger.warning("trial %d stays running for resume: %s", job.number, write)

    def _dispatch(self, job: Job, slot: Slot, sched: Scheduler, md: dict[str, Any] | None) -> None:
        """Start the persisted trial ``job`` on ``slot`` (or settle it there without a run)."""
        parameters = job.proposal.parameters
        self.listener.trial_started(job.number, parameters)
        if self._stop_request is not None:  # asked to stop before any device moved
            stopped = TrialResult(
                run_uid=None, exit_status="abort", error="stopped before its run started"
            )
            slot.settle(job, stopped, sched.events)
            return
        measured = self._ask_operator(job.number, parameters, slot.instrument)
        if measured is not None:  # the operator failed it or stopped: no run
            slot.settle(job, measured, sched.events)
            return
        dispatcher, trial_id = slot.dispatcher, job.trial_id
        if self._hangs is not None:
            self._hangs.started(trial_id, dispatcher)

        def run() -> TrialResult:
            try:
                return dispatcher.run(
                    trial_id,
                    self.campaign.name,
                    parameters,
                    md,
                    document_sink=self._sink(trial_id),
                    timeout=self.campaign.instrument.timeout,
                    trial_number=job.number,
                )
            except TrialInterrupted as exc:  # a KeyboardInterrupt in this thread: aborted
                return exc.result
            except DocumentSinkError as exc:
                # The run completed; a document write failed (e.g. the database locked past
                # its busy timeout) and the dispatcher stopped streaming. Write what the
                # store missed once more, so the measurement is kept and the campaign goes
                # on; if that fails too, the trial stays `running` for resume.
                logger.warning("trial %d: %s; writing its documents again", job.number, exc)
                try:
                    self._store_missed_documents(trial_id, exc.result)
                except Exception:
                    # the measurement is in memory only: said, so the log keeps it
                    result = exc.result
                    logger.error(
                        "trial %d was measured but could not be stored: outputs %s, "
                        "readbacks %s, run %s",
                        job.number,
                        result.outputs,
                        result.readbacks,
                        next((d.get("uid") for n, d in result.documents if n == "start"), None),
                    )
                    raise
                return exc.result

        slot.start(job, run, sched.events)

    def campaign_uid(self, cid: int) -> str:
        """The campaign's UUID, which every start document carries (``campaign_uid``): a
        catalog gathers a campaign's runs by it, where a name may be reused and a store id
        repeats from store to store.

        Kept in the documents themselves, so no store column is needed and a store of an
        older version serves as it is: the latest stored start document's, if it has one;
        else a new one (a new campaign, or one run by a version that wrote none: its
        earlier runs have none to disagree with). Read once per runner, so every slot's
        runs carry the same.
        """
        if self._campaign_uid is None:
            for trial in reversed(self.store.trials(cid)):
                if trial.run_uid is None or trial.id is None:
                    continue
                start = next(
                    (d.body for d in self.store.documents(trial.id) if d.name == "start"), {}
                )
                found = start.get("campaign_uid")
                if isinstance(found, str):
                    self._campaign_uid = found
                break
        if self._campaign_uid is None:
            self._campaign_uid = str(uuid.uuid4())
        return self._campaign_uid

    def _store_missed_documents(self, trial_id: int, result: TrialResult) -> None:
        """Store the documents of ``result`` beyond those already stored, in order."""
        stored = len(self.store.documents(trial_id))
        run_uid = next((doc.get("uid") for name, doc in result.documents if name == "start"), None)
        for seq, (name, doc) in enumerate(result.documents[stored:], start=stored + 1):
            self.store.add_document(
                trial_id, seq, name, doc, run_uid, campaign_id=self._cid(), token=self.lease.token
            )

    def _finish_trial(
        self,
        event: SlotDone,
        sched: Scheduler,
        tally: _Tally,
        timings: list[TrialTiming],
    ) -> TrialReport:
        """Record a slot's outcome, count it, hand it to the planner, report it; free the
        slot.

        When the slot's thread raised, the slot is freed and the exception raised: the trial
        stays ``running`` for ``resume``. The trial is counted in ``tally`` as soon as the
        store holds its outcome, so the tally counts what the store does (``_with_goals``
        reads the campaign's goals from it, not from the store again).
        """
        job = event.job
        sched.slots[job.slot].finish()
        if event.error is not None or event.result is None:
            raise event.error or ClosedLoopError(f"slot {job.slot} returned no result")
        result, proposal = event.result, job.proposal
        parameters, number, trial_id = proposal.parameters, job.number, job.trial_id
        status: TrialStatus = "completed" if result.exit_status == "success" else "failed"
        error = result.error
        if result.exit_status == "abort" and self._stop_request is not None:
            status, error = "abandoned", _abandoned_error(self._stop_request, result.error)
        retired = None
        if len(sched.slots) > 1 and self._stop_request is None:
            retired = sched.record(job, status, error)
            if retired is not None:  # kept with the trial: `status` reads it from there
                error = f"{error}; {_RETIRED.format(slot=job.slot)}{retired}"
        self.store.finish_trial(
            trial_id,
            status=status,
            outputs=result.outputs,
            readbacks=result.readbacks,
            run_uid=result.run_uid,
            error=error,
            token=self.lease.token,
            transient=result.transient,
        )
        # a transient failure about to be retried is not a fact about the point
        attempt = proposal.retry[1] if proposal.retry is not None else 1
        will_retry = (
            status == "failed"
            and result.transient
            and attempt <= self.campaign.instrument.max_retries
            and self._stop_request is None
        )
        if status == "completed":
            self._say_side_gaps(number, sched.slots[job.slot].instrument.outputs, result.outputs)
        value = result.outputs.get(self.objective.name)
        if value is not None and not math.isfinite(value):
            value = None
        dispatch = time.perf_counter() - job.started
        timing = TrialTiming(
            suggest=proposal.suggest_seconds,
            dispatch=dispatch,
            total=proposal.suggest_seconds + dispatch,
            instrument_busy=result.instrument_busy,
        )
        report = TrialReport(
            number=number,
            trial_id=trial_id,
            status=status,
            parameters=parameters,
            outputs=result.outputs,
            objective=value if status == "completed" else None,
            best=tally.best.objective if tally.best else None,
            error=error,
            timing=timing,
            kind=proposal.kind,
            retry_of=proposal.retry[0] if proposal.retry is not None else None,
            attempt=attempt,
            will_retry=will_retry,
            slot=job.slot,
            readbacks=dict(result.readbacks or {}),
        )
        timings.append(timing)
        if self._hangs is not None:
            self._hangs.finished(trial_id, dispatch, completed=status == "completed")
        self._count(tally, report)
        if status == "failed" and tally.completed == 0 and misnamed(error):
            # A key one letter off a campaign name, and nothing measured yet: a typo in the
            # code, which would fail every trial alike (ten real experiments, each output under
            # the misspelt key lost with it, before max_failures ended it: found in review).
            self.code_stopped = True
            resume = resume_command(
                self.campaign.instrument.function, self.store.url, self.campaign_id
            )
            self.request_stop(
                f"trial #{number}'s function used a misnamed key (its error says which); "
                f"fix the function, then `{resume}` goes on"
            )
        if not will_retry:  # learn
            learned = _learned_status(
                status, result.transient, retry=attempt > 1, error=result.error
            )
            sched.planner.ingest(
                [self._observation(parameters, result.readbacks, result.outputs, learned)]
            )
        self.listener.trial_finished(report)
        if retired is not None:
            self._retire(sched.slots[job.slot], retired)
        return report

    def _say_side_gaps(
        self, number: int, names: Sequence[str], outputs: Mapping[str, float]
    ) -> None:
        """Warn, once per output, that a completed trial has a side output (one no
        objective or outcome constraint reads) missing or not finite: the trial is kept
        (:func:`instruments._dispatch.outputs_and_readbacks`), but a monitoring channel
        that stopped reading may be worth a look."""
        needed = required_outputs(self.campaign)
        for name in names:
            if name in needed or name in self._side_gaps_said:
                continue
            value = outputs.get(name)
            if value is not None and math.isfinite(value):
                continue
            self._side_gaps_said.add(name)
            read = "did not read" if value is None else f"read {value}"
            logger.warning(
                "output %r %s on trial #%s; the trial is kept, since no objective or "
                "constraint uses %r; not said again for %r",
                name,
                read,
                number,
                name,
                name,
            )

    def _retire(self, slot: Slot, reason: str) -> None:
        """A slot that keeps failing gets no more trials: close its devices, say so."""
        try:
            slot.close()
        except Exception as exc:
            logger.warning("closing retired slot %d failed: %s", slot.index, exc)
        if isinstance(self.listener, SlotListener):
            self.listener.slot_retired(slot.index, reason)

    def _ask_operator(
        self, number: int, parameters: Point, instrument: Instrument
    ) -> TrialResult | None:
        """For a manual instrument: ask the operator, load the answer into its devices.

        Returns ``None`` when the run should go ahead (the answer is loaded), or the trial's
        result without a run: ``fail`` when the operator marked it failed, ``abort`` when
        they stopped the campaign or Ctrl-C interrupted the prompt.
        """
        if not isinstance(instrument, ManualInstrument):
            return None
        if self.operator is None:  # run() and resume() refuse first; a factory's instrument
            raise ClosedLoopError(_NO_OPERATOR.format(name=self.campaign.name))
        try:
            self._asking_operator = True
            entry = self.operator.measure(number, parameters)
        except OperatorInterrupted:
            return TrialResult(
                run_uid=None,
                exit_status="abort",
                error="interrupted while waiting for the operator's results",
            )
        except OperatorStop as exc:
            self._stop_request = str(exc)
            self.operator_stopped = True
            return TrialResult(run_uid=None, exit_status="abort", error="no result entered")
        finally:
            self._asking_operator = False
        if entry.failed is not None:  # stored with what was typed before: nothing is lost
            return TrialResult(
                run_uid=None,
                exit_status="fail",
                error=f"{OPERATOR_FAILED}{entry.failed}",
                outputs=dict(entry.outputs),
            )
        if entry.stop is not None:
            # The values are in: this trial's run (milliseconds) goes ahead and is recorded,
            # then the loop stops. A Ctrl-C already made its stop request; held back until
            # then, as `_drive` aborts every run in flight once a stop request is seen.
            self._stop_after = self._stop_request or entry.stop
            self._stop_request = None
            self.operator_stopped = True
        instrument.enter(entry.outputs, entry.actual)
        return None

    def _sink(self, trial_id: int) -> Callable[[str, dict[str, Any]], None]:
        seq = 0
        run_uid: str | None = None

        def sink(name: str, doc: dict[str, Any]) -> None:
            nonlocal seq, run_uid
            if trial_id in self._left_running or self.lease.lost.is_set():
                # The session gave up on this slot and released the lease, or another runner
                # took the lease over: a resume may already have reconciled the trial from
                # the documents stored until then.
                logger.info(
                    "trial %d: %s document after its session ended, not stored", trial_id, name
                )
                return
            if name == "start":
                run_uid = doc.get("uid")
            seq += 1
            try:
                self.store.add_document(
                    trial_id,
                    seq,
                    name,
                    doc,
                    run_uid,
                    campaign_id=self._cid(),
                    token=self.lease.token,
                )
            except LeaseLost as exc:
                # Not raised into the RunEngine: the loop stops at its next lease check, or
                # when this trial's outcome is refused the same way.
                logger.warning("trial %d: %s document not stored: %s", trial_id, name, exc)
                self.lease.lost.set()

        return sink

    def _observation(
        self,
        commanded: Point,
        readbacks: dict[str, Any],
        outputs: dict[str, float],
        status: str,
        *,
        told: bool = False,
    ) -> Observation:
        """The model learns from where the instrument actually was, when it says so.

        A readback point outside the space (an instrument's readbacks within tolerance of a
        point on a constraint's edge) falls back to the commanded point. Parameters told as
        actually used (``tell --actual``, the manual prompt; ``told``) never do:
        ``loop.asktell`` refuses them unless ``achieved_point`` of them lies in the space.

        A failure is learnt at the commanded point unless ``told``: an instrument's
        readbacks of a failed trial say where its devices were when it failed (a stage that
        stalled on its way: ``instruments.Dispatcher`` reads them after the run), and the
        planner must learn that the point it asked for fails, not the spot where the stage
        stopped.
        """
        achieved = achieved_point(commanded, readbacks)
        parameters = achieved if self.space.contains(achieved) else commanded
        if status == "abandoned":  # interrupted: nothing learned about the point
            return Observation(parameters=parameters, outcome="abandoned")
        if status != "completed":
            return Observation(parameters=parameters if told else commanded, outcome="failed")
        return Observation(parameters=parameters, outputs=dict(outputs))

    # ----------------------------------------------------------------- resuming
    def _reconcile(self, cid: int) -> list[Reconciled]:
        """Give every trial left ``running`` by a crash its outcome from its documents.

        The caller holds the lease, so no other runner is measuring these trials: a
        ``running`` row can only be a trial whose runner died before recording it.
        """
        done: list[Reconciled] = []
        for trial, outcome in self.reconciliations(self.store.running_trials(cid)):
            trial_id = _id(trial)
            ended = self._last_sign_of_life(trial)
            self._close_dead_run(cid, trial_id, ended)
            self.store.finish_trial(
                trial_id,
                status=outcome.status,
                outputs=outcome.outputs,
                readbacks=outcome.readbacks,
                run_uid=outcome.run_uid,
                error=outcome.error,
                transient=outcome.transient,
                token=self.lease.token,
                finished_at=datetime.fromtimestamp(ended, UTC),
            )
            logger.info("reconciled trial %s as %s", trial.number, outcome.status)
            done.append(Reconciled(trial.number, trial_id, outcome.status, outcome.error))
        return done

    def _slots_waiting(self) -> tuple[float, int] | None:
        """For the heartbeat: since when idle slots have waited for the planner, and how
        many (:meth:`Scheduler.proposing`)."""
        sched = self._scheduler
        return None if sched is None else sched.proposing()

    def _last_sign_of_life(self, trial: TrialRow) -> float:
        """When a trial left in flight by a dead runner ended, as near as the store knows
        (Unix seconds): the later of its last stored document and its runner's last
        heartbeat, never after now. ``resume``'s own clock made a run cut short at 07:24 and
        resumed at 07:38 read as a 14-minute run (found in review); with neither (a runner
        that released its lease, a run that stored nothing) the trial's start."""
        times = [
            float(t)
            for d in self.store.documents(_id(trial))
            if isinstance(t := d.body.get("time"), int | float)
        ]
        if self._last_alive is not None:
            times.append(self._last_alive)
        if not times and trial.started_at is not None:
            times.append(as_utc(trial.started_at).timestamp())
        return min(max(times, default=time.time()), time.time())

    def _close_dead_run(self, cid: int, trial_id: int, ended: float) -> None:
        """Store the stop document a run cut short by its process dying never got
        (``closing_stop_document``: ``exit_status='abort'``, dated ``ended``), so a catalog
        fed the stored documents sees it finished. Written before the trial's outcome: a
        resume that dies in between finds the stop, and reconciles the trial as abandoned
        all the same."""
        stored = self.store.documents(trial_id)
        stop = closing_stop_document([(d.name, d.body) for d in stored], now=ended)
        if stop is None:
            return
        self.store.add_document(
            trial_id,
            max(d.seq for d in stored) + 1,
            "stop",
            stop,
            stop["run_start"],
            campaign_id=cid,
            token=self.lease.token,
        )

    def reconciliations(self, running: Sequence[TrialRow]) -> list[tuple[TrialRow, Reconciliation]]:
        """What ``resume`` records for each of these trials left ``running`` by a crash,
        decided from its stored documents; nothing is written (``plan --store`` previews
        the point ``resume`` measures next from them)."""
        if not running:
            return []
        c = self.campaign
        outputs = describe_instrument(c.instrument, c.parameters, base_dir=self.loaded.base_dir)
        return [
            (
                trial,
                reconcile_documents(
                    [(d.name, d.body) for d in self.store.documents(_id(trial))],
                    outputs=outputs,
                    needed=required_outputs(c),
                    inputs=self.space.names,
                    readback_limits=self._readback_limits(),
                    readback_tolerance=c.instrument.readback_tolerance,
                ),
            )
            for trial in running
        ]

    def _stored_observation(self, trial: TrialRow, outputs: dict[str, float]) -> Observation:
        """A stored terminal trial as the planner saw it when it ended."""
        status = trial.status if trial.status in ("completed", "abandoned") else "failed"
        status = _learned_status(
            status, was_transient(trial), retry=trial.kind == "retry", error=trial.error
        )
        from loop.asktell import is_told

        return self._observation(
            trial.parameters, trial.readbacks or {}, outputs, status, told=is_told(trial)
        )

    def _tally(
        self, trials: Sequence[TrialRow], observations: dict[int, dict[str, float]]
    ) -> _Tally:
        """The campaign's counts from its stored ``trials`` (``running`` ones count nowhere),
        as ``_count`` keeps them live: in the order the trials ended (:func:`_ended_order`),
        as the loop counted them. Counted by trial number, a campaign whose slots finished
        out of order was judged on another window by ``patience`` once resumed: one that had
        ended "completed: patience" resumed and ran more trials (found in review)."""
        tally = _Tally()
        for t in _ended_order(t for t in trials if t.status in TERMINAL):
            self._count(tally, self._report_of(t, observations), rank=False)
        self._rank(tally)  # once: each completed trial may change which readings are outlying
        return tally

    def _count(self, tally: _Tally, report: TrialReport, *, rank: bool = True) -> None:
        """Count one ended trial (completed, failed or abandoned) and set its ``best``.

        ``rank=False`` leaves the best and the outlying readings to one ``_rank`` after a
        whole history (``_tally``): ranking after each of n trials would cost n times as much.
        """
        if report.status == "completed":
            feasible = self.feasible(report.outputs)
            prior = report.kind == PRIOR_KIND
            if prior:
                tally.prior += 1
            else:
                tally.completed += 1
                tally.feasible += feasible
            values = objective_values(report.status, report.outputs, self.campaign.objectives)
            tally.done.append(_Done(report.number, prior, values, feasible, report))
            if rank:
                self._rank(tally)
        elif report.status == "failed":
            tally.failures.append(failure(report.number, report.error))
            tally.failed_slots[report.slot] = tally.failed_slots.get(report.slot, 0) + 1
        else:
            tally.abandoned += 1
        if tally.best is not None:
            report.best = tally.best.objective
        report.front = tally.front

    def _rank(self, tally: _Tally) -> None:
        """Set ``tally.best`` and ``tally.outlying`` (and each completed trial's
        ``outlying`` flag) from every completed trial, as ``status`` and the report do
        (``planners._outliers.best_index``): a reading far outside every other one is
        judged against all of them, so it is ranked again as trials come in.

        Only one objective flags a trial outlying: best and outlying are single-objective
        notions, and with several the Pareto front and the hypervolume count such a reading
        (README). The flag made of the first objective's values also kept ``target`` on
        another objective from being met (a sentinel in objective ``a`` blocked ``{b: 0.5}``
        with ``b = 0.97`` on the front; found in review).

        The best is picked in trial-number order (of equal values the lowest number wins),
        as ``status`` and the report pick it, whatever order the trials ended in."""
        done = tally.done
        by_number = sorted(range(len(done)), key=lambda i: done[i].number)
        candidates = _best_candidates(done)
        index, ranked = best_index([candidates[i] for i in by_number], self.objective.sign)
        tally.best = None if index is None else done[by_number[index]].report
        mask = np.zeros(len(done), dtype=bool)
        mask[by_number] = ranked
        single = len(self.campaign.objectives) == 1
        tally.outlying = []
        for d, flag in zip(tally.done, mask, strict=True):
            d.report.outlying = single and bool(flag)
            if d.report.outlying:
                tally.outlying.append(d.report)
        if single or not tally.done:
            tally.front = None if single else 0
            return
        objectives = self.campaign.objectives
        if tally.front_members is not None and tally.front_of == len(tally.done) - 1:
            # one trial more than the front was made of: compared with the front alone
            new = tally.done[-1]
            members = tally.front_members
            on, off = front_after([m.values for m in members], new.values, objectives, new.feasible)
            for member, pushed in zip(members, off, strict=True):
                member.report.on_front = not pushed
            members = [m for m, pushed in zip(members, off, strict=True) if not pushed]
            new.report.on_front = on
            tally.front_members = [*members, new] if on else members
        else:
            Y = np.array([d.values for d in tally.done], dtype=float)
            feasible = np.array([d.feasible for d in tally.done], dtype=bool)
            front = pareto_mask(Y, objectives, feasible)
            for d, on in zip(tally.done, front, strict=True):
                d.report.on_front = bool(on)
            tally.front_members = [d for d, on in zip(tally.done, front, strict=True) if on]
        tally.front_of = len(tally.done)
        tally.front = len(tally.front_members)

    # ----------------------------------------------------------------- goals
    @cached_property
    def outcome_constraints(self) -> list[OutcomeConstraint]:
        """The campaign's outcome constraints, parsed (once: ``feasible`` asks per trial)."""
        return self.campaign.parsed_outcome_constraints

    def feasible(self, outputs: Mapping[str, float]) -> bool:
        """Whether measured ``outputs`` satisfy every outcome constraint."""
        return all(c.satisfied(outputs) for c in self.outcome_constraints)

    def _targets(self) -> dict[str, float]:
        """``budget.target`` as ``{objective: value}`` (a bare number is the first's)."""
        target = self.budget.target
        if target is None:
            return {}
        if isinstance(target, dict):
            return dict(target)
        return {self.objective.name: float(target)}

    def _target_reached(self, tally: _Tally) -> str | None:
        """The stop reason once one feasible trial meets every target, else ``None``.

        A reading far outside every other one (``TrialReport.outlying``: a saturated
        detector's 9.9e37) is no best trial, so it meets no target either: it stopped a
        campaign "target reached" at its first overrange reading (found in review). Only a
        campaign with one objective flags any (see :meth:`_rank`); a genuine extreme below
        ``planners._outliers.SENTINEL_MAGNITUDE`` is never flagged, and meets its target.
        """
        targets = self._targets()
        if not targets:
            return None
        objectives = self.campaign.objectives
        index = {o.name: j for j, o in enumerate(objectives)}
        for done in tally.done:
            if not done.feasible or done.report.outlying:
                continue
            if all(
                math.isfinite(done.values[index[name]])
                and objectives[index[name]].sign * (done.values[index[name]] - value) >= 0
                for name, value in targets.items()
            ):
                which = "prior-data trial" if done.prior else "trial"
                reached = ", ".join(
                    f"{name} = {done.values[index[name]]:.6g} (target {value:g})"
                    for name, value in targets.items()
                )
                return f"target reached: {which} #{done.number} has {reached}"
        return None

    def _out_of_patience(self, tally: _Tally) -> str | None:
        """The stop reason when the last ``patience`` completed trials brought no gain; with a
        model-based planner, not before one of them is a model's proposal.

        The gain is the best feasible value of the first objective (several objectives:
        the feasible hypervolume, with one reference point for both) over all completed
        trials, priors included, minus the same before the window. A gain counts when it
        is positive and at least ``min_improvement``. Prior trials are never in the window.
        A reading far outside every other one is no best here either (as in ``status``).
        """
        n = self.budget.patience
        if n is None or tally.completed < n:
            return None
        if self.campaign.planner.kind in _MODEL_PLANNERS and not any(
            d.report.kind == "model" for d in tally.done[-n:] if not d.prior
        ):
            # Still the initial design: its points are spread over the space on purpose, so
            # "no gain in N" says nothing yet. Was: `initial.n: 8, patience: 3` stopped after
            # the 8 design points, before the model had proposed one (found in review).
            return None
        # Judged again only when a trial completed: the loop asks on every event (a
        # proposal, a failure too), and with four objectives two hypervolumes over a
        # 700-trial front took 1-2 s of engine time each time (found in review).
        if tally.patience is not None and tally.patience[0] == len(tally.done):
            return tally.patience[1]
        verdict = self._patience_verdict(tally, n)
        tally.patience = (len(tally.done), verdict)
        return verdict

    def _patience_verdict(self, tally: _Tally, n: int) -> str | None:
        """``_out_of_patience`` worked out for ``tally.done`` as it is now."""
        done = tally.done
        split = len(done) - n
        minimum = self.budget.min_improvement
        at_least = f" by at least {minimum:g}" if minimum > 0 else ""
        objectives = self.campaign.objectives
        if len(objectives) == 1:
            # one judgement of which readings are outlying (over every completed trial) for
            # both points: a sentinel must neither freeze the best nor count as a gain
            sign = objectives[0].sign
            trace, _ = best_trace(_best_candidates(done), sign)
            now = _signed_or_none(trace[-1], sign)
            then = _signed_or_none(trace[split - 1], sign) if split > 0 else None
            if now is not None and (then is None or _gained(now - then, minimum, now)):
                return None
            best = "none feasible" if now is None else f"best {sign * now:.6g}"
            return (
                f"patience: {objectives[0].name} did not improve{at_least} in the last {n} "
                f"completed trials ({best})"
            )
        Y = np.array([d.values for d in done], dtype=float)
        feasible = np.array([d.feasible for d in done], dtype=bool)
        try:
            ref = infer_reference_point(objectives, Y, feasible)
        except ValueError:  # nothing finite to infer it from: no volume either way
            now = then = 0.0
        else:
            now = hypervolume(Y, objectives, ref, feasible)
            then = hypervolume(Y[:split], objectives, ref, feasible[:split])
        if _gained(now - then, minimum, now):
            return None
        return (
            f"patience: the hypervolume did not grow{at_least} in the last {n} completed "
            f"trials (hypervolume {now:.6g})"
        )

    def _with_goals(self, summary: CampaignSummary, tally: _Tally) -> CampaignSummary:
        """Add priors, feasibility and (several objectives) the Pareto front to a summary.

        ``tally`` is the session's own, which counted every trial whose outcome the store
        holds (the ones ended by the final drain too). Its completed trials are put in trial
        order for the summary's Pareto list, and ranked again with every outcome in.
        """
        tally.done.sort(key=lambda d: d.number)
        self._rank(tally)
        summary.prior, summary.feasible, summary.best = tally.prior, tally.feasible, tally.best
        summary.outlying = tally.outlying
        objectives = self.campaign.objectives
        summary.objectives = [o.name for o in objectives]
        summary.outcome_constraints = list(self.campaign.outcome_constraints)
        if len(objectives) > 1 and tally.done:
            summary.pareto = [d.report for d in tally.done if d.report.on_front]  # by _rank
            Y = np.array([d.values for d in tally.done], dtype=float)
            feasible = np.array([d.feasible for d in tally.done], dtype=bool)
            try:
                summary.hypervolume = hypervolume(Y, objectives, None, feasible)
            except ValueError:
                summary.hypervolume = None
        return summary

    def _report_of(self, t: TrialRow, observations: dict[int, dict[str, float]]) -> TrialReport:
        """A stored trial as the loop reported it (no timing: that is not stored)."""
        outputs = observations.get(_id(t), {})
        return TrialReport(
            number=t.number,
            trial_id=_id(t),
            status=t.status,
            parameters=dict(t.parameters),
            outputs=outputs,
            objective=_finite_or_none(outputs.get(self.objective.name)),
            best=None,
            error=t.error,
            timing=TrialTiming(0.0, 0.0, 0.0, 0.0),
            kind=t.kind,
            slot=t.slot or 0,
            readbacks=dict(t.readbacks or {}),
        )

    @staticmethod
    def _prior_trials(rows: Sequence[PriorRow]) -> list[tuple[dict[str, Any], dict[str, float]]]:
        """Earlier measurements as ``(parameters, outputs)`` of completed ``prior`` trials.

        They are data, not experiments: no Bluesky run, no documents, never dispatched.
        ``create`` stores them with the campaign, in its transaction (a crash stores all or
        none: ``resume`` never inserts them again); ``resume`` finds them in the store and
        the rebuilt planner ingests them first, like any completed trial.
        """
        return [(dict(row.parameters), dict(row.outputs)) for row in rows]

    def _instrument_seed(self, trials_so_far: int) -> int:
        """The campaign seed for a new campaign; a fresh stream for each resumed session.

        Reusing the seed after a resume would replay the same noise and injected faults
        from the start of their streams; deriving it from the trial count keeps a resumed
        campaign reproducible without that. The ``_RESUME_STREAM`` tag keeps it apart from
        the slots' streams (``instruments.slot_seed`` derives ``[seed, index]``): without
        it, slot 0 of a session resumed after k trials replayed slot k's first session.
        """
        if trials_so_far == 0:
            return self.seed
        entropy = [self.seed, _RESUME_STREAM, trials_so_far]
        return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _check_store(store: Any, call: str) -> None:
    """A ``TypeError`` showing ``call`` with the ``Store`` to give, for a URL or a path given
    instead (a notebook's slip: it failed deep inside as AttributeError; found in review,
    session 39). A password in a URL is shown masked, as every message shows it."""
    if isinstance(store, Store):
        return
    from loop.store import shown_url

    text = str(store)
    url = shown_url(text) if "://" in text else f"sqlite:///{text}"
    raise TypeError(
        f"Runner takes an open store, not {type(store).__name__} {shown_url(text)!r}: "
        + call.format(f"Store({url!r})")
    )


# ---------------------------------------------------------------------------- reconciling
@dataclass(frozen=True)
class Reconciliation:
    """The outcome of a trial reconstructed from its stored Bluesky documents."""

    status: TrialStatus
    outputs: dict[str, float]
    readbacks: dict[str, Any]
    run_uid: str | None
    error: str | None

    @property
    def transient(self) -> bool:
        """Whether it failed transiently, read from its error (the exception is gone):
        what ``resume`` stores, and what ``plan --store`` previews it as."""
        return self.status == "failed" and transient_failure(self.error)


def reconcile_documents(
    documents: Sequence[tuple[str, dict[str, Any]]],
    *,
    outputs: Sequence[str],
    needed: Collection[str] | None,
    inputs: Sequence[str],
    readback_limits: Mapping[str, tuple[float, float]] | None = None,
    readback_tolerance: float = 0.0,
) -> Reconciliation:
    """Decide what a trial whose runner died achieved, from the documents it stored.

    * stop ``success`` and a primary event: ``completed``, outputs and readbacks from the
      event data (the measurement happened and the run closed cleanly), unless an output
      is missing or not finite, or a readback lies outside ``readback_limits``, which makes
      it ``failed`` as it would have been live;
    * stop ``fail``: ``failed`` with the stop's reason (the instrument failed, or the plan
      refused its reading: the result is kept, with the outputs read in the latter case,
      and counts toward ``max_failures``);
    * no stop, stop ``abort``, or no event: ``abandoned``, saying why. Such a trial never
      finished its run, so no measurement of it is trusted.

    The event is read as the dispatcher read it live (``outputs_and_readbacks``): a
    readback under the parameter's name, else under its device's name as the start
    document records it (``readback_keys``; a run stored without that map is read by
    parameter name only). A null output is the store's NaN or infinity: not finite.

    Args:
        documents: ``(name, body)`` in emission order.
        outputs: the instrument's output names.
        needed: those a completed trial must have read as finite numbers (the
            dispatcher's ``needed_outputs``; ``None``: all).
        inputs: the parameter names.
    """
    run_uid: str | None = None
    recorded: Any = None
    primary: set[str] = set()
    data: dict[str, Any] = {}
    events = 0
    stop: dict[str, Any] | None = None
    for name, doc in documents:
        if name == "start":
            run_uid = doc.get("uid")
            recorded = doc.get(READBACK_KEYS_MD)
        elif name == "descriptor" and doc.get("name") == STREAM_NAME:
            primary.add(doc.get("uid", ""))
        elif name == "event" and doc.get("descriptor") in primary:
            events += 1
            data.update(doc.get("data") or {})
        elif name == "stop":
            stop = doc
    devices = recorded if isinstance(recorded, dict) else {}
    keys: dict[str, str] = {}
    for k in inputs:
        device = devices.get(k)
        keys[k] = device if isinstance(device, str) and device else k
    reading = outputs_and_readbacks(
        data,
        outputs=outputs,
        needed=needed,
        readback_keys=keys,
        limits=readback_limits or {},
        tolerance=readback_tolerance,
        stored=True,
    )
    readbacks = reading.readbacks

    def abandoned(why: str) -> Reconciliation:
        return Reconciliation("abandoned", {}, readbacks, run_uid, why)

    if run_uid is None:
        return abandoned("the runner stopped before this trial's run started (no documents)")
    if stop is None:
        measured = "its event was stored, " if events else ""
        return abandoned(
            f"the runner stopped during this trial's run: {measured}no stop document, so the "
            "run never finished"
        )
    exit_status = stop.get("exit_status")
    if exit_status == "fail":
        # A run the plan failed on its reading (``MeasurementRejected``) keeps what it read,
        # as the live dispatcher keeps it; an instrument's failure read nothing to keep.
        kept = reading.outputs if events and reading.problems else {}
        return Reconciliation(
            "failed", kept, readbacks, run_uid, stop.get("reason") or "run ended with 'fail'"
        )
    if exit_status != "success":
        return abandoned(f"the run ended with exit_status {exit_status!r}: {stop.get('reason')}")
    if not events:
        return abandoned("the run closed successfully but stored no primary event")
    if reading.problems:
        return Reconciliation(
            "failed", reading.outputs, readbacks, run_uid, "; ".join(reading.problems)
        )
    return Reconciliation("completed", reading.outputs, readbacks, run_uid, None)


PRIOR_KIND = "prior"
"""Trial kind of prior-data rows: completed, never dispatched, not counted by max_trials."""
_MODEL_PLANNERS = frozenset({"botorch", "ax"})
"""Planner kinds whose first trials are an initial design, then a model's (kind ``model``)."""


def achieved_point(commanded: Mapping[str, Any], readbacks: Mapping[str, Any]) -> Point:
    """The point a trial actually ran at: the commanded one, with each parameter's readback
    (or told actual value) in its place where there is one."""
    return {**commanded, **{k: v for k, v in readbacks.items() if k in commanded}}


def _ended_order(trials: Iterable[TrialRow]) -> list[TrialRow]:
    """Terminal trials in the order they ended, which is the order the loop counts them in
    (``Runner._count``): prior-data rows first, then by ``ended``, the sequence the store
    gives each trial in the transaction that records its outcome (``TrialRow.ended``;
    trials that ended in one write, a ``tell --csv``, by number). The stopping rules that
    look at an order (``patience``'s window, the trial ``target`` names) and the planner's
    ingest order see one order, live and rebuilt.

    Not by ``finished_at``: it is the wall clock's, which can step back (an NTP correction,
    a technician setting an offline PC's clock). Trials that ended after a step back of an
    hour were put before those ended before it, and a campaign whose patience never tripped
    live was judged out of patience once rebuilt, refused by every ``resume`` (found in
    review). Rows ended before the store had ``ended`` (store schema 3 and earlier: NULL)
    ended before every numbered one, and keep the order they had, by ``finished_at``.

    A trial with neither (a row told but not yet written, see ``loop.asktell``) is taken as
    ending now, after every stored one, by number. Times are compared as UTC without a
    zone: SQLite gives them back naive, a row built in memory has its zone.
    """

    def key(t: TrialRow) -> tuple[bool, int, int, datetime, int]:
        at = t.finished_at
        if at is not None and at.tzinfo is not None:
            at = at.astimezone(UTC).replace(tzinfo=None)
        # 0: ended before the column existed; 1: numbered by the store; 2: not yet written
        era = 1 if t.ended is not None else 0 if at is not None else 2
        return (t.kind != PRIOR_KIND, era, t.ended or 0, at or datetime.min, t.number)

    return sorted(trials, key=key)


def _finite_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _best_candidates(done: Sequence[_Done]) -> list[float]:
    """The first objective of each completed trial where it may be the best (feasible),
    NaN elsewhere: what ``planners._outliers.best_index`` takes, as in ``loop.report``."""
    return [d.values[0] if d.feasible else math.nan for d in done]


def _abandoned_error(stop: str, error: str | None) -> str:
    """An aborted trial's error: the stop's reason once. The dispatcher's own error already
    names it (``run aborted: <reason>``) when the abort came with it; prefixing it again
    stored every reason twice (found in review)."""
    if not error:
        return stop
    return error if stop in error else f"{stop}: {error}"


def _signed_or_none(value: float, sign: float) -> float | None:
    """A best value times ``sign`` (bigger is better); None for NaN (none yet)."""
    return None if math.isnan(value) else sign * float(value)


def _gained(gain: float, minimum: float, scale: float) -> bool:
    """A gain counts when above rounding noise and at least ``minimum``."""
    return gain > 1e-12 * max(1.0, abs(scale)) and gain >= minimum


def _what_to_check(failures: Sequence[Failure]) -> str:
    """Where a campaign's failures point: the operator's reasons for the trials they marked
    failed (``tell --fail``, the prompt's ``fail``: nothing the engine can diagnose); for
    the others, the user's function when it raised or returned the wrong outputs every time
    (the instrument is blameless there), the Dask cluster when its workers were lost every
    time, else the instrument."""
    kinds = {f.kind for f in failures}
    advice = []
    if OPERATOR_KIND in kinds:
        kinds.discard(OPERATOR_KIND)
        advice.append("see the operator's reasons (`closedloop status` lists them)")
    if kinds and all(k.startswith("function raised") or k == "wrong outputs" for k in kinds):
        advice.append(
            "check the function (each failed trial's error says what it raised or returned)"
        )
    elif kinds == {WORKER_LOST}:
        advice.append("check the Dask cluster (its workers' logs say why they were lost)")
    elif kinds or not advice:
        advice.append("check the instrument")
    return "; ".join(advice)


def _stored_budget(row: CampaignRow, file_budget: Budget) -> Budget:
    """The budget a stored campaign ran with: the one its row records, else what the
    store tells of it (:func:`loop.store.known_budget`) over the campaign file's.

    Only campaigns stored by closedloop's first release (store schema 1) have none recorded.
    That release overrode ``max_trials`` only (``run --max-trials``), so the file's other
    limits are the ones they ran with. Their ``max_trials`` was taken from the file: a
    campaign run with ``--max-trials 6`` was resumed to the file's 30, without a word, and a
    finished one needed no larger budget to go on (found in review). Now a campaign that
    ``max_trials`` ended keeps the limit it reached; for any other, the file's is used and
    said to be so.
    """
    if row.budget is not None:
        return Budget.model_validate(row.budget)
    known = known_budget(row)
    if "max_trials" not in known:
        logger.warning(
            "campaign '%s' (id %s) was stored by a closedloop that did not record its budget; "
            "its max_trials is taken from its file (%s): give --max-trials N if it ran with "
            "another",
            row.name,
            row.id,
            file_budget.max_trials if file_budget.max_trials is not None else "none",
        )
    return file_budget.model_copy(update=known)


def _learned_status(
    status: str, transient: bool | None, *, retry: bool, error: str | None = None
) -> str:
    """The outcome the planner learns from a trial's last attempt at its point.

    A trial that never measured (``UNMEASURED``: its function was still busy with an
    earlier, stopped call) is learned as ``abandoned`` on any attempt: with retries, points
    that waited behind one hung call were learned as failing (found in review).

    A transient failure (a timeout, a fault the instrument flags as transient) on a point's
    first attempt says nothing about the point: it is learned as ``abandoned``. Taught as
    ``failed``, such faults (a robot that drops one vial in three) walled the planner off
    from good regions (Branin with 30 % random faults: median regret 3.4 against 0.011;
    session 12's review). A retry that failed too is learned as ``failed``: the point failed
    every attempt, which is what a point the instrument cannot measure does.

    Nor does a move ``max_step`` refused (``STEP_REFUSED``): it failed for where the device
    was, not for the point.

    A readback outside the bounds (``READBACK_MISSED``) is transient, so it is retried, but
    is learned as ``failed`` on any attempt that no retry follows: a drive that always
    misses a bound had its point proposed again and again under ``max_retries: 0``, until
    ``max_failures`` ended the campaign (found in review).

    A trial failed by a misnamed key in the user's function (:func:`simulators._keys.
    misnamed`) says nothing about its point either: a resume after the fix learned such
    points as failing regions (found in review).
    """
    if status == "failed" and (
        failure_kind(error) in (UNMEASURED, STEP_REFUSED) or misnamed(error)
    ):
        return "abandoned"
    if status == "failed" and transient and not retry and failure_kind(error) != READBACK_MISSED:
        return "abandoned"
    return status


def _given_up(
    history: Sequence[TrialRow], owed: Mapping[int, Retry], reconciled: Sequence[Reconciled]
) -> list[int]:
    """Numbers of the retries this resume found cut off by a crash a second time in a row,
    so not run again (``loop.retries.owed_retries``): said, or a point's retry vanished unsaid."""
    retries = {_id(t) for t in history if t.kind == "retry"}
    return [
        r.number
        for r in reconciled
        if r.status == "abandoned" and r.trial_id in retries and r.trial_id not in owed
    ]


def _override(
    budget: Budget,
    *,
    max_trials: int | None,
    max_failures: int | None,
    max_duration: float | None,
) -> Budget:
    """``budget`` with the given limits replaced (validated like the file's)."""
    changes: dict[str, Any] = {}
    if max_trials is not None:
        changes["max_trials"] = max_trials
    if max_failures is not None:
        changes["max_failures"] = max_failures
    if max_duration is not None:
        changes["max_duration"] = max_duration
    if not changes:
        return budget
    return Budget.model_validate({**budget.model_dump(), **changes})


def _file_subscriptions(
    instrument: Instrument,
) -> list[tuple[str, Callable[[str, dict[str, Any]], Any]]]:
    """The live consumers an instrument file's ``subscriptions:`` names, made for one slot
    (``instruments.load_subscriptions``); none for an instrument without a file."""
    from instruments._build import load_subscriptions
    from instruments._instrument_file import InstrumentFile

    spec = getattr(instrument, "spec", None)
    if not isinstance(spec, InstrumentFile) or not spec.subscriptions:
        return []
    return load_subscriptions(spec)


def _id(trial: TrialRow) -> int:
    if trial.id is None:  # pragma: no cover - the database assigns it
        raise RuntimeError("trial has no id after commit")
    return trial.id
