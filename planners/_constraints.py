"""Parameter constraints: inequalities over parameter values written in campaign files.

A constraint is one comparison between two arithmetic expressions, e.g.
``"temperature + 2 * residence_time <= 150"`` or ``"x1**2 + x2**2 <= 1"``. The text is checked
by the safe parser of ``simulators/_expressions.py`` (never ``eval``), then read here once
more from the same (already validated) tree to decide

* whether it is *affine* in the raw parameter values, found symbolically by walking the tree
  (exact, no sampling: ``x * 2`` is affine, ``x * y`` and ``x ** 2`` are not; a product that
  happens to cancel, ``x * y - y * x``, is reported nonlinear, which is merely slower, never
  wrong), and
* how to evaluate it on tensors, so the same tree drives ``Space.validate`` and BoTorch's
  constrained optimiser (both go through :meth:`ParameterConstraint.slack_torch`; there is one
  definition of "feasible").

What may appear in a constraint: numbers, ``+ - * / **``, unary minus, and names of numeric
parameters: ``float``, ``int``, ``fixed`` with a numeric value (a constant), and ``choice``
with ``ordered: true`` whose values are all numbers (the value, not its index, enters the
constraint). Unordered choices are refused: a category's label has no arithmetic meaning, and a
numeric categorical that is meant to be compared should be declared ordered. Exactly one
comparison: ``<=`` or ``>=``; ``<`` and ``>`` are accepted and treated as ``<=`` and ``>=``
(over real numbers an optimiser cannot tell a strict inequality from its closure, and a point
on the boundary is measurable). ``==``, ``!=``, chains (``0 <= x <= 1``) and ``and``/``or``
are errors with a fix (bounds and fixed parameters cover the equality cases).

A constraint that is affine in raw units is linear in BoTorch's encoded space only if none of
its parameters is searched on a log scale (``log10`` makes ``x + y <= 10`` curved) or is an
ordered choice (its levels need not be evenly spaced): :func:`encoded_linear_constraint`
returns ``None`` for those, and the planner treats them as nonlinear.
"""

from __future__ import annotations

import ast
import difflib
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

# The one exception to "planners never import simulators" (see pyproject.toml): the parser is
# pure standard-library Python, and one safe expression language for the whole project is
# worth more than a second copy of it.
from simulators._expressions import ExpressionError, parse_expression

if TYPE_CHECKING:  # torch is imported where tensors are made: parsing a campaign needs none
    from torch import Tensor

# A point counts as feasible when its slack is >= -_RTOL * (the magnitude of the terms on
# both sides, :func:`_magnitude`): decoding (10 ** log10, scaling) moves values by a few
# ulps, which must not turn a boundary point into a violation. Relative to the terms, not
# to 1 + |lhs| + |rhs| as it was: that floor of 1e-9 in the user's units let parameters in
# litres or metres (`v1 + v2 <= 2e-9`, nanolitres) break their constraint by half (found in
# review), and a tolerance relative to the sides alone would miss cancellation (x - y).
_RTOL = 1e-9
_FLATTEN = str.maketrans("\n\r\t\f\v", "     ")


class ConstraintError(ValueError):
    """A parameter constraint that cannot be used, with which one and how to fix it.

    Attributes:
        index: position of the constraint in the campaign's ``constraints`` list.
        text: the constraint as written.
    """

    def __init__(self, message: str, *, index: int, text: str, fix: str | None = None) -> None:
        self.index = index
        self.text = text
        self.fix = fix  # what to write instead, where one form of the mistake is known
        super().__init__(f"constraint {index} ({text!r}): {message}")


class InfeasibleSpaceError(ValueError):
    """No point satisfying all parameter constraints was found by sampling.

    Attributes:
        draws: points drawn.
        feasible_fraction: estimated fraction of the space that is feasible (an upper bound
            ``1 / draws`` when nothing was found).
    """

    def __init__(
        self, message: str, *, draws: int, feasible_fraction: float, tightest: int | None = None
    ) -> None:
        self.draws = draws
        self.feasible_fraction = feasible_fraction
        self.tightest = tightest  # the most restrictive constraint's index, where known
        super().__init__(message)


Affine = tuple[dict[str, float], float]


