"""Encoding of the search space: exact round trips and membership."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from planners import ChoiceParameter, FloatParameter, IntParameter, InvalidPoint, Space


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
