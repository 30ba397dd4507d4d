"""A retry the last session owed is the first trial ``resume`` runs.

Live, a transient failure is retried at once (``instrument.max_retries``). A session that
ended between recording such a failure and finishing its retry (a stop asked meanwhile, a
runner killed while the retry measured) had lost the retry: ``resume`` learned the point as
nothing and went on with new proposals. Real RunEngine, real SQLite, a ``function:``
instrument that fails each point's first call with an exception flagged transient.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loop import Runner, Store, parse_campaign
from loop.runner import TrialReport
from tests.cli_process import run_cli

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
# (SIGKILL) once, in the first retry's call: a runner killed while a retry measures.
FLAKY = """
import json, os, signal
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
    if (HERE / "KILL_ON_RETRY").exists():
        (HERE / "KILL_ON_RETRY").unlink()
        os.kill(os.getpid(), signal.SIGKILL)
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


def test_a_retry_cut_off_by_a_kill_is_run_again_on_resume(tmp_path: Path) -> None:
    path = _campaign(tmp_path)
    (tmp_path / "KILL_ON_RETRY").touch()
    url = f"sqlite:///{tmp_path / 'store.db'}"
    killed = run_cli(["run", str(path), "--store", url], cwd=tmp_path)
    assert killed.returncode == -9, killed.stderr

    # `plan` previews what resume measures next: the retry, not a new proposal
    preview = run_cli(["plan", "--store", url, "--dry-run"], cwd=tmp_path)
    assert preview.returncode == 0, preview.stderr
    assert "next trial #3 (the retry owed to trial #2) at x=" in preview.stdout

    resumed = run_cli(["resume", "--store", url], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "trial    2  owed a retry when the last session ended" in resumed.stdout
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
