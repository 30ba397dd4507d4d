"""A retry the last session owed is the first trial ``resume`` runs.

Live, a transient failure is retried at once (``instrument.max_retries``). A session that
ended between recording such a failure and finishing its retry (a stop asked meanwhile, a
runner killed while the retry measured) had lost the retry: ``resume`` learned the point as
nothing and went on with new proposals. Real RunEngine, real SQLite, a ``function:``
instrument that fails each point's first call with an exception flagged transient.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest

from loop import Runner, Store, parse_campaign, trial_records
from loop.failures import OPERATOR_FAILED, transient_failure
from loop.report import to_csv
from loop.retries import attempts, owed_retries
from loop.runner import TrialReport, reconcile_documents
from loop.store import TrialRow
from simulators._keys import SAID_TRANSIENT
from tests.cli_process import run_cli

WIDE = {**os.environ, "COLUMNS": "200"}  # one line per message

CAMPAIGN = """
name: owed
parameters:
  - {name: x, type: float, bounds: [0, 1]}
objectives: [{name: y, goal: maximize}]
instrument: {function: flaky.py:measure, outputs: [y], max_retries: 2}
planner: {kind: sobol}
budget: {max_trials: 3}
seed: 1
"""

# Each point's first call fails (transient); with KILL_ON_RETRY, the process kills itself
# (SIGKILL) once, in the first retry's call: a runner killed while a retry measures; with
# INT_ON_RETRY it is interrupted there (SIGINT, the operator's Ctrl-C).
FLAKY = """
import json, os, signal, time
from pathlib import Path

HERE = Path(__file__).parent


class Stalled(RuntimeError):
    transient = True  # the instrument's fault, not the point's: retried


def measure(inputs):
    seen_file = HERE / "seen.json"
    seen = json.loads(seen_file.read_text()) if seen_file.exists() else []
    key = repr(round(inputs["x"], 12))
    if key not in seen:
        seen_file.write_text(json.dumps([*seen, key]))
        raise Stalled("the pump stalled")
    for name, sig in (("KILL_ON_RETRY", signal.SIGKILL), ("INT_ON_RETRY", signal.SIGINT)):
        if (HERE / name).exists():
            (HERE / name).unlink()
            os.kill(os.getpid(), sig)
            time.sleep(2)  # still measuring when the stop lands
    return {"y": inputs["x"]}
"""


def _campaign(tmp_path: Path) -> Path:
    (tmp_path / "flaky.py").write_text(FLAKY)
    path = tmp_path / "owed.yaml"
    path.write_text(CAMPAIGN)
    return path


def _starts(store: Store, cid: int) -> list[dict[str, Any]]:
    return [store.documents(t.id or 0)[0].body for t in store.trials(cid)]


class _StopAtFirstRetry:
    """A listener that asks the runner to stop as the first transient failure ends, so the
    session ends with that failure's retry owed."""

    def __init__(self) -> None:
        self.runner: Runner | None = None

    def trial_started(self, number: int, parameters: dict[str, Any]) -> None:
        pass

    def trial_finished(self, report: TrialReport) -> None:
        if report.will_retry and self.runner is not None:
            self.runner.request_stop("the operator stopped it")


def test_a_retry_owed_when_a_stop_ended_the_session_runs_first_on_resume(
    tmp_path: Path,
) -> None:
    path = _campaign(tmp_path)
    store = Store(f"sqlite:///{tmp_path / 'store.db'}")
    listener = _StopAtFirstRetry()
    runner = Runner(
        parse_campaign(path.read_text(), path=path, base_dir=tmp_path), store, listener=listener
    )
    listener.runner = runner
    first = runner.run()
    cid = first.campaign_id
    assert first.status == "stopped"
    (failed,) = store.trials(cid)
    assert (failed.status, failed.transient, failed.kind) == ("failed", True, "sobol")

    summary = Runner.from_store(store, cid).resume()
    trials = store.trials(cid)
    retry = trials[1]
    assert (retry.kind, retry.status, retry.parameters) == ("retry", "completed", failed.parameters)
    assert _starts(store, cid)[1]["retry_of"] == failed.id
    assert _starts(store, cid)[1]["attempt"] == 2
    assert summary.completed == 3
    # the retried point is measured once; each later point fails once and is retried
    assert [t.kind for t in trials] == ["sobol", "retry", "sobol", "retry", "sobol", "retry"]
    # an export says which attempt each trial is, and that the failures were transient:
    # a notebook matched retries by their floats (found in review)
    records = trial_records(store, cid)
    assert [(r["transient"], r["retry_of"], r["attempt"]) for r in records[:4]] == [
        (True, None, 1),
        (None, 1, 2),
        (True, None, 1),
        (None, 3, 2),
    ]
    cells = list(csv.DictReader(io.StringIO(to_csv(records))))[:2]
    assert [(c["transient"], c["retry_of"], c["attempt"]) for c in cells] == [
        ("true", "", "1"),
        ("", "1", "2"),
    ]