@dataclass(frozen=True)
class ParameterConstraint:
    """One parsed constraint ``lhs <= rhs`` or ``lhs >= rhs`` over raw parameter values.

    Attributes:
        text: the constraint as written (stripped).
        index: its position in the campaign's list.
        op: ``<=`` or ``>=`` (``<``/``>`` are read as these).
        names: the varying parameters it uses, in order of appearance (fixed parameters are
            constants and not listed).
        is_linear: affine in the raw parameter values.
        coefficients: for an affine constraint, ``slack = constant + sum(c * value)``
            (``slack >= 0`` is feasible); empty otherwise.
        constant: see ``coefficients``.
    """

    text: str
    index: int
    op: Literal["<=", ">="]
    names: tuple[str, ...]
    is_linear: bool
    coefficients: Mapping[str, float] = field(default_factory=dict)
    constant: float = 0.0
    _lhs: ast.expr = field(repr=False, compare=False, default_factory=lambda: ast.Constant(0))
    _rhs: ast.expr = field(repr=False, compare=False, default_factory=lambda: ast.Constant(0))
    _constants: Mapping[str, float] = field(repr=False, compare=False, default_factory=dict)

    def slack_torch(self, values: Mapping[str, Tensor]) -> Tensor:
        """The slack at tensor-valued raw parameter values (same batch shape).

        ``slack >= 0`` is feasible. Built from torch ops only, so it is differentiable for
        BoTorch's nonlinear constraints.
        """
        lhs = _evaluate(self._lhs, values, self._constants)
        rhs = _evaluate(self._rhs, values, self._constants)
        return rhs - lhs if self.op == "<=" else lhs - rhs

    def feasible_torch(self, values: Mapping[str, Tensor]) -> Tensor:
        """Boolean tensor: where the constraint holds (within rounding); NaN is infeasible."""
        import torch

        slack = self.slack_torch(values)
        scale = _magnitude(self._lhs, values, self._constants) + _magnitude(
            self._rhs, values, self._constants
        )
        # An infinite side (1 / 0) gets no tolerance: -inf slack is a violation, not a tie.
        tolerance = torch.where(torch.isfinite(scale), _RTOL * scale, torch.zeros_like(scale))
        return slack >= -tolerance

    def slack(self, point: Mapping[str, Any]) -> float:
        """The slack at a point (``>= 0`` feasible), in the units of the expression."""
        return float(self.slack_torch(_point_tensors(point, self.names)))

    def satisfied(self, point: Mapping[str, Any]) -> bool:
        """Whether ``point`` (name -> raw value) satisfies the constraint."""
        return bool(self.feasible_torch(_point_tensors(point, self.names)))


def _point_tensors(point: Mapping[str, Any], names: Sequence[str]) -> dict[str, Tensor]:
    import torch

    missing = [n for n in names if n not in point]
    if missing:
        raise KeyError(f"the point has no value for {missing}")
    return {n: torch.tensor(float(point[n]), dtype=torch.float64) for n in names}


