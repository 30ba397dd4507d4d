"""Pareto fronts and exact hypervolumes: known values, directions, feasibility, traces."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from botorch.utils.multi_objective.hypervolume import Hypervolume
from botorch.utils.multi_objective.pareto import is_non_dominated
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import planners._pareto
from planners import Objective, hypervolume, hypervolume_trace, pareto_mask, reference_point
from planners._pareto import front_after, front_reference_point

MAX2 = [Objective(name="a"), Objective(name="b")]
MIN2 = [Objective(name="a", goal="minimize"), Objective(name="b", goal="minimize")]


def objectives(m: int, goals: str = "x") -> list[Objective]:
    """``m`` objectives whose goals cycle through ``goals`` (x: maximise, n: minimise)."""
    return [
        Objective(name=f"y{i}", goal="maximize" if goals[i % len(goals)] == "x" else "minimize")
        for i in range(m)
    ]


def test_two_objective_front_and_area_by_hand() -> None:
    # Staircase above the origin: (1,3), (2,2), (3,1); (1,1) is dominated.
    Y = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [1.0, 1.0]])
    assert pareto_mask(Y, MAX2).tolist() == [True, True, True, False]
    # Union of three rectangles from the origin: 3 + 2*2 + 3 - overlaps = 6.
    assert hypervolume(Y, MAX2, ref=[0.0, 0.0]) == pytest.approx(6.0)


def test_minimised_objectives_mirror_maximised_ones() -> None:
    Y = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.0, 3.0]])
    assert pareto_mask(Y, MIN2).tolist() == [True, True, True, False]
    # In the signed space the reference (4, 4) is (-4, -4): the same staircase as above.
    assert hypervolume(Y, MIN2, ref=[4.0, 4.0]) == pytest.approx(6.0)
    mixed = [Objective(name="a"), Objective(name="b", goal="minimize")]
    assert hypervolume(np.array([[2.0, 1.0]]), mixed, ref=[0.0, 3.0]) == pytest.approx(4.0)


def test_three_objectives_known_volume() -> None:
    # Two unit-overlapping boxes: [0,2]x[0,1]x[0,1] and [0,1]x[0,2]x[0,1] -> 2 + 2 - 1 = 3,
    # plus a third [0,1]x[0,1]x[0,3] overlapping each in a unit cube: 3 + 3 - 1 - 1 = 4... the
    # union of all three: 2 + 2 + 3 - 1 - 1 - 1 + 1 = 5.
    Y = np.array([[2.0, 1.0, 1.0], [1.0, 2.0, 1.0], [1.0, 1.0, 3.0]])
    assert hypervolume(Y, objectives(3), ref=[0.0, 0.0, 0.0]) == pytest.approx(5.0)
    assert pareto_mask(Y, objectives(3)).all()


def test_four_objectives_single_point_and_unit_simplex_corners() -> None:
    obj = objectives(4)
    assert hypervolume([[1.0, 2.0, 3.0, 4.0]], obj, ref=[0, 0, 0, 0]) == pytest.approx(24.0)
    # The four unit "corners" e_i + 1: each box is 2 along one axis, 1 along the others;
    # union = 4 * 2 - 3 * 1 (inclusion-exclusion collapses to the shared unit cube).
    Y = np.ones((4, 4)) + np.eye(4)
    assert hypervolume(Y, obj, ref=[0, 0, 0, 0]) == pytest.approx(5.0)


def _botorch_hv(S: np.ndarray, ref: np.ndarray) -> float:
    """BoTorch's box-decomposition hypervolume of a maximised cloud (it needs the front)."""
    Y = torch.tensor(S)
    return float(Hypervolume(torch.tensor(ref)).compute(Y[is_non_dominated(Y)]))


@pytest.mark.parametrize("m", [2, 3, 4])
def test_matches_botorch_on_random_clouds(m: int) -> None:
    rng = np.random.default_rng(m)
    obj = objectives(m, goals="xn")
    signs = np.array([o.sign for o in obj])
    for n in (1, 7, 40):
        Y = rng.normal(size=(n, m))
        ref = reference_point(obj, Y)
        expected = _botorch_hv(Y * signs, ref * signs)
        assert hypervolume(Y, obj) == pytest.approx(expected, rel=1e-10)


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(2, 4),
    Y=st.integers(1, 25).flatmap(
        lambda n: arrays(np.float64, (n, 4), elements=st.integers(-3, 3).map(float))
    ),
)
def test_hypervolume_agrees_with_botorch_on_ties(m: int, Y: np.ndarray) -> None:
    """Grid values give many ties and duplicates, where sweeps usually go wrong."""
    obj = objectives(m)
    Y = Y[:, :m]
    ref = np.full(m, -4.0)
    expected = _botorch_hv(Y, ref)
    assert hypervolume(Y, obj, ref=ref) == pytest.approx(expected, abs=1e-9)


