"""The campaign store: SQLModel tables on SQLite (or any SQLAlchemy URL).

Persist before you act: a trial row is committed (status ``running``) before the RunEngine
touches a device, each Bluesky document is committed as it arrives, and the trial's outcome
is committed before the next trial is proposed. A crash at any point leaves rows that say
exactly how far a trial got, so no measurement is ever lost silently.

SQLite runs in WAL mode with ``synchronous=FULL``: readers (``closedloop status`` in another
terminal) never block the runner, and a committed trial survives power loss.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import JSON, Column, Index, event, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlmodel import Field, Session, SQLModel, col, create_engine, select

from loop.errors import StoreError

logger = logging.getLogger(__name__)

DEFAULT_STORE = "sqlite:///closedloop.db"

TrialStatus = Literal["running", "completed", "failed", "abandoned"]
TERMINAL: tuple[str, ...] = ("completed", "failed", "abandoned")


def utcnow() -> datetime:
    return datetime.now(UTC)


class CampaignRow(SQLModel, table=True):
    """One campaign: its exact YAML text (so ``resume`` needs no file) and its state."""

    __tablename__ = "campaign"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    config_text: str
    config_path: str
    seed: int
    status: str = Field(default="running")  # running | completed | stopped | failed
    stop_reason: str | None = None
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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _jsonable(value: Any) -> Any:
    """Documents hold numpy scalars/arrays; store them as plain JSON (NaN as null)."""
    return json.loads(json.dumps(value, default=_default, allow_nan=True).replace("NaN", "null"))


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
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            db = Path(parsed.database)
            if not create and not db.exists():
                raise StoreError(f"no store at {db}; run a campaign first or pass --store URL")
            db.parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url)
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            if create:
                SQLModel.metadata.create_all(self.engine)
            else:
                with self.engine.connect() as conn:
                    conn.execute(text("SELECT 1 FROM campaign LIMIT 1"))
        except OperationalError as exc:
            raise StoreError(f"cannot open store {url}: {exc.orig}") from None

    def close(self) -> None:
        self.engine.dispose()

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # ----------------------------------------------------------------- campaigns
    def create_campaign(self, name: str, config_text: str, config_path: str, seed: int) -> int:
        with self.session() as s:
            row = CampaignRow(
                name=name, config_text=config_text, config_path=config_path, seed=seed
            )
            s.add(row)
            s.commit()
            if row.id is None:  # pragma: no cover - the database assigns it
                raise StoreError("the database gave the campaign no id")
            return row.id

    def campaign(self, ref: str | int | None = None) -> CampaignRow:
        """A campaign by id or name (latest of that name), or the latest one."""
        with self.session() as s:
            query = select(CampaignRow).order_by(col(CampaignRow.id).desc())
            if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
                query = query.where(CampaignRow.id == int(ref))
            elif ref is not None:
                query = query.where(CampaignRow.name == ref)
            row = s.exec(query).first()
        if row is None:
            what = f"campaign '{ref}'" if ref is not None else "campaign"
            raise StoreError(f"no {what} in store {self.url}")
        return row

    def campaigns(self) -> list[CampaignRow]:
        with self.session() as s:
            return list(s.exec(select(CampaignRow).order_by(col(CampaignRow.id))))

    def finish_campaign(self, campaign_id: int, status: str, reason: str) -> None:
        with self.session() as s:
            row = s.get(CampaignRow, campaign_id)
            if row is None:
                raise StoreError(f"campaign {campaign_id} vanished from the store")
            row.status, row.stop_reason, row.updated_at = status, reason, utcnow()
            s.add(row)
            s.commit()

    # ----------------------------------------------------------------- trials
    def add_trial(
        self,
        campaign_id: int,
        parameters: dict[str, Any],
        kind: str,
        suggest_seconds: float | None = None,
    ) -> TrialRow:
        """Commit a new trial in state ``running`` (before anything is dispatched)."""
        with self.session() as s:
            last = s.exec(
                select(TrialRow.number)
                .where(TrialRow.campaign_id == campaign_id)
                .order_by(col(TrialRow.number).desc())
            ).first()
            row = TrialRow(
                campaign_id=campaign_id,
                number=(last or 0) + 1,
                kind=kind,
                parameters=_jsonable(parameters),
                suggest_seconds=suggest_seconds,
                started_at=utcnow(),
            )
            s.add(row)
            s.commit()
            return row

    def add_document(
        self, trial_id: int, seq: int, name: str, body: dict[str, Any], run_uid: str | None
    ) -> None:
        """Commit one Bluesky document the moment the RunEngine emits it.

        Streaming (rather than saving the run at the end) means a crash after the event
        document still leaves the measurement in the store for ``resume`` to reconcile.
        """
        with self.session() as s:
            s.add(
                DocumentRow(
                    trial_id=trial_id, run_uid=run_uid, seq=seq, name=name, body=_jsonable(body)
                )
            )
            s.commit()

    def finish_trial(
        self,
        trial_id: int,
        *,
        status: TrialStatus,
        outputs: dict[str, float],
        readbacks: dict[str, Any],
        run_uid: str | None,
        error: str | None,
    ) -> None:
        """Commit a trial's outcome and observations in one transaction."""
        with self.session() as s:
            row = s.get(TrialRow, trial_id)
            if row is None:
                raise StoreError(f"trial {trial_id} vanished from the store")
            row.status, row.run_uid, row.error = status, run_uid, error
            row.readbacks = _jsonable(readbacks)
            row.finished_at = utcnow()
            s.add(row)
            for metric, value in outputs.items():
                finite = value is not None and math.isfinite(value)
                s.add(
                    ObservationRow(
                        trial_id=trial_id,
                        metric=metric,
                        value=float(value) if finite else None,
                        finite=finite,
                    )
                )
            s.commit()

    def trials(self, campaign_id: int) -> list[TrialRow]:
        with self.session() as s:
            return list(
                s.exec(
                    select(TrialRow)
                    .where(TrialRow.campaign_id == campaign_id)
                    .order_by(col(TrialRow.number))
                )
            )

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


def export_records(store: Store, campaign_id: int) -> list[dict[str, Any]]:
    """One flat record per trial: id, status, parameters, readbacks, outputs, run uid."""
    observations = store.observations(campaign_id)
    records = []
    for t in store.trials(campaign_id):
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
