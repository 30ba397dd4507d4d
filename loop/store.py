"""The campaign store: SQLModel tables on SQLite (or any SQLAlchemy URL).

Persist before you act: a trial row is committed (status ``running``) before the RunEngine
touches a device, each Bluesky document is committed as it arrives, and the trial's outcome
is committed before the next trial is proposed. A crash at any point leaves rows that say
exactly how far a trial got, so no measurement is ever lost silently.

SQLite runs in WAL mode with ``synchronous=FULL``: readers (``closedloop status`` in another
terminal) never block the runner, and a committed trial survives power loss.

Only one runner drives a campaign: it holds the campaign's row in the ``lease`` table (owner,
random token, heartbeat, expiry; see ``loop.lock``), and every write that moves the campaign
forward (a new trial, a trial's outcome, the campaign's end) checks that token inside its own
transaction, so a runner that lost its lease cannot write over its successor's work.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar

from sqlalchemy import JSON, Column, Index, bindparam, event, func, insert, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, NoSuchModuleError
from sqlmodel import Field, Session, SQLModel, col, create_engine, select, update

from loop.errors import StoreError

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_STORE = "sqlite:///closedloop.db"

TrialStatus = Literal["running", "completed", "failed", "abandoned"]
TERMINAL: tuple[str, ...] = ("completed", "failed", "abandoned")
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


def utcnow() -> datetime:
    return datetime.now(UTC)


# The layout of the tables. 1: campaign/trial/observation/document; 2: + lease table and the
# campaign's budget and elapsed_seconds columns (added in place when an older store opens);
# 3: + the trial's instrument slot, the campaign's instrument_text and the campaign_event
# table (pauses and operator releases).
# A store written with a higher number is refused: this version cannot know its meaning.
SCHEMA_VERSION = 3


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
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class TrialRow(SQLModel, table=True):
    """One experiment: commanded parameters, achieved readbacks, outcome, provenance."""

    __tablename__ = "trial"
    __table_args__ = (Index("ix_trial_campaign_number", "campaign_id", "number", unique=True),)

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
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ObservationRow(SQLModel, table=True):
    """One measured output of one trial (NaN/inf stored as NULL with ``finite=False``)."""

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


class CampaignEventRow(SQLModel, table=True):
    """Something that happened to a campaign besides its trials: the audit trail of pauses.

    Kinds: ``paused`` (``detail``: why), ``resumed`` (``detail``: how), ``release`` (an
    operator asked, with ``closedloop release``, to proceed despite the interlocks: ``by``
    who, ``detail`` the reason they overrode; ``handled_at`` is set when a runner acted on
    it, with ``outcome`` what became of it).
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


