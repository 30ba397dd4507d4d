"""The campaign store: SQLModel tables on SQLite, or on a PostgreSQL server a lab's machines
share (both tested; ``tests/loop/test_store_postgres.py`` runs a real server).

Persist before you act: a trial row is committed (status ``running``) before the RunEngine
touches a device, each Bluesky document is committed as it arrives, and the trial's outcome
is committed as soon as its instrument slot reports it, before the planner learns from it.
With one slot that is before the next trial is proposed; with several (ADR 0005) proposals
are made while other trials still measure, those in flight passed to the planner as pending.
A crash at any point leaves rows that say exactly how far a trial got, so no measurement is
ever lost silently.

SQLite runs in WAL mode with ``synchronous=FULL``: readers (``closedloop status`` in another
terminal) never block the runner, and a committed trial survives power loss. PostgreSQL runs
at ``READ COMMITTED`` with pre-pinged pooled connections (``_engine_options``); what it
refuses that SQLite took is made storable on every backend (NaN/inf in JSON as null, NUL in
free text escaped, ids beyond 32 bits matched to nothing).

Only one runner drives a campaign: it holds the campaign's row in the ``lease`` table (owner,
random token, heartbeat, expiry; see ``loop.lock``), and every write that moves the campaign
forward (a new trial, a trial's outcome, the campaign's end) checks that token inside its own
transaction, so a runner that lost its lease cannot write over its successor's work.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar, cast

from sqlalchemy import (
    JSON,
    Column,
    Index,
    bindparam,
    delete,
    event,
    func,
    insert,
    inspect,
    text,
)
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
)
from sqlmodel import Field, Session, SQLModel, col, create_engine, select, update

from loop.errors import StoreError, cli_command, first_line
from simulators._text import shown

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_STORE = "sqlite:///closedloop.db"

TrialStatus = Literal["running", "completed", "failed", "abandoned"]
TERMINAL: tuple[str, ...] = ("completed", "failed", "abandoned")
# The largest row id every backend can hold: ids are ``integer`` columns, 32-bit on
# PostgreSQL, which refuses to even compare one with a larger number ("integer out of
# range"). A larger id a user types matches no row.
MAX_ID = 2**31 - 1
# Campaign states a runner can continue; ``completed``/``failed`` need a larger budget first.
# ``paused``: a runner waits for interlocks (or crashed while waiting).
UNFINISHED: tuple[str, ...] = ("running", "paused", "stopped")
# States in which a live runner may be driving the campaign.
ACTIVE: tuple[str, ...] = ("running", "paused")


class CampaignLocked(StoreError):
    """Another live runner holds the campaign's lease.

    Attributes:
        owner: ``host:pid`` of the runner holding it.
    """

    def __init__(self, message: str, *, owner: str) -> None:
        super().__init__(message)
        self.owner = owner


class LeaseLost(StoreError):
    """This runner's lease was taken over (it stalled past its expiry); it must stop writing."""


class StoreGone(StoreError):
    """The store's SQLite file was deleted or replaced while a runner wrote to it."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(at: datetime) -> datetime:
    """A stored time as an aware UTC one: SQLite gives it back naive (it is UTC),
    PostgreSQL with its zone."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


# The layout of the tables. 1: campaign/trial/observation/document; 2: + lease table and the
# campaign's budget and elapsed_seconds columns (added in place when an older store opens);
# 3: + the trial's instrument slot, the campaign's instrument_text and the campaign_event
# table (pauses and operator releases); later, still 3: + the trial's transient column and
# the campaign's planner_origin (additive and nullable, as the paragraph below says).
# A store written with a higher number is refused: this version cannot know its meaning.
#
# The transient column did not raise the number, on purpose. A version bump protects a store
# from code that would misread it; here the older schema-3 code reads every row as it did and
# writes NULL into the column it does not know, and NULL has one meaning everywhere: not
# recorded, read from the trial's error (``loop.failures.was_transient``), as for the rows
# written before the column existed. A bump would only lock out schema-3 installations that
# write the column correctly too, from a store a lab's machines share, and gain nothing.
# Raise it for a change the older code would misread (a column whose NULL it cannot mean, a
# table whose rows it would contradict), never for an additive, nullable one.
#
# 4: + the trial's ``ended``, the order trials ended in (``Store.finish_trial``). This one
# raised the number because its NULL has a meaning only while no older code writes: a NULL
# row ended before every numbered one of its campaign (it was finished before the store was
# upgraded). A schema-3 runner finishing trials after a schema-4 one would write NULL for
# trials that ended last, and they would be read as the first; refused, it cannot.
SCHEMA_VERSION = 4


class MetaRow(SQLModel, table=True):
    """Facts about the store itself (``schema_version``)."""

    __tablename__ = "closedloop_meta"

    key: str = Field(primary_key=True)
    value: str


class CampaignRow(SQLModel, table=True):
    """One campaign: its exact YAML text (so ``resume`` needs no file) and its state."""

    __tablename__ = "campaign"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    config_text: str
    config_path: str
    seed: int
    # running | paused (waiting for interlocks; stop_reason says why) | completed | stopped
    # | failed
    status: str = Field(default="running")
    stop_reason: str | None = None
    # The budget in force (the file's, with --max-trials etc. applied), so resume keeps it.
    budget: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    # Running time summed over every session (heartbeats add to it); max_duration counts it.
    elapsed_seconds: float = Field(default=0.0)
    # The instrument file's exact text when the campaign started (``instrument: {file:}``),
    # so resume and suggest/tell build the same devices if the file changes or vanishes; for
    # a dataset instrument, a JSON record of its data's hash, parameters and goals instead
    # (``loop.config._apply_dataset``), so status/export/report never need the data.
    instrument_text: str | None = None
    # A `planner: {plugin: ...}` campaign's plugin as it was when the campaign started (JSON:
    # a file's path and SHA-256, or a distribution's name and version), so resume, suggest
    # and plan warn when it has changed (``loop.planner_plugin.pin_origin``); NULL otherwise.
    planner_origin: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class TrialRow(SQLModel, table=True):
    """One experiment: commanded parameters, achieved readbacks, outcome, provenance."""

    __tablename__ = "trial"
    __table_args__ = (
        Index("ix_trial_campaign_number", "campaign_id", "number", unique=True),
        # ``ended`` is unique per campaign (NULLs apart, on every backend), and its maximum,
        # read at every trial's end, is one index probe instead of a scan of the campaign.
        Index("ix_trial_campaign_ended", "campaign_id", "ended", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    number: int  # 1, 2, ... within the campaign
    kind: str  # initial | model | prior
    status: str = Field(default="running")
    parameters: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    readbacks: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    run_uid: str | None = Field(default=None, index=True)
    error: str | None = None
    suggest_seconds: float | None = None
    # Which instrument slot ran it (0-based; ``instrument.count`` slots); None: never dispatched.
    slot: int | None = None
    # A failure that may well not recur at the same point (a timeout, a fault the instrument
    # flags as transient): the planner learns such a first attempt as nothing, so a resumed
    # campaign must know which failures were transient. None: written before this column (or
    # by a version that predates it), read from the error (``loop.failures.was_transient``).
    transient: bool | None = None
    # The order the campaign's trials ended in: 1, 2, ... per campaign, written in the
    # transaction that records the outcome (``Store.finish_trial``/``finish_trials``; a
    # prior-data row's is its number). Stopping rules and the planner's ingest order read it
    # (``loop.runner._ended_order``), never ``finished_at``: the wall clock can step back (an
    # NTP correction, a clock set by hand), and trials ordered by it were judged on another
    # sequence than the live loop's. None: not ended, or ended before the store had the
    # column (store schema 3 and earlier; those rows ended before every numbered one).
    ended: int | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ObservationRow(SQLModel, table=True):
    """One measured output of one trial (``finite=False`` for NaN, stored as NULL, and ±inf).

    An infinity is kept as the value (both SQLite and PostgreSQL store it): a saturated
    detector's ``+inf`` and a failed reading's NaN mean different things to whoever reads
    the export. SQLite cannot store NaN (it becomes NULL), so NaN is NULL everywhere.
    """

    __tablename__ = "observation"

    id: int | None = Field(default=None, primary_key=True)
    trial_id: int = Field(foreign_key="trial.id", index=True)
    metric: str
    value: float | None
    finite: bool = True


class DocumentRow(SQLModel, table=True):
    """One Bluesky document of a trial's run, in emission order."""

    __tablename__ = "document"

    id: int | None = Field(default=None, primary_key=True)
    trial_id: int = Field(foreign_key="trial.id", index=True)
    run_uid: str | None = Field(default=None, index=True)
    seq: int
    name: str  # start | descriptor | event | stop | ...
    body: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


#: The interlock pauses' audit trail: what :meth:`Store.events` reads by default.
PAUSE_EVENTS = ("paused", "resumed", "release")
#: An operator's stop of a running campaign (``closedloop stop``): after the trials in
#: flight, or aborting them.
STOP_REQUESTS = ("stop", "abort")

#: An event written in the transaction of what it records (:class:`CampaignEventRow`):
#: ``(kind, by, detail)``, as :meth:`Store.add_event` takes them.
Event = tuple[str, str | None, str | None]


class CampaignEventRow(SQLModel, table=True):
    """Something that happened to a campaign besides its trials: its audit trail.

    Kinds: ``paused`` (``detail``: why), ``resumed`` (``detail``: how), ``release`` (an
    operator asked, with ``closedloop release``, to proceed despite the interlocks: ``by``
    who, ``detail`` the reason they overrode; ``handled_at`` is set when a runner acted on
    it, with ``outcome`` what became of it); ``session`` (a ``run``, ``resume`` or a
    ``suggest`` that stored proposals began: ``by`` user@host, ``detail`` a JSON
    object of who, where, from which trial on and with which seed, budget and versions,
    ``loop.provenance``); ``function_changed`` and ``planner_changed`` (the code that makes
    the trials changed since those before: a ``function:`` instrument's file, a ``planner:
    {plugin: ...}``'s origin; ``detail`` JSON with its old and new origin and the first trial
    the new code measures or proposes: :meth:`Store.code_changes`); ``tell`` (results of
    pending trials were recorded by ``closedloop tell``: ``by`` who, ``detail`` JSON of
    which trials and from where, :meth:`Store.tells`); ``amend`` (a told trial's result
    corrected by ``closedloop tell --amend``: ``by`` who, ``detail`` JSON of the trial, the
    reason, and its ``old`` and ``new`` status, outputs, readbacks and error); ``stop`` and
    ``abort`` (an operator
    asked, with ``closedloop stop``, a running campaign's runner to stop after the trials
    in flight, or at once aborting them: ``by`` who, ``detail`` their note; ``handled_at``
    and ``outcome`` as for a release, :meth:`Store.request_stop`).
    """

    __tablename__ = "campaign_event"

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    at: datetime = Field(default_factory=utcnow)
    kind: str
    detail: str | None = None
    by: str | None = None
    handled_at: datetime | None = None
    outcome: str | None = None


#: Whether a campaign (``:cid``) has a stop request no runner has taken yet: read before every
#: trial starts (:meth:`Store.take_stop`), so built once, in SQLAlchemy Core.
_OPEN_STOP = (
    select(CampaignEventRow.id)
    .where(
        col(CampaignEventRow.campaign_id) == bindparam("cid"),
        col(CampaignEventRow.kind).in_(STOP_REQUESTS),
        col(CampaignEventRow.handled_at).is_(None),
    )
    .limit(1)
)


class LeaseRow(SQLModel, table=True):
    """Who is driving a campaign right now, and until when that claim holds.

    Times are Unix seconds (``time.time()``) so that expiry compares the same way on every
    backend; runners on different hosts need clocks synchronised to well within the TTL.
    """

    __tablename__ = "lease"

    campaign_id: int = Field(foreign_key="campaign.id", primary_key=True)
    owner: str  # host:pid, for messages
    host: str
    pid: int
    token: str  # random per runner: host:pid alone can be reused
    acquired_at: float
    heartbeat: float
    expires: float
    # As of the last heartbeat: since when the runner's planner has been choosing proposals
    # that idle slots wait for, and how many slots wait (``None`` when none waits). A
    # suggest slower than a trial leaves every slot idle, which read as a stuck runner.
    proposing_since: float | None = None
    proposing_for: int | None = None


@dataclass(frozen=True)
class LeaseClaim:
    """The lease a runner wants to write (see ``loop.lock.CampaignLease``)."""

    owner: str
    host: str
    pid: int
    token: str
    ttl: float

    def row(self, campaign_id: int, now: float) -> LeaseRow:
        return LeaseRow(
            campaign_id=campaign_id,
            owner=self.owner,
            host=self.host,
            pid=self.pid,
            token=self.token,
            acquired_at=now,
            heartbeat=now,
            expires=now + self.ttl,
        )


@dataclass(frozen=True)
class NewTrial:
    """A trial for :meth:`Store.add_trials` (the arguments of ``add_trial``)."""

    parameters: dict[str, Any]
    kind: str
    suggest_seconds: float | None = None
    slot: int | None = None


@dataclass(frozen=True)
class TrialOutcome:
    """A trial's outcome for :meth:`Store.finish_trials` (the arguments of ``finish_trial``)."""

    trial_id: int
    status: TrialStatus
    outputs: dict[str, float]
    readbacks: dict[str, Any]
    error: str | None = None
    run_uid: str | None = None
    transient: bool = False


# Columns added after the first release: (table, column, SQL type and default). Stores
# written before them get the columns on open, so old campaigns stay readable and resumable.
_ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("campaign", "budget", "JSON"),
    ("campaign", "elapsed_seconds", "FLOAT NOT NULL DEFAULT 0"),
    ("trial", "slot", "INTEGER"),
    ("campaign", "instrument_text", "TEXT"),
    ("trial", "transient", "BOOLEAN"),
    ("campaign", "planner_origin", "TEXT"),
    ("trial", "ended", "INTEGER"),
    ("lease", "proposing_since", "FLOAT"),
    ("lease", "proposing_for", "INTEGER"),
)

# Indexes on columns added since (``_ADDED_COLUMNS``): created in the upgrade, once the
# column is there (``create_all`` makes a table's indexes only with a table it creates).
_ADDED_INDEXES: tuple[str, ...] = ("ix_trial_campaign_ended",)


# The stop reason closedloop's first release (store schema 1, which recorded no budget) gave
# a campaign that ``max_trials`` ended. It ran one trial at a time and stopped as soon as the
# completed trials reached the limit, so the count it names is the limit.
_MAX_TRIALS_REACHED = re.compile(r"max_trials reached \((\d+) completed trials\)")


def known_budget(row: CampaignRow) -> dict[str, Any]:
    """What the store knows of the budget a campaign ran with (the fields of
    ``loop.config.Budget``; the campaign file's apply to the others).

    Its recorded budget, whole. A campaign stored before budgets were recorded (store schema
    1: ``budget`` NULL) ran with its file's budget, except that ``run --max-trials`` may have
    overridden ``max_trials``: for one that ``max_trials`` ended, its stop reason names the
    limit reached, ``{"max_trials": N}``; for any other nothing is known, ``{}``. Read by
    ``Runner.from_store`` and ``closedloop status``, so that a finished campaign is not
    continued, nor shown, with the file's budget in place of the one it ran with.
    """
    if isinstance(row.budget, dict):
        return dict(row.budget)
    if row.budget is not None:  # a hand edit or a disk fault: was "TypeError ... report it"
        raise StoreError(
            f"campaign '{row.name}' (id {row.id}) is damaged in its store: its recorded budget "
            f'is {shown(row.budget)}, not a mapping such as {{"max_trials": 40}}; mend '
            f"it (`UPDATE campaign SET budget = NULL WHERE id = {row.id}` falls back to its "
            "campaign file's budget), or restore the store from a backup"
        )
    match = _MAX_TRIALS_REACHED.fullmatch(row.stop_reason or "")
    if row.status == "completed" and match is not None:
        return {"max_trials": int(match[1])}
    return {}


def _serialised(method: Callable[P, R]) -> Callable[P, R]:
    """Run a writing method under the store's write lock (one writer per process).

    Several instrument slots emit documents on their RunEngines' threads while the runner
    writes trials and the lease thread heartbeats. SQLite allows one writer at a time, and a
    transaction that reads first and then writes (``add_trial``) can fail at once with
    "database is locked" instead of waiting when another connection wrote in between;
    taking turns inside the process avoids that. Other processes still wait on
    ``busy_timeout``.
    """

    @functools.wraps(method)
    def locked(*args: P.args, **kwargs: P.kwargs) -> R:
        store = cast("Store", args[0])
        with store._write_lock:
            while True:
                held = store._held_up_by
                if store._held_since is not None and held is not None and store._give_up.is_set():
                    # stopping while the store takes no writes: not another attempt, whose
                    # busy timeout alone is 10 s (a stop took a minute; found in review)
                    raise held
                try:
                    result = method(*args, **kwargs)
                except OperationalError as exc:
                    reason = _held_up(exc)
                    now = time.monotonic()
                    if reason is None:
                        raise
                    store._held_up_by = exc
                    # One clock for the store, not one per write: the writes queued behind
                    # a held-up one each waited their own 10 minutes, and a full disk hung
                    # a run for 20 minutes and more instead of ending it (found in review).
                    since = store._held_since = store._held_since or now
                    if now - since >= store.write_patience or store._give_up.is_set():
                        raise
                    store._say_held_up(reason, now - since)
                    store._give_up.wait(_WRITE_RETRY)  # a stop ends the wait at once
                    continue
                if store._held_since is not None:
                    store._say_held_up(None, time.monotonic() - store._held_since)
                    store._held_since, store._held_up_by = None, None
                return result

    return locked


#: Seconds between attempts of a write the store held up (``_serialised``).
_WRITE_RETRY = 2.0
#: What SQLite says when another program holds its write lock or the disk is full: a write
#: that can succeed later, unlike a broken file. Each attempt waits ``busy_timeout`` first.
_HELD_UP = {
    "database is locked": "locked by another program (an open transaction in a SQLite "
    "browser or shell?)",
    "database table is locked": "locked by another program",
    "database or disk is full": "on a full disk",
    "disk i/o error": "failing to write to its disk (full, or a file size limit?)",
}


def _held_up(exc: OperationalError) -> str | None:
    """Why a SQLite store refused a write for now (``_HELD_UP``), or ``None``: any other
    error, which waiting will not mend."""
    said = str(exc.orig).lower()
    return next((why for text, why in _HELD_UP.items() if text in said), None)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    _sqlite_other_pragmas(cursor)


def _sqlite_existing_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """A store that must exist already (``status``, ``export``): WAL only once the file is
    known to be a closedloop store (it has a campaign table). Setting it is a write, and
    pointed at another program's SQLite file by mistake, a read command left that file in
    WAL mode for good, and a 0-byte file a 4 KiB database (found in review); the open is
    then refused (:meth:`Store._set_up_tables`)."""
    cursor = dbapi_connection.cursor()
    found = cursor.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'campaign'"
    ).fetchone()
    if found:
        cursor.execute("PRAGMA journal_mode=WAL")
    _sqlite_other_pragmas(cursor)