def test_feasibility_mask_and_non_finite_rows_leave_the_front() -> None:
    Y = np.array([[3.0, 3.0], [1.0, 2.0], [2.0, 1.0], [math.nan, 9.0]])
    feasible = [False, True, True, True]
    assert pareto_mask(Y, MAX2).tolist() == [True, False, False, False]
    assert pareto_mask(Y, MAX2, feasible=feasible).tolist() == [False, True, True, False]
    assert hypervolume(Y, MAX2, ref=[0, 0], feasible=feasible) == pytest.approx(3.0)
    assert hypervolume(Y, MAX2, ref=[0, 0], feasible=[False] * 4) == 0.0
    with pytest.raises(ValueError, match="feasible has 2 entries"):
        pareto_mask(Y, MAX2, feasible=[True, False])


def test_points_not_beyond_the_reference_add_nothing() -> None:
    Y = np.array([[1.0, 5.0], [5.0, -1.0]])
    assert hypervolume(Y, MAX2, ref=[0.0, 0.0]) == pytest.approx(5.0)
    assert hypervolume(Y, MAX2, ref=[10.0, 10.0]) == 0.0


def test_reference_point_given_or_inferred_per_direction() -> None:
    # a maximised, b minimised; (-5, 30) is dominated but still sets the worst values.
    Y = np.array([[0.0, 10.0], [10.0, 20.0], [-5.0, 30.0]])
    # Maximised a: worst -5, range 15 -> -6.5. Minimised b: worst 30, range 20 -> 32.
    obj = [Objective(name="a"), Objective(name="b", goal="minimize")]
    assert reference_point(obj, Y).tolist() == pytest.approx([-6.5, 32.0])
    given_ref = [Objective(name="a", reference_point=5.0), obj[1]]
    assert reference_point(given_ref, Y).tolist() == pytest.approx([5.0, 32.0])
    # Infeasible rows set neither the worst value nor the range while feasible ones exist:
    # (0, 10) and (10, 20) give worst 0 and 20, ranges 10 (all three rows: 15 and 20).
    assert reference_point(obj, Y, feasible=[True, True, False]).tolist() == pytest.approx(
        [0.0 - 1.0, 20.0 + 1.0]
    )
    # One feasible row: 10 % of its magnitude, whatever the infeasible rows' range.
    assert reference_point(obj, Y, feasible=[False, True, False]).tolist() == pytest.approx(
        [10.0 - 1.0, 20.0 + 2.0]
    )
    # One value and no range: 10 % of its magnitude (0.1 at zero).
    assert reference_point(obj, [[0.0, 20.0]]).tolist() == pytest.approx([-0.1, 22.0])
    with pytest.raises(ValueError, match="set reference_point"):
        reference_point(obj, np.empty((0, 2)))
    # Given reference points need no data.
    both = [Objective(name="a", reference_point=0.0), Objective(name="b", reference_point=1.0)]
    assert reference_point(both, np.empty((0, 2))).tolist() == [0.0, 1.0]


def test_front_reference_point_is_the_fronts_nadir() -> None:
    """The acquisition's reference (BoTorch's ``infer_reference_point``): the front only."""
    Y = np.array([[0.0, 10.0], [10.0, 20.0], [-5.0, 30.0]])
    obj = [Objective(name="a"), Objective(name="b", goal="minimize")]
    # Front (0, 10), (10, 20): worst 0 and 20, ranges 10 -> (-1, 21).
    assert front_reference_point(obj, Y).tolist() == pytest.approx([-1.0, 21.0])
    # Feasible rows only while there are any: one point moves by 10 %.
    assert front_reference_point(obj, Y, feasible=[False, True, False]).tolist() == (
        pytest.approx([10.0 - 1.0, 20.0 + 2.0])
    )
    assert front_reference_point(obj, Y, feasible=[False] * 3).tolist() == pytest.approx(
        [-1.0, 21.0]
    )


def test_a_front_that_improves_grows_the_hypervolume() -> None:
    """A trial dominating a three-point front tripled it: the measured gain says so.

    With the front's nadir as reference, the earlier front had volume 0 and the new one
    (10 % of its magnitude) ** 2: a gain below any sensible ``min_improvement``.
    """
    Y = np.array([[0.2, 0.2], [0.3, 0.1], [0.1, 0.3], [0.9, 0.9]])
    ref = reference_point(MAX2, Y)
    assert ref.tolist() == pytest.approx([0.02, 0.02])  # worst 0.1 less 10 % of 0.8
    before, after = hypervolume(Y[:3], MAX2, ref), hypervolume(Y, MAX2, ref)
    assert before == pytest.approx(0.0484) and after == pytest.approx(0.88**2)
    assert hypervolume_trace(Y, MAX2) == pytest.approx([0.0324, 0.0404, 0.0484, 0.7744])
    nadir = front_reference_point(MAX2, Y)
    assert hypervolume(Y[:3], MAX2, nadir) == 0.0  # what the front's nadir made of it


