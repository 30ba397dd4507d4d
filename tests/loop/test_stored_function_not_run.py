"""A stored campaign is data: the commands that only read it never run its function file,
and ``suggest`` hands out no point the instrument file's limits forbid.

Found in review (security, session 18): a store whose campaign names ``function:
/elsewhere/evil.py:measure`` had that file's top-level code run by ``suggest``, ``plan
--dry-run --store`` and a ``resume`` that then refused ("is completed"): reading a stored
campaign back re-checked its instrument, and the check imported the function. Only what
measures imports it now (``resume`` going on, after every refusal); a ``function:``
campaign's outputs are its own ``outputs:``.

Found in review too: ``suggest`` handed out ``x = 3.25`` for an input whose instrument file
says ``limits: [0, 1]``, a point ``run`` never sends (its trial fails "outside the hardware
limits"). ``suggest`` records it as ``run`` does (failed, the same error), warns, and hands
out only the others.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from loop import Runner, Store
from loop.config import StoredCampaignError, load_campaign
from loop.errors import CampaignConfigError
from loop.failures import failure_kind
from loop.lock import CampaignLease
from tests.cli_process import closedloop

# The function file says when its top-level code runs: one line in IMPORTED beside it.
MODEL = """\
from pathlib import Path

with open(Path(__file__).with_name("IMPORTED"), "a") as marker:
    marker.write("imported\\n")


def measure(inputs):
    return {"y": inputs["x"] ** 2}
"""

CAMPAIGN = """\
name: fn
parameters:
  - {name: x, type: float, bounds: [0, 1]}
objectives:
  - {name: y, goal: maximize}
instrument: {function: "model.py:measure", outputs: [y]}
planner: {kind: random}
budget: {max_trials: 2}
seed: 1
"""


def _imports(folder: Path) -> int:
    """How many times the function file's top-level code has run (and forget them)."""
    marker = folder / "IMPORTED"
    if not marker.exists():
        return 0
    count = len(marker.read_text().splitlines())
    marker.unlink()
    return count


@pytest.fixture(scope="module")
def completed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A function campaign `run` completed (2 of 2 trials): its folder and store URL."""
    folder = tmp_path_factory.mktemp("stored_function")
    (folder / "model.py").write_text(MODEL)
    (folder / "c.yaml").write_text(CAMPAIGN)
    url = f"sqlite:///{folder / 's.db'}"
    result = closedloop("run", "c.yaml", "--store", url, "-q", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert _imports(folder) == 1  # `run` measures: it imports the file, once
    yield folder, url


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("status", "--json"),
        ("export", "-c", "1"),
        ("campaigns",),
        ("plan", "--dry-run", "-c", "1"),
    ],
    ids=["status", "status-json", "export", "campaigns", "plan-dry-run"],
)
def test_commands_that_read_a_stored_campaign_never_import_its_function(
    completed: tuple[Path, str], args: tuple[str, ...]
) -> None:
    folder, url = completed
    result = closedloop(*args, "--store", url, cwd=folder)
    assert result.returncode == 0, result.stderr
    assert _imports(folder) == 0, args


def test_resume_that_refuses_never_imports_the_function(completed: tuple[Path, str]) -> None:
    """A finished campaign without a larger budget, and one another process holds: refused
    before the file is imported."""
    folder, url = completed
    result = closedloop("resume", "--store", url, "-c", "1", cwd=folder)
    assert result.returncode == 2, result.stderr
    assert "is completed" in result.stderr
    assert _imports(folder) == 0
    store = Store(url, create=False)
    try:
        with CampaignLease(store) as holder:  # alive, on this host: a runner driving it
            holder.acquire(1)
            result = closedloop(
                "resume", "--store", url, "-c", "1", "--max-trials", "3", cwd=folder
            )
        assert result.returncode == 75, result.stderr
        assert _imports(folder) == 0
        assert store.campaign(1).status == "completed"
    finally:
        store.close()


def test_suggest_and_tell_never_import_and_resume_that_measures_does(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert closedloop("run", "c.yaml", "--store", url, "-q", cwd=tmp_path).returncode == 0
    assert _imports(tmp_path) == 1

    asked = closedloop(
        "suggest", "--store", url, "-c", "1", "--max-trials", "3", "--json", cwd=tmp_path
    )
    assert asked.returncode == 0, asked.stderr
    (trial,) = json.loads(asked.stdout)["trials"]
    assert _imports(tmp_path) == 0
    told = closedloop("tell", "--store", url, str(trial["trial_id"]), "y=0.5", cwd=tmp_path)
    assert told.returncode == 0, told.stderr
    assert _imports(tmp_path) == 0

    # resume with budget left measures: the file is run, once, and the campaign goes on
    result = closedloop(
        "resume", "--store", url, "-c", "1", "--max-trials", "4", "-q", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert _imports(tmp_path) == 1
    store = Store(url, create=False)
    try:
        assert sum(t.status == "completed" for t in store.trials(1)) == 4
    finally:
        store.close()


def test_a_function_that_no_longer_imports_is_refused_by_resume_untouched(
    tmp_path: Path,
) -> None:
    """Reading the campaign back no longer finds the problem (it imports nothing); ``resume``
    does, before the campaign is reopened, as a refusal naming the store's copy. Its way on
    is the function's file, which is read as it is now (not a new campaign, as it said)."""
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        cid = Runner(load_campaign(tmp_path / "c.yaml"), store).run().campaign_id
        (tmp_path / "model.py").write_text("raise RuntimeError('broken since')\n")
        runner = Runner.from_store(store, cid, max_trials=4)  # reads it: imports nothing
        with pytest.raises(StoredCampaignError) as info:
            runner.resume()
        message = " ".join(str(info.value).split())
        assert "running 'model.py' failed at line 1: RuntimeError: broken since" in message, message
        assert "as stored" in message, message
        assert "restore or fix that file, then run the command again" in message, message
        row = store.campaign(cid)
        assert (row.status, len(store.trials(cid))) == ("completed", 2)
        assert store.lease(cid) is None
    finally:
        store.close()