def _sqlite_other_pragmas(cursor: Any) -> None:
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


#: The requests an operator leaves for a campaign's runner (another process) to act on.
REQUESTS = ("release", *STOP_REQUESTS)


def _close_requests(
    s: Session, campaign_id: int, outcome: str, kinds: Sequence[str] = ("release",)
) -> int:
    """Close the campaign's open requests of ``kinds`` with ``outcome``, in session ``s``."""
    result = s.exec(
        update(CampaignEventRow)
        .where(col(CampaignEventRow.campaign_id) == campaign_id)
        .where(col(CampaignEventRow.kind).in_(kinds))
        .where(col(CampaignEventRow.handled_at).is_(None))
        .values(handled_at=utcnow(), outcome=outcome)
    )
    return int(result.rowcount or 0)


def _is_id(ref: str | None) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts "²", which ``int`` refuses."""
    return ref is not None and ref.isascii() and ref.isdigit()


def _jsonable(value: Any) -> Any:
    """Documents hold numpy scalars/arrays; store them as strict JSON (NaN and ±inf as null).

    Strict because PostgreSQL's JSON type refuses the ``NaN``/``Infinity`` tokens that
    Python's ``json`` writes (SQLite took them, so an instrument reading ``inf`` failed the
    write only on a server store); null is what the store already made of NaN, and either
    way a non-finite output fails its trial. The tokens are replaced as JSON tokens
    (``parse_constant``), never as text, so a sample called "NaNoparticle" stays as written.
    """
    return json.loads(
        json.dumps(value, default=_default, allow_nan=True), parse_constant=_non_finite_as_none
    )


def _non_finite_as_none(_constant: str) -> None:
    """``NaN``, ``Infinity`` and ``-Infinity``: the only constants ``json.loads`` passes."""
    return None


def _default(value: Any) -> Any:
    for attr in ("tolist", "item"):
        if hasattr(value, attr):
            return getattr(value, attr)()
    return repr(value)


def _code_change(what: str, detail: dict[str, Any]) -> dict[str, Any]:
    """A ``{what}_changed`` event's detail in the form :meth:`Store.code_changes` reads: a
    function's change recorded before ``old`` and ``new`` were (sha256s only) gets them."""
    change = {**detail}
    change.setdefault("what", what)
    if what == "function" and not isinstance(change.get("old"), dict):
        file = change.get("file")
        change["old"] = {"file": file, "sha256": change.get("old_sha256")}
        change["new"] = {"file": file, "sha256": change.get("new_sha256")}
    return change


def _text(value: str | None) -> str | None:
    """Free text from devices and exceptions (a trial's error, a stop or pause reason) as
    every backend stores it: PostgreSQL's text refuses NUL characters, which an instrument's
    raw reply in an exception message can hold; they are written ``\\x00`` instead.

    A file name that is not valid UTF-8 (``caf\\xe9.yaml`` from a Latin-1 system, a USB
    stick) reaches Python as lone surrogates (``os.fsdecode``), which no backend's text
    takes: ``run`` on such a file failed with "surrogates not allowed" and "please report
    it" (found in review). Such a byte is written ``\\xe9`` instead, as ``ls -b`` shows
    it; :func:`path_from_text` reads a stored path back.
    """
    if value is None:
        return None
    return _SURROGATE.sub(_escaped, value.replace("\x00", "\\x00"))


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    """A lone surrogate as text: the byte ``os.fsdecode`` made it of (U+DC80..U+DCFF) as
    ``\\xNN``, any other (from an exception's text) as its ``\\uNNNN``."""
    code = ord(match[0])
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"\\u{code:04x}"


#: A byte that is not UTF-8, as :func:`_text` writes it into the store.
_ESCAPED_BYTE = re.compile(r"\\x([89a-fA-F][0-9a-fA-F])")


def path_from_text(stored: str) -> Path:
    """A file path as the store keeps it, back as the path it names (:func:`_text` wrote a
    byte that is not UTF-8 as ``\\xe9``): ``resume`` resolves a campaign's relative files
    against its stored file's folder, which may be such a name. A name written with a
    literal backslash escape, and no such byte, is kept when it exists."""
    if "\\x" not in stored:
        return Path(stored)
    raw = _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m[1], 16)), stored)
    literal = Path(stored)
    if raw == stored or _text(raw) != stored or literal.exists():
        return literal
    return Path(raw)


# How long a server store's connection attempt may take before the command gives up: libpq
# waits forever by default, so a firewalled host would hang ``closedloop status``. A
# ``connect_timeout`` in the URL's query wins.
CONNECT_TIMEOUT = 15  # s
# The first key of the PostgreSQL advisory locks that serialise creating campaigns of one name
# (the second is the name's hash): see ``Store.create_campaign(refuse_namesake=...)``.
_NAME_LOCK_KEY = 0x636C6E

# The key of the PostgreSQL advisory lock that serialises creating and upgrading the tables
# (any constant closedloop alone uses: "clsd").
_SCHEMA_LOCK_KEY = 0x636C7364


def _read_stored_json(text: str, *, url: str) -> Any:
    """A JSON column's stored text, or :class:`StoreError` saying the store is damaged,
    with the query that finds the rows (SQLite's ``json_valid``) and what to do."""
    try:
        return json.loads(text)
    except ValueError:
        file = url.removeprefix("sqlite:///")
        find = " UNION ALL ".join(
            f"SELECT '{table}', id FROM {table} WHERE NOT json_valid({column})"
            for table, column in (
                ("trial", "parameters"),
                ("trial", "readbacks"),
                ("document", "body"),
                ("campaign", "budget"),
            )
        )
        raise StoreError(
            f"store {shown_url(url)} is damaged: a stored value is not valid JSON "
            f"({shown(text, 60)}); nothing else was read. Find the rows with `sqlite3 {file} "
            f'"{find}"`, mend or delete them, or restore the store from a backup'
        ) from None


def _engine_options(parsed: URL, url: str) -> dict[str, Any]:
    """``create_engine`` options for a server database (none for SQLite).

    ``pool_pre_ping``: a runner keeps its pooled connections for days, and a server restart
    or a firewall that drops idle connections would make the next write fail; the ping
    (one round trip when a connection is taken from the pool) reconnects instead.

    ``READ COMMITTED`` on PostgreSQL, whatever the server's default: the lease and the
    "only a running trial is finished" rule are conditional UPDATEs that, after waiting
    for a concurrent writer's row lock, re-check their condition against its commit. Under
    ``REPEATABLE READ`` or ``SERIALIZABLE`` (a database's possible default) they fail with
    a serialization error instead (a takeover racing a write raised rather than waiting).
    """
    if parsed.get_backend_name() == "sqlite":
        # SQLite keeps JSON as text, which a hand edit or a disk fault can break: said as
        # such (every read of the campaign failed "JSONDecodeError ... please report it",
        # naming no row; found in review). A server database checks its JSON on write.
        return {"json_deserializer": functools.partial(_read_stored_json, url=url)}
    options: dict[str, Any] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "postgresql":
        options["isolation_level"] = "READ COMMITTED"
    if (
        parsed.get_driver_name() in ("psycopg", "psycopg2")
        and "connect_timeout" not in parsed.query
    ):
        options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
    return options


#: A query parameter that holds a password: ``password`` and ``sslpassword`` (libpq and
#: psycopg take both in the URL's query), and any other driver's spelling.
_SECRET_KEY = re.compile(r"password", re.IGNORECASE)
_HIDDEN = "***"


