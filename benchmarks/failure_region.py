"""Benchmark: does the planner learn where experiments fail and stop proposing there?

Branin (minimised, x0 in [-5, 10], x1 in [0, 15]) with a deterministic failing region over
one of its three global minima, (pi, 2.275): ``1.5 < x0 < 7.5 and x1 < 7.5``, a 6 x 7.5 box,
i.e. 20 % of the space (measured below by Monte Carlo with the simulators' own expression
evaluator). A trial there fails (the planner gets ``outcome='failed'``, no numbers), as a
simulator with ``failing_region`` would do. The other two minima stay reachable, so the
regret (best successful value minus Branin's optimum 0.397887) can still reach 0.

Planner-level loop, as ``benchmarks/planner_tuning.py``: 5 initial Sobol points (the design
continues past failures until 5 trials succeeded), 30 trials, 5 seeds, ``--workers`` processes
of one torch thread each; ``learn_failures=True`` against ``False``. Reported: the fraction of
post-initial (``model``) proposals that land in the region, per seed and median, and the
final regret.

    .venv/bin/python benchmarks/failure_region.py
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from typing import Any

import numpy as np
import torch
from botorch.test_functions import Branin

from planners import (
    BoTorchPlanner,
    BoTorchSettings,
    FloatParameter,
    InitialDesign,
    Objective,
    Observation,
    PlannerConfig,
    Space,
)
from simulators import parse_expression

REGION = "1.5 < x0 < 7.5 and x1 < 7.5"
BOUNDS = ((-5.0, 10.0), (0.0, 15.0))


def space() -> Space:
    return Space([FloatParameter(name=f"x{i}", bounds=b) for i, b in enumerate(BOUNDS)])


def area_fraction(n: int = 200_000, seed: int = 0) -> float:
    """Monte Carlo estimate of the fraction of the space inside the failing region."""
    fails = parse_expression(REGION, ["x0", "x1"])
    rng = np.random.default_rng(seed)
    lo = np.array([b[0] for b in BOUNDS])
    hi = np.array([b[1] for b in BOUNDS])
    xs = lo + (hi - lo) * rng.random((n, 2))
    return float(np.mean([bool(fails({"x0": a, "x1": b})) for a, b in xs]))


def run_one(args: tuple[int, bool, int, int]) -> dict[str, Any]:
    seed, learn, trials, n_init = args
    torch.set_num_threads(1)
    fn = Branin()
    fails = parse_expression(REGION, ["x0", "x1"])
    sp = space()
    planner = BoTorchPlanner(
        sp,
        [Objective(name="f", goal="minimize")],
        PlannerConfig(initial=InitialDesign(n=n_init)),
        seed=seed,
        settings=BoTorchSettings(learn_failures=learn),
    )
    best = float("inf")
    n_model = in_region = failed = 0
    for _ in range(trials):
        (point,) = planner.suggest(1)
        inside = bool(fails(point))
        failed += inside
        if planner.last_kinds == ["model"]:
            n_model += 1
            in_region += inside
        if inside:
            planner.ingest([Observation(parameters=point, outcome="failed")])
            continue
        x = torch.tensor([[point["x0"], point["x1"]]], dtype=torch.float64)
        f = float(fn.evaluate_true(x))
        best = min(best, f)
        planner.ingest([Observation(parameters=point, outputs={"f": f})])
    model_timings = [t.total for t in planner.timings if t.n_model]
    return {
        "seed": seed,
        "learn": learn,
        "fraction": in_region / n_model if n_model else 0.0,
        "in_region": in_region,
        "n_model": n_model,
        "failed": failed,
        "regret": best - fn.optimal_value,
        "latency": statistics.median(model_timings) if model_timings else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--initial", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    ns = parser.parse_args()

    print(f"failing region: {REGION!r} on Branin {BOUNDS}")
    print(f"area fraction (Monte Carlo, 200k points): {area_fraction():.4f}")
    print(
        f"{ns.initial} initial Sobol points, {ns.trials} trials, {ns.seeds} seeds, "
        f"{ns.workers} worker processes x 1 torch thread"
    )
    jobs = [(s, learn, ns.trials, ns.initial) for learn in (True, False) for s in range(ns.seeds)]
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(ns.workers) as pool:
        results = pool.map(run_one, jobs, chunksize=1)
    for learn in (True, False):
        rs = [r for r in results if r["learn"] == learn]
        fractions = [r["fraction"] for r in rs]
        regrets = [r["regret"] for r in rs]
        print(
            f"learn_failures={learn!s:5s}: in-region fraction of post-initial proposals "
            f"median {statistics.median(fractions):.3f}; regret median "
            f"{statistics.median(regrets):.4f}; suggest median "
            f"{statistics.median(r['latency'] for r in rs):.3f}s"
        )
        for r in rs:
            print(
                f"   seed {r['seed']}: {r['in_region']}/{r['n_model']} in region "
                f"({r['fraction']:.3f}), {r['failed']} failed trials in all, "
                f"regret {r['regret']:.4g}"
            )
    print(f"wall {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
