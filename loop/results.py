"""A campaign's trials as records, for Python: what ``closedloop export`` writes.

A notebook reads results with ``trial_records(url)`` instead of running ``closedloop export``
and reading its CSV back; both come from here, so the two never disagree (which trials are
feasible, which one is best, which are on the Pareto front). ``run_documents`` is the same
for the trials' Bluesky documents (``closedloop export --format jsonl``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlmodel import col, select

from loop.report import annotate, stored_campaign
from loop.store import DocumentRow, Store, TrialRow, _jsonable, export_records


def trial_records(store: Store | str, campaign: str | int | None = None) -> list[dict[str, Any]]:
    """One record per trial of a stored campaign, in trial order, as ``closedloop export``.

    Args:
        store: an open ``Store``, or a store URL (``sqlite:///runs/x.db``; opened read-only
            and closed again).
        campaign: a campaign's name or id; the latest campaign by default.

    Returns:
        Dicts with ``trial_id``, ``number``, ``kind`` (``prior`` for prior data), ``status``,
        ``slot``, ``parameters``, ``readbacks`` and ``outputs`` (dicts by name), ``run_uid``,
        ``error``, ``transient`` (a failed trial: the instrument's fault, not the point's;
        else ``None``), ``retry_of`` (a retry: its point's first trial's number) and
        ``attempt`` (1, 2, ...), ``started_at``, ``finished_at``; with outcome constraints
        ``feasible``;
        with one objective ``best`` (the trial ``closedloop status`` calls best), with
        several ``pareto``. ``pandas.json_normalize(records)`` makes a table of them
        (columns ``parameters.x1``, ``outputs.y``, ...).
    """
    db = Store(store, read_only=True) if isinstance(store, str) else store
    try:
        row = db.campaign(campaign)
        return annotate(export_records(db, row.id or 0), stored_campaign(row))
    finally:
        if db is not store:
            db.close()


def run_documents(
    store: Store | str, campaign: str | int | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """Every stored Bluesky document of a campaign's runs, as ``(name, doc)`` in trial order.

    The list :func:`iter_run_documents` yields; see there.
    """
    return list(iter_run_documents(store, campaign))


def iter_run_documents(
    store: Store | str, campaign: str | int | None = None, *, from_trial: int | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every stored Bluesky document of a campaign's runs, as ``(name, doc)`` in trial order.

    Each trial's run in the order its documents were emitted (start, descriptor, event,
    stop), the runs by trial number: what ``closedloop export --format jsonl`` writes, and
    what a ``RunRouter`` or bluesky-tiled-plugins' ``TiledWriter`` takes one pair at a
    time. Trials without a run (prior data, told results) have no documents. The documents
    are as the store holds them, with a NaN or infinite reading as ``null`` (JSON has no
    such number; the trial's outputs in ``trial_records`` keep an infinity; a store written
    before that rule is read so too), and a run still in
    flight ends at its last stored document (one whose process died gets its stop document
    from ``closedloop resume``).

    Read in one statement, so a campaign running meanwhile never shows a run with a later
    document but not an earlier one, and yielded as read: a 5000-trial campaign's 20 000
    documents took 300 MB as one list (``closedloop export --format jsonl`` writes them as
    they come). The store is held open until the last one is yielded.

    Args:
        store: an open ``Store``, or a store URL (opened read-only and closed again).
        campaign: a campaign's name or id; the latest campaign by default.
        from_trial: only the runs of trials numbered this or later (what a live consumer
            left behind did not get: ``loop.consumers`` names the number).
    """
    db = Store(store, read_only=True) if isinstance(store, str) else store
    try:
        row = db.campaign(campaign)  # now, not at the first document: a wrong name is said
    except BaseException:
        if db is not store:
            db.close()
        raise
    return _documents(db, row.id or 0, close=db is not store, from_trial=from_trial or 0)


