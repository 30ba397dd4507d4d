"""``closedloop plan FILE --dry-run``: the preview is the trial ``run`` (or, with ``--store``,
``resume``) measures next, refused exactly as the dispatcher refuses it.

Each test compares the preview with what the real command does: the first non-prior trial
of a run after prior data, the trial resume measures after a crash left trials running, the
dispatcher's own refusal of a choice on an instrument-file input.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from loop.cli import app
from loop.config import load_campaign
from loop.runner import Runner
from loop.store import Store
from tests.cli_process import closedloop

ROOT = Path(__file__).resolve().parents[2]
POINT = re.compile(r"next trial (?:#\d+ )?at x1=(\S+), x2=(\S+)")


def _plan(*args: str) -> Any:
    return CliRunner().invoke(app, ["plan", *args])


def _text(output: str) -> str:
    """An error box's text on one line (rich wraps it to the terminal's width)."""
    return " ".join(output.replace("│", " ").split())


def _point(output: str) -> tuple[float, float]:
    match = POINT.search(output)
    assert match is not None, output
    return float(match.group(1)), float(match.group(2))


def _same(preview: tuple[float, float], parameters: dict[str, Any]) -> None:
    assert preview == (
        pytest.approx(parameters["x1"], rel=1e-5, abs=1e-6),
        pytest.approx(parameters["x2"], rel=1e-5, abs=1e-6),
    )


# ---------------------------------------------------------------------------- prior data
PRIOR_CAMPAIGN = """\
name: prior-sobol
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives:
  - {name: y, goal: minimize}
prior_data: prior.csv
instrument: {simulator: branin}
planner: {kind: botorch, initial: {kind: sobol, n: 5}}
budget: {max_trials: 3}
seed: 5
"""
PRIOR_ROWS = "x1,x2,y\n0.0,0.0,55.602113\n5.0,5.0,26.622743\n"


def _first_run_trial(path: Path, tmp_path: Path) -> dict[str, Any]:
    store = Store(f"sqlite:///{tmp_path / 'run.db'}")
    try:
        summary = Runner(load_campaign(path), store, max_trials=1).run()
        trials = store.trials(summary.campaign_id)
    finally:
        store.close()
    assert any(t.kind == "prior" for t in trials)
    return next(dict(t.parameters) for t in trials if t.kind != "prior")


def test_plan_is_the_first_trial_run_measures_after_the_prior_data(tmp_path: Path) -> None:
    """The shipped example: its prior rows use up the design, so run's first trial is a
    model proposal; the preview ingested them the way run does."""
    path = ROOT / "campaigns" / "prior_data.yaml"
    out = _plan(str(path), "--dry-run")
    assert out.exit_code == 0, out.output
    assert "branin-prior (after 6 prior-data rows): next trial at" in out.output
    _same(_point(out.output), _first_run_trial(path, tmp_path))


def test_plan_continues_the_design_after_fewer_prior_rows(tmp_path: Path) -> None:
    """Two prior rows only shorten the Sobol design: the preview is its next point, not
    the design's first."""
    (tmp_path / "c.yaml").write_text(PRIOR_CAMPAIGN)
    (tmp_path / "prior.csv").write_text(PRIOR_ROWS)
    out = _plan(str(tmp_path / "c.yaml"), "--dry-run")
    assert out.exit_code == 0, out.output
    first = _first_run_trial(tmp_path / "c.yaml", tmp_path)
    _same(_point(out.output), first)
    # without the prior data the preview would be another point
    (tmp_path / "c.yaml").write_text(PRIOR_CAMPAIGN.replace("prior_data: prior.csv\n", ""))
    bare = _plan(str(tmp_path / "c.yaml"), "--dry-run")
    assert bare.exit_code == 0, bare.output
    assert _point(bare.output) != _point(out.output)


