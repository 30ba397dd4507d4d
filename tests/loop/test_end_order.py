"""The order trials ended in is the store's sequence, never the wall clock's; durations in the
runner's messages read as a person reads them.

The stopping rules that look at an order (patience's window, target) and the planner's
ingest order were rebuilt from ``finished_at``, the wall clock. A clock stepped back an hour
after trial 4 (an NTP correction, a technician setting an offline PC's clock) put trials
5-8 before 1-4, and a campaign whose patience never tripped live was refused by every
``resume`` as out of patience (found in review). Real runner, real RunEngine, real SQLite
(and a real PostgreSQL server where one can be started); the clock step is ``loop.store``'s
``utcnow`` patched, as the reviewer's script did.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

import loop.runner as runner_module
import loop.store as store_module
from loop import Runner, Store, parse_campaign
from loop.config import LoadedCampaign, parse_duration
from loop.provenance import session_line
from loop.runner import CampaignFinished, _ended_order, extension_hint, option_duration
from loop.store import LeaseClaim, TrialOutcome, TrialRow
from tests.postgres_server import PostgresServer

CAMPAIGN = """\
name: pat
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives:
  - {name: y, goal: minimize}
instrument: {simulator: branin, latency: 0}
planner: {kind: sobol}
budget: BUDGET
seed: 1
"""


def _loaded(tmp_path: Path, budget: str = "{max_trials: 8, patience: 3}") -> LoadedCampaign:
    text = CAMPAIGN.replace("BUDGET", budget)
    path = tmp_path / "pat.yaml"
    path.write_text(text)
    return parse_campaign(text, path=path, base_dir=tmp_path)


def _clock_steps_back_after(
    monkeypatch: pytest.MonkeyPatch, trials: int, hours: float = 1.0
) -> None:
    """From the ``trials``-th finished trial on, the store's clock reads ``hours`` earlier."""
    real_utcnow, real_finish = store_module.utcnow, Store.finish_trial
    finished = [0]

    def utcnow() -> datetime:
        now = real_utcnow()
        return now - timedelta(hours=hours) if finished[0] >= trials else now

    def finish_trial(self: Store, *args: Any, **kwargs: Any) -> None:
        real_finish(self, *args, **kwargs)
        finished[0] += 1

    monkeypatch.setattr(store_module, "utcnow", utcnow)
    monkeypatch.setattr(Store, "finish_trial", finish_trial)


def _claim(token: str) -> LeaseClaim:
    return LeaseClaim(owner="host:1", host="host", pid=1, token=token, ttl=60)


def _ended(store: Store, cid: int) -> list[tuple[int, int | None]]:
    return [(t.number, t.ended) for t in store.trials(cid)]


# ---------------------------------------------------------------------------- the clock step
def test_a_clock_stepped_back_does_not_end_a_campaign_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    _clock_steps_back_after(monkeypatch, 4)
    live = Runner(_loaded(tmp_path), store).run()
    assert (live.status, live.reason) == ("completed", "max_trials reached (8 completed trials)")
    cid = live.campaign_id or 0
    trials = store.trials(cid)
    # the step happened: trials 5-8 read an hour older than 1-4
    before, after = [
        [t.finished_at or datetime.max for t in part] for part in (trials[:4], trials[4:])
    ]
    assert max(after) < min(before)
    # rebuilt, patience sees the live sequence (it never tripped): the campaign goes on;
    # by the wall clock it was refused for good ("still patience: y did not improve ...")
    more = Runner.from_store(store, cid, max_trials=12).resume()
    assert more.completed > 8
    assert _ended(store, cid) == [(n, n) for n in range(1, more.completed + 1)]
    assert [t.number for t in _ended_order(store.trials(cid))] == list(range(1, more.completed + 1))
    store.close()


