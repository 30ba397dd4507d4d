"""The search space: typed parameters and their encoding for models and optimisers.

The space lives in ``planners`` (not ``loop``) because every planner needs it and planners must
not import the loop. The campaign schema in ``loop.config`` uses these very models as its
``parameters`` field, so there is one definition of a parameter in the whole code base.

Encoding (``Space.encode``) maps a point (``dict`` name -> value) to one tensor column per
*varying* parameter (``Space.columns``), chosen so that BoTorch's mixed optimiser can search it
exactly, with no rounding after the fact:

* ``float``: the value (its ``log10`` if ``log``) scaled to ``[0, 1]``; continuous.
* ``int``: the value (its ``log10`` if ``log``) scaled to ``[0, 1]``; discrete, the allowed
  column values are ``Space.discrete_dims[i]`` for ranges of at most ``MAX_ENUMERATED_INTS``
  values. Wider ranges are relaxed to a continuous column (snapped to the integers by
  ``decode``) and never listed value by value: a range may be 10^15 wide.
* ``choice`` with ``ordered: true``: the index of the value over ``k - 1``, in ``[0, 1]``;
  discrete (neighbouring levels are neighbours for the GP and the local search).
* ``choice``: the index of the value in ``values``; categorical, ``Space.cat_dims[i]``.
  The models see it one-hot (``planners/_transforms.py``; Ax's model alike), one input per
  value, so a model-based campaign's unordered choices have at most ``MAX_CATEGORIES``
  values in all (:func:`check_categories`).
* ``fixed``: no column. It belongs to the campaign and is sent to the instrument, so
  ``decode`` adds it and ``validate`` fills it in (and refuses any other value).

Membership (``Space.validate``) is types and bounds, then the parameter constraints
(``planners/_constraints.py``), then, for a space given as a finite table of candidates
(enumerated datasets), being one of its rows.

torch is imported inside the methods that make tensors, not at the top: the campaign schema
(``loop.config``) builds a ``Space`` to check a campaign file, and ``closedloop validate`` and
``status`` should not pay the ~3 s import of torch for that.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from planners._constraints import ParameterConstraint, parse_constraints

if TYPE_CHECKING:  # torch is imported where tensors are made (see the module docstring)
    import torch
    from torch import Tensor

logger = logging.getLogger(__name__)

ChoiceValue = str | int | float | bool
Point = dict[str, Any]

# Integer parameters with at most this many values are optimised by discrete local search;
# wider ones by BoTorch's continuous relaxation (still snapped to the integer grid on decode).
MAX_ENUMERATED_INTS = 512
_FINITE_LIMIT = 1e15
# A point given as numbers is the candidate row it matches within this distance in the
# encoded space (CSV round trips and readbacks move floats by a few ulps).
_CANDIDATE_TOL = 1e-9

#: Values of unordered choices, summed over a space's parameters, that a model-based
#: campaign may have (:func:`check_categories`). The GP sees each value as an input column
#: of its own, and a suggest's memory grows with the columns times the points it scores at
#: once times the observations the acquisition keeps: a model that cannot tell values apart
#: keeps them all. One BoTorch suggest on 2 floats and one unordered choice (one torch
#: thread; ``benchmarks/README.md``): 200 values 0.7 s at 15 observations, 1.3-1.8 s at
#: 100, 4.5 s and 1.6 GB at 500; 700 values at 100 observations 33 s and 9 GB, 1000 values
#: 59 s and 11.6 GB; 99 000 values gave up after 30 s and 5.6 GB for a design point.
#: Ordered choices are one column whatever their number (99 000 levels: 0.6 s).
MAX_CATEGORIES = 200
#: The planner kinds that fit a model over the encoded space (sobol and random fit none).
_MODEL_KINDS = frozenset({"botorch", "ax"})


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Identifier used in constraints, devices and exports.",
    )
    unit: str | None = Field(
        default=None, description="Physical unit as the lab writes it, e.g. degC, min, eq, wt%."
    )

    @field_validator("unit")
    @classmethod
    def _label(cls, unit: str | None) -> str | None:
        """A label, shown beside the parameter (status, report, plan): any text a lab uses.

        Not checked against pint here: eq, equiv, wt%, sccm or mTorr are units chemists
        write daily and pint does not parse (a scientist's file was refused for them). Where
        a unit is *converted* (an instrument input's ``device_units``), the instrument file's
        check parses it with pint and names the file, the line and the fix.
        """
        if unit is None:
            return None
        if not unit.strip() or len(unit) > 40 or any(ord(ch) < 32 for ch in unit):
            raise ValueError(
                f"unit {unit!r} is not a label: write it as it should be shown, e.g. degC, "
                "mL/min, eq, wt% (one line, at most 40 characters), or leave it out"
            )
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
    """One of a finite list of values: categorical, or ordered levels with ``ordered``."""

    type: Literal["choice"] = "choice"
    values: tuple[ChoiceValue, ...] = Field(description="At least two distinct values.")
    ordered: bool = Field(
        default=False,
        description="The values are levels in this order (e.g. low, medium, high): the model "
        "treats neighbours as similar. Unordered values are categories.",
    )

    @field_validator("values")
    @classmethod
    def _check(cls, values: tuple[ChoiceValue, ...]) -> tuple[ChoiceValue, ...]:
        if len(values) < 2:
            raise ValueError(
                "a choice needs at least two values; use type: fixed for a single value"
            )
        if len({repr(v) for v in values}) != len(values):
            raise ValueError("choice values must be distinct")
        for value in values:
            # NaN equals nothing, itself included: a proposal of it would be "not one of the
            # values" wherever membership is checked (the instrument's limits, the store).
            _check_finite(value, "choice values must be finite numbers or text")
        return values


class FixedParameter(_Param):
    """A value that every trial uses: sent to the instrument, never searched."""

    type: Literal["fixed"] = "fixed"
    value: ChoiceValue = Field(description="The value every trial uses.")

    @field_validator("value")
    @classmethod
    def _finite(cls, value: ChoiceValue) -> ChoiceValue:
        return _check_finite(value, "a fixed value must be a finite number or text")


def _check_finite(value: ChoiceValue, message: str) -> ChoiceValue:
    """``value`` unless it is a non-finite float (``.nan``, ``.inf`` in YAML)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(message)
    return value


Parameter = Annotated[
    FloatParameter | IntParameter | ChoiceParameter | FixedParameter,
    Field(discriminator="type"),
]
AnyParameter = FloatParameter | IntParameter | ChoiceParameter | FixedParameter
Column = FloatParameter | IntParameter | ChoiceParameter


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


class TooManyCategories(ValueError):
    """Unordered choices with more values in all than a model takes (``MAX_CATEGORIES``).

    Attributes:
        index: the position in the parameters of the choice with the most values, where
            the fix most likely goes (the campaign loader points at its ``values``).
        fix: what to write instead.
    """

    def __init__(self, message: str, *, index: int, fix: str) -> None:
        super().__init__(message)
        self.index = index
        self.fix = fix


def check_categories(parameters: Sequence[AnyParameter], kind: str = "botorch") -> None:
    """Raise :class:`TooManyCategories` if planner ``kind`` fits a model and the unordered
    choices among ``parameters`` have more than ``MAX_CATEGORIES`` values in all.

    Not a validator of ``ChoiceParameter``: the campaign loader applies it to a campaign
    file, while a campaign stored with more values before the cap keeps going as it was
    accepted, with a warning (``loop.config._Rules.added``); a schema-level refusal would
    have left it unreadable. Ordered choices are not counted: the model sees one column
    (the level's position) whatever their number. Nor are ``sobol`` and ``random``
    campaigns capped: they fit no model, and a design over any number of values is cheap.
    """
    if kind not in _MODEL_KINDS:
        return
    counts = {
        i: len(p.values)
        for i, p in enumerate(parameters)
        if isinstance(p, ChoiceParameter) and not p.ordered
    }
    total = sum(counts.values())
    if total <= MAX_CATEGORIES:
        return
    index = max(counts, key=lambda i: counts[i])  # the first of the largest
    name = parameters[index].name
    if len(counts) == 1:
        what = f"choice '{name}' has {total} values"
    else:
        listed = ", ".join(f"{parameters[i].name}: {k}" for i, k in counts.items())
        what = f"the unordered choices have {total} values in all ({listed})"
    raise TooManyCategories(
        f"{what}; the model of planner kind {kind} takes each value of an unordered choice "
        f"as an input of its own, and at most {MAX_CATEGORIES} in all (more can make one "
        "suggest take minutes and gigabytes of memory)",
        index=index,
        fix=(
            f"if the values of '{name}' are levels in an order, add `ordered: true` (one "
            "input, any number of levels); if they number items (wells, samples, "
            "positions), make it an `int` parameter with bounds; for a table of measured "
            "candidates, describe each by numbers in a lookup dataset (`instrument: "
            "{dataset: table.csv, spec: table.yaml}` with `enumerated: true`; README: "
            "Simulated labs from real measurements); or use planner kind sobol or random, "
            "which fit no model"
        ),
    )


class InvalidPoint(ValueError):
    """A point that is not a member of the space (names, type, bounds, constraint, table)."""


class Space:
    """An ordered collection of parameters with an exact tensor encoding.

    Args:
        parameters: the parameters, in campaign order; fixed ones get no encoded column.
        constraints: parameter constraints as text (see ``planners/_constraints.py``), e.g.
            ``"temperature + 2 * residence_time <= 150"``.
        candidates: optional finite table of points, the only ones allowed (an enumerated
            dataset). Rows are validated (a row outside the bounds is an error naming it);
            rows that break a constraint are dropped; repeated rows are kept once.

    Attributes:
        parameters: all parameters, in the order given.
        names: their names.
        columns: the varying parameters, in encoded column order.
        fixed: name -> value of the fixed parameters.
        constraints: the parsed constraints.
        candidates: the validated candidate rows, or ``None``.

    Raises:
        ValueError: no varying parameter, duplicate names, a bad candidate row.
        ConstraintError: a constraint that cannot be parsed (a ``ValueError`` with ``index``).
    """

    def __init__(
        self,
        parameters: Sequence[AnyParameter],
        constraints: Sequence[str] = (),
        candidates: Sequence[Mapping[str, Any]] | None = None,
    ):
        if not parameters:
            raise ValueError("a space needs at least one parameter")
        names = [p.name for p in parameters]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate parameter names in {names}")
        self.parameters: tuple[AnyParameter, ...] = tuple(parameters)
        self.names: tuple[str, ...] = tuple(names)
        self.columns: tuple[Column, ...] = tuple(
            p for p in parameters if not isinstance(p, FixedParameter)
        )
        if not self.columns:
            raise ValueError(
                "every parameter is fixed; a campaign needs at least one parameter to vary"
            )
        self.column_names: tuple[str, ...] = tuple(p.name for p in self.columns)
        self.fixed: dict[str, ChoiceValue] = {
            p.name: p.value for p in parameters if isinstance(p, FixedParameter)
        }
        self.constraints: tuple[ParameterConstraint, ...] = parse_constraints(
            constraints, self.parameters
        )
        self.candidates: tuple[Point, ...] | None = None
        self._candidate_index: dict[tuple[str, ...], int] = {}
        if candidates is not None:
            self._set_candidates(candidates)
        # planners._room.check_room passed: asked by the loader, then by the planner
        self.room_checked = False

    def _set_candidates(self, rows: Sequence[Mapping[str, Any]]) -> None:
        kept: list[Point] = []
        dropped = 0
        for i, row in enumerate(rows):
            try:
                point = self._validate_box(row)
            except InvalidPoint as exc:
                raise ValueError(f"candidate row {i}: {exc}") from None
            if self._violated(point) is not None:
                dropped += 1
                continue
            key = self._key(point)
            if key not in self._candidate_index:
                self._candidate_index[key] = len(kept)
                kept.append(point)
        if dropped:
            logger.info("%d candidate rows break a parameter constraint and are left out", dropped)
        if not kept:
            raise ValueError(
                f"none of the {len(rows)} candidate rows satisfies the parameter constraints"
                if rows
                else "the candidate table is empty"
            )
        self.candidates = tuple(kept)

    # ----------------------------------------------------------------- structure
    @property
    def dim(self) -> int:
        """Number of encoded columns ``d`` (fixed parameters have none)."""
        return len(self.columns)

    @property
    def bounds(self) -> torch.Tensor:
        """``2 x d`` float64 bounds of the encoded space."""
        import torch

        upper = [
            float(len(p.values) - 1) if isinstance(p, ChoiceParameter) and not p.ordered else 1.0
            for p in self.columns
        ]
        return torch.tensor([[0.0] * self.dim, upper], dtype=torch.float64)

    @property
    def continuous_dims(self) -> list[int]:
        return [i for i, p in enumerate(self.columns) if isinstance(p, FloatParameter)]

    @property
    def discrete_dims(self) -> dict[int, list[float]]:
        """Integer and ordered-choice columns searched on their grid, and its encoded values.

        An integer column with more than ``MAX_ENUMERATED_INTS`` values is left out: it is
        searched as a continuous column (the relaxation ``decode`` snaps back to the
        integers), and listing each value of a range up to 10^15 wide would not fit in memory.
        """
        out: dict[int, list[float]] = {}
        for i, p in enumerate(self.columns):
            if isinstance(p, IntParameter):
                lo, hi = p.bounds
                if hi - lo + 1 <= MAX_ENUMERATED_INTS:
                    out[i] = [_scale(p, v) for v in range(lo, hi + 1)]
            elif isinstance(p, ChoiceParameter) and p.ordered:
                k = len(p.values)
                out[i] = [j / (k - 1) for j in range(k)]
        return out

    @property
    def cat_dims(self) -> dict[int, list[float]]:
        """Categorical (unordered choice) columns and their allowed encoded values (indices)."""
        return {
            i: [float(k) for k in range(len(p.values))]
            for i, p in enumerate(self.columns)
            if isinstance(p, ChoiceParameter) and not p.ordered
        }

    def cardinality(self) -> float:
        """Number of points (``inf`` when any parameter is continuous), before constraints.

        A candidate table holds feasible rows only. For the count after parameter
        constraints (when a finite space is exhausted), see
        ``planners._baselines.feasible_cardinality``.
        """
        if self.candidates is not None:
            return float(len(self.candidates))
        n = 1.0
        for p in self.columns:
            if isinstance(p, FloatParameter):
                return math.inf
            n *= len(p.values) if isinstance(p, ChoiceParameter) else p.bounds[1] - p.bounds[0] + 1
        return n

    # ----------------------------------------------------------------- encoding
    def encode(self, points: Sequence[Mapping[str, Any]]) -> torch.Tensor:
        """Encode points to an ``n x d`` float64 tensor (see the module docstring)."""
        import torch

        rows = [[self._encode_one(p, point[p.name]) for p in self.columns] for point in points]
        return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), self.dim)

    def decode(self, X: torch.Tensor) -> list[Point]:
        """Decode an ``n x d`` tensor to points, snapping to the nearest allowed value.

        Snapping only corrects floating-point noise of optimisers that already search the
        discrete columns on their grid. With a candidate table, each row becomes the nearest
        candidate (in the encoded space). Types and bounds always hold; parameter constraints
        are the optimiser's job, and ``validate`` checks them.
        """
        import torch

        X = X.detach().to(torch.float64).reshape(-1, self.dim).cpu()
        if self.candidates is not None:
            return [dict(self.candidates[j]) for j in self._nearest_candidates(X)[1].tolist()]
        points: list[Point] = []
        for x in X:
            point: Point = {}
            values = iter(float(u) for u in x)
            for p in self.parameters:
                if isinstance(p, FixedParameter):
                    point[p.name] = p.value
                else:
                    point[p.name] = self._decode_one(p, next(values))
            points.append(point)
        return points

    def _encode_one(self, p: Column, value: Any) -> float:
        if isinstance(p, ChoiceParameter):
            k = _choice_index(p, value)
            return k / (len(p.values) - 1) if p.ordered else float(k)
        return _scale(p, value)

    def _decode_one(self, p: Column, u: float) -> Any:
        if isinstance(p, ChoiceParameter):
            k = len(p.values)
            index = u * (k - 1) if p.ordered else u
            return p.values[int(round(min(max(index, 0.0), k - 1)))]
        u = min(max(u, 0.0), 1.0)
        lo, hi = p.bounds
        if p.log:
            value = 10 ** (math.log10(lo) + u * (math.log10(hi) - math.log10(lo)))
        else:
            value = lo + u * (hi - lo)
        if isinstance(p, IntParameter):
            k = int(min(max(round(value), lo), hi))
            return _snap_log_int(p, u, k) if p.log else k
        for bound in (lo, hi):
            # a proposal on a bound is the bound: ``10 ** log10(30)`` is 29.999999999999996,
            # which the exports showed where status showed 30 (found in review)
            if abs(value - bound) <= 1e-12 * max(abs(bound), 1e-300):
                return float(bound)
        return float(min(max(value, lo), hi))

    def torch_values(self, X: Tensor) -> dict[str, Tensor]:
        """Raw numeric values of the numeric columns of encoded ``X`` (``... x d``).

        What constraints are evaluated on, with torch ops so BoTorch can differentiate:
        floats are unscaled (``10 **`` for log), ints and ordered levels are snapped to their
        grid with a straight-through estimator (value of the snapped point, gradient of the
        relaxed one). Choice columns with non-numeric values are left out.
        """
        import torch

        out: dict[str, Tensor] = {}
        for i, p in enumerate(self.columns):
            u = X[..., i]
            if isinstance(p, ChoiceParameter):
                if not (p.ordered and all(_is_number(v) for v in p.values)):
                    continue
                k = len(p.values)
                levels = torch.tensor([float(v) for v in p.values], dtype=X.dtype)
                pos = (u * (k - 1)).clamp(0, k - 1)
                j = pos.detach().round().long()
                out[p.name] = levels[j] + (pos - pos.detach())
                continue
            u = u.clamp(0.0, 1.0)
            lo, hi = (float(b) for b in p.bounds)
            if p.log:
                llo, lhi = math.log10(lo), math.log10(hi)
                value = torch.pow(10.0, llo + u * (lhi - llo))
            else:
                value = lo + u * (hi - lo)
            if isinstance(p, IntParameter):
                value = value + (value.detach().round().clamp(lo, hi) - value.detach())
            else:
                value = value.clamp(lo, hi)
            out[p.name] = value
        return out

    def feasible(self, X: Tensor) -> Tensor:
        """Boolean ``n``: rows of encoded ``X`` (``n x d``) whose decoded points satisfy every
        parameter constraint (bounds and types always hold after decoding)."""
        import torch

        ok = torch.ones(X.shape[:-1], dtype=torch.bool)
        if not self.constraints:
            return ok
        values = self.torch_values(X.detach().to(torch.float64))
        for c in self.constraints:
            ok &= c.feasible_torch(values)
        return ok

    # ----------------------------------------------------------------- membership
    def validate(self, point: Mapping[str, Any]) -> Point:
        """Return ``point`` coerced to the parameters' types, or raise ``InvalidPoint``.

        Fixed parameters may be left out (they are filled in). Used on prior data, on told
        results and by tests on every proposal.
        """
        out = self._validate_box(point)
        violated = self._violated(out)
        if violated is not None:
            raise InvalidPoint(
                f"point {out} violates constraints[{violated.index}] ({violated.text!r})"
            )
        if self.candidates is not None:
            j = self._candidate_index.get(self._key(out))
            if j is None:
                distance, index = self._nearest_candidates(self.encode([out]))
                if float(distance[0]) > _CANDIDATE_TOL:
                    raise InvalidPoint(
                        f"point {out} is not one of the {len(self.candidates)} candidate points"
                    )
                j = int(index[0])
            return dict(self.candidates[j])
        return out

    def coerce(self, point: Mapping[str, Any]) -> Point:
        """``point`` coerced to the parameters' types and checked against the box (names,
        types, bounds, fixed values), not against the constraints: what a point *is*, for
        comparing points (``planners._baselines.point_key``), where evaluating every
        constraint on every measured point at every suggest cost most of a suggest."""
        return self._validate_box(point)

    def check_measured(self, point: Mapping[str, Any]) -> None:
        """Whether ``point`` can be a measured point of this space: its names, each value of
        its parameter's type (a choice one of its values, a number finite), a fixed one at
        its value; the bounds and constraints are not checked (prior data and readbacks may
        lie outside them, and a planner learns from them there).

        Raises:
            InvalidPoint: naming what is wrong.
        """
        if not isinstance(point, Mapping):
            raise InvalidPoint(f"parameters {point!r} are not a mapping of name -> value")
        missing = [n for n in self.names if n not in point and n not in self.fixed]
        extra = [k for k in point if k not in self.names]
        if missing or extra:
            raise InvalidPoint(
                f"parameters {dict(point)} have "
                + "; ".join(
                    part
                    for part in (
                        f"no value for {', '.join(missing)}" if missing else "",
                        f"unknown names {', '.join(map(str, extra))}" if extra else "",
                    )
                    if part
                )
                + f" (the space's parameters: {', '.join(self.names)})"
            )
        for p in self.parameters:
            if p.name not in point:
                continue
            v = point[p.name]
            if isinstance(p, FixedParameter):
                if not _same_value(v, p.value):
                    raise InvalidPoint(f"{p.name}={v!r} but the parameter is fixed to {p.value!r}")
            elif isinstance(p, ChoiceParameter):
                _choice_index(p, v)
            elif isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating):
                raise InvalidPoint(f"{p.name}={v!r} is not a number")
            elif not math.isfinite(float(v)):
                raise InvalidPoint(f"{p.name}={v!r} is not finite")

    def measured(self, point: Mapping[str, Any]) -> Point:
        """``point`` coerced to the parameters' types as a measured point (see
        :meth:`check_measured`): outside the bounds or the constraints is allowed, a value
        its parameter cannot represent is not (an int that is not whole, a log-scale value
        that is not positive, a point off a candidate table).

        Prior data measured before the space was narrowed lies there, and a model learns
        from it there; refusing it made the user delete real measurements (found in review).

        Raises:
            InvalidPoint: naming what is wrong.
        """
        self.check_measured(point)
        out: Point = {}
        for p in self.parameters:
            if isinstance(p, FixedParameter):
                out[p.name] = p.value
                continue
            v = point[p.name]
            if isinstance(p, ChoiceParameter):
                out[p.name] = p.values[_choice_index(p, v)]
            elif isinstance(p, IntParameter):
                if float(v) != int(v):
                    raise InvalidPoint(f"{p.name}={v!r} is not an integer")
                out[p.name] = int(v)
            else:
                out[p.name] = float(v)
            if isinstance(p, _Bounded) and p.log and not float(out[p.name]) > 0:
                raise InvalidPoint(f"{p.name}={v!r} is not positive, and {p.name} is log-scale")
        if self.candidates is not None:
            return self.validate(out)  # a table's points are the only ones there are
        return out

    def _validate_box(self, point: Mapping[str, Any]) -> Point:
        """Names, types and bounds (and fixed values), no constraints or table."""
        missing = [n for n in self.names if n not in point and n not in self.fixed]
        extra = [k for k in point if k not in self.names]
        if missing or extra:
            raise InvalidPoint(f"point {dict(point)} has missing {missing} / unknown {extra} names")
        out: Point = {}
        for p in self.parameters:
            if isinstance(p, FixedParameter):
                if p.name in point and not _same_value(point[p.name], p.value):
                    raise InvalidPoint(
                        f"{p.name}={point[p.name]!r} but the parameter is fixed to {p.value!r}"
                    )
                out[p.name] = p.value
                continue
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

    def _violated(self, point: Point) -> ParameterConstraint | None:
        return next((c for c in self.constraints if not c.satisfied(point)), None)

    def contains(self, point: Mapping[str, Any]) -> bool:
        try:
            self.validate(point)
        except InvalidPoint:
            return False
        return True

    def _key(self, point: Point) -> tuple[str, ...]:
        return tuple(repr(point[n]) for n in self.column_names)

    # ----------------------------------------------------------------- candidates
    @cached_property
    def encoded_candidates(self) -> Tensor:
        """``N x d`` encoded candidate rows (empty when the space has no table)."""
        import torch

        if self.candidates is None:
            return torch.empty(0, self.dim, dtype=torch.float64)
        return self.encode(self.candidates)

    def candidate_index(self, point: Mapping[str, Any]) -> int | None:
        """Row of the candidate table that ``point`` is (``None``: not a member / no table)."""
        if self.candidates is None:
            return None
        try:
            member = self.validate(point)
        except InvalidPoint:
            return None
        return self._candidate_index.get(self._key(member))

    def _nearest_candidates(self, X: Tensor, chunk: int = 4096) -> tuple[Tensor, Tensor]:
        """Distance to and index of the nearest candidate row of each row of ``X``."""
        import torch

        C = self.encoded_candidates
        scale = self.bounds[1]  # categorical indices span k - 1; weigh every column alike
        best_d = torch.full((X.shape[0],), math.inf, dtype=torch.float64)
        best_i = torch.zeros(X.shape[0], dtype=torch.long)
        for start in range(0, C.shape[0], chunk):
            part = C[start : start + chunk]
            d, i = torch.cdist(X / scale, part / scale).min(dim=-1)
            better = d < best_d
            best_d = torch.where(better, d, best_d)
            best_i = torch.where(better, i + start, best_i)
        return best_d, best_i

    # ----------------------------------------------------------------- sampling
    def sample_uniform(self, n: int, generator: torch.Generator) -> list[Point]:
        """Up to ``n`` independent uniform points (uniform in the encoded, i.e. log, scale).

        Points breaking a parameter constraint are dropped (so fewer may come back); with a
        candidate table, rows are drawn uniformly (with replacement).
        """
        import torch

        if self.candidates is not None:
            rows = torch.randint(len(self.candidates), (n,), generator=generator)
            return [dict(self.candidates[j]) for j in rows.tolist()]
        U = torch.rand(n, self.dim, generator=generator, dtype=torch.float64)
        X = self.from_unit_cube(U)
        return self.decode(X[self.feasible(X)])

    def from_unit_cube(self, U: torch.Tensor) -> torch.Tensor:
        """Map ``n x d`` points of ``[0, 1]^d`` (e.g. Sobol) to encoded points.

        Categorical, ordered and linear integer columns get equal-width cells per value, so
        a uniform or low-discrepancy design stays balanced over the values. A ``log`` integer
        column is log-uniform instead, as ``log`` promises: ``U`` is read as the encoded
        (log) coordinate and snapped to the nearest integer, as ``decode`` does. Integers are
        computed, never looked up in a list of every value (ranges may be 10^15 wide).
        """
        import torch

        X = U.clone().to(torch.float64)
        for i, p in enumerate(self.columns):
            if _is_categorical(p):
                k = len(p.values)  # type: ignore[union-attr]
                X[:, i] = torch.clamp(torch.floor(U[:, i] * k), max=k - 1)
            elif isinstance(p, ChoiceParameter):  # ordered
                k = len(p.values)
                grid = torch.tensor([j / (k - 1) for j in range(k)], dtype=torch.float64)
                idx = torch.clamp(torch.floor(U[:, i] * k), 0, k - 1).long()
                X[:, i] = grid[idx]
            elif isinstance(p, IntParameter):
                X[:, i] = _int_from_unit(p, U[:, i])
        return X


