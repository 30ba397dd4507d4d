"""The seam between a planner and the engine: what any planner returns is checked before it is
stored or sent to an instrument; the pace of the slots does not depend on what a planner
calls its proposals; a rebuilt planner ingests the trials in the order the live one did.

A planner here is a small in-test class put where ``make_planner`` is (as a plugin planner,
``planner: {plugin: ...}``, is built), driving a real Runner, RunEngines and SQLite store.
Found in review by a researcher plugging in their own planner: a proposal breaking the
campaign's ``constraints:`` was measured; too few points spun the loop (3520 suggests in
3 s); a label other than ``model`` kept proposals queued for every slot; a rebuilt planner
ingested by trial number what the live one had ingested in the order trials ended; a plugin
whose ``suggest`` or ``ingest`` raised aborted the trials in flight and asked to report a bug
of closedloop's.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

import loop.runner as runner_module
from loop import Runner, Store, parse_campaign
from loop.scheduler import (
    DESIGN_KINDS,
    ENGINE_KINDS,
    Job,
    PlannerError,
    PluginRaised,
    Proposal,
    Proposed,
    Scheduler,
    Slot,
    SlotDone,
    call_planner,
    planner_name,
)
from planners import InfeasibleSpaceError, Observation, Point, RandomPlanner, Space
from planners._constraints import _RTOL

CAMPAIGN = """\
name: seam
parameters:
  - {name: x, type: float, bounds: [-1, 1]}
  - {name: y, type: float, bounds: [-1, 1]}
  - {name: n, type: int, bounds: [1, 4]}
  - {name: cat, type: choice, values: [a, b, c]}
constraints: ["x + y <= 0.5"]
objectives: [{name: f, goal: minimize}]
instrument: {function: "measure.py:measure", outputs: [f], latency: 0, count: COUNT}
planner: {kind: random}
budget: {max_trials: TRIALS, max_failures: 3}
seed: 3
"""

# n = 4 is slow: with two slots, a trial at n = 4 ends after the one started with it
MEASURE = """\
import time

def measure(inputs):
    time.sleep(0.4 if inputs["n"] == 4 else 0.0)
    return {"f": (inputs["x"] - 0.3) ** 2 + (inputs["y"] + 0.2) ** 2 + 0.01 * inputs["n"]}
"""


def _campaign(tmp_path: Path, *, count: int = 1, trials: int = 8) -> Any:
    (tmp_path / "measure.py").write_text(MEASURE)
    text = CAMPAIGN.replace("COUNT", str(count)).replace("TRIALS", str(trials))
    path = tmp_path / "seam.yaml"
    path.write_text(text)
    return parse_campaign(text, path=path, base_dir=tmp_path)


def _store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'seam.db'}")


Mutate = Callable[["Plugin", list[Point]], list[Point]]


class Plugin:
    """A user's planner: random points (inside the space), labelled ``local``, with a hook
    that changes what ``suggest`` returns; it records what it ingests, in order."""

    def __init__(self, space: Space, seed: int, mutate: Mutate | None = None) -> None:
        self.design = RandomPlanner(space, seed)
        self.mutate = mutate
        self.ingested: list[Point] = []
        self.suggests = 0
        self.pending: list[int] = []  # how many points were pending at each suggest
        self.last_kinds: list[str] = []

    def ingest(self, observations: Sequence[Observation]) -> None:
        self.design.ingest(observations)
        self.ingested += [dict(o.parameters) for o in observations]

    def suggest(self, n: int = 1, pending: Sequence[Point] = ()) -> list[Point]:
        self.suggests += 1
        self.pending.append(len(pending))
        points = self.design.suggest(n, pending)
        self.last_kinds = ["local"] * n
        return self.mutate(self, points) if self.mutate is not None else points


def _use(monkeypatch: pytest.MonkeyPatch, make: Callable[[Space, int], Any]) -> list[Any]:
    """Build every runner's planner with ``make(space, seed)``; the planners built."""
    built: list[Any] = []

    def factory(space: Space, objectives: Any, config: Any, seed: int, **kw: Any) -> Any:
        built.append(make(space, seed))
        return built[-1]

    monkeypatch.setattr(runner_module, "make_planner", factory)
    return built


