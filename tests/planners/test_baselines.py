"""Sobol and random planners: valid, seeded, positional (resumable), no pending repeats."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from planners import (
    ChoiceParameter,
    FloatParameter,
    InfeasibleSpaceError,
    IntParameter,
    Observation,
    RandomPlanner,
    SobolPlanner,
    Space,
    TrialOutcome,
    _baselines,
)
from planners._baselines import PositionalDesign, feasible_cardinality, point_key

PLANNERS = [SobolPlanner, RandomPlanner]
SPACE = Space([FloatParameter(name="x", bounds=(0.0, 1.0)), IntParameter(name="n", bounds=(1, 9))])


def _obs(point: dict[str, Any], y: float = 1.0, outcome: TrialOutcome = "completed") -> Observation:
    return Observation(
        parameters=point, outputs={"y": y} if outcome == "completed" else {}, outcome=outcome
    )


@pytest.mark.parametrize("cls", PLANNERS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_every_proposal_is_a_member(cls: Any, data: Any, space_strategy: Any) -> None:
    space: Space = data.draw(space_strategy)
    planner = cls(space, seed=data.draw(st.integers(0, 2**31)))
    first = planner.suggest(3)
    planner.ingest([_obs(p) for p in first[:2]])
    more = planner.suggest(data.draw(st.integers(0, 4)), pending=first[2:])
    assert all(space.contains(p) for p in first + more)


@pytest.mark.parametrize("cls", PLANNERS)
def test_same_seed_same_sequence(cls: Any) -> None:
    assert cls(SPACE, seed=3).suggest(5) == cls(SPACE, seed=3).suggest(5)
    assert cls(SPACE, seed=3).suggest(5) != cls(SPACE, seed=4).suggest(5)


@pytest.mark.parametrize("cls", PLANNERS)
def test_kth_proposal_depends_only_on_position(cls: Any) -> None:
    """One batch of 6 == proposals one at a time, whatever was pending or finished."""
    batch = cls(SPACE, seed=11).suggest(6)
    planner = cls(SPACE, seed=11)
    got = planner.suggest(2)
    got += planner.suggest(1, pending=got)
    planner.ingest([_obs(got[0]), _obs(got[1], outcome="failed")])
    got += planner.suggest(3, pending=got[2:])
    assert got == batch


@pytest.mark.parametrize("cls", PLANNERS)
def test_resume_continues_the_sequence(cls: Any) -> None:
    original = cls(SPACE, seed=5)
    trials: list[Any] = []
    for _ in range(4):
        (p,) = original.suggest(1)
        trials.append(_obs(p, outcome="failed" if len(trials) == 1 else "completed"))
        original.ingest([trials[-1]])
    rebuilt = cls(SPACE, seed=5)
    rebuilt.ingest(trials)
    assert rebuilt.suggest(2) == original.suggest(2)


@pytest.mark.parametrize("cls", PLANNERS)
def test_finite_space_avoids_pending_until_exhausted(cls: Any) -> None:
    space = Space(
        [IntParameter(name="a", bounds=(0, 2)), ChoiceParameter(name="b", values=("u", "v"))]
    )
    planner = cls(space, seed=0)
    batch = planner.suggest(6)
    assert len({point_key(space, p) for p in batch}) == 6
    for k in range(6):
        pending = batch[:k] + batch[k + 1 :]
        assert planner.suggest(1, pending=pending) == [batch[k]]
    # Everything pending: a repeat is unavoidable, but the planner still answers.
    assert len(planner.suggest(2, pending=batch)) == 2


@pytest.mark.parametrize("cls", PLANNERS)
@pytest.mark.parametrize("constrained", [False, True], ids=["grid", "constrained"])
def test_a_finite_space_is_covered_before_any_repeat(
    cls: Any, constrained: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Every feasible point once before any repeat, then one warning. Before, the designs
    avoided only pending points: on a 5 x 5 grid the Sobol design measured 19 distinct
    points in its first 25 trials and the random one 12."""
    space = Space(
        [
            IntParameter(name="a", bounds=(0, 4)),
            ChoiceParameter(name="b", values=(0, 1, 2, 3, 4), ordered=True),
        ],
        constraints=["a + b <= 4"] if constrained else [],
    )
    n_points = 15 if constrained else 25
    planner = cls(space, seed=3)
    measured: list[dict[str, Any]] = []
    with caplog.at_level(logging.INFO, logger="planners"):
        for _ in range(n_points + 5):
            (point,) = planner.suggest(1)
            assert space.contains(point)
            measured.append(point)
            planner.ingest([_obs(point)])
    assert len({point_key(space, p) for p in measured[:n_points]}) == n_points
    told = [r for r in caplog.records if "has been measured" in r.getMessage()]
    assert [r.levelno for r in told] == [logging.WARNING]
    assert f"every one of the {n_points} points" in told[0].getMessage()
    # A planner rebuilt from the first 7 trials (resume) goes on as the live one did.
    rebuilt = cls(space, seed=3)
    rebuilt.ingest([_obs(p) for p in measured[:7]])
    assert rebuilt.suggest(1) == [measured[7]]