# ---------------------------------------------------------------------------- parsing
def parse_constraint(text: Any, index: int, parameters: Sequence[Any]) -> ParameterConstraint:
    """Parse and check one constraint against the campaign's parameters.

    Args:
        text: the constraint, e.g. ``"flow_a * flow_b <= 4"``.
        index: its position in the list (carried by errors).
        parameters: the space's parameter models (duck-typed by ``type``, ``name``, ...).

    Raises:
        ConstraintError: (a ``ValueError``) with ``index`` and a message naming the fix.
    """
    shown = text if isinstance(text, str) else repr(text)
    if not isinstance(text, str):
        raise ConstraintError(
            f"a constraint must be text like 'x1 + x2 <= 1', not {type(text).__name__}",
            index=index,
            text=shown,
        )
    by_name = {p.name: p for p in parameters}
    try:
        expression = parse_expression(text, by_name)
    except ExpressionError as exc:
        raise ConstraintError(_explain(exc, by_name), index=index, text=shown) from None
    if not expression.is_condition:
        raise ConstraintError(
            "a constraint compares two sides with <= or >=, e.g. 'x1 + x2 <= 1'",
            index=index,
            text=shown,
        )
    # Safe: parse_expression has just checked every node of this very text.
    body = ast.parse(text.translate(_FLATTEN).strip(), mode="eval").body
    op = _comparison(body, index, shown, _discrete_only(expression.names, by_name))
    if not isinstance(body, ast.Compare):  # pragma: no cover - _comparison checked it
        raise ConstraintError("not a comparison", index=index, text=shown)
    constants: dict[str, float] = {}
    names: list[str] = []
    for name in expression.names:
        p = by_name[name]
        kind = getattr(p, "type", None)
        if kind == "fixed":
            value = p.value
            if not _is_real(value):
                raise ConstraintError(
                    f"{name} is fixed to {value!r}, not a number; constraints use numeric "
                    "parameters only",
                    index=index,
                    text=shown,
                )
            constants[name] = float(value)
        elif kind in ("float", "int"):
            names.append(name)
        elif kind == "choice" and getattr(p, "ordered", False):
            if not all(_is_real(v) for v in p.values):
                raise ConstraintError(
                    f"{name} is an ordered choice with non-numeric values {list(p.values)}; "
                    "constraints use numeric parameters only",
                    index=index,
                    text=shown,
                )
            names.append(name)
        else:
            raise ConstraintError(
                f"{name} is an unordered choice (a category has no arithmetic value); "
                "constraints use float, int, fixed numeric or ordered numeric choice "
                "parameters: declare it `ordered: true` if its values are levels of a number",
                index=index,
                text=shown,
            )
    if not names:
        raise ConstraintError(
            "it uses no parameter that varies, so it is always true or always false; remove it",
            index=index,
            text=shown,
        )
    lhs, rhs = body.left, body.comparators[0]
    _refuse_non_finite(body, index, shown)
    difference = _affine(ast.BinOp(left=lhs, op=ast.Sub(), right=rhs), constants)
    coefficients: dict[str, float] = {}
    constant = 0.0
    if difference is not None and not all(
        math.isfinite(v) for v in (*difference[0].values(), difference[1])
    ):
        raise ConstraintError(  # finite numbers whose product is not: x1 * 1e200 * 1e200
            "a coefficient of it is no finite number (a float holds at most ±1.8e308)",
            index=index,
            text=shown,
            fix="write numbers whose products stay within ±1e308, or state the parameters "
            "in larger units",
        )
    if difference is not None:
        raw, offset = difference
        sign = -1.0 if op == "<=" else 1.0  # slack = rhs - lhs for <=, lhs - rhs for >=
        coefficients = {n: sign * c for n, c in raw.items() if c != 0.0}
        constant = sign * offset
        if not coefficients and constant < 0:
            raise ConstraintError(
                "its parameters cancel out and what is left is never true; fix or remove it",
                index=index,
                text=shown,
            )
    return ParameterConstraint(
        text=text.strip(),
        index=index,
        op=op,
        names=tuple(names),
        is_linear=difference is not None,
        coefficients=coefficients,
        constant=constant,
        _lhs=lhs,
        _rhs=rhs,
        _constants=constants,
    )


def parse_constraints(
    texts: Sequence[Any], parameters: Sequence[Any]
) -> tuple[ParameterConstraint, ...]:
    """Parse a campaign's ``constraints`` list (see :func:`parse_constraint`)."""
    if isinstance(texts, str):
        texts = [texts]
    return tuple(parse_constraint(t, i, parameters) for i, t in enumerate(texts))


def _discrete_only(names: Sequence[str], by_name: Mapping[str, Any]) -> bool:
    """Whether the varying parameters among ``names`` are all ints: only then can an
    equality be written as two inequalities (see ``_comparison``)."""
    kinds = [getattr(by_name[n], "type", None) for n in names if n in by_name]
    varying = [k for k in kinds if k != "fixed"]
    return bool(varying) and all(k == "int" for k in varying)


def _comparison(body: ast.expr, index: int, text: str, discrete: bool) -> Literal["<=", ">="]:
    """The comparison's direction; ``discrete``: all its varying parameters are ints.

    An equality as a pair of inequalities (``<=`` and ``>=``) leaves a region of zero volume:
    over float parameters no design (rejection sampling) nor optimiser can find a point in
    it, so that hint is given only over integer parameters, where the region still holds
    grid points (which the designs and the BoTorch planner find; Ax's sampler does not).
    """
    if isinstance(body, ast.BoolOp) or (
        isinstance(body, ast.UnaryOp) and isinstance(body.op, ast.Not)
    ):
        raise ConstraintError(
            "write one comparison per constraint: list each part of an 'and' as its own "
            "constraint ('or' and 'not' cannot be used)",
            index=index,
            text=text,
        )
    if not isinstance(body, ast.Compare):  # pragma: no cover - is_condition guarantees it
        raise ConstraintError("not a comparison", index=index, text=text)
    if len(body.ops) != 1:
        raise ConstraintError(
            "a chained comparison (like '0 <= x <= 1') is two constraints: write them as "
            "two entries, or use the parameter's bounds",
            index=index,
            text=text,
        )
    op = body.ops[0]
    if isinstance(op, ast.LtE | ast.Lt):
        return "<="
    if isinstance(op, ast.GtE | ast.Gt):
        return ">="
    if discrete:
        hint = (
            "for an equality fix one parameter with type: fixed, or (its parameters are all "
            "integers) write two inequalities, <= and >= (planner kinds botorch, sobol, "
            "random; not ax)"
        )
    else:
        hint = (
            "for an equality fix one parameter with type: fixed, or drop one and compute it "
            "from the others in the instrument (two inequalities would leave no room to "
            "search over float parameters)"
        )
    raise ConstraintError(
        f"only <= and >= (or < and >) are allowed; {hint}",
        index=index,
        text=text,
    )