def _after(k: int, change: Callable[[Point], Point]) -> Mutate:
    """Change every point once the planner has seen ``k`` trials."""

    def mutate(planner: Plugin, points: list[Point]) -> list[Point]:
        return [change(p) for p in points] if len(planner.ingested) >= k else points

    return mutate


# ---------------------------------------------------------------------------- 1: the space
@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda p: {**p, "x": 0.9, "y": 0.9}, "violates constraints[0] ('x + y <= 0.5')"),
        (lambda p: {**p, "x": 5.0}, "x=5.0 is outside its bounds [-1.0, 1.0]"),
        (lambda p: {**p, "x": 1.0 + 1e-6, "y": -0.9}, "is outside its bounds"),
        (lambda p: {**p, "n": 2.5}, "n=2.5 is not an integer"),
        (lambda p: {**p, "cat": "zzz"}, "cat='zzz' is not one of"),
        (lambda p: {k: v for k, v in p.items() if k != "y"}, "missing ['y']"),
        (lambda p: {**p, "x": float("nan")}, "is not finite"),
    ],
    ids=["constraint", "bounds", "bounds-beyond-rounding", "int", "choice", "missing", "nan"],
)
def test_a_proposal_outside_the_space_stops_the_campaign_before_it_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: Callable[[Point], Point], said: str
) -> None:
    """It measured x = y = 0.9 under ``x + y <= 0.5``, and a point out of bounds or choices
    became a failed trial, counted in max_failures and taught to the planner."""
    _use(monkeypatch, lambda space, seed: Plugin(space, seed, _after(3, change)))
    store = _store(tmp_path)
    with pytest.raises(PlannerError) as caught:
        Runner(_campaign(tmp_path), store).run()
    message = str(caught.value)
    assert message.startswith(
        f"planner {__name__}:Plugin broke the planner protocol: suggest(n=1) proposed "
    )
    assert said in message
    assert "nothing of its answer was stored or run" in message
    assert f"closedloop resume --store {store.url} -c 1" in message
    trials = store.trials(1)
    assert [(t.number, t.status) for t in trials] == [(i, "completed") for i in (1, 2, 3)]
    space = _campaign(tmp_path).campaign.space
    assert all(space.contains(t.parameters) for t in trials)
    row = store.campaign(1)
    assert row.status == "stopped"
    assert row.stop_reason is not None and row.stop_reason.startswith(f"planner {__name__}:Plugin")


def test_the_campaign_resumes_once_the_planner_is_fixed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    _use(
        monkeypatch,
        lambda space, seed: Plugin(space, seed, _after(3, lambda p: {**p, "x": 0.9, "y": 0.9})),
    )
    with pytest.raises(PlannerError):
        Runner(_campaign(tmp_path), store).run()
    _use(monkeypatch, lambda space, seed: Plugin(space, seed))
    summary = Runner.from_store(store, 1).resume()
    assert (summary.status, summary.completed, summary.failed) == ("completed", 8, 0)


@pytest.mark.parametrize(
    "point",
    [
        {"x": 0.25, "y": 0.25000000000000006, "n": 2, "cat": "a"},  # x + y a hair above 0.5
        {"x": 0.5 - 0.3, "y": 0.1 + 0.2, "n": 2, "cat": "a"},  # 0.2 + 0.30000000000000004
        {"x": 1.0 + 1e-12, "y": -0.6, "n": 2.0000000000001, "cat": "a"},  # rounding outside
        {"x": -1.0 - 1e-12, "y": 0.0, "n": 3.0, "cat": "b"},
    ],
)
def test_points_on_a_boundary_or_off_by_rounding_are_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: Point
) -> None:
    """The planners' own tolerance: a constraint holds within a 1e-9 relative slack, a bound
    or an integer within 1e-9 (of the range); such a value is stored on the bound."""
    assert point["x"] + point["y"] <= 0.5 + 2 * _RTOL
    _use(monkeypatch, lambda space, seed: Plugin(space, seed, _after(0, lambda p: dict(point))))
    store = _store(tmp_path)
    summary = Runner(_campaign(tmp_path, trials=2), store).run()
    assert (summary.status, summary.completed) == ("completed", 2)
    stored = store.trials(1)[0].parameters
    assert stored["x"] == min(max(point["x"], -1.0), 1.0)
    assert stored["n"] == round(point["n"]) and isinstance(stored["n"], int)


# ---------------------------------------------------------------------------- 2: the count
def _labels(kinds: Any) -> Mutate:
    """The points as they are, labelled ``kinds``."""

    def mutate(planner: Plugin, points: list[Point]) -> list[Point]:
        planner.last_kinds = kinds
        return points

    return mutate


@pytest.mark.parametrize(
    ("mutate", "said"),
    [
        (lambda pl, pts: [], "suggest(n=1) returned 0 point(s), not 1"),
        (lambda pl, pts: pts * 2, "suggest(n=1) returned 2 point(s), not 1"),
        (lambda pl, pts: iter(pts), "returned list_iterator"),
        (_labels([]), "its last_kinds is [], not 1"),
        (_labels("m"), "its last_kinds is 'm', not 1"),
        (_labels(["retry"]), "labels a point 'retry'"),
        (_labels(["prior"]), "labels a point 'prior'"),
        (_labels(["\x1b[2J"]), "labels a point '\\x1b"),
        (_labels([None]), "labels a point None"),
    ],
    ids=["none", "two", "iterator", "no-kinds", "kinds-str", "retry", "prior", "escape", "None"],
)
def test_another_count_of_points_or_labels_stops_the_campaign_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mutate: Any, said: str
) -> None:
    """Fewer points spun the loop (a suggest every millisecond, nothing said); other labels
    crashed it with "zip() argument 2 is shorter ... please report it"; a planner's
    ``retry`` label would make a rebuilt planner skip a failed trial, ``prior`` one that
    ``max_trials`` never counts."""

    def after_three(planner: Plugin, points: list[Point]) -> Any:
        return mutate(planner, points) if len(planner.ingested) >= 3 else points

    built = _use(monkeypatch, lambda space, seed: Plugin(space, seed, after_three))
    store = _store(tmp_path)
    runner = Runner(_campaign(tmp_path), store)
    spinning = threading.Timer(20, runner.request_stop, args=("still spinning after 20 s",))
    spinning.start()
    try:
        with pytest.raises(PlannerError) as caught:
            runner.run()
    finally:
        spinning.cancel()
    assert said in str(caught.value)
    assert str(caught.value).startswith(f"planner {__name__}:Plugin broke the planner protocol: ")
    assert built[0].suggests == 4  # asked once more, not spun
    assert [t.status for t in store.trials(1)] == ["completed"] * 3
    assert store.campaign(1).status == "stopped"


def test_the_engine_kinds_are_the_ones_it_stores() -> None:
    assert runner_module.PRIOR_KIND in ENGINE_KINDS and "retry" in ENGINE_KINDS


def test_a_planner_from_a_file_is_named_by_its_file(tmp_path: Path) -> None:
    """Not by the private module name the file is imported under."""
    from instruments._build import import_user_module

    (tmp_path / "mine.py").write_text("class Mine:\n    pass\n")
    module = import_user_module("mine.py", base_dir=tmp_path, attr="Mine", what="plugin")
    assert planner_name(module.Mine()) == f"{tmp_path / 'mine.py'}:Mine"
    assert planner_name(Plugin.__new__(Plugin)) == f"{__name__}:Plugin"


def test_trials_in_flight_are_measured_before_a_planners_breach_stops_the_campaign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two slots: trial 1 (slow) is in flight when the planner breaks its protocol on the
    answer after trial 2; it is measured and stored, not aborted as ``abandoned``."""
    points = iter(
        [
            {"x": 0.0, "y": 0.0, "n": 4, "cat": "a"},  # slow
            {"x": 0.1, "y": 0.0, "n": 1, "cat": "a"},  # fast
        ]
    )

    def mutate(planner: Plugin, proposed: list[Point]) -> list[Point]:
        if planner.suggests == 1:
            return [next(points) for _ in proposed]
        return [{**p, "x": 0.9, "y": 0.9} for p in proposed]

    _use(monkeypatch, lambda space, seed: Plugin(space, seed, mutate))
    store = _store(tmp_path)
    with pytest.raises(PlannerError):
        Runner(_campaign(tmp_path, count=2), store).run()
    assert [(t.number, t.status, t.parameters["n"]) for t in store.trials(1)] == [
        (1, "completed", 4),
        (2, "completed", 1),
    ]
    assert store.campaign(1).status == "stopped"


def test_the_command_line_says_which_planner_broke_what_and_exits_1(tmp_path: Path) -> None:
    """As a user runs it: the message with the fix, exit 1, no "please report it" (a bug of
    the planner, not of closedloop) and no traceback."""
    _campaign(tmp_path)
    (tmp_path / "my_planner.py").write_text(
        "from planners import RandomPlanner\n\n"
        "class Mine(RandomPlanner):\n"
        "    def suggest(self, n=1, pending=()):\n"
        "        points = super().suggest(n, pending)\n"
        "        self.last_kinds = ['local'] * n\n"
        "        if self.n_ingested >= 2:\n"
        "            return [dict(p, x=0.9, y=0.9) for p in points]\n"
        "        return points\n"
    )
    (tmp_path / "cl.py").write_text(
        "import loop.runner\n"
        "from my_planner import Mine\n"
        "loop.runner.make_planner = lambda space, objectives, config, seed, **kw: "
        "Mine(space, seed)\n"
        "from loop.cli import main\n"
        "main()\n"
    )
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    done = subprocess.run(
        [sys.executable, str(tmp_path / "cl.py"), "run", "seam.yaml", "--store", url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "300"},  # no line of the message wrapped
    )
    assert done.returncode == 1, done.stderr
    err = " ".join(done.stderr.split())
    assert err.startswith(
        "error: planner my_planner:Mine broke the planner protocol: suggest(n=1) proposed a "
        "point outside the campaign's space: point {'x': 0.9, 'y': 0.9,"
    ), err
    assert "violates constraints[0] ('x + y <= 0.5')" in err
    assert f"fix: fix the planner, then `closedloop resume --store {url} -c 1`" in err
    assert "please report" not in err and "Traceback" not in err
    assert "trial    3" not in done.stdout


# ---------------------------------------------------------------------------- 3: the pace
def _timed(kind: str) -> int:
    """The depth a 3-slot scheduler keeps after two 1 s trials and one 1 ms proposal
    labelled ``kind``."""
    sched = Scheduler(
        [Slot(i, cast(Any, None), cast(Any, None)) for i in range(3)],
        cast(Any, None),
        lookahead=3,
    )
    proposal = Proposal({"x": 0.0}, kind, suggest_seconds=0.001)
    for slot in range(2):
        sched.events.put(SlotDone(Job(slot, slot, slot, proposal, time.perf_counter() - 1), None))
        assert isinstance(sched.next_event(timeout=1), SlotDone)
    sched.events.put(Proposed([proposal]))
    assert isinstance(sched.next_event(timeout=1), Proposed)
    return sched.depth()


@pytest.mark.parametrize("kind", ["model", "local", "ts", "trust_region"])
def test_every_proposal_but_a_design_point_sets_the_pace(kind: str) -> None:
    """A 1 ms suggest against 1 s trials needs no queue, whatever the planner calls it: only
    ``model`` was timed, and any other label kept ``lookahead`` proposals queued."""
    assert _timed(kind) == 0


@pytest.mark.parametrize("kind", sorted(DESIGN_KINDS))
def test_design_points_do_not_set_the_pace(kind: str) -> None:
    assert _timed(kind) == 3


def test_a_planner_labelling_its_points_its_own_way_keeps_no_queue_it_does_not_need(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 slots, 0.2 s trials, a sub-millisecond planner labelled ``local``: each suggest had
    5 points pending (3 in flight, 2 queued) where ``model`` had 3."""

    def slow(planner: Plugin, points: list[Point]) -> list[Point]:
        return [{**p, "n": 4} for p in points]  # 0.4 s each

    built = _use(monkeypatch, lambda space, seed: Plugin(space, seed, slow))
    summary = Runner(_campaign(tmp_path, count=3, trials=15), _store(tmp_path)).run()
    assert (summary.status, summary.completed) == ("completed", 15)
    pending = built[0].pending
    # once the pace is measured (the first outcomes): those in flight, one ready at most
    assert max(pending[len(pending) // 2 :]) <= 4, pending


# ---------------------------------------------------------------------------- 4: the order
def test_a_rebuilt_planner_ingests_the_trials_in_the_order_the_live_one_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two slots, trials at n = 4 slow: trial 2 ends before trial 1, and so on. The live
    planner ingests in that order; a rebuilt one (resume, suggest, plan) ingested by trial
    number, so a planner whose state depends on the order went on differently."""
    sequence = iter([{"x": k / 10, "y": 0.0, "n": 4 - 3 * (k % 2), "cat": "a"} for k in range(20)])

    def scripted(planner: Plugin, points: list[Point]) -> list[Point]:
        return [next(sequence) for _ in points]

    built = _use(monkeypatch, lambda space, seed: Plugin(space, seed, scripted))
    store = _store(tmp_path)
    summary = Runner(_campaign(tmp_path, count=2, trials=6), store).run()
    assert summary.completed == 6
    live = built[0].ingested
    by_number = [t.parameters for t in store.trials(1)]
    assert live != by_number  # the test means something: trials ended out of order
    runner = Runner.from_store(store, 1)
    rebuilt = cast(Plugin, runner.rebuild_planner(store.trials(1), store.observations(1)))
    assert rebuilt.ingested == live


class OrderDependent(Plugin):
    """Proposes from a stream seeded by the outputs it has seen, in the order it saw them."""

    def __init__(self, space: Space, seed: int) -> None:
        super().__init__(space, seed)
        self.space = space
        self.trace = 0.0

    def ingest(self, observations: Sequence[Observation]) -> None:
        super().ingest(observations)
        for o in observations:
            self.trace = (self.trace * 3.1 + o.outputs.get("f", 7.0)) % 1.0

    def suggest(self, n: int = 1, pending: Sequence[Point] = ()) -> list[Point]:
        self.suggests += 1
        self.last_kinds = ["local"] * n
        u = self.trace
        return [{"x": u - 0.5, "y": -u, "n": 1 + k % 4, "cat": "b"} for k in range(n)]


def test_a_sequential_campaign_resumed_proposes_what_it_would_have_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One slot: the order trials ended is trial order, so rebuilding in it changes nothing
    (an order-dependent planner goes on after a resume as it would have)."""
    built = _use(monkeypatch, OrderDependent)
    text = _campaign(tmp_path, trials=7)
    straight = Store(f"sqlite:///{tmp_path / 'straight.db'}")
    Runner(text, straight).run()
    split = Store(f"sqlite:///{tmp_path / 'split.db'}")
    Runner(text, split, max_trials=4).run()
    Runner.from_store(split, 1, max_trials=7).resume()
    assert [t.parameters for t in split.trials(1)] == [t.parameters for t in straight.trials(1)]
    assert built[2].ingested == built[0].ingested  # 4 rebuilt, 3 live: in the same order


# ---------------------------------------------------------------------------- 5: a plugin raises
class Raising(Plugin):
    """A plugin whose ``method`` raises once it has seen ``after`` trials (``ingest``: once
    it would hold more than ``after``)."""

    def __init__(self, space: Space, seed: int, method: str, after: int) -> None:
        super().__init__(space, seed)
        self.method, self.after = method, after

    def ingest(self, observations: Sequence[Observation]) -> None:
        if self.method == "ingest" and len(self.ingested) + len(observations) > self.after:
            raise RuntimeError("boom in ingest")
        super().ingest(observations)

    def suggest(self, n: int = 1, pending: Sequence[Point] = ()) -> list[Point]:
        if self.method == "suggest" and len(self.ingested) >= self.after:
            raise RuntimeError("boom in suggest")
        if self.suggests == 0 and n >= 2:  # trial 1 slow (n = 4), trial 2 fast: 1 in flight
            self.suggests += 1
            self.last_kinds = ["local"] * n
            base = {"x": 0.0, "y": 0.0, "cat": "a"}
            return [{**base, "n": 4 if i == 0 else 1} for i in range(n)]
        return super().suggest(n, pending)


@pytest.mark.parametrize("method", ["suggest", "ingest"])
def test_a_plugin_that_raises_stops_the_campaign_after_measuring_the_trials_in_flight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    """Two slots, trial 1 slow: the plugin raises on the answer after trial 2; trial 1 is
    measured and stored (it was ``abandoned: run aborted: the runner failed: RuntimeError``),
    and the error names the plugin and its exception, keeping it as the cause."""
    _use(monkeypatch, lambda space, seed: Raising(space, seed, method, 1))
    store = _store(tmp_path)
    with pytest.raises(PluginRaised) as caught:
        Runner(_campaign(tmp_path, count=2), store).run()
    message = str(caught.value)
    assert message.startswith(
        f"planner plugin {__name__}:Raising: {method} raised RuntimeError: boom in {method} "
        "(an error in the plugin's code, not in closedloop or the campaign)"
    ), message
    assert f"then `closedloop resume --store {store.url} -c 1` continues" in message
    assert isinstance(caught.value.__cause__, RuntimeError)
    trials = store.trials(1)  # the slow trial 1 was in flight: measured, none abandoned
    assert len(trials) >= 2 and (trials[0].status, trials[0].parameters["n"]) == ("completed", 4)
    assert {t.status for t in trials} == {"completed"}, [(t.number, t.status) for t in trials]
    row = store.campaign(1)
    assert row.status == "stopped"
    assert row.stop_reason is not None and row.stop_reason.startswith(
        f"planner plugin {__name__}:Raising: {method} raised RuntimeError"
    )


def test_a_plugin_whose_ingest_raises_on_resume_stops_it_with_the_trials_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rebuild's ``ingest`` raised out of ``resume`` as the runner's failure."""
    store = _store(tmp_path)
    _use(monkeypatch, lambda space, seed: Plugin(space, seed))
    Runner(_campaign(tmp_path), store, max_trials=3).run()
    _use(monkeypatch, lambda space, seed: Raising(space, seed, "ingest", 0))
    with pytest.raises(PluginRaised) as caught:
        Runner.from_store(store, 1, max_trials=6).resume()
    assert "ingest raised RuntimeError: boom in ingest" in str(caught.value)
    assert f"`closedloop resume --store {store.url} -c 1`" in caught.value.fix
    assert [t.status for t in store.trials(1)] == ["completed"] * 3
    assert store.campaign(1).status == "stopped"
    _use(monkeypatch, lambda space, seed: Plugin(space, seed))  # fixed: it goes on
    assert Runner.from_store(store, 1, max_trials=6).resume().completed == 6


def test_a_plugins_ingest_raising_at_the_end_is_a_warning_not_a_failed_campaign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the last outcome's ``ingest`` (handed over as the session ends) raises: the
    campaign completed and stays so (it was exit 1, "please report it", no summary)."""
    _use(monkeypatch, lambda space, seed: Raising(space, seed, "ingest", 3))
    store = _store(tmp_path)
    with caplog.at_level(logging.WARNING, logger="loop.scheduler"):
        summary = Runner(_campaign(tmp_path, trials=4), store).run()
    assert (summary.status, summary.completed) == ("completed", 4)
    assert store.campaign(1).status == "completed"
    warned = [r.getMessage() for r in caplog.records if r.name == "loop.scheduler"]
    assert any(
        m.startswith(f"planner plugin {__name__}:Raising: ingest raised RuntimeError")
        and "the campaign's trials are stored" in m
        for m in warned
    ), warned


def test_a_built_in_planner_that_raises_is_closedloops_bug_and_stays_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not worded as a plugin's error: the command line reports it as closedloop's bug."""

    def broken(self: RandomPlanner, n: int = 1, pending: Sequence[Point] = ()) -> list[Point]:
        raise RuntimeError("a bug of closedloop's")

    monkeypatch.setattr(RandomPlanner, "suggest", broken)
    with pytest.raises(RuntimeError, match="a bug of closedloop's") as caught:
        Runner(_campaign(tmp_path), _store(tmp_path)).run()
    assert not isinstance(caught.value, PlannerError)


def test_call_planner_wraps_a_plugins_exceptions_only() -> None:
    class Boom:
        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def suggest(self, n: int = 1, pending: Sequence[Point] = ()) -> list[Point]:
            raise self.exc

    plugin_error = ValueError("bad\nvalue")
    with pytest.raises(PluginRaised) as caught:
        call_planner(cast(Any, Boom(plugin_error)), "suggest", 1)
    assert caught.value.__cause__ is plugin_error
    assert caught.value.problem == "suggest raised ValueError: bad value"  # one line
    with pytest.raises(PluginRaised) as silent:
        call_planner(cast(Any, Boom(KeyError())), "suggest", 1)
    assert silent.value.problem == "suggest raised KeyError"
    already = PlannerError("p:P", "said")
    with pytest.raises(PlannerError) as kept:  # worded already: as it is
        call_planner(cast(Any, Boom(already)), "suggest", 1)
    assert kept.value is already
    infeasible = InfeasibleSpaceError("no feasible point", draws=10, feasible_fraction=0.1)
    with pytest.raises(InfeasibleSpaceError):  # the campaign's constraints: exit 2, as ever
        call_planner(cast(Any, Boom(infeasible)), "suggest", 1)


RAISING = """\
from planners import RandomPlanner


class Raising:
    def __init__(self, context, after=2):
        self.inner = RandomPlanner(context.space, context.seed)
        self.after, self.seen, self.last_kinds = after, 0, []

    def ingest(self, observations):
        self.inner.ingest(observations)
        self.seen += len(observations)

    def suggest(self, n=1, pending=()):
        if self.seen >= self.after:
            raise RuntimeError("boom in suggest")
        self.last_kinds = ["local"] * n
        return self.inner.suggest(n, pending)
"""


def test_the_command_line_says_a_plugin_raised_and_exits_1_without_a_bug_report(
    tmp_path: Path,
) -> None:
    """``run``, ``suggest`` and ``plan --dry-run`` alike: the plugin and its exception
    named, exit 1, no "please report it", no traceback; ``-v`` shows the plugin's."""
    from tests.cli_process import closedloop

    _campaign(tmp_path)
    (tmp_path / "raising.py").write_text(RAISING)
    text = (
        (tmp_path / "seam.yaml")
        .read_text()
        .replace("{kind: random}", "{plugin: raising.py:Raising}")
    )
    (tmp_path / "seam.yaml").write_text(text)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    said = (
        f"error: planner plugin {tmp_path / 'raising.py'}:Raising: suggest raised RuntimeError: "
        "boom in suggest (an error in the plugin's code, not in closedloop or the campaign)"
    )
    run = closedloop("run", "seam.yaml", "--store", url, cwd=tmp_path, wide=True)
    assert run.returncode == 1, run.stderr
    err = " ".join(run.stderr.split())
    assert err.startswith(said), err
    assert (
        "fix: fix the plugin (`closedloop -v ...` shows its traceback), then "
        f"`closedloop resume --store {url} -c 1`" in err
    )
    assert "please report" not in err and "Traceback" not in err
    assert "the runner failed" not in err
    for args in (
        ("suggest", "--store", url, "-c", "1"),
        ("plan", "--dry-run", "--store", url, "-c", "1"),
        ("plan", "--dry-run", "seam.yaml"),
    ):
        if args[-1] == "seam.yaml":  # from the file: the plugin raises at once
            (tmp_path / "seam.yaml").write_text(
                text.replace("Raising}", "Raising, args: {after: 0}}")
            )
        done = closedloop(*args, cwd=tmp_path, wide=True)
        assert done.returncode == 1, (args, done.stderr)
        err = " ".join(done.stderr.split())
        assert err.startswith(said), (args, err)
        assert "please report" not in err and "Traceback" not in err, (args, err)
    verbose = closedloop("-v", "plan", "--dry-run", "seam.yaml", cwd=tmp_path, wide=True)
    assert verbose.returncode == 1
    assert 'raise RuntimeError("boom in suggest")' in verbose.stderr


def test_a_planner_proposing_a_point_in_flight_is_named_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Two slots measured identical parameters at once, without a word (found in review)."""
    from loop import scheduler

    monkeypatch.setattr(scheduler, "_REPEATS_SAID", set())
    first: list[Point] = []

    def same(planner: Plugin, points: list[Point]) -> list[Point]:
        if not first:
            first.append(points[0])
        return [dict(first[0]) for _ in points]

    _use(monkeypatch, lambda space, seed: Plugin(space, seed, same))
    with caplog.at_level(logging.WARNING, logger="loop"):
        Runner(_campaign(tmp_path, count=2, trials=4), _store(tmp_path)).run()
    said = [r.getMessage() for r in caplog.records if "already being measured" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(f"planner {__name__}:Plugin proposed "), said
