"""A small, safe expression language over parameter names.

Campaign files carry expressions written by people: a simulator's failing region
(``x1 + x2 > 1.5``) today, parameter constraints (``temperature + 2 * residence_time <= 150``)
tomorrow. Such text must never reach ``eval``/``exec``: a campaign file is input, and input
that can import ``os`` is a remote shell. So the text is parsed by Python's own parser
(``ast.parse`` in ``eval`` mode, which builds a tree and runs nothing) and every node is then
checked against a short list of what is allowed:

* numbers (``int``/``float`` literals, finite) and names of the given parameters;
* arithmetic ``+ - * / **``, unary ``-`` and ``+``;
* comparisons ``< <= > >= == !=`` (chains like ``0 < x1 < 1`` too);
* ``and``, ``or`` and ``not`` over comparisons.

Anything else (attribute access, calls, subscripts, lambdas, strings, ``in``, bitwise
operators, walrus, comprehensions, ...) is an :class:`ExpressionError` naming the offending
construct and its column. The checked tree is compiled into plain Python closures, so
evaluating it never calls ``eval`` either.

Evaluation is IEEE-like rather than raising: ``1 / 0`` is ``inf``, an overflowing power is
``inf``, a power with no real value (``(-8) ** 0.5``) is ``nan``, and a comparison involving
``nan`` is false. A failing region or a constraint must give an answer at every point of
the space, not crash a trial.

This module is the dependency graph's leaf: it imports only the standard library, so any
package may use it.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_EXPRESSION_LENGTH = 1000
MAX_DEPTH = 50
_FLATTEN = str.maketrans("\n\r\t\f\v", "     ")

Value = float | bool
_Node = Callable[[Mapping[str, Any]], Value]


class ExpressionError(ValueError):
    """An expression that is not valid in the safe language, with where it went wrong.

    Attributes:
        text: the expression as given.
        position: 0-based character offset of the offending construct in ``text``, or
            ``None`` when the whole text is at fault (empty, too long).
        problem: what is wrong, without the position.
    """

    def __init__(self, problem: str, *, text: str, position: int | None = None) -> None:
        self.text = text
        self.position = position
        self.problem = problem
        where = f" at column {position + 1}" if position is not None else ""
        shown = text if len(text) <= 80 else text[:77] + "..."
        super().__init__(f"{problem}{where} in expression {shown!r}")


@dataclass(frozen=True)
class Expression:
    """A parsed, checked expression; call :meth:`evaluate` with a point.

    Attributes:
        text: the source text.
        names: the parameter names it uses, in order of first appearance.
        is_condition: ``True`` when it yields a truth value (a comparison, ``and``/``or``/
            ``not``), ``False`` when it yields a number.
    """

    text: str
    names: tuple[str, ...]
    is_condition: bool
    _fn: _Node = field(repr=False, compare=False)

    def evaluate(self, point: Mapping[str, Any]) -> bool | float:
        """The value at ``point`` (parameter name -> number); ``bool`` for a condition.

        Raises:
            KeyError: ``point`` lacks a name the expression uses.
            TypeError: a value in ``point`` is not a real number.
        """
        missing = [n for n in self.names if n not in point]
        if missing:
            raise KeyError(f"expression {self.text!r} needs values for {missing}")
        value = self._fn(point)
        return bool(value) if self.is_condition else float(value)

    def __call__(self, point: Mapping[str, Any]) -> bool | float:
        """Same as :meth:`evaluate`, so an expression can be passed where a predicate is."""
        return self.evaluate(point)


def parse_expression(text: str, names: Collection[str]) -> Expression:
    """Parse ``text`` in the safe language, allowing only the parameter ``names``.

    Args:
        text: the expression, e.g. ``"x1 + x2 > 1.5"``.
        names: the names it may use (numeric parameters).

    Raises:
        ExpressionError: (a ``ValueError``) anything outside the language, an unknown name,
            a non-finite number, empty or overlong text, a condition that names no
            parameter (``1 < 2``); the message names the construct and its column.
    """
    if not isinstance(text, str):
        raise ExpressionError(
            f"an expression must be text, not {type(text).__name__}", text=repr(text)
        )
    if not text.strip():
        raise ExpressionError("the expression is empty", text=text)
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ExpressionError(
            f"the expression is longer than {MAX_EXPRESSION_LENGTH} characters", text=text
        )
    # Line breaks and tabs become spaces (same length, so columns still match the text): an
    # expression is one line of meaning even when YAML wraps it.
    flat = text.translate(_FLATTEN)
    lead = len(flat) - len(flat.lstrip())
    try:
        tree = ast.parse(flat.strip(), mode="eval")
    except SyntaxError as exc:
        offset = exc.offset - 1 + lead if exc.offset else None
        raise ExpressionError(
            f"not a valid expression ({exc.msg})", text=text, position=offset
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, deep nesting
        raise ExpressionError(f"not a valid expression ({exc})", text=text) from None
    checker = _Compiler(text, flat.strip(), lead, frozenset(names))
    fn, is_condition = checker.compile(tree.body, depth=0)
    if is_condition and not checker.used:
        # `1 < 2` holds everywhere and `1 > 2` nowhere: a region or a constraint that does
        # not depend on the point is a mistake (a typo'd name, a unit), never the intent.
        allowed = ", ".join(sorted(names)) or "(none)"
        raise ExpressionError(
            "the condition names no parameter, so it is the same at every point (always "
            f"true or always false); write it over the parameters ({allowed}), e.g. "
            "`x1 + x2 > 1.5`",
            text=text,
        )
    return Expression(
        text=text.strip(), names=tuple(checker.used), is_condition=is_condition, _fn=fn
    )


# ---------------------------------------------------------------------------- safe arithmetic
def _div(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _pow(a: float, b: float) -> float:
    try:
        result = math.pow(a, b)
    except OverflowError:
        return math.inf if a > 0 or float(b).is_integer() and int(b) % 2 == 0 else -math.inf
    except ValueError:  # a negative base to a fractional power, or 0 ** negative
        return math.inf if a == 0 else math.nan
    return result


def _arith(fn: Callable[[float, float], float]) -> Callable[[float, float], float]:
    def safe(a: float, b: float) -> float:
        try:
            return fn(a, b)
        except OverflowError:
            return math.nan

    return safe


_BINARY: dict[type[ast.operator], tuple[str, Callable[[float, float], float]]] = {
    ast.Add: ("+", _arith(operator.add)),
    ast.Sub: ("-", _arith(operator.sub)),
    ast.Mult: ("*", _arith(operator.mul)),
    ast.Div: ("/", _div),
    ast.Pow: ("**", _pow),
}
_COMPARE: dict[type[ast.cmpop], Callable[[float, float], bool]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_FORBIDDEN_HINTS: dict[type[ast.AST], str] = {
    ast.Call: "function calls are not allowed",
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "indexing is not allowed",
    ast.Lambda: "lambda is not allowed",
    ast.NamedExpr: "assignment (:=) is not allowed",
    ast.IfExp: "conditional expressions (x if c else y) are not allowed",
    ast.JoinedStr: "strings are not allowed",
}


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"parameter values in expressions must be numbers, got {value!r}")
    return float(value)


class _Compiler:
    """Checks one tree node by node and builds closures for the allowed ones."""

    def __init__(self, text: str, stripped: str, lead: int, names: frozenset[str]) -> None:
        self.text = text
        self.stripped = stripped
        self.lead = lead
        self.names = names
        self.used: list[str] = []

    def fail(self, node: ast.AST, problem: str) -> ExpressionError:
        return ExpressionError(problem, text=self.text, position=self.position(node))

    def position(self, node: ast.AST) -> int | None:
        col = getattr(node, "col_offset", None)
        if col is None:
            return None
        # ast offsets count UTF-8 bytes of the (single) line; the message counts characters.
        return self.lead + len(self.stripped.encode()[:col].decode(errors="ignore"))

    def compile(self, node: ast.expr, *, depth: int) -> tuple[_Node, bool]:
        """``(closure, is_condition)`` for an allowed node; raise for anything else."""
        if depth > MAX_DEPTH:
            raise self.fail(node, f"the expression nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, ast.Constant):
            return self._constant(node), False
        if isinstance(node, ast.Name):
            return self._name(node), False
        if isinstance(node, ast.UnaryOp):
            return self._unary(node, depth)
        if isinstance(node, ast.BinOp):
            return self._binary(node, depth), False
        if isinstance(node, ast.Compare):
            return self._compare(node, depth), True
        if isinstance(node, ast.BoolOp):
            return self._boolean(node, depth), True
        hint = next(
            (text for kind, text in _FORBIDDEN_HINTS.items() if isinstance(node, kind)),
            f"{type(node).__name__} is not allowed",
        )
        raise self.fail(
            node, f"{hint}; use numbers, parameter names, + - * / **, comparisons, and/or/not"
        )

    def _constant(self, node: ast.Constant) -> _Node:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(node, f"{value!r} is not a number")
        try:
            number = float(value)
        except OverflowError:  # an int literal with hundreds of digits
            number = math.inf
        if not math.isfinite(number):
            raise self.fail(node, f"the number {self._source(node)} is not finite")
        return lambda _point: number

    def _name(self, node: ast.Name) -> _Node:
        name = node.id
        if name not in self.names:
            allowed = ", ".join(sorted(self.names)) or "(none)"
            raise self.fail(node, f"unknown name '{name}'; names allowed: {allowed}")
        if name not in self.used:
            self.used.append(name)
        return lambda point: _number(point[name])

    def _unary(self, node: ast.UnaryOp, depth: int) -> tuple[_Node, bool]:
        operand, is_condition = self.compile(node.operand, depth=depth + 1)
        if isinstance(node.op, ast.Not):
            self._need(node.operand, is_condition, True, "not")
            return (lambda point: not operand(point)), True
        self._need(node.operand, is_condition, False, "unary - and +")
        if isinstance(node.op, ast.USub):
            return (lambda point: -operand(point)), False
        if isinstance(node.op, ast.UAdd):
            return operand, False
        raise self.fail(node, "the operator ~ is not allowed")

    def _binary(self, node: ast.BinOp, depth: int) -> _Node:
        entry = _BINARY.get(type(node.op))
        if entry is None:
            raise self.fail(
                node, f"the operator {type(node.op).__name__} is not allowed; use + - * / **"
            )
        symbol, fn = entry
        if isinstance(node.op, ast.Add | ast.Sub):
            return self._sum(node, depth)
        left, lcond = self.compile(node.left, depth=depth + 1)
        right, rcond = self.compile(node.right, depth=depth + 1)
        self._need(node.left, lcond, False, symbol)
        self._need(node.right, rcond, False, symbol)
        return lambda point: fn(left(point), right(point))

    def _sum(self, node: ast.BinOp, depth: int) -> _Node:
        """``a + b - c + ...`` as one level, its terms added in order: Python nests such a
        chain one level per term, and a sum of 51 parameters ("at most 3 of 51 additives")
        was refused as nesting deeper than ``MAX_DEPTH`` (found in review)."""
        terms: list[tuple[ast.expr, Callable[[float, float], float], str]] = []
        spine: ast.expr = node
        while isinstance(spine, ast.BinOp) and isinstance(spine.op, ast.Add | ast.Sub):
            symbol, fn = _BINARY[type(spine.op)]
            terms.append((spine.right, fn, symbol))
            spine = spine.left
        first, fcond = self.compile(spine, depth=depth + 1)
        self._need(spine, fcond, False, terms[-1][2])
        steps: list[tuple[Callable[[float, float], float], _Node]] = []
        for term, fn, symbol in reversed(terms):
            compiled, cond = self.compile(term, depth=depth + 1)
            self._need(term, cond, False, symbol)
            steps.append((fn, compiled))

        def total(point: Mapping[str, Any]) -> Value:
            value = first(point)
            for fn, term in steps:
                value = fn(value, term(point))  # type: ignore[arg-type]
            return value

        return total

    def _compare(self, node: ast.Compare, depth: int) -> _Node:
        operands: list[_Node] = []
        for child in (node.left, *node.comparators):
            fn, is_condition = self.compile(child, depth=depth + 1)
            self._need(child, is_condition, False, "a comparison")
            operands.append(fn)
        ops: list[Callable[[float, float], bool]] = []
        for op in node.ops:
            fn_op = _COMPARE.get(type(op))
            if fn_op is None:
                raise self.fail(
                    node, f"the comparison {type(op).__name__} is not allowed; use < <= > >= == !="
                )
            ops.append(fn_op)

        def compare(point: Mapping[str, Any]) -> bool:
            values = [operand(point) for operand in operands]
            return all(op(a, b) for op, a, b in zip(ops, values, values[1:], strict=False))

        return compare

    def _boolean(self, node: ast.BoolOp, depth: int) -> _Node:
        parts: list[_Node] = []
        word = "and" if isinstance(node.op, ast.And) else "or"
        for child in node.values:
            fn, is_condition = self.compile(child, depth=depth + 1)
            self._need(child, is_condition, True, word)
            parts.append(fn)
        if isinstance(node.op, ast.And):
            return lambda point: all(part(point) for part in parts)
        return lambda point: any(part(point) for part in parts)

    def _need(self, node: ast.AST, is_condition: bool, want: bool, where: str) -> None:
        if is_condition != want:
            what = "a comparison" if want else "a number"
            got = "a comparison" if is_condition else "a number"
            raise self.fail(node, f"{where} needs {what} here, got {got}")

    def _source(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.stripped, node) or ast.dump(node)