# ---------------------------------------------------------------------------- after a crash
CRASH_CAMPAIGN = """\
name: crashed
parameters:
  - {name: x1, type: float, bounds: [-5, 10]}
  - {name: x2, type: float, bounds: [0, 15]}
objectives:
  - {name: y, goal: minimize}
instrument: {simulator: branin}
planner: {kind: botorch, initial: {kind: sobol, n: 2}}
budget: {max_trials: 3}
seed: 3
"""


def _run_documents(uid: str, point: dict[str, float], y: float, stop: str | None) -> list[Any]:
    """A trial's stored documents; ``stop=None``: cut where a kill -9 cuts them."""
    docs: list[tuple[str, dict[str, Any]]] = [
        ("start", {"uid": uid, "campaign": "crashed"}),
        ("descriptor", {"uid": f"{uid}-d", "name": "primary", "run_start": uid}),
        ("event", {"uid": f"{uid}-e", "descriptor": f"{uid}-d", "data": {"y": y, **point}}),
    ]
    if stop is not None:
        docs.append(("stop", {"uid": f"{uid}-s", "exit_status": stop, "reason": ""}))
    return docs


def test_plan_store_after_a_crash_is_the_point_resume_measures(tmp_path: Path) -> None:
    """A kill -9 leaves two trials `running` with their documents: one whose run had closed
    (resume records it completed and learns its y), one cut mid-run (abandoned). The
    preview reconciles them as resume does instead of passing them to suggest as pending."""
    (tmp_path / "c.yaml").write_text(CRASH_CAMPAIGN)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = Store(url)
    try:
        cid = Runner(load_campaign(tmp_path / "c.yaml"), store).run().campaign_id
        # what the kill leaves: trial rows of a runner (slot 0), their documents so far
        for number, (point, y, stop) in enumerate(
            [({"x1": 3.1, "x2": 2.3}, 0.6, "success"), ({"x1": -2.0, "x2": 9.0}, 8.0, None)],
            start=4,
        ):
            trial = store.add_trial(cid, point, "model", slot=0)
            for seq, (name, body) in enumerate(_run_documents(f"r{number}", point, y, stop), 1):
                store.add_document(trial.id or 0, seq, name, body, f"r{number}")
        store.finish_campaign(cid, "running", "")
        before = [(t.number, t.status) for t in store.trials(cid)]

        out = _plan("--dry-run", "--store", url, "-c", str(cid))
        assert out.exit_code == 0, out.output
        assert "2 left running, reconciled as resume would: #4 completed, #5 abandoned" in (
            out.output
        )
        assert "next trial #6 at" in out.output
        assert [(t.number, t.status) for t in store.trials(cid)] == before  # nothing written

        Runner.from_store(store, cid, max_trials=5).resume()
        trials = store.trials(cid)
        assert [t.status for t in trials[3:5]] == ["completed", "abandoned"]
        assert trials[5].number == 6
        _same(_point(out.output), trials[5].parameters)
    finally:
        store.close()