def _botorch(space: Space, seed: int) -> Any:
    from planners import InitialDesign, Objective, PlannerConfig
    from planners._botorch import BoTorchPlanner, BoTorchSettings

    return BoTorchPlanner(
        space,
        [Objective(name="y", goal="minimize")],
        PlannerConfig(initial=InitialDesign(n=3)),
        seed=seed,
        settings=BoTorchSettings(raw_samples=64, num_restarts=2, mc_samples=16, maxiter=10),
    )


@pytest.mark.parametrize("make", [*PLANNERS, _botorch], ids=["sobol", "random", "botorch"])
def test_a_batch_that_exhausts_a_finite_space_repeats_measured_points_not_its_own(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Was: a 3 x 3 grid with 7 points measured, `suggest(5)` handed out one of the two free
    points three times (one sample prepared thrice), and with no warning that repeats had
    begun; the swapped-in design points of a model suggest were labelled `model`."""
    space = Space(
        [IntParameter(name="a", bounds=(0, 2)), ChoiceParameter(name="c", values=("u", "v", "w"))]
    )
    planner = make(space, seed=0)
    grid: list[dict[str, Any]] = [{"a": a, "c": c} for a in range(3) for c in "uvw"]
    planner.ingest([_obs(p, y=p["a"] + "uvw".index(p["c"])) for p in grid[:7]])
    with caplog.at_level(logging.WARNING, logger="planners"):
        batch = planner.suggest(5)
    keys = [point_key(space, p) for p in batch]
    assert len(set(keys)) == 5, batch  # distinct: the two free points, then 3 measured ones
    assert {point_key(space, p) for p in grid[7:]} <= set(keys)
    told = [r for r in caplog.records if "has been measured" in r.getMessage()]
    assert len(told) == 1 and "every one of the 9 points" in told[0].getMessage()
    if make is _botorch:  # the model's repeats were replaced by design points, and say so
        assert len(planner.last_kinds) == 5 and "initial" in planner.last_kinds
    # With 7 of 9 pending, a batch of 2 repeats the two measured points, never a pending one.
    again = planner.suggest(2, pending=grid[2:])
    assert {point_key(space, p) for p in again} == {point_key(space, p) for p in grid[:2]}


@pytest.mark.parametrize("cls", PLANNERS)
def test_an_interrupted_trial_measured_nothing(cls: Any, caplog: pytest.LogCaptureFixture) -> None:
    """An abandoned trial's point is proposed again before the space counts as exhausted:
    12 completed trials on a 3 x 4 grid covered 11 points, and the warning said all 12
    had been measured."""
    space = Space([IntParameter(name="a", bounds=(0, 2)), IntParameter(name="b", bounds=(0, 3))])
    planner = cls(space, seed=1)
    completed: list[Any] = []
    with caplog.at_level(logging.WARNING, logger="planners"):
        for k in range(13):
            (point,) = planner.suggest(1)
            outcome: TrialOutcome = "abandoned" if k == 2 else "completed"
            planner.ingest([_obs(point, outcome=outcome)])
            if outcome == "completed":
                completed.append(point_key(space, point))
            else:
                assert not [r for r in caplog.records if "has been measured" in r.getMessage()]
    assert len(set(completed)) == 12
    with caplog.at_level(logging.WARNING, logger="planners"):
        planner.suggest(1)  # now every point has been measured: a repeat, and the warning
    assert [r for r in caplog.records if "has been measured" in r.getMessage()]


@pytest.mark.parametrize("cls", PLANNERS)
def test_large_finite_space_avoids_pending(cls: Any) -> None:
    space = Space([IntParameter(name="a", bounds=(0, 99)), IntParameter(name="b", bounds=(0, 99))])
    at_position_1 = cls(space, seed=1).suggest(2)[1]
    # One point pending puts us at position 1, whose design point is that very point.
    (proposal,) = cls(space, seed=1).suggest(1, pending=[at_position_1])
    assert proposal != at_position_1
    assert space.contains(proposal)


def test_sobol_is_balanced_over_choices() -> None:
    space = Space(
        [ChoiceParameter(name="c", values=("a", "b", "c", "d"))]
        + [FloatParameter(name="x", bounds=(0.0, 1.0))]
    )
    counts: dict[str, int] = {}
    for p in SobolPlanner(space, seed=2).suggest(16):
        counts[p["c"]] = counts.get(p["c"], 0) + 1
    assert counts == {"a": 4, "b": 4, "c": 4, "d": 4}


def test_negative_n_is_an_error() -> None:
    with pytest.raises(ValueError):
        SobolPlanner(SPACE, seed=0).suggest(-1)
    assert SobolPlanner(SPACE, seed=0).suggest(0) == []


def test_centre_first_then_the_same_sequence_one_position_later() -> None:
    space = Space(
        [
            FloatParameter(name="x", bounds=(0.0, 4.0)),
            FloatParameter(name="c", bounds=(1.0, 100.0), log=True),
            IntParameter(name="n", bounds=(1, 9)),
            ChoiceParameter(name="k", values=("a", "b", "c")),
        ]
    )
    plain = PositionalDesign(space, 7).points(0, 5)
    design = PositionalDesign(space, 7, centre_first=True)
    batch = design.points(0, 6)
    assert batch[0] == {"x": 2.0, "c": pytest.approx(10.0), "n": 5, "k": "b"}
    assert batch[1:] == plain
    assert design.points(3, 3) == batch[3:]  # still positional


def test_no_centre_where_it_breaks_a_constraint_or_for_a_table() -> None:
    unit = [FloatParameter(name=n, bounds=(0.0, 1.0)) for n in ("a", "b")]
    constrained = Space(unit, constraints=["a + b <= 0.5"])
    design = PositionalDesign(constrained, 1, centre_first=True)
    assert design.centre is None
    assert design.points(0, 3) == PositionalDesign(constrained, 1).points(0, 3)
    loose = Space(unit, constraints=["a + b <= 1.5"])
    assert PositionalDesign(loose, 1, centre_first=True).centre == {"a": 0.5, "b": 0.5}
    table = Space(unit, candidates=[{"a": i / 4, "b": 1 - i / 4} for i in range(5)])
    assert PositionalDesign(table, 1, centre_first=True).centre is None


# A feasible region of 2e-4 of the square: 209 feasible points in the first 2**20 Sobol draws.
NARROW = Space(
    [FloatParameter(name="x1", bounds=(0.0, 1.0)), FloatParameter(name="x2", bounds=(0.0, 1.0))],
    constraints=["x1 + x2 >= 1.98"],
)


def test_a_narrow_feasible_region_has_no_quota_of_design_points() -> None:
    """The design went on failing at trial 210 because of a fixed budget of draws."""
    planner = SobolPlanner(NARROW, seed=0)
    planner.ingest([_obs({"x1": 0.99, "x2": 0.995})] * 205)
    points = planner.suggest(10)
    assert all(NARROW.contains(p) for p in points)
    assert len({point_key(NARROW, p) for p in points}) == 10
    assert PositionalDesign(NARROW, 0).points(0, 215)[205:] == points  # still positional


def test_a_design_that_finds_no_next_feasible_point_says_so(monkeypatch: Any) -> None:
    monkeypatch.setattr(_baselines, "_MAX_DESIGN_DRAWS", 2**21)  # ~420 feasible points
    design = PositionalDesign(NARROW, 0)
    with pytest.raises(InfeasibleSpaceError, match="no further one for the design's point 600"):
        design.points(0, 600)
    assert 1e-4 < design._feasible_U.shape[0] / 2**21 < 4e-4


def test_leading_feasible_points_are_those_the_draws_hold() -> None:
    """Raw samples for the optimiser: fewer than asked in a narrow region, not an error."""
    U = PositionalDesign(NARROW, 3).leading_feasible_unit_points(512)
    assert 100 < len(U) < 512
    assert bool(NARROW.feasible(NARROW.from_unit_cube(U)).all())
    assert torch.equal(U[:50], PositionalDesign(NARROW, 3).feasible_unit_points(0, 50))
    # Nonlinear, so rejection sampling (a linear sliver is a polytope for hit-and-run).
    empty = Space(NARROW.parameters, constraints=["x1 * x2 >= 0.99999"])
    with pytest.raises(InfeasibleSpaceError, match="0 feasible points"):
        PositionalDesign(empty, 3).leading_feasible_unit_points(512)


@pytest.mark.parametrize("cls", PLANNERS)
def test_log_int_designs_are_log_uniform(cls: Any) -> None:
    """``log: true`` on an int: as many points per decade, one position at a time. (The
    design's own draws: a planner also avoids repeating a measured point, which in a log
    space's few low values turns some draws into new values higher up.)"""
    space = Space([IntParameter(name="k", bounds=(1, 10_000), log=True)])
    design = PositionalDesign(space, 0, cls(space)._kind)
    values = [design.points(k, 1)[0]["k"] for k in range(200)]
    assert sum(v < 100 for v in values) / len(values) == pytest.approx(0.5, abs=0.08)


def test_a_large_int_grid_cut_small_by_its_constraints_is_covered_before_a_repeat() -> None:
    """`a + b + c <= 3` over 0..100 leaves 20 points of about a million: counted before the
    constraints, the grid was too large to list, random draws found no free point, and
    Sobol repeated points after 7 of the 20 (found in review)."""
    space = Space(
        [IntParameter(name=n, bounds=(0, 100)) for n in "abc"], constraints=["a + b + c <= 3"]
    )
    assert feasible_cardinality(space) == 20
    planner = SobolPlanner(space, seed=0)
    seen = []
    for _ in range(20):
        (point,) = planner.suggest(1)
        seen.append(point_key(space, point))
        planner.ingest([_obs(point)])
    assert len(set(seen)) == 20


@settings(max_examples=60, deadline=None)
@given(
    bounds=st.lists(st.tuples(st.integers(-6, 3), st.integers(0, 6)), min_size=2, max_size=3),
    coefficients=st.lists(st.integers(-3, 3), min_size=3, max_size=3),
    rhs=st.integers(-8, 8),
    op=st.sampled_from(["<=", ">="]),
)
def test_narrowing_int_ranges_never_loses_a_feasible_point(
    bounds: list[tuple[int, int]], coefficients: list[int], rhs: int, op: str
) -> None:
    names = [f"n{i}" for i in range(len(bounds))]
    terms = [f"{k} * {n}" for k, n in zip(coefficients, names, strict=False) if k]
    if not terms:
        return
    space = Space(
        [
            IntParameter(name=n, bounds=(lo, lo + w + 1))
            for n, (lo, w) in zip(names, bounds, strict=True)
        ],
        constraints=[f"{' + '.join(terms)} {op} {rhs}"],
    )
    axes = [range(lo, lo + w + 2) for lo, w in bounds]
    brute = [
        dict(zip(names, values, strict=True))
        for values in itertools.product(*axes)
        if space.contains(dict(zip(names, values, strict=True)))
    ]
    assert feasible_cardinality(space) == len(brute)