# ---------------------------------------------------------------------------- limits
BENCH = """\
name: bench
inputs:
  x: {{device: "ophyd:Signal", args: {{value: 0.5}}, limits: {limits}}}
outputs:
  y: {{device: "ophyd:Signal", args: {{value: 0.5}}}}
"""

LIMITED = """\
name: limited
parameters:
  - {name: x, type: float, bounds: [0, 4]}
objectives:
  - {name: y, goal: maximize}
instrument: {file: bench.yaml}
planner: {kind: sobol}
budget: {max_trials: 5, max_failures: 10}
seed: 4
"""


def _errors(url: str) -> dict[int, tuple[str, str | None]]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        rows = db.execute("SELECT number, status, error FROM trial ORDER BY number").fetchall()
    return {number: (status, error) for number, status, error in rows}


def test_suggest_hands_out_no_point_outside_the_limits(tmp_path: Path) -> None:
    """The first Sobol points of seed 4 are x = 3.25, 0.72, 1.03: `run` sends only 0.72 and
    fails the others "outside the hardware limits"; `suggest` records them as `run` does
    (the same error, so the planner learns them alike) and hands out 0.72 alone."""
    (tmp_path / "bench.yaml").write_text(BENCH.format(limits="[0, 1]"))
    (tmp_path / "c.yaml").write_text(LIMITED)
    url = f"sqlite:///{tmp_path / 'asked.db'}"
    asked = closedloop("suggest", "c.yaml", "--store", url, "-n", "3", "--json", cwd=tmp_path)
    assert asked.returncode == 0, asked.stderr
    handed = json.loads(asked.stdout)["trials"]
    assert [t["number"] for t in handed] == [2]
    assert all(0 <= t["parameters"]["x"] <= 1 for t in handed)
    said = " ".join(asked.stderr.split())
    assert "parameter 'x' has bounds [0, 4] reaching outside its input's limits [0, 1]" in said
    assert "trial 1 (#1) at x=3.250902 is not suggested: x: setpoint 3.2509 is outside the " in said
    assert "hardware limits [0, 1]. Recorded as failed" in said

    run_url = f"sqlite:///{tmp_path / 'run.db'}"
    ran = closedloop("run", "c.yaml", "--store", run_url, "-q", cwd=tmp_path)
    assert ran.returncode == 1, ran.stderr  # 10 refusals end it: max_failures
    suggested, measured = _errors(url), _errors(run_url)
    assert suggested[2] == ("running", None)
    for number in (1, 3):  # recorded as the runner records its refusal, word for word
        assert suggested[number] == measured[number], number
        assert suggested[number][0] == "failed"
        assert failure_kind(suggested[number][1]) == "setpoint refused"


def test_suggest_keeps_to_limits_tightened_on_disk(tmp_path: Path) -> None:
    """A stored campaign's limits are the stricter of the stored and the disk's
    (``declared_spec``), for ``suggest`` as for ``resume``."""
    from loop.asktell import Refused, open_campaign, suggest

    (tmp_path / "bench.yaml").write_text(BENCH.format(limits="[0, 4]"))
    (tmp_path / "c.yaml").write_text(LIMITED)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    try:
        runner, _ = open_campaign(store, load_campaign(tmp_path / "c.yaml"), None)
        (first,) = suggest(runner, 1)
        assert first.parameters["x"] > 3  # within [0, 4]: handed out
        (tmp_path / "bench.yaml").write_text(BENCH.format(limits="[0, 1]"))
        runner, _ = open_campaign(store, None, "limited")
        refused: list[Refused] = []
        handed = suggest(runner, 2, refused=refused)
        assert [p.number for p in handed] == [2]
        assert [(r.number, r.reason) for r in refused] == [
            (3, "x: setpoint 1.02787 is outside the hardware limits [0, 1]")
        ]
        assert store.trials(runner.campaign_id or 0)[2].status == "failed"
    finally:
        store.close()


