"""Benchmark problems with known optima, as pure functions of an inputs dict.

Every problem is a :class:`TestProblem`: a search space (:class:`ParamSpec` per input), the
output names, an ``evaluate`` function (inputs dict -> outputs dict, numpy only) and what is
known about its optimum. Keeping the physics a pure function means it can be tested without a
RunEngine and wrapped as Ophyd devices separately (see ``simulators._devices``), the way
ophyd-async's ``PatternGenerator`` separates the pattern from the detector.

The formulas follow the standard definitions (Surjanovic & Bingham's Virtual Library of
Simulation Experiments), which are also the ones ``botorch.test_functions`` implements; the
tests cross-check values against BoTorch. This module must not import torch or BoTorch: the
simulators package is the leaf of the dependency graph and must stay cheap to import.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

ParamKind = Literal["float", "int", "choice"]
Goal = Literal["minimize", "maximize"]
Inputs = Mapping[str, Any]
Outputs = dict[str, float]

_KINDS: tuple[str, ...] = ("float", "int", "choice")
_GOALS: tuple[str, ...] = ("minimize", "maximize")


@dataclass(frozen=True)
class ParamSpec:
    """One input of a problem: its name, kind and domain.

    Deliberately tiny and free of pydantic: the campaign schema (``planners.Space``) owns the
    rich, validated parameter models; this only says what a simulator accepts so that its
    devices can refuse anything else. :meth:`as_campaign_dict` converts it to the campaign-file
    form, so a built-in problem can seed a campaign's ``parameters:`` list.

    Attributes:
        name: Input name; it becomes the actuator's (and the event data key's) name.
        kind: ``"float"``, ``"int"`` or ``"choice"``.
        bounds: ``(lower, upper)``, both inclusive, for ``float`` and ``int``.
        values: The allowed values for ``choice``.
        log: Whether the natural search scale is logarithmic (needs ``lower > 0``).
        unit: Physical unit, e.g. ``"degC"`` or ``"min"``; ``None`` if dimensionless.
    """

    name: str
    kind: ParamKind = "float"
    bounds: tuple[float, float] | None = None
    values: tuple[Any, ...] | None = None
    log: bool = False
    unit: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"parameter {self.name!r}: kind must be one of {_KINDS}")
        if self.kind == "choice":
            if self.values is None or len(self.values) < 2:
                raise ValueError(f"choice parameter {self.name!r} needs at least two values")
            if len(set(self.values)) != len(self.values):
                raise ValueError(f"choice parameter {self.name!r} has repeated values")
            if self.bounds is not None or self.log:
                raise ValueError(f"choice parameter {self.name!r} takes no bounds or log")
            return
        if self.bounds is None or len(self.bounds) != 2:
            raise ValueError(f"{self.kind} parameter {self.name!r} needs bounds (lower, upper)")
        lower, upper = self.bounds
        if not (math.isfinite(lower) and math.isfinite(upper) and lower < upper):
            raise ValueError(f"parameter {self.name!r}: bounds must be finite, lower < upper")
        if self.log and lower <= 0:
            raise ValueError(f"parameter {self.name!r}: a log scale needs lower bound > 0")
        if self.values is not None:
            raise ValueError(f"{self.kind} parameter {self.name!r} takes no values")

    @property
    def limits(self) -> tuple[Any, ...]:
        """``bounds`` for numbers, ``values`` for choices: what an actuator accepts."""
        if self.kind == "choice":
            return tuple(self.values or ())
        return tuple(self.bounds or ())

    def contains(self, value: Any) -> bool:
        """Whether ``value`` lies in the domain (bounds inclusive, choices by equality)."""
        if self.kind == "choice":
            return any(value == v for v in self.values or ())
        lower, upper = self.bounds or (math.nan, math.nan)
        try:
            inside = bool(lower <= value <= upper)
        except TypeError:
            return False
        if self.kind == "int":
            return inside and float(value).is_integer()
        return inside

    def as_campaign_dict(self) -> dict[str, Any]:
        """The campaign-file form (``{name, type, bounds|values, log, unit}``)."""
        out: dict[str, Any] = {"name": self.name, "type": self.kind}
        if self.kind == "choice":
            out["values"] = list(self.values or ())
        else:
            out["bounds"] = list(self.bounds or ())
            if self.log:
                out["log"] = True
        if self.unit is not None:
            out["unit"] = self.unit
        return out


@dataclass(frozen=True, eq=False)
class TestProblem:
    """A benchmark: search space, pure ``evaluate`` and what is known about the optimum.

    Attributes:
        name: Registry name, e.g. ``"branin"``.
        parameters: The inputs, in the order the formula uses them.
        outputs: Names of the outputs ``evaluate`` returns (all of them, always).
        evaluate: Pure function, inputs dict -> outputs dict of floats. It does not check
            bounds (devices do that); missing inputs raise ``KeyError``.
        goal: Direction per optimised output; outputs without a goal are side measurements
            (e.g. the flow reactor's ``cost``), usable as constraints.
        optimum: Best attainable value per goal output, or ``None`` if unknown. Used by
            :func:`regret`.
        optimizers: Inputs dicts at which ``optimum`` is attained (one per known optimiser).
        description: One paragraph for reports and ``closedloop list``.
        metadata: Anything else worth knowing (e.g. per-category optima).
        floors: The least reading per output that can be physical (0 for a yield or a
            concentration): a simulated instrument's noisy reading is raised to it, as a
            real detector reads no negative yield. Without one, a noisy reading of -0.02
            became a campaign's best impurity (found in review).

    Equality is identity (``eq=False``): ``evaluate`` is a function, so value equality would
    be meaningless, and identity keeps problems hashable.
    """

    # Not a pytest test class, despite the name (pytest collects ``Test*`` classes).
    __test__ = False

    name: str
    parameters: tuple[ParamSpec, ...]
    outputs: tuple[str, ...]
    evaluate: Callable[[Inputs], Outputs]
    goal: Mapping[str, Goal]
    optimum: Mapping[str, float] | None = None
    optimizers: tuple[Mapping[str, Any], ...] = ()
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    floors: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise ValueError(f"problem {self.name!r}: parameter names must be unique")
        if len(set(self.outputs)) != len(self.outputs):
            raise ValueError(f"problem {self.name!r}: output names must be unique")
        if set(names) & set(self.outputs):
            raise ValueError(f"problem {self.name!r}: inputs and outputs share a name")
        for out, direction in self.goal.items():
            if out not in self.outputs or direction not in _GOALS:
                raise ValueError(f"problem {self.name!r}: bad goal {out!r}: {direction!r}")
        if not set(self.floors) <= set(self.outputs):
            raise ValueError(f"problem {self.name!r}: floors given for unknown outputs")
        if self.optimum is not None and not set(self.optimum) <= set(self.goal):
            raise ValueError(f"problem {self.name!r}: optimum given for an output with no goal")

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Input names in formula order."""
        return tuple(p.name for p in self.parameters)

    @property
    def bounds(self) -> dict[str, tuple[Any, ...]]:
        """``name -> limits`` (bounds or choices): the form the device builder accepts."""
        return {p.name: p.limits for p in self.parameters}

    def __call__(self, inputs: Inputs) -> Outputs:
        """Shorthand for ``problem.evaluate(inputs)``."""
        return self.evaluate(inputs)


def regret(problem: TestProblem, value: float, output: str | None = None) -> float:
    """Simple regret: how far ``value`` is from the known optimum, in the output's units.

    Positive means worse than the optimum, for either goal direction. It is not clamped: a
    noisy observation can beat the noiseless optimum and give a negative regret, which is
    information a benchmark report should show rather than hide (score the noiseless value,
    ``SimDetector.last_noiseless``, to avoid it).

    Args:
        problem: The benchmark.
        value: The observed (or noiseless) value of ``output``.
        output: Which goal output; may be omitted when the problem has exactly one goal.

    Raises:
        ValueError: if the optimum is unknown or ``output`` is ambiguous or has no goal.
    """
    if output is None:
        if len(problem.goal) != 1:
            raise ValueError(
                f"problem {problem.name!r} has goals for {sorted(problem.goal)}; name the output"
            )
        (output,) = problem.goal
    if output not in problem.goal:
        raise ValueError(f"problem {problem.name!r} has no goal for output {output!r}")
    if problem.optimum is None or output not in problem.optimum:
        raise ValueError(f"problem {problem.name!r}: optimum of {output!r} is unknown")
    best = problem.optimum[output]
    if problem.goal[output] == "minimize":
        return float(value) - best
    return best - float(value)


def _vector(inputs: Inputs, names: Sequence[str]) -> NDArray[np.float64]:
    """Inputs dict -> 1-d float array in formula order, naming any missing input."""
    missing = [n for n in names if n not in inputs]
    if missing:
        raise KeyError(f"missing inputs {missing}; expected {list(names)}")
    return np.array([float(inputs[n]) for n in names], dtype=np.float64)


# --- vectorised formulas: ``X`` is ``n x d``, the result has shape ``n`` --------------------


def branin_array(X: NDArray[np.float64]) -> NDArray[np.float64]:
    """Branin-Hoo on ``n x 2`` points; three global minima of 0.397887."""
    x1, x2 = X[..., 0], X[..., 1]
    b, c, t = 5.1 / (4.0 * math.pi**2), 5.0 / math.pi, 1.0 / (8.0 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6.0) ** 2 + 10.0 * (1.0 - t) * np.cos(x1) + 10.0


_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
_H6_A = np.array(
    [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ]
)
_H6_P = 1e-4 * np.array(
    [
        [1312.0, 1696.0, 5569.0, 124.0, 8283.0, 5886.0],
        [2329.0, 4135.0, 8307.0, 3736.0, 1004.0, 9991.0],
        [2348.0, 1451.0, 3522.0, 2883.0, 3047.0, 6650.0],
        [4047.0, 8828.0, 8732.0, 5743.0, 1091.0, 381.0],
    ]
)


def hartmann6_array(X: NDArray[np.float64]) -> NDArray[np.float64]:
    """Six-dimensional Hartmann on ``n x 6`` points in ``[0, 1]^6``; minimum -3.32237."""
    inner = np.sum(_H6_A * (X[..., None, :] - _H6_P) ** 2, axis=-1)
    return -np.sum(_H6_ALPHA * np.exp(-inner), axis=-1)


def ackley_array(X: NDArray[np.float64]) -> NDArray[np.float64]:
    """Ackley (a=20, b=0.2, c=2 pi) on ``n x d`` points; minimum 0 at the origin."""
    d = X.shape[-1]
    part1 = -20.0 * np.exp(-0.2 * np.sqrt(np.sum(X**2, axis=-1) / d))
    part2 = -np.exp(np.sum(np.cos(2.0 * math.pi * X), axis=-1) / d)
    return part1 + part2 + 20.0 + math.e


def rosenbrock_array(X: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rosenbrock on ``n x d`` points; minimum 0 at ``(1, ..., 1)``."""
    return np.sum(100.0 * (X[..., 1:] - X[..., :-1] ** 2) ** 2 + (X[..., :-1] - 1.0) ** 2, axis=-1)


def _scalar_problem(
    name: str,
    parameters: tuple[ParamSpec, ...],
    formula: Callable[[NDArray[np.float64]], NDArray[np.float64]],
    *,
    optimum: float,
    optimizers: tuple[Mapping[str, Any], ...],
    description: str,
) -> TestProblem:
    """A single-output ``y`` minimisation problem from a vectorised formula."""
    names = tuple(p.name for p in parameters)

    def evaluate(inputs: Inputs) -> Outputs:
        return {"y": float(formula(_vector(inputs, names)))}

    evaluate.__name__ = evaluate.__qualname__ = name
    return TestProblem(
        name=name,
        parameters=parameters,
        outputs=("y",),
        evaluate=evaluate,
        goal={"y": "minimize"},
        optimum={"y": optimum},
        optimizers=optimizers,
        description=description,
    )


def branin() -> TestProblem:
    """Branin-Hoo: 2-d, three global minima; the classic first smoke test for a planner."""
    params = (ParamSpec("x1", bounds=(-5.0, 10.0)), ParamSpec("x2", bounds=(0.0, 15.0)))
    return _scalar_problem(
        "branin",
        params,
        branin_array,
        optimum=0.397887,
        optimizers=(
            {"x1": -math.pi, "x2": 12.275},
            {"x1": math.pi, "x2": 2.275},
            {"x1": 9.42478, "x2": 2.475},
        ),
        description="Branin-Hoo, 2-d, minimise y; three global minima with y = 0.397887.",
    )


def hartmann6() -> TestProblem:
    """Hartmann-6: 6-d, multimodal, one global minimum; the standard BO benchmark."""
    params = tuple(ParamSpec(f"x{i}", bounds=(0.0, 1.0)) for i in range(1, 7))
    xstar = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)
    return _scalar_problem(
        "hartmann6",
        params,
        hartmann6_array,
        optimum=-3.32237,
        optimizers=({f"x{i}": v for i, v in enumerate(xstar, start=1)},),
        description="Hartmann, 6-d on [0, 1]^6, minimise y; 6 local minima, global -3.32237.",
    )


def ackley(dim: int = 4) -> TestProblem:
    """Ackley in ``dim`` dimensions on ``[-5, 10]^dim``.

    The usual domain is ``[-32.768, 32.768]^d``, symmetric about the optimum at the origin;
    the asymmetric box keeps the optimum away from the centre, so a planner that merely
    samples the middle of the space (Sobol's first point, a GP's prior mean) gets no free win.
    """
    if dim < 1:
        raise ValueError("ackley needs dim >= 1")
    params = tuple(ParamSpec(f"x{i}", bounds=(-5.0, 10.0)) for i in range(1, dim + 1))
    return _scalar_problem(
        "ackley",
        params,
        ackley_array,
        optimum=0.0,
        optimizers=({p.name: 0.0 for p in params},),
        description=f"Ackley, {dim}-d on [-5, 10]^{dim}, minimise y; global 0 at the origin.",
    )


def rosenbrock(dim: int = 4) -> TestProblem:
    """Rosenbrock in ``dim`` dimensions on ``[-5, 10]^dim``: a long curved valley."""
    if dim < 2:
        raise ValueError("rosenbrock needs dim >= 2")
    params = tuple(ParamSpec(f"x{i}", bounds=(-5.0, 10.0)) for i in range(1, dim + 1))
    return _scalar_problem(
        "rosenbrock",
        params,
        rosenbrock_array,
        optimum=0.0,
        optimizers=({p.name: 1.0 for p in params},),
        description=f"Rosenbrock, {dim}-d on [-5, 10]^{dim}, minimise y; global 0 at all-ones.",
    )