def shown_url(url: str) -> str:
    """``url`` as messages show it: any password replaced by ``***``.

    The one masking of a store URL, for every message and command suggested (messages end
    up on shared screens and in logs): the password after the user name and every query
    parameter named like one (``?password=``, ``?sslpassword=``, which libpq reads as
    readily; found in review). A URL without one is shown exactly as given. A URL that does
    not parse is masked by its form, since its error shows it too.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        url = re.sub(r"^([\w+]*://[^:/@]*:)[^@]*@", rf"\1{_HIDDEN}@", url)
        return re.sub(r"([?&][^=&]*password[^=&]*=)[^&]*", rf"\1{_HIDDEN}", url, flags=re.I)
    secret = [key for key in parsed.query if _SECRET_KEY.search(key)]
    if parsed.password is None and not secret:
        return url
    # a placeholder of plain letters: the URL's own quoting would write `***` as %2A%2A%2A
    token = "closedloopHIDDENpassword"
    masked = parsed.update_query_dict(dict.fromkeys(secret, token))
    return masked.render_as_string(hide_password=True).replace(token, _HIDDEN)


def _parse_url(url: str) -> URL:
    """``make_url(url)``, or :class:`StoreError` saying what is wrong with it (exit 2).

    SQLAlchemy raises ``ValueError`` for a port that is not a number, which reached the
    user as "invalid literal for int()" and "please report it" (found in review).
    """
    try:
        return make_url(url)
    except ArgumentError:
        shown = shown_url(url)
        if "://" in url:
            raise StoreError(
                f"'{shown}' is not a database URL; write it as dialect+driver://user@host:"
                "port/database, e.g. postgresql+psycopg://user@host/closedloop, or "
                "sqlite:///closedloop.db for a file"
            ) from None
        raise StoreError(
            f"'{shown}' is not a database URL; for a SQLite file write sqlite:///{shown}"
        ) from None
    except ValueError as exc:
        shown = shown_url(url)
        port = re.search(r"^[\w+]+://(?:[^@]*@)?(?:\[[^\]]*\]|[^/:?]*):([^/?]*)", url)
        if port is not None and not port.group(1).isdigit():
            raise StoreError(
                f"store URL {shown}: the port '{port.group(1)}' is not a number; write "
                "host:PORT with the server's port number (PostgreSQL's is 5432), or leave "
                "':PORT' out for the default"
            ) from None
        raise StoreError(f"store URL {shown} cannot be used: {exc}") from None


def _refuse_unkept_sqlite(url: str, parsed: URL, *, scratch: bool) -> None:
    """Refuse (:class:`StoreError`, exit 2) a SQLite URL whose store would not be what it says.

    An in-memory database (``sqlite://``, ``sqlite:///``, ``sqlite:///:memory:``, or
    ``?mode=memory``) keeps nothing once it is closed, and SQLAlchemy gives each thread
    its own: a run's instrument and lease threads met empty databases ("no such table"),
    and the run ended promising that ``resume`` would continue what was never kept
    (found in review). Only a ``scratch`` store, used and dropped by one thread
    (``plan --dry-run``'s preview), may live in memory.

    A query string is refused too: without ``uri=true`` SQLAlchemy ignores it
    (``?mode=ro`` opened the file read-write), ``timeout`` is overridden by the store's own
    busy timeout, and ``uri=true`` makes the path a ``file:`` URI that the store's own file
    handling (folders made, the file watched, an unused file discarded) does not follow.
    """
    database = parsed.database
    if not database and parsed.host and not scratch:  # `sqlite://x.db`: x.db read as a host
        raise StoreError(
            f"store URL {url}: with two slashes '{parsed.host}' is read as a host, and the "
            f"store would be in memory, keeping nothing; write sqlite:///{parsed.host} for "
            "that file (three slashes)"
        )
    if not database or database == ":memory:" or parsed.query.get("mode") == "memory":
        if scratch:
            return
        raise StoreError(
            f"store URL {url}: an in-memory SQLite store keeps nothing once the command "
            "ends; give a file, e.g. sqlite:///campaign.db"
        )
    if "?" in url and not parsed.query:
        # `sqlite:///what?/x.db`: SQLAlchemy reads `?/x.db` as a query with no value and
        # drops it, and the store went to a file named `what` (found in review)
        raise StoreError(
            f"store URL {url}: a '?' begins a query in a URL, so the file would be "
            f"{database!r}, not the path written; rename the folder or file without the '?'"
        )
    if parsed.query:
        keys = ", ".join(sorted(parsed.query))
        alone = (
            "sqlite:///campaign.db"
            if database.startswith("file:")
            else parsed.set(query={}).render_as_string()
        )
        raise StoreError(
            f"store URL {url}: a SQLite store is named by its file alone, and the query "
            f"({keys}) would be ignored or would change how closedloop writes it; write "
            f"{alone} (status, export and report only read the store)"
        )


def _home_expanded(url: str, parsed: URL) -> tuple[str, URL]:
    """A SQLite URL whose path starts with ``~`` as a shell reads it: the home folder.

    ``sqlite:///~/t.db`` made a folder named ``~`` in the current one (found in review),
    which invites an ``rm -rf ~`` to clean it up. ``~`` and ``~user`` are expanded, and the
    URL shown and suggested afterwards names the file itself (``sqlite:////home/ada/t.db``),
    which works from any folder and for a colleague. ``sqlite:////~/t.db`` (a folder ``~`` at
    the root) is refused with the URL meant. Also for ``$CLOSEDLOOP_STORE``.
    """
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite":
        return url, parsed
    if database.startswith("/~"):
        raise StoreError(
            f"store URL {shown_url(url)} names a folder '{database[1:].split('/')[0]}' at the "
            f"root, not a home folder: write sqlite:///{database[1:]} for one in your home "
            "folder"
        )
    if not database.startswith("~"):
        return url, parsed
    expanded = os.path.expanduser(database)
    if expanded.startswith("~"):
        user = database[1:].split("/", 1)[0]
        why = f"no user '{user}' is known here" if user else "HOME is not set"
        raise StoreError(
            f"store URL {shown_url(url)}: cannot tell which home folder ~ is ({why}); write "
            "the full path, e.g. sqlite:////home/you/campaign.db"
        )
    parsed = parsed.set(database=expanded)
    return parsed.render_as_string(hide_password=False), parsed


def _companion(file: Path, suffix: str) -> Path:
    """``file``'s ``-wal`` or ``-shm``: SQLite keeps them beside it while it is open."""
    return file.with_name(file.name + suffix)


def _unwritable(file: Path) -> str | None:
    """Why this process cannot write the existing store ``file``, or ``None``.

    SQLite writes more than the file: its ``-wal`` and ``-shm`` beside it, created on
    opening and removed on the last close, so the folder must be writable too (and so
    must those files, when a process of another user left them). ``os.access``: also
    false on a read-only mount; always true for root elsewhere, who can write anyway.
    """
    folder = file.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"the store's folder {folder} is not writable (SQLite keeps {file.name}-wal "
            f"and {file.name}-shm beside {file.name} while it writes)"
        )
    for target in (file, _companion(file, "-wal"), _companion(file, "-shm")):
        if target.exists() and not os.access(target, os.W_OK):
            return f"{target} is not writable by you"
    return None


def _read_only_uri(url: str, file: Path) -> str:
    """The SQLite URI that reads ``file`` and writes nothing, not even beside it
    (:class:`Store`'s ``read_only``), for a store this process cannot write: a colleague's,
    an archive mount.

    A store is in WAL mode, and reading one takes its ``-wal`` and ``-shm`` index. When
    they exist (a writer has the store open, or one crashed), ``mode=ro`` reads through
    them, seeing every committed trial and waiting on no one. When they do not (the store
    was closed cleanly: all of it is in the file), ``mode=ro`` would create them, in a
    folder this process may not write, or as files of this user that the store's owner
    could then not write (seen: a ``status`` left ``-wal`` and ``-shm`` that refused the
    owner's next run); ``immutable=1`` reads the file as it is, creating nothing and taking
    no locks. That is right unless a writer starts during the read (a command of a few
    seconds): its first checkpoint could then change pages being read, and the command may
    fail or show a mix; run it again. A ``-wal`` with content but no ``-shm`` (copied
    without it) holds trials ``immutable`` would not see: read with ``mode=ro`` where the
    folder lets SQLite create the index, refused where it does not.
    """
    wal, shm = _companion(file, "-wal"), _companion(file, "-shm")
    if wal.exists() and shm.exists():
        return f"{file.as_uri()}?mode=ro"
    if wal.exists() and wal.stat().st_size > 0:
        if os.access(file.parent, os.W_OK | os.X_OK):
            return f"{file.as_uri()}?mode=ro"
        raise StoreError(
            f"cannot read store {url}: {wal.name} beside it holds changes not yet in "
            f"{file.name}, and reading them needs {shm.name}, which cannot be created in the "
            f"folder {file.parent} (not writable): copy {file.name} and {wal.name} together "
            "into a folder you can write and pass that --store"
        )
    return f"{file.as_uri()}?immutable=1"


def _sqlite_read_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """A read-only store's connections: no ``journal_mode`` (setting it writes, and the
    store's is WAL already), and ``query_only`` as a guard against any write."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _open_error(url: str, parsed: URL, exc: DatabaseError) -> str:
    """One line for a store that cannot be opened: the URL, what the database said, the fix.

    A server's errors come in several lines (libpq adds "Is the server running on that
    host...?", PostgreSQL a LINE/caret excerpt); the first line says what went wrong.
    """
    said = str(exc.orig)
    if parsed.get_backend_name() == "sqlite":
        file = Path(parsed.database or "").absolute()
        if file.is_dir():  # was: "check that you can write ... rodir-wal" (found in review)
            return (
                f"cannot open store {url}: {file} is a folder; give a file in it, e.g. "
                f"--store sqlite:///{file / 'campaign.db'}"
            )
        if "readonly" in said or "unable to open" in said:
            fix = (
                f"check that you can write {file.parent} and {file.name} there (SQLite keeps "
                f"{file.name}-wal and {file.name}-shm beside it), or pass another --store URL"
            )
        elif "not a database" in said:
            fix = f"{file} is not a SQLite file: check the --store path"
        else:
            fix = "check the --store URL"
        return f"cannot open store {url}: {said}; {fix}"
    first = first_line(said, said)
    # libpq's preamble names the host and port the URL already shows
    reason = re.sub(r"^(connection failed: )?(connection to server at .*? failed: )?", "", first)
    reason = re.sub(r"^FATAL: +", "", reason)
    # A refused connection carries no SQLSTATE (libpq reports it before any query), so
    # the server's words are matched too.
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    user = parsed.username or "USER"
    if code == "3D000" or re.match(r'database ".*" does not exist', reason):
        where = "".join(
            f" {flag} {value}"
            for flag, value in (("-h", parsed.host), ("-p", parsed.port), ("-U", parsed.username))
            if value
        )
        fix = (
            f"create it first (`createdb{where} {parsed.database}`, or CREATE DATABASE "
            f"{parsed.database} in psql), or correct the database name in --store"
        )
    elif code in ("28000", "28P01") or re.match(
        r'role ".*" does not exist|no pg_hba\.conf entry|.*password', reason
    ):
        fix = (
            "check the user name and password (in the URL, PGPASSWORD or ~/.pgpass) and that "
            "the server's pg_hba.conf lets that user in from this machine"
        )
    elif reason.startswith("permission denied for schema"):
        fix = (
            f"{user} may not create the store's tables: grant it CREATE on the schema "
            f"(GRANT CREATE ON SCHEMA public TO {user}; PostgreSQL 15 no longer grants that "
            "to every user) or use a database it owns"
        )
    elif code == "42501" or reason.startswith("permission denied"):
        fix = f"ask the database's owner to grant {user} access to it, or use another --store"
    elif isinstance(exc, OperationalError):  # never reached the server, or lost it
        fix = "check that the database server is running and the host and port in --store"
    else:
        fix = "check the --store URL"
    return f"cannot open store {url}: {reason}; {fix}"


def _file_exists(path: Path) -> bool:
    """Whether ``path`` exists; ``OSError``/``ValueError`` for a path the OS refuses.

    Not ``Path.exists``: it answers ``False`` for a path with a NUL byte (``sqlite:///%00``),
    which then failed in the driver as "embedded null byte" and "please report it".
    """
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, innermost first."""
    missing: list[Path] = []
    for f in (folder, *folder.parents):
        if f.exists():
            break
        missing.append(f)
    return missing


def _stored_schema_version(conn: Connection, tables: set[str]) -> int | str | None:
    """The store's schema version: ``None`` for a store from before it was recorded, the
    text as stored where it is not a whole number (refused by :func:`_refuse_newer_schema`)."""
    if "closedloop_meta" not in tables:
        return None
    meta = MetaRow.__table__  # type: ignore[attr-defined]
    value = conn.execute(
        select(meta.c.value).where(meta.c.key == "schema_version")
    ).scalar_one_or_none()
    if value is None:
        return None
    return int(value) if _is_id(value) else str(value)


def _refuse_newer_schema(url: str, version: int | str | None) -> None:
    """Never touch a store whose layout this version does not know: a newer one, or one
    whose version is not a number this version wrote (``4b`` was read as "none" and
    overwritten with 4; found in review)."""
    if isinstance(version, str):
        raise StoreError(
            f"store {url} records schema version {version!r}, which no closedloop writes "
            f"(this one reads up to {SCHEMA_VERSION}); it is left untouched: check where the "
            "store came from, or pass another --store"
        )
    if version is not None and version > SCHEMA_VERSION:
        from instruments._versions import closedloop_version  # only on this refusal

        raise StoreError(
            f"store {url} was written by a newer closedloop (store schema "
            f"{version}; closedloop {closedloop_version()} reads up to {SCHEMA_VERSION}); "
            "upgrade closedloop or pass another --store"
        )


def _missing_tables_or_columns(conn: Connection, tables: set[str]) -> bool:
    if not set(SQLModel.metadata.tables) <= tables:
        return True
    inspector = inspect(conn)
    return any(
        column not in {c["name"] for c in inspector.get_columns(table)}
        for table, column, _ in _ADDED_COLUMNS
    )


def _add_missing_columns(conn: Connection, tables: set[str]) -> None:
    """Bring a store written by an earlier version up to the current columns (additive).

    ``tables``: those that existed before this session's ``create_all`` (a table it just
    created has every column already).
    """
    inspector = inspect(conn)
    for table, column, ddl in _ADDED_COLUMNS:
        if table not in tables:
            continue
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))
    # The rows ended before the upgrade keep ``ended`` NULL rather than being numbered here:
    # their order is what it was (``finished_at``, as before), and an upgrade of a lab's
    # shared store is one statement per column, not a rewrite of every trial it holds.
    for index in SQLModel.metadata.tables["trial"].indexes:
        if index.name in _ADDED_INDEXES:
            index.create(conn, checkfirst=True)


