"""Ask/tell and the budget rules: ``max_duration``, failures the operator marks, a withdrawn
initial-design point, and the messages of a results CSV.

Real SQLite stores; the commands run through typer's CliRunner as in ``test_asktell.py``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from loop.cli import app
from loop.failures import Failure, failure_kind, is_point_failure
from loop.runner import _what_to_check
from loop.store import CampaignRow, Store

CAMPAIGN = """\
name: at-rules
PRIOR
parameters:
  - {name: x, type: float, bounds: [0, 1], unit: mL}
  - {name: z, type: float, bounds: [0, 1]}
objectives:
  - {name: y, goal: maximize}
instrument: {manual: true, outputs: [y, c]}
planner: {kind: PLANNER, initial: {n: 4}}
budget: BUDGET
seed: 9
"""


def _file(
    tmp_path: Path, budget: str, planner: str = "sobol", prior: list[str] | None = None
) -> Path:
    text = CAMPAIGN.replace("BUDGET", budget).replace("PLANNER", planner)
    if prior:
        (tmp_path / "prior.csv").write_text("x,z,y,c\n" + "\n".join(prior) + "\n")
        text = text.replace("PRIOR", "prior_data: prior.csv")
    else:
        text = text.replace("PRIOR\n", "")
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _suggest(url: str, *args: str) -> list[dict[str, Any]]:
    out = _cli("suggest", "--store", url, "--json", *args)
    assert out.exit_code == 0, out.output
    trials: list[dict[str, Any]] = json.loads(out.stdout)["trials"]
    return trials


def _age(url: str, hours: float) -> None:
    """Make the store's campaign ``hours`` old, as if it had been created then."""
    store = Store(url, create=False)
    try:
        with store.engine.begin() as conn:
            conn.execute(
                update(CampaignRow)
                .where(CampaignRow.id == store.campaign().id)  # type: ignore[arg-type]
                .values(created_at=datetime.now(UTC) - timedelta(hours=hours))
            )
    finally:
        store.close()


def _campaign_row(url: str) -> CampaignRow:
    store = Store(url, create=False)
    try:
        return store.campaign()
    finally:
        store.close()


# ---------------------------------------------------------------------------- max_duration
def test_max_duration_ends_an_ask_tell_campaign_at_its_age(tmp_path: Path) -> None:
    """Judged by the runner's heartbeat time, which no ask/tell command writes, max_duration
    never ended an ask/tell campaign (found in review): its running time is its age."""
    url = f"sqlite:///{tmp_path / 'd.db'}"
    ids = [
        t["trial_id"] for t in _suggest(url, str(_file(tmp_path, "{max_duration: 2h}")), "-n", "2")
    ]
    told = _cli("tell", "--store", url, str(ids[0]), "y=0.1", "c=0.2")
    assert told.exit_code == 0 and "stopped: ask/tell: 1 trial(s) pending" in told.output
    _age(url, 3)  # three hours later
    told = _cli("tell", "--store", url, str(ids[1]), "y=0.2", "c=0.2")
    assert told.exit_code == 0, told.output
    row = _campaign_row(url)
    assert row.status == "completed" and (row.stop_reason or "").startswith("max_duration reached")
    refused = _cli("suggest", "--store", url)
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2 and "max_duration reached" in said and "--max-duration" in said
    # a larger budget is a new budget, kept by the commands after it
    more = _suggest(url, "--max-duration", "5h")
    assert len(more) == 1
    told = _cli("tell", "--store", url, str(more[0]["trial_id"]), "y=0.3", "c=0.2")
    assert told.exit_code == 0, told.output
    assert _campaign_row(url).status == "stopped"  # 3 h of 5: it goes on
    shown = " ".join(_cli("status", "--store", url).output.split())
    assert "budget ∞ trials, 5 h running time (3 h so far)" in shown  # the budget judged
    _age(url, 6)
    refused = _cli("suggest", "--store", url)
    assert refused.exit_code == 2 and "max_duration reached" in refused.output
    status = _cli("status", "--store", url)
    assert "completed: max_duration reached" in " ".join(status.output.split())


# ---------------------------------------------------------------------------- failures
def test_failures_the_operator_marks_are_their_own_kind(tmp_path: Path) -> None:
    """`tell --fail "y is not a number"` was counted as a missing output and the advice was to
    check the instrument (found in review)."""
    url = f"sqlite:///{tmp_path / 'f.db'}"
    file = _file(tmp_path, "{max_trials: 10, max_failures: 2}")
    ids = [t["trial_id"] for t in _suggest(url, str(file), "-n", "2")]
    assert _cli("tell", "--store", url, str(ids[0]), "--fail", "y is not a number").exit_code == 0
    last = _cli("tell", "--store", url, str(ids[1]), "--fail", "timed out after 3 h")
    said = " ".join(last.output.split())
    assert "2 trials failed (budget.max_failures = 2): 2 marked by the operator" in said
    assert "see the operator's reasons (`closedloop status` lists them)" in said
    assert "check the instrument" not in said
    status = " ".join(_cli("status", "--store", url).output.split())
    assert "failures: 2 marked by the operator" in status
    assert "[marked by the operator]: marked failed by the operator: y is not a number" in status


def test_failures_marked_at_the_prompt_are_the_operators_too(tmp_path: Path) -> None:
    from loop import Runner, load_campaign
    from loop.runner import ManualEntry

    class Failing:
        def measure(self, number: int, parameters: dict[str, Any]) -> ManualEntry:
            return ManualEntry(failed="y is not a number" if number == 1 else "skipped")

    file = _file(tmp_path, "{max_trials: 10, max_failures: 2}")
    store = Store(f"sqlite:///{tmp_path / 'm.db'}")
    summary = Runner(load_campaign(file), store, operator=Failing()).run()
    assert (summary.status, summary.failure_counts) == ("failed", {"marked by the operator": 2})
    assert summary.reason.endswith(
        "2 marked by the operator; see the operator's reasons (`closedloop status` lists them)"
    )


