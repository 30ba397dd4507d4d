"""closedloop's planner against its peers' defaults, on issue 2's problems, in one run.

The issue's peer table (BayBE 0.035 on noisy Hartmann6, Ax 0.067, ...) gives each peer's median
over five seeds. Per seed, noisy Hartmann6 is nearly all-or-nothing (a run finds the global
basin or it does not), so a five-seed median is one draw of a wide distribution. This script
runs every planner under one protocol (``planner_tuning.run_trials``: the same problems, the
same noise sequence per seed, the regret of the best *noiseless* point tried, one torch thread
per process) over as many seeds as asked, interleaved so that all planners share the machine's
conditions, and prints per planner the median and quartiles, the share of runs that meet the
issue's target, the runs lost (final regret > 1), the median suggest time and its ratio to
closedloop's, and a Mann-Whitney test against closedloop.

Planners, each with its own defaults and 5 initial points:

* ``closedloop``: ``BoTorchPlanner`` (5 Sobol points, then its defaults);
* ``ax``: closedloop's Ax backend, i.e. Ax's ``Client`` (installed with the ``ax`` extra);
* ``baybe``: BayBE's default ``Campaign`` with ``TwoPhaseMetaRecommender(switch_after=5)``
  (5 random points, then its ``BotorchRecommender``). BayBE is the ``peers`` extra:
  ``make peers`` installs it into ``.venv`` under ``constraints.txt`` (it uses the same
  BoTorch and GPyTorch versions as closedloop).

    .venv/bin/python benchmarks/peers.py --problems hartmann6_noisy --seeds 40
    .venv/bin/python benchmarks/peers.py --planners closedloop baybe --seeds 10
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # planner_tuning, when run from elsewhere

import numpy as np  # noqa: E402
import torch  # noqa: E402
from planner_tuning import PROBLEMS, make_space, quartiles, run_trials  # noqa: E402
from scipy.stats import mannwhitneyu  # noqa: E402

from planners import (  # noqa: E402
    FloatParameter,
    InitialDesign,
    Objective,
    Observation,
    PlannerConfig,
    Point,
    Space,
    make_planner,
)

N_INITIAL = 5
TARGETS = {"branin": 0.005, "hartmann6": 0.005, "hartmann6_noisy": 0.05}  # issue 2
LOST = 1.0  # a run whose final regret is above this is lost (far from every good basin)
PLANNERS = ("closedloop", "ax", "baybe")


class BayBEPlanner:
    """BayBE's default campaign behind closedloop's ``Planner`` protocol (benchmarks only).

    Seeded as BayBE documents (``Settings(random_seed=...)``), plus the global torch, NumPy
    and ``random`` seeds its recommenders may draw from. ``pending`` is ignored: the
    benchmark is sequential.
    """

    def __init__(self, space: Space, seed: int, n_initial: int) -> None:
        import random

        from baybe import Campaign, Settings
        from baybe.parameters import NumericalContinuousParameter
        from baybe.recommenders import TwoPhaseMetaRecommender
        from baybe.searchspace import SearchSpace
        from baybe.targets import NumericalTarget

        Settings(random_seed=seed).activate()
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        self.names = space.names
        parameters = [
            NumericalContinuousParameter(p.name, p.bounds)
            for p in space.parameters
            if isinstance(p, FloatParameter)
        ]
        self.campaign = Campaign(
            searchspace=SearchSpace.from_product(parameters),
            objective=NumericalTarget("f", minimize=True).to_objective(),
            recommender=TwoPhaseMetaRecommender(switch_after=n_initial),
        )
        self.last_kinds: list[str] = []

    def suggest(self, n: int = 1, pending: Sequence[Point] = ()) -> list[Point]:
        frame = self.campaign.recommend(batch_size=n)
        self.last_kinds = ["model"] * n
        return [{name: float(row[name]) for name in self.names} for _, row in frame.iterrows()]

    def ingest(self, observations: Sequence[Observation]) -> None:
        import pandas as pd

        rows = [{**o.parameters, **o.outputs} for o in observations]
        self.campaign.add_measurements(pd.DataFrame(rows))


def run_one(args: tuple[str, str, int]) -> dict[str, Any]:
    planner_name, problem, seed = args
    import warnings

    warnings.filterwarnings("ignore")  # peers warn freely (e.g. BayBE on continuous spaces)
    torch.set_num_threads(1)
    space = make_space(problem)
    planner: Any
    if planner_name == "baybe":
        planner = BayBEPlanner(space, seed, N_INITIAL)
    else:
        kind = "botorch" if planner_name == "closedloop" else planner_name
        planner = make_planner(
            space,
            [Objective(name="f", goal="minimize")],
            PlannerConfig(kind=kind, initial=InitialDesign(n=N_INITIAL)),  # type: ignore[arg-type]
            seed,
        )
    result = run_trials(planner, problem, seed, N_INITIAL)
    result["planner"] = planner_name
    return result


def available(name: str) -> bool:
    module = {"closedloop": "planners", "ax": "ax", "baybe": "baybe"}[name]
    return find_spec(module) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planners", nargs="+", default=list(PLANNERS), choices=PLANNERS)
    parser.add_argument("--problems", nargs="+", default=["hartmann6_noisy"], choices=PROBLEMS)
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--seed-offset", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", help="write every run's result to this file")
    ns = parser.parse_args()

    missing = [p for p in ns.planners if not available(p)]
    if missing:
        raise SystemExit(
            f"not installed: {', '.join(missing)}; `make peers` installs BayBE, "
            "`make setup` Ax (the ax extra)"
        )
    seeds = range(ns.seed_offset, ns.seed_offset + ns.seeds)
    # Interleaved (seed-major), so a slow spell of the machine hits every planner alike.
    jobs = [(p, prob, s) for prob in ns.problems for s in seeds for p in ns.planners]
    print(f"{len(jobs)} runs on {ns.workers} worker processes, one torch thread each")
    t0 = time.perf_counter()
    results: list[dict[str, Any]] = []
    with mp.get_context("spawn").Pool(ns.workers) as pool:
        for r in pool.imap_unordered(run_one, jobs):
            results.append(r)
            print(
                f"[{len(results)}/{len(jobs)}] {r['planner']} {r['problem']} seed {r['seed']}: "
                f"regret {r['regret']:.4g}, median suggest {statistics.median(r['latency']):.2f} s",
                flush=True,
            )
    print(f"wall {time.perf_counter() - t0:.0f} s")
    results.sort(key=lambda r: r["seed"])
    if ns.json:
        Path(ns.json).write_text(json.dumps(results))

    for problem in ns.problems:
        target = TARGETS[problem]
        print(
            f"\n{problem}, {PROBLEMS[problem]['trials']} trials, "
            f"seeds {seeds.start}-{seeds.stop - 1}"
        )
        print(
            f"{'planner':11s} {'median regret [q1, q3]':>30s} {f'<= {target}':>9s} "
            f"{f'> {LOST:g} lost':>9s} {'seeds 0-4':>9s} {'suggest':>8s} {'x ours':>6s} "
            f"{'MW p':>6s}"
        )
        ours = [r for r in results if r["problem"] == problem and r["planner"] == "closedloop"]
        ours_latency = statistics.median(x for r in ours for x in r["latency"]) if ours else None
        for name in ns.planners:
            rs = [r for r in results if r["problem"] == problem and r["planner"] == name]
            regrets = [r["regret"] for r in rs]
            q1, med, q3 = quartiles(regrets)
            first5 = [r["regret"] for r in rs if r["seed"] < 5]
            latency = statistics.median(x for r in rs for x in r["latency"])
            ratio = f"{latency / ours_latency:.2f}" if ours_latency else "-"
            p = (
                f"{mannwhitneyu(regrets, [r['regret'] for r in ours]).pvalue:.2f}"
                if ours and name != "closedloop"
                else "-"
            )
            hits = f"{sum(r <= target for r in regrets)}/{len(regrets)}"
            lost = f"{sum(r > LOST for r in regrets)}/{len(regrets)}"
            five = f"{statistics.median(first5):.4f}" if len(first5) == 5 else "-"
            print(
                f"{name:11s} {f'{med:.4f} [{q1:.4f}, {q3:.4f}]':>30s} {hits:>9s} {lost:>9s} "
                f"{five:>9s} "
                f"{latency:7.2f}s {ratio:>6s} {p:>6s}"
            )
            print("    per seed: " + " ".join(f"{r:.4g}" for r in regrets))


if __name__ == "__main__":
    main()