# Columns added after the first release: (table, column, SQL type and default). Stores
# written before them get the columns on open, so old campaigns stay readable and resumable.
_ADDED_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("campaign", "budget", "JSON"),
    ("campaign", "elapsed_seconds", "FLOAT NOT NULL DEFAULT 0"),
    ("trial", "slot", "INTEGER"),
    ("campaign", "instrument_text", "TEXT"),
)


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
        store = args[0]
        with store._write_lock:  # type: ignore[attr-defined]
            return method(*args, **kwargs)

    return locked


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _is_id(ref: str | None) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts "²", which ``int`` refuses."""
    return ref is not None and ref.isascii() and ref.isdigit()


def _jsonable(value: Any) -> Any:
    """Documents hold numpy scalars/arrays; store them as plain JSON (NaN as null).

    The NaN is replaced as a JSON token (``parse_constant``), never as text, so a string
    such as a sample called "NaNoparticle" is stored as written.
    """
    return json.loads(
        json.dumps(value, default=_default, allow_nan=True), parse_constant=_nan_as_none
    )


def _nan_as_none(constant: str) -> float | None:
    return None if constant == "NaN" else float(constant)


def _default(value: Any) -> Any:
    for attr in ("tolist", "item"):
        if hasattr(value, attr):
            return getattr(value, attr)()
    return repr(value)


class Store:
    """Tables plus the few queries the loop, CLI and reports need.

    Args:
        url: SQLAlchemy URL; ``sqlite:///path.db`` by default. Parent folders of a SQLite
            file are created.
        create: create the tables when missing (``False`` for read-only commands, so a
            mistyped URL is an error instead of a new empty store).
    """

    def __init__(self, url: str = DEFAULT_STORE, *, create: bool = True) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError:
            raise StoreError(
                f"'{url}' is not a database URL; use e.g. sqlite:///closedloop.db"
            ) from None
        self.url = url
        self._write_lock = threading.RLock()
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            db = Path(parsed.database)
            if not create and not db.exists():
                raise StoreError(f"no store at {db}; run a campaign first or pass --store URL")
            try:
                db.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the store's folder {db.parent}: {exc.strerror}; "
                    "pass a writable --store URL"
                ) from None
        try:
            self.engine: Engine = create_engine(url)
        except NoSuchModuleError:  # a dialect SQLAlchemy does not know: a typo, usually
            raise StoreError(
                f"store URL {url}: no database '{parsed.drivername}' is known; use e.g. "
                "sqlite:///closedloop.db (or a URL of an installed SQLAlchemy dialect, "
                "postgresql://user@host/db)"
            ) from None
        except ImportError as exc:  # a known dialect whose driver is not installed
            raise StoreError(
                f"store URL {url}: the database driver for '{parsed.drivername}' is not "
                f"installed ({exc}); install the driver into closedloop's environment, or "
                "use sqlite:///closedloop.db"
            ) from None
        except (ArgumentError, TypeError, ValueError) as exc:  # e.g. a bad query argument
            raise StoreError(f"store URL {url} cannot be used: {exc}") from None
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            self._refuse_newer_schema()
            if create:
                SQLModel.metadata.create_all(self.engine)
            else:
                with self.engine.connect() as conn:
                    conn.execute(text("SELECT 1 FROM campaign LIMIT 1"))
                # Tables added since the store was written (e.g. ``lease``): additive only.
                SQLModel.metadata.create_all(self.engine)
            self._add_missing_columns()
            self._record_schema_version()
        except DatabaseError as exc:  # also "file is not a database"
            raise StoreError(f"cannot open store {url}: {exc.orig}") from None

    def _stored_schema_version(self) -> int | None:
        if "closedloop_meta" not in inspect(self.engine).get_table_names():
            return None
        with self.session() as s:
            row = s.get(MetaRow, "schema_version")
        return int(row.value) if row is not None and row.value.isdigit() else None

    def _refuse_newer_schema(self) -> None:
        """Never touch a store whose layout this version does not know."""
        version = self._stored_schema_version()
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.url} was written by a newer closedloop (store schema "
                f"{version}; this version reads up to {SCHEMA_VERSION}); upgrade closedloop "
                "or pass another --store"
            )

    def _record_schema_version(self) -> None:
        if self._stored_schema_version() == SCHEMA_VERSION:
            return
        with self.session() as s:
            s.merge(MetaRow(key="schema_version", value=str(SCHEMA_VERSION)))
            s.commit()

    def _add_missing_columns(self) -> None:
        """Bring a store written by an earlier version up to the current columns (additive)."""
        inspector = inspect(self.engine)
        tables = set(inspector.get_table_names())
        with self.engine.begin() as conn:
            for table, column, ddl in _ADDED_COLUMNS:
                if table not in tables:
                    continue
                if column not in {c["name"] for c in inspector.get_columns(table)}:
                    conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}"))

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ----------------------------------------------------------------- campaigns
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
        prior: Sequence[tuple[dict[str, Any], dict[str, float]]] = (),
        prior_kind: str = "prior",
    ) -> int:
        """Commit a new campaign, its prior data and the creator's lease in one transaction.

        One transaction means no other runner (a ``resume`` of the latest campaign) can
        pick the campaign up between its creation and its first heartbeat, and that a
        campaign is stored with all of its prior data or not at all: ``resume`` never
        inserts prior data again, so a crash half-way through the rows would otherwise
        lose the rest silently (found in review).

        Args:
            prior: earlier measurements, ``(parameters, outputs)`` per row, stored as
                completed trials of kind ``prior_kind`` numbered 1, 2, ... (no documents,
                never dispatched).
        """
        with self.session() as s:
            row = CampaignRow(
                name=name,
                config_text=config_text,
                config_path=config_path,
                seed=seed,
                budget=budget,
                instrument_text=instrument_text,
            )
            s.add(row)
            s.flush()
            if row.id is None:  # pragma: no cover - the database assigns it
                raise StoreError("the database gave the campaign no id")
            if prior:
                _insert_prior(s.connection(), row.id, prior, prior_kind)
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
        make such a campaign unreachable from ``-c``.
        """
        with self.session() as s:
            query = select(CampaignRow).order_by(col(CampaignRow.id).desc())
            row = None
            if isinstance(ref, str):
                row = s.exec(query.where(CampaignRow.name == ref)).first()
            if row is None and ref is not None and (isinstance(ref, int) or _is_id(ref)):
                row = s.exec(query.where(CampaignRow.id == int(ref))).first()
            elif ref is None:
                row = s.exec(query).first()
        if row is None:
            what = f"campaign '{ref}'" if ref is not None else "campaign"
            raise StoreError(f"no {what} in store {self.url}")
        return row

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

    def campaigns(self) -> list[CampaignRow]:
        with self.session() as s:
            return list(s.exec(select(CampaignRow).order_by(col(CampaignRow.id))))

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
            row.status, row.stop_reason, row.updated_at = status, reason, utcnow()
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
            s.exec(
                update(CampaignEventRow)
                .where(col(CampaignEventRow.campaign_id) == campaign_id)
                .where(col(CampaignEventRow.kind) == "release")
                .where(col(CampaignEventRow.handled_at).is_(None))
                .values(handled_at=utcnow(), outcome=f"not needed: {how}")
            )
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

    def events(self, campaign_id: int) -> list[CampaignEventRow]:
        """The campaign's pauses, resumptions and releases, oldest first."""
        with self.session() as s:
            return list(
                s.exec(
                    select(CampaignEventRow)
                    .where(CampaignEventRow.campaign_id == campaign_id)
                    .order_by(col(CampaignEventRow.id))
                )
            )

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
                )
            )
            s.commit()
            return bool(result.rowcount)

    @_serialised
    def renew_lease(
        self, campaign_id: int, token: str, ttl: float, *, elapsed: float | None = None
    ) -> bool:
        """Heartbeat: push the expiry out and record the running time; ``False`` if lost."""
        now = time.time()
        with self.session() as s:
            result = s.exec(
                update(LeaseRow)
                .where(col(LeaseRow.campaign_id) == campaign_id)
                .where(col(LeaseRow.token) == token)
                .values(heartbeat=now, expires=now + ttl)
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
        self, trial_id: int, seq: int, name: str, body: dict[str, Any], run_uid: str | None
    ) -> None:
        """Commit one Bluesky document the moment the RunEngine emits it.

        Streaming (rather than saving the run at the end) means a crash after the event
        document still leaves the measurement in the store for ``resume`` to reconcile.
        """
        with self.engine.begin() as conn:
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
    ) -> None:
        """Commit a trial's outcome and observations in one transaction.

        Only a ``running`` trial can be finished, so an outcome is never written twice (a
        runner and a reconciliation cannot both record one). With ``token``, the write is
        refused unless that lease still holds the campaign.
        """
        with self.engine.begin() as conn:
            row = conn.execute(_Hot.trial_state, {"trial": trial_id}).first()
            if row is None:
                raise StoreError(f"trial {trial_id} vanished from the store")
            if token is not None:
                _check_lease(conn, row.campaign_id, token)
            # "only if still running" is part of the update: a status read before it could
            # be stale by the time this transaction takes the write lock
            finished = conn.execute(
                _Hot.finish_trial,
                {
                    "trial": trial_id,
                    "status": status,
                    "run_uid": run_uid,
                    "error": error,
                    "readbacks": _jsonable(readbacks),
                    "finished_at": utcnow(),
                },
            )
            if finished.rowcount != 1:
                state = conn.execute(_Hot.trial_state, {"trial": trial_id}).first()
                raise StoreError(
                    f"trial {trial_id} is already {state.status if state else 'gone'}; its "
                    "outcome is not written twice"
                )
            observations = _observation_rows(trial_id, outputs)
            if observations:
                conn.execute(_Hot.insert_observation, observations)

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
        """Outputs by trial id (non-finite values as NaN)."""
        out: dict[int, dict[str, float]] = {}
        with self.session() as s:
            rows = s.exec(
                select(ObservationRow).join(TrialRow).where(TrialRow.campaign_id == campaign_id)
            )
            for obs in rows:
                value = obs.value if obs.value is not None else math.nan
                out.setdefault(obs.trial_id, {})[obs.metric] = value
        return out

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
                trials.setdefault(_id_of(trial), trial)
                if obs is not None:
                    value = obs.value if obs.value is not None else math.nan
                    out.setdefault(obs.trial_id, {})[obs.metric] = value
        return list(trials.values()), out

    def documents(self, trial_id: int) -> list[DocumentRow]:
        with self.session() as s:
            return list(
                s.exec(
                    select(DocumentRow)
                    .where(DocumentRow.trial_id == trial_id)
                    .order_by(col(DocumentRow.seq))
                )
            )

    def iter_documents(self, campaign_id: int) -> Iterator[DocumentRow]:
        with self.session() as s:
            yield from s.exec(
                select(DocumentRow)
                .join(TrialRow)
                .where(TrialRow.campaign_id == campaign_id)
                .order_by(col(DocumentRow.trial_id), col(DocumentRow.seq))
            )


