"""Issue 3's goals benchmark: several objectives, outcome constraints and a mixed space.

Drives the planners directly on test functions (no RunEngine, no store), one process, one
torch thread, problems and seeds in sequence:

* ``branincurrin`` (2-D, 2 objectives, minimised) and ``dtlz2`` (6-D, 3 objectives,
  minimised): hypervolume of the trials' true outputs after ``--trials`` trials, against the
  fixed reference points BoTorch ships with the problems (BraninCurrin ``[18, 6]``, DTLZ2
  ``[1.1, 1.1, 1.1]``), also as a fraction of the problem's maximum hypervolume;
* ``hartmann6_l1`` (6-D Hartmann, minimised, subject to the outcome constraint
  ``l1 <= 3`` with ``l1 = sum(x)``, observed as an output like any other; half of the cube is
  feasible; the global minimum -3.32237 has ``l1 = 2.07``, so it is also the constrained
  optimum): final feasible regret and the fraction of feasible proposals after the initial
  design;
* ``mixed_ackley`` (3 floats in [-2, 2], an int in [0, 8], a 3-way categorical; minimised;
  optimum 0 at ``cat = a, k = 2, x = (0.5, -0.5, 0.2)``): regret of the best trial. Each
  category shifts the Ackley bowl, has its own best integer and a constant offset, so a
  planner has to learn the categorical, the integer and the floats together;
* ``flow_reactor`` (the simulator's reactor: 3 floats, one log-scale, and the catalyst
  choice; maximise yield, noiseless): regret of the best trial.

Planners: ``botorch`` (this project's), ``sobol`` (the baseline) and ``ax`` (Ax 1.x through
:class:`planners.AxPlanner`). Each problem fixes its initial design size for all planners.

Results go to a new file, ``results/goals-<UTC date-time>.json`` (``--out`` names another),
rewritten after every run; the tracked files in ``results/`` are written only when named.

    .venv/bin/python benchmarks/goals.py --problems branincurrin dtlz2 --planners sobol ax
    .venv/bin/python benchmarks/goals.py --report benchmarks/results/goals.json --markdown
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from botorch.test_functions import Hartmann
from botorch.test_functions.multi_objective import DTLZ2, BraninCurrin
from botorch.utils.multi_objective.hypervolume import Hypervolume
from botorch.utils.multi_objective.pareto import is_non_dominated

from planners import (
    ChoiceParameter,
    FloatParameter,
    InitialDesign,
    IntParameter,
    Objective,
    Observation,
    PlannerConfig,
    Point,
    SobolPlanner,
    Space,
)
from planners._protocol import OutcomeConstraint

sys.path.insert(0, str(Path(__file__).resolve().parent))  # _trees, when run from elsewhere
from _trees import dated_results  # noqa: E402


@dataclass
class Problem:
    """A benchmark problem: space, goals and a noiseless evaluation."""

    name: str
    kind: str  # "moo", "constrained" or "single"
    space: Space
    objectives: list[Objective]
    evaluate: Callable[[Point], dict[str, float]]
    n_initial: int
    trials: int
    outcome_constraints: list[OutcomeConstraint] = field(default_factory=list)
    ref_point: list[float] | None = None  # minimisation units, for "moo"
    max_hv: float | None = None
    optimum: float | None = None  # best objective value (min or max per objective's goal)


def _floats(names: list[str], lo: float, hi: float) -> list[FloatParameter]:
    return [FloatParameter(name=n, bounds=(lo, hi)) for n in names]


def _vector(point: Point, names: list[str]) -> torch.Tensor:
    return torch.tensor([[float(point[n]) for n in names]], dtype=torch.float64)


def branincurrin() -> Problem:
    fn = BraninCurrin()
    names = ["x0", "x1"]

    def evaluate(point: Point) -> dict[str, float]:
        y = fn.evaluate_true(_vector(point, names))[0]
        return {"f1": float(y[0]), "f2": float(y[1])}

    ref = [float(v) for v in fn._ref_point]
    return Problem(
        "branincurrin",
        "moo",
        Space(_floats(names, 0.0, 1.0)),
        [
            Objective(name="f1", goal="minimize", reference_point=ref[0]),
            Objective(name="f2", goal="minimize", reference_point=ref[1]),
        ],
        evaluate,
        n_initial=6,
        trials=40,
        ref_point=ref,
        max_hv=float(fn._max_hv),
    )


def dtlz2() -> Problem:
    fn = DTLZ2(dim=6, num_objectives=3)
    names = [f"x{i}" for i in range(6)]

    def evaluate(point: Point) -> dict[str, float]:
        y = fn.evaluate_true(_vector(point, names))[0]
        return {f"f{j + 1}": float(y[j]) for j in range(3)}

    ref = [float(v) for v in fn._ref_point]
    return Problem(
        "dtlz2",
        "moo",
        Space(_floats(names, 0.0, 1.0)),
        [Objective(name=f"f{j + 1}", goal="minimize", reference_point=ref[j]) for j in range(3)],
        evaluate,
        n_initial=10,
        trials=40,
        ref_point=ref,
        max_hv=float(fn._max_hv),
    )


def hartmann6_l1() -> Problem:
    fn = Hartmann(dim=6)
    names = [f"x{i}" for i in range(6)]

    def evaluate(point: Point) -> dict[str, float]:
        x = _vector(point, names)
        return {"f": float(fn.evaluate_true(x)[0]), "l1": float(x.sum())}

    return Problem(
        "hartmann6_l1",
        "constrained",
        Space(_floats(names, 0.0, 1.0)),
        [Objective(name="f", goal="minimize")],
        evaluate,
        n_initial=10,
        trials=40,
        outcome_constraints=[OutcomeConstraint(name="l1", op="<=", bound=3.0, text="l1 <= 3")],
        optimum=float(fn.optimal_value),
    )


_MIXED = {  # category: (shift of the float optimum, best integer, offset)
    "a": ((0.5, -0.5, 0.2), 2, 0.0),
    "b": ((-1.0, 0.8, 0.0), 6, 0.5),
    "c": ((0.0, 0.0, -1.2), 4, 1.0),
}


def _ackley(z: np.ndarray) -> float:
    d = len(z)
    a = -20.0 * math.exp(-0.2 * math.sqrt(float(np.sum(z**2)) / d))
    b = -math.exp(float(np.sum(np.cos(2 * math.pi * z))) / d)
    return a + b + 20.0 + math.e


def mixed_ackley() -> Problem:
    names = ["x0", "x1", "x2"]

    def evaluate(point: Point) -> dict[str, float]:
        shift, k_best, offset = _MIXED[str(point["cat"])]
        z = np.array([float(point[n]) for n in names]) - np.array(shift)
        return {"f": _ackley(z) + 0.25 * (int(point["k"]) - k_best) ** 2 + offset}

    return Problem(
        "mixed_ackley",
        "single",
        Space(
            [
                *_floats(names, -2.0, 2.0),
                IntParameter(name="k", bounds=(0, 8)),
                ChoiceParameter(name="cat", values=("a", "b", "c")),
            ]
        ),
        [Objective(name="f", goal="minimize")],
        evaluate,
        n_initial=8,
        trials=30,
        optimum=0.0,
    )


def flow_reactor() -> Problem:
    from simulators import get_problem

    problem = get_problem("flow_reactor")
    parameters: list[FloatParameter | ChoiceParameter] = []
    for spec in problem.parameters:
        if spec.kind == "choice":
            parameters.append(ChoiceParameter(name=spec.name, values=tuple(spec.values or ())))
        else:
            lo, hi = spec.bounds or (0.0, 1.0)
            parameters.append(
                FloatParameter(
                    name=spec.name, bounds=(float(lo), float(hi)), log=spec.log, unit=spec.unit
                )
            )
    space = Space(parameters)

    def evaluate(point: Point) -> dict[str, float]:
        return {k: float(v) for k, v in problem.evaluate(point).items()}

    return Problem(
        "flow_reactor",
        "single",
        space,
        [Objective(name="yield", goal="maximize")],
        evaluate,
        n_initial=6,
        trials=30,
        optimum=float((problem.optimum or {})["yield"]),
    )


PROBLEMS: dict[str, Callable[[], Problem]] = {
    "branincurrin": branincurrin,
    "dtlz2": dtlz2,
    "hartmann6_l1": hartmann6_l1,
    "mixed_ackley": mixed_ackley,
    "flow_reactor": flow_reactor,
}


def make(planner: str, problem: Problem, seed: int) -> Any:
    config = PlannerConfig(initial=InitialDesign(n=problem.n_initial))
    if planner == "sobol":
        return SobolPlanner(problem.space, seed)
    if planner == "ax":
        from planners._ax import AxPlanner

        return AxPlanner(
            problem.space,
            problem.objectives,
            config,
            seed,
            outcome_constraints=problem.outcome_constraints,
        )
    if planner == "botorch":
        from planners import BoTorchPlanner

        return BoTorchPlanner(
            problem.space,
            problem.objectives,
            config,
            seed,
            outcome_constraints=problem.outcome_constraints,  # type: ignore[call-arg]
        )
    raise SystemExit(f"unknown planner {planner}")


def hypervolume(Y: np.ndarray, ref: list[float]) -> float:
    """Hypervolume of minimised outputs ``Y`` (``n x m``) dominating ``ref``."""
    if len(Y) == 0:
        return 0.0
    signed = -torch.tensor(Y, dtype=torch.float64)
    ref_t = -torch.tensor(ref, dtype=torch.float64)
    better = (signed > ref_t).all(dim=-1)
    signed = signed[better]
    if len(signed) == 0:
        return 0.0
    front = signed[is_non_dominated(signed)]
    return float(Hypervolume(ref_point=ref_t).compute(front))


def run_one(problem: Problem, planner_name: str, seed: int) -> dict[str, Any]:
    planner = make(planner_name, problem, seed)
    points: list[Point] = []
    outputs: list[dict[str, float]] = []
    latency: list[float] = []
    kinds: list[str] = []
    for _ in range(problem.trials):
        t0 = time.perf_counter()
        (point,) = planner.suggest(1, pending=[])
        latency.append(time.perf_counter() - t0)
        kinds.append(planner.last_kinds[0])
        problem.space.validate(point)
        out = problem.evaluate(point)
        points.append(point)
        outputs.append(out)
        planner.ingest([Observation(parameters=point, outputs=out)])
    result: dict[str, Any] = {
        "problem": problem.name,
        "planner": planner_name,
        "seed": seed,
        "latency_median": statistics.median(latency[problem.n_initial :] or latency),
        "kinds": kinds,
    }
    names = [o.name for o in problem.objectives]
    if problem.kind == "moo":
        Y = np.array([[o[n] for n in names] for o in outputs])
        assert problem.ref_point is not None
        result["hypervolume"] = hypervolume(Y, problem.ref_point)
        result["hv_trace"] = [
            hypervolume(Y[: k + 1], problem.ref_point) for k in range(9, len(Y), 10)
        ]
        return result
    objective = problem.objectives[0]
    sign = objective.sign
    feasible = [all(c.satisfied(o) for c in problem.outcome_constraints) for o in outputs]
    values = [o[objective.name] for o, ok in zip(outputs, feasible, strict=True) if ok]
    assert problem.optimum is not None
    best = max((sign * v for v in values), default=-math.inf)
    result["regret"] = sign * problem.optimum - best if values else math.inf
    if problem.outcome_constraints:
        post = feasible[problem.n_initial :]
        result["feasible_post_initial"] = sum(post) / len(post) if post else math.nan
        result["n_feasible"] = sum(feasible)
    return result


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = np.quantile(values, [0.25, 0.5, 0.75])
    return float(q[0]), float(q[1]), float(q[2])


def report(problem: Problem, results: list[dict[str, Any]]) -> None:
    if not results:
        return
    print(f"\n## {problem.name}: {problem.trials} trials, {problem.n_initial} initial")
    for planner in dict.fromkeys(r["planner"] for r in results):
        rs = [r for r in results if r["planner"] == planner]
        lat = statistics.median(r["latency_median"] for r in rs)
        if problem.kind == "moo":
            hv = [r["hypervolume"] for r in rs]
            q1, med, q3 = quartiles(hv)
            frac = med / problem.max_hv if problem.max_hv else float("nan")
            print(
                f"  {planner:8s} hypervolume median {med:.4f} [{q1:.4f}, {q3:.4f}] "
                f"({100 * frac:.1f} % of max {problem.max_hv:.4f}) | suggest {lat:.2f}s | "
                "per seed " + " ".join(f"{v:.4f}" for v in hv)
            )
            continue
        reg = [r["regret"] for r in rs]
        q1, med, q3 = quartiles(reg)
        line = (
            f"  {planner:8s} regret median {med:.4g} [{q1:.4g}, {q3:.4g}] | suggest {lat:.2f}s"
            " | per seed " + " ".join(f"{v:.4g}" for v in reg)
        )
        if problem.outcome_constraints:
            fe = [r["feasible_post_initial"] for r in rs]
            line += (
                f" | feasible after initial: median {100 * statistics.median(fe):.0f} % "
                "(" + ", ".join(f"{100 * f:.0f}" for f in fe) + ")"
            )
        print(line)


def markdown(results: list[dict[str, Any]]) -> None:
    """The README's tables (one row per problem and planner) from results."""
    print("| problem | planner | seeds | median [q1, q3] | per seed | suggest (s) |")
    print("|---|---|---|---|---|---|")
    for name, build in PROBLEMS.items():
        problem = build()
        for planner in ("botorch", "ax", "sobol"):
            rs = [
                r
                for r in results
                if r["problem"] == name and r["planner"] == planner and "error" not in r
            ]
            if not rs:
                continue
            key = "hypervolume" if problem.kind == "moo" else "regret"
            values = [r[key] for r in rs]
            q1, med, q3 = quartiles(values)
            lat = statistics.median(r["latency_median"] for r in rs)
            cell = f"{key} {med:.4g} [{q1:.4g}, {q3:.4g}]"
            if problem.kind == "moo" and problem.max_hv:
                cell += f" ({100 * med / problem.max_hv:.0f} % of max)"
            if problem.outcome_constraints:
                fe = [r["feasible_post_initial"] for r in rs]
                cell += f"; feasible after initial {100 * statistics.median(fe):.0f} %"
            per = ", ".join(f"{v:.3g}" for v in values)
            print(f"| {name} | {planner} | {len(rs)} | {cell} | {per} | {lat:.1f} |")