def test_a_worse_trial_moves_the_reference_but_adds_no_gain() -> None:
    """Patience and the trace measure every prefix from one reference point: a trial that
    only sets a new worst value leaves the front, and so the measured gain, unchanged."""
    Y = np.array([[0.2, 0.2], [0.3, 0.1], [0.1, 0.3], [-1.0, -1.0]])
    ref_now, ref_then = reference_point(MAX2, Y), reference_point(MAX2, Y[:3])
    assert (ref_now < ref_then).all()  # the reference moved
    assert hypervolume(Y, MAX2, ref_now) == pytest.approx(hypervolume(Y[:3], MAX2, ref_now))
    trace = hypervolume_trace(Y, MAX2)
    assert trace[-1] == trace[-2]
    # Only comparing volumes measured from different references would show a "gain".
    assert hypervolume(Y, MAX2, ref_now) > hypervolume(Y[:3], MAX2, ref_then)
    # Once two feasible values differ, later trials only move it to "worse".
    rng = np.random.default_rng(3)
    Z = rng.normal(size=(30, 2))
    feasible = rng.random(30) > 0.3
    start = int(np.flatnonzero(feasible)[1]) + 1
    refs = [reference_point(MAX2, Z[:k], feasible[:k]) for k in range(start, 31)]
    assert all((b <= a).all() for a, b in zip(refs, refs[1:], strict=False))


def test_an_infeasible_sentinel_does_not_set_the_feasible_scale() -> None:
    """An infeasible trial's overrange reading (9.9e37) once widened the inferred
    reference's margin: a front of values below 5 had a hypervolume of 1.75e37 (found in
    review). The margin comes from the feasible rows, like the worst value."""
    Y = np.array([[1.0, 1.0], [2.0, 0.5], [0.5, 2.0], [3.0, 9.9e37]])
    feasible = np.array([True, True, True, False])
    ref = reference_point(MIN2, Y, feasible)
    assert ref.tolist() == pytest.approx([2.0 + 0.15, 2.0 + 0.15])
    volume = hypervolume(Y, MIN2, None, feasible)
    assert volume == pytest.approx(hypervolume(Y[:3], MIN2)) and volume < 10
    # While none is feasible, every finite row sets both (the sentinel included).
    none = reference_point(MIN2, Y, [False] * 4)
    assert none[1] == pytest.approx(9.9e37 * 1.1)


def test_inferred_reference_counts_every_observed_point() -> None:
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(12, 3))
    obj = objectives(3, goals="xn")
    front = pareto_mask(Y, obj)
    # Each front point alone has positive volume above the inferred reference.
    for row in Y[front]:
        assert hypervolume(row[None], obj, ref=reference_point(obj, Y)) > 0


def test_trace_is_monotone_and_ends_at_the_total() -> None:
    rng = np.random.default_rng(1)
    for m in (2, 3, 4):
        obj = objectives(m)
        Y = rng.random((20, m))
        feasible = rng.random(20) > 0.2
        trace = hypervolume_trace(Y, obj, feasible=feasible)
        assert len(trace) == 20
        assert all(b >= a for a, b in zip(trace, trace[1:], strict=False))
        ref = reference_point(obj, Y, feasible)
        assert trace[-1] == pytest.approx(hypervolume(Y, obj, ref=ref, feasible=feasible))
        for k in (1, 7, 13):
            assert trace[k - 1] == pytest.approx(
                hypervolume(Y[:k], obj, ref=ref, feasible=feasible[:k])
            )


def test_single_objective_and_shape_errors() -> None:
    one = [Objective(name="y", goal="minimize")]
    assert pareto_mask([3.0, 1.0, 1.0, 2.0], one).tolist() == [False, True, True, False]
    assert hypervolume([3.0, 1.0], one, ref=[4.0]) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="n x 2"):
        hypervolume(np.ones((3, 3)), MAX2)
    with pytest.raises(ValueError, match="ref has 1 values"):
        hypervolume(np.ones((3, 2)), MAX2, ref=[0.0])
    assert pareto_mask(np.empty((0, 2)), MAX2).shape == (0,)


def test_module_imports_no_torch() -> None:
    """Status/export/report use these on every call: numpy only, nothing heavy at import."""
    tree = ast.parse(Path(planners._pareto.__file__).read_text())
    modules = {(n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m.split(".")[0] for m in modules} & {"torch", "botorch", "gpytorch"}


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("seed", range(4))
def test_a_front_grown_one_row_at_a_time_is_the_front_of_all_rows(m: int, seed: int) -> None:
    """``front_after`` (what the runner does after each trial) against ``pareto_mask`` of
    every row so far (what it did): rows with ties, duplicates, NaN, infeasible ones and a
    reference point's worse side among them."""
    rng = np.random.default_rng(seed)
    objectives = [
        Objective(name="a", goal="maximize", reference_point=-0.8),
        Objective(name="b", goal="minimize"),
        Objective(name="c", goal="maximize"),
    ][:m]
    Y = np.round(rng.normal(size=(120, m)), 1)  # ties and duplicates
    Y[rng.random(120) < 0.05, 0] = np.nan
    feasible = rng.random(120) > 0.1
    front: list[int] = []
    for n in range(len(Y)):
        on, off = front_after(Y[front].reshape(-1, m), Y[n], objectives, bool(feasible[n]))
        front = [i for i, pushed in zip(front, off, strict=True) if not pushed]
        front += [n] if on else []
        expected = pareto_mask(Y[: n + 1], objectives, feasible[: n + 1])
        assert sorted(front) == np.flatnonzero(expected).tolist(), n