@contextmanager
def _schema_lock(engine: Engine) -> Iterator[Connection]:
    """A transaction that holds the store's schema lock until it commits.

    PostgreSQL: an advisory lock (creating tables takes no lock that would make a second
    creator wait). SQLite: ``BEGIN IMMEDIATE``, the database's write lock, taken before
    the tables are looked at (pysqlite would run the DDL outside any transaction). Both
    make DDL transactional, so the tables, columns and version go in together or not at
    all.
    """
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with suppress(DatabaseError):
                    conn.exec_driver_sql("ROLLBACK")
                raise
            conn.exec_driver_sql("COMMIT")
        return
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})
        yield conn


class Store:
    """Tables plus the few queries the loop, CLI and reports need.

    Args:
        url: SQLAlchemy URL; ``sqlite:///path.db`` by default, or a server shared by
            several machines, e.g. ``postgresql+psycopg://user@host/closedloop`` (the
            database must exist; the tables are created in it). Parent folders of a SQLite
            file are created; a path starting with ``~`` is in the home folder
            (:func:`_home_expanded`).
        create: create the tables when missing (``False`` for read-only commands, so a
            mistyped URL is an error instead of a new empty store).
        read_only: the command only reads (``status``, ``export``, ``report``,
            ``campaigns``, a preview from the store; implies not ``create``): a SQLite
            store it cannot write (a colleague's, on an archive mount) is opened read-only
            (:func:`_read_only_uri`) and never upgraded, where it failed with "attempt to
            write a readonly database" (found in review). A store it can write is opened
            as usual. Without it, a store this process cannot write is refused at once,
            with the fix.
        scratch: a throwaway store, used by one thread and dropped (``plan --dry-run``'s
            preview): the only kind that may be in memory (``sqlite://``). Any other
            in-memory URL is refused, as it keeps nothing and a runner's threads would
            each see an empty database of their own; so is a query string on a SQLite URL
            (:func:`_refuse_unkept_sqlite`).

    Attributes:
        url: the URL for messages and the commands they suggest: as given, except that a
            password in it (after the user name, or a query parameter such as
            ``?password=``) is shown as ``***`` (:func:`shown_url`; ``engine.url`` keeps
            the real one). A SQLite path given with ``~`` is shown expanded.
    """

    def __init__(
        self,
        url: str = DEFAULT_STORE,
        *,
        create: bool = True,
        scratch: bool = False,
        read_only: bool = False,
    ) -> None:
        parsed = _parse_url(url)
        url, parsed = _home_expanded(url, parsed)
        url = shown_url(url)
        create = create and not read_only
        #: Opened to read (``read_only=True``): a :class:`~loop.runner.Runner` refuses it.
        self.read_only = read_only
        self._read_only = False  # opened read-only: never upgraded (``_set_up_tables``)
        read_uri: str | None = None
        self.url = url
        self._write_lock = threading.RLock()
        #: Seconds a write waits for a store that is locked or on a full disk before it
        #: fails. A measurement in memory was lost when the store stayed locked past
        #: ``busy_timeout`` (a SQLite browser's open transaction, 70 s; a full disk: found in
        #: review); waiting keeps it, and the warning says why the campaign stands still.
        self.write_patience = 600.0
        self._held_up_said = False
        self._held_since: float | None = None  # when writes began to be held up, if they are
        self._held_up_by: OperationalError | None = None  # the latest refusal meanwhile
        self._give_up = threading.Event()  # set by ``stop_waiting``
        self._file: Path | None = None  # a SQLite store's file, for ``watch_file``
        self._anchor: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._companions: dict[Path, tuple[int, int]] = {}  # its -wal and -shm files
        self._made: list[Path] = []  # the file and folders this opening creates (discard)
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            _refuse_unkept_sqlite(url, parsed, scratch=scratch)
        if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
            db = Path(parsed.database)
            self._file = db.absolute()
            try:
                exists = _file_exists(db)
                made = [] if exists else [self._file, *_missing_folders(self._file.parent)]
            except (OSError, ValueError) as exc:
                # a path the OS refuses (a name too long, a NUL byte from %00, a folder it
                # may not look in): bad input, not a bug to report (found in review)
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise StoreError(
                    f"store URL {url}: its path cannot be a file here ({reason}); pass "
                    "another --store URL, e.g. sqlite:///campaign.db"
                ) from None
            if not create and not exists:
                raise StoreError(f"no store at {db}; run a campaign first or pass --store URL")
            if exists and not self._file.is_dir() and not self._file.is_file():
                # /dev/null, a named pipe, /dev/zero: SQLite said "disk I/O error", and left
                # a root-owned /dev/null-journal behind (found in review)
                raise StoreError(
                    f"cannot open store {url}: {self._file} is not a file (a device or a "
                    "pipe); give a file path, e.g. --store sqlite:///campaign.db"
                )
            if exists and (why := _unwritable(self._file)) is not None:
                if not read_only:
                    raise StoreError(
                        f"cannot write store {url}: {why}; ask its owner for write access, or "
                        "copy the store into a folder you can write and pass that --store "
                        "(status, export, report and campaigns read it where it is)"
                    )
                read_uri = _read_only_uri(url, self._file)
                self._read_only = True
            elif not exists:
                # the first folder that exists: the file and any folders go in it (a file
                # in the way is for mkdir below to report)
                base = next(f for f in (self._file.parent, *self._file.parents) if f.exists())
                if base.is_dir() and not os.access(base, os.W_OK | os.X_OK):
                    raise StoreError(
                        f"cannot create store {url}: the folder {base} is not writable; pass "
                        "a --store URL in a folder you can write, e.g. sqlite:///~/campaign.db"
                    )
            self._made = made
            try:
                db.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the store's folder {db.parent}: {exc.strerror}; "
                    "pass a writable --store URL"
                ) from None
        try:
            options = _engine_options(parsed, url)  # inside: it looks up the driver too
            if read_uri is not None:
                uri = read_uri  # bound now: a lambda would see a later value of the name
                options["creator"] = lambda: sqlite3.connect(uri, uri=True, check_same_thread=False)
            self.engine: Engine = create_engine(parsed, **options)
        except NoSuchModuleError:  # a dialect SQLAlchemy does not know: a typo, usually
            raise StoreError(
                f"store URL {url}: no database '{parsed.drivername}' is known; use e.g. "
                "sqlite:///closedloop.db (or a URL of an installed SQLAlchemy dialect, "
                "postgresql+psycopg://user@host/db)"
            ) from None
        except ImportError as exc:  # a known dialect whose driver is not installed
            hint = (
                "pip install 'closedloop[postgres]' (the psycopg driver) and use "
                "postgresql+psycopg://"
                if backend == "postgresql"
                else "install the driver into closedloop's environment"
            )
            raise StoreError(
                f"store URL {url}: the database driver for '{parsed.drivername}' is not "
                f"installed ({exc}); {hint}, or use sqlite:///closedloop.db"
            ) from None
        except (ArgumentError, TypeError, ValueError) as exc:  # e.g. a bad query argument
            raise StoreError(f"store URL {url} cannot be used: {exc}") from None
        # A store dropped without close() (a command's, a notebook's) closes its pooled
        # connections: on a server each is a backend process, and max_connections is shared
        # by the whole lab.
        weakref.finalize(self, self.engine.dispose)
        if backend == "sqlite":
            pragmas = (
                _sqlite_read_pragmas
                if self._read_only
                else (_sqlite_pragmas if create else _sqlite_existing_pragmas)
            )
            event.listen(self.engine, "connect", pragmas)
        try:
            self._set_up_tables(create)
        except DatabaseError as exc:  # also "file is not a database"
            self.discard_if_unused()
            raise StoreError(_open_error(url, parsed, exc)) from None
        except BaseException:
            self.discard_if_unused()
            raise

    def _set_up_tables(self, create: bool) -> None:
        """Check the store's layout and bring it up to date (tables, columns, version).

        Nothing is written when the layout is current, the usual case (read-only commands
        on a read-only store keep working). Otherwise the check is repeated and the tables
        are created inside one transaction holding the store's schema lock: two runners
        opening a new store at once (a lab's machines on a new server database) used to
        race to create the same tables, and one failed with "already exists".
        """
        with self.engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            version = _stored_schema_version(conn, tables)
            _refuse_newer_schema(self.url, version)
            if not create and "campaign" not in tables:
                where = "database" if self.engine.dialect.name != "sqlite" else "file"
                raise StoreError(
                    f"no closedloop store in {self.url} (the {where} has no campaign table); "
                    "run a campaign first (`closedloop run FILE --store URL`) or pass the "
                    "--store URL of an existing store"
                )
            if version == SCHEMA_VERSION and not _missing_tables_or_columns(conn, tables):
                return
        if self._read_only:
            raise StoreError(
                f"store {self.url} was written by an older closedloop (store schema "
                f"{version or 1}; this one reads {SCHEMA_VERSION}) and must be upgraded "
                "before it is read, which needs write access you do not have here: have its "
                f"owner run `{cli_command('status', self.url, None)}` once with this "
                "version (it upgrades the store), or copy it into a folder you can write and pass "
                "that --store"
            )
        with _schema_lock(self.engine) as conn:
            tables = set(inspect(conn).get_table_names())
            version = _stored_schema_version(conn, tables)
            _refuse_newer_schema(self.url, version)
            # Tables added since the store was written (e.g. ``lease``): additive only.
            SQLModel.metadata.create_all(conn)
            _add_missing_columns(conn, tables)
            if version != SCHEMA_VERSION and "campaign" in tables:
                # said, not silent: a read command upgrades a shared store too, and the
                # closedloop that wrote it then refuses it (found in review)
                logger.warning(
                    "store %s upgraded from schema %s to %s; closedloop versions that read "
                    "only schema %s no longer open it",
                    self.url,
                    version or 1,
                    SCHEMA_VERSION,
                    version or 1,
                )
            if version != SCHEMA_VERSION:
                meta = MetaRow.__table__  # type: ignore[attr-defined]
                conn.execute(meta.delete().where(meta.c.key == "schema_version"))
                conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))

    def close(self) -> None:
        self.engine.dispose()
        if self._anchor is not None:
            self._anchor.close()
            self._anchor = None

    def discard_if_unused(self) -> None:
        """Close, and remove the SQLite file this opening created (with its -wal, -shm and
        -journal, then the folders made for it) if no campaign was stored in it.

        For a command that fails after opening a new store (a device that cannot be built,
        Ctrl-C while it is built, bad prior data): each had left an empty store file and
        the folders made for it, from a command that stored nothing (found in review). The
        check runs under the file's write lock, so a campaign another process stored in
        the same new file meanwhile is kept; any doubt (locked, not a database) keeps the
        file too: an empty file left is harmless, a campaign lost is not.
        """
        self.close()
        made, self._made = self._made, []
        if not made:
            return
        file, folders = made[0], made[1:]
        if file.exists():
            try:
                conn = sqlite3.connect(f"{file.as_uri()}?mode=rw", uri=True, isolation_level=None)
            except sqlite3.Error:
                return
            try:
                conn.execute("BEGIN IMMEDIATE")  # no other writer until the files are gone
                tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
                if "campaign" in tables and conn.execute("SELECT 1 FROM campaign").fetchone():
                    return
                for suffix in ("", "-wal", "-shm", "-journal"):
                    file.with_name(file.name + suffix).unlink(missing_ok=True)
            except (sqlite3.Error, OSError):
                return
            finally:
                conn.close()
        for folder in folders:
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone): someone else's now
                return

    # ------------------------------------------------------- a file deleted under a run
    def watch_file(self) -> None:
        """Keep a SQLite store's file open, so that its deletion is noticed and undone.

        A store file deleted (an ``rm`` of the wrong file) or replaced (a backup copied over
        it) while a runner writes: SQLite goes on writing to the unlinked file through the
        connections it holds, the run ends "completed", and every trial is gone with the
        process (found in review). A runner calls this as it starts: this connection, opened
        on the file as it is now, still reads it after an unlink; ``gone`` says when the path
        no longer names it and ``rescue`` copies it to a new file. Nothing for a server.
        """
        if self._file is None or self._anchor is not None:
            return
        self._anchor = sqlite3.connect(
            f"{self._file.as_uri()}?mode=rw", uri=True, check_same_thread=False
        )
        weakref.finalize(self, self._anchor.close)  # as the engine's connections are
        # A read opens the write-ahead log and its index now: SQLite opens them on first
        # use, and after an unlink that would fail ("disk I/O error").
        self._anchor.execute("SELECT count(*) FROM sqlite_master").fetchone()
        info = os.stat(self._file)
        self._identity = (info.st_dev, info.st_ino)
        for suffix in ("-wal", "-shm"):
            companion = self._file.with_name(self._file.name + suffix)
            with suppress(OSError):
                info = os.stat(companion)
                self._companions[companion] = (info.st_dev, info.st_ino)
        # before the driver opens (or creates) anything at the path
        event.listen(self.engine, "do_connect", self._refuse_a_new_file)

    def _refuse_a_new_file(self, *_args: Any) -> None:
        """Refuse to open a new pooled connection once the path no longer names the store.

        The engine opens connections by path, as threads need them. One opened after the
        file was replaced (a backup copied over it) opened the new file, read the old file's
        write-ahead log, still at the path, as its own, and wrote this campaign's rows into
        the other file (a test failed 1 run in 31, by timing); one opened after the file was
        deleted made an empty store there (review I). Refused before the driver connects
        (SQLAlchemy's ``do_connect``), with the reason :meth:`gone` gives; the runner then
        saves the store (:meth:`rescue`).

        Raises:
            StoreGone: the path no longer names the store.
        """
        why = self.gone()
        if why is not None:
            raise StoreGone(f"{why}; no new connection is opened at that path")

    def gone(self) -> str | None:
        """Why the watched file's path no longer names the store being written, or ``None``."""
        if self._identity is None or self._file is None:
            return None
        try:
            info = os.stat(self._file)
        except FileNotFoundError:
            return f"the store file {self._file} was deleted or moved while the campaign ran"
        except OSError:  # e.g. a network file system's hiccup: look again next time
            return None
        if (info.st_dev, info.st_ino) != self._identity:
            return f"the store file {self._file} was replaced while the campaign ran"
        return None

    def rescue(self) -> Path:
        """Copy the watched store, as this process still sees it, to a new file beside it.

        SQLite's online backup through the connection ``watch_file`` opened: every committed
        row, including those still in the write-ahead log. The copy is an ordinary store
        (``resume --store`` continues the campaign from it).
        """
        if self._anchor is None or self._file is None:
            raise StoreError("rescue() needs watch_file() first, on a SQLite store file")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self._file.with_name(f"{self._file.stem}.rescued-{stamp}{self._file.suffix}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)  # the folder may be gone too
            copy = sqlite3.connect(target)
            try:
                with self._write_lock:
                    self._anchor.backup(copy)
            finally:
                copy.close()
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"copying the store to {target} failed: {exc}") from None
        # The lost file's log and index stay behind at its path (SQLite does not remove
        # them for a file unlinked under it), and the file now at that path, or a new store
        # made there, would read that log as its own. Their content is in the copy now.
        for leftover, identity in self._companions.items():
            with suppress(OSError):
                info = os.stat(leftover)
                if (info.st_dev, info.st_ino) == identity:
                    leftover.unlink()
        return target

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ----------------------------------------------------------------- campaigns
    def _say_held_up(self, reason: str | None, waited: float) -> None:
        """Say once that writes wait for the store (``reason``), and once that they go on
        (``None``) after ``waited`` seconds."""
        if reason is not None and not self._held_up_said:
            self._held_up_said = True
            logger.warning(
                "the store %s is %s: waiting up to %.0f min for it, retrying every %g s; "
                "every measurement is kept meanwhile (Ctrl-C stops the campaign)",
                self.url,
                reason,
                self.write_patience / 60,
                _WRITE_RETRY,
            )
        elif reason is None and self._held_up_said:
            self._held_up_said = False
            logger.warning("the store %s takes writes again (after %.0f s)", self.url, waited)

    def stop_waiting(self) -> bool:
        """From now on, let a write the store holds up (a full disk, another program's lock)
        fail at once rather than wait out ``write_patience``: a stop was requested. Ctrl-C
        on a full disk stopped nothing, and a second one ended the process with a measured
        trial neither stored nor logged (found in review); failed, the write's caller logs
        what it held. Writes the store takes go on as usual (a stop with a healthy store
        stores the trials in flight). Remembered until :meth:`wait_again`, so a stop made
        in the first seconds of a hold-up, before it is known, counts too. True if writes
        are held up now."""
        self._give_up.set()
        return self._held_since is not None

    def wait_again(self) -> None:
        """Writes held up wait for the store again (a new session: see :meth:`stop_waiting`)."""
        self._give_up.clear()

    @_serialised
    def create_campaign(
        self,
        name: str,
        config_text: str,
        config_path: str,
        seed: int,
        *,
        budget: dict[str, Any] | None = None,
        lease: LeaseClaim | None = None,
        instrument_text: str | None = None,
        planner_origin: str | None = None,
        prior: Sequence[tuple[dict[str, Any], dict[str, float]]] = (),
        prior_kind: str = "prior",
        refuse_namesake: Callable[[str, int, LeaseRow], str | None] | None = None,
        events: Sequence[Event] = (),
    ) -> int:
        """Commit a new campaign, its prior data, its first events and the creator's lease in
        one transaction.

        One transaction means no other runner (a ``resume`` of the latest campaign) can
        pick the campaign up between its creation and its first heartbeat, and that a
        campaign is stored with all of its prior data or not at all: ``resume`` never
        inserts prior data again, so a crash half-way through the rows would otherwise
        lose the rest silently (found in review). ``events`` (``(kind, by, detail)``, in
        order: the creating session's, ``loop.provenance.new_campaign_session``) go in it
        too: committed after the campaign, a crash or a refused write between the two left
        a campaign with no record of who created it, from where, with which seed and code.

        Args:
            prior: earlier measurements, ``(parameters, outputs)`` per row, stored as
                completed trials of kind ``prior_kind`` numbered 1, 2, ... (no documents,
                never dispatched).
            refuse_namesake: ``(name, id, lease)`` of each active campaign of the same name
                that holds a lease -> why it must not get a twin (``CampaignLocked``), or
                ``None``. Checked in this transaction: two ``run``s of one file started
                together both passed the CLI's check made before their devices were built
                (which takes seconds with EPICS) and both drove the instrument (found in
                review). The check runs after this campaign's insert took SQLite's write lock
                (on PostgreSQL, an advisory lock on the name), so the second waits for the
                first's commit and sees its lease.
        """
        with self.session() as s:
            if refuse_namesake is not None and self.engine.dialect.name == "postgresql":
                s.connection().execute(
                    text("SELECT pg_advisory_xact_lock(:key, hashtext(:name))"),
                    {"key": _NAME_LOCK_KEY, "name": name},
                )
            row = CampaignRow(
                name=name,
                config_text=config_text,
                config_path=_text(config_path) or "",
                seed=seed,
                budget=budget,
                instrument_text=instrument_text,
                planner_origin=planner_origin,
            )
            s.add(row)
            s.flush()
            if row.id is None:  # pragma: no cover - the database assigns it
                raise StoreError("the database gave the campaign no id")
            if refuse_namesake is not None:
                twins = s.exec(
                    select(CampaignRow.id, LeaseRow)
                    .join(LeaseRow, col(LeaseRow.campaign_id) == col(CampaignRow.id))
                    .where(
                        CampaignRow.name == name,
                        col(CampaignRow.id) != row.id,
                        col(CampaignRow.status).in_(ACTIVE),
                    )
                ).all()
                for twin_id, held in twins:
                    why = refuse_namesake(name, twin_id or 0, held)
                    if why is not None:
                        raise CampaignLocked(why, owner=held.owner)
            if prior:
                _insert_prior(s.connection(), row.id, prior, prior_kind)
            _insert_rows(s.connection(), CampaignEventRow, _event_rows(row.id, events, utcnow()))
            if lease is not None:
                # Stamped after the prior rows: inserting many takes a while, and the lease's
                # heartbeat must be fresh when the campaign becomes visible at the commit.
                s.add(lease.row(row.id, time.time()))
            s.commit()
            return row.id

    def campaign(self, ref: str | int | None = None) -> CampaignRow:
        """A campaign by id or name (latest of that name), or the latest one.

        A string is a name first and an id only if no campaign has that name: names may be
        all digits (a campaign called "2024"), so reading every digit string as an id would
        make such a campaign unreachable from ``-c``. A digit string that is one campaign's
        name and another's id is refused, naming both: it took the named one without a word,
        and ``resume -c 2`` added trials to the campaign named "2" (id 4), not to id 2
        (found in review). ``id:2`` is always the id.
        """
        with self.session() as s:
            query = select(CampaignRow).order_by(col(CampaignRow.id).desc())
            row = None
            if isinstance(ref, str) and ref.startswith("id:") and _is_id(ref[3:]):
                ref = int(ref[3:])
            if isinstance(ref, str):
                named = list(s.exec(query.where(CampaignRow.name == ref)).all())
                other = (
                    s.exec(query.where(CampaignRow.id == int(ref))).first()
                    if named and _is_id(ref) and 0 < int(ref) <= MAX_ID
                    else None
                )
                if other is not None and other.id not in {r.id for r in named}:
                    raise StoreError(
                        f"-c {ref} is ambiguous in store {self.url}: the name of campaign id "
                        f"{named[0].id} and the id of campaign '{other.name}'; give "
                        f"-c {named[0].id} for the campaign named '{ref}', or -c id:{ref} "
                        f"for '{other.name}'"
                    )
                row = named[0] if named else None
                if len(named) > 1:  # picked without a word before (found in review)
                    logger.warning(
                        "%d campaigns in %s are named '%s' (ids %s): using id %s, the latest; "
                        "-c ID picks another",
                        len(named),
                        self.url,
                        ref,
                        ", ".join(str(r.id) for r in reversed(named)),
                        row.id if row is not None else "?",
                    )
            if row is None and ref is not None and (isinstance(ref, int) or _is_id(ref)):
                if 0 < int(ref) <= MAX_ID:  # PostgreSQL refuses to compare a larger one
                    row = s.exec(query.where(CampaignRow.id == int(ref))).first()
            elif ref is None:
                row = s.exec(query).first()
        if row is None:
            raise StoreError(self._no_campaign(ref))
        return row

    def _no_campaign(self, ref: str | int | None) -> str:
        """Why ``ref`` names no campaign, with the nearest name and how to list them all (a
        mistyped name in a store of many campaigns was a dead end; found in review)."""
        if ref is None:
            return f"no campaign in store {self.url}; run one first (`closedloop run FILE`)"
        names = sorted({c.name for c in self.campaigns()})
        # camp-7 for camp-07: numbers compared without leading zeros first (difflib alone
        # rates camp-57 as near)
        unpadded = {re.sub(r"(?<!\d)0+(?=\d)", "", n): n for n in names}
        near = (
            [unpadded[key]] if (key := re.sub(r"(?<!\d)0+(?=\d)", "", str(ref))) in unpadded else []
        )
        near = near or difflib.get_close_matches(str(ref), names, n=1, cutoff=0.6)
        hint = f"did you mean '{near[0]}'? " if near else ""
        return (
            f"no campaign '{ref}' in store {self.url}; {hint}"
            f"`{cli_command('campaigns', self.url, None)}` lists the {len(names)} campaign "
            "name(s) it holds"
        )

    def latest_unfinished(self) -> CampaignRow:
        """The most recent campaign that is ``running``/``paused`` (crashed or live) or
        ``stopped``."""
        with self.session() as s:
            row = s.exec(
                select(CampaignRow)
                .where(col(CampaignRow.status).in_(UNFINISHED))
                .order_by(col(CampaignRow.id).desc())
            ).first()
        if row is None:
            raise StoreError(
                f"no unfinished campaign in store {self.url}; name one with -c to extend a "
                "finished one, or start a new one with `closedloop run`"
            )
        return row

    def latest_to_preview(self) -> CampaignRow:
        """The campaign a read-only look at "the campaign" (``plan --dry-run --store``,
        ``instruments check --store`` without ``-c``) means: the latest unfinished one, else
        the latest one. Those commands refused a store whose campaigns had all finished,
        where the README promised the latest (found in review)."""
        try:
            return self.latest_unfinished()
        except StoreError:
            return self.campaign(None)

    def campaigns(self) -> list[CampaignRow]:
        with self.session() as s:
            return list(s.exec(select(CampaignRow).order_by(col(CampaignRow.id))))

    def trial_counts(self) -> dict[int, dict[str, int]]:
        """Each campaign's trials by status (prior data left out), in one query: a store of
        many campaigns is listed without reading every trial."""
        trial = TrialRow.__table__.c  # type: ignore[attr-defined]
        query = (
            select(trial.campaign_id, trial.status, func.count())
            .where(trial.kind != "prior")
            .group_by(trial.campaign_id, trial.status)
        )
        counts: dict[int, dict[str, int]] = {}
        with self.engine.connect() as conn:
            for cid, status, n in conn.execute(query):
                counts.setdefault(cid, {})[status] = n
        return counts

    @_serialised
    def set_budget(self, campaign_id: int, budget: dict[str, Any], *, token: str) -> None:
        """Record the budget in force (resume with ``--max-trials`` etc. changes it)."""
        with self.session() as s:
            _check_lease(s.connection(), campaign_id, token)
            row = s.get(CampaignRow, campaign_id)
            if row is None:
                raise StoreError(f"campaign {campaign_id} vanished from the store")
            row.budget, row.updated_at = budget, utcnow()
            s.add(row)
            s.commit()

    @_serialised
    def finish_campaign(
        self,
        campaign_id: int,
        status: str,
        reason: str,
        *,
        elapsed: float | None = None,
        token: str | None = None,
    ) -> None:
        """Record how a session ended (``token``: refuse unless this runner holds the lease)."""
        with self.session() as s:
            if token is not None:
                _check_lease(s.connection(), campaign_id, token)
            row = s.get(CampaignRow, campaign_id)
            if row is None:
                raise StoreError(f"campaign {campaign_id} vanished from the store")
            row.status, row.stop_reason, row.updated_at = status, _text(reason), utcnow()
            if elapsed is not None:
                row.elapsed_seconds = elapsed
            s.add(row)
            s.commit()

    @_serialised
    def reopen_campaign(self, campaign_id: int, *, token: str) -> None:
        """Show a resumed campaign ``running`` again, with no stop reason.

        Its last session left it ``stopped``, ``completed`` or ``failed``; kept, that status
        hides the new session: ``status`` shows it ended, interlock pauses are not
        recorded (they only replace an active status) and ``closedloop release`` refuses.
        """
        with self.session() as s:
            _check_lease(s.connection(), campaign_id, token)
            s.exec(
                update(CampaignRow)
                .where(col(CampaignRow.id) == campaign_id)
                .values(status="running", stop_reason=None, updated_at=utcnow())
            )
            s.commit()

    # ----------------------------------------------------------------- pauses
    @_serialised
    def pause_campaign(self, campaign_id: int, reason: str, *, token: str | None = None) -> bool:
        """Show the campaign ``paused`` with ``reason`` (only a ``running`` or ``paused`` one:
        never over a finished session's status); record a ``paused`` event. Returns whether
        it was written."""
        reason = _text(reason) or ""
        with self.session() as s:
            if token is not None:
                _check_lease(s.connection(), campaign_id, token)
            result = s.exec(
                update(CampaignRow)
                .where(col(CampaignRow.id) == campaign_id)
                .where(col(CampaignRow.status).in_(ACTIVE))
                .values(status="paused", stop_reason=reason, updated_at=utcnow())
            )
            if not result.rowcount:
                s.rollback()
                return False
            s.add(CampaignEventRow(campaign_id=campaign_id, kind="paused", detail=reason))
            s.commit()
            return True

    @_serialised
    def unpause_campaign(self, campaign_id: int, how: str, *, token: str | None = None) -> bool:
        """Back to ``running`` (only from ``paused``), recording a ``resumed`` event; release
        requests still open are closed as no longer needed. Returns whether it was written."""
        with self.session() as s:
            if token is not None:
                _check_lease(s.connection(), campaign_id, token)
            result = s.exec(
                update(CampaignRow)
                .where(col(CampaignRow.id) == campaign_id)
                .where(col(CampaignRow.status) == "paused")
                .values(status="running", stop_reason=None, updated_at=utcnow())
            )
            if not result.rowcount:
                s.rollback()
                return False
            s.add(CampaignEventRow(campaign_id=campaign_id, kind="resumed", detail=how))
            _close_requests(s, campaign_id, f"not needed: {how}")
            s.commit()
            return True

    @_serialised
    def request_release(self, campaign_id: int, *, by: str, detail: str) -> CampaignEventRow:
        """An operator's release of a paused campaign, for its runner to pick up.

        Raises:
            StoreError: the campaign is not paused (nothing to release).
        """
        with self.session() as s:
            row = s.get(CampaignRow, campaign_id)
            if row is None:
                raise StoreError(f"no campaign {campaign_id} in store {self.url}")
            if row.status != "paused":
                raise StoreError(
                    f"campaign '{row.name}' (id {campaign_id}) is {row.status}, not paused: "
                    "there is nothing to release"
                )
            event = CampaignEventRow(campaign_id=campaign_id, kind="release", by=by, detail=detail)
            s.add(event)
            s.commit()
            return event

    @_serialised
    def take_release(self, campaign_id: int, *, outcome: str) -> CampaignEventRow | None:
        """The oldest open release request, marked handled with ``outcome``; or ``None``."""
        with self.session() as s:
            event = s.exec(
                select(CampaignEventRow)
                .where(CampaignEventRow.campaign_id == campaign_id)
                .where(CampaignEventRow.kind == "release")
                .where(col(CampaignEventRow.handled_at).is_(None))
                .order_by(col(CampaignEventRow.id))
            ).first()
            if event is None:
                return None
            event.handled_at, event.outcome = utcnow(), outcome
            s.add(event)
            s.commit()
            return event

    @_serialised
    def close_requests(
        self, campaign_id: int, *, outcome: str, kinds: Sequence[str] = REQUESTS
    ) -> int:
        """Mark every open request of ``kinds`` of the campaign handled with ``outcome``
        (not used); how many there were.

        A release covers the wait it was given for: a wait that ends closes those still
        open (:meth:`unpause_campaign`), and so does a new session. A request given to a
        runner that was then killed while it waited stayed open, and the next ``resume``
        took it: it overrode the interlocks with the door still open (found in review). A
        stop is for the session it was given to, likewise: one its runner ended before
        taking must not stop the next ``resume`` at its first heartbeat.
        """
        with self.session() as s:
            closed = _close_requests(s, campaign_id, outcome, kinds)
            s.commit()
            return closed

    @_serialised
    def request_stop(
        self, campaign_id: int, *, by: str, detail: str, abort: bool = False
    ) -> CampaignEventRow:
        """An operator's stop of a running campaign, for its runner to pick up at its next
        heartbeat (``closedloop stop``): ``abort`` aborts the trials in flight, else they
        finish and are stored first."""
        with self.session() as s:
            event = CampaignEventRow(
                campaign_id=campaign_id,
                kind="abort" if abort else "stop",
                by=_text(by),
                detail=_text(detail),
            )
            s.add(event)
            s.commit()
            s.refresh(event)
            return event

    def take_stop(self, campaign_id: int, *, outcome: str) -> CampaignEventRow | None:
        """The open stop request that decides (an ``abort`` before a ``stop``: the stronger
        one), every open one marked handled with ``outcome``; or ``None``. The ``outcome``
        may name the kind: ``{kind}`` is replaced by the one taken.

        The runner asks before every trial it starts: whether one is open is read first,
        without the write lock or the ORM (0.2 ms against 0.7 ms, and no document write of
        another slot waits behind it)."""
        with self.engine.connect() as connection:
            if connection.execute(_OPEN_STOP, {"cid": campaign_id}).first() is None:
                return None
        return self._take_stop(campaign_id, outcome)

    @_serialised
    def _take_stop(self, campaign_id: int, outcome: str) -> CampaignEventRow | None:
        with self.session() as s:
            open_ = list(
                s.exec(
                    select(CampaignEventRow)
                    .where(CampaignEventRow.campaign_id == campaign_id)
                    .where(col(CampaignEventRow.kind).in_(STOP_REQUESTS))
                    .where(col(CampaignEventRow.handled_at).is_(None))
                    .order_by(col(CampaignEventRow.id))
                )
            )
            if not open_:
                return None
            taken = next((e for e in open_ if e.kind == "abort"), open_[0])
            now = utcnow()
            for event in open_:
                event.handled_at, event.outcome = now, outcome.format(kind=taken.kind)
                s.add(event)
            s.commit()
            s.refresh(taken)
            return taken

    @_serialised
    def add_event(
        self,
        campaign_id: int,
        kind: str,
        *,
        detail: str | None = None,
        by: str | None = None,
        token: str | None = None,
    ) -> CampaignEventRow:
        """Record a ``kind`` event (``session``, ``function_changed``, ...: see
        :class:`CampaignEventRow`); under the runner's lease when ``token`` is given, so a
        runner that lost the campaign records nothing in its name."""
        with self.session() as s:
            if token is not None:
                _check_lease(s.connection(), campaign_id, token)
            event = CampaignEventRow(
                campaign_id=campaign_id, kind=kind, detail=_text(detail), by=_text(by)
            )
            s.add(event)
            s.commit()
            s.refresh(event)
            return event

    def events(
        self, campaign_id: int, kinds: Sequence[str] | None = PAUSE_EVENTS
    ) -> list[CampaignEventRow]:
        """The campaign's events of ``kinds`` (:class:`CampaignEventRow`), oldest first: its
        pauses, resumptions and releases by default, every kind with ``None`` (sessions are
        read decoded with :meth:`sessions`)."""
        query = select(CampaignEventRow).where(CampaignEventRow.campaign_id == campaign_id)
        if kinds is not None:
            query = query.where(col(CampaignEventRow.kind).in_(kinds))
        with self.session() as s:
            return list(s.exec(query.order_by(col(CampaignEventRow.id))))

    def sessions(self, campaign_id: int) -> list[dict[str, Any]]:
        """Each session of the campaign, oldest first: every ``run``, ``resume`` and
        ``suggest`` that stored proposals (the one that created the campaign, and each after
        it), as recorded when it began (``loop.provenance``).

        Each a dict: ``at`` (UTC, ISO 8601), ``by`` (user@host), then ``command``, ``argv``,
        ``pid``, ``host``, ``user``, ``trials_so_far`` (trials stored before it: the
        boundary), ``seed`` and ``seed_from`` (``file``, ``--seed``, ``argument``,
        ``drawn``, ``stored``), ``budget`` (in force) and ``override`` (what the command
        changed), ``prior`` (prior-data files with their sha256), ``function`` (a
        ``function:`` file and its sha256), ``planner`` (a ``planner: {plugin: ...}``'s
        origin: ``plugin``, then ``file`` and ``sha256``, or ``entry_point``,
        ``distribution`` and ``version``) and ``versions`` (python, closedloop, the planner
        stack, bluesky, ophyd). A campaign stored before sessions were recorded has none.
        """
        return [d for _, d in self._json_events(campaign_id, ("session",))]

    def tells(self, campaign_id: int) -> list[dict[str, Any]]:
        """Each ``tell`` that recorded results of the campaign's trials, oldest first: ``at``
        (UTC, ISO 8601, as the trials' ``finished_at``), ``by`` (``--by``, else user@host),
        ``trials`` (their numbers), ``completed``, ``failed`` and ``abandoned`` (how many
        of each), ``argv`` (the command, a URL's password as ``***``) and ``csv`` (the
        ``--csv`` file and its sha256, or ``None``): ``loop.asktell.tell``. A campaign told
        before these were recorded has none."""
        return [d for _, d in self._json_events(campaign_id, ("tell",))]

    def amends(self, campaign_id: int) -> list[dict[str, Any]]:
        """Each ``tell --amend`` of the campaign's results, oldest first: ``at``, ``by``,
        ``trial`` (its number), ``reason``, and ``old`` and ``new`` (``status``,
        ``outputs``, ``readbacks``, ``error``): ``loop.asktell.amend``."""
        return [d for _, d in self._json_events(campaign_id, ("amend",))]

    def code_changes(self, campaign_id: int, what: str) -> list[dict[str, Any]]:
        """The ``{what}_changed`` events (``what``: ``function`` or ``planner``), oldest
        first: ``at``, ``what``, ``old`` and ``new`` (the code's origin before and after, as
        sessions record it), ``trials_so_far`` and ``first_trial`` (the first trial the new
        code measures or proposes); a function's also ``file``, ``old_sha256`` and
        ``new_sha256``. One written before ``old`` and ``new`` were (a function's only) is
        read in the same form."""
        events = self._json_events(campaign_id, (f"{what}_changed",))
        return [_code_change(what, d) for _, d in events]

    def function_changes(self, campaign_id: int) -> list[dict[str, Any]]:
        """A ``function:`` file's changes (:meth:`code_changes`)."""
        return self.code_changes(campaign_id, "function")

    def planner_changes(self, campaign_id: int) -> list[dict[str, Any]]:
        """A ``planner: {plugin: ...}``'s changes (:meth:`code_changes`)."""
        return self.code_changes(campaign_id, "planner")

    def code_history(self, campaign_id: int, what: str) -> list[dict[str, Any]]:
        """The origins of code ``what`` as each session ran with it and each change went to,
        oldest first: the last is the code the trials before were made with
        (``loop.provenance`` compares the code as it is now with it)."""
        found: list[dict[str, Any]] = []
        for kind, d in self._json_events(campaign_id, ("session", f"{what}_changed")):
            pin = d.get(what) if kind == "session" else _code_change(what, d).get("new")
            if isinstance(pin, dict):
                found.append(pin)
        return found

    def _json_events(
        self, campaign_id: int, kinds: Sequence[str]
    ) -> list[tuple[str, dict[str, Any]]]:
        """The events of ``kinds`` with their JSON ``detail`` read, oldest first."""
        found: list[tuple[str, dict[str, Any]]] = []
        for row in self.events(campaign_id, kinds):
            try:
                detail = json.loads(row.detail or "{}")
            except ValueError:  # written by hand, or cut: kept as it is
                detail = row.detail
            if not isinstance(detail, dict):
                detail = {"detail": detail}
            at = as_utc(row.at).isoformat()
            found.append((row.kind, {"at": at, "by": row.by, **detail}))
        return found

    # ----------------------------------------------------------------- leases
    def lease(self, campaign_id: int) -> LeaseRow | None:
        with self.session() as s:
            return s.get(LeaseRow, campaign_id)

    @_serialised
    def insert_lease(self, campaign_id: int, claim: LeaseClaim) -> bool:
        """Take a free campaign; ``False`` when another runner inserted first."""
        try:
            with self.session() as s:
                s.add(claim.row(campaign_id, time.time()))
                s.commit()
        except IntegrityError:
            return False
        return True

    @_serialised
    def replace_lease(self, campaign_id: int, expected_token: str, claim: LeaseClaim) -> bool:
        """Take over a stale lease: compare-and-swap on the token the caller judged stale.

        ``False`` when the row changed meanwhile (its owner heartbeated, or another runner
        took it first), so two runners can never both believe they took the same lease.
        """
        now = time.time()
        with self.session() as s:
            result = s.exec(
                update(LeaseRow)
                .where(col(LeaseRow.campaign_id) == campaign_id)
                .where(col(LeaseRow.token) == expected_token)
                .values(
                    owner=claim.owner,
                    host=claim.host,
                    pid=claim.pid,
                    token=claim.token,
                    acquired_at=now,
                    heartbeat=now,
                    expires=now + claim.ttl,
                    # the old owner's planner is not this one's (a dead runner's "slots
                    # wait for the planner" showed beside its successor; found in review)
                    proposing_since=None,
                    proposing_for=None,
                )
            )
            s.commit()
            return bool(result.rowcount)

    @_serialised
    def renew_lease(
        self,
        campaign_id: int,
        token: str,
        ttl: float,
        *,
        elapsed: float | None = None,
        proposing: tuple[float, int] | None = None,
    ) -> bool:
        """Heartbeat: push the expiry out and record the running time and ``proposing``
        (since when the planner has been choosing proposals that how many idle slots wait
        for; see :class:`LeaseRow`); ``False`` if lost."""
        now = time.time()
        since, waiting = proposing if proposing is not None else (None, None)
        with self.session() as s:
            result = s.exec(
                update(LeaseRow)
                .where(col(LeaseRow.campaign_id) == campaign_id)
                .where(col(LeaseRow.token) == token)
                .values(
                    heartbeat=now,
                    expires=now + ttl,
                    proposing_since=since,
                    proposing_for=waiting,
                )
            )
            if not result.rowcount:
                s.rollback()
                return False
            if elapsed is not None:
                s.exec(
                    update(CampaignRow)
                    .where(col(CampaignRow.id) == campaign_id)
                    .values(elapsed_seconds=elapsed)
                )
            s.commit()
            return True

    @_serialised
    def release_lease(self, campaign_id: int, token: str) -> None:
        """Give the campaign up (only if this token still holds it)."""
        with self.session() as s:
            lease = s.get(LeaseRow, campaign_id)
            if lease is not None and lease.token == token:
                s.delete(lease)
                s.commit()

    # ----------------------------------------------------------------- trials
    # The three writes below run once or more per trial on the RunEngine's and the runner's
    # threads. They execute the statements of ``_Hot`` on a plain connection: inside a
    # campaign an ORM session with its unit of work cost 1-3 ms of CPU per write, against
    # ~0.4 ms for the insert and its commit (ADR 0002).
    @_serialised
    def add_trial(
        self,
        campaign_id: int,
        parameters: dict[str, Any],
        kind: str,
        suggest_seconds: float | None = None,
        *,
        token: str | None = None,
        slot: int | None = None,
    ) -> TrialRow:
        """Commit a new trial in state ``running`` (before anything is dispatched).

        With ``token``, the write is refused (``LeaseLost``) unless that lease still holds
        the campaign, checked in the same transaction.
        """
        with self.engine.begin() as conn:
            if token is not None:
                _check_lease(conn, campaign_id, token)
            last = conn.execute(_Hot.last_number, {"campaign": campaign_id}).scalar()
            row = TrialRow(
                campaign_id=campaign_id,
                number=(last or 0) + 1,
                kind=kind,
                parameters=_jsonable(parameters),
                suggest_seconds=suggest_seconds,
                slot=slot,
                started_at=utcnow(),
            )
            inserted = conn.execute(
                _Hot.insert_trial, row.model_dump(exclude={"id"})
            ).inserted_primary_key
            if inserted is None:  # pragma: no cover - the database assigns it
                raise StoreError("the database gave the trial no id")
            row.id = inserted[0]
            return row

    @_serialised
    def add_document(
        self,
        trial_id: int,
        seq: int,
        name: str,
        body: dict[str, Any],
        run_uid: str | None,
        *,
        campaign_id: int | None = None,
        token: str | None = None,
    ) -> None:
        """Commit one Bluesky document the moment the RunEngine emits it.

        Streaming (rather than saving the run at the end) means a crash after the event
        document still leaves the measurement in the store for ``resume`` to reconcile.
        With ``token`` (and the trial's ``campaign_id``), the write is refused
        (``LeaseLost``) unless that lease still holds the campaign: a runner frozen past
        its lease went on to store the event and stop documents of a trial the new owner
        had already reconciled as abandoned, so the store contradicted itself (found in
        review).
        """
        with self.engine.begin() as conn:
            if token is not None and campaign_id is not None:
                _check_lease(conn, campaign_id, token)
            conn.execute(
                _Hot.insert_document,
                {
                    "trial_id": trial_id,
                    "run_uid": run_uid,
                    "seq": seq,
                    "name": name,
                    "body": _jsonable(body),
                },
            )

    @_serialised
    def finish_trial(
        self,
        trial_id: int,
        *,
        status: TrialStatus,
        outputs: dict[str, float],
        readbacks: dict[str, Any],
        run_uid: str | None,
        error: str | None,
        token: str | None = None,
        transient: bool = False,
        finished_at: datetime | None = None,
    ) -> None:
        """Commit a trial's outcome and observations in one transaction.

        ``transient``: the trial failed in a way that may well not recur at its point (see
        :attr:`TrialRow.transient`). ``finished_at``: when it ended, if not now (a trial a
        killed runner left in flight ended when the runner was last alive, not when
        ``resume`` found it).

        Only a ``running`` trial can be finished, so an outcome is never written twice (a
        runner and a reconciliation cannot both record one). With ``token``, the write is
        refused unless that lease still holds the campaign.

        The trial's ``ended`` (its place in the order the campaign's trials ended) is set by
        the same statement, so the order is the order of these commits, whatever the clock.
        """
        with self.engine.begin() as conn:
            row = conn.execute(_Hot.trial_state, {"trial": trial_id}).first()
            if row is None:
                raise StoreError(f"trial {trial_id} vanished from the store")
            if token is not None:
                _check_lease(conn, row.campaign_id, token)
            # "only if still running" is part of the update: a status read before it could
            # be stale by the time this transaction takes the write lock
            finished = _finish_row(
                conn,
                {
                    "trial": trial_id,
                    "status": status,
                    "run_uid": run_uid,
                    "error": _text(error),
                    "transient": transient,
                    "readbacks": _jsonable(readbacks),
                    "finished_at": finished_at or utcnow(),
                },
                leased=token is not None,
            )
            if finished != 1:
                state = conn.execute(_Hot.trial_state, {"trial": trial_id}).first()
                raise StoreError(
                    f"trial {trial_id} is already {state.status if state else 'gone'}; its "
                    "outcome is not written twice"
                )
            observations = _observation_rows(trial_id, outputs)
            if observations:
                conn.execute(_Hot.insert_observation, observations)

    # The two batch writes below are ``suggest -n N`` and ``tell --csv`` (ask/tell): a batch
    # is one transaction, so Ctrl-C, a kill or a power loss half-way through leaves none of
    # it. One transaction per row left part of a CSV recorded with no word of which part
    # (found in review), and is slower: each commit waits for the disk.
    @_serialised
    def add_trials(
        self,
        campaign_id: int,
        trials: Sequence[NewTrial],
        *,
        token: str | None = None,
        budget: dict[str, Any] | None = None,
        status: tuple[str, str] | None = None,
        events: Sequence[Event] = (),
    ) -> list[TrialRow]:
        """Commit new trials in state ``running``, numbered on from the campaign's last, in
        one transaction: all of them or none.

        ``budget`` (the budget in force, as :meth:`set_budget` records it), ``status``
        (the campaign's status and stop reason, as :meth:`finish_campaign` records them)
        and ``events`` (``(kind, by, detail)``, in order: the ``suggest``'s session and a
        changed planner plugin, ``loop.provenance.suggest_session``) go in the same
        transaction, so the record of who proposed the trials exists exactly when they do.
        With ``token``, the write is refused (``LeaseLost``) unless that lease still holds
        the campaign, checked in the same transaction.
        """
        with self.engine.begin() as conn:
            if token is not None:
                _check_lease(conn, campaign_id, token)
            last = conn.execute(_Hot.last_number, {"campaign": campaign_id}).scalar() or 0
            now = utcnow()
            rows = [
                TrialRow(
                    campaign_id=campaign_id,
                    number=number,
                    kind=t.kind,
                    parameters=_jsonable(t.parameters),
                    suggest_seconds=t.suggest_seconds,
                    slot=t.slot,
                    started_at=now,
                )
                for number, t in enumerate(trials, start=last + 1)
            ]
            if rows:
                # the ids are read back by number, as ``_insert_prior`` does
                _insert_rows(conn, TrialRow, [r.model_dump(exclude={"id"}) for r in rows])
                ids = dict(
                    conn.execute(
                        _Hot.trial_ids_after, {"campaign": campaign_id, "after": last}
                    ).all()
                )
                for r in rows:
                    r.id = ids[r.number]
            _update_campaign(conn, campaign_id, budget=budget, status=status)
            _insert_rows(conn, CampaignEventRow, _event_rows(campaign_id, events, now))
            return rows

    @_serialised
    def finish_trials(
        self,
        outcomes: Sequence[TrialOutcome],
        *,
        tokens: Mapping[int, str] | None = None,
        status: Mapping[int, tuple[str, str]] | None = None,
        events: Mapping[int, Event] | None = None,
    ) -> None:
        """Commit many trials' outcomes and observations in one transaction: all or none.

        As :meth:`finish_trial` for each (a campaign's trials end in their number order,
        whatever the order of ``outcomes``), and refused whole (``StoreError``) if any trial
        is no longer ``running``. ``status``: campaign id -> the campaign's status and stop
        reason, recorded in the same transaction. ``events``: campaign id -> an event's
        ``(kind, by, detail)`` (:meth:`add_event`), in the same transaction too, so an
        audit record exists exactly when what it records does (``tell``'s). ``tokens``:
        campaign id -> lease token; given, every campaign written (the trials',
        ``status``'s and ``events``') must be held by its token, checked in the
        transaction (in id order: two batches never deadlock).
        """
        status = status or {}
        events = events or {}
        with self.engine.begin() as conn:
            ids = [o.trial_id for o in outcomes]
            campaign_of: dict[int, int] = {}
            number_of: dict[int, int] = {}
            for start in range(0, len(ids), 500):  # within every backend's bound parameters
                rows = conn.execute(_Hot.trial_campaigns, {"trials": ids[start : start + 500]})
                for row in rows:
                    campaign_of[row.id], number_of[row.id] = row.campaign_id, row.number
            vanished = [i for i in ids if i not in campaign_of]
            if vanished:
                raise StoreError(f"trial {vanished[0]} vanished from the store")
            if tokens is not None:
                for cid in sorted({*campaign_of.values(), *status, *events}):
                    if cid not in tokens:
                        raise LeaseLost(f"campaign {cid} is written without its lease")
                    _check_lease(conn, cid, tokens[cid])
            now = utcnow()
            # each campaign's trials end in their number order (``TrialRow.ended``), as a
            # CSV's rows did when they were ordered by time and then number
            in_order = sorted(
                outcomes, key=lambda o: (campaign_of[o.trial_id], number_of[o.trial_id])
            )
            for o in in_order:
                finished = _finish_row(
                    conn,
                    {
                        "trial": o.trial_id,
                        "status": o.status,
                        "run_uid": o.run_uid,
                        "error": _text(o.error),
                        "transient": o.transient,
                        "readbacks": _jsonable(o.readbacks),
                        "finished_at": now,
                    },
                    leased=tokens is not None,
                )
                if finished != 1:
                    state = conn.execute(_Hot.trial_state, {"trial": o.trial_id}).first()
                    raise StoreError(
                        f"trial {o.trial_id} is already {state.status if state else 'gone'}; "
                        "its outcome is not written twice"
                    )
            observations = [
                obs for o in outcomes for obs in _observation_rows(o.trial_id, o.outputs)
            ]
            _insert_rows(conn, ObservationRow, observations)
            for cid, campaign_status in sorted(status.items()):
                _update_campaign(conn, cid, status=campaign_status)
            audit = [row for cid, e in sorted(events.items()) for row in _event_rows(cid, [e], now)]
            _insert_rows(conn, CampaignEventRow, audit)

    @_serialised
    def amend_trial(
        self,
        outcome: TrialOutcome,
        *,
        token: str,
        status: tuple[str, str] | None,
        event: Event,
    ) -> None:
        """Replace a finished trial's outcome (``closedloop tell --amend``): its status,
        error, transient flag, readbacks and observations, with the campaign's new
        ``status`` and the ``amend`` ``event`` that keeps the old ones, in one transaction
        under the campaign's lease ``token``. The trial keeps its place in the order
        trials ended and its times: what changed is what was recorded of it, and when and
        why is the event's.
        """
        trial = TrialRow.__table__  # type: ignore[attr-defined]
        observation = ObservationRow.__table__  # type: ignore[attr-defined]
        with self.engine.begin() as conn:
            row = conn.execute(_Hot.trial_campaigns, {"trials": [outcome.trial_id]}).first()
            if row is None:
                raise StoreError(f"trial {outcome.trial_id} vanished from the store")
            cid = row.campaign_id
            _check_lease(conn, cid, token)
            conn.execute(
                update(trial)
                .where(trial.c.id == outcome.trial_id)
                .values(
                    status=outcome.status,
                    error=_text(outcome.error),
                    transient=outcome.transient,
                    readbacks=_jsonable(outcome.readbacks),
                )
            )
            conn.execute(delete(observation).where(observation.c.trial_id == outcome.trial_id))
            _insert_rows(conn, ObservationRow, _observation_rows(outcome.trial_id, outcome.outputs))
            if status is not None:
                _update_campaign(conn, cid, status=status)
            _insert_rows(conn, CampaignEventRow, _event_rows(cid, [event], utcnow()))

    def trials(self, campaign_id: int) -> list[TrialRow]:
        with self.session() as s:
            return list(
                s.exec(
                    select(TrialRow)
                    .where(TrialRow.campaign_id == campaign_id)
                    .order_by(col(TrialRow.number))
                )
            )

    def running_trials(self, campaign_id: int) -> list[TrialRow]:
        """Trials whose outcome was never committed: in flight now, or at a crash."""
        return [t for t in self.trials(campaign_id) if t.status == "running"]

    def observations(self, campaign_id: int) -> dict[int, dict[str, float]]:
        """Outputs by trial id (NaN for a NULL value; an infinity as stored)."""
        out: dict[int, dict[str, float]] = {}
        with self.session() as s:
            rows = s.exec(
                select(ObservationRow).join(TrialRow).where(TrialRow.campaign_id == campaign_id)
            )
            for obs in rows:
                value = obs.value if obs.value is not None else math.nan
                out.setdefault(obs.trial_id, {})[obs.metric] = value
        return out

    def trial_outputs(self, trial_id: int) -> dict[str, float]:
        """One trial's outputs (NaN for a NULL value), as :meth:`observations` reads them."""
        with self.session() as s:
            rows = s.exec(select(ObservationRow).where(ObservationRow.trial_id == trial_id))
            return {o.metric: o.value if o.value is not None else math.nan for o in rows}

    def trials_and_observations(
        self, campaign_id: int
    ) -> tuple[list[TrialRow], dict[int, dict[str, float]]]:
        """``trials`` and ``observations`` as of one moment, for readers beside a live runner.

        Read in one statement (trials outer-joined with their observations), which every
        backend answers from one snapshot. Two queries could pair a trial's new status with
        observations read before it finished: a ``completed`` trial without outputs in
        ``export`` (found in review). Two queries in one session are no fix on SQLite:
        pysqlite starts no transaction for a ``SELECT``, so each query sees its own moment.
        """
        trials: dict[int, TrialRow] = {}
        out: dict[int, dict[str, float]] = {}
        with self.session() as s:
            rows = s.exec(
                select(TrialRow, ObservationRow)
                .outerjoin(ObservationRow, col(ObservationRow.trial_id) == col(TrialRow.id))
                .where(TrialRow.campaign_id == campaign_id)
                .order_by(col(TrialRow.number), col(ObservationRow.id))
            )
            for trial, obs in rows:
                trials.setdefault(id_of(trial), trial)
                if obs is not None:
                    value = obs.value if obs.value is not None else math.nan
                    out.setdefault(obs.trial_id, {})[obs.metric] = value
        return list(trials.values()), out

    def retry_links(self, campaign_id: int) -> dict[int, tuple[int, int]]:
        """Each ``retry`` trial's ``(retry_of, attempt)`` by its id, from its run's start
        document (the first attempt's trial id, and 2, 3, ...): which attempt a retry
        re-measures, as the runner recorded it (``loop.retries.attempts``). A retry whose
        run never started (its runner killed first) has none."""
        with self.session() as s:
            retries = select(TrialRow.id).where(
                TrialRow.campaign_id == campaign_id, TrialRow.kind == "retry"
            )
            starts = s.exec(
                select(DocumentRow.trial_id, DocumentRow.body).where(
                    col(DocumentRow.trial_id).in_(retries), DocumentRow.name == "start"
                )
            )
            links: dict[int, tuple[int, int]] = {}
            for trial_id, body in starts:
                first, attempt = body.get("retry_of"), body.get("attempt")
                if isinstance(first, int) and isinstance(attempt, int):
                    links[trial_id] = (first, attempt)
            return links

    def documents(self, trial_id: int) -> list[DocumentRow]:
        with self.session() as s:
            return list(
                s.exec(
                    select(DocumentRow)
                    .where(DocumentRow.trial_id == trial_id)
                    .order_by(col(DocumentRow.seq))
                )
            )