def report_file(paths: list[str], as_markdown: bool = False) -> None:
    """Print the tables from results JSON files (of one or several runs)."""
    results: list[dict[str, Any]] = []
    for path in paths:
        results.extend(json.loads(Path(path).read_text()))
    if as_markdown:
        markdown(results)
        return
    for name, build in PROBLEMS.items():
        rs = [r for r in results if r["problem"] == name and "error" not in r]
        if rs:
            problem = build()
            problem.trials = int(rs[0].get("trials", problem.trials))
            report(problem, rs)
    for r in results:
        if "error" in r:
            print(f"  error: {r['problem']} {r['planner']} seed {r['seed']}: {r['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--planners", nargs="+", default=["botorch", "sobol", "ax"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed-offset", type=int, default=0)
    parser.add_argument("--trials", type=int, help="override every problem's trial count")
    parser.add_argument(
        "--out",
        help="results JSON (default: a new results/goals-<UTC date-time>.json; the tracked "
        "results/goals.json only if named)",
    )
    parser.add_argument(
        "--report", nargs="+", metavar="JSON", help="only print the tables of earlier runs"
    )
    parser.add_argument("--markdown", action="store_true", help="with --report: README tables")
    ns = parser.parse_args()
    if ns.report:
        report_file(ns.report, ns.markdown)
        return
    torch.set_num_threads(1)
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, one process, torch threads = 1")

    # Seeds outermost and the results file rewritten after every run: a run cut short still
    # leaves complete seeds of every problem and planner (report them with --report).
    everything: list[dict[str, Any]] = []
    problems = {name: PROBLEMS[name]() for name in ns.problems}
    for problem in problems.values():
        problem.trials = ns.trials or problem.trials
    out = Path(ns.out) if ns.out else dated_results("goals")
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"results in {out}", flush=True)
    t_start = time.perf_counter()
    for seed in range(ns.seed_offset, ns.seed_offset + ns.seeds):
        for name, problem in problems.items():
            for planner in ns.planners:
                t0 = time.perf_counter()
                try:
                    r = run_one(problem, planner, seed)
                except Exception as exc:  # a broken planner must not lose the other runs
                    r = {"problem": name, "planner": planner, "seed": seed, "error": repr(exc)}
                r["wall"] = time.perf_counter() - t0
                r["trials"] = problem.trials
                everything.append(r)
                out.write_text(json.dumps(everything, indent=1, default=str))
                print(f"  .. {name} {planner} seed {seed}: {r['wall']:.0f}s", flush=True)
    for name, problem in problems.items():
        report(problem, [r for r in everything if r["problem"] == name and "error" not in r])
    for r in everything:
        if "error" in r:
            print(f"  error: {r['problem']} {r['planner']} seed {r['seed']}: {r['error']}")
    print(f"\nwall {time.perf_counter() - t_start:.0f}s; results in {out}")


if __name__ == "__main__":
    main()