def test_a_rebuilt_planner_ingests_in_the_order_the_trials_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    _clock_steps_back_after(monkeypatch, 2)
    cid = Runner(_loaded(tmp_path, "{max_trials: 4}"), store).run().campaign_id or 0
    history, observations = store.trials_and_observations(cid)
    ingested: list[Any] = []
    real_call = runner_module.call_planner

    def call_planner(planner: Any, method: str, *args: Any) -> Any:
        if method == "ingest":
            ingested.extend(args[0])
        return real_call(planner, method, *args)

    monkeypatch.setattr(runner_module, "call_planner", call_planner)
    Runner.from_store(store, cid).rebuild_planner(history, observations)
    # one slot: the trials ended in their number order, the clock notwithstanding
    assert [o.outputs["y"] for o in ingested] == [observations[t.id or 0]["y"] for t in history]
    store.close()


def test_a_batch_ends_in_its_trials_number_order(tmp_path: Path) -> None:
    """``tell --csv``: one transaction, one timestamp; each trial ends in its number order,
    as a CSV's rows were ordered before (by time, then number), whatever the CSV's order."""
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    cid = store.create_campaign("c", "name: c\n", "c.yaml", 0, lease=_claim("t"))
    rows = store.add_trials(
        cid, [store_module.NewTrial({"x": float(i)}, "sobol") for i in range(5)], token="t"
    )
    first, rest = rows[0], rows[1:]
    store.finish_trial(
        first.id or 0,
        status="completed",
        outputs={"y": 0.0},
        readbacks={},
        run_uid=None,
        error=None,
        token="t",
    )
    store.finish_trials(
        [TrialOutcome(t.id or 0, "completed", {"y": 1.0}, {}) for t in reversed(rest)],
        tokens={cid: "t"},
    )
    assert _ended(store, cid) == [(n, n) for n in range(1, 6)]
    store.close()