def _observation_rows(trial_id: int, outputs: dict[str, float]) -> list[dict[str, Any]]:
    """Observation rows of one trial's outputs (a NaN is stored as NULL, an inf as itself;
    neither is ``finite``)."""
    rows = []
    for metric, value in outputs.items():
        number = float(value) if value is not None else math.nan
        rows.append(
            {
                "trial_id": trial_id,
                "metric": metric,
                "value": None if math.isnan(number) else number,
                "finite": math.isfinite(number),
            }
        )
    return rows


def _insert_prior(
    conn: Connection,
    campaign_id: int,
    prior: Sequence[tuple[dict[str, Any], dict[str, float]]],
    kind: str,
) -> None:
    """Insert prior rows as completed trials with their observations, inside the caller's
    transaction.

    Two ``executemany`` calls of the prepared ``_Hot`` statements instead of two commits per
    row: ~250 rows/s became thousands. The trials' ids are read back by their numbers (the
    campaign is new, so they are 1..n), which every backend supports, unlike ``RETURNING``
    with ``executemany``.
    """
    now = utcnow()
    conn.execute(
        _Hot.insert_trial,
        [
            {
                "campaign_id": campaign_id,
                "number": number,
                "kind": kind,
                "status": "completed",
                "parameters": _jsonable(parameters),
                "readbacks": {},
                "run_uid": None,
                "error": None,
                "suggest_seconds": None,
                "slot": None,
                "created_at": now,
                "started_at": now,
                "finished_at": now,
                "ended": number,
            }
            for number, (parameters, _) in enumerate(prior, start=1)
        ],
    )
    ids = dict(conn.execute(_Hot.trial_ids, {"campaign": campaign_id}).all())
    observations = [
        obs
        for number, (_, outputs) in enumerate(prior, start=1)
        for obs in _observation_rows(ids[number], outputs)
    ]
    if observations:
        conn.execute(_Hot.insert_observation, observations)


