"""How far to believe a noisy campaign's best reading, and the trial the model rates best.

``closedloop status --model`` reports, for a noisy objective, the GP's estimate of the best
reading's true value and the trial the model rates best (``BoTorchPlanner.model_estimates``).
This measures both on noisy Hartmann6 (40 trials, noise sd 0.1, the protocol and noise draws
of ``planner_tuning.py``), against the truth the benchmark knows:

* the error of the best reading and of the model's estimate of that trial's true value
  (mean, and mean absolute): the winner's curse, and what the model makes of it;
* the regret of the trial that read best, of the trial the model rates best, and of the best
  trial tried (the issue's score, which no rule that picks a tried trial can beat).

    .venv/bin/python benchmarks/model_best.py --seeds 12
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
from typing import Any

import numpy as np
import torch
from planner_tuning import PROBLEMS, make_space

from planners import BoTorchPlanner, InitialDesign, Objective, Observation, PlannerConfig


def one_seed(seed: int) -> dict[str, Any]:
    """One noisy Hartmann6 campaign of the default planner, then its model's estimates."""
    torch.set_num_threads(1)
    spec = PROBLEMS["hartmann6_noisy"]
    fn, space = spec["fn"](), make_space("hartmann6_noisy")
    config = PlannerConfig(initial=InitialDesign(n=5))
    planner = BoTorchPlanner(space, [Objective(name="f", goal="minimize")], config, seed)
    rng = np.random.default_rng(10_000 + seed)
    truth: list[float] = []
    for _ in range(spec["trials"]):
        (point,) = planner.suggest(1)
        x = torch.tensor([[point[n] for n in space.names]], dtype=torch.float64)
        truth.append(float(fn.evaluate_true(x)))
        reading = truth[-1] + spec["noise"] * float(rng.standard_normal())
        planner.ingest([Observation(parameters=point, outputs={"f": reading})])
    estimates = planner.model_estimates()
    assert estimates is not None and estimates.best is not None
    readings = [o.outputs["f"] for o in planner.observations]
    lucky, rated = int(np.argmin(readings)), estimates.best
    optimum = float(fn.optimal_value)
    return {
        "seed": seed,
        "reading_error": readings[lucky] - truth[lucky],
        "estimate_error": estimates.mean[lucky] - truth[lucky],
        "regret_read_best": truth[lucky] - optimum,
        "regret_rated_best": truth[rated] - optimum,
        "regret_best_tried": min(truth) - optimum,
        "noise_sd": estimates.noise_sd,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with mp.get_context("spawn").Pool(args.workers) as pool:
        runs = pool.map(one_seed, range(args.seeds))
    for r in runs:
        print(
            f"seed {r['seed']:2d}: reading error {r['reading_error']:+.3f}, estimate error "
            f"{r['estimate_error']:+.3f}; regret read best {r['regret_read_best']:.3f}, "
            f"rated best {r['regret_rated_best']:.3f}, best tried {r['regret_best_tried']:.3f}; "
            f"fitted noise sd {r['noise_sd']:.3f}"
        )

    def summary(key: str) -> str:
        values = [r[key] for r in runs]
        absolute = statistics.fmean(abs(v) for v in values)
        return (
            f"mean {statistics.fmean(values):+.3f}, mean |.| {absolute:.3f}, "
            f"median {statistics.median(values):.3f}"
        )

    better = sum(r["regret_rated_best"] < r["regret_read_best"] for r in runs)
    worse = sum(r["regret_rated_best"] > r["regret_read_best"] for r in runs)
    print(f"\n{args.seeds} seeds, noisy Hartmann6, 40 trials:")
    print(f"  best reading minus its true value:       {summary('reading_error')}")
    print(f"  the model's estimate minus the true value: {summary('estimate_error')}")
    for key in ("regret_read_best", "regret_rated_best", "regret_best_tried"):
        print(f"  {key}: median {statistics.median(r[key] for r in runs):.4f}")
    print(f"  the rated best is truly better on {better} seeds, worse on {worse}")


if __name__ == "__main__":
    main()
