"""Encoding of the search space: exact round trips and membership."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from planners import (
    ChoiceParameter,
    FixedParameter,
    FloatParameter,
    IntParameter,
    InvalidPoint,
    Space,
)
from planners._botorch import _narrow_discrete_dims
from planners._space import MAX_ENUMERATED_INTS


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return type(a) is type(b) and a == b


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_encode_decode_round_trip(data: Any, space_strategy: Any, member_strategy: Any) -> None:
    space: Space = data.draw(space_strategy)
    point = data.draw(member_strategy(space))
    X = space.encode([point])
    assert X.shape == (1, space.dim) and X.dtype == torch.float64
    assert bool(((X >= space.bounds[0]) & (X <= space.bounds[1])).all())
    (back,) = space.decode(X)
    expected = space.validate(point)
    assert all(_close(back[n], expected[n]) for n in space.names), (back, expected)
    assert space.contains(back)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_decode_of_any_tensor_is_a_member_and_stable(data: Any, space_strategy: Any) -> None:
    """Whatever an optimiser returns (even out of bounds), decode yields valid points."""
    space: Space = data.draw(space_strategy)
    n = data.draw(st.integers(1, 5))
    U = torch.tensor(
        data.draw(st.lists(st.floats(-0.5, 1.5), min_size=n * space.dim, max_size=n * space.dim)),
        dtype=torch.float64,
    ).reshape(n, space.dim)
    points = space.decode(space.from_unit_cube(U.clamp(0, 1)) + (U - U.clamp(0, 1)))
    assert all(space.contains(p) for p in points)
    again = space.decode(space.encode(points))
    for a, b in zip(points, again, strict=True):
        assert all(_close(a[k], b[k]) for k in space.names)


@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_unit_cube_hits_the_discrete_grids(data: Any, space_strategy: Any) -> None:
    space: Space = data.draw(space_strategy)
    X = space.from_unit_cube(torch.rand(16, space.dim, dtype=torch.float64))
    for i, values in {**space.discrete_dims, **space.cat_dims}.items():
        grid = torch.tensor(values, dtype=torch.float64)
        assert bool((X[:, i : i + 1] == grid).any(dim=-1).all())


def test_structure_of_a_mixed_space(mixed: Space) -> None:
    assert mixed.dim == 4
    assert mixed.bounds.tolist() == [[0, 0, 0, 0], [1, 1, 1, 2]]
    assert mixed.continuous_dims == [0, 1]
    assert mixed.discrete_dims == {2: [0.0, 1 / 3, 2 / 3, 1.0]}
    assert mixed.cat_dims == {3: [0.0, 1.0, 2.0]}
    assert mixed.cardinality() == math.inf
    finite = Space(
        [IntParameter(name="a", bounds=(0, 2)), ChoiceParameter(name="b", values=(1, 2))]
    )
    assert finite.cardinality() == 6


@pytest.mark.parametrize(
    "point",
    [
        {"x": 2.0},
        {"x": float("nan")},
        {"x": "1"},
        {"x": True},
        {"y": 0.5},
        {"x": 0.5, "y": 1},
    ],
)
def test_validate_rejects_non_members(point: dict[str, Any]) -> None:
    space = Space([FloatParameter(name="x", bounds=(0.0, 1.0))])
    with pytest.raises(InvalidPoint):
        space.validate(point)
    assert not space.contains(point)


def test_validate_coerces_types() -> None:
    space = Space(
        [IntParameter(name="n", bounds=(1, 4)), ChoiceParameter(name="c", values=(1, "1.5"))]
    )
    assert space.validate({"n": 2.0, "c": 1.0}) == {"n": 2, "c": 1}
    with pytest.raises(InvalidPoint):
        space.validate({"n": 2.5, "c": 1})


# ---------------------------------------------------------------------------- fixed, ordered
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_round_trip_with_fixed_and_ordered_parameters(
    data: Any, rich_space_strategy: Any, member_strategy: Any
) -> None:
    space: Space = data.draw(rich_space_strategy)
    point = data.draw(member_strategy(space))
    X = space.encode([point])
    assert X.shape == (1, space.dim) == (1, len(space.columns))
    assert bool(((X >= space.bounds[0]) & (X <= space.bounds[1])).all())
    (back,) = space.decode(X)
    assert list(back) == list(space.names)  # fixed parameters come back, in campaign order
    expected = space.validate(point)
    assert all(_close(back[n], expected[n]) for n in space.names), (back, expected)
    without_fixed = {k: v for k, v in point.items() if k not in space.fixed}
    assert space.validate(without_fixed) == expected


def test_fixed_parameter_is_filled_in_and_held() -> None:
    space = Space(
        [
            FloatParameter(name="x", bounds=(0.0, 1.0)),
            FixedParameter(name="pressure", value=2.5, unit="bar"),
            FixedParameter(name="solvent", value="THF"),
        ]
    )
    assert space.dim == 1 and space.fixed == {"pressure": 2.5, "solvent": "THF"}
    assert space.names == ("x", "pressure", "solvent") and space.column_names == ("x",)
    assert space.decode(torch.tensor([[0.5]])) == [{"x": 0.5, "pressure": 2.5, "solvent": "THF"}]
    assert space.validate({"x": 0.2}) == {"x": 0.2, "pressure": 2.5, "solvent": "THF"}
    assert space.validate({"x": 0.2, "pressure": 2.5, "solvent": "THF"})["pressure"] == 2.5
    with pytest.raises(InvalidPoint, match="fixed to 2.5"):
        space.validate({"x": 0.2, "pressure": 3.0})
    with pytest.raises(InvalidPoint, match="fixed to 'THF'"):
        space.validate({"x": 0.2, "solvent": "MeCN"})
    assert space.encode([{"x": 0.25, "pressure": 2.5}]).tolist() == [[0.25]]


def test_a_space_of_fixed_parameters_only_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one parameter to vary"):
        Space([FixedParameter(name="p", value=1)])


def test_fixed_parameter_in_a_campaign_parameter_list() -> None:
    from pydantic import TypeAdapter

    from planners import Parameter

    parsed = TypeAdapter(list[Parameter]).validate_python(
        [
            {"name": "p", "type": "fixed", "value": 3},
            {"name": "x", "type": "float", "bounds": [0, 1]},
        ]
    )
    assert isinstance(parsed[0], FixedParameter) and parsed[0].value == 3


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_choice_and_fixed_values_are_refused(value: float) -> None:
    """NaN equals nothing, so a proposed NaN was "not one of" its own choice's values at the
    instrument's limit check, mid-run; refused when the campaign loads, like a fixed value."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="choice values must be finite numbers or text"):
        ChoiceParameter(name="b", values=(value, 1, "x"))
    with pytest.raises(ValidationError, match="a fixed value must be a finite number or text"):
        FixedParameter(name="p", value=value)
    assert ChoiceParameter(name="b", values=(0.5, 1, "x")).values == (0.5, 1, "x")