def id_of(trial: TrialRow) -> int:
    """A stored trial's id (the database assigns it on insert)."""
    if trial.id is None:  # pragma: no cover - a stored row has its id
        raise StoreError("a stored trial has no id")
    return trial.id


def _insert_rows(conn: Connection, model: Any, rows: Sequence[dict[str, Any]]) -> None:
    """Insert ``rows`` (dicts of the same keys) into ``model``'s table, in the caller's
    transaction, with multi-row ``INSERT ... VALUES`` statements of at most ~900 values (an
    old SQLite's limit is 999).

    Not the driver's ``executemany``: pysqlite leaves that statement open when Ctrl-C cuts
    it short, and the connection SQLAlchemy then closes kept SQLite's write lock until the
    garbage collector found it. A ``suggest`` interrupted so hung 10 s on releasing its
    lease, and left it (found while making the batches atomic).
    """
    if not rows:
        return
    per = max(1, 900 // len(rows[0]))
    table = model.__table__
    for start in range(0, len(rows), per):
        conn.execute(insert(table).values(list(rows[start : start + per])))


def _event_rows(campaign_id: int, events: Sequence[Event], at: datetime) -> list[dict[str, Any]]:
    """``events`` of the campaign as :func:`_insert_rows` writes them into ``campaign_event``
    (in their order: the ids follow it), each at ``at``."""
    return [
        {"campaign_id": campaign_id, "at": at, "kind": kind, "by": _text(by), "detail": _text(d)}
        for kind, by, d in events
    ]


def _update_campaign(
    conn: Connection,
    campaign_id: int,
    *,
    budget: dict[str, Any] | None = None,
    status: tuple[str, str] | None = None,
) -> None:
    """Record a campaign's budget and/or ``(status, stop reason)`` inside the caller's
    transaction, as :meth:`Store.set_budget` and :meth:`Store.finish_campaign` do."""
    values: dict[str, Any] = {}
    if budget is not None:
        values["budget"] = budget
    if status is not None:
        values["status"], values["stop_reason"] = status[0], _text(status[1])
    if not values:
        return
    updated = conn.execute(
        update(CampaignRow.__table__)  # type: ignore[attr-defined]
        .where(_Hot.campaign.id == campaign_id)
        .values(**values, updated_at=utcnow())
    )
    if updated.rowcount != 1:
        raise StoreError(f"campaign {campaign_id} vanished from the store")


def _finish_row(conn: Connection, values: dict[str, Any], *, leased: bool) -> int:
    """Run ``_Hot.finish_trial`` with ``values`` in the caller's transaction; the number of
    trials it finished (0: the trial was no longer ``running``).

    A writer that checked the campaign's lease (``leased``: ``_check_lease`` holds its row
    to the commit) takes turns with every other writer of the campaign, and SQLite has one
    writer at a time: their ``ended`` is one more than the last. Without a token on a
    server, two transactions can read one maximum under read committed; the second is then
    refused by the unique index once the first commits, and tries again in a savepoint,
    whose new statement sees the first's number. Locking the campaign's row first instead
    made a writer wait for one that waited for it (``test_store_postgres``'s race, where
    the second writer runs inside the first's statement).
    """
    if leased or conn.dialect.name == "sqlite":
        return conn.execute(_Hot.finish_trial, values).rowcount
    attempt = 1
    while True:
        try:
            with conn.begin_nested():
                return conn.execute(_Hot.finish_trial, values).rowcount
        except IntegrityError as exc:
            if "ix_trial_campaign_ended" not in str(exc.orig) or attempt >= _END_ATTEMPTS:
                raise
            attempt += 1


#: How often a server writer without a lease tries to number a trial's end (``_finish_row``):
#: each refusal means another writer's end committed meanwhile.
_END_ATTEMPTS = 100


def _check_lease(conn: Connection, campaign_id: int, token: str) -> None:
    """Raise ``LeaseLost`` unless ``token`` holds the campaign's lease, and keep it held
    until the caller's transaction ends.

    The check is a write (``UPDATE lease SET token = token WHERE token = :token``), not a
    read: a read runs before SQLite's deferred transaction takes its write lock, so another
    runner could take the lease over between the check and the caller's write (seen in a
    review: a runner that had just lost its lease still inserted a trial). The update takes
    the write lock (on other backends, the lease row's lock) and checks the token in one
    statement; a takeover then waits for the caller's commit. Runs inside the caller's
    transaction (a session passes ``session.connection()``).
    """
    if conn.execute(_Hot.hold_lease, {"campaign": campaign_id, "token": token}).rowcount == 1:
        return
    lease = conn.execute(_Hot.lease, {"campaign": campaign_id}).first()
    holder = f"runner {lease.owner}" if lease is not None else "no runner"
    raise LeaseLost(
        f"campaign {campaign_id} is now held by {holder}; this runner stalled past its "
        "lease and stops without writing more"
    )


class _Hot:
    """The per-trial statements, built once; their values are bound at execution.

    SQLAlchemy caches a statement's compiled SQL, but building the statement object (and
    its cache key) from ``.values(...)`` on every call was most of a write's CPU time.
    """

    trial = TrialRow.__table__.c  # type: ignore[attr-defined]
    lease = select(LeaseRow.token, LeaseRow.owner).where(
        col(LeaseRow.campaign_id) == bindparam("campaign")
    )
    _lease = LeaseRow.__table__.c  # type: ignore[attr-defined]
    hold_lease = (
        update(LeaseRow.__table__)  # type: ignore[attr-defined]
        .where(_lease.campaign_id == bindparam("campaign"), _lease.token == bindparam("token"))
        .values(token=_lease.token)
    )
    last_number = select(func.max(trial.number)).where(trial.campaign_id == bindparam("campaign"))
    trial_state = select(trial.campaign_id, trial.status).where(trial.id == bindparam("trial"))
    trial_ids = select(trial.number, trial.id).where(trial.campaign_id == bindparam("campaign"))
    trial_ids_after = select(trial.number, trial.id).where(
        trial.campaign_id == bindparam("campaign"), trial.number > bindparam("after")
    )
    trial_campaigns = select(trial.id, trial.campaign_id, trial.number).where(
        trial.id.in_(bindparam("trials", expanding=True))
    )
    campaign = CampaignRow.__table__.c  # type: ignore[attr-defined]
    insert_trial = insert(TrialRow.__table__)  # type: ignore[attr-defined]
    # The trial's place in the order its campaign's trials ended: one more than the last,
    # computed in the statement that finishes it, so no two ends of a campaign get one
    # number. SQLite runs the statement under its database write lock (a writer whose view
    # is stale is refused, not given an old maximum). On a server the lease check before it
    # (``_check_lease``) holds a row lock of the campaign to the commit, so its ends take
    # turns; the unique index (ix_trial_campaign_ended) refuses a number taken twice rather
    # than store it, and a writer without a lease tries again (``_finish_row``).
    _earlier = TrialRow.__table__.alias("earlier")  # type: ignore[attr-defined]
    _next_ended = (
        select(func.coalesce(func.max(_earlier.c.ended), 0) + 1)
        .where(_earlier.c.campaign_id == trial.campaign_id)
        .scalar_subquery()
    )
    finish_trial = (
        update(TrialRow.__table__)  # type: ignore[attr-defined]
        .where(trial.id == bindparam("trial"), trial.status == "running")
        .values(
            status=bindparam("status"),
            run_uid=bindparam("run_uid"),
            error=bindparam("error"),
            readbacks=bindparam("readbacks"),
            finished_at=bindparam("finished_at"),
            transient=bindparam("transient"),
            ended=_next_ended,
        )
    )
    insert_document = insert(DocumentRow.__table__)  # type: ignore[attr-defined]
    insert_observation = insert(ObservationRow.__table__)  # type: ignore[attr-defined]


def export_records(
    store: Store,
    campaign_id: int,
    snapshot: tuple[list[TrialRow], dict[int, dict[str, float]]] | None = None,
) -> list[dict[str, Any]]:
    """One flat record per trial: id, status, parameters, readbacks, outputs, run uid.

    Trials and outputs come from one snapshot (``snapshot``, as
    :meth:`Store.trials_and_observations` reads it, or read here), so a campaign running
    meanwhile never shows a trial's outcome without its outputs.

    ``transient`` (a failed trial: the instrument's fault, which the planner does not learn
    as the point's; else ``None``), ``retry_of`` (a retry: the number of its point's first
    attempt) and ``attempt`` (1, 2, ...; ``None`` for a retry whose run never started):
    the store had them and a notebook could only match retries by their floats, or tell a
    transient failure from the point's own by ``status --json``'s command lines (review).
    """
    trials, observations = snapshot or store.trials_and_observations(campaign_id)
    links = store.retry_links(campaign_id)
    number_of = {t.id: t.number for t in trials}
    records = []
    for t in trials:
        first, attempt = links.get(t.id or -1, (None, None if t.kind == "retry" else 1))
        records.append(
            {
                "trial_id": t.id,
                "number": t.number,
                "kind": t.kind,
                "status": t.status,
                "parameters": t.parameters,
                "readbacks": t.readbacks or {},
                "outputs": observations.get(t.id or -1, {}),
                "run_uid": t.run_uid,
                "slot": t.slot,
                "error": t.error,
                "transient": bool(t.transient) if t.status == "failed" else None,
                "retry_of": number_of.get(first) if first is not None else None,
                "attempt": attempt,
                "started_at": t.started_at.isoformat() if t.started_at else None,
                "finished_at": t.finished_at.isoformat() if t.finished_at else None,
            }
        )
    return records