def test_a_retry_cut_off_by_a_kill_is_run_again_on_resume(tmp_path: Path) -> None:
    path = _campaign(tmp_path)
    (tmp_path / "KILL_ON_RETRY").touch()
    url = f"sqlite:///{tmp_path / 'store.db'}"
    killed = run_cli(["run", str(path), "--store", url], cwd=tmp_path)
    assert killed.returncode == -9, killed.stderr

    # `status` and `plan` say what resume measures next: the retry, not a new proposal
    said = _owed_note(1, f"closedloop resume --store {url} -c 1")
    assert said in run_cli(["status", "--store", url], cwd=tmp_path, env=WIDE).stdout
    owed = [{"trial": 2, "first_trial": 1, "cut_off": True}]  # left running: cut off
    assert _status_json(url, tmp_path)["owed_retries"] == owed
    # killed after its run aborted and before the row was updated: cut off all the same
    store = Store(url)
    retry = store.trials(1)[1]
    uid = _starts(store, 1)[1]["uid"]
    stop = {"uid": "stop-1", "run_start": uid, "exit_status": "abort", "reason": "killed"}
    store.add_document(retry.id or 0, 99, "stop", stop, uid)
    store.close()
    assert _status_json(url, tmp_path)["owed_retries"] == owed
    preview = run_cli(["plan", "--store", url, "--dry-run"], cwd=tmp_path)
    assert preview.returncode == 0, preview.stderr
    assert "next trial #3 (a retry of trial #1) at x=" in preview.stdout

    resumed = run_cli(["resume", "--store", url], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "trial    2  a retry of trial #1, cut off unmeasured: run again first" in resumed.stdout
    store = Store(url)
    (campaign,) = store.campaigns()
    cid = campaign.id or 0
    trials = store.trials(cid)
    assert [(t.kind, t.status) for t in trials[:3]] == [
        ("sobol", "failed"),
        ("retry", "abandoned"),  # in flight at the kill: reconciled unmeasured
        ("retry", "completed"),
    ]
    assert trials[0].parameters == trials[1].parameters == trials[2].parameters
    starts = _starts(store, cid)
    # the abandoned attempt never measured: the one that did is still attempt 2
    assert [(s.get("retry_of"), s.get("attempt")) for s in starts[:3]] == [
        (None, None),
        (trials[0].id, 2),
        (trials[0].id, 2),
    ]
    assert campaign.status == "completed"


def test_a_stop_during_a_retry_says_the_retry_is_owed(tmp_path: Path) -> None:
    """The live line had said "(transient: retrying)"; the summary of the stopped session
    now says the retry is put off to resume (review)."""
    path = _campaign(tmp_path)
    (tmp_path / "INT_ON_RETRY").touch()
    url = f"sqlite:///{tmp_path / 'store.db'}"
    stopped = run_cli(["run", str(path), "--store", url], cwd=tmp_path)
    # the function's "...says it is transient", then "(retrying)", not "transient" twice
    assert "says it is transient (retrying)" in stopped.stdout
    # the store and the campaign: pasted, a bare `closedloop resume` resumed the latest
    # unfinished campaign of the default store (review)
    said = _owed_note(1, f"closedloop resume --store {url} -c 1")
    assert said in stopped.stdout, stopped.stdout + stopped.stderr
    assert f"continue with `closedloop resume --store {url} -c 1`" in stopped.stderr
    # `status` says so too, for as long as it is owed
    assert said in run_cli(["status", "--store", url], cwd=tmp_path, env=WIDE).stdout
    owed = [{"trial": 2, "first_trial": 1, "cut_off": True}]  # the retry, cut off unmeasured
    assert _status_json(url, tmp_path)["owed_retries"] == owed
    resumed = run_cli(["resume", "--store", url], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "trial    2  a retry of trial #1, cut off unmeasured: run again first" in resumed.stdout
    assert OWED not in run_cli(["status", "--store", url], cwd=tmp_path, env=WIDE).stdout
    assert _status_json(url, tmp_path)["owed_retries"] == []


def test_a_campaign_its_failure_budget_ended_says_the_retry_it_owes(tmp_path: Path) -> None:
    """Its last trial's line said "retrying" and the budget ended the campaign first: the
    summary and ``status`` say the retry is owed, and a resume given a larger budget runs it
    first."""
    (tmp_path / "stalls.py").write_text(
        "class Stalled(RuntimeError):\n"
        "    transient = True\n\n\n"
        "def measure(inputs):\n"
        "    raise Stalled('the pump stalled')\n"
    )
    path = tmp_path / "owed.yaml"
    path.write_text(
        CAMPAIGN.replace("flaky.py", "stalls.py")
        .replace("max_retries: 2", "max_retries: 1")
        .replace("budget: {max_trials: 3}", "budget: {max_trials: 3, max_failures: 3}")
    )
    url = f"sqlite:///{tmp_path / 'store.db'}"
    failed = run_cli(["run", str(path), "--store", url], cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr
    # trials 1 and 2 are a point and its retry; trial 3's retry is owed
    # the option that extends the rule that ended it (ten more failures), and `-c`: a
    # finished campaign is resumed only by name
    said = _owed_note(3, f"closedloop resume --store {url} -c 1 --max-failures 13")
    assert said in failed.stdout, failed.stdout
    assert said in run_cli(["status", "--store", url], cwd=tmp_path, env=WIDE).stdout
    owed = [{"trial": 3, "first_trial": 3, "cut_off": False}]
    as_json = _status_json(url, tmp_path)
    assert as_json["owed_retries"] == owed
    # the failures by kind, as the text counts them (only the text had them; review)
    assert as_json["failures"] == {"function raised Stalled": 3}

    resumed = run_cli(["resume", "--store", url, "-c", "1", "--max-failures", "4"], cwd=tmp_path)
    assert "trial    3  its retry was owed when the last session ended: retried first" in (
        resumed.stdout
    )
    store = Store(url)
    trials = store.trials(store.campaigns()[0].id or 0)
    assert [t.kind for t in trials] == ["sobol", "retry", "sobol", "retry"]
    assert trials[3].parameters == trials[2].parameters


def test_a_campaign_that_met_its_target_owes_no_retry(tmp_path: Path) -> None:
    """Two slots: one's retry meets the target while the other's is still measuring, and is
    cut off. No resume goes on after a target (whatever the budget), so nothing is owed:
    neither the summary nor ``status`` may promise a retry (review)."""
    (tmp_path / "slow_retry.py").write_text(
        FLAKY.replace("return {", "time.sleep(2 * inputs['x'])\n    return {")
    )
    path = tmp_path / "owed.yaml"
    path.write_text(
        CAMPAIGN.replace("flaky.py", "slow_retry.py")
        .replace("max_retries: 2}", "max_retries: 2, count: 2}")
        .replace("budget: {max_trials: 3}", "budget: {max_trials: 10, target: 0}")
    )
    url = f"sqlite:///{tmp_path / 'store.db'}"
    done = run_cli(["run", str(path), "--store", url], cwd=tmp_path, env=WIDE)
    assert done.returncode == 0, done.stderr
    assert "target reached" in done.stdout
    store = Store(url)
    trials = store.trials(store.campaigns()[0].id or 0)
    assert ("retry", "abandoned") in [(t.kind, t.status) for t in trials]  # one cut off
    assert OWED not in done.stdout
    assert OWED not in run_cli(["status", "--store", url], cwd=tmp_path, env=WIDE).stdout
    assert _status_json(url, tmp_path)["owed_retries"] == []
    # killed at its end, the cut-off retry left running (its run never closed): resume
    # closes the campaign at once, and neither runs the retry nor calls it given up
    (cut,) = [t.id for t in trials if (t.kind, t.status) == ("retry", "abandoned")]
    with sqlite3.connect(tmp_path / "store.db") as db:
        db.execute("UPDATE campaign SET status = 'running'")
        db.execute("UPDATE trial SET status = 'running' WHERE id = ?", (cut,))
        db.execute("DELETE FROM document WHERE trial_id = ? AND name = 'stop'", (cut,))
    assert _status_json(url, tmp_path)["owed_retries"] == []
    resumed = run_cli(["resume", "--store", url], cwd=tmp_path, env=WIDE)
    assert resumed.returncode == 0, resumed.stderr
    assert "target reached" in resumed.stdout
    assert "first" not in resumed.stdout and "twice" not in resumed.stdout, resumed.stdout
    assert len(store.trials(1)) == len(trials)


OWED = "owed to the point"


def _owed_note(first: int, command: str) -> str:
    return f"a retry is owed to the point of trial #{first}: `{command}` runs it first"


def _status_json(url: str, cwd: Path) -> dict[str, Any]:
    done = run_cli(["status", "--store", url, "--json"], cwd=cwd)
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


# ------------------------------------------------ which stored attempts owe a retry (rules)
def _row(number: int, kind: str, status: str, x: float, transient: bool | None = None) -> TrialRow:
    """A runner's stored trial (a slot and a run: not ask/tell's)."""
    return TrialRow(
        id=number,
        campaign_id=1,
        number=number,
        kind=kind,
        status=status,
        parameters={"x": x},
        transient=transient,
        slot=0,
        run_uid=f"run-{number}",
        error="boom",
    )


def _owed(
    history: list[TrialRow],
    max_retries: int = 2,
    links: dict[int, tuple[int, int]] | None = None,
) -> dict[int, tuple[int, int] | None]:
    """Owed retries by the trial id they re-measure, each as ``(retry_of, attempt)``;
    ``links``: the retries' start documents' (by default, as the runner would have written
    them: :func:`_links`)."""
    links = _links(history) if links is None else links
    owed = owed_retries(history, max_retries, links)
    return {tid: (r.first, r.attempt) for tid, r in owed.items()}


def _links(history: list[TrialRow]) -> dict[int, tuple[int, int]]:
    """What each retry's start document says, for histories where the parameters tell
    (tests below give ``links`` themselves where they must not)."""
    return {}


def test_a_retry_is_owed_after_a_transient_failure_within_max_retries() -> None:
    assert _owed([_row(1, "sobol", "failed", 0.5, transient=True)]) == {1: (1, 2)}
    chain = [_row(1, "sobol", "failed", 0.5, True), _row(2, "retry", "failed", 0.5, True)]
    assert _owed(chain) == {2: (1, 3)}
    assert _owed(chain, max_retries=1) == {}  # attempt 2 was the last
    assert _owed([_row(1, "sobol", "failed", 0.5, transient=False)]) == {}


def test_a_deterministic_failure_at_the_same_point_does_not_take_a_retry() -> None:
    """A discrete space repeats points: a later transient failure's retry was matched to an
    earlier deterministic failure there, and resume ran the retry a second time (review)."""
    history = [
        _row(1, "random", "failed", 1.0, transient=False),
        _row(2, "random", "completed", 0.0),
        _row(3, "random", "failed", 1.0, transient=True),
        _row(4, "retry", "completed", 1.0),
    ]
    assert _owed(history) == {}
    assert attempts(history, {}, 2)[0] == {2}  # the transient failure, not the deterministic one


def test_a_retry_follows_the_attempt_its_start_document_names() -> None:
    """Matched by its parameters, a retry took the earliest open attempt at its point: a
    told transient failure (ask/tell), or a retry cut off twice and given up, and the
    attempt it did re-measure then looked unretried, so resume ran it again (review)."""
    told = _row(1, "random", "failed", 1.0, transient=True)
    told.slot, told.run_uid = None, None  # ask/tell's: no slot, no run, the operator's word
    told.error = OPERATOR_FAILED + "tip clogged"
    history = [
        told,
        _row(2, "random", "failed", 1.0, transient=True),
        _row(3, "retry", "completed", 1.0),
    ]
    assert _owed(history, links={3: (2, 2)}) == {}
    assert attempts(history, {3: (2, 2)}, 2)[0] == {1}
    # without its start document (a run that never started), never matched to a told one
    assert _owed(history, links={}) == {}

    given_up = [
        _row(1, "sobol", "failed", 1.0, True),
        _row(2, "retry", "abandoned", 1.0),
        _row(3, "retry", "abandoned", 1.0),  # cut off twice: given up
        _row(4, "sobol", "failed", 1.0, True),  # the point proposed again, failed, retried
        _row(5, "retry", "completed", 1.0),
    ]
    links = {2: (1, 2), 3: (1, 2), 5: (4, 2)}
    assert _owed(given_up, links=links) == {}


def test_a_retry_cut_off_once_is_run_again_later_in_its_chain_too() -> None:
    """The count of cut-off retries ran over the whole chain: attempt 2, cut off once and
    run again, made attempt 3, cut off once, be given up (review)."""
    history = [
        _row(1, "sobol", "failed", 0.5, True),
        _row(2, "retry", "abandoned", 0.5),
        _row(3, "retry", "failed", 0.5, True),
        _row(4, "retry", "abandoned", 0.5),
    ]
    links = {2: (1, 2), 3: (1, 2), 4: (1, 3)}
    assert _owed(history, max_retries=2, links=links) == {4: (1, 3)}


def test_a_retry_cut_off_is_owed_once_not_on_every_resume() -> None:
    """A retry that kills its runner (a segfault, the OOM killer) started every resume and
    killed it again, without end (found in review)."""
    first = [_row(1, "sobol", "failed", 0.5, True), _row(2, "retry", "abandoned", 0.5)]
    assert _owed(first) == {2: (1, 2)}  # run again, as the same attempt
    again = [*first, _row(3, "retry", "abandoned", 0.5)]
    assert _owed(again) == {}


def test_a_row_without_the_transient_flag_owes_nothing() -> None:
    """A store written before the flag existed retried by its own rules then; its failures
    read as transient today (a readback outside the bounds) are not owed retries (review)."""
    error = "readback x = 2 lies outside the campaign's bounds [0, 1] for it"
    row = _row(1, "sobol", "failed", 0.5, transient=None)
    row.error = error
    assert _owed([row]) == {}


def test_a_function_s_transient_word_survives_in_its_stored_error() -> None:
    """A crash between the run's end and the store write leaves only the error text for
    resume to reconcile from (review)."""
    said = "Stalled: the pump stalled; raised by function measure (f.py, line 3) at x=0.5"
    assert transient_failure(said + SAID_TRANSIENT)
    assert not transient_failure(said)
    assert not transient_failure("ValueError: it says " + SAID_TRANSIENT)  # not a raise


def test_plan_and_resume_read_a_crashed_trial_s_transience_alike() -> None:
    """``plan --store`` previewed a trial a crash left running without its transient flag,
    so it showed a new proposal where resume ran the owed retry (review)."""
    error = "Stalled: the pump stalled; raised by function measure (f.py, line 3) at x=0.5"
    docs: list[tuple[str, dict[str, Any]]] = [
        ("start", {"uid": "r", "campaign": "owed", "trial_id": 1}),
        ("stop", {"uid": "s", "run_start": "r", "exit_status": "fail", "reason": error}),
    ]
    said = reconcile_documents(
        [(n, {**b, "reason": error + SAID_TRANSIENT} if n == "stop" else b) for n, b in docs],
        outputs=["y"],
        needed=None,
        inputs=["x"],
    )
    assert (said.status, said.transient) == ("failed", True)
    plain = reconcile_documents(docs, outputs=["y"], needed=None, inputs=["x"])
    assert (plain.status, plain.transient) == ("failed", False)


def test_a_retry_whose_run_never_started_joins_a_chain_it_could_follow() -> None:
    """With no start document, it was matched to the earliest chain at its point, one that
    had used up max_retries: resume ran a retry past max_retries and the owed one too
    (review)."""
    history = [
        _row(1, "random", "failed", 1.0, True),
        _row(2, "retry", "failed", 1.0, True),  # attempt 2 of 2 (max_retries 1): used up
        _row(3, "random", "failed", 1.0, True),
        _row(4, "retry", "abandoned", 1.0),  # killed before its run started: no link
    ]
    assert _owed(history, max_retries=1, links={2: (1, 2)}) == {4: (3, 2)}
    # two slots at one point: #2's retry #3 was mid-run when #1 failed and its retry #4 was
    # made, then the runner was killed before #4's run started: #4 follows #1, not #3
    # (chosen by the newest row, #3's retry was given up as "cut off twice"; review)
    both = [
        _row(1, "random", "failed", 1.0, True),
        _row(2, "random", "failed", 1.0, True),
        _row(3, "retry", "abandoned", 1.0),
        _row(4, "retry", "abandoned", 1.0),
    ]
    assert _owed(both, links={3: (2, 2)}) == {3: (2, 2), 4: (1, 2)}


def test_plan_store_reads_the_owed_retries_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`plan --store` asked for the owed retries once per stored trial: 3 minutes on a
    store of 2290 trials (review)."""
    calls: list[int] = []
    original = Runner.owed_retries

    def counted(self: Runner, history: Any) -> Any:
        calls.append(len(history))
        return original(self, history)

    monkeypatch.setattr(Runner, "owed_retries", counted)
    path = _campaign(Path(tempfile.mkdtemp()))
    store = Store(f"sqlite:///{path.parent / 'store.db'}")
    text = path.read_text().replace("max_trials: 3", "max_trials: 4")
    path.write_text(text)
    Runner(parse_campaign(text, path=path, base_dir=path.parent), store).run()
    from loop.cli_instruments import _stored_point

    _stored_point(store, store.url, None, None, [])
    assert len(calls) == 1, calls