def _documents(
    db: Store, campaign_id: int, *, close: bool, from_trial: int
) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        with db.session() as s:
            rows = s.exec(
                select(DocumentRow.name, DocumentRow.body)
                .join(TrialRow, col(TrialRow.id) == col(DocumentRow.trial_id))
                .where(TrialRow.campaign_id == campaign_id, col(TrialRow.number) >= from_trial)
                .order_by(col(TrialRow.number), col(DocumentRow.seq), col(DocumentRow.id))
                .execution_options(yield_per=500)
            )
            # Strict JSON even from a store written before non-finite values were stored as
            # null (until 501c043 an infinity kept its ``Infinity`` token, which made the
            # jsonl export fail; found in review).
            for name, body in rows:
                yield name, _jsonable(body)
    finally:
        if close:
            db.close()


@dataclass(frozen=True)
class TrialEstimates:
    """A GP's estimate of one objective's true value at a campaign's measured trials
    (:func:`model_estimates`).

    Attributes:
        objective: the objective's name.
        mean: trial id -> the posterior mean there (the output's units).
        sd: trial id -> its posterior standard deviation.
        best: the trial id the model rates best among those it rates feasible, or ``None``.
        noise_sd: the fitted measurement noise (standard deviation of one reading).
    """

    objective: str
    mean: dict[int, float]
    sd: dict[int, float]
    best: int | None
    noise_sd: float


def model_estimates(
    store: Store | str,
    campaign: str | int | None = None,
    *,
    snapshot: tuple[list[TrialRow], dict[int, dict[str, float]]] | None = None,
) -> TrialEstimates | None:
    """The BoTorch model of a one-objective campaign's trials: how much of each reading to
    believe, and which trial it rates best. ``None`` with several objectives or fewer than
    two measured trials.

    Under measurement noise the best reading (``status``'s best) is the luckiest one; the
    posterior mean weighs each trial's neighbours too (see
    :meth:`planners.BoTorchPlanner.model_estimates`). The model is the campaign's own when
    its planner is BoTorch (its prior mean, acquisition-independent settings), BoTorch's
    defaults otherwise, fitted on every trial the planner would learn from (a retried
    attempt's retry, prior data); it takes a second or more and imports torch.

    ``snapshot``: the campaign's trials and observations as ``Store.trials_and_observations``
    read them, to model the very trials a caller shows (``status`` beside a running
    campaign printed trials of one moment and a model of a later one); by default read
    here, in one snapshot too.
    """
    from loop.config import parse_campaign
    from loop.runner import Runner
    from loop.store import path_from_text
    from planners import PlannerConfig

    db = Store(store, read_only=True) if isinstance(store, str) else store
    try:
        row = db.campaign(campaign)
        path = path_from_text(row.config_path)
        # As `status` reads it: not checked again against its instrument, so a campaign
        # whose function file is gone (a store copied to another machine) is modelled too;
        # nothing here measures (it was refused for the missing file: found in review).
        loaded = parse_campaign(
            row.config_text,
            path=path,
            base_dir=path.parent,
            instrument_text=row.instrument_text,
            cross_check=False,
        )
        runner = Runner(loaded, db, seed=row.seed)
        runner.campaign_id = row.id
        c = runner.campaign
        if len(c.objectives) != 1:
            return None
        history, observations = snapshot or db.trials_and_observations(runner.campaign_id or 0)
        config = c.planner if c.planner.kind == "botorch" and c.planner.plugin is None else None
        planner = runner.rebuild_planner(history, observations, config or PlannerConfig())
        estimates = planner.model_estimates()  # type: ignore[attr-defined]
        if estimates is None:
            return None
        ids = [t.id or 0 for t in runner.learned_trials(history)]
        return TrialEstimates(
            objective=c.objectives[0].name,
            mean={ids[i]: v for i, v in estimates.mean.items()},
            sd={ids[i]: v for i, v in estimates.sd.items()},
            best=None if estimates.best is None else ids[estimates.best],
            noise_sd=estimates.noise_sd,
        )
    finally:
        if db is not store:
            db.close()