class _StopAfter:
    """A listener that asks the runner to stop once ``n`` trials have ended."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.runner: Runner | None = None

    def trial_started(self, number: int, parameters: dict[str, Any]) -> None:
        pass

    def trial_finished(self, report: Any) -> None:
        if report.number >= self.n and self.runner is not None:
            self.runner.request_stop("the operator stopped it")


def _killed_after(tmp_path: Path, budget: str, trials: int, y: float) -> tuple[Store, str, int]:
    """A store as a kill leaves it after ``trials`` trials of CRASH_CAMPAIGN (its budget
    ``budget``), the next one `running` with its run closed, having read ``y``."""
    (tmp_path / "c.yaml").write_text(CRASH_CAMPAIGN.replace("max_trials: 3", budget))
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = Store(url)
    listener = _StopAfter(trials)
    runner = Runner(load_campaign(tmp_path / "c.yaml"), store, listener=listener)
    listener.runner = runner
    cid = runner.run().campaign_id or 0
    point = {"x1": 3.1, "x2": 2.3}
    trial = store.add_trial(cid, point, "model", slot=0)
    for seq, (name, body) in enumerate(_run_documents("r", point, y, "success"), 1):
        store.add_document(trial.id or 0, seq, name, body, "r")
    store.finish_campaign(cid, "running", "")
    return store, url, cid


def test_plan_store_weighs_the_budget_after_reconciling_a_crash(tmp_path: Path) -> None:
    """The budget's last trial, left running by a kill after its run closed: resume records
    it completed and stops at once. The preview weighed the stored rows (3 completed, one
    running) and said nothing of it (session 36's note, fixed in session 37)."""
    store, url, cid = _killed_after(tmp_path, "max_trials: 4", 3, 0.6)
    try:
        out = _plan("--dry-run", "--store", url, "-c", str(cid))
        assert out.exit_code == 0, out.output
        said = _text(out.output)
        assert "1 left running, reconciled as resume would: #4 completed" in said
        assert "`closedloop resume` would stop at once and measure no trial (max_trials" in said
        assert f"(`closedloop resume --store {url} -c {cid} --max-trials" in said

        Runner.from_store(store, cid).resume()  # as said: no new trial
        assert [t.status for t in store.trials(cid)] == ["completed"] * 4
    finally:
        store.close()


def test_plan_store_weighs_the_target_on_a_reconciled_trial_s_outputs(tmp_path: Path) -> None:
    """The trial left running read a value that meets the target: resume records it and
    stops at once; the preview weighed the stored outputs, which lack it (found in review)."""
    store, url, cid = _killed_after(tmp_path, "max_trials: 10, target: 0.45", 2, 0.4)
    try:
        done = [t for t in store.trials(cid) if t.status == "completed"]
        assert len(done) == 2 and all(store.trial_outputs(t.id or 0)["y"] > 0.45 for t in done)
        out = _plan("--dry-run", "--store", url, "-c", str(cid))
        assert out.exit_code == 0, out.output
        said = _text(out.output)
        assert "would stop at once and measure no trial (target reached: trial #3" in said, said
    finally:
        store.close()


def test_plan_store_on_a_campaign_being_run_keeps_its_trials_in_flight_pending(
    tmp_path: Path,
) -> None:
    """With a live runner, a `running` trial is being measured, not left by a crash: the
    preview called it abandoned ("reconciled as resume would"), which resume could not do."""
    from loop.lock import CampaignLease

    (tmp_path / "c.yaml").write_text(CRASH_CAMPAIGN)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = Store(url)
    lease = CampaignLease(store)
    try:
        cid = Runner(load_campaign(tmp_path / "c.yaml"), store).run().campaign_id
        trial = store.add_trial(cid, {"x1": -2.0, "x2": 9.0}, "model", slot=0)
        for seq, (name, body) in enumerate(_run_documents("r4", trial.parameters, 8.0, None), 1):
            store.add_document(trial.id or 0, seq, name, body, "r4")
        lease.acquire(cid)  # a live runner drives it
        out = _plan("--dry-run", "--store", url, "-c", str(cid))
        assert out.exit_code == 0, out.output
        assert "reconciled" not in out.output and "1 pending" in out.output, out.output
        assert "is being run right now" in out.output
    finally:
        lease.release()
        store.close()


def test_plan_store_keeps_suggestions_awaiting_tell_pending(tmp_path: Path) -> None:
    """A `closedloop suggest` trial (no slot, no documents) is not reconciled: only `tell`
    gives it an outcome, so the preview passes it to the planner as pending."""
    (tmp_path / "c.yaml").write_text(CRASH_CAMPAIGN)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = Store(url)
    try:
        cid = Runner(load_campaign(tmp_path / "c.yaml"), store).run().campaign_id
        store.add_trial(cid, {"x1": 3.1, "x2": 2.3}, "model")
    finally:
        store.close()
    out = _plan("--dry-run", "--store", url, "-c", str(cid))
    assert out.exit_code == 0, out.output
    assert "3 stored trials, 1 pending)" in out.output and "left running" not in out.output


# ---------------------------------------------------------------------------- seed
def test_plan_without_a_seed_says_run_draws_its_own(tmp_path: Path) -> None:
    text = (ROOT / "campaigns" / "branin.yaml").read_text()
    (tmp_path / "c.yaml").write_text(text.replace("seed: 1\n", ""))
    out = _plan(str(tmp_path / "c.yaml"), "--dry-run")
    assert out.exit_code == 0, out.output
    assert "no `seed:`" in out.output and "draws a random seed" in out.output
    assert "--seed N" in out.output
    seeded = _plan(str(tmp_path / "c.yaml"), "--dry-run", "--seed", "3")
    assert seeded.exit_code == 0, seeded.output
    assert "random seed" not in seeded.output
    given = _plan(str(tmp_path / "c.yaml"), "--dry-run", "--at", "x1=1", "--at", "x2=2")
    assert given.exit_code == 0 and "random seed" not in given.output  # no proposal


# ---------------------------------------------------------------------------- bad options
def test_plan_refuses_a_parameter_given_twice() -> None:
    branin = str(ROOT / "campaigns" / "branin.yaml")
    out = _plan(branin, "--dry-run", "--at", "x1=1", "--at", "x1=2", "--at", "x2=3")
    assert out.exit_code == 2
    assert "--at x1 is given twice (1 and 2)" in _text(out.output)


def test_plan_refuses_a_seed_with_a_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    Store(url).close()
    out = _plan("--dry-run", "--store", url, "--seed", "99")
    assert out.exit_code == 2
    text = _text(out.output)
    assert "'--seed'" in text and "stored seed" in text and "drop --seed with --store" in text


@pytest.mark.parametrize("named", [False, True], ids=["by-file", "by-id"])
def test_plan_store_with_a_missing_campaign_file_names_it(tmp_path: Path, named: bool) -> None:
    """With ``-c`` the file was read with no error handling: a traceback, 'please report it'."""
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = Store(url)
    try:
        Runner(load_campaign(ROOT / "campaigns" / "branin.yaml"), store).create()
    finally:
        store.close()
    missing = tmp_path / "gone.yaml"
    args = ["plan", str(missing), "--dry-run", "--store", url, *(["-c", "1"] if named else [])]
    out = closedloop(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    text = _text(out.stderr + out.stdout)
    assert "gone.yaml: no such file" in text and "report" not in text


# ---------------------------------------------------------------------------- instrument files
INSTRUMENT = """\
name: bench
inputs:
  temperature: {device: "ophyd:Signal", args: {value: 300.0}, device_units: K, limits: [20, 110]}
  solvent: {device: "ophyd:Signal", args: {value: water}}
outputs:
  quality: {device: "ophyd:Signal", args: {value: 0.5}}
"""
CAMPAIGN = """\
name: bench
parameters:
  - {name: temperature, type: float, bounds: [20, 110], unit: degC}
  - {name: solvent, type: choice, values: [water, ethanol, toluene]}
objectives:
  - {name: quality, goal: maximize}
instrument: {file: bench.yaml}
planner: {kind: sobol}
budget: {max_trials: 3}
seed: 7
"""


@pytest.fixture
def bench(tmp_path: Path) -> Path:
    (tmp_path / "bench.yaml").write_text(INSTRUMENT)
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    return tmp_path / "c.yaml"


def test_plan_refuses_a_choice_the_dispatcher_refuses(bench: Path) -> None:
    out = _plan(str(bench), "--dry-run", "--at", "temperature=40", "--at", "solvent=acetone")
    assert out.exit_code == 1, out.output
    assert (
        "refused before dispatch: solvent: setpoint 'acetone' is not one of its values "
        "('water', 'ethanol', 'toluene')"
    ) in out.output
    assert "open_run" not in out.output


def test_plan_shows_the_value_a_device_with_device_units_gets(bench: Path) -> None:
    out = _plan(str(bench), "--dry-run", "--at", "temperature=37.95", "--at", "solvent=ethanol")
    assert out.exit_code == 0, out.output
    assert re.search(r"set +temperature 37\.95 degC \(311\.1 K at the device\) group=", out.output)
    assert re.search(r"set +solvent ethanol group=", out.output)  # no conversion: as before