def test_ordered_choice_is_a_discrete_column() -> None:
    space = Space(
        [
            ChoiceParameter(name="level", values=("low", "mid", "high"), ordered=True),
            ChoiceParameter(name="cat", values=("A", "B")),
        ]
    )
    assert space.discrete_dims == {0: [0.0, 0.5, 1.0]}
    assert space.cat_dims == {1: [0.0, 1.0]}
    assert space.bounds.tolist() == [[0, 0], [1, 1]]
    assert space.encode([{"level": "high", "cat": "B"}]).tolist() == [[1.0, 1.0]]
    assert space.decode(torch.tensor([[0.3, 0.0], [0.76, 1.0]])) == [
        {"level": "mid", "cat": "A"},
        {"level": "high", "cat": "B"},
    ]
    assert space.cardinality() == 6


# ---------------------------------------------------------------------------- candidates
def _table_space(**kw: Any) -> Space:
    rows = [{"x": i / 10, "c": "AB"[i % 2]} for i in range(11)]
    return Space(
        [FloatParameter(name="x", bounds=(0.0, 1.0)), ChoiceParameter(name="c", values=("A", "B"))],
        candidates=rows + rows[:3],  # repeated rows are kept once
        **kw,
    )


def test_candidates_are_the_only_members() -> None:
    space = _table_space()
    assert space.candidates is not None and len(space.candidates) == 11
    assert space.cardinality() == 11
    assert space.contains({"x": 0.3, "c": "B"})
    assert not space.contains({"x": 0.3, "c": "A"})
    assert not space.contains({"x": 0.35, "c": "B"})
    # A float a few ulps off (a CSV round trip) is the row.
    assert space.validate({"x": 0.1 + 0.2, "c": "B"}) == {"x": 0.3, "c": "B"}
    assert space.candidate_index({"x": 0.3, "c": "B"}) == 3
    # Decoding snaps to the nearest row.
    assert space.decode(torch.tensor([[0.33, 1.0], [0.52, 0.9]])) == [
        {"x": 0.3, "c": "B"},
        {"x": 0.5, "c": "B"},
    ]


def test_candidates_are_validated_and_filtered_by_constraints() -> None:
    space = _table_space(constraints=["x <= 0.45"])
    assert space.candidates is not None
    assert [p["x"] for p in space.candidates] == [0.0, 0.1, 0.2, 0.3, 0.4]
    with pytest.raises(ValueError, match="candidate row 1: x=2.0 is outside"):
        Space([FloatParameter(name="x", bounds=(0.0, 1.0))], candidates=[{"x": 0.5}, {"x": 2.0}])
    with pytest.raises(ValueError, match="none of the 1 candidate rows"):
        Space(
            [FloatParameter(name="x", bounds=(0.0, 1.0))],
            constraints=["x <= 0.1"],
            candidates=[{"x": 0.5}],
        )


# ---------------------------------------------------------------------------- integers
def _sobol(dim: int, n: int, seed: int = 0) -> torch.Tensor:
    """``n x dim`` scrambled Sobol points plus the corners 0 and 1 (the clamped ends)."""
    U = torch.quasirandom.SobolEngine(dim, scramble=True, seed=seed).draw(n, dtype=torch.float64)
    ends = torch.tensor([[0.0] * dim, [1.0] * dim], dtype=torch.float64)
    return torch.cat([U, ends])


@settings(max_examples=60, deadline=None)
@given(
    lo=st.integers(-(10**6), 10**6),
    width=st.integers(1, 3 * MAX_ENUMERATED_INTS),
    seed=st.integers(0, 2**31 - 1),
)
def test_linear_int_designs_keep_the_former_cells(lo: int, width: int, seed: int) -> None:
    """Seeded campaigns stay reproducible: the computed integer cells are bit-for-bit those of
    the former table of every value, narrow or wide."""
    hi = lo + width
    space = Space(
        [IntParameter(name="k", bounds=(lo, hi)), FloatParameter(name="x", bounds=(0.0, 1.0))]
    )
    U = _sobol(2, 200, seed)
    table = torch.tensor(
        [(float(v) - lo) / (hi - lo) for v in range(lo, hi + 1)], dtype=torch.float64
    )
    cells = torch.clamp(torch.floor(U[:, 0] * len(table)), max=len(table) - 1).long()
    X = space.from_unit_cube(U)
    assert torch.equal(X[:, 0], table[cells])
    assert torch.equal(X[:, 1], U[:, 1])


def test_wide_int_ranges_are_relaxed_and_never_listed() -> None:
    """Over MAX_ENUMERATED_INTS values an int column is continuous for the optimiser, and
    nothing lists its values (a 10^15-wide range once ran out of memory)."""
    narrow = Space([IntParameter(name="k", bounds=(1, MAX_ENUMERATED_INTS))])
    assert len(narrow.discrete_dims[0]) == MAX_ENUMERATED_INTS
    assert Space([IntParameter(name="k", bounds=(0, MAX_ENUMERATED_INTS))]).discrete_dims == {}
    huge = Space(
        [
            IntParameter(name="n", bounds=(-(10**15), 10**15)),
            IntParameter(name="w", bounds=(1, 10**15), log=True),
            ChoiceParameter(name="level", values=(1, 2, 3), ordered=True),
        ]
    )
    assert huge.discrete_dims == _narrow_discrete_dims(huge) == {2: [0.0, 0.5, 1.0]}
    points = huge.decode(huge.from_unit_cube(_sobol(huge.dim, 64)))
    assert all(huge.contains(p) and type(p["n"]) is type(p["w"]) is int for p in points)
    assert {p["n"] for p in points[-2:]} == {-(10**15), 10**15}
    assert {p["w"] for p in points[-2:]} == {1, 10**15}


def test_log_int_design_is_log_uniform_and_reaches_every_value() -> None:
    space = Space([IntParameter(name="k", bounds=(1, 10_000), log=True)])
    values = [p["k"] for p in space.decode(space.from_unit_cube(_sobol(1, 1024)))]
    assert sum(v < 100 for v in values) / len(values) == pytest.approx(0.5, abs=0.02)
    small = Space([IntParameter(name="k", bounds=(3, 9), log=True)])
    assert {p["k"] for p in small.decode(small.from_unit_cube(_sobol(1, 64)))} == set(range(3, 10))


@settings(max_examples=60, deadline=None)
@given(lo=st.integers(1, 10**6), decades=st.floats(0.01, 10.0), seed=st.integers(0, 2**31 - 1))
def test_log_int_design_points_are_exact_grid_members(lo: int, decades: float, seed: int) -> None:
    """Design points of a log int column are encodings of integers in bounds, exactly as
    ``encode`` writes them (so they sit on the optimiser's grid). Up to 1e13: above ~2e14
    float64 gives neighbouring integers the same log encoding, so no decoding can tell
    them apart (CI drew [41751, 417510000000000] and decoded its top as 417509999999999)."""
    hi = min(max(lo + 1, int(lo * 10**decades)), 10**13)
    space = Space([IntParameter(name="k", bounds=(lo, hi), log=True)])
    X = space.from_unit_cube(_sobol(1, 128, seed))
    points = space.decode(X)
    assert all(lo <= p["k"] <= hi for p in points)
    assert torch.equal(space.encode(points), X)
    assert (points[-2]["k"], points[-1]["k"]) == (lo, hi)


@settings(max_examples=200, deadline=None)
@given(hi=st.integers(10**12, 10**15), fraction=st.floats(0.01, 1.0))
@example(hi=3 * 10**14, fraction=252149690285425 / (3 * 10**14))  # decoded as its neighbour
def test_large_log_ints_survive_encode_decode(hi: int, fraction: float) -> None:
    """Up to 10^15, decode returns the encoded integer wherever float64 tells it from its
    neighbours (above ~2e14 some neighbours share an encoding; then it returns one of them)."""
    space = Space([IntParameter(name="k", bounds=(1, hi), log=True)])
    value = min(max(round(hi * fraction), 2), hi - 1)
    X = space.encode([{"k": value}])
    (back,) = space.decode(X)
    assert torch.equal(space.encode([back]), X)
    distinct = {float(space.encode([{"k": v}])[0, 0]) for v in (value - 1, value, value + 1)}
    if len(distinct) == 3:
        assert back == {"k": value}


@pytest.mark.parametrize("bounds", [(0.5, 30.0), (1e-3, 7.0), (3.0, 1e6)])
def test_a_log_scale_proposal_on_a_bound_is_the_bound(bounds: tuple[float, float]) -> None:
    """``10 ** log10(30)`` is 29.999999999999996: exports showed that where `status` showed
    30 (found in review). An encoded 0 or 1 decodes to the bound itself."""
    space = Space([FloatParameter(name="r", bounds=bounds, log=True)])
    low, high = space.decode(torch.tensor([[0.0], [1.0]], dtype=torch.float64))
    assert (low["r"], high["r"]) == bounds