def _explain(exc: ExpressionError, by_name: Mapping[str, Any]) -> str:
    message = str(exc)
    match = re.search(r"unknown name '([^']+)'", exc.problem)
    if match:
        unknown = match.group(1)
        close = difflib.get_close_matches(unknown, list(by_name), n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'?" if close else f"parameters: {', '.join(by_name)}"
        where = f" at column {exc.position + 1}" if exc.position is not None else ""
        return f"unknown parameter '{unknown}'{where}; {hint}"
    return message


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------------- numbers
def _refuse_non_finite(node: ast.expr, index: int, text: str) -> None:
    """Refuse a part of the constraint made of numbers alone (``2**2000``, ``1/0``) that is
    no finite float.

    The parser refuses a literal too large for a float (``1e309``), but arithmetic on
    literals can overflow too: ``x1 + x2 >= 2**2000`` was accepted by ``validate`` and then
    held nowhere, so the campaign failed at its first proposal with no line (found in review).
    """
    for sub in ast.walk(node):
        if not isinstance(sub, ast.BinOp | ast.UnaryOp) or any(
            isinstance(n, ast.Name) for n in ast.walk(sub)
        ):
            continue
        value = _number(sub)
        if math.isnan(value):
            raise ConstraintError(
                f"{ast.unparse(sub)} is no real number",
                index=index,
                text=text,
                fix="write the number it stands for (a negative number to a fractional power "
                "has none)",
            )
        if not math.isfinite(value):
            raise ConstraintError(
                f"{ast.unparse(sub)} is no finite number (a float holds at most ±1.8e308)",
                index=index,
                text=text,
                fix="write a number within ±1e308, or state the parameters in larger units",
            )


def _number(node: ast.expr) -> float:
    """The value of a part made of numbers alone, in IEEE arithmetic (an overflow is inf)."""
    if isinstance(node, ast.Constant):
        return _constant(node)
    if isinstance(node, ast.UnaryOp):
        inner = _number(node.operand)
        return -inner if isinstance(node.op, ast.USub) else inner
    if not isinstance(node, ast.BinOp):  # pragma: no cover - the parser allows nothing else
        return math.nan
    a, b = _number(node.left), _number(node.right)
    if isinstance(node.op, ast.Pow):
        try:
            return math.pow(a, b)
        except OverflowError:
            return math.inf
        except ValueError:  # zero to a negative power (1 / 0), or a negative to a fraction
            return math.inf if a == 0.0 else math.nan
    if isinstance(node.op, ast.Div):
        return a / b if b != 0.0 else math.inf
    return {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}.get(type(node.op), math.nan)


# ---------------------------------------------------------------------------- linearity
def _affine(node: ast.expr, constants: Mapping[str, float]) -> Affine | None:
    """``(coefficients, constant)`` if ``node`` is affine in the parameters, else ``None``."""
    if isinstance(node, ast.Constant):
        return {}, _constant(node)
    if isinstance(node, ast.Name):
        if node.id in constants:
            return {}, constants[node.id]
        return {node.id: 1.0}, 0.0
    if isinstance(node, ast.UnaryOp):
        inner = _affine(node.operand, constants)
        if inner is None:
            return None
        return _scale(inner, -1.0) if isinstance(node.op, ast.USub) else inner
    if not isinstance(node, ast.BinOp):  # pragma: no cover - the parser allows nothing else
        return None
    left = _affine(node.left, constants)
    right = _affine(node.right, constants)
    if left is None or right is None:
        return None
    if isinstance(node.op, ast.Add | ast.Sub):
        sign = 1.0 if isinstance(node.op, ast.Add) else -1.0
        coefs = dict(left[0])
        for name, c in right[0].items():
            coefs[name] = coefs.get(name, 0.0) + sign * c
        return coefs, left[1] + sign * right[1]
    if isinstance(node.op, ast.Mult):
        if not left[0]:
            return _scale(right, left[1])
        if not right[0]:
            return _scale(left, right[1])
        return None
    if isinstance(node.op, ast.Div):
        if right[0] or right[1] == 0.0:
            return None
        return _scale(left, 1.0 / right[1])
    if isinstance(node.op, ast.Pow):
        if right[0]:
            return None
        if not left[0]:
            try:
                value = math.pow(left[1], right[1])
            except (OverflowError, ValueError):
                return None
            return ({}, value) if math.isfinite(value) else None
        if right[1] == 1.0:
            return left
        if right[1] == 0.0:
            return {}, 1.0
        return None
    return None  # pragma: no cover


def _constant(node: ast.Constant) -> float:
    value = node.value
    if not isinstance(value, int | float):  # pragma: no cover - the parser allows numbers only
        raise TypeError(f"unexpected constant {value!r}")
    return float(value)


def _scale(affine: Affine, factor: float) -> Affine:
    coefs, constant = affine
    return {n: c * factor for n, c in coefs.items()}, constant * factor


# ---------------------------------------------------------------------------- torch evaluation
def _evaluate(
    node: ast.expr, values: Mapping[str, Tensor], constants: Mapping[str, float]
) -> Tensor:
    """Evaluate a checked arithmetic node with torch ops (IEEE: 1/0 is inf, (-8)**0.5 NaN)."""
    import torch

    if isinstance(node, ast.Constant):
        return torch.tensor(_constant(node), dtype=torch.float64)
    if isinstance(node, ast.Name):
        if node.id in constants:
            return torch.tensor(constants[node.id], dtype=torch.float64)
        return values[node.id]
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, values, constants)
        return -operand if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp):
        left = _evaluate(node.left, values, constants)
        right = _evaluate(node.right, values, constants)
        op: Callable[[Tensor, Tensor], Tensor] | None = _TORCH_OPS.get(type(node.op))
        if op is not None:
            return op(left, right)
    raise TypeError(f"unexpected node {ast.dump(node)}")  # pragma: no cover - parser checked