def _is_categorical(p: AnyParameter) -> bool:
    return isinstance(p, ChoiceParameter) and not p.ordered


def _scale(p: FloatParameter | IntParameter, value: float) -> float:
    lo, hi = p.bounds
    if p.log:
        return (math.log10(value) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    return (float(value) - lo) / (hi - lo)


# Steps ``_snap_log_int`` may walk from the rounded value: float64 ``10 ** x`` near 1e15 is off
# by a few units, never by dozens.
_MAX_SNAP_STEPS = 64


def _snap_log_int(p: IntParameter, u: float, k: int) -> int:
    """The integer of log column ``p`` whose encoding is exactly ``u``, if one lies near
    ``k`` (the rounded decoded value), else ``k``.

    Near 1e14 and above, float64 ``10 ** x`` can be off by more than 0.5, so rounding alone
    could turn an encoded integer into a neighbour and ``decode(encode(point))`` changed the
    point. Where float64 cannot tell neighbours apart at all (the top of a log range reaching
    ~2e14 or more), several integers share ``u`` and no decoding can return each of them;
    ``k`` or the nearest one is returned, so ``encode(decode(X)) == X`` still holds. Values
    of ``u`` between grid values (an optimiser's relaxed column) keep ``k``.
    """
    here = _scale(p, k)
    if here == u:
        return k
    lo, hi = p.bounds
    step = 1 if here < u else -1
    j = k
    for _ in range(_MAX_SNAP_STEPS):
        j += step
        if not lo <= j <= hi:
            break
        there = _scale(p, j)
        if there == u:
            return j
        if (there > u) == (step > 0):  # walked past u: it is no integer's encoding
            break
    return k


def _int_from_unit(p: IntParameter, U: Tensor) -> Tensor:
    """Encoded integers of column ``p`` for unit-interval coordinates ``U`` (a vector).

    Linear: one equal-width cell per value, cell ``j`` is ``lower + j`` (bit-for-bit the values the
    former per-integer lookup table gave, so seeded designs did not change). Log: ``U`` is
    the log coordinate, rounded to the nearest integer as ``decode`` rounds. Encodings are
    computed with ``_scale`` (Python's ``math.log10``), once per distinct value, so they are
    exactly what ``encode`` gives for the same integer.
    """
    import torch

    lo, hi = p.bounds
    if not p.log:
        n = hi - lo + 1
        idx = torch.clamp(torch.floor(U * n), 0, n - 1)
        return idx.to(torch.float64) / float(hi - lo)
    llo, lhi = math.log10(lo), math.log10(hi)
    values = torch.pow(10.0, llo + U.to(torch.float64).clamp(0.0, 1.0) * (lhi - llo))
    values = values.round().clamp(lo, hi)
    distinct, inverse = torch.unique(values, return_inverse=True)
    span = lhi - llo  # _scale's expression, inlined: a wide range can give 10^6 distinct values
    encoded = [(math.log10(int(v)) - llo) / span for v in distinct.tolist()]
    return torch.tensor(encoded, dtype=torch.float64).reshape(-1)[inverse]


def _choice_index(p: ChoiceParameter, value: Any) -> int:
    for k, v in enumerate(p.values):
        if type(v) is type(value) and v == value:
            return k
    for k, v in enumerate(p.values):  # tolerate 1 vs 1.0 and "1" from CSV/CLI input
        if str(v) == str(value) or (_is_number(v) and _is_number(value) and v == value):
            return k
    raise InvalidPoint(f"{p.name}={value!r} is not one of {list(p.values)}")


def _same_value(given: Any, fixed: ChoiceValue) -> bool:
    """A fixed parameter's value as read back from a store, CSV or device (1 vs 1.0, "1")."""
    if type(given) is type(fixed) and given == fixed:
        return True
    if _is_number(given) and _is_number(fixed):
        return math.isclose(float(given), float(fixed), rel_tol=1e-12, abs_tol=1e-12)
    return str(given) == str(fixed)


def _is_number(value: Any) -> bool:
    """A real number that is not a bool (``True == 1`` must not select choice ``1``)."""
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )
