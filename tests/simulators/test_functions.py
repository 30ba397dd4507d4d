"""Benchmark functions: known optima, agreement with BoTorch, registry and regret."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from botorch import test_functions as bt
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators import (
    SIMULATORS,
    ParamSpec,
    TestProblem,
    UnknownSimulatorError,
    ackley,
    branin,
    get_problem,
    hartmann6,
    regret,
    rosenbrock,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["branin", "hartmann6", "ackley", "rosenbrock", "flow_reactor"])
def test_value_at_every_known_optimizer_is_the_optimum(name: str) -> None:
    problem = get_problem(name)
    assert problem.optimum is not None and problem.optimizers
    for point in problem.optimizers:
        out = problem.evaluate(point)
        for output, best in problem.optimum.items():
            assert out[output] == pytest.approx(best, abs=1e-5)
            assert abs(regret(problem, out[output])) < 1e-5


def _random_points(problem: TestProblem, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lower = np.array([p.bounds[0] for p in problem.parameters if p.bounds])
    upper = np.array([p.bounds[1] for p in problem.parameters if p.bounds])
    return lower + (upper - lower) * rng.random((n, len(lower)))


@pytest.mark.parametrize(
    ("problem", "reference"),
    [
        (branin(), bt.Branin()),
        (hartmann6(), bt.Hartmann(dim=6)),
        (ackley(4), bt.Ackley(dim=4)),
        (ackley(2), bt.Ackley(dim=2)),
        (rosenbrock(4), bt.Rosenbrock(dim=4)),
        (rosenbrock(3), bt.Rosenbrock(dim=3)),
    ],
    ids=lambda x: getattr(x, "name", type(x).__name__),
)
def test_agrees_with_botorch(problem: TestProblem, reference: bt.SyntheticTestFunction) -> None:
    X = _random_points(problem, 64, seed=0)
    ours = np.array(
        [problem.evaluate(dict(zip(problem.parameter_names, x, strict=True)))["y"] for x in X]
    )
    theirs = reference.evaluate_true(torch.tensor(X, dtype=torch.float64)).numpy()
    # BoTorch keeps Hartmann's constants in float32 buffers: agreement to ~1e-8, not 1e-15.
    tol = 1e-6 if problem.name == "hartmann6" else 1e-10
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol)
    assert problem.optimum is not None
    assert problem.optimum["y"] == pytest.approx(reference.optimal_value, abs=1e-5)


def test_ackley_domain_keeps_optimum_off_centre() -> None:
    problem = ackley()
    centre = {p.name: sum(p.bounds or (0, 0)) / 2 for p in problem.parameters}
    assert all(c != 0.0 for c in centre.values())
    assert problem.evaluate(centre)["y"] > 1.0


def test_registry_names_and_lookup() -> None:
    assert set(SIMULATORS) == {"branin", "hartmann6", "ackley", "rosenbrock", "flow_reactor"}
    assert get_problem("branin") is SIMULATORS["branin"]
    with pytest.raises(TypeError):
        SIMULATORS["x"] = branin()  # type: ignore[index]


def test_unknown_name_is_a_key_error_with_names_and_suggestion() -> None:
    with pytest.raises(KeyError) as info:
        get_problem("flow_reacter")
    err = info.value
    assert isinstance(err, UnknownSimulatorError)
    assert err.suggestion == "flow_reactor"
    text = str(err)
    assert text.startswith("unknown simulator 'flow_reacter'; did you mean 'flow_reactor'?")
    assert all(name in text for name in SIMULATORS)
    with pytest.raises(KeyError, match="choose from"):
        get_problem("zzzzzz")


def test_regret_signs_and_errors() -> None:
    problem = branin()
    assert regret(problem, 1.397887) == pytest.approx(1.0)
    reactor = get_problem("flow_reactor")
    assert reactor.optimum is not None
    assert regret(reactor, reactor.optimum["yield"] - 0.1) == pytest.approx(0.1)
    assert regret(reactor, reactor.optimum["yield"] + 0.01, "yield") < 0  # noisy beats best
    with pytest.raises(ValueError, match="no goal"):
        regret(reactor, 0.1, "impurity")
    unknown = TestProblem(
        "u", (ParamSpec("x", bounds=(0, 1)),), ("y",), lambda d: {"y": 0.0}, {"y": "maximize"}
    )
    with pytest.raises(ValueError, match="unknown"):
        regret(unknown, 0.0)


def test_missing_input_names_it() -> None:
    with pytest.raises(KeyError, match="x2"):
        branin().evaluate({"x1": 0.0})


def test_param_spec_validation_and_helpers() -> None:
    with pytest.raises(ValueError):
        ParamSpec("x", bounds=(1.0, 0.0))
    with pytest.raises(ValueError):
        ParamSpec("x", bounds=(0.0, 1.0), log=True)
    with pytest.raises(ValueError):
        ParamSpec("c", kind="choice", values=("a",))
    with pytest.raises(ValueError):
        ParamSpec("c", kind="choice", values=("a", "a"))
    with pytest.raises(ValueError):
        ParamSpec("x", kind="float")
    n = ParamSpec("n", kind="int", bounds=(1, 4))
    assert n.contains(2) and not n.contains(2.5) and not n.contains(5) and not n.contains("2")
    c = ParamSpec("c", kind="choice", values=("a", "b"), unit=None)
    assert c.limits == ("a", "b") and c.contains("b") and not c.contains("z")
    tau = ParamSpec("tau", bounds=(0.5, 30.0), log=True, unit="min")
    assert tau.as_campaign_dict() == {
        "name": "tau",
        "type": "float",
        "bounds": [0.5, 30.0],
        "log": True,
        "unit": "min",
    }
    assert c.as_campaign_dict() == {"name": "c", "type": "choice", "values": ["a", "b"]}


def test_problem_validation() -> None:
    x = (ParamSpec("x", bounds=(0, 1)),)
    with pytest.raises(ValueError, match="goal"):
        TestProblem("p", x, ("y",), lambda d: {"y": 0.0}, {"z": "minimize"})
    with pytest.raises(ValueError, match="share"):
        TestProblem("p", x, ("x",), lambda d: {"x": 0.0}, {"x": "minimize"})
    with pytest.raises(ValueError):
        TestProblem("p", x, ("y",), lambda d: {"y": 0.0}, {"y": "up"})  # type: ignore[dict-item]


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(SIMULATORS)), data=st.data())
def test_every_point_in_bounds_evaluates_to_finite_floats(name: str, data: st.DataObject) -> None:
    problem = SIMULATORS[name]
    point = {}
    for p in problem.parameters:
        if p.kind == "choice":
            point[p.name] = data.draw(st.sampled_from(p.values or ()))
        else:
            lo, hi = p.bounds or (0.0, 0.0)
            point[p.name] = data.draw(st.floats(lo, hi, allow_nan=False))
    out = problem.evaluate(point)
    assert set(out) == set(problem.outputs)
    assert all(type(v) is float and math.isfinite(v) for v in out.values())


def test_package_is_a_leaf() -> None:
    """simulators imports neither the other packages nor torch/botorch (cheap to import)."""
    code = (
        "import sys, simulators; "
        "bad = [m for m in ('planners', 'instruments', 'loop', 'torch', 'botorch') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