def test_suggest_says_on_stdout_what_was_refused_and_when_nothing_is_left_to_run(
    tmp_path: Path,
) -> None:
    """Found in review: with every proposal refused, stdout said "run these, then
    `closedloop tell`" over an empty table (exit 0), and not that the refusals had ended
    the campaign (max_failures)."""
    (tmp_path / "bench.yaml").write_text(BENCH.format(limits="[0, 1]"))
    (tmp_path / "c.yaml").write_text(LIMITED)
    url = f"sqlite:///{tmp_path / 'some.db'}"
    some = closedloop("suggest", "c.yaml", "--store", url, "-n", "3", cwd=tmp_path, wide=True)
    assert some.returncode == 0, some.stderr
    said = " ".join(some.stdout.split())
    assert (
        "2 of 3 refused by the instrument's limits (recorded as failed: trial ids 1, 3; the "
        "warnings say why), not to be run"
    ) in said
    assert "limited (id 1): run these, then `closedloop tell`" in said
    assert "│ 2 │ 2 │ sobol │ 0.721995 │" in said  # the one to run
    assert "is now" not in said and "nothing to run" not in said

    (tmp_path / "bench.yaml").write_text(BENCH.format(limits="[0, 0.01]"))
    (tmp_path / "c.yaml").write_text(LIMITED.replace("max_failures: 10", "max_failures: 1"))
    url = f"sqlite:///{tmp_path / 'none.db'}"
    none = closedloop("suggest", "c.yaml", "--store", url, "-n", "2", cwd=tmp_path, wide=True)
    assert none.returncode == 0, none.stderr
    said = " ".join(none.stdout.split())
    assert "2 of 2 refused by the instrument's limits (recorded as failed: trial ids 1, 2" in said
    assert "limited (id 1): nothing to run" in said
    assert "run these" not in said and "trial_id" not in said and "record a result" not in said
    assert (
        "campaign 'limited' (id 1) is now failed: 2 trials failed (budget.max_failures = 1)"
    ) in said
    assert "proposes more" not in said  # a failed campaign proposes none


@pytest.mark.parametrize(
    ("edit", "line", "refusal"),
    [
        pytest.param(
            ("limits: [0, 4]", "limits: [5, 8]"),
            3,
            "inputs.x: limits [5, 8] on disk (line 3) and [0, 4] stored (line 3 of the stored "
            "copy) leave no range both allow",
            id="limits-that-do-not-overlap",
        ),
        pytest.param(
            ("limits: [0, 4]", "limts: [0, 2]"),
            3,
            "unknown key 'limts' in inputs.x (the instrument file on disk, changed since the "
            "campaign started",
            id="no-valid-file",
        ),
        pytest.param(
            ("units: m}", "units: mm}"),
            3,
            "inputs.x: units 'mm' on disk (line 3), 'm' stored (line 3 of the stored copy)",
            id="other-units",
        ),
    ],
)
def test_suggest_refuses_a_campaign_resume_refuses_before_storing_anything(
    tmp_path: Path, edit: tuple[str, str], line: int, refusal: str
) -> None:
    """Found in review: the file on disk no longer allowed the stored limits (or was no
    valid instrument file, or gave the input another unit); ``resume`` refused, exit 2, but
    ``suggest`` warned and handed out three points within the stored limits. It refuses
    now, with ``resume``'s message, before a trial or the campaign's state is stored."""
    from loop.asktell import open_campaign

    bench = tmp_path / "bench.yaml"
    bench.write_text(BENCH.format(limits="[0, 4], units: m"))
    (tmp_path / "c.yaml").write_text(LIMITED)
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(url)
    try:
        runner, created = open_campaign(store, load_campaign(tmp_path / "c.yaml"), None)
        assert created
        before = store.campaign(runner.campaign_id)
    finally:
        store.close()
    text = bench.read_text()
    assert edit[0] in text
    bench.write_text(text.replace(edit[0], edit[1]))

    asked = closedloop("suggest", "--store", url, "-c", "1", "-n", "3", "--json", cwd=tmp_path)
    assert asked.returncode == 2, asked.stderr
    assert asked.stdout == ""
    said = " ".join(asked.stderr.split())
    assert f"error: {bench}:{line}: campaign 'limited' (id 1) in {url}, as stored: " in said
    assert refusal in said, said
    assert "Traceback" not in said
    store = Store(url, create=False)
    try:
        assert store.trials(1) == []  # nothing proposed, nothing stored
        after = store.campaign(1)
        assert (after.status, after.stop_reason) == (before.status, before.stop_reason)
        with pytest.raises(CampaignConfigError) as resumed:
            Runner.from_store(store, 1).resume()
    finally:
        store.close()
    # the same refusal as resume's, word for word
    assert f"error: {' '.join(str(resumed.value).split())}" in said