def test_prior_rows_end_first_in_their_number_order(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    prior = [({"x": float(i)}, {"y": float(i)}) for i in range(3)]
    cid = store.create_campaign("c", "name: c\n", "c.yaml", 0, lease=_claim("t"), prior=prior)
    trial = store.add_trial(cid, {"x": 9.0}, "sobol", token="t")
    store.finish_trial(
        trial.id or 0,
        status="failed",
        outputs={},
        readbacks={},
        run_uid=None,
        error="x",
        token="t",
    )
    assert _ended(store, cid) == [(1, 1), (2, 2), (3, 3), (4, 4)]
    store.close()


def _row(number: int, ended: int | None, minute: int | None, kind: str = "sobol") -> TrialRow:
    at = None if minute is None else datetime(2026, 12, 5, 8, minute, tzinfo=UTC)
    return TrialRow(
        campaign_id=1,
        number=number,
        kind=kind,
        status="completed",
        parameters={},
        ended=ended,
        finished_at=at,
    )


def test_the_order_is_the_sequence_and_rows_before_it_come_first() -> None:
    rows = [
        _row(1, None, 30),  # ended before the store was upgraded: by finished_at
        _row(2, None, 10),
        _row(3, 2, 0),  # numbered: by the sequence, an earlier clock notwithstanding
        _row(4, 1, 50),
        _row(5, None, None),  # told, not yet written: last, by number
        _row(6, None, 5, kind="prior"),  # prior data: first
    ]
    assert [t.number for t in _ended_order(rows)] == [6, 2, 1, 4, 3, 5]


# ---------------------------------------------------------------------------- concurrent ends
def _finish_concurrently(
    url: str, stores: int, each: int, token: str | None
) -> list[tuple[int, int | None]]:
    """``stores`` writers (own connections, as runners in other processes) finish ``each``
    trials of one campaign at once: under its lease (``token``), as closedloop's writers
    do, or without (a script's)."""
    setup = Store(url)
    cid = setup.create_campaign(f"c{uuid4().hex[:6]}", "x\n", "c.yaml", 0, lease=_claim("t"))
    ids = [
        setup.add_trial(cid, {"x": float(i)}, "sobol", token="t").id or 0
        for i in range(stores * each)
    ]
    writers = [Store(url) for _ in range(stores)]
    start = threading.Barrier(stores)
    errors: list[BaseException] = []

    def finish(store: Store, mine: list[int]) -> None:
        start.wait()
        try:
            for tid in mine:
                store.finish_trial(
                    tid,
                    status="completed",
                    outputs={"y": 1.0},
                    readbacks={},
                    run_uid=None,
                    error=None,
                    token=token,
                )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=finish, args=(w, ids[i::stores])) for i, w in enumerate(writers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    ended = _ended(setup, cid)
    for s in (setup, *writers):
        s.close()
    return ended


@pytest.mark.parametrize("token", ["t", None])
def test_writers_finishing_at_once_get_one_sequence_sqlite(
    tmp_path: Path, token: str | None
) -> None:
    ended = _finish_concurrently(f"sqlite:///{tmp_path / 's.db'}", 3, 10, token)
    assert sorted(e for _, e in ended) == list(range(1, 31))  # type: ignore[type-var]


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"t_{uuid4().hex[:12]}"
    yield postgres_server.create_database(name)
    postgres_server.drop_database(name)


@pytest.mark.parametrize("token", ["t", None])
def test_writers_finishing_at_once_get_one_sequence_postgres(
    pg_url: str, token: str | None
) -> None:
    ended = _finish_concurrently(pg_url, 3, 10, token)
    assert sorted(e for _, e in ended) == list(range(1, 31))  # type: ignore[type-var]


def test_a_clock_stepped_back_does_not_end_a_campaign_for_good_postgres(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(pg_url)
    _clock_steps_back_after(monkeypatch, 4)
    cid = Runner(_loaded(tmp_path), store).run().campaign_id or 0
    assert _ended(store, cid) == [(n, n) for n in range(1, 9)]
    assert Runner.from_store(store, cid, max_trials=12).resume().completed > 8
    store.close()


# ---------------------------------------------------------------------------- durations
@pytest.mark.parametrize(
    ("minutes", "form"),
    [(45, "45m"), (119, "119m"), (120, "2h"), (150, "2h30m"), (1440, "1d"), (1470, "1d30m")]
    + [(4380, "3d1h"), (4381, "3d1h1m")],
)
def test_a_duration_option_is_exact_and_readable(minutes: int, form: str) -> None:
    assert option_duration(minutes) == form
    assert parse_duration(form) == minutes * 60  # what `--max-duration` reads back


def test_a_campaign_out_of_time_says_so_in_days(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    loaded = _loaded(tmp_path, "{max_trials: 2, max_duration: 3d}")
    cid = Runner(loaded, store).run().campaign_id or 0
    three_days = 3 * 86400.0
    runner = Runner.from_store(store, cid, max_trials=4)
    spent = runner.spent(store.trials(cid), three_days)
    assert spent is not None and spent.rule == "max_duration"
    assert spent.reason == "max_duration reached (3 d)"
    assert spent.option == "--max-duration 3d1h"
    assert extension_hint("max_duration", completed=0, failed=0, elapsed=three_days + 60) == (
        "--max-duration 3d1h1m"
    )
    assert runner._abort_reason("max_duration", spent.reason) == (
        "max_duration reached (budget.max_duration = 3 d)"
    )
    # the stored running time spent: resume is refused with the option to give, in days
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE campaign SET elapsed_seconds = {three_days}")
    with pytest.raises(CampaignFinished, match=r"max_duration reached \(3 d\).*3d1h`$"):
        Runner.from_store(store, cid, max_trials=4).resume()
    # from Python the same extension is given in seconds (3 d 1 h)
    with pytest.raises(CampaignFinished, match=r"max_duration=262800\)"):
        Runner.from_store(store, cid, max_trials=4).refuse_if_finished(python=True)
    store.close()


def test_a_sessions_duration_override_reads_in_days(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    cid = Runner(_loaded(tmp_path, "{max_trials: 2}"), store).run().campaign_id or 0
    Runner.from_store(store, cid, max_trials=3, max_duration=3 * 86400.0).resume()
    text = session_line(store.sessions(cid)) or ""
    assert "(max_trials 3, max_duration 3 d)" in text, text
    assert "259200" not in text
    store.close()