def _magnitude(
    node: ast.expr, values: Mapping[str, Tensor], constants: Mapping[str, float]
) -> Tensor:
    """The size of the terms of an expression, for the rounding tolerance of its value.

    Sums add their terms' magnitudes (``x - y`` with ``x`` close to ``y`` has the rounding
    of ``x``, not the size of ``x - y``), products multiply them, a quotient divides by its
    divisor's size, a power is its own size. In the units of the expression, so a
    constraint over nanolitres gets a tolerance in nanolitres.
    """
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult)):
        left = _magnitude(node.left, values, constants)
        right = _magnitude(node.right, values, constants)
        return left * right if isinstance(node.op, ast.Mult) else left + right
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        divisor = _evaluate(node.right, values, constants).abs()
        return _magnitude(node.left, values, constants) / divisor
    if isinstance(node, ast.UnaryOp):
        return _magnitude(node.operand, values, constants)
    return _evaluate(node, values, constants).abs()  # a number, a name, a power


# Python's operators dispatch to torch's on tensors (``a / b`` is ``torch.div``, ``a ** b``
# ``torch.pow``), so the table needs no torch import.
_TORCH_OPS: dict[type[ast.operator], Callable[[Tensor, Tensor], Tensor]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}


# ---------------------------------------------------------------------------- encoded space
def encoded_linear_constraint(
    constraint: ParameterConstraint, columns: Sequence[Any]
) -> tuple[Tensor, Tensor, float] | None:
    """BoTorch's ``(indices, coefficients, rhs)`` form (``sum(c * X[i]) >= rhs``) in the encoded
    space, or ``None`` when the constraint is not linear there.

    Encoded columns are ``u = (value - lo) / (hi - lo)`` for linear float and int parameters,
    so an affine raw constraint stays affine. Log-scale parameters (``u`` is linear in
    ``log10 value``) and ordered choices (uneven levels) make it nonlinear. Coefficients are
    normalised to a largest magnitude of 1, and the right-hand side is raised by ``1e-7`` so
    that SLSQP's tolerance (1e-8) can never let a point on the wrong side through.

    Args:
        constraint: a parsed constraint.
        columns: the space's encoded parameters in column order.
    """
    import torch

    if not constraint.is_linear:
        return None
    index = {p.name: i for i, p in enumerate(columns)}
    idx: list[int] = []
    coef: list[float] = []
    offset = constraint.constant
    for name, c in constraint.coefficients.items():
        p = columns[index[name]]
        if getattr(p, "type", None) not in ("float", "int") or getattr(p, "log", False):
            return None
        lo, hi = (float(b) for b in p.bounds)
        idx.append(index[name])
        coef.append(c * (hi - lo))
        offset += c * lo
    if not idx:
        return None  # always true (checked at parse time)
    norm = max(abs(c) for c in coef)
    return (
        torch.tensor(idx, dtype=torch.long),
        torch.tensor([c / norm for c in coef], dtype=torch.float64),
        -offset / norm + 1e-7,
    )
