"""The search space: typed parameters and their encoding for models and optimisers.

The space lives in ``planners`` (not ``loop``) because every planner needs it and planners must
not import the loop. The campaign schema in ``loop.config`` uses these very models as its
``parameters`` field, so there is one definition of a parameter in the whole code base.

Encoding (``Space.encode``) maps a point (``dict`` name -> value) to one tensor column per
parameter, chosen so that BoTorch's mixed optimiser can search it exactly, with no rounding
after the fact:

* ``float``: the value (its ``log10`` if ``log``) scaled to ``[0, 1]``; continuous.
* ``int``: the value (its ``log10`` if ``log``) scaled to ``[0, 1]``; discrete, the allowed
  column values are ``Space.discrete_dims[i]``.
* ``choice``: the index of the value in ``values``; categorical, ``Space.cat_dims[i]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

ChoiceValue = str | int | float | bool
Point = dict[str, Any]

# Integer parameters with at most this many values are optimised by discrete local search;
# wider ones by BoTorch's continuous relaxation (still snapped to the integer grid on decode).
MAX_ENUMERATED_INTS = 512
_FINITE_LIMIT = 1e15


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Identifier used in constraints, devices and exports.",
    )
    unit: str | None = Field(default=None, description="Physical unit, e.g. degC or min.")

    @field_validator("unit")
    @classmethod
    def _known_unit(cls, unit: str | None) -> str | None:
        """A unit pint knows, so exports and instrument conversions can rely on it."""
        if unit is None:
            return None
        try:
            _unit_registry().Unit(unit)
        except Exception:  # pint raises several unrelated types for text it cannot parse
            raise ValueError(
                f"unknown unit {unit!r}; write a unit pint understands, e.g. degC, K, min, s, "
                "mL/min, mol/L, or leave it out"
            ) from None
        return unit


class _Bounded(_Param):
    """A numeric parameter: bounds checked here so errors point at the ``bounds`` key."""

    # `log` is declared before the subclasses' `bounds`, so it is validated when bounds are.
    log: bool = Field(default=False, description="Search log10(value); needs lower > 0.")

    @field_validator("bounds", check_fields=False)
    @classmethod
    def _check(cls, bounds: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        _check_bounds(bounds, bool(info.data.get("log")))
        return bounds


class FloatParameter(_Bounded):
    """A real-valued parameter in ``[lower, upper]``, optionally searched on a log scale."""

    type: Literal["float"] = "float"
    bounds: tuple[float, float] = Field(description="[lower, upper], lower < upper.")


class IntParameter(_Bounded):
    """An integer parameter in ``[lower, upper]`` (both inclusive)."""

    type: Literal["int"] = "int"
    bounds: tuple[int, int] = Field(description="[lower, upper] integers, lower < upper.")


class ChoiceParameter(_Param):
    """One of a finite list of values (categorical: no order is assumed)."""

    type: Literal["choice"] = "choice"
    values: tuple[ChoiceValue, ...] = Field(description="At least two distinct values.")

    @field_validator("values")
    @classmethod
    def _check(cls, values: tuple[ChoiceValue, ...]) -> tuple[ChoiceValue, ...]:
        if len(values) < 2:
            raise ValueError(
                "a choice needs at least two values; use a fixed value in your instrument "
                "instead of a one-value choice"
            )
        if len({repr(v) for v in values}) != len(values):
            raise ValueError("choice values must be distinct")
        return values


Parameter = Annotated[FloatParameter | IntParameter | ChoiceParameter, Field(discriminator="type")]


def _check_bounds(bounds: tuple[float, float], log: bool) -> None:
    lower, upper = bounds
    if not (math.isfinite(lower) and math.isfinite(upper)):
        raise ValueError("bounds must be finite numbers")
    if abs(lower) > _FINITE_LIMIT or abs(upper) > _FINITE_LIMIT:
        raise ValueError(f"bounds must lie within ±{_FINITE_LIMIT:g}; rescale the parameter")
    if not lower < upper:
        raise ValueError(f"bounds [{lower}, {upper}] must be [lower, upper] with lower < upper")
    if log and lower <= 0:
        raise ValueError("a log-scale parameter needs lower bound > 0")


@lru_cache(maxsize=1)
def _unit_registry() -> Any:
    import pint  # only campaigns that name units pay for the registry

    return pint.UnitRegistry()


class InvalidPoint(ValueError):
    """A point that is not a member of the space (wrong names, type, or out of bounds)."""


class Space:
    """An ordered collection of parameters with an exact tensor encoding.

    Args:
        parameters: the parameters, in column order.
    """

    def __init__(self, parameters: Sequence[FloatParameter | IntParameter | ChoiceParameter]):
        if not parameters:
            raise ValueError("a space needs at least one parameter")
        names = [p.name for p in parameters]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate parameter names in {names}")
        self.parameters: tuple[FloatParameter | IntParameter | ChoiceParameter, ...] = tuple(
            parameters
        )
        self.names: tuple[str, ...] = tuple(names)

    # ----------------------------------------------------------------- structure
    @property
    def dim(self) -> int:
        """Number of encoded columns ``d``."""
        return len(self.parameters)

    @property
    def bounds(self) -> torch.Tensor:
        """``2 x d`` float64 bounds of the encoded space."""
        upper = [
            float(len(p.values) - 1) if isinstance(p, ChoiceParameter) else 1.0
            for p in self.parameters
        ]
        return torch.tensor([[0.0] * self.dim, upper], dtype=torch.float64)

    @property
    def continuous_dims(self) -> list[int]:
        return [i for i, p in enumerate(self.parameters) if isinstance(p, FloatParameter)]

    @property
    def discrete_dims(self) -> dict[int, list[float]]:
        """Integer columns and their allowed encoded values (grid of the integers)."""
        out: dict[int, list[float]] = {}
        for i, p in enumerate(self.parameters):
            if isinstance(p, IntParameter):
                lo, hi = p.bounds
                out[i] = [_scale(p, v) for v in range(lo, hi + 1)]
        return out

    @property
    def cat_dims(self) -> dict[int, list[float]]:
        """Categorical columns and their allowed encoded values (indices)."""
        return {
            i: [float(k) for k in range(len(p.values))]
            for i, p in enumerate(self.parameters)
            if isinstance(p, ChoiceParameter)
        }

    def cardinality(self) -> float:
        """Number of points (``inf`` when any parameter is continuous)."""
        n = 1.0
        for p in self.parameters:
            if isinstance(p, FloatParameter):
                return math.inf
            n *= len(p.values) if isinstance(p, ChoiceParameter) else p.bounds[1] - p.bounds[0] + 1
        return n

    # ----------------------------------------------------------------- encoding
    def encode(self, points: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """Encode points to an ``n x d`` float64 tensor (see the module docstring)."""
        rows = [[self._encode_one(p, point[p.name]) for p in self.parameters] for point in points]
        return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), self.dim)

    def decode(self, X: torch.Tensor) -> list[Point]:
        """Decode an ``n x d`` tensor to valid points, snapping to the nearest allowed value.

        Snapping only corrects floating-point noise of optimisers that already search the
        discrete columns on their grid; the result is always a member of the space.
        """
        X = X.detach().to(torch.float64).reshape(-1, self.dim).cpu()
        return [
            {p.name: self._decode_one(p, float(x[i])) for i, p in enumerate(self.parameters)}
            for x in X
        ]

    def _encode_one(self, p: Any, value: Any) -> float:
        if isinstance(p, ChoiceParameter):
            return float(_choice_index(p, value))
        return _scale(p, value)

    def _decode_one(self, p: Any, u: float) -> Any:
        if isinstance(p, ChoiceParameter):
            k = int(round(min(max(u, 0.0), len(p.values) - 1)))
            return p.values[k]
        u = min(max(u, 0.0), 1.0)
        lo, hi = p.bounds
        if p.log:
            value = 10 ** (math.log10(lo) + u * (math.log10(hi) - math.log10(lo)))
        else:
            value = lo + u * (hi - lo)
        if isinstance(p, IntParameter):
            return int(min(max(round(value), lo), hi))
        return float(min(max(value, lo), hi))

    # ----------------------------------------------------------------- membership
    def validate(self, point: Mapping[str, Any]) -> Point:
        """Return ``point`` coerced to the parameters' types, or raise ``InvalidPoint``.

        Used on prior data, on told results and by tests on every proposal.
        """
        missing = [n for n in self.names if n not in point]
        extra = [k for k in point if k not in self.names]
        if missing or extra:
            raise InvalidPoint(f"point {dict(point)} has missing {missing} / unknown {extra} names")
        out: Point = {}
        for p in self.parameters:
            v = point[p.name]
            if isinstance(p, ChoiceParameter):
                out[p.name] = p.values[_choice_index(p, v)]
                continue
            if isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
                raise InvalidPoint(f"{p.name}={v!r} is not a number")
            if not math.isfinite(float(v)):
                raise InvalidPoint(f"{p.name}={v!r} is not finite")
            if isinstance(p, IntParameter):
                if float(v) != int(v):
                    raise InvalidPoint(f"{p.name}={v!r} is not an integer")
                v = int(v)
            lo, hi = p.bounds
            if not lo <= v <= hi:
                raise InvalidPoint(f"{p.name}={v!r} is outside its bounds [{lo}, {hi}]")
            out[p.name] = int(v) if isinstance(p, IntParameter) else float(v)
        return out

    def contains(self, point: Mapping[str, Any]) -> bool:
        try:
            self.validate(point)
        except InvalidPoint:
            return False
        return True

    # ----------------------------------------------------------------- sampling
    def sample_uniform(self, n: int, generator: torch.Generator) -> list[Point]:
        """``n`` independent uniform points (uniform in the encoded, i.e. log, scale)."""
        U = torch.rand(n, self.dim, generator=generator, dtype=torch.float64)
        return self.decode(self.from_unit_cube(U))

    def from_unit_cube(self, U: torch.Tensor) -> torch.Tensor:
        """Map ``n x d`` points of ``[0, 1]^d`` (e.g. Sobol) to encoded points.

        Categorical and integer columns get equal-width cells per value, so a uniform or
        low-discrepancy design stays balanced over the values.
        """
        X = U.clone().to(torch.float64)
        for i, p in enumerate(self.parameters):
            if isinstance(p, ChoiceParameter):
                k = len(p.values)
                X[:, i] = torch.clamp(torch.floor(U[:, i] * k), max=k - 1)
            elif isinstance(p, IntParameter):
                grid = torch.tensor(self.discrete_dims[i], dtype=torch.float64)
                idx = torch.clamp(torch.floor(U[:, i] * len(grid)), max=len(grid) - 1).long()
                X[:, i] = grid[idx]
        return X


def _scale(p: FloatParameter | IntParameter, value: float) -> float:
    lo, hi = p.bounds
    if p.log:
        return (math.log10(value) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    return (float(value) - lo) / (hi - lo)


def _choice_index(p: ChoiceParameter, value: Any) -> int:
    for k, v in enumerate(p.values):
        if type(v) is type(value) and v == value:
            return k
    for k, v in enumerate(p.values):  # tolerate 1 vs 1.0 and "1" from CSV/CLI input
        if str(v) == str(value) or (_is_number(v) and _is_number(value) and v == value):
            return k
    raise InvalidPoint(f"{p.name}={value!r} is not one of {list(p.values)}")


def _is_number(value: Any) -> bool:
    """A real number that is not a bool (``True == 1`` must not select choice ``1``)."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )
