"""Which trial a retry re-measures, and the retries a stopped session still owes.

A transient failure is retried at once (``instrument.max_retries``); a session that ended
in between (a stop, a kill, a crash during the retry's own run) owed that retry, and
``resume`` runs it first (``loop.runner.Runner.owed_retries``). ``status`` and ``plan
--store`` name the same retries, so the rules live here, apart from ``loop.runner``: they
read stored trials only, and ``status`` reads a store without importing the instruments
(bluesky, ophyd) and planners the runner needs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loop.asktell import is_told
from loop.failures import transient_failure, was_transient
from loop.store import Store, TrialRow, id_of


@dataclass(frozen=True)
class Retry:
    """A retry to run: the point, and which attempt of which chain it is.

    Attributes:
        parameters: the point, as its earlier attempt measured it.
        first: the store's id of the point's first attempt (its start document's
            ``retry_of``).
        attempt: the attempt number it runs as (its start document's ``attempt``).
    """

    parameters: dict[str, Any]
    first: int
    attempt: int


@dataclass(frozen=True)
class OwedRetry:
    """A retry the last session owed (:func:`owed_retries`), as ``resume`` announces it.

    Attributes:
        number: the trial it re-measures: a transient failure, or a retry cut off.
        first: the number of the point's first attempt.
        cut_off: the trial is a retry abandoned unmeasured, run again as the same attempt.
    """

    number: int
    first: int
    cut_off: bool


def attempts(
    history: Sequence[TrialRow], links: Mapping[int, tuple[int, int]], max_retries: int
) -> tuple[set[int], dict[int, Attempt]]:
    """How ``history``'s trials chain into attempts at their points: the indices of the
    attempts a later ``retry`` re-measured, and each index's :class:`Attempt`.

    A retry's start document says which point's attempts it continues (``retry_of``, the
    first attempt's trial id) and its ``attempt`` number: ``links``
    (:meth:`loop.store.Store.retry_links`); a retry re-measures the latest attempt of that
    chain before it. Matched by its parameters instead, a retry at a point of a discrete
    space (proposed again, as such points are) took an earlier attempt of another chain,
    and ``resume`` ran a retry already measured again (found in review). A retry whose run
    never started has no start document: it is matched by parameters, to the latest chain
    at its point that a retry could still follow (:func:`followable`: within
    ``max_retries``, not given up), as such a retry is made right after that attempt ends;
    a chain that ends in a transient failure first: one that ends in an abandoned retry may
    have been mid-run when the unlinked retry was made (two slots at one point; review).
    """
    last: dict[int, int] = {}  # a chain's first attempt id -> the index of its latest
    retried: set[int] = set()
    chain: dict[int, Attempt] = {}
    for index, trial in enumerate(history):
        tid = id_of(trial)
        first = links[tid][0] if tid in links else None
        if trial.kind == "retry" and first not in last:
            first = max(
                (
                    f
                    for f, j in last.items()
                    if history[j].parameters == trial.parameters
                    and followable(history[j], chain[j], max_retries)
                ),
                key=lambda f: (history[last[f]].status == "failed", last[f]),
                default=None,
            )
        if trial.kind != "retry" or first is None:
            chain[index] = Attempt(tid, 2 if trial.kind == "retry" else 1)
            last[tid] = index
            continue
        earlier = last[first]
        retried.add(earlier)
        before = chain[earlier]
        cut = history[earlier].status == "abandoned"  # its retry, again: the same attempt
        number = links[tid][1] if tid in links else before.number + (not cut)
        chain[index] = Attempt(first, number, before.cut + 1 if cut else 0)
        last[first] = index
    return retried, chain


def announced_retries(history: Sequence[TrialRow], owed: Mapping[int, Retry]) -> list[OwedRetry]:
    """The owed retries as ``resume`` announces them, in trial order."""
    numbers = {id_of(t): t.number for t in history}
    announced = []
    for t in history:
        retry = owed.get(id_of(t))
        if retry is not None:
            first = numbers.get(retry.first, t.number)
            announced.append(OwedRetry(t.number, first, cut_off=t.status == "abandoned"))
    return announced


def stored_owed(store: Store, history: Sequence[TrialRow], max_retries: int) -> dict[int, Retry]:
    """:func:`owed_retries` of a stored campaign's trials ``history``, their retries'
    links read from ``store`` (:meth:`loop.store.Store.retry_links`)."""
    return owed_retries(history, max_retries, retry_links(store, history))


def retry_links(store: Store, history: Sequence[TrialRow]) -> dict[int, tuple[int, int]]:
    """The stored ``(retry_of, attempt)`` of ``history``'s retries (:func:`attempts`);
    none to read (no query) for a campaign without a retry."""
    if not any(t.kind == "retry" for t in history):
        return {}
    return store.retry_links(history[0].campaign_id)


def owed_note(announced: Sequence[OwedRetry], command: str) -> str | None:
    """What the run's end and ``status`` say of the owed retries (None: none is owed),
    named by their points' first trials, as ``resume`` names them; ``command``: the
    ``closedloop resume`` that runs them (with the budget option a finished campaign
    needs)."""
    if not announced:
        return None
    points = ", ".join(f"#{o.first}" for o in announced)
    one = len(announced) == 1
    return (
        f"{'a retry is' if one else 'retries are'} owed to the point{'' if one else 's'} of "
        f"trial {points}: `{command}` runs {'it' if one else 'them'} first"
    )


def as_resume_finds(store: Store, history: Sequence[TrialRow]) -> list[TrialRow]:
    """``history`` with each trial a dead runner left ``running`` given the outcome
    ``resume``'s reconciliation records for it (``loop.runner.reconcile_documents``), as
    far as its run's stop document decides it: none, or one that aborted, ``abandoned`` (a
    retry cut off by a kill is owed); ``fail``, ``failed`` with the stop's reason (and
    transient as that reason says). A run that closed successfully is left as it is (its
    event decides; ``plan --store`` previews that), and so is a trial awaiting ``tell``.
    Call it only when no live runner holds the campaign: a live runner's trials in flight
    are not left."""
    from loop.asktell import awaiting_tell

    left = [t for t in history if t.status == "running"]
    if not left:
        return list(history)
    told = {id_of(t) for t in awaiting_tell(store, left)}
    found: dict[int, TrialRow] = {}
    for t in left:
        if id_of(t) in told:
            continue
        stops = [d.body for d in store.documents(id_of(t)) if d.name == "stop"]
        exit_status = stops[-1].get("exit_status") if stops else None
        if exit_status == "fail":
            error = stops[-1].get("reason") or "run ended with 'fail'"
            update = {"status": "failed", "error": error, "transient": transient_failure(error)}
            found[id_of(t)] = t.model_copy(update=update)
        elif exit_status != "success":
            found[id_of(t)] = t.model_copy(update={"status": "abandoned"})
    return [found.get(id_of(t), t) for t in history]


def followable(trial: TrialRow, attempt: Attempt, max_retries: int) -> bool:
    """Whether a runner's retry could follow ``trial``, the latest ``attempt`` of its
    chain: a transient failure of a runner's trial within ``max_retries``, or a retry
    abandoned unmeasured once (run again by ``resume``). A used-up or given-up chain took
    an unstarted retry of a new chain at a repeated point, and resume ran a retry past
    ``max_retries`` (found in review)."""
    if trial.kind == "retry" and trial.status == "abandoned":
        return attempt.cut == 0
    return (
        trial.status == "failed"
        and trial.kind != "prior"
        and was_transient(trial)
        and attempt.number <= max_retries
        and not is_told(trial)
    )


@dataclass(frozen=True)
class Attempt:
    """One trial as an attempt at its point (:func:`attempts`).

    Attributes:
        first: the store's id of the point's first attempt (a retry's ``retry_of``).
        number: 1 for a proposal, 2, 3, ... for its retries (a retry's ``attempt``).
        cut: how many attempts of its chain right before it were abandoned unmeasured.
    """

    first: int
    number: int
    cut: int = 0


def owed_retries(
    history: Sequence[TrialRow],
    max_retries: int,
    links: Mapping[int, tuple[int, int]],
) -> dict[int, Retry]:
    """The retries the last session owed when it ended, by the trial id of the attempt
    each one re-measures: ``resume`` runs them first, as the live loop would have.
    ``links``: the retries' stored ``(retry_of, attempt)`` (:func:`attempts`).

    Live, a transient failure is retried at once (``max_retries``); a runner killed
    between recording the failure and starting its retry, a stop asked meanwhile, or a
    retry itself cut off unmeasured (abandoned), lost it for good: ``resume`` had learned
    the point as nothing and moved on (found in review).

    Not owed: a failure whose row does not say it was transient (a store written before
    the flag existed retried by other rules: its readbacks outside the bounds were not
    transient), ask/tell's told failures (the operator's to repeat), and a retry cut off
    twice in a row: one that kills its runner (a segfault, the OOM killer) or that the
    operator stopped twice would otherwise start every resume, without end (found in
    review)."""
    retried, chain = attempts(history, links, max_retries)
    owed: dict[int, Retry] = {}
    for index, trial in enumerate(history):
        if index in retried or trial.status not in ("failed", "abandoned"):
            continue
        if trial.kind == "prior" or is_told(trial):
            continue
        attempt = chain[index]
        if trial.status == "failed" and trial.transient is True and attempt.number <= max_retries:
            number = attempt.number + 1
        elif trial.status == "abandoned" and trial.kind == "retry" and attempt.cut == 0:
            number = attempt.number
        else:
            continue
        owed[id_of(trial)] = Retry(dict(trial.parameters), attempt.first, number)
    return owed
