"""Scratch harness: regret and suggest latency of the BoTorch planner on test functions.

Runs the planner directly (no loop, no store) on BoTorch's Branin and Hartmann6, minimising
the raw functions, ``--seeds`` seeds per problem, spread over ``--workers`` processes that
each use one torch thread (so latency is per-core on a busy machine, not a 2-thread figure).

    .venv/bin/python benchmarks/planner_tuning.py --problems branin hartmann6 hartmann6_noisy
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import statistics
import time
from typing import Any

import numpy as np
import torch
from botorch.test_functions import Branin, Hartmann

from planners import (
    BoTorchPlanner,
    BoTorchSettings,
    FloatParameter,
    InitialDesign,
    Objective,
    Observation,
    Planner,
    PlannerConfig,
    Space,
)

PROBLEMS: dict[str, dict[str, Any]] = {
    "branin": {"fn": lambda: Branin(), "trials": 30, "noise": 0.0},
    "hartmann6": {"fn": lambda: Hartmann(dim=6), "trials": 40, "noise": 0.0},
    "hartmann6_noisy": {"fn": lambda: Hartmann(dim=6), "trials": 40, "noise": 0.1},
}


def make_space(problem: str) -> Space:
    """The problem's box as a closedloop space (``x0``, ``x1``, ...)."""
    bounds = PROBLEMS[problem]["fn"]().bounds.tolist()
    return Space(
        [
            FloatParameter(name=f"x{i}", bounds=(lo, hi))
            for i, (lo, hi) in enumerate(zip(bounds[0], bounds[1], strict=True))
        ]
    )


def run_trials(planner: Planner, problem: str, seed: int, n_initial: int) -> dict[str, Any]:
    """One sequential run of ``planner`` on ``problem``: the protocol every planner shares.

    The planner sees ``f + noise * N(0, 1)`` (noise drawn from ``default_rng(10_000 + seed)``,
    one draw per trial, so every planner meets the same noise sequence); the regret scores
    the best *noiseless* value among the points tried. ``latency`` is the wall time of each
    suggest after the first ``n_initial`` (the model-based ones).
    """
    spec = PROBLEMS[problem]
    fn = spec["fn"]()
    space = make_space(problem)
    rng = np.random.default_rng(10_000 + seed)
    best = float("inf")
    latency: list[float] = []
    for trial in range(spec["trials"]):
        t0 = time.perf_counter()
        (point,) = planner.suggest(1)
        if trial >= n_initial:
            latency.append(time.perf_counter() - t0)
        x = torch.tensor([[point[n] for n in space.names]], dtype=torch.float64)
        f = float(fn.evaluate_true(x))
        best = min(best, f)
        y = f + spec["noise"] * float(rng.standard_normal())
        planner.ingest([Observation(parameters=point, outputs={"f": y})])
    return {
        "problem": problem,
        "seed": seed,
        "regret": best - fn.optimal_value,
        "latency": latency,
    }


def run_one(args: tuple[str, int, dict[str, Any], str, int]) -> dict[str, Any]:
    problem, seed, settings_kw, acquisition, n_init = args
    torch.set_num_threads(1)
    planner = BoTorchPlanner(
        make_space(problem),
        [Objective(name="f", goal="minimize")],
        PlannerConfig(initial=InitialDesign(n=n_init), acquisition=acquisition),
        seed=seed,
        settings=BoTorchSettings(**settings_kw),
    )
    result = run_trials(planner, problem, seed, n_init)
    model_timings = [t for t in planner.timings if t.n_model]
    result["latency"] = [t.total for t in model_timings]
    result["fit"] = [t.fit for t in model_timings]
    result["optimize"] = [t.optimize for t in model_timings]
    return result


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = np.quantile(values, [0.25, 0.5, 0.75])
    return float(q[0]), float(q[1]), float(q[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--seed-offset", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--initial", type=int, default=5)
    parser.add_argument("--acquisition", default="qLogNoisyExpectedImprovement")
    parser.add_argument(
        "--set", nargs="*", default=[], help="BoTorchSettings overrides, e.g. kernel=rbf"
    )
    parser.add_argument("--json", help="append results to this file")
    ns = parser.parse_args()

    types = {f.name: f.type for f in dataclasses.fields(BoTorchSettings)}
    settings_kw: dict[str, Any] = {}
    for item in ns.set:
        key, value = item.split("=", 1)
        if key not in types:
            raise SystemExit(f"unknown setting {key}")
        t = str(types[key])
        if value == "None":
            settings_kw[key] = None
        elif "bool" in t:
            settings_kw[key] = value.lower() in ("1", "true", "yes")
        elif "int" in t:
            settings_kw[key] = int(value)
        elif "float" in t:
            settings_kw[key] = float(value)
        else:
            settings_kw[key] = value
    settings = BoTorchSettings(**settings_kw)
    print(f"settings: {settings}  acquisition={ns.acquisition} initial={ns.initial}")
    print(f"{ns.workers} worker processes, torch.set_num_threads(1) in each")

    jobs = [
        (p, s, settings_kw, ns.acquisition, ns.initial)
        for p in ns.problems
        for s in range(ns.seed_offset, ns.seed_offset + ns.seeds)
    ]
    t0 = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ctx.Pool(ns.workers) as pool:
        results = pool.map(run_one, jobs, chunksize=1)
    wall = time.perf_counter() - t0

    for p in ns.problems:
        rs = [r for r in results if r["problem"] == p]
        regrets = [r["regret"] for r in rs]
        lat = [x for r in rs for x in r["latency"]]
        last = [r["latency"][-1] for r in rs]
        fit = [x for r in rs for x in r["fit"]]
        opt = [x for r in rs for x in r["optimize"]]
        q1, med, q3 = quartiles(regrets)
        print(
            f"{p:16s} regret median {med:.5f} [q1 {q1:.5f}, q3 {q3:.5f}] "
            f"max {max(regrets):.5f} | suggest median {statistics.median(lat):.3f}s "
            f"(fit {statistics.median(fit):.3f}s, optimise {statistics.median(opt):.3f}s), "
            f"last {statistics.median(last):.3f}s, p90 {np.quantile(lat, 0.9):.3f}s"
        )
        print("   per-seed regret: " + " ".join(f"{r:.4g}" for r in regrets))
    print(f"wall {wall:.1f}s")
    if ns.json:
        with open(ns.json, "a") as fh:
            fh.write(json.dumps({"settings": settings_kw, "results": results}) + "\n")


if __name__ == "__main__":
    main()
