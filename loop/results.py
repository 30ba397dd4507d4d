"""A campaign's trials as records, for Python: what ``closedloop export`` writes.

A notebook reads results with ``trial_records(url)`` instead of running ``closedloop export``
and reading its CSV back; both come from here, so the two never disagree (which trials are
feasible, which one is best, which are on the Pareto front).
"""

from __future__ import annotations

from typing import Any

from loop.report import annotate, stored_campaign
from loop.store import Store, export_records


def trial_records(store: Store | str, campaign: str | int | None = None) -> list[dict[str, Any]]:
    """One record per trial of a stored campaign, in trial order, as ``closedloop export``.

    Args:
        store: an open ``Store``, or a store URL (``sqlite:///runs/x.db``; opened read-only
            and closed again).
        campaign: a campaign's name or id; the latest campaign by default.

    Returns:
        Dicts with ``trial_id``, ``number``, ``kind`` (``prior`` for prior data), ``status``,
        ``slot``, ``parameters``, ``readbacks`` and ``outputs`` (dicts by name), ``run_uid``,
        ``error``, ``started_at``, ``finished_at``; with outcome constraints ``feasible``;
        with one objective ``best`` (the trial ``closedloop status`` calls best), with
        several ``pareto``. ``pandas.json_normalize(records)`` makes a table of them
        (columns ``parameters.x1``, ``outputs.y``, ...).
    """
    db = Store(store, create=False) if isinstance(store, str) else store
    try:
        row = db.campaign(campaign)
        return annotate(export_records(db, row.id or 0), stored_campaign(row))
    finally:
        if db is not store:
            db.close()