@pytest.mark.parametrize(
    ("error", "kind", "point"),
    [
        ("marked failed by the operator: y is not a number", "marked by the operator", False),
        ("marked failed by the operator: timed out after 3 h", "marked by the operator", False),
        ("marked failed by the operator: skipped by the operator", "marked by the operator", False),
        (
            "sim_det: trigger #1: function measure (model.py) could not finish on the Dask "
            "cluster: KilledWorker: Attempted to run task 'f-1' on 1 different workers, but "
            "all those workers died while running it",
            "worker lost",
            False,
        ),
        # the operator's prefix only counts at the start
        (
            "RuntimeError: marked failed by the operator: x; raised by function f (f.py, line 2) "
            "at x=1",
            "function raised RuntimeError",
            True,
        ),
    ],
)
def test_failure_kinds_of_the_operator_and_a_lost_worker(
    error: str, kind: str, point: bool
) -> None:
    assert failure_kind(error) == kind
    assert is_point_failure(error) is point


def test_what_to_check_follows_the_kinds() -> None:
    def advice(*kinds: str) -> str:
        return _what_to_check([Failure(i, k, "") for i, k in enumerate(kinds)])

    operator = "see the operator's reasons (`closedloop status` lists them)"
    assert advice("marked by the operator") == operator
    assert advice("marked by the operator", "timeout") == f"{operator}; check the instrument"
    assert advice("function raised ValueError").startswith("check the function")
    assert advice("marked by the operator", "wrong outputs").startswith(f"{operator}; check the f")
    assert advice("worker lost").startswith("check the Dask cluster")
    assert advice("worker lost", "timeout") == "check the instrument"


# ---------------------------------------------------------------------------- initial design
def test_a_withdrawn_design_point_is_replaced_while_a_model_point_is_pending(
    tmp_path: Path,
) -> None:
    """README: after `tell --abandon` "the initial design moves on to its next point"; with a
    model point pending the next suggestion was a model point (found in review)."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    file = _file(
        tmp_path,
        "{max_trials: 6, max_failures: 3}",
        planner="botorch",
        prior=["0.2,0.3,0.5,0.4", "0.7,0.6,0.2,0.9"],
    )
    batch = _suggest(url, str(file), "-n", "3")
    assert [t["kind"] for t in batch] == ["initial", "initial", "model"]
    assert _cli("tell", "--store", url, str(batch[0]["trial_id"]), "--abandon", "no").exit_code == 0
    (nxt,) = _suggest(url)
    assert nxt["kind"] == "initial"
    assert nxt["parameters"] not in [t["parameters"] for t in batch]


# ---------------------------------------------------------------------------- CSV messages
def test_tell_csv_names_the_row_and_the_column_of_every_refusal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    ids = [t["trial_id"] for t in _suggest(url, str(_file(tmp_path, "{max_trials: 9}")), "-n", "3")]
    assert _cli("tell", "--store", url, str(ids[0]), "y=0.1", "c=0.2").exit_code == 0
    cases = {
        "unknown": (
            f"trial_id,y,c\n{ids[1]},0.3,0.5\n999,0.3,0.5\n",
            "unknown.csv:3: no trial with id 999",
        ),
        "finished": (
            f"trial_id,y,c\n{ids[0]},0.3,0.5\n",
            f"finished.csv:2: trial {ids[0]} (#1) is already completed",
        ),
        "told again with a row added": (  # every recorded row named, not the first alone
            f"trial_id,y,c\n{ids[0]},0.3,0.5\n{ids[1]},0.3,0.5\n{ids[0]},0.3,0.5\n",
            f"2 row(s) tell trials already recorded otherwise (told again with a row "
            f"added.csv:2: trial {ids[0]} (#1) is already completed; its result is recorded "
            "once (`tell --amend REASON` corrects it); told again with a row added.csv:4: "
            f"trial {ids[0]} (#1) is already completed; its result is recorded once (`tell "
            "--amend REASON` corrects it)); remove them, or correct one with `tell TRIAL_ID "
            "... --amend REASON`, and tell the file again (its other 1 row(s) are fine)",
        ),
        "told again as it was, with a row added": (  # a row as recorded is passed over
            f"trial_id,y,c\n{ids[0]},0.1,0.2\n{ids[0]},0.1,0.25\n",
            "1 row(s) tell trials already recorded otherwise (told again as it was, with a row "
            "added.csv:3:",
        ),
        "outside": (
            f"trial_id,y,c,actual.x\n{ids[1]},0.3,0.5,1.5\n",
            "outside.csv:2: actual.x=1.5 lies outside the search space [0.0, 1.0]",
        ),
        "nosuch": (
            f"trial_id,y,c,actual.q\n{ids[1]},0.3,0.5,0.5\n",
            "nosuch.csv:2: actual.q: no such parameter; parameters are: x, z",
        ),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name}.csv"
        path.write_text(text)
        out = _cli("tell", "--store", url, "--csv", str(path))
        said = " ".join(out.output.split())
        assert out.exit_code == 2 and message in said, said
        assert "--actual" not in said and "--fail" not in said
    # the options keep their own names on the command line
    out = _cli("tell", "--store", url, str(ids[1]), "y=1", "c=1", "--actual", "x=1.5")
    assert "--actual x=1.5 lies outside" in " ".join(out.output.split())