def _observation_rows(trial_id: int, outputs: dict[str, float]) -> list[dict[str, Any]]:
    """Observation rows of one trial's outputs (a NaN or inf is stored as NULL, not finite)."""
    rows = []
    for metric, value in outputs.items():
        finite = value is not None and math.isfinite(value)
        rows.append(
            {
                "trial_id": trial_id,
                "metric": metric,
                "value": float(value) if finite else None,
                "finite": finite,
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


def _id_of(trial: TrialRow) -> int:
    if trial.id is None:  # pragma: no cover - a stored row has its id
        raise StoreError("a stored trial has no id")
    return trial.id


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
    insert_trial = insert(TrialRow.__table__)  # type: ignore[attr-defined]
    finish_trial = (
        update(TrialRow.__table__)  # type: ignore[attr-defined]
        .where(trial.id == bindparam("trial"), trial.status == "running")
        .values(
            status=bindparam("status"),
            run_uid=bindparam("run_uid"),
            error=bindparam("error"),
            readbacks=bindparam("readbacks"),
            finished_at=bindparam("finished_at"),
        )
    )
    insert_document = insert(DocumentRow.__table__)  # type: ignore[attr-defined]
    insert_observation = insert(ObservationRow.__table__)  # type: ignore[attr-defined]


def export_records(store: Store, campaign_id: int) -> list[dict[str, Any]]:
    """One flat record per trial: id, status, parameters, readbacks, outputs, run uid.

    Trials and outputs come from one snapshot, so a campaign running meanwhile never shows
    a trial's outcome without its outputs.
    """
    trials, observations = store.trials_and_observations(campaign_id)
    records = []
    for t in trials:
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
                "started_at": t.started_at.isoformat() if t.started_at else None,
                "finished_at": t.finished_at.isoformat() if t.finished_at else None,
            }
        )
    return records


def sequence_counts(trials: Sequence[TrialRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    return counts
